//! `cargo xtask`: what cargo alone cannot do for this workspace — install the
//! eBPF toolchain prerequisites, build the kernel object with the userspace
//! binary, run the gateway, run the privileged test suite, lint in the split
//! aya-template way, fuzz the parsers, and benchmark.

mod fuzz;
mod prereqs;
mod util;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    prereqs::Need,
    util::{cargo, run, step},
};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark the gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing prerequisites (LLVM 22, nightly rust-src, bpf-linker).
    Prereqs,
    /// Build the eBPF program and the `gateway` binary.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, then start the gateway on its embedded default configuration.
    Run {
        /// Build with the dev profile instead of release (faster to compile).
        #[arg(long)]
        debug: bool,
        /// Extra arguments for `gateway run` (for example `--config FILE`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the whole test suite: lints, unit tests and the privileged tests
    /// (including the XDP parser fuzz loop through BPF_PROG_TEST_RUN).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run tests whose name contains this filter.
        filter: Option<String>,
    },
    /// `cargo fmt --check` and clippy -D warnings, split as aya-template does.
    Lint,
    /// Run the cargo-fuzz targets in fuzz/ (nightly), each for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Benchmarks beside the peers (nftables, iptables), written to bench/.
    Bench {
        /// Short runs for a CI smoke test (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Only splice the existing bench/results.md into the README.
        #[arg(long)]
        embed_only: bool,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Prereqs => prereqs::ensure(Need::Test),
        Cmd::Build { release } => {
            prereqs::ensure(Need::Build)?;
            build_gateway(release).map(|_| ())
        }
        Cmd::Run { debug, args } => {
            prereqs::ensure(Need::Build)?;
            let bin = build_gateway(!debug)?;
            run_gateway(&bin, &args)
        }
        Cmd::Test { no_lint, filter } => {
            prereqs::ensure(Need::Test)?;
            if filter.is_none() {
                prereqs::ensure_cargo_fuzz()?;
            }
            if !no_lint {
                lint()?;
            }
            test(filter.as_deref())
        }
        Cmd::Lint => {
            prereqs::ensure(Need::Build)?;
            lint()
        }
        Cmd::Fuzz { seconds, targets } => {
            prereqs::ensure(Need::Build)?;
            prereqs::ensure_cargo_fuzz()?;
            fuzz::fuzz(&workspace_root(), &target_dir(), &targets, seconds)
        }
        Cmd::Bench {
            embed_only: true, ..
        } => embed_results(&workspace_root()),
        Cmd::Bench { quick, .. } => {
            prereqs::ensure(Need::Test)?;
            prereqs::ensure_packages(BENCH_PACKAGES)?;
            bench(quick)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the gateway (whose build script builds the eBPF object) and returns
/// the binary's path.
fn build_gateway(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    step(&format!("building gateway-ebpf and gateway ({profile})"));
    let mut cmd = cargo();
    cmd.current_dir(workspace_root()).args([
        "build",
        "--package",
        "gateway-userspace",
        "--bin",
        "gateway",
    ]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let bin = target_dir().join(profile).join("gateway");
    if !bin.exists() {
        bail!("build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

fn run_gateway(bin: &Path, args: &[String]) -> Result<()> {
    if !prereqs::is_root() {
        bail!("the gateway loads an XDP program and needs root: run `sudo -E cargo xtask run`");
    }
    step(&format!(
        "starting {} run {}",
        bin.display(),
        args.join(" ")
    ));
    // The demo runs on `lo` of a development machine: leave nothing
    // attached there on Ctrl-C (production keeps the pinned filter).
    // exec(2), not a child: cargo runs xtask in its own place, so the
    // gateway becomes the process the user started and gets its signals
    // itself. As a child, a SIGTERM to `cargo xtask run` (`timeout`, a
    // service manager, `kill`) ended xtask alone and left the gateway
    // running, its XDP program still on `lo`.
    use std::os::unix::process::CommandExt as _;
    let err = Command::new(bin)
        .arg("run")
        .arg("--xdp-detach-on-exit")
        .args(args)
        .exec();
    Err(err).with_context(|| format!("could not start {}", bin.display()))
}

fn lint() -> Result<()> {
    let root = workspace_root();
    step("cargo fmt --check");
    run(cargo()
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))
    .context("formatting differs: run `cargo fmt --all`")?;
    step("clippy: workspace without gateway-ebpf");
    run(cargo().current_dir(&root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "gateway-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("clippy: gateway-ebpf alone (nightly, bpfel-unknown-none)");
    run(Command::new("rustup")
        .current_dir(root.join("gateway-ebpf"))
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--package",
            "gateway-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
            "-C",
            "panic=abort",
        ])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC"))?;
    Ok(())
}

/// Peers and tools the benchmarks drive.
const BENCH_PACKAGES: &[&str] = &[
    "nftables",
    "iptables",
    "iputils-ping",
    // Scenario 4: the peer proxies (also the shared origin) and the load generator.
    "nginx",
    "haproxy",
    "wrk",
    // The gRPC row's load generator (h2load).
    "nghttp2-client",
    // taskset, to pin servers and the load generator to separate cores.
    "util-linux",
    // Scenario 4: the Redis of the cluster-mode (shared limit) row.
    "redis-server",
];

fn bench(quick: bool) -> Result<()> {
    let root = workspace_root();
    if !prereqs::is_root() {
        bail!(
            "the benchmarks attach XDP and create network namespaces: run `sudo -E cargo xtask bench`"
        );
    }
    let gateway = build_gateway(true)?;
    step("building the benchmark runner (release)");
    run(cargo().current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "gw-bench",
        "--bin",
        "gw-bench",
    ]))?;
    step(&format!(
        "running benchmarks{}",
        if quick { " (--quick)" } else { "" }
    ));
    let mut cmd = Command::new(target_dir().join("release").join("gw-bench"));
    cmd.current_dir(&root)
        .arg("--out")
        .arg(root.join("bench"))
        .env("GATEWAY_BIN", &gateway);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)?;
    embed_results(&root)
}

/// Splices bench/results.md into the README between the bench markers, so
/// the README's tables are always the last run's, never typed by hand.
fn embed_results(root: &Path) -> Result<()> {
    const START: &str = "<!-- bench:start -->";
    const END: &str = "<!-- bench:end -->";
    let results = std::fs::read_to_string(root.join("bench/results.md"))
        .context("reading bench/results.md (run `cargo xtask bench` first)")?;
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).context("reading README.md")?;
    let (Some(a), Some(b)) = (readme.find(START), readme.find(END)) else {
        bail!("README.md has no {START} ... {END} markers for the results");
    };
    let results = results
        .replacen("## Benchmark results", "### Benchmark results", 1)
        .replace("\n### ", "\n#### ");
    let updated = format!(
        "{}{START}\n{}\n{}",
        &readme[..a],
        results.trim_end(),
        &readme[b..]
    );
    std::fs::write(&readme_path, updated).context("writing README.md")?;
    step("README.md: benchmark tables updated from bench/results.md");
    Ok(())
}

/// What a fresh `cargo xtask test` writes under `target/` at its peak
/// (debug workspace and test binaries, the eBPF object, the nightly fuzz
/// build): 8.4 GB (7.8 GiB) measured from a fresh clone, with headroom. A
/// checkout that built before needs far less: [`TEST_DISK_WARM_GIB`].
const TEST_DISK_GIB: u64 = 9;
/// Free space asked for when `target/debug` exists already.
const TEST_DISK_WARM_GIB: u64 = 2;

fn test(filter: Option<&str>) -> Result<()> {
    let root = workspace_root();
    let need = if target_dir().join("debug").is_dir() {
        TEST_DISK_WARM_GIB
    } else {
        TEST_DISK_GIB
    };
    util::ensure_free_disk(&target_dir(), need, "`cargo xtask test`")?;
    let bin = build_gateway(false)?;
    step("unit tests (workspace)");
    let mut cmd = cargo();
    cmd.current_dir(&root).args([
        "test",
        "--workspace",
        "--exclude",
        "gateway-ebpf",
        "--exclude",
        "tests",
    ]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    run(&mut cmd)?;
    step("privileged tests (tests crate: BPF_PROG_TEST_RUN, network namespaces)");
    if !prereqs::is_root() {
        if util::is_ci() {
            bail!("CI=true but not running as root: the privileged tests cannot run");
        }
        bail!("the privileged tests need root: run `sudo -E cargo xtask test`");
    }
    let mut cmd = cargo();
    cmd.current_dir(&root)
        .args(["test", "--package", "tests"])
        .env("GATEWAY_BIN", &bin);
    cmd.arg("--");
    if let Some(f) = filter {
        cmd.arg(f);
    }
    run(&mut cmd)?;
    // The libFuzzer smoke: every cargo-fuzz target for a few seconds on its
    // checked-in corpus. Skipped only with a filter (a focused run), never
    // under CI (CI runs without one).
    if filter.is_none() {
        step("libFuzzer smoke (cargo-fuzz targets in fuzz/, nightly)");
        fuzz::fuzz(&root, &target_dir(), &[], fuzz::SMOKE_SECONDS)?;
    }
    step("all tests passed");
    Ok(())
}
