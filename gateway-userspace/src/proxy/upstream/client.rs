//! HTTP/1.1 connections to upstream targets, kept alive and reused per
//! target (NGINX `keepalive`, Envoy's per-host connection pool).
//!
//! Each target keeps a stack of idle connections (the most recently used is
//! taken first, so a quiet period lets the older ones time out). A request
//! takes one, or connects within `connect_timeout`; the connection goes back
//! only when its response body was read to the end (never after an error,
//! a stall or a client that went away, so a half-read response can never be
//! taken for the next one). One task per connection drives its IO; nothing
//! is spawned per request. A connection idle for longer than `idle_timeout`
//! is closed when it is next looked at, and at most [`MAX_IDLE_PER_TARGET`]
//! are kept per target.

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::body::ProxyBody;

/// Idle connections kept per target at most; beyond that a finished
/// connection is closed (hyper-util's pool keeps any number).
pub const MAX_IDLE_PER_TARGET: usize = 256;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, `connect_timeout`):
    /// nothing was sent, so an idempotent request may go to another target.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The exchange failed after the request started going out (or the
    /// response head was malformed or larger than `max_response_header_bytes`).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl SendError {
    /// Whether nothing reached the upstream (a retry on another target is safe).
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// Whether the response head did not fit `max_response_header_bytes`.
    pub fn head_too_large(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_parse_too_large())
    }
}

/// A target's idle connections.
#[derive(Default)]
pub struct IdleConns(Mutex<Vec<Idle>>);

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |v| v.len());
        write!(f, "IdleConns({n})")
    }
}

struct Idle {
    send: http1::SendRequest<ProxyBody>,
    since: Instant,
}

impl IdleConns {
    fn pop(&self) -> Option<Idle> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Puts a connection back whose last response was read to the end.
    pub fn put(&self, conn: Conn, idle_timeout: Duration) {
        if conn.send.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest are at the bottom: drop those that timed out.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(Idle {
                send: conn.send,
                since: now,
            });
        }
    }

    /// Idle connections right now (metrics, tests).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection lent to one request.
pub struct Conn {
    send: http1::SendRequest<ProxyBody>,
}

/// How connections to one pool's targets are made.
pub struct Connector {
    connect_timeout: Duration,
    idle_timeout: Duration,
    http1: http1::Builder,
}

impl Connector {
    /// `max_head`: the largest response head accepted, in bytes (hyper's
    /// read buffer; at least 8192); a larger one fails as
    /// [`SendError::head_too_large`].
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_head: usize) -> Self {
        let mut http1 = http1::Builder::new();
        http1.max_buf_size(max_head.max(8192));
        Self {
            connect_timeout,
            idle_timeout,
            http1,
        }
    }

    /// How long an unused connection is kept.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends `req` to `addr` on an idle connection from `idle` or a new one
    /// and returns the response head with the connection it came on (give
    /// it back with [`IdleConns::put`] once the body is read to the end).
    /// A reused connection that the upstream closed before the request went
    /// out is retried once on a new connection, as hyper-util's pool does.
    /// The request URI is sent as is (origin-form: path and query). When
    /// no connection could be made the request comes back with the error,
    /// untouched, for another target.
    pub async fn send(
        &self,
        addr: SocketAddr,
        idle: &IdleConns,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Conn), (SendError, Option<Request<ProxyBody>>)> {
        while let Some(c) = idle.pop() {
            if c.since.elapsed() >= self.idle_timeout || c.send.is_closed() {
                continue;
            }
            let mut send = c.send;
            // Ready as soon as hyper has finished the previous exchange.
            if send.ready().await.is_err() {
                continue;
            }
            match send.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Conn { send })),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection was closed under us.
                    Some(r) => req = r,
                    None => return Err((SendError::Http(e.into_error()), None)),
                },
            }
        }
        let mut send = match self.connect(addr).await {
            Ok(s) => s,
            Err(e) => return Err((e, Some(req))),
        };
        match send.send_request(req).await {
            Ok(resp) => Ok((resp, Conn { send })),
            Err(e) => Err((SendError::Http(e), None)),
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let failed = |source| SendError::Connect { addr, source };
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => {
                return Err(failed(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect_timeout passed",
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        let (send, conn) = self
            .http1
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(target = %addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(send)
    }
}
