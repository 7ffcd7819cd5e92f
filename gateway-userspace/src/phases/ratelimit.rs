//! The rate-limit phase: the global limits, then the route's, then the
//! API key's own rate if it has one. Every limit that applies adds to the
//! `RateLimit-Policy` / `RateLimit` response headers; the first that
//! rejects ends the request with 429 and `Retry-After`; in delay mode the
//! request waits (throttling) before it goes on.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Request, header};

use crate::{
    config::Config,
    proxy::{Phase, PhaseFuture, Reason, Rejection, RequestContext, body::ProxyBody},
    ratelimit::{Decision, KeyContext, KeySpec, LimitConfig, Limiter, Mode, Rate, headers},
    xdp::clock,
};

pub struct RateLimitPhase {
    global: Vec<Arc<Limiter>>,
    /// route id → its limits
    routes: HashMap<String, Vec<Arc<Limiter>>>,
    /// Own limits of API keys (`rate_limit = N` requests/s), one limiter per
    /// distinct rate, keyed by identity.
    per_key: Mutex<HashMap<u32, Arc<Limiter>>>,
}

impl RateLimitPhase {
    pub fn new(config: &Config) -> Self {
        let by_name: HashMap<&str, Arc<Limiter>> = config
            .rate_limit
            .limits
            .iter()
            .map(|l| (l.name.as_str(), Arc::new(Limiter::new(l.clone()))))
            .collect();
        let pick = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| by_name.get(n.as_str()).cloned())
                .collect()
        };
        Self {
            global: pick(&config.rate_limit.global),
            routes: config
                .routes
                .iter()
                .map(|r| (r.id.get_ref().clone(), pick(&r.rate_limits)))
                .collect(),
            per_key: Mutex::new(HashMap::new()),
        }
    }

    fn key_limiter(&self, rate: u32) -> Arc<Limiter> {
        let mut map = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(rate)
            .or_insert_with(|| {
                Arc::new(Limiter::new(LimitConfig {
                    name: "api-key".into(),
                    rate: Rate::per_second(u64::from(rate.max(1))),
                    burst: rate,
                    mode: Mode::NoDelay,
                    key: KeySpec::Identity,
                    ipv6_prefix_len: 64,
                    max_keys: 100_000,
                }))
            })
            .clone()
    }
}

fn value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_str(&s).ok()
}

impl Phase for RateLimitPhase {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a RequestContext,
        req: &'a mut Request<ProxyBody>,
    ) -> PhaseFuture<'a> {
        Box::pin(async move {
            let identity = ctx.extras().identity.clone();
            let mut limiters: Vec<Arc<Limiter>> = self.global.clone();
            limiters.extend(
                self.routes
                    .get(&*ctx.route_id)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            if let Some(rate) = identity.as_ref().and_then(|i| i.rate_limit) {
                limiters.push(self.key_limiter(rate));
            }
            if limiters.is_empty() {
                return Ok(());
            }
            let wait = self.decide(ctx, req, &limiters, identity.as_ref())?;
            if !wait.is_zero() {
                // Throttling: the burst is bounded, so is the wait.
                tokio::time::sleep(wait).await;
            }
            Ok(())
        })
    }
}

impl RateLimitPhase {
    /// Checks every limit; returns how long to delay the request.
    fn decide(
        &self,
        ctx: &RequestContext,
        req: &Request<ProxyBody>,
        limiters: &[Arc<Limiter>],
        identity: Option<&crate::auth::Identity>,
    ) -> Result<Duration, Rejection> {
        {
            let subject = identity
                .map(|i| i.subject.as_str())
                .filter(|s| !s.is_empty());
            let req_headers = req.headers();
            let header_lookup = |name: &str| {
                req_headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let claim_lookup = |name: &str| {
                (name == "sub")
                    .then(|| subject.map(str::to_owned))
                    .flatten()
            };
            let key_ctx = KeyContext {
                client_ip: Some(ctx.client_ip),
                identity: subject,
                claim: Some(&claim_lookup),
                header: Some(&header_lookup),
            };
            let now = clock::monotonic_ns();
            let (mut policies, mut states) = (Vec::new(), Vec::new());
            let mut wait = Duration::ZERO;
            let mut rejected: Option<Duration> = None;
            for l in limiters {
                let d = l.check(&key_ctx, now);
                let Some(state) = headers::state_item(l, &d) else {
                    continue;
                };
                policies.push(headers::policy_item(l));
                states.push(state);
                match d {
                    Decision::Reject { retry_after, .. } => {
                        rejected = Some(retry_after);
                        break;
                    }
                    Decision::Delay { wait: w, .. } => wait = wait.max(w),
                    _ => {}
                }
            }
            let policy_h = HeaderName::from_static("ratelimit-policy");
            let state_h = HeaderName::from_static("ratelimit");
            ctx.extras().rate_limit = Some(if rejected.is_some() {
                "rejected"
            } else if !wait.is_zero() {
                "delayed"
            } else {
                "allowed"
            });
            if let Some(retry) = rejected {
                let mut r = Rejection::new(Reason::RateLimited, "rate limit exceeded; slow down")
                    .with_header(
                        header::RETRY_AFTER,
                        HeaderValue::from_str(&headers::retry_after(retry)).expect("digits"),
                    );
                if let Some(v) = value(policies.join(", ")) {
                    r = r.with_header(policy_h, v);
                }
                if let Some(v) = value(states.join(", ")) {
                    r = r.with_header(state_h, v);
                }
                return Err(r);
            }
            if !policies.is_empty() {
                let mut extras = ctx.extras();
                if let Some(v) = value(policies.join(", ")) {
                    extras.response_headers.push((policy_h, v));
                }
                if let Some(v) = value(states.join(", ")) {
                    extras.response_headers.push((state_h, v));
                }
            }
            Ok(wait)
        }
    }
}
