//! Shared helpers for the proxy tests: a mock origin that records what it
//! received, the proxy started in-process from inline TOML (XDP off, admin
//! socket unused), and a raw HTTP/1.1 client over loopback.

#![allow(
    dead_code,
    reason = "each test binary that includes this module uses a different subset"
)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use gateway::{
    config::Config,
    proxy::{Hooks, Proxy},
};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// How the origin answers.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Status for `/healthz` (default 200).
    pub health_status: Option<u16>,
}

/// A mock origin on an ephemeral loopback port.
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    pub async fn start(name: &str) -> Origin {
        Self::with(name, Behaviour::default()).await
    }

    pub async fn with(name: &str, behaviour: Behaviour) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, behaviour, listener)
    }

    /// An origin on a listener the test bound (another 127.0.0.x address,
    /// or a port shared by several addresses).
    pub fn serve(name: &str, behaviour: Behaviour, listener: TcpListener) -> Origin {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, name2) = (seen.clone(), name.to_owned());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (seen, name, b) = (seen2.clone(), name2.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let svc =
                        service_fn(move |req| handle(req, seen.clone(), name.clone(), b.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Origin {
            addr,
            name: name.to_owned(),
            seen,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests seen, health checks excluded.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.uri != "/healthz")
            .collect()
    }
}

async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    name: String,
    b: Behaviour,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let on_upgrade = is_ws.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    });
    if let Some(on_upgrade) = on_upgrade {
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::default())
            .unwrap());
    }
    if parts.uri.path() == "/healthz" {
        let status = b.health_status.unwrap_or(200);
        return Ok(Response::builder()
            .status(status)
            .body(Full::from("health"))
            .unwrap());
    }
    if let Some(d) = b.delay {
        tokio::time::sleep(d).await;
    }
    Ok(Response::builder()
        .header("server", "origin-server/1.0")
        .header("x-powered-by", "php/5")
        .header("connection", "x-origin-hop")
        .header("x-origin-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-origin", name.clone())
        .body(Full::from(format!("hello from {name}")))
        .unwrap())
}

/// Starts the proxy from TOML; `{NAME}` placeholders are replaced first.
pub async fn proxy(toml: &str) -> (Proxy, SocketAddr) {
    let full = format!("{toml}\n[xdp]\nenabled = false\n");
    let config = Config::parse(&full, "test.toml").unwrap_or_else(|e| panic!("{e}\n{full}"));
    let proxy = Proxy::start(&config, Hooks::default()).await.unwrap();
    let addr = proxy.local_addr("main").expect("a listener named main");
    (proxy, addr)
}

/// The `[[listeners]]` entry most tests use.
pub const PLAIN: &str = "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n";

/// An `[[upstreams]]` entry with the given targets.
pub fn upstream(name: &str, targets: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\ntargets = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A parsed raw response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Sends raw bytes, reads until the server closes (10 s bound).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_all(&mut s).await
}

pub async fn read_all(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    parse(&buf)
}

pub fn parse(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A GET with `Connection: close` and extra header lines.
pub async fn get(addr: SocketAddr, path: &str, extra: &str) -> RawResponse {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}Connection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

/// A TLS client connection to `addr` with SNI `sni`, offering `alpn`, that
/// accepts any server certificate ([`AcceptAny`]).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// A rustls verifier that accepts any certificate: the gateway's is
/// self-signed, and the TLS tests compare the presented one themselves.
#[derive(Debug)]
pub struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
