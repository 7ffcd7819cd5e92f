//! Path parameters, query parameters and headers: their text converted to
//! the declared type (integer, number, boolean or string), then checked
//! against the rule (pattern, enum, bounds, lengths, format). Everything a
//! rule needs (regexes, format checks) is compiled at config load.

#![forbid(unsafe_code)]

use jsonschema::Validator;
use regex::Regex;
use serde_json::Value;

use super::{
    config::{ParamConfig, ParamType},
    decimal::Decimal,
    rejection::{Part, Violation},
    schema,
};

/// A compiled rule for one parameter.
pub(crate) struct ParamRule {
    pub(crate) name: String,
    pub(crate) required: bool,
    kind: ParamType,
    pattern: Option<Regex>,
    allowed: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    format: Option<(String, Validator)>,
    /// An OpenAPI parameter's own schema, checked on the converted value.
    schema: Option<Validator>,
}

/// A hand-written parameter rule that cannot work: the config's to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParamRuleError {
    /// `minimum`/`maximum` on a non-numeric parameter.
    #[error("minimum/maximum need type integer or number")]
    BoundsNeedNumber,
    /// `min_length`/`max_length`/`format` on a non-string parameter.
    #[error("min_length/max_length/format need type string")]
    LengthNeedsString,
    /// `minimum` above `maximum`.
    #[error("minimum {lo} is above maximum {hi}")]
    Bounds {
        /// `minimum`.
        lo: f64,
        /// `maximum`.
        hi: f64,
    },
    /// `min_length` above `max_length`.
    #[error("min_length {lo} is above max_length {hi}")]
    Lengths {
        /// `min_length`.
        lo: usize,
        /// `max_length`.
        hi: usize,
    },
    /// A pattern that does not compile, or uses `\d`.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// An `enum` value of another type (as JSON).
    #[error("enum value {value} is not of type {kind}")]
    EnumValue {
        /// The value.
        value: Value,
        /// The parameter's type name.
        kind: &'static str,
    },
    /// A `format` the schema library does not know.
    #[error(transparent)]
    Format(#[from] schema::SchemaError),
}

/// A `pattern` that cannot be used: the config's to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PatternError {
    /// `\d` or `\D`, which match non-ASCII digits in Rust regex.
    #[error("pattern {0:?}: write [0-9] instead of \\d, which also matches non-ASCII digits")]
    UnicodeDigit(String),
    /// Not a regular expression (the regex crate's reason).
    #[error("pattern {pattern:?}: {reason}")]
    Invalid {
        /// The pattern as written.
        pattern: String,
        /// The regex crate's reason.
        reason: regex::Error,
    },
}

impl ParamRule {
    /// Compiles a hand-written rule; the error says what is wrong with it.
    pub(crate) fn from_config(name: &str, c: &ParamConfig) -> Result<Self, ParamRuleError> {
        let numeric = matches!(c.kind, ParamType::Integer | ParamType::Number);
        if !numeric && (c.minimum.is_some() || c.maximum.is_some()) {
            return Err(ParamRuleError::BoundsNeedNumber);
        }
        if c.kind != ParamType::String
            && (c.min_length.is_some() || c.max_length.is_some() || c.format.is_some())
        {
            return Err(ParamRuleError::LengthNeedsString);
        }
        if let (Some(lo), Some(hi)) = (c.minimum, c.maximum)
            && lo > hi
        {
            return Err(ParamRuleError::Bounds { lo, hi });
        }
        if let (Some(lo), Some(hi)) = (c.min_length, c.max_length)
            && lo > hi
        {
            return Err(ParamRuleError::Lengths { lo, hi });
        }
        let pattern = c.pattern.as_deref().map(anchored_regex).transpose()?;
        if let Some(values) = &c.allowed
            && let Some(bad) = values.iter().find(|v| !is_of_kind(v, c.kind))
        {
            return Err(ParamRuleError::EnumValue {
                value: bad.clone(),
                kind: c.kind.name(),
            });
        }
        let format = match &c.format {
            Some(f) => Some((f.clone(), schema::format_check(f)?)),
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            required: c.required,
            kind: c.kind,
            pattern,
            allowed: c.allowed.clone(),
            minimum: c.minimum,
            maximum: c.maximum,
            min_length: c.min_length,
            max_length: c.max_length,
            format,
            schema: None,
        })
    }

    /// A rule whose checks are a JSON Schema (an OpenAPI parameter).
    pub(crate) fn from_schema(
        name: &str,
        kind: ParamType,
        required: bool,
        schema: Validator,
    ) -> Self {
        Self {
            name: name.to_owned(),
            required,
            kind,
            pattern: None,
            allowed: None,
            minimum: None,
            maximum: None,
            min_length: None,
            max_length: None,
            format: None,
            schema: Some(schema),
        }
    }

    /// Checks one value; violations are about `/name` in `part`.
    pub(crate) fn check(&self, raw: &str, part: Part, out: &mut Vec<Violation>) {
        let mut fail = |message: &str| out.push(Violation::param(part, &self.name, message));
        let Some(value) = convert(raw, self.kind) else {
            return fail(&format!("must be {}", article(self.kind)));
        };
        if let Some(re) = &self.pattern
            && !re.is_match(raw)
        {
            fail(&format!("must match {}", re.as_str()));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| same(a, &value))
        {
            fail("must be one of the allowed values");
        }
        // Bounds compare the exact decimal the text spells (class: a value
        // a hair over the maximum must not round onto it).
        if let Some(n) = decimal_of(&value) {
            if let Some(lo) = self.minimum
                && Decimal::from_f64(lo).is_some_and(|lo| n < lo)
            {
                fail(&format!("must be >= {lo}"));
            }
            if let Some(hi) = self.maximum
                && Decimal::from_f64(hi).is_some_and(|hi| n > hi)
            {
                fail(&format!("must be <= {hi}"));
            }
        }
        let chars = raw.chars().count();
        if let Some(lo) = self.min_length
            && chars < lo
        {
            fail(&format!("must be at least {lo} characters long"));
        }
        if let Some(hi) = self.max_length
            && chars > hi
        {
            fail(&format!("must be at most {hi} characters long"));
        }
        if let Some((name, check)) = &self.format
            && !check.is_valid(&value)
        {
            fail(&format!("must be a valid {name}"));
        }
        if let Some(check) = &self.schema {
            for v in schema::violations(check, &value, part, usize::MAX).0 {
                // The schema sees a bare value: its pointer is "", the parameter's is /name.
                out.push(Violation::param(part, &self.name, v.message()));
            }
        }
    }
}

/// `pattern` compiled to match the whole value. `\d` is refused: in Rust
/// regex it matches every Unicode digit (Arabic-Indic, fullwidth...).
fn anchored_regex(pattern: &str) -> Result<Regex, PatternError> {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.next(), Some('d' | 'D')) {
            return Err(PatternError::UnicodeDigit(pattern.to_owned()));
        }
    }
    Regex::new(&format!("^(?:{pattern})$")).map_err(|reason| PatternError::Invalid {
        pattern: pattern.to_owned(),
        reason,
    })
}

/// The text converted to `kind`, or `None` if it is not one. Numbers keep
/// their exact value: an integer is any run of ASCII digits with an
/// optional `-` (no i64 limit: `99999999999999999999` is an integer), a
/// number is a JSON number (RFC 8259 §6; leading zeros allowed), and the
/// JSON value made from either spells the same decimal as the text.
pub(crate) fn convert(raw: &str, kind: ParamType) -> Option<Value> {
    match kind {
        ParamType::String => Some(Value::String(raw.to_owned())),
        ParamType::Boolean => match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        ParamType::Integer => {
            let (sign, digits) = match raw.strip_prefix('-') {
                Some(rest) => ("-", rest),
                None => ("", raw),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let digits = digits.trim_start_matches('0');
            let canonical = match digits {
                "" => "0".to_owned(),
                d => format!("{sign}{d}"),
            };
            number(&canonical)
        }
        ParamType::Number => {
            Decimal::parse(raw, true)?;
            // JSON has no leading zeros: drop them from the integer part.
            let (sign, rest) = match raw.strip_prefix('-') {
                Some(rest) => ("-", rest),
                None => ("", raw),
            };
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let zeros = rest[..int_len].bytes().take_while(|b| *b == b'0').count();
            let zeros = zeros.min(int_len - 1);
            number(&format!("{sign}{}", &rest[zeros..]))
        }
    }
}

/// A JSON number holding exactly `text` (already in JSON number syntax).
fn number(text: &str) -> Option<Value> {
    serde_json::from_str::<serde_json::Number>(text)
        .ok()
        .map(Value::Number)
}

/// The exact decimal of a JSON number value.
fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => Decimal::parse(&n.to_string(), false),
        _ => None,
    }
}

fn is_of_kind(v: &Value, kind: ParamType) -> bool {
    match kind {
        ParamType::String => v.is_string(),
        ParamType::Integer => decimal_of(v).is_some_and(|d| d.is_integer()),
        ParamType::Number => v.is_number(),
        ParamType::Boolean => v.is_boolean(),
    }
}

/// Equality, with numbers compared as exact decimals (1 == 1.0 == 1e0).
fn same(a: &Value, b: &Value) -> bool {
    match (decimal_of(a), decimal_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "true or false",
    }
}

/// Splits a query string into decoded `(name, value)` pairs
/// (`application/x-www-form-urlencoded`: `+` is a space). `None` if an
/// escape is malformed or a decoded part is not UTF-8.
pub(crate) fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    unescape(s, true)
}

/// A path segment percent-decoded once (`+` stays `+`). `None` if an
/// escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    unescape(s, false)
}

fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // Two hex digits; from_str_radix alone would take "+5".
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(convert("42", ParamType::Integer), Some(Value::from(42)));
        assert_eq!(convert("-7", ParamType::Integer), Some(Value::from(-7)));
        assert_eq!(convert("007", ParamType::Integer), Some(Value::from(7)));
        assert_eq!(convert("-0", ParamType::Integer), Some(Value::from(0)));
        let text = |raw, kind| convert(raw, kind).map(|v| v.to_string());
        // Beyond i64 and u64: still an integer, exactly.
        for big in ["99999999999999999999", "-99999999999999999999"] {
            assert_eq!(text(big, ParamType::Integer).as_deref(), Some(big));
        }
        for bad in ["", "+1", "1.0", "٣", " 1", "-", "1e2", "0x1"] {
            assert_eq!(convert(bad, ParamType::Integer), None, "{bad}");
        }
        assert_eq!(text("1.5e3", ParamType::Number).as_deref(), Some("1.5e+3"));
        assert_eq!(
            text("100.00000000000000001", ParamType::Number).as_deref(),
            Some("100.00000000000000001")
        );
        assert_eq!(text("1E400", ParamType::Number).as_deref(), Some("1e+400"));
        assert_eq!(text("007.5", ParamType::Number).as_deref(), Some("7.5"));
        assert_eq!(text("-00", ParamType::Number).as_deref(), Some("-0"));
        for bad in ["inf", "NaN", "0x10", "", "+1", "1.", ".5", "1e", "1 "] {
            assert_eq!(convert(bad, ParamType::Number), None, "{bad}");
        }
        assert_eq!(convert("true", ParamType::Boolean), Some(Value::Bool(true)));
        assert_eq!(convert("True", ParamType::Boolean), None);
    }

    fn rule(toml: &str) -> ParamRule {
        let c: ParamConfig = toml::from_str(toml).unwrap();
        ParamRule::from_config("n", &c).unwrap()
    }

    fn fails(rule: &ParamRule, raw: &str) -> bool {
        let mut out = Vec::new();
        rule.check(raw, Part::Query, &mut out);
        !out.is_empty()
    }

    #[test]
    fn bounds_are_exact() {
        let int = rule("type = \"integer\"\nmaximum = 100\nminimum = -100");
        for ok in ["100", "-100", "0", "-0", "0100"] {
            assert!(!fails(&int, ok), "{ok}");
        }
        for bad in [
            "101",
            "99999999999999999999",
            "-99999999999999999999",
            "100.0",
            "1e2",
        ] {
            assert!(fails(&int, bad), "{bad}");
        }
        let num = rule("type = \"number\"\nmaximum = 100\nminimum = 0.1");
        for ok in ["100", "100.0", "1e2", "99.99999999999999999", "0.1", "0.10"] {
            assert!(!fails(&num, ok), "{ok}");
        }
        for bad in [
            "100.00000000000000001",
            "1E400",
            "0.09999999999999999999",
            "-0",
        ] {
            assert!(fails(&num, bad), "{bad}");
        }
        let unbounded = rule("type = \"integer\"");
        assert!(!fails(&unbounded, "99999999999999999999"));
        let allowed = rule("type = \"number\"\nenum = [1, 2.5]");
        for ok in ["1", "1.0", "1e0", "2.50", "25e-1"] {
            assert!(!fails(&allowed, ok), "{ok}");
        }
        assert!(fails(&allowed, "1.00000000000000000001"));
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("a=1&b=x+y%2Fz&&c&d=%C3%A9").unwrap();
        let expect = [("a", "1"), ("b", "x y/z"), ("c", ""), ("d", "é")];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(q, expect);
        assert!(parse_query("a=%zz").is_none());
        assert!(parse_query("a=%ff").is_none());
        assert!(parse_query("a=%4").is_none());
        assert!(parse_query("a=%+5").is_none());
        assert_eq!(
            percent_decode("a+b%20c%2Fd%31").as_deref(),
            Some("a+b c/d1")
        );
        assert_eq!(percent_decode("%2531").as_deref(), Some("%31"));
        assert!(percent_decode("%ff").is_none());
    }

    #[test]
    fn backslash_d_is_refused_and_patterns_are_anchored() {
        assert!(
            anchored_regex(r"^\d+$")
                .unwrap_err()
                .to_string()
                .contains("[0-9]")
        );
        let re = anchored_regex("[a-z]+").unwrap();
        assert!(re.is_match("abc") && !re.is_match("abc1"));
        assert!(anchored_regex(r"a\\d").is_ok());
    }
}
