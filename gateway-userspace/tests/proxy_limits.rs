//! L7 protection: malformed or oversized requests get the right 4xx and
//! never reach the origin (or, for streamed bodies, are cut off).

mod proxy_common;

use std::time::Duration;

use proxy_common::*;
use tokio::{io::AsyncWriteExt, net::TcpStream};

async fn setup(limits: &str) -> (gateway::proxy::Proxy, std::net::SocketAddr, Origin) {
    let origin = Origin::start("o").await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n[limits]\n{limits}\n",
        upstream("o", &[origin.addr], "")
    );
    let (p, addr) = proxy(&toml).await;
    (p, addr, origin)
}

#[tokio::test]
async fn declared_oversized_body_is_413_and_not_forwarded() {
    let (_p, addr, origin) = setup("max_body_bytes = 16").await;
    let req = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n01234567890123456";
    let r = raw(addr, req.as_bytes()).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(origin.seen().is_empty());
    // At the limit is fine.
    let req = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\nConnection: close\r\n\r\n0123456789012345";
    assert_eq!(raw(addr, req.as_bytes()).await.status, 200);
    assert_eq!(origin.requests()[0].body.len(), 16);
}

#[tokio::test]
async fn chunked_body_is_cut_off_at_the_limit_while_streaming() {
    let (_p, addr, origin) = setup("max_body_bytes = 16").await;
    let req = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
               a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n";
    let r = raw(addr, req.as_bytes()).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("body_too_large"));
    // The origin may have seen the start of the stream, never all 20 bytes.
    assert!(origin.requests().iter().all(|s| s.body.len() < 20));
    // A chunked body under the limit streams through.
    let req = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
               5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw(addr, req.as_bytes()).await.status, 200);
    assert!(origin.requests().iter().any(|s| s.body == b"hello"));
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closed() {
    let (_p, addr, origin) = setup("").await;
    for req in [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let r = raw(addr, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert!(
            !r.body.contains("HTTP/1.1"),
            "a second response was sent: {}",
            r.body
        );
    }
    // A smuggling attempt after a normal keep-alive request on one connection.
    let req = "GET /first HTTP/1.1\r\nHost: t\r\n\r\n\
               POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let r = raw(addr, req.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(" 400 Bad Request"), "{}", r.body);
    let uris: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(
        uris,
        ["/first"],
        "only the clean request reached the origin"
    );
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let (_p, addr, origin) = setup("max_headers = 10").await;
    let extra: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = get(addr, "/", &extra).await;
    assert_eq!(r.status, 431);
    let big = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));
    let (_p2, addr2, _o) = setup("").await;
    assert_eq!(get(addr2, "/", &big).await.status, 431);
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn long_request_line_is_414() {
    let (_p, addr, origin) = setup("max_request_line = 1024").await;
    let path = format!("/{}", "a".repeat(2000));
    let r = get(addr, &path, "").await;
    assert_eq!(r.status, 414);
    assert!(r.body.contains("uri_too_long"));
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn slow_headers_get_408() {
    let (_p, addr, origin) = setup("header_read_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // Slowloris: a header line now and then, never the end of the head.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("header_timeout"));
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn stalled_body_gets_408() {
    let (_p, addr, _origin) = setup("body_read_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("body_timeout"));
}

#[tokio::test]
async fn underscore_headers_dropped_or_rejected() {
    let (_p, addr, origin) = setup("").await;
    assert_eq!(get(addr, "/", "X_Auth_User: admin\r\n").await.status, 200);
    assert!(!origin.requests()[0].headers.contains_key("x_auth_user"));
    let (_p2, addr2, origin2) = setup("underscore_headers = \"reject\"").await;
    assert_eq!(get(addr2, "/", "X_Auth_User: admin\r\n").await.status, 400);
    assert!(origin2.seen().is_empty());
}

#[tokio::test]
async fn malformed_paths_are_400() {
    let (_p, addr, origin) = setup("").await;
    assert_eq!(get(addr, "/a%zz", "").await.status, 400);
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (_p, addr, _origin) = setup("idle_timeout = \"200ms\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The server closes the idle connection after the response: read_to_end ends.
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with("hello from o"), "{r:?}");
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let (_p, addr, origin) = setup("max_connections_per_ip = 1").await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    while origin.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The second connection from the same IP is closed without an answer.
    let r = get(addr, "/two", "").await;
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(origin.seen().len(), 1);
    drop(first);
    // Once the first is gone, a new one is accepted.
    let mut status = 0;
    for _ in 0..50 {
        status = get(addr, "/three", "").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}
