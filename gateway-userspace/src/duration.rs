//! Durations as operators write them: `30s`, `10m`, `1h`, `7d`, `500ms`, or
//! combinations such as `1h30m` (the humantime format).
//!
//! Every duration in the config file is a [`Span`] (any length, zero
//! included) or a [`NonZeroSpan`] (a timeout or interval, where zero would
//! mean "never" or "spin"): both deserialize from that text, so a section
//! field needs no serde attribute, and both dereference to
//! [`std::time::Duration`]. A bad value is a config error at its file, line
//! and column that quotes the input and shows examples.

#![forbid(unsafe_code)]

use std::{fmt, ops::Deref, time::Duration};

use serde::{Deserialize, Deserializer};

/// A text that is not a duration (the writer's: a config value or a CLI
/// argument); the message quotes it and shows examples.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("'{input}' is not a duration like 30s, 10m or 1h ({reason})")]
pub struct DurationError {
    /// The text as written.
    pub input: String,
    /// humantime's reason.
    pub reason: humantime::DurationError,
}

/// Parses `30s`, `10m`, `1h30m`, `500ms` (humantime); surrounding whitespace is ignored. The error
/// quotes the input and shows examples.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|reason| DurationError {
        input: s.to_owned(),
        reason,
    })
}

/// `d` as humantime text in whole seconds (`1h 30m`); sub-second parts are dropped.
pub fn format(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A config duration, zero allowed: written `30s`, `10m`, `1h30m`,
/// `500ms`; dereferences to [`Duration`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span(Duration);

impl Span {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl Deref for Span {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for Span {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<Span> for Duration {
    fn from(s: Span) -> Duration {
        s.0
    }
}

impl fmt::Display for Span {
    /// humantime text (`1h 30m`, `500ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Self).map_err(serde::de::Error::custom)
    }
}

/// A config duration greater than zero (timeouts, intervals): a [`Span`]
/// that refuses `0s` with "duration must be greater than 0".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NonZeroSpan(Duration);

impl NonZeroSpan {
    /// `secs` seconds; `secs` must not be 0 (checked at compile time in
    /// constants, else a panic).
    pub const fn from_secs(secs: u64) -> Self {
        assert!(secs > 0, "a NonZeroSpan is greater than 0");
        Self(Duration::from_secs(secs))
    }

    /// `ms` milliseconds; `ms` must not be 0.
    pub const fn from_millis(ms: u64) -> Self {
        assert!(ms > 0, "a NonZeroSpan is greater than 0");
        Self(Duration::from_millis(ms))
    }

    /// `d`, or `None` when it is zero.
    pub const fn new(d: Duration) -> Option<Self> {
        if d.is_zero() { None } else { Some(Self(d)) }
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl Deref for NonZeroSpan {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<NonZeroSpan> for Duration {
    fn from(s: NonZeroSpan) -> Duration {
        s.0
    }
}

impl fmt::Display for NonZeroSpan {
    /// humantime text (`1h 30m`, `500ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl<'de> Deserialize<'de> for NonZeroSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Span::deserialize(d)?.get();
        Self::new(v).ok_or_else(|| serde::de::Error::custom("duration must be greater than 0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        a: Span,
        b: Option<NonZeroSpan>,
    }

    #[test]
    fn spans_read_humantime_and_refuse_zero_where_asked() {
        let t: T = toml::from_str("a = \"0s\"\nb = \"1h30m\"\n").unwrap();
        assert_eq!(t.a.get(), Duration::ZERO);
        assert_eq!(*t.b.unwrap(), Duration::from_secs(5400));
        assert_eq!(t.b.unwrap().to_string(), "1h 30m");
        let e = toml::from_str::<T>("a = \"1s\"\nb = \"0s\"\n")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("duration must be greater than 0"),
            "{e}"
        );
        let e = toml::from_str::<T>("a = \"soon\"\n").err().unwrap();
        assert!(
            e.to_string()
                .contains("'soon' is not a duration like 30s, 10m or 1h"),
            "{e}"
        );
    }
}
