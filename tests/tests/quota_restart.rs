//! Quota counts across a restart of the real `gateway` process: the key's
//! plan allows 5 requests a month; 3 before a SIGTERM, 2 after the restart,
//! then 429. The counts come back from `[rate_limit] quota_state` (a path
//! relative to the config file's directory), which the background writer
//! and the shutdown save keep; `gateway quota get|reset` work on the
//! running gateway. No root, no Redis needed.

use test_support::{gateway::Gateway, node::get, temp::TempDir};

fn config(dir: &TempDir, port: u16, demo: u16) -> std::path::PathBuf {
    let path = dir.0.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[xdp]
enabled = false

[admin]
socket = "{socket}"

[log]
access_log = "off"

[[listeners]]
name = "http"
address = "127.0.0.1:{port}"

[demo]
enabled = true
address = "127.0.0.1:{demo}"

[[upstreams]]
name = "demo"
targets = ["127.0.0.1:{demo}"]

[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"
auth = "key"

[auth.api_keys.k]
keys = [{{ name = "client", sha256 = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c", plan = "free" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[rate_limit]
quota_state = "state/quota.json"

[[rate_limit.plans]]
name = "free"
quota = "5/month"

[escalation]
enabled = false
"#,
            socket = dir.0.join("admin.sock").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn quota_counts_survive_a_restart_of_the_gateway_process() {
    let dir = TempDir::new();
    let (port, demo) = (test_support::test_port(), test_support::test_port());
    let cfg = config(&dir, port, demo);
    let socket = dir.0.join("admin.sock");
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let key = "X-Api-Key: demo-key\r\n";

    let mut gw = Gateway::start(&cfg, &socket, &dir.0.join("first.log"));
    for i in 0..3 {
        assert_eq!(get(http, "/api/x", key), Ok(200), "request {i}");
    }
    let status = gw
        .process
        .terminate()
        .expect("the gateway exits on SIGTERM");
    assert!(status.success(), "exit {status}:\n{}", gw.log_text());
    drop(gw);
    let state = dir.0.join("state/quota.json");
    let text = std::fs::read_to_string(&state).expect("quota state written");
    assert!(text.contains("\"used\":3"), "{text}");

    let gw = Gateway::start(&cfg, &socket, &dir.0.join("second.log"));
    for i in 0..2 {
        assert_eq!(
            get(http, "/api/x", key),
            Ok(200),
            "request {i} after restart"
        );
    }
    assert_eq!(
        get(http, "/api/x", key),
        Ok(429),
        "the restart forgot the count:\n{}",
        gw.log_text()
    );
    let got: serde_json::Value =
        serde_json::from_str(&gw.ok(&["quota", "get", "client", "--json"])).unwrap();
    assert_eq!(got["quotas"][0]["used"], 5, "{got}");
    assert_eq!(got["quotas"][0]["limit"], 5, "{got}");
    let out = gw.ok(&["quota", "reset", "client"]);
    assert!(out.contains("1 count(s)"), "{out}");
    assert_eq!(get(http, "/api/x", key), Ok(200));
    // An unknown quota name is a clear error, not a silent no-op.
    let bad = gw.cli(&["quota", "reset", "client", "--quota", "plan:gold"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no quota named 'plan:gold'"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
