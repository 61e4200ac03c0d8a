//! The wasmdm runtime: installs, runs and supervises WebAssembly components.
//!
//! It knows nothing of LwM2M; the Object 9/14 driver calls the [`Runtime`] facade.
//! Durable changes go through [`crate::state`]; each operation persists its outcome
//! (package record, activation set) before it returns.

mod compile;
mod convert;
mod datafs;
mod delivery;
mod engine;
mod error;
mod fdbudget;
mod foreground;
mod host;
mod instance;
mod logbuf;
mod optimise;
mod precompiled;
mod spec;
mod supervisor;
mod target;
mod trust;
mod worlds;

pub use compile::{CompilerChoice, Tier, precheck as check_component};
pub use delivery::{DeliveredInfo, Delivery};
pub use engine::{
    ComponentInterface, EPOCH_TICK, EngineConfig, FULL_RESERVATION, describe_component,
};
pub use error::RuntimeError;
pub use foreground::{ForegroundOptions, StopHandle, run_foreground};
pub use instance::ExitStatus;
pub use logbuf::{
    COMPONENT_LOG_BYTES_PER_SEC, COMPONENT_LOG_MIN_BURST_BYTES, HOST_LOG_BURST_BYTES,
    HOST_LOG_BYTES_PER_SEC, LINE_OVERHEAD_BYTES, LogLine, LogSource, MAX_LINE_BYTES, read_log_file,
};
pub use precompiled::{RUNTIME_VERSION, Refused as PrecompiledRefused, precompile, sign_artifact};
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
    pre: std::result::Result<compile::Loaded, String>,
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

    async fn restore(&self) -> Result<()> {
        let dirs = &self.inner.dirs;
        let root = dirs.packages();
        let entries = std::fs::read_dir(&root).map_err(|e| StateError::io("read dir", &root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StateError::io("read dir", &root, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let record_path = dirs.package_record(&name);
            if !valid_name(&name) || !record_path.exists() {
                // An install that crashed before its record was written.
                tracing::info!("removing incomplete install {}", path.display());
                remove_dir_if_exists(&path)?;
                continue;
            }
            let record: PackageRecord = match std::fs::read(&record_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(r) => r,
                None => {
                    tracing::error!(
                        "unreadable record {}; package skipped",
                        record_path.display()
                    );
                    continue;
                }
            };
            // Generations other than the recorded one are leftovers of an interrupted upgrade.
            for g in std::fs::read_dir(&path).map_err(|e| StateError::io("read dir", &path, e))? {
                let g = g.map_err(|e| StateError::io("read dir", &path, e))?;
                if g.path().is_dir() && g.file_name().to_str() != Some(record.generation.as_str()) {
                    remove_dir_if_exists(&g.path())?;
                }
            }
            let gen_dir = path.join(&record.generation);
            let pkg = self.load_package(record, gen_dir, None).await;
            self.pkgs().insert(name, pkg);
        }
        self.gc_cache();
        if !self.inner.config.autostart {
            return Ok(());
        }
        let names: Vec<String> = self.pkgs().keys().cloned().collect();
        for name in names {
            if let Some(why) = self.untrusted(&name) {
                tracing::warn!(package = %name, "not started: {why}");
                continue;
            }
            self.start_active(&name);
        }
        Ok(())
    }

    /// Why an installed package may not run under the trust in force now
    /// (signatures required and it was not signed by a trusted key), if so.
    /// Installed packages are re-checked at every start, so a package put in
    /// place with other trust (or none) does not run.
    fn untrusted(&self, name: &str) -> Option<String> {
        let trusted = &self.inner.config.trusted_keys;
        if trusted.is_empty() {
            return None;
        }
        let pkgs = self.pkgs();
        let record = &pkgs.get(name)?.record;
        match (record.signer_recorded, record.signed_by.clone()) {
            // Installed before signers were recorded: nothing to check.
            (false, _) => None,
            (true, None) => Some("unsigned, and this device requires trusted signatures".into()),
            (true, Some(fp)) => {
                let known = trusted
                    .iter()
                    .any(|k| wasmdm_package::signing::fingerprint(k) == fp);
                (!known).then(|| format!("signed by {fp}, which this device does not trust"))
            }
        }
    }

    /// Compiles (or loads from cache) every component; failures are kept per component.
    async fn load_package(
        &self,
        record: PackageRecord,
        root: PathBuf,
        logs: Option<&BTreeMap<String, LogBuffer>>,
    ) -> Pkg {
        let mut comps = BTreeMap::new();
        for spec in &record.spec.components {
            let pre = self
                .inner
                .compile
                .load(
                    &spec.id,
                    &root.join(&spec.file),
                    &spec.sha256,
                    spec.world,
                    &self.inner.dirs.cache(),
                )
                .await
                .map_err(|e| e.to_string());
            comps.insert(spec.id.clone(), self.new_comp(&record, spec, pre, logs));
        }
        Pkg {
            record,
            root,
            comps,
        }
    }

    fn new_comp(
        &self,
        record: &PackageRecord,
        spec: &ComponentSpec,
        pre: std::result::Result<compile::Loaded, String>,
        logs: Option<&BTreeMap<String, LogBuffer>>,
    ) -> Comp {
        let log = logs
            .and_then(|l| l.get(&spec.id).cloned())
            .unwrap_or_else(|| {
                LogBuffer::new(
                    &format!("{}/{}", record.spec.name, spec.id),
                    spec.sandbox.log_cap,
                    false,
                )
                .with_file(self.inner.dirs.log_file(&record.spec.name, &spec.id))
            });
        let mut status = ComponentStatus {
            id: spec.id.clone(),
            version: spec.version.clone(),
            active: record.active.contains(&spec.id),
            state: ComponentState::Inactive,
            restart_count: 0,
            retries: 0,
            last_exit: pre
                .as_ref()
                .err()
                .map(|e| ExitStatus::StartFailed(e.clone())),
            crash_loop: false,
        };
        // How this version last ended, as recorded by whichever process ran it.
        if pre.is_ok()
            && let Some(rec) =
                ExitRecord::read(&self.inner.dirs.exit_file(&record.spec.name, &spec.id))
            && rec.version == spec.version
        {
            status.last_exit = rec.last_exit;
            status.crash_loop = rec.crash_loop;
            status.restart_count = rec.restart_count;
            status.retries = rec.retries;
        }
        Comp {
            spec: spec.clone(),
            pre,
            status: Arc::new(Mutex::new(status)),
            log,
            sup: None,
        }
    }

    /// Starts supervisors for every active component of `name` not already running.
    fn start_active(&self, name: &str) {
        let mut pkgs = self.pkgs();
        let Some(pkg) = pkgs.get_mut(name) else {
            return;
        };
        let ids: Vec<String> = pkg.record.active.iter().cloned().collect();
        for id in ids {
            // A host restart is no operator's decision to try again: the
            // restart budget carries over, and a component whose policy gave
            // up stays Failed until it is activated again.
            if pkg.comps.get(&id).is_some_and(|c| {
                c.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .crash_loop
            }) {
                tracing::warn!(
                    "{name}/{id}: not started: its restart policy gave up before the host \
                     restarted (crash loop); activate it to try again"
                );
                if let Some(c) = pkg.comps.get(&id) {
                    c.status.lock().unwrap_or_else(|p| p.into_inner()).state =
                        ComponentState::Failed;
                }
                continue;
            }
            if let Err(e) = self.start_with(pkg, &id, RestartBudget::CarriedOver) {
                tracing::error!("{name}/{id}: {e}");
            }
        }
    }

    /// Starts `id` with a fresh restart budget (an operator's activation).
    fn start_one(&self, pkg: &mut Pkg, id: &str) -> Result<()> {
        self.start_with(pkg, id, RestartBudget::Fresh)
    }

    fn start_with(&self, pkg: &mut Pkg, id: &str, budget: RestartBudget) -> Result<()> {
        let name = pkg.record.spec.name.clone();
        let config = Arc::new(pkg.record.spec.config.clone());
        let root = pkg.root.clone();
        let comp = pkg
            .comps
            .get_mut(id)
            .ok_or_else(|| RuntimeError::UnknownComponent {
                package: name.clone(),
                component: id.to_string(),
            })?;
        if comp.sup.as_ref().is_some_and(|s| !s.is_finished()) {
            return Ok(());
        }
        let pre = comp
            .pre
            .clone()
            .map_err(|reason| RuntimeError::NotRunnable {
                package: name.clone(),
                component: id.to_string(),
                reason,
            })?;
        let slot =
            self.inner
                .instance_slots
                .take(1)
                .map_err(|reason| RuntimeError::NotRunnable {
                    package: name.clone(),
                    component: id.to_string(),
                    reason,
                })?;
        let share = self
            .inner
            .descriptors
            .take(
                u64::from(comp.spec.sandbox.max_descriptors)
                    .saturating_mul(datafs::RESOURCES_PER_DESCRIPTOR as u64),
            )
            .map_err(|reason| RuntimeError::NotRunnable {
                package: name.clone(),
                component: id.to_string(),
                reason,
            })?;
        {
            let mut st = comp.status.lock().unwrap_or_else(|p| p.into_inner());
            st.active = true;
            if budget == RestartBudget::Fresh {
                st.restart_count = 0;
                st.retries = 0;
            }
            st.crash_loop = false;
            // Visible at once: activate() returns with the component Starting.
            st.state = ComponentState::Starting;
        }
        let sb = &comp.spec.sandbox;
        let setup = InstanceSetup {
            argv0: comp.spec.id.clone(),
            sandbox: sb.clone(),
            data_dir: sb
                .data_dir
                .then(|| self.inner.dirs.appdata(&name, &comp.spec.id)),
            package_root: root,
            config,
            log: comp.log.clone(),
        };
        let exit_file = self.inner.dirs.exit_file(&name, &comp.spec.id);
        comp.sup = Some(Supervisor::start(SupervisorArgs {
            package: name,
            engine: pre.engine,
            pre: pre.pre,
            setup,
            status: comp.status.clone(),
            events: self.inner.events.clone(),
            exit_file: Some(exit_file),
            keepalive: self.inner.lock.clone(),
            shares: vec![slot, share],
        }));
        Ok(())
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

    // ---- deliveries -------------------------------------------------------------

    /// Opens delivery slot `slot` (e.g. the /9 instance id) for streaming writes.
    pub fn delivery(&self, slot: &str) -> Result<Delivery> {
        check_name(slot)?;
        Delivery::open(
            self.inner.dirs.delivery(slot),
            self.inner.config.max_package_bytes,
        )
    }

    /// What a slot holds after a restart: (bytes received, verified package if any).
    pub fn delivery_state(&self, slot: &str) -> Result<(u64, Option<DeliveredInfo>)> {
        check_name(slot)?;
        let dir = self.inner.dirs.delivery(slot);
        if !dir.exists() {
            return Ok((0, None));
        }
        let len = self.delivery(slot)?.len();
        Ok((len, delivery::read_delivered(&dir).map(|r| r.info)))
    }

    /// Unpacks and verifies the slot's package (digests, signature, limits) into its
    /// staging dir and durably marks it delivered. On error the slot's bytes remain
    /// and nothing else changes. (What is durable is the verified package file
    /// and the mark; the staging files are synced by the install that keeps
    /// them, and rebuilt from the package file by the next `open`.)
    pub async fn verify_delivery(&self, slot: &str) -> Result<DeliveredInfo> {
        check_name(slot)?;
        let _ops = self.inner.ops.lock().await;
        let dir = self.inner.dirs.delivery(slot);
        let limits = self.inner.config.package_limits.clone();
        let keys = self.inner.config.trusted_keys.clone();
        blocking(move || verify_slot(&dir, &limits, &keys)).await
    }

    /// Forgets a slot: bytes, staging, verification.
    /// Removes a delivery slot at once, without waiting for other operations:
    /// for a driver that must be sure the slot is empty before the next
    /// delivery into it starts (only ever call it for a slot no install uses).
    pub fn discard_delivery_now(&self, slot: &str) -> Result<()> {
        check_name(slot)?;
        Ok(remove_dir_if_exists(&self.inner.dirs.delivery(slot))?)
    }

    pub async fn discard_delivery(&self, slot: &str) -> Result<()> {
        check_name(slot)?;
        let _ops = self.inner.ops.lock().await;
        let dir = self.inner.dirs.delivery(slot);
        blocking(move || Ok(remove_dir_if_exists(&dir)?)).await
    }

    // ---- install / uninstall ----------------------------------------------------

    /// Installs the verified package in `slot`: copies it to a new generation dir,
    /// precompiles and world-checks every component, then switches the package
    /// record. An existing package of the same name keeps running until the new one
    /// is ready; its active components then restart on the new version, app data
    /// kept. On failure the delivery and any old package are untouched. On success
    /// the delivery slot is removed.
    pub async fn install(&self, slot: &str) -> Result<InstalledInfo> {
        check_name(slot)?;
        let _ops = self.inner.ops.lock().await;
        let _installing = self.inner.compile.install_started();
        let slot_dir = self.inner.dirs.delivery(slot);
        let DeliveredRecord { spec, info } = delivery::read_delivered(&slot_dir)
            .ok_or_else(|| RuntimeError::NotDelivered(slot.to_string()))?;
        check_name(&spec.name)?;
        let max_mem = self.inner.config.engine.max_memory_per_instance;
        for c in &spec.components {
            check_name(&c.id)?;
            // The pool cannot give more than its slot size, whatever the limiter allows.
            if c.sandbox.memory_bytes > max_mem {
                return Err(RuntimeError::InstallFailed {
                    component: c.id.clone(),
                    reason: format!(
                        "asks for {} bytes of memory; this device allows at most {max_mem} per instance",
                        c.sandbox.memory_bytes
                    ),
                });
            }
        }
        let name = spec.name.clone();
        if !self.inner.config.allow_downgrade {
            let installed = self
                .pkgs()
                .get(&name)
                .map(|p| p.record.spec.version.clone());
            if let Some(installed) = installed
                && is_downgrade(&installed, &spec.version)
            {
                return Err(RuntimeError::Downgrade {
                    package: name,
                    installed,
                    offered: spec.version.clone(),
                });
            }
        }
        let pkg_dir = self.inner.dirs.package(&name);
        let generation = format!(
            "g{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let gen_dir = pkg_dir.join(&generation);
        let staging = delivery::staging_path(&slot_dir);
        {
            let gen_dir = gen_dir.clone();
            blocking(move || link_tree(&staging, &gen_dir)).await?;
        }
        // The files become durable while the components compile (fsync waits
        // on the disk, compiling on the CPU); the record waits for both. The
        // generation dir's entry is made durable by the record write (same
        // dir); a new package's own dir entry needs `packages/` synced.
        let synced = {
            let gen_dir = gen_dir.clone();
            let packages = self.inner.dirs.packages();
            blocking(move || {
                sync_tree(&gen_dir)?;
                Ok(fsync_dir(&packages)?)
            })
        };
        let synced = tokio::spawn(synced);
        // (`blocking` hands the closure to a blocking thread when first
        // polled: the spawn starts it now, not when awaited.)
        let (old_active, old_version, old_logs) = {
            let pkgs = self.pkgs();
            match pkgs.get(&name) {
                Some(p) => (
                    Some(p.record.active.clone()),
                    Some(p.record.spec.version.clone()),
                    p.comps
                        .iter()
                        .map(|(k, c)| (k.clone(), c.log.clone()))
                        .collect(),
                ),
                None => (None, None, BTreeMap::new()),
            }
        };
        let ids: BTreeSet<String> = spec.components.iter().map(|c| c.id.clone()).collect();
        let record = PackageRecord {
            active: old_active
                .unwrap_or_default()
                .intersection(&ids)
                .cloned()
                .collect(),
            spec,
            generation,
            for_update: false,
            signed_by: info.signed_by.clone(),
            signer_recorded: true,
        };
        // Compile and check everything before touching the old package.
        let mut pres = BTreeMap::new();
        let mut failed = None;
        for c in &record.spec.components {
            self.adopt_precompiled(&slot_dir, &c.id, &c.sha256);
            let loaded = self
                .inner
                .compile
                .load(
                    &c.id,
                    &gen_dir.join(&c.file),
                    &c.sha256,
                    c.world,
                    &self.inner.dirs.cache(),
                )
                .await;
            match loaded {
                Ok(pre) => {
                    pres.insert(c.id.clone(), pre);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let synced = synced
            .await
            .map_err(|e| RuntimeError::Engine(format!("sync task: {e}")))
            .and_then(|r| r);
        if let Some(e) = failed.or(synced.err()) {
            let _ = remove_dir_if_exists(&gen_dir);
            if old_version.is_none() {
                let _ = remove_dir_if_exists(&pkg_dir);
            }
            self.gc_cache();
            return Err(e);
        }
        let comps = record
            .spec
            .components
            .iter()
            .filter_map(|s| {
                let pre = pres.remove(&s.id)?;
                Some((
                    s.id.clone(),
                    self.new_comp(&record, s, Ok(pre), Some(&old_logs)),
                ))
            })
            .collect();
        let new_pkg = Pkg {
            record: record.clone(),
            root: gen_dir.clone(),
            comps,
        };
        // Stop the old version, switch the record (the commit point), start the new.
        let old_sups = self.take_supervisors(&name, None);
        for s in old_sups {
            s.stop().await;
        }
        self.write_record(&record)?;
        let old_root = {
            let mut pkgs = self.pkgs();
            let old = pkgs.insert(name.clone(), new_pkg);
            old.map(|o| o.root)
        };
        self.start_active(&name);
        if let Some(old_root) = old_root.filter(|r| *r != gen_dir) {
            let _ = remove_dir_if_exists(&old_root);
        }
        self.gc_cache();
        // The "delivered" mark first: a crash in the middle of removing the
        // slot must not leave it marked with half its files gone.
        let _ = remove_if_exists(&delivery::delivered_path(&slot_dir));
        let _ = remove_dir_if_exists(&slot_dir);
        let _ = fsync_dir(&self.inner.dirs.deliveries());
        Ok(InstalledInfo {
            name,
            version: record.spec.version.clone(),
            components: record
                .spec
                .components
                .iter()
                .map(|c| (c.id.clone(), c.version.clone()))
                .collect(),
            upgraded_from: old_version,
            active: record.active.iter().cloned().collect(),
        })
    }

    /// Takes the supervisors of `name` (all components, or one) out of the table.
    fn take_supervisors(&self, name: &str, component: Option<&str>) -> Vec<Supervisor> {
        let mut pkgs = self.pkgs();
        let Some(pkg) = pkgs.get_mut(name) else {
            return Vec::new();
        };
        pkg.comps
            .iter_mut()
            .filter(|(id, _)| component.is_none_or(|c| c == id.as_str()))
            .filter_map(|(_, c)| c.sup.take())
            .collect()
    }

    /// Stops and removes a package: code, record, and its app data (keeps nothing).
    pub async fn uninstall(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let _ops = self.inner.ops.lock().await;
        if !self.pkgs().contains_key(name) {
            return Err(RuntimeError::UnknownPackage(name.to_string()));
        }
        for s in self.take_supervisors(name, None) {
            s.stop().await;
        }
        let record = self.inner.dirs.package_record(name);
        remove_if_exists(&record)?;
        fsync_dir(&self.inner.dirs.package(name))?;
        self.pkgs().remove(name);
        remove_dir_if_exists(&self.inner.dirs.package(name))?;
        remove_dir_if_exists(&self.inner.dirs.appdata_root().join(name))?;
        remove_dir_if_exists(&self.inner.dirs.logs_root().join(name))?;
        self.gc_cache();
        Ok(())
    }

    /// Uninstall(1) "for update" (SwMgmt §5.2.2.1): keep the package and let what
    /// runs keep running; mark it so the next install of the same name upgrades it.
    pub async fn prepare_update(&self, name: &str) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        let record = {
            let mut pkgs = self.pkgs();
            let pkg = pkgs
                .get_mut(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            pkg.record.for_update = true;
            pkg.record.clone()
        };
        self.write_record(&record)
    }

    // ---- activation -------------------------------------------------------------

    fn resolve_ids(&self, name: &str, component: Option<&str>) -> Result<Vec<String>> {
        let pkgs = self.pkgs();
        let pkg = pkgs
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
        match component {
            None => Ok(pkg.comps.keys().cloned().collect()),
            Some(c) if pkg.comps.contains_key(c) => Ok(vec![c.to_string()]),
            Some(c) => Err(RuntimeError::UnknownComponent {
                package: name.to_string(),
                component: c.to_string(),
            }),
        }
    }

    /// Activates a package (all components) or one component. Idempotent. The
    /// activation is persisted before this returns; the instance then starts
    /// (not in a runtime opened without `autostart`, which runs nothing).
    pub async fn activate(&self, name: &str, component: Option<&str>) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        let ids = self.resolve_ids(name, component)?;
        let record = {
            let mut pkgs = self.pkgs();
            let pkg = pkgs
                .get_mut(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            for id in &ids {
                if let Some(Err(reason)) = pkg.comps.get(id).map(|c| &c.pre) {
                    return Err(RuntimeError::NotRunnable {
                        package: name.to_string(),
                        component: id.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            let mut r = pkg.record.clone();
            r.active.extend(ids.iter().cloned());
            r
        };
        // A runtime opened for a one-shot command (`wasmdm activate`) runs
        // nothing: the record says active, and the device host starts it.
        if !self.inner.config.autostart {
            self.write_record_off_thread(&record).await?;
            let mut pkgs = self.pkgs();
            if let Some(pkg) = pkgs.get_mut(name) {
                pkg.record = record;
                for id in &ids {
                    if let Some(c) = pkg.comps.get(id) {
                        c.status.lock().unwrap_or_else(|p| p.into_inner()).active = true;
                    }
                }
            }
            return Ok(());
        }
        // Start first, then make the record durable while the instances come
        // up on other threads: the call returns (and the caller may report
        // "active") only once the record is written. A crash in between
        // leaves the record as it was, which is what was last reported.
        let (result, started, old_record) = {
            let mut pkgs = self.pkgs();
            let pkg = pkgs
                .get_mut(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            let old_record = std::mem::replace(&mut pkg.record, record.clone());
            let mut started = Vec::new();
            let mut result = Ok(());
            for id in &ids {
                let running = pkg
                    .comps
                    .get(id)
                    .and_then(|c| c.sup.as_ref())
                    .is_some_and(|s| !s.is_finished());
                // Already active and started since open, and not failed: a
                // replayed Activate (the device re-issues one after a
                // restart) must not run a command that finished a second
                // time. A failed one (crash loop) is started again.
                let done_here = old_record.active.contains(id)
                    && pkg.comps.get(id).is_some_and(|c| {
                        c.sup.is_some()
                            && c.status
                                .lock()
                                .map(|st| st.state == ComponentState::Exited)
                                .unwrap_or(false)
                    });
                if done_here {
                    continue;
                }
                result = self.start_one(pkg, id);
                if result.is_err() {
                    break;
                }
                if !running {
                    started.push(id.clone());
                }
            }
            (result, started, old_record)
        };
        let written = match result {
            Ok(()) => self.write_record_off_thread(&record).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.undo_activation(name, &started, old_record).await;
            return Err(e);
        }
        Ok(())
    }

    /// Stops what an activation that could not be recorded started, and puts
    /// the in-memory record back.
    async fn undo_activation(&self, name: &str, started: &[String], old_record: PackageRecord) {
        let sups = {
            let mut pkgs = self.pkgs();
            let Some(pkg) = pkgs.get_mut(name) else {
                return;
            };
            pkg.record = old_record;
            let mut sups = Vec::new();
            for id in started {
                if let Some(c) = pkg.comps.get_mut(id) {
                    c.status.lock().unwrap_or_else(|p| p.into_inner()).active = false;
                    sups.extend(c.sup.take());
                }
            }
            sups
        };
        for s in sups {
            s.stop().await;
        }
    }

    /// Deactivates a package or one component: persists the change, requests a
    /// stop, and returns only once the instance is gone (after at most the grace
    /// period plus a few epoch ticks).
    pub async fn deactivate(&self, name: &str, component: Option<&str>) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        let ids = self.resolve_ids(name, component)?;
        let record = {
            let pkgs = self.pkgs();
            let pkg = pkgs
                .get(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            let mut r = pkg.record.clone();
            for id in &ids {
                r.active.remove(id);
            }
            r
        };
        self.write_record(&record)?;
        let sups = {
            let mut pkgs = self.pkgs();
            let Some(pkg) = pkgs.get_mut(name) else {
                return Err(RuntimeError::UnknownPackage(name.to_string()));
            };
            pkg.record = record;
            let mut sups = Vec::new();
            for id in &ids {
                if let Some(c) = pkg.comps.get_mut(id) {
                    let mut st = c.status.lock().unwrap_or_else(|p| p.into_inner());
                    st.active = false;
                    drop(st);
                    sups.extend(c.sup.take());
                }
            }
            sups
        };
        for s in sups {
            s.stop().await;
        }
        // Components that had already exited report Inactive once deactivated.
        let pkgs = self.pkgs();
        if let Some(pkg) = pkgs.get(name) {
            for id in &ids {
                if let Some(c) = pkg.comps.get(id) {
                    let mut st = c.status.lock().unwrap_or_else(|p| p.into_inner());
                    if st.state != ComponentState::Inactive {
                        st.state = ComponentState::Inactive;
                        let _ = self.inner.events.send(RuntimeEvent {
                            package: name.to_string(),
                            component: id.clone(),
                            state: ComponentState::Inactive,
                            exit: None,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops every instance without changing the persisted activation (host
    /// shutdown); a later `open` restarts what was active.
    pub async fn shutdown(&self) {
        let _ops = self.inner.ops.lock().await;
        let sups: Vec<Supervisor> = {
            let mut pkgs = self.pkgs();
            pkgs.values_mut()
                .flat_map(|p| p.comps.values_mut())
                .filter_map(|c| c.sup.take())
                .collect()
        };
        for s in sups {
            s.stop().await;
        }
    }

    // ---- queries ----------------------------------------------------------------

    fn status_of(pkg: &Pkg) -> PackageStatus {
        PackageStatus {
            name: pkg.record.spec.name.clone(),
            version: pkg.record.spec.version.clone(),
            description: pkg.record.spec.description.clone(),
            for_update: pkg.record.for_update,
            components: pkg
                .record
                .spec
                .components
                .iter()
                .filter_map(|s| pkg.comps.get(&s.id))
                .map(|c| c.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .collect(),
        }
    }

    /// All installed packages.
    pub fn list(&self) -> Vec<PackageStatus> {
        self.pkgs().values().map(Self::status_of).collect()
    }

    /// One installed package.
    pub fn status(&self, name: &str) -> Result<PackageStatus> {
        self.pkgs()
            .get(name)
            .map(Self::status_of)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))
    }

    /// The installed package's resolved spec (sandbox grants, components).
    pub fn spec(&self, name: &str) -> Result<PackageSpec> {
        self.pkgs()
            .get(name)
            .map(|p| p.record.spec.clone())
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))
    }

    /// Retained log lines of one component, oldest first.
    pub fn logs(&self, name: &str, component: &str) -> Result<Vec<LogLine>> {
        let pkgs = self.pkgs();
        let pkg = pkgs
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
        pkg.comps
            .get(component)
            .map(|c| c.log.lines())
            .ok_or_else(|| RuntimeError::UnknownComponent {
                package: name.to_string(),
                component: component.to_string(),
            })
    }
}

/// Unpacks `dir/package.part` into `dir/staging` and writes `delivered.json` last.
fn verify_slot(
    dir: &Path,
    limits: &wasmdm_package::Limits,
    keys: &[wasmdm_package::VerifyingKey],
) -> Result<DeliveredInfo> {
    let part = delivery::part_path(dir);
    let staging = delivery::staging_path(dir);
    remove_if_exists(&delivery::delivered_path(dir))?;
    remove_dir_if_exists(&staging)?;
    std::fs::create_dir_all(&staging).map_err(|e| StateError::io("create dir", &staging, e))?;
    let file = std::fs::File::open(&part).map_err(|e| StateError::io("open", &part, e))?;
    let verified =
        match wasmdm_package::unpack(std::io::BufReader::new(file), &staging, limits, keys) {
            Ok(v) => v,
            Err(e) => {
                let _ = remove_dir_if_exists(&staging);
                return Err(e.into());
            }
        };
    let spec = convert::package_spec(&verified.manifest);
    let names_ok = valid_name(&spec.name) && spec.components.iter().all(|c| valid_name(&c.id));
    if !names_ok {
        let _ = remove_dir_if_exists(&staging);
        return Err(RuntimeError::InvalidName(spec.name));
    }
    let info = DeliveredInfo {
        name: spec.name.clone(),
        version: spec.version.clone(),
        components: spec.components.iter().map(|c| c.id.clone()).collect(),
        signed_by: verified.signed_by.clone(),
    };
    // The staging files are not synced here: `package.part` (synced when its
    // last byte was stored) is the durable copy they come from. Install
    // syncs the files it keeps while it compiles, and `open` rebuilds a
    // delivered slot's staging, which a power cut may have emptied. The
    // delivery's own fsyncs were a third of the time from last byte to
    // "delivered" (~5 ms per MiB).
    let rec = DeliveredRecord {
        info: info.clone(),
        spec,
    };
    let path = delivery::delivered_path(dir);
    atomic_write(&path, &to_json(&path, &rec)?)?;
    Ok(info)
}

/// Crash cleanup of delivery slots: unverified staging dirs and bad slot names
/// go; a delivered slot's staging is rebuilt from its package file, since its
/// files were never synced (`verify_slot`).
fn cleanup_deliveries(
    dirs: &DataDir,
    limits: &wasmdm_package::Limits,
    keys: &[wasmdm_package::VerifyingKey],
) -> Result<()> {
    let root = dirs.deliveries();
    let rd = std::fs::read_dir(&root).map_err(|e| StateError::io("read dir", &root, e))?;
    for e in rd {
        let e = e.map_err(|e| StateError::io("read dir", &root, e))?;
        let path = e.path();
        let ok = e.file_name().to_str().is_some_and(valid_name);
        if !ok || !path.is_dir() {
            let _ = remove_dir_if_exists(&path);
            let _ = remove_if_exists(&path);
            continue;
        }
        // A delivered mark without its package file (the durable copy the
        // staging comes from) cannot be installed or rebuilt: not delivered.
        if delivery::read_delivered(&path).is_none() || !delivery::part_path(&path).is_file() {
            remove_if_exists(&delivery::delivered_path(&path))?;
            remove_dir_if_exists(&delivery::staging_path(&path))?;
        } else if let Err(e) = rebuild_staging(&path, limits, keys) {
            // The package file verified once; only a disk fault or a
            // changed trust configuration gets here. The slot stays as it
            // was: install fails if its files are damaged.
            tracing::warn!("cannot rebuild the staging of {}: {e}", path.display());
        }
    }
    Ok(())
}

/// Unpacks a delivered slot's package file again into a new dir, syncs it and
/// puts it in place of the staging dir. The "delivered" mark is never
/// removed meanwhile, so a crash here leaves a slot the next `open` rebuilds.
fn rebuild_staging(
    dir: &Path,
    limits: &wasmdm_package::Limits,
    keys: &[wasmdm_package::VerifyingKey],
) -> Result<()> {
    let part = delivery::part_path(dir);
    let staging = delivery::staging_path(dir);
    let fresh = dir.join("staging.rebuild");
    remove_dir_if_exists(&fresh)?;
    std::fs::create_dir_all(&fresh).map_err(|e| StateError::io("create dir", &fresh, e))?;
    let file = std::fs::File::open(&part).map_err(|e| StateError::io("open", &part, e))?;
    let unpacked = wasmdm_package::unpack(std::io::BufReader::new(file), &fresh, limits, keys);
    if let Err(e) = unpacked {
        let _ = remove_dir_if_exists(&fresh);
        return Err(e.into());
    }
    sync_tree(&fresh)?;
    remove_dir_if_exists(&staging)?;
    std::fs::rename(&fresh, &staging).map_err(|e| StateError::io("rename", &staging, e))?;
    fsync_dir(dir)?;
    Ok(())
}

/// Puts the delivered files into a package's generation dir as hard links:
/// the staging files are never written again, so install does not copy the
/// package data and the disk holds it once. Where the file system cannot link
/// (another device, no hard links) the file is copied. Staging has no
/// symlinks. Nothing is synced here: see [`sync_tree`] in `install`.
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| StateError::io("create dir", to, e))?;
    let rd = std::fs::read_dir(from).map_err(|e| StateError::io("read dir", from, e))?;
    for e in rd {
        let e = e.map_err(|e| StateError::io("read dir", from, e))?;
        let ft = e
            .file_type()
            .map_err(|err| StateError::io("stat", e.path(), err))?;
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            link_tree(&e.path(), &dst)?;
        } else if ft.is_file() && std::fs::hard_link(e.path(), &dst).is_err() {
            std::fs::copy(e.path(), &dst).map_err(|err| StateError::io("copy", &dst, err))?;
        }
    }
    Ok(())
}

/// fsyncs every file and directory under `dir`.
fn sync_tree(dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| StateError::io("read dir", dir, e))?;
    for e in rd {
        let e = e.map_err(|e| StateError::io("read dir", dir, e))?;
        let p = e.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|err| StateError::io("fsync", &p, err))?;
        }
    }
    fsync_dir(dir)?;
    Ok(())
}

/// Whether installing `offered` over `installed` goes back in version
/// (semver order). A version that does not parse cannot be ordered, so it
/// counts as a downgrade unless equal (fail closed).
fn is_downgrade(installed: &str, offered: &str) -> bool {
    match (
        semver::Version::parse(installed),
        semver::Version::parse(offered),
    ) {
        (Ok(old), Ok(new)) => new < old,
        _ => installed != offered,
    }
}
