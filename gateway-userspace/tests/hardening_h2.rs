//! Hardening I, classes 7 and 9: HTTP/2 control-frame and empty-frame
//! floods get GOAWAY(ENHANCE_YOUR_CALM) and the connection is closed; a TLS
//! connection speaks the protocol ALPN negotiated or is closed. Frames are
//! written by hand (h2c with prior knowledge, or TLS with ALPN h2).

mod proxy_common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_common::*;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const PRIORITY: u8 = 2;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `POST /` to authority `t` (static table entries 3, 6, 4 and a
/// literal :authority).
const POST_HEADERS: &[u8] = &[0x83, 0x86, 0x84, 0x41, 0x01, b't'];

#[derive(Debug)]
struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

fn frames(mut buf: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while buf.len() >= 9 {
        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
        if buf.len() < 9 + len {
            break;
        }
        out.push(Frame {
            kind: buf[3],
            payload: buf[9..9 + len].to_vec(),
        });
        buf = &buf[9 + len..];
    }
    out
}

/// The error code of the first GOAWAY frame, if any.
fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

/// Opens HTTP/2 (preface and SETTINGS, then `first`), writes `unit`
/// `count` times without reading anything, then reads what the gateway
/// sent. Returns the frames and whether the gateway closed the connection.
async fn flood<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    first: &[u8],
    unit: &[u8],
    count: usize,
) -> (Vec<Frame>, bool) {
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    start.extend_from_slice(first);
    s.write_all(&start).await.unwrap();
    let per_batch = 1000.min(count);
    let batch = unit.repeat(per_batch);
    let mut sent = 0;
    while sent < count {
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(&batch)).await {
            Ok(Ok(())) => sent += per_batch,
            _ => break,
        }
    }
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 65536];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break false,
        }
    };
    (frames(&buf), closed)
}

async fn setup(limits: &str) -> (gateway::proxy::Proxy, SocketAddr, Origin) {
    let origin = Origin::start("o").await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n[limits]\n{limits}\n",
        upstream("o", &[origin.addr], "")
    );
    let (p, addr) = proxy(&toml).await;
    (p, addr, origin)
}

fn assert_calmed(what: &str, frames: &[Frame], closed: bool) {
    // Before: every frame was answered and the connection stayed open.
    assert_eq!(
        goaway_code(frames),
        Some(0xb),
        "{what}: no GOAWAY(ENHANCE_YOUR_CALM)"
    );
    assert!(closed, "{what}: the connection stayed open");
}

#[tokio::test]
async fn ping_flood_gets_goaway_enhance_your_calm() {
    let (_p, addr, origin) = setup("").await;
    let s = TcpStream::connect(addr).await.unwrap();
    let (f, closed) = flood(s, &[], &frame(PING, 0, 0, &[7; 8]), 100_000).await;
    assert_calmed("100,000 PINGs", &f, closed);
    // Answers stopped well before 100,000.
    let acks = f.iter().filter(|f| f.kind == PING).count();
    assert!(acks <= 1100, "{acks} PING answers");
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn settings_flood_gets_goaway_enhance_your_calm() {
    let (_p, addr, _origin) = setup("").await;
    let s = TcpStream::connect(addr).await.unwrap();
    let (f, closed) = flood(s, &[], &frame(SETTINGS, 0, 0, &[]), 10_000).await;
    assert_calmed("10,000 SETTINGS", &f, closed);
}

#[tokio::test]
async fn other_control_frame_floods_get_goaway() {
    let (_p, addr, _origin) = setup("").await;
    for (what, unit) in [
        // PRIORITY for an idle stream: legal, ignored by hyper, free to send.
        ("PRIORITY", frame(PRIORITY, 0, 3, &[0, 0, 0, 0, 16])),
        // An extension frame type: must be ignored by the receiver.
        ("unknown type 0xfa", frame(0xfa, 0, 0, b"xyz")),
        // Connection WINDOW_UPDATEs while the gateway sent no DATA.
        (
            "WINDOW_UPDATE",
            frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
        ),
    ] {
        let s = TcpStream::connect(addr).await.unwrap();
        let (f, closed) = flood(s, &[], &unit, 20_000).await;
        assert_calmed(what, &f, closed);
    }
}

#[tokio::test]
async fn empty_data_frames_get_goaway() {
    let (_p, addr, origin) = setup("").await;
    let s = TcpStream::connect(addr).await.unwrap();
    // 50 empty DATA frames on an open request stream (h2 itself only
    // reacts after 100).
    let open = frame(HEADERS, END_HEADERS, 1, POST_HEADERS);
    let (f, closed) = flood(s, &open, &frame(DATA, 0, 1, &[]), 50).await;
    assert_calmed("empty DATA", &f, closed);
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn flood_over_tls_alpn_h2_gets_goaway() {
    let (_p, addr, _origin) = tls_setup().await;
    let s = tls_connect(addr, "localhost", &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (f, closed) = flood(s, &[], &frame(PING, 0, 0, &[1; 8]), 100_000).await;
    assert_calmed("PINGs over TLS", &f, closed);
}

#[tokio::test]
async fn ordinary_h2_traffic_is_not_a_flood() {
    let (_p, addr, origin) = setup("").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(format!("http://t/n/{i}"))
                .body(Full::new(Bytes::from(vec![b'x'; 3000])))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    for t in tasks {
        assert_eq!(&t.await.unwrap()[..], b"hello from o");
    }
    assert_eq!(origin.requests().len(), 300);
    assert!(!conn.is_finished(), "the connection was closed");
}

// ---- class 9: ALPN ----

#[tokio::test]
async fn alpn_h2_then_http1_bytes_is_closed() {
    let (_p, addr, origin) = tls_setup().await;
    let mut s = tls_connect(addr, "localhost", &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.write_all(b"GET /h1-on-h2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the connection stayed open");
    // Before: served as HTTP/1.1 with 200.
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "answered in HTTP/1.1: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn alpn_http1_or_none_then_h2_preface_is_closed() {
    let (_p, addr, origin) = tls_setup().await;
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut s = tls_connect(addr, "localhost", alpn).await;
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, END_HEADERS | 1, 1, POST_HEADERS));
        s.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "{alpn:?}: the connection stayed open");
        // Before: served as HTTP/2 (SETTINGS, then a response).
        assert!(
            frames(&buf).iter().all(|f| f.kind != SETTINGS),
            "{alpn:?}: answered in HTTP/2"
        );
    }
    assert!(origin.seen().is_empty());

    // Both protocols still work when they are the negotiated one.
    let mut s = tls_connect(addr, "localhost", &[b"http/1.1"]).await;
    s.write_all(b"GET /h1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert_eq!(parse(&buf).status, 200);
    let s = tls_connect(addr, "localhost", &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://t/h2")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

// ---- TLS helpers ----

async fn tls_setup() -> (gateway::proxy::Proxy, SocketAddr, Origin) {
    let origin = Origin::start("o").await;
    let toml = format!(
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\ntls = true\n[tls]\nself_signed = true\n{}\
         [[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let (p, addr) = proxy(&toml).await;
    (p, addr, origin)
}

#[test]
fn zero_flood_budgets_are_config_errors() {
    for (key, value) in [
        ("h2_control_frames_burst", "0"),
        ("h2_control_frames_per_second", "0"),
    ] {
        let toml = format!("[limits]\n{key} = {value}\n[xdp]\nenabled = false\n");
        let e = gateway::config::Config::parse(&toml, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:2") && e.contains("at least 1"),
            "{key}: {e}"
        );
    }
}

// ---- the HTTP/2 server's own bounds (review of the h2-crate server) ----

/// Reads frames until the gateway closes the connection or `within` passes;
/// returns them and whether it closed.
async fn read_until_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> (Vec<Frame>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 65536];
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break false,
        }
    };
    (frames(&buf), closed)
}

/// An idle HTTP/2 connection gets GOAWAY and is closed even when the client
/// never answers the PING of h2's graceful shutdown. Before: open forever.
#[tokio::test]
async fn idle_h2_connection_is_closed_without_the_clients_ping_ack() {
    let (_p, addr, _origin) = setup("idle_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    s.write_all(&start).await.unwrap();
    // Nothing more: no SETTINGS ack, no PING ack.
    let (frames, closed) = read_until_closed(&mut s, Duration::from_secs(8)).await;
    assert!(
        frames.iter().any(|f| f.kind == GOAWAY),
        "no GOAWAY: {frames:?}"
    );
    assert!(closed, "the idle connection stayed open");
}

/// A client that opens a window of 0 and never reads its response gets
/// RST_STREAM(CANCEL) once no response data could go out for
/// `idle_timeout` (NGINX `send_timeout`). Before: held with its upstream
/// exchange forever.
#[tokio::test]
async fn h2_client_that_takes_no_data_gets_its_stream_reset() {
    let (_p, addr, origin) = setup("idle_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut start = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE (4) = 0.
    start.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
    // GET / with :authority t (static 2, 6, 4 + literal authority), END_STREAM.
    start.extend(frame(
        HEADERS,
        END_HEADERS | 1,
        1,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b't'],
    ));
    s.write_all(&start).await.unwrap();
    let (frames, _) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    assert!(
        frames.iter().any(|f| f.kind == HEADERS),
        "no response head: {frames:?}"
    );
    let reset = frames
        .iter()
        .find(|f| f.kind == RST_STREAM)
        .unwrap_or_else(|| panic!("no RST_STREAM: {frames:?}"));
    assert_eq!(reset.payload, [0, 0, 0, 8], "not CANCEL");
    assert_eq!(origin.requests().len(), 1);
}

/// A partial HTTP/2 preface that stalls is a slow request head: 408 after
/// `header_read_timeout`. Before (h2-crate server): dropped silently after
/// `idle_timeout + header_read_timeout`.
#[tokio::test]
async fn stalled_partial_preface_gets_408() {
    let (_p, addr, origin) = setup("header_read_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
    for partial in [&PREFACE[..1], &PREFACE[..23]] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "{} preface bytes: {text:?} after {:?}",
            partial.len(),
            started.elapsed()
        );
    }
    assert!(origin.requests().is_empty());
}

/// HEAD over HTTP/2 to a response the gateway writes itself (here a 404):
/// the head only, with its Content-Length, no DATA. Before: DATA was sent,
/// a protocol error for the client.
#[tokio::test]
async fn h2_head_gets_no_body_from_the_gateway() {
    let (_p, addr, _origin) = setup("").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // A `host` that differs from `:authority` is the gateway's own 400.
    let req = http::Request::head("http://t/x")
        .header("host", "other")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().contains_key("content-length"));
    let mut body = resp.into_body();
    match body.data().await {
        None => {}
        Some(Ok(d)) => panic!("DATA on a HEAD response: {d:?}"),
        Some(Err(e)) => panic!("the HEAD response broke the stream: {e}"),
    }
}

/// An HTTP/2 request without `:path` (RFC 9113 §8.3.1: malformed) is the
/// gateway's 400 and no byte of it reaches the upstream, whatever route `/`
/// has. Found in review: `http` reads the missing path as `/` through
/// `path_and_query()` but as `""` through `path()`, and the gateway once
/// took the first and sent `GET  HTTP/1.1` (an empty request target)
/// upstream. The upstream here is a bare socket that records what arrives.
#[tokio::test]
async fn h2_request_without_path_is_refused() {
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raw_addr = raw.local_addr().unwrap();
    raw.set_nonblocking(true).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let recorder = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let until = std::time::Instant::now() + Duration::from_secs(4);
            while std::time::Instant::now() < until {
                match raw.accept() {
                    Ok((mut c, _)) => {
                        c.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 4096];
                        if let Ok(n) = c.read(&mut buf) {
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        upstream("o", &[raw_addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    // :method GET (static 2), :scheme http (static 6), `host: t` (literal
    // with indexing, name = static 38); no :path, no :authority; END_STREAM.
    start.extend(frame(
        HEADERS,
        END_HEADERS | 1,
        1,
        &[0x82, 0x86, 0x66, 0x01, b't'],
    ));
    s.write_all(&start).await.unwrap();
    let (frames, _) = read_until_closed(&mut s, Duration::from_secs(2)).await;
    recorder.join().unwrap();
    let head = frames
        .iter()
        .find(|f| f.kind == HEADERS)
        .unwrap_or_else(|| panic!("no response head: {frames:?}"));
    // `:status 400` is static table entry 12.
    assert_eq!(head.payload.first(), Some(&0x8c), "not a 400: {frames:?}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.is_empty(),
        "the upstream got {:?}",
        String::from_utf8_lossy(&seen)
    );
}
