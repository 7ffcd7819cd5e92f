//! The proxy's part of the config file (`[[listeners]]`, `[[routes]]`,
//! `[[upstreams]]`, `[limits]`, `[tls]`, `trusted_proxies`,
//! `[security_headers]`, `[demo]`) and the checks that need the whole file:
//! cross-references and ambiguous routes, reported with the line and column
//! of the route or pool they concern.

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
