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
        Arc, Mutex, MutexGuard,
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
    config::Limits,
    conn::{ConnInfo, ConnIo, Protocol},
    demo,
    listeners::{self, Lifecycle, OpenGuard, Table},
    phase::Engines,
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
    #[error("listener '{listener}': binding {addr}: {source}")]
    Bind {
        /// The listener's name (`demo` for the demo upstream).
        listener: String,
        /// The address it was to listen on.
        addr: SocketAddr,
        /// Why `bind(2)` or `listen(2)` failed.
        source: std::io::Error,
    },
    /// Certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl From<listeners::BindError> for ProxyError {
    fn from(e: listeners::BindError) -> Self {
        ProxyError::Bind {
            listener: e.listener,
            addr: e.addr,
            source: e.source,
        }
    }
}

/// The running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Mutex<Table>,
    tasks: Vec<JoinHandle<()>>,
    /// The demo upstream's socket (configured address, a duplicate of the
    /// descriptor), to hand to a successor.
    demo: Option<(SocketAddr, std::os::fd::OwnedFd)>,
    /// Stops the demo upstream accepting.
    demo_stop: Mutex<Option<watch::Sender<bool>>>,
    /// Accept loops bound by [`Proxy::bind`] and not started yet.
    pending: Mutex<Vec<(u64, TcpListener, Arc<listeners::ListenerCfg>)>>,
}

struct Shared {
    state: ArcSwap<ProxyState>,
    conns: Arc<ConnCounts>,
}

impl Proxy {
    /// Binds every listener (and the demo upstream) and starts serving.
    pub async fn start(config: &Config, engines: Engines) -> Result<Proxy, ProxyError> {
        let proxy = Self::bind(config, engines, listeners::Inherited::default(), None).await?;
        proxy.serve();
        Ok(proxy)
    }

    /// Builds the first generation and binds every listener, taking the
    /// sockets a previous process handed over (`gateway upgrade`) where
    /// they match, without accepting yet: [`Proxy::serve`] starts. The
    /// demo upstream (`[demo]`) serves at once, on `demo_socket` if given.
    ///
    /// # Errors
    /// As [`Proxy::prepare`].
    pub async fn bind(
        config: &Config,
        engines: Engines,
        mut inherited: listeners::Inherited,
        demo_socket: Option<std::net::TcpListener>,
    ) -> Result<Proxy, ProxyError> {
        let mut state = ProxyState::build(config, engines)?;
        // Upstream names get one bounded first lookup before serving.
        state.pools.settle(config.dns.timeout.get()).await;
        let mut tasks = Vec::new();
        let (mut demo, mut demo_stop) = (None, None);
        if config.demo.enabled {
            let (stop_tx, stop_rx) = watch::channel(false);
            demo_stop = Some(stop_tx);
            let (_, task, fd) = demo::start(config.demo.address, demo_socket, stop_rx)
                .await
                .map_err(|source| ProxyError::Bind {
                    listener: "demo".into(),
                    addr: config.demo.address,
                    source,
                })?;
            tasks.push(task);
            demo = Some((config.demo.address, fd));
        }
        let mut table = Table::default();
        let applied = table.apply(listeners::plan(&table, &config.listeners, &mut inherited)?);
        for (name, addr) in inherited.unused() {
            tracing::info!(listener = name, address = %addr, "a listener of the previous process is not in this config; its socket is closed");
        }
        state.listeners = applied.settings;
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            conns: Arc::default(),
        });
        Ok(Proxy {
            shared,
            listeners: Mutex::new(table),
            tasks,
            demo,
            demo_stop: Mutex::new(demo_stop),
            pending: Mutex::new(applied.start),
        })
    }

    /// Starts the accept loops of the listeners bound by [`Proxy::bind`].
    pub fn serve(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        start_loops(&self.shared, &mut self.table(), pending);
    }

    /// Every listening socket (duplicated descriptors), by listener name
    /// and configured address, to hand to a successor; the demo upstream's
    /// is [`Proxy::demo_socket`].
    pub fn listening_sockets(
        &self,
    ) -> std::io::Result<Vec<(String, SocketAddr, std::os::fd::OwnedFd)>> {
        use std::os::fd::AsFd as _;
        let table = self.table();
        let mut out = Vec::with_capacity(table.slots.len());
        for s in &table.slots {
            if let Some(socket) = &s.socket {
                out.push((
                    s.name.clone(),
                    s.configured,
                    socket.as_fd().try_clone_to_owned()?,
                ));
            }
        }
        Ok(out)
    }

    /// The demo upstream's socket (configured address, descriptor).
    pub fn demo_socket(&self) -> Option<(SocketAddr, std::os::fd::BorrowedFd<'_>)> {
        use std::os::fd::AsFd as _;
        self.demo.as_ref().map(|(a, fd)| (*a, fd.as_fd()))
    }

    /// Stops every accept loop, the demo upstream's included (the sockets
    /// stay open: a successor accepts on them now), and asks connections to
    /// finish their current request and close (HTTP/1 `Connection: close`,
    /// HTTP/2 GOAWAY; [`Lifecycle::HandedOver`]). A successor, which opens
    /// no upstream connection before it serves, then reaches only its own
    /// demo upstream.
    pub fn stop_accepting(&self) {
        for s in &self.table().slots {
            let _ = s.stop.send(Lifecycle::HandedOver);
        }
        if let Some(demo) = &*self.demo_stop.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = demo.send(true);
        }
    }

    /// Accepts again after [`Proxy::stop_accepting`] (a handover that
    /// failed at its last step). Connections already told to close still
    /// close after their current request.
    pub fn resume_accepting(&self) {
        // The demo upstream serves again on its socket.
        let mut demo_stop = self.demo_stop.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some((addr, fd)), Some(stop)) = (&self.demo, demo_stop.as_mut())
            && *stop.borrow()
            && let Ok(fd) = fd.try_clone()
        {
            let (tx, rx) = watch::channel(false);
            *stop = tx;
            let (addr, socket) = (*addr, std::net::TcpListener::from(fd));
            tokio::spawn(async move {
                if let Err(e) = demo::start(addr, Some(socket), rx).await {
                    tracing::error!(error = %e, "the demo upstream could not serve again");
                }
            });
        }
        drop(demo_stop);
        let state = self.shared.state.load_full();
        let mut table = self.table();
        for s in &mut table.slots {
            let _ = s.stop.send(Lifecycle::Serving);
            let (Some(socket), Some(cfg)) = (s.socket.clone(), state.listeners.get(s.id)) else {
                continue;
            };
            if s.task.as_ref().is_some_and(|t| !t.is_finished()) {
                continue;
            }
            s.task = Some(tokio::spawn(accept_loop(
                socket,
                s.id,
                cfg.clone(),
                self.shared.clone(),
                s.open.clone(),
                s.stop.subscribe(),
            )));
        }
    }

    /// A handle on the current config generation (metrics, readiness).
    pub fn watch(&self) -> StateWatch {
        StateWatch(self.shared.clone())
    }

    /// The bound address of a running listener, by name (or configured
    /// address); `None` once a reload removed it.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.table()
            .slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.local)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Swaps in a new generation built from `config` with `engines` (built
    /// from the same config by the caller): routes, pools, limits,
    /// certificates and listeners (see [`Proxy::prepare`]). On error
    /// nothing changes.
    pub fn reload(&self, config: &Config, engines: Engines) -> Result<(), ProxyError> {
        self.prepare(config, engines)?.commit();
        Ok(())
    }

    /// The first half of a reload: builds the new generation and binds
    /// every listener socket it needs, changing nothing yet. Dropping the
    /// result abandons the reload (the new sockets close); [`Prepared::commit`]
    /// applies it. Holds the listener table until then, so reloads do not
    /// interleave (and [`Proxy::local_addr`] waits for it).
    ///
    /// # Errors
    /// [`ProxyError::Tls`] when certificate or key files cannot be used;
    /// [`ProxyError::Bind`] naming the first listener that could not bind.
    pub fn prepare(&self, config: &Config, engines: Engines) -> Result<Prepared<'_>, ProxyError> {
        let state = ProxyState::build(config, engines)?;
        // Names keep their last good addresses across the swap.
        state.pools.adopt(&self.shared.state.load().pools);
        let table = self.table();
        let plan = listeners::plan(&table, &config.listeners, &mut Default::default())?;
        Ok(Prepared {
            shared: &self.shared,
            table,
            state,
            plan,
            grace: config.limits.shutdown_grace.get(),
        })
    }

    /// Stops accepting, asks connections to finish their requests, and
    /// waits up to `grace` for them; then closes the rest.
    pub async fn shutdown(self, grace: Duration) {
        let table = self
            .listeners
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        for s in &table.slots {
            // After a handover, connections keep `HandedOver`'s gentler rule.
            s.stop.send_if_modified(|l| {
                let serving = *l == Lifecycle::Serving;
                if serving {
                    *l = Lifecycle::Draining;
                }
                serving
            });
        }
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
        for s in &table.slots {
            let _ = s.stop.send(Lifecycle::Closed);
            if let Some(t) = &s.task {
                t.abort();
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A reload whose generation is built and whose new sockets are bound, not
/// applied yet ([`Proxy::prepare`]).
pub struct Prepared<'a> {
    shared: &'a Arc<Shared>,
    table: MutexGuard<'a, Table>,
    state: ProxyState,
    plan: Vec<(Arc<listeners::ListenerCfg>, listeners::Target)>,
    grace: Duration,
}

impl Prepared<'_> {
    /// Applies the reload: swaps the generation in (requests and new
    /// connections use it at once; requests in flight finish on theirs),
    /// starts the new listeners, and retires the removed ones (they stop
    /// accepting now and get `shutdown_grace` to finish their connections).
    pub fn commit(self) {
        let Prepared {
            shared,
            mut table,
            mut state,
            plan,
            grace,
        } = self;
        let applied = table.apply(plan);
        state.listeners = applied.settings;
        shared.state.store(Arc::new(state));
        start_loops(shared, &mut table, applied.start);
        for slot in applied.retired {
            listeners::retire(slot, grace);
        }
    }
}

/// Spawns the accept loops of new slots.
fn start_loops(
    shared: &Arc<Shared>,
    table: &mut Table,
    start: Vec<(u64, TcpListener, Arc<listeners::ListenerCfg>)>,
) {
    for (id, socket, cfg) in start {
        let slot = table.slot_mut(id).expect("applied to this table");
        let rx = slot.stop.subscribe();
        let open = slot.open.clone();
        let socket = Arc::new(socket);
        slot.socket = Some(socket.clone());
        slot.task = Some(tokio::spawn(accept_loop(
            socket,
            id,
            cfg,
            shared.clone(),
            open,
            rx,
        )));
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

/// Accepts on one listener's socket until it is told to stop. Each
/// connection is served with the listener settings of the generation
/// current when it was accepted (`last` when a reload just removed it).
async fn accept_loop(
    socket: Arc<TcpListener>,
    id: u64,
    mut last: Arc<listeners::ListenerCfg>,
    shared: Arc<Shared>,
    open: Arc<std::sync::atomic::AtomicUsize>,
    mut stop: watch::Receiver<Lifecycle>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %last.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let state = shared.state.load_full();
        if let Some(cfg) = state.listeners.get(id)
            && !Arc::ptr_eq(cfg, &last)
        {
            last = cfg.clone();
        }
        let Some(permit) = shared.conns.acquire(peer.ip(), &state.limits) else {
            tracing::warn!(listener = %last.name, peer = %peer, "connection limit reached; closing");
            continue;
        };
        let (cfg, shared, rx) = (last.clone(), shared.clone(), stop.clone());
        let counted = OpenGuard::new(&open);
        tokio::spawn(async move {
            let _permit = (permit, counted);
            accept_conn(tcp, peer, &cfg, state, shared, rx).await;
        });
    }
}

async fn accept_conn(
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    lcfg: &listeners::ListenerCfg,
    state: Arc<ProxyState>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Lifecycle>,
) {
    let _ = tcp.set_nodelay(true);
    let (cfg, name) = (&lcfg.listener, lcfg.name.clone());
    let handshake_timeout = state.limits.header_read_timeout.get();
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
                .with_escalation(state.engines.escalation.clone(), seen),
        );
        let handler = Proxied {
            shared,
            info: info.clone(),
        };
        return serve_plain(tcp, info, &state, handler, shutdown).await;
    }
    // Boxed: a TLS stream (over a kilobyte of rustls state) is not part of
    // the cleartext connections' tasks, which every idle keep-alive
    // connection pays for.
    let info = Arc::new(
        ConnInfo::new(peer, true, name)
            .proxied_by(proxied_by)
            .with_escalation(state.engines.escalation.clone(), seen),
    );
    Box::pin(accept_tls(tcp, info, state, shared, shutdown)).await
}

/// The TLS side of [`accept_conn`]: the handshake within
/// `header_read_timeout`, then HTTP/1.1 or HTTP/2 as ALPN chose.
async fn accept_tls(
    tcp: TcpStream,
    info: Arc<ConnInfo>,
    state: Arc<ProxyState>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Lifecycle>,
) {
    let peer = info.peer;
    let handshake_timeout = state.limits.header_read_timeout.get();
    let Some(acceptor) = state.tls.clone() else {
        return;
    };
    let metrics = &state.engines.observe.metrics;
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
    let handler = Proxied {
        shared,
        info: info.clone(),
    };
    serve(tls, protocol, info, &state, handler, shutdown).await
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
    shutdown: watch::Receiver<Lifecycle>,
) {
    let limits = &state.limits;
    let first = limits.idle_timeout.get() + limits.header_read_timeout.get();
    let protocol = match sniff_preface(&tcp, first, limits.header_read_timeout.get()).await {
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
    mut shutdown: watch::Receiver<Lifecycle>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let limits = &state.limits;
    let io = ConnIo::new(
        io,
        info.clone(),
        protocol,
        limits.header_read_timeout.get(),
        limits.h2_budget(),
    );
    let idle = limits.idle_timeout.get();
    if protocol == Protocol::Http2 {
        let handshake = limits.header_read_timeout.get();
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
    let conn_info = info.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let answer = handler.call(req);
        let info = conn_info.clone();
        async move {
            let mut resp = answer.await;
            // Draining: the client learns it from the response and opens
            // its next connection elsewhere (to the upgraded process), so
            // no request meets a connection closing under it.
            if info.is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut io = TokioIo::new(io);
    let mut svc = svc;
    // While draining: how often an idle connection is looked at.
    let mut drain_tick: Option<tokio::time::Interval> = None;
    // Parking is tried once per burst of requests (`requests_started` moved
    // since), so a client that stalls mid-head is not parked over and over.
    let mut parked_at: Option<u64> = None;
    loop {
        // Boxed, with its timers and select state: dropped while the
        // connection is parked, so a parked connection's task holds only
        // the socket, the service and the wait below (the task's size is
        // what every idle keep-alive connection costs).
        let (sd, dt, ci) = (&mut shutdown, &mut drain_tick, &info);
        let burst = Box::pin(async move {
            let mut conn = Box::pin(state.http1.serve_connection(io, svc).with_upgrades());
            let (mut closing, mut parking, mut ended_ok) = (false, false, false);
            // One timer for the idle timeout and parking (a select polls
            // every armed timer on each wake of the connection, so one
            // timer instead of two is one poll less per request): every
            // PARK_AFTER (or a quarter of `idle`, if shorter) while the
            // connection may still be parked in this burst, every quarter
            // of `idle` after that. The idle timeout is checked first: a
            // connection idle past it is closed, never parked.
            let idle_step = (idle / 4).max(Duration::from_millis(50));
            let park_step = PARK_AFTER.min(idle_step);
            let check = tokio::time::sleep(park_step);
            tokio::pin!(check);
            loop {
                tokio::select! {
                    biased;
                    r = conn.as_mut() => {
                        match r {
                            Ok(()) => ended_ok = true,
                            Err(e) => tracing::debug!(peer = %ci.peer, error = %e, "connection ended with an error"),
                        }
                        break;
                    }
                    r = sd.changed() => match lifecycle_change(r, sd, ci, dt.is_some()) {
                        LifecycleChange::Close => return None,
                        LifecycleChange::StartDrain => *dt = Some(tokio::time::interval(DRAIN_IDLE / 4)),
                        LifecycleChange::Continue => {}
                    },
                    _ = async { dt.as_mut().expect("guarded").tick().await }, if dt.is_some() && !closing => {
                        if ci.idle_for(DRAIN_IDLE) {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                    () = check.as_mut(), if !closing => {
                        let may_park = !ci.is_draining() && parked_at != Some(ci.requests_started());
                        if ci.idle_for(idle) {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        } else if may_park && ci.idle_for(PARK_AFTER) {
                            // hyper ends an idle connection at once on a
                            // graceful shutdown; ConnIo skips the socket's
                            // shutdown while `parking` is set.
                            (closing, parking) = (true, true);
                            ci.set_parking(true);
                            conn.as_mut().graceful_shutdown();
                        } else {
                            let next = if may_park { park_step } else { idle_step };
                            check.as_mut().reset(tokio::time::Instant::now() + next);
                        }
                    }
                }
            }
            ci.set_parking(false);
            // Only a connection hyper ended cleanly is parked: an error (a
            // response body aborted by the upstream read timeout, say)
            // closes it, as it would without parking.
            if !parking || !ended_ok {
                return None;
            }
            // `None`: the connection was upgraded (WebSocket) meanwhile.
            let parts = Pin::into_inner(conn).into_parts()?;
            Some((parts.io, parts.service, parts.read_buf))
        });
        let Some((parked_io, parked_svc, unread)) = burst.await else {
            return;
        };
        (io, svc) = (parked_io, parked_svc);
        parked_at = Some(info.requests_started());
        let next = if unread.is_empty() {
            // An empty `Bytes` frozen from hyper's read buffer still owns
            // its 8 KiB: let it go before waiting.
            drop(unread);
            io.inner_mut().release_idle();
            match wait_parked(io.inner_mut(), &info, &mut shutdown, idle).await {
                Some(first) => first,
                None => {
                    use tokio::io::AsyncWriteExt as _;
                    let _ = io.inner_mut().shutdown().await;
                    return;
                }
            }
        } else {
            unread
        };
        io.inner_mut().replay(next);
    }
}

/// A parked HTTP/1 connection (idle for [`PARK_AFTER`] after a response:
/// hyper's connection and its 16 KiB of read and write buffers are
/// dropped, as NGINX frees a keep-alive connection's buffers): waits for
/// the client's next byte, returned to be replayed to a new hyper
/// connection. `None`: close (the client closed, `idle` ran out, the
/// listener was closed, or it drained for [`DRAIN_IDLE`]).
async fn wait_parked<S>(
    io: &mut ConnIo<S>,
    info: &ConnInfo,
    shutdown: &mut watch::Receiver<Lifecycle>,
    idle: Duration,
) -> Option<bytes::Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let mut byte = [0u8; 1];
    let idle_end = tokio::time::sleep(idle.saturating_sub(PARK_AFTER));
    tokio::pin!(idle_end);
    let mut drain_end = (*shutdown.borrow() == Lifecycle::Draining)
        .then(|| Box::pin(tokio::time::sleep(DRAIN_IDLE)));
    loop {
        tokio::select! {
            r = io.read(&mut byte) => {
                return match r {
                    Ok(1) => Some(bytes::Bytes::copy_from_slice(&byte)),
                    _ => None,
                };
            }
            r = shutdown.changed() => match lifecycle_change(r, shutdown, info, drain_end.is_some()) {
                LifecycleChange::Close => return None,
                LifecycleChange::StartDrain => drain_end = Some(Box::pin(tokio::time::sleep(DRAIN_IDLE))),
                LifecycleChange::Continue => {}
            },
            _ = &mut idle_end => return None,
            _ = async { drain_end.as_mut().expect("guarded").await }, if drain_end.is_some() => return None,
        }
    }
}

/// What a change of the listener's lifecycle means for one HTTP/1
/// connection.
enum LifecycleChange {
    /// The listener closed (or its sender is gone): end the connection now.
    Close,
    /// Draining began (HAProxy's `idle-close-on-response`, Envoy's drain
    /// sequence): the next response closes the connection, and the caller
    /// starts its timer to close one that stays idle for [`DRAIN_IDLE`].
    /// Closing idle keep-alive connections at once would race with the
    /// request a client is sending on them.
    StartDrain,
    /// Nothing more to start (handed over: responses now close the
    /// connection; or a drain already timed).
    Continue,
}

/// Reads a lifecycle change for `info` (`changed`: what
/// `watch::Receiver::changed` returned), marking the connection draining
/// where it must. `drain_timed`: whether its drain timer already runs.
fn lifecycle_change(
    changed: Result<(), watch::error::RecvError>,
    shutdown: &watch::Receiver<Lifecycle>,
    info: &ConnInfo,
    drain_timed: bool,
) -> LifecycleChange {
    if changed.is_err() {
        return LifecycleChange::Close;
    }
    match *shutdown.borrow() {
        Lifecycle::Closed => LifecycleChange::Close,
        Lifecycle::Draining if !drain_timed => {
            info.set_draining();
            LifecycleChange::StartDrain
        }
        Lifecycle::HandedOver => {
            info.set_draining();
            LifecycleChange::Continue
        }
        _ => LifecycleChange::Continue,
    }
}

/// How long an HTTP/1 keep-alive connection stays idle before it is
/// parked ([`wait_parked`]). Busy connections (the next request within
/// this time) keep their hyper connection and buffers.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// How long an HTTP/1 connection may stay idle while its listener drains
/// before it is closed (Envoy's `drain_timeout` default).
const DRAIN_IDLE: Duration = Duration::from_secs(5);

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
