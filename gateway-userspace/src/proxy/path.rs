//! Path normalization, done once before routing; the normalized path is the
//! one matched and the one forwarded, so the upstream never sees a path the
//! router did not. Steps (Envoy's edge settings): decode percent-encoded
//! unreserved characters (including `%2e`, so `%2e%2e` is a dot segment),
//! uppercase the hex of the escapes that stay, merge repeated slashes,
//! remove `.` and `..` segments (never above the root). `%2F` stays encoded:
//! it is data, not a separator. A malformed escape or a control character
//! is an error (400).

#![forbid(unsafe_code)]

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
}

/// Normalizes the path part of a request target (no query).
pub fn normalize(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path.as_bytes())?;
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
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

fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let (h, l) = (hex_val(hex[0])?, hex_val(hex[1])?);
            let c = (h << 4) | l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
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
    use super::normalize;

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
}
