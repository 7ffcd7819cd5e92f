//! Configuration of the L7 limits: `[[rate_limit.limits]]` entries with a
//! name, a rate and/or a calendar quota, a burst, a mode and a key. Routes
//! refer to limits by name; `global` lists limits applied to every request.
//! `[[rate_limit.plans]]` give API keys and token claims that name a plan
//! their rate and quota.

#![forbid(unsafe_code)]

use std::{fmt, path::PathBuf, str::FromStr};

use serde::Deserialize;

pub use super::quota::{Quota, UtcOffset, Window};

/// `[rate_limit]`: the L7 limits, plans and quota settings (`docs/ratelimit.md`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Named limits.
    pub limits: Vec<LimitConfig>,
    /// Names of limits applied to every request, before route limits.
    pub global: Vec<String>,
    /// Plans that API keys (`plan = "gold"`) and token claims name.
    pub plans: Vec<PlanConfig>,
    /// The plan of an authenticated consumer that names none (or names a
    /// plan the config lacks); none: such consumers get no plan limits.
    pub default_plan: Option<String>,
    /// Where quota counts are kept across restarts (relative paths are
    /// resolved against the config file's directory).
    pub quota_state: PathBuf,
    /// What quota windows align to: `"UTC"` or a fixed offset `"+02:00"`.
    pub time_zone: UtcOffset,
    /// (quota, consumer) pairs counted at most on this node.
    pub quota_max_consumers: usize,
}

#[allow(
    clippy::derivable_impls,
    reason = "hand-written so each default carries its comment (STYLE.md)"
)]
impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            // No limits, no global limits, no plans.
            limits: Vec::new(),
            global: Vec::new(),
            plans: Vec::new(),
            // None: a consumer without a plan has no plan limits (Kong).
            default_plan: None,
            // Beside other service state, as systemd's StateDirectory=gateway.
            quota_state: PathBuf::from("/var/lib/gateway/quota.json"),
            // UTC, as AWS usage plans and Kong count by default.
            time_zone: UtcOffset(0),
            // 1,000,000 pairs of ~100 bytes each: ~100 MiB at most.
            quota_max_consumers: 1_000_000,
        }
    }
}

/// One plan: the rate and/or quota every consumer on it gets, each consumer
/// counted apart (as Kong consumers and AWS usage-plan keys are).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// What API keys' `plan` and the plan claim name; metrics label.
    pub name: String,
    /// Requests per second or minute per consumer (`100r/s`), optional.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Requests above the rate accepted back to back (with `rate`).
    #[serde(default)]
    pub burst: u32,
    /// Requests per calendar window per consumer (`10000/day`), optional.
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// One `[[rate_limit.limits]]` entry: a token bucket (NGINX `limit_req` semantics) and/or a
/// calendar quota per key.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Name used by routes, metrics and the `RateLimit-Policy` header.
    pub name: String,
    /// `10r/s` or `600r/m`, as in NGINX `limit_req_zone`; optional when
    /// the limit has a `quota`.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Requests per calendar window per key (`10000/day`, `/hour`,
    /// `/month`), counted on top of `rate`; see `docs/ratelimit.md`.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Requests above the rate accepted back to back (NGINX `burst`).
    #[serde(default)]
    pub burst: u32,
    /// `"nodelay"` (default): the burst is served at once. `"delay"`: requests
    /// over the rate wait until the rate allows them (throttling);
    /// `"delay=N"`: the first N excess requests go at once, as NGINX
    /// `limit_req ... delay=N`.
    #[serde(default)]
    pub mode: Mode,
    /// What identifies a client for this limit.
    #[serde(default)]
    pub key: KeySpec,
    /// IPv6 clients share a bucket per prefix of this length (1-128).
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix_len: u8,
    /// Keys tracked at most; idle keys are evicted first.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Enforced across every node of the cluster (needs `[cluster]`, mode
    /// `nodelay`); see `docs/cluster.md` for the overshoot bound.
    #[serde(default)]
    pub shared: bool,
}

fn default_v6_prefix() -> u8 {
    64
}

fn default_max_keys() -> usize {
    // 100,000 keys of ~40 bytes each: a few MiB per limit.
    100_000
}

/// A request rate: `count` requests per `window_secs` (1 or 60), exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    count: u64,
    window_secs: u64,
}

impl Rate {
    /// `count` requests per second (`count > 0`; the parser refuses 0).
    pub fn per_second(count: u64) -> Self {
        Self {
            count,
            window_secs: 1,
        }
    }

    /// Nanoseconds between requests at this rate.
    pub fn interval_ns(self) -> u64 {
        (self.window_secs * 1_000_000_000 / self.count).max(1)
    }

    /// (requests, window in seconds), as configured.
    pub fn per_window(self) -> (u64, u64) {
        (self.count, self.window_secs)
    }
}

/// A value of `[rate_limit]` that cannot work, or limits and plans that
/// do not fit together: the config's to fix. The texts name the limit or
/// plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitConfigError {
    /// A rate that is not `N r/s` or `N r/m` (as written).
    #[error("rate '{0}' must look like 10r/s or 600r/m")]
    RateSyntax(String),
    /// A rate of 0 or above 10^9 requests (as written).
    #[error("rate '{0}' must be from 1 to 1000000000 requests")]
    RateRange(String),
    /// A mode that is not `nodelay`, `delay` or `delay=N` (as written).
    #[error("mode '{0}' must be nodelay, delay or delay=N")]
    Mode(String),
    /// A key that is not `ip`, `identity`, `claim:NAME` or `header:NAME`.
    #[error("key '{0}' must be ip, identity, claim:NAME or header:NAME")]
    Key(String),
    /// Two limits share a name.
    #[error("[[rate_limit.limits]] name '{0}' is used twice")]
    DuplicateLimit(String),
    /// A limit's `ipv6_prefix_len` outside 1..=128.
    #[error("rate limit '{0}': ipv6_prefix_len must be 1-128")]
    V6PrefixLen(String),
    /// A limit with `max_keys = 0`.
    #[error("rate limit '{0}': max_keys must be at least 1")]
    MaxKeysZero(String),
    /// A limit with neither a rate nor a quota.
    #[error(
        "rate limit '{0}' has neither rate nor quota; set rate = \"10r/s\" or quota = \"10000/day\""
    )]
    LimitWithoutRateOrQuota(String),
    /// `burst` or `mode` on a limit without a rate.
    #[error("rate limit '{0}': burst and mode need a rate")]
    BurstWithoutRate(String),
    /// `shared` on a quota-only limit.
    #[error("rate limit '{0}': shared applies to rates; quotas are shared in cluster mode anyway")]
    SharedWithoutRate(String),
    /// `delay=N` above the burst.
    #[error("rate limit '{name}': delay after {after} exceeds burst {burst}")]
    DelayExceedsBurst {
        /// The limit.
        name: String,
        /// `N` of `delay=N`.
        after: u32,
        /// The limit's burst.
        burst: u32,
    },
    /// `global` names a limit that does not exist.
    #[error("[rate_limit] global names unknown limit '{0}'")]
    UnknownGlobal(String),
    /// A plan with no name, or a name used twice.
    #[error("[[rate_limit.plans]] name '{0}' is empty or used twice")]
    PlanName(String),
    /// A plan with neither a rate nor a quota.
    #[error("plan '{0}' has neither rate nor quota")]
    PlanWithoutRateOrQuota(String),
    /// `burst` on a plan without a rate.
    #[error("plan '{0}': burst needs a rate")]
    PlanBurstWithoutRate(String),
    /// `default_plan` names a plan that does not exist.
    #[error("[rate_limit] default_plan '{0}' is not a [[rate_limit.plans]] entry")]
    UnknownDefaultPlan(String),
    /// `quota_max_consumers = 0`.
    #[error("[rate_limit] quota_max_consumers must be at least 1")]
    QuotaMaxConsumersZero,
}

impl FromStr for Rate {
    type Err = RateLimitConfigError;

    fn from_str(s: &str) -> Result<Self, RateLimitConfigError> {
        let bad = || RateLimitConfigError::RateSyntax(s.to_owned());
        let (n, unit) = s.trim().split_once("r/").ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > 1_000_000_000 {
            return Err(RateLimitConfigError::RateRange(s.to_owned()));
        }
        let window_secs = match unit.trim() {
            "s" => 1,
            "m" => 60,
            _ => return Err(bad()),
        };
        Ok(Self { count, window_secs })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, w) = self.per_window();
        write!(f, "{n}r/{}", if w == 1 { "s" } else { "m" })
    }
}

/// What happens to requests over the rate but within the burst (NGINX `limit_req` `nodelay` /
/// `delay=N`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Serve the burst at once, reject beyond it.
    #[default]
    NoDelay,
    /// Throttle: after `after` excess requests, delay the rest of the burst.
    Delay {
        /// Excess requests served at once before the rest wait (`delay=N`; 0 for `delay`).
        after: u32,
    },
}

impl FromStr for Mode {
    type Err = RateLimitConfigError;

    fn from_str(s: &str) -> Result<Self, RateLimitConfigError> {
        match s.trim() {
            "nodelay" => Ok(Self::NoDelay),
            "delay" => Ok(Self::Delay { after: 0 }),
            other => other
                .strip_prefix("delay=")
                .and_then(|n| n.parse().ok())
                .map(|after| Self::Delay { after })
                .ok_or_else(|| RateLimitConfigError::Mode(s.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a limit is keyed by: `ip`, `identity`, `claim:NAME`, `header:NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeySpec {
    /// `ip`: the client address (IPv6 grouped by `ipv6_prefix_len`), as NGINX's
    /// `$binary_remote_addr`.
    #[default]
    ClientIp,
    /// `identity`: the authenticated subject; the limit does not apply to anonymous requests.
    Identity,
    /// `claim:NAME`: a claim of the verified token; the limit does not apply when it is absent.
    Claim(String),
    /// `header:NAME`: a request header's value; the limit does not apply when it is absent.
    Header(String),
}

impl FromStr for KeySpec {
    type Err = RateLimitConfigError;

    fn from_str(s: &str) -> Result<Self, RateLimitConfigError> {
        match s.split_once(':') {
            None if s == "ip" => Ok(Self::ClientIp),
            None if s == "identity" => Ok(Self::Identity),
            Some(("claim", c)) if !c.is_empty() => Ok(Self::Claim(c.to_owned())),
            Some(("header", h)) if !h.is_empty() => Ok(Self::Header(h.to_ascii_lowercase())),
            _ => Err(RateLimitConfigError::Key(s.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl RateLimitSection {
    /// Every quota of this config under the name it is counted by
    /// (`limit:<name>`, `plan:<name>`), sorted by name.
    pub fn quotas(&self) -> Vec<(String, Quota)> {
        let mut out: Vec<(String, Quota)> = self
            .limits
            .iter()
            .filter_map(|l| Some((format!("limit:{}", l.name), l.quota?)))
            .chain(
                self.plans
                    .iter()
                    .filter_map(|p| Some((format!("plan:{}", p.name), p.quota?))),
            )
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Cross-checks: unique names, known global names, sane values.
    pub fn validate(&self) -> Result<(), RateLimitConfigError> {
        let mut seen = std::collections::HashSet::new();
        for l in &self.limits {
            if !seen.insert(l.name.as_str()) {
                return Err(RateLimitConfigError::DuplicateLimit(l.name.clone()));
            }
            if !(1..=128).contains(&l.ipv6_prefix_len) {
                return Err(RateLimitConfigError::V6PrefixLen(l.name.clone()));
            }
            if l.max_keys == 0 {
                return Err(RateLimitConfigError::MaxKeysZero(l.name.clone()));
            }
            if l.rate.is_none() && l.quota.is_none() {
                return Err(RateLimitConfigError::LimitWithoutRateOrQuota(
                    l.name.clone(),
                ));
            }
            if l.rate.is_none() && (l.burst != 0 || l.mode != Mode::NoDelay) {
                return Err(RateLimitConfigError::BurstWithoutRate(l.name.clone()));
            }
            if l.shared && l.rate.is_none() {
                return Err(RateLimitConfigError::SharedWithoutRate(l.name.clone()));
            }
            if let Mode::Delay { after } = l.mode
                && after > l.burst
            {
                return Err(RateLimitConfigError::DelayExceedsBurst {
                    name: l.name.clone(),
                    after,
                    burst: l.burst,
                });
            }
        }
        if let Some(g) = self.global.iter().find(|g| !seen.contains(g.as_str())) {
            return Err(RateLimitConfigError::UnknownGlobal(g.clone()));
        }
        let mut plans = std::collections::HashSet::new();
        for p in &self.plans {
            if p.name.is_empty() || !plans.insert(p.name.as_str()) {
                return Err(RateLimitConfigError::PlanName(p.name.clone()));
            }
            if p.rate.is_none() && p.quota.is_none() {
                return Err(RateLimitConfigError::PlanWithoutRateOrQuota(p.name.clone()));
            }
            if p.rate.is_none() && p.burst != 0 {
                return Err(RateLimitConfigError::PlanBurstWithoutRate(p.name.clone()));
            }
        }
        if let Some(d) = &self.default_plan
            && !plans.contains(d.as_str())
        {
            return Err(RateLimitConfigError::UnknownDefaultPlan(d.clone()));
        }
        if self.quota_max_consumers == 0 {
            return Err(RateLimitConfigError::QuotaMaxConsumersZero);
        }
        Ok(())
    }
}
