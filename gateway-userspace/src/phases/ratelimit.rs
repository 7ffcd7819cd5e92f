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
    cluster::{Cluster, SharedLimit},
    config::Config,
    proxy::{Phase, PhaseFuture, Reason, Rejection, RequestContext, body::ProxyBody},
    ratelimit::{Decision, KeyContext, KeySpec, LimitConfig, Limiter, Mode, Rate, headers},
    xdp::clock,
};

/// One configured limit: this node's bucket, and for `shared` limits the
/// cluster bucket in front of it (the local one decides while Redis is
/// unavailable).
struct Limit {
    local: Limiter,
    shared: Option<SharedLimit>,
}

impl Limit {
    fn local(config: LimitConfig) -> Self {
        Self {
            local: Limiter::new(config),
            shared: None,
        }
    }
}

pub struct RateLimitPhase {
    global: Vec<Arc<Limit>>,
    /// route id → its limits
    routes: HashMap<String, Vec<Arc<Limit>>>,
    /// Own limits of API keys (`rate_limit = N` requests/s), one limiter per
    /// distinct rate, keyed by identity.
    per_key: Mutex<HashMap<u32, Arc<Limit>>>,
}

impl RateLimitPhase {
    /// `cluster`: the Redis link for `shared` limits (config validation
    /// guarantees it exists when a limit is shared).
    pub fn new(config: &Config, cluster: Option<Arc<Cluster>>) -> Self {
        let by_name: HashMap<&str, Arc<Limit>> = config
            .rate_limit
            .limits
            .iter()
            .map(|l| {
                let shared = cluster
                    .as_ref()
                    .filter(|_| l.shared)
                    .map(|c| SharedLimit::new(c.clone(), l));
                let limit = Limit {
                    local: Limiter::new(l.clone()),
                    shared,
                };
                (l.name.as_str(), Arc::new(limit))
            })
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

    fn key_limiter(&self, rate: u32) -> Arc<Limit> {
        let mut map = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(rate)
            .or_insert_with(|| {
                Arc::new(Limit::local(LimitConfig {
                    name: "api-key".into(),
                    rate: Rate::per_second(u64::from(rate.max(1))),
                    burst: rate,
                    mode: Mode::NoDelay,
                    key: KeySpec::Identity,
                    ipv6_prefix_len: 64,
                    max_keys: 100_000,
                    shared: false,
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
            let mut limits: Vec<Arc<Limit>> = self.global.clone();
            limits.extend(
                self.routes
                    .get(&*ctx.route_id)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            if let Some(rate) = identity.as_ref().and_then(|i| i.rate_limit) {
                limits.push(self.key_limiter(rate));
            }
            if limits.is_empty() {
                return Ok(());
            }
            let keys = keys(ctx, req, &limits, identity.as_ref());
            let now = clock::monotonic_ns();
            let mut verdicts = Vec::with_capacity(limits.len());
            for (l, key) in limits.iter().zip(keys) {
                let d = match (key, &l.shared) {
                    (None, _) => Decision::NotApplicable,
                    (Some(k), None) => l.local.check_key(&k, now),
                    (Some(k), Some(shared)) => shared.check(&k, &l.local).await,
                };
                let rejected = matches!(d, Decision::Reject { .. });
                verdicts.push((l.clone(), d));
                // A rejected request is not counted by the limits after it.
                if rejected {
                    break;
                }
            }
            let wait = respond(ctx, &verdicts)?;
            if !wait.is_zero() {
                // Throttling: the burst is bounded, so is the wait.
                tokio::time::sleep(wait).await;
            }
            Ok(())
        })
    }
}

/// The key of each limit for this request (`None`: the limit does not apply).
fn keys(
    ctx: &RequestContext,
    req: &Request<ProxyBody>,
    limits: &[Arc<Limit>],
    identity: Option<&crate::auth::Identity>,
) -> Vec<Option<String>> {
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
    limits.iter().map(|l| l.local.key(&key_ctx)).collect()
}

/// Turns the verdicts into response headers, or the 429; returns how long
/// to delay the request.
fn respond(
    ctx: &RequestContext,
    verdicts: &[(Arc<Limit>, Decision)],
) -> Result<Duration, Rejection> {
    let (mut policies, mut states) = (Vec::new(), Vec::new());
    let mut wait = Duration::ZERO;
    let mut rejected: Option<Duration> = None;
    for (l, d) in verdicts {
        let Some(state) = headers::state_item(&l.local, d) else {
            continue;
        };
        policies.push(headers::policy_item(&l.local));
        states.push(state);
        match *d {
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
