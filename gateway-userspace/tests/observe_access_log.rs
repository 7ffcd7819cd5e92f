//! The access log: one ECS JSON line per request in the configured file,
//! the credential never in it, and SIGUSR1 reopening the file after a
//! logrotate-style move.

mod observe_support;

use gateway::auth::hash_key;
use observe_support::*;

const KEY: &str = "k3y-s3cret-value-123";

fn config(origin: &Origin) -> String {
    format!(
        "{}\n[auth.api_keys.k]\nquery = \"apikey\"\nkeys = [{{ name = \"client-1\", sha256 = \"{}\" }}]\n\
         [auth.policies.key]\ntype = \"api_key\"\nproviders = [\"k\"]\nstrip_credential = true\n",
        route_to(origin, "auth = \"key\""),
        hash_key(KEY.as_bytes())
    )
}

#[test]
fn request_is_logged_with_ecs_fields_and_without_credentials() {
    let origin = Origin::start_blocking("origin");
    let gw = Gateway::start(&config(&origin));
    let r = get(
        gw.proxy,
        &format!("/orders/7?page=2&apikey={KEY}&access_token=tok"),
        &[("user-agent", "observe-test/1.0"), ("x-api-key", KEY)],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log());
    let bad = get(gw.proxy, "/orders/8", &[("x-api-key", "wrong")]);
    assert_eq!(bad.status, 401);

    let lines = gw.wait_access_lines(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let text = std::fs::read_to_string(&gw.access_log).unwrap();
    assert!(!text.contains(KEY), "credential in the access log: {text}");
    assert!(!text.contains("tok\""), "{text}");

    let ok = &lines[0];
    for field in [
        "@timestamp",
        "client.ip",
        "source.ip",
        "http.request.method",
        "url.path",
        "http.response.status_code",
        "http.version",
        "event.duration",
        "user_agent.original",
        "http.request.id",
        "trace.id",
        "gateway.route",
        "gateway.upstream.target",
        "user.name",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing in {ok}");
    }
    assert_eq!(ok["client.ip"], "127.0.0.1");
    assert_eq!(ok["http.request.method"], "GET");
    assert_eq!(ok["url.path"], "/orders/7");
    assert_eq!(ok["url.query"], "page=2");
    assert_eq!(ok["http.response.status_code"], 200);
    assert_eq!(ok["http.version"], "1.1");
    assert!(ok["event.duration"].as_u64().unwrap() > 0);
    assert_eq!(ok["user_agent.original"], "observe-test/1.0");
    assert_eq!(ok["gateway.route"], "api");
    assert_eq!(ok["gateway.upstream.target"], origin.addr.to_string());
    assert_eq!(ok["user.name"], "client-1");
    assert_eq!(ok["trace.id"].as_str().unwrap().len(), 32);
    assert!(
        r.head.to_ascii_lowercase().contains(&format!(
            "x-request-id: {}",
            ok["http.request.id"].as_str().unwrap()
        )),
        "{}",
        r.head
    );
    assert!(
        humantime::parse_rfc3339(ok["@timestamp"].as_str().unwrap()).is_ok(),
        "{ok}"
    );

    let rejected = &lines[1];
    assert_eq!(rejected["http.response.status_code"], 401);
    assert_eq!(rejected["gateway.reason"], "unauthenticated");
    assert_eq!(rejected["gateway.fault"], "client");
    assert!(rejected.get("user.name").is_none());
    assert!(rejected.get("gateway.upstream.target").is_none());
}

#[test]
fn sigusr1_reopens_the_file_after_rotation() {
    let origin = Origin::start_blocking("origin");
    let gw = Gateway::start(&route_to(&origin, ""));
    assert_eq!(get(gw.proxy, "/a", &[]).status, 200);
    assert_eq!(gw.wait_access_lines(1).len(), 1);
    let rotated = gw.dir.0.join("access.log.1");
    std::fs::rename(&gw.access_log, &rotated).unwrap();
    gw.signal(libc::SIGUSR1);
    wait_until("the access log to be recreated", 5, || {
        gw.access_log.exists()
    });
    assert_eq!(get(gw.proxy, "/b", &[]).status, 200);
    let lines = gw.wait_access_lines(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["url.path"], "/b");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
}

/// A client that goes away before the response is ready leaves a line, as
/// NGINX's 499 does: status 499, `client_closed`, fault `client`, the route,
/// and the request counted in the metrics with that status.
#[test]
fn a_client_that_leaves_before_the_response_is_logged_as_499() {
    use std::io::Write as _;
    // An upstream that accepts connections (the kernel's backlog) and
    // never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let body = format!(
        "[[routes]]\nid = \"hang\"\npath_prefix = \"/\"\nupstream = \"silent\"\n\
         [[upstreams]]\nname = \"silent\"\ntargets = [\"{}\"]\n",
        silent.local_addr().unwrap()
    );
    let gw = Gateway::start(&body);
    let mut c = std::net::TcpStream::connect(gw.proxy).unwrap();
    c.write_all(b"GET /left/early?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: impatient\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(c);
    let lines = gw.wait_access_lines(1);
    let l = &lines[0];
    assert_eq!(l["http.response.status_code"], 499, "{l}");
    assert_eq!(l["url.path"], "/left/early", "{l}");
    assert_eq!(l["gateway.route"], "hang", "{l}");
    assert_eq!(l["gateway.reason"], "client_closed", "{l}");
    let m = parse_metrics(&get(gw.admin, "/metrics", &[]).body);
    // The request counter has status classes: the 499 is a 4xx of its route.
    assert!(
        m.iter()
            .any(|(n, labels, v)| n.starts_with("gateway_http_requests")
                && labels.iter().any(|(k, val)| k == "route" && val == "hang")
                && labels.iter().any(|(k, val)| k == "status" && val == "4xx")
                && *v >= 1.0),
        "the abandoned request is not in the request metrics"
    );
    drop(silent);
}

/// A client that leaves while the rate limiter holds its request back
/// (`mode = "delay"`) is logged as 499 with who it was: the identity the
/// authenticate phase found stays with the request through the rate-limit
/// phase (found in review: the phase once moved it out while it waited).
#[test]
fn a_client_that_leaves_while_throttled_is_logged_with_its_identity() {
    use std::io::Write as _;
    let origin = Origin::start_blocking("origin");
    let body = format!(
        "{}\n[[rate_limit.limits]]\nname = \"slow\"\nrate = \"1r/m\"\nburst = 5\nmode = \"delay\"\nkey = \"identity\"\n",
        config(&origin).replace("auth = \"key\"", "auth = \"key\"\nrate_limits = [\"slow\"]")
    );
    let gw = Gateway::start(&body);
    assert_eq!(get(gw.proxy, "/a", &[("x-api-key", KEY)]).status, 200);
    let mut c = std::net::TcpStream::connect(gw.proxy).unwrap();
    write!(
        c,
        "GET /throttled HTTP/1.1\r\nHost: t\r\nX-Api-Key: {KEY}\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(c);
    let lines = gw.wait_access_lines(2);
    let l = &lines[1];
    assert_eq!(l["http.response.status_code"], 499, "{l}");
    assert_eq!(l["url.path"], "/throttled", "{l}");
    assert_eq!(l["gateway.rate_limit"], "delayed", "{l}");
    assert_eq!(l["user.name"], "client-1", "{l}");
}
