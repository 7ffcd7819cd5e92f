//! The checks run on `[auth]` while it is parsed: value ranges, provider
//! settings, and every reference between policies and providers. An error
//! becomes a `file:line:column` message pointing at the `[auth]` table and
//! naming the offending sub-table.

#![forbid(unsafe_code)]

use http::HeaderName;

use super::{
    AuthMethodKind,
    config::{AuthSection, PolicyConfig, RawAuthSection},
};

/// Headers an identity header may never replace.
const PROTECTED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "content-type",
    "forwarded",
    "x-forwarded-for",
];

impl TryFrom<RawAuthSection> for AuthSection {
    type Error = String;

    fn try_from(raw: RawAuthSection) -> Result<Self, String> {
        if raw.realm.is_empty()
            || !raw
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err("[auth] realm must be printable ASCII without '\"' or '\\'".into());
        }
        if !(256..=65_536).contains(&raw.max_credential_bytes) {
            return Err("[auth] max_credential_bytes must be 256-65536".into());
        }
        let bf = &raw.brute_force;
        if bf.enabled && (bf.max_failures == 0 || bf.window.is_zero() || bf.max_sources == 0) {
            return Err(
                "[auth.brute_force] max_failures, window and max_sources must be above 0".into(),
            );
        }
        for (name, iss) in &raw.jwt {
            super::jwt::validate_issuer_config(name, iss)?;
        }
        for (name, i) in &raw.introspection {
            if i.client_secret.is_some() == i.client_secret_file.is_some() {
                return Err(format!(
                    "[auth.introspection.{name}] set exactly one of client_secret or client_secret_file"
                ));
            }
            if i.cache_size == 0 {
                return Err(format!(
                    "[auth.introspection.{name}] cache_size must be above 0"
                ));
            }
            super::introspection::validate_config(i)
                .map_err(|e| format!("[auth.introspection.{name}] {e}"))?;
        }
        for (name, k) in &raw.api_keys {
            if k.keys.is_empty() && k.keys_file.is_none() {
                return Err(format!(
                    "[auth.api_keys.{name}] has no keys and no keys_file"
                ));
            }
            if k.query
                .as_deref()
                .is_some_and(|q| q.is_empty() || q.contains(['&', '=', '#']))
            {
                return Err(format!(
                    "[auth.api_keys.{name}] query is not a parameter name"
                ));
            }
        }
        for (name, k) in &raw.api_keys {
            for key in &k.keys {
                super::identity::check_subject(&key.name)
                    .map_err(|e| format!("[auth.api_keys.{name}] key name {:?}: {e}", key.name))?;
            }
        }
        for (name, b) in &raw.basic {
            for u in &b.users {
                super::identity::check_subject(&u.name)
                    .map_err(|e| format!("[auth.basic.{name}] user {:?}: {e}", u.name))?;
            }
            if b.users.is_empty() && b.htpasswd_file.is_none() {
                return Err(format!(
                    "[auth.basic.{name}] has no users and no htpasswd_file"
                ));
            }
            for u in &b.users {
                super::basic::check_hash_format(&u.hash.0)
                    .map_err(|e| format!("[auth.basic.{name}] user '{}': {e}", u.name))?;
            }
        }
        for (name, p) in &raw.policies {
            validate_policy(&raw, p).map_err(|e| format!("[auth.policies.{name}] {e}"))?;
        }
        Ok(Self {
            realm: raw.realm,
            max_credential_bytes: raw.max_credential_bytes,
            brute_force: raw.brute_force,
            jwt: raw.jwt,
            introspection: raw.introspection,
            api_keys: raw.api_keys,
            basic: raw.basic,
            policies: raw.policies,
        })
    }
}

fn validate_policy(raw: &RawAuthSection, p: &PolicyConfig) -> Result<(), String> {
    let table: Option<(&str, Vec<&String>)> = match p.kind {
        AuthMethodKind::None | AuthMethodKind::Any => None,
        AuthMethodKind::Jwt => Some(("jwt", raw.jwt.keys().collect())),
        AuthMethodKind::Introspection => {
            Some(("introspection", raw.introspection.keys().collect()))
        }
        AuthMethodKind::ApiKey => Some(("api_keys", raw.api_keys.keys().collect())),
        AuthMethodKind::Basic => Some(("basic", raw.basic.keys().collect())),
    };
    match (table, p.kind) {
        (Some((table, names)), _) => {
            if p.providers.is_empty() {
                return Err(format!(
                    "needs providers = [...] naming [auth.{table}.NAME] entries"
                ));
            }
            if let Some(missing) = p.providers.iter().find(|n| !names.contains(n)) {
                return Err(format!(
                    "provider '{missing}' is not defined in [auth.{table}]"
                ));
            }
            if !p.of.is_empty() {
                return Err("`of` is only for type = \"any\"".into());
            }
        }
        (None, AuthMethodKind::Any) => {
            if p.of.is_empty() {
                return Err("type = \"any\" needs of = [\"policy\", ...]".into());
            }
            for sub in &p.of {
                match raw.policies.get(sub) {
                    None => return Err(format!("policy '{sub}' in `of` is not defined")),
                    Some(s) if matches!(s.kind, AuthMethodKind::Any | AuthMethodKind::None) => {
                        return Err(format!(
                            "policy '{sub}' in `of` is of type any or none; list concrete policies"
                        ));
                    }
                    Some(_) => {}
                }
            }
            if !p.providers.is_empty()
                || !p.scopes.is_empty()
                || !p.headers.is_empty()
                || p.strip_credential
            {
                return Err(
                    "type = \"any\" takes only `of`; scopes, headers and strip_credential come from the listed policies"
                        .into(),
                );
            }
        }
        (None, _) => {
            if !p.providers.is_empty() || !p.of.is_empty() || !p.scopes.is_empty() {
                return Err("type = \"none\" takes no providers, of or scopes".into());
            }
        }
    }
    if let Some(bad) = p.scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    }) {
        return Err(format!(
            "scope '{bad}' is not a valid scope token (RFC 6749 §3.3)"
        ));
    }
    if p.scope_claim.is_some()
        && !matches!(p.kind, AuthMethodKind::Jwt | AuthMethodKind::Introspection)
    {
        return Err("scope_claim is only for jwt and introspection policies".into());
    }
    for (header, claim) in &p.headers {
        let h = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("'{header}' is not a valid header name"))?;
        if PROTECTED_HEADERS.contains(&h.as_str()) {
            return Err(format!("'{header}' cannot be set from an identity"));
        }
        if claim.is_empty() {
            return Err(format!("header '{header}' maps to an empty claim name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, "gw.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_point_at_file_line_and_column() {
        let cases = [
            // (toml, expected prefix, expected text)
            (
                "[auth.policies.p]\ntype = \"jwt\"\nproviders = [\"nope\"]\n",
                "gw.toml:",
                "provider 'nope' is not defined in [auth.jwt]",
            ),
            (
                "[auth.policies.p]\ntype = \"magic\"\n",
                "gw.toml:2:",
                "unknown variant `magic`",
            ),
            (
                "[auth.jwt.i]\nissuer = \"x\"\naudiences = [\"a\"]\nalgorithms = [\"none\"]\npublic_key_files = [{ path = \"k\" }]\n",
                "gw.toml:4:",
                "unknown variant `none`",
            ),
            (
                "[auth.jwt.i]\nissuer = \"x\"\naudiences = []\nalgorithms = [\"RS256\"]\npublic_key_files = [{ path = \"k\" }]\n",
                "gw.toml:",
                "audiences must list",
            ),
            (
                "[auth.jwt.i]\nissuer = \"x\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\nhmac_secret_files = [{ path = \"k\" }]\n",
                "gw.toml:",
                "never accept a shared secret",
            ),
            (
                "[auth.policies.a]\ntype = \"any\"\nof = [\"a\"]\n",
                "gw.toml:",
                "of type any or none",
            ),
            (
                "[auth.policies.p]\ntype = \"none\"\nheaders = { \"host\" = \"sub\" }\n",
                "gw.toml:",
                "'host' cannot be set",
            ),
            (
                "[auth.policies.p]\ntype = \"none\"\nscopes = [\"a\\\"b\"]\n",
                "gw.toml:",
                "type = \"none\" takes no",
            ),
            (
                "[auth]\nrealm = \"a\\\"b\"\n",
                "gw.toml:",
                "realm must be printable ASCII",
            ),
            (
                "[auth.brute_force]\nwindow = \"soon\"\n",
                "gw.toml:2:",
                "is not a duration",
            ),
            (
                "[auth.api_keys.k]\nheader = \"bad header\"\nkeys = []\n",
                "gw.toml:2:",
                "not a valid header name",
            ),
            (
                "[auth.api_keys.k]\nkeys = [{ name = \" \", sha256 = \"c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c\" }]\n",
                "gw.toml:",
                "key name \" \": the subject is blank",
            ),
            (
                "[auth.basic.b]\nusers = [{ name = \"\", hash = \"$2y$05$abcdefghijklmnopqrstuu5Mr0dQXbaYyRCUTcvnl2m3mIKTd0Fz6\" }]\n",
                "gw.toml:",
                "user \"\": the subject is empty",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\naudiences = [\"\"]\n",
                "gw.toml:",
                "[auth.introspection.i] audiences must not contain an empty",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\nmax_answer_bytes = 10\n",
                "gw.toml:",
                "max_answer_bytes must be",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\nmax_answer_byte = 10\n",
                "gw.toml:",
                "unknown field `max_answer_byte`",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\n",
                "gw.toml:",
                "exactly one of client_secret",
            ),
        ];
        for (toml, prefix, text) in cases {
            let e = err(toml);
            assert!(e.starts_with(prefix) && e.contains(text), "{toml}\n=> {e}");
            let loc = e.strip_prefix("gw.toml:").unwrap();
            assert!(
                loc.split(':').take(2).all(|n| n.parse::<usize>().is_ok()),
                "no line:col in {e}"
            );
        }
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
[auth]
realm = "api"
[auth.jwt.corp]
issuer = "https://id.example.com/"
audiences = ["api"]
algorithms = ["RS256", "ES256"]
jwks_url = "https://id.example.com/.well-known/jwks.json"
[auth.policies.users]
type = "jwt"
providers = ["corp"]
scopes = ["read"]
headers = { "x-user-id" = "sub" }
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.auth.realm, "api");
        assert_eq!(
            c.auth.jwt["corp"].leeway.get(),
            std::time::Duration::from_secs(30)
        );
    }
}
