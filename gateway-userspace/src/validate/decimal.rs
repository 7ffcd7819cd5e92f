//! Exact decimal numbers for the parameter checks: a number's text is
//! compared with a bound as the decimal it spells, never after rounding to
//! an `f64` (where `100.00000000000000001` is `100`). The JSON Schema checks
//! get the same exactness from the jsonschema crate's `arbitrary-precision`
//! feature; this module covers the hand-written `minimum`, `maximum` and
//! `enum` of path, query and header parameters.

#![forbid(unsafe_code)]

use std::cmp::Ordering;

/// Exponents beyond this are clamped: every such number is already far
/// outside any bound a config can hold (an `f64` stops at 1e308).
const EXPONENT_CLAMP: i64 = 1 << 40;

/// A finite decimal held exactly: `±0.d1d2…dn × 10^point`, with no leading
/// or trailing zero digit (zero has no digits and no sign).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    /// Where the decimal point sits relative to the first digit.
    point: i64,
}

impl Decimal {
    /// Parses a JSON number (RFC 8259 §6). With `leading_zeros`, an
    /// integer part like `007` is accepted too (query strings are not JSON).
    pub(crate) fn parse(text: &str, leading_zeros: bool) -> Option<Self> {
        let b = text.as_bytes();
        let mut i = 0;
        let negative = b.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int = &b[int_start..i];
        if int.is_empty() || (!leading_zeros && int.len() > 1 && int[0] == b'0') {
            return None;
        }
        let mut frac: &[u8] = &[];
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            frac = &b[start..i];
            if frac.is_empty() {
                return None;
            }
        }
        let mut exp: i64 = 0;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exp_negative = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                exp = (exp * 10 + i64::from(b[i] - b'0')).min(EXPONENT_CLAMP);
                i += 1;
            }
            if i == start {
                return None;
            }
            if exp_negative {
                exp = -exp;
            }
        }
        if i != b.len() {
            return None;
        }
        let all: Vec<u8> = int.iter().chain(frac).copied().collect();
        let first = all.iter().position(|d| *d != b'0');
        let Some(first) = first else {
            return Some(Self::zero());
        };
        let last = all.iter().rposition(|d| *d != b'0').unwrap_or(first);
        Some(Self {
            negative,
            digits: all[first..=last].to_vec(),
            point: int.len() as i64 - first as i64 + exp,
        })
    }

    fn zero() -> Self {
        Self {
            negative: false,
            digits: Vec::new(),
            point: 0,
        }
    }

    /// The decimal a config bound stands for: its shortest round-trip
    /// spelling (what the config author wrote, as `100` or `0.1`), not the
    /// binary fraction. `None` for NaN and infinities.
    pub(crate) fn from_f64(f: f64) -> Option<Self> {
        if !f.is_finite() {
            return None;
        }
        Self::parse(&format!("{f:e}"), false)
    }

    /// `(negative, significant digits, power of ten of the last digit)`:
    /// `-0.25` is `(true, b"25", -2)`; zero is `(false, b"", 0)`.
    pub(crate) fn parts(&self) -> (bool, &[u8], i64) {
        let scale = if self.digits.is_empty() {
            0
        } else {
            self.point - self.digits.len() as i64
        };
        (self.negative, &self.digits, scale)
    }

    /// Whether the value is a whole number (`1e2` and `100.0` are).
    pub(crate) fn is_integer(&self) -> bool {
        self.digits.len() as i64 <= self.point
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |d: &Decimal| match (d.digits.is_empty(), d.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        let (a, b) = (sign(self), sign(other));
        if a != b || a == 0 {
            return a.cmp(&b);
        }
        let magnitude = self.point.cmp(&other.point).then_with(|| {
            let n = self.digits.len().max(other.digits.len());
            (0..n)
                .map(|i| {
                    let x = self.digits.get(i).copied().unwrap_or(b'0');
                    let y = other.digits.get(i).copied().unwrap_or(b'0');
                    x.cmp(&y)
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        if a < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s, false).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn equal_spellings() {
        for same in [
            "100", "100.0", "1e2", "1E2", "1E+2", "10e1", "1000e-1", "100.000",
        ] {
            assert_eq!(d(same), d("100"), "{same}");
        }
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("-0.0e5"), d("0"));
        assert_eq!(Decimal::from_f64(100.0), Some(d("100")));
        assert_eq!(Decimal::from_f64(0.1), Some(d("0.1")));
        assert_eq!(Decimal::from_f64(-2.5e-7), Some(d("-0.00000025")));
        assert_eq!(Decimal::from_f64(f64::INFINITY), None);
    }

    #[test]
    fn order_is_exact() {
        let ascending = [
            "-1E400",
            "-99999999999999999999",
            "-100.00000000000000001",
            "-100",
            "-99.99999999999999999",
            "-1e-400",
            "0",
            "1e-400",
            "0.1",
            "99.99999999999999999",
            "100",
            "100.00000000000000001",
            "101",
            "9223372036854775808",
            "99999999999999999999",
            "1E400",
        ];
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(d(a).cmp(&d(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn grammar() {
        for bad in [
            "", "-", "+1", "01", "1.", ".5", "1e", "1e+", "0x10", "inf", "NaN", "1 ", " 1", "١",
        ] {
            assert_eq!(Decimal::parse(bad, false), None, "{bad:?}");
        }
        assert_eq!(Decimal::parse("007", true), Some(d("7")));
        assert!(d("1e2").is_integer() && d("100.0").is_integer() && d("0").is_integer());
        assert!(!d("100.5").is_integer() && !d("1e-1").is_integer());
        // Huge exponents are clamped, not overflowed.
        assert!(d("1e99999999999999999999999") > d("1e400"));
        assert!(d("1e-99999999999999999999999") < d("1e-400"));
    }
}
