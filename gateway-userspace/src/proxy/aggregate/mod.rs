//! Aggregation routes: one client request fans out to several backend
//! calls, made in parallel unless one needs another's answer (`after`),
//! and their JSON bodies are merged into one response (`docs/aggregation.md`).
//!
//! Each call is a body-less request through the normal forward step
//! (`upstream::forward`: pools, health, retries of connects), carrying only
//! what the gateway chose: the forwarding headers, the request id, a fresh
//! `traceparent` child, the verified identity headers, and the client
//! headers the call lists. Bodies are read within the call's
//! `max_response_bytes` and the route's `aggregate_max_bytes` (never more
//! is buffered) and must be JSON. A required call that fails ends the
//! request at once (502, or 504 for a timeout, naming the call); a failed
//! optional call is left out and named in `Gateway-Partial` and `_errors`.

#![forbid(unsafe_code)]

pub use super::config::aggregate::{merge, template};

pub use super::config::aggregate::plan::{Call, Plan};

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use http::{HeaderMap, HeaderName, HeaderValue, Response, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use self::template::{RenderError, Values};
use super::{
    body::{self, ProxyBody, Tripped},
    headers::{self, Forwarding},
    reject::{Reason, Rejection},
    upstream::{self, Pools, pool::Pool},
};
use crate::observe::{
    access_log::CallRecord,
    metrics::{CallLabels, Metrics, UpstreamLabels},
    trace::TraceContext,
};

/// The response header naming the optional calls left out.
pub const PARTIAL: &str = "gateway-partial";

/// The headers every call of one request carries: the forwarding fields
/// (built from the client's as for a forwarded request), `X-Request-Id`
/// and the verified identity's headers.
pub fn base_headers(
    client: &HeaderMap,
    forwarding: &Forwarding<'_>,
    request_id: &str,
    identity: Option<&crate::auth::Identity>,
) -> HeaderMap {
    let mut base = HeaderMap::new();
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    ] {
        for v in client.get_all(name) {
            base.append(name, v.clone());
        }
    }
    headers::set_forwarding(&mut base, forwarding);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        base.insert("x-request-id", v);
    }
    for (name, value) in identity.iter().flat_map(|i| &i.claims_headers) {
        base.append(name.clone(), value.clone());
    }
    base
}

/// What one aggregate request is made of.
pub struct Inputs<'a> {
    /// The route id (metrics).
    pub route: &'a Arc<str>,
    /// Path parameter values, decoded.
    pub params: Vec<String>,
    /// The client's query (after authentication stripped credentials).
    pub query: Option<&'a str>,
    /// The client's headers (after authentication).
    pub client: &'a HeaderMap,
    /// Headers every call carries: forwarding, request id, identity.
    pub base: HeaderMap,
    /// The client request's trace context; each call gets a child.
    pub trace: TraceContext,
}

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The call's timeout or the route's deadline passed.
    Timeout,
    /// Unreachable, broken, a non-2xx status, not JSON.
    Failed,
    /// Its body passed `max_response_bytes`.
    TooLarge,
    /// The calls together passed `aggregate_max_bytes` (the whole answer
    /// fails, required or not).
    TotalTooLarge,
    /// The call it waits for failed; it was never sent.
    Dependency,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Timeout => "timeout",
            Kind::Failed => "failed",
            Kind::TooLarge => "too_large",
            Kind::TotalTooLarge => "total_too_large",
            Kind::Dependency => "dependency_failed",
        }
    }
}

#[derive(Debug)]
struct CallError {
    kind: Kind,
    /// The backend's status, when it answered.
    status: Option<u16>,
    detail: String,
}

impl CallError {
    fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            detail: detail.into(),
        }
    }
}

type Done = (usize, Result<Value, CallError>, CallRecord);

/// Runs the calls and builds the merged response. Call records (for the
/// access log) are pushed to `log` as calls finish.
///
/// # Errors
/// A client value a template needs is missing (400); a required call
/// failed (502) or timed out (504); the total size passed (502).
pub async fn run(
    plan: &Plan,
    pools: &Pools,
    metrics: &Metrics,
    inp: Inputs<'_>,
    log: &mut Vec<CallRecord>,
) -> Result<Response<ProxyBody>, Rejection> {
    let deadline = tokio::time::Instant::now() + plan.deadline;
    let total = AtomicUsize::new(0);
    let n = plan.calls.len();
    let mut results: Vec<Option<Result<Value, CallError>>> = (0..n).map(|_| None).collect();
    let mut started = vec![false; n];
    let mut running = FuturesUnordered::new();
    loop {
        // Start every call whose dependency is settled (repeat: a skipped
        // call may settle another's).
        let mut progress = true;
        while progress {
            progress = false;
            for (i, call) in plan.calls.iter().enumerate() {
                if started[i] {
                    continue;
                }
                let dep = match call.after {
                    None => None,
                    Some(d) => match &results[d] {
                        None => continue,
                        Some(Ok(v)) => Some(v),
                        Some(Err(_)) => {
                            started[i] = true;
                            progress = true;
                            let e = CallError::new(
                                Kind::Dependency,
                                format!("not sent: call '{}' failed", plan.calls[d].name),
                            );
                            let rec = record(call, None, Duration::ZERO, Some(e.kind), None);
                            observe(metrics, inp.route, call, &rec);
                            log.push(rec);
                            results[i] = Some(Err(e));
                            continue;
                        }
                    },
                };
                started[i] = true;
                progress = true;
                let rendered = call.path.render(&Values {
                    params: &inp.params,
                    query: inp.query,
                    headers: inp.client,
                    dep,
                });
                let target = match rendered {
                    Ok(t) => t,
                    Err(RenderError::Client(m)) => {
                        return Err(Rejection::new(Reason::BadRequest, m));
                    }
                    Err(RenderError::Upstream(m)) => {
                        let e = CallError::new(Kind::Failed, m);
                        let rec = record(call, None, Duration::ZERO, Some(e.kind), None);
                        observe(metrics, inp.route, call, &rec);
                        log.push(rec);
                        results[i] = Some(Err(e));
                        continue;
                    }
                };
                let Some(pool) = pools.get(&call.upstream) else {
                    return Err(Rejection::new(
                        Reason::Internal,
                        format!("upstream '{}' is missing", call.upstream),
                    ));
                };
                let headers = call_headers(call, &inp);
                running.push(exec(
                    i,
                    call,
                    pool,
                    headers,
                    target,
                    &total,
                    plan.max_total_bytes,
                    metrics,
                ));
            }
        }
        // A required call that failed without being sent ends it too.
        if let Some(r) = first_required_failure(plan, &results) {
            return Err(r);
        }
        if running.is_empty() {
            break;
        }
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some((i, result, rec))) => {
                observe(metrics, inp.route, &plan.calls[i], &rec);
                log.push(rec);
                if let Err(e) = &result
                    && e.kind == Kind::TotalTooLarge
                {
                    return Err(Rejection::new(
                        Reason::UpstreamFailed,
                        format!(
                            "the calls' responses together are larger than {} bytes (while reading call '{}')",
                            plan.max_total_bytes, plan.calls[i].name
                        ),
                    ));
                }
                results[i] = Some(result);
            }
            Ok(None) => break,
            Err(_) => {
                // The deadline: whatever is still running or waiting
                // timed out.
                for (i, call) in plan.calls.iter().enumerate() {
                    if results[i].is_none() {
                        let e = CallError::new(
                            Kind::Timeout,
                            format!(
                                "no answer within the route's deadline of {}",
                                crate::duration::format(plan.deadline)
                            ),
                        );
                        let rec = record(call, None, plan.deadline, Some(e.kind), None);
                        observe(metrics, inp.route, call, &rec);
                        log.push(rec);
                        results[i] = Some(Err(e));
                    }
                }
                break;
            }
        }
    }
    if let Some(r) = first_required_failure(plan, &results) {
        return Err(r);
    }
    respond(plan, results)
}

/// The rejection for the first required call that failed, if any.
fn first_required_failure(
    plan: &Plan,
    results: &[Option<Result<Value, CallError>>],
) -> Option<Rejection> {
    plan.calls
        .iter()
        .zip(results)
        .find_map(|(call, r)| match r {
            Some(Err(e)) if call.required => {
                let reason = if e.kind == Kind::Timeout {
                    Reason::UpstreamTimeout
                } else {
                    Reason::UpstreamFailed
                };
                Some(Rejection::new(
                    reason,
                    format!(
                        "required call '{}' (upstream '{}') failed: {}",
                        call.name, call.upstream, e.detail
                    ),
                ))
            }
            _ => None,
        })
}

/// The merged 200 response (with `_errors` and `Gateway-Partial` when an
/// optional call is missing).
fn respond(
    plan: &Plan,
    results: Vec<Option<Result<Value, CallError>>>,
) -> Result<Response<ProxyBody>, Rejection> {
    let mut ok = Vec::new();
    let mut errors = Map::new();
    let mut missing = Vec::new();
    for (call, r) in plan.calls.iter().zip(results) {
        match r {
            Some(Ok(v)) => ok.push((&*call.name, v)),
            Some(Err(e)) => {
                let mut m = Map::new();
                m.insert("error".into(), e.kind.label().into());
                if let Some(s) = e.status {
                    m.insert("status".into(), s.into());
                }
                m.insert("detail".into(), e.detail.into());
                errors.insert(call.name.to_string(), Value::Object(m));
                missing.push(&*call.name);
            }
            None => {}
        }
    }
    let mut merged = merge::merge(plan.merge, ok).map_err(|name| {
        Rejection::new(
            Reason::UpstreamFailed,
            format!("call '{name}' did not answer a JSON object, which merge = keys/deep needs"),
        )
    })?;
    if !errors.is_empty() {
        merged.insert(merge::ERRORS.into(), Value::Object(errors));
    }
    let bytes = serde_json::to_vec(&Value::Object(merged))
        .map_err(|e| Rejection::new(Reason::Internal, e.to_string()))?;
    let mut resp = Response::new(body::full(Bytes::from(bytes)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !missing.is_empty()
        && let Ok(v) = HeaderValue::from_str(&missing.join(", "))
    {
        h.insert(HeaderName::from_static(PARTIAL), v);
    }
    Ok(resp)
}

/// The headers one call sends: the client headers it lists, then the
/// gateway's own (which win), a fresh `traceparent` child and `Accept`.
fn call_headers(call: &Call, inp: &Inputs<'_>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in &call.headers {
        for v in inp.client.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    for name in inp.base.keys() {
        h.remove(name);
    }
    for (name, v) in &inp.base {
        h.append(name.clone(), v.clone());
    }
    let child = inp.trace.child();
    child.apply(&mut h);
    if inp.trace.propagated
        && let Some(ts) = inp.client.get(crate::observe::trace::TRACESTATE)
    {
        h.insert(crate::observe::trace::TRACESTATE, ts.clone());
    }
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h
}

fn record(
    call: &Call,
    status: Option<u16>,
    took: Duration,
    failed: Option<Kind>,
    target: Option<std::net::SocketAddr>,
) -> CallRecord {
    CallRecord {
        name: call.name.clone(),
        upstream: call.upstream.clone(),
        target,
        status,
        duration_ms: took.as_secs_f64() * 1000.0,
        outcome: failed.map_or("ok", Kind::label),
    }
}

fn observe(metrics: &Metrics, route: &Arc<str>, call: &Call, rec: &CallRecord) {
    metrics
        .aggregate_calls
        .get_or_create(&CallLabels {
            route: route.clone(),
            call: call.name.clone(),
            upstream: call.upstream.clone(),
            outcome: rec.outcome,
        })
        .observe(rec.duration_ms / 1000.0);
}

/// Sends one call and reads its JSON body, within its timeout.
#[allow(
    clippy::too_many_arguments,
    reason = "one call's inputs: a struct for them would be built and taken apart per call"
)]
async fn exec(
    i: usize,
    call: &Call,
    pool: &Pool,
    headers: HeaderMap,
    target: String,
    total: &AtomicUsize,
    max_total: usize,
    metrics: &Metrics,
) -> Done {
    let started = Instant::now();
    let mut status = None;
    let mut addr = None;
    let fetched = tokio::time::timeout(
        call.timeout,
        fetch(
            call,
            pool,
            headers,
            &target,
            total,
            max_total,
            &mut status,
            &mut addr,
            metrics,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(CallError::new(
            Kind::Timeout,
            format!(
                "no answer within the call's timeout of {}",
                humantime::format_duration(call.timeout)
            ),
        ))
    });
    let result = fetched.map_err(|mut e| {
        e.status = e.status.or(status);
        e
    });
    let rec = record(
        call,
        status,
        started.elapsed(),
        result.as_ref().err().map(|e| e.kind),
        addr,
    );
    (i, result, rec)
}

#[allow(
    clippy::too_many_arguments,
    reason = "the inputs of `exec` plus the two slots it reads back after a timeout"
)]
async fn fetch(
    call: &Call,
    pool: &Pool,
    headers: HeaderMap,
    target: &str,
    total: &AtomicUsize,
    max_total: usize,
    status: &mut Option<u16>,
    addr: &mut Option<std::net::SocketAddr>,
    metrics: &Metrics,
) -> Result<Value, CallError> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = call.method.clone();
    parts.headers = headers;
    let may_retry = upstream::retryable(&parts);
    let sent = Instant::now();
    let forwarded = match upstream::origin_form(target.to_owned()) {
        Ok(uri) => {
            parts.uri = uri;
            upstream::forward(pool, parts, body::empty(), may_retry, &Tripped::no_body()).await
        }
        Err(r) => Err(r),
    };
    // The pool's latency series counts aggregate calls like forwarded
    // requests (sending to the response head).
    metrics
        .upstream_duration
        .get_or_create(&UpstreamLabels {
            upstream: pool.name.clone(),
        })
        .observe(sent.elapsed().as_secs_f64());
    let (resp, at, lease) = forwarded.map_err(|r| {
        let kind = if r.reason == Reason::UpstreamTimeout {
            Kind::Timeout
        } else {
            Kind::Failed
        };
        CallError::new(kind, r.detail)
    })?;
    *addr = Some(at);
    *status = Some(resp.status().as_u16());
    if !resp.status().is_success() {
        return Err(CallError::new(
            Kind::Failed,
            format!("upstream answered {}", resp.status().as_u16()),
        ));
    }
    if !is_json(resp.headers()) {
        return Err(CallError::new(
            Kind::Failed,
            "the response is not JSON (Content-Type)",
        ));
    }
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        CallError::new(
            Kind::TooLarge,
            format!("the response is larger than {} bytes", call.max_bytes),
        )
    };
    if declared.is_some_and(|n| n > call.max_bytes as u64) {
        return Err(too_large());
    }
    let mut body = upstream::guarded_body(resp, lease).into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            CallError::new(Kind::Failed, format!("the response body broke off: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > call.max_bytes {
            return Err(too_large());
        }
        if total.fetch_add(data.len(), Ordering::Relaxed) + data.len() > max_total {
            return Err(CallError::new(Kind::TotalTooLarge, "total size passed"));
        }
        buf.extend_from_slice(&data);
    }
    serde_json::from_slice(&buf)
        .map_err(|e| CallError::new(Kind::Failed, format!("the response is not valid JSON: {e}")))
}

/// Whether `Content-Type` is `application/json` or `*/*+json`.
fn is_json(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.contains('/') && mime.ends_with("+json"))
}
