//! Running the real `gateway` binary (path from `GATEWAY_BIN`, set by
//! `cargo xtask test`), on the host or inside a network namespace, its CLI
//! against a test's own admin socket, and reading its `/metrics` and
//! `/readyz` over plain HTTP (parse the former with [`crate::metrics`]).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::{
    http::{Reply, blocking::exchange, get_request},
    process::{ChildGuard, start_ready},
};

/// The gateway binary: `GATEWAY_BIN`, else `target/debug/gateway` of this
/// workspace. Panics when it does not exist.
pub fn bin() -> PathBuf {
    let p = std::env::var_os("GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gateway"));
    assert!(
        p.exists(),
        "gateway binary {} not found: run the tests with `cargo xtask test`",
        p.display()
    );
    p
}

/// A running gateway, terminated on drop.
pub struct Gateway {
    /// The `gateway run` process.
    pub process: ChildGuard,
    /// Its admin socket.
    pub socket: PathBuf,
    /// The file its stdout and stderr go to.
    pub log: PathBuf,
}

impl Gateway {
    /// Starts `gateway run --config <config>` and waits until its admin
    /// socket answers (with XDP on or off).
    pub fn start(config: &Path, socket: &Path, log: &Path) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"]).arg(config);
        Self::spawn(cmd, socket, log)
    }

    /// Starts the gateway inside the network namespace `ns` (through
    /// `nsenter --net=/run/netns/<ns>`, which execs it, so the child's pid
    /// is the gateway's) and waits until its admin socket answers. Only the
    /// network namespace changes: bpffs pins under /sys/fs/bpf, the admin
    /// socket and any other Unix socket paths work as on the host.
    pub fn start_in_netns(ns: &str, config: &Path, socket: &Path, log: &Path) -> Self {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .arg(bin())
            .args(["run", "--config"])
            .arg(config);
        Self::spawn(cmd, socket, log)
    }

    fn spawn(cmd: Command, socket: &Path, log: &Path) -> Self {
        let child = start_ready(cmd, log, || admin_answers(socket));
        Self {
            process: ChildGuard::new(child),
            socket: socket.to_owned(),
            log: log.to_owned(),
        }
    }

    /// What the gateway logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a CLI command against this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.socket, args)
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gateway {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The packet counter of one XDP reason, from `gateway stats --json`.
    pub fn counter(&self, reason: &str) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["stats", "--json"])).expect("stats JSON");
        v["counters"]
            .as_array()
            .expect("counters")
            .iter()
            .find(|c| c["reason"] == reason)
            .and_then(|c| c["packets"].as_u64())
            .unwrap_or_else(|| panic!("no counter {reason}"))
    }
}

/// Whether the admin socket answers. `cluster status` is answered by
/// every gateway, with XDP and cluster mode on or off (unlike `stats`,
/// which needs the XDP maps).
fn admin_answers(socket: &Path) -> bool {
    cli(socket, &["cluster", "status", "--json"])
        .status
        .success()
}

/// Runs the CLI with an explicit admin socket.
pub fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("gateway CLI runs")
}

/// `GET <path>` over plain HTTP/1.1 (the `[observability] listen` address);
/// (status, body). Panics with context when the listener does not answer.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = get_request(path, "t", "");
    let buf = exchange(
        addr,
        request.as_bytes(),
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let reply = Reply::parse_complete(&buf).unwrap_or_else(|| {
        panic!(
            "GET {path} from {addr}: not HTTP: {:?}",
            String::from_utf8_lossy(&buf)
        )
    });
    (reply.status, reply.body)
}

/// The Prometheus text of `GET /metrics`, which must answer 200.
pub fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics from {addr}: {body}");
    body
}

/// `GET /readyz`: (status, JSON body).
pub fn readyz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http_get(addr, "/readyz");
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET /readyz from {addr}: not JSON ({e}): {body}"));
    (status, json)
}
