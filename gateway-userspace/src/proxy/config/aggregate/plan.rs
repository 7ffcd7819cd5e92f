//! Compiling an aggregate route's config into a [`Plan`]: call names,
//! upstreams, `after` order, templates and copied headers checked once, at
//! config load (errors carry the config span).

#![forbid(unsafe_code)]

use std::{collections::HashSet, ops::Range, sync::Arc, time::Duration};

use http::{HeaderName, Method};

use super::{merge, template::Template};
use crate::proxy::config::{
    Route as RouteConfig,
    aggregate::{self as cfg, MAX_CALLS, Merge},
};

/// Headers a call may not copy from the client: they frame the client's
/// message or connection (a copied `Content-Length` on a body-less call
/// would desynchronize the upstream connection), or name its host.
const FRAMING: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "host",
    "content-type",
];

/// A compiled aggregate route.
#[derive(Debug)]
pub struct Plan {
    /// The calls, in config order (the order `keys` and `deep` merges apply them).
    pub calls: Vec<Call>,
    /// How the successful bodies are combined.
    pub merge: Merge,
    /// Whole-request deadline.
    pub deadline: Duration,
    /// Most body bytes read over all calls.
    pub max_total_bytes: usize,
    /// The route's path parameter names, in path order.
    pub params: Vec<String>,
}

/// One compiled call.
#[derive(Debug)]
pub struct Call {
    /// The call's name: its key in a `named` merge, and a metrics and log label.
    pub name: Arc<str>,
    /// The upstream pool the call goes to.
    pub upstream: Arc<str>,
    pub(in crate::proxy) method: Method,
    pub(in crate::proxy) path: Template,
    pub(in crate::proxy) required: bool,
    pub(in crate::proxy) timeout: Duration,
    /// Index of the call this one waits for.
    pub(in crate::proxy) after: Option<usize>,
    pub(in crate::proxy) headers: Vec<HeaderName>,
    pub(in crate::proxy) max_bytes: usize,
}

impl Plan {
    /// Checks and compiles a route's `aggregate`; `upstreams` are the
    /// defined pool names.
    ///
    /// # Errors
    /// The config span and message of the first problem.
    pub fn compile(
        r: &RouteConfig,
        upstreams: &HashSet<String>,
    ) -> Result<Plan, (Range<usize>, String)> {
        let id_span = r.id.span();
        if r.aggregate.len() > MAX_CALLS {
            return Err((
                id_span,
                format!("at most {MAX_CALLS} aggregate calls per route"),
            ));
        }
        let params = match &r.path {
            Some(p) => path_params(&p.0).map_err(|m| (id_span.clone(), m))?,
            None => Vec::new(),
        };
        let mut calls: Vec<Call> = Vec::new();
        for c in &r.aggregate {
            let name = c.name.get_ref();
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && !matches!(name.as_str(), "query" | "header" | merge::ERRORS);
            if !valid {
                return Err((
                    c.name.span(),
                    format!(
                        "call name '{name}' must be letters, digits, '_' or '-' and not query, header or _errors"
                    ),
                ));
            }
            if calls.iter().any(|k| &*k.name == name) {
                return Err((c.name.span(), format!("call '{name}' is defined twice")));
            }
            if !upstreams.contains(c.upstream.get_ref()) {
                return Err((
                    c.upstream.span(),
                    format!(
                        "call '{name}' uses upstream '{}', which is not defined in [[upstreams]]",
                        c.upstream.get_ref()
                    ),
                ));
            }
            let after = match &c.after {
                None => None,
                Some(a) => Some(
                    calls
                        .iter()
                        .position(|k| &*k.name == a.get_ref())
                        .ok_or_else(|| {
                            (
                                a.span(),
                                format!(
                                    "call '{name}': after = '{}' must name an earlier call of this route",
                                    a.get_ref()
                                ),
                            )
                        })?,
                ),
            };
            let path = Template::parse(
                c.path.get_ref(),
                &params,
                c.after.as_ref().map(|a| a.get_ref().as_str()),
            )
            .map_err(|m| (c.path.span(), format!("call '{name}': {m}")))?;
            if let Some(h) = c.headers.iter().find(|h| FRAMING.contains(&h.0.as_str())) {
                return Err((
                    c.name.span(),
                    format!(
                        "call '{name}': header '{}' describes the client's connection or body and cannot be copied to a call",
                        h.0
                    ),
                ));
            }
            let method = Method::from_bytes(c.method.0.as_bytes())
                .map_err(|_| (c.name.span(), format!("call '{name}': bad method")))?;
            if method == Method::CONNECT {
                return Err((
                    c.name.span(),
                    format!("call '{name}': CONNECT cannot be aggregated"),
                ));
            }
            calls.push(Call {
                name: name.as_str().into(),
                upstream: c.upstream.get_ref().as_str().into(),
                method,
                path,
                required: c.required,
                timeout: c.timeout.get(),
                after,
                headers: c
                    .headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.0.as_bytes()).ok())
                    .collect(),
                max_bytes: c.max_response_bytes,
            });
        }
        Ok(Plan {
            calls,
            merge: r.merge.unwrap_or_default(),
            deadline: r.aggregate_deadline.unwrap_or_else(cfg::d::deadline).get(),
            max_total_bytes: r
                .aggregate_max_bytes
                .unwrap_or_else(cfg::d::max_total_bytes),
            params,
        })
    }
}

/// The `{name}` segments of an aggregate route's `path`, in order.
fn path_params(path: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for seg in path.split('/') {
        if !seg.contains(['{', '}']) {
            continue;
        }
        let name = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .ok_or_else(|| {
                format!("path segment '{seg}': a parameter is a whole segment like {{id}} (letters, digits, '_')")
            })?;
        if names.iter().any(|n| n == name) {
            return Err(format!("path parameter '{{{name}}}' appears twice"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}
