//! The response headers of rate limiting: `Retry-After` on 429, and the
//! IETF `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers) on every limited response:
//! `RateLimit-Policy: "per-ip";q=10;w=1` and `RateLimit: "per-ip";r=7;t=1`.

#![forbid(unsafe_code)]

use std::time::Duration;

use super::{Decision, Limiter};

/// One `RateLimit-Policy` list member.
pub fn policy_item(limiter: &Limiter) -> String {
    let (per_window, window) = limiter.config.rate.per_window();
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
