//! The JSON Schema keywords that look at a number's value, replaced by
//! versions that compare exact decimals. serde_json's `arbitrary_precision`
//! keeps each number's text; the jsonschema crate would still compare its
//! `f64` rounding (`100.00000000000000001` is `100.0`, so it would pass
//! `maximum: 100` and, as an "integer", `type: integer`). Its own
//! `arbitrary-precision` feature cannot be resolved from the registry this
//! project builds from, so the keywords are registered here instead:
//! `type`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`
//! (draft 4's boolean form included), `multipleOf`, `enum`, `const` and
//! `uniqueItems`.
//! Messages name the schema's side only, never the instance's value.

#![forbid(unsafe_code)]

use jsonschema::{Keyword, ValidationError, ValidationOptions};
use serde_json::{Map, Value};

use super::decimal::Decimal;

/// Most significant digits of a `multipleOf` (its digits must fit a u128
/// with room to spare; real schemas use one to a few).
const MAX_MULTIPLE_DIGITS: usize = 36;

/// The exact decimal of a JSON number, `None` for other values.
fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => Decimal::parse(&n.to_string(), false),
        _ => None,
    }
}

fn schema_error(message: String) -> ValidationError<'static> {
    ValidationError::custom(message)
}

type Boxed = Box<dyn for<'i> Keyword<'i>>;

/// Adds the exact keywords to `options`. `draft4` selects draft 4's
/// `integer` (written without fraction or exponent) over the later drafts'
/// (any number with a zero fractional part).
pub(crate) fn register<'a, R>(
    options: ValidationOptions<'a, R>,
    draft4: bool,
) -> ValidationOptions<'a, R> {
    options
        .with_keyword("type", move |_, v, _| type_keyword(v, draft4))
        .with_keyword("minimum", |p, v, _| {
            bound(p, v, Side::Min, "exclusiveMinimum")
        })
        .with_keyword("maximum", |p, v, _| {
            bound(p, v, Side::Max, "exclusiveMaximum")
        })
        .with_keyword("exclusiveMinimum", |_, v, _| exclusive(v, Side::Min))
        .with_keyword("exclusiveMaximum", |_, v, _| exclusive(v, Side::Max))
        .with_keyword("multipleOf", |_, v, _| multiple_of(v))
        .with_keyword("enum", |_, v, _| one_of_values(v))
        .with_keyword("uniqueItems", |_, v, _| unique_items(v))
        .with_keyword("const", |_, v, _| {
            Ok(Box::new(Values {
                allowed: vec![v.clone()],
                message: "must be the expected constant".into(),
            }) as Boxed)
        })
}

// ---- type ----------------------------------------------------------------

struct Type {
    names: Vec<String>,
    draft4: bool,
}

fn type_keyword(v: &Value, draft4: bool) -> Result<Boxed, ValidationError<'static>> {
    const KNOWN: [&str; 7] = [
        "null", "boolean", "object", "array", "number", "string", "integer",
    ];
    let names: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| schema_error("`type` must list type names".into()))?,
        _ => return Err(schema_error("`type` must be a string or an array".into())),
    };
    if let Some(bad) = names.iter().find(|n| !KNOWN.contains(&n.as_str())) {
        return Err(schema_error(format!("unknown type {bad:?}")));
    }
    Ok(Box::new(Type { names, draft4 }))
}

impl Type {
    fn matches(&self, instance: &Value) -> bool {
        self.names.iter().any(|t| match t.as_str() {
            "null" => instance.is_null(),
            "boolean" => instance.is_boolean(),
            "object" => instance.is_object(),
            "array" => instance.is_array(),
            "string" => instance.is_string(),
            "number" => instance.is_number(),
            "integer" => match instance {
                // Draft 4: a number written without fraction or exponent.
                Value::Number(n) if self.draft4 => {
                    let text = n.to_string();
                    let digits = text.strip_prefix('-').unwrap_or(&text);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                }
                Value::Number(_) => decimal(instance).is_some_and(|d| d.is_integer()),
                _ => false,
            },
            _ => false,
        })
    }
}

impl<'i> Keyword<'i> for Type {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.matches(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(format!(
                "must be of type {}",
                self.names.join(" or ")
            )))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.matches(instance)
    }
}

// ---- bounds --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Min,
    Max,
}

struct Bound {
    limit: Decimal,
    side: Side,
    strict: bool,
    message: String,
}

impl Bound {
    fn new(limit: Decimal, text: &str, side: Side, strict: bool) -> Self {
        let op = match (side, strict) {
            (Side::Min, false) => ">=",
            (Side::Min, true) => ">",
            (Side::Max, false) => "<=",
            (Side::Max, true) => "<",
        };
        Self {
            limit,
            side,
            strict,
            message: format!("must be {op} {text}"),
        }
    }

    fn ok(&self, instance: &Value) -> bool {
        let Some(x) = decimal(instance) else {
            return true; // bounds only constrain numbers
        };
        let order = x.cmp(&self.limit);
        match (self.side, self.strict) {
            (Side::Min, false) => order.is_ge(),
            (Side::Min, true) => order.is_gt(),
            (Side::Max, false) => order.is_le(),
            (Side::Max, true) => order.is_lt(),
        }
    }
}

impl<'i> Keyword<'i> for Bound {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.ok(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(self.message.clone()))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.ok(instance)
    }
}

/// `minimum` / `maximum`; exclusive when the sibling is draft 4's `true`.
fn bound(
    parent: &Map<String, Value>,
    v: &Value,
    side: Side,
    exclusive_sibling: &str,
) -> Result<Boxed, ValidationError<'static>> {
    let limit = decimal(v).ok_or_else(|| schema_error("bound must be a number".into()))?;
    let strict = parent.get(exclusive_sibling) == Some(&Value::Bool(true));
    Ok(Box::new(Bound::new(limit, &v.to_string(), side, strict)))
}

/// Draft 6+ numeric `exclusiveMinimum`/`exclusiveMaximum`; draft 4's
/// boolean form is read by `minimum`/`maximum` and checks nothing itself.
fn exclusive(v: &Value, side: Side) -> Result<Boxed, ValidationError<'static>> {
    match v {
        Value::Bool(_) => Ok(Box::new(Values::anything())),
        _ => {
            let limit = decimal(v)
                .ok_or_else(|| schema_error("exclusive bound must be a number".into()))?;
            Ok(Box::new(Bound::new(limit, &v.to_string(), side, true)))
        }
    }
}

// ---- multipleOf ----------------------------------------------------------

struct MultipleOf {
    /// The divisor's significant digits as an integer, and the power of ten
    /// of its last digit: `0.25` is `(25, -2)`.
    digits: u128,
    scale: i64,
    message: String,
}

fn multiple_of(v: &Value) -> Result<Boxed, ValidationError<'static>> {
    let d = decimal(v).ok_or_else(|| schema_error("multipleOf must be a number".into()))?;
    let (negative, digits, scale) = d.parts();
    if negative || digits.is_empty() {
        return Err(schema_error("multipleOf must be above 0".into()));
    }
    if digits.len() > MAX_MULTIPLE_DIGITS {
        return Err(schema_error(format!(
            "multipleOf has more than {MAX_MULTIPLE_DIGITS} significant digits"
        )));
    }
    let digits = digits
        .iter()
        .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
    Ok(Box::new(MultipleOf {
        digits,
        scale,
        message: format!("must be a multiple of {v}"),
    }))
}

impl MultipleOf {
    fn ok(&self, instance: &Value) -> bool {
        let Some(x) = decimal(instance) else {
            return true;
        };
        let (_, xd, x_scale) = x.parts();
        if xd.is_empty() {
            return true; // 0 is a multiple of everything
        }
        // x / m = (X / M) * 10^(x_scale - m_scale), X and M without trailing
        // zeros. With x_scale < m_scale, M * 10^k would have to divide X,
        // which ends in a non-zero digit: never.
        if x_scale < self.scale {
            return false;
        }
        // M | X * 10^k: past 4 * digits(M) more factors of ten change nothing
        // (M has fewer factors of 2 or 5 than that).
        let k = (x_scale - self.scale).min(4 * 40);
        let m = self.digits;
        let mut r: u128 = 0;
        for d in xd {
            r = (r * 10 + u128::from(d - b'0')) % m;
        }
        for _ in 0..k {
            r = (r * 10) % m;
        }
        r == 0
    }
}

impl<'i> Keyword<'i> for MultipleOf {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.ok(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(self.message.clone()))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.ok(instance)
    }
}

// ---- enum / const --------------------------------------------------------

/// Passes values equal to one of `allowed` (numbers compared exactly, at
/// any depth); with `allowed` empty and no message, passes everything.
struct Values {
    allowed: Vec<Value>,
    message: String,
}

impl Values {
    fn anything() -> Self {
        Self {
            allowed: Vec::new(),
            message: String::new(),
        }
    }

    fn ok(&self, instance: &Value) -> bool {
        (self.allowed.is_empty() && self.message.is_empty())
            || self.allowed.iter().any(|a| equal(a, instance))
    }
}

fn one_of_values(v: &Value) -> Result<Boxed, ValidationError<'static>> {
    let allowed = v
        .as_array()
        .ok_or_else(|| schema_error("enum must be an array".into()))?;
    Ok(Box::new(Values {
        allowed: allowed.clone(),
        message: "must be one of the allowed values".into(),
    }))
}

/// JSON equality with numbers compared as exact decimals (`1 == 1.0`).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => decimal(a) == decimal(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| equal(p, q)))
        }
        _ => a == b,
    }
}

/// A text equal for exactly the values [`equal`] calls equal (numbers by
/// exact value, object keys in order), to find repeated items by hashing
/// rather than comparing every pair.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Number(_) => match decimal(v) {
            Some(d) => {
                let (negative, digits, scale) = d.parts();
                out.push_str(if negative { "n-" } else { "n" });
                out.push_str(std::str::from_utf8(digits).unwrap_or(""));
                out.push_str(&format!("e{scale}"));
            }
            None => out.push_str(&v.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
                out.push(',');
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

struct UniqueItems;

fn unique_items(v: &Value) -> Result<Boxed, ValidationError<'static>> {
    match v {
        Value::Bool(true) => Ok(Box::new(UniqueItems)),
        Value::Bool(false) => Ok(Box::new(Values::anything())),
        _ => Err(schema_error("uniqueItems must be a boolean".into())),
    }
}

impl UniqueItems {
    fn ok(instance: &Value) -> bool {
        let Value::Array(items) = instance else {
            return true;
        };
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        items.iter().all(|item| {
            let mut key = String::new();
            canonical(item, &mut key);
            seen.insert(key)
        })
    }
}

impl<'i> Keyword<'i> for UniqueItems {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if Self::ok(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom("items must be unique"))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        Self::ok(instance)
    }
}

impl<'i> Keyword<'i> for Values {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.ok(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(self.message.clone()))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use jsonschema::Draft;
    use serde_json::json;

    use super::super::{json::parse_strict, rejection::Part, schema};

    fn check(schema: serde_json::Value, draft: Option<Draft>, number: &str) -> Vec<String> {
        let v = schema::compile(&schema, draft).unwrap();
        let instance = parse_strict(number.as_bytes(), 8).unwrap();
        let mut messages: Vec<String> = schema::violations(&v, &instance, Part::Body, 10)
            .0
            .iter()
            .map(|v| v.message().to_owned())
            .collect();
        messages.sort();
        messages
    }

    #[test]
    fn draft4_integer_and_boolean_exclusive_bounds() {
        let s = json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true,
                       "maximum": 10, "exclusiveMaximum": false});
        let d4 = Some(Draft::Draft4);
        assert!(check(s.clone(), d4, "10").is_empty());
        assert_eq!(check(s.clone(), d4, "0"), ["must be > 0"]);
        assert_eq!(check(s.clone(), d4, "5.0"), ["must be of type integer"]);
        assert_eq!(check(s.clone(), d4, "1e0"), ["must be of type integer"]);
        assert_eq!(
            check(s, d4, "10.000000000000000001"),
            ["must be <= 10", "must be of type integer"]
        );
        // Later drafts: 5.0 is an integer.
        let s = json!({"type": ["integer", "null"], "exclusiveMaximum": 10});
        assert!(check(s.clone(), None, "5.0").is_empty());
        assert!(check(s.clone(), None, "null").is_empty());
        assert_eq!(
            check(s.clone(), None, "9.99999999999999999999"),
            ["must be of type integer or null"]
        );
        assert_eq!(check(s, None, "10"), ["must be < 10"]);
    }

    #[test]
    fn multiple_of_enum_and_const_are_exact() {
        let m = json!({"multipleOf": 0.1});
        for ok in ["0.3", "0", "-0.7", "1e2", "12345678901234567890.1"] {
            assert!(check(m.clone(), None, ok).is_empty(), "{ok}");
        }
        for bad in ["0.31", "0.30000000000000001", "1e-2"] {
            assert_eq!(
                check(m.clone(), None, bad),
                ["must be a multiple of 0.1"],
                "{bad}"
            );
        }
        let m = json!({"multipleOf": 250});
        assert!(check(m.clone(), None, "1e400").is_empty());
        assert!(!check(m, None, "125").is_empty());
        let e = json!({"enum": [1, [2.5], {"a": 3}]});
        for ok in ["1", "1.0", "1e0", "[2.50]", "{\"a\":3e0}"] {
            assert!(check(e.clone(), None, ok).is_empty(), "{ok}");
        }
        for bad in [
            "1.00000000000000000001",
            "[2.5000000000000000001]",
            "{\"a\":3,\"b\":1}",
        ] {
            assert_eq!(
                check(e.clone(), None, bad),
                ["must be one of the allowed values"],
                "{bad}"
            );
        }
        let c = json!({"const": 100});
        assert!(check(c.clone(), None, "1e2").is_empty());
        assert_eq!(
            check(c, None, "100.00000000000000001"),
            ["must be the expected constant"]
        );
        let u = json!({"uniqueItems": true});
        for ok in [
            "[1, 1.00000000000000000001]",
            "[{\"a\":1},{\"a\":2}]",
            "[\"1\", 1]",
            "[]",
        ] {
            assert!(check(u.clone(), None, ok).is_empty(), "{ok}");
        }
        for bad in [
            "[1, 1.0]",
            "[1e2, 100]",
            "[{\"a\":1,\"b\":[0.5]},{\"b\":[5e-1],\"a\":1.0}]",
        ] {
            assert_eq!(
                check(u.clone(), None, bad),
                ["items must be unique"],
                "{bad}"
            );
        }
        assert!(check(json!({"uniqueItems": false}), None, "[1, 1]").is_empty());
        assert!(schema::compile(&json!({"multipleOf": 0}), None).is_err());
        assert!(schema::compile(&json!({"multipleOf": -1}), None).is_err());
        assert!(schema::compile(&json!({"maximum": "1"}), None).is_err());
        assert!(schema::compile(&json!({"type": "integr"}), None).is_err());
    }
}
