//! Shared pieces of the privileged end-to-end tests: a root check that fails
//! under CI instead of skipping, RAII guards for everything a test creates in
//! the kernel (bpffs pin directories, network namespaces, veth pairs,
//! processes, a private Redis), and builders for synthetic frames.

#![allow(
    missing_docs,
    reason = "test support used only by this workspace's privileged tests and benches, not a published API; TODO(issue 21 item 4): document it when the helpers move to the shared test-support crate"
)]

pub mod bench;
pub mod frames;
pub mod gateway;
pub mod guard;
pub mod netns;
pub mod node;
pub mod redis;
pub mod topology;

use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the test may run. Without root it panics under `CI=true` (a
/// privileged test that cannot run must fail there) and otherwise returns
/// false after saying loudly that it skipped.
pub fn require_root(test: &str) -> bool {
    // SAFETY-free check through /proc: effective uid is the third field.
    let euid_zero = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if euid_zero {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root, and CI=true forbids skipping privileged tests");
    }
    eprintln!("SKIPPED {test}: needs root (run `sudo -E cargo xtask test`)");
    false
}

/// A name unique to this process and call, short enough for an interface
/// name (15 bytes): `<prefix><pid % 10000><n>`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// A loopback TCP port for a test's own servers, free when it is handed
/// out. Each process draws from its own block of 50 ports in 20000-29999
/// (from its pid, as the other tests do, so concurrent test binaries rarely
/// meet), skipping ports something already listens on.
pub fn test_port() -> u16 {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 200) as u16 * 50;
    for _ in 0..50 {
        let n = N.fetch_add(1, Ordering::Relaxed) % 50;
        let port = base + n as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + 50);
}
