//! Shared helpers for the observability tests: the real `gateway` binary
//! started with XDP off on loopback (access log to a file, admin HTTP
//! listener on), an origin that records headers and whose health check
//! can be switched off, and a tiny HTTP/1.1 client.

#![allow(
    dead_code,
    reason = "each test binary that includes this module uses a different subset"
)]

use std::{
    convert::Infallible,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// A free loopback port (bound and released; good enough on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "gw-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
        let dir = TempDir::new("observe");
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
        let log = std::fs::File::create(dir.0.join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("gateway starts");
        let mut gw = Gateway {
            child,
            dir,
            proxy,
            admin,
            access_log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if try_get(admin, "/healthz", &[]).is_some_and(|r| r.status == 200) {
                return gw;
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("gateway exited with {status}:\n{}", gw.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(50));
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

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

pub fn try_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    try_get(addr, path, headers).unwrap_or_else(|| panic!("GET {path} on {addr} failed"))
}

/// An origin that records request headers; `/healthz` answers 200 while
/// `healthy` is set, 503 otherwise.
pub struct Origin {
    pub addr: SocketAddr,
    pub healthy: Arc<AtomicBool>,
    pub seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    _rt: tokio::runtime::Runtime,
}

impl Origin {
    pub fn start() -> Origin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (healthy.clone(), seen.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (h, s) = (h.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (h, s) = (h.clone(), s.clone());
                        async move {
                            let status = if req.uri().path() == "/healthz" {
                                if h.load(Ordering::Relaxed) { 200 } else { 503 }
                            } else {
                                s.lock().unwrap().push(req.headers().clone());
                                200
                            };
                            let mut r = Response::new(Full::new(Bytes::from_static(b"origin\n")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            healthy,
            seen,
            _rt: rt,
        }
    }

    /// The headers of requests other than health checks.
    pub fn seen(&self) -> Vec<http::HeaderMap> {
        self.seen.lock().unwrap().clone()
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

/// One sample: metric name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Prometheus text format, parsed into (name, labels, value) samples.
/// Panics on a line that is not valid exposition format.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(
                rest.starts_with("HELP ")
                    || rest.starts_with("TYPE ")
                    || rest.starts_with("UNIT ")
                    || rest == "EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels.to_owned(), Vec::new()),
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = Vec::new();
                for pair in split_labels(l) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label: {line}"));
                    labels.push((k.to_owned(), v.replace("\\\"", "\"").replace("\\\\", "\\")));
                }
                (n.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        out.push((name, labels, value));
    }
    out
}

fn split_labels(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                cur.push(c);
                continue;
            }
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The value of a sample with all of `labels` (summed if several match).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
