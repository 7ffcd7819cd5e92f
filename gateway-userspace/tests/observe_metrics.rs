//! `/metrics` is valid Prometheus text format, and its counters move with
//! requests; `/healthz` answers; unknown paths are 404.

mod observe_support;

use observe_support::*;

#[test]
fn metrics_parse_and_move_with_requests() {
    let origin = Origin::start_blocking("origin");
    let gw = Gateway::start(&route_to(&origin, ""));
    let scrape = || {
        let r = get(gw.admin, "/metrics", &[]);
        assert_eq!(r.status, 200);
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{}",
            r.head
        );
        parse_metrics(&r.body)
    };
    let before = scrape();
    let requests = |s: &[_]| {
        sample(
            s,
            "gateway_http_requests_total",
            &[("route", "api"), ("method", "GET"), ("status", "2xx")],
        )
    };
    for _ in 0..3 {
        assert_eq!(get(gw.proxy, "/x", &[]).status, 200);
    }
    assert_eq!(
        get(
            gw.proxy,
            "/x",
            &[("content-length", "1"), ("transfer-encoding", "chunked")]
        )
        .status,
        400
    );
    let after = scrape();
    assert_eq!(requests(&after) - requests(&before), 3.0);
    assert_eq!(
        sample(
            &after,
            "gateway_http_request_duration_seconds_count",
            &[("route", "api")]
        ),
        3.0
    );
    assert!(
        sample(
            &after,
            "gateway_upstream_request_duration_seconds_count",
            &[("upstream", "o")]
        ) >= 3.0
    );
    assert!(
        sample(
            &after,
            "gateway_rejections_total",
            &[("reason", "bad_request")]
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &after,
            "gateway_upstream_target_healthy",
            &[("upstream", "o"), ("target", &origin.addr.to_string())]
        ),
        1.0
    );
    // Escalation counters are always present; XDP ones only with XDP on.
    assert!(
        after
            .iter()
            .any(|(n, _, _)| n == "gateway_escalation_offences_total")
    );
    assert!(
        after
            .iter()
            .any(|(n, _, _)| n == "gateway_escalations_total")
    );
    assert!(!after.iter().any(|(n, _, _)| n.starts_with("gateway_xdp_")));
    // No client address ever becomes a label.
    for (name, labels, _) in &after {
        for (_, v) in labels {
            assert_ne!(v, "127.0.0.1", "{name} has a client address label");
        }
    }

    assert_eq!(get(gw.admin, "/healthz", &[]).status, 200);
    assert_eq!(get(gw.admin, "/nope", &[]).status, 404);
}
