//! One route's compiled rules and the two per-request checks: the head
//! (path parameters, query, headers, declared body size) and the body
//! (media type, size, strict JSON, schema).

#![forbid(unsafe_code)]

use std::path::Path;

use http::{HeaderName, HeaderValue, Method, header::CONTENT_LENGTH, request::Parts};
use jsonschema::Validator;

use super::{
    config::{RuleConfig, ValidationSection},
    error::ValidationConfigError,
    json,
    params::{self, ParamRule},
    rejection::{Part, Reason, Rejection, Violation},
    schema,
};

/// What a request to one route (and method) must look like.
pub struct RouteValidator {
    /// `/users/{id}`: where the path parameters sit, matched against the
    /// whole forwarded path (see [`RouteValidator::path_params`]).
    pub(crate) path_template: Option<String>,
    pub(crate) path: Vec<ParamRule>,
    pub(crate) query: Vec<ParamRule>,
    pub(crate) headers: Vec<(HeaderName, ParamRule)>,
    pub(crate) additional_query: bool,
    pub(crate) body: Option<BodyRule>,
    pub(crate) max_errors: usize,
}

/// The body's rule.
pub(crate) struct BodyRule {
    pub(crate) schema: Validator,
    /// Whether an empty body is refused.
    pub(crate) required: bool,
    pub(crate) max_bytes: usize,
    pub(crate) max_depth: usize,
}

impl RouteValidator {
    /// The path parameters of `path`, the normalized path as it is
    /// forwarded (after any `rewrite_prefix`): the template must match the
    /// whole path, segment for segment (a trailing slash on either side is
    /// ignored), and each parameter is percent-decoded exactly once (`%31`
    /// is `1`, `1%20OR%201=1` is `1 OR 1=1`, `%2F` is a `/` inside the
    /// value). Empty without a template or when the path does not fit it,
    /// so the rules' path parameters are then reported missing. A value
    /// that does not decode to UTF-8 is an error.
    pub fn path_params(&self, path: &str) -> Result<Vec<(String, String)>, Rejection> {
        let Some(t) = &self.path_template else {
            return Ok(Vec::new());
        };
        let tpl: Vec<&str> = t.trim_matches('/').split('/').collect();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segs.len() != tpl.len() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (t, s) in tpl.iter().zip(&segs) {
            match t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(name) => {
                    let Some(value) = params::percent_decode(s) else {
                        return Err(Rejection::new(
                            Reason::InvalidParams,
                            vec![Violation::param(
                                Part::Path,
                                name,
                                "has a malformed %-escape or is not UTF-8",
                            )],
                            self.max_errors,
                        ));
                    };
                    out.push((name.to_owned(), value));
                }
                // A literal segment, compared as written and decoded.
                None if t == s || params::percent_decode(s).as_deref() == Some(*t) => {}
                None => return Ok(Vec::new()),
            }
        }
        Ok(out)
    }

    /// Checks path params (already extracted by the router as name->value),
    /// query string and headers. No body; but a `Content-Length` over
    /// [`RouteValidator::body_limit`] is refused here with 413, before the
    /// body is read.
    pub fn check_head(
        &self,
        parts: &Parts,
        path_params: &[(String, String)],
    ) -> Result<(), Rejection> {
        if let (Some(limit), Some(length)) = (self.body_limit(), content_length(parts))
            && length > limit as u64
        {
            return Err(too_large(limit));
        }
        let mut out = Vec::new();
        for rule in &self.path {
            match path_params.iter().find(|(n, _)| *n == rule.name) {
                Some((_, value)) => rule.check(value, Part::Path, &mut out),
                None => out.push(Violation::param(Part::Path, &rule.name, "is required")),
            }
        }
        self.check_query(parts.uri.query().unwrap_or(""), &mut out);
        for (name, rule) in &self.headers {
            let mut values = parts.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) if rule.required => {
                    out.push(Violation::param(Part::Header, &rule.name, "is required"))
                }
                (None, _) => {}
                (Some(_), Some(_)) => out.push(Violation::param(
                    Part::Header,
                    &rule.name,
                    "must appear only once",
                )),
                (Some(value), None) => match value.to_str() {
                    Ok(text) => rule.check(text, Part::Header, &mut out),
                    Err(_) => out.push(Violation::param(
                        Part::Header,
                        &rule.name,
                        "must be visible ASCII",
                    )),
                },
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(Rejection::new(Reason::InvalidParams, out, self.max_errors))
        }
    }

    fn check_query(&self, query: &str, out: &mut Vec<Violation>) {
        let Some(pairs) = params::parse_query(query) else {
            out.push(Violation::new(
                Part::Query,
                "",
                "query string has a malformed %-escape or is not UTF-8",
            ));
            return;
        };
        for rule in &self.query {
            let mut values = pairs.iter().filter(|(n, _)| *n == rule.name);
            match (values.next(), values.next()) {
                (None, _) if rule.required => {
                    out.push(Violation::param(Part::Query, &rule.name, "is required"))
                }
                (None, _) => {}
                // Parameter pollution: the upstream might read either copy.
                (Some(_), Some(_)) => out.push(Violation::param(
                    Part::Query,
                    &rule.name,
                    "must appear only once",
                )),
                (Some((_, value)), None) => rule.check(value, Part::Query, out),
            }
        }
        if !self.additional_query {
            for (name, _) in &pairs {
                if !self.query.iter().any(|r| r.name == *name) {
                    out.push(Violation::param(
                        Part::Query,
                        name,
                        "is not an allowed parameter",
                    ));
                }
            }
        }
    }

    /// Whether a body must be collected (the route has a body schema), and
    /// the most body bytes accepted.
    pub fn body_limit(&self) -> Option<usize> {
        self.body.as_ref().map(|b| b.max_bytes)
    }

    /// Checks Content-Type then the collected body bytes: size (413), media
    /// type (415), UTF-8, strict JSON (no repeated keys, bounded depth) and
    /// the schema (400). Routes without a body schema accept any body.
    pub fn check_body(
        &self,
        content_type: Option<&HeaderValue>,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let Some(rule) = &self.body else {
            return Ok(());
        };
        if body.len() > rule.max_bytes {
            return Err(too_large(rule.max_bytes));
        }
        if body.is_empty() {
            return if rule.required {
                Err(Rejection::one(
                    Reason::MissingBody,
                    Violation::new(Part::Body, "", "a JSON body is required"),
                ))
            } else {
                Ok(())
            };
        }
        self.check_content_type(content_type)?;
        let value = json::parse_strict(body, rule.max_depth)?;
        let (violations, more) =
            schema::violations(&rule.schema, &value, Part::Body, self.max_errors);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Rejection::new(Reason::InvalidBody, violations, self.max_errors).and_more(more))
        }
    }
}

impl RouteValidator {
    /// The media-type part of [`RouteValidator::check_body`], for a proxy
    /// that wants to answer 415 before reading a non-empty body: `Ok` when
    /// the route has no body schema, or when `content_type` is
    /// `application/json` or `application/*+json` (optionally with
    /// `charset=utf-8`).
    pub fn check_content_type(&self, content_type: Option<&HeaderValue>) -> Result<(), Rejection> {
        if self.body.is_none() {
            return Ok(());
        }
        let is_json = content_type
            .and_then(|v| v.to_str().ok())
            .is_some_and(json::is_json_media_type);
        if is_json {
            return Ok(());
        }
        Err(Rejection::one(
            Reason::UnsupportedMediaType,
            Violation::new(
                Part::Header,
                "/content-type",
                "must be application/json or application/*+json",
            ),
        ))
    }
}

fn too_large(limit: usize) -> Rejection {
    Rejection::one(
        Reason::BodyTooLarge,
        Violation::new(
            Part::Body,
            "",
            &format!("the body must be at most {limit} bytes"),
        ),
    )
}

fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Compiles one `[[validation.rules]]` entry; `at` is where it was written.
pub(crate) fn compile_rule(
    rule: &RuleConfig,
    section: &ValidationSection,
    base_dir: &Path,
    at: &str,
) -> Result<(Option<Method>, RouteValidator), ValidationConfigError> {
    let bad = |at: &str, message: String| ValidationConfigError::Rule {
        at: at.to_owned(),
        route: rule.route.clone(),
        message,
    };
    let method = match &rule.method {
        Some(m) => Some(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| bad(at, format!("method {m:?} is not an HTTP method")))?,
        ),
        None => None,
    };
    let (schema_at, body_schema) = match (&rule.body_schema, &rule.body_schema_file) {
        (Some(_), Some(_)) => {
            return Err(bad(
                at,
                "set body_schema or body_schema_file, not both".into(),
            ));
        }
        (Some(inline), None) => {
            let schema_at = section
                .locate(inline.span().start)
                .unwrap_or_else(|| at.to_owned());
            (schema_at, Some(inline.get_ref().clone()))
        }
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text =
                std::fs::read_to_string(&path).map_err(|source| ValidationConfigError::Read {
                    at: at.to_owned(),
                    path: path.display().to_string(),
                    source,
                })?;
            let value = serde_json::from_str(&text).map_err(|e| {
                bad(
                    &path.display().to_string(),
                    format!("body_schema_file is not JSON: {e}"),
                )
            })?;
            (path.display().to_string(), Some(value))
        }
        (None, None) => (at.to_owned(), None),
    };
    if body_schema.is_none() && (rule.max_body_bytes.is_some() || rule.body_required.is_some()) {
        return Err(bad(
            at,
            "max_body_bytes/body_required need a body schema".into(),
        ));
    }
    let body = match body_schema {
        Some(value) => Some(BodyRule {
            schema: schema::compile(&value, None)
                .map_err(|e| bad(&schema_at, format!("invalid body schema: {e}")))?,
            required: rule.body_required.unwrap_or(true),
            max_bytes: rule.max_body_bytes.unwrap_or(section.max_body_bytes),
            max_depth: section.max_depth,
        }),
        None => None,
    };
    let param = |part: &str, name: &str, c| {
        ParamRule::from_config(name, c).map_err(|e| bad(at, format!("{part}.{name}: {e}")))
    };
    let mut path = Vec::new();
    for (name, c) in &rule.path {
        let mut p = param("path", name, c)?;
        p.required = true;
        path.push(p);
    }
    let query = rule
        .query
        .iter()
        .map(|(name, c)| param("query", name, c))
        .collect::<Result<_, _>>()?;
    let mut headers = Vec::new();
    for (name, c) in &rule.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(at, format!("headers.{name}: not a valid header name")))?;
        let mut p = param("headers", name, c)?;
        p.name = header.as_str().to_owned();
        headers.push((header, p));
    }
    Ok((
        method,
        RouteValidator {
            path_template: rule.path_template.clone(),
            path,
            query,
            headers,
            additional_query: rule.additional_query,
            body,
            max_errors: section.max_errors,
        },
    ))
}
