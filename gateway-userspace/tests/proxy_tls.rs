//! TLS (SNI certificate choice, ALPN h2, HSTS), the HTTP→HTTPS redirect
//! listener, WebSocket passthrough and reload.

mod proxy_common;

use std::{net::SocketAddr, path::PathBuf};

use bytes::Bytes;
use gateway::{config::Config, proxy::Engines};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gw-proxy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a self-signed cert for `name`; returns (chain, key, DER).
fn cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let (chain, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&chain, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (chain, key, c.cert.der().to_vec())
}

fn tls_toml(dir: &std::path::Path, origin: SocketAddr) -> (String, Vec<u8>, Vec<u8>) {
    let (a_chain, a_key, a_der) = cert(dir, "a.test");
    let (b_chain, b_key, b_der) = cert(dir, "b.test");
    let toml = format!(
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\ntls = true\n\
         [[tls.certificates]]\nchain = \"{}\"\nkey = \"{}\"\nserver_names = [\"a.test\"]\n\
         [[tls.certificates]]\nchain = \"{}\"\nkey = \"{}\"\nserver_names = [\"b.test\", \"*.b.test\"]\n\
         {}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        a_chain.display(),
        a_key.display(),
        b_chain.display(),
        b_key.display(),
        upstream("o", &[origin], "")
    );
    (toml, a_der, b_der)
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_h2_works() {
    let origin = Origin::start("o").await;
    let dir = temp_dir("sni");
    let (toml, a_der, b_der) = tls_toml(&dir, origin.addr);
    let (_p, addr) = proxy(&toml).await;

    for (sni, want) in [
        ("a.test", &a_der),
        ("b.test", &b_der),
        ("x.b.test", &b_der),
        ("other.test", &a_der),
    ] {
        let s = tls_connect(addr, sni, &[b"http/1.1"]).await;
        let presented = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(&presented, want, "certificate for SNI {sni}");
    }

    let s = tls_connect(addr, "b.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://b.test/h2-path")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert!(resp.headers().get("server").is_none());
    let seen = &origin.requests()[0];
    assert_eq!(seen.uri, "/h2-path");
    assert_eq!(seen.headers["host"], "b.test");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // HTTP/1.1 over TLS also works.
    let mut s = tls_connect(addr, "a.test", &[b"http/1.1"]).await;
    s.write_all(b"GET /h1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let r = parse(&buf);
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_some());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn self_signed_certificate_when_asked() {
    let origin = Origin::start("o").await;
    let toml = format!(
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\ntls = true\n[tls]\nself_signed = true\n{}\
         [[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    let s = tls_connect(addr, "localhost", &[b"http/1.1"]).await;
    assert!(s.get_ref().1.peer_certificates().is_some());
}

#[tokio::test]
async fn redirect_listener_sends_308_to_https() {
    let toml =
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\nredirect_https_port = 8443\n";
    let (_p, addr) = proxy(toml).await;
    let r = get(addr, "/some/path?q=1", "").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://test.local:8443/some/path?q=1")
    );
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_after_101() {
    let origin = Origin::start("o").await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"ws\"\npath_prefix = \"/ws/\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed before the 101 head ended"
        );
        head.push(b[0]);
    }
    let r = parse(&head);
    assert_eq!(r.status, 101, "{}", r.head);
    assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
    let seen = &origin.requests()[0];
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(
        seen.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut echo = [0u8; 19];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping-through-tunnel");
}

#[tokio::test]
async fn reload_swaps_routes_and_keeps_state_on_error() {
    let (old, new) = (Origin::start("old").await, Origin::start("new").await);
    let make = |target: SocketAddr, extra: &str| {
        format!(
            "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n{extra}\n[xdp]\nenabled = false\n",
            upstream("o", &[target], "")
        )
    };
    let first = Config::parse(&make(old.addr, ""), "t").unwrap();
    let proxy = gateway::proxy::Proxy::start(&first, Engines::default())
        .await
        .unwrap();
    let addr = proxy.local_addr("main").unwrap();
    get(addr, "/", "").await;
    assert_eq!(old.requests().len(), 1);

    // A config whose certificate cannot be loaded is refused as a whole.
    let broken = make(
        new.addr,
        "[[listeners]]\nname = \"tls\"\naddress = \"127.0.0.1:0\"\ntls = true\n\
         [[tls.certificates]]\nchain = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\nserver_names = [\"x\"]\n",
    );
    let broken = Config::parse(&broken, "t").unwrap();
    assert!(proxy.reload(&broken, Engines::default()).is_err());
    get(addr, "/", "").await;
    assert_eq!(old.requests().len(), 2);

    proxy
        .reload(
            &Config::parse(&make(new.addr, ""), "t").unwrap(),
            Engines::default(),
        )
        .unwrap();
    get(addr, "/", "").await;
    assert_eq!(new.requests().len(), 1);
    assert_eq!(old.requests().len(), 2);
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}
