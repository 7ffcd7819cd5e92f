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
