//! `cargo xtask bench`: measurements of our gateway beside the tools a user
//! would pick instead, in one run on one machine, reported as ratios. Each
//! scenario is bounded in time and count. Results go to
//! `bench/results.json` and `bench/results.md`. The runner is the binary
//! `gw-bench` (`src/bin/gw-bench.rs`); this library holds its scenarios,
//! one module each, so the privileged tests can run one quickly
//! (`tests/tests/xdp_prog.rs` runs [`xdp_cost`]).

#![allow(
    missing_docs,
    reason = "the scenarios are the runner's own parts, not an API: each module's header documents what it measures and how, and the results' Markdown says what each row means"
)]

pub mod attack;
pub mod cpu;
pub mod escalation;
pub mod features;
pub mod flood;
pub mod framegen;
pub mod grpc;
pub mod gwconf;
pub mod memory;
pub mod proxy;
pub mod servers;
pub mod xdp_cost;

use std::time::Instant;

/// Options shared by the scenarios.
#[derive(Clone, Copy)]
pub struct Opts {
    /// CI smoke mode: short runs, fewer repeats, smaller maps.
    pub quick: bool,
    /// This process's open-file limit (children inherit it).
    pub nofile: u64,
}

/// Prints a progress line: `[step/total] what (elapsed)`.
pub struct Progress {
    total: usize,
    step: usize,
    start: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            step: 0,
            start: Instant::now(),
        }
    }

    pub fn step(&mut self, what: &str) {
        self.step += 1;
        let done = self.step * 30 / self.total.max(1);
        eprintln!(
            "[{}{}] {:>2}/{} {:>5.1}s  {what}",
            "#".repeat(done),
            ".".repeat(30 - done.min(30)),
            self.step,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// The median of `v` (the mean of the middle two for an even count); 0
/// for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A results cell: the median of `v` with its min-max, `12 (9-15)`, each
/// rounded to `decimals`.
pub fn median_range_cell(v: &[f64], decimals: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.d$} ({:.d$}-{:.d$})",
        median(v.to_vec()),
        min,
        max,
        d = decimals
    )
}

/// A ratio cell of a results table: `0.46x`, or `-` when the row has none.
pub fn ratio_cell(row: &serde_json::Value, key: &str) -> String {
    row.get(key)
        .map(|x| format!("{x}x"))
        .unwrap_or_else(|| "-".into())
}

/// A per-run ratio list cell: `0.51x, 0.71x, ...`, or `-` when the row has
/// none.
pub fn ratios_cell(row: &serde_json::Value, key: &str) -> String {
    row[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{x}x"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".into())
}

/// What machine the numbers come from.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    serde_json::json!({ "cpu": model, "cpus": cpus, "kernel": kernel })
}
