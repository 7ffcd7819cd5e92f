//! `/readyz` is 200 while some pool has a healthy target, 503 with a JSON
//! body naming the problem when active health checks take every target
//! out, and 200 again when they come back.

mod observe_support;

use std::sync::atomic::Ordering;

use observe_support::*;

#[test]
fn readiness_follows_upstream_health() {
    let origin = Origin::start_blocking("origin");
    let gw = Gateway::start(&route_to(&origin, ""));
    let ready = || get(gw.admin, "/readyz", &[]);
    wait_until("ready", 5, || ready().status == 200);
    let body: serde_json::Value = serde_json::from_str(&ready().body).unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["xdp"], "off");
    assert_eq!(body["config"], "loaded");

    origin.healthy.store(false, Ordering::Relaxed);
    wait_until("not ready", 5, || ready().status == 503);
    let r = ready();
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["ready"], false, "{}", r.body);
    assert_eq!(body["upstreams"]["o"]["healthy_targets"], 0);
    assert!(
        body["not_ready"][0]
            .as_str()
            .unwrap()
            .contains("healthy target"),
        "{}",
        r.body
    );
    // Liveness does not depend on upstreams.
    assert_eq!(get(gw.admin, "/healthz", &[]).status, 200);
    let m = parse_metrics(&get(gw.admin, "/metrics", &[]).body);
    assert_eq!(
        sample(&m, "gateway_upstream_target_healthy", &[("upstream", "o")]),
        0.0
    );

    origin.healthy.store(true, Ordering::Relaxed);
    wait_until("ready again", 5, || ready().status == 200);
}
