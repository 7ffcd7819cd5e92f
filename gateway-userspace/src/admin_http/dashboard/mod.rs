//! The live dashboard on the admin HTTP listener (`[observability.dashboard]`):
//! an embedded page (`/dashboard/`, HTML + JS + CSS, uPlot vendored) that
//! polls `GET /dashboard/api/state` (see [`state`]), and, when `write =
//! true`, two actions: `POST /dashboard/api/block` and `POST
//! /dashboard/api/unblock`, applied through the admin socket's handler.
//!
//! Access (docs/operations.md "Dashboard"):
//! * reads need the token when the listener is not on loopback; without a
//!   token, only a loopback `Host` is answered (DNS rebinding);
//! * writes need `write = true`, `POST`, `Content-Type: application/json`
//!   and the token in `X-Gateway-Token` (compared in constant time); a
//!   cross-site `Origin` or `Sec-Fetch-Site` is refused. No cookie is
//!   used, so a browser never attaches a credential by itself (CSRF);
//! * every action is logged with the peer, the action and its target,
//!   never the token.

#![forbid(unsafe_code)]

pub mod assets;
pub mod exposition;
pub mod state;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::admin::{protocol::Request as AdminRequest, server::handle};

/// The header the page sends the token in.
pub const TOKEN_HEADER: &str = "x-gateway-token";

/// Shortest token accepted from `token_file`, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// Largest action body read, in bytes.
const MAX_BODY: usize = 4096;

/// Longest TTL a block added from the page may have (30 days).
pub const MAX_BLOCK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The dashboard of a running gateway.
pub struct Dashboard {
    sources: Arc<state::Sources>,
    write: bool,
    /// SHA-256 of the token: compared in constant time, and the token
    /// itself is not kept.
    token: Option<[u8; 32]>,
    /// The listener is on loopback: reads without a token are allowed.
    loopback: bool,
    refresh: Duration,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("write", &self.write)
            .field("token", &self.token.is_some())
            .field("loopback", &self.loopback)
            .finish_non_exhaustive()
    }
}

/// Why the dashboard's token file cannot be used (a start-up error; the
/// config's or the file system's to fix). Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("reading the dashboard token_file {}: {error}", .path.display())]
    Read {
        /// The configured `token_file`.
        path: std::path::PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
    /// The token is shorter than [`MIN_TOKEN_LEN`] bytes.
    #[error(
        "the dashboard token_file {} holds {len} bytes; use at least {MIN_TOKEN_LEN} \
         (e.g. `openssl rand -hex 32 > {}`)",
        .path.display(),
        .path.display()
    )]
    TooShort {
        /// The configured `token_file`.
        path: std::path::PathBuf,
        /// Its length after trimming, in bytes.
        len: usize,
    },
}

/// Reads the token from `path`: surrounding whitespace trimmed, at least
/// [`MIN_TOKEN_LEN`] bytes. The error names the file, never the content.
pub fn read_token(path: &Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| TokenFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenFileError::TooShort {
            path: path.to_owned(),
            len: token.len(),
        });
    }
    Ok(token.to_owned())
}

impl Dashboard {
    /// `token`: the content of `token_file` ([`read_token`]).
    pub fn new(
        sources: state::Sources,
        cfg: &crate::observe::config::DashboardSection,
        listen: SocketAddr,
        token: Option<String>,
    ) -> Self {
        Self {
            sources: Arc::new(sources),
            write: cfg.write,
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            loopback: listen.ip().is_loopback(),
            refresh: cfg.refresh_interval.get(),
        }
    }

    /// Answers a request whose path starts with `/dashboard`.
    pub async fn answer(
        &self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let mut resp = match path.strip_prefix("/dashboard") {
            Some("") => redirect("/dashboard/"),
            Some("/api/state") => self.state(&req).await,
            Some(p @ ("/api/block" | "/api/unblock")) => {
                let unblock = p == "/api/unblock";
                self.action(req, peer, unblock).await
            }
            Some(p) if p.starts_with("/api/") => problem(StatusCode::NOT_FOUND, "no such API"),
            Some(p) => match (req.method(), p.strip_prefix('/').and_then(assets::get)) {
                (&Method::GET | &Method::HEAD, Some(a)) => {
                    let mut r = Response::new(Full::new(Bytes::from_static(a.body)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(a.content_type),
                    );
                    r
                }
                (_, Some(_)) => method_not_allowed("GET, HEAD"),
                (_, None) => problem(StatusCode::NOT_FOUND, "not found"),
            },
            None => problem(StatusCode::NOT_FOUND, "not found"),
        };
        assets::secure(resp.headers_mut());
        resp
    }

    /// Whether the request carries the configured token.
    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let (Some(want), Some(got)) = (&self.token, headers.get(TOKEN_HEADER)) else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(got.as_bytes()).into();
        bool::from(want.ct_eq(&got))
    }

    async fn state(&self, req: &hyper::Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        let presented = req.headers().contains_key(TOKEN_HEADER);
        if presented || !self.loopback {
            if !self.token_ok(req.headers()) {
                return unauthorized();
            }
        } else if !loopback_host(req.headers()) {
            return problem(
                StatusCode::FORBIDDEN,
                "without a token the dashboard answers requests for a loopback Host only",
            );
        }
        let (sources, write, refresh) = (self.sources.clone(), self.write, self.refresh);
        let body = tokio::task::spawn_blocking(move || {
            state::build(&sources, write, refresh.as_millis() as u64)
        })
        .await;
        match body {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading the state failed: {e}"),
            ),
        }
    }

    async fn action(
        &self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
        unblock: bool,
    ) -> Response<Full<Bytes>> {
        let what = if unblock { "unblock" } else { "block" };
        if req.method() != Method::POST {
            return method_not_allowed("POST");
        }
        if !self.write {
            return problem(
                StatusCode::FORBIDDEN,
                "the dashboard is read-only; set [observability.dashboard] write = true",
            );
        }
        if !self.token_ok(req.headers()) {
            tracing::warn!(%peer, action = what, "dashboard action refused: missing or wrong token");
            return unauthorized();
        }
        if let Some(why) = cross_site(req.headers()) {
            tracing::warn!(%peer, action = what, why, "dashboard action refused: cross-site request");
            return problem(StatusCode::FORBIDDEN, why);
        }
        let json_ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json_ct {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the action as Content-Type: application/json",
            );
        }
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .chars()
            .take(120)
            .collect::<String>();
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            Limited::new(req.into_body(), MAX_BODY).collect(),
        )
        .await;
        let body = match body {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => {
                return problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the action body is over {MAX_BODY} bytes"),
                );
            }
            Err(_) => {
                return problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "the action body did not arrive",
                );
            }
        };
        let admin_req = match parse_action(&body, unblock) {
            Ok(r) => r,
            Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        if self.sources.admin.maps.is_none() {
            return problem(
                StatusCode::CONFLICT,
                "the XDP fast path is disabled in this gateway's config ([xdp] enabled = false)",
            );
        }
        let target = match &admin_req {
            AdminRequest::BlockAdd { net, ttl_secs, .. } => {
                format!("{net} ttl={}s", ttl_secs.unwrap_or(0))
            }
            AdminRequest::BlockDel { net, .. } => net.clone(),
            _ => String::new(),
        };
        let admin = self.sources.admin.clone();
        let r = tokio::task::spawn_blocking(move || handle(&admin, admin_req)).await;
        match r {
            Ok(r) if r.ok => {
                tracing::info!(%peer, user_agent, action = what, target, who = "dashboard token holder", "dashboard action applied");
                json_response(StatusCode::OK, &r.data)
            }
            Ok(r) => {
                let e = r.error.unwrap_or_default();
                tracing::info!(%peer, action = what, target, error = %e, "dashboard action rejected");
                problem(StatusCode::UNPROCESSABLE_ENTITY, &e)
            }
            Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}")),
        }
    }
}

/// The body of `POST /dashboard/api/block`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    /// An address or CIDR.
    net: String,
    /// Required: a block from the page always expires.
    ttl_secs: u64,
    /// Stored with the block, after `dashboard: `.
    #[serde(default)]
    reason: Option<String>,
    /// Block on every node of the cluster.
    #[serde(default)]
    cluster: bool,
}

/// The body of `POST /dashboard/api/unblock`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnblockBody {
    net: String,
    #[serde(default)]
    cluster: bool,
}

/// Why a dashboard action's body is refused (the page's or its user's:
/// 400 with this text).
#[derive(Debug, thiserror::Error)]
enum ActionError {
    /// The unblock body is not the expected JSON.
    #[error("invalid unblock body: {0}")]
    UnblockBody(serde_json::Error),
    /// The block body is not the expected JSON.
    #[error("invalid block body: {0}")]
    BlockBody(serde_json::Error),
    /// `net` is not an address or CIDR.
    #[error("net must be an IP address or CIDR, e.g. 192.0.2.7 or 2001:db8::/64")]
    Net,
    /// `ttl_secs` is 0 or above [`MAX_BLOCK_TTL`].
    #[error(
        "ttl_secs must be between 1 and {} (30 days); permanent blocks are for the CLI",
        MAX_BLOCK_TTL.as_secs()
    )]
    Ttl,
    /// The reason has control characters (they would forge log lines).
    #[error("the reason must not contain control characters")]
    ReasonControl,
}

/// The admin request an action body asks for; errors say what is wrong.
/// `net` must parse as an address or CIDR here already, so nothing but a
/// valid network reaches the handler or the log.
fn parse_action(body: &[u8], unblock: bool) -> Result<AdminRequest, ActionError> {
    let valid_net = |net: &str| {
        net.parse::<crate::net::Net>()
            .map(|_| ())
            .map_err(|_| ActionError::Net)
    };
    if unblock {
        let b: UnblockBody = serde_json::from_slice(body).map_err(ActionError::UnblockBody)?;
        valid_net(&b.net)?;
        return Ok(AdminRequest::BlockDel {
            net: b.net,
            cluster: b.cluster,
        });
    }
    let b: BlockBody = serde_json::from_slice(body).map_err(ActionError::BlockBody)?;
    valid_net(&b.net)?;
    if b.ttl_secs == 0 || b.ttl_secs > MAX_BLOCK_TTL.as_secs() {
        return Err(ActionError::Ttl);
    }
    let reason = match b.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => {
            if r.chars().any(char::is_control) {
                return Err(ActionError::ReasonControl);
            }
            format!("dashboard: {r}")
        }
        _ => "dashboard".into(),
    };
    Ok(AdminRequest::BlockAdd {
        net: b.net,
        ttl_secs: Some(b.ttl_secs),
        reason: Some(reason),
        cluster: b.cluster,
    })
}

/// Why a request is cross-site (`None`: it is not, or the client did not
/// say). `Origin` must name the `Host` it was sent to; `Sec-Fetch-Site`,
/// when sent, must be `same-origin`.
fn cross_site(h: &HeaderMap) -> Option<&'static str> {
    if let Some(site) = h.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
        && site.as_bytes() != b"none"
    {
        return Some("Sec-Fetch-Site is not same-origin");
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h
            .get(header::HOST)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let o = origin.as_bytes();
        let authority = o
            .strip_prefix(b"http://")
            .or_else(|| o.strip_prefix(b"https://"));
        if authority != Some(host) {
            return Some("the Origin header does not match the Host");
        }
    }
    None
}

/// `Host` is `localhost` or a loopback address (any port).
fn loopback_host(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(n, _)| n).unwrap_or(host),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{v}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An RFC 9457 problem+json answer.
fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let mut r = json_response(
        status,
        &json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "detail": detail,
        }),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "missing or wrong X-Gateway-Token (the content of [observability.dashboard] token_file)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("X-Gateway-Token realm=\"gateway dashboard\""),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = problem(StatusCode::METHOD_NOT_ALLOWED, &format!("use {allow}"));
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A redirect to `to` (a path on this listener).
pub fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_hosts_only() {
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST",
            "[::1]:9901",
            "127.1.2.3",
        ] {
            assert!(loopback_host(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "10.0.0.1:9901",
            "[::2]:1",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn cross_site_requests_are_named() {
        let same = headers(&[
            ("host", "127.0.0.1:9901"),
            ("origin", "http://127.0.0.1:9901"),
        ]);
        assert_eq!(cross_site(&same), None);
        for (k, v) in [
            ("origin", "http://evil.example"),
            ("origin", "http://127.0.0.1:9902"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let mut h = headers(&[("host", "127.0.0.1:9901")]);
            h.insert(k, HeaderValue::from_static(v));
            assert!(cross_site(&h).is_some(), "{k}: {v}");
        }
    }

    #[test]
    fn action_bodies_are_checked() {
        let r = parse_action(
            br#"{"net":"192.0.2.1","ttl_secs":60,"reason":"scan"}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            r,
            AdminRequest::BlockAdd {
                net: "192.0.2.1".into(),
                ttl_secs: Some(60),
                reason: Some("dashboard: scan".into()),
                cluster: false
            }
        );
        for bad in [
            &br#"{"net":"192.0.2.1"}"#[..],
            br#"{"net":"192.0.2.1","ttl_secs":0}"#,
            br#"{"net":"192.0.2.1","ttl_secs":99999999}"#,
            br#"{"net":"192.0.2.1","ttl_secs":60,"reason":"a\nb"}"#,
            br#"{"net":"192.0.2.1","ttl_secs":60,"extra":1}"#,
            br#"{"net":"192.0.2.1\nforged log line","ttl_secs":60}"#,
            br#"{"net":"example.com","ttl_secs":60}"#,
            br#"{"net":"192.0.2.0/33","ttl_secs":60}"#,
            b"net=192.0.2.1",
        ] {
            assert!(
                parse_action(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_action(br#"{"net":"192.0.2.1"}"#, true).is_ok());
        assert!(parse_action(br#"{"net":"2001:db8::/64"}"#, true).is_ok());
        assert!(parse_action(br#"{"net":"not an address"}"#, true).is_err());
    }
}
