//! Upstream pools in the proxy config: named groups of targets with their
//! balancing, timeouts, retries and health checking. Defaults follow what
//! NGINX and Envoy do (see docs/proxy.md); each value is checked while
//! parsing so errors point at the file, line and column.

#![forbid(unsafe_code)]

use crate::duration::NonZeroSpan;

use serde::Deserialize;
use toml::Spanned;

/// A named pool of targets.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Name routes refer to.
    pub name: Spanned<String>,
    /// Each target: `ip:port`, `name:port` or `srv:_service._proto.name`
    /// (names are resolved in the background, see `[dns]`). Filled from
    /// the entries as written by [`Upstream::parse_targets`] while the
    /// config is validated.
    #[serde(skip)]
    pub targets: Vec<super::TargetSpec>,
    /// The `targets` entries as written, with their positions for errors.
    #[serde(rename = "targets")]
    target_entries: Vec<Spanned<String>>,
    /// How a target is chosen among the healthy ones (`round_robin` by default).
    #[serde(default)]
    pub balance: Balance,
    /// Time allowed to establish a TCP connection to a target.
    #[serde(default = "d::connect_timeout")]
    pub connect_timeout: NonZeroSpan,
    /// Time allowed from sending the request to receiving response headers
    /// (504 after it).
    #[serde(default = "d::request_timeout")]
    pub request_timeout: NonZeroSpan,
    /// How long an unused pooled connection to a target is kept.
    #[serde(default = "d::idle_timeout")]
    pub idle_timeout: NonZeroSpan,
    /// Longest wait for the next piece of a response body once the headers
    /// arrived (Envoy's stream idle timeout, NGINX `proxy_read_timeout`
    /// between reads); when it passes, the client's response is aborted and
    /// the upstream connection closed.
    #[serde(default = "d::read_timeout")]
    pub read_timeout: NonZeroSpan,
    /// Largest response header section (status line and headers) in bytes;
    /// a bigger one is answered 502 (Envoy's 60 KiB). At least 8192.
    #[serde(
        default = "d::max_response_header_bytes",
        deserialize_with = "d::header_bytes"
    )]
    pub max_response_header_bytes: usize,
    /// Extra attempts on another target when connecting fails, for
    /// idempotent requests without a body only.
    #[serde(default = "d::retries")]
    pub retries: u32,
    /// Active health checks (`[upstreams.health_check]`), off by default.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Passive ejection of targets that fail real requests (`[upstreams.passive]`).
    #[serde(default)]
    pub passive: PassiveHealth,
    /// How requests are spoken to the targets (`http1` by default).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the targets (HTTPS, mTLS); absent = plaintext.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// The `Host` (HTTP/1.1) or `:authority` (HTTP/2) sent to the targets.
    #[serde(default)]
    pub host_header: HostHeader,
}

/// The protocol spoken to an upstream's targets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request per connection at a time, kept alive.
    #[default]
    Http1,
    /// HTTP/2 over plaintext with prior knowledge (RFC 9113 §3.3): one
    /// multiplexed connection per target. Needs no `tls`.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2` only). Needs `tls`.
    H2,
    /// TLS with ALPN `h2` and `http/1.1`: whatever the target picks. Needs
    /// `tls` (Envoy's `auto_config`, NGINX has no equivalent).
    Auto,
}

impl UpstreamProtocol {
    /// Whether the protocol needs a `tls` table (`h2`, `auto`).
    pub fn needs_tls(self) -> bool {
        matches!(self, Self::H2 | Self::Auto)
    }
}

/// TLS to an upstream's targets, with rustls (TLS 1.2 and 1.3, ring).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates that may sign the targets'
    /// certificates; absent = the system's roots (`/etc/ssl/certs`).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The name sent as SNI and checked against the target's certificate;
    /// absent = the `host_header` literal, else the target's DNS name, else
    /// its IP address (checked against IP subjectAltNames, no SNI sent).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM certificate chain presented to targets that ask for one (mTLS).
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
    /// Check the target's certificate chain and name (the default). `false`
    /// accepts any certificate, with a warning at every start and reload:
    /// for a lab only, it gives up what TLS is for.
    #[serde(default = "d::verify")]
    pub verify: bool,
}

/// What is sent upstream as `Host` / `:authority` (NGINX
/// `proxy_set_header Host`, Envoy `host_rewrite_literal` /
/// `auto_host_rewrite`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's validated Host (NGINX `$host`, Envoy's default); the
    /// target's `ip:port` when the client sent none (HTTP/1.0).
    #[default]
    Preserve,
    /// The target as configured: `name:port` for a DNS target, `ip:port`
    /// for an address (NGINX's default `$proxy_host`, Envoy
    /// `auto_host_rewrite`).
    Target,
    /// This exact value, e.g. `api.internal.example` (Envoy
    /// `host_rewrite_literal`). Checked as `uri-host [":" port]`.
    Literal(http::HeaderValue),
}

impl<'de> Deserialize<'de> for HostHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "preserve" => Ok(Self::Preserve),
            "target" => Ok(Self::Target),
            literal => {
                // Normalized (lowercase, no trailing dot) as client Hosts are.
                let parsed = crate::proxy::authority::parse(literal).ok();
                match parsed.map(|a| http::HeaderValue::try_from(a.to_string())) {
                    Some(Ok(v)) => Ok(Self::Literal(v)),
                    _ => Err(serde::de::Error::custom(format!(
                        "host_header must be \"preserve\", \"target\" or a host name with an optional \
                         port (like \"api.internal:8443\"), not {literal:?}"
                    ))),
                }
            }
        }
    }
}

impl Upstream {
    /// Parses the `targets` entries into [`Upstream::targets`]; on error,
    /// the byte range of the wrong entry and what is wrong with it.
    pub(crate) fn parse_targets(
        &mut self,
    ) -> Result<(), (std::ops::Range<usize>, super::target::TargetError)> {
        self.targets = self
            .target_entries
            .iter()
            .map(|e| super::TargetSpec::try_from(e.get_ref().clone()).map_err(|m| (e.span(), m)))
            .collect::<Result<_, _>>()?;
        Ok(())
    }
}

/// How a target is chosen among the healthy ones.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each healthy target in turn, weighted by SRV weight (NGINX's default).
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight per unit of weight (NGINX `least_conn`, Envoy
    /// `LEAST_REQUEST`).
    LeastConnections,
}

/// Active health checks: an HTTP GET to each target.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    /// Off (the default): targets are assumed healthy; passive ejection still applies.
    pub enabled: bool,
    /// Path requested; a 2xx answer is healthy.
    pub path: String,
    /// Time between two checks of one target (default 5 s).
    pub interval: NonZeroSpan,
    /// Time a check may take to answer before it counts as a failure (default 2 s).
    pub timeout: NonZeroSpan,
    /// Consecutive successes that bring an unhealthy target back.
    pub healthy_threshold: NonZero,
    /// Consecutive failures that take a target out.
    pub unhealthy_threshold: NonZero,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            // Off: targets are assumed healthy (passive ejection still applies).
            enabled: false,
            // Requested with GET; any 2xx is healthy.
            path: "/healthz".into(),
            // 5 seconds between checks of one target.
            interval: NonZeroSpan::from_secs(5),
            // 2 seconds for a check to answer.
            timeout: NonZeroSpan::from_secs(2),
            // 2 consecutive successes to come back.
            healthy_threshold: NonZero(2),
            // 3 consecutive failures to be taken out.
            unhealthy_threshold: NonZero(3),
        }
    }
}

/// Passive ejection: targets that fail real requests are taken out for a while.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive connect failures or timeouts before ejection; 0 disables.
    pub consecutive_failures: u32,
    /// How long an ejected target is skipped.
    pub ejection_time: NonZeroSpan,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            // 5 consecutive failures (Envoy's outlier detection default).
            consecutive_failures: 5,
            // 30 seconds out (Envoy's base ejection time).
            ejection_time: NonZeroSpan::from_secs(30),
        }
    }
}

/// A count of 0 where at least 1 is needed: the config's to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be at least 1")]
pub struct ZeroCountError;

/// A count that must be at least 1.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "u32")]
pub struct NonZero(pub u32);

impl TryFrom<u32> for NonZero {
    type Error = ZeroCountError;

    fn try_from(v: u32) -> Result<Self, ZeroCountError> {
        if v == 0 {
            Err(ZeroCountError)
        } else {
            Ok(Self(v))
        }
    }
}

/// Defaults of the optional upstream fields.
mod d {
    use crate::duration::NonZeroSpan;

    /// 5 seconds to connect (NGINX proxy_connect_timeout is 60 s; Envoy 5 s).
    pub fn connect_timeout() -> NonZeroSpan {
        NonZeroSpan::from_secs(5)
    }
    /// 60 seconds until response headers (NGINX proxy_read_timeout).
    pub fn request_timeout() -> NonZeroSpan {
        NonZeroSpan::from_secs(60)
    }
    /// 60 seconds an idle pooled connection is kept.
    pub fn idle_timeout() -> NonZeroSpan {
        NonZeroSpan::from_secs(60)
    }
    /// 60 seconds between two reads of a response body (NGINX
    /// proxy_read_timeout; Envoy's stream_idle_timeout is 5 minutes).
    pub fn read_timeout() -> NonZeroSpan {
        NonZeroSpan::from_secs(60)
    }
    /// 60 KiB of response headers (Envoy max_response_headers_kb).
    pub fn max_response_header_bytes() -> usize {
        60 * 1024
    }
    /// hyper's HTTP/1 client cannot buffer less than 8 KiB.
    pub const MIN_RESPONSE_HEADER_BYTES: usize = 8192;
    /// Reads `max_response_header_bytes`, refusing values hyper cannot use.
    pub fn header_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let v = <usize as serde::Deserialize>::deserialize(d)?;
        if v < MIN_RESPONSE_HEADER_BYTES {
            return Err(serde::de::Error::custom(format!(
                "max_response_header_bytes must be at least {MIN_RESPONSE_HEADER_BYTES}"
            )));
        }
        Ok(v)
    }
    /// Certificates are checked unless the config says otherwise.
    pub fn verify() -> bool {
        true
    }
    /// 2 extra attempts on connect failure (Envoy's default is 1, NGINX tries each target).
    pub fn retries() -> u32 {
        2
    }
}
