//! Which compiler makes a component's native code, and when (issue 13 part 1).
//!
//! Install compiles with Winch, wasmtime's baseline compiler: 3.6-7x faster
//! than Cranelift on the large components real toolchains make, so a package
//! is installed and can be activated quickly. Winch code runs CPU-bound work
//! ~3.6x slower, so the [`Optimiser`] then compiles it with Cranelift in the
//! background and the next start of the component uses that code.
//!
//! Artifacts live in the cache as `<sha256>-<compat>.cwasm`, where `compat`
//! is the compatibility hash of the engine that made them (Winch and
//! Cranelift engines differ: their code uses different calling
//! conventions). An engine upgrade or a changed memory layout changes the
//! hash: the old artifacts no longer match, are removed by the cache's
//! garbage collection, and the components are compiled again. Which
//! artifacts exist is the whole durable state of the optimisation: a
//! component with a Winch artifact and no Cranelift one is pending, so
//! pending work survives a restart without a queue file.

use super::engine::{EngineConfig, EngineShared, check_component_magic};
use super::error::RuntimeError;
use super::host::HostState;
use super::loading::{LoadCounter, LoadToken, Loader, SharedLoads};
use super::optimise::{InstallGuard, Job, Optimised, Optimiser};
use super::spec::World;
use super::worlds::{self, Binary};
use crate::state::{StateError, atomic_write};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::Component;
use wasmtime_wasi::p2::bindings::CommandPre;

/// Device config `compiler`: which compiler install uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompilerChoice {
    /// Winch at install, Cranelift in the background; Cranelift at install
    /// where Winch refuses a component.
    #[default]
    Auto,
    /// Winch only (no background compile), Cranelift only where Winch
    /// refuses a component: least CPU spent on compiling.
    Winch,
    /// Cranelift at install, as before Winch was used: slowest install,
    /// fastest code from the first start.
    Cranelift,
}

/// Which compiler made the code a component runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Winch: fast to compile, slower code.
    Baseline,
    /// Cranelift: optimised code.
    Optimised,
}

impl Tier {
    /// The compiler's name.
    pub fn compiler(self) -> &'static str {
        match self {
            Tier::Baseline => "winch",
            Tier::Optimised => "cranelift",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.compiler())
    }
}

/// A component ready to instantiate, with the engine its code belongs to
/// (a store must be made by that engine).
#[derive(Clone)]
pub struct Loaded {
    /// The pre-instantiated component, world-checked.
    pub pre: CommandPre<HostState>,
    /// Its engine.
    pub engine: Arc<EngineShared>,
    /// Counts this component as loaded while any clone lives.
    _token: Arc<LoadToken>,
}

impl Loaded {
    /// A loaded component, counted in `counter` until dropped.
    pub(super) fn new(
        pre: CommandPre<HostState>,
        engine: Arc<EngineShared>,
        counter: &Arc<LoadCounter>,
    ) -> Loaded {
        Loaded {
            pre,
            engine,
            _token: LoadToken::new(counter),
        }
    }

    /// Which compiler made the code.
    pub fn tier(&self) -> Tier {
        self.engine.tier
    }
}

/// Where the optimiser reports finished jobs.
pub(super) type Finished = tokio::sync::mpsc::UnboundedReceiver<Optimised>;

/// The runtime's engines and its background optimiser.
pub(super) struct Compilers {
    /// Cranelift: optimised code, and every install when pinned.
    pub optimised: Arc<EngineShared>,
    /// Winch, unless pinned to Cranelift or unavailable on this host.
    pub baseline: Option<Arc<EngineShared>>,
    optimiser: Option<Optimiser>,
    /// Components loaded now (issue 15: none for an inactive package under
    /// `code-loading = "on-demand"`).
    pub loaded: Arc<LoadCounter>,
    /// On-demand code in use, shared between its instances.
    shared: Arc<SharedLoads>,
}

impl Compilers {
    /// Builds the engines; with `auto` also starts the optimiser thread,
    /// whose finished jobs arrive on the returned channel.
    pub fn new(cfg: &EngineConfig) -> Result<(Compilers, Option<Finished>), RuntimeError> {
        let optimised = EngineShared::with_tier(cfg, Tier::Optimised)?;
        let baseline = match cfg.compiler {
            CompilerChoice::Cranelift => None,
            _ => match EngineShared::with_tier(cfg, Tier::Baseline) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(
                        "Winch is not available here, installs compile with Cranelift: {e}"
                    );
                    None
                }
            },
        };
        let (optimiser, done) = if cfg.compiler == CompilerChoice::Auto && baseline.is_some() {
            match Optimiser::start(cfg, &optimised.compat) {
                Ok((o, rx)) => (Some(o), Some(rx)),
                Err(e) => {
                    // Winch code stays in use; a restart tries again.
                    tracing::error!("no background compile: {e}");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        Ok((
            Compilers {
                optimised,
                baseline,
                optimiser,
                loaded: Arc::default(),
                shared: Arc::default(),
            },
            done,
        ))
    }

    /// Cache files to keep for a component: its optimised artifact, and its
    /// baseline one while no optimised one exists.
    pub fn keep(&self, cache_dir: &Path, sha256: &str) -> Vec<PathBuf> {
        let opt = self.optimised.cwasm_path(cache_dir, sha256);
        let mut keep = vec![opt.clone()];
        if let Some(b) = &self.baseline
            && !opt.exists()
        {
            keep.push(b.cwasm_path(cache_dir, sha256));
        }
        keep
    }

    /// Marks an install as running until the guard drops: the optimiser
    /// starts no compile meanwhile.
    pub fn install_started(&self) -> Option<InstallGuard> {
        self.optimiser.as_ref().map(Optimiser::install_started)
    }

    /// Waits until the optimiser has nothing queued or running (tests,
    /// benchmarks). True if it got there within `timeout`.
    pub async fn wait_optimiser_idle(&self, timeout: std::time::Duration) -> bool {
        match &self.optimiser {
            Some(o) => o.wait_idle(timeout).await,
            None => true,
        }
    }

    /// Loads a component: the optimised artifact if there is one, else the
    /// baseline one, else checks its imports and compiles it (Winch first,
    /// per the device's choice) and stores the code. Queues the optimised
    /// compile when the result is baseline code under `auto`.
    pub async fn load(
        &self,
        id: &str,
        wasm: &Path,
        sha256: &str,
        world: World,
        cache_dir: &Path,
    ) -> Result<Loaded, RuntimeError> {
        let (optimised, baseline) = (self.optimised.clone(), self.baseline.clone());
        let (id_owned, wasm_owned, cache) =
            (id.to_string(), wasm.to_path_buf(), cache_dir.to_path_buf());
        let sha = sha256.to_string();
        let (engine, component) = tokio::task::spawn_blocking(move || {
            load_blocking(
                &optimised,
                baseline.as_ref(),
                &id_owned,
                &wasm_owned,
                &sha,
                world,
                &cache,
            )
        })
        .await
        .map_err(|e| RuntimeError::Engine(format!("compile task: {e}")))??;
        let pre = engine.prepare(id, &component, world)?;
        if engine.tier == Tier::Baseline
            && let Some(o) = &self.optimiser
        {
            o.enqueue(Job {
                id: id.to_string(),
                wasm: wasm.to_path_buf(),
                sha256: sha256.to_string(),
                target: self.optimised.cwasm_path(cache_dir, sha256),
                baseline: engine.cwasm_path(cache_dir, sha256),
            });
        }
        Ok(Loaded::new(pre, engine, &self.loaded))
    }

    /// Where a component's code is, to load it at its start.
    pub fn loader(
        &self,
        id: &str,
        wasm: &Path,
        sha256: &str,
        world: World,
        cache_dir: &Path,
    ) -> Loader {
        Loader {
            id: id.to_string(),
            wasm: wasm.to_path_buf(),
            sha256: sha256.to_string(),
            world,
            cache_dir: cache_dir.to_path_buf(),
            optimised: self.optimised.clone(),
            baseline: self.baseline.clone(),
            counter: self.loaded.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Makes sure a component has code in the cache without keeping it
    /// loaded (opening a data dir under `on-demand`): an artifact that
    /// exists is trusted as [`Compilers::load`] would (its name pins the
    /// engine; a damaged one is compiled again when it is loaded), and a
    /// Winch one is queued for optimising; with none (an engine upgrade)
    /// the component is compiled and checked now.
    pub async fn ensure(
        &self,
        id: &str,
        wasm: &Path,
        sha256: &str,
        world: World,
        cache_dir: &Path,
    ) -> Result<(), RuntimeError> {
        let opt = self.optimised.cwasm_path(cache_dir, sha256);
        if opt.exists() {
            return Ok(());
        }
        if let Some(b) = &self.baseline {
            let path = b.cwasm_path(cache_dir, sha256);
            if path.exists() {
                if let Some(o) = &self.optimiser {
                    o.enqueue(Job {
                        id: id.to_string(),
                        wasm: wasm.to_path_buf(),
                        sha256: sha256.to_string(),
                        target: opt,
                        baseline: path,
                    });
                }
                return Ok(());
            }
        }
        self.load(id, wasm, sha256, world, cache_dir)
            .await
            .map(drop)
    }
}

/// See [`Compilers::load`]; runs on a blocking thread.
pub(super) fn load_blocking(
    optimised: &Arc<EngineShared>,
    baseline: Option<&Arc<EngineShared>>,
    id: &str,
    wasm: &Path,
    sha256: &str,
    world: World,
    cache_dir: &Path,
) -> Result<(Arc<EngineShared>, Component), RuntimeError> {
    let opt_path = optimised.cwasm_path(cache_dir, sha256);
    if let Some(c) = optimised.cached(&opt_path) {
        return Ok((optimised.clone(), c));
    }
    if let Some(b) = baseline
        && let Some(c) = b.cached(&b.cwasm_path(cache_dir, sha256))
    {
        return Ok((b.clone(), c));
    }
    let bytes = std::fs::read(wasm).map_err(|e| StateError::io("read", wasm, e))?;
    precheck(id, &bytes, world)?;
    compile_first_tier(optimised, baseline, id, &bytes, sha256, cache_dir)
}

/// Compiles with Winch when there is a baseline engine, with Cranelift
/// where Winch refuses the component (the log says why) or there is none;
/// stores the code and loads it from the cache file.
fn compile_first_tier(
    optimised: &Arc<EngineShared>,
    baseline: Option<&Arc<EngineShared>>,
    id: &str,
    bytes: &[u8],
    sha256: &str,
    cache_dir: &Path,
) -> Result<(Arc<EngineShared>, Component), RuntimeError> {
    if let Some(b) = baseline {
        match b.compile(id, bytes) {
            Ok(code) => {
                let path = b.cwasm_path(cache_dir, sha256);
                atomic_write(&path, &code)?;
                drop(code);
                // SAFETY: written atomically just now by this engine; the
                // cache holds only such files.
                let c = unsafe { Component::deserialize_file(&b.engine, &path) }
                    .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
                return Ok((b.clone(), c));
            }
            Err(e) => tracing::info!(
                component = %id,
                "Winch cannot compile this component, compiling with Cranelift instead: {e}"
            ),
        }
    }
    let path = optimised.cwasm_path(cache_dir, sha256);
    let c = optimised.compile_and_store(id, bytes, &path)?;
    Ok((optimised.clone(), c))
}

/// What can be told before compiling: a core module, garbage, imports the
/// world lacks (every one of them, with a hint), no `wasi:cli/run`. Used by
/// install, `wasmdm inspect` and `wasmdm pack` (as a warning there).
pub fn precheck(id: &str, bytes: &[u8], world: World) -> Result<(), RuntimeError> {
    check_component_magic(id, bytes)?;
    let names = match worlds::read_names(bytes) {
        Ok(Binary::Component(names)) => names,
        Ok(Binary::CoreModule) => {
            return Err(RuntimeError::NotAComponent {
                component: id.to_string(),
                reason: worlds::CORE_MODULE_HINT.into(),
            });
        }
        Err(reason) => {
            return Err(RuntimeError::NotAComponent {
                component: id.to_string(),
                reason,
            });
        }
    };
    worlds::check_imports(world, &names).map_err(|m| RuntimeError::InstallFailed {
        component: id.to_string(),
        reason: m.to_string(),
    })?;
    if !worlds::exports_run(&names) {
        return Err(RuntimeError::InstallFailed {
            component: id.to_string(),
            reason: format!(
                "does not export wasi:cli/run@0.2.x (exports: {}): a device app is a \
                 wasi:cli/command, e.g. a Rust `fn main` built for wasm32-wasip2",
                if names.exports.is_empty() {
                    "none".to_string()
                } else {
                    names.exports.join(", ")
                }
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component holding one core module whose function tail-calls
    /// itself: valid wasm that Winch does not compile (no tail calls).
    fn tail_calling_component() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, Function, FunctionSection, Instruction, Module, ModuleSection, TypeSection,
        };
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        f.instruction(&Instruction::ReturnCall(0));
        f.instruction(&Instruction::End);
        code.function(&f);
        let mut module = Module::new();
        module.section(&types).section(&funcs).section(&code);
        let mut component = wasm_encoder::Component::new();
        component.section(&ModuleSection(&module));
        component.finish()
    }

    #[test]
    fn cranelift_compiles_what_winch_refuses() {
        let cfg = EngineConfig {
            max_instances: 1,
            ..EngineConfig::default()
        };
        let optimised = EngineShared::with_tier(&cfg, Tier::Optimised).unwrap();
        let baseline = EngineShared::with_tier(&cfg, Tier::Baseline).unwrap();
        let bytes = tail_calling_component();
        assert!(
            baseline.compile("t", &bytes).is_err(),
            "Winch took tail calls"
        );
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) =
            compile_first_tier(&optimised, Some(&baseline), "t", &bytes, "ab", dir.path()).unwrap();
        assert_eq!(engine.tier, Tier::Optimised);
        assert!(optimised.cwasm_path(dir.path(), "ab").exists());
        assert!(!baseline.cwasm_path(dir.path(), "ab").exists());
        // The two engines' artifacts never share a name.
        assert_ne!(optimised.compat, baseline.compat);
    }
}
