//! `wasmdm run`: one component in the same sandbox as installed apps, with its
//! log lines echoed to stdout, until it exits or is stopped (Ctrl-C).

use super::RuntimeError;
use super::engine::{EngineConfig, EngineShared};
use super::host::StopSignal;
use super::instance::{ExitStatus, InstanceSetup, run_instance};
use super::logbuf::{LogBuffer, LogSource};
use super::spec::{Sandbox, World};
use super::supervisor::{stop_instance, stop_requested};
use crate::state::StateError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Settings for a foreground run.
#[derive(Debug, Clone)]
pub struct ForegroundOptions {
    /// Engine sizing (a small pool is enough).
    pub engine: EngineConfig,
    /// Sandbox for a bare `.wasm` (a package brings its own).
    pub sandbox: Sandbox,
    /// World for a bare `.wasm` (App is a superset of Command).
    pub world: World,
    /// Host dir preopened at `/data` when the sandbox grants one; None = no `/data`.
    pub data_dir: Option<PathBuf>,
    /// Config values for a bare `.wasm`.
    pub config: BTreeMap<String, String>,
    /// Which component of a package to run (default: the first).
    pub component: Option<String>,
    /// Unpack limits for a package file.
    pub package_limits: wasmdm_package::Limits,
    /// Keys required on a package file's manifest (empty: not required).
    pub trusted_keys: Vec<wasmdm_package::VerifyingKey>,
    /// Where compiled code is cached (None: a temp dir, removed afterwards).
    pub cache_dir: Option<PathBuf>,
}

impl Default for ForegroundOptions {
    fn default() -> Self {
        ForegroundOptions {
            engine: EngineConfig {
                max_instances: 4,
                ..EngineConfig::default()
            },
            sandbox: Sandbox::default(),
            world: World::App,
            data_dir: None,
            config: BTreeMap::new(),
            component: None,
            package_limits: wasmdm_package::Limits::default(),
            trusted_keys: Vec::new(),
            cache_dir: None,
        }
    }
}

/// Requests a graceful stop of a foreground run (wire it to Ctrl-C).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    /// A handle not yet triggered.
    pub fn new() -> StopHandle {
        StopHandle(Arc::new(watch::Sender::new(false)))
    }
    /// Asks the component to stop; it is interrupted after its grace period.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Default for StopHandle {
    fn default() -> Self {
        Self::new()
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Result<Scratch, RuntimeError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let p = std::env::temp_dir().join(format!("wasmdm-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| StateError::io("create dir", &p, e))?;
    Ok(Scratch(p))
}

/// Runs a `.wasm` component or one component of a package file (`.wdm`) to
/// completion. Returns how it ended.
pub async fn run_foreground(
    target: &Path,
    opts: ForegroundOptions,
    stop: StopHandle,
) -> Result<ExitStatus, RuntimeError> {
    let engine = EngineShared::new(&opts.engine)?;
    let cache_scratch;
    let cache_dir = match &opts.cache_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| StateError::io("create dir", d, e))?;
            d.clone()
        }
        None => {
            cache_scratch = scratch("cache")?;
            cache_scratch.0.clone()
        }
    };
    let head = read_head(target)?;
    let is_wasm = head.starts_with(b"\0asm");
    let _pkg_scratch;
    let (id, wasm, sha, world, sandbox, config, root) = if is_wasm {
        let bytes = std::fs::read(target).map_err(|e| StateError::io("read", target, e))?;
        let sha = wasmdm_package::Digest::of(&bytes).to_hex();
        let id = target
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("app")
            .to_string();
        let root = target.parent().map(Path::to_path_buf).unwrap_or_default();
        (
            id,
            target.to_path_buf(),
            sha,
            opts.world,
            opts.sandbox.clone(),
            opts.config.clone(),
            root,
        )
    } else {
        let dir = scratch("pkg")?;
        let file = std::fs::File::open(target).map_err(|e| StateError::io("open", target, e))?;
        let verified = wasmdm_package::unpack(
            std::io::BufReader::new(file),
            &dir.0,
            &opts.package_limits,
            &opts.trusted_keys,
        )?;
        let spec = super::convert::package_spec(&verified.manifest);
        let comp = match &opts.component {
            Some(c) => spec
                .components
                .iter()
                .find(|x| &x.id == c)
                .cloned()
                .ok_or_else(|| RuntimeError::UnknownComponent {
                    package: spec.name.clone(),
                    component: c.clone(),
                })?,
            None => spec
                .components
                .first()
                .cloned()
                .ok_or_else(|| RuntimeError::UnknownPackage(spec.name.clone()))?,
        };
        let root = dir.0.clone();
        _pkg_scratch = dir;
        (
            comp.id.clone(),
            root.join(&comp.file),
            comp.sha256.clone(),
            comp.world,
            comp.sandbox.clone(),
            spec.config.clone(),
            root,
        )
    };
    let pre = engine.load(&id, &wasm, &sha, world, &cache_dir).await?;
    // The same descriptor share a device sets aside, so a guest granted more
    // than the process can give is refused here too, not left to run the
    // host out of descriptors.
    let _descriptors = super::fdbudget::DescriptorBudget::for_this_process()
        .take(
            u64::from(sandbox.max_descriptors)
                .saturating_mul(super::datafs::RESOURCES_PER_DESCRIPTOR as u64),
        )
        .map_err(|reason| RuntimeError::NotRunnable {
            package: id.clone(),
            component: id.clone(),
            reason,
        })?;
    let log = LogBuffer::new(&id, sandbox.log_cap, true);
    let grace = Duration::from_millis(sandbox.stop_grace_ms);
    // `wasmdm run`: the app may declare what its grant names; nobody
    // serves the objects (there is no LwM2M client).
    let grant = super::appobjects::AppGrant {
        package: id.clone(),
        component: id.clone(),
        objects: sandbox.objects.clone(),
    };
    let setup = InstanceSetup {
        argv0: id,
        data_dir: if sandbox.data_dir {
            opts.data_dir.clone()
        } else {
            None
        },
        sandbox,
        package_root: root,
        config: Arc::new(config),
        log: log.clone(),
        objects: super::appobjects::AppObjects::new(),
        grant,
    };
    let signal = StopSignal::new();
    let mut handle = tokio::spawn(run_instance(engine, pre, setup, signal.clone()));
    let mut rx = stop.0.subscribe();
    let exit = tokio::select! {
        r = &mut handle => r.unwrap_or_else(|e| ExitStatus::Trapped(format!("instance task: {e}"))),
        _ = stop_requested(&mut rx) => match stop_instance(&mut handle, &signal, grace).await {
            ExitStatus::Exited(_) | ExitStatus::Trapped(_) => ExitStatus::Stopped { forced: false },
            other => other,
        },
    };
    log.push(LogSource::Host, &exit.to_string());
    Ok(exit)
}

fn read_head(p: &Path) -> Result<Vec<u8>, RuntimeError> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| StateError::io("open", p, e))?;
    let mut buf = vec![0u8; 8];
    let n = f.read(&mut buf).map_err(|e| StateError::io("read", p, e))?;
    buf.truncate(n);
    Ok(buf)
}
