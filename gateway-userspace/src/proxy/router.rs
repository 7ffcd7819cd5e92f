//! The route table: picks the most specific route for a request's host,
//! normalized path, method and headers. Specificity, most important first:
//! exact host, then wildcard host (longer suffix first), then any host;
//! exact path over prefix, longer prefix first; more header conditions;
//! a method list over none. Config validation guarantees no two routes tie.

#![forbid(unsafe_code)]

use std::sync::Arc;

use http::{HeaderMap, Method};

use super::config::{HostPattern, Route as RouteConfig};

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's `id` from the config (logs, metrics, the access log).
    pub id: Arc<str>,
    /// The name of the upstream pool requests go to.
    pub upstream: Arc<str>,
    /// CORS, when the route allows cross-origin browser requests.
    pub cors: Option<Arc<super::cors::Cors>>,
    /// `[security_headers]` with this route's overrides applied.
    pub security: Arc<super::config::SecurityHeaders>,
    /// The route's `request_buffering` (absent: the `[limits]` default).
    pub request_buffering: Option<bool>,
    /// The calls of an aggregate route (`upstream` is then `-`).
    pub aggregate: Option<Arc<super::aggregate::Plan>>,
    /// The route's request metrics, resolved at its first request.
    pub series: crate::observe::metrics::RouteSeries,
    host: Option<HostPattern>,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, String)>,
    rewrite_prefix: Option<String>,
}

#[derive(Debug)]
enum PathMatch {
    Exact(String),
    Prefix(String),
    /// An aggregate route's `path` with `{name}` segments: `None` matches
    /// any one non-empty segment.
    Template(Vec<Option<String>>),
}

impl Route {
    fn from_config(c: &RouteConfig, security: &super::config::SecurityHeaders) -> Self {
        let aggregate = (!c.aggregate.is_empty()).then(|| {
            let plan = super::aggregate::Plan::compile(
                c,
                &c.aggregate
                    .iter()
                    .map(|a| a.upstream.get_ref().clone())
                    .collect(),
            )
            .expect("validated: the aggregate plan compiles");
            Arc::new(plan)
        });
        let path = match (&c.path, &c.path_prefix) {
            (Some(p), _) if aggregate.as_ref().is_some_and(|a| !a.params.is_empty()) => {
                PathMatch::Template(
                    p.0.split('/')
                        .map(|seg| (!seg.starts_with('{')).then(|| seg.to_owned()))
                        .collect(),
                )
            }
            (Some(p), _) => PathMatch::Exact(p.0.clone()),
            (None, Some(p)) => PathMatch::Prefix(p.0.clone()),
            (None, None) => unreachable!("validated: one of path and path_prefix"),
        };
        Self {
            id: c.id.get_ref().as_str().into(),
            upstream: c
                .upstream
                .as_ref()
                .map_or("-", |u| u.get_ref().as_str())
                .into(),
            aggregate,
            series: Default::default(),
            cors: c.cors.clone().map(Arc::new),
            security: Arc::new(security.merged(&c.security_headers)),
            request_buffering: c.request_buffering,
            host: c.host.clone(),
            path,
            methods: c
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.0.as_bytes()).ok())
                .collect(),
            headers: c
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        http::HeaderName::from_bytes(k.0.as_bytes()).ok()?,
                        v.clone(),
                    ))
                })
                .collect(),
            rewrite_prefix: c.rewrite_prefix.as_ref().map(|p| p.0.clone()),
        }
    }

    fn matches(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> bool {
        if let Some(pattern) = &self.host {
            match host {
                Some(h) if pattern.matches(h) => {}
                _ => return false,
            }
        }
        let path_ok = match &self.path {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Template(segs) => {
                let mut got = path.split('/');
                segs.iter().all(|want| match (want, got.next()) {
                    (Some(lit), Some(seg)) => lit == seg,
                    (None, Some(seg)) => !seg.is_empty(),
                    (_, None) => false,
                }) && got.next().is_none()
            }
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(k, v)| {
                headers
                    .get_all(k)
                    .iter()
                    .any(|h| h.as_bytes() == v.as_bytes())
            })
    }

    /// The values of an aggregate route's `{name}` path parameters in
    /// `path` (which matched), percent-decoded, in path order.
    ///
    /// # Errors
    /// A value that does not decode to UTF-8 (400 at the caller).
    pub fn path_params(&self, path: &str) -> Result<Vec<String>, String> {
        let PathMatch::Template(segs) = &self.path else {
            return Ok(Vec::new());
        };
        segs.iter()
            .zip(path.split('/'))
            .filter(|(want, _)| want.is_none())
            .map(|(_, seg)| {
                super::aggregate::template::decode(seg)
                    .ok_or_else(|| format!("path segment '{seg}' is not UTF-8 text"))
            })
            .collect()
    }

    /// The path to forward: the prefix replaced when `rewrite_prefix` is set.
    /// Borrowed (no copy) when the route does not rewrite.
    pub fn rewrite<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        match (&self.path, &self.rewrite_prefix) {
            (PathMatch::Prefix(p), Some(to)) => {
                let rest = &path[p.len()..];
                match (to.ends_with('/'), rest.starts_with('/')) {
                    (true, true) => format!("{to}{}", &rest[1..]),
                    (false, false) if !rest.is_empty() => format!("{to}/{rest}"),
                    _ => format!("{to}{rest}"),
                }
                .into()
            }
            _ => path.into(),
        }
    }
}

/// All routes, most specific first.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    /// Compiles the routes and sorts them most specific first: exact host before wildcard (longer
    /// suffix first) before none, then exact path, templates with fewer parameters, longer
    /// prefixes, then more header matches.
    pub fn new(configs: &[RouteConfig], security: &super::config::SecurityHeaders) -> Self {
        let mut routes: Vec<Route> = configs
            .iter()
            .map(|c| Route::from_config(c, security))
            .collect();
        routes.sort_by_cached_key(Route::rank);
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// Whether some route lists `method` (uppercase) in its `methods`.
    pub fn lists_method(&self, method: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.methods.iter().any(|m| m.as_str() == method))
    }

    /// The most specific matching route. `host` is lowercase without port.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .find(|r| r.matches(host, path, method, headers))
            .cloned()
    }
}

impl Route {
    /// Sort key: smaller is more specific.
    fn rank(&self) -> ((u8, usize), (u8, usize), usize, bool) {
        let host = match &self.host {
            Some(HostPattern::Exact(_)) => (0, 0),
            Some(HostPattern::Wildcard(s)) => (1, usize::MAX - s.len()),
            None => (2, 0),
        };
        let path = match &self.path {
            PathMatch::Exact(_) => (0, 0),
            // After exact paths, fewer parameters first; before prefixes.
            PathMatch::Template(segs) => (0, 1 + segs.iter().filter(|s| s.is_none()).count()),
            PathMatch::Prefix(p) => (1, usize::MAX - p.len()),
        };
        (
            host,
            path,
            usize::MAX - self.headers.len(),
            self.methods.is_empty(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml: &str) -> Router {
        let c = crate::config::Config::parse(toml, "t").unwrap();
        Router::new(&c.routes, &c.security_headers)
    }

    const UP: &str = "[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n";

    #[test]
    fn most_specific_wins() {
        let r = router(&format!(
            "{UP}[[routes]]\nid = \"all\"\npath_prefix = \"/\"\nupstream = \"u\"\n\
             [[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = \"u\"\n\
             [[routes]]\nid = \"api2\"\npath_prefix = \"/api/\"\nheaders = {{ accept-version = \"2\" }}\nupstream = \"u\"\n\
             [[routes]]\nid = \"host\"\nhost = \"*.example.com\"\npath_prefix = \"/\"\nupstream = \"u\"\n"
        ));
        let h = HeaderMap::new();
        let find =
            |host, path, h: &HeaderMap| r.find(host, path, &Method::GET, h).unwrap().id.to_string();
        assert_eq!(find(None, "/x", &h), "all");
        assert_eq!(find(None, "/api/x", &h), "api");
        let mut v2 = HeaderMap::new();
        v2.insert("accept-version", "2".parse().unwrap());
        assert_eq!(find(None, "/api/x", &v2), "api2");
        assert_eq!(find(Some("a.example.com"), "/api/x", &h), "host");
        assert_eq!(find(Some("example.com"), "/api/x", &h), "api");
    }

    #[test]
    fn aggregate_path_parameters() {
        let agg = |id: &str, path: &str| {
            format!(
                "[[routes]]\nid = \"{id}\"\npath = \"{path}\"\naggregate = [ {{ name = \"a\", upstream = \"u\", path = \"/x\" }} ]\n"
            )
        };
        let r = router(&format!(
            "{UP}[[routes]]\nid = \"prefix\"\npath_prefix = \"/users/\"\nupstream = \"u\"\n\
             [[routes]]\nid = \"me\"\npath = \"/users/me/orders\"\nupstream = \"u\"\n{}{}",
            agg("one", "/users/{id}/orders"),
            agg("two", "/users/{id}/orders/{order}")
        ));
        let find = |path| {
            r.find(None, path, &Method::GET, &HeaderMap::new())
                .unwrap()
                .id
                .to_string()
        };
        assert_eq!(find("/users/me/orders"), "me");
        assert_eq!(find("/users/7/orders"), "one");
        assert_eq!(find("/users/7/orders/9"), "two");
        assert_eq!(find("/users/7/orders/9/x"), "prefix");
        assert_eq!(find("/users//orders"), "prefix");
        let two = r
            .find(
                None,
                "/users/a%20b/orders/9",
                &Method::GET,
                &HeaderMap::new(),
            )
            .unwrap();
        assert_eq!(
            two.path_params("/users/a%20b/orders/9").unwrap(),
            ["a b", "9"]
        );
    }

    #[test]
    fn rewrite_prefix() {
        let r = router(&format!(
            "{UP}[[routes]]\nid = \"v1\"\npath_prefix = \"/api/v1/\"\nrewrite_prefix = \"/\"\nupstream = \"u\"\n"
        ));
        let route = r
            .find(None, "/api/v1/users", &Method::GET, &HeaderMap::new())
            .unwrap();
        assert_eq!(route.rewrite("/api/v1/users"), "/users");
        assert_eq!(route.rewrite("/api/v1/"), "/");
    }
}
