//! Connections to upstream targets, kept alive and reused per target
//! (NGINX `keepalive`, Envoy's per-host connection pool), in the pool's
//! `protocol`: HTTP/1.1, HTTP/2 with prior knowledge (`h2c`), HTTP/2 over
//! TLS (`h2`) or whichever of the two the target picks by ALPN (`auto`),
//! each over plaintext TCP or TLS (`upstream::tls`).
//!
//! HTTP/1.1: each target keeps a stack of idle connections (the most
//! recently used is taken first, so a quiet period lets the older ones time
//! out). A request takes one, or connects within `connect_timeout`; the
//! connection goes back only when its response body was read to the end
//! (never after an error, a stall or a client that went away, so a
//! half-read response can never be taken for the next one). At most
//! [`MAX_IDLE_PER_TARGET`] are kept per target.
//!
//! HTTP/2: one multiplexed connection per target, shared by all requests
//! (Envoy's default). Streams beyond the target's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` wait in hyper's queue until one ends;
//! a connection the target closed (GOAWAY) is replaced on the next request.
//! Opening it is serialized: concurrent first requests wait for one
//! handshake instead of opening one connection each.
//!
//! One task per connection drives its IO; nothing is spawned per request.
//! A connection idle for longer than `idle_timeout` is closed when it is
//! next looked at.

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Request, Response, Uri, header, uri::Scheme};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pool::Target;
use crate::proxy::{
    body::ProxyBody,
    config::upstream::{HostHeader, Upstream as UpstreamConfig, UpstreamProtocol},
    tls::TlsError,
};

/// Idle HTTP/1.1 connections kept per target at most; beyond that a
/// finished connection is closed (hyper-util's pool keeps any number).
pub const MAX_IDLE_PER_TARGET: usize = 256;

/// How many times a body-less request refused with `REFUSED_STREAM` is
/// sent again on the same HTTP/2 connection.
pub const REFUSED_RETRIES: u32 = 3;

/// Whether an HTTP/2 exchange failed without the target processing it:
/// `REFUSED_STREAM` (RFC 9113 §8.7), or, for an idempotent request, the
/// target's GOAWAY (a stream above its last-stream-id was never seen; one
/// below may have been, which only an idempotent request may risk).
fn is_refused(e: &hyper::Error, idempotent: bool) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (idempotent && h2.is_go_away() && h2.is_remote());
        }
        source = s.source();
    }
    false
}

/// Methods a request of which may be sent twice (RFC 9110 §9.2.2).
fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, `connect_timeout`):
    /// nothing was sent, so an idempotent request may go to another target.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// The OS error, or `TimedOut` after `connect_timeout`.
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted or mismatched certificate, a
    /// client certificate the target refused, no common protocol): nothing
    /// was sent.
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// The target.
        addr: SocketAddr,
        /// rustls's error, wrapped as I/O by tokio-rustls.
        source: std::io::Error,
    },
    /// The exchange failed after the request started going out (or the
    /// response head was malformed or larger than `max_response_header_bytes`).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// A gRPC call to a target that chose HTTP/1.1 by ALPN (`auto`): never
    /// downgraded; nothing was sent.
    #[error("{addr} chose HTTP/1.1; gRPC needs HTTP/2")]
    Http2Required {
        /// The target that chose HTTP/1.1.
        addr: SocketAddr,
    },
}

impl SendError {
    /// Whether nothing reached the upstream (a retry on another target is safe).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Tls { .. })
    }

    /// Whether the response head did not fit `max_response_header_bytes`.
    pub fn head_too_large(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_parse_too_large())
    }

    /// Whether this failure says something about the target's health
    /// (passive ejection): not a protocol mismatch of one call.
    pub fn counts_against_target(&self) -> bool {
        !matches!(self, Self::Http2Required { .. })
    }

    /// The TLS reason, when TLS is what failed: the handshake, or an alert
    /// the target sent after it (TLS 1.3 refuses a client certificate
    /// then, so it surfaces as a connection error).
    pub fn tls_cause(&self) -> Option<String> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(s) = source {
            if let Some(t) = s.downcast_ref::<rustls::Error>() {
                return Some(t.to_string());
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                return Some(t.to_string());
            }
            source = s.source();
        }
        None
    }
}

/// What ALPN said a target speaks (`protocol = "auto"`); 0, the default,
/// is "not connected yet" (the first request opens a connection and learns).
const ALPN_HTTP1: u8 = 1;
const ALPN_H2: u8 = 2;

/// A target's connections: idle HTTP/1.1 ones and the shared HTTP/2 one.
#[derive(Default)]
pub struct TargetConns {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<Shared>>,
    /// Held while the HTTP/2 connection is being opened.
    h2_opening: tokio::sync::Mutex<()>,
    /// When opening a connection last failed.
    open_failed_at: Mutex<Option<Instant>>,
    /// What ALPN chose last time (`auto`), so the next request knows
    /// whether to share the HTTP/2 connection or take an idle HTTP/1.1 one.
    alpn: AtomicU8,
}

impl std::fmt::Debug for TargetConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TargetConns(idle: {}, h2: {})",
            self.len(),
            self.h2_open()
        )
    }
}

struct Idle {
    send: http1::SendRequest<ProxyBody>,
    since: Instant,
}

struct Shared {
    send: http2::SendRequest<ProxyBody>,
    last_used: Instant,
}

impl TargetConns {
    fn pop(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Puts a connection back whose last response was read to the end
    /// (an HTTP/2 connection is shared and never leaves: nothing to do).
    pub fn put(&self, conn: Conn, idle_timeout: Duration) {
        let Conn(Lent::Http1(send)) = conn else {
            return;
        };
        if send.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest are at the bottom: drop those that timed out.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(Idle { send, since: now });
        }
    }

    /// Idle HTTP/1.1 connections right now (metrics, tests).
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no HTTP/1.1 connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a shared HTTP/2 connection is open.
    pub fn h2_open(&self) -> bool {
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| !s.send.is_closed())
    }

    /// The shared HTTP/2 connection, if it is open and was used within
    /// `idle_timeout` (an older one is dropped, which closes it).
    fn shared(&self, idle_timeout: Duration) -> Option<http2::SendRequest<ProxyBody>> {
        let mut slot = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(s) if !s.send.is_closed() && s.last_used.elapsed() < idle_timeout => {
                s.last_used = Instant::now();
                Some(s.send.clone())
            }
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    fn set_shared(&self, send: http2::SendRequest<ProxyBody>) {
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(Shared {
            send,
            last_used: Instant::now(),
        });
    }

    fn forget_shared(&self) {
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Stops sharing the HTTP/2 connection (requests on it finish; the
    /// next request opens a new one): after a timeout that suggests the
    /// connection, not the target, is dead.
    pub fn drop_shared(&self) {
        self.forget_shared();
    }

    /// Notes that opening a connection failed (concurrent waiters fail
    /// fast instead of each trying again).
    fn open_failed(&self) {
        *self
            .open_failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether an open attempt failed after `since`.
    fn failed_since(&self, since: Instant) -> bool {
        self.open_failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t >= since)
    }
}

/// A connection lent to one request: an HTTP/1.1 one goes back to the idle
/// stack through [`TargetConns::put`]; an HTTP/2 one stays shared.
pub struct Conn(Lent);

enum Lent {
    Http1(http1::SendRequest<ProxyBody>),
    Http2,
}

/// A fresh connection after its handshake.
enum Opened {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

/// How connections to one pool's targets are made.
pub struct Connector {
    connect_timeout: Duration,
    idle_timeout: Duration,
    protocol: UpstreamProtocol,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<TlsConnector>,
    /// The certificate name checked (and sent as SNI): `tls.server_name`,
    /// else a `host_header` literal; `None` = the target's own address.
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    /// Builds the connector of one upstream: TLS settings are read here
    /// (certificate files included).
    ///
    /// # Errors
    /// A [`TlsError`] for a CA, certificate or key file that cannot be
    /// used, or a `server_name` that is not a DNS name or an IP address.
    pub fn new(config: &UpstreamConfig) -> Result<Self, TlsError> {
        let name = config.name.get_ref();
        let mut http1 = http1::Builder::new();
        // hyper fails a response whose head does not fit its buffer
        // ("message head is too large"): the forward phase answers 502.
        http1.max_buf_size(config.max_response_header_bytes.max(8192));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.max_header_list_size(
            u32::try_from(config.max_response_header_bytes).unwrap_or(u32::MAX),
        );
        let (tls, server_name) = match &config.tls {
            None => (None, None),
            Some(t) => {
                let explicit =
                    t.server_name
                        .as_deref()
                        .map(str::to_owned)
                        .or(match &config.host_header {
                            HostHeader::Literal(v) => v.to_str().ok().map(|h| {
                                // The certificate names the host, not the port.
                                match crate::proxy::authority::parse(h) {
                                    Ok(a) => a.host().to_owned(),
                                    Err(_) => h.to_owned(),
                                }
                            }),
                            _ => None,
                        });
                let server_name = explicit
                    .map(|n| {
                        super::tls::server_name(&n).map_err(|e| TlsError::Pem {
                            path: format!("upstream '{name}' tls.server_name"),
                            message: e.to_string(),
                        })
                    })
                    .transpose()?;
                (
                    Some(super::tls::connector(name, t, config.protocol)?),
                    server_name,
                )
            }
        };
        Ok(Self {
            connect_timeout: config.connect_timeout.get(),
            idle_timeout: config.idle_timeout.get(),
            protocol: config.protocol,
            http1,
            http2,
            tls,
            server_name,
        })
    }

    /// How long an unused connection is kept.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Whether requests may go out as HTTP/2 (`h2c`, `h2`, `auto`).
    pub fn may_use_http2(&self) -> bool {
        self.protocol != UpstreamProtocol::Http1
    }

    /// Whether requests can only go out as HTTP/2 (`h2c`, `h2`).
    pub fn http2_only(&self) -> bool {
        matches!(self.protocol, UpstreamProtocol::H2c | UpstreamProtocol::H2)
    }

    /// Sends `req` to `target` and returns the response head with the
    /// connection it came on (give it back with [`TargetConns::put`] once
    /// the body is read to the end). The request comes in origin-form with a
    /// `Host`; over HTTP/2 the Host becomes `:authority` and the scheme is
    /// added (RFC 9113 §8.3.1). A reused connection that the upstream closed
    /// before the request went out is retried once on a new connection, as
    /// hyper-util's pool does. When no connection could be made the request
    /// comes back with the error, untouched, for another target.
    pub async fn send(
        &self,
        target: &Target,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), (SendError, Option<Request<ProxyBody>>)> {
        let conns = &target.conns;
        let h2 = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => true,
            UpstreamProtocol::Auto => conns.alpn.load(Ordering::Relaxed) == ALPN_H2,
        };
        if h2 {
            self.send_h2(target, req).await
        } else {
            self.send_h1(target, req).await
        }
    }

    async fn send_h1(
        &self,
        target: &Target,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), (SendError, Option<Request<ProxyBody>>)> {
        let conns = &target.conns;
        // `auto` and the target speaks HTTP/1.1: a gRPC call is refused,
        // never downgraded.
        if self.protocol == UpstreamProtocol::Auto
            && conns.alpn.load(Ordering::Relaxed) == ALPN_HTTP1
            && crate::proxy::grpc::is_grpc(req.method(), req.headers())
        {
            return Err((SendError::Http2Required { addr: target.addr }, None));
        }
        while let Some(c) = conns.pop() {
            // One clock read for both checks (it is on every request).
            let idle_for = c.since.elapsed();
            if idle_for >= self.idle_timeout || c.send.is_closed() {
                continue;
            }
            let mut send = c.send;
            // Ready as soon as hyper has finished the previous exchange.
            if send.ready().await.is_err() {
                continue;
            }
            // A connection idle for a while may be closed by the target (its
            // keep-alive timeout) while the request goes out: keep what a
            // replay needs, for requests that may be replayed.
            let replay = (idle_for >= STALE_RISK)
                .then(|| replayable_copy(&req))
                .flatten();
            match send.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Conn(Lent::Http1(send)))),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection was closed under us.
                    Some(r) => req = r,
                    None => {
                        let e = e.into_error();
                        match replay {
                            // Sent on a connection the target closed before
                            // answering: the request was not processed as far
                            // as HTTP can tell (RFC 9112 §9.3.1); an idempotent
                            // body-less one goes again, on another connection,
                            // as NGINX does for a cached connection and Go's
                            // net/http for a reused one. Not counted as a
                            // retry or a target failure.
                            Some(copy) if closed_before_answer(&e) => {
                                tracing::debug!(target = %target.addr, error = %e, "a pooled connection was closed by the target; sending the request again");
                                req = copy;
                            }
                            _ => return Err((SendError::Http(e), None)),
                        }
                    }
                },
            }
        }
        match Box::pin(self.open(target)).await {
            Ok(Opened::Http1(send)) => self.send_on_h1(target, send, req).await,
            // `auto`, and the target chose HTTP/2 this time.
            Ok(Opened::Http2(send)) => {
                conns.set_shared(send.clone());
                self.send_on_h2(target, send, req).await
            }
            Err(e) => Err((e, Some(req))),
        }
    }

    async fn send_h2(
        &self,
        target: &Target,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), (SendError, Option<Request<ProxyBody>>)> {
        match self.shared_or_open(target).await {
            Ok(Opened::Http2(send)) => self.send_on_h2(target, send, req).await,
            // `auto`, and the target now chose HTTP/1.1.
            Ok(Opened::Http1(send)) => self.send_on_h1(target, send, req).await,
            Err(e) => Err((e, Some(req))),
        }
    }

    /// The target's shared HTTP/2 connection, opened if there is none. One
    /// request opens it while the others wait; if that attempt fails, the
    /// waiters fail at once with it (and may go to another target) rather
    /// than each spending its own `connect_timeout` on a dead target.
    async fn shared_or_open(&self, target: &Target) -> Result<Opened, SendError> {
        let conns = &target.conns;
        if let Some(s) = conns.shared(self.idle_timeout) {
            return Ok(Opened::Http2(s));
        }
        let waiting_since = Instant::now();
        let _opening = conns.h2_opening.lock().await;
        if let Some(s) = conns.shared(self.idle_timeout) {
            return Ok(Opened::Http2(s));
        }
        if conns.failed_since(waiting_since) {
            return Err(SendError::Connect {
                addr: target.addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "the connection attempt this request waited for failed",
                ),
            });
        }
        let opened = Box::pin(self.open(target)).await;
        match &opened {
            Ok(Opened::Http2(s)) => conns.set_shared(s.clone()),
            Ok(Opened::Http1(_)) => {}
            Err(_) => conns.open_failed(),
        }
        opened
    }

    /// A new shared HTTP/2 connection after the last one closed, if one
    /// can be had.
    async fn reopen(&self, target: &Target) -> Option<http2::SendRequest<ProxyBody>> {
        match self.shared_or_open(target).await {
            Ok(Opened::Http2(s)) => Some(s),
            _ => None,
        }
    }

    /// Sends on a fresh HTTP/1.1 connection (`auto` when the target chose
    /// it); a gRPC call is refused instead of downgraded.
    async fn send_on_h1(
        &self,
        target: &Target,
        mut send: http1::SendRequest<ProxyBody>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), (SendError, Option<Request<ProxyBody>>)> {
        if crate::proxy::grpc::is_grpc(req.method(), req.headers()) {
            return Err((SendError::Http2Required { addr: target.addr }, None));
        }
        match send.send_request(req).await {
            Ok(resp) => Ok((resp, Conn(Lent::Http1(send)))),
            Err(e) => Err((SendError::Http(e), None)),
        }
    }

    /// Sends on a shared HTTP/2 connection; one that turns out closed (the
    /// target sent GOAWAY) is replaced once. A body-less request that the
    /// target refused with `REFUSED_STREAM` (RFC 9113 §8.7: not processed,
    /// safe to retry; servers do it when a new stream races the end of one
    /// they still count against SETTINGS_MAX_CONCURRENT_STREAMS) is sent
    /// again, up to [`REFUSED_RETRIES`] times (Envoy retries refused
    /// streams too). A request with a body is not: its body is gone.
    async fn send_on_h2(
        &self,
        target: &Target,
        mut send: http2::SendRequest<ProxyBody>,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), (SendError, Option<Request<ProxyBody>>)> {
        let (addr, conns) = (target.addr, &target.conns);
        self.to_http2(target, &mut req);
        let mut refused = 0;
        let mut reopened = false;
        loop {
            if send.ready().await.is_ok() {
                // The head, to send again if the stream is refused.
                let again = http_body::Body::is_end_stream(req.body()).then(|| {
                    let mut r = Request::new(crate::proxy::body::empty());
                    *r.method_mut() = req.method().clone();
                    *r.uri_mut() = req.uri().clone();
                    *r.version_mut() = req.version();
                    *r.headers_mut() = req.headers().clone();
                    r
                });
                match send.try_send_request(req).await {
                    Ok(resp) => return Ok((resp, Conn(Lent::Http2))),
                    Err(mut e) => match e.take_message() {
                        Some(r) => req = r,
                        None => {
                            let e = e.into_error();
                            match again {
                                Some(r)
                                    if refused < REFUSED_RETRIES
                                        && is_refused(&e, idempotent(r.method())) =>
                                {
                                    refused += 1;
                                    req = r;
                                    // A GOAWAY closed this connection: the
                                    // next attempt opens a new one.
                                    if send.is_closed() {
                                        conns.forget_shared();
                                        send = match Box::pin(self.reopen(target)).await {
                                            Some(s) => s,
                                            None => break,
                                        };
                                    }
                                    continue;
                                }
                                _ => return Err((SendError::Http(e), None)),
                            }
                        }
                    },
                }
            }
            conns.forget_shared();
            if reopened {
                break;
            }
            reopened = true;
            send = match Box::pin(self.reopen(target)).await {
                Some(s) => s,
                None => break,
            };
        }
        Err((
            SendError::Connect {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the HTTP/2 connection closed before the request went out",
                ),
            },
            Some(req),
        ))
    }

    /// Origin-form + Host → absolute URI (`:scheme`, `:authority`, `:path`)
    /// without a `host` field, as HTTP/2 wants it. Idempotent.
    fn to_http2(&self, target: &Target, req: &mut Request<ProxyBody>) {
        if req.uri().scheme().is_some() {
            return;
        }
        let authority = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| h.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| target.authority());
        let scheme = if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        if let Ok(uri) = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
        {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = http::Version::HTTP_2;
    }

    /// A new connection: TCP within `connect_timeout`, TLS if configured
    /// (the handshake within `connect_timeout` too), then the protocol's
    /// handshake. With `auto`, ALPN decides (and is remembered).
    ///
    /// Callers box it (`Box::pin(self.open(..))`): the TLS handshake makes
    /// this future large, and unboxed it would size every request's future
    /// (moved whole at each level of the call) for the rare request that
    /// opens a connection.
    async fn open(&self, target: &Target) -> Result<Opened, SendError> {
        let (addr, conns) = (target.addr, &target.conns);
        let failed = |source| SendError::Connect { addr, source };
        let timed_out =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect_timeout passed");
        // One deadline for TCP and TLS together: `connect_timeout` bounds
        // the whole connection setup, as Envoy's does.
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(failed(timed_out())),
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            let h2 = self.protocol == UpstreamProtocol::H2c;
            return self.handshake(addr, TokioIo::new(tcp), h2).await;
        };
        // `tls.server_name` (or a literal Host), else the DNS name the
        // target came from, else its address.
        let name = match (&self.server_name, &target.host) {
            (Some(n), _) => n.clone(),
            (None, Some(h)) => ServerName::try_from(h.to_string())
                .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into())),
            (None, None) => ServerName::IpAddress(addr.ip().into()),
        };
        let tls_failed = |source| SendError::Tls { addr, source };
        let stream = match tokio::time::timeout_at(deadline, tls.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(tls_failed(e)),
            Err(_) => return Err(tls_failed(timed_out())),
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        match self.protocol {
            UpstreamProtocol::H2 if !h2 => {
                return Err(tls_failed(std::io::Error::other(
                    "the target did not agree to HTTP/2 (ALPN h2); use protocol = \"auto\" or \"http1\"",
                )));
            }
            UpstreamProtocol::Auto => conns
                .alpn
                .store(if h2 { ALPN_H2 } else { ALPN_HTTP1 }, Ordering::Relaxed),
            _ => {}
        }
        self.handshake(addr, TokioIo::new(stream), h2).await
    }

    async fn handshake<I>(&self, addr: SocketAddr, io: I, h2: bool) -> Result<Opened, SendError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        if h2 {
            let (send, conn) = self.http2.handshake(io).await.map_err(SendError::Http)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(target = %addr, error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            return Ok(Opened::Http2(send));
        }
        let (send, conn) = self.http1.handshake(io).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(target = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Opened::Http1(send))
    }
}

/// How long a pooled HTTP/1.1 connection must have been idle before a
/// request on it keeps a copy of its head for a replay ([`replayable_copy`]).
/// A target closes idle connections after its keep-alive timeout (seconds:
/// Node.js 5 s, NGINX 75 s), so a connection reused sooner is not at risk,
/// and busy connections pay nothing.
const STALE_RISK: Duration = Duration::from_secs(1);

/// A copy of `req` to send again if its connection turns out closed: only
/// for idempotent methods (RFC 9110 §9.2.2) without a body.
fn replayable_copy(req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    if !super::idempotent(req.method()) || !hyper::body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(crate::proxy::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether hyper's error says the target closed (or reset) the connection
/// before any of its answer arrived.
fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = s.source();
    }
    false
}
