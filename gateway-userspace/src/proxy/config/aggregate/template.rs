//! Path templates of aggregate calls: `/users/{id}/orders?limit={query.limit}`.
//! A variable is replaced by its value percent-encoded as a path segment or
//! query value (everything but RFC 3986 unreserved characters is escaped),
//! so a `/`, `?`, `#`, `&` or `%` in a value is data and never changes the
//! structure of the path; a value that would make an empty, `.` or `..`
//! path segment is refused.

#![forbid(unsafe_code)]

use http::HeaderMap;
use serde_json::Value;

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Var {
    /// The route's path parameter at this index.
    Param(usize),
    /// A query parameter of the client request (first occurrence).
    Query(String),
    /// A header of the client request.
    Header(http::HeaderName),
    /// A field of the `after` call's JSON response: object keys, or array
    /// indexes for all-digit names.
    Field(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Var { var: Var, in_query: bool },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The values a template is rendered with.
pub struct Values<'a> {
    /// Path parameter values, decoded, in the route's order.
    pub params: &'a [String],
    /// The client's query string (without `?`).
    pub query: Option<&'a str>,
    /// The client's headers (after authentication).
    pub headers: &'a HeaderMap,
    /// The `after` call's response.
    pub dep: Option<&'a Value>,
}

/// Why a template could not be rendered, and whose fault it is.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderError {
    /// A value from the client request is missing or unusable (400).
    Client(String),
    /// A field of the earlier call's response is missing or unusable (the
    /// call fails).
    Upstream(String),
}

/// Why a call's `path` template is refused (a config error; the text
/// quotes the path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// It does not start with `/`.
    #[error("path '{0}' must start with '/'")]
    NoLeadingSlash(String),
    /// A literal `.` or `..` segment.
    #[error("path '{0}' has a '.' or '..' segment")]
    DotSegment(String),
    /// A `{` that is never closed.
    #[error("path '{0}': '{{' without '}}'")]
    Unclosed(String),
    /// A `}` that was never opened.
    #[error("path '{0}': '}}' without '{{'")]
    Unopened(String),
    /// A character that is not visible ASCII, or a `#`.
    #[error("path '{0}' may contain only visible ASCII characters and no '#'")]
    BadCharacter(String),
    /// A second `?`.
    #[error("path '{0}' has more than one '?'")]
    TwoQueries(String),
    /// A variable that names nothing usable.
    #[error("path '{path}': {problem}")]
    Variable {
        /// The template.
        path: String,
        /// What is wrong with the variable.
        problem: VarError,
    },
}

/// What is wrong with one `{variable}` of a template.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VarError {
    /// `{query.}` without a name.
    #[error("{{query.}} needs a parameter name")]
    EmptyQueryName,
    /// `{header.X}` where X is not a header name.
    #[error("'{0}' is not a header name")]
    NotAHeader(String),
    /// A name that is not a path parameter of the route.
    #[error("'{{{0}}}' is not a path parameter of the route")]
    NotAParameter(String),
    /// A response field of a call that `after` does not name.
    #[error("'{{{name}}}' uses call '{call}', which must be named by `after`")]
    CallNotAfter {
        /// The variable.
        name: String,
        /// The call it names.
        call: String,
    },
    /// `{call.a..b}`: an empty field name.
    #[error("'{{{0}}}' has an empty field name")]
    EmptyField(String),
}

impl Template {
    /// Parses `s`. `params` are the route's path parameter names; `after`
    /// the call whose fields may be used.
    ///
    /// # Errors
    /// A message for the config error: unbalanced braces, an unknown
    /// variable, a literal part that is not a valid request target.
    pub fn parse(s: &str, params: &[String], after: Option<&str>) -> Result<Self, TemplateError> {
        if !s.starts_with('/') {
            return Err(TemplateError::NoLeadingSlash(s.to_owned()));
        }
        let path = s.split('?').next().unwrap_or("");
        if path
            .split('/')
            .any(|seg| matches!(decode(seg).as_deref(), Some(".") | Some("..")))
        {
            return Err(TemplateError::DotSegment(s.to_owned()));
        }
        let mut pieces = Vec::new();
        let mut in_query = false;
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| TemplateError::Unclosed(s.to_owned()))?;
                    let name = &rest[1..end];
                    pieces.push(Piece::Var {
                        var: var(name, params, after).map_err(|problem| {
                            TemplateError::Variable {
                                path: s.to_owned(),
                                problem,
                            }
                        })?,
                        in_query,
                    });
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let lit = &rest[..end];
                    if lit.contains('}') {
                        return Err(TemplateError::Unopened(s.to_owned()));
                    }
                    if !lit.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
                        return Err(TemplateError::BadCharacter(s.to_owned()));
                    }
                    if lit.contains('?') {
                        if in_query || lit.matches('?').count() > 1 {
                            return Err(TemplateError::TwoQueries(s.to_owned()));
                        }
                        in_query = true;
                    }
                    pieces.push(Piece::Lit(lit.to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        Ok(Self { pieces })
    }

    /// The variables used (for checks).
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var { var, .. } => Some(var),
            Piece::Lit(_) => None,
        })
    }

    /// The path and query to send.
    ///
    /// # Errors
    /// [`RenderError`] naming the missing or unusable value.
    pub fn render(&self, v: &Values<'_>) -> Result<String, RenderError> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Var { var, in_query } => {
                    let (value, client) = value(var, v)?;
                    let fail = |m: String| {
                        if client {
                            RenderError::Client(m)
                        } else {
                            RenderError::Upstream(m)
                        }
                    };
                    if !in_query && matches!(value.as_str(), "" | "." | "..") {
                        return Err(fail(format!(
                            "{} is '{value}', which cannot be a path segment",
                            describe(var)
                        )));
                    }
                    encode(&value, &mut out);
                }
            }
        }
        // Literal dots next to a value (`.{x}` with x = ".") could still
        // make a dot segment: refused as a whole.
        let path = out.split('?').next().unwrap_or("");
        if path
            .split('/')
            .skip(1)
            .any(|seg| matches!(decode(seg).as_deref(), Some(".") | Some("..")))
        {
            return Err(RenderError::Upstream(format!(
                "the rendered path '{path}' has a dot segment"
            )));
        }
        Ok(out)
    }
}

fn var(name: &str, params: &[String], after: Option<&str>) -> Result<Var, VarError> {
    if let Some(q) = name.strip_prefix("query.") {
        if q.is_empty() {
            return Err(VarError::EmptyQueryName);
        }
        return Ok(Var::Query(q.to_owned()));
    }
    if let Some(h) = name.strip_prefix("header.") {
        return http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
            .map(Var::Header)
            .map_err(|_| VarError::NotAHeader(h.to_owned()));
    }
    match name.split_once('.') {
        None => params
            .iter()
            .position(|p| p == name)
            .map(Var::Param)
            .ok_or_else(|| VarError::NotAParameter(name.to_owned())),
        Some((call, fields)) => {
            if after != Some(call) {
                return Err(VarError::CallNotAfter {
                    name: name.to_owned(),
                    call: call.to_owned(),
                });
            }
            let fields: Vec<String> = fields.split('.').map(str::to_owned).collect();
            if fields.iter().any(String::is_empty) {
                return Err(VarError::EmptyField(name.to_owned()));
            }
            Ok(Var::Field(fields))
        }
    }
}

fn describe(var: &Var) -> String {
    match var {
        Var::Param(i) => format!("path parameter {}", i + 1),
        Var::Query(q) => format!("query parameter '{q}'"),
        Var::Header(h) => format!("header '{h}'"),
        Var::Field(f) => format!("response field '{}'", f.join(".")),
    }
}

/// The value of a variable, and whether it came from the client.
fn value(var: &Var, v: &Values<'_>) -> Result<(String, bool), RenderError> {
    match var {
        Var::Param(i) => v
            .params
            .get(*i)
            .cloned()
            .map(|s| (s, true))
            .ok_or_else(|| RenderError::Client(format!("{} is missing", describe(var)))),
        Var::Query(name) => v
            .query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| {
                let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k).as_deref() == Some(name.as_str())).then(|| decode(val))
            })
            .flatten()
            .map(|s| (s, true))
            .ok_or_else(|| RenderError::Client(format!("{} is missing", describe(var)))),
        Var::Header(h) => v
            .headers
            .get(h)
            .and_then(|x| x.to_str().ok())
            .map(|s| (s.to_owned(), true))
            .ok_or_else(|| RenderError::Client(format!("{} is missing", describe(var)))),
        Var::Field(path) => {
            let mut cur = v.dep;
            for f in path {
                cur = cur.and_then(|c| match c {
                    Value::Object(m) => m.get(f),
                    Value::Array(a) => f.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            match cur {
                Some(Value::String(s)) => Ok((s.clone(), false)),
                Some(Value::Number(n)) => Ok((n.to_string(), false)),
                Some(Value::Bool(b)) => Ok((b.to_string(), false)),
                _ => Err(RenderError::Upstream(format!(
                    "{} is missing or not a string, number or boolean",
                    describe(var)
                ))),
            }
        }
    }
}

/// Appends `s` percent-encoded: only ALPHA, DIGIT and `-._~` stay.
pub fn encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Percent-decodes `s` (`+` stays); `None` for a malformed escape or
/// bytes that are not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        t: &str,
        params: &[&str],
        query: Option<&str>,
        dep: Option<Value>,
    ) -> Result<String, RenderError> {
        let names: Vec<String> = (0..params.len()).map(|i| format!("p{i}")).collect();
        let t = Template::parse(t, &names, Some("user")).unwrap();
        let params: Vec<String> = params.iter().map(|s| (*s).to_owned()).collect();
        t.render(&Values {
            params: &params,
            query,
            headers: &HeaderMap::new(),
            dep: dep.as_ref(),
        })
    }

    #[test]
    fn values_never_change_the_path_structure() {
        assert_eq!(
            render("/u/{p0}/o", &["a/../b?c#d&e%"], None, None).unwrap(),
            "/u/a%2F..%2Fb%3Fc%23d%26e%25/o"
        );
        assert_eq!(
            render("/u?x={query.x}", &[], Some("x=1%26y%3D2"), None).unwrap(),
            "/u?x=1%26y%3D2"
        );
        for bad in ["..", ".", ""] {
            assert!(
                matches!(
                    render("/u/{p0}", &[bad], None, None),
                    Err(RenderError::Client(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            render("/u/{query.x}", &[], Some("x=%2e%2E"), None),
            Err(RenderError::Client(_))
        ));
        let dep = serde_json::json!({"id": "..", "n": 7, "a": [{"k": "x/y"}]});
        assert!(matches!(
            render("/a/{user.id}", &[], None, Some(dep.clone())),
            Err(RenderError::Upstream(_))
        ));
        assert_eq!(
            render("/a/{user.n}/{user.a.0.k}", &[], None, Some(dep.clone())).unwrap(),
            "/a/7/x%2Fy"
        );
        assert!(matches!(
            render("/a/{user.missing}", &[], None, Some(dep)),
            Err(RenderError::Upstream(_))
        ));
        assert!(render("/a/.{p0}", &["."], None, None).is_err());
    }

    #[test]
    fn bad_templates_are_config_errors() {
        let p = vec!["id".to_owned()];
        assert!(Template::parse("/u/{nope}", &p, None).is_err());
        assert!(Template::parse("/u/{id", &p, None).is_err());
        assert!(Template::parse("/u/{other.x}", &p, Some("user")).is_err());
        assert!(Template::parse("u/{id}", &p, None).is_err());
        assert!(Template::parse("/u/{id}#x", &p, None).is_err());
        assert!(Template::parse("/u/{id}?a=1?b", &p, None).is_err());
        assert!(Template::parse("/u/../{id}", &p, None).is_err());
        assert!(Template::parse("/u/%2e/{id}", &p, None).is_err());
        assert!(Template::parse("/u/{id}?a={query.a}&h={header.x-a}", &p, None).is_ok());
    }

    #[test]
    fn template_errors_say_what_the_config_must_change() {
        let p = vec!["id".to_owned()];
        let text = |t: &str, after| Template::parse(t, &p, after).unwrap_err().to_string();
        assert_eq!(
            text("/u/{nope}", None),
            "path '/u/{nope}': '{nope}' is not a path parameter of the route"
        );
        assert_eq!(text("/u/{id", None), "path '/u/{id': '{' without '}'");
        assert_eq!(text("/u/}", None), "path '/u/}': '}' without '{'");
        assert_eq!(
            text("/u/{other.x}", Some("user")),
            "path '/u/{other.x}': '{other.x}' uses call 'other', which must be named by `after`"
        );
        assert_eq!(
            text("/u?a={query.}", None),
            "path '/u?a={query.}': {query.} needs a parameter name"
        );
        assert_eq!(
            text("/u/{user..x}", Some("user")),
            "path '/u/{user..x}': '{user..x}' has an empty field name"
        );
    }
}
