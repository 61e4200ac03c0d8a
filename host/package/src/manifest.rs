//! `manifest.toml`: the serde shape (`Raw*`, kebab-case, unknown keys refused) and the resolved,
//! validated [`Manifest`] the runtime consumes without re-parsing strings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{PackageError, Result};
use crate::network::{NetRule, NetworkGrant};
use crate::relpath::{self, MANIFEST_NAME, SIGNATURE_NAME};
use crate::units::{RawSize, parse_size, render_size};

/// The only manifest format version this host reads.
pub const MANIFEST_VERSION: i64 = 1;
/// Hard cap on `manifest.toml`; a manifest is metadata, not payload.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

const DEFAULT_MEMORY: u64 = 64 << 20;
const MAX_MEMORY: u64 = 4 << 30;
const DEFAULT_DATA_QUOTA: u64 = 16 << 20;
const DEFAULT_LOG_CAP: u64 = 64 << 10;
const DEFAULT_STOP_GRACE_MS: u64 = 2000;
const MAX_STOP_GRACE_MS: u64 = 60_000;
const DEFAULT_MAX_RETRIES: u32 = 5;
const DEFAULT_BACKOFF_MS: u64 = 1000;
/// Guest mount point of the private data dir; read-only mounts may not shadow it.
pub const DATA_GUEST_PATH: &str = "/data";

// ---------------------------------------------------------------------------------------------
// Serde shape. Every struct denies unknown fields so a manifest using a feature this host lacks
// is refused with the offending key named.

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawManifest {
    pub manifest_version: i64,
    pub package: RawPackage,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default, rename = "component")]
    pub components: Vec<RawComponent>,
    #[serde(default, rename = "file", skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RawFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawPackage {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawComponent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub file: String,
    /// Optional only so `pack` can fill it in; validation requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub world: String,
    #[serde(default)]
    pub sandbox: RawSandbox,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<RawSize>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_quota: Option<RawSize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly: Vec<RawMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<RawNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RawRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cap: Option<RawSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_descriptors: Option<u32>,
    /// LwM2M object ids the component may serve (`wasmdm:device/objects`);
    /// i64 so an out-of-range id gets a clear message, not a syntax error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawMount {
    pub source: String,
    pub guest: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawNetwork {
    #[serde(default)]
    pub allow: Vec<String>,
    /// Local addresses to bind / listen on; absent = outbound only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRestart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Resolved types.

/// A validated package manifest. Construct with [`Manifest::from_toml`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `[package]`.
    pub package: PackageInfo,
    /// `[config]`: values the app reads through `wasmdm:device/config`.
    pub config: BTreeMap<String, String>,
    /// `[[component]]`, in manifest order (at least one).
    pub components: Vec<Component>,
    /// `[[file]]`: read-only assets, in manifest order.
    pub files: Vec<FileEntry>,
}

/// `[package]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// Package name, `[a-z0-9][a-z0-9-_.]{0,63}`.
    pub name: String,
    /// Package version.
    pub version: Version,
    /// Free text.
    pub description: Option<String>,
    /// Host features the package needs; see [`Manifest::check_requirements`].
    pub requires: Vec<String>,
}

/// The two worlds a component may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `wasmdm:device/app`: lifecycle-managed app with config and log imports.
    App,
    /// `wasi:cli/command`: a plain WASI command run via `run`.
    Command,
}

impl World {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            World::App => "wasmdm:device/app",
            World::Command => "wasi:cli/command",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [World::App, World::Command]
            .into_iter()
            .find(|w| w.as_str() == text)
    }
}

/// One `[[component]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Unique id within the package.
    pub id: String,
    /// Component version (defaults to the package version).
    pub version: Version,
    /// Archive-relative path of the `.wasm`.
    pub file: String,
    /// Expected digest of `file`.
    pub sha256: Digest,
    /// World the component implements.
    pub world: World,
    /// Resource limits and grants.
    pub sandbox: Sandbox,
}

/// Resolved `[component.sandbox]` with defaults applied.
/// Share of one core a component gets while it computes without pause,
/// unless its manifest says `cpu = "N%"`: a busy loop cannot starve the
/// device's other services.
pub const DEFAULT_CPU_PERCENT: u8 = 50;

/// Descriptors (open files, directories, listings) a component may hold at
/// once unless its manifest grants another number.
pub const DEFAULT_MAX_DESCRIPTORS: u32 = 256;

/// The most `max-descriptors` may grant.
pub const MAX_DESCRIPTORS: u32 = 16384;

/// The most LwM2M object ids one component may be granted (`objects`).
pub const MAX_OBJECT_GRANTS: usize = 8;

/// The wasmdm Engine object (`host/proto/ddf/26500.xml`), served by the host.
pub const WASMDM_ENGINE_OBJECT: u16 = 26500;

/// Why an app may never serve object `id`, if so: the objects the host
/// serves itself (the OMA core objects 0-14, LwM2M 1.1 Core §D / the OMA
/// registry, and the wasmdm Engine object) and 65535, which the registry
/// reserves (LwM2M 1.1 Core §7.1: ids are 0..=65534).
pub fn reserved_object(id: i64) -> Option<&'static str> {
    match id {
        0..=14 => Some("is an OMA core object (0-14) the device serves itself"),
        26500 => Some("is the wasmdm Engine object the device serves itself"),
        15..=65534 => None,
        _ => Some("is outside the LwM2M object id range 0..=65534"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Total linear memory plus tables, bytes (default 64 MiB, max 4 GiB).
    pub memory_bytes: u64,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Arguments after argv\[0\].
    pub args: Vec<String>,
    /// Whether a private persistent dir is preopened at `/data` (default true).
    pub data_dir: bool,
    /// Quota for the data dir, bytes (default 16 MiB).
    pub data_quota_bytes: u64,
    /// Package directories mounted read-only in the guest.
    pub readonly: Vec<ReadonlyMount>,
    /// Outbound network allow list (default: none).
    pub network: NetworkGrant,
    /// What to do when the component exits.
    pub restart: Restart,
    /// Bound of the in-memory log, bytes (default 64 KiB).
    pub log_cap_bytes: u64,
    /// Grace between a stop request and interruption (default 2 s, max 60 s).
    pub stop_grace: Duration,
    /// Most of one core the component may use while it computes without
    /// pause, in percent (1-100).
    pub cpu_percent: u8,
    /// Descriptors open at once (default 256, max 16384).
    pub max_descriptors: u32,
    /// LwM2M object ids the component may serve (at most 8, no core ids).
    pub objects: Vec<u16>,
}

/// A package directory exposed read-only to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadonlyMount {
    /// Archive-relative directory (a prefix of listed `[[file]]` paths).
    pub source: String,
    /// Absolute guest path.
    pub guest: String,
}

/// When the runtime restarts an exited component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartPolicy {
    /// Never (default).
    No,
    /// Only after a trap or non-zero exit.
    OnFailure,
    /// After any exit other than an explicit stop.
    Always,
}

impl RestartPolicy {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// Resolved `restart` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Policy.
    pub policy: RestartPolicy,
    /// Restarts allowed before giving up (default 5).
    pub max_retries: u32,
    /// Delay before each restart (default 1 s).
    pub backoff: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicy::No,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff: Duration::from_millis(DEFAULT_BACKOFF_MS),
        }
    }
}

/// One `[[file]]`: a read-only asset shipped in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Archive-relative path.
    pub path: String,
    /// Expected digest.
    pub sha256: Digest,
}

impl Manifest {
    /// Parses and validates manifest text. Requirements are checked separately
    /// ([`Manifest::check_requirements`]) because only the host knows what it provides.
    pub fn from_toml(text: &str) -> Result<Self> {
        parse_raw(text)?.resolve()
    }

    /// Parses manifest bytes (must be UTF-8).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| PackageError::ManifestSyntax(format!("not UTF-8: {e}")))?;
        Self::from_toml(text)
    }

    /// Canonical TOML for this manifest; `from_toml(to_toml())` yields an equal manifest.
    pub fn to_toml(&self) -> String {
        // Serialising plain strings, maps and integers cannot fail; fall back to an empty
        // string rather than panic should toml ever disagree.
        toml::to_string(&self.to_raw()).unwrap_or_default()
    }

    /// Refuses the package unless every `requires` entry is in `provided` (like Spin's
    /// `must_understand`); the error lists everything missing.
    pub fn check_requirements<S: AsRef<str>>(&self, provided: &[S]) -> Result<()> {
        let missing: Vec<String> = self
            .package
            .requires
            .iter()
            .filter(|r| !provided.iter().any(|p| p.as_ref() == r.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PackageError::MissingRequirement(missing))
        }
    }

    /// Finds a component by id.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }

    /// Every payload path the archive must contain, with its digest (component files shared by
    /// several components appear once).
    pub fn payload(&self) -> BTreeMap<String, Digest> {
        let mut out = BTreeMap::new();
        for c in &self.components {
            out.insert(c.file.clone(), c.sha256);
        }
        for f in &self.files {
            out.insert(f.path.clone(), f.sha256);
        }
        out
    }

    fn to_raw(&self) -> RawManifest {
        RawManifest {
            manifest_version: MANIFEST_VERSION,
            package: RawPackage {
                name: self.package.name.clone(),
                version: self.package.version.to_string(),
                description: self.package.description.clone(),
                requires: self.package.requires.clone(),
            },
            config: self.config.clone(),
            components: self.components.iter().map(Component::to_raw).collect(),
            files: self
                .files
                .iter()
                .map(|f| RawFile {
                    path: f.path.clone(),
                    sha256: Some(f.sha256.to_hex()),
                })
                .collect(),
        }
    }
}

impl Component {
    fn to_raw(&self) -> RawComponent {
        let s = &self.sandbox;
        RawComponent {
            id: self.id.clone(),
            version: Some(self.version.to_string()),
            file: self.file.clone(),
            sha256: Some(self.sha256.to_hex()),
            world: self.world.as_str().to_string(),
            sandbox: RawSandbox {
                memory: Some(render_size(s.memory_bytes)),
                env: s.env.clone(),
                args: s.args.clone(),
                data_dir: Some(s.data_dir),
                data_quota: Some(render_size(s.data_quota_bytes)),
                readonly: s
                    .readonly
                    .iter()
                    .map(|m| RawMount {
                        source: m.source.clone(),
                        guest: m.guest.clone(),
                    })
                    .collect(),
                network: (!s.network.is_none()).then(|| RawNetwork {
                    allow: s.network.allow.iter().map(NetRule::to_string).collect(),
                    bind: s.network.bind.iter().map(NetRule::to_string).collect(),
                }),
                restart: Some(RawRestart {
                    policy: Some(s.restart.policy.as_str().to_string()),
                    max_retries: Some(s.restart.max_retries),
                    backoff_ms: Some(duration_ms(s.restart.backoff)),
                }),
                log_cap: Some(render_size(s.log_cap_bytes)),
                stop_grace_ms: Some(duration_ms(s.stop_grace)),
                cpu: Some(format!("{}%", s.cpu_percent)),
                // Only when granted: manifests that older hosts read stay as they were.
                max_descriptors: (s.max_descriptors != DEFAULT_MAX_DESCRIPTORS)
                    .then_some(s.max_descriptors),
                objects: s.objects.iter().map(|&id| i64::from(id)).collect(),
            },
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads `manifest-version` first so a future format is reported as such rather than as a pile
/// of unknown keys, then deserialises strictly.
pub(crate) fn parse_raw(text: &str) -> Result<RawManifest> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| PackageError::ManifestSyntax(e.to_string()))?;
    match table.get("manifest-version") {
        Some(toml::Value::Integer(MANIFEST_VERSION)) => {}
        Some(other) => return Err(PackageError::ManifestVersion(other.to_string())),
        None => return Err(PackageError::ManifestVersion("(missing)".into())),
    }
    toml::from_str(text).map_err(|e| PackageError::ManifestSyntax(e.to_string()))
}

/// `[a-z0-9][a-z0-9-_.]{0,63}`: safe as a directory name and an LwM2M string.
fn check_name(key: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(PackageError::invalid(
            key,
            format!("{name:?} must match [a-z0-9][a-z0-9-_.]{{0,63}}"),
        ))
    }
}

fn parse_version(key: &str, text: &str) -> Result<Version> {
    Version::parse(text)
        .map_err(|e| PackageError::invalid(key, format!("{text:?} is not semver: {e}")))
}

fn parse_digest(key: &str, text: Option<&str>) -> Result<Digest> {
    let text = text
        .ok_or_else(|| PackageError::invalid(key, "missing (run `wasmdm pack` to fill it in)"))?;
    Digest::from_hex(text).ok_or_else(|| {
        PackageError::invalid(key, format!("{text:?} is not 64 lowercase hex digits"))
    })
}

fn size(key: &str, raw: Option<&RawSize>, default: u64, min: u64, max: u64) -> Result<u64> {
    let bytes = match raw {
        None => default,
        Some(r) => parse_size(r).map_err(|e| PackageError::invalid(key, e))?,
    };
    if bytes < min || bytes > max {
        return Err(PackageError::invalid(
            key,
            format!("{bytes} bytes is outside {min}..={max}"),
        ));
    }
    Ok(bytes)
}

impl RawManifest {
    pub(crate) fn resolve(&self) -> Result<Manifest> {
        check_name("package.name", &self.package.name)?;
        let version = parse_version("package.version", &self.package.version)?;
        for (i, r) in self.package.requires.iter().enumerate() {
            if r.trim().is_empty() {
                return Err(PackageError::invalid(
                    format!("package.requires[{i}]"),
                    "empty requirement",
                ));
            }
        }
        for k in self.config.keys() {
            if k.is_empty() {
                return Err(PackageError::invalid("config", "empty key"));
            }
        }

        let mut files = Vec::with_capacity(self.files.len());
        let mut file_paths = BTreeSet::new();
        for f in &self.files {
            let key = format!("file[{}]", f.path);
            check_payload_path(&format!("{key}.path"), &f.path)?;
            if !file_paths.insert(f.path.as_str()) {
                return Err(PackageError::invalid(key, "duplicate file path"));
            }
            let sha256 = parse_digest(&format!("{key}.sha256"), f.sha256.as_deref())?;
            files.push(FileEntry {
                path: f.path.clone(),
                sha256,
            });
        }

        if self.components.is_empty() {
            return Err(PackageError::invalid(
                "component",
                "a package needs at least one [[component]]",
            ));
        }
        let mut ids = BTreeSet::new();
        let mut component_files: BTreeMap<&str, Digest> = BTreeMap::new();
        let mut components = Vec::with_capacity(self.components.len());
        for raw in &self.components {
            let c = raw.resolve(&version, &self.files)?;
            if !ids.insert(raw.id.as_str()) {
                return Err(PackageError::invalid(
                    format!("component[{}].id", raw.id),
                    "duplicate component id",
                ));
            }
            if file_paths.contains(raw.file.as_str()) {
                return Err(PackageError::invalid(
                    format!("component[{}].file", raw.id),
                    format!("{:?} is also listed as a [[file]]", raw.file),
                ));
            }
            // Components may share a .wasm (same code, different sandbox) but must agree on it.
            if let Some(prev) = component_files.insert(raw.file.as_str(), c.sha256)
                && prev != c.sha256
            {
                return Err(PackageError::invalid(
                    format!("component[{}].sha256", raw.id),
                    format!(
                        "{:?} is listed by another component with a different digest",
                        raw.file
                    ),
                ));
            }
            components.push(c);
        }
        // One package serves an object from one component: the host routes
        // requests by object id.
        let mut granted: BTreeMap<u16, &str> = BTreeMap::new();
        for c in &components {
            for &id in &c.sandbox.objects {
                if let Some(other) = granted.insert(id, c.id.as_str()) {
                    return Err(PackageError::invalid(
                        format!("component[{}].sandbox.objects", c.id),
                        format!("object {id} is also granted to component {other:?}"),
                    ));
                }
            }
        }

        Ok(Manifest {
            package: PackageInfo {
                name: self.package.name.clone(),
                version,
                description: self.package.description.clone(),
                requires: self.package.requires.clone(),
            },
            config: self.config.clone(),
            components,
            files,
        })
    }
}

fn check_payload_path(key: &str, path: &str) -> Result<()> {
    relpath::check_relative(path)
        .map_err(|e| PackageError::invalid(key, format!("{path:?}: {e}")))?;
    if path == MANIFEST_NAME || path == SIGNATURE_NAME {
        return Err(PackageError::invalid(key, format!("{path:?} is reserved")));
    }
    Ok(())
}

impl RawComponent {
    fn resolve(&self, package_version: &Version, files: &[RawFile]) -> Result<Component> {
        let key = format!("component[{}]", self.id);
        check_name(&format!("{key}.id"), &self.id)?;
        let version = match &self.version {
            Some(v) => parse_version(&format!("{key}.version"), v)?,
            None => package_version.clone(),
        };
        check_payload_path(&format!("{key}.file"), &self.file)?;
        let sha256 = parse_digest(&format!("{key}.sha256"), self.sha256.as_deref())?;
        let world = World::parse(&self.world).ok_or_else(|| PackageError::UnknownWorld {
            component: self.id.clone(),
            world: self.world.clone(),
        })?;
        let sandbox = self.sandbox.resolve(&format!("{key}.sandbox"), files)?;
        Ok(Component {
            id: self.id.clone(),
            version,
            file: self.file.clone(),
            sha256,
            world,
            sandbox,
        })
    }
}

impl RawSandbox {
    fn resolve(&self, key: &str, files: &[RawFile]) -> Result<Sandbox> {
        let memory_bytes = size(
            &format!("{key}.memory"),
            self.memory.as_ref(),
            DEFAULT_MEMORY,
            1,
            MAX_MEMORY,
        )?;
        let data_quota_bytes = size(
            &format!("{key}.data-quota"),
            self.data_quota.as_ref(),
            DEFAULT_DATA_QUOTA,
            0,
            u64::MAX,
        )?;
        let log_cap_bytes = size(
            &format!("{key}.log-cap"),
            self.log_cap.as_ref(),
            DEFAULT_LOG_CAP,
            1,
            u64::MAX,
        )?;

        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(PackageError::invalid(
                    format!("{key}.env.{k}"),
                    "names must be non-empty without '=' or NUL",
                ));
            }
        }
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return Err(PackageError::invalid(
                format!("{key}.args[{i}]"),
                "NUL in argument",
            ));
        }

        let mut readonly = Vec::with_capacity(self.readonly.len());
        let mut guests = BTreeSet::new();
        for (i, m) in self.readonly.iter().enumerate() {
            let mkey = format!("{key}.readonly[{i}]");
            relpath::check_relative(&m.source).map_err(|e| {
                PackageError::invalid(format!("{mkey}.source"), format!("{:?}: {e}", m.source))
            })?;
            if !files
                .iter()
                .any(|f| relpath::is_within(&f.path, &m.source) && f.path != m.source)
            {
                return Err(PackageError::invalid(
                    format!("{mkey}.source"),
                    format!("{:?} is not a directory of any [[file]] path", m.source),
                ));
            }
            relpath::check_guest_path(&m.guest).map_err(|e| {
                PackageError::invalid(format!("{mkey}.guest"), format!("{:?}: {e}", m.guest))
            })?;
            if relpath::is_within(&m.guest, DATA_GUEST_PATH) {
                return Err(PackageError::invalid(
                    format!("{mkey}.guest"),
                    "must not be /data or below it",
                ));
            }
            if !guests.insert(m.guest.as_str()) {
                return Err(PackageError::invalid(
                    format!("{mkey}.guest"),
                    format!("{:?} mounted twice", m.guest),
                ));
            }
            readonly.push(ReadonlyMount {
                source: m.source.clone(),
                guest: m.guest.clone(),
            });
        }

        let network = match &self.network {
            None => NetworkGrant::default(),
            Some(n) => NetworkGrant {
                allow: n
                    .allow
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        NetRule::parse(a).map_err(|e| {
                            PackageError::invalid(format!("{key}.network.allow[{i}]"), e)
                        })
                    })
                    .collect::<Result<_>>()?,
                bind: n
                    .bind
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        NetRule::parse(a).map_err(|e| {
                            PackageError::invalid(format!("{key}.network.bind[{i}]"), e)
                        })
                    })
                    .collect::<Result<_>>()?,
            },
        };

        let restart = match &self.restart {
            None => Restart::default(),
            Some(r) => Restart {
                policy: match r.policy.as_deref() {
                    None | Some("no") => RestartPolicy::No,
                    Some("on-failure") => RestartPolicy::OnFailure,
                    Some("always") => RestartPolicy::Always,
                    Some(other) => {
                        return Err(PackageError::invalid(
                            format!("{key}.restart.policy"),
                            format!("{other:?} is not one of \"no\", \"on-failure\", \"always\""),
                        ));
                    }
                },
                max_retries: r.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
                backoff: Duration::from_millis(r.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS)),
            },
        };

        let grace_ms = self.stop_grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS);
        if grace_ms > MAX_STOP_GRACE_MS {
            return Err(PackageError::invalid(
                format!("{key}.stop-grace-ms"),
                format!("{grace_ms} is over {MAX_STOP_GRACE_MS}"),
            ));
        }

        let max_descriptors = match self.max_descriptors {
            None => DEFAULT_MAX_DESCRIPTORS,
            Some(n @ 1..=MAX_DESCRIPTORS) => n,
            Some(n) => {
                return Err(PackageError::invalid(
                    format!("{key}.max-descriptors"),
                    format!("{n} is not from 1 to {MAX_DESCRIPTORS}"),
                ));
            }
        };
        let cpu_percent = match &self.cpu {
            None => DEFAULT_CPU_PERCENT,
            Some(text) => text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u8>().ok())
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    PackageError::invalid(
                        format!("{key}.cpu"),
                        format!("{text:?} is not a share of one core from \"1%\" to \"100%\""),
                    )
                })?,
        };

        let objects = resolve_objects(&format!("{key}.objects"), &self.objects)?;

        Ok(Sandbox {
            memory_bytes,
            env: self.env.clone(),
            args: self.args.clone(),
            data_dir: self.data_dir.unwrap_or(true),
            data_quota_bytes,
            readonly,
            network,
            restart,
            log_cap_bytes,
            stop_grace: Duration::from_millis(grace_ms),
            cpu_percent,
            max_descriptors,
            objects,
        })
    }
}

/// Checks an `objects` grant: at most [`MAX_OBJECT_GRANTS`] ids, each once,
/// none the host serves itself ([`reserved_object`]).
fn resolve_objects(key: &str, raw: &[i64]) -> Result<Vec<u16>> {
    if raw.len() > MAX_OBJECT_GRANTS {
        return Err(PackageError::invalid(
            key,
            format!(
                "{} object ids; a component may serve at most {MAX_OBJECT_GRANTS}",
                raw.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for &id in raw {
        if let Some(why) = reserved_object(id) {
            return Err(PackageError::invalid(key, format!("object {id} {why}")));
        }
        let id = u16::try_from(id)
            .map_err(|_| PackageError::invalid(key, format!("object {id} is out of range")))?;
        if out.contains(&id) {
            return Err(PackageError::invalid(
                key,
                format!("object {id} listed twice"),
            ));
        }
        out.push(id);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
