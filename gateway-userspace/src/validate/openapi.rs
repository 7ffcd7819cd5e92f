//! OpenAPI 3.0 and 3.1 documents (JSON) turned into route rules: each
//! operation's path, query and header parameters and its
//! `application/json` request body schema, with `$ref`s to
//! `#/components/...` resolved. 3.0 schemas are checked as draft 4 (with
//! `nullable` rewritten to a `null` type); 3.1 schemas as 2020-12 or the
//! document's `jsonSchemaDialect`.

#![forbid(unsafe_code)]

use std::path::Path;

use http::{HeaderName, Method};
use jsonschema::Draft;
use serde_json::{Value, json};

use super::{
    config::{OpenApiConfig, ParamType, ValidationSection},
    error::ValidationConfigError,
    json::is_json_media_type,
    params::ParamRule,
    route::{BodyRule, RouteValidator},
    schema,
};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One compiled operation: route id, method, rules, and where it came from.
pub(crate) type Operation = (String, Method, RouteValidator, String);

/// Reads and compiles one document; `at` is where the TOML names it.
pub(crate) fn compile(
    cfg: &OpenApiConfig,
    section: &ValidationSection,
    base_dir: &Path,
    at: &str,
) -> Result<Vec<Operation>, ValidationConfigError> {
    let path = base_dir.join(&cfg.file);
    let file = path.display().to_string();
    let doc_err = |message: String| ValidationConfigError::Document {
        at: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ValidationConfigError::Read {
        at: at.to_owned(),
        path: file.clone(),
        source,
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        doc_err(format!(
            "not a JSON document ({e}); YAML is not supported, convert it to JSON"
        ))
    })?;
    let version = doc["openapi"].as_str().unwrap_or("");
    let dialect = if version.starts_with("3.0.") {
        Dialect::OpenApi30
    } else if version.starts_with("3.1.") {
        match doc["jsonSchemaDialect"].as_str() {
            Some(uri) => Dialect::OpenApi31(Some(uri.to_owned())),
            None => Dialect::OpenApi31(None),
        }
    } else {
        return Err(doc_err(format!(
            "`openapi` is {:?}; only 3.0.x and 3.1.x are supported",
            doc["openapi"]
        )));
    };
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    if let Some(missing) = cfg.routes.keys().find(|p| !paths.contains_key(*p)) {
        return Err(doc_err(format!(
            "routes names {missing:?}, which is not in `paths`"
        )));
    }
    let doc_ctx = Doc {
        doc: &doc,
        dialect,
        file: &file,
    };
    let mut out = Vec::new();
    for (template, item) in &paths {
        let item = doc_ctx.deref(item);
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let upper = method.to_ascii_uppercase();
            let op_at = format!("{file}: {upper} {template}");
            let route = match (cfg.routes.get(template), op["operationId"].as_str()) {
                (Some(route), _) => route.clone(),
                (None, Some(id)) => format!("{}{id}", cfg.route_prefix),
                (None, None) => {
                    return Err(ValidationConfigError::Document {
                        at: op_at,
                        message: "no operationId and no entry in `routes` to name its route".into(),
                    });
                }
            };
            let bad = |message: String| ValidationConfigError::Rule {
                at: op_at.clone(),
                route: route.clone(),
                message,
            };
            let mut validator = doc_ctx
                .operation(item, op, cfg, section)
                .map_err(|e| bad(e.to_string()))?;
            validator.path_template = Some(template.clone());
            let method = Method::from_bytes(upper.as_bytes()).expect("a standard method");
            out.push((route, method, validator, op_at));
        }
    }
    Ok(out)
}

#[derive(Clone)]
enum Dialect {
    OpenApi30,
    OpenApi31(Option<String>),
}

/// An OpenAPI operation the gateway cannot enforce: the document's to fix.
#[derive(Debug, thiserror::Error)]
enum OperationError {
    /// A parameter object without `name`.
    #[error("a parameter without a name")]
    NamelessParameter,
    /// A parameter that cannot be checked.
    #[error("parameter {name}: {problem}")]
    Parameter {
        /// The parameter's name.
        name: String,
        /// What is wrong.
        problem: ParameterProblem,
    },
    /// The JSON request body's schema does not compile.
    #[error("request body schema: {0}")]
    BodySchema(DocSchemaError),
}

/// What is wrong with an OpenAPI parameter ([`OperationError::Parameter`]).
#[derive(Debug, thiserror::Error)]
enum ParameterProblem {
    /// `content` instead of `schema`.
    #[error("only `schema` parameters are supported, not `content`")]
    Content,
    /// `type` that is neither a string nor a list.
    #[error("`type` is not a string or list")]
    TypeShape,
    /// Several types, or an object or array type.
    #[error("type {0:?} is not supported (only one of string, integer, number, boolean)")]
    Type(Vec<String>),
    /// The schema does not compile.
    #[error(transparent)]
    Schema(#[from] DocSchemaError),
    /// A header parameter whose name is not a header name.
    #[error("not a valid header name")]
    HeaderName,
    /// `in` is not path, query, header or cookie.
    #[error("unknown location {0:?}")]
    Location(String),
}

/// A schema of the document that does not compile, with the document's file.
#[derive(Debug, thiserror::Error)]
#[error("{error} (in {file})")]
struct DocSchemaError {
    /// The compile error.
    error: schema::SchemaError,
    /// The OpenAPI file.
    file: String,
}

struct Doc<'a> {
    doc: &'a Value,
    dialect: Dialect,
    file: &'a str,
}

impl Doc<'_> {
    /// Follows a local `$ref` (`#/components/...`) at the top of `v`.
    fn deref<'v>(&'v self, v: &'v Value) -> &'v Value {
        let mut v = v;
        for _ in 0..16 {
            match v["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
                Some(pointer) => match self.doc.pointer(pointer) {
                    Some(target) => v = target,
                    None => return v,
                },
                None => return v,
            }
        }
        v
    }

    fn operation(
        &self,
        item: &Value,
        op: &Value,
        cfg: &OpenApiConfig,
        section: &ValidationSection,
    ) -> Result<RouteValidator, OperationError> {
        let mut validator = RouteValidator {
            path_template: None,
            path: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            additional_query: cfg.additional_query,
            body: None,
            max_errors: section.max_errors,
        };
        // Operation parameters override path-item ones with the same name and location.
        let mut params: Vec<&Value> = Vec::new();
        for p in op_params(op).chain(op_params(item)) {
            let p = self.deref(p);
            let key = |q: &Value| (q["name"].clone(), q["in"].clone());
            if !params.iter().any(|q| key(q) == key(p)) {
                params.push(p);
            }
        }
        for p in params {
            self.parameter(p, &mut validator)?;
        }
        if let Some(body) = op.get("requestBody") {
            let body = self.deref(body);
            let content = body["content"].as_object();
            let json_media = content.and_then(|c| c.iter().find(|(k, _)| is_json_media_type(k)));
            if let Some((_, media)) = json_media {
                let schema = media.get("schema").cloned().unwrap_or(json!({}));
                validator.body = Some(BodyRule {
                    schema: self.compile(&schema).map_err(OperationError::BodySchema)?,
                    required: body["required"].as_bool().unwrap_or(false),
                    max_bytes: cfg.max_body_bytes.unwrap_or(section.max_body_bytes),
                    max_depth: section.max_depth,
                });
            }
        }
        Ok(validator)
    }

    fn parameter(&self, p: &Value, v: &mut RouteValidator) -> Result<(), OperationError> {
        let name = p["name"]
            .as_str()
            .ok_or(OperationError::NamelessParameter)?;
        let bad = |problem: ParameterProblem| OperationError::Parameter {
            name: name.to_owned(),
            problem,
        };
        let location = p["in"].as_str().unwrap_or("");
        let Some(schema) = p.get("schema") else {
            return Err(bad(ParameterProblem::Content));
        };
        let kind = self.param_type(self.deref(schema)).map_err(bad)?;
        let check = self.compile(schema).map_err(|e| bad(e.into()))?;
        let required = location == "path" || p["required"].as_bool().unwrap_or(false);
        let mut rule = ParamRule::from_schema(name, kind, required, check);
        match location {
            "path" => v.path.push(rule),
            "query" => v.query.push(rule),
            "header" => {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(ParameterProblem::HeaderName))?;
                // OpenAPI: these are described elsewhere and ignored as parameters.
                if !matches!(header.as_str(), "accept" | "content-type" | "authorization") {
                    rule.name = header.as_str().to_owned();
                    v.headers.push((header, rule));
                }
            }
            // Cookies are not validated (see docs/validation.md).
            "cookie" => {}
            other => return Err(bad(ParameterProblem::Location(other.to_owned()))),
        }
        Ok(())
    }

    /// The scalar type a parameter's text converts to.
    fn param_type(&self, schema: &Value) -> Result<ParamType, ParameterProblem> {
        let types: Vec<&str> = match &schema["type"] {
            Value::Null => return Ok(ParamType::String),
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => return Err(ParameterProblem::TypeShape),
        };
        match types.as_slice() {
            ["string"] => Ok(ParamType::String),
            ["integer"] => Ok(ParamType::Integer),
            ["number"] => Ok(ParamType::Number),
            ["boolean"] => Ok(ParamType::Boolean),
            other => Err(ParameterProblem::Type(
                other.iter().map(|t| (*t).to_owned()).collect(),
            )),
        }
    }

    /// Compiles a schema of this document, with its components reachable.
    fn compile(&self, schema: &Value) -> Result<jsonschema::Validator, DocSchemaError> {
        let mut root = json!({ "allOf": [schema] });
        if let Some(components) = self.doc.get("components") {
            root["components"] = components.clone();
        }
        let draft = match &self.dialect {
            Dialect::OpenApi30 => {
                rewrite_nullable(&mut root);
                Some(Draft::Draft4)
            }
            Dialect::OpenApi31(Some(uri)) => {
                root["$schema"] = Value::String(uri.clone());
                None
            }
            Dialect::OpenApi31(None) => Some(Draft::Draft202012),
        };
        schema::compile(&root, draft).map_err(|error| DocSchemaError {
            error,
            file: self.file.to_owned(),
        })
    }
}

fn op_params(v: &Value) -> impl Iterator<Item = &Value> {
    v["parameters"].as_array().into_iter().flatten()
}

/// OpenAPI 3.0's `nullable: true` next to `type: T` means `type: [T, "null"]`.
fn rewrite_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type")
            {
                let t = t.clone();
                map.insert("type".into(), json!([t, "null"]));
            }
            map.values_mut().for_each(rewrite_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_nullable),
        _ => {}
    }
}
