//! Native code compiled elsewhere (by the server, for this device's engine
//! hash), used instead of compiling here (issue 13 part 2, device side).
//!
//! `Component::deserialize` runs whatever machine code it is given, so an
//! artifact is used only when (1) the device trusts at least one key for
//! native code (`native-code-keys`, separate from the package-signing
//! keys), (2) its signature by such a key verifies over the component's
//! digest, the engine hash and the artifact's digest, and (3) the hash is
//! this device's. Anything else is refused with a log line, and the device
//! compiles the component itself as usual. The `.wasm` stays in the package
//! either way, so the device can always compile again (engine upgrade).
//!
//! Artifacts are staged in the delivery slot (`precompiled/<sha256>.cwasm`
//! and `.sig`) and checked by install right before it would compile. They
//! arrive as extra entries of the package file a server built for this
//! engine ([`unpack_slot`]), or through [`Runtime::stage_precompiled`].
//!
//! The server side of the same format is [`RuntimePrecompiler`]: what
//! `wasmdm server` compiles with, for any device's target (issue 13 part 2).

use super::compile::Tier;
use super::engine::{EngineConfig, code_config, compat_of};
use super::error::RuntimeError;
use super::{Runtime, check_name};
use crate::state::{StateError, atomic_write};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use wasmdm_package::{SigningKey, VerifyingKey};

/// First line of the signed message: the format and its version.
const DOMAIN: &str = "wasmdm precompiled artifact v1";

/// The bytes a native-code key signs: the component's sha256 (what the
/// code was compiled from), the engine hash (what it runs on) and the
/// artifact's own sha256.
fn message(component_sha256: &str, compat: &str, code: &[u8]) -> Vec<u8> {
    message_for(component_sha256, compat, &hex::encode(Sha256::digest(code)))
}

/// [`message`] for code whose sha256 (hex) is `code_sha256`.
fn message_for(component_sha256: &str, compat: &str, code_sha256: &str) -> Vec<u8> {
    format!("{DOMAIN}\ncomponent {component_sha256}\nengine {compat}\ncode {code_sha256}\n")
        .into_bytes()
}

/// sha256 (hex) of a file, read in blocks: the code is never held whole.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
}

/// Makes the verified code file `from` the cache file `to`: synced, then
/// renamed (same file system: no copy, nothing in memory), or copied where
/// it cannot be renamed; the cache dir is synced last.
fn move_into_cache(from: &Path, to: &Path) -> Result<(), StateError> {
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(|e| StateError::io("fsync", from, e))?;
    if std::fs::rename(from, to).is_err() {
        let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("code");
        let tmp = to.with_file_name(format!("{}{name}", crate::state::TEMP_PREFIX));
        std::fs::copy(from, &tmp).map_err(|e| StateError::io("copy", &tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StateError::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, to).map_err(|e| StateError::io("rename", to, e))?;
    }
    if let Some(dir) = to.parent() {
        crate::state::fsync_dir(dir)?;
    }
    Ok(())
}

/// Signs an artifact (the `.sig` text; same three-line ed25519 format as
/// `manifest.sig`). For the server and tests.
pub fn sign_artifact(
    key: &SigningKey,
    component_sha256: &str,
    compat: &str,
    code: &[u8],
) -> String {
    wasmdm_package::sign_manifest(key, &message(component_sha256, compat, code))
}

/// Compiles `wasm` with Cranelift the way a device with `cfg` would, for
/// this host's target: (engine hash, artifact). What a server runs per hash.
pub fn precompile(cfg: &EngineConfig, wasm: &[u8]) -> Result<(String, Vec<u8>), RuntimeError> {
    let engine = wasmtime::Engine::new(&code_config(cfg, Tier::Optimised))
        .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    let code = engine
        .precompile_component(wasm)
        .map_err(|e| RuntimeError::Engine(format!("precompile: {e:#}")))?;
    Ok((compat_of(&engine), code))
}

/// Why a staged artifact was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this device trusts no key for native code (native-code-keys)")]
    NoNativeKeys,
    #[error("built for engine {offered}, this device's engine is {ours}")]
    WrongEngine { offered: String, ours: String },
    #[error("signature refused: {0}")]
    Signature(String),
    #[error("cannot read the staged artifact: {0}")]
    Unreadable(String),
}

fn dir(slot_dir: &Path) -> PathBuf {
    slot_dir.join("precompiled")
}

fn valid_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a staged artifact; the path of its code when it may be used.
fn verify(
    slot_dir: &Path,
    component_sha256: &str,
    ours: &str,
    keys: &[VerifyingKey],
) -> Result<PathBuf, Refused> {
    if keys.is_empty() {
        return Err(Refused::NoNativeKeys);
    }
    let base = dir(slot_dir).join(component_sha256);
    let read = |ext: &str| {
        std::fs::read(base.with_extension(ext)).map_err(|e| Refused::Unreadable(e.to_string()))
    };
    let offered = String::from_utf8(read("engine")?)
        .map_err(|_| Refused::Unreadable("engine hash is not text".into()))?;
    if offered != ours {
        return Err(Refused::WrongEngine {
            offered,
            ours: ours.to_string(),
        });
    }
    let code = base.with_extension("cwasm");
    let code_sha = file_sha256(&code).map_err(|e| Refused::Unreadable(e.to_string()))?;
    let sig = read("sig")?;
    let signed = message_for(component_sha256, ours, &code_sha);
    wasmdm_package::signing::verify_manifest(&sig, &signed, keys)
        .map_err(|e| Refused::Signature(e.to_string()))?;
    Ok(code)
}

/// Unpacks a delivery slot's package (`reader`) into `staging` like
/// `wasmdm_package::unpack`, and the precompiled-code entries a server added
/// into the slot's `precompiled/` dir, where install looks for them. A
/// malformed entry is skipped with a log line (install compiles instead).
pub(super) fn unpack_slot<R: std::io::Read>(
    reader: R,
    slot_dir: &Path,
    staging: &Path,
    limits: &wasmdm_package::Limits,
    keys: &[VerifyingKey],
) -> Result<wasmdm_package::Verified, RuntimeError> {
    let fresh = slot_dir.join("precompiled.new");
    let io = |e: std::io::Error| RuntimeError::from(StateError::io("write", &fresh, e));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh).map_err(io)?;
    let verified =
        wasmdm_package::unpack_with_precompiled(reader, staging, Some(&fresh), limits, keys);
    if let Ok(v) = &verified {
        for note in &v.precompiled_notes {
            tracing::warn!("precompiled code entry skipped: {note}");
        }
        if !v.precompiled.is_empty() {
            let into = dir(slot_dir);
            std::fs::create_dir_all(&into).map_err(io)?;
            for name in &v.precompiled {
                std::fs::rename(fresh.join(name), into.join(name)).map_err(io)?;
            }
            tracing::info!(
                "the package carries precompiled code ({} file(s)); install checks it",
                v.precompiled.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&fresh);
    Ok(verified?)
}

impl Runtime {
    /// Stages a precompiled artifact for component `component_sha256` in
    /// delivery slot `slot` (durably; checked only at install). `compat` is
    /// the engine hash it was built for, `signature` the `.sig` text.
    pub fn stage_precompiled(
        &self,
        slot: &str,
        component_sha256: &str,
        compat: &str,
        code: &[u8],
        signature: &[u8],
    ) -> Result<(), RuntimeError> {
        check_name(slot)?;
        if !valid_sha(component_sha256) || compat.len() > 64 {
            return Err(RuntimeError::InvalidName(component_sha256.to_string()));
        }
        let d = dir(&self.inner.dirs.delivery(slot));
        std::fs::create_dir_all(&d).map_err(|e| StateError::io("create dir", &d, e))?;
        let base = d.join(component_sha256);
        // The hash and signature first: the code is what makes it complete.
        atomic_write(&base.with_extension("engine"), compat.as_bytes())?;
        atomic_write(&base.with_extension("sig"), signature)?;
        atomic_write(&base.with_extension("cwasm"), code)?;
        Ok(())
    }

    /// Moves a staged artifact that verifies into the cache as this
    /// component's optimised code (the load then compiles nothing); logs why
    /// one is refused. Called by install before loading each component.
    pub(super) fn adopt_precompiled(&self, slot_dir: &Path, component_id: &str, sha256: &str) {
        if !dir(slot_dir).join(sha256).with_extension("cwasm").exists() {
            return;
        }
        let engine = &self.inner.compile.optimised;
        let keys = &self.inner.config.engine.native_code_keys;
        match verify(slot_dir, sha256, &engine.compat, keys) {
            Ok(code) => {
                let path = engine.cwasm_path(&self.inner.dirs.cache(), sha256);
                match move_into_cache(&code, &path) {
                    Ok(()) => tracing::info!(
                        component = %component_id,
                        "using the precompiled artifact (signature and engine hash verified)"
                    ),
                    Err(e) => {
                        tracing::warn!(component = %component_id, "precompiled artifact: {e}")
                    }
                }
            }
            Err(why) => tracing::warn!(
                component = %component_id,
                "precompiled artifact refused, compiling here: {why}"
            ),
        }
    }
}

/// The engine wasmdm is built with (Cargo.lock pins it; artifacts need the
/// same version).
pub const RUNTIME_VERSION: &str = "wasmtime 48.0.8";

/// CPU features of this host that Cranelift's native ISA uses.
fn cpu_features() -> Vec<String> {
    let mut f: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($name) { f.push($name); })*
            };
        }
        probe!(
            "cmpxchg16b",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "lzcnt",
            "avx512f",
            "avx512vl",
            "avx512dq",
            "avx512bitalg",
            "avx512vbmi",
            "avxvnni",
            "avx512vnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {
                $(if std::arch::is_aarch64_feature_detected!($name) { f.push($name); })*
            };
        }
        probe!("lse", "paca", "fp16", "dotprod", "i8mm");
    }
    f.into_iter().map(str::to_string).collect()
}

impl Runtime {
    /// What the engine accepts, for the wasmdm Engine LwM2M object (/26500).
    pub fn engine_info(&self) -> wasmdm_proto::objects::engine::EngineInfo {
        let cfg = &self.inner.config.engine;
        let reservation = cfg.memory_reservation.max(cfg.max_memory_per_instance);
        wasmdm_proto::objects::engine::EngineInfo {
            runtime_version: RUNTIME_VERSION.into(),
            // What the code is built for: the CPU, or Pulley bytecode
            // where wasmtime interprets (32-bit ARM).
            target: match super::target::CodeTarget::host().triple() {
                Some(pulley) => pulley.to_string(),
                None => format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            },
            // What Cranelift's native ISA uses; nothing for Pulley bytecode.
            cpu_features: match super::target::CodeTarget::host().triple() {
                Some(_) => Vec::new(),
                None => cpu_features(),
            },
            compatibility_hash: self.inner.compile.optimised.compat.clone(),
            worlds: vec![
                "wasi:cli/command@0.2.12".into(),
                "wasmdm:device/app@0.1.0".into(),
            ],
            compiler: match cfg.compiler {
                super::CompilerChoice::Auto => "auto",
                super::CompilerChoice::Winch => "winch",
                super::CompilerChoice::Cranelift => "cranelift",
            }
            .into(),
            memory_reservation: reservation,
            memory_guard: super::engine::guard_for(reservation),
            accepts_precompiled: !cfg.native_code_keys.is_empty(),
            max_package_bytes: self.inner.config.max_package_bytes,
        }
    }
}

/// Cranelift ISA flag for a CPU feature a device reports (the names
/// `cranelift_native` uses when it detects them on the device itself).
fn isa_flag(feature: &str) -> Option<&'static str> {
    Some(match feature {
        "cmpxchg16b" => "has_cmpxchg16b",
        "sse3" => "has_sse3",
        "ssse3" => "has_ssse3",
        "sse4.1" => "has_sse41",
        "sse4.2" => "has_sse42",
        "popcnt" => "has_popcnt",
        "avx" => "has_avx",
        "avx2" => "has_avx2",
        "fma" => "has_fma",
        "avxvnni" => "has_avx_vnni",
        "avx512vnni" => "has_avx512vnni",
        "bmi1" => "has_bmi1",
        "bmi2" => "has_bmi2",
        "lzcnt" => "has_lzcnt",
        "avx512f" => "has_avx512f",
        "avx512vl" => "has_avx512vl",
        "avx512dq" => "has_avx512dq",
        "avx512bitalg" => "has_avx512bitalg",
        "avx512vbmi" => "has_avx512vbmi",
        "lse" => "has_lse",
        "paca" => "has_pauth",
        "fp16" => "has_fp16",
        "dotprod" => "has_dotprod",
        "i8mm" => "has_i8mm",
        _ => return None,
    })
}

/// Target triples a device reporting `target` may run: its own name for
/// Pulley, else the triples wasmdm is built for on that architecture and OS
/// (the report says `<arch>-<os>`; the hash says which one it is).
fn candidate_triples(target: &str) -> Vec<String> {
    if target.starts_with("pulley") {
        return vec![target.to_string()];
    }
    match target.split_once('-') {
        Some((arch, "linux")) => {
            let arm = if arch == "arm" || arch.starts_with("armv7") {
                "eabihf"
            } else {
                ""
            };
            vec![
                format!("{arch}-unknown-linux-gnu{arm}"),
                format!("{arch}-unknown-linux-musl{arm}"),
            ]
        }
        Some((arch, "macos")) => vec![format!("{arch}-apple-darwin")],
        Some((arch, "windows")) => vec![format!("{arch}-pc-windows-msvc")],
        _ => vec![target.to_string()],
    }
}

/// A Cranelift engine config for a device with `engine` on `triple`: what
/// `engine::code_config` makes on the device itself, with its target and
/// ISA flags given explicitly instead of detected.
fn device_config(
    engine: &wasmdm_server::precompile::DeviceEngine,
    triple: &str,
) -> Result<wasmtime::Config, String> {
    let mut config = wasmtime::Config::new();
    config
        .strategy(wasmtime::Strategy::Cranelift)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .memory_reservation(engine.memory_reservation)
        .memory_guard_size(engine.memory_guard)
        .memory_reservation_for_growth(0);
    config
        .target(triple)
        .map_err(|e| format!("target {triple}: {e:#}"))?;
    if triple == "pulley32" {
        // A 32-bit device (runtime/target.rs): no reservation up front.
        config
            .memory_reservation(0)
            .memory_guard_size(0)
            .memory_reservation_for_growth(1 << 20);
    }
    // Pulley bytecode has no CPU flags: those a device reports are its host's.
    let features = if triple.starts_with("pulley") {
        &[][..]
    } else {
        &engine.cpu_features[..]
    };
    for feature in features {
        if let Some(flag) = isa_flag(feature) {
            // SAFETY: the code runs on the device whose CPU reported the
            // feature, never here; the device checks the engine hash, which
            // covers these flags, before it loads the code.
            unsafe {
                config.cranelift_flag_enable(flag);
            }
        }
    }
    Ok(config)
}

/// What `wasmdm server` compiles with (issue 13 part 2): Cranelift for the
/// device's target (all of wasmtime's backends are in the build, see the
/// `cross-precompile` feature) with the device's ISA flags, or Pulley
/// bytecode for a Pulley device. Runs on the server's blocking threads.
#[derive(Debug, Default)]
pub struct RuntimePrecompiler;

impl wasmdm_server::precompile::Precompiler for RuntimePrecompiler {
    fn compile(
        &self,
        engine: &wasmdm_server::precompile::DeviceEngine,
        wasm: &[u8],
    ) -> Result<(String, Vec<u8>), String> {
        if engine.runtime_version != RUNTIME_VERSION {
            return Err(format!(
                "the device runs {}, this server {RUNTIME_VERSION}",
                engine.runtime_version
            ));
        }
        // The first triple whose engine has the device's hash; else the
        // first one's, for the caller to report the mismatch.
        let mut first: Option<wasmtime::Engine> = None;
        let mut errors = Vec::new();
        let mut chosen = None;
        for triple in candidate_triples(&engine.target) {
            let built = device_config(engine, &triple)
                .and_then(|c| wasmtime::Engine::new(&c).map_err(|e| format!("{triple}: {e:#}")));
            match built {
                Ok(e) if compat_of(&e) == engine.compatibility_hash => {
                    chosen = Some(e);
                    break;
                }
                Ok(e) => {
                    first.get_or_insert(e);
                }
                Err(e) => errors.push(e),
            }
        }
        let Some(built) = chosen.or(first) else {
            return Err(format!(
                "no engine for target {}: {}",
                engine.target,
                errors.join("; ")
            ));
        };
        let code = built
            .precompile_component(wasm)
            .map_err(|e| format!("{e:#}"))?;
        Ok((compat_of(&built), code))
    }

    fn sign(
        &self,
        key: &SigningKey,
        component_sha256: &str,
        engine_hash: &str,
        code: &[u8],
    ) -> String {
        sign_artifact(key, component_sha256, engine_hash, code)
    }
}
