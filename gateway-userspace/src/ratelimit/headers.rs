//! The response headers of rate limiting: `Retry-After` on 429, and the
//! IETF `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers) on every limited response:
//! `RateLimit-Policy: "per-ip";q=10;w=1` and `RateLimit: "per-ip";r=7;t=1`.

#![forbid(unsafe_code)]

use std::{fmt::Write as _, time::Duration};

use http::HeaderValue;

use super::{Decision, LimitConfig, Limiter, Rate, quota_store::QuotaDecision};

/// A structured-field list (`a, b, c`) built member by member: one
/// allocation for the joined text, none when the only member is a value
/// made at configuration time (the `RateLimit-Policy` of one limit).
#[derive(Default)]
pub struct FieldList {
    /// The only member so far, when it came precomputed.
    only: Option<HeaderValue>,
    /// The joined members once there is more than one (or one that was
    /// not precomputed).
    text: String,
}

impl FieldList {
    /// Appends a member made at configuration time.
    pub fn push_value(&mut self, v: &HeaderValue) {
        if self.only.is_none() && self.text.is_empty() {
            self.only = Some(v.clone());
        } else {
            // Made from a `String` at build time: always visible ASCII.
            self.push_str(v.to_str().unwrap_or_default());
        }
    }

    /// Appends a member written by `write` (into the joined text).
    pub fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        self.separate();
        write(&mut self.text);
    }

    /// Appends a member given as text.
    pub fn push_str(&mut self, member: &str) {
        self.push_with(|t| t.push_str(member));
    }

    fn separate(&mut self) {
        if let Some(only) = self.only.take() {
            self.text.push_str(only.to_str().unwrap_or_default());
        }
        if !self.text.is_empty() {
            self.text.push_str(", ");
        }
    }

    /// Whether no member was pushed.
    pub fn is_empty(&self) -> bool {
        self.only.is_none() && self.text.is_empty()
    }

    /// The field value, or `None` when empty (or, impossibly for the
    /// members above, not a valid field value).
    pub fn into_value(self) -> Option<HeaderValue> {
        match self.only {
            Some(v) => Some(v),
            None if self.text.is_empty() => None,
            // `from_maybe_shared` validates without copying the text.
            None => HeaderValue::from_maybe_shared(bytes::Bytes::from(self.text)).ok(),
        }
    }
}

/// One `RateLimit-Policy` list member (made once per limiter:
/// [`Limiter::policy_value`]).
pub fn policy_item(limiter: &Limiter) -> String {
    policy_member(limiter.sf_name(), &limiter.config, &limiter.rate)
}

/// The `RateLimit-Policy` member of a limit named `sf_name` (already a
/// structured-field string body): `"per-ip";q=10;w=1`.
pub fn policy_member(sf_name: &str, config: &LimitConfig, rate: &Rate) -> String {
    let (per_window, window) = rate.per_window();
    let quota = per_window + u64::from(config.burst);
    format!("\"{sf_name}\";q={quota};w={window}")
}

/// One `RateLimit` list member, or `None` when the limit did not apply.
pub fn state_item(limiter: &Limiter, decision: &Decision) -> Option<String> {
    let (remaining, reset) = applied(decision)?;
    let mut out = String::new();
    write_state_item(&mut out, limiter, remaining, reset);
    Some(out)
}

/// Appends the `RateLimit` member of `limiter` to `out`: `remaining`
/// requests, `reset` until the bucket is whole (see [`applied`]).
pub fn write_state_item(out: &mut String, limiter: &Limiter, remaining: u32, reset: Duration) {
    let _ = write!(
        out,
        "\"{}\";r={remaining};t={}",
        limiter.sf_name(),
        ceil_secs(reset)
    );
}

/// The remaining requests and the time to a whole bucket, when the limit applied.
pub fn applied(decision: &Decision) -> Option<(u32, Duration)> {
    match *decision {
        Decision::Allow { remaining, reset }
        | Decision::Delay {
            remaining, reset, ..
        } => Some((remaining, reset)),
        Decision::Reject { reset, .. } => Some((0, reset)),
        Decision::NotApplicable => None,
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after(wait: Duration) -> String {
    ceil_secs(wait).max(1).to_string()
}

/// The `RateLimit-Policy` member of a quota: `"plan:gold";q=10000;w=86400`
/// (`w`: this window's length in seconds; a month's varies).
pub fn quota_policy_item(name: &str, d: &QuotaDecision) -> String {
    format!("\"{}\";q={};w={}", sf_string(name), d.limit, d.window_secs)
}

/// The `RateLimit` member of a quota: `"plan:gold";r=4;t=3600` (`t`:
/// seconds until the window ends and the quota is whole again).
pub fn quota_state_item(name: &str, d: &QuotaDecision) -> String {
    format!(
        "\"{}\";r={};t={}",
        sf_string(name),
        d.remaining(),
        d.reset_secs
    )
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A structured-field string body: only printable ASCII, `"` and `\` escaped.
pub fn sf_string(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}
