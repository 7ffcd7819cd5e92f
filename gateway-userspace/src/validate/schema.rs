//! JSON Schema compilation and the violations a schema reports. Every
//! schema is built with the same options: formats are ASSERTED (not only
//! annotations, the 2019-09/2020-12 default), an unknown format is a
//! config error rather than silently ignored, the custom `phone` format is
//! E.164, `pattern` uses the linear-time `regex` engine, no `$ref` is
//! ever fetched over the network or from disk, and the keywords that look
//! at a number's value compare exact decimals (`exact.rs`).

#![forbid(unsafe_code)]

use jsonschema::{Draft, PatternOptions, ValidationError, Validator, error::ValidationErrorKind};
use serde_json::Value;

use super::{
    exact,
    rejection::{Part, Violation, pointer_token},
};

/// E.164: `+`, a non-zero ASCII digit, then 1 to 14 more ASCII digits.
/// (Spelled out rather than `\d`, which in Rust regex matches any Unicode digit.)
pub(crate) fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `8-4-4-4-12` hex digits (RFC 9562 text form). Registered for every
/// draft, since the crate knows `uuid` only from 2019-09 on.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// OpenAPI's `byte`: padded standard base64.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// OpenAPI formats that describe numbers or opaque strings: known (so a
/// schema using them compiles), never refused.
fn annotation_only(_: &str) -> bool {
    true
}

/// A JSON Schema that does not compile (the config's or the OpenAPI
/// document's to fix); the text is the `jsonschema` crate's.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct SchemaError(Box<ValidationError<'static>>);

/// Compiles `schema`. `draft` forces a draft (OpenAPI 3.0 is draft 4);
/// otherwise `$schema` decides and the default is 2020-12.
pub(crate) fn compile(schema: &Value, draft: Option<Draft>) -> Result<Validator, SchemaError> {
    let mut options = jsonschema::options()
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_format("phone", is_e164)
        .with_format("uuid", is_uuid)
        .with_format("byte", is_base64)
        .with_format("int32", annotation_only)
        .with_format("int64", annotation_only)
        .with_format("float", annotation_only)
        .with_format("double", annotation_only)
        .with_format("binary", annotation_only)
        .with_format("password", annotation_only)
        .with_pattern_options(PatternOptions::regex());
    let draft4 = match draft {
        Some(d) => d == Draft::Draft4,
        None => schema
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("draft-04")),
    };
    options = exact::register(options, draft4);
    match draft {
        Some(draft) => options = options.with_draft(draft),
        None if schema.get("$schema").is_none() => options = options.with_draft(Draft::Draft202012),
        None => {}
    }
    options.build(schema).map_err(|e| SchemaError(Box::new(e)))
}

/// A schema checking that a string has `format` (for parameters).
pub(crate) fn format_check(format: &str) -> Result<Validator, SchemaError> {
    compile(
        &serde_json::json!({ "type": "string", "format": format }),
        None,
    )
}

/// The violations of `instance` against `validator`, in `part`: at most
/// about `cap` described, and how many more errors were only counted.
pub(crate) fn violations(
    validator: &Validator,
    instance: &Value,
    part: Part,
    cap: usize,
) -> (Vec<Violation>, usize) {
    let mut out = Vec::new();
    let mut more = 0;
    for error in validator.iter_errors(instance) {
        if out.len() < cap {
            describe(&error, part, &mut out);
        } else {
            more += 1;
        }
    }
    (out, more)
}

/// Turns one error into violations, with messages built from the schema's
/// side only (never the instance's value).
fn describe(error: &ValidationError<'_>, part: Part, out: &mut Vec<Violation>) {
    let at = error.instance_path().as_str();
    let mut push = |message: String| out.push(Violation::new(part, at, &message));
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let pointer = format!("{at}/{}", pointer_token(name));
            out.push(Violation::new(part, &pointer, "is required"));
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                let pointer = format!("{at}/{}", pointer_token(name));
                out.push(Violation::new(part, &pointer, "is not an allowed property"));
            }
        }
        ValidationErrorKind::Type { kind } => push(match kind {
            jsonschema::error::TypeKind::Single(t) => format!("must be of type {t}"),
            jsonschema::error::TypeKind::Multiple(set) => {
                let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
                format!("must be of type {}", names.join(" or "))
            }
        }),
        ValidationErrorKind::Format { format } => push(format!("must be a valid {format}")),
        ValidationErrorKind::Enum { .. } => push("must be one of the allowed values".into()),
        ValidationErrorKind::Constant { .. } => push("must be the expected constant".into()),
        ValidationErrorKind::Minimum { limit } => push(format!("must be >= {limit}")),
        ValidationErrorKind::Maximum { limit } => push(format!("must be <= {limit}")),
        ValidationErrorKind::ExclusiveMinimum { limit } => push(format!("must be > {limit}")),
        ValidationErrorKind::ExclusiveMaximum { limit } => push(format!("must be < {limit}")),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            push(format!("must be a multiple of {multiple_of}"))
        }
        ValidationErrorKind::MinLength { limit } => {
            push(format!("must be at least {limit} characters long"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            push(format!("must be at most {limit} characters long"))
        }
        ValidationErrorKind::MinItems { limit } => push(format!("needs at least {limit} items")),
        ValidationErrorKind::MaxItems { limit } => push(format!("allows at most {limit} items")),
        ValidationErrorKind::MinProperties { limit } => {
            push(format!("needs at least {limit} properties"))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            push(format!("allows at most {limit} properties"))
        }
        ValidationErrorKind::Pattern { pattern } => push(format!("must match {pattern}")),
        ValidationErrorKind::UniqueItems => push("items must be unique".into()),
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            push("does not match any of the allowed schemas".into())
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            push("matches more than one of the exclusive schemas".into())
        }
        ValidationErrorKind::Not { .. } => push("matches a schema it must not match".into()),
        ValidationErrorKind::FalseSchema => push("is not allowed".into()),
        ValidationErrorKind::Contains => push("has no item matching the schema".into()),
        ValidationErrorKind::AdditionalItems { .. }
        | ValidationErrorKind::UnevaluatedItems { .. } => push("has items not allowed".into()),
        ValidationErrorKind::PropertyNames { .. } => push("has a property name not allowed".into()),
        // The exact numeric keywords (`exact.rs`) word their own messages.
        ValidationErrorKind::Custom { message, .. } => push(message.clone()),
        other => push(format!("fails the `{}` rule", other.keyword())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn e164() {
        for ok in ["+14155550123", "+442071838750", "+12"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "14155550123",
            "+0123",
            "+1",
            "+1234567890123456",
            "+1 415 555",
            "+١٢٣٤٥٦٧",
            "+１２３４５",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn formats_are_asserted_in_every_draft() {
        for draft in [
            "https://json-schema.org/draft/2020-12/schema",
            "https://json-schema.org/draft/2019-09/schema",
            "http://json-schema.org/draft-07/schema#",
            "http://json-schema.org/draft-04/schema#",
        ] {
            let v = compile(&json!({"$schema": draft, "format": "email"}), None).unwrap();
            assert!(!v.is_valid(&json!("not-an-email")), "{draft}");
            assert!(v.is_valid(&json!("a@example.com")), "{draft}");
        }
        let v = compile(&json!({"format": "email"}), None).unwrap();
        assert!(!v.is_valid(&json!("not-an-email")));
    }

    #[test]
    fn unknown_format_and_remote_ref_do_not_compile() {
        assert!(compile(&json!({"format": "emial"}), None).is_err());
        assert!(compile(&json!({"$ref": "https://example.invalid/s.json"}), None).is_err());
        assert!(compile(&json!({"type": 12}), None).is_err());
        // Linear-time engine: no look-around, refused at load.
        assert!(compile(&json!({"pattern": "(?=a)b"}), None).is_err());
        // ECMA \d is ASCII.
        let v = compile(&json!({"pattern": "^\\d+$"}), None).unwrap();
        assert!(v.is_valid(&json!("123")) && !v.is_valid(&json!("١٢٣")));
    }

    /// Whether `number` (JSON text, parsed as a body is) passes `schema`.
    fn passes(schema: Value, number: &str) -> bool {
        let v = compile(&schema, None).unwrap();
        let instance = super::super::json::parse_strict(number.as_bytes(), 8).unwrap();
        v.is_valid(&instance)
    }

    #[test]
    fn numbers_are_compared_as_exact_decimals() {
        let max = json!({"type": "integer", "maximum": 100});
        for ok in [
            "100",
            "100.0",
            "1e2",
            "1E2",
            "-0",
            "0",
            "99",
            "-99999999999999999999",
        ] {
            assert!(passes(max.clone(), ok), "{ok}");
        }
        for bad in [
            "100.00000000000000001",
            "99.99999999999999999",
            "1E400",
            "101",
            "99999999999999999999",
            "100.5",
        ] {
            assert!(!passes(max.clone(), bad), "{bad}");
        }
        let number = json!({"type": "number", "maximum": 100});
        assert!(passes(number.clone(), "99.99999999999999999"));
        assert!(!passes(number.clone(), "100.00000000000000001"));
        assert!(!passes(number, "1E400"));
        let exclusive = json!({"exclusiveMaximum": 100, "exclusiveMinimum": 0});
        assert!(passes(exclusive.clone(), "99.99999999999999999"));
        assert!(passes(exclusive.clone(), "0.00000000000000000001"));
        assert!(!passes(exclusive.clone(), "100.0"));
        assert!(!passes(exclusive.clone(), "-0"));
        let min = json!({"minimum": 100});
        assert!(!passes(min.clone(), "99.99999999999999999"));
        assert!(passes(min, "100.00000000000000001"));
        let multiple = json!({"multipleOf": 0.01});
        assert!(passes(multiple.clone(), "19.99"));
        assert!(!passes(multiple, "19.99000000000000001"));
        // Integers beyond i64 and u64, when the schema allows them.
        let big = json!({"type": "integer", "minimum": 0});
        assert!(passes(big.clone(), "99999999999999999999"));
        assert!(passes(big.clone(), "123456789012345678901234567890"));
        assert!(!passes(big, "-99999999999999999999"));
        let limit: Value = serde_json::from_str(r#"{"maximum": 99999999999999999999}"#).unwrap();
        assert!(passes(limit.clone(), "99999999999999999999"));
        assert!(!passes(limit, "100000000000000000000"));
    }

    #[test]
    fn messages_do_not_echo_the_value() {
        let v = compile(&json!({"properties": {"e": {"format": "email"}}}), None).unwrap();
        let secret = "x".repeat(50) + "-secret";
        let (vs, _) = violations(&v, &json!({ "e": secret }), Part::Body, 20);
        assert_eq!(vs.len(), 1);
        assert_eq!(vs[0].pointer(), "/e");
        assert!(!vs[0].message().contains("secret"), "{:?}", vs[0]);
    }
}
