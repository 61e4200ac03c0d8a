//! Bootstrap benchmark: N simulated devices bootstrap over DTLS-PSK from one
//! wasmdm server (the server in a child process, so its RSS is its own).
//!
//! ```text
//! cargo run --release -p wasmdm-server --example bootstrap_bench -- [--devices 1000] [--window 50]
//! ```
//!
//! Each device is tests/common/bsdevice.rs: its own UDP socket and our
//! sans-IO DTLS client, a Bootstrap-Request, then answers to Delete /0 and
//! /1, Discover /0, Write /0/1 and /1/0, Finish. `--window` devices run at
//! once (all from 127.0.0.1: below the server's per-IP caps of 64 half-open
//! handshakes and 256 sessions). Prints a Markdown table: bootstraps/s over
//! the whole run, latency percentiles (Bootstrap-Request sent to Finish
//! answered), the server's RSS before and after and its peak (VmHWM).

#[path = "../tests/common/bsdevice.rs"]
mod bsdevice;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `VmRSS` and `VmHWM` of `pid` in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// Child mode: a server on loopback ports; prints `coaps bootstrap http token`, runs until stdin closes.
fn server(dir: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut config = wasmdm_server::ServerConfig::new(any, any, dir.into());
        config.coaps_addr = Some(any);
        let mut listen = wasmdm_server::bootstrap::BootstrapListen::new(any, any);
        // Every device bootstraps once; the bench measures, not the rate cap.
        listen.limits.max_requests_per_endpoint = 100;
        config.bootstrap = Some(listen);
        let stop = async {
            tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                while std::io::stdin()
                    .read_line(&mut s)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
            })
            .await
            .ok();
        };
        wasmdm_server::serve_with(config, stop, |b| {
            println!(
                "{} {} {} {}",
                b.coaps.expect("coaps"),
                b.bootstrap.expect("bootstrap").1,
                b.http,
                b.token
            );
            let _ = std::io::stdout().flush();
        })
        .await
        .expect("server");
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        server(&args[2]);
        return;
    }
    let devices = arg(&args, "--devices", 1000);
    let window = arg(&args, "--window", 50).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["server", dir.path().to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("bound line");
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (bootstrap, http, token): (SocketAddr, String, String) = (
        parts[1].parse().expect("bootstrap addr"),
        parts[2].to_string(),
        parts[3].to_string(),
    );
    let pid = child.id();
    let api = wasmdm_server::ctl::Client::new(&format!("http://{http}"), Some(&token));
    let key = |i: usize| {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&(i as u64).to_be_bytes());
        k[8..].copy_from_slice(&(!(i as u64)).to_be_bytes());
        k
    };
    let csv: String = (0..devices)
        .map(|i| format!("bench-{i},bench-id-{i},{},bench\n", hex::encode(key(i))))
        .collect();
    let t = Instant::now();
    api.post_bytes("/api/bootstrap/import", "text/csv", csv.as_bytes())
        .expect("import");
    let import = t.elapsed();
    let before = rss(pid);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let results: Vec<Result<Duration, String>> = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(window));
        let mut tasks = Vec::new();
        for i in 0..devices {
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
                let t0 = Instant::now();
                let id = format!("bench-id-{i}");
                let out = bsdevice::bootstrap(
                    bootstrap,
                    Some((id.as_bytes(), &key(i))),
                    &format!("bench-{i}"),
                    &bsdevice::Script {
                        timeout: Duration::from_secs(120),
                        ..Default::default()
                    },
                )
                .await;
                if out.finished && out.psk.is_some() {
                    Ok(t0.elapsed())
                } else {
                    Err(match (&out.handshake_failed, &out.request_code) {
                        (Some(r), _) => format!("handshake failed: {r}"),
                        (None, Some(c)) if c != "2.04" => format!("Bootstrap-Request answered {c}"),
                        (None, None) => "no answer to the Bootstrap-Request".to_string(),
                        _ => format!("session not finished after {:?}", out.requests),
                    })
                }
            }));
        }
        let mut r = Vec::new();
        for t in tasks {
            r.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        r
    });
    let elapsed = started.elapsed();
    let after = rss(pid);
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        *failures.entry(e.clone()).or_default() += 1;
    }
    let mut ok: Vec<Duration> = results.into_iter().filter_map(Result::ok).collect();
    ok.sort();
    let pct = |p: f64| {
        ok.get(((ok.len() as f64 * p) as usize).min(ok.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    // The server's own count of succeeded sessions (it records a session
    // just after the device has answered Finish: wait a moment for the last).
    let mut succeeded = 0;
    for _ in 0..50 {
        let sessions = api.get("/api/bootstrap/sessions").expect("sessions");
        succeeded = sessions
            .as_array()
            .map(|a| a.iter().filter(|s| s["status"] == "succeeded").count())
            .unwrap_or(0);
        if succeeded >= ok.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child.stdin.take());
    let _ = child.wait();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "| devices | window | bootstrapped (device / server) | wall s | bootstraps/s | p50 ms | p90 ms | p99 ms | server RSS before → after KiB | server peak RSS KiB | import of {devices} CSV rows |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {devices} | {window} | {} / {succeeded} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {} → {} | {} | {:.0} ms |",
        ok.len(),
        elapsed.as_secs_f64(),
        ok.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        before.0,
        after.0,
        after.1,
        import.as_secs_f64() * 1e3
    );
    for (why, n) in &failures {
        println!("\nfailed: {n} × {why}");
    }
    println!(
        "\nload average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
