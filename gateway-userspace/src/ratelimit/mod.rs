//! L7 rate limiting and throttling with the semantics of NGINX `limit_req`:
//! a rate (`10r/s`, `600r/m`), a burst, and either `nodelay` (serve the burst
//! at once, reject beyond it) or delay mode (requests over the rate but
//! within the burst wait until the rate allows them: throttling).
//!
//! Each named limit is keyed by client IP (IPv6 grouped by prefix), a JWT
//! claim, the authenticated identity, or a header. State is one GCRA
//! timestamp per key in a sharded map with a bounded number of keys, so a
//! flood of distinct keys cannot grow memory and no global lock is taken on
//! the request path.
//!
//! A limit may also carry a calendar quota (`quota = "10000/day"`,
//! [`quota`]), counted in a [`quota_store::QuotaStore`] that survives
//! reloads and restarts.

#![forbid(unsafe_code)]

pub mod config;
pub mod headers;
pub mod quota;
pub mod quota_store;
mod store;

use std::{net::IpAddr, time::Duration};

pub use config::{KeySpec, LimitConfig, Mode, PlanConfig, Rate, RateLimitSection};
use store::Store;

/// Looks up a value by name (a claim of the verified token, a header).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What the proxy knows of a request when picking a key.
#[derive(Default)]
pub struct KeyContext<'a> {
    /// The client address (through trusted proxies), for `key = "ip"`.
    pub client_ip: Option<IpAddr>,
    /// The authenticated identity (API key name, JWT `sub`, Basic user).
    pub identity: Option<&'a str>,
    /// Looks up a claim of the verified token by name.
    pub claim: Option<Lookup<'a>>,
    /// Looks up a request header by lower-case name.
    pub header: Option<Lookup<'a>>,
}

/// The verdict of one limit for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve now. `remaining` requests could still be served at once;
    /// the bucket is full again after `reset`.
    Allow {
        /// Requests that could still be served at once (`RateLimit` header's `r`).
        remaining: u32,
        /// Until the bucket is full again (`RateLimit` header's `t`, rounded up to seconds).
        reset: Duration,
    },
    /// Throttled: serve after waiting `wait` (delay mode only).
    Delay {
        /// How long the request is held before it goes upstream.
        wait: Duration,
        /// Requests that could still be served at once after this one.
        remaining: u32,
        /// Until the bucket is full again.
        reset: Duration,
    },
    /// Over rate and burst: answer 429 with `Retry-After`.
    Reject {
        /// Until one request would be allowed again (`Retry-After`, rounded up to seconds).
        retry_after: Duration,
        /// Until the bucket is full again.
        reset: Duration,
    },
    /// The request has no value for this limit's key (for example no
    /// identity on an unauthenticated route): the limit does not apply.
    NotApplicable,
}

/// One named limit with its state.
pub struct Limiter {
    /// The `[[rate_limit.limits]]` entry (or the plan-derived one) this limiter enforces.
    pub config: LimitConfig,
    /// The rate this limiter enforces (the config's, or a plan's).
    pub rate: Rate,
    store: Store,
    interval_ns: u64,
    /// The name as a structured-field string body (`headers::sf_string`).
    sf_name: Box<str>,
    /// This limit's `RateLimit-Policy` member, made once.
    policy: http::HeaderValue,
}

/// The key `config` uses for a request, if the request has one.
pub fn key_of(config: &LimitConfig, ctx: &KeyContext<'_>) -> Option<String> {
    match &config.key {
        KeySpec::ClientIp => ctx
            .client_ip
            .map(|ip| crate::net::ip_string(crate::net::group_ip(ip, config.ipv6_prefix_len))),
        KeySpec::Identity => ctx.identity.map(str::to_owned),
        KeySpec::Claim(name) => ctx.claim.and_then(|f| f(name)),
        KeySpec::Header(name) => ctx.header.and_then(|f| f(name)),
    }
    .map(|mut k| {
        // Bound what an attacker-chosen key can cost (at a char boundary).
        if k.len() > 256 {
            let mut end = 256;
            while !k.is_char_boundary(end) {
                end -= 1;
            }
            k.truncate(end);
        }
        k
    })
}

impl Limiter {
    /// A limiter of `rate` with the key, burst and mode of `config`.
    pub fn new(config: LimitConfig, rate: Rate) -> Self {
        let interval_ns = rate.interval_ns();
        let store = Store::new(config.max_keys);
        let sf_name = headers::sf_string(&config.name).into_boxed_str();
        // Printable ASCII by construction (`sf_string`, digits).
        let policy = http::HeaderValue::try_from(headers::policy_member(&sf_name, &config, &rate))
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        Self {
            config,
            rate,
            store,
            interval_ns,
            sf_name,
            policy,
        }
    }

    /// The name as a structured-field string body (without the quotes).
    pub fn sf_name(&self) -> &str {
        &self.sf_name
    }

    /// This limit's `RateLimit-Policy` list member, made at build time:
    /// `"per-ip";q=10;w=1`.
    pub fn policy_value(&self) -> &http::HeaderValue {
        &self.policy
    }

    /// The key this limit uses for a request, if the request has one.
    pub fn key(&self, ctx: &KeyContext<'_>) -> Option<String> {
        key_of(&self.config, ctx)
    }

    /// Checks and counts one request at monotonic time `now_ns`.
    pub fn check(&self, ctx: &KeyContext<'_>, now_ns: u64) -> Decision {
        match self.key(ctx) {
            Some(key) => self.check_key(&key, now_ns),
            None => Decision::NotApplicable,
        }
    }

    /// Checks and counts one request for an explicit key.
    pub fn check_key(&self, key: &str, now_ns: u64) -> Decision {
        let t = self.interval_ns;
        let burst = u64::from(self.config.burst);
        let delay_free = match self.config.mode {
            Mode::NoDelay => burst,
            Mode::Delay { after } => u64::from(after).min(burst),
        };
        self.store.update(key, now_ns, |tat| {
            let start = tat.max(now_ns);
            // How far ahead of the rate this source already is.
            let excess = start - now_ns;
            let reset_after = |tat: u64| Duration::from_nanos(tat.saturating_sub(now_ns));
            if excess > burst * t {
                // Not counted: a rejected request does not use up budget.
                let retry = Duration::from_nanos(excess - burst * t);
                return (
                    tat,
                    Decision::Reject {
                        retry_after: retry,
                        reset: reset_after(start),
                    },
                );
            }
            let new_tat = start + t;
            let remaining = ((burst * t).saturating_sub(excess) / t) as u32;
            let reset = reset_after(new_tat);
            let wait = excess.saturating_sub(delay_free * t);
            let decision = if wait == 0 {
                Decision::Allow { remaining, reset }
            } else {
                Decision::Delay {
                    wait: Duration::from_nanos(wait),
                    remaining,
                    reset,
                }
            };
            (new_tat, decision)
        })
    }

    /// Keys currently tracked (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests;
