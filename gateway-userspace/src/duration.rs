//! Durations as operators write them: `30s`, `10m`, `1h`, `7d`, `500ms`, or
//! combinations such as `1h30m` (the humantime format).

#![forbid(unsafe_code)]

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `30s`, `10m`, `1h30m`, `500ms` (humantime); surrounding whitespace is ignored. The error
/// quotes the input and shows examples.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not a duration like 30s, 10m or 1h ({e})"))
}

/// `d` as humantime text in whole seconds (`1h 30m`); sub-second parts are dropped.
pub fn format(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Serde helper: a duration written as a string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}
