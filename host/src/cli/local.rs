//! Commands on a local data directory and foreground runs:
//! `wasmdm run | install | activate | deactivate | uninstall | list | logs`.

use super::DataDirArgs;
use anyhow::Context;
use std::io::Read;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wasmdm::runtime::{ExitStatus, ForegroundOptions, Runtime, RuntimeConfig, StopHandle};
use wasmdm_package::display::{escape, escape_json};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A package file (.wdm) or a component (.wasm).
    pub target: PathBuf,
    /// Which component of a package to run (default: the first).
    #[arg(long)]
    pub component: Option<String>,
    /// A host directory to mount at /data (a package that grants /data gets
    /// a temporary one otherwise, removed at exit; a bare .wasm gets none).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// For a bare .wasm: arguments passed to the component.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// The package file.
    pub package: PathBuf,
    /// Refuse packages not signed by this public key (repeatable).
    #[arg(long = "trust", value_name = "PUBLIC_KEY")]
    pub trusted_keys: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Package name.
    pub package: String,
    /// Only this component of the package.
    #[arg(long)]
    pub component: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Package name.
    pub package: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Package name.
    pub package: String,
    /// Component id (default: every component of the package).
    #[arg(long)]
    pub component: Option<String>,
}

/// Opens the data directory for a one-shot command: nothing is started.
async fn open(data_dir: &DataDirArgs, trusted: &[PathBuf]) -> anyhow::Result<Runtime> {
    let mut config = RuntimeConfig::new(data_dir.resolve());
    config.autostart = false;
    config.trusted_keys = trusted
        .iter()
        .map(|p| {
            wasmdm_package::signing::load_public_key(p)
                .with_context(|| format!("cannot load {}", p.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    Runtime::open(config)
        .await
        .context("cannot open the data directory")
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let stop = StopHandle::new();
    let on_ctrl_c = stop.clone();
    // Ctrl-C or SIGTERM (a service manager, `timeout`): the guest's
    // graceful stop, so the run ends as on a device (and a temporary /data
    // is removed); a second one forces it.
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut signalled = async || match term.as_mut() {
            Some(t) => tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = t.recv() => r.is_some(),
            },
            None => tokio::signal::ctrl_c().await.is_ok(),
        };
        if signalled().await {
            eprintln!("stopping (Ctrl-C again to force)...");
            on_ctrl_c.stop();
            if signalled().await {
                std::process::exit(130);
            }
        }
    });
    // A package's /data as on a device, but for this run only.
    let is_package = args.target.extension().is_none_or(|e| e != "wasm");
    let scratch = match (&args.data, is_package) {
        (None, true) => Some(tempfile::tempdir().context("cannot create a temporary /data")?),
        _ => None,
    };
    if let Some(dir) = &scratch {
        eprintln!(
            "note: /data is a temporary directory ({}), removed at exit; --data DIR keeps it",
            dir.path().display()
        );
    }
    let mut options = ForegroundOptions {
        component: args.component,
        data_dir: args
            .data
            .or_else(|| scratch.as_ref().map(|d| d.path().to_path_buf())),
        ..Default::default()
    };
    if options.data_dir.is_none() {
        options.sandbox.data_dir = false;
    }
    options.sandbox.args = args.args;
    let status = wasmdm::runtime::run_foreground(&args.target, options, stop).await?;
    eprintln!("{}: {}", args.target.display(), describe_exit(&status));
    Ok(match status {
        ExitStatus::Exited(0) | ExitStatus::Stopped { forced: false } => ExitCode::SUCCESS,
        ExitStatus::Exited(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    })
}

pub async fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.data_dir, &args.trusted_keys).await?;
    let slot = "cli";
    let result = deliver_file(&runtime, slot, &args.package).await;
    let info = match result {
        Ok(()) => with_progress("compiling to native code", runtime.install(slot)).await,
        Err(e) => {
            let _ = runtime.discard_delivery(slot).await;
            return Err(e);
        }
    };
    let _ = runtime.discard_delivery(slot).await;
    let info = info.with_context(|| format!("cannot install {}", args.package.display()))?;
    // Names and versions come from the package: printed escaped (README "Limits").
    let (name, version) = (escape(&info.name), escape(&info.version));
    match &info.upgraded_from {
        Some(old) => println!("upgraded {name} {} -> {version}", escape(old)),
        None => println!("installed {name} {version}"),
    }
    for (id, version) in &info.components {
        println!("  component {} {}", escape(id), escape(version));
    }
    runtime.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Runs long work with a line on stderr: what it does, elapsed seconds
/// while it runs (on a terminal), and how long it took.
async fn with_progress<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    use std::io::IsTerminal;
    let start = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    if tty {
        eprint!("  {what} ...");
    }
    tokio::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.tick().await;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick(), if tty => {
                eprint!("\r  {what} ... {} s", start.elapsed().as_secs());
            }
        }
    };
    // On a terminal, overwrite the running line (padding clears its tail).
    let (cr, pad) = if tty { ("\r", "    ") } else { ("", "") };
    eprintln!("{cr}  {what}: {:.1} s{pad}", start.elapsed().as_secs_f64());
    out
}

/// Streams a package file into a delivery slot and verifies it.
async fn deliver_file(runtime: &Runtime, slot: &str, path: &Path) -> anyhow::Result<()> {
    let mut delivery = runtime.delivery(slot)?;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        delivery.write_at(offset, buf.get(..n).unwrap_or_default())?;
        offset += n as u64;
        if total > 8 << 20 {
            eprint!("\r  delivered {} / {} KiB", offset / 1024, total / 1024);
        }
    }
    if total > 8 << 20 {
        eprintln!();
    }
    delivery.sync(None)?;
    let info = runtime.verify_delivery(slot).await?;
    eprintln!(
        "  verified {} {}{}",
        escape(&info.name),
        escape(&info.version),
        match &info.signed_by {
            Some(key) => format!(" (signed by {})", escape(key)),
            None => String::new(),
        }
    );
    Ok(())
}

pub async fn activate(args: TargetArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.data_dir, &[]).await?;
    runtime
        .activate(&args.package, args.component.as_deref())
        .await?;
    println!(
        "{} marked active: it starts when the device host runs (`wasmdm device`); nothing was run now",
        target_name(&args.package, args.component.as_deref())
    );
    runtime.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn deactivate(args: TargetArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.data_dir, &[]).await?;
    runtime
        .deactivate(&args.package, args.component.as_deref())
        .await?;
    println!(
        "{} deactivated",
        target_name(&args.package, args.component.as_deref())
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.data_dir, &[]).await?;
    runtime.uninstall(&args.package).await?;
    println!("uninstalled {}", args.package);
    Ok(ExitCode::SUCCESS)
}

pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.data_dir, &[]).await?;
    let packages = runtime.list();
    if args.json {
        println!("{}", escape_json(&serde_json::to_string_pretty(&packages)?));
        return Ok(ExitCode::SUCCESS);
    }
    if packages.is_empty() {
        println!("no packages installed in {}", runtime.data_dir().display());
    }
    for p in packages {
        println!(
            "{} {}{}",
            escape(&p.name),
            escape(&p.version),
            if p.for_update {
                " (prepared for update)"
            } else {
                ""
            }
        );
        for c in p.components {
            // The last exit and crash loop come from the component's exit
            // record when the device (another process) ran it.
            println!(
                "  {:<20} {:<8} {:<10} restarts={}{}{}",
                escape(&c.id),
                escape(&c.version),
                if c.active { "active" } else { "inactive" },
                c.restart_count,
                c.last_exit
                    .map(|e| format!(" last exit: {}", describe_exit(&e)))
                    .unwrap_or_default(),
                if c.crash_loop { " (crash loop)" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    // Read the device's log files directly: no lock needed, so this works
    // while `wasmdm device` runs, and after it stopped.
    let dir = wasmdm::state::DataDir::at(&args.data_dir.resolve())
        .logs_root()
        .join(&args.package);
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "no logs for package {:?} in {}",
            args.package,
            dir.display()
        )
    })?;
    let mut components: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .map(str::to_owned)
        })
        .filter(|c| args.component.as_ref().is_none_or(|id| id == c))
        .collect();
    components.sort();
    let mut out = std::io::stdout().lock();
    for component in components {
        for line in wasmdm::runtime::read_log_file(&dir.join(format!("{component}.log"))) {
            // Guest output: escaped, so a guest cannot drive the operator's terminal.
            let written = writeln!(out, "[{}] {}", escape(&component), escape(&line));
            // `wasmdm logs … | head`: the reader is gone, which is no error.
            if let Err(e) = written {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(e.into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn target_name(package: &str, component: Option<&str>) -> String {
    match component {
        Some(c) => format!("{package}/{c}"),
        None => package.to_string(),
    }
}

fn describe_exit(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Exited(code) => format!("exited with code {code}"),
        ExitStatus::Trapped(msg) => format!("trapped: {}", escape(msg)),
        ExitStatus::MemoryLimitExceeded { limit } => {
            format!("stopped: memory limit of {limit} bytes exceeded")
        }
        ExitStatus::DiskQuotaExceeded { quota } => {
            format!("stopped: /data quota of {quota} bytes exceeded")
        }
        ExitStatus::Stopped { forced: false } => "stopped".into(),
        ExitStatus::Stopped { forced: true } => {
            "stopped (interrupted after the grace period)".into()
        }
        other => format!("{other:?}"),
    }
}
