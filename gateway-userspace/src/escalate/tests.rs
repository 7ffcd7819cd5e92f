#![forbid(unsafe_code)]

use std::sync::Arc;

use super::*;

/// Records what the escalator asked the kernel to do.
#[derive(Default)]
struct Recorder {
    blocks: Mutex<Vec<(Net, Duration, String, u32)>>,
    throttles: Mutex<Vec<Net>>,
    allow: Vec<Net>,
}

impl BlockSink for Arc<Recorder> {
    fn block(
        &self,
        net: &Net,
        ttl: Duration,
        reason: &str,
        offences: u32,
    ) -> Result<(), crate::xdp::maps::MapsError> {
        self.blocks
            .lock()
            .push((*net, ttl, reason.to_owned(), offences));
        Ok(())
    }
    fn throttle(
        &self,
        net: &Net,
        _: Duration,
        _: &config::ThrottleSpec,
        _: &str,
        _: u32,
    ) -> Result<(), crate::xdp::maps::MapsError> {
        self.throttles.lock().push(*net);
        Ok(())
    }
    fn allowlisted(&self, ip: &IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(ip))
    }
    fn expire_throttles(&self, _: u64) {}
}

fn escalator(
    tune: impl FnOnce(&mut EscalationSection),
    never: Vec<Net>,
) -> (Escalator, Arc<Recorder>) {
    let mut cfg = EscalationSection {
        threshold: 30,
        ..Default::default()
    };
    cfg.ttl_ladder = vec![Duration::from_millis(50), Duration::from_secs(600)].into();
    tune(&mut cfg);
    let rec = Arc::new(Recorder {
        allow: vec!["192.0.2.200".parse().unwrap()],
        ..Default::default()
    });
    (Escalator::new(cfg, never, Some(Box::new(rec.clone()))), rec)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn crossing_the_threshold_blocks_with_reason_and_ttl() {
    let (e, rec) = escalator(|_| {}, vec![]);
    // auth failures weigh 10: the third crosses 30.
    assert!(
        e.record(ip("192.0.2.1"), Offence::AuthFailure, Seen::Socket)
            .is_none()
    );
    assert!(
        e.record(ip("192.0.2.1"), Offence::RateLimited, Seen::Socket)
            .is_none()
    );
    assert!(
        e.record(ip("192.0.2.1"), Offence::AuthFailure, Seen::Socket)
            .is_none()
    );
    let esc = e
        .record(ip("192.0.2.1"), Offence::AuthFailure, Seen::Socket)
        .expect("escalated");
    assert!(esc.in_kernel);
    assert_eq!(esc.offences, 1);
    assert_eq!(esc.ttl, Duration::from_millis(50));
    let blocks = rec.blocks.lock();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0.to_string(), "192.0.2.1");
    assert_eq!(blocks[0].2, "auth_failure 30, rate_limited 1");
    assert!(
        e.record(ip("192.0.2.2"), Offence::AuthFailure, Seen::Socket)
            .is_none(),
        "others unaffected"
    );
}

#[test]
fn repeat_offences_climb_the_ttl_ladder() {
    let (e, rec) = escalator(|_| {}, vec![]);
    let hit = |n| {
        let mut last = None;
        for _ in 0..n {
            last = e.record(ip("192.0.2.3"), Offence::MalformedHttp, Seen::Socket);
        }
        last
    };
    assert_eq!(hit(2).expect("first").ttl, Duration::from_millis(50));
    // While blocked, offences add nothing.
    assert!(hit(5).is_none());
    std::thread::sleep(Duration::from_millis(80));
    let second = hit(2).expect("second escalation after expiry");
    assert_eq!(second.offences, 2);
    assert_eq!(second.ttl, Duration::from_secs(600));
    assert_eq!(rec.blocks.lock().len(), 2);
}

#[test]
fn allowlisted_and_trusted_sources_are_never_escalated() {
    let (e, rec) = escalator(|_| {}, vec!["10.0.0.0/8".parse().unwrap()]);
    for _ in 0..10 {
        assert!(
            e.record(ip("10.1.2.3"), Offence::MalformedHttp, Seen::Socket)
                .is_none()
        );
        assert!(
            e.record(ip("192.0.2.200"), Offence::MalformedHttp, Seen::Socket)
                .is_none()
        );
    }
    assert!(rec.blocks.lock().is_empty());
}

#[test]
fn forwarded_clients_are_blocked_at_l7_only() {
    let (e, rec) = escalator(|_| {}, vec![]);
    e.record(ip("198.51.100.9"), Offence::MalformedHttp, Seen::Forwarded);
    let esc = e
        .record(ip("198.51.100.9"), Offence::MalformedHttp, Seen::Forwarded)
        .unwrap();
    assert!(!esc.in_kernel);
    assert!(rec.blocks.lock().is_empty(), "nothing written to XDP");
    assert!(e.l7_blocked(ip("198.51.100.9")).is_some());
    assert!(e.l7_blocked(ip("198.51.100.10")).is_none());
}

#[test]
fn ipv6_offenders_are_escalated_as_their_prefix() {
    let (e, rec) = escalator(|_| {}, vec![]);
    e.record(ip("2001:db8:1:2::1"), Offence::MalformedHttp, Seen::Socket);
    let esc = e
        .record(
            ip("2001:db8:1:2::ffff"),
            Offence::MalformedHttp,
            Seen::Socket,
        )
        .unwrap();
    assert_eq!(esc.source.to_string(), "2001:db8:1:2::/64");
    assert_eq!(rec.blocks.lock()[0].0.to_string(), "2001:db8:1:2::/64");
}

#[test]
fn throttle_action_tightens_instead_of_blocking() {
    let (e, rec) = escalator(|c| c.action = Action::Throttle, vec![]);
    e.record(ip("192.0.2.4"), Offence::MalformedHttp, Seen::Socket);
    e.record(ip("192.0.2.4"), Offence::MalformedHttp, Seen::Socket)
        .unwrap();
    assert_eq!(rec.throttles.lock().len(), 1);
    assert!(rec.blocks.lock().is_empty());
}

#[test]
fn memory_is_bounded() {
    let (e, _) = escalator(|c| c.max_sources = 320, vec![]);
    for i in 0..50_000u32 {
        e.record(IpAddr::V4(i.into()), Offence::RateLimited, Seen::Socket);
    }
    assert!(e.tracked() <= 320, "tracked {}", e.tracked());
}

#[test]
fn disabled_escalates_nothing() {
    let (e, rec) = escalator(|c| c.enabled = false, vec![]);
    for _ in 0..10 {
        assert!(
            e.record(ip("192.0.2.5"), Offence::MalformedHttp, Seen::Socket)
                .is_none()
        );
    }
    assert!(rec.blocks.lock().is_empty());
}

#[test]
fn recent_escalations_are_a_bounded_timeline() {
    let (e, _rec) = escalator(
        |c| c.ttl_ladder = vec![Duration::from_secs(600)].into(),
        vec![],
    );
    for _ in 0..4 {
        e.record(ip("192.0.2.9"), Offence::AuthFailure, Seen::Socket);
    }
    let r = e.recent();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].source, "192.0.2.9");
    assert_eq!(r[0].kind, "auth_failure");
    assert_eq!(r[0].points, 30);
    assert_eq!(r[0].reason, "auth_failure 30");
    assert_eq!((r[0].ttl_secs, r[0].offences), (600, 1));
    assert_eq!(r[0].action, "block");
    assert!(r[0].in_kernel && r[0].at_unix > 0);
    // More escalations than the ring holds: the oldest go first.
    let n = RECENT_ESCALATIONS + 10;
    for i in 0..n {
        let a = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
        for _ in 0..3 {
            e.record(a, Offence::MalformedHttp, Seen::Socket);
        }
    }
    let r = e.recent();
    assert_eq!(r.len(), RECENT_ESCALATIONS);
    assert_eq!(
        r.last().unwrap().source,
        format!("10.0.1.{}", (n - 1) % 256)
    );
    assert_eq!(
        r[0].source, "10.0.0.10",
        "the first 11 (192.0.2.9 and 10.0.0.0-9) were dropped"
    );
}
