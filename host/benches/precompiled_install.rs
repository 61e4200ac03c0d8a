//! Issue 13 part 2 benchmark: install of the package variant a server built
//! for this device (Cranelift code for its engine hash, signed with a
//! native-code key the device trusts) against a Cranelift install of the
//! plain package. Figures go into BENCHMARKS.md ("Server-precompiled
//! install"); nothing here is asserted in tests.
//!
//! `cargo bench -p wasmdm --bench precompiled_install -- <label> <file.wasm> <iterations>`:
//! install -> INSTALLED and install -> the guest's first stdout line, and the
//! process's peak RSS during install (VmHWM, reset before each install; as
//! added to the RSS before, and absolute), both ways alternately in one loop.
//! Then the device's own peak: a fresh process (this bench, run as
//! `device-install`) that opens a runtime, receives the variant from disk in
//! 64 KiB blocks, installs it and starts the guest, reporting its VmHWM.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmdm::runtime::{CompilerChoice, Runtime, RuntimeConfig, Tier};
use wasmdm_server::precompile::variant::{self, Artifact};

#[path = "support/rss.rs"]
mod rss;
#[path = "support/stats.rs"]
mod stats;
use rss::{reset_peak, rss_kib};
use stats::{fmt, row, scratch};

#[path = "support/log_lines.rs"]
mod log_lines;

fn package(name: &str, wasm: &Path) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(wasm, dir.path().join("c.wasm")).with_context(|| wasm.display().to_string())?;
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"c\"\nfile = \"c.wasm\"\nworld = \"wasi:cli/command\"\n\
         [component.sandbox]\nmemory = \"256MiB\"\ncpu = \"100%\"\n"
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest)?;
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {})?;
    Ok(out)
}

fn config(
    dir: &Path,
    compiler: CompilerChoice,
    key: wasmdm_package::VerifyingKey,
) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(dir);
    c.engine.max_instances = 8;
    c.engine.compiler = compiler;
    c.engine.native_code_keys = vec![key];
    c.max_package_bytes = 1 << 30;
    c.package_limits.max_file_bytes = 256 << 20;
    c.package_limits.max_total_bytes = 512 << 20;
    c
}

async fn deliver(rt: &Runtime, bytes: &[u8]) -> Result<()> {
    let mut d = rt.delivery("s")?;
    for (i, chunk) in bytes.chunks(64 << 10).enumerate() {
        d.write_at((i * (64 << 10)) as u64, chunk)?;
    }
    d.sync(None)?;
    rt.verify_delivery("s").await?;
    Ok(())
}

#[derive(Default)]
struct Runs {
    installed: Vec<Duration>,
    first_line: Vec<Duration>,
    added_mib: Vec<f64>,
    peak_mib: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The child: a device that installs the variant at `args[1]` (public key
/// file `args[2]`, label `args[3]`); prints its RSS before install and its
/// peak until the guest's first line, KiB.
async fn device_install(args: &[String]) -> Result<()> {
    let (Some(file), Some(key), Some(label)) = (args.get(1), args.get(2), args.get(3)) else {
        bail!("device-install FILE KEY LABEL");
    };
    let mut rx = log_lines::capture()?;
    let key = wasmdm_package::signing::load_public_key(Path::new(key))?;
    let dir = scratch()?;
    let rt = Runtime::open(config(dir.path(), CompilerChoice::Auto, key)).await?;
    {
        use std::io::Read as _;
        let mut f = std::fs::File::open(file)?;
        let mut d = rt.delivery("s")?;
        let mut buf = vec![0u8; 64 << 10];
        let mut at = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            d.write_at(at, &buf[..n])?;
            at += n as u64;
        }
        d.sync(None)?;
    }
    rt.verify_delivery("s").await?;
    reset_peak();
    let (_, before) = rss_kib();
    rt.install("s").await?;
    rt.activate(label, None).await?;
    log_lines::next_line(
        &mut rx,
        &format!("{label}/c"),
        Duration::from_secs(120),
        |s| s.source == "Stdout",
    )
    .await?;
    anyhow::ensure!(rt.code_tier(label, "c")? == Tier::Optimised, "not adopted");
    let (peak, _) = rss_kib();
    println!("DEVICE {before} {peak}");
    rt.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("device-install") {
        return device_install(&args).await;
    }
    let (Some(label), Some(wasm)) = (args.first(), args.get(1)) else {
        bail!("usage: precompiled_install LABEL WASM [N]");
    };
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let wasm = PathBuf::from(wasm);
    let mut rx = log_lines::capture()?;
    let size = std::fs::metadata(&wasm)?.len();
    let work = scratch()?;
    let plain_path = work.path().join("plain.wdm");
    let variant_path = work.path().join("variant.wdm");
    let (operator, operator_pub) = wasmdm_package::keygen()?;

    // What the server does once per engine hash.
    let t = Instant::now();
    let plain = package(label, &wasm)?;
    let code_bytes = std::fs::read(&wasm)?;
    let engine_cfg = config(work.path(), CompilerChoice::Auto, operator_pub).engine;
    let (compat, code) = wasmdm::runtime::precompile(&engine_cfg, &code_bytes)?;
    let sha = wasmdm_package::Digest::of(&code_bytes).to_hex();
    let signature = wasmdm::runtime::sign_artifact(&operator, &sha, &compat, &code);
    let code_len = code.len();
    let built = variant::build(
        &plain,
        2 << 30,
        &[Artifact {
            component_sha256: sha,
            engine: compat,
            code,
            signature,
        }],
    )?;
    let server_time = t.elapsed();
    std::fs::write(&plain_path, &plain)?;
    std::fs::write(&variant_path, &built)?;
    let (plain_len, variant_len) = (plain.len(), built.len());
    drop((plain, built, code_bytes));

    let peak_ok = reset_peak();
    let component = format!("{label}/c");
    let mut runs: [Runs; 2] = Default::default();
    for _ in 0..n {
        for (k, (compiler, file)) in [
            (CompilerChoice::Cranelift, &plain_path),
            (CompilerChoice::Auto, &variant_path),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = scratch()?;
            let rt = Runtime::open(config(dir.path(), compiler, operator_pub)).await?;
            let bytes = std::fs::read(file)?;
            deliver(&rt, &bytes).await?;
            drop(bytes);
            while rx.try_recv().is_ok() {}
            reset_peak();
            let (_, before) = rss_kib();
            let t0 = Instant::now();
            rt.install("s").await?;
            let t1 = Instant::now();
            let (peak, _) = rss_kib();
            rt.activate(label, None).await?;
            let line = log_lines::next_line(&mut rx, &component, Duration::from_secs(120), |s| {
                s.source == "Stdout"
            })
            .await?;
            if k == 1 {
                let tier = rt.code_tier(label, "c")?;
                anyhow::ensure!(tier == Tier::Optimised, "the variant's code was not used");
            }
            let r = &mut runs[k];
            r.installed.push(t1 - t0);
            r.first_line.push(line.at - t0);
            r.added_mib
                .push(peak.saturating_sub(before) as f64 / 1024.0);
            r.peak_mib.push(peak as f64 / 1024.0);
            rt.shutdown().await;
        }
    }
    println!(
        "\n#### server-precompiled install of `{label}` ({size} bytes, {:.1} MiB)\n",
        size as f64 / 1048576.0
    );
    println!(
        "Package {:.1} MiB; variant with the code {:.1} MiB (code {:.1} MiB); \
         server side (compile, sign, build the variant, once per engine hash): {}.\n",
        plain_len as f64 / 1048576.0,
        variant_len as f64 / 1048576.0,
        code_len as f64 / 1048576.0,
        fmt(server_time)
    );
    println!("| measurement | n | p50 | p99 | min | max |");
    println!("|---|---|---|---|---|---|");
    let names = [
        "Cranelift install of the plain package (`compiler = \"cranelift\"`)",
        "install of the server-precompiled variant",
    ];
    let mut p50 = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let r = &mut runs[k];
        let a = row(&format!("{name}: install -> INSTALLED"), &mut r.installed);
        let b = row(
            &format!("{name}: install -> guest's first line"),
            &mut r.first_line,
        );
        p50.push((a, b));
    }
    if peak_ok {
        println!(
            "\n| peak RSS during install | n | added (median) | added (max) | process VmHWM (median) | process VmHWM (max) |"
        );
        println!("|---|---|---|---|---|---|");
        for (k, name) in names.iter().enumerate() {
            let r = &mut runs[k];
            let max_added = r.added_mib.iter().copied().fold(0.0, f64::max);
            let max_peak = r.peak_mib.iter().copied().fold(0.0, f64::max);
            println!(
                "| {name} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
                r.added_mib.len(),
                median(&mut r.added_mib),
                max_added,
                median(&mut r.peak_mib),
                max_peak
            );
        }
    }
    // The device's own peak, each install in a fresh process.
    let key_file = work.path().join("operator.pub");
    wasmdm_package::signing::save_public_key(&key_file, &operator_pub)?;
    let mut device: Vec<(f64, f64)> = Vec::new();
    for _ in 0..n {
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg("device-install")
            .arg(&variant_path)
            .arg(&key_file)
            .arg(label)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("DEVICE "))
            .with_context(|| {
                format!(
                    "device-install: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let v: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [before, peak] = v[..] {
            device.push((before / 1024.0, peak / 1024.0));
        }
    }
    if !device.is_empty() {
        let mut peaks: Vec<f64> = device.iter().map(|d| d.1).collect();
        let mut befores: Vec<f64> = device.iter().map(|d| d.0).collect();
        let max_peak = peaks.iter().copied().fold(0.0, f64::max);
        println!(
            "\nDevice process (fresh `device-install` process per install): VmRSS before install \
             {:.1} MiB (median), VmHWM from install to the guest's first line {:.1} MiB median, \
             {:.1} MiB max (n = {}; target ≤ 64 MiB)",
            median(&mut befores),
            median(&mut peaks),
            max_peak,
            device.len()
        );
    }
    let ratio = |i: usize| {
        let (c, p) = (p50[0], p50[1]);
        let (c, p) = if i == 0 { (c.0, p.0) } else { (c.1, p.1) };
        p.as_secs_f64() / c.as_secs_f64().max(1e-9)
    };
    println!(
        "\nratio precompiled / Cranelift, p50: install -> INSTALLED **{:.3}**, \
         install -> first line **{:.3}** (target ≤ 0.05)",
        ratio(0),
        ratio(1)
    );
    Ok(())
}
