//! The dashboard in a real headless browser (Debian's chromium driven
//! through chromedriver with fantoccini): the real `gateway` binary with
//! XDP attached to the host end of a veth pair, a client in the namespace
//! behind it. The page shows a block added with `gateway block add` within
//! 2 s with its TTL, the escalation of the client's bad API keys in the
//! timeline, data points in the verdict chart (the escalated client's
//! packets dropped in the kernel), an upstream whose only target is down
//! as unhealthy, and refuses a write action without the token. A
//! screenshot of the page during the escalation is saved as
//! `target/dashboard.png` (copied by hand to docs/img/dashboard.png).
//!
//! chromium and chromium-driver come from `cargo xtask test` (prereqs);
//! without them the test skips, or fails under `CI=true`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use test_support::{
    gateway::Gateway,
    guard::{Link, PinDir},
    node::get_from,
    require_root,
    temp::TempDir,
    test_port,
};

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";
const TOKEN: &str = "browser-test-token-5f2a9c7e1d";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser packages are installed. Missing: panics under
/// `CI=true` (the test must run there), otherwise skips loudly.
fn require_browser(test: &str) -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{test}: {missing:?} missing and CI=true forbids skipping; \
             install them with `apt-get install chromium chromium-driver` (cargo xtask test does)"
        );
    }
    eprintln!("SKIPPED {test}: {missing:?} missing (apt-get install chromium chromium-driver)");
    false
}

/// chromedriver in its own process group, with the browsers it starts:
/// the whole group is killed by its id on drop (only what this test
/// started: the group id is our child's pid).
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Driver {
    fn start(log: &Path) -> Self {
        let port = test_port();
        let out = std::fs::File::create(log).unwrap();
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .stdin(Stdio::null()),
            0,
        )
        .spawn()
        .expect("chromedriver starts");
        let d = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The process group we created (pgid = our child's pid, not yet
        // reaped, so not reused): chromedriver and the browsers it started.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        // Until the browsers of the group are gone too (bounded: 5 s);
        // signal 0 only checks that the group still has a member.
        for _ in 0..50 {
            // SAFETY: as above, signal 0 sends nothing.
            if unsafe { libc::kill(-pgid, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where cargo puts build output (the screenshot goes next to it).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Evaluates `$check` (an `Option`, may `.await`) every 100 ms until it
/// is `Some`, at most `$limit`; panics naming `$what` otherwise.
macro_rules! within {
    ($limit:expr, $what:expr, $check:expr) => {{
        let deadline = Instant::now() + $limit;
        loop {
            if let Some(v) = $check {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not within {:?}",
                $what,
                $limit
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// `GET /billing/x` (the route to the dead upstream) from `src` in `ns`.
fn billing_from(ns: &str, src: &str, addr: SocketAddr) -> Result<u16, String> {
    let src: std::net::Ipv4Addr = src.parse().unwrap();
    let SocketAddr::V4(dst) = addr else {
        panic!("IPv4 only")
    };
    test_support::netns::in_netns(ns, move || {
        let s = test_support::netns::connect_from(src, dst, Duration::from_millis(1500))
            .map_err(|e| e.to_string())?;
        test_support::node::get_on(s, "/billing/x", "")
    })
}

/// The text of the first element matching `css`, if any.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

#[tokio::test(flavor = "current_thread")]
async fn dashboard_in_a_browser_shows_blocks_escalations_charts_and_health() {
    let name = "dashboard_in_a_browser_shows_blocks_escalations_charts_and_health";
    if !require_root(name) || !require_browser(name) {
        return;
    }
    // 198.18.240-254: apart from the other tests' ranges.
    let link = Link::new(&format!("198.18.{}", 240 + std::process::id() % 15), 2);
    let (host_ip, client_ip, other_ip) = (
        link.host_ip.clone(),
        link.client_ips[0].clone(),
        link.client_ips[1].clone(),
    );
    let pin = PinDir::new();
    let tmp = TempDir::new();
    let socket = tmp.0.join("admin.sock");
    let token_file = tmp.0.join("dashboard.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (port, demo_port, admin_port, dead_port) =
        (test_port(), test_port(), test_port(), test_port());
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let config = tmp.0.join("gw.toml");
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

[log]
access_log = "off"

[observability]
enabled = true
listen = "{admin}"

[observability.dashboard]
write = true
token_file = "{token}"
refresh_interval = "500ms"

[[listeners]]
name = "http"
address = "{host_ip}:{port}"

[demo]
enabled = true
address = "127.0.0.1:{demo_port}"

[[upstreams]]
name = "demo"
targets = ["127.0.0.1:{demo_port}"]

[[upstreams]]
name = "billing"
targets = ["127.0.0.1:{dead_port}"]
[upstreams.health_check]
enabled = true
path = "/healthz"
interval = "200ms"
unhealthy_threshold = 1

[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "demo"
auth = "key"

[[routes]]
id = "billing"
path_prefix = "/billing/"
upstream = "billing"

[auth.api_keys.k]
keys = [{{ name = "client", sha256 = "{KEY_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[auth.brute_force]
enabled = false

[escalation]
threshold = 50
ttl_ladder = ["10m"]
"#,
            iface = link.veth.host,
            pin = pin.path.display(),
            socket = socket.display(),
            token = token_file.display(),
        ),
    )
    .unwrap();
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));
    let addr: SocketAddr = format!("{host_ip}:{port}").parse().unwrap();

    let driver = Driver::start(&tmp.0.join("chromedriver.log"));
    let profile = tmp.0.join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1560", "--hide-scrollbars", "--no-first-run",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}"));

    let run = async {
        c.goto(&format!("http://{admin}/dashboard/")).await.unwrap();
        // The page polled at least once (it sets data-polls on <body>).
        within!(
            Duration::from_secs(10),
            "first poll",
            async {
                let polls = c.find(Locator::Css("body[data-polls]")).await.ok()?;
                polls.attr("data-polls").await.ok()?
            }
            .await
        );

        // Some traffic from the client: a good request, then bad keys until
        // it is escalated (10 points each, threshold 50).
        assert_eq!(
            get_from(&link.ns.name, &client_ip, addr, "demo-key"),
            Ok(200),
            "{}",
            gw.log_text()
        );

        // 1. An operator block appears within 2 s with its TTL.
        gw.ok(&[
            "block",
            "add",
            "192.0.2.77",
            "--ttl",
            "5m",
            "--reason",
            "scanner",
        ]);
        let ttl = within!(
            Duration::from_secs(2),
            "the operator block on the page",
            async { text_of(&c, "#blocks tr[data-net='192.0.2.77'] .ttl").await }.await
        );
        assert!(
            ttl.starts_with("4m") || ttl.starts_with("5m"),
            "TTL shown as {ttl:?}"
        );
        let row = within!(
            Duration::from_secs(5),
            "the operator block's row",
            async { text_of(&c, "#blocks tr[data-net='192.0.2.77']").await }.await
        );
        assert!(row.contains("operator") && row.contains("scanner"), "{row}");

        // 2. Bad API keys escalate the client; the timeline shows it.
        for i in 0..5 {
            assert_eq!(
                get_from(&link.ns.name, &client_ip, addr, "wrong"),
                Ok(401),
                "request {i}"
            );
        }
        let entry = within!(
            Duration::from_secs(5),
            "the escalation in the timeline",
            async { text_of(&c, &format!("#escalations li[data-source='{client_ip}']")).await }
                .await
        );
        assert!(
            entry.contains("auth_failure") && entry.contains("50 points"),
            "{entry}"
        );
        assert!(entry.contains("in the kernel"), "{entry}");
        let blocked = within!(
            Duration::from_secs(5),
            "the escalation block in the list",
            async { text_of(&c, &format!("#blocks tr[data-net='{client_ip}']")).await }.await
        );
        assert!(blocked.contains("escalation"), "{blocked}");

        // 3. Its next packets are dropped in the kernel: the verdict chart
        // has points, and dropped_blocklist goes above zero.
        for _ in 0..3 {
            assert!(get_from(&link.ns.name, &client_ip, addr, "demo-key").is_err());
        }
        within!(Duration::from_secs(10), "dropped packets in the verdict chart", async {
            let v = c
                .execute(
                    "const ch = window.gatewayDashboard.charts.verdicts; if (!ch) return null; \
                     const i = ch.names.indexOf('dropped_blocklist'); \
                     return {points: ch.data[0].length, max: Math.max(0, ...ch.data[i + 1].filter(x => x !== null))};",
                    vec![],
                )
                .await
                .ok()?;
            (v["points"].as_u64()? >= 3 && v["max"].as_f64()? > 0.0).then_some(())
        }
        .await);
        let points: u64 = c
            .find(Locator::Css("#verdict-chart"))
            .await
            .unwrap()
            .attr("data-points")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        assert!(points >= 3);
        // uPlot drew its canvas.
        c.find(Locator::Css("#verdict-chart canvas"))
            .await
            .expect("a chart canvas");

        // Another client keeps being served (a few wrong keys, below the
        // threshold, and calls of the dead upstream), so the traffic charts
        // have something to show.
        let mut served = 0;
        for i in 0..20 {
            let answered = match i % 5 {
                3 => billing_from(&link.ns.name, &other_ip, addr),
                4 => get_from(&link.ns.name, &other_ip, addr, "wrong"),
                _ => get_from(&link.ns.name, &other_ip, addr, "demo-key"),
            };
            if answered.is_ok() {
                served += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served, 20, "the other client was hurt: {}", gw.log_text());
        within!(
            Duration::from_secs(5),
            "requests in the traffic chart",
            async {
                let v = c
                    .execute(
                        "const ch = window.gatewayDashboard.charts.rps; if (!ch) return null; \
                     const i = ch.names.indexOf('2xx'); \
                     return Math.max(0, ...ch.data[i + 1].filter(x => x !== null));",
                        vec![],
                    )
                    .await
                    .ok()?;
                (v.as_f64()? > 0.0).then_some(())
            }
            .await
        );

        // 4. The upstream whose only target is down shows as unhealthy.
        let health = within!(
            Duration::from_secs(10),
            "the dead upstream as unhealthy",
            async {
                let row = c
                    .find(Locator::Css("#upstreams tr[data-upstream='billing']"))
                    .await
                    .ok()?;
                row.attr("data-health")
                    .await
                    .ok()?
                    .filter(|h| h == "unhealthy")
            }
            .await
        );
        assert_eq!(health, "unhealthy");
        // (The tables are re-rendered at each poll: an element found may be
        // stale when read, so each read is retried within a bound.)
        let demo = within!(
            Duration::from_secs(5),
            "the demo upstream's row",
            async {
                let row = c
                    .find(Locator::Css("#upstreams tr[data-upstream='demo']"))
                    .await
                    .ok()?;
                row.attr("data-health").await.ok()?
            }
            .await
        );
        assert_eq!(demo, "healthy");

        // The screenshot for the docs, during the escalation.
        let png = c.screenshot().await.expect("screenshot");
        let shot = target_dir().join("dashboard.png");
        std::fs::write(&shot, png).unwrap();
        eprintln!("dashboard screenshot: {}", shot.display());

        // 5. A write action without the token is refused, and changes nothing.
        c.find(Locator::Css("#block-net"))
            .await
            .unwrap()
            .send_keys("192.0.2.99")
            .await
            .unwrap();
        c.find(Locator::Css("#block-submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let status = within!(
            Duration::from_secs(5),
            "the refusal",
            async {
                text_of(&c, "#action-status")
                    .await
                    .filter(|s| s.contains("refused"))
            }
            .await
        );
        assert!(status.contains("401"), "{status}");
        let list = gw.ok(&["block", "list", "--json"]);
        assert!(
            !list.contains("192.0.2.99"),
            "blocked without the token: {list}"
        );

        // With the token, unblocking from the page works.
        c.find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(TOKEN)
            .await
            .unwrap();
        c.find(Locator::Css("#block-net"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The table is re-rendered at each poll: find and click together.
        within!(
            Duration::from_secs(5),
            "the unblock button",
            async {
                let b = c
                    .find(Locator::Css(
                        "#blocks tr[data-net='192.0.2.77'] button.unblock",
                    ))
                    .await
                    .ok()?;
                b.click().await.ok()
            }
            .await
        );
        within!(
            Duration::from_secs(5),
            "the unblock",
            async {
                let list = gw.ok(&["block", "list", "--json"]);
                (!list.contains("192.0.2.77")).then_some(())
            }
            .await
        );
        assert!(
            gw.log_text().contains("dashboard action applied"),
            "the action is logged: {}",
            gw.log_text()
        );
        assert!(!gw.log_text().contains(TOKEN), "the token is never logged");

        // The page kept polling, and nothing it did broke its CSP
        // (uPlot sets styles through the CSSOM, which CSP allows).
        let page = c
            .execute(
                "const d = window.gatewayDashboard; return {polls: d.polls, csp: d.cspViolations};",
                vec![],
            )
            .await
            .unwrap();
        assert!(page["polls"].as_u64().unwrap() > 3, "{page}");
        assert_eq!(page["csp"], serde_json::json!([]), "CSP violations: {page}");
    };
    run.await;
    let _ = c.close().await;
    drop(driver);
}
