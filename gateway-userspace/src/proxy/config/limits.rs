//! L7 protection limits and security response headers. Defaults are taken
//! from NGINX, Envoy's edge guidance and HAProxy (shared/pitfalls.md);
//! docs/proxy.md lists each with its origin.

#![forbid(unsafe_code)]

use crate::duration::NonZeroSpan;

use serde::Deserialize;

use super::upstream::NonZero;

/// Request size, time and concurrency limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest request target (path + query) in bytes; 414 beyond.
    pub max_request_line: usize,
    /// Total bytes of request header names and values; 431 beyond.
    pub max_header_bytes: usize,
    /// Number of request header fields; 431 beyond.
    pub max_headers: usize,
    /// Request body bytes, declared or streamed; 413 beyond.
    pub max_body_bytes: u64,
    /// Time to receive a request's complete headers; 408 after it.
    pub header_read_timeout: NonZeroSpan,
    /// Longest wait for the next piece of a request body; 408 after it.
    pub body_read_timeout: NonZeroSpan,
    /// A connection with no request in flight and no traffic is closed after this.
    pub idle_timeout: NonZeroSpan,
    /// Open client connections across all listeners; more are closed at accept.
    pub max_connections: usize,
    /// Open client connections from one client IP; more are closed at accept.
    pub max_connections_per_ip: usize,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before we accept them (rapid reset).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams we reset because of client errors before closing.
    pub h2_max_local_error_reset_streams: usize,
    /// What to do with request header names containing `_`.
    pub underscore_headers: UnderscoreHeaders,
    /// On shutdown, and on a listener a reload removed, how long in-flight
    /// requests may take to finish before their connections are closed.
    pub shutdown_grace: NonZeroSpan,
    /// Longest request method in bytes; 501 beyond.
    pub max_method_length: usize,
    /// `%2F`, `%5C` and a raw `\` in the path: `reject` (400), `keep` or `decode`.
    pub escaped_slashes: crate::proxy::path::EscapedSlashes,
    /// `%00`–`%1F` and `%7F` in the path: `reject` (400) or `keep`.
    pub escaped_controls: crate::proxy::path::EscapedControls,
    /// `;` path parameters: `reject` (400) or `keep` (a dot or empty
    /// segment with parameters is 400 either way).
    pub path_parameters: crate::proxy::path::PathParameters,
    /// Forward `TRACE`; otherwise it is answered 405.
    pub allow_trace: bool,
    /// Read a request body whole (within `max_body_bytes`) before the
    /// upstream is contacted, and forward it with `Content-Length`; a route
    /// may turn it off (`request_buffering = false`) to stream uploads.
    pub request_buffering: bool,
    /// Lowest average body rate in bytes per second once
    /// `body_read_timeout` has passed: a body must be complete within
    /// `body_read_timeout + received / body_min_rate`, so a trickle cannot
    /// hold a request open by sending a byte just before each read
    /// deadline; 408 beyond. 0 turns the rate off.
    pub body_min_rate: u64,
    /// HTTP/2 control frames (SETTINGS, PING, PRIORITY, RST_STREAM, ...)
    /// and empty frames a client may send per second, sustained.
    pub h2_control_frames_per_second: NonZero,
    /// HTTP/2 control and empty frames a client may send at once.
    pub h2_control_frames_burst: NonZero,
    /// HTTP/2 empty DATA (without END_STREAM) or empty HEADERS/CONTINUATION
    /// frames a client may send in a row.
    pub h2_max_consecutive_empty_frames: u32,
    /// HTTP/2 WINDOW_UPDATE frames a client may send per DATA frame the
    /// gateway sent (plus the burst and one per request).
    pub h2_window_updates_per_data_frame: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 8 KiB (NGINX large_client_header_buffers).
            max_request_line: 8 * 1024,
            // 60 KiB (Envoy max_request_headers_kb).
            max_header_bytes: 60 * 1024,
            // 100 fields (Envoy, hyper).
            max_headers: 100,
            // 1 MiB (NGINX client_max_body_size).
            max_body_bytes: 1024 * 1024,
            // 10 seconds (HAProxy uses 5 s, NGINX 60 s).
            header_read_timeout: NonZeroSpan::from_secs(10),
            // 60 seconds between body reads (NGINX client_body_timeout).
            body_read_timeout: NonZeroSpan::from_secs(60),
            // 75 seconds (NGINX keepalive_timeout).
            idle_timeout: NonZeroSpan::from_secs(75),
            // 10,000 connections in total.
            max_connections: 10_000,
            // 256 connections per client IP.
            max_connections_per_ip: 256,
            // 100 streams (Envoy edge guidance).
            h2_max_concurrent_streams: 100,
            // 20 pending-accept resets (hyper's default, rapid reset guard).
            h2_max_pending_accept_reset_streams: 20,
            // 1,024 locally reset streams (hyper's default).
            h2_max_local_error_reset_streams: 1024,
            // Dropped silently (NGINX underscores_in_headers off).
            underscore_headers: UnderscoreHeaders::Drop,
            // 30 seconds for in-flight requests at shutdown.
            shutdown_grace: NonZeroSpan::from_secs(30),
            // 32 bytes (the longest registered method, UPDATEREDIRECTREF, has 17).
            max_method_length: 32,
            // Refused with 400 (Envoy edge guidance: REJECT_REQUEST).
            escaped_slashes: crate::proxy::path::EscapedSlashes::Reject,
            // Refused with 400.
            escaped_controls: crate::proxy::path::EscapedControls::Reject,
            // Refused with 400: Tomcat/Jetty/Spring route `/a;x/b` as `/a/b`.
            path_parameters: crate::proxy::path::PathParameters::Reject,
            // Off: 405 (NGINX refuses TRACE with 405 always).
            allow_trace: false,
            // On (NGINX proxy_request_buffering on).
            request_buffering: true,
            // 500 bytes per second after the first body_read_timeout
            // (Apache mod_reqtimeout MinRate=500).
            body_min_rate: 500,
            // 100 control frames per second sustained (Envoy-style flood guard).
            h2_control_frames_per_second: NonZero(100),
            // 1,000 control frames at once (Envoy max_outbound_control_frames).
            h2_control_frames_burst: NonZero(1000),
            // 1 empty frame in a row (Envoy max_consecutive_inbound_frames_with_empty_payload).
            h2_max_consecutive_empty_frames: 1,
            // 10 per DATA frame sent (Envoy max_inbound_window_update_frames_per_data_frame_sent).
            h2_window_updates_per_data_frame: 10,
        }
    }
}

/// Handling of header names with underscores (they can alias `-` names in
/// CGI-style backends).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Forward them.
    Allow,
    /// Remove them before forwarding.
    Drop,
    /// Answer 400.
    Reject,
}

/// Headers added to responses. An empty string turns one off.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityHeaders {
    /// Off: no header is added (what the upstream sends passes unchanged). Default on.
    pub enabled: bool,
    /// `X-Content-Type-Options`.
    pub content_type_options: String,
    /// `X-Frame-Options`.
    pub frame_options: String,
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `Content-Security-Policy` on every response that has none (the
    /// default suits JSON APIs: nothing may load or frame them).
    pub content_security_policy: String,
    /// `Content-Security-Policy` on the gateway's own problem responses.
    pub problem_csp: String,
    /// `Strict-Transport-Security` on responses over TLS.
    pub hsts: String,
    /// The values above as header values, made once per config generation
    /// (not per response).
    #[serde(skip)]
    values: SecurityValues,
}

/// [`SecurityHeaders`] as header values, in field order:
/// `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`,
/// `Content-Security-Policy`, the problem CSP, HSTS; `None` for an empty
/// (off) or invalid value.
#[derive(Clone, Debug, Default)]
struct SecurityValues(std::sync::OnceLock<[Option<http::HeaderValue>; 6]>);

impl PartialEq for SecurityValues {
    /// Derived from the fields, which are compared themselves.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SecurityHeaders {
    /// The configured values as header values (built on first use).
    pub fn values(&self) -> &[Option<http::HeaderValue>; 6] {
        self.values.0.get_or_init(|| {
            let v = |s: &str| {
                (!s.is_empty())
                    .then(|| http::HeaderValue::from_str(s).ok())
                    .flatten()
            };
            [
                v(&self.content_type_options),
                v(&self.frame_options),
                v(&self.referrer_policy),
                v(&self.content_security_policy),
                v(&self.problem_csp),
                v(&self.hsts),
            ]
        })
    }
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            // On: added when the upstream did not set the header itself.
            enabled: true,
            // Browsers must not guess content types.
            content_type_options: "nosniff".into(),
            // No framing.
            frame_options: "DENY".into(),
            // No referrer leaks.
            referrer_policy: "no-referrer".into(),
            // APIs serve data, never active content (OWASP REST guidance).
            content_security_policy: "default-src 'none'; frame-ancestors 'none'".into(),
            // Problem bodies are data, never active content.
            problem_csp: "default-src 'none'; frame-ancestors 'none'".into(),
            // One year (31,536,000 s), this host only.
            hsts: "max-age=31536000".into(),
            values: SecurityValues::default(),
        }
    }
}

/// Per-route changes to `[security_headers]`: each key set here replaces
/// the global value for that route (an empty string removes the header).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityHeadersOverride {
    /// Replaces `enabled` for the route.
    pub enabled: Option<bool>,
    /// Replaces `content_type_options` (`X-Content-Type-Options`).
    pub content_type_options: Option<String>,
    /// Replaces `frame_options` (`X-Frame-Options`).
    pub frame_options: Option<String>,
    /// Replaces `referrer_policy` (`Referrer-Policy`).
    pub referrer_policy: Option<String>,
    /// Replaces `content_security_policy` (`Content-Security-Policy`).
    pub content_security_policy: Option<String>,
    /// Replaces `hsts` (`Strict-Transport-Security`, on responses over TLS).
    pub hsts: Option<String>,
}

impl SecurityHeaders {
    /// The global headers with a route's overrides applied.
    pub fn merged(&self, o: &SecurityHeadersOverride) -> SecurityHeaders {
        let pick = |v: &Option<String>, base: &String| v.clone().unwrap_or_else(|| base.clone());
        SecurityHeaders {
            enabled: o.enabled.unwrap_or(self.enabled),
            content_type_options: pick(&o.content_type_options, &self.content_type_options),
            frame_options: pick(&o.frame_options, &self.frame_options),
            referrer_policy: pick(&o.referrer_policy, &self.referrer_policy),
            content_security_policy: pick(
                &o.content_security_policy,
                &self.content_security_policy,
            ),
            problem_csp: self.problem_csp.clone(),
            hsts: pick(&o.hsts, &self.hsts),
            values: SecurityValues::default(),
        }
    }
}
