//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` (their own
//! workspace, built with the nightly toolchain, optimised, with debug
//! assertions and overflow checks and libFuzzer's coverage instrumentation
//! but without AddressSanitizer: `-s none`, see [`SANITIZER`]) and runs each
//! for a bounded time on its checked-in corpus. A crash, a
//! panic, an input slower than [`INPUT_TIMEOUT_S`] or memory above
//! [`RSS_LIMIT_MB`] fails the run and leaves the input in
//! `fuzz/artifacts/<target>/`. `cargo xtask test` runs every target for
//! [`SMOKE_SECONDS`].

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{run, step};

/// Every fuzz target (a file in `fuzz/fuzz_targets/` and a `[[bin]]` in
/// `fuzz/Cargo.toml`).
pub const TARGETS: &[&str] = &[
    "config",
    "path_router",
    "authority",
    "forwarded",
    "proxy_protocol",
    "jwt",
    "json_body",
];

/// Seconds per target for `cargo xtask fuzz` without `--seconds`.
pub const DEFAULT_SECONDS: u64 = 60;
/// Seconds per target in `cargo xtask test` (the smoke): with seven
/// targets about 80 s after a build of about 7 minutes on a cold 2-vCPU
/// runner (docs/security.md section 20).
pub const SMOKE_SECONDS: u64 = 10;
/// The sanitizer: none. The fuzzed code is safe Rust (the crate forbids
/// `unsafe` outside `xdp/`, which no target reaches), where ASan finds
/// nothing that a panic or overflow check would not; leaving it out makes
/// the build and every execution cheaper (docs/security.md section 20).
const SANITIZER: &str = "none";
/// One input taking longer than this is a failure (libFuzzer `-timeout`).
const INPUT_TIMEOUT_S: u64 = 10;
/// Memory limit of a fuzzing process (libFuzzer `-rss_limit_mb`).
const RSS_LIMIT_MB: u64 = 2048;

/// Builds every target, then fuzzes `targets` (all when empty) for
/// `seconds` each. Fails on the first target that finds a crash or timeout.
pub fn fuzz(root: &Path, target_dir: &Path, targets: &[String], seconds: u64) -> Result<()> {
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "unknown fuzz target '{t}'; the targets are {}",
                    TARGETS.join(", ")
                );
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    let fuzz_target_dir = target_dir.join("fuzz");
    step("building the fuzz targets (nightly, cargo fuzz build)");
    run(cargo_fuzz(root)
        .args(["build", "--sanitizer", SANITIZER, "--target-dir"])
        .arg(&fuzz_target_dir))
    .context("cargo fuzz build failed")?;
    for t in chosen {
        fuzz_one(root, target_dir, &fuzz_target_dir, t, seconds)?;
    }
    step("fuzzing found nothing");
    Ok(())
}

fn fuzz_one(
    root: &Path,
    target_dir: &Path,
    fuzz_target_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<()> {
    step(&format!("fuzzing {target} for {seconds} s"));
    // New inputs go to a scratch corpus under target/; the checked-in seeds
    // in fuzz/corpus/<target> are only read.
    let scratch = target_dir.join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let seeds = root.join("fuzz").join("corpus").join(target);
    let artifacts = root.join("fuzz").join("artifacts").join(target);
    let started = SystemTime::now();
    let result = run(cargo_fuzz(root)
        .args(["run", "--sanitizer", SANITIZER, "--target-dir"])
        .arg(fuzz_target_dir)
        .arg(target)
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1"));
    if let Err(e) = result {
        let found = new_files(&artifacts, started);
        let mut message = format!("fuzz target '{target}' failed: {e:#}");
        for f in &found {
            message.push_str(&format!(
                "\n  input: {}\n  reproduce: cd fuzz && cargo +nightly fuzz run -s none {target} {}",
                f.display(),
                f.display()
            ));
        }
        if !found.is_empty() {
            message.push_str(
                "\n  fix it, add a regression test beside the code, and copy the input to \
                 fuzz/corpus/<target>/crash-<what>",
            );
        }
        bail!(message);
    }
    Ok(())
}

/// `cargo fuzz` on the nightly toolchain, run in `fuzz/`. The variables
/// `cargo xtask` inherits from the stable cargo that started it are removed
/// so rustup picks nightly.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root.join("fuzz"))
        .args(["run", "nightly", "cargo", "fuzz"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Files in `dir` modified at or after `since` (the crash inputs of a run).
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect()
}
