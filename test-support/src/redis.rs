//! A private Redis for the cluster tests: `redis-server` started as a child
//! process in its own temporary directory, listening on a loopback TCP port
//! or on a Unix socket (reachable by path from any network namespace), and
//! persisting nothing. [`RedisServer::kill`] and [`RedisServer::restart`]
//! play an outage and a recovery at the same address.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::{
    process::{ChildGuard, start_ready_within},
    temp::TempDir,
};

/// How long a fresh `redis-server` may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the Redis tests may run. Without `redis-server` and `redis-cli`
/// on PATH it panics under `CI=true` (`cargo xtask test` installs them) and
/// otherwise returns false after saying loudly that it skipped.
pub fn require_redis(test: &str) -> bool {
    if on_path("redis-server") && on_path("redis-cli") {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs redis-server and redis-cli, and CI=true forbids skipping");
    }
    eprintln!(
        "SKIPPED {test}: needs redis-server and redis-cli (Debian: redis-server, redis-tools; `cargo xtask test` installs them)"
    );
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Where a [`RedisServer`] listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAddr {
    /// `127.0.0.1:<port>`.
    Tcp(u16),
    /// A Unix socket at this path (mode 700: root only).
    Unix(PathBuf),
    /// TLS only on `127.0.0.1:<port>`, with this certificate and key (the
    /// certificate doubles as the CA clients verify it with).
    Tls {
        /// The TLS port on 127.0.0.1.
        port: u16,
        /// The certificate (also the CA clients trust).
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

/// A running `redis-server`, killed and its directory removed on drop.
pub struct RedisServer {
    // Declared first: dropped (killed) before its directory is removed.
    process: ChildGuard,
    /// The server's working directory (config, socket, logs).
    pub dir: TempDir,
    /// Where it listens.
    pub addr: RedisAddr,
    /// The `requirepass`, if any.
    pub password: Option<String>,
    config: PathBuf,
    log: PathBuf,
    /// Start number, so each run writes its own log file.
    runs: u32,
}

impl RedisServer {
    /// Redis on `127.0.0.1:<port>`, without a password.
    pub fn start_tcp(port: u16) -> Self {
        Self::start(RedisAddr::Tcp(port), None)
    }

    /// Redis on a Unix socket in its temporary directory, without a password.
    pub fn start_unix() -> Self {
        let dir = TempDir::new();
        let sock = dir.0.join("redis.sock");
        Self::start_in(dir, RedisAddr::Unix(sock), None)
    }

    /// Redis at `addr` (a Unix socket path is used as given) that requires
    /// `password` when one is set.
    pub fn start(addr: RedisAddr, password: Option<&str>) -> Self {
        Self::start_in(TempDir::new(), addr, password)
    }

    /// As [`RedisServer::start`], with more `redis.conf` lines (ACL users...).
    pub fn start_with(addr: RedisAddr, password: Option<&str>, extra: &str) -> Self {
        Self::start_full(TempDir::new(), addr, password, extra)
    }

    fn start_in(dir: TempDir, addr: RedisAddr, password: Option<&str>) -> Self {
        Self::start_full(dir, addr, password, "")
    }

    fn start_full(dir: TempDir, addr: RedisAddr, password: Option<&str>, extra: &str) -> Self {
        let config = dir.0.join("redis.conf");
        let listen = match &addr {
            RedisAddr::Tcp(port) => format!("port {port}\nbind 127.0.0.1\n"),
            RedisAddr::Unix(sock) => format!(
                "port 0\nunixsocket {}\nunixsocketperm 700\n",
                sock.display()
            ),
            RedisAddr::Tls { port, cert, key } => format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\n",
                cert.display(),
                key.display(),
                cert.display()
            ),
        };
        let auth = password
            .map(|p| format!("requirepass \"{p}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "{listen}save \"\"\nappendonly no\ndaemonize no\ndir {}\n{auth}{extra}\n",
                dir.0.display()
            ),
        )
        .expect("write redis.conf");
        let log = dir.0.join("redis-0.log");
        let mut server = Self {
            process: ChildGuard { child: None },
            dir,
            addr,
            password: password.map(str::to_owned),
            config,
            log,
            runs: 0,
        };
        server.spawn();
        server
    }

    /// Spawns `redis-server <config>` and waits until it answers PING.
    fn spawn(&mut self) {
        self.log = self.dir.0.join(format!("redis-{}.log", self.runs));
        self.runs += 1;
        let mut cmd = Command::new("redis-server");
        cmd.arg(&self.config);
        let child = start_ready_within(cmd, &self.log, READY_TIMEOUT, || self.ping());
        self.process = ChildGuard::new(child);
    }

    /// The URL for `[cluster] redis_url` (no password in it).
    pub fn url(&self) -> String {
        match &self.addr {
            RedisAddr::Tcp(port) => format!("redis://127.0.0.1:{port}/0"),
            RedisAddr::Unix(sock) => format!("redis+unix://{}", sock.display()),
            RedisAddr::Tls { port, .. } => format!("rediss://127.0.0.1:{port}/0"),
        }
    }

    /// Runs `redis-cli` against this server (authenticated when it has a
    /// password).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut c = Command::new("redis-cli");
        match &self.addr {
            RedisAddr::Tcp(port) => c.args(["-h", "127.0.0.1", "-p", &port.to_string()]),
            RedisAddr::Unix(sock) => c.arg("-s").arg(sock),
            RedisAddr::Tls { port, cert, .. } => c
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "--tls",
                    "--cacert",
                ])
                .arg(cert),
        };
        if let Some(p) = &self.password {
            c.args(["--no-auth-warning", "-a", p]);
        }
        c.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs")
    }

    /// Whether the server answers PING now.
    pub fn ping(&self) -> bool {
        let out = self.cli(&["ping"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PONG")
    }

    /// SIGKILLs the server (our own child, by its handle) and reaps it: an
    /// abrupt outage, no goodbye to connected clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts the server again with the same config at the same address
    /// (killing it first if it still runs) and waits until it answers PING.
    /// Redis keeps nothing across the restart (`save ""`, no AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.child.is_some()
    }

    /// The current run's log (stdout and stderr of `redis-server`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
