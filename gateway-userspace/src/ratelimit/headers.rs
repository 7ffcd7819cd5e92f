//! The response headers of rate limiting: `Retry-After` on 429, and the
//! IETF `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers) on every limited response:
//! `RateLimit-Policy: "per-ip";q=10;w=1` and `RateLimit: "per-ip";r=7;t=1`.

#![forbid(unsafe_code)]

use std::time::Duration;

use super::{Decision, Limiter, quota_store::QuotaDecision};

/// One `RateLimit-Policy` list member.
pub fn policy_item(limiter: &Limiter) -> String {
    let (per_window, window) = limiter.rate.per_window();
    let quota = per_window + u64::from(limiter.config.burst);
    format!(
        "\"{}\";q={quota};w={window}",
        sf_string(&limiter.config.name)
    )
}

/// One `RateLimit` list member, or `None` when the limit did not apply.
pub fn state_item(limiter: &Limiter, decision: &Decision) -> Option<String> {
    let (remaining, reset) = match *decision {
        Decision::Allow { remaining, reset }
        | Decision::Delay {
            remaining, reset, ..
        } => (remaining, reset),
        Decision::Reject { reset, .. } => (0, reset),
        Decision::NotApplicable => return None,
    };
    Some(format!(
        "\"{}\";r={remaining};t={}",
        sf_string(&limiter.config.name),
        ceil_secs(reset)
    ))
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
fn sf_string(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}
