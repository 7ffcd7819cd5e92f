//! `[escalation]`: how L7 offences turn into kernel blocks.

#![forbid(unsafe_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{duration::Span, xdp::config::LimitSpec};

/// `[escalation]`: L7 offences earn a source points (`weights`); reaching `threshold` within
/// `window` blocks or throttles it in XDP for the next TTL of `ttl_ladder`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationSection {
    /// Off: offences are not counted and nothing escalates (default on).
    pub enabled: bool,
    /// Points are summed per source over this window, then start again.
    pub window: Span,
    /// Points within one window that escalate a source.
    pub threshold: u32,
    /// Points each kind of offence is worth.
    pub weights: Weights,
    /// Block TTL for the 1st, 2nd, ... escalation of a source; the last one
    /// repeats.
    pub ttl_ladder: TtlLadder,
    /// After this long without escalation a source's offence count resets.
    pub forget_after: Span,
    /// `block` (drop every packet) or `throttle` (tighten the source's XDP
    /// packet-rate override to `throttle` for the TTL).
    pub action: Action,
    /// The XDP budgets a throttled source gets for its TTL (`action = "throttle"`).
    pub throttle: ThrottleSpec,
    /// IPv6 offenders are escalated as the prefix of this length (a client
    /// owns a whole /64 and can rotate addresses inside it).
    pub ipv6_prefix_len: u8,
    /// Sources tracked at most (memory bound); idle ones are evicted first.
    pub max_sources: usize,
    /// Keep the escalation state (offence counts, TTL-ladder position, L7
    /// blocks, throttle expiries) across restarts in `state_file`
    /// (`escalate::persist`, docs/operations.md).
    pub persist: bool,
    /// Where the state is saved; empty: `escalation.state` in the admin
    /// socket's directory (`/run/gateway`, which lives until a reboot, as
    /// the pinned XDP maps do).
    pub state_file: PathBuf,
}

/// Points per offence.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// A request rejected (429) by an L7 rate limit (default 1).
    pub rate_limited: u32,
    /// A failed authentication: bad token, key or password (default 10).
    pub auth_failure: u32,
    /// A request that failed request validation (default 5).
    pub validation_failure: u32,
    /// A request the HTTP parser or the request checks refused: garbage, smuggling attempts
    /// (default 20).
    pub malformed_http: u32,
    /// A size or time limit broken: slow headers or body, oversize headers or body (default 20).
    pub limit_violation: u32,
}

/// What escalation does to a source in XDP.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Drop every packet from it for the TTL.
    Block,
    /// Give it a per-source override of `[escalation.throttle]` budgets for the TTL.
    Throttle,
}

/// The per-source XDP budgets of a throttled source (default 20 packets/s burst 40, 2 SYN/s burst
/// 4).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleSpec {
    /// Packets per second.
    pub pps: LimitSpec,
    /// New TCP connections (SYN) per second.
    pub syn: LimitSpec,
}

impl Default for EscalationSection {
    fn default() -> Self {
        Self {
            enabled: true,
            // One minute of memory per source.
            window: Span::from_secs(60),
            // 100 points/minute: 100 rate-limit rejections, or 10 failed
            // logins, or 5 malformed requests.
            threshold: 100,
            weights: Weights::default(),
            // 1 minute, then 10 minutes, then 1 hour for each repeat.
            ttl_ladder: TtlLadder(vec![
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3600),
            ]),
            // A day of good behaviour resets the ladder.
            forget_after: Span::from_secs(86_400),
            action: Action::Block,
            throttle: ThrottleSpec::default(),
            ipv6_prefix_len: 64,
            // 100,000 sources of ~64 bytes: a few MiB.
            max_sources: 100_000,
            // On: a restart must not reset repeat offenders to the first rung.
            persist: true,
            // Empty: next to the admin socket.
            state_file: PathBuf::new(),
        }
    }
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            // A 429: cheap for us, but a signal.
            rate_limited: 1,
            // A failed login: brute force looks like this.
            auth_failure: 10,
            // A request that fails input validation.
            validation_failure: 5,
            // Garbage HTTP, request smuggling attempts.
            malformed_http: 20,
            // Slowloris, oversize headers or bodies.
            limit_violation: 20,
        }
    }
}

impl Default for ThrottleSpec {
    fn default() -> Self {
        Self {
            // 20 packets/s, burst 40: enough to read an error page.
            pps: LimitSpec {
                rate: 20,
                burst: 40,
            },
            // 2 new connections/s, burst 4.
            syn: LimitSpec { rate: 2, burst: 4 },
        }
    }
}

/// `ttl_ladder`: at least one TTL, each at least 1 s; dereferences to the
/// TTLs in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlLadder(Vec<Duration>);

impl From<Vec<Duration>> for TtlLadder {
    /// The rungs as given (tests; the config file's are checked).
    fn from(rungs: Vec<Duration>) -> Self {
        Self(rungs)
    }
}

impl std::ops::Deref for TtlLadder {
    type Target = [Duration];

    fn deref(&self) -> &[Duration] {
        &self.0
    }
}

/// A value of `[escalation]` that cannot work: the config's to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EscalationConfigError {
    /// A `ttl_ladder` entry is not a duration.
    #[error(transparent)]
    Duration(#[from] crate::duration::DurationError),
    /// A `ttl_ladder` entry is shorter than a second (the entry as written).
    #[error("ttl_ladder entry '{0}' must be at least 1s")]
    RungUnderOneSecond(String),
    /// `threshold = 0`: every source would be blocked at once.
    #[error("[escalation] threshold must be at least 1")]
    ThresholdZero,
    /// `ipv6_prefix_len` outside 1..=128.
    #[error("[escalation] ipv6_prefix_len must be 1-128")]
    V6PrefixLen,
    /// `window` is zero: offences could never add up.
    #[error("[escalation] window must be at least 1s")]
    WindowZero,
}

impl<'de> Deserialize<'de> for TtlLadder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        if raw.is_empty() {
            return Err(serde::de::Error::custom(
                "ttl_ladder needs at least one duration",
            ));
        }
        raw.iter()
            .map(|s| {
                let d = crate::duration::parse(s)?;
                if d.as_secs() == 0 {
                    return Err(EscalationConfigError::RungUnderOneSecond(s.clone()));
                }
                Ok(d)
            })
            .collect::<Result<_, EscalationConfigError>>()
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl EscalationSection {
    /// The state file to use with the admin socket at `admin_socket`, or
    /// `None` when the state is not kept (`persist = false`, or escalation
    /// disabled).
    pub fn state_path(&self, admin_socket: &Path) -> Option<PathBuf> {
        if !self.persist || !self.enabled {
            return None;
        }
        if !self.state_file.as_os_str().is_empty() {
            return Some(self.state_file.clone());
        }
        let dir = admin_socket
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(dir.join("escalation.state"))
    }

    /// Checks what serde cannot: `threshold >= 1`, `ipv6_prefix_len` in 1..=128, `window >= 1s`;
    /// the error names the setting.
    pub fn validate(&self) -> Result<(), EscalationConfigError> {
        if self.threshold == 0 {
            return Err(EscalationConfigError::ThresholdZero);
        }
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return Err(EscalationConfigError::V6PrefixLen);
        }
        if self.window.is_zero() {
            return Err(EscalationConfigError::WindowZero);
        }
        Ok(())
    }
}
