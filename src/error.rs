//! Errors.
//!
//! Rules: every message says what failed and what to do; a wrapped library error (serde_json,
//! inferno, flate2, …) stays reachable through [`std::error::Error::source`], its text being
//! part of the message too.

use std::fmt;
use std::ops::Deref;

/// What went wrong, with a message that says what failed and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The input is not a valid allocscope report (truncated, wrong types, not JSON, …). The
    /// JSON parser's error, when there is one, is the [`source`](std::error::Error::source).
    InvalidReport(Detail),
    /// The input is a report of another format or of a version this build cannot read.
    UnsupportedVersion(String),
    /// A configuration value (environment variable, option) is invalid.
    InvalidConfig(String),
    /// Rendering failed (flamegraph, export). The renderer's error is the
    /// [`source`](std::error::Error::source).
    Render(Detail),
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
            Error::InvalidReport(d) | Error::Render(d) => d.source(),
            _ => None,
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The message of an [`Error`] and, when a library error caused it, that error.
///
/// Reads as its message: it dereferences to `str` (`detail.contains("truncated")`), displays
/// and debug-prints as the message, and compares equal to strings.
pub struct Detail {
    message: String,
    source: Option<Source>,
}

impl Detail {
    /// A message without a cause.
    pub fn new(message: impl Into<String>) -> Self {
        Detail {
            message: message.into(),
            source: None,
        }
    }

    /// A message caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Detail {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The library error that caused this one, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }

    /// The same detail with `prefix` before its message (e.g. the file name).
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}{}", self.message);
        self
    }
}

impl Deref for Detail {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl From<String> for Detail {
    fn from(message: String) -> Self {
        Detail::new(message)
    }
}

impl From<&str> for Detail {
    fn from(message: &str) -> Self {
        Detail::new(message)
    }
}

impl PartialEq<str> for Detail {
    fn eq(&self, other: &str) -> bool {
        self.message == other
    }
}

impl PartialEq<&str> for Detail {
    fn eq(&self, other: &&str) -> bool {
        self.message == *other
    }
}

impl PartialEq<String> for Detail {
    fn eq(&self, other: &String) -> bool {
        &self.message == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn wrapped_errors_are_the_source_and_the_text_is_unchanged() {
        let json = serde_json::from_str::<u32>("[").unwrap_err();
        let text = format!("truncated JSON ({json})");
        let e = Error::InvalidReport(Detail::with_source(text.clone(), json));
        assert_eq!(
            e.to_string(),
            format!("not a valid allocscope report: {text}")
        );
        let source = e.source().expect("the parser's error is kept");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        let r = Error::Render(Detail::new("flamegraph: no frames"));
        assert_eq!(r.to_string(), "rendering failed: flamegraph: no frames");
        assert!(r.source().is_none());
        assert_eq!(format!("{r:?}"), r#"Render("flamegraph: no frames")"#);
    }
}
