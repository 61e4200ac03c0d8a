//! One wasmtime `Engine` per process, its epoch ticker, the two linkers and the
//! precompiled-code cache.

use super::compile::{CompilerChoice, Tier};
use super::error::RuntimeError;
use super::host::{HostState, bindings};
use super::spec::World;
use crate::state::{StateError, atomic_write};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, PoolingAllocationConfig, Strategy};
use wasmtime_wasi::p2::bindings::CommandPre;

/// Epoch tick: the granularity of yields and forced stops.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine sizing, from the device configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Concurrent instances the pool holds (default 100; 1000+ is fine on 64-bit).
    pub max_instances: u32,
    /// Largest linear memory any instance may have (the pool's per-slot size).
    pub max_memory_per_instance: u64,
    /// Address space reserved per linear memory. At 4 GiB (wasmtime's own
    /// default on 64-bit hosts) Cranelift drops the explicit bounds check of
    /// every memory access: guests run faster and compile about a third
    /// faster. Only address space is reserved, not memory. On a host with a
    /// small address space (a 39-bit arm64 kernel: 512 GiB) set it to
    /// `max_memory_per_instance`, at the price of those bounds checks.
    pub memory_reservation: u64,
    /// Which compiler install uses (device config `compiler`); see
    /// [`super::compile`].
    pub compiler: CompilerChoice,
    /// Restart a running component once its optimised code is ready (device
    /// config `restart-when-optimised`); otherwise it picks the code up at its
    /// next start.
    pub restart_when_optimised: bool,
    /// Keys trusted to sign native code compiled elsewhere (device config
    /// `native-code-keys`; separate from package keys). Empty: precompiled
    /// artifacts are never used.
    pub native_code_keys: Vec<wasmdm_package::VerifyingKey>,
    /// When a component's code is in memory (device config `code-loading`);
    /// see [`super::loading`].
    pub code_loading: super::loading::CodeLoading,
}

/// wasmtime's default reservation on 64-bit hosts (see `memory_reservation`).
pub const FULL_RESERVATION: u64 = 4 << 30;

impl Default for EngineConfig {
    fn default() -> Self {
        let max_memory_per_instance = 256 << 20;
        EngineConfig {
            max_instances: 100,
            max_memory_per_instance,
            memory_reservation: if cfg!(target_pointer_width = "64") {
                FULL_RESERVATION
            } else {
                max_memory_per_instance
            },
            compiler: CompilerChoice::Auto,
            restart_when_optimised: false,
            native_code_keys: Vec::new(),
            code_loading: super::loading::CodeLoading::default(),
        }
    }
}

/// The engine, its linkers and ticker; shared by all instances.
pub struct EngineShared {
    /// The engine.
    pub engine: Engine,
    /// hex of `precompile_compatibility_hash`: part of every .cwasm name.
    pub compat: String,
    /// Which compiler this engine runs (Winch and Cranelift code need
    /// engines of their own: their calling conventions differ).
    pub tier: Tier,
    command_linker: Linker<HostState>,
    app_linker: Linker<HostState>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for EngineShared {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Feeds `Hash` output into sha256 so the compatibility key is stable across runs.
struct ShaHasher(Sha256);
impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn engine_err(e: wasmtime::Error) -> RuntimeError {
    RuntimeError::Engine(format!("{e:#}"))
}

/// hex of the first 8 bytes of sha256(`precompile_compatibility_hash`).
pub(super) fn compat_of(engine: &Engine) -> String {
    let mut hasher = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hex::encode(hasher.0.finalize().get(..8).unwrap_or_default())
}

/// The guard region after each linear memory: a full 4 GiB reservation plus
/// wasmtime's 32 MiB guard lets Cranelift elide bounds checks; a small
/// reservation needs only a small guard.
pub(super) fn guard_for(reservation: u64) -> u64 {
    if reservation >= FULL_RESERVATION {
        32 << 20
    } else {
        64 << 10
    }
}

/// Everything that decides the code an engine makes (and so its
/// compatibility hash): compiler, epoch interruption, memory layout. The
/// allocation strategy and parallel compilation do not enter the hash, so a
/// compile-only engine built from this makes code the runtime engine loads.
pub(super) fn code_config(cfg: &EngineConfig, tier: Tier) -> Config {
    let reservation = cfg.memory_reservation.max(cfg.max_memory_per_instance);
    let guard = guard_for(reservation);
    let mut config = Config::new();
    config
        .strategy(match tier {
            Tier::Baseline => Strategy::Winch,
            Tier::Optimised => Strategy::Cranelift,
        })
        .epoch_interruption(true)
        .memory_init_cow(true)
        .memory_reservation(reservation)
        .memory_guard_size(guard)
        .memory_reservation_for_growth(0);
    // Issue 15: Pulley where Cranelift has no backend (runtime/target.rs).
    super::target::apply(&mut config, tier);
    config
}

impl EngineShared {
    /// Builds the Cranelift engine (pooling allocator, epoch interruption, CoW
    /// memory init), both linkers and starts the 10 ms epoch ticker thread.
    pub fn new(cfg: &EngineConfig) -> Result<Arc<EngineShared>, RuntimeError> {
        Self::with_tier(cfg, Tier::Optimised)
    }

    /// As [`EngineShared::new`], compiling with `tier`'s compiler.
    pub fn with_tier(cfg: &EngineConfig, tier: Tier) -> Result<Arc<EngineShared>, RuntimeError> {
        let slots = cfg.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // A Rust wasip2 component has a handful of core instances, one main memory
        // and a few tables; size totals for `slots` such components.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .max_core_instances_per_component(16)
            .total_memories(slots.saturating_mul(2))
            .max_memories_per_component(2)
            .total_tables(slots.saturating_mul(4))
            .max_tables_per_component(4)
            .total_stacks(slots)
            .max_memory_size(usize::try_from(cfg.max_memory_per_instance).unwrap_or(usize::MAX));
        let mut config = code_config(cfg, tier);
        // Issue 15: the pool on 64-bit hosts, on-demand on 32-bit (runtime/target.rs).
        config.allocation_strategy(super::target::allocation_strategy(pool));
        let engine = Engine::new(&config).map_err(engine_err)?;

        let compat = compat_of(&engine);

        let mut command_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut command_linker).map_err(engine_err)?;
        super::datafs::add_to_linker(&mut command_linker).map_err(engine_err)?;
        let mut app_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut app_linker).map_err(engine_err)?;
        super::datafs::add_to_linker(&mut app_linker).map_err(engine_err)?;
        bindings::AppImports::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut app_linker,
            |s| s,
        )
        .map_err(engine_err)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("wasmdm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("spawn epoch ticker: {e}")))?;

        Ok(Arc::new(EngineShared {
            engine,
            compat,
            tier,
            command_linker,
            app_linker,
            ticker_stop,
        }))
    }

    /// Cache file for a component digest under this engine.
    pub fn cwasm_path(&self, cache_dir: &Path, sha256: &str) -> PathBuf {
        cache_dir.join(format!("{sha256}-{}.cwasm", self.compat))
    }

    /// Loads `wasm` as a ready-to-instantiate component: from the cache when a
    /// .cwasm for this engine exists, else precompiles (on a blocking thread) and
    /// stores it atomically first. The world check happens here too
    /// (`instantiate_pre` fails on imports the world does not provide).
    pub async fn load(
        self: &Arc<Self>,
        component_id: &str,
        wasm: &Path,
        sha256: &str,
        world: World,
        cache_dir: &Path,
    ) -> Result<CommandPre<HostState>, RuntimeError> {
        let cwasm = self.cwasm_path(cache_dir, sha256);
        let this = self.clone();
        let wasm = wasm.to_path_buf();
        let id = component_id.to_string();
        let component =
            tokio::task::spawn_blocking(move || this.load_blocking(&id, &wasm, &cwasm, world))
                .await
                .map_err(|e| RuntimeError::Engine(format!("compile task: {e}")))??;
        self.prepare(component_id, &component, world)
    }

    fn load_blocking(
        &self,
        id: &str,
        wasm: &Path,
        cwasm: &Path,
        world: World,
    ) -> Result<Component, RuntimeError> {
        if let Some(c) = self.cached(cwasm) {
            return Ok(c);
        }
        let bytes = std::fs::read(wasm).map_err(|e| StateError::io("read", wasm, e))?;
        super::compile::precheck(id, &bytes, world)?;
        self.compile_and_store(id, &bytes, cwasm)
    }

    /// The cached code at `cwasm`, if it exists and this engine loads it; a
    /// file it refuses is removed (it is rebuilt from the .wasm).
    pub(super) fn cached(&self, cwasm: &Path) -> Option<Component> {
        if !cwasm.exists() {
            return None;
        }
        // SAFETY: the cache only holds files this process family wrote with
        // atomic_write (never modified in place) and their name pins the engine hash.
        match unsafe { Component::deserialize_file(&self.engine, cwasm) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("discarding cached {}: {e:#}", cwasm.display());
                let _ = std::fs::remove_file(cwasm);
                None
            }
        }
    }

    /// Compiles `bytes`, stores the code atomically and durably at `cwasm`
    /// and loads it from there (mapped, not copied).
    pub(super) fn compile_and_store(
        &self,
        id: &str,
        bytes: &[u8],
        cwasm: &Path,
    ) -> Result<Component, RuntimeError> {
        let code = self.compile(id, bytes)?;
        atomic_write(cwasm, &code)?;
        // SAFETY: as in `cached`; we just wrote this file atomically.
        unsafe { Component::deserialize_file(&self.engine, cwasm) }.map_err(engine_err)
    }

    /// Compiles `bytes` to this engine's serialized code.
    pub(super) fn compile(&self, id: &str, bytes: &[u8]) -> Result<Vec<u8>, RuntimeError> {
        self.engine
            .precompile_component(bytes)
            .map_err(|e| RuntimeError::InstallFailed {
                component: id.to_string(),
                reason: format!("invalid component: {e:#}"),
            })
    }

    /// Compiles `bytes` in memory (no cache).
    fn component(&self, id: &str, bytes: &[u8]) -> Result<Component, RuntimeError> {
        Component::new(&self.engine, bytes).map_err(|e| RuntimeError::InstallFailed {
            component: id.to_string(),
            reason: format!("invalid component: {e:#}"),
        })
    }

    /// Checks the component's imports against its declared world and that it
    /// exports `wasi:cli/run`.
    pub(super) fn prepare(
        &self,
        id: &str,
        component: &Component,
        world: World,
    ) -> Result<CommandPre<HostState>, RuntimeError> {
        let linker = match world {
            World::Command => &self.command_linker,
            World::App => &self.app_linker,
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| RuntimeError::InstallFailed {
                component: id.to_string(),
                reason: format!("imports not satisfied by world {world}: {e:#}"),
            })?;
        CommandPre::new(pre).map_err(|e| RuntimeError::InstallFailed {
            component: id.to_string(),
            reason: format!("does not export wasi:cli/run: {e:#}"),
        })
    }
}

/// Names a component imports and exports (for `wasmdm inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentInterface {
    /// Imported instance/function names, e.g. `wasi:cli/environment@0.2.6`.
    pub imports: Vec<String>,
    /// Exported names, e.g. `wasi:cli/run@0.2.6`.
    pub exports: Vec<String>,
}

/// Reports a component's interface and whether it can run under `world` on this
/// host, without installing it. Imports and exports are read from the binary
/// and checked against the host's worlds first (every missing interface, no
/// compile); only a component that passes is compiled (Winch, fast; Cranelift
/// where Winch refuses) to confirm with wasmtime's own linker.
pub async fn describe_component(
    id: &str,
    bytes: &[u8],
    world: World,
) -> Result<(ComponentInterface, Result<(), RuntimeError>), RuntimeError> {
    check_component_magic(id, bytes)?;
    let names = match super::worlds::read_names(bytes) {
        Ok(super::worlds::Binary::Component(n)) => n,
        Ok(super::worlds::Binary::CoreModule) => {
            return Err(RuntimeError::NotAComponent {
                component: id.to_string(),
                reason: super::worlds::CORE_MODULE_HINT.into(),
            });
        }
        Err(reason) => {
            return Err(RuntimeError::NotAComponent {
                component: id.to_string(),
                reason,
            });
        }
    };
    let interface = ComponentInterface {
        imports: names.imports.clone(),
        exports: names.exports.clone(),
    };
    if let Err(e) = super::compile::precheck(id, bytes, world) {
        return Ok((interface, Err(e)));
    }
    let cfg = EngineConfig {
        max_instances: 1,
        ..EngineConfig::default()
    };
    let id = id.to_string();
    let bytes = bytes.to_vec();
    let check = tokio::task::spawn_blocking(move || {
        let component = EngineShared::with_tier(&cfg, Tier::Baseline)
            .and_then(|e| e.component(&id, &bytes).map(|c| (e, c)))
            .or_else(|_| {
                EngineShared::with_tier(&cfg, Tier::Optimised)
                    .and_then(|e| e.component(&id, &bytes).map(|c| (e, c)))
            });
        component.and_then(|(e, c)| e.prepare(&id, &c, world).map(|_| ()))
    })
    .await
    .map_err(|e| RuntimeError::Engine(format!("compile task: {e}")))?;
    Ok((interface, check))
}

/// Core modules and garbage are "unsupported", not "install failure".
pub(super) fn check_component_magic(id: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
    const COMPONENT: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    const CORE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    match bytes.get(..8) {
        Some(h) if h == COMPONENT => Ok(()),
        Some(h) if h == CORE => Err(RuntimeError::NotAComponent {
            component: id.to_string(),
            reason: super::worlds::CORE_MODULE_HINT.into(),
        }),
        _ => Err(RuntimeError::NotAComponent {
            component: id.to_string(),
            reason: "not a wasm component (bad magic)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic() {
        assert!(check_component_magic("x", b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(matches!(
            check_component_magic("x", b"\0asm\x01\0\0\0"),
            Err(RuntimeError::NotAComponent { .. })
        ));
        assert!(check_component_magic("x", b"\0as").is_err());
    }
}
