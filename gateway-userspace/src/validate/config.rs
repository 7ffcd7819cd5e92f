//! The `[validation]` section of the gateway config: what the operator
//! writes. Plain data, checked for shape by serde; regexes, schemas and
//! OpenAPI documents are compiled later by [`super::Validators::from_config`].

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// `[validation]`: request validation rules per route.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSection {
    /// Deepest nesting of arrays and objects accepted in a JSON body
    /// (the top-level value is depth 1).
    pub max_depth: usize,
    /// Body size limit, in bytes, for routes with a body schema that do not
    /// set their own `max_body_bytes`.
    pub max_body_bytes: usize,
    /// Most violations listed in one problem response.
    pub max_errors: usize,
    /// Hand-written rules, one per route and method.
    pub rules: Vec<Spanned<RuleConfig>>,
    /// OpenAPI 3.0/3.1 documents whose operations become rules.
    pub openapi: Vec<Spanned<OpenApiConfig>>,
    /// Set by `Config::parse`; not a config key.
    #[serde(skip)]
    pub(crate) source: Option<SourceMap>,
}

impl Default for ValidationSection {
    fn default() -> Self {
        Self {
            // 32 levels: deeper than any sane API payload, shallow enough
            // that validation never recurses far.
            max_depth: 32,
            // 1 MiB, as NGINX's client_max_body_size.
            max_body_bytes: 1024 * 1024,
            // 20 violations per response.
            max_errors: 20,
            rules: Vec::new(),
            openapi: Vec::new(),
            source: None,
        }
    }
}

/// `[[validation.rules]]`: what a request to one route must look like.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Route id, as the router names it.
    pub route: String,
    /// HTTP method (`"POST"`); absent means every method of the route.
    #[serde(default)]
    pub method: Option<String>,
    /// JSON Schema of the body, inline. `$schema` picks the draft
    /// (default 2020-12).
    #[serde(default)]
    pub body_schema: Option<Spanned<serde_json::Value>>,
    /// JSON Schema of the body, in a JSON file (relative to the config file).
    #[serde(default)]
    pub body_schema_file: Option<PathBuf>,
    /// Whether an empty body is rejected (default `true`).
    #[serde(default)]
    pub body_required: Option<bool>,
    /// Body size limit for this route, in bytes.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// `false` rejects query parameters that are not listed in `query`.
    #[serde(default = "yes")]
    pub additional_query: bool,
    /// Query parameters by name.
    #[serde(default)]
    pub query: BTreeMap<String, ParamConfig>,
    /// Headers by name (case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, ParamConfig>,
    /// Where path parameters sit: `"/users/{id}"`, matched against the last
    /// segments of the request path.
    #[serde(default)]
    pub path_template: Option<String>,
    /// Path parameters by name, taken with `path_template`. Always required.
    #[serde(default)]
    pub path: BTreeMap<String, ParamConfig>,
}

/// `[[validation.openapi]]`: an OpenAPI document to take rules from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    /// The document, in JSON (relative to the config file).
    pub file: PathBuf,
    /// An operation's route id is `route_prefix` + its `operationId` ...
    #[serde(default)]
    pub route_prefix: String,
    /// ... unless its path template is listed here: `"/users/{id}" = "users-v1"`.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Body size limit for these operations, in bytes.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// `false` rejects query parameters the operation does not declare.
    #[serde(default = "yes")]
    pub additional_query: bool,
}

fn yes() -> bool {
    true
}

/// One query parameter, header or path parameter.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParamConfig {
    /// What the text must convert to (default `string`).
    #[serde(rename = "type", default)]
    pub kind: ParamType,
    /// Whether the parameter must be present (path parameters always are).
    #[serde(default)]
    pub required: bool,
    /// Rust regex the whole value must match (anchored for you). Write
    /// `[0-9]`, never `\d`, which also matches non-ASCII digits.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Allowed values, compared after conversion.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// Smallest allowed number (integer and number).
    #[serde(default)]
    pub minimum: Option<f64>,
    /// Largest allowed number (integer and number).
    #[serde(default)]
    pub maximum: Option<f64>,
    /// Fewest characters (string).
    #[serde(default)]
    pub min_length: Option<usize>,
    /// Most characters (string).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// A JSON Schema format the value must have (`uuid`, `email`, `phone`...).
    #[serde(default)]
    pub format: Option<String>,
}

/// The type a parameter's text is converted to before it is checked.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Kept as text (the default).
    #[default]
    String,
    /// An integer: optional `-` and ASCII digits (leading zeros allowed), kept exact at any size.
    Integer,
    /// A decimal number (JSON syntax, leading zeros allowed), kept exact; no
    /// `NaN` or infinities.
    Number,
    /// `true` or `false`.
    Boolean,
}

impl ParamType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
        }
    }
}

/// Where a section was read from, so compile errors can name `file:line:col`.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceMap {
    origin: String,
    line_starts: Vec<usize>,
}

/// Where a section was read from does not change what it says.
impl PartialEq for SourceMap {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SourceMap {
    fn new(origin: &str, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            origin: origin.to_owned(),
            line_starts,
        }
    }

    /// `origin:line:column` (1-based) of a byte offset.
    pub(crate) fn locate(&self, offset: usize) -> String {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let column = offset - self.line_starts[line - 1] + 1;
        format!("{}:{line}:{column}", self.origin)
    }
}

impl ValidationSection {
    /// Remembers the file and text this section was parsed from (called by
    /// `Config::parse`), so errors found when compiling name a line.
    pub fn set_source(&mut self, origin: &str, text: &str) {
        if !self.rules.is_empty() || !self.openapi.is_empty() {
            self.source = Some(SourceMap::new(origin, text));
        }
    }

    pub(crate) fn locate(&self, offset: usize) -> Option<String> {
        self.source.as_ref().map(|s| s.locate(offset))
    }
}
