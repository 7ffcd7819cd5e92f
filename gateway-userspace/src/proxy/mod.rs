//! The reverse proxy: listeners (plain, TLS, HTTPS redirect), the request
//! phases (`pipeline` shows their order), routing on normalized paths,
//! upstream pools with health checks, L7 limits and the security headers.
//! `Proxy::start` runs it; `Proxy::reload` swaps in a new config.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod authority;
pub mod body;
pub mod check;
pub mod client_ip;
pub mod config;
pub mod conn;
pub mod cors;
mod date;
pub mod demo;
pub mod grpc;
pub mod grpc_web;
pub mod h1_scan;
pub mod h2_guard;
pub mod h2_server;
pub mod header_name;
pub mod headers;
pub mod listeners;
pub mod path;
pub mod phase;
pub mod pipeline;
pub mod proxy_protocol;
pub mod reject;
pub mod router;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;

pub use phase::{Engines, Phase, PhaseFuture, Phases, RequestContext};
pub use reject::{Fault, Reason, Rejection};
pub use server::{Proxy, ProxyError};
