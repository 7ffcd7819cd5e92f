//! Running the real `gateway` binary (path from `GATEWAY_BIN`, set by
//! `cargo xtask test`), on the host or inside a network namespace, its CLI
//! against a test's own admin socket, and reading its `/metrics` and
//! `/readyz` over plain HTTP.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::guard::ChildGuard;

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
    pub process: ChildGuard,
    pub socket: PathBuf,
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

    fn spawn(mut cmd: Command, socket: &Path, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("log file");
        let child = cmd
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut gw = Self {
            process: ChildGuard::new(child),
            socket: socket.to_owned(),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if gw.admin_answers() {
                return gw;
            }
            if let Some(child) = gw.process.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "gateway exited with {status} during start:\n{}",
                    gw.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not answer within 20 s:\n{}",
                gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the admin socket answers. `cluster status` is answered by
    /// every gateway, with XDP and cluster mode on or off (unlike `stats`,
    /// which needs the XDP maps).
    fn admin_answers(&self) -> bool {
        self.cli(&["cluster", "status", "--json"]).status.success()
    }

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
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr} for GET {path}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let (head, body) = buf
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path} from {addr}: not HTTP: {buf:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path} from {addr}: bad status line: {head:?}"));
    (status, body.to_owned())
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

/// The value of the un-labelled sample `name` in Prometheus or OpenMetrics
/// text (`name 3` or `name 3 <timestamp>`); `None` when absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The sum of every sample of `name`, labelled or not (`name 1`,
/// `name{a="x"} 2`); `None` when there is none. For a counter whose labels
/// a test does not care about.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}
