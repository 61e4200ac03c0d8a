//! Issue 13 benchmarks: install with Winch (then Cranelift in the background)
//! against install with Cranelift only. Figures go into BENCHMARKS.md through
//! scripts/bench.sh; nothing here is asserted in tests.
//!
//! `cargo bench -p wasmdm --bench fast_install -- <part> [args]`:
//! - `install <label> <file.wasm> <iterations>`: install -> INSTALLED and
//!   install -> the guest's first stdout line, and the process's peak RSS
//!   during install (VmHWM, reset before each install), per compiler, in one
//!   loop (the two alternate, so load from elsewhere hits both alike); with
//!   `auto`, also how long the background compile took after install.
//! - `cpu <file.wasm> <iterations>`: run time (activate -> exited) of a
//!   CPU-bound guest on Winch code, on the optimised code that replaced it,
//!   and on a Cranelift-only install.
//! - `latency <hello.wasm> <busy.wasm> <samples>`: activate() -> `hello`
//!   running, idle and while the optimiser compiles `busy` in the background.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wasmdm::runtime::{CompilerChoice, ComponentState, Runtime, RuntimeConfig, Tier};

fn package(name: &str, wasm: &Path, sandbox: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(wasm, dir.path().join("c.wasm")).with_context(|| wasm.display().to_string())?;
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"c\"\nfile = \"c.wasm\"\nworld = \"wasi:cli/command\"\n\
         [component.sandbox]\n{sandbox}\n"
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest)?;
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {})?;
    Ok(out)
}

async fn deliver(rt: &Runtime, slot: &str, bytes: &[u8]) -> Result<()> {
    let mut d = rt.delivery(slot)?;
    for (i, chunk) in bytes.chunks(64 << 10).enumerate() {
        d.write_at((i * (64 << 10)) as u64, chunk)?;
    }
    d.sync(None)?;
    rt.verify_delivery(slot).await?;
    Ok(())
}

fn config(dir: &Path, compiler: CompilerChoice) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(dir);
    c.engine.max_instances = 8;
    c.engine.compiler = compiler;
    c.max_package_bytes = 256 << 20;
    c
}

// ---- first stdout line, through tracing (the runtime mirrors guest lines) ------------

#[path = "support/log_lines.rs"]
mod log_lines;
use log_lines::capture;

#[path = "support/rss.rs"]
mod rss;
#[path = "support/stats.rs"]
mod stats;
use rss::{reset_peak, rss_kib};
use stats::{row_p50_p99 as row, scratch, table_head};

async fn first_stdout(
    rx: &mut mpsc::UnboundedReceiver<log_lines::Seen>,
    component: &str,
) -> Result<Instant> {
    let line = log_lines::next_line(rx, component, Duration::from_secs(60), |s| {
        s.source == "Stdout"
    })
    .await?;
    Ok(line.at)
}

async fn wait_state(rt: &Runtime, pkg: &str, state: ComponentState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let st = rt.status(pkg)?;
        if st.components.iter().all(|c| c.state == state) {
            return Ok(());
        }
        if st
            .components
            .iter()
            .any(|c| c.state == ComponentState::Failed)
        {
            bail!("{pkg} failed: {st:?}");
        }
        if Instant::now() > deadline {
            bail!("{pkg} did not reach {state:?}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---- install --------------------------------------------------------------------

#[derive(Default)]
struct InstallRuns {
    installed: Vec<Duration>,
    first_line: Vec<Duration>,
    peak_mib: Vec<f64>,
    optimised_after: Vec<Duration>,
}

async fn bench_install(label: &str, wasm: &Path, iterations: usize) -> Result<()> {
    let mut rx = capture()?;
    let size = std::fs::metadata(wasm)?.len();
    let pkg = package(label, wasm, "memory = \"256MiB\"\ncpu = \"100%\"")?;
    let peak_ok = reset_peak();
    let compilers = [CompilerChoice::Cranelift, CompilerChoice::Auto];
    let mut runs: [InstallRuns; 2] = Default::default();
    let component = format!("{label}/c");
    for _ in 0..iterations {
        for (k, compiler) in compilers.iter().enumerate() {
            let dir = scratch()?;
            let rt = Runtime::open(config(dir.path(), *compiler)).await?;
            deliver(&rt, "s", &pkg).await?;
            while rx.try_recv().is_ok() {}
            reset_peak();
            let (_, before) = rss_kib();
            let t0 = Instant::now();
            rt.install("s").await?;
            let t1 = Instant::now();
            let (peak, _) = rss_kib();
            rt.activate(label, None).await?;
            let line = first_stdout(&mut rx, &component).await?;
            let r = &mut runs[k];
            r.installed.push(t1 - t0);
            r.first_line.push(line - t0);
            r.peak_mib.push(peak.saturating_sub(before) as f64 / 1024.0);
            if *compiler == CompilerChoice::Auto {
                let tier = rt.code_tier(label, "c")?;
                anyhow::ensure!(tier == Tier::Baseline, "auto installed {tier} code");
                if !rt.wait_optimised(Duration::from_secs(900)).await {
                    bail!("background compile of {label} not done in 900 s");
                }
                r.optimised_after.push(t1.elapsed());
            }
            rt.shutdown().await;
        }
    }
    println!(
        "\n#### install `{label}` ({size} bytes, {:.1} MiB)\n",
        size as f64 / 1048576.0
    );
    table_head();
    let names = [
        "Cranelift only (`compiler = \"cranelift\"`)",
        "Winch (`compiler = \"auto\"`)",
    ];
    let mut p50s = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let r = &mut runs[k];
        let (a, _) = row(&format!("{name}: install -> INSTALLED"), &mut r.installed);
        let (b, _) = row(
            &format!("{name}: install -> guest's first line"),
            &mut r.first_line,
        );
        p50s.push((a, b));
        if !r.optimised_after.is_empty() {
            row(
                "background Cranelift compile done, after INSTALLED (1 thread, idle priority)",
                &mut r.optimised_after,
            );
        }
    }
    println!();
    if peak_ok {
        println!("| peak RSS added during install (VmHWM - VmRSS before) | n | median | max |");
        println!("|---|---|---|---|");
        for (k, name) in names.iter().enumerate() {
            let v = &mut runs[k].peak_mib;
            v.sort_by(f64::total_cmp);
            println!(
                "| {name} | {} | {:.0} MiB | {:.0} MiB |",
                v.len(),
                v.get(v.len() / 2).copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0)
            );
        }
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "\nratio Winch / Cranelift, p50: install -> INSTALLED **{:.2}**, install -> first line **{:.2}**",
        ratio(p50s[1].0, p50s[0].0),
        ratio(p50s[1].1, p50s[0].1)
    );
    println!("FAST_RATIO {label} {:.3}", ratio(p50s[1].1, p50s[0].1));
    Ok(())
}

// ---- CPU-bound guest ---------------------------------------------------------------

async fn run_once(rt: &Runtime, name: &str) -> Result<Duration> {
    let t = Instant::now();
    rt.activate(name, None).await?;
    wait_state(rt, name, ComponentState::Exited).await?;
    let took = t.elapsed();
    rt.deactivate(name, None).await?;
    Ok(took)
}

async fn bench_cpu(wasm: &Path, iterations: usize) -> Result<()> {
    let pkg = package("cpu", wasm, "memory = \"64MiB\"\ncpu = \"100%\"")?;
    let (mut winch, mut optimised, mut cranelift) = (Vec::new(), Vec::new(), Vec::new());
    let auto_dir = scratch()?;
    let auto = Runtime::open(config(auto_dir.path(), CompilerChoice::Winch)).await?;
    deliver(&auto, "s", &pkg).await?;
    auto.install("s").await?;
    // Winch code first (a runtime without optimiser), then reopened with
    // `auto` to optimise it.
    for _ in 0..iterations {
        winch.push(run_once(&auto, "cpu").await?);
    }
    auto.shutdown().await;
    drop(auto);
    let auto = Runtime::open(config(auto_dir.path(), CompilerChoice::Auto)).await?;
    if !auto.wait_optimised(Duration::from_secs(900)).await {
        bail!("background compile not done");
    }
    anyhow::ensure!(auto.code_tier("cpu", "c")? == Tier::Optimised);
    let cl_dir = scratch()?;
    let cl = Runtime::open(config(cl_dir.path(), CompilerChoice::Cranelift)).await?;
    deliver(&cl, "s", &pkg).await?;
    cl.install("s").await?;
    for _ in 0..iterations {
        optimised.push(run_once(&auto, "cpu").await?);
        cranelift.push(run_once(&cl, "cpu").await?);
    }
    println!("\n#### CPU-bound guest (`target/bench-cpu`), activate -> exited\n");
    table_head();
    let (w, _) = row("Winch code (as installed)", &mut winch);
    let (o, _) = row("after the background compile (`auto`)", &mut optimised);
    let (c, _) = row("Cranelift-only install", &mut cranelift);
    println!(
        "\nratio optimised / Cranelift-only (p50): **{:.3}** (target ≤ 1.05); Winch / Cranelift-only: {:.2}",
        o.as_secs_f64() / c.as_secs_f64(),
        w.as_secs_f64() / c.as_secs_f64()
    );
    auto.shutdown().await;
    cl.shutdown().await;
    Ok(())
}

// ---- activation latency with the optimiser busy -------------------------------------

/// activate() -> the instance is running (the supervisor's Running event):
/// independent of the guest's log, whose rate limit a loop of hundreds of
/// starts would meet.
async fn activation_sample(
    rt: &Runtime,
    events: &mut tokio::sync::broadcast::Receiver<wasmdm::runtime::RuntimeEvent>,
) -> Result<Duration> {
    while events.try_recv().is_ok() {}
    let t0 = Instant::now();
    rt.activate("hello", None).await?;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .context("not running within 60 s")??;
        if e.package == "hello" && e.state == ComponentState::Running {
            break;
        }
    }
    let took = t0.elapsed();
    wait_state(rt, "hello", ComponentState::Exited).await?;
    rt.deactivate("hello", None).await?;
    Ok(took)
}

async fn bench_latency(hello: &Path, busy: &Path, samples: usize) -> Result<()> {
    let dir = scratch()?;
    let rt = Runtime::open(config(dir.path(), CompilerChoice::Auto)).await?;
    let mut rx = rt.subscribe();
    deliver(&rt, "h", &package("hello", hello, "")?).await?;
    rt.install("h").await?;
    rt.wait_optimised(Duration::from_secs(300)).await;
    let busy_pkg = package("busy", busy, "memory = \"256MiB\"")?;
    let (mut idle, mut loaded) = (Vec::new(), Vec::new());
    let mut compiles = 0;
    for _ in 0..10 {
        activation_sample(&rt, &mut rx).await?;
    }
    while loaded.len() < samples {
        // Idle sample, then install `busy` (Winch) and sample while its
        // Cranelift compile runs; uninstalling drops its code for the next round.
        for _ in 0..20 {
            idle.push(activation_sample(&rt, &mut rx).await?);
        }
        deliver(&rt, "b", &busy_pkg).await?;
        rt.install("b").await?;
        compiles += 1;
        while !rt.wait_optimised(Duration::ZERO).await && loaded.len() < samples {
            loaded.push(activation_sample(&rt, &mut rx).await?);
        }
        rt.wait_optimised(Duration::from_secs(900)).await;
        rt.uninstall("busy").await?;
    }
    println!(
        "\n#### activate() -> `hello` running, with and without a background compile ({compiles} compile(s) of `{}`)\n",
        busy.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    table_head();
    let (_, p99_idle) = row("optimiser idle", &mut idle);
    let (_, p99_busy) = row(
        "optimiser compiling (SCHED_IDLE, nice 19, 1 thread)",
        &mut loaded,
    );
    println!(
        "\np99 added by the background compile: **{:.2} ms** (target ≤ 5 ms)",
        (p99_busy.as_secs_f64() - p99_idle.as_secs_f64()) * 1e3
    );
    rt.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize, d: usize| arg(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let path = |i: usize| arg(i).map(PathBuf::from).context("missing file argument");
    match arg(0) {
        Some("install") => bench_install(arg(1).unwrap_or("x"), &path(2)?, num(3, 5)).await,
        Some("cpu") => bench_cpu(&path(1)?, num(2, 5)).await,
        Some("latency") => bench_latency(&path(1)?, &path(2)?, num(3, 300)).await,
        _ => bail!(
            "usage: fast_install <install LABEL WASM N | cpu WASM N | latency HELLO BUSY SAMPLES>"
        ),
    }
}
