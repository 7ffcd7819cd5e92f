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

/// An origin that answers the first request of each connection and closes
/// the connection, unanswered, on the second: what a target whose
/// keep-alive timeout ends while a request is on its way does. Returns its
/// address and how many requests it read.
async fn origin_closing_second_requests()
-> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for nth in 0..2 {
                    // One request head (and a Content-Length body, if any).
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    count.fetch_add(1, Ordering::Relaxed);
                    if nth == 1 {
                        return; // closed, unanswered
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    (addr, seen)
}

/// A keep-alive connection the target closes as a request arrives on it:
/// an idempotent body-less request is sent again on a new connection
/// (NGINX on a cached connection, Go's net/http on a reused one), so the
/// client gets the answer instead of a 502; a POST is never sent twice.
#[tokio::test]
async fn a_request_on_a_pooled_connection_the_target_closed_is_sent_again_if_idempotent() {
    use std::sync::atomic::Ordering;
    let (origin, seen) = origin_closing_second_requests().await;
    let toml = format!("{PLAIN}{}{}", upstream("u", &[origin], ""), route_all("u"));
    let (_p, addr) = proxy(&toml).await;

    assert_eq!(get(addr, "/first", "").await.status, 200);
    // Idle past the point where a pooled connection may be stale.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = get(addr, "/second", "").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        3,
        "the GET went out twice: once lost, once answered"
    );

    // The pooled connection (the retry's) is idle again; a POST on it is
    // lost with it and not replayed: the target may have acted on it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let post = raw(
        addr,
        b"POST /third HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(post.status, 502, "{}", post.head);
    assert_eq!(seen.load(Ordering::Relaxed), 4, "the POST was sent once");
}
