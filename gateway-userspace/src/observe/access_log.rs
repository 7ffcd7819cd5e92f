//! The access log: one JSON object per line per request, with ECS field
//! names (`@timestamp`, `client.ip`, `http.request.method`, `url.path`,
//! `event.duration` in nanoseconds...) so Filebeat and Elasticsearch ingest
//! it without a custom mapping; gateway-specific facts go under `gateway.*`.
//! Fields are written dotted (`"client.ip"`), which Filebeat's `decode_json`
//! / `expand_keys` and Elasticsearch both accept.
//!
//! Never logged: credentials. `url.query` loses every credential-like
//! parameter and every parameter whose value carries one (see
//! [`Redactor`]); `url.path` loses credential-like matrix parameters
//! (`;jsessionid=...`); `user.name` is the identity's subject, not the key
//! or token. A query whose names do not decode is dropped whole. What can
//! still appear in `url.path`: a secret that is an ordinary path segment
//! (`/reset/<token>`), or hidden behind an encoded `;` (`%3B`).
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
    sync::Arc,
    time::SystemTime,
};

use serde_json::Value;

use super::{
    config::{AccessLogTarget, LogSection},
    json_out,
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
    /// When the request head arrived (`@timestamp`, RFC 3339 UTC with microseconds).
    pub timestamp: SystemTime,
    /// The client as the gateway resolved it, through trusted proxies (`client.ip`).
    pub client_ip: IpAddr,
    /// The TCP peer, or the address a PROXY protocol header named (`source.ip`, `source.port`).
    pub peer: SocketAddr,
    /// The proxy listener's name from the config (`gateway.listener`).
    pub listener: &'a str,
    /// The request method as sent (`http.request.method`).
    pub method: &'a str,
    /// The path as the client sent it, before normalization; credential-like matrix parameters are
    /// removed when written (`url.path`).
    pub path: &'a str,
    /// The raw query without `?`; credential-like parameters are removed when written
    /// (`url.query`).
    pub query: Option<&'a str>,
    /// The status sent to the client (`http.response.status_code`; >= 400 makes `event.outcome`
    /// `failure`).
    pub status: u16,
    /// The client's HTTP version (`http.version`: `1.0`, `1.1`, `2`).
    pub version: http::Version,
    /// Request head to response head, in nanoseconds (`event.duration`).
    pub duration_ns: u64,
    /// The `User-Agent` header (`user_agent.original`).
    pub user_agent: Option<&'a str>,
    /// The request id sent upstream and to the client (`http.request.id`).
    pub request_id: &'a str,
    /// The W3C trace id, 32 hex digits (`trace.id`).
    pub trace_id: &'a str,
    /// The matched route's id (`gateway.route`); `None` when no route matched.
    pub route: Option<&'a str>,
    /// The upstream address the request went to (`gateway.upstream.target`).
    pub upstream_target: Option<SocketAddr>,
    /// The code of the `Rejection` the gateway answered with itself (`gateway.reason`).
    pub reason: Option<&'a str>,
    /// Who caused that rejection: `client`, `upstream` or `internal` (`gateway.fault`).
    pub fault: Option<&'a str>,
    /// The authenticated identity's subject, never the credential (`user.name`).
    pub user: Option<&'a str>,
    /// The L7 rate-limit decision: `allowed`, `delayed`, `rejected` or `over_quota`
    /// (`gateway.rate_limit`).
    pub rate_limit: Option<&'a str>,
    /// The request validation outcome: `passed` or the rejection's code (`gateway.validation`).
    pub validation: Option<&'a str>,
    /// The calls of an aggregate route (empty otherwise).
    pub calls: &'a [CallRecord],
}

/// One call of an aggregate route, as logged (`gateway.aggregate.calls`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRecord {
    /// The call's name in the route's config.
    #[serde(serialize_with = "arc_str")]
    pub name: Arc<str>,
    /// The upstream pool the call went to.
    #[serde(serialize_with = "arc_str")]
    pub upstream: Arc<str>,
    /// The address the call was sent to, once one was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<SocketAddr>,
    /// The upstream's status, when a response head arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// From the call's start to its whole body read (or its failure), in milliseconds.
    pub duration_ms: f64,
    /// `ok`, or how it failed (`timeout`, `failed`, `too_large`...).
    pub outcome: &'static str,
}

impl AccessLog {
    /// Opens the target (a file is created if missing, parents are not).
    /// `extra_secrets`: query parameter names that carry credentials in this
    /// config (API key `query` settings).
    pub fn open(cfg: &LogSection, extra_secrets: &[String]) -> std::io::Result<Self> {
        let buffering = Buffering {
            buffer_bytes: cfg.buffer_bytes.max(1),
            flush_interval: cfg.flush_interval.get(),
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

    /// No access log (tests, and `Engines::default`).
    pub fn off() -> Self {
        Self {
            sink: Sink::Off,
            redactor: Redactor::new(Vec::new()),
        }
    }

    /// Whether lines are written (a stdout or file target); callers skip building a `Record` when
    /// not.
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

    /// Waits (up to 5 s) until every line queued so far is written: for
    /// tests and tools that read the log right after a request.
    pub fn flush(&self) {
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout(w) | Sink::File { writer: w, .. } => {
                w.flush(std::time::Duration::from_secs(5));
            }
        }
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
    /// write is reported on the application log, never to the client. The
    /// line is written straight into a per-thread buffer (no JSON tree,
    /// no allocation once the buffer has grown).
    pub fn write(&self, r: &Record<'_>) {
        let writer = match &self.sink {
            Sink::Off => return,
            Sink::Stdout(w) | Sink::File { writer: w, .. } => w,
        };
        thread_local! {
            static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            self.write_line(r, &mut line);
            line.push(b'\n');
            writer.push(&line);
        });
    }

    /// The JSON object for a record (as written, for tests and tools).
    pub fn line(&self, r: &Record<'_>) -> Value {
        let mut line = Vec::new();
        self.write_line(r, &mut line);
        serde_json::from_slice(&line).unwrap_or_default()
    }

    /// One access log line without its newline: ECS field names, in this
    /// order, absent fields left out (never `null`). Keys are constants;
    /// only values are formatted and escaped ([`json_out`]).
    fn write_line(&self, r: &Record<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"@timestamp\":");
        json_out::push_rfc3339_micros(out, r.timestamp);
        out.extend_from_slice(
            b",\"event.kind\":\"event\",\"event.category\":[\"web\"],\
              \"event.dataset\":\"gateway.access\",\"event.duration\":",
        );
        json_out::push_u64(out, r.duration_ns);
        out.extend_from_slice(if r.status < 400 {
            b",\"event.outcome\":\"success\",\"client.ip\":\""
        } else {
            b",\"event.outcome\":\"failure\",\"client.ip\":\""
        });
        json_out::push_ip(out, r.client_ip);
        out.extend_from_slice(b"\",\"source.ip\":\"");
        json_out::push_ip(out, r.peer.ip());
        out.extend_from_slice(b"\",\"source.port\":");
        json_out::push_u64(out, r.peer.port().into());
        out.extend_from_slice(b",\"http.request.method\":");
        json_out::push_str(out, r.method);
        out.extend_from_slice(b",\"http.request.id\":");
        json_out::push_str(out, r.request_id);
        out.extend_from_slice(b",\"http.response.status_code\":");
        json_out::push_u64(out, r.status.into());
        out.extend_from_slice(b",\"http.version\":\"");
        out.extend_from_slice(version(r.version).as_bytes());
        out.extend_from_slice(b"\",\"url.path\":");
        json_out::push_str(out, &self.redactor.redact_path(r.path));
        if let Some(q) = r.query.and_then(|q| self.redactor.redact(q)) {
            out.extend_from_slice(b",\"url.query\":");
            json_out::push_str(out, &q);
        }
        if let Some(ua) = r.user_agent {
            out.extend_from_slice(b",\"user_agent.original\":");
            json_out::push_str(out, ua);
        }
        out.extend_from_slice(b",\"trace.id\":");
        json_out::push_str(out, r.trace_id);
        if let Some(user) = r.user {
            out.extend_from_slice(b",\"user.name\":");
            json_out::push_str(out, user);
        }
        out.extend_from_slice(b",\"gateway.listener\":");
        json_out::push_str(out, r.listener);
        if let Some(route) = r.route {
            out.extend_from_slice(b",\"gateway.route\":");
            json_out::push_str(out, route);
        }
        if let Some(target) = r.upstream_target {
            out.extend_from_slice(b",\"gateway.upstream.target\":\"");
            json_out::push_socket_addr(out, target);
            out.push(b'"');
        }
        let optional: [(&[u8], Option<&str>); 4] = [
            (b",\"gateway.reason\":", r.reason),
            (b",\"gateway.fault\":", r.fault),
            (b",\"gateway.rate_limit\":", r.rate_limit),
            (b",\"gateway.validation\":", r.validation),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                out.extend_from_slice(key);
                json_out::push_str(out, v);
            }
        }
        if !r.calls.is_empty() {
            out.extend_from_slice(b",\"gateway.aggregate.calls\":");
            // Aggregate routes only; serde_json is fine off the common path.
            // Serialized apart so that a failure (none is possible for these
            // types) cannot leave half an array in the line.
            let calls = serde_json::to_vec(r.calls).unwrap_or_else(|_| b"[]".to_vec());
            out.extend_from_slice(&calls);
        }
        out.push(b'}');
    }
}

fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
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

/// Drops credential-like query parameters and matrix parameters.
pub struct Redactor {
    /// Extra names dropped exactly (normalized as [`normalize`] does).
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

/// How many times a name or value is percent-decoded at most: once as the
/// upstream does, then again for each level of double encoding
/// (`%253D` → `%3D` → `=`).
const DECODE_ROUNDS: usize = 4;

impl Redactor {
    /// A redactor that, besides the built-in credential-like names, drops the query parameters in
    /// `names` (compared normalized: lowercase, array suffix `[...]` removed, `.`/space/`[` as
    /// `_`).
    pub fn new(names: Vec<String>) -> Self {
        Self {
            exact: names.iter().map(|n| normalize(n)).collect(),
        }
    }

    /// Whether a decoded parameter name is credential-like.
    fn secret(&self, name: &str) -> bool {
        let n = normalize(name);
        SECRET_PARTS.iter().any(|p| n.contains(p))
            || SECRET_NAMES.contains(&n.as_str())
            || self.exact.contains(&n)
    }

    /// Whether a decoded value carries a credential: a `name=` assignment
    /// with a credential-like name anywhere in it (a nested query such as
    /// `next=/cb?api_key=...`), a bearer token, or something shaped like a
    /// JWT (`eyJ...` with two dots).
    fn secret_value(&self, value: &str) -> bool {
        let lower = value.to_ascii_lowercase();
        if lower.contains("bearer ") || looks_like_jwt(value) {
            return true;
        }
        value.match_indices('=').any(|(i, _)| {
            let before = &value[..i];
            let start = before
                .rfind(|c: char| "?&;#/=,:\"' \t".contains(c))
                .map_or(0, |j| j + 1);
            let name = &before[start..];
            !name.is_empty() && self.secret(name)
        })
    }

    /// Whether one `name=value` piece (still encoded) must go; `None` if
    /// its name does not decode.
    fn drop_pair(&self, pair: &str) -> Option<bool> {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(percent_decode(raw_name)?).ok()?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let name = decode_fully(&name);
        Some(self.secret(&name) || self.secret_value(&decode_fully(raw_value)))
    }

    /// The query without credential-like parameters; `None` when nothing is
    /// left, or when a name does not decode (we cannot tell what it
    /// carries, so nothing is logged). `&` and `;` both separate (as for
    /// authentication); names are compared after percent-decoding (as
    /// often as it changes them, up to [`DECODE_ROUNDS`]), ignoring case,
    /// with PHP's `.`/space → `_` and array suffixes; a value is dropped
    /// with its name when its decoded text carries a credential.
    pub fn redact(&self, query: &str) -> Option<String> {
        if query.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(query.len());
        for (sep, pair) in crate::query::segments(query) {
            if pair.is_empty() || self.drop_pair(pair)? {
                continue;
            }
            if !out.is_empty()
                && let Some(sep) = sep
            {
                out.push(sep);
            }
            out.push_str(pair);
        }
        (!out.is_empty()).then_some(out)
    }

    /// The path with credential-like matrix parameters removed
    /// (`/app;jsessionid=X/a;v=1` → `/app/a;v=1`); a parameter whose name
    /// does not decode is removed too. Nothing else in the path is changed.
    pub fn redact_path<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        if !path.contains(';') {
            return path.into();
        }
        let redacted = path
            .split('/')
            .map(|segment| {
                let mut parts = segment.split(';');
                let mut out = parts.next().unwrap_or_default().to_owned();
                for param in parts {
                    if self.drop_pair(param) == Some(false) || param.is_empty() {
                        out.push(';');
                        out.push_str(param);
                    }
                }
                out
            })
            .collect::<Vec<_>>()
            .join("/");
        redacted.into()
    }
}

/// Lowercase, array suffix removed, `.`/space/`[` as `_` (what PHP, Rack
/// and ASP.NET make of a name).
fn normalize(name: &str) -> String {
    let base = match name.find('[') {
        Some(i) if name.ends_with(']') && i > 0 => &name[..i],
        _ => name,
    };
    base.chars()
        .map(|c| match c {
            '.' | ' ' | '[' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Decodes as long as that changes the text and it stays decodable, at
/// most [`DECODE_ROUNDS`] times; invalid UTF-8 is replaced, not refused.
fn decode_fully(s: &str) -> String {
    let mut text = s.to_owned();
    for _ in 0..DECODE_ROUNDS {
        match percent_decode(&text) {
            Some(b) => {
                let next = String::from_utf8_lossy(&b).into_owned();
                if next == text {
                    break;
                }
                text = next;
            }
            None => break,
        }
    }
    text
}

/// Three base64url parts, the first starting like a JSON object (`eyJ`).
fn looks_like_jwt(value: &str) -> bool {
    value.match_indices("eyJ").any(|(i, _)| {
        let token: &str = value[i..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .next()
            .unwrap_or_default();
        token.split('.').filter(|p| !p.is_empty()).count() >= 2 && token.matches('.').count() >= 2
    })
}

/// Percent- and `+`-decodes; `None` if a `%` is not followed by two hex
/// digits.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
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
    Some(out)
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
    fn secrets_behind_semicolons_encodings_and_nested_queries_leave() {
        let r = Redactor::new(vec!["k".into()]);
        let cases = [
            ("x=1;api_key=SECRET", Some("x=1")),
            ("x=1;k=SECRET&y=2", Some("x=1&y=2")),
            ("next=%2Fcb%3Fapi_key%3DSECRET&p=1", Some("p=1")),
            ("next=%252Fcb%253Fapi_key%253DSECRET", None),
            ("next=/cb?x=1;token=SECRET", Some("next=/cb?x=1")),
            ("api%255Fkey=SECRET&a=b", Some("a=b")),
            ("API.KEY=SECRET&a=b", Some("a=b")),
            ("K=SECRET&a=b", Some("a=b")),
            ("k[]=SECRET&a=b", Some("a=b")),
            ("q=Bearer%20abc&a=b", Some("a=b")),
            (
                "q=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig&a=b",
                Some("a=b"),
            ),
            ("q=%22eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln%22", None),
            ("page=2;sort=name", Some("page=2;sort=name")),
            ("next=%2Fhome%3Fpage%3D2", Some("next=%2Fhome%3Fpage%3D2")),
            ("q=%zz", Some("q=%zz")),
        ];
        for (q, want) in cases {
            let got = r.redact(q);
            assert_eq!(got.as_deref(), want, "{q}");
            if let Some(g) = got {
                assert!(!g.contains("SECRET"), "{q}");
            }
        }
    }

    #[test]
    fn credential_matrix_parameters_leave_the_path() {
        let r = Redactor::new(vec![]);
        assert_eq!(r.redact_path("/a/b"), "/a/b");
        assert_eq!(
            r.redact_path("/app;jsessionid=SECRET/x;v=1;api_key=SECRET"),
            "/app/x;v=1"
        );
        assert_eq!(r.redact_path("/x;next=%2Fcb%3Ftoken%3DS"), "/x");
        assert_eq!(r.redact_path("/x;%zz=1"), "/x");
        assert_eq!(r.redact_path("/x;"), "/x;");
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
            calls: &[],
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
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 22, "{keys:?}");
        assert_eq!(v["event.category"], serde_json::json!(["web"]));
        assert_eq!(v["event.outcome"], "success");

        // Every client-controlled text escaped; every optional field present.
        let calls = [CallRecord {
            name: "a\"b".into(),
            upstream: "pool".into(),
            target: None,
            status: Some(200),
            duration_ms: 1.5,
            outcome: "ok",
        }];
        let nasty = Record {
            timestamp: SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_500_042),
            client_ip: "2001:db8::1".parse().unwrap(),
            peer: "[2001:db8::2]:443".parse().unwrap(),
            method: "PO\"ST",
            path: "/a\"}\n,\"x\":\"\\",
            query: Some("q=\u{1}\"&token=SECRET"),
            status: 403,
            version: http::Version::HTTP_2,
            user_agent: Some("ua \u{7f} é \"\\"),
            request_id: "id\"1",
            reason: Some("forbidden"),
            fault: Some("client"),
            user: Some("bob\n"),
            validation: Some("passed"),
            upstream_target: Some("[2001:db8::3]:8443".parse().unwrap()),
            calls: &calls,
            ..rec
        };
        let line = {
            let mut out = Vec::new();
            log.write_line(&nasty, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert!(!line.contains('\n') && !line.contains("SECRET"), "{line}");
        let v = log.line(&nasty);
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:01.500042Z");
        assert_eq!(v["event.outcome"], "failure");
        assert_eq!(v["client.ip"], "2001:db8::1");
        assert_eq!(v["source.ip"], "2001:db8::2");
        assert_eq!(v["source.port"], 443);
        assert_eq!(v["http.request.method"], "PO\"ST");
        assert_eq!(v["url.path"], "/a\"}\n,\"x\":\"\\");
        assert_eq!(v["url.query"], "q=\u{1}\"");
        assert_eq!(v["http.version"], "2");
        assert_eq!(v["user_agent.original"], "ua \u{7f} é \"\\");
        assert_eq!(v["http.request.id"], "id\"1");
        assert_eq!(v["user.name"], "bob\n");
        assert_eq!(v["gateway.reason"], "forbidden");
        assert_eq!(v["gateway.fault"], "client");
        assert_eq!(v["gateway.validation"], "passed");
        assert_eq!(v["gateway.upstream.target"], "[2001:db8::3]:8443");
        assert_eq!(v["gateway.aggregate.calls"][0]["name"], "a\"b");
        assert_eq!(v["gateway.aggregate.calls"][0]["status"], 200);
        assert!(v.get("x").is_none());
    }
}
