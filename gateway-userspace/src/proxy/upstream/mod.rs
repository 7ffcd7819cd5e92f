//! Upstream pools and the forward phase: send a prepared request to a
//! target of its pool, retry idempotent body-less requests on another
//! target when connecting fails, and map failures to who caused them
//! (502 unreachable or broken, 504 too slow, 413/408 when the client's
//! body tripped a limit while streaming). A response the gateway cannot
//! relay safely (both `Content-Length` and `Transfer-Encoding`, a header
//! section over `max_response_header_bytes`) is a 502 and its connection is
//! never reused; a response body that stalls for `read_timeout` is aborted.

#![forbid(unsafe_code)]

pub mod client;
pub mod dns;
pub mod health;
pub mod pool;
pub mod tls;

pub mod stall;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderValue, Method, Request, Response, Uri, header, request::Parts};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use self::{client::Conn, pool::Pool, stall::ReadTimeout};
use super::{
    body::{ProxyBody, Tripped},
    config::{DnsSection, Upstream as UpstreamConfig, upstream::HostHeader},
    grpc,
    reject::{Reason, Rejection},
    tls::TlsError,
};

/// All pools of one config generation, with their health-check and DNS
/// tasks.
pub struct Pools {
    pools: HashMap<Arc<str>, Arc<Pool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pools {
    /// Builds the pools and starts their health checks and the lookups of
    /// targets given by name (needs a runtime).
    ///
    /// # Errors
    /// [`TlsError::Upstream`] naming the pool whose TLS files cannot be
    /// used; nothing is started then.
    pub fn new(configs: &[UpstreamConfig], dns: &DnsSection) -> Result<Self, TlsError> {
        let built = configs
            .iter()
            .map(|c| {
                Pool::new(c).map_err(|e| TlsError::Upstream {
                    upstream: c.name.get_ref().clone(),
                    error: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pools = HashMap::new();
        let mut tasks = Vec::new();
        let resolver = configs
            .iter()
            .any(|c| c.targets.iter().any(|t| t.is_dns()))
            .then(|| dns::Resolver::new(dns));
        for pool in built {
            let pool = Arc::new(pool);
            tasks.extend(health::spawn(&pool));
            if let Some(r) = &resolver {
                tasks.extend(dns::spawn(&pool, r));
            }
            pools.insert(pool.name.clone(), pool);
        }
        Ok(Self { pools, tasks })
    }

    /// Waits until every name was looked up once, for at most `limit` (a
    /// fresh start serves resolved names from its first request). Names
    /// still unanswered then keep resolving in the background.
    pub async fn settle(&self, limit: Duration) {
        let all = futures_util::future::join_all(self.pools.values().map(|p| p.dns.settled()));
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                waited_secs = limit.as_secs_f64(),
                "some upstream names have no DNS answer yet; they get no traffic until they resolve"
            );
        }
    }

    /// Starts each name of a new generation with `old`'s last good answer
    /// for the same pool and entry, until its own lookup answers (a reload
    /// never empties a pool whose names resolved before).
    pub fn adopt(&self, old: &Pools) {
        for (name, pool) in &self.pools {
            if let Some(prev) = old.pools.get(name)
                && pool.dns.adopt(&prev.dns)
            {
                dns::publish(pool, dns::Cause::Reload);
            }
        }
    }

    /// The pool of the upstream named `name` (as routes name it).
    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// Every pool (metrics, readiness).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether a request with this method may be sent again (RFC 9110
/// §9.2.2 idempotent methods).
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether a failed connect may be retried on another target: the method is
/// idempotent and there is no body to replay.
pub fn retryable(parts: &Parts) -> bool {
    let idempotent = idempotent(&parts.method);
    let no_body = !parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    idempotent && no_body
}

/// An origin-form request target (RFC 9112 §3.2.1) from the normalized,
/// rewritten path and query; a 400 when it is not a valid target.
pub fn origin_form(path_and_query: impl Into<bytes::Bytes>) -> Result<Uri, Rejection> {
    Uri::from_maybe_shared(path_and_query.into())
        .map_err(|_| Rejection::new(Reason::BadPath, "the request target cannot be forwarded"))
}

/// Sends the request to a target of `pool`. `parts.uri` is the origin-form
/// target to send (see [`origin_form`]); `may_retry` comes from [`retryable`] on the
/// request as the client sent it (before hop-by-hop headers such as
/// `Transfer-Encoding` were removed); `tripped` says whether the client body
/// hit a limit. The returned target is the one that answered; the [`Lease`]
/// must live as long as the response (pass it to [`guarded_body`]).
pub async fn forward(
    pool: &Pool,
    parts: Parts,
    body: ProxyBody,
    may_retry: bool,
    tripped: &Tripped,
) -> Result<(Response<Incoming>, SocketAddr, Lease), Rejection> {
    let max_attempts = if may_retry {
        1 + pool.config.retries
    } else {
        1
    };
    let mut tried = Vec::new();
    let websocket = parts.headers.contains_key(header::UPGRADE);
    let is_grpc = grpc::is_grpc(&parts.method, &parts.headers);
    if websocket && pool.connector.may_use_http2() {
        return Err(Rejection::new(
            Reason::UpstreamFailed,
            format!(
                "upstream '{}' speaks HTTP/2; WebSocket routes need protocol = \"http1\"",
                pool.name
            ),
        ));
    }
    if is_grpc && !pool.connector.may_use_http2() {
        return Err(Rejection::new(
            Reason::UpstreamFailed,
            format!(
                "upstream '{}' speaks HTTP/1.1; gRPC needs protocol = \"h2c\", \"h2\" or \"auto\"",
                pool.name
            ),
        ));
    }
    // gRPC's deadline bounds the wait for the response head too: the
    // smaller of it and the pool's `request_timeout` (Envoy
    // `max_grpc_timeout`). The header itself is forwarded unchanged.
    let head_timeout = match grpc::timeout(&parts.headers).filter(|_| is_grpc) {
        Some(t) => t.min(pool.request_timeout()),
        None => pool.request_timeout(),
    };
    // Whether the upstream could have everything it needs: a body still
    // streaming from the client when the wait for the response ends makes
    // the silence the client's, not the target's.
    let body_empty = body.is_end_stream();
    // A new request (HTTP/1.1, no extensions) with the client's method and
    // the prepared headers, moved rather than copied: a retry reuses it.
    let mut req = Request::new(body);
    *req.method_mut() = parts.method;
    *req.headers_mut() = parts.headers;
    if is_grpc {
        // gRPC servers may insist on it (gRPC over HTTP/2 spec); it is the
        // only `TE` HTTP/2 allows (RFC 9113 §8.2.2).
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // Origin-form on the wire (RFC 9112 §3.2.1).
    *req.uri_mut() = parts.uri;
    // `preserve`: the client's validated Host, or the target when the
    // client sent none (HTTP/1.0), as hyper-util's client did; it follows a
    // retry. `target`: always the target. A literal: set once.
    let host_is_target = match &pool.config.host_header {
        HostHeader::Preserve => !req.headers().contains_key(header::HOST),
        HostHeader::Target => true,
        HostHeader::Literal(v) => {
            req.headers_mut().insert(header::HOST, v.clone());
            false
        }
    };
    loop {
        let Some((target, in_flight)) = pool.pick(&tried) else {
            let reason = if tried.is_empty() {
                Reason::NoHealthyUpstream
            } else {
                Reason::UpstreamFailed
            };
            return Err(Rejection::new(
                reason,
                format!("no healthy target in upstream '{}'", pool.name),
            ));
        };
        tried.push(target.addr);
        if host_is_target && let Ok(v) = HeaderValue::try_from(target.authority()) {
            req.headers_mut().insert(header::HOST, v);
        }
        let sent = pool.connector.send(&target, req);
        match tokio::time::timeout(head_timeout, sent).await {
            Ok(Ok((resp, conn))) => {
                if let Err(detail) = relayable(&resp, pool.config.max_response_header_bytes) {
                    // hyper keeps both headers and decodes the body as
                    // chunked; the two ends may disagree on where this
                    // response ends, so its connection is never reused
                    // (dropped here with the response).
                    drop(conn);
                    pool.record_failure(&target);
                    tracing::warn!(upstream = %pool.name, target = %target.addr, detail, "upstream response refused");
                    return Err(Rejection::new(
                        Reason::UpstreamFailed,
                        format!(
                            "upstream '{}' sent a response that cannot be relayed: {detail}",
                            pool.name
                        ),
                    ));
                }
                pool.record_success(&target);
                let lease = Lease {
                    in_flight,
                    conn: Some(conn),
                    idle_timeout: pool.connector.idle_timeout(),
                    read_timeout: pool.config.read_timeout.get(),
                };
                return Ok((resp, target.addr, lease));
            }
            Ok(Err((e, unsent))) => {
                if let Some(reason) = tripped.get() {
                    return Err(Rejection::new(reason, limit_detail(reason)));
                }
                if e.counts_against_target() {
                    pool.record_failure(&target);
                }
                if let Some(why) = e.tls_cause() {
                    // Says why (unknown issuer, name mismatch, a client
                    // certificate refused by an alert after a TLS 1.3
                    // handshake): an operator's fix, not noise.
                    tracing::warn!(upstream = %pool.name, target = %target.addr, error = %e, tls = %why, "upstream TLS failed");
                } else {
                    tracing::debug!(upstream = %pool.name, target = %target.addr, error = %e, "upstream request failed");
                }
                if let Some(unsent) = unsent
                    && e.is_connect()
                    && (tried.len() as u32) < max_attempts
                {
                    req = unsent;
                    continue;
                }
                let detail = if e.head_too_large() {
                    format!(
                        "upstream '{}' sent response headers that are too large",
                        pool.name
                    )
                } else if let client::SendError::Http2Required { .. } = e {
                    format!(
                        "upstream '{}' chose HTTP/1.1 (ALPN); a gRPC call needs HTTP/2",
                        pool.name
                    )
                } else {
                    format!("upstream '{}' failed to answer", pool.name)
                };
                return Err(Rejection::new(Reason::UpstreamFailed, detail));
            }
            Err(_) => {
                if let Some(reason) = tripped.get() {
                    return Err(Rejection::new(reason, limit_detail(reason)));
                }
                // The target is at fault only when it had the whole request
                // and the pool's own timeout passed: a shorter deadline is
                // the client's (`grpc-timeout`), and a body still arriving
                // is the client's slowness. Neither may eject a target.
                let clients_deadline = head_timeout < pool.request_timeout();
                let still_sending = !body_empty && !tripped.ended();
                if !clients_deadline && !still_sending {
                    pool.record_failure(&target);
                    // A silently dead HTTP/2 connection would take every
                    // next request down with it: open a new one.
                    target.conns.drop_shared();
                }
                return Err(Rejection::new(
                    Reason::UpstreamTimeout,
                    format!("upstream '{}' did not answer in time", pool.name),
                ));
            }
        }
    }
}

/// What a forwarded request holds until its response is finished: the
/// target's in-flight count and the upstream connection, which goes back
/// to the target's idle connections only through [`Lease::release`] (the
/// body was read to its end); dropped otherwise, which closes it.
pub struct Lease {
    in_flight: pool::InFlight,
    conn: Option<Conn>,
    idle_timeout: Duration,
    read_timeout: Duration,
}

impl Lease {
    /// The response was read to its end: the connection may serve another.
    fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.in_flight.target().conns.put(conn, self.idle_timeout);
        }
    }
}

/// Wraps an upstream response body: at most the pool's `read_timeout`
/// between frames (then the body fails, so the client's response is aborted,
/// never completed, and the upstream connection is closed), and the lease
/// kept until the body is finished (then its connection is reused).
pub fn guarded_body(resp: Response<Incoming>, lease: Lease) -> Response<ProxyBody> {
    if resp.body().is_end_stream() {
        // No body to read (HEAD, 204, 304, Content-Length: 0).
        lease.release();
        return resp.map(|b| b.map_err(Into::into).boxed());
    }
    let timeout = lease.read_timeout;
    resp.map(|b| ReadTimeout::new(b, timeout, lease).boxed())
}

/// Whether a response can be relayed: `Content-Length` together with
/// `Transfer-Encoding` is a smuggling vector (RFC 9112 §6.1: a response
/// with both must be treated as an error by a proxy), and the header
/// section must fit `max_head` bytes. hyper's `max_buf_size` (set to the
/// same value) fails heads that arrive in pieces larger than it, but a head
/// read in one go can pass it, so the size is also measured here: the
/// status line plus each field as `name: value\r\n`.
fn relayable(resp: &Response<Incoming>, max_head: usize) -> Result<(), &'static str> {
    let h = resp.headers();
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes().len())
        .or_else(|| resp.status().canonical_reason().map(str::len))
        .unwrap_or(0);
    let status_line = "HTTP/1.1 200 \r\n".len() + reason;
    let size = h.iter().fold(status_line + 2, |n, (k, v)| {
        n + k.as_str().len() + v.len() + 4
    });
    if size > max_head {
        return Err("response headers too large");
    }
    Ok(())
}

/// The problem detail for a request body limit that tripped.
pub(crate) fn limit_detail(reason: Reason) -> &'static str {
    match reason {
        Reason::BodyTooLarge => "the request body is larger than allowed",
        Reason::BodyTimeout => "the request body was not received in time",
        Reason::BodyIncomplete => "the request body ended before it was complete",
        Reason::BadRequest => "the request body is malformed",
        _ => "the request body was cut off",
    }
}
