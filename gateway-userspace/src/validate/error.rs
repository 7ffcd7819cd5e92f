//! Why a `[validation]` section could not be compiled. Every error says
//! where (`file:line:col` of the rule in the TOML when known, else the
//! OpenAPI file and operation) and, for a rule, which route it is for.

#![forbid(unsafe_code)]

/// A validation config that cannot be used; the gateway refuses to load it.
#[derive(Debug, thiserror::Error)]
pub enum ValidationConfigError {
    /// A file named by the section (schema or OpenAPI document) could not be read.
    #[error("{at}: cannot read {path}: {source}")]
    Read {
        at: String,
        path: String,
        source: std::io::Error,
    },
    /// A rule cannot be compiled: its schema, a parameter, its method, or it
    /// repeats another rule's route and method.
    #[error("{at}: route `{route}`: {message}")]
    Rule {
        at: String,
        route: String,
        message: String,
    },
    /// An OpenAPI document is not JSON, not OpenAPI 3.x, or not usable.
    #[error("{at}: {message}")]
    Document { at: String, message: String },
}

impl ValidationConfigError {
    /// The route the failing rule is for, when the error is about one.
    pub fn route(&self) -> Option<&str> {
        match self {
            ValidationConfigError::Rule { route, .. } => Some(route),
            _ => None,
        }
    }
}
