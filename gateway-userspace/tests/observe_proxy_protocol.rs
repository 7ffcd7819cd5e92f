//! Behind an L4 load balancer (PROXY protocol): the access log tells the
//! client (`client.ip`) from the TCP peer (`source.ip`), and an offender
//! known only from the PROXY header is blocked at L7, never written into
//! the kernel blocklist (its packets come from the balancer).

mod proxy_common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway::{
    config::Config,
    escalate::{BlockSink, Escalator, config::ThrottleSpec},
    net::Net,
    observe::{AccessLog, LogSection, Observe, config::AccessLogTarget},
    phases::build_engines,
    proxy::Proxy,
};
use proxy_common::{Origin, raw, upstream};

/// Records kernel blocks the escalator asks for.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Net>>>);

impl BlockSink for Recorder {
    fn block(
        &self,
        net: &Net,
        _: Duration,
        _: &str,
        _: u32,
    ) -> Result<(), gateway::xdp::maps::MapsError> {
        self.0.lock().unwrap().push(*net);
        Ok(())
    }
    fn throttle(
        &self,
        net: &Net,
        _: Duration,
        _: &ThrottleSpec,
        _: &str,
        _: u32,
    ) -> Result<(), gateway::xdp::maps::MapsError> {
        self.0.lock().unwrap().push(*net);
        Ok(())
    }
    fn allowlisted(&self, _: &std::net::IpAddr) -> bool {
        false
    }
    fn expire_throttles(&self, _: u64) {}
}

#[tokio::test]
async fn proxied_clients_are_logged_apart_from_the_balancer_and_blocked_at_l7() {
    let origin = Origin::start("o").await;
    let toml = format!(
        "trusted_proxies = [\"127.0.0.1\"]\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         {}[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n\
         [escalation]\nthreshold = 1\nttl_ladder = [\"1h\"]\n[xdp]\nenabled = false\n",
        upstream("o", &[origin.addr], "")
    );
    let config = Config::parse(&toml, "t.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let dir = std::env::temp_dir().join(format!("gw-observe-pp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("access.log");
    let section = LogSection {
        access_log: AccessLogTarget::File(log_path.clone()),
        ..LogSection::default()
    };
    let rec = Recorder::default();
    let esc = Arc::new(Escalator::new(
        config.escalation.clone(),
        vec![],
        Some(Box::new(rec.clone())),
    ));
    let mut engines =
        build_engines(&config, std::path::Path::new("."), Some(esc.clone()), None).unwrap();
    let access_log = Arc::new(AccessLog::open(&section, &[]).unwrap());
    engines.observe = Observe {
        access_log: access_log.clone(),
        ..Observe::default()
    };
    let proxy = Proxy::start(&config, engines).await.unwrap();
    let addr = proxy.local_addr("main").unwrap();

    let pp = "PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\n";
    let ok = format!("{pp}GET /a?q=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(addr, ok.as_bytes()).await.status, 200);
    // Content-Length with Transfer-Encoding: malformed HTTP, one offence.
    let bad = format!(
        "{pp}POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    assert_eq!(raw(addr, bad.as_bytes()).await.status, 400);

    assert_eq!(
        esc.escalations_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        rec.0.lock().unwrap().is_empty(),
        "a PROXY-protocol client went into the kernel blocklist"
    );
    assert!(esc.l7_blocked("192.0.2.7".parse().unwrap()).is_some());
    assert_eq!(raw(addr, ok.as_bytes()).await.status, 429, "blocked at L7");

    access_log.flush();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["client.ip"], "192.0.2.7");
    assert_eq!(
        first["source.ip"], "127.0.0.1",
        "the balancer, not the client"
    );
    assert_eq!(first["url.query"], "q=1");
    std::fs::remove_dir_all(&dir).ok();
}
