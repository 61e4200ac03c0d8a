//! Time from `wasmdm device` start to registered, over bootstrap (issue 11):
//! a device with only a bootstrap account (PSK) bootstraps from an
//! in-process `wasmdm server` over DTLS on loopback, then registers over
//! DTLS with the PSK it was given. Figures from the device's own log
//! timestamps (`wasmdm device starting` -> `registered`, and the bootstrap
//! part `Bootstrap-Request sent` -> `bootstrap finished`), plus the wall
//! time from spawning the process to its `registered` line.
//!
//! Run: `cargo bench -p wasmdm --bench bootstrap` (`BOOTSTRAP_BENCH_N`
//! runs, default 30). Prints a Markdown table for BENCHMARKS.md.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

const BOOTSTRAP_KEY: &str = "b0075742a9b0075742a9b0075742a9b0";

/// Seconds since the Unix epoch of a log line's RFC 3339 UTC timestamp
/// (`2026-12-06T04:35:24.756144Z ...`), by days from a civil date.
fn stamp(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s = t.next()?.parse::<f64>().ok()?;
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

fn first(log: &str, needle: &str) -> Option<f64> {
    log.lines().find(|l| l.contains(needle)).and_then(stamp)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fmt_ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

fn row(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "| {name} | {} | {} | {} | {} | {} |",
        v.len(),
        fmt_ms(pct(&v, 0.5)),
        fmt_ms(pct(&v, 0.9)),
        fmt_ms(v[0]),
        fmt_ms(v[v.len() - 1])
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("BOOTSTRAP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let coaps: std::net::SocketAddr = {
        let s = std::net::UdpSocket::bind(any).unwrap();
        s.local_addr().unwrap()
    };
    let mut config = wasmdm_server::ServerConfig::new(any, any, scratch.path().join("server"));
    config.coaps_addr = Some(coaps);
    config.bootstrap = Some(wasmdm_server::bootstrap::BootstrapListen::new(any, any));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    rt.spawn(wasmdm_server::serve_with(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |b| {
            let _ = bound_tx.send(b);
        },
    ));
    let bound = rt.block_on(bound_rx).expect("server starts");
    let api = bound.client();
    let (_, bs_coaps) = bound.bootstrap.expect("bootstrap listens");
    api.put(
        "/api/bootstrap/labels/default",
        &json!({"servers": [{
            "uri": format!("coaps://{coaps}"), "short_id": 1, "security": "psk", "lifetime": 300,
        }]}),
    )
    .unwrap();
    let (mut total, mut boot, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let ep = format!("bench-bs-{i}");
        api.put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &json!({"identity": format!("bs-{ep}"), "key": BOOTSTRAP_KEY, "labels": []}),
        )
        .unwrap();
        let dir = scratch.path().join(&ep);
        std::fs::create_dir_all(&dir).unwrap();
        let log_path = dir.with_extension("log");
        let log_file = std::fs::File::create(&log_path).unwrap();
        let spawned = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
            .args(["device", "--endpoint", &ep, "--bind", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--bootstrap-server", &format!("coaps://{bs_coaps}")])
            .args(["--bootstrap-psk-identity", &format!("bs-{ep}")])
            .env("WASMDM_BOOTSTRAP_PSK_KEY", BOOTSTRAP_KEY)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let log = wait_registered(&log_path);
        let _ = child.kill();
        let _ = child.wait();
        let (Some(start), Some(reg), Some(req), Some(fin)) = (
            first(&log, "wasmdm device starting"),
            first(&log, " registered location="),
            first(&log, "Bootstrap-Request sent"),
            first(&log, "bootstrap finished"),
        ) else {
            panic!("run {i}: missing log lines:\n{log}");
        };
        total.push(reg - start);
        boot.push(fin - req);
        wall.push(reg - spawned);
    }
    println!("| measurement | n | p50 | p90 | min | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        row(
            "device start (`wasmdm device starting`) -> registered, over bootstrap",
            total
        )
    );
    println!(
        "{}",
        row(
            "bootstrap alone: Bootstrap-Request sent -> Finish stored and answered",
            boot
        )
    );
    println!(
        "{}",
        row(
            "process spawn -> registered (includes exec and runtime open)",
            wall
        )
    );
    let _ = stop.send(());
}

fn wait_registered(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.contains(" registered location=")) {
            return text;
        }
        assert!(Instant::now() < deadline, "no registration:\n{text}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
