//! The admin interface: a Unix socket (mode 0600, root only) on which the
//! running gateway answers the `gateway` CLI. One JSON request per
//! connection, one JSON response back (`protocol`). The `server` applies
//! requests to the XDP maps; the `client` is what the CLI uses.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod protocol;
pub mod quota;
pub mod server;
