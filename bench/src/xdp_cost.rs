//! Scenario 1: the XDP program's cost per packet, from BPF_PROG_TEST_RUN
//! (the kernel's own average over `repeat` runs, best of several), for the
//! pass path and each drop path, with small and large maps, beside an empty
//! XDP program measured in the same run (the harness's own cost).

use std::{net::Ipv4Addr, num::NonZeroU16};

use gateway::{
    config::{LimitSpec, XdpSection},
    net::Net,
    xdp::{Loader, apply::apply},
};
use gateway_common::{
    acl::{BlockEntry, BlockSource},
    config::Limit,
};
use serde_json::{Value, json};

use super::{Opts, Progress};
use test_support::{
    frames::{Frame, TCP_ACK},
    guard::PinDir,
};

const PORT: u16 = 8080;

fn entry() -> BlockEntry {
    BlockEntry {
        expires_ns: 0,
        created_unix: 0,
        source: BlockSource::Operator as u32,
        offences: 1,
        reason: [0; 48],
    }
}

/// The `i`-th CIDR block of the large maps: consecutive /24s from 20.0.0.0.
fn cidr_at(i: usize) -> Net {
    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(20, 0, 0, 0)) + ((i as u32) << 8));
    Net::new(a.into(), 24).unwrap()
}

pub fn run(opts: Opts, progress: &mut Progress) -> Value {
    let repeat = if opts.quick { 100_000 } else { 1_000_000 };
    let rounds = if opts.quick { 3 } else { 5 };
    let big_exact = if opts.quick { 100_000 } else { 1_000_000 };
    let big_cidr = if opts.quick { 10_000 } else { 65_536 };

    let pin = PinDir::new();
    let (mut prog, mut maps) = Loader::new(&pin.path).load().expect("XDP program loads");
    let mut section = XdpSection {
        protected_ports: vec![NonZeroU16::new(PORT).unwrap()],
        ..XdpSection::default()
    };
    section.rate_limit.pps = LimitSpec::new(1_000_000_000, 1_000_000_000).unwrap();
    section.rate_limit.syn = LimitSpec::new(1_000_000_000, 1_000_000_000).unwrap();
    apply(&mut maps, &section).expect("config");

    let frame = |src: &str| Frame::tcp(src, PORT, TCP_ACK).build();
    let best = |f: &mut dyn FnMut() -> (u32, std::time::Duration), verdict: u32| -> u64 {
        (0..rounds)
            .map(|_| {
                let (v, d) = f();
                assert_eq!(v, verdict, "unexpected verdict while benchmarking");
                d.as_nanos() as u64
            })
            .min()
            .unwrap()
    };

    let mut rows = Vec::new();
    let mut filled = (0usize, 0usize);
    for (exact, cidr) in [(10, 10), (big_exact, big_cidr)] {
        progress.step(&format!(
            "XDP cost: filling maps to {exact} exact + {cidr} CIDR blocks"
        ));
        for i in filled.0..exact {
            let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i as u32);
            maps.block_add(&Net::host(a.into()), entry()).unwrap();
        }
        for i in filled.1..cidr {
            maps.block_add(&cidr_at(i), entry()).unwrap();
        }
        filled = (exact, cidr);
        progress.step(&format!(
            "XDP cost: BPF_PROG_TEST_RUN x{repeat}, best of {rounds}"
        ));
        let pass = frame("192.0.2.1");
        let baseline = best(&mut || prog.test_run_baseline(&pass, repeat).unwrap(), 2);
        let ns_pass = best(&mut || prog.test_run(&pass, repeat).unwrap(), 2);
        let ns_exact = best(
            &mut || prog.test_run(&frame("10.0.0.5"), repeat).unwrap(),
            1,
        );
        let ns_cidr = best(
            &mut || prog.test_run(&frame("20.0.5.7"), repeat).unwrap(),
            1,
        );
        // Rate-limit drop: a 1 packet/s default, bucket already empty.
        let mut cfg = maps.config().unwrap();
        let saved = cfg;
        cfg.pps = Limit { rate: 1, burst: 1 };
        maps.set_config(cfg).unwrap();
        let limited = frame("192.0.2.2");
        prog.test_run(&limited, 1).unwrap();
        let ns_pps = best(&mut || prog.test_run(&limited, repeat).unwrap(), 1);
        maps.set_config(saved).unwrap();
        let mut paths = vec![
            ("empty XDP program (harness baseline)", baseline),
            ("pass (full path: ACLs, port, bucket)", ns_pass),
            ("drop: exact blocklist hit", ns_exact),
            ("drop: CIDR blocklist hit", ns_cidr),
            ("drop: over the pps limit", ns_pps),
        ];
        if cidr == big_cidr {
            // The CIDR rows above hash one prefix length (all /24). Four
            // more lengths (five in all, over HASHED_PREFIX_LENS_MAX) move
            // IPv4 ranges to the LPM trie: its cost, kept visible.
            progress.step("XDP cost: the same with five CIDR prefix lengths (the trie)");
            // The maps are full: make room by removing the last four /24s.
            for i in cidr - 4..cidr {
                maps.block_del(&cidr_at(i)).unwrap();
            }
            for (net, len) in [
                ("30.0.0.0", 12),
                ("31.0.0.0", 16),
                ("32.0.0.0", 20),
                ("33.0.0.0", 28),
            ] {
                maps.block_add(&Net::new(net.parse().unwrap(), len).unwrap(), entry())
                    .unwrap();
            }
            assert_eq!(maps.config().unwrap().block_prefix_lens[0].count, 0);
            paths.push((
                "pass, CIDR blocks in the LPM trie (5 prefix lengths)",
                best(&mut || prog.test_run(&pass, repeat).unwrap(), 2),
            ));
            paths.push((
                "drop: CIDR blocklist hit in the LPM trie (5 prefix lengths)",
                best(
                    &mut || prog.test_run(&frame("20.0.5.7"), repeat).unwrap(),
                    1,
                ),
            ));
        }
        for (path, ns) in paths {
            rows.push(json!({
                "path": path,
                "exact_entries": exact,
                "cidr_entries": cidr,
                "ns_per_packet": ns,
                "ns_over_baseline": ns.saturating_sub(baseline),
            }));
        }
    }
    json!({ "repeat": repeat, "rounds": rounds, "rows": rows })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### XDP program cost (BPF_PROG_TEST_RUN, repeat {}, best of {})\n\n| path | exact / CIDR entries | ns/packet | ns over empty program |\n|---|---|---|---|\n",
        v["repeat"], v["rounds"]
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} / {} | {} | {} |\n",
            r["path"].as_str().unwrap_or(""),
            r["exact_entries"],
            r["cidr_entries"],
            r["ns_per_packet"],
            r["ns_over_baseline"]
        ));
    }
    out
}
