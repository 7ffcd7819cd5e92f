//! `[log]` and `[observability]`: where the access log goes and the admin
//! HTTP listener that serves `/metrics`, `/healthz` and `/readyz`.

#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Deserializer};

use crate::duration::Span;

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
    pub flush_interval: Span,
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
            flush_interval: Span::from_millis(200),
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
    /// management network (`/metrics`, `/healthz`, `/readyz` have no
    /// authentication; the dashboard's API needs its token off loopback).
    pub listen: SocketAddr,
    /// `[observability.dashboard]`: the live dashboard page on this listener.
    pub dashboard: DashboardSection,
}

/// `[observability.dashboard]`: the live dashboard (`/dashboard/`) and its
/// JSON API (`/dashboard/api/state`, `/dashboard/api/block`,
/// `/dashboard/api/unblock`), served by the admin HTTP listener.
/// docs/operations.md "Dashboard" describes the security model.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSection {
    /// Serve the page and its API (read-only unless `write`).
    pub enabled: bool,
    /// Allow the write actions (block a source with a TTL, unblock one);
    /// needs `token_file`.
    pub write: bool,
    /// File whose content (surrounding whitespace trimmed, at least 16
    /// bytes) is the token the page sends in `X-Gateway-Token`; relative
    /// paths are resolved against the config file's directory. Read at start.
    pub token_file: Option<PathBuf>,
    /// How often the page polls `/dashboard/api/state`.
    pub refresh_interval: Span,
}

impl Default for DashboardSection {
    fn default() -> Self {
        Self {
            // On whenever the listener is: read-only, and the listener is
            // on loopback by default (HAProxy's stats page and Envoy's admin
            // page are likewise served by their admin listener).
            enabled: true,
            // Read-only: no state changes from a browser unless asked for.
            write: false,
            // No token: the API answers loopback clients only.
            token_file: None,
            // 1 s, as HAProxy's stats page "refresh" choices start at.
            refresh_interval: Span::from_secs(1),
        }
    }
}

/// The checks `[observability.dashboard]` needs beyond its types: a token
/// when writes are on, and a token when the listener is not on loopback
/// (anyone who can reach it could read the blocklist otherwise). The error
/// is the byte offset of the offending key in `text` (when found) and what
/// is wrong; `config::validate` turns it into a line and column.
pub(crate) fn dashboard_problem(
    o: &ObservabilitySection,
    text: &str,
) -> Result<(), (Option<usize>, String)> {
    let d = &o.dashboard;
    if !o.enabled || !d.enabled || d.token_file.is_some() {
        return Ok(());
    }
    let (key, message) = if d.write {
        (
            "write",
            "[observability.dashboard] write = true needs token_file: write actions are \
             authorized by the token sent in the X-Gateway-Token header"
                .to_owned(),
        )
    } else if !o.listen.ip().is_loopback() {
        (
            "listen",
            format!(
                "[observability] listen = \"{}\" is not a loopback address and the dashboard \
                 is enabled without a token: set [observability.dashboard] token_file, set \
                 [observability.dashboard] enabled = false, or listen on 127.0.0.1",
                o.listen
            ),
        )
    } else {
        return Ok(());
    };
    Err((key_offset(text, key), message))
}

/// Byte offset of `[observability] listen` or
/// `[observability.dashboard] write` in the config text.
fn key_offset(text: &str, key: &str) -> Option<usize> {
    #[derive(Deserialize)]
    struct Probe {
        observability: Option<ProbeObs>,
    }
    #[derive(Deserialize)]
    struct ProbeObs {
        listen: Option<toml::Spanned<toml::Value>>,
        dashboard: Option<ProbeDash>,
    }
    #[derive(Deserialize)]
    struct ProbeDash {
        write: Option<toml::Spanned<toml::Value>>,
    }
    let probe: Probe = toml::from_str(text).ok()?;
    let obs = probe.observability?;
    let span = match key {
        "listen" => obs.listen?.span(),
        _ => obs.dashboard?.write?.span(),
    };
    Some(span.start)
}

impl ObservabilitySection {
    /// The dashboard's `token_file` as configured (relative to the config
    /// file's directory), when the running dashboard reads it: the admin
    /// HTTP listener and the dashboard both enabled. `gateway run` and
    /// `gateway check-config` read it from here.
    pub fn dashboard_token_file(&self) -> Option<&std::path::Path> {
        self.dashboard
            .token_file
            .as_deref()
            .filter(|_| self.enabled && self.dashboard.enabled)
    }
}

impl Default for ObservabilitySection {
    fn default() -> Self {
        Self {
            // Off unless asked for: a config without the section opens no
            // extra port (deploy/gateway.example.toml turns it on).
            enabled: false,
            // Loopback only, the Envoy-admin-like port.
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            dashboard: DashboardSection::default(),
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

    #[test]
    fn dashboard_off_loopback_needs_a_token() {
        let e = Config::parse(
            "[observability]\nenabled = true\nlisten = \"0.0.0.0:9901\"\n",
            "gw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("gw.toml:3:10") && e.contains("token_file"),
            "{e}"
        );
        // [::] and a LAN address too; loopback (v4 and v6) is fine.
        for listen in ["[::]:9901", "192.168.1.10:9901"] {
            let t = format!("[observability]\nenabled = true\nlisten = \"{listen}\"\n");
            assert!(Config::parse(&t, "t").is_err(), "{listen}");
        }
        for listen in ["127.0.0.1:9901", "[::1]:9901"] {
            let t = format!("[observability]\nenabled = true\nlisten = \"{listen}\"\n");
            Config::parse(&t, "t").unwrap();
        }
        // With a token, or with the dashboard off, it is allowed.
        Config::parse(
            "[observability]\nenabled = true\nlisten = \"0.0.0.0:9901\"\n\
             [observability.dashboard]\ntoken_file = \"/etc/gateway/dashboard.token\"\n",
            "t",
        )
        .unwrap();
        Config::parse(
            "[observability]\nenabled = true\nlisten = \"0.0.0.0:9901\"\n\
             [observability.dashboard]\nenabled = false\n",
            "t",
        )
        .unwrap();
    }

    #[test]
    fn dashboard_write_needs_a_token_and_unknown_keys_fail() {
        let e = Config::parse(
            "[observability]\nenabled = true\n[observability.dashboard]\nwrite = true\n",
            "gw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("gw.toml:4:9") && e.contains("token_file"),
            "{e}"
        );
        let e = Config::parse("[observability.dashboard]\nwirte = true\n", "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gw.toml:2:") && e.contains("wirte"), "{e}");
        let d = Config::embedded_default().observability.dashboard;
        assert!(d.enabled && !d.write && d.token_file.is_none());
    }
}
