//! Per-instance store data: WASI context, the wasmdm interfaces, the memory limiter
//! and the stop signal.

use super::appobjects::{
    AppFailure, AppObjectDef, AppObjectsCtx, AppOperations, AppPath, AppRequest, AppRequestKind,
    AppResourceDef, AppValue, AppValueType,
};
use super::datafs::{DataFs, DataFsView, FsLimits};
use super::logbuf::{LogBuffer, LogSource};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Host bindings for the `wasmdm:device` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "app-imports",
        imports: {
            // Sleeps until a stop is requested: must not block the executor.
            "wasmdm:device/lifecycle.wait-for-stop": async,
            // Waits for a Write/Execute (or a stop): must not block either.
            "wasmdm:device/objects.next-request": async,
        },
    });
}

use bindings::wasmdm::device::{config, lifecycle, log, objects};

/// Stop request for one instance: a soft request the guest can observe, then a
/// hard flag the epoch callback turns into an interrupt.
#[derive(Debug)]
pub struct StopSignal {
    requested: tokio::sync::watch::Sender<bool>,
    force: AtomicBool,
}

impl StopSignal {
    /// A fresh, unset signal.
    pub fn new() -> Arc<StopSignal> {
        Arc::new(StopSignal {
            requested: tokio::sync::watch::Sender::new(false),
            force: AtomicBool::new(false),
        })
    }
    /// Asks the guest to stop (seen by `stop-requested`, wakes `wait-for-stop`).
    pub fn request(&self) {
        self.requested.send_replace(true);
    }
    /// True once [`StopSignal::request`] was called.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }
    /// Makes the next epoch tick interrupt the guest.
    pub fn force(&self) {
        self.request();
        self.force.store(true, Ordering::SeqCst);
    }
    /// True once [`StopSignal::force`] was called.
    pub fn is_forced(&self) -> bool {
        self.force.load(Ordering::SeqCst)
    }
}

/// Caps the TOTAL bytes of all linear memories and tables of one instance
/// (wasmtime's `StoreLimits` caps each memory separately).
#[derive(Debug)]
pub struct TotalMemoryLimiter {
    limit: u64,
    used: u64,
    /// Bytes added by the last permitted growth, undone if the growth then fails.
    pending: u64,
    /// Set when a growth was refused; turns the resulting trap into "memory limit exceeded".
    pub hit: bool,
}

impl TotalMemoryLimiter {
    /// A limiter allowing `limit` bytes in total.
    pub fn new(limit: u64) -> Self {
        TotalMemoryLimiter {
            limit,
            used: 0,
            pending: 0,
            hit: false,
        }
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let delta = desired.saturating_sub(current);
        let total = self.used.saturating_add(delta);
        if total > self.limit {
            self.hit = true;
            return false;
        }
        self.used = total;
        self.pending = delta;
        true
    }

    fn undo(&mut self) {
        self.used = self.used.saturating_sub(self.pending);
        self.pending = 0;
    }
}

impl wasmtime::ResourceLimiter for TotalMemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo();
        Ok(())
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Each table element costs a pointer on the host.
        let w = std::mem::size_of::<usize>() as u64;
        Ok(self.grow(
            (current as u64).saturating_mul(w),
            (desired as u64).saturating_mul(w),
        ))
    }
    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo();
        Ok(())
    }
}

/// The `T` of every `Store<T>` wasmdm creates.
pub struct HostState {
    /// WASI 0.2 context built from the sandbox.
    pub wasi: WasiCtx,
    /// WASI resources.
    pub table: ResourceTable,
    /// Memory cap.
    pub limiter: TotalMemoryLimiter,
    /// Stop request.
    pub stop: Arc<StopSignal>,
    /// Package config values.
    pub config: Arc<BTreeMap<String, String>>,
    /// Where `wasmdm:device/log` writes.
    pub log: LogBuffer,
    /// The data quota and descriptor cap, enforced by the file system.
    pub fs_limits: FsLimits,
    /// The LwM2M objects this instance serves (`wasmdm:device/objects`);
    /// dropped with the store, which withdraws them.
    pub objects: AppObjectsCtx,
    /// Set by a host call that waited (`wait-for-stop`, `next-request`):
    /// the guest was idle, not computing, since the last epoch deadline, so
    /// the CPU-share check does not take an app that wakes often for a
    /// spinning one (instance.rs).
    pub waited: bool,
}

impl DataFsView for HostState {
    fn data_fs(&mut self) -> DataFs<'_> {
        DataFs {
            fs: WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            limits: &mut self.fs_limits,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Longest single wait-for-stop sleep; bounds timer arithmetic on guest input.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

impl lifecycle::Host for HostState {
    fn stop_requested(&mut self) -> bool {
        self.stop.is_requested()
    }

    async fn wait_for_stop(&mut self, timeout_ms: u64) -> bool {
        self.waited |= timeout_ms > 0;
        let mut rx = self.stop.requested.subscribe();
        let wait = Duration::from_millis(timeout_ms).min(MAX_WAIT);
        // wait_for returns at once if a stop was already requested.
        matches!(
            tokio::time::timeout(wait, async move { rx.wait_for(|v| *v).await.is_ok() }).await,
            Ok(true)
        )
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
    fn get_all(&mut self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let source = match level {
            log::Level::Trace => LogSource::Trace,
            log::Level::Debug => LogSource::Debug,
            log::Level::Info => LogSource::Info,
            log::Level::Warn => LogSource::Warn,
            log::Level::Error => LogSource::Error,
        };
        self.log.push(source, &message);
    }
}

impl objects::Host for HostState {
    fn declare(&mut self, def: objects::ObjectDef) -> Result<(), String> {
        self.objects.watch_stop(self.stop.requested.subscribe());
        self.objects.declare(AppObjectDef {
            id: def.id,
            version: def.version,
            instances: def.instances,
            resources: def.resources.into_iter().map(resource_def).collect(),
        })
    }

    fn set(&mut self, path: objects::Path, value: objects::Value) -> Result<(), String> {
        self.objects.set(app_path(path), app_value(value))
    }

    async fn next_request(&mut self, timeout_ms: u64) -> Option<objects::Request> {
        self.waited |= timeout_ms > 0;
        let mut rx = self.stop.requested.subscribe();
        let wait = Duration::from_millis(timeout_ms).min(MAX_WAIT);
        let next = self.objects.next_request(wait);
        tokio::select! {
            biased;
            _ = rx.wait_for(|v| *v) => {
                self.objects.stopping();
                None
            }
            r = next => r.map(wit_request),
        }
    }

    fn respond(&mut self, id: u64, outcome: Result<(), objects::Failure>) {
        let outcome = outcome.map_err(|f| match f {
            objects::Failure::BadRequest => AppFailure::BadRequest,
            objects::Failure::NotAllowed => AppFailure::NotAllowed,
            objects::Failure::Internal => AppFailure::Internal,
        });
        self.objects.respond(id, outcome);
    }

    fn send(&mut self, paths: Vec<objects::Path>) -> Result<(), String> {
        self.objects.send(paths.into_iter().map(app_path).collect())
    }
}

fn resource_def(r: objects::ResourceDef) -> AppResourceDef {
    use objects::{Operations as O, ValueType as T};
    AppResourceDef {
        id: r.id,
        value_type: match r.value_type {
            T::String => AppValueType::String,
            T::Integer => AppValueType::Integer,
            T::UnsignedInteger => AppValueType::Unsigned,
            T::Float => AppValueType::Float,
            T::Boolean => AppValueType::Boolean,
            T::Opaque => AppValueType::Opaque,
            T::Time => AppValueType::Time,
        },
        operations: match r.operations {
            O::Read => AppOperations::Read,
            O::Write => AppOperations::Write,
            O::ReadWrite => AppOperations::ReadWrite,
            O::Execute => AppOperations::Execute,
        },
        multiple: r.multiple,
        mandatory: r.mandatory,
    }
}

fn app_path(p: objects::Path) -> AppPath {
    AppPath {
        object: p.object,
        instance: p.instance,
        resource: p.resource,
        resource_instance: p.resource_instance,
    }
}

fn app_value(v: objects::Value) -> AppValue {
    use objects::Value as V;
    match v {
        V::String(s) => AppValue::String(s),
        V::Integer(i) => AppValue::Integer(i),
        V::UnsignedInteger(u) => AppValue::Unsigned(u),
        V::Float(f) => AppValue::Float(f),
        V::Boolean(b) => AppValue::Boolean(b),
        V::Opaque(b) => AppValue::Opaque(b),
        V::Time(t) => AppValue::Time(t),
    }
}

fn wit_request(r: AppRequest) -> objects::Request {
    use objects::Value as V;
    objects::Request {
        id: r.id,
        path: objects::Path {
            object: r.path.object,
            instance: r.path.instance,
            resource: r.path.resource,
            resource_instance: r.path.resource_instance,
        },
        kind: match r.kind {
            AppRequestKind::Write(v) => objects::RequestKind::Write(match v {
                AppValue::String(s) => V::String(s),
                AppValue::Integer(i) => V::Integer(i),
                AppValue::Unsigned(u) => V::UnsignedInteger(u),
                AppValue::Float(f) => V::Float(f),
                AppValue::Boolean(b) => V::Boolean(b),
                AppValue::Opaque(b) => V::Opaque(b),
                AppValue::Time(t) => V::Time(t),
            }),
            AppRequestKind::Execute(args) => objects::RequestKind::Execute(args),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_all_memories_together() {
        let mut l = TotalMemoryLimiter::new(100);
        assert!(l.grow(0, 60));
        assert!(l.grow(0, 30)); // a second memory
        assert!(!l.grow(60, 80)); // 90 + 20 > 100
        assert!(l.hit);
        assert!(l.grow(30, 40));
        l.undo();
        assert!(l.grow(30, 40));
    }
}
