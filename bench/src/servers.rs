//! The servers the proxy scenarios drive: the shared NGINX origin, NGINX and
//! HAProxy as peer proxies (configs in `bench/`, templated with ports and
//! paths at run time) and our gateway, each started pinned to one core with
//! `taskset`, killed on drop. Also the shared certificate and the `wrk`
//! load generator with its parsed summary.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use test_support::{process::ChildGuard, temp::TempDir};

/// Core the system under test runs on.
pub const SUT_CPU: usize = 1;
/// Core the load generator (and the origin) run on.
pub const LOAD_CPU: usize = 0;
/// The API key every proxy accepts on `/key/`.
pub const API_KEY: &str = "bench-key-0123456789abcdef";

/// The repository's `bench/` directory (configs and wrk script).
pub fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench")
}

/// Raises the open-file limit of this process (inherited by every child) to
/// `n`, or to the hard limit if that is lower (raising the hard limit needs
/// CAP_SYS_RESOURCE, which a container may not grant). Returns the limit.
pub fn raise_nofile(n: u64) -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let want = libc::rlimit {
            rlim_cur: n.max(r.rlim_cur),
            rlim_max: n.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

/// Ports for one run, derived from the process id so parallel runs (other
/// worktrees) do not collide.
#[derive(Clone, Copy)]
pub struct Ports {
    pub origin: u16,
    pub gw_http: u16,
    pub gw_https: u16,
    pub ngx_http: u16,
    pub ngx_https: u16,
    pub ha_http: u16,
    pub ha_https: u16,
    /// The tonic gRPC origin (started by the gRPC row).
    pub origin_grpc: u16,
    /// NGINX's h2c listener with `grpc_pass`.
    pub ngx_grpc: u16,
}

impl Ports {
    pub fn new() -> Self {
        // Below the ephemeral range (32768+), where client sockets live.
        let base = 20000 + (std::process::id() % 1000) as u16 * 10;
        let grpc_base = 30000 + (std::process::id() % 1000) as u16 * 2;
        Self {
            origin: base,
            gw_http: base + 1,
            gw_https: base + 2,
            ngx_http: base + 3,
            ngx_https: base + 4,
            ha_http: base + 5,
            ha_https: base + 6,
            // base+7..=base+9 belong to the secondary gateways (cluster,
            // logged, memory rows): the gRPC pair has its own range, also
            // below the ephemeral ports.
            origin_grpc: grpc_base,
            ngx_grpc: grpc_base + 1,
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

/// A self-signed certificate for `localhost` used by every TLS listener.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file (HAProxy `crt`).
    pub both: PathBuf,
    pub cert_der: Vec<u8>,
}

pub fn certs(dir: &Path) -> Certs {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate certificate");
    let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let c = Certs {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        both: dir.join("both.pem"),
        cert_der: ck.cert.der().to_vec(),
    };
    std::fs::write(&c.cert, &cert_pem).unwrap();
    std::fs::write(&c.key, &key_pem).unwrap();
    std::fs::write(&c.both, format!("{cert_pem}{key_pem}")).unwrap();
    c
}

/// Reads `bench/<name>` and replaces every `{{KEY}}`.
pub fn template(name: &str, vars: &[(&str, String)]) -> String {
    let path = bench_dir().join(name);
    let mut s =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!s.contains("{{"), "{name}: unreplaced placeholder");
    s
}

/// Starts `program args…` pinned to `cpu`, output to `log`.
pub fn spawn_pinned(cpu: usize, program: &Path, args: &[&str], log: &Path) -> ChildGuard {
    spawn_pinned_env(cpu, program, args, log, &[])
}

pub fn spawn_pinned_env(
    cpu: usize,
    program: &Path,
    args: &[&str],
    log: &Path,
    env: &[(&str, &str)],
) -> ChildGuard {
    let out = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard::new(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display())),
    )
}

/// Waits until something accepts on 127.0.0.1:`port`.
pub fn wait_port(port: u16, what: &str, log: &Path) {
    wait_addr(&format!("127.0.0.1:{port}"), what, log)
}

/// Waits until something accepts on `addr` (`ip:port`).
pub fn wait_addr(addr: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn which(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} not found: `cargo xtask bench` installs it (BENCH_PACKAGES)");
}

/// First line of `program -v` (NGINX prints it on stderr).
pub fn version(program: &str) -> String {
    let out = Command::new(which(program))
        .arg("-v")
        .output()
        .expect("version");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = text.lines().next().unwrap_or("?");
    // "HAProxy version 2.6.12-1 2026/10/17 - https://…", "wrk 4.1.0 [epoll] Copyright…"
    let first = first.split(" - ").next().unwrap_or(first);
    let first = first.split(" [").next().unwrap_or(first);
    first.trim().to_owned()
}

/// Which proxy a row is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proxy {
    Gateway,
    Nginx,
    Haproxy,
}

impl Proxy {
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Gateway => "gateway",
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "haproxy",
        }
    }
}

/// The origin and the three proxies, all running; everything stops on drop.
pub struct Stack {
    pub ports: Ports,
    pub certs: Certs,
    pub dir: TempDir,
    pub origin: ChildGuard,
    pub gateway: ChildGuard,
    pub nginx: ChildGuard,
    pub haproxy: ChildGuard,
    /// JWT issuer files for the gateway's `/jwt/` route.
    pub jwt_token: String,
}

impl Stack {
    pub fn port(&self, p: Proxy, tls: bool) -> u16 {
        match (p, tls) {
            (Proxy::Gateway, false) => self.ports.gw_http,
            (Proxy::Gateway, true) => self.ports.gw_https,
            (Proxy::Nginx, false) => self.ports.ngx_http,
            (Proxy::Nginx, true) => self.ports.ngx_https,
            (Proxy::Haproxy, false) => self.ports.ha_http,
            (Proxy::Haproxy, true) => self.ports.ha_https,
        }
    }

    pub fn pid(&self, p: Proxy) -> u32 {
        match p {
            Proxy::Gateway => self.gateway.pid(),
            Proxy::Nginx => self.nginx.pid(),
            Proxy::Haproxy => self.haproxy.pid(),
        }
    }
}

/// Starts the origin on the load core and the three proxies on the SUT core.
pub fn start_stack() -> Stack {
    let dir = TempDir::new();
    let ports = Ports::new();
    let certs = certs(&dir.0);
    let d = dir.0.display().to_string();
    let vars = vec![
        ("DIR", d.clone()),
        ("ORIGIN_PORT", ports.origin.to_string()),
        ("HTTP_PORT", ports.ngx_http.to_string()),
        ("HTTPS_PORT", ports.ngx_https.to_string()),
        ("GRPC_PORT", ports.ngx_grpc.to_string()),
        ("ORIGIN_GRPC_PORT", ports.origin_grpc.to_string()),
        ("CERT", certs.cert.display().to_string()),
        ("KEY", certs.key.display().to_string()),
        ("API_KEY", API_KEY.to_owned()),
    ];
    let nginx = which("nginx");
    let origin_conf = dir.0.join("origin.conf");
    std::fs::write(&origin_conf, template("origin.conf", &vars)).unwrap();
    let origin_log = dir.0.join("origin.out");
    let origin = spawn_pinned(
        LOAD_CPU,
        &nginx,
        &[
            "-e",
            &format!("{d}/origin-error.log"),
            "-c",
            origin_conf.to_str().unwrap(),
            "-g",
            "daemon off;",
        ],
        &origin_log,
    );
    wait_port(ports.origin, "origin (nginx)", &origin_log);

    let ngx_conf = dir.0.join("nginx.conf");
    std::fs::write(&ngx_conf, template("nginx.conf", &vars)).unwrap();
    let ngx_log = dir.0.join("nginx.out");
    let nginx = spawn_pinned(
        SUT_CPU,
        &nginx,
        &[
            "-e",
            &format!("{d}/nginx-error.log"),
            "-c",
            ngx_conf.to_str().unwrap(),
            "-g",
            "daemon off;",
        ],
        &ngx_log,
    );
    wait_port(ports.ngx_http, "nginx", &ngx_log);

    let mut ha_vars = vars.clone();
    ha_vars.retain(|(k, _)| !k.ends_with("_PORT") || *k == "ORIGIN_PORT");
    ha_vars.push(("HTTP_PORT", ports.ha_http.to_string()));
    ha_vars.push(("HTTPS_PORT", ports.ha_https.to_string()));
    ha_vars.push(("CERT_AND_KEY", certs.both.display().to_string()));
    ha_vars.push(("JWT_ISSUER", super::gwconf::JWT_ISSUER.to_owned()));
    ha_vars.push(("JWT_AUDIENCE", super::gwconf::JWT_AUDIENCE.to_owned()));
    ha_vars.push((
        "EC_PUBLIC_KEY",
        test_support::jwt::data("ec_public.pem")
            .display()
            .to_string(),
    ));
    let ha_conf = dir.0.join("haproxy.cfg");
    std::fs::write(&ha_conf, template("haproxy.cfg", &ha_vars)).unwrap();
    let ha_log = dir.0.join("haproxy.out");
    let haproxy = spawn_pinned(
        SUT_CPU,
        &which("haproxy"),
        &["-db", "-f", ha_conf.to_str().unwrap()],
        &ha_log,
    );
    wait_port(ports.ha_http, "haproxy", &ha_log);

    let (gw_conf, jwt_token) = super::gwconf::write(&dir.0, &ports, &certs);
    let gw_log = dir.0.join("gateway.out");
    let gateway = spawn_pinned_env(
        SUT_CPU,
        &test_support::gateway::bin(),
        &["run", "--config", gw_conf.to_str().unwrap()],
        &gw_log,
        &[("GATEWAY_LOG", "warn")],
    );
    wait_port(ports.gw_http, "gateway", &gw_log);
    Stack {
        ports,
        certs,
        dir,
        origin,
        gateway,
        nginx,
        haproxy,
        jwt_token,
    }
}

/// One wrk run's summary.
#[derive(Clone, Debug)]
pub struct WrkRun {
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

impl WrkRun {
    pub fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "rps": self.rps.round() as u64,
            "errors": self.errors,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
        })
    }
}

/// What wrk sends.
pub struct Load<'a> {
    pub url: String,
    pub connections: u32,
    pub secs: f64,
    /// JSON body for a POST.
    pub post_body: Option<&'a Path>,
    pub headers: Vec<String>,
}

impl Load<'_> {
    /// A copy (the body path is borrowed, not copied).
    pub fn clone_shallow(&self) -> Self {
        Load {
            url: self.url.clone(),
            connections: self.connections,
            secs: self.secs,
            post_body: self.post_body,
            headers: self.headers.clone(),
        }
    }
}

/// Runs wrk (one thread, pinned to the load core) and parses the summary
/// line printed by `bench/wrk.lua`. Non-2xx/3xx answers count as errors.
pub fn wrk(load: &Load) -> WrkRun {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(LOAD_CPU.to_string())
        .arg(which("wrk"))
        .args(["-t1", "--timeout", "5s"])
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.secs.max(1.0).round() as u64))
        .arg("-s")
        .arg(bench_dir().join("wrk.lua"));
    for h in &load.headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(body) = load.post_body {
        cmd.env("WRK_METHOD", "POST").env("WRK_BODY_FILE", body);
    }
    cmd.arg(&load.url);
    let out = cmd.output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no summary for {}:\n{text}{}",
                load.url,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Value = serde_json::from_str(line).expect("wrk summary JSON");
    let g = |k: &str| v[k].as_u64().unwrap_or(0);
    let secs = g("duration_us") as f64 / 1e6;
    WrkRun {
        requests: g("requests"),
        rps: g("requests") as f64 / secs.max(1e-9),
        errors: g("connect_errors")
            + g("read_errors")
            + g("write_errors")
            + g("status_errors")
            + g("timeouts"),
        p50_us: g("p50_us"),
        p99_us: g("p99_us"),
        p999_us: g("p999_us"),
    }
}

/// CPU time of process `pid` and of its direct children (NGINX's workers),
/// in nanoseconds: the sum over their threads of the time on a CPU
/// (`/proc/<pid>/task/<tid>/schedstat`, first field). Threads that exited
/// are not counted; the proxies keep theirs for the whole run.
pub fn tree_cpu_ns(pid: u32) -> u64 {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // After the command name in parentheses: state, then ppid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(p);
            }
        }
    }
    let mut total = 0;
    for p in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("schedstat");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            total += text
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// `n` clients open a connection to `port` at the same instant (a barrier)
/// and each sends one `GET path` and reads the answer's first bytes.
/// Returns the slowest connect-to-first-byte time and how many took over
/// one second (the first SYN retransmit: a SYN dropped by a full accept
/// queue). Bounded: each client gives up after 5 s.
pub fn connect_burst(port: u16, path: &str, n: usize) -> (Duration, usize) {
    use std::io::{Read, Write};
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let request = request.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                    return Duration::from_secs(5);
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(request.as_bytes());
                let mut first = [0u8; 16];
                let _ = s.read(&mut first);
                start.elapsed()
            })
        })
        .collect();
    let times: Vec<Duration> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or(Duration::from_secs(5)))
        .collect();
    let max = times.iter().copied().max().unwrap_or_default();
    let over = times
        .iter()
        .filter(|t| **t >= Duration::from_secs(1))
        .count();
    (max, over)
}

/// One more gateway with the benchmark config (edited by `edit`, which gets
/// the config text and the gateway's own directory), on the ports the main
/// stack leaves unused (`Ports::new` keeps base+7..=base+9 free; one spare
/// at a time). For the rows that need a gateway of their own: the access
/// log on, or memory measured in a process nothing ran in before. Stops on
/// drop.
pub struct SpareGateway {
    pub http: u16,
    pub https: u16,
    pub pid: u32,
    _gateway: ChildGuard,
}

impl SpareGateway {
    pub fn start(stack: &Stack, name: &str, edit: impl FnOnce(String, &Path) -> String) -> Self {
        let base = stack.ports.origin;
        let (http, https) = (base + 7, base + 8);
        let dir = stack.dir.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ports = Ports {
            gw_http: http,
            gw_https: https,
            ..Ports::new()
        };
        let text = super::gwconf::config_text(&dir, &ports, &stack.certs, "[xdp]\nenabled = false");
        let text = edit(text, &dir);
        let conf = dir.join("gateway.toml");
        std::fs::write(&conf, text).unwrap();
        let out = dir.join("gateway.out");
        let gateway = spawn_pinned_env(
            SUT_CPU,
            &test_support::gateway::bin(),
            &["run", "--config", conf.to_str().unwrap()],
            &out,
            &[("GATEWAY_LOG", "warn")],
        );
        wait_port(http, &format!("gateway ({name})"), &out);
        wait_port(https, &format!("gateway ({name}, TLS)"), &out);
        Self {
            http,
            https,
            pid: gateway.pid(),
            _gateway: gateway,
        }
    }
}
