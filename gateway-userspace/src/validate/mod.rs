//! Input validation: the phase after routing and authentication that
//! refuses requests breaking the API's rules before they reach an upstream.
//!
//! Rules come from the `[validation]` config section (hand-written per
//! route, or taken from OpenAPI 3.0/3.1 documents) and are compiled once,
//! at config load, into [`Validators`]. Per request the proxy asks
//! [`Validators::for_route`] for the route's [`RouteValidator`], calls
//! [`RouteValidator::check_head`] on the request head, and, when
//! [`RouteValidator::body_limit`] says the body is checked, collects at most
//! that many bytes and calls [`RouteValidator::check_body`]. A failure is a
//! [`Rejection`]: status, metric label and an `application/problem+json`
//! body. See `docs/validation.md`.

#![forbid(unsafe_code)]

pub mod config;
mod decimal;
mod error;
mod exact;
mod json;
mod openapi;
mod params;
mod rejection;
mod route;
mod schema;

use std::{collections::HashMap, path::Path};

use http::Method;

pub use config::{OpenApiConfig, ParamConfig, ParamType, RuleConfig, ValidationSection};
pub use error::ValidationConfigError;
pub(crate) use json::parse_strict;
pub use rejection::{Part, Reason, Rejection, Violation};
pub use route::RouteValidator;

/// The largest `max_depth`: serde_json refuses deeper input on its own
/// (as malformed), so a larger setting would not mean what it says.
pub const MAX_DEPTH_LIMIT: usize = 126;

/// Every route's compiled rules. Built once per config load; shared
/// read-only by all requests.
pub struct Validators {
    /// Route id → rules per method (`None`: any method).
    routes: HashMap<String, Vec<(Option<Method>, RouteValidator)>>,
}

impl Validators {
    /// Compiles the section: reads schema files and OpenAPI documents
    /// (relative to `base_dir`, the config file's directory), compiles every
    /// schema and regex. An unusable rule is an error naming the route and,
    /// for TOML rules, `file:line:col`.
    pub fn from_config(
        section: &ValidationSection,
        base_dir: &Path,
    ) -> Result<Self, ValidationConfigError> {
        if !(1..=MAX_DEPTH_LIMIT).contains(&section.max_depth) || section.max_errors == 0 {
            return Err(ValidationConfigError::Document {
                at: "[validation]".to_owned(),
                message: format!("max_depth must be 1-{MAX_DEPTH_LIMIT} and max_errors at least 1"),
            });
        }
        let mut validators = Validators {
            routes: HashMap::new(),
        };
        for (i, rule) in section.rules.iter().enumerate() {
            let at = section
                .locate(rule.span().start)
                .unwrap_or_else(|| format!("[[validation.rules]] #{}", i + 1));
            let (method, validator) = route::compile_rule(rule.get_ref(), section, base_dir, &at)?;
            validators.insert(&rule.get_ref().route, method, validator, &at)?;
        }
        for (i, source) in section.openapi.iter().enumerate() {
            let at = section
                .locate(source.span().start)
                .unwrap_or_else(|| format!("[[validation.openapi]] #{}", i + 1));
            for (route, method, validator, op_at) in
                openapi::compile(source.get_ref(), section, base_dir, &at)?
            {
                validators.insert(&route, Some(method), validator, &op_at)?;
            }
        }
        Ok(validators)
    }

    fn insert(
        &mut self,
        route: &str,
        method: Option<Method>,
        validator: RouteValidator,
        at: &str,
    ) -> Result<(), ValidationConfigError> {
        let rules = self.routes.entry(route.to_owned()).or_default();
        if rules.iter().any(|(m, _)| *m == method) {
            return Err(ValidationConfigError::Rule {
                at: at.to_owned(),
                route: route.to_owned(),
                message: format!(
                    "a second rule for method {}",
                    method.as_ref().map_or("(any)", Method::as_str)
                ),
            });
        }
        rules.push((method, validator));
        Ok(())
    }

    /// The rules for a route id + method, if any: the rule for that method;
    /// for `HEAD` without a rule of its own, the `GET` rule (servers answer
    /// HEAD by running the GET handler, RFC 9110 §9.3.2); else the route's
    /// rule without a method.
    pub fn for_route(&self, route: &str, method: &Method) -> Option<&RouteValidator> {
        let rules = self.routes.get(route)?;
        let exact = |m: &Method| rules.iter().find(|(r, _)| r.as_ref() == Some(m));
        exact(method)
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| exact(&Method::GET))
                    .flatten()
            })
            .or_else(|| rules.iter().find(|(m, _)| m.is_none()))
            .map(|(_, v)| v)
    }

    /// How many (route, method) rules there are.
    pub fn len(&self) -> usize {
        self.routes.values().map(Vec::len).sum()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn validators_can_be_shared_across_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<super::Validators>();
        shared::<super::Rejection>();
    }
}
