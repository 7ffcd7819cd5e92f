//! Upstream pools and the forward phase: send a prepared request to a
//! target of its pool, retry idempotent body-less requests on another
//! target when connecting fails, and map failures to who caused them
//! (502 unreachable or broken, 504 too slow, 413/408 when the client's
//! body tripped a limit while streaming). A response the gateway cannot
//! relay safely (both `Content-Length` and `Transfer-Encoding`, a header
//! section over `max_response_header_bytes`) is a 502 and its connection is
//! never reused; a response body that stalls for `read_timeout` is aborted.

#![forbid(unsafe_code)]

pub mod health;
pub mod pool;

pub mod stall;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use http::{Method, Request, Response, Uri, header, request::Parts};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{CaptureConnection, capture_connection};
use tokio::task::JoinHandle;

use self::{pool::Pool, stall::ReadTimeout};
use super::{
    body::{self, Guarded, ProxyBody, Tripped},
    config::Upstream as UpstreamConfig,
    reject::{Reason, Rejection},
};

/// All pools of one config generation, with their health-check tasks.
pub struct Pools {
    pools: HashMap<Arc<str>, Arc<Pool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pools {
    /// Builds the pools and starts their health checks (needs a runtime).
    pub fn new(configs: &[UpstreamConfig]) -> Self {
        let mut pools = HashMap::new();
        let mut tasks = Vec::new();
        for c in configs {
            let pool = Arc::new(Pool::new(c));
            tasks.extend(health::spawn(&pool));
            pools.insert(pool.name.clone(), pool);
        }
        Self { pools, tasks }
    }

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

/// Whether a failed connect may be retried on another target: the method is
/// idempotent and there is no body to replay.
pub fn retryable(parts: &Parts) -> bool {
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let no_body = !parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    idempotent && no_body
}

/// Sends the request to a target of `pool`. `path_and_query` is the
/// normalized, rewritten target; `may_retry` comes from [`retryable`] on the
/// request as the client sent it (before hop-by-hop headers such as
/// `Transfer-Encoding` were removed); `tripped` says whether the client body
/// hit a limit. The returned target is the one that answered; the [`Lease`]
/// must live as long as the response (pass it to [`guarded_body`]).
pub async fn forward(
    pool: &Pool,
    parts: Parts,
    path_and_query: &str,
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
    let mut body = Some(body);
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
        let uri: Uri = format!("http://{}{}", target.addr, path_and_query)
            .parse()
            .map_err(|_| {
                Rejection::new(Reason::BadPath, "the request target cannot be forwarded")
            })?;
        let mut req = Request::new(body.take().unwrap_or_else(body::empty));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = parts.headers.clone();
        let connection = capture_connection(&mut req);
        match tokio::time::timeout(pool.request_timeout(), pool.client.request(req)).await {
            Ok(Ok(resp)) => {
                if let Err(detail) = relayable(&resp, pool.config.max_response_header_bytes) {
                    // hyper keeps both headers and decodes the body as
                    // chunked; the two ends may disagree on where this
                    // response ends, so its connection is never reused.
                    poison(&connection);
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
                    _in_flight: in_flight,
                    connection,
                    read_timeout: pool.config.read_timeout,
                };
                return Ok((resp, target.addr, lease));
            }
            Ok(Err(e)) => {
                if let Some(reason) = tripped.get() {
                    return Err(Rejection::new(reason, limit_detail(reason)));
                }
                pool.record_failure(&target);
                tracing::debug!(upstream = %pool.name, target = %target.addr, error = ?e, "upstream request failed");
                if e.is_connect() && (tried.len() as u32) < max_attempts {
                    continue;
                }
                let detail = if head_too_large(&e) {
                    format!(
                        "upstream '{}' sent response headers that are too large",
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
                pool.record_failure(&target);
                return Err(Rejection::new(
                    Reason::UpstreamTimeout,
                    format!("upstream '{}' did not answer in time", pool.name),
                ));
            }
        }
    }
}

/// What a forwarded request holds until its response is finished: the
/// target's in-flight count and the upstream connection (to close it when
/// the response body breaks off).
pub struct Lease {
    _in_flight: pool::InFlight,
    connection: CaptureConnection,
    read_timeout: Duration,
}

/// Wraps an upstream response body: at most the pool's `read_timeout`
/// between frames (then the body fails, so the client's response is aborted,
/// never completed, and the upstream connection is closed), and the lease
/// kept until the body is finished.
pub fn guarded_body(resp: Response<Incoming>, lease: Lease) -> Response<ProxyBody> {
    let (timeout, connection) = (lease.read_timeout, lease.connection.clone());
    resp.map(|b| Guarded::new(ReadTimeout::new(b, timeout, connection), lease).boxed())
}

/// Marks the connection a request went out on as not reusable.
pub(crate) fn poison(connection: &CaptureConnection) {
    if let Some(c) = connection.connection_metadata().as_ref() {
        c.poison();
    }
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

/// Whether the client failed because the response head passed its buffer.
fn head_too_large(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_parse_too_large();
        }
        source = s.source();
    }
    false
}

/// The problem detail for a request body limit that tripped.
pub(crate) fn limit_detail(reason: Reason) -> &'static str {
    match reason {
        Reason::BodyTooLarge => "the request body is larger than allowed",
        Reason::BodyTimeout => "the request body was not received in time",
        Reason::BodyIncomplete => "the request body ended before it was complete",
        _ => "the request body was cut off",
    }
}
