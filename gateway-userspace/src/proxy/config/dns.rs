//! `[dns]`: how upstream targets given by name (`name:port`,
//! `srv:_service._proto.name`) are resolved: which nameservers (default
//! `/etc/resolv.conf`), how long an answer is trusted (the record TTL,
//! clamped to `min_ttl..=max_ttl`) and how long one query may take.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::duration::NonZeroSpan;

/// The `[dns]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawDns")]
pub struct DnsSection {
    /// Nameservers asked instead of those in `/etc/resolv.conf` (empty:
    /// the system's). Queried over UDP, and TCP for truncated answers.
    pub nameservers: Vec<SocketAddr>,
    /// Shortest time an answer is used before the name is looked up again
    /// (a record TTL below it is raised to it); also the wait before a
    /// failed lookup is retried.
    pub min_ttl: NonZeroSpan,
    /// Longest time an answer is used before the name is looked up again
    /// (a record TTL above it is lowered to it).
    pub max_ttl: NonZeroSpan,
    /// Time one query to one nameserver may take (resolv.conf `timeout`).
    pub timeout: NonZeroSpan,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            // The nameservers of /etc/resolv.conf (as NGINX needs a
            // `resolver` and Envoy's c-ares resolver reads resolv.conf).
            nameservers: Vec::new(),
            // 5 seconds at least between lookups of one name (Envoy's
            // dns_min_refresh_rate; its dns_refresh_rate is also 5 s).
            min_ttl: NonZeroSpan::from_secs(5),
            // 300 seconds at most (Envoy respect_dns_ttl = true follows the
            // TTL; NGINX `resolver valid=` overrides it; we follow the TTL
            // but re-check a long-lived answer every 5 minutes).
            max_ttl: NonZeroSpan::from_secs(300),
            // 5 seconds per query (glibc's resolv.conf default; NGINX
            // resolver_timeout is 30 s).
            timeout: NonZeroSpan::from_secs(5),
        }
    }
}

/// The section as written, checked into [`DnsSection`].
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawDns {
    nameservers: Vec<Nameserver>,
    min_ttl: NonZeroSpan,
    max_ttl: NonZeroSpan,
    timeout: NonZeroSpan,
}

impl Default for RawDns {
    fn default() -> Self {
        let d = DnsSection::default();
        Self {
            nameservers: Vec::new(),
            min_ttl: d.min_ttl,
            max_ttl: d.max_ttl,
            timeout: d.timeout,
        }
    }
}

/// A `[dns]` value that cannot work: the config's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    /// `min_ttl` above `max_ttl`.
    #[error("[dns] min_ttl ({min}) is longer than max_ttl ({max})")]
    TtlOrder {
        /// `min_ttl`.
        min: NonZeroSpan,
        /// `max_ttl`.
        max: NonZeroSpan,
    },
    /// A nameserver that is not an address (as written).
    #[error(
        "nameserver '{0}' is not an IP address with an optional port \
         (10.0.0.2, 10.0.0.2:5353, [2001:db8::53]:53)"
    )]
    Nameserver(String),
}

impl TryFrom<RawDns> for DnsSection {
    type Error = DnsConfigError;

    fn try_from(raw: RawDns) -> Result<Self, DnsConfigError> {
        if raw.min_ttl > raw.max_ttl {
            return Err(DnsConfigError::TtlOrder {
                min: raw.min_ttl,
                max: raw.max_ttl,
            });
        }
        Ok(Self {
            nameservers: raw.nameservers.into_iter().map(|n| n.0).collect(),
            min_ttl: raw.min_ttl,
            max_ttl: raw.max_ttl,
            timeout: raw.timeout,
        })
    }
}

/// `ip` (port 53) or `ip:port` (`[v6]:port`).
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Nameserver(SocketAddr);

impl TryFrom<String> for Nameserver {
    type Error = DnsConfigError;

    fn try_from(s: String) -> Result<Self, DnsConfigError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self(a));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self(SocketAddr::new(ip, 53)));
        }
        Err(DnsConfigError::Nameserver(s))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "gw.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("").unwrap();
        assert!(c.dns.nameservers.is_empty());
        assert_eq!(c.dns.min_ttl.as_secs(), 5);
        assert_eq!(c.dns.max_ttl.as_secs(), 300);
        let c = parse(
            "[dns]\nnameservers = [\"10.0.0.2\", \"127.0.0.1:5353\", \"[::1]:53\", \"::1\"]\nmin_ttl = \"1s\"\n",
        )
        .unwrap();
        let ns: Vec<String> = c.dns.nameservers.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            ns,
            ["10.0.0.2:53", "127.0.0.1:5353", "[::1]:53", "[::1]:53"]
        );
        assert_eq!(c.dns.min_ttl.as_secs(), 1);
        assert_eq!(c.dns.max_ttl.as_secs(), 300);
    }

    #[test]
    fn embedded_default_shows_the_defaults() {
        assert_eq!(Config::embedded_default().dns, super::DnsSection::default());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("[dns]\nnameservers = [\"dns.google\"]\n").unwrap_err();
        assert!(e.starts_with("gw.toml:2:"), "{e}");
        assert!(
            e.contains("nameserver 'dns.google' is not an IP address"),
            "{e}"
        );
        let e = parse("[dns]\nmin_ttl = \"10m\"\nmax_ttl = \"1m\"\n").unwrap_err();
        assert!(e.starts_with("gw.toml:1:"), "{e}");
        assert!(
            e.contains("min_ttl (10m) is longer than max_ttl (1m)"),
            "{e}"
        );
        let e = parse("[dns]\nmin_ttl = \"0s\"\n").unwrap_err();
        assert!(e.starts_with("gw.toml:2:"), "{e}");
        let e = parse("[dns]\nnameserver = []\n").unwrap_err();
        assert!(e.contains("unknown field `nameserver`"), "{e}");
    }
}
