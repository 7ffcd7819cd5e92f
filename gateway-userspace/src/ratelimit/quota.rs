//! Quotas over calendar windows: `quota = "10000/day"` (also `/hour`,
//! `/month`), counted per consumer and reset at the start of each window,
//! as AWS API Gateway usage plans and Kong's `rate-limiting` plugin do
//! (fixed windows aligned to the calendar, not sliding).
//!
//! Windows are aligned to UTC, or to a fixed offset (`[rate_limit]
//! time_zone = "+02:00"`): an hour window starts at minute 0, a day window
//! at local midnight, a month window at local midnight of the 1st. IANA zone
//! names (with daylight saving) are not supported: a fixed offset is exact
//! and needs no time-zone database.

#![forbid(unsafe_code)]

use std::{fmt, str::FromStr};

use serde::Deserialize;

/// The calendar unit a quota counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// From minute 0 of each hour (in `[rate_limit] time_zone`).
    Hour,
    /// From midnight of each day (in `[rate_limit] time_zone`).
    Day,
    /// From midnight of the 1st of each month (in `[rate_limit] time_zone`).
    Month,
}

impl Window {
    fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

/// `count` requests per calendar `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per window.
    pub count: u64,
    /// The calendar window they are counted over.
    pub window: Window,
}

/// Why a quota or time zone in the config does not parse (the text quotes
/// the value and says what is accepted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuotaParseError {
    /// Not `COUNT/hour|day|month`.
    #[error("quota '{0}' must look like 10000/day, 500/hour or 100000/month")]
    Shape(String),
    /// A count of 0 or above 10^12.
    #[error("quota '{0}' must be from 1 to 1000000000000 requests")]
    Count(String),
    /// Not `UTC` or a fixed offset within ±18:00.
    #[error(
        "time_zone '{0}' must be \"UTC\" or a fixed offset such as \"+02:00\" \
         (IANA names like Europe/Paris are not supported)"
    )]
    TimeZone(String),
}

impl FromStr for Quota {
    type Err = QuotaParseError;

    fn from_str(s: &str) -> Result<Self, QuotaParseError> {
        let bad = || QuotaParseError::Shape(s.to_owned());
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > 1_000_000_000_000 {
            return Err(QuotaParseError::Count(s.to_owned()));
        }
        let window = match unit.trim() {
            "hour" => Window::Hour,
            "day" => Window::Day,
            "month" => Window::Month,
            _ => return Err(bad()),
        };
        Ok(Self { count, window })
    }
}

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.window.as_str())
    }
}

/// A fixed offset from UTC in seconds: `"UTC"`, `"Z"`, `"+02:00"`,
/// `"-05:30"` (at most ±18:00, as RFC 3339 allows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcOffset(pub i32);

impl FromStr for UtcOffset {
    type Err = QuotaParseError;

    fn from_str(s: &str) -> Result<Self, QuotaParseError> {
        let bad = || QuotaParseError::TimeZone(s.to_owned());
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Self(0));
        }
        let sign = match t.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        let (h, m) = t[1..].split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 18 || m > 59 || (h == 18 && m != 0) {
            return Err(bad());
        }
        Ok(Self(sign * (h * 3600 + m * 60)))
    }
}

impl<'de> Deserialize<'de> for UtcOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("UTC");
        }
        let sign = if self.0 < 0 { '-' } else { '+' };
        let a = self.0.abs();
        write!(f, "{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    }
}

/// The window containing `now` (Unix seconds): `(start, end)` in Unix
/// seconds, `start <= now < end`.
pub fn window_bounds(now: i64, window: Window, offset: UtcOffset) -> (i64, i64) {
    let off = i64::from(offset.0);
    let local = now + off;
    let (start, end) = match window {
        Window::Hour => {
            let s = local - local.rem_euclid(3600);
            (s, s + 3600)
        }
        Window::Day => {
            let s = local - local.rem_euclid(86_400);
            (s, s + 86_400)
        }
        Window::Month => {
            let days = local.div_euclid(86_400);
            let (y, m, _) = civil_from_days(days);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                days_from_civil(y, m, 1) * 86_400,
                days_from_civil(ny, nm, 1) * 86_400,
            )
        }
    };
    (start - off, end - off)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-30T08:30:00Z
    const NOW: i64 = 1_796_027_400;

    #[test]
    fn parses_quotas_and_refuses_other_spellings() {
        assert_eq!(
            "10000/day".parse::<Quota>().unwrap(),
            Quota {
                count: 10000,
                window: Window::Day
            }
        );
        assert_eq!("5/hour".parse::<Quota>().unwrap().window, Window::Hour);
        assert_eq!("1/month".parse::<Quota>().unwrap().window, Window::Month);
        for bad in [
            "0/day",
            "10/week",
            "10r/s",
            "day",
            "-1/day",
            "10/ day x",
            "",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_offsets() {
        assert_eq!("UTC".parse::<UtcOffset>().unwrap().0, 0);
        assert_eq!("+02:00".parse::<UtcOffset>().unwrap().0, 7200);
        assert_eq!("-05:30".parse::<UtcOffset>().unwrap().0, -19_800);
        for bad in ["Europe/Paris", "+2", "+19:00", "02:00", "+02:60"] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad}");
        }
        assert_eq!(UtcOffset(-19_800).to_string(), "-05:30");
    }

    #[test]
    fn windows_align_to_the_calendar() {
        let utc = UtcOffset(0);
        assert_eq!(
            window_bounds(NOW, Window::Hour, utc),
            (NOW - 1800, NOW + 1800)
        );
        // Day: 2026-11-30T00:00Z .. 2026-12-01T00:00Z.
        assert_eq!(
            window_bounds(NOW, Window::Day, utc),
            (1_795_996_800, 1_796_083_200)
        );
        // Month: 2026-11-01 .. 2026-12-01 (30 days).
        let (s, e) = window_bounds(NOW, Window::Month, utc);
        assert_eq!((s, e), (1_793_491_200, 1_796_083_200));
        // December has 31 days; February 2028 has 29.
        let (s, e) = window_bounds(e, Window::Month, utc);
        assert_eq!((e - s) / 86_400, 31);
        let feb_2028 = days_from_civil(2028, 2, 10) * 86_400;
        let (s, e) = window_bounds(feb_2028, Window::Month, utc);
        assert_eq!((e - s) / 86_400, 29);
        assert_eq!(civil_from_days(s / 86_400), (2028, 2, 1));
        // +02:00: local midnight is 22:00 UTC the day before.
        let (s, e) = window_bounds(NOW, Window::Day, UtcOffset(7200));
        assert_eq!((s, e), (1_795_996_800 - 7200, 1_796_083_200 - 7200));
        // The end is exclusive: at the end a new window starts.
        let (s2, _) = window_bounds(e, Window::Day, UtcOffset(7200));
        assert_eq!(s2, e);
        // Before 1970 still works (negative times).
        let (s, e) = window_bounds(-1, Window::Day, utc);
        assert_eq!((s, e), (-86_400, 0));
    }
}
