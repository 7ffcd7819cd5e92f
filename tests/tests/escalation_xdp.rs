//! The edge of this gateway, end to end: a client in a network namespace
//! sends requests with a wrong API key through the real `gateway` binary
//! (XDP attached natively to the host end of a veth pair); once its penalty
//! points cross the threshold, the source lands in the XDP blocklist and its
//! next TCP connection times out in the kernel. The block shows in
//! `gateway block list` with its reason, and expires by itself.

use std::{net::SocketAddr, time::Duration};

use test_support::{
    gateway::Gateway,
    guard::{Link, PinDir},
    node::get_from,
    require_root,
    temp::TempDir,
};

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";

#[test]
fn l7_offences_escalate_into_an_xdp_block_that_expires() {
    if !require_root("l7_offences_escalate_into_an_xdp_block_that_expires") {
        return;
    }
    let sub = (std::process::id() % 80) as u8 * 3 + 2;
    let link = Link::new(&format!("198.18.{sub}"), 2);
    let (ns, veth) = (&link.ns, &link.veth);
    let (host_ip, client_ip, other_ip) = (
        link.host_ip.clone(),
        link.client_ips[0].clone(),
        link.client_ips[1].clone(),
    );

    let pin = PinDir::new();
    let tmp_dir = TempDir::new();
    let tmp = tmp_dir.0.clone();
    let socket = tmp.join("admin.sock");
    let port = 18000 + (std::process::id() % 1000) as u16;
    let demo_port = port + 1000;
    let config = tmp.join("gw.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[xdp]
interface = "{iface}"
mode = "native"
pin_dir = "{pin}"
sweep_interval = "200ms"

[admin]
socket = "{socket}"

[[listeners]]
name = "http"
address = "{host_ip}:{port}"

[demo]
enabled = true
address = "127.0.0.1:{demo_port}"

[[upstreams]]
name = "demo"
targets = ["127.0.0.1:{demo_port}"]

[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"
auth = "key"

[auth.api_keys.k]
keys = [{{ name = "client", sha256 = "{KEY_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[auth.brute_force]
enabled = false

[escalation]
threshold = 50
ttl_ladder = ["3s"]
"#,
            iface = veth.host,
            pin = pin.path.display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
    let gw = Gateway::start(&config, &socket, &tmp.join("gw.log"));
    let addr: SocketAddr = format!("{host_ip}:{port}").parse().unwrap();

    let (a, b) = (client_ip.as_str(), other_ip.as_str());
    assert_eq!(
        get_from(&ns.name, a, addr, "demo-key"),
        Ok(200),
        "{}",
        gw.log_text()
    );
    // Wrong keys weigh 10 points: the fifth reaches the threshold of 50.
    for i in 0..5 {
        assert_eq!(get_from(&ns.name, a, addr, "wrong"), Ok(401), "request {i}");
    }
    // The block is in the XDP map by the time the offending response is
    // read: escalation runs before the response is sent.
    let answered = std::time::Instant::now();
    let listed: serde_json::Value =
        serde_json::from_str(&gw.ok(&["block", "list", "--json"])).unwrap();
    eprintln!(
        "escalation latency: block present {} ms after the crossing response was read (one CLI round trip included)",
        answered.elapsed().as_millis()
    );
    assert_eq!(
        listed[0]["net"],
        client_ip.as_str(),
        "not blocked when the 401 arrived: {listed}"
    );
    let before = gw.counter("dropped_blocklist");
    let r = get_from(&ns.name, a, addr, "demo-key");
    assert!(
        r.is_err(),
        "escalated source still connects: {r:?}\n{}",
        gw.log_text()
    );
    assert!(
        gw.counter("dropped_blocklist") > before,
        "the kernel did not drop"
    );
    assert_eq!(
        get_from(&ns.name, b, addr, "demo-key"),
        Ok(200),
        "another client was hurt"
    );

    let list: serde_json::Value =
        serde_json::from_str(&gw.ok(&["block", "list", "--json"])).unwrap();
    let entry = &list[0];
    assert_eq!(entry["net"], client_ip.as_str());
    assert_eq!(entry["source"], "escalation");
    assert_eq!(entry["offences"], 1);
    assert!(
        entry["reason"].as_str().unwrap().contains("auth_failure"),
        "{entry}"
    );
    assert!(
        entry["ttl_secs_left"].as_u64().is_some_and(|t| t <= 3),
        "{entry}"
    );

    // The TTL passes: access comes back by itself, and the sweeper clears it.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(get_from(&ns.name, a, addr, "demo-key"), Ok(200));
    let list: serde_json::Value =
        serde_json::from_str(&gw.ok(&["block", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}
