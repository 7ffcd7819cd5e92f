//! W3C `traceparent`: a valid one reaches the origin with the same trace
//! id and flags and a new parent id; a missing or invalid one is replaced
//! by a new trace (and its `tracestate` dropped). The access log carries
//! the trace id the origin saw.

mod observe_support;

use observe_support::*;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parts(v: &str) -> Vec<String> {
    let p: Vec<String> = v.split('-').map(str::to_owned).collect();
    assert_eq!(p.len(), 4, "{v}");
    assert_eq!(p[0], "00");
    assert_eq!(p[1].len(), 32);
    assert_eq!(p[2].len(), 16);
    p
}

#[test]
fn traceparent_is_propagated_or_generated() {
    let origin = Origin::start_blocking("origin");
    let gw = Gateway::start(&route_to(&origin, ""));

    let h = [("traceparent", INCOMING), ("tracestate", "vendor=1")];
    assert_eq!(get(gw.proxy, "/a", &h).status, 200);
    assert_eq!(get(gw.proxy, "/b", &[]).status, 200);
    let bad = [
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=2"),
    ];
    assert_eq!(get(gw.proxy, "/c", &bad).status, 200);

    let seen = origin.request_headers();
    assert_eq!(seen.len(), 3);
    let tp = |i: usize| seen[i]["traceparent"].to_str().unwrap().to_owned();

    let a = parts(&tp(0));
    assert_eq!(a[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(a[2], "00f067aa0ba902b7", "a new span id for our hop");
    assert_eq!(a[3], "01");
    assert_eq!(seen[0]["tracestate"], "vendor=1");

    let b = parts(&tp(1));
    assert_ne!(b[1], a[1]);
    assert_eq!(b[3], "00");

    let c = parts(&tp(2));
    assert_ne!(c[1], "00000000000000000000000000000000");
    assert!(seen[2].get("tracestate").is_none());

    let lines = gw.wait_access_lines(3);
    assert_eq!(lines[0]["trace.id"], a[1].as_str());
    assert_eq!(lines[1]["trace.id"], b[1].as_str());
    assert_eq!(lines[2]["trace.id"], c[1].as_str());
}
