//! `client_ip_header`: which header a trusted proxy's client chain is read
//! from (`proxy::client_ip` reads it).

#![forbid(unsafe_code)]

use http::{HeaderName, header};
use serde::Deserialize;

/// Which request header carries the chain of client addresses from a
/// trusted proxy (`client_ip_header` in the config).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (NGINX's and Envoy's
    /// default).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239), `for=` of each element.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ClientIpHeader {
    /// The header name.
    pub fn name(self) -> HeaderName {
        match self {
            Self::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Self::Forwarded => header::FORWARDED,
        }
    }

    /// The header name as written in messages (`X-Forwarded-For`, `Forwarded`).
    pub fn label(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
        }
    }
}
