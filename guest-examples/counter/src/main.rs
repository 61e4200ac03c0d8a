//! A long-running service that survives restarts and upgrades: it keeps its
//! count in /data (the package's persistent volume), uses the wasmdm config
//! and log interfaces, and idles in `wait-for-stop` so Deactivate stops it
//! promptly and cleanly.

use std::io::Write;
use std::path::Path;

wit_bindgen::generate!({
    path: "../../wit",
    world: "app-imports",
});

use wasmdm::device::{config, lifecycle, log};

const COUNTER_FILE: &str = "/data/counter";
const COUNTER_TMP: &str = "/data/counter.tmp";
const DEFAULT_INTERVAL_MS: u64 = 1000;

/// Reads the persisted count; a missing or unparsable file starts from 0 so
/// a corrupt volume can't keep the service from starting.
fn load_count() -> u64 {
    match std::fs::read_to_string(COUNTER_FILE) {
        Ok(text) => text.trim().parse().unwrap_or_else(|e| {
            log::log(
                log::Level::Warn,
                &format!("bad {COUNTER_FILE} ({e}), starting at 0"),
            );
            0
        }),
        Err(_) => 0,
    }
}

/// Write-then-rename so a kill mid-write never leaves a torn counter file.
fn store_count(n: u64) -> std::io::Result<()> {
    let mut f = std::fs::File::create(COUNTER_TMP)?;
    write!(f, "{n}")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(COUNTER_TMP, Path::new(COUNTER_FILE))
}

fn interval_ms() -> u64 {
    match config::get("interval-ms") {
        Some(v) => v.trim().parse().unwrap_or_else(|e| {
            log::log(
                log::Level::Warn,
                &format!("bad interval-ms {v:?} ({e}), using {DEFAULT_INTERVAL_MS}"),
            );
            DEFAULT_INTERVAL_MS
        }),
        None => DEFAULT_INTERVAL_MS,
    }
}

fn main() {
    // Which package version runs shows in the greeting its manifest gives.
    println!("counter starting");
    if let Some(greeting) = config::get("greeting") {
        println!("{greeting}");
    }
    let interval = interval_ms();
    let mut count = load_count();
    loop {
        count = count.saturating_add(1);
        if let Err(e) = store_count(count) {
            log::log(log::Level::Error, &format!("storing count {count}: {e}"));
        }
        println!("count={count}");
        log::log(log::Level::Info, &format!("count={count}"));
        if lifecycle::wait_for_stop(interval) {
            break;
        }
    }
    println!("counter stopped at {count}");
}
