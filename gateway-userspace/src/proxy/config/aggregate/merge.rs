//! Combining the JSON bodies of an aggregate route's calls into one
//! response body, and the `_errors` member that names the parts missing.

#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use crate::proxy::config::aggregate::Merge;

/// The gateway's member listing failed optional calls; a call body's own
/// top-level `_errors` is dropped (`keys`/`deep`) so it cannot fake one.
pub const ERRORS: &str = "_errors";

/// Merges `parts` (call name, body; config order) as `merge` says.
///
/// # Errors
/// The name of the first call whose body is not a JSON object while
/// `merge` is `keys` or `deep`.
pub fn merge(merge: Merge, parts: Vec<(&str, Value)>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (name, body) in parts {
        match merge {
            Merge::Named => {
                out.insert(name.to_owned(), body);
            }
            Merge::Keys | Merge::Deep => {
                let Value::Object(mut obj) = body else {
                    return Err(name.to_owned());
                };
                obj.remove(ERRORS);
                for (k, v) in obj {
                    match (merge, out.get_mut(&k)) {
                        (Merge::Deep, Some(into)) => deep(into, v),
                        _ => {
                            out.insert(k, v);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Merges `from` into `into`: objects member by member, anything else
/// replaced.
fn deep(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(x) => deep(x, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn modes() {
        let parts = || {
            vec![
                ("a", json!({"x": 1, "o": {"p": 1}, "_errors": "fake"})),
                ("b", json!({"y": 2, "o": {"q": 2}})),
            ]
        };
        let named = Value::Object(merge(Merge::Named, parts()).unwrap());
        assert_eq!(named["a"]["x"], 1);
        assert_eq!(named["b"]["y"], 2);
        let keys = Value::Object(merge(Merge::Keys, parts()).unwrap());
        assert_eq!(keys, json!({"x": 1, "y": 2, "o": {"q": 2}}));
        let deep = Value::Object(merge(Merge::Deep, parts()).unwrap());
        assert_eq!(deep, json!({"x": 1, "y": 2, "o": {"p": 1, "q": 2}}));
        assert_eq!(
            merge(Merge::Keys, vec![("a", json!([1]))]).unwrap_err(),
            "a"
        );
    }
}
