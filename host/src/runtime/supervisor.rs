//! One supervisor task per active component: runs the instance, stops it on
//! request (soft, then forced after the grace period, then dropped) and
//! applies the restart policy. (The data quota is enforced where bytes are
//! written: `datafs`.)
//!
//! Restarts are damped whatever the manifest says: `max-retries` bounds every
//! policy, each delay is at least [`MIN_RESTART_BACKOFF`] and doubles with each
//! restart in a row up to [`MAX_RESTART_BACKOFF`], and only a run of
//! [`HEALTHY_RUN`] or longer starts a fresh budget. A guest that traps at
//! start with `policy = "always"`, `backoff-ms = 0` restarted ~840 times a
//! second forever; now it is marked failed, as a crash loop, after
//! `max-retries` restarts and a few seconds.

use super::engine::EPOCH_TICK;
use super::host::StopSignal;
use super::instance::{ExitStatus, InstanceSetup, run_instance};
use super::loading::Code;
use super::logbuf::LogSource;
use super::spec::RestartPolicy;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// What a component is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ComponentState {
    /// Not activated.
    Inactive,
    /// Being instantiated, or waiting out a restart backoff.
    Starting,
    /// `run` is executing.
    Running,
    /// A stop was requested; waiting for the guest to return.
    Stopping,
    /// Returned successfully and will not be restarted.
    Exited,
    /// Ended badly and will not be restarted (policy exhausted or quota).
    Failed,
}

/// Live status of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// Component id.
    pub id: String,
    /// Component version.
    pub version: String,
    /// Desired state: activated by the operator (persisted).
    pub active: bool,
    /// Actual state.
    pub state: ComponentState,
    /// Restarts performed by the restart policy since activation (kept
    /// across host restarts).
    pub restart_count: u32,
    /// Restarts in a row since the last healthy run: what `max-retries`
    /// bounds (kept across host restarts, so a crashing component gets no
    /// fresh budget from a device reboot).
    pub retries: u32,
    /// How the last instance ended.
    pub last_exit: Option<ExitStatus>,
    /// The restart policy gave up: `max-retries` restarts in a row, none
    /// after a healthy run, ended badly. The state is then `Failed`.
    pub crash_loop: bool,
}

/// A component's last exit and crash loop as kept on disk. The live
/// [`ComponentStatus`] exists only in the process running the component;
/// this record lets `wasmdm list` (another process, or after a restart) show
/// how the component last ended. Written whenever an instance ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Component version that ended (a record of another version is ignored).
    pub version: String,
    /// How it ended.
    pub last_exit: Option<ExitStatus>,
    /// The restart policy had given up.
    pub crash_loop: bool,
    /// Restarts since activation; absent from records of older hosts.
    #[serde(default)]
    pub restart_count: u32,
    /// Restarts in a row since the last healthy run.
    #[serde(default)]
    pub retries: u32,
}

impl ExitRecord {
    /// The record at `path`; `None` when absent or unreadable (a torn write
    /// loses only this hint, never the component).
    pub fn read(path: &std::path::Path) -> Option<ExitRecord> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Best effort: a failure is logged, the component runs on.
    fn write(&self, path: &std::path::Path) {
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(path, bytes)
            });
        if let Err(e) = written {
            tracing::warn!("cannot record the last exit in {}: {e}", path.display());
        }
    }
}

/// Shortest delay before a restart, whatever `backoff-ms` says.
pub const MIN_RESTART_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay before a restart: the doubling stops here.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);
/// An instance that ran this long was healthy: the next failure starts a new
/// retry budget and the backoff starts again from `backoff-ms`.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The delay before restart number `n` (1-based) of a run of failures:
/// `backoff` (at least [`MIN_RESTART_BACKOFF`]) doubled `n - 1` times, at most
/// [`MAX_RESTART_BACKOFF`].
pub fn restart_delay(backoff: Duration, n: u32) -> Duration {
    let base = backoff.max(MIN_RESTART_BACKOFF);
    let doublings = n.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings)
        .min(MAX_RESTART_BACKOFF)
}

/// Broadcast to the LwM2M layer whenever a component's actual state changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// Package name.
    pub package: String,
    /// Component id.
    pub component: String,
    /// New state.
    pub state: ComponentState,
    /// Exit status when the state change was caused by an instance ending.
    pub exit: Option<ExitStatus>,
}

/// Status shared between a supervisor and queries.
pub type SharedStatus = Arc<Mutex<ComponentStatus>>;

/// What a supervisor needs.
pub struct SupervisorArgs {
    /// Package name (for events).
    pub package: String,
    /// Sandbox and wiring.
    pub setup: InstanceSetup,
    /// Status to update.
    pub status: SharedStatus,
    /// Event channel.
    pub events: broadcast::Sender<RuntimeEvent>,
    /// Where each exit is recorded ([`ExitRecord`]), if anywhere.
    pub exit_file: Option<std::path::PathBuf>,
    /// Held until the supervisor ends: the data directory lock, so a dropped
    /// `Runtime` keeps the directory locked until its instances are really gone.
    pub keepalive: Arc<dyn std::any::Any + Send + Sync>,
    /// This instance's slot and file descriptors, given back when the
    /// supervisor ends.
    pub shares: Vec<super::fdbudget::Share>,
}

/// Handle to a running supervisor.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
}

impl Supervisor {
    /// Starts supervising (spawns on the current tokio runtime). The
    /// supervisor loads `code` if it is not loaded, keeps it for restarts
    /// and drops it when it ends (issue 15: no code in memory for a
    /// component that does not run).
    pub(super) fn start(args: SupervisorArgs, code: Code) -> Supervisor {
        let (stop, rx) = watch::channel(false);
        let join = tokio::spawn(supervise(args, code, rx));
        Supervisor { stop, join }
    }

    /// Stops the instance (soft, grace, forced, dropped) and returns once it is gone.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.join.await;
    }

    /// True if the supervisor already finished (exited/failed without restart).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// Resolves once a stop was requested or the handle was dropped (runtime gone).
pub(crate) async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn set_state(args: &SupervisorArgs, state: ComponentState, exit: Option<ExitStatus>) {
    let id = {
        let mut st = args.status.lock().unwrap_or_else(|p| p.into_inner());
        st.state = state;
        if exit.is_some() {
            st.last_exit = exit.clone();
            if let Some(path) = &args.exit_file {
                ExitRecord {
                    version: st.version.clone(),
                    last_exit: st.last_exit.clone(),
                    crash_loop: st.crash_loop,
                    restart_count: st.restart_count,
                    retries: st.retries,
                }
                .write(path);
            }
        }
        st.id.clone()
    };
    let _ = args.events.send(RuntimeEvent {
        package: args.package.clone(),
        component: id,
        state,
        exit,
    });
}

/// Soft stop, grace period, forced interrupt, then drop the task.
pub(crate) async fn stop_instance(
    handle: &mut JoinHandle<ExitStatus>,
    signal: &StopSignal,
    grace: Duration,
) -> ExitStatus {
    signal.request();
    if let Ok(r) = tokio::time::timeout(grace, &mut *handle).await {
        return r.unwrap_or(ExitStatus::Stopped { forced: true });
    }
    signal.force();
    // The epoch callback interrupts compute within a tick; allow a few ticks.
    if let Ok(r) = tokio::time::timeout(EPOCH_TICK * 5, &mut *handle).await {
        return r.unwrap_or(ExitStatus::Stopped { forced: true });
    }
    // Blocked in a host call: epochs cannot reach it, drop its future.
    handle.abort();
    let _ = (&mut *handle).await;
    ExitStatus::Stopped { forced: true }
}

async fn supervise(args: SupervisorArgs, code: Code, mut stop_rx: watch::Receiver<bool>) {
    // Dropped (with `args`) only when this task ends: the data dir lock and
    // this instance's file descriptor share.
    let _keepalive = Arc::clone(&args.keepalive);
    let _shares = &args.shares;
    let sb = args.setup.sandbox.clone();
    let grace = Duration::from_millis(sb.stop_grace_ms);
    // Restarts since the last healthy run: carried over from before a host
    // restart (the status was loaded from the exit record), zero on activation.
    let mut retries: u32 = args
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retries;
    // Dropped when this task ends: the code is in memory only while the
    // component runs or waits to restart.
    let code = tokio::select! {
        loaded = code.load() => match loaded {
            Ok(l) => {
                tracing::debug!(package = %args.package, component = %args.setup.argv0, "code loaded ({})", l.tier());
                l
            }
            Err(e) => {
                let msg = format!("cannot load its code: {e}");
                tracing::error!(package = %args.package, component = %args.setup.argv0, "{msg}");
                args.setup.log.push(LogSource::Host, &msg);
                set_state(&args, ComponentState::Failed, Some(ExitStatus::StartFailed(msg)));
                return;
            }
        },
        _ = stop_requested(&mut stop_rx) => {
            // Stopped before it ran: logged like any stop.
            let exit = ExitStatus::Stopped { forced: false };
            args.setup.log.push(LogSource::Host, &exit.to_string());
            set_state(&args, ComponentState::Inactive, Some(exit));
            return;
        }
    };
    loop {
        set_state(&args, ComponentState::Starting, None);
        let signal = StopSignal::new();
        let run_started = Instant::now();
        let mut handle = tokio::spawn(run_instance(
            code.engine.clone(),
            code.pre.clone(),
            args.setup.clone(),
            signal.clone(),
        ));
        set_state(&args, ComponentState::Running, None);
        args.setup.log.push(LogSource::Host, "started");
        let mut stopping = false;
        let exit = tokio::select! {
            r = &mut handle => {
                r.unwrap_or_else(|e| ExitStatus::Trapped(format!("instance task: {e}")))
            }
            _ = stop_requested(&mut stop_rx) => {
                stopping = true;
                set_state(&args, ComponentState::Stopping, None);
                match stop_instance(&mut handle, &signal, grace).await {
                    ExitStatus::Exited(_) | ExitStatus::Trapped(_) => ExitStatus::Stopped { forced: false },
                    other => other,
                }
            }
        };
        args.setup.log.push(LogSource::Host, &exit.to_string());
        if stopping {
            set_state(&args, ComponentState::Inactive, Some(exit));
            return;
        }
        if run_started.elapsed() >= HEALTHY_RUN {
            retries = 0;
            args.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retries = 0;
        }
        let policy = match (&exit, sb.restart) {
            (ExitStatus::DiskQuotaExceeded { .. }, _) => None,
            (_, RestartPolicy::No) => None,
            (e, RestartPolicy::OnFailure { .. }) if e.is_success() => None,
            (
                _,
                RestartPolicy::OnFailure {
                    max_retries,
                    backoff_ms,
                }
                | RestartPolicy::Always {
                    max_retries,
                    backoff_ms,
                },
            ) => Some((max_retries, backoff_ms)),
        };
        let final_state = if exit.is_success() {
            ComponentState::Exited
        } else {
            ComponentState::Failed
        };
        let Some((max_retries, backoff_ms)) = policy else {
            set_state(&args, final_state, Some(exit));
            return;
        };
        if retries >= max_retries {
            let crash_loop = final_state == ComponentState::Failed;
            let msg = format!(
                "not restarting: {retries} restarts in a row without a run of {} s \
                 (max-retries = {max_retries}){}",
                HEALTHY_RUN.as_secs(),
                if crash_loop { "; crash loop" } else { "" },
            );
            tracing::warn!(package = %args.package, component = %args.setup.argv0, "{msg}; last exit: {exit}");
            args.setup.log.push(LogSource::Host, &msg);
            args.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .crash_loop = crash_loop;
            set_state(&args, final_state, Some(exit));
            return;
        }
        retries = retries.saturating_add(1);
        let delay = restart_delay(Duration::from_millis(backoff_ms), retries);
        args.setup.log.push(
            LogSource::Host,
            &format!(
                "restarting in {} ms (restart {retries} of {max_retries})",
                delay.as_millis()
            ),
        );
        {
            let mut st = args.status.lock().unwrap_or_else(|p| p.into_inner());
            st.restart_count = st.restart_count.saturating_add(1);
            st.retries = retries;
        }
        set_state(&args, ComponentState::Starting, Some(exit));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stop_rx) => {
                set_state(&args, ComponentState::Inactive, Some(ExitStatus::Stopped { forced: false }));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_has_a_floor_doubles_and_is_capped() {
        let ms = |n| restart_delay(Duration::ZERO, n).as_millis();
        assert_eq!((ms(1), ms(2), ms(3), ms(4)), (100, 200, 400, 800));
        let s = Duration::from_secs(1);
        assert_eq!(restart_delay(s, 1), s);
        assert_eq!(restart_delay(s, 9), Duration::from_secs(256));
        assert_eq!(restart_delay(s, 10), MAX_RESTART_BACKOFF);
        assert_eq!(restart_delay(s, u32::MAX), MAX_RESTART_BACKOFF);
    }
}
