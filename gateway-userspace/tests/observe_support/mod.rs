//! Shared helpers for the observability tests: the real `gateway` binary
//! started with XDP off on loopback (access log to a file, admin HTTP
//! listener on), plus the workspace's test helpers they use
//! (test-support): the recording origin (on a runtime of its own, its
//! health check switchable), a blocking HTTP/1.1 client, the Prometheus
//! text parser.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary that includes this module uses a different subset"
)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

pub use test_support::{
    free_port,
    http::{
        Reply,
        blocking::{get, request, try_get},
    },
    metrics::{Sample, parse_metrics, sample},
    origin::Origin,
    process::start_ready,
    temp::TempDir,
    wait_until,
};

/// The gateway binary, killed on drop.
pub struct Gateway {
    child: Child,
    pub dir: TempDir,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub access_log: PathBuf,
}

impl Gateway {
    /// Starts `gateway run` with `body` (routes, upstreams, auth...) plus
    /// the listener, XDP off, the access log file and the admin listener.
    pub fn start(body: &str) -> Gateway {
        let dir = TempDir::tagged("observe");
        let (proxy, admin): (SocketAddr, SocketAddr) = (
            format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        );
        let access_log = dir.0.join("access.log");
        let config = format!(
            "[xdp]\nenabled = false\n[admin]\nsocket = \"{}\"\n[log]\naccess_log = \"{}\"\n\
             [observability]\nenabled = true\nlisten = \"{admin}\"\n\
             [[listeners]]\nname = \"main\"\naddress = \"{proxy}\"\n{body}\n",
            dir.0.join("admin.sock").display(),
            access_log.display(),
        );
        let path = dir.0.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.args(["run", "--config"]).arg(&path);
        let child = start_ready(cmd, &dir.0.join("gateway.log"), || {
            try_get(admin, "/healthz", &[]).is_some_and(|r| r.status == 200)
        });
        Gateway {
            child,
            dir,
            proxy,
            admin,
            access_log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("gateway.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // Our own child, by its pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0);
    }

    /// The access log lines, parsed.
    pub fn access_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until the access log has at least `n` lines.
    pub fn wait_access_lines(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.access_lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A route `/` to pool `o` with fast health checks.
pub fn route_to(origin: &Origin, extra_route: &str) -> String {
    format!(
        "[[routes]]\nid = \"api\"\npath_prefix = \"/\"\nupstream = \"o\"\n{extra_route}\n\
         [[upstreams]]\nname = \"o\"\ntargets = [\"{}\"]\n\
         [upstreams.health_check]\nenabled = true\npath = \"/healthz\"\ninterval = \"100ms\"\n\
         unhealthy_threshold = 2\nhealthy_threshold = 1\n",
        origin.addr
    )
}
