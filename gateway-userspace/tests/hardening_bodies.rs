//! Hardening I, classes 6 and 10: request bodies are read whole before the
//! upstream is contacted (too big → 413, too slow → 408, the upstream sees
//! nothing), and upstream responses the gateway cannot relay safely (both
//! Content-Length and Transfer-Encoding, an oversized head, a body that
//! stalls) are refused or aborted, never relayed as if whole.

mod proxy_common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

async fn setup(limits: &str, route: &str) -> (gateway::proxy::Proxy, SocketAddr, Origin) {
    let origin = Origin::start("o").await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n{route}\n[limits]\n{limits}\n",
        upstream("o", &[origin.addr], "")
    );
    let (p, addr) = proxy(&toml).await;
    (p, addr, origin)
}

/// The gateway in front of a [`RawUpstream`], which records each request
/// head as soon as it arrives (the mock origin records a request only once
/// its body is complete, so it cannot see a body cut off mid-way).
async fn setup_raw(limits: &str) -> (gateway::proxy::Proxy, SocketAddr, RawUpstream) {
    setup_raw_route(limits, "").await
}

async fn setup_raw_route(
    limits: &str,
    route: &str,
) -> (gateway::proxy::Proxy, SocketAddr, RawUpstream) {
    let up = RawUpstream::start(|_| OK.to_vec()).await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n{route}\n[limits]\n{limits}\n",
        upstream("u", &[up.addr], "")
    );
    let (p, addr) = proxy(&toml).await;
    (p, addr, up)
}

/// Nothing reached the upstream: not even a connection.
fn assert_untouched(up: &RawUpstream, what: &str) {
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "{what}: the upstream was contacted: {:?}",
        up.requests.lock().unwrap()
    );
}

/// Writes `chunks` as a chunked body, stopping if the gateway closes.
async fn send_chunked(s: &mut TcpStream, head: &str, chunks: usize, size: usize) {
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{size:x}\r\n{}\r\n", "a".repeat(size));
    for _ in 0..chunks {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
}

// ---- class 6: request bodies ----

#[tokio::test]
async fn oversized_chunked_body_is_413_with_nothing_forwarded() {
    let (_p, addr, up) = setup_raw("max_body_bytes = 4096").await;
    // Several chunk sizes: one big chunk, many small ones.
    for (chunks, size) in [(1, 8192), (64, 100), (5, 1000)] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        send_chunked(
            &mut s,
            "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
            chunks,
            size,
        )
        .await;
        let r = read_all(&mut s).await;
        assert_eq!(r.status, 413, "{chunks}x{size}: {r:?}");
        assert!(r.body.contains("body_too_large"), "{r:?}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
    }
    // Before buffering, the first 4 KiB reached the upstream.
    assert_untouched(&up, "chunked body over the limit");
}

#[tokio::test]
async fn oversized_h2_body_without_length_is_413_with_nothing_forwarded() {
    let (_p, addr, up) = setup_raw("max_body_bytes = 4096").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Ten 1000-byte DATA frames, 50 ms apart, no content-length.
    let frames = futures_util::stream::unfold(0, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frame = http_body::Frame::data(Bytes::from(vec![b'a'; 1000]));
        Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
    });
    let req = http::Request::post("http://t/upload")
        .body(http_body_util::StreamBody::new(Box::pin(frames)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_untouched(&up, "h2 body over the limit");
}

#[tokio::test]
async fn stalled_body_is_408_with_nothing_forwarded() {
    for head in [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n01234",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n",
    ] {
        let (_p, addr, up) = setup_raw("body_read_timeout = \"300ms\"").await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let r = read_all(&mut s).await;
        assert_eq!(r.status, 408, "{head:?}: {r:?}");
        assert!(r.body.contains("body_timeout"), "{r:?}");
        // Before buffering, the upstream got the head and the first bytes.
        assert_untouched(&up, head);
    }
}

#[tokio::test]
async fn trickled_body_is_408_at_the_minimum_rate_deadline() {
    // A byte every 400 ms never trips the 1 s read timeout; the minimum rate
    // (100 B/s after the first second) does.
    let (_p, addr, up) = setup_raw("body_read_timeout = \"1s\"\nbody_min_rate = 100").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..30 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(400), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    // Before: no answer while the trickle went on (30 bytes in 12 s).
    assert!(!answer.is_empty(), "no answer while the body trickled");
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let r = parse(&answer);
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("body_timeout"), "{r:?}");
    assert_untouched(&up, "trickled body");
}

#[tokio::test]
async fn buffered_body_is_forwarded_whole_with_content_length() {
    let (_p, addr, origin) = setup("", "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /u HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &origin.requests()[0];
    assert_eq!(seen.body, b"hello world");
    assert_eq!(seen.headers["content-length"], "11");
    assert!(!seen.headers.contains_key("transfer-encoding"));
}

#[tokio::test]
async fn streaming_route_forwards_as_it_arrives() {
    // `request_buffering = false` on the route: the body is streamed
    // (chunked) to the upstream, the limits apply mid-stream.
    let (_p, addr, origin) = setup("", "request_buffering = false").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /u HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_all(&mut s).await.status, 200);
    let seen = &origin.requests()[0];
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(!seen.headers.contains_key("content-length"));

    // A global `request_buffering = false` is overridden by a route's `true`.
    let (_p, addr, up) = setup_raw_route(
        "request_buffering = false\nmax_body_bytes = 16",
        "request_buffering = true",
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    send_chunked(
        &mut s,
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        4,
        10,
    )
    .await;
    assert_eq!(read_all(&mut s).await.status, 413);
    assert_untouched(&up, "route buffering over a global false");
}

// ---- class 10: upstream responses ----

/// A raw HTTP/1.1 upstream: answers request `n` (over all connections)
/// with `reply(n)`, then keeps reading. Counts connections and sees when
/// the gateway closes one.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<(usize, String)>>>,
}

impl RawUpstream {
    async fn start(reply: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = RawUpstream {
            addr,
            connections: Arc::default(),
            closed: Arc::default(),
            requests: Arc::default(),
        };
        let (connections, closed, requests) = (
            up.connections.clone(),
            up.closed.clone(),
            up.requests.clone(),
        );
        let reply = Arc::new(reply);
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let conn = connections.fetch_add(1, Ordering::SeqCst);
                let (closed, requests, reply) = (closed.clone(), requests.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let n = {
                                let mut r = requests.lock().unwrap();
                                r.push((conn, head));
                                r.len() - 1
                            };
                            if tcp.write_all(&reply(n)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        up
    }
}

async fn proxy_to(up: &RawUpstream, extra: &str) -> (gateway::proxy::Proxy, SocketAddr) {
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n",
        upstream(
            "u",
            &[up.addr],
            &format!("passive.consecutive_failures = 0\n{extra}")
        )
    );
    proxy(&toml).await
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn content_length_with_transfer_encoding_is_502_and_not_reused() {
    for (i, bad) in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let up = RawUpstream::start(move |n| if n == 0 { bad.as_bytes().to_vec() } else { OK.to_vec() }).await;
        let (_p, addr) = proxy_to(&up, "").await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let r = parse(&buf[..n]);
        // Before: the client connection closed with no response at all.
        assert_eq!(r.status, 502, "variant {i}: {r:?}");
        assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"));
        assert!(r.body.contains("upstream_failed"), "{r:?}");
        assert!(r.header("transfer-encoding").is_none() || r.header("content-length").is_none());

        // The next request needs a new upstream connection.
        let r = get(addr, "/b", "").await;
        assert_eq!(r.status, 200, "variant {i}: {r:?}");
        assert_eq!(r.body, "ok");
        assert_eq!(up.connections.load(Ordering::SeqCst), 2, "variant {i}: connection reused");
        let reqs = up.requests.lock().unwrap().clone();
        assert_eq!(reqs.len(), 2);
        assert_ne!(reqs[0].0, reqs[1].0, "variant {i}: {reqs:?}");
    }
}

#[tokio::test]
async fn oversized_upstream_head_is_502() {
    let big_header = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(100 * 1024)
    );
    let many_headers = {
        let mut h = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..90 {
            h.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(1000)));
        }
        h.push_str("Content-Length: 2\r\n\r\nok");
        h
    };
    for (i, resp) in [big_header, many_headers].into_iter().enumerate() {
        let up = RawUpstream::start(move |_| resp.clone().into_bytes()).await;
        let (_p, addr) = proxy_to(&up, "").await;
        let r = get(addr, "/", "").await;
        // Before: relayed with 200.
        assert_eq!(r.status, 502, "variant {i}: {}", r.head.len());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(r.body.contains("too large"), "{}", r.body);
    }

    // The bound is `max_response_header_bytes`: 20 KiB passes the default,
    // not a configured 16 KiB.
    let head = format!(
        "HTTP/1.1 200 OK\r\nX-Mid: {}\r\nContent-Length: 2\r\n\r\nok",
        "c".repeat(20 * 1024)
    );
    let up = RawUpstream::start(move |_| head.clone().into_bytes()).await;
    let (_p, addr) = proxy_to(&up, "").await;
    assert_eq!(get(addr, "/", "").await.status, 200);
    let (_p, addr) = proxy_to(&up, "max_response_header_bytes = 16384").await;
    assert_eq!(get(addr, "/", "").await.status, 502);
}

#[test]
fn response_header_bound_below_hyper_minimum_is_a_config_error() {
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n[xdp]\nenabled = false\n",
        upstream(
            "u",
            &["127.0.0.1:1".parse().unwrap()],
            "max_response_header_bytes = 100"
        )
    );
    let e = gateway::config::Config::parse(&toml, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 8192") && e.contains("t.toml:"), "{e}");
}

/// Reads until the gateway closes, or 5 s; `None` if it never closed.
async fn read_until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await {
        Ok(_) => Some(buf),
        Err(_) => None,
    }
}

async fn wait_closed(up: &RawUpstream) -> bool {
    for _ in 0..50 {
        if up.closed.load(Ordering::SeqCst) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn stalled_upstream_body_aborts_the_response() {
    let kb = "a".repeat(1024);
    for (i, resp) in [
        format!("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n{kb}"),
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{kb}\r\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let up = RawUpstream::start(move |_| resp.clone().into_bytes()).await;
        let (_p, addr) = proxy_to(&up, "read_timeout = \"300ms\"").await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // Before: the client waited forever (here: 5 s without the end).
        let got = read_until_closed(&mut s)
            .await
            .unwrap_or_else(|| panic!("variant {i}: the response was never ended"));
        let r = parse(&got);
        assert_eq!(r.status, 200, "variant {i}");
        assert!(r.body.len() < 1024 * 1024, "variant {i}");
        // Aborted, not completed: no last chunk, or fewer bytes than announced.
        assert!(
            !r.body.ends_with("0\r\n\r\n"),
            "variant {i}: completed as if whole"
        );
        if let Some(len) = r.header("content-length") {
            assert!(r.body.len() < len.parse::<usize>().unwrap(), "variant {i}");
        }
        assert!(
            wait_closed(&up).await,
            "variant {i}: upstream connection kept"
        );
    }
}

#[tokio::test]
async fn stalled_upstream_body_resets_the_h2_stream() {
    let kb = "a".repeat(1024);
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n{kb}");
    let up = RawUpstream::start(move |_| resp.clone().into_bytes()).await;
    let (_p, addr) = proxy_to(&up, "read_timeout = \"300ms\"").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://t/")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the stream was never ended");
    assert!(end.is_err(), "the body ended cleanly after {got} bytes");
    assert!(got < 1024 * 1024);
    assert!(wait_closed(&up).await, "upstream connection kept");
}

/// A route whose JSON body the validate phase reads (and buffers) itself.
async fn validated_proxy(origin: &Origin, limits: &str) -> (gateway::proxy::Proxy, SocketAddr) {
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"users\"\npath_prefix = \"/users\"\nupstream = \"o\"\n\
         [[validation.rules]]\nroute = \"users\"\nmethod = \"POST\"\n\
         body_schema = {{ type = \"object\", required = [\"name\"] }}\n\
         [limits]\n{limits}\n[xdp]\nenabled = false\n",
        upstream("o", &[origin.addr], "")
    );
    let config = gateway::config::Config::parse(&toml, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let engines = gateway::phases::build_engines(&config, std::path::Path::new("."), None, None)
        .expect("engines");
    let proxy = gateway::proxy::Proxy::start(&config, engines)
        .await
        .unwrap();
    let addr = proxy.local_addr("main").unwrap();
    (proxy, addr)
}

#[tokio::test]
async fn validated_body_limits_are_408_and_the_body_is_read_once() {
    let origin = Origin::start("o").await;
    let (_p, addr) = validated_proxy(&origin, "body_read_timeout = \"300ms\"").await;
    // A slow body while the validate phase reads it is the body deadline
    // (408), not a broken body (400).
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"na",
    )
    .await
    .unwrap();
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("body_timeout"), "{r:?}");

    // A valid chunked body is validated, then forwarded whole with its length.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\n{\"nam\r\n9\r\ne\":\"bob\"}\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, br#"{"name":"bob"}"#);
    assert_eq!(seen[0].headers["content-length"], "14");
}
