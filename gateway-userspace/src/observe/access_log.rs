//! The access log: one JSON object per line per request, with ECS field
//! names (`@timestamp`, `client.ip`, `http.request.method`, `url.path`,
//! `event.duration` in nanoseconds...) so Filebeat and Elasticsearch ingest
//! it without a custom mapping; gateway-specific facts go under `gateway.*`.
//! Fields are written dotted (`"client.ip"`), which Filebeat's `decode_json`
//! / `expand_keys` and Elasticsearch both accept.
//!
//! Never logged: credentials. `url.query` loses every credential-like
//! parameter (see [`Redactor`]); `user.name` is the identity's subject, not
//! the key or token. A query that is not `name=value&...` is dropped whole.
//!
//! Lines are written by a dedicated thread through a buffer
//! ([`log_writer`](super::log_writer)): `[log] buffer_bytes` and
//! `flush_interval`, NGINX's `buffer=` and `flush=`. The file target is
//! opened in append mode and reopened on SIGUSR1, so logrotate can move it
//! away and signal us in `postrotate`.

#![forbid(unsafe_code)]

use std::{
    fs::{File, OpenOptions},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde_json::{Map, Value, json};

use super::{
    config::{AccessLogTarget, LogSection},
    log_writer::{Buffering, LineWriter, Output},
};

/// Lines wait in memory up to this many bytes (or four buffers, if more)
/// while the target is slower than the request rate; beyond, they are
/// dropped and counted on the application log.
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// Where lines go.
pub struct AccessLog {
    sink: Sink,
    redactor: Redactor,
}

enum Sink {
    Off,
    Stdout(LineWriter),
    File { path: PathBuf, writer: LineWriter },
}

/// Everything one access log line says.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub timestamp: SystemTime,
    pub client_ip: IpAddr,
    pub peer: SocketAddr,
    pub listener: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub status: u16,
    pub version: http::Version,
    pub duration_ns: u64,
    pub user_agent: Option<&'a str>,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub route: Option<&'a str>,
    pub upstream_target: Option<SocketAddr>,
    pub reason: Option<&'a str>,
    pub fault: Option<String>,
    pub user: Option<&'a str>,
    pub rate_limit: Option<&'a str>,
    pub validation: Option<&'a str>,
}

impl AccessLog {
    /// Opens the target (a file is created if missing, parents are not).
    /// `extra_secrets`: query parameter names that carry credentials in this
    /// config (API key `query` settings).
    pub fn open(cfg: &LogSection, extra_secrets: &[String]) -> std::io::Result<Self> {
        let buffering = Buffering {
            buffer_bytes: cfg.buffer_bytes.max(1),
            flush_interval: cfg.flush_interval,
            max_pending_bytes: cfg.buffer_bytes.saturating_mul(4).max(MAX_PENDING_BYTES),
        };
        let sink = match &cfg.access_log {
            AccessLogTarget::Off => Sink::Off,
            AccessLogTarget::Stdout => Sink::Stdout(LineWriter::start(Output::Stdout, buffering)?),
            AccessLogTarget::File(p) => Sink::File {
                path: p.clone(),
                writer: LineWriter::start(Output::File(open_append(p)?), buffering)?,
            },
        };
        let mut names = cfg.redact_query_params.clone();
        names.extend(extra_secrets.iter().cloned());
        Ok(Self {
            sink,
            redactor: Redactor::new(names),
        })
    }

    /// No access log (tests, and `Hooks::default`).
    pub fn off() -> Self {
        Self {
            sink: Sink::Off,
            redactor: Redactor::new(Vec::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Reopens the file (after logrotate moved it). Stdout and off: nothing.
    pub fn reopen(&self) -> std::io::Result<()> {
        if let Sink::File { path, writer } = &self.sink {
            writer.reopen(open_append(path)?);
        }
        Ok(())
    }

    /// Writes every pending line and stops the writer thread (at shutdown;
    /// dropping the log does the same).
    pub fn close(&self) {
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout(w) | Sink::File { writer: w, .. } => w.close(),
        }
    }

    /// Queues one line for the writer thread (never blocks on IO). A failed
    /// write is reported on the application log, never to the client.
    pub fn write(&self, r: &Record<'_>) {
        if !self.enabled() {
            return;
        }
        let mut line = self.line(r).to_string();
        line.push('\n');
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout(w) | Sink::File { writer: w, .. } => w.push(line.as_bytes()),
        }
    }

    /// The JSON object for a record.
    pub fn line(&self, r: &Record<'_>) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                m.insert(k.to_owned(), v);
            }
        };
        put(
            "@timestamp",
            json!(humantime::format_rfc3339_micros(r.timestamp).to_string()),
        );
        put("event.kind", json!("event"));
        put("event.category", json!(["web"]));
        put("event.dataset", json!("gateway.access"));
        put("event.duration", json!(r.duration_ns));
        put(
            "event.outcome",
            json!(if r.status < 400 { "success" } else { "failure" }),
        );
        put("client.ip", json!(r.client_ip.to_string()));
        put("source.ip", json!(r.peer.ip().to_string()));
        put("source.port", json!(r.peer.port()));
        put("http.request.method", json!(r.method));
        put("http.request.id", json!(r.request_id));
        put("http.response.status_code", json!(r.status));
        put("http.version", json!(version(r.version)));
        put("url.path", json!(r.path));
        if let Some(q) = r.query.and_then(|q| self.redactor.redact(q)) {
            put("url.query", json!(q));
        }
        put("user_agent.original", json!(r.user_agent));
        put("trace.id", json!(r.trace_id));
        put("user.name", json!(r.user));
        put("gateway.listener", json!(r.listener));
        put("gateway.route", json!(r.route));
        put(
            "gateway.upstream.target",
            json!(r.upstream_target.map(|t| t.to_string())),
        );
        put("gateway.reason", json!(r.reason));
        put("gateway.fault", json!(r.fault));
        put("gateway.rate_limit", json!(r.rate_limit));
        put("gateway.validation", json!(r.validation));
        Value::Object(m)
    }
}

fn open_append(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

/// ECS `http.version`: "1.1", "2".
fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// Drops credential-like query parameters.
pub struct Redactor {
    /// Lowercase names dropped exactly.
    exact: Vec<String>,
}

/// A parameter whose lowercase name contains one of these is dropped.
const SECRET_PARTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "credential",
    "signature",
    "session",
    "jwt",
    "code",
];

/// Dropped when the whole name is one of these.
const SECRET_NAMES: &[&str] = &["sig", "pass", "sid", "bearer"];

impl Redactor {
    pub fn new(names: Vec<String>) -> Self {
        Self {
            exact: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    fn secret(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        SECRET_PARTS.iter().any(|p| n.contains(p))
            || SECRET_NAMES.contains(&n.as_str())
            || self.exact.contains(&n)
    }

    /// The query without credential-like parameters; `None` when nothing is
    /// left, or when the query does not look like `name=value&...` (we
    /// cannot tell what it carries, so it is not logged).
    pub fn redact(&self, query: &str) -> Option<String> {
        if query.is_empty() {
            return None;
        }
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, _) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(raw_name)?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return None;
            }
            if !self.secret(&name) {
                kept.push(pair);
            }
        }
        (!kept.is_empty()).then(|| kept.join("&"))
    }
}

/// Percent- and `+`-decodes a parameter name; `None` if malformed.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_query() {
        let r = Redactor::new(vec!["k".into()]);
        assert_eq!(
            r.redact("a=1&api_key=s3cret&b=2").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            r.redact("access_token=x&X-Api-Key=y&k=z&page=3").as_deref(),
            Some("page=3")
        );
        assert_eq!(r.redact("api%5Fkey=s3cret&q=ok").as_deref(), Some("q=ok"));
        assert_eq!(r.redact("password=x"), None);
        assert_eq!(r.redact("%zz=1&a=2"), None, "undecodable: dropped whole");
        assert_eq!(r.redact("flag&x=1").as_deref(), Some("flag&x=1"));
    }

    #[test]
    fn line_has_ecs_names_and_no_nulls() {
        let log = AccessLog::off();
        let rec = Record {
            timestamp: SystemTime::UNIX_EPOCH,
            client_ip: "192.0.2.1".parse().unwrap(),
            peer: "10.0.0.1:5000".parse().unwrap(),
            listener: "main",
            method: "GET",
            path: "/a",
            query: Some("token=x&q=1"),
            status: 200,
            version: http::Version::HTTP_11,
            duration_ns: 1500,
            user_agent: Some("curl/8"),
            request_id: "rid",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            route: Some("api"),
            upstream_target: Some("127.0.0.1:8080".parse().unwrap()),
            reason: None,
            fault: None,
            user: Some("alice"),
            rate_limit: Some("allowed"),
            validation: None,
        };
        let v = log.line(&rec);
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["client.ip"], "192.0.2.1");
        assert_eq!(v["source.ip"], "10.0.0.1");
        assert_eq!(v["url.query"], "q=1");
        assert_eq!(v["http.version"], "1.1");
        assert_eq!(v["event.duration"], 1500);
        assert_eq!(v["gateway.upstream.target"], "127.0.0.1:8080");
        assert!(v.get("gateway.reason").is_none());
    }
}
