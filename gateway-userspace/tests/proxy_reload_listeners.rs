//! Listener changes on reload (issue 18, item 3), in-process: a reload adds
//! and removes listeners, moves and renames them, and changes a running
//! listener's TLS, PROXY protocol and redirect settings without re-binding;
//! a removed listener stops accepting at once and its in-flight requests
//! finish (HTTP/1 `Connection: close`, HTTP/2 GOAWAY) and what is still
//! busy after `shutdown_grace` is closed; a listener that cannot bind fails
//! the whole reload and nothing changes.

mod proxy_common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use gateway::{
    config::Config,
    proxy::{Engines, Proxy},
};
use proxy_common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A config with `listeners` (TOML `[[listeners]]` entries) and one route
/// to `origin`.
fn config(listeners: &str, origin: SocketAddr, extra: &str) -> Config {
    let text = format!(
        "{listeners}\n{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n{extra}\n[xdp]\nenabled = false\n",
        upstream("o", &[origin], "")
    );
    Config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn listener(name: &str, address: &str, extra: &str) -> String {
    format!("[[listeners]]\nname = \"{name}\"\naddress = \"{address}\"\n{extra}\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most 5 s) until `addr` refuses connections.
async fn until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{addr} still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One keep-alive GET on an open connection; returns the response head.
async fn keep_alive_get(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = parse(head.as_bytes())
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            if body.len() >= len {
                return head.to_owned();
            }
        }
    }
}

#[tokio::test]
async fn reload_adds_a_listener_then_removes_it() {
    let origin = Origin::start("o").await;
    let main = listener("main", "127.0.0.1:0", "");
    let second = listener("second", "127.0.0.1:0", "");
    let proxy = Proxy::start(&config(&main, origin.addr, ""), Engines::default())
        .await
        .unwrap();
    let main_addr = proxy.local_addr("main").unwrap();
    assert_eq!(proxy.local_addr("second"), None);
    // A keep-alive client of the listener that stays.
    let mut client = TcpStream::connect(main_addr).await.unwrap();
    assert!(
        keep_alive_get(&mut client, "/a")
            .await
            .starts_with("HTTP/1.1 200")
    );

    proxy
        .reload(
            &config(&format!("{main}{second}"), origin.addr, ""),
            Engines::default(),
        )
        .unwrap();
    let second_addr = proxy.local_addr("second").expect("added by the reload");
    assert_eq!(proxy.local_addr("main"), Some(main_addr), "socket kept");
    assert_eq!(get(second_addr, "/via-second", "").await.status, 200);
    assert!(
        keep_alive_get(&mut client, "/b")
            .await
            .starts_with("HTTP/1.1 200")
    );

    proxy
        .reload(&config(&main, origin.addr, ""), Engines::default())
        .unwrap();
    assert_eq!(proxy.local_addr("second"), None);
    until_refused(second_addr).await;
    assert_eq!(get(main_addr, "/after", "").await.status, 200);
    assert!(
        keep_alive_get(&mut client, "/c")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/a", "/via-second", "/b", "/after", "/c"]);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_listener_that_cannot_bind_fails_the_reload_and_nothing_changes() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let main = listener("main", "127.0.0.1:0", "");
    let proxy = Proxy::start(&config(&main, old.addr, ""), Engines::default())
        .await
        .unwrap();
    let main_addr = proxy.local_addr("main").unwrap();

    // Someone else holds this port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let bad = config(
        &format!(
            "{main}{}{}",
            listener("second", "127.0.0.1:0", ""),
            listener("third", &taken.to_string(), "")
        ),
        new.addr,
        "",
    );
    let e = proxy
        .reload(&bad, Engines::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'third'"), "{e}");
    assert!(e.contains(&taken.to_string()), "{e}");
    assert!(e.to_lowercase().contains("in use"), "{e}");

    // Nothing changed: no new listener, the old routes, the old socket.
    assert_eq!(proxy.local_addr("second"), None);
    assert_eq!(proxy.local_addr("third"), None);
    assert_eq!(proxy.local_addr("main"), Some(main_addr));
    assert_eq!(get(main_addr, "/still", "").await.status, 200);
    assert_eq!(old.seen().len(), 1);
    assert!(new.seen().is_empty());

    // Once the port is free the same reload applies.
    drop(squatter);
    let good = config(
        &format!("{main}{}", listener("third", &taken.to_string(), "")),
        new.addr,
        "",
    );
    proxy.reload(&good, Engines::default()).unwrap();
    assert_eq!(proxy.local_addr("third"), Some(taken));
    assert_eq!(get(taken, "/third", "").await.status, 200);
    assert_eq!(new.seen().len(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_removed_listener_finishes_its_requests_then_closes() {
    let origin = Origin::with(
        "slow",
        Behaviour {
            delay: Some(Duration::from_millis(800)),
            ..Default::default()
        },
    )
    .await;
    let main = listener("main", "127.0.0.1:0", "");
    let both = format!("{main}{}", listener("second", "127.0.0.1:0", ""));
    let proxy = Proxy::start(&config(&both, origin.addr, ""), Engines::default())
        .await
        .unwrap();
    let second = proxy.local_addr("second").unwrap();

    // An idle keep-alive connection and one with a request in flight.
    let mut idle = TcpStream::connect(second).await.unwrap();
    assert!(
        keep_alive_get(&mut idle, "/first")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let in_flight = tokio::spawn(async move {
        let mut s = TcpStream::connect(second).await.unwrap();
        let head = keep_alive_get(&mut s, "/slow").await;
        // After the response the gateway closes the connection.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        (head, closed.is_ok())
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.seen().len() < 2 {
        assert!(Instant::now() < deadline, "the slow request did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut cfg = config(&main, origin.addr, "");
    cfg.limits.shutdown_grace = gateway::duration::NonZeroSpan::from_secs(10);
    proxy.reload(&cfg, Engines::default()).unwrap();
    until_refused(second).await;

    let (head, closed) = in_flight.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("connection: close"),
        "the last response on a draining listener says so: {head}"
    );
    assert!(closed, "the connection was not closed after the response");
    // The idle one is closed without a request.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("idle keep-alive connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn changed_settings_apply_to_new_connections_on_the_same_socket() {
    let origin = Origin::start("o").await;
    let proxy = Proxy::start(
        &config(&listener("main", "127.0.0.1:0", ""), origin.addr, ""),
        Engines::default(),
    )
    .await
    .unwrap();
    let addr = proxy.local_addr("main").unwrap();
    let mut before = TcpStream::connect(addr).await.unwrap();
    assert!(
        keep_alive_get(&mut before, "/accepted")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // Proxying listener → redirect listener, same address.
    let redirect = listener("main", "127.0.0.1:0", "redirect_https_port = 8443");
    proxy
        .reload(&config(&redirect, origin.addr, ""), Engines::default())
        .unwrap();
    assert_eq!(proxy.local_addr("main"), Some(addr), "not re-bound");
    let r = get(addr, "/x", "").await;
    assert_eq!(r.status, 308, "{}", r.head);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://test.local:8443/x")
    );
    assert_eq!(origin.seen().len(), 1);
    // A connection accepted before keeps the settings it was accepted with.
    assert!(
        keep_alive_get(&mut before, "/old-conn")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(origin.seen().len(), 2);

    // → TLS, same address.
    let tls = listener("main", "127.0.0.1:0", "tls = true");
    proxy
        .reload(
            &config(&tls, origin.addr, "[tls]\nself_signed = true\n"),
            Engines::default(),
        )
        .unwrap();
    assert_eq!(proxy.local_addr("main"), Some(addr));
    let mut s = tls_connect(addr, "localhost", &[b"http/1.1"]).await;
    s.write_all(b"GET /tls HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert_eq!(parse(&buf).status, 200);
    assert_eq!(origin.seen().last().unwrap().uri, "/tls");

    // → PROXY protocol, same address: a header from a trusted peer sets
    // the client address.
    let pp = listener("main", "127.0.0.1:0", "proxy_protocol = true");
    proxy
        .reload(
            &config(
                &format!("trusted_proxies = [\"127.0.0.1/32\"]\n{pp}"),
                origin.addr,
                "",
            ),
            Engines::default(),
        )
        .unwrap();
    let r = raw(
        addr,
        b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\nGET /pp HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = origin.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.uri, "/pp");
    assert!(
        last.headers["x-forwarded-for"]
            .to_str()
            .unwrap()
            .contains("198.51.100.7"),
        "{:?}",
        last.headers
    );
    // And without the header the connection is refused now.
    let r = get(addr, "/no-header", "").await;
    assert_ne!(r.status, 200);
    assert_eq!(origin.seen().last().unwrap().uri, "/pp");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn moved_and_renamed_listeners() {
    let origin = Origin::start("o").await;
    let fixed = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::start(
        &config(&listener("a", &fixed, ""), origin.addr, ""),
        Engines::default(),
    )
    .await
    .unwrap();
    let a = proxy.local_addr("a").unwrap();

    // Renamed on the same fixed address: the socket is kept (a fresh bind
    // of a port still listening would fail).
    proxy
        .reload(
            &config(&listener("b", &fixed, ""), origin.addr, ""),
            Engines::default(),
        )
        .unwrap();
    assert_eq!(proxy.local_addr("a"), None);
    assert_eq!(proxy.local_addr("b"), Some(a));
    assert_eq!(get(a, "/renamed", "").await.status, 200);

    // Moved to another address: bound there, the old one closes.
    let other = format!("127.0.0.1:{}", free_port());
    proxy
        .reload(
            &config(&listener("b", &other, ""), origin.addr, ""),
            Engines::default(),
        )
        .unwrap();
    let b = proxy.local_addr("b").unwrap();
    assert_eq!(b.to_string(), other);
    until_refused(a).await;
    assert_eq!(get(b, "/moved", "").await.status, 200);
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/renamed", "/moved"]);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_removed_listener_sends_http2_goaway_and_finishes_open_streams() {
    let origin = Origin::with(
        "slow",
        Behaviour {
            delay: Some(Duration::from_millis(800)),
            ..Default::default()
        },
    )
    .await;
    let main = listener("main", "127.0.0.1:0", "");
    let both = format!("{main}{}", listener("second", "127.0.0.1:0", ""));
    let proxy = Proxy::start(&config(&both, origin.addr, ""), Engines::default())
        .await
        .unwrap();
    let second = proxy.local_addr("second").unwrap();
    // h2c with prior knowledge on the listener about to be removed.
    let tcp = TcpStream::connect(second).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://test.local/h2-slow")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let in_flight = tokio::spawn(send.send_request(req));
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.seen().is_empty() {
        assert!(Instant::now() < deadline, "the request did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut cfg = config(&main, origin.addr, "");
    cfg.limits.shutdown_grace = gateway::duration::NonZeroSpan::from_secs(10);
    proxy.reload(&cfg, Engines::default()).unwrap();

    let resp = in_flight.await.unwrap().expect("the open stream finished");
    assert_eq!(resp.status(), 200);
    // GOAWAY, then the connection ends: the client's connection task returns.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection stayed open");
    assert_eq!(origin.seen().len(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connections_still_busy_after_the_grace_period_are_closed() {
    let origin = Origin::with(
        "very-slow",
        Behaviour {
            delay: Some(Duration::from_secs(6)),
            ..Default::default()
        },
    )
    .await;
    let main = listener("main", "127.0.0.1:0", "");
    let both = format!("{main}{}", listener("second", "127.0.0.1:0", ""));
    let proxy = Proxy::start(&config(&both, origin.addr, ""), Engines::default())
        .await
        .unwrap();
    let second = proxy.local_addr("second").unwrap();
    let in_flight = tokio::spawn(async move { get(second, "/too-slow", "").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.seen().is_empty() {
        assert!(Instant::now() < deadline, "the request did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut cfg = config(&main, origin.addr, "");
    cfg.limits.shutdown_grace = gateway::duration::NonZeroSpan::from_millis(300);
    proxy.reload(&cfg, Engines::default()).unwrap();
    // The origin answers after 6 s; the grace period ended long before, and
    // the connection was closed without a response.
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 0, "answered after the grace period: {}", r.head);
    proxy.shutdown(Duration::from_millis(100)).await;
}
