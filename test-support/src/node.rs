//! A gateway node of the cluster tests: one `gateway run` process with
//! its own config file, admin socket, proxy listener and observability
//! listener, on the host or inside a network namespace, and the small
//! pollers the tests wait with.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    gateway::{Gateway, metrics},
    metrics::metric,
    netns::in_netns,
    temp::TempDir,
};

/// One gateway process of a cluster test, with the addresses it serves on.
pub struct Node {
    /// The `gateway run` process.
    pub gw: Gateway,
    /// The proxy listener.
    pub http: SocketAddr,
    /// `[observability] listen`.
    pub obs: SocketAddr,
    _tmp: TempDir,
}

/// What differs between the nodes of a test.
pub struct NodeSpec<'a> {
    /// `[cluster] node_id`.
    pub node_id: &'a str,
    /// The `[xdp]` table's body (`enabled = false`, or an interface).
    pub xdp: String,
    /// Listener IP (the port is drawn from [`crate::test_port`]).
    pub listen_ip: &'a str,
    /// The `[cluster]` table's body without `node_id`.
    pub cluster: String,
    /// Routes, auth, limits, escalation: the rest of the file.
    pub rest: &'a str,
    /// Start through `nsenter` into this namespace.
    pub netns: Option<&'a str>,
}

impl Node {
    /// Writes the node's config and starts it; returns once its
    /// observability listener accepts connections.
    pub fn start(spec: NodeSpec<'_>) -> Self {
        let tmp = TempDir::new();
        let socket = tmp.0.join("admin.sock");
        let (port, demo, obs) = (crate::test_port(), crate::test_port(), crate::test_port());
        let config = tmp.0.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                r#"[xdp]
{xdp}

[admin]
socket = "{socket}"

[log]
access_log = "off"

[observability]
enabled = true
listen = "127.0.0.1:{obs}"

[[listeners]]
name = "http"
address = "{ip}:{port}"

[demo]
enabled = true
address = "127.0.0.1:{demo}"

[[upstreams]]
name = "demo"
targets = ["127.0.0.1:{demo}"]

[cluster]
node_id = "{id}"
{cluster}

{rest}
"#,
                xdp = spec.xdp,
                socket = socket.display(),
                ip = spec.listen_ip,
                id = spec.node_id,
                cluster = spec.cluster,
                rest = spec.rest,
            ),
        )
        .unwrap();
        let log = tmp.0.join("gateway.log");
        let gw = match spec.netns {
            Some(ns) => Gateway::start_in_netns(ns, &config, &socket, &log),
            None => Gateway::start(&config, &socket, &log),
        };
        // The admin socket comes up before the proxy listeners and the
        // observability listener after them: wait for the latter (from the
        // gateway's namespace, where its loopback is).
        let obs_addr: SocketAddr = format!("127.0.0.1:{obs}").parse().unwrap();
        let listening = move || {
            wait_for(Duration::from_secs(10), || {
                TcpStream::connect_timeout(&obs_addr, Duration::from_millis(500)).ok()
            })
            .is_some()
        };
        let up = match spec.netns {
            Some(ns) => in_netns(ns, listening),
            None => listening(),
        };
        assert!(up, "no observability listener:\n{}", gw.log_text());
        Self {
            gw,
            http: format!("{}:{port}", spec.listen_ip).parse().unwrap(),
            obs: obs_addr,
            _tmp: tmp,
        }
    }

    /// A metric from this node's `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&metrics(self.obs), name)
    }

    /// `gateway block list --json`.
    pub fn blocks(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&self.gw.ok(&["block", "list", "--json"])).unwrap();
        v.as_array().cloned().expect("block list is an array")
    }

    /// The `block list` entry for `net`, if listed.
    pub fn block(&self, net: &str) -> Option<serde_json::Value> {
        self.blocks().into_iter().find(|e| e["net"] == net)
    }

    /// `gateway cluster status --json`.
    pub fn cluster_status(&self) -> serde_json::Value {
        serde_json::from_str(&self.gw.ok(&["cluster", "status", "--json"]))
            .expect("cluster status JSON")
    }

    /// Waits up to 10 s until the node reports its Redis link connected;
    /// panics with its status, its log and `context` otherwise.
    pub fn wait_connected(&self, context: &str) {
        if wait_for(Duration::from_secs(10), || {
            (self.cluster_status()["connected"] == true).then_some(())
        })
        .is_none()
        {
            panic!(
                "node not connected to Redis: {}\n{}\n{context}",
                self.cluster_status(),
                self.gw.log_text()
            );
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`;
/// (value, time it took) or `None` on timeout.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    for _ in 0..10_000 {
        if let Some(v) = f() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One `GET <path>` from the host; the status code, or the error.
pub fn get(addr: SocketAddr, path: &str, headers: &str) -> Result<u16, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    get_on(s, path, headers)
}

/// Sends `GET <path>` on a connected stream; the response status.
pub use crate::http::blocking::get_status_on as get_on;

/// One `GET /api/x` with API key `key` from inside namespace `ns`, from
/// source `src`: the status, or the connect error when the kernel drops
/// the SYN.
pub fn get_from(ns: &str, src: &str, addr: SocketAddr, key: &str) -> Result<u16, String> {
    let src: std::net::Ipv4Addr = src.parse().expect("an IPv4 source");
    let SocketAddr::V4(dst) = addr else {
        panic!("IPv4 only")
    };
    let headers = format!("X-Api-Key: {key}\r\n");
    in_netns(ns, move || {
        let s = crate::netns::connect_from(src, dst, Duration::from_millis(1500))
            .map_err(|e| e.to_string())?;
        get_on(s, "/api/x", &headers)
    })
}
