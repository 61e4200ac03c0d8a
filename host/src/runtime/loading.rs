//! When a component's code is in memory (issue 15, small footprint).
//!
//! A loaded component (its `Component`, with the mapped native code it has
//! touched and its type and function tables, and the `InstancePre` built for
//! it) cost ~390 KiB of RSS each: a device with hundreds of installed,
//! inactive packages spent most of its memory on code nothing ran. Under
//! [`CodeLoading::OnDemand`] the runtime keeps only where the code is (a
//! [`Loader`]); the supervisor loads it when the component starts, its
//! restarts reuse it, and it is dropped with the supervisor when the last
//! instance ends. [`CodeLoading::Resident`] keeps every installed component
//! loaded, as before: an activation skips the load.
//!
//! A load reads the newest artifact in the cache: the Cranelift one once the
//! background optimiser has made it, else the Winch one
//! ([`super::compile`]), so an on-demand component picks up the optimiser's
//! swap at its next start without anything being swapped in memory.
//! Instances running the same code at once (one component in several
//! packages) share one load ([`SharedLoads`]).

use super::compile::{Loaded, Tier, load_blocking};
use super::engine::EngineShared;
use super::error::RuntimeError;
use super::spec::World;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Device config `code-loading`: when a component's code is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeLoading {
    /// Load at start, drop when the last instance ends: an inactive package
    /// costs no code in memory; an activation loads it (BENCHMARKS.md).
    #[default]
    OnDemand,
    /// Keep every installed component loaded: the fastest activation, at
    /// ~390 KiB of RSS per installed component.
    Resident,
}

impl std::fmt::Display for CodeLoading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CodeLoading::OnDemand => "on-demand",
            CodeLoading::Resident => "resident",
        })
    }
}

/// Counts the loaded components of one runtime: one count per loaded
/// `Component`, however many clones of its [`Loaded`] exist.
#[derive(Debug, Default)]
pub(super) struct LoadCounter(AtomicUsize);

impl LoadCounter {
    /// Loaded components now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Held (shared) by every clone of one [`Loaded`]; the count goes down when
/// the last clone, and so the component, is dropped.
pub(super) struct LoadToken(Arc<LoadCounter>);

impl LoadToken {
    pub fn new(counter: &Arc<LoadCounter>) -> Arc<LoadToken> {
        counter.0.fetch_add(1, Ordering::Relaxed);
        Arc::new(LoadToken(counter.clone()))
    }
}

impl Drop for LoadToken {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Code loaded on demand and still in use, by digest, world and compiler:
/// a start finds it here while another instance runs it. Dead entries are
/// pruned at each insert, so it holds at most what runs.
#[derive(Default)]
pub(super) struct SharedLoads(Mutex<HashMap<String, Weak<Loaded>>>);

impl SharedLoads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Loaded>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn share_key(sha256: &str, world: World, tier: Tier) -> String {
    format!("{sha256}/{world}/{tier}")
}

/// Where an installed component's code is, to load it when it starts.
#[derive(Clone)]
pub(super) struct Loader {
    pub id: String,
    /// The installed .wasm (compiled again only if its artifact is gone).
    pub wasm: PathBuf,
    pub sha256: String,
    pub world: World,
    pub cache_dir: PathBuf,
    pub optimised: Arc<EngineShared>,
    pub baseline: Option<Arc<EngineShared>>,
    pub counter: Arc<LoadCounter>,
    pub shared: Arc<SharedLoads>,
}

impl Loader {
    /// The newest code: shared with instances running it now, else loaded
    /// (blocking).
    pub fn load_shared(&self) -> Result<Arc<Loaded>, RuntimeError> {
        let key = share_key(&self.sha256, self.world, self.tier());
        if let Some(l) = self.shared.lock().get(&key).and_then(Weak::upgrade) {
            return Ok(l);
        }
        let loaded = Arc::new(self.load_blocking()?);
        let key = share_key(&self.sha256, self.world, loaded.tier());
        let mut map = self.shared.lock();
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Loads the newest artifact (blocking: file I/O and mapping). An
    /// artifact that is missing or refused is compiled again from the .wasm
    /// (slow; install and open make sure it exists).
    pub fn load_blocking(&self) -> Result<Loaded, RuntimeError> {
        let (engine, component) = load_blocking(
            &self.optimised,
            self.baseline.as_ref(),
            &self.id,
            &self.wasm,
            &self.sha256,
            self.world,
            &self.cache_dir,
        )?;
        let pre = engine.prepare(&self.id, &component, self.world)?;
        Ok(Loaded::new(pre, engine, &self.counter))
    }

    /// Which compiler made the code the next load gets.
    pub fn tier(&self) -> Tier {
        match &self.baseline {
            Some(b)
                if !self
                    .optimised
                    .cwasm_path(&self.cache_dir, &self.sha256)
                    .exists()
                    && b.cwasm_path(&self.cache_dir, &self.sha256).exists() =>
            {
                Tier::Baseline
            }
            _ => Tier::Optimised,
        }
    }

    /// The optimiser's result is on disk but its Winch artifact not yet
    /// removed: the swap is still being applied.
    pub fn swap_pending(&self) -> bool {
        self.baseline.as_ref().is_some_and(|b| {
            b.cwasm_path(&self.cache_dir, &self.sha256).exists()
                && self
                    .optimised
                    .cwasm_path(&self.cache_dir, &self.sha256)
                    .exists()
        })
    }
}

/// A component's code as the runtime keeps it between starts.
#[derive(Clone)]
pub(super) enum Code {
    /// Loaded (`resident`).
    Resident(Loaded),
    /// In the cache, loaded when the component starts (`on-demand`).
    OnDemand(Loader),
}

impl Code {
    /// The code, ready to instantiate; an on-demand load runs on a blocking
    /// thread.
    pub async fn load(self) -> Result<Arc<Loaded>, RuntimeError> {
        match self {
            Code::Resident(l) => Ok(Arc::new(l)),
            Code::OnDemand(loader) => tokio::task::spawn_blocking(move || loader.load_shared())
                .await
                .map_err(|e| RuntimeError::Engine(format!("load task: {e}")))?,
        }
    }

    /// Which compiler made the code the component starts with now.
    pub fn tier(&self) -> Tier {
        match self {
            Code::Resident(l) => l.tier(),
            Code::OnDemand(loader) => loader.tier(),
        }
    }
}
