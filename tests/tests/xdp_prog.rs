//! BPF_PROG_TEST_RUN tests of the real compiled XDP program on crafted
//! frames: parsing (VLAN, IPv4 options, IPv6 extension headers, truncation),
//! the decision order (allowlist, blocklist with expiry, rate limits on
//! protected ports only) and the counters. Time-dependent behaviour is driven
//! by writing the bucket state and block expiries into the maps.

use std::num::NonZeroU16;

use gateway::{
    config::{LimitSpec, XdpSection},
    net::Net,
    xdp::{Loader, XdpMaps, apply::apply, clock, loader::LoadedXdp, maps::source_key},
};
use gateway_common::{
    acl::{BlockEntry, BlockSource},
    config::Limit,
    ratelimit::{Buckets, LimitOverride},
    stats::Reason,
};
use tests::{
    frames::{Frame, TCP_ACK, TCP_SYN, arp},
    guard::PinDir,
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PORT: u16 = 8080;

struct Harness {
    prog: LoadedXdp,
    maps: XdpMaps,
    _pin: PinDir,
}

/// Loads the program with maps pinned in a fresh directory; `tune` adjusts
/// the `[xdp]` section before it is written into the maps.
fn harness(test: &str, tune: impl FnOnce(&mut XdpSection)) -> Option<Harness> {
    if !require_root(test) {
        return None;
    }
    let pin = PinDir::new();
    let (prog, mut maps) = Loader::new(&pin.path)
        .load()
        .expect("program loads and passes the verifier");
    let mut section = XdpSection {
        protected_ports: vec![NonZeroU16::new(PORT).unwrap()],
        ..XdpSection::default()
    };
    // Generous defaults so only the tests that want limits hit them.
    section.rate_limit.pps = LimitSpec::new(1_000_000, 1_000_000).unwrap();
    section.rate_limit.syn = LimitSpec::new(1_000_000, 1_000_000).unwrap();
    tune(&mut section);
    apply(&mut maps, &section).expect("config written to maps");
    Some(Harness {
        prog,
        maps,
        _pin: pin,
    })
}

impl Harness {
    fn run(&self, frame: &[u8]) -> u32 {
        self.prog.test_run(frame, 1).expect("BPF_PROG_TEST_RUN").0
    }

    fn count(&self, reason: Reason) -> u64 {
        self.maps
            .counters()
            .unwrap()
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| c.packets)
            .unwrap()
    }

    fn block(&mut self, net: &str, expires_ns: u64) {
        let entry = BlockEntry {
            expires_ns,
            created_unix: 0,
            source: BlockSource::Operator as u32,
            offences: 1,
            reason: [0; 48],
        };
        self.maps
            .block_add(&net.parse::<Net>().unwrap(), entry)
            .unwrap();
    }
}

fn tcp(src: &str) -> Vec<u8> {
    Frame::tcp(src, PORT, TCP_ACK).build()
}

#[test]
fn plain_ipv4_and_ipv6_pass_and_count() {
    let Some(h) = harness("plain_ipv4_and_ipv6_pass_and_count", |_| {}) else {
        return;
    };
    assert_eq!(h.run(&tcp("192.0.2.1")), XDP_PASS);
    assert_eq!(h.run(&tcp("2001:db8::7")), XDP_PASS);
    assert_eq!(h.run(&Frame::udp("192.0.2.1", 53).build()), XDP_PASS);
    assert_eq!(h.count(Reason::Passed), 3);
    assert_eq!(h.count(Reason::ParsePass), 0);
}

#[test]
fn arp_and_other_non_ip_pass_as_parse_pass() {
    let Some(h) = harness("arp_and_other_non_ip_pass_as_parse_pass", |_| {}) else {
        return;
    };
    assert_eq!(h.run(&arp()), XDP_PASS);
    assert_eq!(h.count(Reason::ParsePass), 1);
    assert_eq!(h.count(Reason::Passed), 0);
}

#[test]
fn blocked_exact_v4_and_v6_drop_everything_from_the_source() {
    let Some(mut h) = harness("blocked_exact", |_| {}) else {
        return;
    };
    h.block("192.0.2.9", 0);
    h.block("2001:db8::9", 0);
    assert_eq!(h.run(&tcp("192.0.2.9")), XDP_DROP);
    assert_eq!(
        h.run(&Frame::udp("192.0.2.9", 53).build()),
        XDP_DROP,
        "any port"
    );
    assert_eq!(h.run(&tcp("2001:db8::9")), XDP_DROP);
    assert_eq!(h.run(&tcp("192.0.2.10")), XDP_PASS, "neighbour untouched");
    assert_eq!(h.run(&tcp("2001:db8::a")), XDP_PASS);
    assert_eq!(h.count(Reason::DroppedBlocklist), 3);
    let top = h.maps.top_dropped(10).unwrap();
    assert_eq!(top[0].0.to_string(), "192.0.2.9");
    assert_eq!(top[0].1.packets, 2);
    assert_eq!(top[0].1.last_reason, Reason::DroppedBlocklist as u32);
}

#[test]
fn blocked_cidr_v4_and_v6() {
    let Some(mut h) = harness("blocked_cidr", |_| {}) else {
        return;
    };
    h.block("198.51.100.0/24", 0);
    h.block("2001:db8:bad::/48", 0);
    assert_eq!(h.run(&tcp("198.51.100.77")), XDP_DROP);
    assert_eq!(h.run(&tcp("198.51.101.1")), XDP_PASS);
    assert_eq!(h.run(&tcp("2001:db8:bad:1::5")), XDP_DROP);
    assert_eq!(h.run(&tcp("2001:db8:bae::5")), XDP_PASS);
}

#[test]
fn expired_block_no_longer_drops() {
    let Some(mut h) = harness("expired_block_no_longer_drops", |_| {}) else {
        return;
    };
    let now = clock::monotonic_ns();
    h.block("192.0.2.20", now - 1);
    h.block("192.0.2.21", now + 3_600_000_000_000);
    h.block("203.0.113.0/24", now - 1);
    assert_eq!(h.run(&tcp("192.0.2.20")), XDP_PASS, "expired exact block");
    assert_eq!(h.run(&tcp("203.0.113.5")), XDP_PASS, "expired CIDR block");
    assert_eq!(
        h.run(&tcp("192.0.2.21")),
        XDP_DROP,
        "block with future expiry"
    );
    // The sweeper removes exactly the expired ones.
    let swept = h.maps.sweep_expired(clock::monotonic_ns()).unwrap();
    let mut nets: Vec<String> = swept.iter().map(|(n, _)| n.to_string()).collect();
    nets.sort();
    assert_eq!(nets, ["192.0.2.20", "203.0.113.0/24"]);
    assert_eq!(h.maps.block_list().unwrap().len(), 1);
}

#[test]
fn allowlist_beats_blocklist_and_rate_limits() {
    let Some(mut h) = harness("allowlist_beats_blocklist", |s| {
        s.allow = vec![
            "192.0.2.0/28".parse().unwrap(),
            "2001:db8:1::/64".parse().unwrap(),
        ];
        s.rate_limit.pps = LimitSpec::new(1, 1).unwrap();
    }) else {
        return;
    };
    h.block("192.0.2.3", 0);
    h.block("2001:db8:1::3", 0);
    for _ in 0..5 {
        assert_eq!(h.run(&tcp("192.0.2.3")), XDP_PASS);
    }
    assert_eq!(h.run(&tcp("2001:db8:1::3")), XDP_PASS);
    assert_eq!(h.count(Reason::Allowlisted), 6);
    assert_eq!(h.count(Reason::DroppedBlocklist), 0);
}

#[test]
fn pps_bucket_exhausts_and_refills() {
    let Some(mut h) = harness("pps_bucket_exhausts_and_refills", |s| {
        // 1 packet/s with a burst of 3: the 4th back-to-back packet drops.
        s.rate_limit.pps = LimitSpec::new(1, 3).unwrap();
    }) else {
        return;
    };
    let f = tcp("192.0.2.30");
    for i in 0..3 {
        assert_eq!(h.run(&f), XDP_PASS, "packet {i} within burst");
    }
    assert_eq!(h.run(&f), XDP_DROP, "over the burst");
    assert_eq!(
        h.run(&tcp("192.0.2.31")),
        XDP_PASS,
        "other source has its own bucket"
    );
    // Time passing is simulated by moving the bucket's TAT into the past.
    let key = source_key("192.0.2.30".parse().unwrap());
    let b = h.maps.bucket(&key).unwrap().expect("bucket exists");
    assert!(b.pps_tat > 0);
    h.maps
        .set_bucket(
            &key,
            Buckets {
                pps_tat: 0,
                syn_tat: b.syn_tat,
            },
        )
        .unwrap();
    assert_eq!(h.run(&f), XDP_PASS, "refilled");
    assert_eq!(h.count(Reason::DroppedPps), 1);
    assert_eq!(
        h.maps.top_dropped(1).unwrap()[0].1.last_reason,
        Reason::DroppedPps as u32
    );
}

#[test]
fn syn_limit_drops_new_connections_only() {
    let Some(h) = harness("syn_limit_drops_new_connections_only", |s| {
        s.rate_limit.syn = LimitSpec::new(1, 2).unwrap();
    }) else {
        return;
    };
    let syn = Frame::tcp("192.0.2.40", PORT, TCP_SYN).build();
    let synack = Frame::tcp("192.0.2.40", PORT, TCP_SYN | TCP_ACK).build();
    assert_eq!(h.run(&syn), XDP_PASS);
    assert_eq!(h.run(&syn), XDP_PASS);
    assert_eq!(h.run(&syn), XDP_DROP, "third SYN over burst 2");
    assert_eq!(h.run(&synack), XDP_PASS, "SYN+ACK is not a new connection");
    assert_eq!(
        h.run(&tcp("192.0.2.40")),
        XDP_PASS,
        "established traffic flows"
    );
    assert_eq!(h.count(Reason::DroppedSyn), 1);
}

#[test]
fn non_protected_port_is_never_rate_limited() {
    let Some(h) = harness("non_protected_port_is_never_rate_limited", |s| {
        s.rate_limit.pps = LimitSpec::new(1, 1).unwrap();
        s.rate_limit.syn = LimitSpec::new(1, 1).unwrap();
    }) else {
        return;
    };
    for _ in 0..20 {
        assert_eq!(
            h.run(&Frame::tcp("192.0.2.50", 22, TCP_SYN).build()),
            XDP_PASS
        );
    }
    assert_eq!(
        h.run(&Frame::tcp("192.0.2.50", PORT, TCP_SYN).build()),
        XDP_PASS
    );
    assert_eq!(
        h.run(&Frame::tcp("192.0.2.50", PORT, TCP_SYN).build()),
        XDP_DROP
    );
    // ICMP has no port: never rate limited.
    let mut icmp = Frame::tcp("192.0.2.50", 0, 0);
    icmp.l4 = tests::frames::L4::Icmp;
    assert_eq!(h.run(&icmp.build()), XDP_PASS);
}

#[test]
fn rate_limit_flag_off_means_acl_only() {
    let Some(h) = harness("rate_limit_flag_off_means_acl_only", |s| {
        s.rate_limit.enabled = false;
        s.rate_limit.pps = LimitSpec::new(1, 1).unwrap();
    }) else {
        return;
    };
    for _ in 0..5 {
        assert_eq!(h.run(&tcp("192.0.2.55")), XDP_PASS);
    }
}

#[test]
fn per_source_overrides_apply_and_zero_means_unlimited() {
    let Some(mut h) = harness("per_source_overrides", |s| {
        s.rate_limit.pps = LimitSpec::new(1, 1).unwrap();
    }) else {
        return;
    };
    let unlimited = LimitOverride {
        pps: Limit { rate: 0, burst: 0 },
        syn: Limit { rate: 0, burst: 0 },
    };
    h.maps
        .limit_set(&"192.0.2.60".parse().unwrap(), unlimited)
        .unwrap();
    let wider = LimitOverride {
        pps: Limit { rate: 1, burst: 5 },
        syn: Limit { rate: 0, burst: 0 },
    };
    h.maps
        .limit_set(&"10.9.0.0/16".parse().unwrap(), wider)
        .unwrap();
    for _ in 0..10 {
        assert_eq!(h.run(&tcp("192.0.2.60")), XDP_PASS, "unlimited override");
    }
    for i in 0..5 {
        assert_eq!(
            h.run(&tcp("10.9.3.4")),
            XDP_PASS,
            "packet {i} within override burst 5"
        );
    }
    assert_eq!(h.run(&tcp("10.9.3.4")), XDP_DROP);
    assert_eq!(h.run(&tcp("192.0.2.61")), XDP_PASS);
    assert_eq!(h.run(&tcp("192.0.2.61")), XDP_DROP, "default burst 1");
}

#[test]
fn ipv6_sources_share_a_bucket_per_prefix() {
    let Some(h) = harness("ipv6_sources_share_a_bucket_per_prefix", |s| {
        s.rate_limit.pps = LimitSpec::new(1, 2).unwrap();
    }) else {
        return;
    };
    assert_eq!(h.run(&tcp("2001:db8:5:1::a")), XDP_PASS);
    assert_eq!(h.run(&tcp("2001:db8:5:1::b")), XDP_PASS);
    assert_eq!(
        h.run(&tcp("2001:db8:5:1:ffff::c")),
        XDP_DROP,
        "same /64 shares the bucket"
    );
    assert_eq!(
        h.run(&tcp("2001:db8:5:2::a")),
        XDP_PASS,
        "another /64 has its own"
    );
}

#[test]
fn ipv4_options_and_vlan_tags_are_parsed_through() {
    let Some(mut h) = harness("ipv4_options_and_vlan_tags", |s| {
        s.rate_limit.syn = LimitSpec::new(1, 1).unwrap();
    }) else {
        return;
    };
    h.block("192.0.2.70", 0);
    let frames = [
        Frame::tcp("192.0.2.70", PORT, 0).options(12),
        Frame::tcp("192.0.2.70", PORT, 0).options(40),
        Frame::tcp("192.0.2.70", PORT, 0).vlan(0x8100, 10),
        Frame::tcp("192.0.2.70", PORT, 0)
            .vlan(0x88a8, 100)
            .vlan(0x8100, 10),
        Frame::tcp("2001:db8::70", PORT, 0).vlan(0x8100, 10),
    ];
    h.block("2001:db8::70", 0);
    for f in &frames {
        assert_eq!(h.run(&f.build()), XDP_DROP, "{f:?}");
    }
    // The transport port is found behind options and tags: the SYN limit
    // (burst 1) on the protected port applies.
    for f in [
        Frame::tcp("192.0.2.71", PORT, TCP_SYN).options(40),
        Frame::tcp("192.0.2.72", PORT, TCP_SYN)
            .vlan(0x88a8, 1)
            .vlan(0x8100, 2),
        Frame::tcp("2001:db8:71::1", PORT, TCP_SYN)
            .ext(0)
            .ext(60)
            .ext(44),
    ] {
        assert_eq!(h.run(&f.build()), XDP_PASS, "first SYN {f:?}");
        assert_eq!(h.run(&f.build()), XDP_DROP, "second SYN {f:?}");
    }
}

#[test]
fn truncated_at_every_boundary_passes() {
    let Some(h) = harness("truncated_at_every_boundary_passes", |s| {
        s.rate_limit.pps = LimitSpec::new(1, 1000).unwrap();
    }) else {
        return;
    };
    let frames = [
        Frame::tcp("192.0.2.80", PORT, TCP_SYN).options(8),
        Frame::udp("192.0.2.80", PORT),
        Frame::tcp("2001:db8::80", PORT, TCP_SYN).ext(0).ext(43),
        Frame::tcp("192.0.2.80", PORT, TCP_SYN)
            .vlan(0x88a8, 1)
            .vlan(0x8100, 2),
    ];
    for f in &frames {
        let full = f.build();
        // The kernel's test runner needs at least an Ethernet header.
        for len in 14..full.len() {
            assert_eq!(h.run(&full[..len]), XDP_PASS, "{f:?} cut at {len}");
        }
    }
    assert!(h.count(Reason::ParsePass) > 0);
    assert_eq!(h.count(Reason::DroppedPps) + h.count(Reason::DroppedSyn), 0);
}

#[test]
fn truncated_transport_from_a_blocked_source_is_still_dropped() {
    let Some(mut h) = harness("truncated_transport_from_blocked", |_| {}) else {
        return;
    };
    h.block("192.0.2.90", 0);
    let full = tcp("192.0.2.90");
    // Ethernet (14) + IPv4 (20) + 4 bytes of TCP: the source is known.
    assert_eq!(h.run(&full[..38]), XDP_DROP);
    // Cut inside the IPv4 header: nothing is known, pass.
    assert_eq!(h.run(&full[..30]), XDP_PASS);
}

#[test]
fn counters_count_bytes_per_reason() {
    let Some(mut h) = harness("counters_count_bytes_per_reason", |_| {}) else {
        return;
    };
    h.block("192.0.2.95", 0);
    let f = Frame::tcp("192.0.2.95", PORT, 0).payload(100).build();
    h.run(&f);
    h.run(&f);
    let (_, c) = h
        .maps
        .counters()
        .unwrap()
        .into_iter()
        .find(|(r, _)| *r == Reason::DroppedBlocklist)
        .unwrap();
    assert_eq!(c.packets, 2);
    assert_eq!(c.bytes, 2 * f.len() as u64);
}

/// Not an assertion on time: prints the kernel's ns/packet for each path
/// (the numbers quoted in the docs come from `cargo xtask bench`).
#[test]
fn prints_ns_per_packet() {
    let Some(mut h) = harness("prints_ns_per_packet", |s| {
        s.rate_limit.pps = LimitSpec::new(1, 1).unwrap();
    }) else {
        return;
    };
    h.block("192.0.2.100", 0);
    h.block("198.51.100.0/24", 0);
    h.run(&tcp("192.0.2.102")); // exhaust its bucket (burst 1)
    let cases = [
        (
            "pass (allowlist miss, bucket ok)",
            Frame::tcp("192.0.2.101", 22, TCP_ACK).build(),
            XDP_PASS,
        ),
        ("drop blocklist exact", tcp("192.0.2.100"), XDP_DROP),
        ("drop blocklist cidr", tcp("198.51.100.1"), XDP_DROP),
        ("drop pps limit", tcp("192.0.2.102"), XDP_DROP),
    ];
    let (v, d) = h
        .prog
        .test_run_baseline(&tcp("192.0.2.101"), 200_000)
        .unwrap();
    assert_eq!(v, XDP_PASS);
    eprintln!(
        "empty program (harness baseline): {} ns/packet",
        d.as_nanos()
    );
    for (name, frame, verdict) in cases {
        let (v, d) = h.prog.test_run(&frame, 200_000).unwrap();
        assert_eq!(v, verdict, "{name}");
        eprintln!("{name}: {} ns/packet", d.as_nanos());
    }
}
