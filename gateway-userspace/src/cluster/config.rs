//! `[cluster]`: where the shared Redis is and how this node talks to it.

#![forbid(unsafe_code)]

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::duration::Span;

/// `[cluster]`: shared rate limits and blocklists through one Redis (`docs/cluster.md`). Absent:
/// the node stands alone.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `redis://[user:password@]host:port/db`, `rediss://…` (TLS) or
    /// `redis+unix:///path/to/redis.sock`.
    pub redis_url: String,
    /// This node's name in published blocks and logs (default: host name).
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Prefix of every key and channel, so several gateway clusters can
    /// share one Redis.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// ACL user name (overrides one in the URL).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the Redis password (overrides one in the URL); one
    /// trailing newline is ignored. Keeps the secret out of the config.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle to verify a `rediss://` server with, instead of the
    /// system roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for Redis servers that require
    /// mutual TLS (`tls-auth-clients yes`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`; the two go together.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Longest a request waits for Redis before it is decided by the local
    /// limit instead (fail-open for limits).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Span,
    /// How long a node may hold tokens leased from a shared limit; also
    /// sets the lease size (rate × lease) and the overshoot bound.
    #[serde(default = "default_lease")]
    pub lease: Span,
    /// Period of the full blocklist reconciliation with Redis (events keep
    /// nodes in step between two; this catches anything missed).
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Span,
    /// First reconnect delay after Redis is lost; doubles up to 2 s.
    #[serde(default = "default_retry_interval")]
    pub retry_interval: Span,
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

fn default_prefix() -> String {
    "gateway".to_owned()
}

fn default_command_timeout() -> Span {
    Span::from_millis(50)
}

fn default_lease() -> Span {
    Span::from_millis(50)
}

fn default_sync_interval() -> Span {
    Span::from_secs(30)
}

fn default_retry_interval() -> Span {
    Span::from_millis(500)
}

/// A value of `[cluster]` that cannot work: the config's to fix. The texts
/// never carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// `redis_url` is not a `redis://`, `rediss://` or `redis+unix://` URL
    /// (the URL with its password replaced).
    #[error("[cluster] redis_url '{0}' must start with redis://, rediss:// or redis+unix://")]
    Scheme(String),
    /// `redis_url` turns certificate checks off.
    #[error(
        "[cluster] redis_url ends in #insecure, which turns off TLS certificate checks; \
         give the server's CA in tls_ca_file instead"
    )]
    Insecure,
    /// `node_id` is empty, too long or has other characters (as written).
    #[error("[cluster] node_id '{0}' must be 1-64 letters, digits, '-', '_' or '.'")]
    NodeId(String),
    /// `key_prefix` is empty or has whitespace.
    #[error("[cluster] key_prefix must be non-empty, without spaces")]
    KeyPrefix,
    /// Only one of `tls_cert_file` and `tls_key_file` is set.
    #[error("[cluster] tls_cert_file and tls_key_file go together")]
    CertWithoutKey,
    /// `tls_*` files with a plain-text URL.
    #[error("[cluster] tls_* files need a rediss:// URL")]
    TlsWithoutRediss,
    /// A timeout or interval outside its range.
    #[error(
        "[cluster] {name} must be between {} and {}",
        humantime::format_duration(*.min),
        humantime::format_duration(*.max)
    )]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// The least it may be.
        min: Duration,
        /// The most it may be.
        max: Duration,
    },
}

impl ClusterSection {
    /// Checks what serde cannot; the error names the setting (a password in
    /// the URL is redacted): the URL scheme, no `#insecure`, a `node_id` of
    /// 1-64 `[A-Za-z0-9._-]`, a `key_prefix` without spaces, the client
    /// certificate and key together, `tls_*` files only with `rediss://`, and
    /// the timeouts and intervals within their ranges.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        let url = self.redis_url.trim();
        let scheme = url.split("://").next().unwrap_or_default();
        if !["redis", "rediss", "redis+unix", "unix"].contains(&scheme) || !url.contains("://") {
            return Err(ClusterConfigError::Scheme(redact_url(url)));
        }
        if url.contains("#insecure") {
            return Err(ClusterConfigError::Insecure);
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ClusterConfigError::NodeId(self.node_id.clone()));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err(ClusterConfigError::KeyPrefix);
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ClusterConfigError::CertWithoutKey);
        }
        let tls = scheme == "rediss";
        if !tls && (self.tls_ca_file.is_some() || self.tls_cert_file.is_some()) {
            return Err(ClusterConfigError::TlsWithoutRediss);
        }
        for (name, d, min, max) in [
            ("command_timeout", self.command_timeout, 1, 10_000),
            ("lease", self.lease, 1, 10_000),
            ("retry_interval", self.retry_interval, 10, 60_000),
            ("sync_interval", self.sync_interval, 1_000, 86_400_000),
        ] {
            let ms = d.as_millis();
            if ms < min || ms > max {
                return Err(ClusterConfigError::OutOfRange {
                    name,
                    min: Duration::from_millis(min as u64),
                    max: Duration::from_millis(max as u64),
                });
            }
        }
        Ok(())
    }

    /// The URL for logs and status: any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.redis_url)
    }
}

/// `redis://user:secret@host/0` → `redis://user:***@host/0`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable URL>".into();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> ClusterSection {
        toml::from_str(&format!("redis_url = \"{url}\"\nnode_id = \"a\"\n")).unwrap()
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://gw:s3cret@10.0.0.1:6379/0"),
            "redis://gw:***@10.0.0.1:6379/0"
        );
        assert_eq!(redact_url("rediss://s3cret@h/0"), "rediss://***@h/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn rejects_bad_urls_and_insecure_tls() {
        assert!(section("redis://127.0.0.1:6379/0").validate().is_ok());
        assert!(section("redis+unix:///run/redis.sock").validate().is_ok());
        let e = section("http://x:pw@h/")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis://") && !e.contains("pw@"), "{e}");
        let e = section("rediss://h/#insecure")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_ca_file"), "{e}");
    }

    #[test]
    fn defaults_are_sane() {
        let s = section("redis://h");
        assert_eq!(s.command_timeout.get(), Duration::from_millis(50));
        assert_eq!(s.key_prefix, "gateway");
        assert!(s.validate().is_ok());
    }
}
