//! `[xdp]`: the kernel fast path's section of the config file, and
//! [`LimitSpec`], the rate-with-burst that `[xdp.rate_limit]` and
//! `[escalation.throttle]` are written in.

#![forbid(unsafe_code)]

use std::{fmt, num::NonZeroU16, path::PathBuf};

use serde::Deserialize;

use crate::{duration::Span, net::Net};

/// The kernel fast path.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct XdpSection {
    /// Load and attach the XDP program. `false` runs without the kernel fast
    /// path (say so deliberately: a failed attach is otherwise fatal).
    pub enabled: bool,
    /// Interface to attach to.
    pub interface: String,
    /// `auto` (native, falling back to generic with a warning), `native`, `skb`.
    pub mode: XdpMode,
    /// bpffs directory where maps are pinned, so blocks and limits survive a
    /// restart. Maps live in `<pin_dir>/v<layout version>`.
    pub pin_dir: PathBuf,
    /// Destination ports the rate limits apply to. Traffic to other ports
    /// (SSH, the rest of the host) only meets the allow and block lists.
    pub protected_ports: Vec<NonZeroU16>,
    /// IPv6 sources share one bucket per prefix of this length.
    pub ipv6_prefix_len: V6PrefixLen,
    /// Per-source packet and SYN budgets at the kernel (`[xdp.rate_limit]`).
    pub rate_limit: RateLimitSection,
    /// Sources that are never dropped (checked first).
    pub allow: Vec<Net>,
    /// Sources that are always dropped (unless allowlisted).
    pub block: Vec<Net>,
    /// How often expired blocks are removed from the maps.
    pub sweep_interval: Span,
    /// Detach the XDP program when the gateway exits. Off by default: the
    /// link is pinned and the filter keeps enforcing the pinned maps while
    /// no gateway runs (restarts, upgrades, crashes); the next start adopts
    /// it. `gateway xdp detach` removes it by hand.
    pub detach_on_exit: bool,
}

/// How the XDP program is attached (`[xdp] mode`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode with a warning.
    Auto,
    /// Driver mode only; attaching fails on a driver without XDP support.
    Native,
    /// Generic mode: works on every interface, after the kernel built an skb (slower).
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        })
    }
}

/// A value of `[xdp]` (or a limit given to `gateway limit`) that cannot
/// work: the writer's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdpValueError {
    /// `ipv6_prefix_len` outside 1..=128.
    #[error("ipv6_prefix_len must be 1-128, not {0}")]
    V6PrefixLen(u8),
    /// A rate with a burst of 0: nothing could ever pass.
    #[error("burst must be at least 1 when rate is {rate} (0 means unlimited)")]
    ZeroBurst {
        /// The rate written, per second.
        rate: u32,
    },
}

/// An IPv6 prefix length, 1..=128.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "u8")]
pub struct V6PrefixLen(u8);

impl V6PrefixLen {
    /// The prefix length, 1..=128.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for V6PrefixLen {
    type Error = XdpValueError;

    fn try_from(v: u8) -> Result<Self, XdpValueError> {
        if (1..=128).contains(&v) {
            Ok(Self(v))
        } else {
            Err(XdpValueError::V6PrefixLen(v))
        }
    }
}

/// Per-source token buckets at the kernel, for the protected ports.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Off: the XDP program only applies the allow and block lists.
    pub enabled: bool,
    /// Packets per second per source.
    pub pps: LimitSpec,
    /// New TCP connections (SYN) per second per source.
    pub syn: LimitSpec,
}

/// A rate with its burst. `rate = 0` means unlimited.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawLimit")]
pub struct LimitSpec {
    /// Events per second per source; 0 means unlimited.
    pub rate: u32,
    /// Events allowed back to back above the rate; at least 1 when `rate > 0`.
    pub burst: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate: u32,
    burst: Option<u32>,
}

impl TryFrom<RawLimit> for LimitSpec {
    type Error = XdpValueError;

    fn try_from(raw: RawLimit) -> Result<Self, XdpValueError> {
        LimitSpec::new(raw.rate, raw.burst.unwrap_or(raw.rate))
    }
}

impl LimitSpec {
    /// A rate and burst; an error when `rate > 0` and `burst == 0` (nothing could ever pass).
    pub fn new(rate: u32, burst: u32) -> Result<Self, XdpValueError> {
        if rate > 0 && burst == 0 {
            return Err(XdpValueError::ZeroBurst { rate });
        }
        Ok(Self { rate, burst })
    }

    /// No limit (`rate = 0`).
    pub const UNLIMITED: LimitSpec = LimitSpec { rate: 0, burst: 0 };
}

impl fmt::Display for LimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rate == 0 {
            f.write_str("unlimited")
        } else {
            write!(f, "{}/s burst {}", self.rate, self.burst)
        }
    }
}

impl Default for XdpSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interface: "lo".to_owned(),
            mode: XdpMode::Auto,
            pin_dir: PathBuf::from("/sys/fs/bpf/gateway"),
            protected_ports: Vec::new(),
            ipv6_prefix_len: V6PrefixLen(64),
            rate_limit: RateLimitSection::default(),
            allow: Vec::new(),
            block: Vec::new(),
            sweep_interval: Span::from_secs(1),
            detach_on_exit: false,
        }
    }
}

impl Default for RateLimitSection {
    fn default() -> Self {
        Self {
            enabled: true,
            // 2,000 packets/s with a 4,000 burst: far above one browser or API
            // client, far below a flood.
            pps: LimitSpec {
                rate: 2_000,
                burst: 4_000,
            },
            // 100 new connections/s with a 200 burst per source.
            syn: LimitSpec {
                rate: 100,
                burst: 200,
            },
        }
    }
}
