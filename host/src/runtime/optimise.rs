//! The background compile: Cranelift code for components installed with
//! Winch code, made at low priority and swapped in without a restart.
//!
//! One dedicated thread, at the lowest priority the OS has (`SCHED_IDLE` and
//! nice 19 on Linux), compiling on that thread alone (no parallel
//! compilation): it uses CPU nothing else wants, so an Execute or an
//! activation is not delayed by it. It starts no compile while an install
//! runs ([`InstallGuard`]). The optimised artifact is written like all
//! durable state (temp file, fsync, rename, directory fsync): a kill -9 at
//! any point leaves the Winch artifact, the Cranelift one, or both, each
//! complete. Then the runtime swaps the component's code in memory (next
//! start uses it) and removes the Winch artifact.

use super::compile::{Loaded, Tier};
use super::engine::{EngineConfig, code_config, compat_of};
use super::error::RuntimeError;
use super::loading::Code;
use super::{Inner, Runtime};
use crate::state::atomic_write;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One component to compile with Cranelift.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// Component id (for logs).
    pub id: String,
    /// The installed .wasm.
    pub wasm: PathBuf,
    /// Its digest (the cache key).
    pub sha256: String,
    /// Where the optimised artifact goes.
    pub target: PathBuf,
    /// The Winch artifact it replaces.
    pub baseline: PathBuf,
}

/// A finished job: optimised code for this digest is in the cache.
#[derive(Debug, Clone)]
pub(super) struct Optimised {
    pub sha256: String,
    pub baseline: PathBuf,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Installs running now: no compile starts while this is non-zero.
    installs: usize,
    /// A job is being compiled.
    busy: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the optimiser thread; dropping it ends the thread after the
/// job it is on.
pub(super) struct Optimiser {
    shared: Arc<Shared>,
}

/// Held while an install runs (see [`Optimiser::install_started`]).
pub struct InstallGuard {
    shared: Arc<Shared>,
}

impl Drop for InstallGuard {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.installs = st.installs.saturating_sub(1);
        drop(st);
        self.shared.changed.notify_all();
    }
}

impl Drop for Optimiser {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
    }
}

impl Optimiser {
    /// Starts the thread. Its engine compiles Cranelift code for an engine
    /// whose compatibility hash is `target_compat` (checked: a mismatch
    /// would make artifacts the runtime cannot load).
    pub fn start(
        cfg: &EngineConfig,
        target_compat: &str,
    ) -> Result<(Optimiser, mpsc::UnboundedReceiver<Optimised>), RuntimeError> {
        let mut config = code_config(cfg, Tier::Optimised);
        // One thread: the background compile must leave the other core(s)
        // to the guests and the protocol.
        config.parallel_compilation(false);
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| RuntimeError::Engine(format!("optimiser engine: {e:#}")))?;
        let compat = compat_of(&engine);
        if compat != target_compat {
            return Err(RuntimeError::Engine(format!(
                "optimiser engine hash {compat} differs from the runtime's {target_compat}"
            )));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("wasmdm-optimise".into())
            .spawn(move || run(&thread_shared, &engine, &tx))
            .map_err(|e| RuntimeError::Engine(format!("spawn optimiser: {e}")))?;
        Ok((Optimiser { shared }, rx))
    }

    /// Queues a job (once per digest).
    pub fn enqueue(&self, job: Job) {
        let mut st = self.shared.lock();
        if st.queue.iter().any(|j| j.sha256 == job.sha256) {
            return;
        }
        st.queue.push_back(job);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// See [`InstallGuard`].
    pub fn install_started(&self) -> InstallGuard {
        self.shared.lock().installs += 1;
        InstallGuard {
            shared: self.shared.clone(),
        }
    }

    /// Waits (off the async threads) until nothing is queued or compiling.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut st = shared.lock();
            loop {
                if st.queue.is_empty() && !st.busy {
                    return true;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                st = shared
                    .changed
                    .wait_timeout(st, left.min(Duration::from_millis(100)))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// Lowest CPU priority for the calling thread only (Linux: per-thread
/// scheduling policy and nice value; elsewhere nothing, since setpriority
/// there would lower the whole process).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread with valid arguments.
        unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                tracing::debug!("SCHED_IDLE refused: {}", std::io::Error::last_os_error());
            }
            let tid = libc::gettid();
            if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) != 0 {
                tracing::debug!("nice 19 refused: {}", std::io::Error::last_os_error());
            }
        }
    }
}

fn run(shared: &Shared, engine: &wasmtime::Engine, done: &mpsc::UnboundedSender<Optimised>) {
    lower_priority();
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    return;
                }
                if st.installs == 0
                    && let Some(job) = st.queue.pop_front()
                {
                    st.busy = true;
                    break job;
                }
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let started = Instant::now();
        let result = compile_job(engine, &job);
        {
            let mut st = shared.lock();
            st.busy = false;
        }
        match result {
            Ok(true) => {
                tracing::info!(
                    component = %job.id,
                    "optimised code (Cranelift) ready after {} ms; used from the next start",
                    started.elapsed().as_millis()
                );
                let _ = done.send(Optimised {
                    sha256: job.sha256.clone(),
                    baseline: job.baseline.clone(),
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(component = %job.id, "background compile failed: {e}"),
        }
        shared.changed.notify_all();
    }
}

/// Compiles one job. `Ok(false)`: nothing to do (already optimised, or the
/// component was removed meanwhile).
fn compile_job(engine: &wasmtime::Engine, job: &Job) -> Result<bool, RuntimeError> {
    if job.target.exists() {
        return Ok(true);
    }
    let bytes = match std::fs::read(&job.wasm) {
        Ok(b) => b,
        // Uninstalled or upgraded since it was queued.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(crate::state::StateError::io("read", &job.wasm, e).into()),
    };
    let code = engine
        .precompile_component(&bytes)
        .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    drop(bytes);
    atomic_write(&job.target, &code)?;
    Ok(true)
}

/// Applies finished jobs to the runtime as they arrive (a task per runtime;
/// it ends when the runtime is gone).
pub(super) fn listen(inner: Weak<Inner>, mut done: mpsc::UnboundedReceiver<Optimised>) {
    tokio::spawn(async move {
        while let Some(job) = done.recv().await {
            let Some(inner) = inner.upgrade() else { break };
            Runtime { inner }.adopt_optimised(job).await;
        }
    });
}

impl Runtime {
    /// Swaps every component with this digest to its optimised code (its
    /// next start uses it; running instances keep theirs unless the device
    /// says `restart-when-optimised`), then drops the Winch artifact. A
    /// component loaded on demand has nothing in memory to swap: its next
    /// load finds the optimised artifact (checked here first).
    async fn adopt_optimised(&self, job: Optimised) {
        let engine = self.inner.compile.optimised.clone();
        let path = engine.cwasm_path(&self.inner.dirs.cache(), &job.sha256);
        let loader = engine.clone();
        let component = tokio::task::spawn_blocking(move || loader.cached(&path))
            .await
            .ok()
            .flatten();
        let Some(component) = component else {
            tracing::warn!(
                "optimised code for {} does not load; keeping Winch code",
                job.sha256
            );
            return;
        };
        let mut running = Vec::new();
        {
            let mut pkgs = self.pkgs();
            for (name, pkg) in pkgs.iter_mut() {
                for (id, comp) in pkg.comps.iter_mut() {
                    if comp.spec.sha256 != job.sha256 {
                        continue;
                    }
                    let running_now = comp.sup.as_ref().is_some_and(|s| !s.is_finished());
                    if !matches!(comp.code, Ok(Code::Resident(_))) {
                        if running_now {
                            running.push((name.clone(), id.clone()));
                        }
                        continue;
                    }
                    match engine.prepare(id, &component, comp.spec.world) {
                        Ok(pre) => {
                            comp.code = Ok(Code::Resident(Loaded::new(
                                pre,
                                engine.clone(),
                                &self.inner.compile.loaded,
                            )));
                            if running_now {
                                running.push((name.clone(), id.clone()));
                            }
                        }
                        Err(e) => tracing::warn!("{name}/{id}: optimised code refused: {e}"),
                    }
                }
            }
        }
        // Only checked, not kept: dropped before the Winch artifact goes.
        drop(component);
        let _ = std::fs::remove_file(&job.baseline);
        if self.inner.config.engine.restart_when_optimised {
            for (name, id) in running {
                self.restart_on_new_code(&name, &id).await;
            }
        }
    }

    /// Stops a running instance (its grace period applies) and starts it on
    /// the component's current code.
    async fn restart_on_new_code(&self, name: &str, id: &str) {
        let _ops = self.inner.ops.lock().await;
        let sups = self.take_supervisors(name, Some(id));
        if sups.is_empty() {
            return;
        }
        for s in sups {
            s.stop().await;
        }
        let mut pkgs = self.pkgs();
        if let Some(pkg) = pkgs.get_mut(name)
            && pkg.record.active.contains(id)
        {
            match self.start_one(pkg, id) {
                Ok(()) => tracing::info!("{name}/{id}: restarted on optimised code"),
                Err(e) => tracing::error!("{name}/{id}: restart on optimised code failed: {e}"),
            }
        }
    }

    /// Which compiler made the code a component starts with now.
    pub fn code_tier(&self, name: &str, component: &str) -> Result<Tier, RuntimeError> {
        let pkgs = self.pkgs();
        let comp = pkgs
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?
            .comps
            .get(component)
            .ok_or_else(|| RuntimeError::UnknownComponent {
                package: name.to_string(),
                component: component.to_string(),
            })?;
        comp.code
            .as_ref()
            .map(Code::tier)
            .map_err(|reason| RuntimeError::NotRunnable {
                package: name.to_string(),
                component: component.to_string(),
                reason: reason.clone(),
            })
    }

    /// Waits until the background compiler has nothing left to do and its
    /// results are applied (tests and benchmarks). False on timeout.
    pub async fn wait_optimised(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if !self.inner.compile.wait_optimiser_idle(timeout).await {
            return false;
        }
        // The last result may still be on its way to `adopt_optimised`.
        loop {
            let pending = {
                let pkgs = self.pkgs();
                pkgs.values()
                    .flat_map(|p| p.comps.values())
                    .any(|c| match &c.code {
                        Ok(Code::Resident(l)) => {
                            l.tier() == Tier::Baseline
                                && self
                                    .inner
                                    .compile
                                    .optimised
                                    .cwasm_path(&self.inner.dirs.cache(), &c.spec.sha256)
                                    .exists()
                        }
                        Ok(Code::OnDemand(loader)) => loader.swap_pending(),
                        Err(_) => false,
                    })
            };
            if !pending {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
