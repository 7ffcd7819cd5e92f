//! The request phases, in order. This file is the one place that says what
//! happens to a request:
//!
//! 1. accept: client IP, connection limits, TLS, PROXY protocol (`server`,
//!    per connection, before any request);
//! 2. check: method, request-line, header and declared body limits,
//!    smuggling (Content-Length with Transfer-Encoding), underscores, the
//!    authority (`authority`), fragments, `OPTIONS *` (answered here), path
//!    normalization (`check`);
//! 3. route: most specific route on the normalized path (`router`);
//! 4. authenticate, 5. validate, 6. rate limit: engines owned by other
//!    modules (`engines`), no-ops by default;
//! 7. forward: on an aggregate route, the calls made and their JSON
//!    merged instead (`aggregate`); otherwise the body read whole first (request buffering, unless the
//!    route streams), headers rewritten, a target picked, retries,
//!    WebSocket tunnel after 101 (`upstream`);
//! 8. respond: upstream headers cleaned, security headers, request id;
//! 9. access log.
//!
//! A phase either continues or ends the request with a [`Rejection`], whose
//! [`Reason`](super::reject::Reason) becomes the status, the problem+json
//! body and the log fields.

#![forbid(unsafe_code)]

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};

use crate::{
    escalate::{Offence, Seen},
    observe::{
        access_log::{CallRecord, Record},
        metrics::{DecisionLabels, ReasonLabels, RouteLabels},
        trace::TraceContext,
    },
};
use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{
    aggregate,
    body::{self, BoxError, Limited, ProxyBody, Tripped},
    check, client_ip,
    conn::ConnInfo,
    cors, grpc, grpc_web,
    headers::{self, Forwarding},
    phase::{Extras, RequestContext},
    reject::{Fault, Reason, Rejection},
    state::ProxyState,
    upstream,
};

/// What the access log records about one request.
struct Outcome<'a> {
    /// The W3C trace context (continued or new), sent upstream.
    trace: TraceContext,
    /// The matched route (its id labels metrics and the log).
    route: Option<Arc<super::router::Route>>,
    target: Option<std::net::SocketAddr>,
    reason: Option<Reason>,
    /// Lent to the phases through the request context.
    extras: Extras,
    /// The matched route's security headers (global ones if no route).
    security: Option<Arc<super::config::SecurityHeaders>>,
    /// The matched route's CORS and the request's Origin.
    cors: Option<(Arc<cors::Cors>, Option<HeaderValue>)>,
    /// Set until the phases have produced a response: if the request's
    /// future is dropped before (the client closed the connection or reset
    /// the HTTP/2 stream), dropping the outcome logs and counts it.
    pending: Option<Pending<'a>>,
    /// An aggregate route's calls (empty otherwise: no allocation).
    calls: Vec<CallRecord>,
}

/// A request the client may still abandon. NGINX logs such a request with
/// status 499; so does the gateway (access log `status = 499`, `reason =
/// client_closed`, `fault = client`, and the request metrics), instead of
/// leaving no trace of it.
struct Pending<'a> {
    state: &'a ProxyState,
    conn: &'a ConnInfo,
    started: Instant,
    method: &'a Method,
    version: Version,
    client_ip: IpAddr,
    request_id: &'a str,
    logged: Option<&'a Logged>,
}

/// The status NGINX logs for a request whose client went away first.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let elapsed = p.started.elapsed();
        let observe = &p.state.engines.observe;
        count_request(
            &observe.metrics,
            self.route.as_deref(),
            p.method,
            CLIENT_CLOSED,
            elapsed.as_secs_f64(),
        );
        let Some(logged) = p.logged else {
            return;
        };
        let extras = &self.extras;
        observe.access_log.write(&Record {
            timestamp: SystemTime::now() - elapsed,
            client_ip: p.client_ip,
            peer: p.conn.proxied_by.unwrap_or(p.conn.peer),
            listener: &p.conn.listener,
            method: p.method.as_str(),
            path: logged.uri.path(),
            query: logged.uri.query(),
            status: CLIENT_CLOSED,
            version: p.version,
            duration_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            user_agent: logged.user_agent(),
            request_id: p.request_id,
            trace_id: self.trace.trace_id_hex().as_str(),
            route: self.route.as_ref().map(|r| &*r.id),
            upstream_target: self.target,
            reason: Some("client_closed"),
            fault: Some(Fault::Client.as_str()),
            user: extras.identity.as_ref().map(|i| i.subject.as_str()),
            rate_limit: extras.rate_limit,
            validation: extras.validation,
            calls: &self.calls,
        });
    }
}

/// Runs all phases for one request; never fails (errors become responses).
pub async fn handle<B>(
    state: Arc<ProxyState>,
    conn: Arc<ConnInfo>,
    mut req: Request<B>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let index = conn.next_request_index();
    let _busy = conn.busy();
    let peer_trusted = state.trusted.contains(conn.peer.ip());
    // What hop-by-hop fields say is read before they are removed.
    let may_have_body = check::may_have_body(req.headers());
    let websocket =
        req.version() == Version::HTTP_11 && headers::is_websocket_upgrade(req.headers());
    // HTTP/1 only: a request that may switch protocols pauses the framing
    // scanner; unless it ends in a 101 the connection is closed after it.
    let h1 = req.version() <= Version::HTTP_11;
    let may_switch =
        h1 && (req.method() == Method::CONNECT || req.headers().contains_key(header::UPGRADE));
    // A gRPC call gets its refusals as gRPC statuses (in its own content
    // type: gRPC or gRPC-Web) and is never buffered.
    let grpc = grpc::is_grpc(req.method(), req.headers());
    let grpc_type = grpc
        .then(|| req.headers().get(header::CONTENT_TYPE).cloned())
        .flatten();
    // The client's hop-by-hop fields go first, before the gateway adds any
    // header of its own, so `Connection` can only remove what the client sent.
    headers::strip_hop_by_hop(req.headers_mut());
    let request_id_value = headers::request_id(req.headers_mut(), peer_trusted);
    // Visible ASCII: generated, or checked by `request_id`.
    let request_id = request_id_value.to_str().unwrap_or("-");
    // A trusted proxy's chain that does not name the client is a 400; the
    // log then shows the proxy, which is never escalated for it.
    let (client_ip, bad_client_ip) = match state.trusted.client_ip(conn.peer.ip(), req.headers()) {
        Ok(ip) => (ip, None),
        Err(e) => (client_ip::canonical(conn.peer.ip()), Some(e)),
    };
    let real_ip = if client_ip == conn.peer.ip() {
        conn.peer_value().cloned()
    } else {
        headers::ip_value(client_ip)
    };
    headers::strip_client_claims(req.headers_mut(), peer_trusted, real_ip);
    let (method, version) = (req.method().clone(), req.version());
    // Kept for the access log only: nothing is copied while it is off.
    let logged = state.engines.observe.access_log.enabled().then(|| Logged {
        uri: req.uri().clone(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
    });
    let mut outcome = Outcome {
        trace: TraceContext::from_headers(req.headers()),
        route: None,
        target: None,
        reason: None,
        extras: Extras::default(),
        security: None,
        cors: None,
        pending: Some(Pending {
            state: &state,
            conn: &conn,
            started,
            method: &method,
            version,
            client_ip,
            request_id,
            logged: logged.as_ref(),
        }),
        calls: Vec::new(),
    };

    let result = match bad_client_ip {
        // The framing scanner did not follow this request's head (it cannot
        // tell whether it hid a smuggled or fragment-carrying request): fail
        // closed.
        _ if h1 && !conn.scanned(index) => Err(Rejection::new(
            Reason::BadRequest,
            "the gateway could not follow this connection's request framing",
        )),
        Some(e) => Err(Rejection::new(Reason::BadClientIp, e.to_string())),
        None => {
            phases(
                &state,
                &conn,
                index,
                req,
                request_id,
                client_ip,
                Framing {
                    may_have_body,
                    websocket,
                    grpc,
                },
                &mut outcome,
            )
            .await
        }
    };
    // A response exists: nothing below waits, the client can no longer
    // abandon the request before it is logged.
    outcome.pending = None;
    let (mut resp, problem) = match result {
        Ok(resp) => (resp, false),
        Err(rejection) => {
            outcome.reason = Some(rejection.reason);
            let mut resp = if let Some(ct) = &grpc_type {
                grpc::refusal(&rejection, ct)
            } else {
                problem_response(&rejection, request_id)
            };
            if version <= Version::HTTP_11
                && (may_have_body || rejection.reason == Reason::BadRequest)
            {
                // The unread body must never be parsed as a next request.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (resp, !grpc)
        }
    };

    // The raw framing scanner stops at a request that may switch protocols,
    // and at framing it cannot follow: unless the connection really switched
    // (101), it must not carry another request.
    if h1
        && ((may_switch && resp.status() != StatusCode::SWITCHING_PROTOCOLS)
            || conn.scan_lost_after(index))
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    // Escalation: a client-caused rejection earns its source penalty points.
    // A gRPC stream that idled past the body timeout is a long call, not
    // a slowloris: no offence.
    let grpc_idle = grpc && outcome.reason == Some(Reason::BodyTimeout);
    if let (Some(esc), Some(reason)) = (&state.engines.escalation, outcome.reason)
        && !grpc_idle
        && let Some(offence) = offence_of(reason)
    {
        // Through PROXY protocol the packets come from the load balancer:
        // the kernel cannot drop the client by its address.
        let seen = if client_ip == client_ip::canonical(conn.peer.ip()) && conn.proxied_by.is_none()
        {
            Seen::Socket
        } else {
            Seen::Forwarded
        };
        esc.record(client_ip, offence, seen);
    }

    // Headers the phases left for the response (e.g. RateLimit).
    for (name, value) in outcome.extras.response_headers.drain(..) {
        resp.headers_mut().append(name, value);
    }

    // Respond: security headers and the request id on every answer.
    let security = outcome.security.as_deref().unwrap_or(&state.security);
    headers::add_security(resp.headers_mut(), security, conn.tls, problem);
    if let Some((c, origin)) = &outcome.cors {
        cors::apply(c, origin.as_ref(), resp.headers_mut());
    }
    resp.headers_mut()
        .insert(headers::X_REQUEST_ID, request_id_value.clone());

    // Metrics and access log.
    let elapsed = started.elapsed();
    let reason = outcome.reason;
    let status = resp.status().as_u16();
    let route: &Arc<str> = match &outcome.route {
        Some(r) => &r.id,
        None => no_route(),
    };
    let extras = &outcome.extras;
    let observe = &state.engines.observe;
    let m = &observe.metrics;
    count_request(
        m,
        outcome.route.as_deref(),
        &method,
        status,
        elapsed.as_secs_f64(),
    );
    if let Some(r) = reason {
        m.rejections
            .get_or_create(&ReasonLabels { reason: r.code() })
            .inc();
        if matches!(r, Reason::Invalid | Reason::UnsupportedMediaType) {
            m.validation_failures
                .get_or_create(&RouteLabels {
                    route: route.clone(),
                })
                .inc();
        }
    }
    if let Some(a) = extras.auth_failure {
        m.auth_failures
            .get_or_create(&ReasonLabels { reason: a })
            .inc();
        if let Some(policy) = &extras.auth_policy {
            m.auth_policy_failure(policy, a);
        }
    }
    if let Some(limit) = &extras.rate_limited_by {
        m.rate_limit_rejection(route, limit);
    }
    if let Some(d) = extras.rate_limit {
        m.rate_limit_decisions
            .get_or_create(&DecisionLabels {
                route: route.clone(),
                decision: d,
            })
            .inc();
    }
    // Built only when the log is on (the trace id is formatted for it).
    if let Some(logged) = &logged {
        observe.access_log.write(&Record {
            timestamp: SystemTime::now() - elapsed,
            client_ip,
            peer: conn.proxied_by.unwrap_or(conn.peer),
            listener: &conn.listener,
            method: method.as_str(),
            path: logged.uri.path(),
            query: logged.uri.query(),
            status,
            version,
            duration_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            user_agent: logged.user_agent(),
            request_id,
            trace_id: outcome.trace.trace_id_hex().as_str(),
            route: outcome.route.as_ref().map(|r| &*r.id),
            upstream_target: outcome.target,
            reason: reason.map(|r| r.code()),
            fault: reason.map(|r| r.fault().as_str()),
            user: extras.identity.as_ref().map(|i| i.subject.as_str()),
            rate_limit: extras.rate_limit,
            validation: extras.validation,
            calls: &outcome.calls,
        });
    }
    resp
}

/// What the access log needs from the request as the client sent it:
/// handles on hyper's buffers (a `Uri` or `HeaderValue` clone shares its
/// bytes), so logging allocates nothing per request here.
struct Logged {
    uri: http::Uri,
    user_agent: Option<HeaderValue>,
}

impl Logged {
    /// `User-Agent` when it is text (a non-UTF-8 one is left out of the
    /// line, as before).
    fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_ref().and_then(|v| v.to_str().ok())
    }
}

/// Counts an answered request: through the route's resolved series, or
/// under `-` when no route matched.
fn count_request(
    m: &crate::observe::metrics::Metrics,
    route: Option<&super::router::Route>,
    method: &Method,
    status: u16,
    seconds: f64,
) {
    match route {
        Some(r) => m.request_on(&r.series, &r.id, method, status, seconds),
        None => m.request(no_route(), method, status, seconds),
    }
}

/// The route label of requests no route matched: `-`, made once.
fn no_route() -> &'static Arc<str> {
    static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "-".into());
    &NO_ROUTE
}

/// What the request's hop-by-hop fields said, read before they are removed.
struct Framing {
    /// `Content-Length` above 0 or `Transfer-Encoding`.
    may_have_body: bool,
    /// An HTTP/1.1 WebSocket upgrade request.
    websocket: bool,
    /// A gRPC call (`content-type: application/grpc*`).
    grpc: bool,
}

#[allow(
    clippy::too_many_arguments,
    reason = "the per-request values the phases share, borrowed from `handle`'s frame"
)]
async fn phases<B>(
    state: &ProxyState,
    conn: &ConnInfo,
    index: u64,
    mut req: Request<B>,
    request_id: &str,
    client_ip: IpAddr,
    framing: Framing,
    outcome: &mut Outcome<'_>,
) -> Result<Response<ProxyBody>, Rejection>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    // 1b. a source escalated at L7 (seen through a trusted proxy, or with
    // XDP off) is turned away before any work.
    if let Some(left) = state
        .engines
        .escalation
        .as_ref()
        .and_then(|e| e.l7_blocked(client_ip))
    {
        return Err(Rejection::new(
            Reason::Escalated,
            "too many bad requests from this address; try again later",
        )
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(left.as_secs().max(1)),
        ));
    }

    // 2. check
    if conn.smuggling_suspected(index) {
        return Err(Rejection::new(
            Reason::BadRequest,
            "Content-Length and Transfer-Encoding must not be sent together",
        ));
    }
    if conn.fragment_in_target(index) {
        // `http` drops a `#fragment` silently; `h1_scan` saw it in the raw
        // request line. Origin-form has no fragment (RFC 9112 §3.2.1).
        return Err(Rejection::new(
            Reason::BadPath,
            "the request target must not contain a fragment ('#')",
        ));
    }
    let h1 = req.version() < Version::HTTP_2;
    let checked = check::check(&mut req, &state.limits, &state.router)?;
    if checked.asterisk || (h1 && conn.server_wide_options(index)) {
        return Ok(server_options(&state.limits));
    }

    // 3. route
    let preflight = cors::is_preflight(req.method(), req.headers());
    let match_method = if preflight {
        cors::requested_method(req.headers()).unwrap_or_else(|| req.method().clone())
    } else {
        req.method().clone()
    };
    let route = state
        .router
        .find(checked.host(), &checked.path, &match_method, req.headers())
        .ok_or_else(|| Rejection::new(Reason::NoRoute, "no route matches this request"))?;
    outcome.route = Some(route.clone());
    outcome.security = Some(route.security.clone());
    if let Some(c) = &route.cors {
        // The gateway answers preflights itself, before authentication.
        if preflight {
            return Ok(cors::preflight(c, req.headers()));
        }
        outcome.cors = Some((c.clone(), req.headers().get(header::ORIGIN).cloned()));
    }
    // The path sent upstream: the normalized one with the route's
    // rewrite; borrowed when neither changed it.
    let forward_path = route.rewrite(&checked.path);
    let mut ctx = RequestContext {
        request_id,
        client_ip,
        peer: conn.peer,
        tls: conn.tls,
        listener: &conn.listener,
        route_id: &route.id,
        upstream: &route.upstream,
        forward_path: &forward_path,
        extras: &mut outcome.extras,
    };

    let websocket = framing.websocket;
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let limits = &state.limits;
    // A request whose head ended the stream has no body to limit (and
    // nothing to share about it).
    let bodiless = req.body().is_end_stream() && !framing.grpc;
    let tripped = if bodiless {
        Tripped::no_body()
    } else {
        Tripped::default()
    };
    let mut req = req.map(|b| {
        if bodiless {
            return body::empty();
        }
        Limited::new(
            b,
            limits.max_body_bytes,
            limits.body_read_timeout.get(),
            tripped.clone(),
        )
        // A gRPC stream may idle between messages for as long as the call
        // lives: only the idle timeout between frames applies to it, not
        // the minimum rate (which would end long calls).
        .min_rate(if framing.grpc {
            0
        } else {
            limits.body_min_rate
        })
        .boxed()
    });

    // 4-6. engines
    for phase in state.engines.phases.in_order() {
        if phase.is_noop() {
            continue;
        }
        // A phase that read the body (validation) reports a body limit
        // that tripped as the limit (413/408), not as a broken body.
        phase
            .run(&mut ctx, &mut req)
            .await
            .map_err(|r| match tripped.get() {
                Some(reason) if r.reason == Reason::BodyIncomplete => {
                    Rejection::new(reason, upstream::limit_detail(reason))
                }
                _ => r,
            })?;
    }

    // 7a. an aggregate route makes its calls instead of forwarding.
    if let Some(plan) = &route.aggregate {
        if framing.grpc || websocket {
            return Err(Rejection::new(
                Reason::BadRequest,
                "an aggregate route answers plain HTTP requests, not gRPC or WebSocket",
            ));
        }
        if framing.may_have_body {
            return Err(Rejection::new(
                Reason::BodyTooLarge,
                "an aggregate route takes no request body",
            ));
        }
        let (parts, _) = req.into_parts();
        return Box::pin(aggregate_phase(
            state, conn, &route, plan, &checked, &parts, request_id, outcome,
        ))
        .await;
    }

    // 6b. request buffering: the whole body is read (within its limits)
    // before the upstream is contacted, so a body that is too big or too
    // slow is the gateway's 413/408 and the upstream sees nothing. A body
    // the validate phase already read is in memory: no second read.
    // A gRPC call streams in both directions: never buffered.
    if !framing.grpc
        && route.request_buffering.unwrap_or(limits.request_buffering)
        && !req.body().is_end_stream()
    {
        let (mut parts, b) = req.into_parts();
        let bytes = body::buffer(b, &tripped)
            .await
            .map_err(|reason| Rejection::new(reason, upstream::limit_detail(reason)))?;
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        req = Request::from_parts(parts, body::full(bytes));
    }

    // 7. forward
    let pool = state.pools.get(&route.upstream).ok_or_else(|| {
        Rejection::new(
            Reason::Internal,
            format!("upstream '{}' is missing", route.upstream),
        )
    })?;
    let (mut parts, body) = req.into_parts();
    // gRPC-Web goes upstream as gRPC (and comes back translated).
    let web = grpc_web::Call::of(&parts.method, &parts.headers);
    let body = match &web {
        Some(call) => call.to_grpc(&mut parts.headers, body, &tripped),
        None => body,
    };
    // The gateway met the client's `Expect: 100-continue` itself (its 100
    // went out when the body was first read): the upstream gets the body,
    // not the expectation (Envoy's default, `proxy_100_continue: false`).
    parts.headers.remove(header::EXPECT);
    let may_retry = !framing.may_have_body && upstream::retryable(&parts);
    let authority = authority_value(&checked, &parts.headers);
    headers::set_forwarding(
        &mut parts.headers,
        &forwarding(state, conn, authority.as_ref()),
    );
    outcome.trace.apply(&mut parts.headers);
    headers::join_cookies(&mut parts.headers);
    // The Host sent upstream is the validated authority the route matched.
    match authority {
        Some(v) => {
            parts.headers.insert(header::HOST, v);
        }
        None => {
            parts.headers.remove(header::HOST);
        }
    }
    if websocket {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    // The query as the phases left it (authentication strips credentials).
    parts.uri = match parts.uri.path_and_query() {
        // Nothing to change: the client's target, shared.
        Some(pq) if !parts.uri.path().is_empty() && parts.uri.path() == forward_path => {
            http::Uri::from(pq.clone())
        }
        pq => {
            let query = pq.and_then(|pq| pq.query());
            let mut target =
                String::with_capacity(forward_path.len() + query.map_or(0, |q| q.len() + 1));
            target.push_str(&forward_path);
            if let Some(q) = query {
                target.push('?');
                target.push_str(q);
            }
            upstream::origin_form(target)?
        }
    };
    let sent = Instant::now();
    let forwarded = upstream::forward(pool, parts, body, may_retry, &tripped).await;
    state.engines.observe.metrics.upstream_on(
        &pool.series,
        &pool.name,
        sent.elapsed().as_secs_f64(),
    );
    let (mut resp, addr, in_flight) = forwarded?;
    outcome.target = Some(addr);

    // 8. respond
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(Rejection::new(
                Reason::UpstreamFailed,
                "the upstream switched protocols without being asked",
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((c, u)) => {
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let (mut head, _) = resp.into_parts();
        headers::clean_response(&mut head.headers);
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        head.headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Ok(Response::from_parts(head, body::empty()));
    }
    headers::clean_response(resp.headers_mut());
    let resp = upstream::guarded_body(resp, in_flight);
    Ok(match web {
        Some(call) => call.to_web(resp),
        None => resp,
    })
}

/// Step 7a: the calls of an aggregate route, with the headers every call
/// carries (forwarding, request id, verified identity) built once.
#[allow(
    clippy::too_many_arguments,
    reason = "the per-request values the phases share, borrowed from `handle`'s frame"
)]
async fn aggregate_phase(
    state: &ProxyState,
    conn: &ConnInfo,
    route: &super::router::Route,
    plan: &aggregate::Plan,
    checked: &check::Checked,
    parts: &http::request::Parts,
    request_id: &str,
    outcome: &mut Outcome<'_>,
) -> Result<Response<ProxyBody>, Rejection> {
    let params = route
        .path_params(&checked.path)
        .map_err(|m| Rejection::new(Reason::BadPath, m))?;
    let authority = authority_value(checked, &parts.headers);
    let base = aggregate::base_headers(
        &parts.headers,
        &forwarding(state, conn, authority.as_ref()),
        request_id,
        outcome.extras.identity.as_ref(),
    );
    let inputs = aggregate::Inputs {
        route: &route.id,
        params,
        query: parts.uri.query(),
        client: &parts.headers,
        base,
        trace: outcome.trace,
    };
    aggregate::run(
        plan,
        &state.pools,
        &state.engines.observe.metrics,
        inputs,
        &mut outcome.calls,
    )
    .await
}

/// The validated authority as a field value: the client's own `Host` when
/// it is already spelled so (shared, not copied).
fn authority_value(checked: &check::Checked, headers: &http::HeaderMap) -> Option<HeaderValue> {
    checked
        .authority
        .as_ref()
        .and_then(|a| a.field_value(headers.get(header::HOST)))
}

/// What the forwarding headers (`X-Forwarded-*`, `Forwarded`) say of this
/// connection, with `host` as the forwarded Host.
fn forwarding<'a>(
    state: &ProxyState,
    conn: &'a ConnInfo,
    host: Option<&'a HeaderValue>,
) -> Forwarding<'a> {
    Forwarding {
        peer: conn.peer.ip(),
        peer_value: conn.peer_value(),
        peer_trusted: state.trusted.contains(conn.peer.ip()),
        proto: if conn.tls { "https" } else { "http" },
        host,
        chain: state.trusted.header(),
    }
}

/// The gateway's answer to `OPTIONS *` (RFC 9110 §9.3.7): 200, `Allow`
/// with the methods it proxies, no body. Never routed, never an offence.
fn server_options(limits: &super::config::Limits) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    resp.headers_mut()
        .insert(header::ALLOW, check::allow_header(limits));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// The offence a client-caused rejection counts as, if any. A 404 (no
/// route) is not one: scanners hit it, but so do broken links. A 403
/// (valid identity, missing scope) is not one either.
fn offence_of(reason: Reason) -> Option<Offence> {
    use Reason::*;
    match reason {
        RateLimited => Some(Offence::RateLimited),
        Unauthenticated | AuthInvalidRequest | TooManyAuthFailures => Some(Offence::AuthFailure),
        Invalid | UnsupportedMediaType => Some(Offence::ValidationFailure),
        BadPath | BadRequest | UnderscoreHeader | BodyIncomplete | BadHost => {
            Some(Offence::MalformedHttp)
        }
        UriTooLong | HeadersTooLarge | BodyTooLarge | HeaderTimeout | BodyTimeout
        | MethodNotImplemented => Some(Offence::LimitViolation),
        // The client behind the trusted proxy is unknown, and the proxy
        // must not pay for its clients' headers.
        BadClientIp => None,
        // Over its plan's quota, a client is a customer to bill or upgrade,
        // not an attacker (Kong and AWS usage plans answer 429, nothing more).
        QuotaExceeded => None,
        // A refused TRACE is a scanner's probe, like a 404.
        NoRoute | AuthMissing | Forbidden | Escalated | AuthUnavailable | NoHealthyUpstream
        | UpstreamFailed | UpstreamTimeout | Internal | MethodNotAllowed => None,
    }
}

/// An RFC 9457 problem response for a rejection.
pub fn problem_response(rejection: &Rejection, request_id: &str) -> Response<ProxyBody> {
    let body = match &rejection.problem {
        Some(b) => body::full(b.clone()),
        None => body::full(rejection.problem_json(request_id)),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = rejection.reason.status();
    let h = resp.headers_mut();
    for (name, value) in &rejection.headers {
        h.append(name.clone(), value.clone());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
