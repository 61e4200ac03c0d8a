//! Device configuration: an embedded default that works with no file at
//! all, overridden by an optional TOML file, overridden by flags.

use std::path::{Path, PathBuf};

/// Everything `wasmdm device` needs to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceConfig {
    /// LwM2M Endpoint Client Name (default: the host name).
    pub endpoint: String,
    /// The LwM2M server, `coap://host:port` (NoSec) or `coaps://host:port`
    /// (DTLS; default port 5684). Empty: none (with a `bootstrap-server`
    /// the device bootstraps first; without one `coap://127.0.0.1:5683`).
    pub server: String,
    /// How the device authenticates to the server (/0/x/2): `psk`,
    /// `certificate` or `nosec` (`rpk` is not supported by this build).
    /// Default: `psk` for a `coaps://` server, `nosec` for `coap://`.
    pub security: Option<wasmdm_proto::objects::SecurityMode>,
    /// PSK identity (/0/x/3), UTF-8.
    pub psk_identity: Option<String>,
    /// PSK (/0/x/5) as hex. Prefer `psk-key-file` outside a lab.
    pub psk_key: Option<Secret>,
    /// File holding the PSK (hex text, or the raw key bytes).
    pub psk_key_file: Option<PathBuf>,
    /// Own certificate (chain), PEM or DER, for `certificate` mode (/0/x/3).
    pub certificate: Option<PathBuf>,
    /// Own private key, PKCS#8 PEM or DER (/0/x/5).
    pub private_key: Option<PathBuf>,
    /// The server's own certificate, PEM or DER, pinned (/0/x/4).
    pub server_certificate: Option<PathBuf>,
    /// CA(s) the server's certificate must chain to, PEM; the certificate
    /// must also name the server URI's host.
    pub server_ca: Option<PathBuf>,
    /// The bootstrap server, `coaps://host:port` (default port 5684; the
    /// usual bootstrap port is 5784), or `coap://` with `bootstrap-allow-nosec`.
    pub bootstrap_server: Option<String>,
    /// Security mode with the bootstrap server (`psk`, `certificate`,
    /// `nosec`); default from the URI scheme as for `security`.
    pub bootstrap_security: Option<wasmdm_proto::objects::SecurityMode>,
    /// Bootstrap PSK identity.
    pub bootstrap_psk_identity: Option<String>,
    /// Bootstrap PSK as hex. Prefer `bootstrap-psk-key-file`.
    pub bootstrap_psk_key: Option<Secret>,
    /// File holding the bootstrap PSK (hex text, or the raw key bytes).
    pub bootstrap_psk_key_file: Option<PathBuf>,
    /// Own certificate for certificate mode with the bootstrap server.
    pub bootstrap_certificate: Option<PathBuf>,
    /// Own private key (PKCS#8) for certificate mode with the bootstrap server.
    pub bootstrap_private_key: Option<PathBuf>,
    /// The bootstrap server's certificate, pinned.
    pub bootstrap_server_certificate: Option<PathBuf>,
    /// CA(s) the bootstrap server's certificate must chain to.
    pub bootstrap_server_ca: Option<PathBuf>,
    /// Accept NoSec (plain CoAP) with the bootstrap server and in the
    /// accounts it provisions. Off by default: bootstrap carries credentials.
    pub bootstrap_allow_nosec: bool,
    /// Seconds a bootstrap session may last after the server accepted the
    /// Bootstrap-Request before it is abandoned (nothing it wrote is kept).
    pub bootstrap_timeout: u64,
    /// Seconds before the first retry of a failed bootstrap (doubling per
    /// attempt, at most one hour).
    pub bootstrap_retry: u64,
    /// Registration lifetime in seconds.
    pub lifetime: u32,
    /// Local UDP address to bind.
    pub bind: String,
    /// Where packages, state and app data live.
    pub data_dir: PathBuf,
    /// Most Object 9 instances (packages) the device accepts.
    pub max_packages: u16,
    /// Largest package accepted, in bytes (pushed or pulled).
    pub max_package_bytes: u64,
    /// Public key files of trusted package signers; empty accepts unsigned packages.
    pub trusted_keys: Vec<PathBuf>,
    /// Accept an install that replaces a package with a lower version
    /// (default off: refused with Update Result 57 and a log line).
    pub allow_downgrade: bool,
    /// PEM file of extra CA certificates (one or more) that `https` Package
    /// URIs (/9/x/3) are trusted under, e.g. the operator's own file server.
    /// Read and checked at startup: a bad file stops the device.
    pub download_ca: Option<PathBuf>,
    /// Whether `https` pulls also trust Mozilla's public roots (built in).
    /// Default on: a package on a host with a public certificate downloads
    /// like in any client, and the package's own signature (`trusted-keys`),
    /// not the transport, is what vouches for the software. Off with
    /// `download-ca` pins pulls to the operator's CA; off without it refuses
    /// https URIs (Update Result 56) before connecting.
    pub download_public_roots: bool,
    /// Component instances that can run at once (the wasmtime pool's slots).
    pub max_instances: u32,
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_instance_memory: u64,
    /// Address space reserved per linear memory, in bytes: 4 GiB (the default
    /// on 64-bit hosts) lets compiled guests skip bounds checks; set it to
    /// `max-instance-memory` where address space is scarce.
    pub memory_reservation: u64,
    /// Compiler for installs: `auto` (Winch at install, Cranelift in the
    /// background at idle priority), `winch` or `cranelift` (README, runtime).
    pub compiler: crate::runtime::CompilerChoice,
    /// Restart running components once their optimised code is ready
    /// (default off: they use it from their next start).
    pub restart_when_optimised: bool,
    /// When component code is in memory: `on-demand` (default: loaded when a
    /// component starts, dropped when its last instance ends, so an inactive
    /// package costs no code in memory) or `resident` (every installed
    /// component kept loaded: faster activation, ~390 KiB each).
    pub code_loading: crate::runtime::CodeLoading,
    /// Public key files trusted to sign native code compiled by a server
    /// (precompiled artifacts); separate from `trusted-keys`. Empty: the
    /// device always compiles itself.
    pub native_code_keys: Vec<PathBuf>,
    /// What the Register payload's root link announces of the content
    /// formats (reference §1): `single` (default, `ct=110`: what Wakaama-based
    /// servers accept), `all` (`ct="110 112 11542"`) or `none` (no root link).
    pub register_content_formats: wasmdm_proto::client::RootLinkFormats,
    /// How long an app has to answer a Write or Execute on its objects
    /// (issue 14), in ms; no answer: 5.03 Service Unavailable.
    pub app_request_timeout_ms: u64,
    /// Values reported in the Device object (/3).
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let engine = crate::runtime::EngineConfig::default();
        DeviceConfig {
            endpoint: default_endpoint(),
            server: String::new(),
            security: None,
            psk_identity: None,
            psk_key: None,
            psk_key_file: None,
            certificate: None,
            private_key: None,
            server_certificate: None,
            server_ca: None,
            bootstrap_server: None,
            bootstrap_security: None,
            bootstrap_psk_identity: None,
            bootstrap_psk_key: None,
            bootstrap_psk_key_file: None,
            bootstrap_certificate: None,
            bootstrap_private_key: None,
            bootstrap_server_certificate: None,
            bootstrap_server_ca: None,
            bootstrap_allow_nosec: false,
            bootstrap_timeout: 247,
            bootstrap_retry: 10,
            lifetime: 300,
            bind: "0.0.0.0:0".into(),
            data_dir: default_data_dir(),
            max_packages: 16,
            max_package_bytes: 256 * 1024 * 1024,
            trusted_keys: Vec::new(),
            allow_downgrade: false,
            download_ca: None,
            download_public_roots: true,
            max_instances: engine.max_instances,
            max_instance_memory: engine.max_memory_per_instance,
            memory_reservation: engine.memory_reservation,
            compiler: engine.compiler,
            restart_when_optimised: engine.restart_when_optimised,
            code_loading: engine.code_loading,
            native_code_keys: Vec::new(),
            register_content_formats: Default::default(),
            app_request_timeout_ms: 2000,
            manufacturer: "wasmdm".into(),
            model: "wasmdm-host".into(),
            serial: default_endpoint(),
        }
    }
}

/// A secret setting: deserialized like a string, never shown by Debug.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid server URI {0:?}: expected coap://host:port or coaps://host:port")]
    ServerUri(String),
    #[error(transparent)]
    DownloadCa(#[from] crate::device::download::TrustError),
}

impl DeviceConfig {
    /// Reads a TOML config file; keys left out keep their defaults.
    pub fn load(path: &Path) -> Result<DeviceConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// The CAs trusted for https pulls (`download-ca`, `download-public-roots`),
    /// the CA file read and checked once here.
    pub fn download_trust(&self) -> Result<crate::device::download::TlsTrust, ConfigError> {
        Ok(crate::device::download::TlsTrust::load(
            self.download_ca.as_deref(),
            self.download_public_roots,
        )?)
    }

    /// The server URI: as configured; when left empty, none if a bootstrap
    /// server is configured, else `coap://127.0.0.1:5683`.
    pub fn server_uri(&self) -> Option<&str> {
        match (self.server.is_empty(), &self.bootstrap_server) {
            (false, _) => Some(&self.server),
            (true, Some(_)) => None,
            (true, None) => Some(DEFAULT_SERVER),
        }
    }

    /// The security mode: as configured, else from the server URI's scheme.
    pub fn security_mode(&self) -> wasmdm_proto::objects::SecurityMode {
        mode_for(self.security, self.server_uri().unwrap_or_default())
    }

    /// The host of the server URI (what its certificate must name).
    pub fn server_host(&self) -> Result<String, ConfigError> {
        Ok(host_of(&self.server_addr()?).to_string())
    }

    /// `host:port` of the server, from `coap://host[:port]` (default port
    /// 5683) or `coaps://host[:port]` (default 5684).
    pub fn server_addr(&self) -> Result<String, ConfigError> {
        uri_authority(self.server_uri().unwrap_or_default())
    }
}

/// The server used when neither `server` nor `bootstrap-server` is set.
pub const DEFAULT_SERVER: &str = "coap://127.0.0.1:5683";

/// `mode` if given, else PSK for a `coaps://` URI and NoSec for `coap://`.
pub fn mode_for(
    mode: Option<wasmdm_proto::objects::SecurityMode>,
    uri: &str,
) -> wasmdm_proto::objects::SecurityMode {
    use wasmdm_proto::objects::SecurityMode;
    mode.unwrap_or(if uri.starts_with("coaps://") {
        SecurityMode::Psk
    } else {
        SecurityMode::NoSec
    })
}

/// `host:port` of a `coap://host[:port]` (default port 5683) or
/// `coaps://host[:port]` (default 5684) URI.
pub fn uri_authority(uri: &str) -> Result<String, ConfigError> {
    let (rest, default_port) = if let Some(rest) = uri.strip_prefix("coaps://") {
        (rest, 5684)
    } else if let Some(rest) = uri.strip_prefix("coap://") {
        (rest, 5683)
    } else {
        return Err(ConfigError::ServerUri(uri.to_string()));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ConfigError::ServerUri(uri.to_string()));
    }
    let has_port = match authority.strip_prefix('[') {
        // IPv6 literal: a port can only follow the closing bracket.
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, tail)| tail.starts_with(':')),
        None => authority.contains(':'),
    };
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    })
}

/// The host of a `host:port` authority (`[v6]:port` without brackets).
pub fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// The host name, or `wasmdm-device` when it cannot be read.
pub fn default_endpoint() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wasmdm-device".into())
}

/// `$XDG_DATA_HOME/wasmdm`, else `~/.local/share/wasmdm`, else `./wasmdm-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("wasmdm");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/wasmdm");
    }
    PathBuf::from("wasmdm-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = DeviceConfig::default();
        assert_eq!(c.server_addr().unwrap(), "127.0.0.1:5683");
        assert!(!c.endpoint.is_empty());
    }

    #[test]
    fn file_overrides_some_keys_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.toml");
        std::fs::write(
            &path,
            "endpoint = \"dev-7\"\nserver = \"coap://10.1.2.3\"\n",
        )
        .unwrap();
        let c = DeviceConfig::load(&path).unwrap();
        assert_eq!((c.endpoint.as_str(), c.lifetime), ("dev-7", 300));
        assert_eq!(c.server_addr().unwrap(), "10.1.2.3:5683");
        std::fs::write(&path, "endpont = \"typo\"\n").unwrap();
        assert!(matches!(
            DeviceConfig::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\nendpoint")
            .expect("README has the device.toml example");
        let body = &readme[start + "```toml\n".len()..];
        let example = &body[..body.find("```").unwrap()];
        let c: DeviceConfig = toml::from_str(example).unwrap();
        assert_eq!(c.max_instances, 100);
        assert_eq!(c.memory_reservation, 4 << 30);
        assert_eq!(c.max_instance_memory, 256 << 20);
        assert!(c.download_ca.is_some());
        assert!(c.download_public_roots);
    }

    #[test]
    fn code_loading_key() {
        use crate::runtime::CodeLoading;
        assert_eq!(DeviceConfig::default().code_loading, CodeLoading::OnDemand);
        for (text, want) in [
            ("on-demand", CodeLoading::OnDemand),
            ("resident", CodeLoading::Resident),
        ] {
            let c: DeviceConfig = toml::from_str(&format!("code-loading = \"{text}\"")).unwrap();
            assert_eq!(c.code_loading, want);
        }
        assert!(toml::from_str::<DeviceConfig>("code-loading = \"lazy\"").is_err());
    }

    #[test]
    fn register_content_formats_key() {
        use wasmdm_proto::client::RootLinkFormats;
        assert_eq!(
            DeviceConfig::default().register_content_formats,
            RootLinkFormats::Single
        );
        for (text, want) in [
            ("single", RootLinkFormats::Single),
            ("all", RootLinkFormats::All),
            ("none", RootLinkFormats::None),
        ] {
            let c: DeviceConfig =
                toml::from_str(&format!("register-content-formats = \"{text}\"")).unwrap();
            assert_eq!(c.register_content_formats, want);
        }
        assert!(toml::from_str::<DeviceConfig>("register-content-formats = \"some\"").is_err());
    }

    #[test]
    fn an_unusable_download_ca_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = DeviceConfig {
            download_ca: Some(dir.path().join("missing.pem")),
            ..DeviceConfig::default()
        };
        let e = c.download_trust().unwrap_err();
        assert!(matches!(e, ConfigError::DownloadCa(_)));
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(DeviceConfig::default().download_trust().is_ok());
    }

    #[test]
    fn bootstrap_keys_and_the_server_default() {
        let c: DeviceConfig = toml::from_str(
            "bootstrap-server = \"coaps://bs.example:5784\"\n\
             bootstrap-psk-identity = \"bs-1\"\n\
             bootstrap-psk-key-file = \"/etc/wasmdm/bs.key\"\n\
             bootstrap-timeout = 30\nbootstrap-retry = 2\n",
        )
        .unwrap();
        // A bootstrap account and no server: no server account at all.
        assert_eq!(c.server_uri(), None);
        assert_eq!((c.bootstrap_timeout, c.bootstrap_retry), (30, 2));
        assert!(!c.bootstrap_allow_nosec);
        // No bootstrap account and no server: the old default.
        assert_eq!(DeviceConfig::default().server_uri(), Some(DEFAULT_SERVER));
        let both = DeviceConfig {
            server: "coaps://lwm2m.example".into(),
            ..c
        };
        assert_eq!(both.server_uri(), Some("coaps://lwm2m.example"));
        assert_eq!(both.server_addr().unwrap(), "lwm2m.example:5684");
        let secret: DeviceConfig = toml::from_str("bootstrap-psk-key = \"00112233\"").unwrap();
        assert!(!format!("{secret:?}").contains("00112233"));
    }

    #[test]
    fn host_of_authorities() {
        assert_eq!(host_of("example.org:5684"), "example.org");
        assert_eq!(host_of("10.0.0.1:5684"), "10.0.0.1");
        assert_eq!(host_of("[::1]:5684"), "::1");
        assert_eq!(host_of("example.org"), "example.org");
    }

    #[test]
    fn server_uri_forms() {
        let with = |s: &str| {
            DeviceConfig {
                server: s.into(),
                ..DeviceConfig::default()
            }
            .server_addr()
        };
        assert_eq!(with("coap://example.org:5690").unwrap(), "example.org:5690");
        assert_eq!(with("coap://[::1]:5690").unwrap(), "[::1]:5690");
        assert_eq!(with("coap://[::1]").unwrap(), "[::1]:5683");
        assert_eq!(with("coaps://example.org").unwrap(), "example.org:5684");
        assert!(with("http://x").is_err());
        assert!(with("coap://").is_err());
    }
}
