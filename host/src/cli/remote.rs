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
    /// LwM2M server URI (default coap://127.0.0.1:5683, or none with --bootstrap-server).
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
    /// Accept installs that replace a package with a lower version.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Security mode with the server: psk, certificate or nosec (default:
    /// psk for a coaps:// server, nosec for coap://).
    #[arg(long)]
    pub security: Option<wasmdm_proto::objects::SecurityMode>,
    /// PSK identity.
    #[arg(long)]
    pub psk_identity: Option<String>,
    /// PSK as hex (prefer --psk-key-file or the environment: command lines are visible to other users).
    #[arg(long, env = "WASMDM_PSK_KEY", hide_env_values = true)]
    pub psk_key: Option<String>,
    /// File holding the PSK (hex text or raw bytes).
    #[arg(long)]
    pub psk_key_file: Option<PathBuf>,
    /// Own certificate (PEM or DER) for certificate mode.
    #[arg(long)]
    pub certificate: Option<PathBuf>,
    /// Own PKCS#8 private key (PEM or DER) for certificate mode.
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// The server's certificate (pinned), PEM or DER.
    #[arg(long)]
    pub server_certificate: Option<PathBuf>,
    /// CA certificate(s), PEM, that the server's certificate must chain to.
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    #[command(flatten)]
    pub data_dir: super::DataDirArgs,
}

/// The factory bootstrap account (README "Provisioning / Bootstrap").
#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Bootstrap server URI, e.g. coaps://bs.example:5784.
    #[arg(long)]
    pub bootstrap_server: Option<String>,
    /// Security mode with the bootstrap server: psk, certificate or nosec.
    #[arg(long)]
    pub bootstrap_security: Option<wasmdm_proto::objects::SecurityMode>,
    /// Bootstrap PSK identity.
    #[arg(long)]
    pub bootstrap_psk_identity: Option<String>,
    /// Bootstrap PSK as hex (prefer --bootstrap-psk-key-file).
    #[arg(long, env = "WASMDM_BOOTSTRAP_PSK_KEY", hide_env_values = true)]
    pub bootstrap_psk_key: Option<String>,
    /// File holding the bootstrap PSK (hex text or raw bytes).
    #[arg(long)]
    pub bootstrap_psk_key_file: Option<PathBuf>,
    /// Own certificate (PEM or DER) for certificate mode with the bootstrap server.
    #[arg(long)]
    pub bootstrap_certificate: Option<PathBuf>,
    /// Own PKCS#8 private key (PEM or DER) for certificate mode with the bootstrap server.
    #[arg(long)]
    pub bootstrap_private_key: Option<PathBuf>,
    /// The bootstrap server's certificate (pinned), PEM or DER.
    #[arg(long)]
    pub bootstrap_server_certificate: Option<PathBuf>,
    /// CA certificate(s), PEM, that the bootstrap server's certificate must chain to.
    #[arg(long)]
    pub bootstrap_server_ca: Option<PathBuf>,
    /// Allow plain CoAP (nosec) with the bootstrap server and in what it provisions.
    #[arg(long)]
    pub bootstrap_allow_nosec: bool,
    /// Seconds a bootstrap session may take before it is abandoned (default 247).
    #[arg(long)]
    pub bootstrap_timeout: Option<u64>,
    /// Seconds before the first retry of a failed bootstrap (default 10, doubling).
    #[arg(long)]
    pub bootstrap_retry: Option<u64>,
}

impl BootstrapArgs {
    fn apply(self, config: &mut DeviceConfig) {
        if self.bootstrap_server.is_some() {
            config.bootstrap_server = self.bootstrap_server;
        }
        if self.bootstrap_security.is_some() {
            config.bootstrap_security = self.bootstrap_security;
        }
        if self.bootstrap_psk_identity.is_some() {
            config.bootstrap_psk_identity = self.bootstrap_psk_identity;
        }
        if let Some(v) = self.bootstrap_psk_key {
            config.bootstrap_psk_key = Some(wasmdm::device::config::Secret::new(v));
            config.bootstrap_psk_key_file = None;
        }
        if self.bootstrap_psk_key_file.is_some() {
            config.bootstrap_psk_key_file = self.bootstrap_psk_key_file;
            config.bootstrap_psk_key = None;
        }
        for (flag, key) in [
            (
                self.bootstrap_certificate,
                &mut config.bootstrap_certificate,
            ),
            (
                self.bootstrap_private_key,
                &mut config.bootstrap_private_key,
            ),
            (
                self.bootstrap_server_certificate,
                &mut config.bootstrap_server_certificate,
            ),
            (self.bootstrap_server_ca, &mut config.bootstrap_server_ca),
        ] {
            if flag.is_some() {
                *key = flag;
            }
        }
        if self.bootstrap_allow_nosec {
            config.bootstrap_allow_nosec = true;
        }
        if let Some(v) = self.bootstrap_timeout {
            config.bootstrap_timeout = v;
        }
        if let Some(v) = self.bootstrap_retry {
            config.bootstrap_retry = v;
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the example guests were built (scripts/build-guests.sh).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-examples/out"))]
    pub guests: PathBuf,
    /// Number of devices.
    #[arg(long, default_value_t = 3)]
    pub devices: usize,
    /// Where the hosts' full logs went (set by `main`; `None` with `-v`,
    /// when they are shown on stderr).
    #[arg(skip)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// UDP address for CoAP (LwM2M registration, device management, file pulls).
    #[arg(long, default_value = "0.0.0.0:5683")]
    pub coap: std::net::SocketAddr,
    /// UDP address for CoAP over DTLS (coaps).
    #[arg(long, default_value = "0.0.0.0:5684")]
    pub coaps: std::net::SocketAddr,
    /// Serve plain CoAP only (no DTLS port).
    #[arg(long)]
    pub no_coaps: bool,
    /// Base URI devices pull files from over CoAP, e.g.
    /// coap://192.0.2.10:5683 (default: the --coap address, unless it is
    /// 0.0.0.0, which no device can reach: then pull campaigns need this).
    #[arg(long)]
    pub coap_base_uri: Option<String>,
    /// Base URI devices pull files from over HTTP (default: the --http address).
    #[arg(long)]
    pub http_base_uri: Option<String>,
    /// Longest registration lifetime accepted, s (longer: 4.00).
    #[arg(long, default_value_t = 30 * 86_400)]
    pub max_lifetime: u64,
    /// Most registrations in all (beyond: 5.03).
    #[arg(long, default_value_t = 100_000)]
    pub max_registrations: usize,
    /// Most registrations from one IP address (beyond: 4.29).
    #[arg(long, default_value_t = 1_024)]
    pub max_registrations_per_ip: usize,
    /// Accept plain-CoAP (NoSec) registrations from endpoints without
    /// stored credentials: a lab setting. Without it only endpoints added
    /// with `wasmdm ctl security add EP --nosec` may use plain CoAP.
    #[arg(long)]
    pub allow_nosec: bool,
    /// The server's DTLS certificate (PEM chain), for devices in certificate mode.
    #[arg(long, requires = "dtls_key")]
    pub dtls_cert: Option<PathBuf>,
    /// The server's DTLS private key (PKCS#8 PEM).
    #[arg(long, requires = "dtls_cert")]
    pub dtls_key: Option<PathBuf>,
    /// CA (PEM) device certificates must chain to; their CN or a SAN is the endpoint name.
    #[arg(long)]
    pub dtls_ca: Option<PathBuf>,
    /// TCP address for the HTTP API and HTTP file pulls.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: std::net::SocketAddr,
    /// Where the server keeps its database and software files
    /// (default: $XDG_DATA_HOME/wasmdm-server or ~/.local/share/wasmdm-server).
    #[arg(long, env = "WASMDM_SERVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve the API and HTTP downloads over TLS: certificate chain and private key (PEM).
    #[arg(long, num_args = 2, value_names = ["CERT_PEM", "KEY_PEM"])]
    pub http_tls: Option<Vec<PathBuf>>,
    /// Largest software file accepted by upload, bytes.
    #[arg(long, default_value_t = wasmdm_server::files::MAX_UPLOAD)]
    pub max_upload: u64,
    /// Cap on all stored software files together, bytes.
    #[arg(long, default_value_t = wasmdm_server::files::MAX_STORAGE)]
    pub max_storage: u64,
    /// HTTP file downloads served at once (more get 503 with Retry-After).
    #[arg(long, default_value_t = wasmdm_server::files::MAX_DOWNLOADS)]
    pub max_downloads: usize,
    /// Secret key that signs the code the server precompiles for devices
    /// (default: <data-dir>/native-code.key, generated on first start);
    /// `wasmdm ctl native-code-key` prints its public key.
    #[arg(long)]
    pub native_code_key: Option<PathBuf>,
    /// Deliver plain packages only: compile nothing for devices.
    #[arg(long)]
    pub no_precompile: bool,
    /// UDP address for LwM2M bootstrap over DTLS (off with --no-coaps).
    #[arg(long, default_value = "0.0.0.0:5784")]
    pub bootstrap_coaps: std::net::SocketAddr,
    /// UDP address for LwM2M bootstrap over plain CoAP (answered only for
    /// NoSec bootstrap accounts, or with --allow-nosec).
    #[arg(long, default_value = "0.0.0.0:5783")]
    pub bootstrap_coap: std::net::SocketAddr,
    /// Serve no bootstrap.
    #[arg(long)]
    pub no_bootstrap: bool,
    /// LwM2M server URI bootstrap writes where no configuration names one
    /// (default: coaps://<--coaps address>, unless that is 0.0.0.0).
    #[arg(long)]
    pub bootstrap_server_uri: Option<String>,
    /// Longest bootstrap session, s (then it is recorded as timed out).
    #[arg(long, default_value_t = 180)]
    pub bootstrap_session_timeout: u64,
    /// Bootstrap sessions in progress at once (beyond: 5.03).
    #[arg(long, default_value_t = 1_024)]
    pub max_bootstrap_sessions: usize,
    /// Bootstrap sessions in progress from one IP address (beyond: 5.03).
    #[arg(long, default_value_t = 256)]
    pub max_bootstrap_sessions_per_ip: usize,
    /// Bootstrap-Requests accepted per endpoint in 10 minutes (beyond: 4.29).
    #[arg(long, default_value_t = 5)]
    pub max_bootstrap_requests: usize,
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
    if args.security.is_some() {
        config.security = args.security;
    }
    if args.allow_downgrade {
        config.allow_downgrade = true;
    }
    if args.psk_identity.is_some() {
        config.psk_identity = args.psk_identity;
    }
    if let Some(v) = args.psk_key {
        config.psk_key = Some(wasmdm::device::config::Secret::new(v));
        config.psk_key_file = None;
    }
    if args.psk_key_file.is_some() {
        config.psk_key_file = args.psk_key_file;
        config.psk_key = None;
    }
    for (flag, key) in [
        (args.certificate, &mut config.certificate),
        (args.private_key, &mut config.private_key),
        (args.server_certificate, &mut config.server_certificate),
        (args.server_ca, &mut config.server_ca),
    ] {
        if flag.is_some() {
            *key = flag;
        }
    }
    args.bootstrap.apply(&mut config);
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
    let where_logs = match &args.log_file {
        Some(p) => format!("full logs in {} (-v shows them here)", p.display()),
        None => "full logs interleaved below".to_string(),
    };
    println!(
        "wasmdm demo: a server and {} devices on loopback; {where_logs}",
        options.devices
    );
    let result = wasmdm::demo::run(options).await;
    if let (Err(_), Some(p)) = (&result, &args.log_file) {
        eprintln!("the hosts' full logs: {}", p.display());
    }
    result.context("demo failed")?;
    println!("demo complete");
    Ok(ExitCode::SUCCESS)
}

/// The server's DTLS certificate, key and device CA from their files (PEM
/// or DER, read as the device reads its own).
fn dtls_config(args: &ServerArgs) -> anyhow::Result<wasmdm_server::DtlsConfig> {
    use wasmdm::device::security::{certificates, private_key};
    let mut dtls = wasmdm_server::DtlsConfig::default();
    match (&args.dtls_cert, &args.dtls_key) {
        (Some(cert), Some(key)) => {
            let ca = args
                .dtls_ca
                .as_ref()
                .context("--dtls-cert needs --dtls-ca: the CA device certificates chain to")?;
            dtls.certificate = Some((
                certificates("dtls-cert", cert)?,
                private_key("dtls-key", key)?,
            ));
            dtls.client_cas = certificates("dtls-ca", ca)?;
        }
        (None, None) => {}
        _ => anyhow::bail!("--dtls-cert and --dtls-key go together"),
    }
    Ok(dtls)
}

/// Where `wasmdm server` keeps its data without `--data-dir` (and where
/// `wasmdm ctl` then looks for the admin token).
fn server_default_data_dir() -> PathBuf {
    wasmdm::device::config::default_data_dir().with_file_name("wasmdm-server")
}

pub async fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(server_default_data_dir);
    let mut config = wasmdm_server::ServerConfig::new(args.coap, args.http, data_dir);
    config.allow_nosec = args.allow_nosec;
    config.coap_base_uri = args.coap_base_uri.clone();
    config.http_base_uri = args.http_base_uri.clone();
    config.coaps_addr = (!args.no_coaps).then_some(args.coaps);
    config.dtls = dtls_config(&args)?;
    if let Some([cert, key]) = args.http_tls.as_deref() {
        config.http_tls = Some(wasmdm_server::tls::HttpTls {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.file_limits = wasmdm_server::files::FileLimits {
        max_file: args.max_upload,
        max_storage: args.max_storage,
        max_downloads: args.max_downloads.max(1),
    };
    config.registry_limits = wasmdm_server::core::registry::RegistryLimits {
        max_lifetime: args.max_lifetime,
        max_registrations: args.max_registrations,
        max_per_ip: args.max_registrations_per_ip,
    };
    // Issue 13: compile packages for the devices' engines (runtime/precompiled.rs).
    if !args.no_precompile {
        config.precompiler = Some(std::sync::Arc::new(wasmdm::runtime::RuntimePrecompiler));
        config.native_code_key = args.native_code_key.clone();
    }
    if !(args.no_bootstrap || args.no_coaps) {
        let mut listen = wasmdm_server::bootstrap::BootstrapListen::new(
            args.bootstrap_coap,
            args.bootstrap_coaps,
        );
        listen.server_uri = args.bootstrap_server_uri.clone();
        listen.limits = wasmdm_server::bootstrap::BootstrapLimits {
            max_sessions: args.max_bootstrap_sessions.max(1),
            max_sessions_per_ip: args.max_bootstrap_sessions_per_ip.max(1),
            session_timeout: std::time::Duration::from_secs(args.bootstrap_session_timeout.max(1)),
            max_requests_per_endpoint: args.max_bootstrap_requests.max(1),
            ..Default::default()
        };
        config.bootstrap = Some(listen);
    }
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
        wasmdm_server::ctl::ctl_main(&args.args, &server_default_data_dir(), &mut out)
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use wasmdm::device::config::DeviceConfig;
    use wasmdm_proto::objects::SecurityMode;

    use crate::cli::{Cli, Command};

    /// The certificate-mode bootstrap flags override device.toml's keys,
    /// and leave the ones not given as the file has them.
    #[test]
    fn bootstrap_certificate_flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "wasmdm",
            "device",
            "--bootstrap-server",
            "coaps://bs.example:5784",
            "--bootstrap-security",
            "certificate",
            "--bootstrap-certificate",
            "/flags/dev.pem",
            "--bootstrap-private-key",
            "/flags/dev.key",
            "--bootstrap-server-ca",
            "/flags/ca.pem",
        ])
        .unwrap();
        let Command::Device(args) = cli.command else {
            panic!("not the device command")
        };
        let mut config: DeviceConfig = toml::from_str(
            "bootstrap-certificate = \"/file/dev.pem\"\n\
             bootstrap-private-key = \"/file/dev.key\"\n\
             bootstrap-server-certificate = \"/file/bs.pem\"\n",
        )
        .unwrap();
        args.bootstrap.apply(&mut config);
        assert_eq!(
            config.bootstrap_server.as_deref(),
            Some("coaps://bs.example:5784")
        );
        assert_eq!(config.bootstrap_security, Some(SecurityMode::Certificate));
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        assert_eq!(
            path(&config.bootstrap_certificate).as_deref(),
            Some("/flags/dev.pem")
        );
        assert_eq!(
            path(&config.bootstrap_private_key).as_deref(),
            Some("/flags/dev.key")
        );
        assert_eq!(
            path(&config.bootstrap_server_ca).as_deref(),
            Some("/flags/ca.pem")
        );
        // Not given on the command line: the file's value stays.
        assert_eq!(
            path(&config.bootstrap_server_certificate).as_deref(),
            Some("/file/bs.pem")
        );
        let pinned = Cli::try_parse_from([
            "wasmdm",
            "device",
            "--bootstrap-server-certificate",
            "/flags/bs.pem",
        ])
        .unwrap();
        let Command::Device(args) = pinned.command else {
            panic!("not the device command")
        };
        args.bootstrap.apply(&mut config);
        assert_eq!(
            path(&config.bootstrap_server_certificate).as_deref(),
            Some("/flags/bs.pem")
        );
    }
}
