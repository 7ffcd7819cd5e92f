//! Path normalization, done once before routing; the normalized path is the
//! one matched and the one forwarded, so the upstream never sees a path the
//! router did not. Steps (Envoy's edge settings): decode percent-encoded
//! unreserved characters (including `%2e`, so `%2e%2e` is a dot segment),
//! uppercase the hex of the escapes that stay, merge repeated slashes,
//! remove `.` and `..` segments (never above the root). A malformed escape
//! or a control character is an error (400).
//!
//! Escaped separators (`%2F`, `%5C`, and a raw `\`, which RFC 3986 does not
//! allow) follow [`EscapedSlashes`] (Envoy's
//! `path_with_escaped_slashes_action`): refused by default, because a
//! backend that decodes them would resolve `/public/..%2Fapi` to `/api`,
//! outside the route the gateway matched. Percent-encoded control
//! characters (`%00`–`%1F`, `%7F`) follow [`EscapedControls`]: refused by
//! default (NUL and CR/LF truncate or split paths in many backends).

#![forbid(unsafe_code)]

use serde::Deserialize;

/// What to do with `%2F` and `%5C` (and a raw `\`) in a request path.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400 `bad_path` (Envoy `REJECT_REQUEST`).
    #[default]
    Reject,
    /// Forward them encoded as `%2F`/`%5C`; they are data, not separators
    /// (Envoy `KEEP_UNCHANGED`). A raw `\` is forwarded as `%5C`.
    Keep,
    /// Decode them to `/` before dot segments are removed and the path is
    /// routed, so the route sees what such a backend sees (Envoy
    /// `UNESCAPE_AND_FORWARD`; a backslash becomes `/`, as WHATWG URL
    /// parsing does for http).
    Decode,
}

/// What to do with percent-encoded control characters (`%00`–`%1F`, `%7F`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedControls {
    /// 400 `bad_path`.
    #[default]
    Reject,
    /// Forward them encoded.
    Keep,
}

/// What to do with `;` path parameters (`/a;jsessionid=1/b`).
///
/// Tomcat, Jetty and Spring strip `;params` from every segment before they
/// route, so `/secret;/x` is `/secret/x` to them and `/public/..;/secret`
/// is `/secret`, while the gateway would route the literal path. An encoded
/// `%3B` is data to them (not a separator) and is kept encoded here.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// 400 `bad_path` for any `;` in the path.
    #[default]
    Reject,
    /// Forward them (APIs that use matrix parameters). A segment that is
    /// empty, `.` or `..` once its parameters are removed (`..;x`, `.;`,
    /// `%2e%2e;`, `;x`) is still 400: such a backend would resolve it.
    Keep,
}

/// The path rules from `[limits]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathRules {
    /// `[limits] escaped_slashes`: `%2F`, `%5C` and `\` in paths.
    pub escaped_slashes: EscapedSlashes,
    /// `[limits] escaped_controls`: `%00`-`%1F` and `%7F` in paths.
    pub escaped_controls: EscapedControls,
    /// `[limits] path_parameters`: `;` matrix parameters in path segments.
    pub path_parameters: PathParameters,
}

/// Why a path cannot be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// A byte that may not appear in a path (control, space, non-ASCII, `#`).
    #[error("invalid character in path")]
    BadChar,
    /// `%2F`, `%5C` or a raw `\` with `escaped_slashes = "reject"`.
    #[error("escaped slash or backslash in path (%2F, %5C or \\)")]
    EscapedSlash,
    /// `%00`–`%1F` or `%7F` with `escaped_controls = "reject"`.
    #[error("percent-encoded control character in path")]
    EscapedControl,
    /// A `;` with `path_parameters = "reject"`.
    #[error("';' path parameters are not allowed")]
    PathParameter,
    /// `..;x`, `.;x` or `;x` as a segment: a dot or empty segment with
    /// parameters, which backends that strip parameters resolve.
    #[error("a dot or empty path segment carries ';' parameters")]
    DotParameter,
}

/// Normalizes a path with the default rules (`%2F` kept as data): the form
/// route patterns in the config are checked against.
pub fn normalize(path: &str) -> Result<String, PathError> {
    normalize_with(
        path,
        PathRules {
            escaped_slashes: EscapedSlashes::Keep,
            escaped_controls: EscapedControls::Reject,
            path_parameters: PathParameters::Keep,
        },
    )
}

/// Normalizes the path part of a request target (no query) under `rules`.
///
/// # Errors
/// A [`PathError`] saying what is wrong; the caller answers 400.
pub fn normalize_with(path: &str, rules: PathRules) -> Result<String, PathError> {
    if is_normal(path) {
        return Ok(path.to_owned());
    }
    normalize_slow(path, rules)
}

/// Already in normal form under any rules: only visible ASCII without `%`,
/// `\`, `;`, `#` or `?`, and no empty, `.` or `..` segment except a final
/// empty one (the trailing slash). Most request paths are; normalizing one
/// would change nothing, so it is copied as is.
pub fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/')
        || !bytes
            .iter()
            .all(|&c| c.is_ascii_graphic() && !matches!(c, b'%' | b'\\' | b';' | b'#' | b'?'))
    {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if s == "." || s == ".." || (s.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn normalize_slow(path: &str, rules: PathRules) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path.as_bytes(), rules)?;
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        if let Some((name, _)) = seg.split_once(';') {
            if rules.path_parameters == PathParameters::Reject {
                return Err(PathError::PathParameter);
            }
            if matches!(name, "" | "." | "..") {
                return Err(PathError::DotParameter);
            }
        }
        match *seg {
            // Empty segments come from repeated slashes; only a final one
            // (a trailing slash) is kept.
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    Ok(result)
}

fn decode_unreserved(bytes: &[u8], rules: PathRules) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let (h, l) = (hex_val(hex[0])?, hex_val(hex[1])?);
            let c = (h << 4) | l;
            if c.is_ascii_control() && rules.escaped_controls == EscapedControls::Reject {
                return Err(PathError::EscapedControl);
            }
            if matches!(c, b'/' | b'\\') {
                match rules.escaped_slashes {
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::Decode => {
                        out.push('/');
                        i += 3;
                        continue;
                    }
                    EscapedSlashes::Keep => {}
                }
            }
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
        } else if b == b'\\' {
            match rules.escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => out.push_str("%5C"),
                EscapedSlashes::Decode => out.push('/'),
            }
            i += 1;
        } else if b.is_ascii_graphic() && b != b'#' && b != b'?' {
            out.push(b as char);
            i += 1;
        } else {
            return Err(PathError::BadChar);
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Result<u8, PathError> {
    (b as char)
        .to_digit(16)
        .map(|d| d as u8)
        .ok_or(PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap()
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/v1/admin/../public"), "/v1/public");
        assert_eq!(n("/v1/admin/%2e%2e/public"), "/v1/public");
        assert_eq!(n("/v1/admin/%2E%2e/public"), "/v1/public");
        assert_eq!(n("/a/./b/"), "/a/b/");
        assert_eq!(n("//a///b"), "/a/b");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn escapes() {
        assert_eq!(n("/%61%62c"), "/abc");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%2f..%2fb"), "/a%2F..%2Fb");
        assert!(normalize("/a%zz").is_err());
        assert!(normalize("/a%2").is_err());
        assert!(normalize("a/b").is_err());
    }

    fn with(p: &str, escaped_slashes: EscapedSlashes) -> Result<String, PathError> {
        normalize_with(
            p,
            PathRules {
                escaped_slashes,
                escaped_controls: EscapedControls::Reject,
                path_parameters: PathParameters::Reject,
            },
        )
    }

    #[test]
    fn escaped_slashes() {
        use EscapedSlashes::*;
        for p in [
            "/public/..%2Fapi/echo",
            "/public/..%2fapi/echo",
            "/a%5Cb",
            "/a%5cb",
            "/a\\b",
            "/public/..\\api",
        ] {
            assert_eq!(with(p, Reject), Err(PathError::EscapedSlash), "{p}");
        }
        assert_eq!(
            with("/public/..%2Fapi/echo", Keep).unwrap(),
            "/public/..%2Fapi/echo"
        );
        assert_eq!(with("/a\\b", Keep).unwrap(), "/a%5Cb");
        assert_eq!(with("/public/..%2Fapi/echo", Decode).unwrap(), "/api/echo");
        assert_eq!(with("/public/..%5capi/echo", Decode).unwrap(), "/api/echo");
        assert_eq!(with("/public/..\\api/echo", Decode).unwrap(), "/api/echo");
        assert_eq!(with("/a%2F%2Fb", Decode).unwrap(), "/a/b");
        // `%252F` is a literal `%2F` in data: never a separator here.
        assert_eq!(with("/a%252Fb", Reject).unwrap(), "/a%252Fb");
    }

    #[test]
    fn escaped_controls() {
        for p in ["/a%00b", "/a%0d%0ab", "/a%0A", "/a%1f", "/a%7F", "/a%09"] {
            assert_eq!(normalize(p), Err(PathError::EscapedControl), "{p}");
        }
        let keep = PathRules {
            escaped_slashes: EscapedSlashes::Reject,
            escaped_controls: EscapedControls::Keep,
            path_parameters: PathParameters::Reject,
        };
        assert_eq!(normalize_with("/a%00b", keep).unwrap(), "/a%00b");
        assert_eq!(normalize("/a%20b").unwrap(), "/a%20b");
    }

    #[test]
    fn the_fast_path_agrees_with_full_normalization() {
        let rules = PathRules {
            escaped_slashes: EscapedSlashes::Keep,
            escaped_controls: EscapedControls::Reject,
            path_parameters: PathParameters::Keep,
        };
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b/c",
            "/a//b",
            "//",
            "/a/.",
            "/a/..",
            "/./a",
            "/../a",
            "/a/./b/",
            "/.a/..b/...",
            "/a.b/c~d_e-f",
            "/A/B",
            "/a;b",
            "/%41",
            "/a?b",
            "/é",
            "/a b",
            "/a/../../b",
            "/.",
            "/..",
            "///",
            "/a/b//",
        ] {
            if is_normal(p) {
                assert_eq!(
                    normalize_slow(p, rules).as_deref(),
                    Ok(p),
                    "the fast path took {p:?}"
                );
            }
        }
        assert!(is_normal("/api/items/1") && is_normal("/") && is_normal("/a/"));
        assert!(!is_normal("/a//b") && !is_normal("/a/./b") && !is_normal("/%2e"));
    }
}
