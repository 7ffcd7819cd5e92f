//! The check phase: limits that hyper does not enforce the way a proxy
//! should (414 for a long request target, 431 for header bytes, 413 for a
//! declared body), header names with underscores, the Host, and path
//! normalization. A request that fails here never reaches a route.

#![forbid(unsafe_code)]

use http::{HeaderMap, Request, header};

use super::{
    config::Limits,
    headers, path,
    reject::{Reason, Rejection},
};

/// What the check phase learned about a request.
#[derive(Debug)]
pub struct Checked {
    /// Lowercase host without port, for routing.
    pub host: Option<String>,
    /// Host as sent, with port, for `X-Forwarded-Host`.
    pub authority: Option<String>,
    /// Normalized path: the one routed and forwarded.
    pub path: String,
    /// Query string, unchanged.
    pub query: Option<String>,
}

/// Whether the request announces a body.
pub fn may_have_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

pub fn check<B>(req: &mut Request<B>, limits: &Limits) -> Result<Checked, Rejection> {
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > limits.max_request_line {
        return Err(Rejection::new(
            Reason::UriTooLong,
            format!(
                "the request target is longer than {} bytes",
                limits.max_request_line
            ),
        ));
    }
    let h = req.headers_mut();
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if h.len() > limits.max_headers || bytes > limits.max_header_bytes {
        return Err(Rejection::new(
            Reason::HeadersTooLarge,
            format!(
                "at most {} header fields and {} bytes of headers are allowed",
                limits.max_headers, limits.max_header_bytes
            ),
        ));
    }
    if let Some(name) = headers::underscores(h, limits.underscore_headers) {
        return Err(Rejection::new(
            Reason::UnderscoreHeader,
            format!("header name '{name}' contains an underscore"),
        ));
    }
    let cl: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    if !cl.is_empty() {
        let parsed: Option<Vec<u64>> = cl
            .iter()
            .map(|v| v.to_str().ok()?.trim().parse().ok())
            .collect();
        match parsed.as_deref() {
            Some([n, rest @ ..]) if rest.iter().all(|m| m == n) => {
                if *n > limits.max_body_bytes {
                    return Err(Rejection::new(
                        Reason::BodyTooLarge,
                        format!(
                            "the request body is larger than {} bytes",
                            limits.max_body_bytes
                        ),
                    ));
                }
            }
            _ => return Err(Rejection::new(Reason::BadRequest, "invalid Content-Length")),
        }
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let host = authority.as_deref().map(host_without_port);
    let path = path::normalize(req.uri().path())
        .map_err(|e| Rejection::new(Reason::BadPath, format!("bad request path: {e}")))?;
    Ok(Checked {
        host,
        authority,
        path,
        query: req.uri().query().map(str::to_owned),
    })
}

/// `Example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn host_without_port(authority: &str) -> String {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if a.starts_with('[') {
        a.split_once(']')
            .map_or(a.to_owned(), |(h, _)| format!("{h}]"))
    } else {
        a.split(':').next().unwrap_or(a).to_owned()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn hosts() {
        assert_eq!(host_without_port("Example.COM:8080"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("a.example."), "a.example");
    }
}
