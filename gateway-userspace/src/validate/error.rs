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
        /// Where the file is named: `file:line:col` in the config.
        at: String,
        /// The file's path, resolved against the config file's directory.
        path: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A rule cannot be compiled: its schema, a parameter, its method, or it
    /// repeats another rule's route and method.
    #[error("{at}: route `{route}`: {message}")]
    Rule {
        /// Where the rule is: `file:line:col` in the config, or the OpenAPI file and operation.
        at: String,
        /// The route id the rule is for.
        route: String,
        /// What cannot be compiled, for the operator.
        message: String,
    },
    /// An OpenAPI document is not JSON, not OpenAPI 3.x, or not usable.
    #[error("{at}: {message}")]
    Document {
        /// The OpenAPI file, as its path resolved against the config directory.
        at: String,
        /// What is wrong with the document.
        message: String,
    },
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
