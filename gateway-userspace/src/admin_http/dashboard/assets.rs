//! The page's static files, embedded in the binary (no CDN, works
//! offline), and the security headers every dashboard answer carries.

#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderValue, header};

/// One embedded file: its body and content type.
pub struct Asset {
    /// The file's bytes, as embedded at build time.
    pub body: &'static [u8],
    /// Its `Content-Type` (with `charset=utf-8` for text).
    pub content_type: &'static str,
}

/// The file served at `path` (below `/dashboard/`), if any.
pub fn get(path: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], _) = match path {
        "" | "index.html" => (
            include_bytes!("../../../assets/dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
        "dashboard.js" => (
            include_bytes!("../../../assets/dashboard/dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        "dashboard.css" => (
            include_bytes!("../../../assets/dashboard/dashboard.css"),
            "text/css; charset=utf-8",
        ),
        "vendor/uPlot.iife.min.js" => (
            include_bytes!("../../../assets/vendor/uplot/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "vendor/uPlot.min.css" => (
            include_bytes!("../../../assets/vendor/uplot/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        "vendor/uPlot.LICENSE" => (
            include_bytes!("../../../assets/vendor/uplot/LICENSE"),
            "text/plain; charset=utf-8",
        ),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// The page's Content-Security-Policy: scripts, styles and fetches from
/// this listener only, no inline script or style, no framing, no forms,
/// no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Adds the security headers of every dashboard answer (page, assets,
/// API): CSP, no sniffing, no framing, no referrer, isolated from other
/// origins, not cached.
pub fn secure(h: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    for (name, value) in [
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
}
