//! The request phases other modules own: authenticate, validate and rate
//! limit (the gateway's one name for a step of a request is *phase*, as in
//! Pingora; `pipeline` runs them all in order). Each is a [`Phase`] that
//! borrows the request's [`RequestContext`] and the request, and either
//! lets it continue or ends it with a [`Rejection`]. The defaults let every
//! request through.

#![forbid(unsafe_code)]

use std::{future::Future, net::IpAddr, net::SocketAddr, pin::Pin, sync::Arc};

use http::{HeaderName, HeaderValue, Request};

use super::{body::ProxyBody, reject::Rejection};

/// What the gateway knows about a request when the phases run, and what
/// they learn about it: owned by the request and lent to each phase in turn
/// by `&mut` (Pingora's per-request `CTX`), so no phase locks or copies it.
#[derive(Debug)]
pub struct RequestContext<'r> {
    /// `X-Request-Id` as forwarded (generated unless a trusted proxy sent one).
    pub request_id: &'r str,
    /// The client: the socket peer, or what a trusted proxy said it was.
    pub client_ip: IpAddr,
    /// The TCP peer (after PROXY protocol from a trusted proxy).
    pub peer: SocketAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The listener's name.
    pub listener: &'r str,
    /// The id of the matched route.
    pub route_id: &'r str,
    /// The upstream pool the route sends to.
    pub upstream: &'r str,
    /// The path as it is forwarded: normalized once (`proxy::path`), then
    /// the route's `rewrite_prefix` applied; no query. The request URI the
    /// phases get may still be the raw one: validate this, not that.
    pub forward_path: &'r str,
    /// What phases learn and leave for later phases and the response
    /// (kept by the request: a client that goes away mid-phase is still
    /// logged with what was learnt).
    pub extras: &'r mut Extras,
}

/// Per-request state shared between phases.
#[derive(Debug, Default)]
pub struct Extras {
    /// The authenticated identity, set by the authenticate phase.
    pub identity: Option<crate::auth::Identity>,
    /// Headers added to the response, whatever it is (e.g. `RateLimit`).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Why authentication failed (`AuthFailure::reason`), for metrics.
    pub auth_failure: Option<&'static str>,
    /// The auth policy the request failed (set with `auth_failure`), for
    /// the per-policy failure counts of metrics and the dashboard.
    pub auth_policy: Option<std::sync::Arc<str>>,
    /// The rate-limit outcome: `allowed`, `delayed` or `rejected` (absent
    /// when no limit applies), for the access log and metrics.
    pub rate_limit: Option<&'static str>,
    /// The limit that answered 429: a limit's name, or the quota's
    /// (`plan:<name>`, `limit:<name>`) when over quota.
    pub rate_limited_by: Option<std::sync::Arc<str>>,
    /// The validation outcome (`passed`, `failed`...), set by the validate
    /// phase when it checks the request.
    pub validation: Option<&'static str>,
}

/// The future a phase returns.
pub type PhaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Rejection>> + Send + 'a>>;

/// One request phase. It may read and change the request (headers, or the
/// body, e.g. replace it with a validated copy); returning `Err` ends the
/// request with the rejection's status and a problem+json body.
pub trait Phase: Send + Sync + 'static {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// Runs the phase for one request.
    fn run<'a>(
        &'a self,
        ctx: &'a mut RequestContext<'_>,
        req: &'a mut Request<ProxyBody>,
    ) -> PhaseFuture<'a>;
    /// Whether the phase lets every request through untouched; the
    /// pipeline then skips it (no boxed future per request).
    fn is_noop(&self) -> bool {
        false
    }
}

/// A phase that lets every request through.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allow;

impl Phase for Allow {
    fn name(&self) -> &'static str {
        "allow"
    }

    fn is_noop(&self) -> bool {
        true
    }

    fn run<'a>(
        &'a self,
        _: &'a mut RequestContext<'_>,
        _: &'a mut Request<ProxyBody>,
    ) -> PhaseFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// The phases other modules own, in the order the pipeline runs them
/// (steps 4-6 of `pipeline`, after routing). Each defaults to [`Allow`].
#[derive(Clone)]
pub struct Phases {
    /// The authenticate phase (`phases::auth::AuthPhase`).
    pub authenticate: Arc<dyn Phase>,
    /// The validate phase (`phases::validate::ValidatePhase`; [`Allow`] without validation rules).
    pub validate: Arc<dyn Phase>,
    /// The L7 rate-limit phase (`phases::ratelimit::RateLimitPhase`).
    pub rate_limit: Arc<dyn Phase>,
}

impl Default for Phases {
    fn default() -> Self {
        Self {
            authenticate: Arc::new(Allow),
            validate: Arc::new(Allow),
            rate_limit: Arc::new(Allow),
        }
    }
}

impl Phases {
    /// The three, in the order they run.
    pub fn in_order(&self) -> [&Arc<dyn Phase>; 3] {
        [&self.authenticate, &self.validate, &self.rate_limit]
    }
}

/// What a proxy is built with besides its config: the [`Phases`] other
/// modules own, and the engines every request reports to (escalation,
/// metrics and the access log). `Engines::default()` lets every request
/// through and scores nothing.
#[derive(Clone, Default)]
pub struct Engines {
    /// The pluggable phases (`phases::build_engines` makes them from a config).
    pub phases: Phases,
    /// `None`: offences are not scored.
    pub escalation: Option<Arc<crate::escalate::Escalator>>,
    /// Metrics and the access log (kept across reloads by the caller).
    pub observe: crate::observe::Observe,
    /// The authenticator behind the authenticate phase, for metrics (JWKS fetches).
    pub authenticator: Option<Arc<crate::auth::Authenticator>>,
}
