//! Errors.

use std::fmt;

/// What went wrong, with a message that says what failed and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The input is not a valid allocscope report (truncated, wrong types, not JSON, …).
    InvalidReport(String),
    /// The input is a report of another format or of a version this build cannot read.
    UnsupportedVersion(String),
    /// A configuration value (environment variable, option) is invalid.
    InvalidConfig(String),
    /// Rendering failed (flamegraph, export).
    Render(String),
    /// Reading or writing a file failed.
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidReport(m) => write!(f, "not a valid allocscope report: {m}"),
            Error::UnsupportedVersion(m) => write!(f, "unsupported report: {m}"),
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::Render(m) => write!(f, "rendering failed: {m}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
