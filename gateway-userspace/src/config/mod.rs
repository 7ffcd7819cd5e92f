//! The gateway's configuration: one TOML file parsed into typed structs.
//! Every value is checked while parsing, so an error points at the file,
//! line and column of the offending value and says what is wrong. A config
//! that fails to load changes nothing: the running gateway keeps the old one.
//!
//! `gateway print-default-config` prints the embedded default with every knob.
//!
//! This module only aggregates: each section's types live in its engine's
//! `config` module (`xdp::config`, `proxy::config`, …), which imports
//! neither this module nor an engine; the checks that span sections are in
//! `validate`, the error type in [`error`]. The module graph test
//! (`tests/module_graph.rs`) keeps it that way.

#![forbid(unsafe_code)]

pub mod error;
mod validate;

use std::path::Path;

use serde::Deserialize;

pub use self::error::{ConfigError, line_col};
// Re-exported for the engines and the tests crate, which name them here.
pub use crate::{
    admin::config::{AdminSection, DEFAULT_ADMIN_SOCKET},
    xdp::config::{LimitSpec, RateLimitSection, V6PrefixLen, XdpMode, XdpSection},
};
use crate::{
    auth::config::AuthSection,
    cluster::config::ClusterSection,
    escalate::config::EscalationSection,
    net::Net,
    observe::config::{LogSection, ObservabilitySection},
    proxy::config::{
        Demo, DnsSection, Limits, Listener, Route, SecurityHeaders, TlsSection, Upstream,
        client_ip::ClientIpHeader,
    },
    ratelimit::config::RateLimitSection as L7RateLimitSection,
    runtime::RuntimeSection,
    validate::config::ValidationSection,
};

/// The embedded default configuration (`cargo xtask run` uses it).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
    pub rate_limit: L7RateLimitSection,
    /// How L7 offences escalate into XDP blocks, see `escalate`.
    pub escalation: EscalationSection,
    /// Authentication providers and policies (`docs/auth.md`).
    pub auth: AuthSection,
    /// Sockets the proxy accepts client connections on.
    pub listeners: Vec<Listener>,
    /// Where requests go; the most specific match wins.
    pub routes: Vec<Route>,
    /// Named pools of upstream targets.
    pub upstreams: Vec<Upstream>,
    /// How upstream targets given by name are resolved.
    pub dns: DnsSection,
    /// Request size, time and concurrency limits of the proxy (`[limits]`).
    pub limits: Limits,
    /// Certificates for TLS listeners (`[tls]`).
    pub tls: TlsSection,
    /// Peers whose X-Forwarded-For, X-Request-Id and PROXY protocol header
    /// are believed. Everyone else is the client.
    pub trusted_proxies: Vec<Net>,
    /// The header a trusted proxy's client chain is read from:
    /// `"x-forwarded-for"` or `"forwarded"` (RFC 7239). Never both.
    pub client_ip_header: ClientIpHeader,
    /// Headers added to every response (`[security_headers]`); routes may override them.
    pub security_headers: SecurityHeaders,
    /// The built-in JSON echo upstream (`[demo]`), off by default.
    pub demo: Demo,
    /// Per-route request validation (`docs/validation.md`).
    pub validation: ValidationSection,
    /// The access log (`docs/operations.md`).
    pub log: LogSection,
    /// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
    pub observability: ObservabilitySection,
    /// Cluster mode: shared limits and blocklists through Redis
    /// (`docs/cluster.md`). Absent: this node stands alone.
    pub cluster: Option<ClusterSection>,
    /// Worker threads (`docs/operations.md`); read at start only.
    pub runtime: RuntimeSection,
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
            dns: DnsSection::default(),
            limits: Limits::default(),
            tls: TlsSection::default(),
            // No trusted proxies: the socket peer is always the client.
            trusted_proxies: Vec::new(),
            // X-Forwarded-For, as NGINX's real_ip_header and Envoy default to.
            client_ip_header: ClientIpHeader::XForwardedFor,
            security_headers: SecurityHeaders::default(),
            demo: Demo::default(),
            // No L7 limits unless the file declares some.
            rate_limit: L7RateLimitSection::default(),
            escalation: EscalationSection::default(),
            // No auth providers or policies unless the file declares some.
            auth: AuthSection::default(),
            // No validation rules unless the file declares some.
            validation: ValidationSection::default(),
            // Access log as JSON lines on stdout.
            log: LogSection::default(),
            // No admin HTTP listener unless the file turns it on.
            observability: ObservabilitySection::default(),
            // One node on its own.
            cluster: None,
            // One worker thread per available CPU.
            runtime: RuntimeSection::default(),
        }
    }
}

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
        validate::dashboard(&config, text, origin)?;
        validate::proxy(&mut config, text, origin)?;
        Ok(config)
    }
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
