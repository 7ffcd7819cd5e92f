//! Listener, TLS and demo sections of the proxy config: where the gateway
//! accepts connections, with which certificates, and the built-in demo
//! upstream. Values are checked while parsing (addresses, file names), so a
//! mistake is reported with the file, line and column.

#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// One socket the proxy accepts connections on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name used in logs and in `Proxy::local_addr` (defaults to the address).
    #[serde(default)]
    pub name: Option<String>,
    /// `ip:port` to bind; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// Terminate TLS (certificates from `[tls]`).
    #[serde(default)]
    pub tls: bool,
    /// When set, this listener only answers `308 Permanent Redirect` to
    /// `https://<host>:<port>` with this port; nothing is proxied.
    #[serde(default)]
    pub redirect_https_port: Option<u16>,
    /// Expect a PROXY protocol (v1 or v2) header first on every connection.
    /// Only honoured from peers in `trusted_proxies`; others are refused.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl Listener {
    /// The listener's name for logs.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// Certificates for TLS listeners.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Certificates chosen by SNI; the first one also serves clients that
    /// send no SNI or an unknown name.
    pub certificates: Vec<Certificate>,
    /// With no `certificates`, generate a self-signed certificate for
    /// `localhost`, 127.0.0.1 and ::1 at start (logged). For demos only.
    pub self_signed: bool,
}

#[allow(
    clippy::derivable_impls,
    reason = "hand-written so each default carries its comment (STYLE.md)"
)]
impl Default for TlsSection {
    fn default() -> Self {
        Self {
            // No certificates: a TLS listener then needs `self_signed = true`.
            certificates: Vec::new(),
            // Off: production configs must name their certificates.
            self_signed: false,
        }
    }
}

/// A PEM certificate chain with its private key and the names it serves.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM file with the leaf certificate first, then intermediates.
    pub chain: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// SNI names this certificate is chosen for: exact (`api.example.com`)
    /// or one-label wildcard (`*.example.com`).
    pub server_names: Vec<ServerName>,
}

/// A lowercase SNI name or `*.suffix` wildcard.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(try_from = "String")]
pub struct ServerName(pub String);

impl TryFrom<String> for ServerName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "'{s}' is not a server name like api.example.com or *.example.com"
            ));
        }
        Ok(Self(lower))
    }
}

/// The built-in demo upstream: a tiny JSON echo server inside the process.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Demo {
    pub enabled: bool,
    /// Where the echo server listens (loopback only).
    pub address: SocketAddr,
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            // Off unless asked for: the embedded default turns it on.
            enabled: false,
            // Loopback port 9090.
            address: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}
