//! A refused request: its status (400, 413 or 415), a metric label, and the
//! violations, rendered as `application/problem+json` (RFC 9457). Messages
//! are written here from what the rule says, never from the request: no
//! value sent by the client is echoed back, and pointers (which can carry
//! client-chosen object keys) are cut short. The list is capped.

#![forbid(unsafe_code)]

use http::StatusCode;
use serde_json::json;

/// Longest message, in characters.
const MAX_MESSAGE_CHARS: usize = 200;
/// Longest pointer, in characters.
const MAX_POINTER_CHARS: usize = 64;

/// Why a request was refused; also its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A path parameter, query parameter or header broke its rule.
    InvalidParams,
    /// The body is JSON but does not match the schema.
    InvalidBody,
    /// The body is not JSON.
    MalformedJson,
    /// An object in the body has the same key twice.
    DuplicateKey,
    /// The body nests deeper than allowed.
    TooDeep,
    /// The body is not UTF-8.
    InvalidUtf8,
    /// The route needs a body and there is none.
    MissingBody,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// The body is over the route's limit (413).
    BodyTooLarge,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::InvalidParams => "invalid_params",
            Reason::InvalidBody => "invalid_body",
            Reason::MalformedJson => "malformed_json",
            Reason::DuplicateKey => "duplicate_key",
            Reason::TooDeep => "too_deep",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::MissingBody => "missing_body",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::BodyTooLarge => "body_too_large",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Reason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Reason::InvalidParams => "The request's parameters or headers break the API's rules.",
            Reason::InvalidBody => "The request body does not match the API's schema.",
            Reason::MalformedJson => "The request body is not valid JSON.",
            Reason::DuplicateKey => "The request body has an object with a repeated key.",
            Reason::TooDeep => "The request body nests too deeply.",
            Reason::InvalidUtf8 => "The request body is not valid UTF-8.",
            Reason::MissingBody => "The request needs a JSON body.",
            Reason::UnsupportedMediaType => {
                "The request body must be sent as application/json (charset utf-8)."
            }
            Reason::BodyTooLarge => "The request body is larger than this API accepts.",
        }
    }
}

/// Which part of the request a violation is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A path parameter (`{id}` of the route's path template).
    Path,
    /// A query parameter.
    Query,
    /// A request header.
    Header,
    /// The JSON body.
    Body,
}

impl Part {
    /// The part as the `in` member of the problem+json `errors` entries:
    /// `path`, `query`, `header` or `body`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Path => "path",
            Part::Query => "query",
            Part::Header => "header",
            Part::Body => "body",
        }
    }
}

/// One broken rule: where (a JSON pointer into the body, or `/name` of a
/// parameter) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    part: Part,
    pointer: String,
    message: String,
}

impl Violation {
    /// A violation; pointer and message are cut to their maximum length.
    pub fn new(part: Part, pointer: &str, message: &str) -> Self {
        Self {
            part,
            pointer: truncate(pointer, MAX_POINTER_CHARS),
            message: truncate(message, MAX_MESSAGE_CHARS),
        }
    }

    /// A violation about the parameter `name` (pointer `/name`).
    pub(crate) fn param(part: Part, name: &str, message: &str) -> Self {
        Self::new(part, &format!("/{}", pointer_token(name)), message)
    }

    /// Which part of the request is wrong.
    pub fn part(&self) -> Part {
        self.part
    }

    /// An RFC 6901 JSON pointer into the body, or `/name` of a parameter; at most 64 characters.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// What is wrong, for the client; at most 200 characters.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A refused request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    violations: Vec<Violation>,
    /// Violations found beyond the cap.
    omitted: usize,
}

impl Rejection {
    /// A rejection listing at most `max` of `violations`.
    pub(crate) fn new(reason: Reason, violations: Vec<Violation>, max: usize) -> Self {
        let mut violations = violations;
        let omitted = violations.len().saturating_sub(max);
        violations.truncate(max);
        Self {
            reason,
            violations,
            omitted,
        }
    }

    /// Counts `more` violations found but not described.
    pub(crate) fn and_more(mut self, more: usize) -> Self {
        self.omitted += more;
        self
    }

    /// A rejection with one violation.
    pub(crate) fn one(reason: Reason, violation: Violation) -> Self {
        Self::new(reason, vec![violation], 1)
    }

    /// 400, 413 (body too large) or 415 (not JSON).
    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }

    /// The metric label: `invalid_params`, `invalid_body`, `malformed_json`,
    /// `duplicate_key`, `too_deep`, `invalid_utf8`, `missing_body`,
    /// `unsupported_media_type`, `body_too_large`.
    pub fn reason(&self) -> &'static str {
        self.reason.label()
    }

    /// Why, as a type.
    pub fn kind(&self) -> Reason {
        self.reason
    }

    /// The violations listed in the response (at most `max_errors`).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The `Content-Type` of [`Rejection::problem_json`].
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    /// The response body: RFC 9457 problem details with an `errors` array of
    /// `{in, pointer, message}`.
    pub fn problem_json(&self) -> Vec<u8> {
        let status = self.status();
        let mut detail = self.reason.detail().to_owned();
        if self.omitted > 0 {
            detail.push_str(&format!(" {} more violation(s) not listed.", self.omitted));
        }
        let errors: Vec<_> = self
            .violations
            .iter()
            .map(|v| json!({ "in": v.part.as_str(), "pointer": v.pointer, "message": v.message }))
            .collect();
        let body = json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Bad Request"),
            "status": status.as_u16(),
            "detail": detail,
            "errors": errors,
        });
        serde_json::to_vec(&body).expect("a JSON value serializes")
    }
}

/// `s` cut to `max` characters, marked with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => {
            let end = s[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// A JSON pointer reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub(crate) fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn problem_json_is_rfc9457_and_capped() {
        let vs = (0..50)
            .map(|i| Violation::new(Part::Body, &format!("/{i}"), "is wrong"))
            .collect();
        let r = Rejection::new(Reason::InvalidBody, vs, 20);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_slice(&r.problem_json()).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["errors"].as_array().unwrap().len(), 20);
        assert!(v["detail"].as_str().unwrap().contains("30 more"));
        assert_eq!(v["errors"][0]["pointer"], "/0");
        assert_eq!(v["errors"][0]["in"], "body");
    }

    #[test]
    fn long_pointers_and_messages_are_cut() {
        let long = "k".repeat(5000);
        let v = Violation::new(Part::Body, &format!("/{long}"), &long);
        assert_eq!(v.pointer().chars().count(), MAX_POINTER_CHARS);
        assert_eq!(v.message().chars().count(), MAX_MESSAGE_CHARS);
    }
}
