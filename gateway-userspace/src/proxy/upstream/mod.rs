//! Upstream pools and the forward phase: send a prepared request to a
//! target of its pool, retry idempotent body-less requests on another
//! target when connecting fails, and map failures to who caused them
//! (502 unreachable or broken, 504 too slow, 413/408 when the client's
//! body tripped a limit while streaming).

#![forbid(unsafe_code)]

pub mod health;
pub mod pool;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use http::{Method, Request, Response, Uri, request::Parts};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use self::pool::Pool;
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
/// hit a limit. The returned target is the one that answered.
pub async fn forward(
    pool: &Pool,
    parts: Parts,
    path_and_query: &str,
    body: ProxyBody,
    may_retry: bool,
    tripped: &Tripped,
) -> Result<(Response<Incoming>, SocketAddr, impl Send + Sync + 'static), Rejection> {
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
        match tokio::time::timeout(pool.request_timeout(), pool.client.request(req)).await {
            Ok(Ok(resp)) => {
                pool.record_success(&target);
                return Ok((resp, target.addr, in_flight));
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
                return Err(Rejection::new(
                    Reason::UpstreamFailed,
                    format!("upstream '{}' failed to answer", pool.name),
                ));
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

/// Wraps an upstream response body so `guard` lives until it is finished.
pub fn guarded_body<G: Send + Sync + 'static>(
    resp: Response<Incoming>,
    guard: G,
) -> Response<ProxyBody> {
    resp.map(|b| Guarded::new(b, guard).map_err(Into::into).boxed())
}

fn limit_detail(reason: Reason) -> &'static str {
    match reason {
        Reason::BodyTooLarge => "the request body is larger than allowed",
        Reason::BodyTimeout => "the request body was not received in time",
        Reason::BodyIncomplete => "the request body ended before it was complete",
        _ => "the request body was cut off",
    }
}
