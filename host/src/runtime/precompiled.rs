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
//! and `.sig`) and checked by install right before it would compile.

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
    format!(
        "{DOMAIN}\ncomponent {component_sha256}\nengine {compat}\ncode {}\n",
        hex::encode(Sha256::digest(code))
    )
    .into_bytes()
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

/// Checks a staged artifact; the code when it may be used.
fn verify(
    slot_dir: &Path,
    component_sha256: &str,
    ours: &str,
    keys: &[VerifyingKey],
) -> Result<Vec<u8>, Refused> {
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
    let code = read("cwasm")?;
    let sig = read("sig")?;
    wasmdm_package::signing::verify_manifest(&sig, &message(component_sha256, ours, &code), keys)
        .map_err(|e| Refused::Signature(e.to_string()))?;
    Ok(code)
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
                match atomic_write(&path, &code) {
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
            "avx512vbmi"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {
                $(if std::arch::is_aarch64_feature_detected!($name) { f.push($name); })*
            };
        }
        probe!("lse", "paca", "fp16");
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
            cpu_features: cpu_features(),
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
        }
    }
}
