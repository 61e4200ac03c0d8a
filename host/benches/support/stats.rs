//! What every bench prints its timings with: nearest-rank percentiles and
//! Markdown rows (n, p50, p99, min, max), plus the scratch directory the
//! benches work in. Included by the benches with `#[path]`; each uses what
//! it needs.
#![allow(dead_code)]

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where benches make their data dirs: `$WASMDM_BENCH_DIR`, else
/// `target/bench-tmp` (a real disk, not a tmpfs, so fsyncs cost what they cost).
pub fn scratch_root() -> PathBuf {
    std::env::var_os("WASMDM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp"))
}

/// A fresh directory under [`scratch_root`], removed when dropped.
pub fn scratch() -> Result<tempfile::TempDir> {
    let root = scratch_root();
    std::fs::create_dir_all(&root)?;
    Ok(tempfile::tempdir_in(root)?)
}

/// Nearest-rank percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in the unit that reads best: µs, ms or s.
pub fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

/// The header of the tables [`row`] prints rows of.
pub fn table_head() {
    println!("| measurement | n | p50 | p99 | min | max |");
    println!("|---|---|---|---|---|---|");
}

/// Prints one row (sorting the samples) and returns (p50, p99).
pub fn row_p50_p99(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (pct(samples, 50.0), pct(samples, 99.0));
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        samples.len(),
        fmt(p50),
        fmt(p99),
        fmt(samples.first().copied().unwrap_or_default()),
        fmt(samples.last().copied().unwrap_or_default()),
    );
    (p50, p99)
}

/// Prints one row (sorting the samples) and returns the p50.
pub fn row(name: &str, samples: &mut [Duration]) -> Duration {
    row_p50_p99(name, samples).0
}
