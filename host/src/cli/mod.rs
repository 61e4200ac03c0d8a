//! Command-line surface: argument types and dispatch, no logic.

mod local;
mod package;
mod remote;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// WebAssembly component runtime for edge devices, managed over OMA LwM2M.
#[derive(Debug, Parser)]
#[command(name = "wasmdm", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by the commands that work on a device's data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArgs {
    /// The device's data directory (default: $XDG_DATA_HOME/wasmdm or ~/.local/share/wasmdm).
    #[arg(long, env = "WASMDM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    pub fn resolve(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(wasmdm::device::config::default_data_dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole story on loopback: a server, devices, a group install and a group upgrade.
    Demo(remote::DemoArgs),
    /// Run this machine as an LwM2M-managed device (embedded defaults; no config needed).
    Device(remote::DeviceArgs),
    /// Run the LwM2M server that installs and upgrades software on devices and groups.
    Server(remote::ServerArgs),
    /// Control a running `wasmdm server` through its HTTP API.
    Ctl(remote::CtlArgs),
    /// Start a guest project (command, app, or app serving an LwM2M object) that builds and packs as it is.
    New(package::NewArgs),
    /// Build a package (.wdm) from a directory holding manifest.toml and the files it lists.
    Pack(package::PackArgs),
    /// Show a package's manifest, digests, signature and each component's imports and exports.
    Inspect(package::InspectArgs),
    /// Create an ed25519 key pair for signing packages.
    Keygen(package::KeygenArgs),
    /// Run a package or a component.wasm in the foreground, in the device's sandbox (Ctrl-C stops it).
    Run(local::RunArgs),
    /// Install a package file into a data directory (an upgrade if the name is installed).
    Install(local::InstallArgs),
    /// Start a package's components (or one) and keep them marked active.
    Activate(local::TargetArgs),
    /// Stop a package's components (or one).
    Deactivate(local::TargetArgs),
    /// Remove an installed package.
    Uninstall(local::UninstallArgs),
    /// List installed packages and their components' states.
    List(local::ListArgs),
    /// Show a component's recent log lines.
    Logs(local::LogsArgs),
}

impl Command {
    /// A command that prints a report and ends (as opposed to one that runs
    /// a device, a server or a guest until stopped).
    pub fn prints_a_report(&self) -> bool {
        !matches!(
            self,
            Command::Demo(_) | Command::Device(_) | Command::Server(_) | Command::Run(_)
        )
    }
}

pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(a) => remote::demo(a).await,
        Command::Device(a) => remote::device(a).await,
        Command::Server(a) => remote::server(a).await,
        Command::Ctl(a) => remote::ctl(a).await,
        Command::New(a) => package::new(a),
        Command::Pack(a) => package::pack(a),
        Command::Inspect(a) => package::inspect(a).await,
        Command::Keygen(a) => package::keygen(a),
        Command::Run(a) => local::run(a).await,
        Command::Install(a) => local::install(a).await,
        Command::Activate(a) => local::activate(a).await,
        Command::Deactivate(a) => local::deactivate(a).await,
        Command::Uninstall(a) => local::uninstall(a).await,
        Command::List(a) => local::list(a).await,
        Command::Logs(a) => local::logs(a).await,
    }
}

/// Logs to stderr; info by default, RUST_LOG or -v for more. `wasmdm demo`
/// narrates on stdout instead and sends the hosts' logs to a file, unless
/// `-v` asks for them (at info; -vv debug).
pub fn init_tracing(cli: &mut Cli) {
    use tracing_subscriber::EnvFilter;
    let mut verbose = cli.verbose;
    let mut file = None;
    if let Command::Demo(demo) = &mut cli.command {
        if verbose == 0 {
            let path = std::env::temp_dir().join(format!("wasmdm-demo-{}.log", std::process::id()));
            match std::fs::File::create(&path) {
                Ok(f) => {
                    file = Some(f);
                    demo.log_file = Some(path);
                }
                Err(e) => eprintln!(
                    "note: cannot write {}: {e}; logs go to stderr",
                    path.display()
                ),
            }
        } else {
            verbose -= 1;
        }
    }
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(f) => builder
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .try_init(),
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(ansi_wanted(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .try_init(),
    };
}

/// Colour codes only for a person at a terminal: a log file, pipe or
/// journal would keep them as noise. `NO_COLOR` set to anything non-empty
/// turns them off everywhere (no-color.org).
fn ansi_wanted(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::ansi_wanted;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi_wanted(true, None));
        assert!(ansi_wanted(true, Some("".into())));
        assert!(!ansi_wanted(true, Some("1".into())));
        assert!(!ansi_wanted(false, None));
        assert!(!ansi_wanted(false, Some("1".into())));
    }
}
