//! Installs what the build and the tests need, idempotently, saying what it
//! installs. The recipe is the one verified in `shared/toolchain.md`: LLVM 22
//! from apt for bpf-linker, the nightly toolchain with `rust-src` for
//! `-Z build-std=core`, and bpf-linker 0.13.0 built against LLVM 22.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{run, step};

/// The LLVM shared library bpf-linker links against at run time.
const LIBLLVM: &str = "/usr/lib/llvm-22/lib/libLLVM.so.22.1";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz, which builds and runs the targets in `fuzz/` (on nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian packages for building bpf-linker against LLVM 22.
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Debian packages the privileged tests use: `ip` (netns, veth), `nsenter`,
/// `mount` (bpffs), and for the cluster tests `redis-server` (a private
/// Redis per test, started as a child process; apt's policy-rc.d keeps the
/// system service from starting) with `redis-cli` from `redis-tools`, and
/// for the dashboard's browser test (`tests/tests/dashboard_browser.rs`)
/// Debian's `chromium` with its WebDriver, `chromium-driver`
/// (`/usr/bin/chromedriver`), driven headless, with `fonts-liberation` so
/// its screenshot has legible text (apt installs without recommends).
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "mount",
    "iputils-ping",
    "redis-server",
    "redis-tools",
    "chromium",
    "chromium-driver",
    "fonts-liberation",
];

/// Which set of prerequisites a command needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Building the eBPF object and the gateway.
    Build,
    /// Building, plus the tools the privileged tests drive.
    Test,
}

pub fn ensure(need: Need) -> Result<()> {
    step("checking prerequisites");
    let mut packages: Vec<&str> = Vec::new();
    if !Path::new(LIBLLVM).exists() {
        packages.extend(LLVM_PACKAGES);
    }
    if need == Need::Test {
        packages.extend(TEST_PACKAGES.iter().filter(|p| !dpkg_installed(p)));
    }
    apt_install(&packages)?;
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

/// Installs extra Debian packages (for benchmarks) if they are missing.
pub fn ensure_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    apt_install(&missing)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}. Run `cargo xtask` as root so it can install them, \
             or install them with `sudo apt-get install -y {}`",
            packages.join(" "),
            packages.join(" ")
        );
    }
    println!("    installing with apt-get: {}", packages.join(" "));
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update failed")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install failed")?;
    Ok(())
}

fn ensure_nightly_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("    installing the nightly Rust toolchain (rustup toolchain install nightly)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        println!(
            "    installing rust-src for nightly (rustup component add rust-src --toolchain nightly)"
        );
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn ensure_bpf_linker() -> Result<()> {
    let current = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if current
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    println!(
        "    installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (cargo install, about a minute)"
    );
    // LLVM_PREFIX is what bpf-linker's build script reads; without it it
    // follows /usr/bin/llvm-config (an older LLVM) and fails to link.
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))
    .context("cargo install bpf-linker failed")?;
    Ok(())
}

/// Installs cargo-fuzz (for `cargo xtask fuzz` and the fuzzing smoke run
/// of `cargo xtask test`) unless that version is already installed.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let current = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if current
        .as_deref()
        .is_some_and(|v| v.contains(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    println!("    installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, about two minutes)");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("cargo install cargo-fuzz failed")?;
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY-free: read the effective uid from /proc rather than calling libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
