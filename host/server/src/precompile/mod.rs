//! Code the server compiles for its devices' engines (issue 13 part 2).
//!
//! A device reports its engine in /26500 ([`engine`]); the driver reads it
//! at registration and keeps it in the device record. When a campaign
//! installs or upgrades a package, [`Service::prepare`] groups its devices
//! by compatibility hash, compiles the package's components once per hash
//! through the [`Precompiler`] the embedder gave (the `wasmdm` binary's uses
//! its runtime; this crate knows nothing of wasmtime), checks that the
//! engine it built has exactly the device's hash, signs the code with the
//! operator's native-code key ([`key`]), and caches a variant of the
//! package file carrying the code ([`variant`], [`cache`]). The campaign
//! then delivers that variant (Block1 push, or a pull URI with the hash as
//! last segment, CoAP or HTTP) instead of the plain file. Any problem leaves the
//! group on the plain file, with a log line and a campaign note: the
//! devices compile the package themselves, as they would anyway.

pub mod cache;
pub mod engine;
pub mod key;
pub mod preparing;
pub mod variant;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wasmdm_package::signing::SigningKey;

pub use engine::DeviceEngine;

use crate::campaign::{CampaignSpec, OpKind};
use crate::store::{DEVICES, DeviceRecord, Store};

/// Compiles components for a device engine; implemented by the `wasmdm`
/// binary with its runtime. Called on a blocking thread, one at a time.
pub trait Precompiler: Send + Sync + std::fmt::Debug {
    /// Compiles `wasm` for `engine`: (the hash of the engine that built it,
    /// the code). The caller compares the hash with the device's.
    fn compile(&self, engine: &DeviceEngine, wasm: &[u8]) -> Result<(String, Vec<u8>), String>;
    /// The `.sig` text of `code` (the format the device checks).
    fn sign(
        &self,
        key: &SigningKey,
        component_sha256: &str,
        engine_hash: &str,
        code: &[u8],
    ) -> String;
}

/// Largest package the server reads back to compile, uncompressed bytes.
const MAX_PACKAGE_BYTES: u64 = 1 << 30;

/// The server's precompile service: precompiler, key and variant cache.
pub struct Service {
    precompiler: Arc<dyn Precompiler>,
    key: SigningKey,
    /// `<data_dir>/precompiled`.
    dir: PathBuf,
    cache_bytes: u64,
    /// One compile at a time, whatever the number of campaigns.
    busy: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Service {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("dir", &self.dir)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

/// What preparing a campaign decided.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Endpoint -> engine hash of the variant it gets.
    pub variants: BTreeMap<String, String>,
    /// Notes for the campaign (groups left on the plain file, and why).
    pub notes: Vec<String>,
}

/// Gives a new campaign's jobs their variants and the campaign its notes.
pub fn apply(c: &mut crate::campaign::Campaign, prepared: Prepared) {
    for j in &mut c.jobs {
        j.precompiled = prepared.variants.get(&j.endpoint).cloned();
    }
    c.notes = prepared.notes;
}

impl Service {
    /// A service over `data_dir/precompiled` with `key`.
    pub fn new(
        precompiler: Arc<dyn Precompiler>,
        key: SigningKey,
        data_dir: &std::path::Path,
    ) -> Service {
        Service {
            precompiler,
            key,
            dir: Store::precompiled_dir(data_dir),
            cache_bytes: cache::DEFAULT_CACHE_BYTES,
            busy: Arc::default(),
        }
    }

    /// The public half of the key, as a key file's text.
    pub fn public_key(&self) -> String {
        key::public_text(&self.key.verifying_key())
    }

    /// Builds (or finds cached) the variants a campaign delivers: one per
    /// compatibility hash among `targets` that accept precompiled code.
    /// `fresh` holds engines just read from devices whose record had none;
    /// `wanted` is asked before each compile (false: the campaign was
    /// cancelled, stop).
    pub async fn prepare(
        self: &Arc<Self>,
        store: &Arc<Store>,
        spec: &CampaignSpec,
        targets: &[String],
        fresh: &BTreeMap<String, DeviceEngine>,
        wanted: &(dyn Fn() -> bool + Send + Sync),
    ) -> Prepared {
        let mut out = Prepared::default();
        let Some(file) = spec.file.clone() else {
            return out;
        };
        if !matches!(spec.op, OpKind::Install | OpKind::Upgrade) {
            return out;
        }
        // Per hash: the engine, and each device with the largest package
        // it takes (0: it did not say).
        let mut groups: BTreeMap<String, (DeviceEngine, Vec<(String, u64)>)> = BTreeMap::new();
        for ep in targets {
            let engine = match store.get::<DeviceRecord>(DEVICES, ep) {
                Ok(Some(DeviceRecord {
                    engine: Some(e), ..
                })) => e,
                _ => match fresh.get(ep) {
                    Some(e) => e.clone(),
                    None => continue,
                },
            };
            if !engine.accepts_precompiled {
                continue;
            }
            let max = engine.max_package_bytes;
            groups
                .entry(engine.compatibility_hash.clone())
                .or_insert_with(|| (engine, Vec::new()))
                .1
                .push((ep.clone(), max));
        }
        for (hash, (engine, eps)) in groups {
            if !wanted() {
                break;
            }
            let this = self.clone();
            let (shared, f) = (store.clone(), file.clone());
            let job = tokio::task::spawn_blocking(move || this.variant(&shared, &f, &engine));
            let names = || {
                let names: Vec<&str> = eps.iter().map(|(ep, _)| ep.as_str()).collect();
                names.join(", ")
            };
            match job.await {
                Ok(Ok(())) => {
                    tracing::info!(
                        "precompiled {file} for engine {hash} ({} device(s))",
                        eps.len()
                    );
                    let size = store.variant(&file, &hash).map(|(path, _)| {
                        std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX)
                    });
                    for (ep, max) in eps {
                        // A variant the device would refuse as too large
                        // (/26500/0/9): it gets the plain file instead.
                        match size {
                            Some(n) if max == 0 || n <= max => {
                                out.variants.insert(ep, hash.clone());
                            }
                            _ => out.notes.push(format!(
                                "{ep}: the package with precompiled code ({} bytes) is larger than \
                                 the device takes ({max} bytes); it gets the plain file and compiles \
                                 locally",
                                size.map_or_else(|| "?".into(), |n| n.to_string())
                            )),
                        }
                    }
                }
                failed => {
                    let why = match failed {
                        Ok(Err(why)) => why,
                        Err(e) => format!("compile task: {e}"),
                        Ok(Ok(())) => String::new(),
                    };
                    tracing::warn!(
                        "no precompiled code for engine {hash} ({}): {why}; they compile it themselves",
                        names()
                    );
                    out.notes.push(format!(
                        "engine {hash} ({}): no precompiled code, devices compile locally: {why}",
                        names()
                    ));
                }
            }
        }
        out
    }

    /// Makes sure the variant of `file` for `engine` is cached (blocking).
    fn variant(&self, store: &Store, file: &str, engine: &DeviceEngine) -> Result<(), String> {
        let hash = &engine.compatibility_hash;
        if cache::variant_path(&self.dir, file, hash).is_some() {
            return Ok(());
        }
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        // Another campaign may have built it meanwhile.
        if cache::variant_path(&self.dir, file, hash).is_some() {
            return Ok(());
        }
        let plain = store
            .read_blob(file)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("software file {file} is gone"))?;
        let limits = wasmdm_package::Limits::default();
        let inspection = wasmdm_package::read_manifest(plain.as_slice(), &limits)
            .map_err(|e| format!("package: {e}"))?;
        tracing::info!(
            "compiling {} {} ({file}) for engine {hash} ({}, {})",
            inspection.manifest.package.name,
            inspection.manifest.package.version,
            engine.target,
            engine.runtime_version
        );
        let components = &inspection.manifest.components;
        let wanted: Vec<String> = components.iter().map(|c| c.file.clone()).collect();
        let files =
            variant::extract(&plain, MAX_PACKAGE_BYTES, &wanted).map_err(|e| e.to_string())?;
        let mut artifacts: Vec<variant::Artifact> = Vec::new();
        for c in components {
            let sha = c.sha256.to_hex();
            if artifacts.iter().any(|a| a.component_sha256 == sha) {
                continue;
            }
            let wasm = files
                .get(&c.file)
                .ok_or_else(|| format!("component file {} missing", c.file))?;
            let (built, code) = self
                .precompiler
                .compile(engine, wasm)
                .map_err(|e| format!("compiling {}: {e}", c.id))?;
            if &built != hash {
                return Err(format!(
                    "the engine built for {} ({}) has hash {built}, not the device's {hash}",
                    engine.target, engine.runtime_version
                ));
            }
            let signature = self.precompiler.sign(&self.key, &sha, hash, &code);
            artifacts.push(variant::Artifact {
                component_sha256: sha,
                engine: hash.clone(),
                code,
                signature,
            });
        }
        let bytes =
            variant::build(&plain, MAX_PACKAGE_BYTES, &artifacts).map_err(|e| e.to_string())?;
        // Read once; a store that cannot tell keeps every variant.
        let used = crate::files::files_in_use(store).ok();
        let in_use = |f: &str| used.as_ref().is_none_or(|u| u.contains(f));
        cache::store(&self.dir, file, hash, &bytes, self.cache_bytes, &in_use)
            .map_err(|e| format!("cache: {e}"))
    }
}

#[cfg(test)]
mod tests;
