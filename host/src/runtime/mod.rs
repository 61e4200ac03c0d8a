//! The wasmdm runtime: installs, runs and supervises WebAssembly components.
//!
//! It knows nothing of LwM2M; the Object 9/14 driver calls the [`Runtime`] facade.
//! Durable changes go through [`crate::state`]; each operation persists its outcome
//! (package record, activation set) before it returns.

mod activation;
mod appobjects;
mod compile;
mod convert;
mod datafs;
mod delivery;
mod engine;
mod error;
mod fdbudget;
mod foreground;
mod host;
mod install;
mod instance;
mod loading;
mod logbuf;
mod optimise;
mod precompiled;
mod queries;
mod restore;
mod slots;
mod spec;
mod supervisor;
mod target;
mod trust;
mod worlds;

pub use appobjects::{
    AppFailure, AppObjectDef, AppObjectEvent, AppOperations, AppPath, AppRequestKind,
    AppResourceDef, AppValue, AppValueType,
};
pub use compile::{CompilerChoice, Tier, precheck as check_component};
pub use delivery::{DeliveredInfo, Delivery};
pub use engine::{
    ComponentInterface, EPOCH_TICK, EngineConfig, FULL_RESERVATION, describe_component,
};
pub use error::RuntimeError;
pub use foreground::{ForegroundOptions, StopHandle, run_foreground};
pub use instance::ExitStatus;
pub use loading::CodeLoading;
pub use logbuf::{
    COMPONENT_LOG_BYTES_PER_SEC, COMPONENT_LOG_MIN_BURST_BYTES, HOST_LOG_BURST_BYTES,
    HOST_LOG_BYTES_PER_SEC, LINE_OVERHEAD_BYTES, LogLine, LogSource, MAX_LINE_BYTES, read_log_file,
};
pub use precompiled::{
    RUNTIME_VERSION, Refused as PrecompiledRefused, RuntimePrecompiler, precompile, sign_artifact,
};
pub use spec::{ComponentSpec, NetRule, PackageSpec, ReadonlyMount, RestartPolicy, Sandbox, World};
pub use supervisor::{ComponentState, ComponentStatus, ExitRecord, RuntimeEvent};
pub use target::CodeTarget;
pub use worlds::{
    Binary, ComponentNames, MissingImports, check_imports, read_names, worlds_summary,
};

use crate::state::{DataDir, DirLock, StateError, atomic_write, fsync_dir, valid_name};
use delivery::{DeliveredRecord, remove_dir_if_exists, remove_if_exists};
use instance::InstanceSetup;
use logbuf::LogBuffer;
use serde::{Deserialize, Serialize};
use slots::cleanup_deliveries;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use supervisor::{SharedStatus, Supervisor, SupervisorArgs};
use tokio::sync::broadcast;

/// Result alias for runtime operations.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Device-level runtime configuration.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The data directory (created if missing, locked while open).
    pub data_dir: PathBuf,
    /// Engine and pool sizing.
    pub engine: EngineConfig,
    /// Largest package file accepted by a delivery.
    pub max_package_bytes: u64,
    /// Limits applied when unpacking (hostile input).
    pub package_limits: wasmdm_package::Limits,
    /// Keys a package manifest must be signed with; empty = signatures not required.
    pub trusted_keys: Vec<wasmdm_package::VerifyingKey>,
    /// Start what was active when opening (a device host); one-shot CLI
    /// commands open the data directory without starting anything.
    pub autostart: bool,
    /// Let an install replace a package with a lower version. Off by
    /// default: an old, vulnerable release must not come back silently.
    pub allow_downgrade: bool,
}

impl RuntimeConfig {
    /// Defaults for a device with data under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            data_dir: data_dir.into(),
            engine: EngineConfig::default(),
            max_package_bytes: 64 << 20,
            package_limits: wasmdm_package::Limits::default(),
            trusted_keys: Vec::new(),
            autostart: true,
            allow_downgrade: false,
        }
    }
}

/// Outcome of an install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledInfo {
    /// Package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Component ids with their versions.
    pub components: Vec<(String, String)>,
    /// Version replaced, when this was an upgrade.
    pub upgraded_from: Option<String>,
    /// Components running after the install (restarted on the new version).
    pub active: Vec<String>,
}

/// Status of one installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageStatus {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description from the manifest.
    pub description: Option<String>,
    /// Marked by `prepare_update` (Uninstall(1), SwMgmt §5.2.2.1).
    pub for_update: bool,
    /// Components.
    pub components: Vec<ComponentStatus>,
}

/// `packages/<name>/record.json`: written last, so its presence means "installed".
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PackageRecord {
    spec: PackageSpec,
    /// Directory under packages/<name>/ holding this generation's files.
    generation: String,
    /// Activated components (desired state, restored at open).
    active: BTreeSet<String>,
    for_update: bool,
    /// Who signed the manifest when it was installed (key fingerprint), if
    /// anyone.
    #[serde(default)]
    signed_by: Option<String>,
    /// False for records written before signers were kept: nothing to check.
    #[serde(default)]
    signer_recorded: bool,
}

struct Comp {
    spec: ComponentSpec,
    /// Its code (loaded, or where to load it from), or why it cannot run.
    code: std::result::Result<loading::Code, String>,
    status: SharedStatus,
    log: LogBuffer,
    sup: Option<Supervisor>,
}

struct Pkg {
    record: PackageRecord,
    root: PathBuf,
    comps: BTreeMap<String, Comp>,
}

struct Inner {
    dirs: DataDir,
    /// Winch and Cranelift engines and the background optimiser (issue 13).
    compile: compile::Compilers,
    config: RuntimeConfig,
    /// Serialises mutating operations (install, activate, ...).
    ops: tokio::sync::Mutex<()>,
    packages: Mutex<BTreeMap<String, Pkg>>,
    events: broadcast::Sender<RuntimeEvent>,
    /// Shared with supervisors (see `SupervisorArgs::keepalive`).
    lock: Arc<DirLock>,
    /// File descriptors guests may hold, shared out per instance.
    descriptors: Arc<fdbudget::DescriptorBudget>,
    /// Instances running at once (`max-instances`), over both engines' pools.
    instance_slots: Arc<fdbudget::Budget>,
    /// LwM2M objects the running apps serve (issue 14).
    app_objects: Arc<appobjects::AppObjects>,
}

/// Whether a start resets the restart counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestartBudget {
    /// Activation: counts from zero.
    Fresh,
    /// Autostart after the host restarted: the recorded counts go on.
    CarriedOver,
}

/// The runtime facade: cheap to clone, Send + Sync.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

fn check_name(n: &str) -> Result<()> {
    if valid_name(n) {
        Ok(())
    } else {
        Err(RuntimeError::InvalidName(n.to_string()))
    }
}

fn to_json<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| {
        RuntimeError::State(StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Engine(format!("blocking task: {e}")))?
}

impl Runtime {
    /// Opens the data directory: takes the lock, removes crash leftovers, restores
    /// installed packages (recompiling if the engine changed) and restarts what was active.
    pub async fn open(config: RuntimeConfig) -> Result<Runtime> {
        let mut config = config;
        let dirs = DataDir::create(&config.data_dir)?;
        let lock = DirLock::acquire(dirs.root())?;
        // One trust per data directory: a device records its keys; a
        // one-shot command adds them to its own, so `wasmdm install` on a
        // device's directory refuses what the device would.
        if config.autostart {
            trust::save(dirs.root(), &config.trusted_keys)?;
        } else {
            for key in trust::load(dirs.root())? {
                if !config.trusted_keys.contains(&key) {
                    config.trusted_keys.push(key);
                }
            }
        }
        let removed = dirs.remove_temp_files()?;
        if removed > 0 {
            tracing::info!("removed {removed} temp files left by a crash");
        }
        let (compile, optimised) = compile::Compilers::new(&config.engine)?;
        let max_instances = config.engine.max_instances;
        cleanup_deliveries(&dirs, &config.package_limits, &config.trusted_keys)?;
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            dirs,
            compile,
            config,
            ops: tokio::sync::Mutex::new(()),
            packages: Mutex::new(BTreeMap::new()),
            events,
            lock: Arc::new(lock),
            descriptors: fdbudget::DescriptorBudget::for_this_process(),
            instance_slots: fdbudget::Budget::instance_slots(max_instances),
            app_objects: appobjects::AppObjects::new(),
        });
        if let Some(done) = optimised {
            optimise::listen(Arc::downgrade(&inner), done);
        }
        let rt = Runtime { inner };
        rt.restore().await?;
        Ok(rt)
    }

    fn pkgs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pkg>> {
        self.inner
            .packages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// [`Runtime::write_record`] on a blocking thread: the worker stays free to
    /// run what was just spawned (an instance starting) during the fsyncs.
    async fn write_record_off_thread(&self, record: &PackageRecord) -> Result<()> {
        let (this, record) = (self.clone(), record.clone());
        blocking(move || this.write_record(&record)).await
    }

    fn write_record(&self, record: &PackageRecord) -> Result<()> {
        let path = self.inner.dirs.package_record(&record.spec.name);
        atomic_write(&path, &to_json(&path, record)?)?;
        Ok(())
    }

    /// Removes cached code no installed component references (or built by another engine).
    fn gc_cache(&self) {
        let keep: BTreeSet<PathBuf> = self
            .pkgs()
            .values()
            .flat_map(|p| p.record.spec.components.iter())
            .flat_map(|c| self.inner.compile.keep(&self.inner.dirs.cache(), &c.sha256))
            .collect();
        let Ok(rd) = std::fs::read_dir(self.inner.dirs.cache()) else {
            return;
        };
        for e in rd.flatten() {
            // A temp file is the optimiser's artifact being written (crash
            // leftovers go at open).
            let temp = e
                .file_name()
                .to_str()
                .is_some_and(crate::state::is_temp_name);
            if !keep.contains(&e.path()) && !temp {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Subscribes to component state changes (started, exited, failed, restarting).
    pub fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.inner.events.subscribe()
    }

    /// The data directory layout (for the CLI's diagnostics).
    pub fn data_dir(&self) -> &Path {
        self.inner.dirs.root()
    }

    /// Components whose code is in memory now: every installed one under
    /// `code-loading = "resident"`, only those running (or waiting to
    /// restart) under `on-demand`.
    pub fn loaded_components(&self) -> usize {
        self.inner.compile.loaded.get()
    }

    /// How this runtime keeps component code (device config `code-loading`).
    pub fn code_loading(&self) -> CodeLoading {
        self.inner.config.engine.code_loading
    }
}
