//! The helpers of this workspace's tests and benchmarks, in one place:
//! `gateway-userspace`'s integration tests (a dev-dependency), the
//! privileged tests of the `tests` crate and the `gw-bench` runner (plain
//! dependencies). Not a published API: every helper panics with context
//! instead of returning errors, since a failed set-up is a failed test.
//!
//! - unprivileged: [`temp`] (directories removed on drop), [`origin`] (an
//!   HTTP origin that records what it received), [`http`] (a raw HTTP/1.1
//!   client, async and blocking), [`process`] (a child process started and
//!   waited for until it is ready, killed on drop), [`metrics`] (Prometheus
//!   text parsed into samples), [`jwt`] (token signing with the test keys
//!   in `test-support/data/`), [`tls`] (a TLS client that accepts any
//!   certificate);
//! - privileged (root, used by the `tests` crate and the benchmarks):
//!   [`guard`] (bpffs pins, network namespaces, veth pairs), [`netns`],
//!   [`frames`], [`gateway`] (the real binary with its admin CLI), [`node`],
//!   [`redis`], [`topology`].

pub mod frames;
pub mod gateway;
pub mod guard;
pub mod http;
pub mod jwt;
pub mod metrics;
#[allow(
    unsafe_code,
    reason = "setns(2), and a socket bound to a chosen source before connect, through libc"
)]
pub mod netns;
pub mod node;
pub mod origin;
pub mod process;
pub mod redis;
pub mod temp;
pub mod tls;
pub mod topology;

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

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

/// A free loopback port from the kernel's ephemeral range (bound and
/// released; good enough on loopback, where nothing else races for it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it is true; panics with `what` after `secs`
/// seconds.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
