//! `wasmdm device | server | ctl`: the LwM2M sides.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use wasmdm::device::config::DeviceConfig;

#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// TOML config file (every key optional; see README "Device configuration").
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// LwM2M server URI (default coap://127.0.0.1:5683).
    #[arg(long)]
    pub server: Option<String>,
    /// Endpoint client name (default: the host name).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Registration lifetime in seconds.
    #[arg(long)]
    pub lifetime: Option<u32>,
    /// Local UDP address to bind (default 0.0.0.0:0).
    #[arg(long)]
    pub bind: Option<String>,
    /// PEM file of extra CA certificates trusted for https package pulls.
    #[arg(long)]
    pub download_ca: Option<PathBuf>,
    /// Whether https pulls also trust the built-in public roots (default true).
    #[arg(long)]
    pub download_public_roots: Option<bool>,
    #[command(flatten)]
    pub data_dir: super::DataDirArgs,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the example guests were built (scripts/build-guests.sh).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-examples/out"))]
    pub guests: PathBuf,
    /// Number of devices.
    #[arg(long, default_value_t = 3)]
    pub devices: usize,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// UDP address for CoAP (LwM2M registration, device management, file pulls).
    #[arg(long, default_value = "0.0.0.0:5683")]
    pub coap: std::net::SocketAddr,
    /// TCP address for the HTTP API and HTTP file pulls.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: std::net::SocketAddr,
    /// Where the server keeps its database and software files
    /// (default: $XDG_DATA_HOME/wasmdm-server or ~/.local/share/wasmdm-server).
    #[arg(long, env = "WASMDM_SERVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Arguments for the server's API client (`wasmdm ctl help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub async fn device(args: DeviceArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => DeviceConfig::load(path)?,
        None => DeviceConfig::default(),
    };
    if let Some(v) = args.server {
        config.server = v;
    }
    if let Some(v) = args.endpoint {
        config.endpoint = v;
    }
    if let Some(v) = args.lifetime {
        config.lifetime = v;
    }
    if let Some(v) = args.bind {
        config.bind = v;
    }
    if let Some(v) = args.data_dir.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.download_ca {
        config.download_ca = Some(v);
    }
    if let Some(v) = args.download_public_roots {
        config.download_public_roots = v;
    }
    let stopped = wasmdm::device::run(config, shutdown_signal())
        .await
        .context("device stopped")?;
    if stopped == wasmdm::device::Stopped::RebootRequested {
        reexec()?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = wasmdm::demo::DemoOptions {
        guests: args.guests,
        devices: args.devices.clamp(1, 50),
    };
    wasmdm::demo::run(options).await.context("demo failed")?;
    println!("== demo complete");
    Ok(ExitCode::SUCCESS)
}

pub async fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.unwrap_or_else(|| {
        wasmdm::device::config::default_data_dir().with_file_name("wasmdm-server")
    });
    let config = wasmdm_server::ServerConfig::new(args.coap, args.http, data_dir);
    wasmdm_server::serve(config, shutdown_signal())
        .await
        .context("server stopped")?;
    Ok(ExitCode::SUCCESS)
}

pub async fn ctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    if args.args.is_empty() || matches!(args.args[0].as_str(), "help" | "--help" | "-h") {
        println!("{}", wasmdm_server::ctl::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let result = tokio::task::spawn_blocking(move || {
        // Replies carry names and texts from devices and packages: escaped line by line.
        let mut out = wasmdm_package::display::LineEscaper::new(std::io::stdout());
        wasmdm_server::ctl::ctl_main(&args.args, &mut out)
    })
    .await?;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Reboot (/3/0/4) of a host process: start this program afresh with the
/// same arguments (state is all on disk; apps were stopped cleanly).
fn reexec() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the wasmdm executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&exe).args(&args).exec();
        Err(anyhow::anyhow!("cannot restart {}: {err}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        std::process::Command::new(&exe).args(&args).spawn()?;
        Ok(())
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
