//! Small helpers for running commands and printing progress.

use std::process::Command;

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

/// A `cargo` command using the toolchain that runs xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
}
