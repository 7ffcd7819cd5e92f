//! Listener, TLS and demo sections of the proxy config: where the gateway
//! accepts connections, with which certificates, and the built-in demo
//! upstream. Values are checked while parsing (addresses, file names), so a
//! mistake is reported with the file, line and column.

#![forbid(unsafe_code)]

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf};

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
    /// Length of the queue of connections the kernel has completed but the
    /// gateway has not accepted yet (`listen(2)` backlog). Default 511, as
    /// NGINX's `listen ... backlog=`; tokio's own default of 128 loses SYNs
    /// when a few hundred clients connect at once (each lost SYN costs the
    /// client a 1 s retransmit). The kernel caps it at
    /// `net.core.somaxconn` (4096 on current kernels): raise that sysctl too
    /// for a larger value.
    #[serde(default = "default_backlog")]
    pub backlog: NonZeroU32,
}

/// 511 queued connections (NGINX's default `backlog` on Linux).
fn default_backlog() -> NonZeroU32 {
    NonZeroU32::new(511).expect("nonzero")
}

impl Listener {
    /// Binds the listening socket with `SO_REUSEADDR` (as tokio's
    /// `TcpListener::bind` does) and this listener's backlog.
    pub fn bind(&self) -> std::io::Result<tokio::net::TcpListener> {
        let socket = match self.address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(self.address)?;
        socket.listen(self.backlog.get())
    }

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

/// A `server_names` entry that is not a DNS name or `*.` wildcard: the
/// config's to fix (quoted as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a server name like api.example.com or *.example.com")]
pub struct ServerNameError(pub String);

/// A lowercase SNI name or `*.suffix` wildcard.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(try_from = "String")]
pub struct ServerName(pub String);

impl TryFrom<String> for ServerName {
    type Error = ServerNameError;

    fn try_from(s: String) -> Result<Self, ServerNameError> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ServerNameError(s));
        }
        Ok(Self(lower))
    }
}

/// The built-in demo upstream: a tiny JSON echo server inside the process.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Demo {
    /// Start the echo server (default off).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(toml_text: &str) -> Listener {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn backlog_defaults_to_511_and_zero_is_refused() {
        let l = listener(r#"address = "127.0.0.1:0""#);
        assert_eq!(l.backlog.get(), 511);
        let e = toml::from_str::<Listener>("address = \"127.0.0.1:0\"\nbacklog = 0").unwrap_err();
        assert!(e.to_string().contains("nonzero"), "{e}");
    }

    /// The kernel reports a listening socket's backlog as its Send-Q
    /// (`ss -ltn`): the configured value must be what `listen(2)` got.
    #[tokio::test]
    async fn bound_socket_has_the_configured_backlog() {
        let l = listener("address = \"127.0.0.1:0\"\nbacklog = 777");
        let socket = l.bind().unwrap();
        let port = socket.local_addr().unwrap().port();
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2, installed by cargo xtask) must be on PATH");
        let text = String::from_utf8_lossy(&out.stdout);
        // State Recv-Q Send-Q Local:Port Peer:Port
        let send_q: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2))
            .collect();
        assert_eq!(send_q, ["777"], "ss said: {text}");
    }
}
