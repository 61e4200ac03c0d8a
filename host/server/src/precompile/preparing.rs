//! Preparing a campaign off the API request (issue 13 part 2).
//!
//! Compiling a large package for several engines takes minutes, so
//! `POST /api/campaigns` stores a campaign that installs or upgrades a
//! package as [`CampaignStatus::Preparing`] and answers at once. A task then
//! reads /26500 from the registered targets whose record has no engine yet,
//! compiles one variant per engine hash ([`Service::prepare`]: one compile
//! at a time, on a blocking thread), gives each job its variant, marks the
//! campaign running and hands it to the driver. Until then no job starts;
//! a cancel ends the campaign (no device is touched) and stops the
//! compiles after the one under way. A group whose compile fails or
//! mismatches gets the plain file, with a campaign note.
//!
//! Restart: a campaign stored as preparing is prepared again at start
//! ([`resume`]); variants already built come from the cache, so it costs
//! only what was not finished. A server without a precompiler starts such a
//! campaign with plain files. A scheduled campaign prepares at creation, so
//! its code is ready when its schedule starts it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use super::{DeviceEngine, Prepared, apply};
use crate::campaign::{Campaign, CampaignSpec, CampaignStatus, Input, OpKind, Schedule};
use crate::driver::{Command, unix_ms};
use crate::http::AppState;
use crate::store::{DEVICES, DeviceRecord, Store, StoreError};

/// Ids of the campaigns being prepared. Held while a campaign leaves the
/// preparing phase, so a cancel and the start never cross.
pub type Preparing = Arc<Mutex<BTreeSet<String>>>;

/// The preparation tasks still running, so a stopping server can wait for
/// them: they hold the store, and a server started again in the same
/// process (a restart in tests, an embedder) could not open it meanwhile.
#[derive(Debug, Clone)]
pub struct Tasks(Arc<tokio::sync::watch::Sender<usize>>);

impl Default for Tasks {
    fn default() -> Self {
        Tasks(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

/// Counts one running task until it is dropped.
struct TaskGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Tasks {
    /// Spawns `run(s, id)`, counted until it ends (after it dropped `s`).
    fn spawn(&self, s: AppState, id: String) -> JoinHandle<()> {
        self.0.send_modify(|n| *n += 1);
        let guard = TaskGuard(self.0.clone());
        tokio::spawn(async move {
            let _guard = guard;
            run(s, id).await;
        })
    }

    /// Waits until no preparation task runs (one in a compile finishes it).
    pub async fn settle(&self) {
        let mut count = self.0.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

/// How long the read of a device's /26500 may take.
const ENGINE_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Engine reads in flight at once, per campaign.
const ENGINE_READS_AT_ONCE: usize = 16;

/// True when a new campaign with `spec` is prepared before it runs: the
/// server precompiles and the campaign delivers a package.
pub fn needed(s: &AppState, spec: &CampaignSpec) -> bool {
    s.precompile.is_some()
        && spec.file.is_some()
        && matches!(spec.op, OpKind::Install | OpKind::Upgrade)
}

/// Stores `c` as preparing and prepares it in the background; the handle
/// ends when it was handed to the driver, cancelled or given up.
pub async fn begin(
    s: &AppState,
    mut c: Campaign,
) -> Result<(Campaign, JoinHandle<()>), StoreError> {
    c.status = CampaignStatus::Preparing;
    let mut set = s.preparing.lock().await;
    s.store.put_campaign(&c, None)?;
    set.insert(c.id.clone());
    drop(set);
    let task = s.preparing_tasks.spawn(s.clone(), c.id.clone());
    Ok((c, task))
}

/// After a restart: prepares every campaign stored as preparing again.
pub async fn resume(s: &AppState) -> Vec<JoinHandle<()>> {
    let campaigns = match s.store.list_campaigns() {
        Ok(cs) => cs,
        Err(e) => {
            tracing::warn!("cannot list campaigns to resume their preparation: {e}");
            return Vec::new();
        }
    };
    let mut set = s.preparing.lock().await;
    let mut tasks = Vec::new();
    for c in campaigns {
        if c.status == CampaignStatus::Preparing {
            tracing::info!("campaign {}: preparing again after a restart", c.id);
            set.insert(c.id.clone());
            tasks.push(s.preparing_tasks.spawn(s.clone(), c.id));
        }
    }
    tasks
}

/// Cancels campaign `id` if it is still being prepared: every job ends
/// cancelled, no device was touched. False when it is not (any more): it
/// runs in the driver, which cancels it.
pub async fn cancel(s: &AppState, id: &str) -> Result<bool, StoreError> {
    let mut set = s.preparing.lock().await;
    if !set.contains(id) {
        return Ok(false);
    }
    if let Some(mut c) = s.store.get_campaign(id)? {
        c.handle(unix_ms(), Input::Cancel, &|_| false);
        c.take_dirty();
        s.store.put_campaign(&c, None)?;
    }
    set.remove(id);
    tracing::info!("campaign {id} cancelled while preparing");
    Ok(true)
}

/// Prepares campaign `id`, then starts it unless it was cancelled.
async fn run(s: AppState, id: String) {
    let c = match s.store.get_campaign(&id) {
        Ok(Some(c)) => c,
        other => {
            tracing::warn!("campaign {id} to prepare: not readable ({other:?})");
            s.preparing.lock().await.remove(&id);
            return;
        }
    };
    let set = s.preparing.clone();
    let key = id.clone();
    // Asked between steps; a held lock means a phase change is under way.
    let wanted = move || set.try_lock().map_or(true, |g| g.contains(&key));
    let prepared = match &s.precompile {
        Some(p) => {
            let targets: Vec<String> = c.jobs.iter().map(|j| j.endpoint.clone()).collect();
            let unknown = without_engine(&s.store, &targets);
            let fresh = read_engines(&s, &unknown, &wanted).await;
            if !unknown.is_empty() {
                tracing::info!(
                    "campaign {id}: read the engine of {} of {} device(s) without one on record",
                    fresh.len(),
                    unknown.len()
                );
            }
            p.prepare(&s.store, &c.spec, &targets, &fresh, &wanted)
                .await
        }
        None => Prepared::default(),
    };
    let mut set = s.preparing.lock().await;
    if !set.remove(&id) {
        return; // cancelled meanwhile
    }
    let mut c = match s.store.get_campaign(&id) {
        Ok(Some(c)) if c.status == CampaignStatus::Preparing => c,
        _ => return,
    };
    apply(&mut c, prepared);
    arm_registered_since_creation(&s.store, &mut c);
    c.status = CampaignStatus::Running;
    if let Err(e) = s.store.put_campaign(&c, None) {
        // Still stored as preparing: prepared again at the next start.
        tracing::warn!("campaign {id}: cannot store it as running: {e}");
        return;
    }
    tracing::info!("campaign {id} prepared: starting its jobs");
    // A stopping server resumes it (stored as running) at its next start.
    let _ = s.commands.send(Command::StartCampaign(Box::new(c))).await;
    drop(set);
}

/// `Schedule::NextRegistration`: the driver arms a job when its device
/// registers, but it saw none of this campaign's while it was preparing;
/// a device that registered or updated since the campaign was created is
/// armed from its record.
fn arm_registered_since_creation(store: &Store, c: &mut Campaign) {
    if c.spec.schedule != Schedule::NextRegistration {
        return;
    }
    for j in &mut c.jobs {
        if let Ok(Some(DeviceRecord {
            registration: Some(r),
            ..
        })) = store.get::<DeviceRecord>(DEVICES, &j.endpoint)
            && r.updated_at >= c.created_at
        {
            j.armed = true;
        }
    }
}

/// The registered devices among `targets` whose record has no engine (they
/// registered before this server read engines, or the read failed).
fn without_engine(store: &Store, targets: &[String]) -> Vec<String> {
    targets
        .iter()
        .filter(|ep| {
            matches!(
                store.get::<DeviceRecord>(DEVICES, ep),
                Ok(Some(DeviceRecord {
                    registration: Some(_),
                    engine: None,
                    ..
                }))
            )
        })
        .cloned()
        .collect()
}

/// Reads /26500/0 from `endpoints` through the driver, a few at a time;
/// the driver keeps each engine in the device's record as well.
async fn read_engines(
    s: &AppState,
    endpoints: &[String],
    wanted: &(dyn Fn() -> bool + Send + Sync),
) -> BTreeMap<String, DeviceEngine> {
    let mut out = BTreeMap::new();
    for chunk in endpoints.chunks(ENGINE_READS_AT_ONCE) {
        if !wanted() {
            break;
        }
        let mut reads = tokio::task::JoinSet::new();
        for ep in chunk {
            let (reply, answer) = oneshot::channel();
            let command = Command::ReadEngine {
                endpoint: ep.clone(),
                reply,
            };
            if s.commands.send(command).await.is_err() {
                return out; // server stopping
            }
            let ep = ep.clone();
            reads.spawn(
                async move { (ep, tokio::time::timeout(ENGINE_READ_TIMEOUT, answer).await) },
            );
        }
        while let Some(done) = reads.join_next().await {
            let Ok((ep, answer)) = done else { continue };
            let engine = match answer {
                Ok(Ok(engine)) => engine,
                _ => None,
            };
            match engine {
                Some(e) => {
                    out.insert(ep, e);
                }
                None => tracing::debug!("{ep:?}: no usable engine report (/26500/0)"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
