//! JSON request bodies against a route's rules
//! (`validate::RouteValidator::check_body`): strict parsing (UTF-8,
//! repeated keys refused while parsing, bounded depth), then a JSON Schema
//! with formats asserted. Checked beyond "no panic": an accepted body is
//! valid JSON with no repeated key at any depth (checked here by an
//! independent walk over serde_json's event stream), and a rejection's
//! problem+json body is itself valid JSON.

#![no_main]

use std::{collections::BTreeSet, path::Path, sync::LazyLock};

use gateway::{config::Config, validate::Validators};
use http::{HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const RULES: &str = r#"
[validation]
max_depth = 16

[[validation.rules]]
route = "users"
method = "POST"
body_schema = { type = "object", required = ["name", "email"], additionalProperties = false, properties = { name = { type = "string", maxLength = 40 }, age = { type = "integer", minimum = 0 }, email = { type = "string", format = "email" }, id = { type = "string", format = "uuid" }, born = { type = "string", format = "date-time" }, site = { type = "string", format = "uri" }, ip4 = { type = "string", format = "ipv4" }, ip6 = { type = "string", format = "ipv6" }, tags = { type = "array", maxItems = 8, items = { type = "string", pattern = "^[a-z0-9-]{1,12}$" } }, meta = { type = "object", additionalProperties = { type = ["string", "number", "boolean", "null", "object", "array"] } } } }
"#;

static VALIDATORS: LazyLock<Validators> = LazyLock::new(|| {
    let c = Config::parse(RULES, "fuzz-rules.toml").expect("the fuzz rules parse");
    Validators::from_config(&c.validation, Path::new(".")).expect("the fuzz rules compile")
});

fuzz_target!(|data: &[u8]| {
    let rule = VALIDATORS
        .for_route("users", &Method::POST)
        .expect("the rule exists");
    let content_type = HeaderValue::from_static("application/json");
    match rule.check_body(Some(&content_type), data) {
        Ok(()) => {
            if data.is_empty() {
                return;
            }
            let value: Value = serde_json::from_slice(data).expect("accepted body is JSON");
            assert!(value.is_object(), "the schema requires an object");
            assert!(
                !has_repeated_key(data),
                "accepted a body with a repeated key"
            );
        }
        Err(rejection) => {
            let body = rejection.problem_json();
            serde_json::from_slice::<Value>(&body).expect("problem+json is JSON");
        }
    }
});

/// Whether any object in the (valid JSON) text repeats a key, found with a
/// serde visitor that is separate from the gateway's.
fn has_repeated_key(data: &[u8]) -> bool {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Walk;
    impl<'de> Visitor<'de> for Walk {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = BTreeSet::new();
            let mut repeated = false;
            while let Some(key) = map.next_key::<String>()? {
                repeated |= !seen.insert(key);
                repeated |= map.next_value_seed(WalkSeed)?;
            }
            Ok(repeated)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut repeated = false;
            while let Some(r) = seq.next_element_seed(WalkSeed)? {
                repeated |= r;
            }
            Ok(repeated)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    struct WalkSeed;
    impl<'de> serde::de::DeserializeSeed<'de> for WalkSeed {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(Walk)
        }
    }
    // Accepted bodies are at most 16 deep, well inside serde_json's own limit.
    let mut de = serde_json::Deserializer::from_slice(data);
    serde::de::DeserializeSeed::deserialize(WalkSeed, &mut de).unwrap_or(false)
}
