//! Where a policy's credentials travel (its *carriers*: `Authorization`, an
//! API key header, an API key query parameter), and the rule that a request
//! presents one credential, once. Every carrier of the route's policy is
//! looked at, for `any` the carriers of all listed policies, so a second
//! credential can neither ride along unchecked (an upstream that reads the
//! key itself would act on a key nobody verified) nor serve as an oracle
//! (a valid credential next to a guessed one, with the guess never counted
//! as a failure). A repeated carrier (two `Authorization` or key headers,
//! `api_key=a&api_key=b`, `api_key=a;API%5FKEY=b`) or two carriers with
//! different values is `invalid_request` (400, RFC 6750 §3.1: "repeats the
//! same parameter, uses more than one method"). The one exception: the same
//! API key in an API key header and the query parameter agrees with itself.
//! On success with `strip_credential`, every carrier is removed upstream.
//!
//! A key header is also found under the spelling with `_` for `-`
//! (`x_api_key`): CGI-style upstreams (PHP-FPM, WSGI behind some servers)
//! map both to `HTTP_X_API_KEY`. Such names only get this far with
//! `underscore_headers = "allow"`; the default drops them earlier.

#![forbid(unsafe_code)]

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, header::AUTHORIZATION};
use subtle::ConstantTimeEq as _;

use super::{
    AuthMethodKind, Credential, api_key,
    failure::{AuthFailure, Scheme},
};
use crate::proxy::header_name::same_name;

/// One place a policy reads a credential from, and the scheme its
/// challenge names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Carrier {
    pub credential: Credential,
    pub scheme: Scheme,
}

/// Adds `c` unless the same carrier is already listed (the same header, or
/// a query name that [`api_key::same_param`] calls the same).
pub(super) fn add(list: &mut Vec<Carrier>, c: Carrier) {
    let dup = list
        .iter()
        .any(|have| match (&have.credential, &c.credential) {
            (Credential::Query(a), Credential::Query(b)) => api_key::same_param(a, b),
            (a, b) => a == b,
        });
    if !dup {
        list.push(c);
    }
}

/// The carriers of one concrete policy kind; API key sets contribute their
/// `header` and `query`.
pub(super) fn of_kind(
    kind: AuthMethodKind,
    key_sets: impl Iterator<Item = (http::HeaderName, Option<String>)>,
) -> Vec<Carrier> {
    let mut out = Vec::new();
    match kind {
        AuthMethodKind::Jwt | AuthMethodKind::Introspection => add(
            &mut out,
            Carrier {
                credential: Credential::Authorization,
                scheme: Scheme::Bearer,
            },
        ),
        AuthMethodKind::Basic => add(
            &mut out,
            Carrier {
                credential: Credential::Authorization,
                scheme: Scheme::Basic,
            },
        ),
        AuthMethodKind::ApiKey => {
            for (header, query) in key_sets {
                add(
                    &mut out,
                    Carrier {
                        credential: Credential::Header(header),
                        scheme: Scheme::ApiKey,
                    },
                );
                if let Some(q) = query {
                    add(
                        &mut out,
                        Carrier {
                            credential: Credential::Query(q),
                            scheme: Scheme::ApiKey,
                        },
                    );
                }
            }
        }
        AuthMethodKind::None | AuthMethodKind::Any => {}
    }
    out
}

/// Every header name in `headers` that is `name` with any `-` written as
/// `_` (and `name` itself if present).
pub(super) fn header_spellings(headers: &HeaderMap, name: &HeaderName) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|k| same_name(k.as_str(), name.as_str()))
        .cloned()
        .collect()
}

/// Refuses a request that presents more than one credential, or one
/// credential more than once, on any of `carriers` (see the module docs).
pub(super) fn single_credential(
    carriers: &[Carrier],
    req: &http::request::Parts,
    realm: &str,
) -> Result<(), AuthFailure> {
    let bad = |scheme| AuthFailure::InvalidRequest {
        realm: realm.to_owned(),
        scheme,
    };
    // Header values are borrowed; only decoded query values are owned.
    let mut presented: Vec<(&Carrier, Cow<'_, [u8]>)> = Vec::new();
    for c in carriers {
        let mut values: Vec<Cow<'_, [u8]>> = match &c.credential {
            Credential::Authorization => req
                .headers
                .get_all(AUTHORIZATION)
                .iter()
                .map(|v| Cow::Borrowed(v.as_bytes()))
                .collect(),
            Credential::Header(name) => req
                .headers
                .iter()
                .filter(|(k, _)| same_name(k.as_str(), name.as_str()))
                .map(|(_, v)| Cow::Borrowed(v.as_bytes()))
                .collect(),
            Credential::Query(name) => req
                .uri
                .query()
                .map(|q| api_key::query_params(q, name))
                .unwrap_or_default()
                .into_iter()
                .map(Cow::Owned)
                .collect(),
        };
        if values.len() > 1 {
            return Err(bad(c.scheme));
        }
        if let Some(v) = values.pop() {
            presented.push((c, v));
        }
    }
    if let [(first, value), rest @ ..] = presented.as_slice() {
        let agree = rest.iter().all(|(c, v)| {
            first.scheme == Scheme::ApiKey
                && c.scheme == Scheme::ApiKey
                && bool::from(v.as_ref().ct_eq(value.as_ref()))
        });
        if !agree {
            return Err(bad(first.scheme));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carriers() -> Vec<Carrier> {
        let mut c = of_kind(
            AuthMethodKind::ApiKey,
            [
                (
                    http::HeaderName::from_static("x-api-key"),
                    Some("api_key".to_owned()),
                ),
                (
                    http::HeaderName::from_static("x-api-key"),
                    Some("API_KEY".to_owned()),
                ),
            ]
            .into_iter(),
        );
        for k in of_kind(AuthMethodKind::Jwt, std::iter::empty())
            .into_iter()
            .chain(of_kind(AuthMethodKind::Basic, std::iter::empty()))
        {
            add(&mut c, k);
        }
        c
    }

    fn check(uri: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).unwrap().into_parts().0;
        single_credential(&carriers(), &req, "r").map_err(|f| f.status().as_u16())
    }

    #[test]
    fn carriers_are_listed_once() {
        let c = carriers();
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(
            c[2].scheme,
            Scheme::Bearer,
            "the first Authorization scheme"
        );
    }

    #[test]
    fn one_credential_once() {
        assert_eq!(check("/", &[]), Ok(()));
        assert_eq!(check("/?api_key=k", &[]), Ok(()));
        assert_eq!(check("/", &[("x-api-key", "k")]), Ok(()));
        assert_eq!(check("/", &[("authorization", "Bearer t")]), Ok(()));
        // The same key in header and query agrees with itself.
        assert_eq!(check("/?api%5Fkey=k", &[("x-api-key", "k")]), Ok(()));
        for (uri, headers) in [
            ("/?api_key=other", &[("x-api-key", "k")][..]),
            ("/?api_key=a&api_key=b", &[]),
            ("/?api_key=a&api_key=a", &[]),
            ("/?x=1;api_key=a&API%5FKEY=b", &[]),
            ("/?api_key[]=a&api_key[]=b", &[]),
            ("/", &[("x-api-key", "k"), ("x-api-key", "k")]),
            ("/", &[("x-api-key", "k"), ("x_api_key", "other")]),
            ("/", &[("x-api-key", "k"), ("x_api-key", "k")]),
            ("/", &[("x-api-key", "k"), ("authorization", "Bearer t")]),
            ("/?api_key=k", &[("authorization", "Basic eDp5")]),
            (
                "/",
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
            ),
        ] {
            assert_eq!(check(uri, headers), Err(400), "{uri} {headers:?}");
        }
    }
}
