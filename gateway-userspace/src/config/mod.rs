//! The gateway's configuration: one TOML file parsed into typed structs.
//! Every value is checked while parsing, so an error points at the file,
//! line and column of the offending value and says what is wrong. A config
//! that fails to load changes nothing: the running gateway keeps the old one.
//!
//! `gateway print-default-config` prints the embedded default with every knob.

#![forbid(unsafe_code)]

use std::{
    fmt,
    num::NonZeroU16,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    net::Net,
    proxy::config::{Demo, Limits, Listener, Route, SecurityHeaders, TlsSection, Upstream},
};

/// The embedded default configuration (`cargo xtask run` uses it).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A config that could not be loaded: where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file's path as given.
        path: String,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The config file's path as given.
        path: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong, for the operator.
        message: String,
    },
    /// Values are individually fine but do not fit together.
    #[error("{path}: {message}")]
    Inconsistent {
        /// The config file's path as given.
        path: String,
        /// Which values clash and why.
        message: String,
    },
}

/// The whole config file: every section, each with its defaults (`gateway print-default-config`).
/// Parsed by `Config::load`/`Config::parse`, which also run the cross-section checks.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The kernel fast path (`[xdp]`).
    pub xdp: XdpSection,
    /// The admin Unix socket (`[admin]`).
    pub admin: AdminSection,
    /// L7 rate limits (`[[rate_limit.limits]]`), see `ratelimit`.
    pub rate_limit: crate::ratelimit::RateLimitSection,
    /// How L7 offences escalate into XDP blocks, see `escalate`.
    pub escalation: crate::escalate::EscalationSection,
    /// Authentication providers and policies (`docs/auth.md`).
    pub auth: crate::auth::AuthSection,
    /// Sockets the proxy accepts client connections on.
    pub listeners: Vec<Listener>,
    /// Where requests go; the most specific match wins.
    pub routes: Vec<Route>,
    /// Named pools of upstream targets.
    pub upstreams: Vec<Upstream>,
    /// How upstream targets given by name are resolved.
    pub dns: crate::proxy::config::DnsSection,
    /// Request size, time and concurrency limits of the proxy (`[limits]`).
    pub limits: Limits,
    /// Certificates for TLS listeners (`[tls]`).
    pub tls: TlsSection,
    /// Peers whose X-Forwarded-For, X-Request-Id and PROXY protocol header
    /// are believed. Everyone else is the client.
    pub trusted_proxies: Vec<Net>,
    /// The header a trusted proxy's client chain is read from:
    /// `"x-forwarded-for"` or `"forwarded"` (RFC 7239). Never both.
    pub client_ip_header: crate::proxy::client_ip::ClientIpHeader,
    /// Headers added to every response (`[security_headers]`); routes may override them.
    pub security_headers: SecurityHeaders,
    /// The built-in JSON echo upstream (`[demo]`), off by default.
    pub demo: Demo,
    /// Per-route request validation (`docs/validation.md`).
    pub validation: crate::validate::ValidationSection,
    /// The access log (`docs/operations.md`).
    pub log: crate::observe::LogSection,
    /// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
    pub observability: crate::observe::ObservabilitySection,
    /// Cluster mode: shared limits and blocklists through Redis
    /// (`docs/cluster.md`). Absent: this node stands alone.
    pub cluster: Option<crate::cluster::ClusterSection>,
    /// Worker threads (`docs/operations.md`); read at start only.
    pub runtime: crate::runtime::RuntimeSection,
}

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
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub sweep_interval: Duration,
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
    type Error = String;

    fn try_from(v: u8) -> Result<Self, String> {
        if (1..=128).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("ipv6_prefix_len must be 1-128, not {v}"))
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
    type Error = String;

    fn try_from(raw: RawLimit) -> Result<Self, String> {
        LimitSpec::new(raw.rate, raw.burst.unwrap_or(raw.rate))
    }
}

impl LimitSpec {
    /// A rate and burst; an error when `rate > 0` and `burst == 0` (nothing could ever pass).
    pub fn new(rate: u32, burst: u32) -> Result<Self, String> {
        if rate > 0 && burst == 0 {
            return Err(format!(
                "burst must be at least 1 when rate is {rate} (0 means unlimited)"
            ));
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

/// The admin Unix socket the `gateway` CLI talks to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Socket path; created with mode 0600 (root only).
    pub socket: PathBuf,
}

#[allow(
    clippy::derivable_impls,
    reason = "hand-written so each default carries its comment (STYLE.md)"
)]
impl Default for Config {
    fn default() -> Self {
        Self {
            xdp: XdpSection::default(),
            admin: AdminSection::default(),
            // No listeners: the proxy is off unless the file declares some.
            listeners: Vec::new(),
            // No routes: every request gets 404.
            routes: Vec::new(),
            // No pools.
            upstreams: Vec::new(),
            // /etc/resolv.conf, answers kept for their TTL within 5 s..300 s.
            dns: crate::proxy::config::DnsSection::default(),
            limits: Limits::default(),
            tls: TlsSection::default(),
            // No trusted proxies: the socket peer is always the client.
            trusted_proxies: Vec::new(),
            // X-Forwarded-For, as NGINX's real_ip_header and Envoy default to.
            client_ip_header: crate::proxy::client_ip::ClientIpHeader::XForwardedFor,
            security_headers: SecurityHeaders::default(),
            demo: Demo::default(),
            // No L7 limits unless the file declares some.
            rate_limit: crate::ratelimit::RateLimitSection::default(),
            escalation: crate::escalate::EscalationSection::default(),
            // No auth providers or policies unless the file declares some.
            auth: crate::auth::AuthSection::default(),
            // No validation rules unless the file declares some.
            validation: crate::validate::ValidationSection::default(),
            // Access log as JSON lines on stdout.
            log: crate::observe::LogSection::default(),
            // No admin HTTP listener unless the file turns it on.
            observability: crate::observe::ObservabilitySection::default(),
            // One node on its own.
            cluster: None,
            // One worker thread per available CPU.
            runtime: crate::runtime::RuntimeSection::default(),
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
            sweep_interval: Duration::from_secs(1),
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

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
        }
    }
}

/// Where the CLI looks for the running gateway unless told otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/gateway/admin.sock";

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Self::parse(DEFAULT_TOML, "<embedded default>")
            .expect("the embedded default config is valid")
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: origin.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validation.set_source(origin, text);
        config.validate(origin)?;
        crate::observe::config::validate_dashboard(&config.observability, text, origin)?;
        crate::proxy::config::validate_and_resolve(&mut config, text, origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Inconsistent {
            path: origin.to_owned(),
            message,
        };
        if self.xdp.enabled && self.xdp.interface.trim().is_empty() {
            return Err(bad(
                "[xdp] interface is empty; name the interface to attach to, or set enabled = false"
                    .into(),
            ));
        }
        self.rate_limit.validate().map_err(bad)?;
        self.escalation.validate().map_err(bad)?;
        if let Some(c) = &self.cluster {
            c.validate().map_err(bad)?;
        }
        for l in self.rate_limit.limits.iter().filter(|l| l.shared) {
            if self.cluster.is_none() {
                return Err(bad(format!(
                    "rate limit '{}' is shared = true but there is no [cluster] section; \
                     add [cluster] redis_url = \"redis://...\" or drop shared",
                    l.name
                )));
            }
            if l.mode != crate::ratelimit::Mode::NoDelay {
                return Err(bad(format!(
                    "rate limit '{}': shared limits support mode = \"nodelay\" only",
                    l.name
                )));
            }
        }
        for (provider, keys) in &self.auth.api_keys {
            if let Some((key, plan)) = keys.keys.iter().find_map(|k| {
                let plan = k.plan.as_deref()?;
                (!self.rate_limit.plans.iter().any(|p| p.name == plan)).then_some((&k.name, plan))
            }) {
                return Err(bad(format!(
                    "[auth.api_keys.{provider}] key '{key}' names plan '{plan}', which no \
                     [[rate_limit.plans]] entry defines"
                )));
            }
        }
        if let Some(both) = self.xdp.allow.iter().find(|n| self.xdp.block.contains(n)) {
            return Err(bad(format!(
                "[xdp] {both} is in both allow and block; the allowlist would win, remove one"
            )));
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded_default();
        assert!(c.xdp.enabled);
        assert!(c.xdp.allow.contains(&"127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
    }

    fn err(text: &str) -> String {
        Config::parse(text, "gw.toml").unwrap_err().to_string()
    }

    #[test]
    fn bad_address_names_file_line_and_problem() {
        let e = err("[xdp]\ninterface = \"lo\"\nblock = [\"10.0.0.0/33\"]\n");
        assert!(e.starts_with("gw.toml:3:"), "{e}");
        assert!(e.contains("out of range for IPv4"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = err("[xdp]\ninterfce = \"lo\"\n");
        assert!(e.starts_with("gw.toml:2:"), "{e}");
        assert!(e.contains("unknown field `interfce`"), "{e}");
    }

    #[test]
    fn zero_burst_and_bad_mode_and_port() {
        let e = err("[xdp.rate_limit]\npps = { rate = 10, burst = 0 }\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("burst must be at least 1"),
            "{e}"
        );
        let e = err("[xdp]\nmode = \"fast\"\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("unknown variant `fast`"),
            "{e}"
        );
        let e = err("[xdp]\nprotected_ports = [80, 70000]\n");
        assert!(e.starts_with("gw.toml:2:"), "{e}");
        let e = err("[xdp]\nipv6_prefix_len = 0\n");
        assert!(e.contains("ipv6_prefix_len must be 1-128"), "{e}");
    }

    #[test]
    fn burst_defaults_to_rate() {
        let c = Config::parse("[xdp.rate_limit]\npps = { rate = 50 }\n", "t").unwrap();
        assert_eq!(
            c.xdp.rate_limit.pps,
            LimitSpec {
                rate: 50,
                burst: 50
            }
        );
    }

    #[test]
    fn allow_and_block_overlap_is_rejected() {
        let e = err("[xdp]\nallow = [\"10.0.0.1\"]\nblock = [\"10.0.0.1\"]\n");
        assert!(e.contains("in both allow and block"), "{e}");
    }
}
