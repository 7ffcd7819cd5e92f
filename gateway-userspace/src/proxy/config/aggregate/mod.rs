//! The `aggregate` part of a route: the backend calls one client request
//! fans out to, how their JSON bodies are merged, and the bounds (per-call
//! timeout and size, whole-request deadline and size). Templates are
//! checked when the config is validated: [`plan::Plan::compile`] turns a
//! route into the plan `proxy::aggregate` runs, with its `template`s and
//! `merge` (they live here because the config checks call them).

#![forbid(unsafe_code)]

pub mod merge;
pub mod plan;
pub mod template;

use crate::duration::NonZeroSpan;

use serde::Deserialize;
use toml::Spanned;

use super::route::{HeaderName, Method};

/// Most calls one aggregate route may make (a config error beyond).
pub const MAX_CALLS: usize = 16;

/// One backend call of an aggregate route.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateCall {
    /// Unique within the route: the member of the merged response
    /// (`merge = "named"`), and the name in `Gateway-Partial`, `_errors`,
    /// problem details, metrics and the access log.
    pub name: Spanned<String>,
    /// Name of the upstream pool.
    pub upstream: Spanned<String>,
    /// The path (and query) sent, with `{...}` variables: `{id}` a path
    /// parameter of the route, `{query.NAME}` a query parameter,
    /// `{header.NAME}` a request header, `{CALL.field.0.sub}` a field of
    /// the response of the call named by `after`. Values are
    /// percent-encoded (a `/` in a value never adds a path segment).
    pub path: Spanned<String>,
    /// Method of the call (default `GET`); calls carry no body.
    #[serde(default = "d::method")]
    pub method: Method,
    /// A required call that fails makes the whole answer 502 (504 when it
    /// timed out); an optional one is left out and reported. Default true.
    #[serde(default = "d::required")]
    pub required: bool,
    /// Time for the whole call: response head and body (default 5s).
    #[serde(default = "d::timeout")]
    pub timeout: NonZeroSpan,
    /// Name of an earlier call of this route whose response this call
    /// needs (for `{CALL.field}` variables): it starts when that one
    /// succeeded, and fails without being sent when that one failed.
    #[serde(default)]
    pub after: Option<Spanned<String>>,
    /// Client request headers copied to this call (none by default).
    /// Credentials (`authorization`, `cookie`, API key headers) reach a
    /// backend only when listed here.
    #[serde(default)]
    pub headers: Vec<HeaderName>,
    /// Largest response body accepted from this call, in bytes (default
    /// 1 MiB, NGINX's `client_max_body_size` default); beyond it the call
    /// failed.
    #[serde(default = "d::max_response_bytes")]
    pub max_response_bytes: usize,
}

/// How successful call bodies are combined into the response.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// `{ "<name>": <body>, ... }` (the default).
    #[default]
    Named,
    /// The members of each call's object body at the top level; a later
    /// call (in config order) wins a repeated member.
    Keys,
    /// Objects merged recursively; for anything else a later call wins.
    Deep,
}

/// Defaults of the aggregate fields.
pub(crate) mod d {
    use crate::duration::NonZeroSpan;

    pub fn method() -> super::Method {
        super::Method("GET".into())
    }
    pub fn required() -> bool {
        true
    }
    /// 5 s per call.
    pub fn timeout() -> NonZeroSpan {
        NonZeroSpan::from_secs(5)
    }
    /// 1 MiB per call.
    pub fn max_response_bytes() -> usize {
        1 << 20
    }
    /// 10 s for the whole aggregate request.
    pub fn deadline() -> NonZeroSpan {
        NonZeroSpan::from_secs(10)
    }
    /// 4 MiB over all calls.
    pub fn max_total_bytes() -> usize {
        4 << 20
    }
}
