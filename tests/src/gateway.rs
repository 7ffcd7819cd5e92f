//! Running the real `gateway` binary (path from `GATEWAY_BIN`, set by
//! `cargo xtask test`) and its CLI against a test's own admin socket.

use std::{
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
    /// socket answers.
    pub fn start(config: &Path, socket: &Path, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("gateway starts");
        let mut gw = Self {
            process: ChildGuard::new(child),
            socket: socket.to_owned(),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if gw.cli(&["stats", "--json"]).status.success() {
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
