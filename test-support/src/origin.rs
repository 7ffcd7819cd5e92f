//! A mock HTTP/1.1 origin on loopback that records every request it
//! receives (method, target, version, headers, body), so a test asserts on
//! what the upstream saw, or that it saw nothing.
//!
//! It answers `/healthz` with 200 (or [`Behaviour::health_status`]) while
//! [`Origin::healthy`] is set and 503 once a test clears it; a WebSocket
//! upgrade with 101 and an echo of the bytes; anything else with 200,
//! `hello from <name>` and a few headers a proxy is expected to strip or
//! hide (`server`, `x-powered-by`, `keep-alive`, a `connection`-named
//! hop-by-hop header).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request method.
    pub method: String,
    /// The request target as received (path and query).
    pub uri: String,
    /// The HTTP version it came in.
    pub version: Version,
    /// The request headers as received.
    pub headers: http::HeaderMap,
    /// The whole request body (empty when it could not be read).
    pub body: Vec<u8>,
}

impl Seen {
    /// Reads the whole request: what is recorded, and its parts (for a
    /// server that answers from them).
    pub async fn read(req: Request<Incoming>) -> (Seen, http::request::Parts) {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let seen = Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        };
        (seen, parts)
    }
}

/// How the origin answers.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Wait this long before answering (not health checks).
    pub delay: Option<Duration>,
    /// Status for `/healthz` while healthy (default 200).
    pub health_status: Option<u16>,
}

/// A mock origin on a loopback port.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, echoed in the `x-origin` header and the body.
    pub name: String,
    /// Every request received, health checks included, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// While set, `/healthz` answers [`Behaviour::health_status`]; once
    /// cleared, 503.
    pub healthy: Arc<AtomicBool>,
    /// The runtime of an origin started by [`Origin::start_blocking`].
    _rt: Option<tokio::runtime::Runtime>,
}

impl Origin {
    /// An origin on an ephemeral port, on the caller's runtime.
    pub async fn start(name: &str) -> Origin {
        Self::with(name, Behaviour::default()).await
    }

    /// [`Origin::start`] with a [`Behaviour`].
    pub async fn with(name: &str, behaviour: Behaviour) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, behaviour, listener)
    }

    /// An origin on a listener the test bound (another 127.0.0.x address,
    /// or a port shared by several addresses). Needs a Tokio runtime.
    pub fn serve(name: &str, behaviour: Behaviour, listener: TcpListener) -> Origin {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let healthy = Arc::new(AtomicBool::new(true));
        let (seen2, healthy2, name2) = (seen.clone(), healthy.clone(), name.to_owned());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, healthy, name, b) = (
                    seen2.clone(),
                    healthy2.clone(),
                    name2.clone(),
                    behaviour.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        handle(req, seen.clone(), healthy.clone(), name.clone(), b.clone())
                    });
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
            healthy,
            _rt: None,
        }
    }

    /// An origin with a runtime of its own (one worker thread), for tests
    /// without one: the gateway runs as a separate process there.
    pub fn start_blocking(name: &str) -> Origin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let origin = {
            let _in_rt = rt.enter();
            Self::serve(name, Behaviour::default(), listener)
        };
        Origin {
            _rt: Some(rt),
            ..origin
        }
    }

    /// Every request received so far, health checks included.
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

    /// The headers of the requests seen, health checks excluded.
    pub fn request_headers(&self) -> Vec<http::HeaderMap> {
        self.requests().into_iter().map(|s| s.headers).collect()
    }
}

async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    healthy: Arc<AtomicBool>,
    name: String,
    b: Behaviour,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let on_upgrade = is_ws.then(|| hyper::upgrade::on(&mut req));
    let (got, parts) = Seen::read(req).await;
    seen.lock().unwrap().push(got);
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
        let status = if healthy.load(Ordering::Relaxed) {
            b.health_status.unwrap_or(200)
        } else {
            503
        };
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
