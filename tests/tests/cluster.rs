//! Cluster mode end to end: gateways that share rate limits and blocks
//! through one Redis, each a real `gateway` process with its own admin
//! socket (and, for the XDP tests, its own bpffs pins and veth). Redis is a
//! private `redis-server` per test, killed and restarted to play an outage:
//! the nodes keep serving on their local state (fail-open), say so on
//! `/metrics`, `/readyz` and `gateway cluster status`, and catch up when
//! Redis returns.

use std::time::{Duration, Instant};

use test_support::{
    gateway::{metrics, readyz},
    guard::{Link, Netns, PinDir},
    metrics::{metric, metric_sum},
    node::{Node, NodeSpec, get, get_from, wait_for},
    redis::{RedisAddr, RedisServer},
    require_root,
    temp::TempDir,
    topology::TwoNodeLink,
};

const SHARED_LIMIT: &str = r#"[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"

[rate_limit]
global = ["shared"]

[[rate_limit.limits]]
name = "shared"
rate = "1r/m"
burst = 9
key = "header:x-client"
shared = true

[escalation]
enabled = false
"#;

#[test]
fn shared_limit_spans_two_gateways() {
    if !test_support::redis::require_redis("shared_limit_spans_two_gateways") {
        return;
    }
    let mut redis = RedisServer::start_tcp(test_support::test_port());
    let start = |id| {
        Node::start(NodeSpec {
            node_id: id,
            xdp: "enabled = false".into(),
            listen_ip: "127.0.0.1",
            cluster: format!("redis_url = \"{}\"", redis.url()),
            rest: SHARED_LIMIT,
            netns: None,
        })
    };
    let (a, b) = (start("a"), start("b"));
    for n in [&a, &b] {
        assert!(
            wait_for(Duration::from_secs(10), || (n
                .metric("gateway_cluster_redis_up")
                == Some(1.0))
            .then_some(()))
            .is_some(),
            "node not connected to Redis:\n{}",
            n.gw.log_text()
        );
    }

    // One bucket for both nodes: burst 9 + 1 = 10 requests, then 429s. A
    // per-node limit would let 20 through.
    let mut statuses = Vec::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            get(node.http, "/api/x", "X-Client: one\r\n")
                .unwrap_or_else(|e| panic!("request {i}: {e}")),
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (ok, limited),
        (10, 20),
        "statuses in order (A, B, A, ...): {statuses:?}"
    );

    // Redis dies: both nodes keep serving a new client on their own local
    // limit (a fresh local burst each: fail-open), while the refusal Redis
    // gave the first client still holds; they say they are disconnected
    // but still ready.
    redis.kill();
    for (name, n) in [("A", &a), ("B", &b)] {
        assert!(
            wait_for(Duration::from_secs(5), || (get(
                n.http,
                "/api/x",
                "X-Client: two\r\n"
            ) == Ok(200))
            .then_some(()))
            .is_some(),
            "{name} does not fail open to its local limit:\n{}",
            n.gw.log_text()
        );
        assert_eq!(
            get(n.http, "/api/x", "X-Client: one\r\n"),
            Ok(429),
            "{name}: a client the cluster refused got through during the outage"
        );
    }
    for (name, n) in [("A", &a), ("B", &b)] {
        assert!(
            wait_for(Duration::from_secs(5), || (n
                .metric("gateway_cluster_redis_up")
                == Some(0.0))
            .then_some(()))
            .is_some(),
            "{name}: gateway_cluster_redis_up is not 0 with Redis down"
        );
        let (status, body) = readyz(n.obs);
        assert_eq!(
            status, 200,
            "{name}: Redis down must not make it unready: {body}"
        );
        assert_eq!(body["cluster"], "disconnected", "{name}: {body}");
        let local = metric_sum(&metrics(n.obs), "gateway_cluster_local_decisions_total");
        assert!(
            local.is_some_and(|v| v > 0.0),
            "{name}: no local decisions counted during the outage: {local:?}"
        );
    }

    // Redis returns (empty): both reconnect.
    redis.restart();
    for (name, n) in [("A", &a), ("B", &b)] {
        assert!(
            wait_for(Duration::from_secs(10), || (n
                .metric("gateway_cluster_redis_up")
                == Some(1.0))
            .then_some(()))
            .is_some(),
            "{name} did not reconnect within 10 s:\n{}",
            n.gw.log_text()
        );
        let (status, body) = readyz(n.obs);
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["cluster"], "connected", "{name}: {body}");
    }
}

/// An API-key route whose key is on plan `free`: 5 requests a month.
const QUOTA_PLAN: &str = r#"[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"
auth = "key"

[auth.api_keys.k]
keys = [{ name = "client", sha256 = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c", plan = "free" }]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[[rate_limit.plans]]
name = "free"
quota = "5/month"

[escalation]
enabled = false
"#;

#[test]
fn two_gateways_share_one_quota() {
    if !test_support::redis::require_redis("two_gateways_share_one_quota") {
        return;
    }
    let redis = RedisServer::start_tcp(test_support::test_port());
    let state = TempDir::new();
    let rests: Vec<String> = ["a", "b"]
        .iter()
        .map(|id| {
            format!(
                "{QUOTA_PLAN}\n[rate_limit]\nquota_state = \"{}\"\n",
                state.0.join(format!("quota-{id}.json")).display()
            )
        })
        .collect();
    let start = |id, rest: &str| {
        Node::start(NodeSpec {
            node_id: id,
            xdp: "enabled = false".into(),
            listen_ip: "127.0.0.1",
            cluster: format!("redis_url = \"{}\"", redis.url()),
            rest,
            netns: None,
        })
    };
    let (a, b) = (start("a", &rests[0]), start("b", &rests[1]));
    a.wait_connected("node a");
    b.wait_connected("node b");

    // One count for both nodes: 5 requests in all, then 429 on either. Two
    // per-node counts would let 10 through.
    let key = "X-Api-Key: demo-key\r\n";
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            get(node.http, "/api/x", key).unwrap_or_else(|e| panic!("request {i}: {e}"))
        })
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429, 429],
        "statuses in order (A, B, A, ...)"
    );

    // Either node reads the cluster's count.
    let got: serde_json::Value =
        serde_json::from_str(&b.gw.ok(&["quota", "get", "client", "--json"])).unwrap();
    let row = &got["quotas"][0];
    assert_eq!(row["quota"], "plan:free", "{got}");
    assert_eq!(row["used"], 5, "{got}");
    assert_eq!(row["source"], "cluster", "{got}");
    // /metrics on each node: allowed and refused counted where they happened.
    let allowed = |n: &Node| {
        metric(
            &metrics(n.obs),
            "gateway_quota_requests_total{kind=\"plan\",name=\"free\",outcome=\"allowed\"}",
        )
    };
    assert_eq!(allowed(&a).unwrap_or(0.0) + allowed(&b).unwrap_or(0.0), 5.0);

    // A reset on node A frees the quota on node B too.
    let out = a.gw.ok(&["quota", "reset", "client"]);
    assert!(out.contains("1 in the cluster"), "{out}");
    assert_eq!(get(b.http, "/api/x", key), Ok(200));
    assert_eq!(get(a.http, "/api/x", key), Ok(200));
}

/// The routes of the XDP tests: one API-key route on the demo upstream
/// (`demo-key`), escalation into the blocklist at 50 points (five wrong
/// keys), no separate brute-force lockout.
const KEY_ROUTE: &str = r#"[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"
auth = "key"

[auth.api_keys.k]
keys = [{ name = "client", sha256 = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c" }]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[auth.brute_force]
enabled = false

[escalation]
threshold = 50
ttl_ladder = ["20s"]
"#;

/// The `[xdp]` body for native XDP on `iface` with pins in `pin`.
fn xdp_on(iface: &str, pin: &PinDir) -> String {
    format!(
        "interface = \"{iface}\"\nmode = \"native\"\npin_dir = \"{}\"\nsweep_interval = \"200ms\"",
        pin.path.display()
    )
}

/// A gateway with XDP on the host end of its own [`Link`].
struct XdpNode {
    // Dropped in this order: the gateway, its pins, then its link.
    node: Node,
    _pin: PinDir,
    _link: Link,
}

impl XdpNode {
    fn start(id: &str, subnet: u8, redis_url: &str) -> Self {
        Self::start_on(
            id,
            &format!("198.19.{subnet}"),
            format!("redis_url = \"{redis_url}\""),
        )
    }

    /// On the /24 `prefix`, with `cluster` as the `[cluster]` body.
    fn start_on(id: &str, prefix: &str, cluster: String) -> Self {
        let link = Link::new(prefix, 1);
        let pin = PinDir::new();
        let node = Node::start(NodeSpec {
            node_id: id,
            xdp: xdp_on(&link.veth.host, &pin),
            listen_ip: &link.host_ip,
            cluster,
            rest: KEY_ROUTE,
            netns: None,
        });
        Self {
            node,
            _pin: pin,
            _link: link,
        }
    }
}

/// Seconds left on a listed block.
fn ttl(entry: &serde_json::Value) -> i64 {
    entry["ttl_secs_left"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ttl_secs_left: {entry}"))
}

#[test]
fn cluster_blocks_reach_every_node_and_survive_a_redis_restart() {
    let name = "cluster_blocks_reach_every_node_and_survive_a_redis_restart";
    if !require_root(name) || !test_support::redis::require_redis(name) {
        return;
    }
    // Three /24s on host-side veths, apart from the other tests' ranges
    // (198.18.0-239 and 198.19.20-219).
    let subnet = |k: u8| 220 + (std::process::id() % 11) as u8 * 3 + k;
    let mut redis = RedisServer::start_tcp(test_support::test_port());
    let url = redis.url();
    let a = XdpNode::start("a", subnet(0), &url);
    let b = XdpNode::start("b", subnet(1), &url);
    let (a, b) = (&a.node, &b.node);
    for n in [a, b] {
        n.wait_connected("");
    }

    // A cluster block on A reaches B, with its origin and the same expiry.
    a.gw.ok(&[
        "block",
        "add",
        "--cluster",
        "198.51.100.7",
        "--ttl",
        "10m",
        "--reason",
        "test",
    ]);
    let (on_b, took) = wait_for(Duration::from_secs(3), || b.block("198.51.100.7"))
        .unwrap_or_else(|| panic!("B never listed A's block: {:?}", b.blocks()));
    eprintln!("cluster block A -> B: {} ms", took.as_millis());
    let on_a = a.block("198.51.100.7").expect("A lists its own block");
    for e in [&on_a, &on_b] {
        assert_eq!(e["cluster"], true, "{e}");
        assert_eq!(e["origin"], "a", "{e}");
    }
    assert!(
        (ttl(&on_a) - ttl(&on_b)).abs() <= 2,
        "expiries differ: A {on_a}, B {on_b}"
    );

    // Redis down: a cluster block on B still applies locally at once...
    redis.kill();
    b.gw.ok(&["block", "add", "--cluster", "198.51.100.8", "--ttl", "10m"]);
    assert!(
        b.block("198.51.100.8").is_some(),
        "not applied locally: {:?}",
        b.blocks()
    );
    // ...and is published when Redis returns (empty: nothing persisted).
    redis.restart();
    assert!(
        wait_for(Duration::from_secs(10), || a.block("198.51.100.8")).is_some(),
        "A never got B's block made during the outage: {:?}\n{}",
        a.blocks(),
        b.gw.log_text()
    );
    assert!(
        b.block("198.51.100.7").is_some(),
        "B lost A's block across the Redis restart: {:?}",
        b.blocks()
    );

    // A node that starts now loads the whole cluster blocklist from Redis.
    let c = XdpNode::start("c", subnet(2), &url);
    let c = &c.node;
    let (both, took) = wait_for(Duration::from_secs(5), || {
        Some((c.block("198.51.100.7")?, c.block("198.51.100.8")?))
    })
    .unwrap_or_else(|| panic!("C did not load the cluster blocks: {:?}", c.blocks()));
    eprintln!(
        "new node loaded the cluster blocklist {} ms after start",
        took.as_millis()
    );
    assert_eq!(both.0["origin"], "a", "{}", both.0);
    assert_eq!(both.1["origin"], "b", "{}", both.1);
    assert_eq!(both.0["cluster"], true, "{}", both.0);
    assert_eq!(both.1["cluster"], true, "{}", both.1);

    // A cluster block cannot be removed on one node only.
    let out = a.gw.cli(&["block", "del", "198.51.100.8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "local del of a cluster block succeeded"
    );
    assert!(err.contains("--cluster"), "{err}");
    assert!(a.block("198.51.100.8").is_some(), "removed anyway");

    // A cluster-wide del from B: gone everywhere.
    b.gw.ok(&["block", "del", "--cluster", "198.51.100.7"]);
    for (name, n) in [("A", a), ("C", c)] {
        assert!(
            wait_for(Duration::from_secs(3), || n
                .block("198.51.100.7")
                .is_none()
                .then_some(()))
            .is_some(),
            "{name} still lists the deleted block: {:?}",
            n.blocks()
        );
    }
}

/// Gateways `a` and `b` in the namespaces of a [`TwoNodeLink`], XDP on
/// their veth ends, sharing one Redis on a Unix socket (one path reaches it
/// from every namespace); connected when this returns.
struct NetnsNodes {
    // Dropped in this order: the gateways, their pins, then Redis.
    a: Node,
    b: Node,
    _pins: (PinDir, PinDir),
    _redis: RedisServer,
}

impl NetnsNodes {
    fn start(topo: &TwoNodeLink) -> Self {
        let redis = RedisServer::start_unix();
        let (pin_a, pin_b) = (PinDir::new(), PinDir::new());
        let start = |id, iface: &str, pin, ip: &str, ns: &Netns| {
            Node::start(NodeSpec {
                node_id: id,
                xdp: xdp_on(iface, pin),
                listen_ip: ip,
                cluster: format!("redis_url = \"{}\"", redis.url()),
                rest: KEY_ROUTE,
                netns: Some(&ns.name),
            })
        };
        let a = start("a", &topo.ga, &pin_a, &topo.ga_ip, &topo.a);
        let b = start("b", &topo.gb, &pin_b, &topo.gb_ip, &topo.b);
        for n in [&a, &b] {
            n.wait_connected("");
        }
        Self {
            a,
            b,
            _pins: (pin_a, pin_b),
            _redis: redis,
        }
    }
}

#[test]
fn block_escalated_on_node_a_drops_on_node_b() {
    let name = "block_escalated_on_node_a_drops_on_node_b";
    if !require_root(name) || !test_support::redis::require_redis(name) {
        return;
    }
    let topo = TwoNodeLink::new();
    let nodes = NetnsNodes::start(&topo);
    let (a, b) = (&nodes.a, &nodes.b);
    let (ns, client, other) = (
        topo.client.name.as_str(),
        topo.client_ip.as_str(),
        topo.other_ip.as_str(),
    );

    assert_eq!(
        get_from(ns, client, b.http, "demo-key"),
        Ok(200),
        "B before any block:\n{}",
        b.gw.log_text()
    );
    // Wrong keys weigh 10 points: the fifth crosses A's threshold of 50.
    for i in 0..5 {
        assert_eq!(
            get_from(ns, client, a.http, "wrong"),
            Ok(401),
            "request {i} to A"
        );
    }
    let crossed = Instant::now();
    let (entry, _) = wait_for(Duration::from_secs(2), || b.block(client)).unwrap_or_else(|| {
        panic!(
            "A's escalation never reached B: {:?}\nA:\n{}\nB:\n{}",
            b.blocks(),
            a.gw.log_text(),
            b.gw.log_text()
        )
    });
    eprintln!(
        "escalation propagation: block visible on B {} ms after A's crossing 401 was read (CLI round trips included)",
        crossed.elapsed().as_millis()
    );
    assert_eq!(entry["cluster"], true, "{entry}");
    assert_eq!(entry["origin"], "a", "{entry}");

    // B's kernel drops the client now; the bystander is unaffected.
    let before = b.gw.counter("dropped_blocklist");
    let r = get_from(ns, client, b.http, "demo-key");
    assert!(r.is_err(), "blocked client still reaches B: {r:?}");
    assert!(
        b.gw.counter("dropped_blocklist") > before,
        "B's XDP program did not drop"
    );
    assert_eq!(
        get_from(ns, other, b.http, "demo-key"),
        Ok(200),
        "the bystander was hurt on B"
    );
}

#[test]
fn offences_spread_over_two_nodes_add_up() {
    let name = "offences_spread_over_two_nodes_add_up";
    if !require_root(name) || !test_support::redis::require_redis(name) {
        return;
    }
    let topo = TwoNodeLink::new();
    let nodes = NetnsNodes::start(&topo);
    let (a, b) = (&nodes.a, &nodes.b);
    let (ns, client, other) = (
        topo.client.name.as_str(),
        topo.client_ip.as_str(),
        topo.other_ip.as_str(),
    );
    // Wrong keys weigh 10 points and the threshold is 50. Four, two on
    // each node, leave both nodes (20 points each) and the cluster (40)
    // below it: nobody is blocked.
    for (i, n) in [a, b, a, b].into_iter().enumerate() {
        assert_eq!(
            get_from(ns, client, n.http, "wrong"),
            Ok(401),
            "offence {i}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        a.blocks().is_empty() && b.blocks().is_empty(),
        "blocked below the threshold: A {:?} B {:?}",
        a.blocks(),
        b.blocks()
    );
    // The fifth, on B, takes the cluster-wide score to 50 while B alone has
    // 30: B escalates, and the block reaches A's kernel too.
    assert_eq!(get_from(ns, client, b.http, "wrong"), Ok(401));
    for (name, n) in [("A", a), ("B", b)] {
        let (entry, _) = wait_for(Duration::from_secs(3), || n.block(client)).unwrap_or_else(|| {
            panic!(
                "{name}: offences spread over the nodes were not added up: {:?}\nA:\n{}\nB:\n{}",
                n.blocks(),
                a.gw.log_text(),
                b.gw.log_text()
            )
        });
        assert_eq!(entry["origin"], "b", "{name}: {entry}");
        assert!(
            entry["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cluster-wide auth_failure")),
            "{name}: {entry}"
        );
    }
    let before = a.gw.counter("dropped_blocklist");
    assert!(
        get_from(ns, client, a.http, "demo-key").is_err(),
        "A still serves the client"
    );
    assert!(
        a.gw.counter("dropped_blocklist") > before,
        "A's kernel did not drop"
    );
    assert_eq!(
        get_from(ns, other, a.http, "demo-key"),
        Ok(200),
        "bystander hurt on A"
    );
}

/// A public route on the demo upstream, nothing else.
const PLAIN_ROUTE: &str = r#"[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"
"#;

#[test]
fn redis_auth_and_bad_url_are_reported() {
    if !test_support::redis::require_redis("redis_auth_and_bad_url_are_reported") {
        return;
    }
    let pid = std::process::id();
    let (right, wrong) = (format!("right-pw-{pid}-x7"), format!("wrong-pw-{pid}-q3"));
    let redis_port = test_support::test_port();
    let redis = RedisServer::start(RedisAddr::Tcp(redis_port), Some(&right));
    let tmp = TempDir::new();
    let pw_file = |name: &str, pw: &str| {
        let p = tmp.0.join(name);
        std::fs::write(&p, pw).unwrap();
        p
    };
    let (good_pw, bad_pw) = (pw_file("good", &right), pw_file("bad", &wrong));
    let start = |id, cluster: String| {
        Node::start(NodeSpec {
            node_id: id,
            xdp: "enabled = false".into(),
            listen_ip: "127.0.0.1",
            cluster,
            rest: PLAIN_ROUTE,
            netns: None,
        })
    };
    let good = start(
        "good",
        format!(
            "redis_url = \"{}\"\npassword_file = \"{}\"",
            redis.url(),
            good_pw.display()
        ),
    );
    // A wrong password, once from a file and once inside the URL (where
    // `gateway cluster status` must redact it).
    let bad_file = start(
        "bad-file",
        format!(
            "redis_url = \"{}\"\npassword_file = \"{}\"",
            redis.url(),
            bad_pw.display()
        ),
    );
    let bad_url = start(
        "bad-url",
        format!("redis_url = \"redis://:{wrong}@127.0.0.1:{redis_port}/0\""),
    );

    let (status, _) = wait_for(Duration::from_secs(10), || {
        let s = good.cluster_status();
        (s["connected"] == true).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "the right password did not connect: {}\n{}",
            good.cluster_status(),
            good.gw.log_text()
        )
    });
    assert_eq!(status["configured"], true, "{status}");
    assert_eq!(status["node_id"], "good", "{status}");
    assert!(status["error"].is_null(), "{status}");

    for (name, n) in [("password_file", &bad_file), ("URL password", &bad_url)] {
        // Fails open: serves while it cannot authenticate.
        assert_eq!(get(n.http, "/api/x", ""), Ok(200), "{name}: not serving");
        let (status, _) = wait_for(Duration::from_secs(10), || {
            let s = n.cluster_status();
            s["error"].is_string().then_some(s)
        })
        .unwrap_or_else(|| panic!("{name}: no error reported: {}", n.cluster_status()));
        assert_eq!(status["configured"], true, "{name}: {status}");
        assert_eq!(status["connected"], false, "{name}: {status}");
        let text = status.to_string();
        for pw in [&right, &wrong] {
            assert!(
                !text.contains(pw.as_str()),
                "{name}: password in status: {text}"
            );
            let log = n.gw.log_text();
            assert!(
                !log.contains(pw.as_str()),
                "{name}: password in the log:\n{log}"
            );
        }
        let metrics_text = metrics(n.obs);
        assert!(
            !metrics_text.contains(&wrong),
            "{name}: password in /metrics"
        );
        assert_eq!(
            metric(&metrics_text, "gateway_cluster_redis_up"),
            Some(0.0),
            "{name}"
        );
    }
    assert!(
        bad_url.cluster_status()["redis"]
            .as_str()
            .is_some_and(|u| u.contains("127.0.0.1") && !u.contains(&wrong)),
        "redis URL not shown redacted: {}",
        bad_url.cluster_status()
    );

    // A URL that is no Redis URL, and a shared limit without [cluster], are
    // config errors: exit 64 before anything starts.
    for (case, text, needle) in [
        (
            "bad scheme",
            "[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n",
            "redis_url",
        ),
        (
            "shared without cluster",
            "[[rate_limit.limits]]\nname = \"s\"\nrate = \"1r/s\"\nshared = true\n",
            "shared",
        ),
    ] {
        let path = tmp.0.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(test_support::gateway::bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{case}: {err}");
        assert!(err.contains(needle), "{case}: {err}");
    }
}

/// The least-privilege ACL user of docs/cluster.md, read from the doc so
/// the two cannot drift apart, with `password` in place of `CHANGE-ME`.
fn documented_acl_user(password: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cluster.md"))
        .expect("docs/cluster.md");
    let line = doc
        .lines()
        .find(|l| l.starts_with("user gateway on >CHANGE-ME "))
        .expect("docs/cluster.md shows the gateway's ACL user");
    line.replace("CHANGE-ME", password)
}

#[test]
fn cluster_over_tls_as_the_documented_acl_user() {
    let name = "cluster_over_tls_as_the_documented_acl_user";
    if !require_root(name) || !test_support::redis::require_redis(name) {
        return;
    }
    // Redis speaks TLS only, with a certificate for 127.0.0.1 that the
    // nodes trust through tls_ca_file; the gateway logs in as the ACL user
    // with exactly the permissions the docs list.
    let tmp = TempDir::new();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (tmp.0.join("redis.crt"), tmp.0.join("redis.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let user_pw = format!("gw-{}-acl", std::process::id());
    let pw_file = tmp.0.join("redis.pass");
    std::fs::write(&pw_file, format!("{user_pw}\n")).unwrap();
    let redis = RedisServer::start_with(
        RedisAddr::Tls {
            port: test_support::test_port(),
            cert: cert.clone(),
            key,
        },
        Some("admin-only"),
        &documented_acl_user(&user_pw),
    );
    let body = |ca: bool| {
        let mut b = format!(
            "redis_url = \"{}\"\nusername = \"gateway\"\npassword_file = \"{}\"",
            redis.url(),
            pw_file.display()
        );
        if ca {
            b.push_str(&format!("\ntls_ca_file = \"{}\"", cert.display()));
        }
        b
    };
    let k = (std::process::id() % 8) as u8 * 2;
    let a = XdpNode::start_on("a", &format!("198.18.{}", 240 + k), body(true));
    let b = XdpNode::start_on("b", &format!("198.18.{}", 241 + k), body(true));
    let (a, b) = (&a.node, &b.node);
    for n in [a, b] {
        n.wait_connected(&format!(
            "(TLS, as the ACL user) redis:\n{}",
            redis.log_text()
        ));
    }
    // Offence scores (INCRBY, PEXPIRE) run under the ACL: four wrong keys
    // from A's link address leave 40 points in the cluster-wide score.
    let source = a.http.ip().to_string();
    for _ in 0..4 {
        assert_eq!(get(a.http, "/api/x", "X-Api-Key: wrong\r\n"), Ok(401));
    }
    let score_key = format!("gateway:esc:{source}");
    wait_for(Duration::from_secs(3), || {
        let out = redis.cli(&["GET", &score_key]);
        (String::from_utf8_lossy(&out.stdout).trim() == "40").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no cluster-wide score under the ACL: {:?}\n{}",
            redis.cli(&["GET", &score_key]),
            a.gw.log_text()
        )
    });
    // Every script runs under the ACL: add (HSET, ZADD, PUBLISH...), the
    // subscription delivers it, and the removal goes the same way.
    a.gw.ok(&["block", "add", "--cluster", "203.0.113.77", "--ttl", "5m"]);
    wait_for(Duration::from_secs(3), || b.block("203.0.113.77")).unwrap_or_else(|| {
        panic!(
            "B never got the block: {:?}\n{}",
            b.blocks(),
            b.gw.log_text()
        )
    });
    b.gw.ok(&["block", "del", "--cluster", "203.0.113.77"]);
    wait_for(Duration::from_secs(3), || {
        a.block("203.0.113.77").is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("A kept the removed block: {:?}", a.blocks()));
    for n in [a, b] {
        let status = n.cluster_status();
        assert_eq!(
            status["connected"], true,
            "a command failed under the ACL: {status}"
        );
        assert!(
            status["redis"]
                .as_str()
                .is_some_and(|u| u.starts_with("rediss://")),
            "{status}"
        );
    }

    // Without the CA the server's certificate is not trusted: the node
    // serves (fail-open) and says why it is not connected.
    let c = XdpNode::start_on(
        "c",
        &format!("198.18.{}", 240 + ((k + 4) % 16)),
        body(false),
    );
    let (status, _) = wait_for(Duration::from_secs(10), || {
        let s = c.node.cluster_status();
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate") || e.contains("UnknownIssuer"))
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("no certificate error: {}", c.node.cluster_status()));
    assert_eq!(status["connected"], false, "{status}");
    assert!(!status.to_string().contains(&user_pw), "{status}");
}
