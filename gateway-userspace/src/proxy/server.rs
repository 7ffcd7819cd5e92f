//! The proxy process side: binds the listeners, accepts connections
//! (connection limits, PROXY protocol, TLS handshake), picks the protocol
//! (ALPN over TLS, the HTTP/2 preface in cleartext), serves HTTP/1.1 with
//! hyper and HTTP/2 with `h2_server`, closes idle connections, swaps the
//! state on reload and shuts down gracefully. The request phases live in
//! `pipeline`.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use super::{
    body::{self, ProxyBody},
    config::{Limits, Listener},
    conn::{ConnInfo, ConnIo, Protocol},
    demo,
    hooks::Hooks,
    pipeline, proxy_protocol,
    reject::{Reason, Rejection},
    state::ProxyState,
    tls::TlsError,
};
use crate::config::Config;

/// Why the proxy could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener (or the demo upstream) could not bind its address.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    state: ArcSwap<ProxyState>,
    conns: Arc<ConnCounts>,
}

impl Proxy {
    /// Binds every listener (and the demo upstream) and starts serving.
    pub async fn start(config: &Config, hooks: Hooks) -> Result<Proxy, ProxyError> {
        let state = ProxyState::build(config, hooks)?;
        // Upstream names get one bounded first lookup before serving.
        state.pools.settle(config.dns.timeout).await;
        let mut tasks = Vec::new();
        if config.demo.enabled {
            let (_, task) =
                demo::start(config.demo.address)
                    .await
                    .map_err(|source| ProxyError::Bind {
                        addr: config.demo.address,
                        source,
                    })?;
            tasks.push(task);
        }
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            conns: Arc::default(),
        });
        let (shutdown, rx) = watch::channel(false);
        let mut addrs = Vec::new();
        for l in &config.listeners {
            let socket = l.bind().map_err(|source| ProxyError::Bind {
                addr: l.address,
                source,
            })?;
            let local = socket.local_addr().map_err(|source| ProxyError::Bind {
                addr: l.address,
                source,
            })?;
            tracing::info!(
                listener = %l.display_name(),
                address = %local,
                tls = l.tls,
                backlog = l.backlog,
                redirect_https_port = ?l.redirect_https_port,
                "proxy listening"
            );
            addrs.push((l.display_name(), local));
            tasks.push(tokio::spawn(accept_loop(
                socket,
                l.clone(),
                shared.clone(),
                rx.clone(),
            )));
        }
        Ok(Proxy {
            shared,
            addrs,
            shutdown,
            tasks,
        })
    }

    /// A handle on the current config generation (metrics, readiness).
    pub fn watch(&self) -> StateWatch {
        StateWatch(self.shared.clone())
    }

    /// The bound address of a listener, by name (or configured address).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Swaps in routes, pools, limits and certificates from a new config.
    /// On error nothing changes. Listener addresses need a restart.
    /// Swaps in a new generation built from `config` with `hooks` (built
    /// from the same config by the caller).
    pub fn reload(&self, config: &Config, hooks: Hooks) -> Result<(), ProxyError> {
        let state = ProxyState::build(config, hooks)?;
        // Names keep their last good addresses across the swap.
        state.pools.adopt(&self.shared.state.load().pools);
        self.shared.state.store(Arc::new(state));
        Ok(())
    }

    /// Stops accepting, asks connections to finish their requests, and
    /// waits up to `grace` for them.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let wait = async {
            while self.shared.conns.total.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                open = self.shared.conns.total.load(Ordering::Relaxed),
                "shutdown grace period over; closing remaining connections"
            );
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads the proxy's current config generation.
#[derive(Clone)]
pub struct StateWatch(Arc<Shared>);

impl StateWatch {
    /// The generation new requests use.
    pub fn load(&self) -> Arc<ProxyState> {
        self.0.state.load_full()
    }
}

async fn accept_loop(
    socket: TcpListener,
    cfg: Listener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name: Arc<str> = cfg.display_name().into();
    loop {
        let (tcp, peer) = tokio::select! {
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let limits = shared.state.load().limits.clone();
        let Some(permit) = shared.conns.acquire(peer.ip(), &limits) else {
            tracing::warn!(listener = %name, peer = %peer, "connection limit reached; closing");
            continue;
        };
        let (cfg, shared, name, rx) = (cfg.clone(), shared.clone(), name.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            accept_conn(tcp, peer, &cfg, shared, name, rx).await;
        });
    }
}

async fn accept_conn(
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    cfg: &Listener,
    shared: Arc<Shared>,
    name: Arc<str>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let state = shared.state.load_full();
    let handshake_timeout = state.limits.header_read_timeout;
    let mut proxied_by = None;
    if cfg.proxy_protocol {
        if !state.trusted.contains(peer.ip()) {
            tracing::warn!(listener = %name, peer = %peer, "PROXY protocol from an untrusted peer; closing");
            return;
        }
        match tokio::time::timeout(handshake_timeout, proxy_protocol::read_header(&mut tcp)).await {
            Ok(Ok(Some(source))) => {
                proxied_by = Some(peer);
                peer = source;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return tracing::debug!(peer = %peer, error = %e, "bad PROXY header"),
            Err(_) => return,
        }
    }
    let seen = if proxied_by.is_some() {
        crate::escalate::Seen::Forwarded
    } else {
        crate::escalate::Seen::Socket
    };
    if let Some(port) = cfg.redirect_https_port {
        let info = Arc::new(ConnInfo::new(peer, false, name).proxied_by(proxied_by));
        return serve_plain(tcp, info, &state, Redirect { port }, shutdown).await;
    }
    if !cfg.tls {
        let info = Arc::new(
            ConnInfo::new(peer, false, name)
                .proxied_by(proxied_by)
                .with_escalation(state.hooks.escalation.clone(), seen),
        );
        let handler = Proxied {
            shared,
            info: info.clone(),
        };
        return serve_plain(tcp, info, &state, handler, shutdown).await;
    }
    let Some(acceptor) = state.tls.clone() else {
        return;
    };
    let metrics = &state.hooks.observe.metrics;
    // Boxed: the handshake state (with rustls' buffers) is not kept in
    // every connection's task after the handshake.
    let handshake = Box::pin(acceptor.accept(tcp));
    let tls = match tokio::time::timeout(handshake_timeout, handshake).await {
        Ok(Ok(s)) => {
            metrics.tls_handshake("ok");
            s
        }
        Ok(Err(e)) => {
            metrics.tls_handshake("error");
            return tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics.tls_handshake("timeout");
            return tracing::debug!(peer = %peer, "TLS handshake timed out");
        }
    };
    // The connection speaks what ALPN chose; no ALPN means HTTP/1.1
    // (RFC 9113 §3.2: h2 over TLS requires ALPN).
    let protocol = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let info = Arc::new(
        ConnInfo::new(peer, true, name)
            .proxied_by(proxied_by)
            .with_escalation(state.hooks.escalation.clone(), seen),
    );
    let handler = Proxied {
        shared,
        info: info.clone(),
    };
    // Boxed, so that cleartext connections' tasks are not sized for TLS.
    Box::pin(serve(tls, protocol, info, &state, handler, shutdown)).await
}

/// What answers the requests of one connection, over HTTP/1.1 (hyper) or
/// HTTP/2 (`h2_server`): the body type differs, the handling does not.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers one request; never fails (errors become responses).
    fn call<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static + use<Self, B>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>;
}

/// The proxy listeners' handler: every request through the pipeline.
#[derive(Clone)]
struct Proxied {
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
}

impl Handler for Proxied {
    fn call<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static + use<B>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>,
    {
        // Each request uses the newest generation (reloads apply at once).
        let state = self.shared.state.load_full();
        // Boxed per request: hyper keeps a slot for the service future for
        // the life of each connection, so an unboxed pipeline (kilobytes)
        // would be held by every idle keep-alive connection.
        let answer: Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> =
            Box::pin(pipeline::handle(state, self.info.clone(), req));
        answer
    }
}

/// The redirect listener's handler.
#[derive(Clone)]
struct Redirect {
    port: u16,
}

impl Handler for Redirect {
    fn call<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static + use<B>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<body::BoxError>,
    {
        std::future::ready(redirect(&req, self.port))
    }
}

/// A cleartext connection: HTTP/2 with prior knowledge when its first bytes
/// are the HTTP/2 preface (RFC 9113 §3.3), HTTP/1.x otherwise. A client
/// that sends nothing within `idle_timeout + header_read_timeout` is closed;
/// one that starts but does not finish telling which (a partial preface)
/// within `header_read_timeout` of its first byte gets the HTTP/1 408 and a
/// slowloris offence, as a partial request head does.
async fn serve_plain<H: Handler>(
    mut tcp: TcpStream,
    info: Arc<ConnInfo>,
    state: &ProxyState,
    handler: H,
    shutdown: watch::Receiver<bool>,
) {
    let limits = &state.limits;
    let first = limits.idle_timeout + limits.header_read_timeout;
    let protocol = match sniff_preface(&tcp, first, limits.header_read_timeout).await {
        Sniff::Decided(p) => p,
        Sniff::Closed => return,
        Sniff::Stalled => {
            info.head_timed_out();
            let answer = super::conn::request_timeout_response();
            let write = tokio::io::AsyncWriteExt::write_all(&mut tcp, &answer);
            let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            return;
        }
    };
    serve(tcp, protocol, info, state, handler, shutdown).await
}

/// What the first bytes of a cleartext connection said.
enum Sniff {
    Decided(Protocol),
    /// Closed, failed or silent before its first byte.
    Closed,
    /// A prefix of the preface that did not go on in time.
    Stalled,
}

/// Peeks (without consuming) until the first bytes either are the HTTP/2
/// preface or cannot be: the first byte within `first`, the rest within
/// `rest` of it.
async fn sniff_preface(tcp: &TcpStream, first: Duration, rest: Duration) -> Sniff {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    match tokio::time::timeout(first, tcp.peek(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Sniff::Closed,
    }
    let deadline = tokio::time::Instant::now() + rest;
    let mut backoff = Duration::from_millis(1);
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(0) | Err(_) => return Sniff::Closed,
            Ok(n) => n,
        };
        if buf[..n] != PREFACE[..n] {
            return Sniff::Decided(Protocol::Http1);
        }
        if n == PREFACE.len() {
            return Sniff::Decided(Protocol::Http2);
        }
        // A prefix of the preface so far ("P", "PR", ...): wait for more,
        // backing off so a client that stalls here costs next to nothing.
        if tokio::time::Instant::now() >= deadline {
            return Sniff::Stalled;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}

/// Serves one connection in the protocol chosen for it until it ends, it
/// idles past `idle_timeout`, or the gateway shuts down (then in-flight
/// requests finish: HTTP/1 closes after the current response, HTTP/2 sends
/// GOAWAY).
async fn serve<S, H>(
    io: S,
    protocol: Protocol,
    info: Arc<ConnInfo>,
    state: &ProxyState,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let limits = &state.limits;
    let io = ConnIo::new(
        io,
        info.clone(),
        protocol,
        limits.header_read_timeout,
        limits.h2_budget(),
    );
    let idle = limits.idle_timeout;
    if protocol == Protocol::Http2 {
        let handshake = limits.header_read_timeout;
        // Boxed, so that HTTP/1 connections' tasks are not sized for h2.
        return Box::pin(super::h2_server::serve(
            io,
            &state.http2,
            handler,
            &info,
            handshake,
            idle,
            shutdown,
        ))
        .await;
    }
    let svc = service_fn(move |req: Request<Incoming>| {
        let answer = handler.call(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn = state
        .http1
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                if info.idle_for(idle) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The redirect listener's answer: 308 to the same host and path over HTTPS.
fn redirect<B>(req: &Request<B>, port: u16) -> Response<ProxyBody> {
    // The same Host rules as the proxy listeners: one well-formed authority.
    let host = match super::check::request_authority(req) {
        Ok(Some(a)) => a.host().to_owned(),
        Ok(None) => {
            let r = Rejection::new(Reason::BadHost, "a Host header is required");
            return pipeline::problem_response(&r, "-");
        }
        Err(r) => return pipeline::problem_response(&r, "-"),
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Open connections, in total and per client IP.
#[derive(Default)]
struct ConnCounts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnCounts {
    fn acquire(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<ConnPermit> {
        let ip = super::client_ip::canonical(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= limits.max_connections_per_ip
            || self.total.load(Ordering::Relaxed) >= limits.max_connections
        {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnPermit {
            counts: self.clone(),
            ip,
        })
    }
}

/// One counted connection; released on drop.
struct ConnPermit {
    counts: Arc<ConnCounts>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
    }
}
