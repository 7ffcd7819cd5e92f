//! Reading a JSON request body strictly: `Content-Type` must be JSON, the
//! bytes UTF-8, and while parsing (not after) every object is checked for
//! repeated keys and the nesting depth is bounded. serde_json on its own
//! keeps the last of two equal keys, while the service behind the gateway
//! may keep the first: such bodies are refused instead.
//!
//! Numbers keep their exact text (serde_json's `arbitrary_precision`, on for
//! the JSON Schema checks to compare exact decimals): serde_json hands such a
//! number to a visitor as a one-entry map under a private key, with the
//! text given as an owned string. A body that spells that key itself is an
//! ordinary object here (its string value comes borrowed or copied, never
//! owned), so it cannot pass for a number as it would with `Value`.

#![forbid(unsafe_code)]

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::rejection::{Part, Reason, Rejection, Violation, pointer_token};

/// Whether `content_type` is `application/json` or `application/*+json`,
/// with no parameter other than `charset=utf-8`.
pub(crate) fn is_json_media_type(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = match essence.split_once('/') {
        Some(("application", "json")) => true,
        Some(("application", sub)) => {
            sub.len() > "+json".len()
                && sub.ends_with("+json")
                && sub[..sub.len() - 5]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.".contains(&b))
        }
        _ => false,
    };
    json && parts.all(|p| match p.split_once('=') {
        Some((name, value)) => {
            name.trim().eq_ignore_ascii_case("charset")
                && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        None => p.trim().is_empty(),
    })
}

/// Parses `body` into a value, refusing invalid UTF-8, malformed JSON,
/// repeated keys and nesting deeper than `max_depth`.
pub(crate) fn parse_strict(body: &[u8], max_depth: usize) -> Result<Value, Rejection> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::one(
            Reason::InvalidUtf8,
            Violation::new(
                Part::Body,
                "",
                &format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            ),
        )
    })?;
    let mut state = State {
        number_text: None,
        max_depth,
        depth: 0,
        path: Vec::new(),
        problem: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = ValueSeed { state: &mut state }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, state.problem) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some((reason, pointer, message))) => Err(Rejection::one(
            reason,
            Violation::new(Part::Body, &pointer, &message),
        )),
        (Err(e), None) => Err(Rejection::one(
            Reason::MalformedJson,
            Violation::new(Part::Body, "", &syntax_message(&e)),
        )),
    }
}

/// What serde_json found wrong, without the input (its messages quote
/// only expected tokens, but keep to line and column to be sure).
fn syntax_message(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        _ => "invalid JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// The key serde_json (with `arbitrary_precision`) wraps a number's text in.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

struct State {
    /// Set while reading the value under a first key [`NUMBER_TOKEN`]:
    /// whether it came as the text of a number.
    number_text: Option<bool>,
    max_depth: usize,
    depth: usize,
    /// Pointer tokens of the current position.
    path: Vec<String>,
    /// The first rule broken, set before the parse is aborted.
    problem: Option<(Reason, String, String)>,
}

impl State {
    fn pointer(&self) -> String {
        self.path.iter().map(|t| format!("/{t}")).collect()
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > self.max_depth {
            let message = format!("nesting deeper than {} levels", self.max_depth);
            self.problem = Some((Reason::TooDeep, self.pointer(), message));
            return Err(E::custom("too deep"));
        }
        Ok(())
    }
}

struct ValueSeed<'a> {
    state: &'a mut State,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if let Some(seen) = self.state.number_text.as_mut() {
            // Only a number's text arrives owned (see the module docs).
            *seen = true;
            let n: serde_json::Number =
                serde_json::from_str(&v).map_err(|_| E::custom("not a number"))?;
            return Ok(Value::Number(n));
        }
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.state.enter()?;
        let mut items = Vec::new();
        loop {
            self.state.path.push(items.len().to_string());
            let item = seq.next_element_seed(ValueSeed {
                state: &mut *self.state,
            })?;
            self.state.path.pop();
            match item {
                Some(v) => items.push(v),
                None => break,
            }
        }
        self.state.depth -= 1;
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.state.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.is_empty() && key == NUMBER_TOKEN {
                self.state.number_text = Some(false);
                self.state.path.push(pointer_token(&key));
                let value = map.next_value_seed(ValueSeed {
                    state: &mut *self.state,
                });
                self.state.path.pop();
                let number = self.state.number_text.take() == Some(true);
                let value = value?;
                if number {
                    self.state.depth -= 1;
                    return Ok(value);
                }
                object.insert(key, value);
                continue;
            }
            self.state.path.push(pointer_token(&key));
            if object.contains_key(&key) {
                let pointer = self.state.pointer();
                self.state.problem = Some((
                    Reason::DuplicateKey,
                    pointer,
                    "key appears more than once in the object".to_owned(),
                ));
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(ValueSeed {
                state: &mut *self.state,
            })?;
            self.state.path.pop();
            object.insert(key, value);
        }
        self.state.depth -= 1;
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reason(body: &[u8]) -> &'static str {
        parse_strict(body, 32).unwrap_err().reason()
    }

    #[test]
    fn accepts_ordinary_json() {
        let v = parse_strict(br#"{"a":[1,2,{"b":null}],"c":"d","e":1.5,"f":-3}"#, 32).unwrap();
        assert_eq!(v["a"][2]["b"], Value::Null);
        assert_eq!(v["f"], -3);
    }

    #[test]
    fn duplicate_keys_are_refused_with_a_pointer() {
        let r = parse_strict(br#"{"x":{"a":1,"a":2}}"#, 32).unwrap_err();
        assert_eq!(r.reason(), "duplicate_key");
        assert_eq!(r.violations()[0].pointer(), "/x/a");
        // An escaped spelling of the same key is the same key.
        assert_eq!(reason(br#"{"a":1,"\u0061":2}"#), "duplicate_key");
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let v = parse_strict(
            br#"{"a":100.00000000000000001,"b":99999999999999999999,"c":-0,"d":1E400,"e":[1.5,2]}"#,
            32,
        )
        .unwrap();
        assert_eq!(v["a"].to_string(), "100.00000000000000001");
        assert_eq!(v["b"].to_string(), "99999999999999999999");
        assert_eq!(v["c"].to_string(), "-0");
        // serde_json spells the exponent its own way; the value is the same.
        assert_eq!(v["d"].to_string(), "1e+400");
        assert_eq!(v["e"][0].to_string(), "1.5");
        assert!(v["a"].is_number() && v["d"].is_number() && v["e"][1].is_u64());
        // Deeply placed and at the top level.
        assert_eq!(parse_strict(b"1.25", 32).unwrap().to_string(), "1.25");
        assert_eq!(
            parse_strict(br#"{"x":{"y":[0.1]}}"#, 32).unwrap()["x"]["y"][0].to_string(),
            "0.1"
        );
    }

    #[test]
    fn the_private_number_key_is_an_ordinary_key() {
        // With serde_json's `Value` (arbitrary_precision) this object would
        // become the number 5: a type confusion between gateway and backend.
        let v = parse_strict(br#"{"$serde_json::private::Number":"5"}"#, 32).unwrap();
        assert!(v.is_object(), "{v:?}");
        assert_eq!(v[NUMBER_TOKEN], "5");
        let v = parse_strict(br#"{"\u0024serde_json::private::Number":"5"}"#, 32).unwrap();
        assert!(v.is_object(), "{v:?}");
        let v = parse_strict(br#"{"$serde_json::private::Number":1.5,"b":2}"#, 32).unwrap();
        assert_eq!(
            (v[NUMBER_TOKEN].to_string(), &v["b"]),
            ("1.5".into(), &json!(2))
        );
        let v = parse_strict(br#"{"$serde_json::private::Number":{"x":1e2}}"#, 32).unwrap();
        assert_eq!(v[NUMBER_TOKEN]["x"].to_string(), "1e+2");
        let r = parse_strict(
            br#"{"$serde_json::private::Number":"5","$serde_json::private::Number":"6"}"#,
            32,
        )
        .unwrap_err();
        assert_eq!(r.reason(), "duplicate_key");
    }

    #[test]
    fn depth_is_bounded_while_parsing() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(reason(deep.as_bytes()), "too_deep");
        let ok = "[".repeat(32) + &"]".repeat(32);
        assert!(parse_strict(ok.as_bytes(), 32).is_ok());
        let over = "[".repeat(33) + &"]".repeat(33);
        assert_eq!(reason(over.as_bytes()), "too_deep");
        // At the largest setting our check still comes before serde_json's own.
        let limit = super::super::MAX_DEPTH_LIMIT;
        let ok = "[".repeat(limit) + &"]".repeat(limit);
        assert!(parse_strict(ok.as_bytes(), limit).is_ok());
        let over = "{\"a\":".repeat(limit + 1) + "1" + &"}".repeat(limit + 1);
        let r = parse_strict(over.as_bytes(), limit).unwrap_err();
        assert_eq!(r.reason(), "too_deep");
    }

    #[test]
    fn malformed_and_non_utf8_bodies() {
        assert_eq!(reason(b"{\"a\":1,}"), "malformed_json");
        assert_eq!(reason(b"{\"a\":1} x"), "malformed_json");
        assert_eq!(reason(b""), "malformed_json");
        assert_eq!(reason(b"{\"a\":\"\xff\"}"), "invalid_utf8");
    }

    #[test]
    fn media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/merge-patch+json",
            "application/vnd.api+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/+json",
            "application/json; charset=latin1",
            "application/json; boundary=x",
            "text/json",
            "",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }
}
