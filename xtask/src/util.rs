//! Small helpers for running commands and printing progress.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// Prints a step header, so long work shows what it is doing.
pub fn step(what: &str) {
    println!("==> {what}");
}

/// Runs a command with inherited stdio and fails if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Whether this run is CI's (`CI=true`), where a test that cannot run fails
/// and every build starts from a fresh clone.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A `cargo` command using the toolchain that runs xtask.
///
/// Under CI incremental compilation is off: a fresh clone never reuses it,
/// and its cache would double the target directory's size on disk.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    if is_ci() {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// Fails early, with what to do, when the filesystem holding `dir` has less
/// than `need_gib` GiB free: a linker that runs out of disk mid-write dies
/// with SIGBUS ("ld terminated with signal 7 [Bus error]"), which says
/// nothing about the cause. `dir` need not exist yet (its nearest existing
/// ancestor is measured). Uses `df`, so it works without extra crates.
pub fn ensure_free_disk(dir: &Path, need_gib: u64, what: &str) -> Result<()> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => return Ok(()),
        }
    }
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(probe)
        .output()
        .context("running df to measure free disk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(avail) = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok())
    else {
        // An unusual df: measuring is advice, not a gate.
        return Ok(());
    };
    let have_gib = avail / (1 << 30);
    if have_gib < need_gib {
        bail!(
            "{what} needs about {need_gib} GiB free under {}, but only {have_gib} GiB is free: \
             free some space (for example `cargo clean` in an old checkout) and run again",
            probe.display()
        );
    }
    Ok(())
}
