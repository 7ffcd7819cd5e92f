//! The benchmark runner behind `cargo xtask bench`: runs every scenario
//! with bounded duration and writes `bench/results.json` and
//! `bench/results.md`. Needs root (XDP, namespaces).

use std::path::PathBuf;

use gw_bench::{
    Opts, Progress, attack, escalation, features, flood, grpc, machine, memory, proxy, servers,
    xdp_cost,
};

const USAGE: &str = "\
usage: gw-bench [--quick] [--out DIR] [--only SCENARIO,...]
       gw-bench --grpc-origin PORT

Runs the benchmarks (root: XDP, network namespaces) and writes
results.json and results.md to DIR (default: bench). `cargo xtask bench`
builds and runs it with GATEWAY_BIN set to the release gateway.

  --quick             short runs, single repeats, smaller maps (CI smoke)
  --out DIR           where the results go
  --only A,B          only these scenarios (xdp_cost, flood, attack,
                      escalation, proxy, grpc, features, memory); needs --out
  --grpc-origin PORT  serve as the gRPC row's origin (started by the
                      gRPC scenario itself)
  -h, --help          this text";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    // `--grpc-origin PORT`: run as the gRPC row's origin (started by the
    // gRPC scenario itself, pinned like the other servers).
    if let Some(port) = args
        .iter()
        .position(|a| a == "--grpc-origin")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
    {
        gw_bench::grpc::serve_origin(port);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out_dir = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    // `--only a,b`: a subset of the scenarios (xdp_cost, flood, attack,
    // escalation, proxy, features, memory), for development; it needs an
    // `--out` directory so a partial run never replaces bench/results.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect());
    if only.is_some() && out_dir.is_none() {
        eprintln!(
            "gw-bench: --only needs --out DIR (a partial run must not replace bench/results)"
        );
        std::process::exit(2);
    }
    let out_dir = out_dir.unwrap_or_else(|| PathBuf::from("bench"));
    let want = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    if !test_support::require_root("gw-bench") {
        std::process::exit(1);
    }
    let nofile = servers::raise_nofile(65536);
    let opts = Opts { quick, nofile };
    let mut progress = Progress::new(
        4 + flood::STEPS
            + 1
            + attack::STEPS
            + escalation::STEPS
            + proxy::STEPS
            + grpc::STEPS
            + features::STEPS
            + memory::STEPS,
    );
    let skipped = serde_json::Value::Null;
    let xdp = if want("xdp_cost") {
        xdp_cost::run(opts, &mut progress)
    } else {
        skipped.clone()
    };
    let fl = if want("flood") {
        flood::run(opts, &mut progress)
    } else {
        skipped.clone()
    };
    progress.step("starting origin, gateway, nginx and haproxy");
    let stack = servers::start_stack();
    let scenario =
        |name: &str, progress: &mut Progress, f: &dyn Fn(&mut Progress) -> serde_json::Value| {
            if want(name) {
                f(progress)
            } else {
                skipped.clone()
            }
        };
    let at = scenario("attack", &mut progress, &|p| attack::run(opts, p, &stack));
    let esc = scenario("escalation", &mut progress, &|p| {
        escalation::run(opts, p, &stack)
    });
    let px = scenario("proxy", &mut progress, &|p| proxy::run(opts, p, &stack));
    let gr = scenario("grpc", &mut progress, &|p| grpc::run(opts, p, &stack));
    let ft = scenario("features", &mut progress, &|p| {
        features::run(opts, p, &stack)
    });
    let mem = scenario("memory", &mut progress, &|p| memory::run(opts, p, &stack));
    drop(stack);
    let results = serde_json::json!({
        "machine": machine(),
        "versions": {
            "gateway": env!("CARGO_PKG_VERSION"),
            "nginx": servers::version("nginx"),
            "haproxy": servers::version("haproxy"),
            "wrk": servers::version("wrk"),
            "h2load": servers::version("h2load"),
        },
        "quick": quick,
        "xdp_cost": xdp,
        "flood": fl,
        "attack": at,
        "escalation": esc,
        "proxy": px,
        "grpc": gr,
        "features": ft,
        "memory": mem,
    });
    std::fs::create_dir_all(&out_dir).expect("create output directory");
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results).unwrap())
        .expect("write results.json");
    let md = format!(
        "## Benchmark results\n\nMachine: {} ({} CPUs), kernel {}. Mode: {}. Generated by `cargo xtask bench`; no number is typed by hand.\n\n\
Versions: gateway {}, {}, {}, {}, {}. Peer configs: `bench/nginx.conf`, `bench/haproxy.cfg` (origin: `bench/origin.conf`; ours: `bench/src/gwconf.rs`), templated with ports at run time; access logging is off in all three except in the access-log row.\n\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        results["machine"]["cpu"].as_str().unwrap_or("?"),
        results["machine"]["cpus"],
        results["machine"]["kernel"].as_str().unwrap_or("?"),
        if quick {
            "--quick (smoke, short runs)"
        } else {
            "full"
        },
        results["versions"]["gateway"].as_str().unwrap_or("?"),
        results["versions"]["nginx"].as_str().unwrap_or("?"),
        results["versions"]["haproxy"].as_str().unwrap_or("?"),
        results["versions"]["wrk"].as_str().unwrap_or("?"),
        results["versions"]["h2load"].as_str().unwrap_or("?"),
        xdp_cost::markdown(&results["xdp_cost"]),
        flood::markdown(&results["flood"]),
        attack::markdown(&results["attack"]),
        escalation::markdown(&results["escalation"]),
        proxy::markdown(&results["proxy"]),
        grpc::markdown(&results["grpc"]),
        features::markdown(&results["features"]),
        memory::markdown(&results["memory"]),
    );
    std::fs::write(out_dir.join("results.md"), &md).expect("write results.md");
    println!("{md}");
    eprintln!("wrote {} and results.md", json_path.display());
}
