//! Routing, path normalization, rewriting, version headers, 404s, header
//! rewriting both ways and config errors, asserted on what the origin saw.

mod proxy_common;

use gateway::config::Config;
use proxy_common::*;

#[tokio::test]
async fn most_specific_route_wins_and_prefix_is_rewritten() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let toml = format!(
        "{PLAIN}{}{}\
         [[routes]]\nid = \"all\"\npath_prefix = \"/\"\nupstream = \"a\"\n\
         [[routes]]\nid = \"v1\"\npath_prefix = \"/api/v1/\"\nrewrite_prefix = \"/\"\nupstream = \"a\"\n\
         [[routes]]\nid = \"v2\"\npath_prefix = \"/api/v2/\"\nrewrite_prefix = \"/v2/\"\nupstream = \"b\"\n\
         [[routes]]\nid = \"exact\"\npath = \"/api/v1/special\"\nupstream = \"b\"\n",
        upstream("a", &[a.addr], ""),
        upstream("b", &[b.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    assert_eq!(get(addr, "/api/v1/users?x=1", "").await.status, 200);
    assert_eq!(get(addr, "/api/v2/users", "").await.status, 200);
    assert_eq!(get(addr, "/api/v1/special", "").await.status, 200);
    assert_eq!(get(addr, "/other", "").await.status, 200);
    let a_uris: Vec<String> = a.requests().iter().map(|s| s.uri.clone()).collect();
    let b_uris: Vec<String> = b.requests().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(a_uris, ["/users?x=1", "/other"]);
    assert_eq!(b_uris, ["/v2/users", "/api/v1/special"]);
}

#[tokio::test]
async fn dot_segments_cannot_reach_the_admin_route() {
    let (admin, public) = (Origin::start("admin").await, Origin::start("public").await);
    let toml = format!(
        "{PLAIN}{}{}\
         [[routes]]\nid = \"admin\"\npath_prefix = \"/v1/admin/\"\nupstream = \"admin\"\n\
         [[routes]]\nid = \"public\"\npath_prefix = \"/v1/\"\nupstream = \"public\"\n",
        upstream("admin", &[admin.addr], ""),
        upstream("public", &[public.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    for path in [
        "/v1/admin/../public",
        "/v1/admin/%2e%2e/public",
        "/v1/admin/%2E%2E/public",
        "//v1//admin/./../public",
    ] {
        assert_eq!(get(addr, path, "").await.status, 200, "{path}");
    }
    assert!(admin.requests().is_empty());
    let uris: Vec<String> = public.requests().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, vec!["/v1/public"; 4]);
    // And the reverse: a path that normalizes *into* the admin prefix goes there.
    assert_eq!(get(addr, "/v1/x/../admin/users", "").await.status, 200);
    assert_eq!(admin.requests()[0].uri, "/v1/admin/users");
}

#[tokio::test]
async fn version_header_selects_the_route() {
    let (v1, v2) = (Origin::start("v1").await, Origin::start("v2").await);
    let toml = format!(
        "{PLAIN}{}{}\
         [[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = \"v1\"\n\
         [[routes]]\nid = \"api-v2\"\npath_prefix = \"/api/\"\nheaders = {{ accept-version = \"2\" }}\nupstream = \"v2\"\n",
        upstream("v1", &[v1.addr], ""),
        upstream("v2", &[v2.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    get(addr, "/api/x", "Accept-Version: 2\r\n").await;
    get(addr, "/api/y", "Accept-Version: 1\r\n").await;
    get(addr, "/api/z", "").await;
    assert_eq!(v2.requests().len(), 1);
    assert_eq!(v2.requests()[0].uri, "/api/x");
    assert_eq!(v1.requests().len(), 2);
}

#[tokio::test]
async fn no_route_is_a_problem_json_404_never_forwarded() {
    let origin = Origin::start("o").await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nhost = \"api.example.com\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    let r = get(addr, "/api/x", "").await; // Host: test.local
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["status"], 404);
    assert_eq!(doc["type"], "urn:gateway:problem:no_route");
    assert!(r.header("content-security-policy").is_some());
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert!(origin.seen().is_empty());
    // The same path with the right host is forwarded.
    let req = "GET /api/x HTTP/1.1\r\nHost: API.example.com:8080\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(addr, req.as_bytes()).await.status, 200);
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let origin = Origin::start("o").await;
    let toml = format!(
        "{PLAIN}{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let (_p, addr) = proxy(&toml).await;
    let req = "GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close, X-Client-Hop\r\n\
               X-Client-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
               Proxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n\r\n";
    let r = raw(addr, req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let seen = &origin.requests()[0].headers;
    for h in ["x-client-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(!seen.contains_key(h), "{h} reached the origin");
    }
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["host"], "test.local");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "test.local");
    assert_eq!(
        seen["forwarded"],
        "for=127.0.0.1;proto=http;host=\"test.local\""
    );
    // Response side: identifying and hop-by-hop headers removed.
    for h in ["server", "x-powered-by", "x-origin-hop", "keep-alive"] {
        assert!(r.header(h).is_none(), "{h} reached the client: {}", r.head);
    }
    assert_eq!(r.header("x-origin").as_deref(), Some("o"));
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
    assert!(
        r.header("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
    let id = r.header("x-request-id").unwrap();
    assert_eq!(seen["x-request-id"], id.as_str());
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_peers() {
    let origin = Origin::start("o").await;
    let routes = format!(
        "{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let spoof = "X-Forwarded-For: 6.6.6.6\r\nX-Request-Id: client-chosen-id\r\n";

    let (_p, addr) = proxy(&format!("{PLAIN}{routes}")).await;
    get(addr, "/", spoof).await;
    let seen = &origin.requests()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_ne!(seen["x-request-id"], "client-chosen-id");

    let trusted = format!("trusted_proxies = [\"127.0.0.0/8\"]\n{PLAIN}{routes}");
    let (_p2, addr2) = proxy(&trusted).await;
    get(addr2, "/", spoof).await;
    let seen = &origin.requests()[1].headers;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-request-id"], "client-chosen-id");
}

#[test]
fn config_errors_name_file_line_and_route() {
    let err = |t: &str| Config::parse(t, "gw.toml").unwrap_err().to_string();
    let up = "[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n";

    let e = err(&format!(
        "{up}[[routes]]\nid = \"r1\"\npath_prefix = \"/\"\nupstream = \"nope\"\n"
    ));
    assert!(e.starts_with("gw.toml:7:"), "{e}");
    assert!(e.contains("route 'r1' uses upstream 'nope'"), "{e}");

    let e = err(&format!(
        "{up}[[routes]]\nid = \"a\"\npath_prefix = \"/x/\"\nupstream = \"u\"\n\
         [[routes]]\nid = \"b\"\npath_prefix = \"/x/\"\nupstream = \"u\"\n"
    ));
    assert!(e.starts_with("gw.toml:9:"), "{e}");
    assert!(e.contains("routes 'a' and 'b'"), "{e}");

    // Disjoint methods or conflicting header values are not ties.
    let ok = format!(
        "{up}[[routes]]\nid = \"a\"\npath = \"/x\"\nmethods = [\"GET\"]\nupstream = \"u\"\n\
         [[routes]]\nid = \"b\"\npath = \"/x\"\nmethods = [\"POST\"]\nupstream = \"u\"\n"
    );
    Config::parse(&ok, "gw.toml").unwrap();

    let e = err(&format!(
        "{up}[[routes]]\nid = \"r\"\npath_prefix = \"/a/../b/\"\nupstream = \"u\"\n"
    ));
    assert!(
        e.starts_with("gw.toml:6:") && e.contains("not normalized"),
        "{e}"
    );
    let e = err("[[listeners]]\naddress = \"127.0.0.1:99999\"\n");
    assert!(e.starts_with("gw.toml:2:"), "{e}");
    let e = err(&format!(
        "{up}[upstreams.health_check]\ninterval = \"soon\"\n"
    ));
    assert!(
        e.starts_with("gw.toml:5:") && e.contains("not a duration"),
        "{e}"
    );
    let e = err("[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n");
    assert!(e.contains("TLS listener needs"), "{e}");
}

#[test]
fn protected_ports_default_to_the_listener_ports() {
    let c = Config::parse(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]\naddress = \"[::1]:8080\"\n\
         [[listeners]]\naddress = \"127.0.0.1:8443\"\n",
        "t",
    )
    .unwrap();
    let ports: Vec<u16> = c.xdp.protected_ports.iter().map(|p| p.get()).collect();
    assert_eq!(ports, [8080, 8443]);
    let c = Config::embedded_default();
    let ports: Vec<u16> = c.xdp.protected_ports.iter().map(|p| p.get()).collect();
    assert_eq!(ports, [8080, 8081, 8443]);
    assert!(c.demo.enabled);
}

#[tokio::test]
async fn proxy_protocol_source_is_the_client_from_a_trusted_peer() {
    let origin = Origin::start("o").await;
    let routes = format!(
        "{}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
        upstream("o", &[origin.addr], "")
    );
    let listener =
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n";
    let (_p, addr) = proxy(&format!(
        "trusted_proxies = [\"127.0.0.1\"]\n{listener}{routes}"
    ))
    .await;
    let req = "PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(addr, req.as_bytes()).await.status, 200);
    assert_eq!(origin.requests()[0].headers["x-forwarded-for"], "192.0.2.7");

    // From an untrusted peer the connection is refused outright.
    let (_p2, addr2) = proxy(&format!("{listener}{routes}")).await;
    assert_eq!(raw(addr2, req.as_bytes()).await.status, 0);
    assert_eq!(origin.requests().len(), 1);
}
