//! Why a config did not load: [`ConfigError`], with the file, line and
//! column of the offending value, and [`line_col`] to find them.

#![forbid(unsafe_code)]

/// A config that could not be loaded: where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file's path as given.
        path: String,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The config file's path as given.
        path: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong, for the operator.
        message: String,
    },
    /// Values are individually fine but do not fit together.
    #[error("{path}: {message}")]
    Inconsistent {
        /// The config file's path as given.
        path: String,
        /// Which values clash and why.
        message: String,
    },
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}
