//! `[log]` and `[observability]`: where the access log goes and the admin
//! HTTP listener that serves `/metrics`, `/healthz` and `/readyz`.

#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log.
    Off,
    /// One JSON line per request on standard output.
    Stdout,
    /// Appended to this file; reopened on SIGUSR1 (logrotate `postrotate`).
    File(PathBuf),
}

impl<'de> Deserialize<'de> for AccessLogTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "off" => Ok(Self::Off),
            "stdout" => Ok(Self::Stdout),
            "" => Err(serde::de::Error::custom(
                "access_log is empty; use \"stdout\", \"off\" or an absolute file path",
            )),
            p if !p.starts_with('/') => Err(serde::de::Error::custom(format!(
                "access_log {p:?} is not an absolute path; use \"stdout\", \"off\" or /path/to/access.log"
            ))),
            p => Ok(Self::File(PathBuf::from(p))),
        }
    }
}

/// `[log]`: the access log (the application log goes to stderr, its format
/// chosen with `gateway run --log-format`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `"stdout"`, `"off"` or an absolute file path.
    pub access_log: AccessLogTarget,
    /// Query parameters dropped from `url.query` in addition to the built-in
    /// credential-like names and every API key `query` parameter.
    pub redact_query_params: Vec<String>,
    /// Access log bytes collected before they are written (one `write(2)`
    /// per full buffer, on a dedicated thread; NGINX `buffer=`).
    pub buffer_bytes: usize,
    /// Longest time a line waits in the buffer (NGINX `flush=`).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub flush_interval: Duration,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            // JSON lines on stdout (the application log is on stderr).
            access_log: AccessLogTarget::Stdout,
            // Nothing beyond the built-in list (key, token, secret, password...).
            redact_query_params: Vec::new(),
            // 64 KiB, as the NGINX `buffer=64k` setups use.
            buffer_bytes: 64 * 1024,
            // 200 ms: at low request rates a line shows up quickly; at high
            // rates the buffer fills first and the interval does not matter.
            flush_interval: Duration::from_millis(200),
        }
    }
}

/// `[observability]`: the admin HTTP listener.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilitySection {
    /// Serve `/metrics`, `/healthz`, `/readyz`.
    pub enabled: bool,
    /// Address of the admin HTTP listener; keep it on loopback or a
    /// management network (it has no authentication).
    pub listen: SocketAddr,
}

impl Default for ObservabilitySection {
    fn default() -> Self {
        Self {
            // Off unless asked for: a config without the section opens no
            // extra port (deploy/gateway.example.toml turns it on).
            enabled: false,
            // Loopback only, the Envoy-admin-like port.
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    #[test]
    fn parses_targets_and_listener() {
        let c = Config::parse(
            "[log]\naccess_log = \"/var/log/gw/a.log\"\n[observability]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.log.access_log,
            AccessLogTarget::File("/var/log/gw/a.log".into())
        );
        assert!(c.observability.enabled);
        let c = Config::parse("[log]\naccess_log = \"off\"\n", "t").unwrap();
        assert_eq!(c.log.access_log, AccessLogTarget::Off);
        assert_eq!(Config::default().log.access_log, AccessLogTarget::Stdout);
    }

    #[test]
    fn relative_path_and_bad_listen_name_the_line() {
        let e = Config::parse("[log]\naccess_log = \"access.log\"\n", "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("not an absolute path"),
            "{e}"
        );
        let e = Config::parse("[observability]\nlisten = \"nope\"\n", "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gw.toml:2:"), "{e}");
    }
}
