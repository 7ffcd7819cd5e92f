//! Upstream pools: balancing, 502/504, retries on connect failure for
//! idempotent requests only, and health-check ejection.

mod proxy_common;

use std::{net::SocketAddr, time::Duration};

use proxy_common::*;

/// A loopback address with nothing listening (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn route_all(up: &str) -> String {
    format!("[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"{up}\"\n")
}

#[tokio::test]
async fn round_robin_spreads_requests_over_targets() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let toml = format!(
        "{PLAIN}{}{}",
        upstream("u", &[a.addr, b.addr], ""),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    for _ in 0..6 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    assert_eq!(a.requests().len(), 3);
    assert_eq!(b.requests().len(), 3);
}

#[tokio::test]
async fn least_connections_avoids_the_busy_target() {
    let slow = Origin::with(
        "slow",
        Behaviour {
            delay: Some(Duration::from_millis(800)),
            ..Default::default()
        },
    )
    .await;
    let fast = Origin::start("fast").await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream(
            "u",
            &[slow.addr, fast.addr],
            "balance = \"least_connections\""
        ),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    // The first request goes to the first target (ties are broken in
    // round-robin order) and keeps it busy; the next ones avoid it.
    let first = tokio::spawn(async move { get(addr, "/long", "").await });
    while slow.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        assert_eq!(get(addr, "/short", "").await.status, 200);
    }
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(
        slow.requests().len(),
        1,
        "short requests avoided the busy target"
    );
    assert_eq!(fast.requests().len(), 3);
}

#[tokio::test]
async fn target_down_is_a_502_problem() {
    let dead = dead_addr().await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream("u", &[dead], "retries = 0"),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    let r = get(addr, "/", "").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(r.body.contains("upstream_failed"), "{}", r.body);
}

#[tokio::test]
async fn slow_upstream_is_a_504() {
    let slow = Origin::with(
        "slow",
        Behaviour {
            delay: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    )
    .await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream("u", &[slow.addr], "request_timeout = \"300ms\""),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    let r = get(addr, "/", "").await;
    assert_eq!(r.status, 504);
    assert!(r.body.contains("upstream_timeout"), "{}", r.body);
    assert_eq!(slow.requests().len(), 1);
}

#[tokio::test]
async fn connect_failures_are_retried_for_get_but_not_post() {
    let live = Origin::start("live").await;
    let dead = dead_addr().await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream(
            "u",
            &[dead, live.addr],
            "retries = 1\n[upstreams.passive]\nconsecutive_failures = 0\n"
        ),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    // Round robin starts on each target once: both GETs succeed.
    for _ in 0..2 {
        assert_eq!(get(addr, "/get", "").await.status, 200);
    }
    assert_eq!(live.requests().len(), 2);
    // POSTs are never retried: the one sent to the dead target fails.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req =
            "POST /post HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody";
        statuses.push(raw(addr, req.as_bytes()).await.status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    let posts: Vec<_> = live
        .requests()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body, b"body");
}

#[tokio::test]
async fn failing_health_checks_eject_a_target() {
    let good = Origin::start("good").await;
    let sick = Origin::with(
        "sick",
        Behaviour {
            health_status: Some(503),
            ..Default::default()
        },
    )
    .await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream(
            "u",
            &[good.addr, sick.addr],
            "[upstreams.health_check]\nenabled = true\ninterval = \"50ms\"\nunhealthy_threshold = 2\nhealthy_threshold = 1\n"
        ),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    // Wait until the sick target has failed enough checks.
    while sick.seen().iter().filter(|s| s.uri == "/healthz").count() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    assert!(
        sick.requests().is_empty(),
        "an unhealthy target got traffic"
    );
    assert_eq!(good.requests().len(), 4);
}

#[tokio::test]
async fn passive_ejection_after_consecutive_failures() {
    let live = Origin::start("live").await;
    let dead = dead_addr().await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream(
            "u",
            &[dead, live.addr],
            "retries = 0\n[upstreams.passive]\nconsecutive_failures = 1\nejection_time = \"1h\"\n"
        ),
        route_all("u")
    );
    let (_p, addr) = proxy(&toml).await;
    let mut ok = 0;
    for _ in 0..6 {
        if get(addr, "/", "").await.status == 200 {
            ok += 1;
        }
    }
    // At most the first request reaches the dead target; then it is ejected.
    assert!(ok >= 5, "{ok} of 6 succeeded");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let slow = Origin::with(
        "slow",
        Behaviour {
            delay: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    )
    .await;
    let toml = format!(
        "{PLAIN}{}{}",
        upstream("u", &[slow.addr], ""),
        route_all("u")
    );
    let (proxy, addr) = proxy(&toml).await;
    let in_flight = tokio::spawn(async move { get(addr, "/slow", "").await });
    while slow.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.shutdown(Duration::from_secs(10)).await;
    assert_eq!(in_flight.await.unwrap().status, 200);
    // Nothing is accepted any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
