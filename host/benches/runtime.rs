//! Runtime benchmarks for issue 2: install vs a bare precompile, activation and
//! deactivation latency, RSS per idle instance (up to 1000 at once), and the
//! atomic durable write. Speed targets are checked here, never in tests.
//!
//! `cargo bench -p wasmdm --bench runtime -- <part> [args]` where part is
//! `install <label> <file.wasm> <iterations>`, `activation <iterations>`,
//! `memory <instances>` or `atomic <iterations>`. Each part prints Markdown
//! that scripts/bench.sh puts into BENCHMARKS.md. Scratch data directories go
//! under `$WASMDM_BENCH_DIR` (default `target/bench-tmp`, the same disk as the
//! repository) so fsync costs are those of a real data directory.
//! `WASMDM_BENCH_CODE_LOADING=resident|on-demand` picks the runtime's
//! `code-loading` (issue 15; default: the runtime's default).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wasmdm::runtime::{CodeLoading, ComponentState, Runtime, RuntimeConfig};

#[path = "support/stats.rs"]
mod stats;
use stats::{row, scratch, scratch_root, table_head};

fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out")
}

/// Builds a one-component package from `wasm` (same layout as the tests).
fn package(name: &str, wasm: &Path, world: &str, sandbox: &str, extra: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(wasm, dir.path().join("c.wasm")).with_context(|| wasm.display().to_string())?;
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n{extra}\n\
         [[component]]\nid = \"c\"\nfile = \"c.wasm\"\nworld = \"{world}\"\n\
         [component.sandbox]\n{sandbox}\n"
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest)?;
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {})?;
    Ok(out)
}

/// Streams the package into `slot` (64 KiB writes) and verifies it.
async fn deliver(rt: &Runtime, slot: &str, bytes: &[u8]) -> Result<()> {
    let mut d = rt.delivery(slot)?;
    for (i, chunk) in bytes.chunks(64 << 10).enumerate() {
        d.write_at((i * (64 << 10)) as u64, chunk)?;
    }
    d.sync(None)?;
    rt.verify_delivery(slot).await?;
    Ok(())
}

fn config(dir: &Path, instances: u32, mem: u64) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(dir);
    c.engine.max_instances = instances;
    c.engine.max_memory_per_instance = mem;
    // WASMDM_BENCH_RESERVATION=<bytes> measures a device configured with a
    // small address-space reservation (memory-reservation in device.toml).
    if let Some(r) = std::env::var("WASMDM_BENCH_RESERVATION")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.engine.memory_reservation = r;
    }
    match std::env::var("WASMDM_BENCH_CODE_LOADING").as_deref() {
        Ok("resident") => c.engine.code_loading = CodeLoading::Resident,
        Ok("on-demand") => c.engine.code_loading = CodeLoading::OnDemand,
        _ => {}
    }
    c
}

// ---- install ----------------------------------------------------------------

/// `wasmtime compile` (the CLI of the same wasmtime version) as a process on
/// the same file: process start, read, compile, write of the .cwasm. Given by
/// `$WASMDM_BENCH_WASMTIME`; without it the install is compared only with the
/// in-process precompiles.
struct Cli {
    exe: PathBuf,
    out: PathBuf,
}

impl Cli {
    fn from_env() -> Option<Cli> {
        let exe = PathBuf::from(std::env::var_os("WASMDM_BENCH_WASMTIME")?);
        exe.is_file().then(|| Cli {
            exe,
            out: scratch_root().join("cli.cwasm"),
        })
    }

    fn version(&self) -> String {
        std::process::Command::new(&self.exe)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn compile(&self, wasm: &Path, epoch: bool) -> Result<Duration> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("compile");
        if epoch {
            cmd.args(["-W", "epoch-interruption=y"]);
        }
        cmd.arg(wasm).arg("-o").arg(&self.out);
        let t = Instant::now();
        let status = cmd.status().context("run wasmtime compile")?;
        let took = t.elapsed();
        anyhow::ensure!(status.success(), "wasmtime compile failed: {status}");
        Ok(took)
    }
}

/// Install (validate + precompile + durable store) into a fresh data directory
/// each time, so the precompiled-code cache is always cold; next to it, in the
/// same loop so load from elsewhere hits all alike: a bare
/// `Engine::precompile_component` under wasmtime's default `Config` and under
/// the runtime's, and `wasmtime compile` with and without epoch interruption.
async fn bench_install(label: &str, wasm: &Path, iterations: usize) -> Result<()> {
    let size = std::fs::metadata(wasm)?.len();
    let pkg = package(label, wasm, "wasi:cli/command", "", "")?;
    let bytes = std::fs::read(wasm)?;
    let engine = wasmtime::Engine::default();
    // The runtime's code-shaping settings (engine.rs, defaults): epoch checks
    // and a full 4 GiB reservation with a 32 MiB guard (no explicit bounds
    // checks); separates codegen cost from the install's I/O.
    let mut cfg = wasmtime::Config::new();
    cfg.epoch_interruption(true)
        .memory_reservation(wasmdm::runtime::FULL_RESERVATION)
        .memory_guard_size(32 << 20)
        .memory_reservation_for_growth(0);
    let shaped = wasmtime::Engine::new(&cfg).map_err(|e| anyhow::anyhow!("engine: {e:#}"))?;
    let precompile = |engine: &wasmtime::Engine| -> Result<Duration> {
        let t = Instant::now();
        let code = engine
            .precompile_component(&bytes)
            .map_err(|e| anyhow::anyhow!("precompile: {e:#}"))?;
        let took = t.elapsed();
        std::hint::black_box(code);
        Ok(took)
    };
    let cli = Cli::from_env();
    let mut install = Vec::new();
    let mut deliver_t = Vec::new();
    let mut bare = Vec::new();
    let mut like_rt = Vec::new();
    let mut cli_plain = Vec::new();
    let mut cli_epoch = Vec::new();
    for _ in 0..iterations {
        let dir = scratch()?;
        // Cranelift, like `wasmtime compile` (Winch installs: the
        // fast_install bench, issue 13).
        let mut c = config(dir.path(), 4, 64 << 20);
        c.engine.compiler = wasmdm::runtime::CompilerChoice::Cranelift;
        let rt = Runtime::open(c).await?;
        let t = Instant::now();
        deliver(&rt, "s", &pkg).await?;
        deliver_t.push(t.elapsed());
        let t = Instant::now();
        rt.install("s").await?;
        install.push(t.elapsed());
        rt.shutdown().await;
        bare.push(precompile(&engine)?);
        like_rt.push(precompile(&shaped)?);
        if let Some(cli) = &cli {
            cli_plain.push(cli.compile(wasm, false)?);
            cli_epoch.push(cli.compile(wasm, true)?);
        }
    }
    println!(
        "\n#### install `{label}` ({size} bytes, {:.2} MiB)\n",
        size as f64 / 1048576.0
    );
    table_head();
    row(
        &format!("deliver + verify `{label}` package ({} bytes)", pkg.len()),
        &mut deliver_t,
    );
    let mut marks = vec![(
        "INSTALL",
        row(
            &format!("Runtime::install `{label}` (cold cache)"),
            &mut install,
        ),
        &install,
    )];
    let p_bare = row(
        &format!("bare Engine::precompile_component `{label}`, default Config"),
        &mut bare,
    );
    marks.push(("BARE", p_bare, &bare));
    let p_shaped = row(
        &format!(
            "bare precompile `{label}`, runtime's Config (epoch interruption, 4 GiB reservation)"
        ),
        &mut like_rt,
    );
    marks.push(("SHAPED", p_shaped, &like_rt));
    if let Some(cli) = &cli {
        let version = cli.version();
        let p = row(
            &format!("`{version}`: `wasmtime compile {label}.wasm -o {label}.cwasm`"),
            &mut cli_plain,
        );
        marks.push(("CLI", p, &cli_plain));
        let p = row(
            &format!(
                "`{version}`: `wasmtime compile -W epoch-interruption=y {label}.wasm -o {label}.cwasm`"
            ),
            &mut cli_epoch,
        );
        marks.push(("CLI_EPOCH", p, &cli_epoch));
    }
    println!(
        "\nratio install / bare precompile (p50): **{:.2}**",
        marks[0].1.as_secs_f64() / p_bare.as_secs_f64()
    );
    // p50s, and minimums too: on a shared machine they are the steadiest
    // estimate of the work itself (`row` sorted the samples).
    for (name, p50, samples) in marks {
        println!("{name}_P50_MS {label} {:.3}", p50.as_secs_f64() * 1e3);
        let min = samples.first().copied().unwrap_or_default();
        println!("{name}_MIN_MS {label} {:.3}", min.as_secs_f64() * 1e3);
    }
    Ok(())
}

// ---- activation ---------------------------------------------------------------

#[path = "support/log_lines.rs"]
mod log_lines;

/// The next line of `component` that `pred` accepts (10 s at most).
async fn next_line(
    rx: &mut mpsc::UnboundedReceiver<log_lines::Seen>,
    component: &str,
    pred: impl Fn(&log_lines::Seen) -> bool,
) -> Result<log_lines::Seen> {
    log_lines::next_line(rx, component, Duration::from_secs(10), pred).await
}

async fn wait_state(rt: &Runtime, pkg: &str, state: ComponentState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = rt.status(pkg)?;
        if st.components.iter().all(|c| c.state == state) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{pkg} did not reach {state:?}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Activate -> first stdout line, split into the call (durable write included)
/// and the in-memory start; then deactivation of the cooperative counter.
async fn bench_activation(iterations: usize) -> Result<()> {
    let mut rx = log_lines::capture()?;

    let dir = scratch()?;
    let rt = Runtime::open(config(dir.path(), 16, 64 << 20)).await?;
    let g = guests_dir();
    let warmup = 10;
    // Copies of each package, taken in turn: each component's host log
    // budget (16 KiB burst, 1 KiB/s) holds ~30 quick activations' lines.
    let copies = (iterations + warmup).div_ceil(20);
    for k in 0..copies {
        let counter = package(
            &format!("counter-{k}"),
            &g.join("counter.wasm"),
            "wasmdm:device/app",
            "memory = \"16MiB\"\nstop-grace-ms = 2000",
            "[config]\ninterval-ms = \"3600000\"\n",
        )?;
        let hello = package(
            &format!("hello-{k}"),
            &g.join("hello.wasm"),
            "wasi:cli/command",
            "env = { GREETING = \"hi\" }",
            "",
        )?;
        for (slot, bytes) in [("counter", &counter), ("hello", &hello)] {
            deliver(&rt, slot, bytes).await?;
            rt.install(slot).await?;
        }
    }

    for (base, cooperative) in [("counter", true), ("hello", false)] {
        let (mut call, mut first, mut inmem, mut deact) = (vec![], vec![], vec![], vec![]);
        for i in 0..iterations + warmup {
            let pkg = format!("{base}-{}", i % copies);
            let pkg = pkg.as_str();
            let comp = format!("{pkg}/c");
            while rx.try_recv().is_ok() {}
            let t0 = Instant::now();
            rt.activate(pkg, None).await?;
            let t1 = Instant::now();
            let started = next_line(&mut rx, &comp, |s| {
                s.source == "Host" && s.text == "started"
            })
            .await?;
            let out = next_line(&mut rx, &comp, |s| s.source == "Stdout").await?;
            if cooperative {
                // Idle in wait-for-stop before asking it to stop.
                next_line(&mut rx, &comp, |s| {
                    s.source == "Stdout" && s.text.starts_with("count=")
                })
                .await?;
            } else {
                wait_state(&rt, pkg, ComponentState::Exited).await?;
            }
            let d0 = Instant::now();
            rt.deactivate(pkg, None).await?;
            let d1 = Instant::now();
            if i >= warmup {
                call.push(t1 - t0);
                first.push(out.at - t0);
                inmem.push(out.at.saturating_duration_since(started.at));
                deact.push(d1 - d0);
            }
        }
        let guest = if cooperative {
            "`counter` (wasmdm:device/app, 16 MiB)"
        } else {
            "`hello` (wasi:cli/command)"
        };
        println!("\n#### activation of {guest}\n");
        table_head();
        row(
            "in-memory: supervisor start -> instantiate -> first stdout line",
            &mut inmem,
        );
        row(
            "activate() call (record written durably, instance spawned)",
            &mut call,
        );
        row("activate() call start -> first stdout line", &mut first);
        if cooperative {
            row(
                "deactivate() of idle counter (durable write + stop + drop)",
                &mut deact,
            );
        }
    }
    rt.shutdown().await;
    Ok(())
}

// ---- memory -------------------------------------------------------------------

/// (VmRSS, RssAnon, RssFile) in KiB.
fn rss() -> Result<(u64, u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let get = |key: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((get("VmRSS:"), get("RssAnon:"), get("RssFile:")))
}

fn rss_row(what: &str, r: (u64, u64, u64)) {
    println!("| {what} | {} | {} | {} |", r.0, r.1, r.2);
}

async fn wait_idle(rt: &Runtime, names: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in names {
        loop {
            let idle = rt
                .logs(n, "c")?
                .iter()
                .any(|l| l.text.starts_with("count="));
            if idle {
                break;
            }
            let st = rt.status(n)?;
            if st
                .components
                .iter()
                .any(|c| matches!(c.state, ComponentState::Failed | ComponentState::Exited))
            {
                bail!("{n} ended: {st:?}");
            }
            if Instant::now() > deadline {
                bail!("{n} not idle after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Let the last ones settle into wait-for-stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// RSS with nothing active, then with `n` idle counters (each its own package,
/// memory limit 2 MiB, interval 1 h), pool sized from the configuration.
async fn bench_memory(n: usize) -> Result<()> {
    let before_open = rss()?;
    let dir = scratch()?;
    let slots = u32::try_from(n + n / 50 + 8)?;
    let rt = Runtime::open(config(dir.path(), slots, 2 << 20)).await?;
    let opened = rss()?;
    let wasm = guests_dir().join("counter.wasm");
    let mut names = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let name = format!("counter-{i:04}");
        let pkg = package(
            &name,
            &wasm,
            "wasmdm:device/app",
            // 8 descriptors each (x2 resources): 1000 fit a process
            // limit of 20000.
            "memory = \"2MiB\"\nstop-grace-ms = 2000\nlog-cap = \"4KiB\"\nmax-descriptors = 8",
            "[config]\ninterval-ms = \"3600000\"\n",
        )?;
        deliver(&rt, &name, &pkg).await?;
        rt.install(&name).await?;
        names.push(name);
    }
    let install_all = t.elapsed();
    let installed = rss()?;
    let loaded_inactive = rt.loaded_components();
    // The same directory opened by a fresh process (what a device restarted
    // with n inactive packages holds), against an empty one: without what
    // installing left in this process's allocator.
    rt.shutdown().await;
    drop(rt);
    let empty = scratch()?;
    let fresh_empty = open_rss_child(empty.path(), slots)?;
    let fresh_installed = open_rss_child(dir.path(), slots)?;
    let rt = Runtime::open(config(dir.path(), slots, 2 << 20)).await?;
    let first = (n / 10).max(1).min(n);
    let t = Instant::now();
    for name in names.iter().take(first) {
        rt.activate(name, None).await?;
    }
    wait_idle(&rt, names.get(..first).unwrap_or_default()).await?;
    let some = rss()?;
    for name in names.iter().skip(first) {
        rt.activate(name, None).await?;
    }
    wait_idle(&rt, &names).await?;
    let activate_all = t.elapsed();
    let all = rss()?;
    let running = rt
        .list()
        .iter()
        .flat_map(|p| p.components.iter())
        .filter(|c| c.state == ComponentState::Running)
        .count();
    println!(
        "\n#### memory, {n} `counter` packages (memory 2 MiB, interval 1 h), pool of {slots} slots\n"
    );
    println!(
        "code-loading = {}\n",
        config(dir.path(), 1, 1).engine.code_loading
    );
    println!("| point | VmRSS KiB | RssAnon KiB | RssFile KiB |");
    println!("|---|---|---|---|");
    rss_row("process start (bench binary, tokio)", before_open);
    rss_row("Runtime::open, nothing installed", opened);
    rss_row(
        &format!("{n} packages installed, nothing active ({loaded_inactive} components loaded)"),
        installed,
    );
    rss_row(
        "fresh process: Runtime::open of an empty data dir",
        fresh_empty,
    );
    rss_row(
        &format!("fresh process: Runtime::open with the {n} packages installed"),
        fresh_installed,
    );
    rss_row(&format!("{first} counters active and idle"), some);
    rss_row(
        &format!("{n} counters active and idle ({running} Running)"),
        all,
    );
    let per = |a: (u64, u64, u64), b: (u64, u64, u64), k: usize| {
        (
            (b.0 as f64 - a.0 as f64) / k as f64,
            (b.1 as f64 - a.1 as f64) / k as f64,
        )
    };
    let (f1, fa1) = per(fresh_empty, fresh_installed, n);
    println!(
        "\nRSS per installed, inactive package (fresh process): **{f1:.1} KiB** VmRSS ({fa1:.1} KiB anonymous)"
    );
    let (v1, a1) = per(installed, all, n);
    let (v2, a2) = per(some, all, n - first);
    println!(
        "\nadded RSS per active idle counter: **{v1:.1} KiB** VmRSS ({a1:.1} KiB anonymous) over all {n}; \
         {v2:.1} KiB ({a2:.1} KiB anonymous) between {first} and {n}"
    );
    println!(
        "\ninstalling {n} packages took {:.1} s; activating {n} until all idle took {:.1} s",
        install_all.as_secs_f64(),
        activate_all.as_secs_f64()
    );
    let t = Instant::now();
    rt.shutdown().await;
    println!(
        "\nstopping all {n} (shutdown) took {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs this bench binary as `open-rss DIR SLOTS`: (VmRSS, RssAnon, RssFile)
/// of a fresh process once it has opened `dir`.
fn open_rss_child(dir: &Path, slots: u32) -> Result<(u64, u64, u64)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("open-rss")
        .arg(dir)
        .arg(slots.to_string())
        .output()?;
    if !out.status.success() {
        bail!("open-rss: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let v: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("open-rss printed {text:?}"))?;
    match v.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => bail!("open-rss printed {text:?}"),
    }
}

/// The child side of [`open_rss_child`]: opens without starting anything
/// (nothing is active), lets the open settle, prints its RSS.
async fn open_rss(dir: &Path, slots: u32) -> Result<()> {
    let mut c = config(dir, slots, 2 << 20);
    c.autostart = false;
    let rt = Runtime::open(c).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = rss()?;
    println!("{} {} {}", r.0, r.1, r.2);
    drop(rt);
    Ok(())
}

// ---- atomic write -----------------------------------------------------------------

/// `wasmdm::state::atomic_write` of a package-record-sized file (temp, fsync,
/// rename, fsync dir), replacing the same path each time like the runtime does.
fn bench_atomic(iterations: usize) -> Result<()> {
    let dir = scratch()?;
    let path = dir.path().join("record.json");
    let body = vec![b'x'; 600];
    let mut t = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let s = Instant::now();
        wasmdm::state::atomic_write(&path, &body)?;
        t.push(s.elapsed());
    }
    println!("\n#### atomic durable write\n");
    table_head();
    row(
        "state::atomic_write, 600 bytes, same path (temp, fsync, rename, fsync dir)",
        &mut t,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // `cargo bench` appends `--bench`; keep only our own arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize, d: usize| arg(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match arg(0) {
        Some("install") => {
            let label = arg(1).unwrap_or("hello");
            let wasm = arg(2)
                .map(PathBuf::from)
                .unwrap_or_else(|| guests_dir().join("hello.wasm"));
            bench_install(label, &wasm, num(3, 10)).await
        }
        Some("activation") => bench_activation(num(1, 200)).await,
        Some("memory") => bench_memory(num(1, 1000)).await,
        Some("atomic") => bench_atomic(num(1, 2000)),
        Some("open-rss") => {
            let dir = arg(1).context("open-rss DIR SLOTS")?;
            open_rss(Path::new(dir), u32::try_from(num(2, 100))?).await
        }
        _ => bail!("usage: runtime <install LABEL WASM N | activation N | memory N | atomic N>"),
    }
}
