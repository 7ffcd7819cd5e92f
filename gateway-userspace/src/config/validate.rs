//! The checks that need more than one section of the config: references
//! between sections (route -> upstream, auth policy, rate limit; API key ->
//! plan; shared limit -> `[cluster]`), ambiguous routes, the dashboard's
//! token rules, and the values derived from other sections (`[xdp]
//! protected_ports` from the listeners). Each section checks its own values
//! while it is parsed; only what spans sections is here, so the sections
//! stay leaves that know nothing of each other or of `Config`.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use super::{
    Config,
    error::{ConfigError, line_col},
};
use crate::proxy::config::{Route, aggregate::plan::Plan, upstream::UpstreamProtocol};

impl Config {
    /// Checks between the non-proxy sections: `[xdp]` allow/block overlap,
    /// shared limits need `[cluster]`, API-key plans exist, each section's
    /// own `validate`.
    pub(super) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Inconsistent {
            path: origin.to_owned(),
            message,
        };
        if self.xdp.enabled && self.xdp.interface.trim().is_empty() {
            return Err(bad(
                "[xdp] interface is empty; name the interface to attach to, or set enabled = false"
                    .into(),
            ));
        }
        self.rate_limit.validate().map_err(|e| bad(e.to_string()))?;
        self.escalation.validate().map_err(|e| bad(e.to_string()))?;
        if let Some(c) = &self.cluster {
            c.validate().map_err(|e| bad(e.to_string()))?;
        }
        for l in self.rate_limit.limits.iter().filter(|l| l.shared) {
            if self.cluster.is_none() {
                return Err(bad(format!(
                    "rate limit '{}' is shared = true but there is no [cluster] section; \
                     add [cluster] redis_url = \"redis://...\" or drop shared",
                    l.name
                )));
            }
            if l.mode != crate::ratelimit::config::Mode::NoDelay {
                return Err(bad(format!(
                    "rate limit '{}': shared limits support mode = \"nodelay\" only",
                    l.name
                )));
            }
        }
        for (provider, keys) in &self.auth.api_keys {
            if let Some((key, plan)) = keys.keys.iter().find_map(|k| {
                let plan = k.plan.as_deref()?;
                (!self.rate_limit.plans.iter().any(|p| p.name == plan)).then_some((&k.name, plan))
            }) {
                return Err(bad(format!(
                    "[auth.api_keys.{provider}] key '{key}' names plan '{plan}', which no \
                     [[rate_limit.plans]] entry defines"
                )));
            }
        }
        if let Some(both) = self.xdp.allow.iter().find(|n| self.xdp.block.contains(n)) {
            return Err(bad(format!(
                "[xdp] {both} is in both allow and block; the allowlist would win, remove one"
            )));
        }
        Ok(())
    }
}

/// `[observability.dashboard]`: a token when writes are on or the listener
/// is not on loopback (`observe::config::dashboard_problem`), reported at
/// the offending key.
pub(super) fn dashboard(config: &Config, text: &str, origin: &str) -> Result<(), ConfigError> {
    match crate::observe::config::dashboard_problem(&config.observability, text) {
        Ok(()) => Ok(()),
        Err((offset, message)) => {
            let (line, column) = offset.map_or((1, 1), |o| line_col(text, o));
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                line,
                column,
                message,
            })
        }
    }
}

/// Checks the proxy sections of a parsed config against each other and
/// fills in derived values (`[xdp] protected_ports` from the listeners).
pub(super) fn proxy(config: &mut Config, text: &str, origin: &str) -> Result<(), ConfigError> {
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_col(text, span.start);
        ConfigError::Invalid {
            path: origin.to_owned(),
            line,
            column,
            message,
        }
    };
    let bad = |message: String| ConfigError::Inconsistent {
        path: origin.to_owned(),
        message,
    };

    for u in &mut config.upstreams {
        u.parse_targets()
            .map_err(|(span, e)| at(span, e.to_string()))?;
    }
    let mut names = HashSet::new();
    for u in &config.upstreams {
        if !names.insert(u.name.get_ref().clone()) {
            return Err(at(
                u.name.span(),
                format!("upstream '{}' is defined twice", u.name.get_ref()),
            ));
        }
        if u.targets.is_empty() {
            return Err(at(
                u.name.span(),
                format!("upstream '{}' has no targets", u.name.get_ref()),
            ));
        }
        let name = u.name.get_ref();
        let proto = |p| match p {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        };
        match &u.tls {
            None if u.protocol.needs_tls() => {
                return Err(at(
                    u.name.span(),
                    format!(
                        "upstream '{name}': protocol = \"{}\" is HTTP over TLS and needs a `tls` table \
                         (for example tls = {{ ca_file = \"ca.pem\" }}, or tls = {{}} for the system roots)",
                        proto(u.protocol)
                    ),
                ));
            }
            Some(_) if u.protocol == UpstreamProtocol::H2c => {
                return Err(at(
                    u.name.span(),
                    format!(
                        "upstream '{name}': h2c is HTTP/2 without TLS; use protocol = \"h2\" (or \"auto\") with `tls`"
                    ),
                ));
            }
            Some(t) if !t.verify && t.ca_file.is_some() => {
                return Err(at(
                    u.name.span(),
                    format!(
                        "upstream '{name}': tls.verify = false checks no certificate, so tls.ca_file would be ignored; remove one of them"
                    ),
                ));
            }
            Some(t) if t.client_cert.is_some() != t.client_key.is_some() => {
                return Err(at(
                    u.name.span(),
                    format!(
                        "upstream '{name}': tls.client_cert and tls.client_key go together (mTLS)"
                    ),
                ));
            }
            _ => {}
        }
        if u.health_check.enabled && !u.health_check.path.starts_with('/') {
            return Err(at(
                u.name.span(),
                format!(
                    "upstream '{}': health_check.path must start with '/'",
                    u.name.get_ref()
                ),
            ));
        }
    }

    let mut ids = HashSet::new();
    for r in &config.routes {
        let id = r.id.get_ref();
        if !ids.insert(id.clone()) {
            return Err(at(r.id.span(), format!("route '{id}' is defined twice")));
        }
        match (&r.upstream, r.aggregate.is_empty()) {
            (Some(u), true) => {
                if !names.contains(u.get_ref()) {
                    return Err(at(
                        u.span(),
                        format!(
                            "route '{id}' uses upstream '{}', which is not defined in [[upstreams]]",
                            u.get_ref()
                        ),
                    ));
                }
                if r.merge.is_some()
                    || r.aggregate_deadline.is_some()
                    || r.aggregate_max_bytes.is_some()
                {
                    return Err(at(
                        r.id.span(),
                        format!(
                            "route '{id}': merge, aggregate_deadline and aggregate_max_bytes need `aggregate`"
                        ),
                    ));
                }
            }
            (None, false) => {
                Plan::compile(r, &names)
                    .map_err(|(span, m)| at(span, format!("route '{id}': {m}")))?;
            }
            _ => {
                return Err(at(
                    r.id.span(),
                    format!("route '{id}' needs exactly one of `upstream` and `aggregate`"),
                ));
            }
        }
        if let Some(cors) = &r.cors {
            cors.validate()
                .map_err(|m| at(r.id.span(), format!("route '{id}': {m}")))?;
        }
        if let Some(policy) = &r.auth
            && !config.auth.policies.contains_key(policy.get_ref())
        {
            return Err(at(
                policy.span(),
                format!(
                    "route '{id}' uses auth policy '{}', which is not defined in [auth.policies]",
                    policy.get_ref()
                ),
            ));
        }
        if let Some(unknown) = r
            .rate_limits
            .iter()
            .find(|n| !config.rate_limit.limits.iter().any(|l| &l.name == *n))
        {
            return Err(at(
                r.id.span(),
                format!(
                    "route '{id}' uses rate limit '{unknown}', which is not defined in [[rate_limit.limits]]"
                ),
            ));
        }
        match (&r.path, &r.path_prefix) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(at(
                    r.id.span(),
                    format!("route '{id}' needs exactly one of `path` and `path_prefix`"),
                ));
            }
            (Some(_), None) if r.rewrite_prefix.is_some() => {
                return Err(at(
                    r.id.span(),
                    format!("route '{id}': rewrite_prefix needs `path_prefix`, not `path`"),
                ));
            }
            _ => {}
        }
    }
    for (i, a) in config.routes.iter().enumerate() {
        for b in &config.routes[i + 1..] {
            if ambiguous(a, b) {
                return Err(at(
                    b.id.span(),
                    format!(
                        "routes '{}' and '{}' match the same requests with the same specificity; \
                         make one more specific (host, path, methods or headers)",
                        a.id.get_ref(),
                        b.id.get_ref()
                    ),
                ));
            }
        }
    }

    let mut listener_names = HashSet::new();
    for l in &config.listeners {
        if !listener_names.insert(l.display_name()) {
            return Err(bad(format!(
                "listener '{}' is defined twice",
                l.display_name()
            )));
        }
        if l.tls && l.redirect_https_port.is_some() {
            return Err(bad(format!(
                "listener '{}': a redirect listener cannot also be TLS",
                l.display_name()
            )));
        }
    }
    let any_tls = config.listeners.iter().any(|l| l.tls);
    if any_tls && config.tls.certificates.is_empty() && !config.tls.self_signed {
        return Err(bad(
            "a TLS listener needs [[tls.certificates]] (or [tls] self_signed = true for a demo)"
                .into(),
        ));
    }
    if config.limits.max_headers == 0 || config.limits.max_header_bytes < 1024 {
        return Err(bad(
            "[limits] max_headers must be at least 1 and max_header_bytes at least 1024".into(),
        ));
    }
    if config.limits.max_method_length < 7 {
        return Err(bad(
            "[limits] max_method_length must be at least 7 (the length of OPTIONS)".into(),
        ));
    }
    if config.demo.enabled && !config.demo.address.ip().is_loopback() {
        return Err(bad("[demo] address must be a loopback address".into()));
    }

    if config.xdp.protected_ports.is_empty() {
        let mut ports: Vec<_> = config
            .listeners
            .iter()
            .filter_map(|l| std::num::NonZeroU16::new(l.address.port()))
            .collect();
        ports.sort();
        ports.dedup();
        config.xdp.protected_ports = ports;
    }
    Ok(())
}

/// Whether two routes could match one request with equal specificity.
fn ambiguous(a: &Route, b: &Route) -> bool {
    // `{id}` and `{user}` segments match the same requests.
    let shape = |r: &Route| {
        r.path.as_ref().map(|p| {
            p.0.split('/')
                .map(|seg| {
                    if seg.starts_with('{') && !r.aggregate.is_empty() {
                        "{}"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        })
    };
    let same_shape = a.host == b.host
        && shape(a) == shape(b)
        && a.path_prefix == b.path_prefix
        && a.headers.len() == b.headers.len()
        && a.methods.is_empty() == b.methods.is_empty();
    let methods_overlap = a.methods.is_empty() || a.methods.iter().any(|m| b.methods.contains(m));
    let headers_compatible = a
        .headers
        .iter()
        .all(|(k, v)| b.headers.get(k).is_none_or(|w| w == v));
    same_shape && methods_overlap && headers_compatible
}
