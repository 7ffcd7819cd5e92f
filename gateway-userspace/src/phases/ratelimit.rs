//! The rate-limit phase: the global limits, then the route's, then the
//! API key's own rate if it has one. Every limit that applies adds to the
//! `RateLimit-Policy` / `RateLimit` response headers; the first that
//! rejects ends the request with 429 and `Retry-After`; in delay mode the
//! request waits (throttling) before it goes on.
//!
//! A consumer's plan (`plan` on an API key, or the policy's `plan_claim`)
//! adds the plan's rate and quota, keyed by identity, on top of the route's
//! limits (both apply, as Kong's consumer and route plugins do). Quotas are
//! counted after every rate limit allowed the request, so a request refused
//! by a rate never uses quota; an over-quota request is 429 with reason
//! `QuotaExceeded`, which is no escalation offence.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Request, header};

use crate::{
    clock,
    cluster::{Cluster, SharedLimit},
    config::Config,
    proxy::{Phase, PhaseFuture, Reason, Rejection, RequestContext, body::ProxyBody},
    ratelimit::{
        Decision, KeyContext, KeySpec, LimitConfig, Limiter, Mode, Rate, headers, key_of,
        quota::{Quota, UtcOffset, window_bounds},
        quota_store::{QuotaDecision, QuotaStore},
    },
};

/// One configured limit: this node's bucket (when it has a rate), for
/// `shared` limits the cluster bucket in front of it (the local one decides
/// while Redis is unavailable), and its calendar quota.
struct Limit {
    config: LimitConfig,
    local: Option<Limiter>,
    shared: Option<SharedLimit>,
    /// The quota and the name it is counted under (`limit:<name>`).
    quota: Option<(Quota, String)>,
}

impl Limit {
    fn local(config: LimitConfig, rate: Rate) -> Self {
        Self {
            local: Some(Limiter::new(config.clone(), rate)),
            config,
            shared: None,
            quota: None,
        }
    }
}

/// A `[[rate_limit.plans]]` entry: its rate limiter and its quota, both
/// keyed by identity.
struct Plan {
    rate: Option<Arc<Limit>>,
    /// The quota and the name it is counted under (`plan:<name>`).
    quota: Option<(Quota, String)>,
}

/// The L7 rate-limit phase (see the module docs): global, route, key and plan limits, then quotas.
pub struct RateLimitPhase {
    global: Vec<Arc<Limit>>,
    /// route id → its limits
    routes: HashMap<String, Vec<Arc<Limit>>>,
    /// Own limits of API keys (`rate_limit = N` requests/s), one limiter per
    /// distinct rate, keyed by identity.
    per_key: Mutex<HashMap<u32, Arc<Limit>>>,
    /// plan name → its limits
    plans: HashMap<String, Plan>,
    /// `[rate_limit] default_plan`: for identities without a known plan.
    default_plan: Option<String>,
    quotas: Arc<QuotaStore>,
    time_zone: UtcOffset,
    /// Quotas are counted in Redis when the cluster link is up.
    cluster: Option<Arc<Cluster>>,
}

impl RateLimitPhase {
    /// `cluster`: the Redis link for `shared` limits (config validation
    /// guarantees it exists when a limit is shared) and for quotas;
    /// `quotas`: this node's quota counts, which outlive the phase.
    pub fn new(config: &Config, cluster: Option<Arc<Cluster>>, quotas: Arc<QuotaStore>) -> Self {
        let by_name: HashMap<&str, Arc<Limit>> = config
            .rate_limit
            .limits
            .iter()
            .map(|l| {
                let shared = match (&cluster, l.rate) {
                    (Some(c), Some(rate)) if l.shared => Some(SharedLimit::new(c.clone(), l, rate)),
                    _ => None,
                };
                let limit = Limit {
                    config: l.clone(),
                    local: l.rate.map(|rate| Limiter::new(l.clone(), rate)),
                    shared,
                    quota: l.quota.map(|q| (q, format!("limit:{}", l.name))),
                };
                (l.name.as_str(), Arc::new(limit))
            })
            .collect();
        let plans: HashMap<String, Plan> = config
            .rate_limit
            .plans
            .iter()
            .map(|p| {
                let name = format!("plan:{}", p.name);
                let rate = p.rate.map(|rate| {
                    Arc::new(Limit::local(
                        LimitConfig {
                            name: name.clone(),
                            rate: Some(rate),
                            quota: None,
                            burst: p.burst,
                            mode: Mode::NoDelay,
                            key: KeySpec::Identity,
                            ipv6_prefix_len: 64,
                            max_keys: 100_000,
                            shared: false,
                        },
                        rate,
                    ))
                });
                let plan = Plan {
                    rate,
                    quota: p.quota.map(|q| (q, name)),
                };
                (p.name.clone(), plan)
            })
            .collect();
        let pick = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| by_name.get(n.as_str()).cloned())
                .collect()
        };
        quotas.set_configured(config.rate_limit.quotas(), config.rate_limit.time_zone);
        Self {
            global: pick(&config.rate_limit.global),
            routes: config
                .routes
                .iter()
                .map(|r| (r.id.get_ref().clone(), pick(&r.rate_limits)))
                .collect(),
            per_key: Mutex::new(HashMap::new()),
            plans,
            default_plan: config.rate_limit.default_plan.clone(),
            quotas,
            time_zone: config.rate_limit.time_zone,
            cluster,
        }
    }

    fn key_limiter(&self, rate: u32) -> Arc<Limit> {
        let mut map = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(rate)
            .or_insert_with(|| {
                let r = Rate::per_second(u64::from(rate.max(1)));
                Arc::new(Limit::local(
                    LimitConfig {
                        name: "api-key".into(),
                        rate: Some(r),
                        quota: None,
                        burst: rate,
                        mode: Mode::NoDelay,
                        key: KeySpec::Identity,
                        ipv6_prefix_len: 64,
                        max_keys: 100_000,
                        shared: false,
                    },
                    r,
                ))
            })
            .clone()
    }

    /// Counts one request of `consumer` against `quota`: in Redis in
    /// cluster mode, on this node when Redis is unavailable or there is no
    /// cluster.
    async fn take_quota(&self, name: &str, consumer: &str, quota: Quota) -> QuotaDecision {
        if let Some(c) = &self.cluster {
            let (start, end) = window_bounds(self.quotas.now(), quota.window, self.time_zone);
            if let Some((counted, used)) =
                c.quota_take(name, consumer, quota.count, start, end).await
            {
                return self.quotas.record_shared(
                    name,
                    consumer,
                    quota,
                    self.time_zone,
                    used,
                    counted,
                );
            }
        }
        self.quotas.check(name, consumer, quota, self.time_zone)
    }
}

impl Phase for RateLimitPhase {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a mut RequestContext<'_>,
        req: &'a mut Request<ProxyBody>,
    ) -> PhaseFuture<'a> {
        Box::pin(async move {
            // The identity is read and the outcome written through
            // disjoint fields of the request's extras: nothing is moved
            // out, so a request abandoned mid-phase (a throttling delay, a
            // Redis call) is still logged with its identity.
            let extras = &mut *ctx.extras;
            let out = Outcome {
                decision: &mut extras.rate_limit,
                limited_by: &mut extras.rate_limited_by,
                response_headers: &mut extras.response_headers,
            };
            self.decide(
                ctx.route_id,
                ctx.client_ip,
                req,
                extras.identity.as_ref(),
                out,
            )
            .await
        })
    }
}

impl RateLimitPhase {
    /// The limits and quotas that apply to this request, checked in order;
    /// the outcome goes into `out`.
    async fn decide(
        &self,
        route_id: &str,
        client_ip: std::net::IpAddr,
        req: &mut Request<ProxyBody>,
        identity: Option<&crate::auth::Identity>,
        out: Outcome<'_>,
    ) -> Result<(), Rejection> {
        {
            let mut limits: Vec<Arc<Limit>> = self.global.clone();
            limits.extend(self.routes.get(route_id).into_iter().flatten().cloned());
            if let Some(rate) = identity.and_then(|i| i.rate_limit) {
                limits.push(self.key_limiter(rate));
            }
            // The consumer's plan; an unknown plan name (a claim naming a
            // plan the config lacks) or none is the default plan, if any.
            let plan = identity
                .as_ref()
                .filter(|i| !i.subject.is_empty())
                .and_then(|i| {
                    let named = i.plan.as_deref().and_then(|p| {
                        let found = self.plans.get(p);
                        if found.is_none() {
                            tracing::debug!(plan = p, "identity names an unknown plan");
                        }
                        found
                    });
                    named.or_else(|| self.plans.get(self.default_plan.as_deref()?))
                });
            if let Some(rate) = plan.and_then(|p| p.rate.clone()) {
                limits.push(rate);
            }
            let plan_quota = plan.and_then(|p| p.quota.as_ref());
            if limits.is_empty() && plan_quota.is_none() {
                return Ok(());
            }
            let keys = keys(client_ip, req, &limits, identity);
            let now = clock::monotonic_ns();
            let mut verdicts = Vec::with_capacity(limits.len());
            let mut rate_rejected = false;
            for (l, key) in limits.iter().zip(&keys) {
                let d = match (key, &l.local, &l.shared) {
                    (None, _, _) | (_, None, _) => Decision::NotApplicable,
                    (Some(k), Some(local), None) => local.check_key(k, now),
                    (Some(k), Some(local), Some(shared)) => shared.check(k, local).await,
                };
                let rejected = matches!(d, Decision::Reject { .. });
                verdicts.push((l.clone(), d));
                // A rejected request is not counted by the limits after it.
                if rejected {
                    rate_rejected = true;
                    break;
                }
            }
            // Quotas last: only requests every rate allowed use quota.
            let mut quotas: Vec<(&str, QuotaDecision)> = Vec::new();
            if !rate_rejected {
                let subject = identity
                    .as_ref()
                    .map(|i| i.subject.as_str())
                    .filter(|s| !s.is_empty());
                let wanted = limits
                    .iter()
                    .zip(&keys)
                    .filter_map(|(l, k)| Some((l.quota.as_ref()?, k.as_deref()?)))
                    .chain(plan_quota.zip(subject));
                for ((quota, name), consumer) in wanted {
                    let d = self.take_quota(name, consumer, *quota).await;
                    quotas.push((name, d));
                    if !d.allowed {
                        break;
                    }
                }
            }
            let wait = respond(out, &verdicts, &quotas)?;
            if !wait.is_zero() {
                // Throttling: the burst is bounded, so is the wait.
                tokio::time::sleep(wait).await;
            }
            Ok(())
        }
    }
}

/// Where the phase writes its outcome: disjoint fields of the request's
/// extras (the identity, read meanwhile, is another field of them).
struct Outcome<'a> {
    /// `allowed`, `delayed`, `rejected` or `over_quota`.
    decision: &'a mut Option<&'static str>,
    /// The limit or quota that answered 429.
    limited_by: &'a mut Option<Arc<str>>,
    /// `RateLimit-Policy` and `RateLimit` for the response.
    response_headers: &'a mut Vec<(HeaderName, HeaderValue)>,
}

/// The key of each limit for this request (`None`: the limit does not apply).
fn keys(
    client_ip: std::net::IpAddr,
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
        client_ip: Some(client_ip),
        identity: subject,
        claim: Some(&claim_lookup),
        header: Some(&header_lookup),
    };
    limits.iter().map(|l| key_of(&l.config, &key_ctx)).collect()
}

/// Turns the verdicts into response headers, or the 429; returns how long
/// to delay the request.
fn respond(
    out: Outcome<'_>,
    verdicts: &[(Arc<Limit>, Decision)],
    quotas: &[(&str, QuotaDecision)],
) -> Result<Duration, Rejection> {
    // One limit's policy member is made at build time; the state members
    // are written into one string (`headers::FieldList`).
    let (mut policies, mut states) = (headers::FieldList::default(), headers::FieldList::default());
    let mut wait = Duration::ZERO;
    let mut rejected: Option<Duration> = None;
    let mut rejected_by: Option<&str> = None;
    for (l, d) in verdicts {
        let Some(local) = &l.local else {
            continue;
        };
        let Some((remaining, reset)) = headers::applied(d) else {
            continue;
        };
        states.push_with(|t| headers::write_state_item(t, local, remaining, reset));
        policies.push_value(local.policy_value());
        match *d {
            Decision::Reject { retry_after, .. } => {
                rejected = Some(retry_after);
                rejected_by = Some(&l.config.name);
                break;
            }
            Decision::Delay { wait: w, .. } => wait = wait.max(w),
            _ => {}
        }
    }
    let mut over_quota: Option<u64> = None;
    for (name, d) in quotas {
        policies.push_str(&headers::quota_policy_item(name, d));
        states.push_str(&headers::quota_state_item(name, d));
        if !d.allowed {
            over_quota = Some(d.reset_secs);
            rejected_by = Some(name);
        }
    }
    // Validated at compile time, not on every request.
    const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    const STATE: HeaderName = HeaderName::from_static("ratelimit");
    let (policy_h, state_h) = (POLICY, STATE);
    {
        *out.decision = Some(if over_quota.is_some() {
            "over_quota"
        } else if rejected.is_some() {
            "rejected"
        } else if !wait.is_zero() {
            "delayed"
        } else {
            "allowed"
        });
        if over_quota.is_some() || rejected.is_some() {
            *out.limited_by = rejected_by.map(Arc::from);
        }
    }
    if let Some(reset) = over_quota {
        // Retry-After: when the window ends and the quota is whole again.
        let mut r = Rejection::new(
            Reason::QuotaExceeded,
            "quota exceeded for the current window; retry when it resets",
        )
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from_str(&reset.max(1).to_string()).expect("digits"),
        );
        if let Some(v) = policies.into_value() {
            r = r.with_header(policy_h, v);
        }
        if let Some(v) = states.into_value() {
            r = r.with_header(state_h, v);
        }
        return Err(r);
    }
    if let Some(retry) = rejected {
        let mut r = Rejection::new(Reason::RateLimited, "rate limit exceeded; slow down")
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from_str(&headers::retry_after(retry)).expect("digits"),
            );
        if let Some(v) = policies.into_value() {
            r = r.with_header(policy_h, v);
        }
        if let Some(v) = states.into_value() {
            r = r.with_header(state_h, v);
        }
        return Err(r);
    }
    if !policies.is_empty() {
        if let Some(v) = policies.into_value() {
            out.response_headers.push((policy_h, v));
        }
        if let Some(v) = states.into_value() {
            out.response_headers.push((state_h, v));
        }
    }
    Ok(wait)
}
