//! Path normalization and routing, as the proxy does them for every
//! request: `proxy::path::normalize` on the request path, then
//! `Router::find` on (host, normalized path, method, headers) and the
//! matched route's `rewrite`. Input: `HOST\nMETHOD\nPATH` (missing parts are
//! empty). Checked beyond "no panic":
//! - a normalized path starts with `/`, has no empty, `.` or `..` segment,
//!   no control or non-ASCII byte, and normalizing it again changes nothing;
//! - the path forwarded after a prefix rewrite starts with `/`.

#![no_main]

use std::sync::LazyLock;

use gateway::{
    config::Config,
    proxy::{path::normalize, router::Router},
};
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;

/// Every kind of route: exact and prefix paths, exact and wildcard hosts,
/// methods, header conditions and prefix rewrites (with and without a
/// trailing slash on either side).
const ROUTES: &str = r#"
[[upstreams]]
name = "u"
targets = ["127.0.0.1:1"]

[[routes]]
id = "root"
path_prefix = "/"
upstream = "u"

[[routes]]
id = "exact"
path = "/health"
upstream = "u"

[[routes]]
id = "api"
path_prefix = "/api/"
methods = ["GET", "POST"]
upstream = "u"

[[routes]]
id = "api-v2"
path_prefix = "/api/"
headers = { accept-version = "2" }
upstream = "u"

[[routes]]
id = "v1"
path_prefix = "/api/v1/"
rewrite_prefix = "/"
upstream = "u"

[[routes]]
id = "legacy"
path_prefix = "/legacy"
rewrite_prefix = "/new"
upstream = "u"

[[routes]]
id = "wild"
host = "*.example.com"
path_prefix = "/static/"
rewrite_prefix = "/assets"
upstream = "u"

[[routes]]
id = "host"
host = "api.example.com"
path_prefix = "/"
upstream = "u"
"#;

static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    let c = Config::parse(ROUTES, "fuzz-routes.toml").expect("the fuzz route table is valid");
    Router::new(&c.routes, &c.security_headers)
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let host = parts.next().unwrap_or("");
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");

    let Ok(normalized) = normalize(path) else {
        return;
    };
    assert!(normalized.starts_with('/'), "{path:?} -> {normalized:?}");
    assert!(
        normalized.bytes().all(|b| b.is_ascii_graphic()),
        "{path:?} -> {normalized:?}"
    );
    let segments: Vec<&str> = normalized[1..].split('/').collect();
    let inner = &segments[..segments.len() - 1];
    assert!(
        inner.iter().all(|s| !matches!(*s, "" | "." | "..")),
        "{path:?} -> {normalized:?}: empty or dot segment"
    );
    assert!(
        !matches!(segments[segments.len() - 1], "." | ".."),
        "{path:?} -> {normalized:?}: dot segment"
    );
    assert_eq!(
        normalize(&normalized).as_deref(),
        Ok(normalized.as_str()),
        "normalizing {path:?} twice changes it"
    );

    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let host = (!host.is_empty()).then(|| host.to_ascii_lowercase());
    let mut headers = HeaderMap::new();
    headers.insert("accept-version", http::HeaderValue::from_static("2"));
    for h in [HeaderMap::new(), headers] {
        if let Some(route) = ROUTER.find(host.as_deref(), &normalized, &method, &h) {
            let forwarded = route.rewrite(&normalized);
            assert!(
                forwarded.starts_with('/'),
                "route {} rewrites {normalized:?} to {forwarded:?}",
                route.id
            );
        }
    }
});
