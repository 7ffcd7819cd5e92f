//! The gateway: an XDP fast path in the kernel and its userspace control
//! plane. `xdp` loads the program and owns its maps; `admin` is the Unix
//! socket the CLI talks to; `config` parses the TOML file; `run` ties them
//! together in the `gateway run` process; `cli` is the command line; `auth`
//! is the authenticate phase of the proxy (policies, JWT, introspection, API
//! keys, Basic); `clock` is `CLOCK_MONOTONIC`, the time base of the XDP maps;
//! `validate` checks requests against per-route rules (JSON Schema, OpenAPI).
//!
//! No `unsafe` outside `xdp/`: denied here, allowed with its reason only in
//! the `xdp` modules that call libc, and forbidden in every other module.

#![deny(unsafe_code)]

pub mod admin;
pub mod admin_http;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod duration;
pub mod error_chain;
pub mod escalate;
pub mod net;
pub mod observe;
pub mod phases;
pub mod proxy;
pub mod query;
pub mod ratelimit;
pub mod reload;
pub mod run;
pub mod runtime;
pub mod upgrade;
pub mod validate;
pub mod xdp;
