//! Shared helpers for the proxy tests: the proxy started in-process from
//! inline TOML (XDP off, admin socket unused), plus the workspace's test
//! helpers they use (test-support): a mock origin that records what it
//! received, and a raw HTTP/1.1 client over loopback.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary that includes this module uses a different subset"
)]

use std::net::SocketAddr;

use gateway::{
    config::Config,
    proxy::{Engines, Proxy},
};
pub use test_support::{
    http::{
        Reply as RawResponse,
        tokio::{get, raw, read_all},
    },
    origin::{Behaviour, Origin, Seen},
    tls::{AcceptAny, tls_connect},
};

/// Splits a raw response (see [`RawResponse::parse`]).
pub fn parse(buf: &[u8]) -> RawResponse {
    RawResponse::parse(buf)
}

/// Starts the proxy from TOML, with XDP off.
pub async fn proxy(toml: &str) -> (Proxy, SocketAddr) {
    let full = format!("{toml}\n[xdp]\nenabled = false\n");
    let config = Config::parse(&full, "test.toml").unwrap_or_else(|e| panic!("{e}\n{full}"));
    let proxy = Proxy::start(&config, Engines::default()).await.unwrap();
    let addr = proxy.local_addr("main").expect("a listener named main");
    (proxy, addr)
}

/// The `[[listeners]]` entry most tests use.
pub const PLAIN: &str = "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n";

/// An `[[upstreams]]` entry with the given targets.
pub fn upstream(name: &str, targets: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\ntargets = [{}]\n{extra}\n",
        list.join(", ")
    )
}
