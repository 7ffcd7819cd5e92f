//! The proxy's part of the config file (`[[listeners]]`, `[[routes]]`,
//! `[[upstreams]]`, `[dns]`, `[limits]`, `[tls]`, `client_ip_header`,
//! `[security_headers]`, `[demo]`, a route's `cors` and `aggregate`). Each
//! value is checked while parsing; the checks that need the whole file
//! (cross-references, ambiguous routes) are in `config::validate`, reported
//! with the line and column of the route or pool they concern.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod client_ip;
pub mod cors;
pub mod dns;
pub mod limits;
pub mod listener;
pub mod route;
pub mod target;
pub mod upstream;

pub use dns::DnsSection;
pub use limits::{Limits, SecurityHeaders, SecurityHeadersOverride, UnderscoreHeaders};
pub use listener::{Certificate, Demo, Listener, ServerName, TlsSection};
pub use route::{HostPattern, PathPattern, Route};
pub use target::TargetSpec;
pub use upstream::{Balance, HealthCheck, PassiveHealth, Upstream};
