//! LwM2M objects served by apps (`wasmdm:device/objects`): who serves what,
//! the definitions, the newest published values, the Writes and Executes
//! waiting for an app's answer, and the event stream the device follows.
//!
//! The runtime knows no LwM2M encoding: these are plain data types. The
//! device turns [`AppObjectEvent`]s into objects of its LwM2M client and
//! hands the server's Writes and Executes to [`Runtime::app_request`].
//!
//! Every cap is checked before anything is stored, so an app cannot make the
//! host hold more than: [`MAX_INSTANCES`] instances and [`MAX_RESOURCES`]
//! resources per object, [`MAX_RESOURCE_INSTANCES`] instances per multiple
//! resource, [`MAX_VALUE_BYTES`] per string or opaque value,
//! [`MAX_OBJECT_VALUE_BYTES`] of values per object,
//! [`MAX_WAITING_REQUESTS`] requests per app waiting for its answer, and
//! [`MAX_APP_OBJECTS`] app objects on the device. `set` is coalesced per path
//! (only the newest value not yet handed to the device is kept).

use super::Runtime;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};

/// Instances per app object.
pub const MAX_INSTANCES: usize = 16;
/// Resources per app object.
pub const MAX_RESOURCES: usize = 32;
/// Instances per multiple resource.
pub const MAX_RESOURCE_INSTANCES: usize = 16;
/// Bytes of one string or opaque value.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Bytes of all the values one app object holds at once, counted as
/// [`value_cost`]: the per-value caps alone would allow 8 MiB per object
/// (16 instances × 32 resources × 16 resource instances × 1 KiB), 512 MiB
/// on a device. 16 KiB holds any sensor's readings; the device keeps a
/// second copy in its LwM2M object, so 64 objects cost at most 2 MiB.
pub const MAX_OBJECT_VALUE_BYTES: usize = 16 * 1024;
/// Writes and Executes one app may have waiting for `respond`; more are
/// answered [`AppFailure::Unavailable`] at once.
pub const MAX_WAITING_REQUESTS: usize = 8;
/// Paths in one `send`.
pub const MAX_SEND_PATHS: usize = 64;
/// Shortest time between two `send`s of one app.
pub const SEND_INTERVAL: Duration = Duration::from_secs(1);
/// App objects on the whole device.
pub const MAX_APP_OBJECTS: usize = 64;
/// Shortest time between two [`AppObjectEvent::Changed`]: values set faster
/// are coalesced, so a fast publisher costs neither memory nor events.
pub const CHANGED_INTERVAL: Duration = Duration::from_millis(2);

/// The LwM2M data type of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppValueType {
    String,
    Integer,
    Unsigned,
    Float,
    Boolean,
    Opaque,
    Time,
}

/// What the server may do with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppOperations {
    Read,
    Write,
    ReadWrite,
    Execute,
}

impl AppOperations {
    /// Read (and Observe) allowed.
    pub fn readable(self) -> bool {
        matches!(self, AppOperations::Read | AppOperations::ReadWrite)
    }
    /// Write allowed.
    pub fn writable(self) -> bool {
        matches!(self, AppOperations::Write | AppOperations::ReadWrite)
    }
}

/// One resource of an app object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppResourceDef {
    pub id: u16,
    pub value_type: AppValueType,
    pub operations: AppOperations,
    pub multiple: bool,
    pub mandatory: bool,
}

/// An object an app declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppObjectDef {
    pub id: u16,
    /// `"X.Y"`, none for 1.0.
    pub version: Option<String>,
    pub instances: Vec<u16>,
    pub resources: Vec<AppResourceDef>,
}

impl AppObjectDef {
    /// The resource `id`, if declared.
    pub fn resource(&self, id: u16) -> Option<&AppResourceDef> {
        self.resources.iter().find(|r| r.id == id)
    }
}

/// A resource value.
#[derive(Debug, Clone, PartialEq)]
pub enum AppValue {
    String(String),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    Boolean(bool),
    Opaque(Vec<u8>),
    /// Seconds since the Unix epoch.
    Time(i64),
}

impl AppValue {
    /// The type this value has.
    pub fn value_type(&self) -> AppValueType {
        match self {
            AppValue::String(_) => AppValueType::String,
            AppValue::Integer(_) => AppValueType::Integer,
            AppValue::Unsigned(_) => AppValueType::Unsigned,
            AppValue::Float(_) => AppValueType::Float,
            AppValue::Boolean(_) => AppValueType::Boolean,
            AppValue::Opaque(_) => AppValueType::Opaque,
            AppValue::Time(_) => AppValueType::Time,
        }
    }
}

/// `/object/instance/resource[/resource-instance]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppPath {
    pub object: u16,
    pub instance: u16,
    pub resource: u16,
    pub resource_instance: Option<u16>,
}

impl std::fmt::Display for AppPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}/{}/{}", self.object, self.instance, self.resource)?;
        if let Some(ri) = self.resource_instance {
            write!(f, "/{ri}")?;
        }
        Ok(())
    }
}

/// What the server asks of an app.
#[derive(Debug, Clone, PartialEq)]
pub enum AppRequestKind {
    /// A Write of this value.
    Write(AppValue),
    /// An Execute with its argument text.
    Execute(String),
}

/// Why a Write or Execute did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppFailure {
    /// The app (or the host's check of the path or value) refused it as malformed.
    BadRequest,
    /// The operation is not allowed on this resource.
    NotAllowed,
    /// The app failed.
    Internal,
    /// No answer in time, the app is gone or stopping, or too many requests wait.
    Unavailable,
}

/// What the device learns from the runtime, in order per object.
#[derive(Debug, Clone, PartialEq)]
pub enum AppObjectEvent {
    /// An app declared `def` (already checked against its grant and other apps).
    Declared {
        package: String,
        component: String,
        def: AppObjectDef,
    },
    /// New values (coalesced: the newest per path since the last event).
    Changed { values: Vec<(AppPath, AppValue)> },
    /// The app that served `object` stopped: remove it from the registration.
    Withdrawn { object: u16 },
    /// The app asked to Send these paths' current values.
    Send { paths: Vec<AppPath> },
}

/// A Write or Execute handed to an app by `next-request`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRequest {
    pub id: u64,
    pub path: AppPath,
    pub kind: AppRequestKind,
}

// ---- the registry ------------------------------------------------------------------

/// The device-wide registry of app objects (one per [`Runtime`]).
pub struct AppObjects {
    state: Mutex<Registry>,
    /// Wakes the task that hands coalesced values to the subscriber.
    changed: Arc<Notify>,
    next_owner: AtomicU64,
    next_request: AtomicU64,
}

#[derive(Default)]
struct Registry {
    served: BTreeMap<u16, Served>,
    /// Values set since the last `Changed` (only while someone subscribed).
    dirty: BTreeMap<AppPath, AppValue>,
    events: Option<mpsc::UnboundedSender<AppObjectEvent>>,
    /// Which subscription the running forwarder task belongs to.
    generation: u64,
}

struct Served {
    owner: u64,
    package: String,
    component: String,
    def: AppObjectDef,
    values: BTreeMap<(u16, u16, Option<u16>), AppValue>,
    /// Sum of [`value_cost`] over `values`, kept within [`MAX_OBJECT_VALUE_BYTES`].
    value_bytes: usize,
    inbox: Arc<Inbox>,
}

/// What one stored value counts against [`MAX_OBJECT_VALUE_BYTES`]: its
/// bytes plus a fixed share for the map entry and the value itself.
fn value_cost(value: &AppValue) -> usize {
    const ENTRY: usize = 32;
    ENTRY
        + match value {
            AppValue::String(s) => s.len(),
            AppValue::Opaque(b) => b.len(),
            _ => 0,
        }
}

impl Registry {
    fn emit(&mut self, event: AppObjectEvent) {
        if let Some(tx) = &self.events
            && tx.send(event).is_err()
        {
            // The subscriber is gone; the next one gets a full re-declare.
            self.events = None;
            self.dirty.clear();
        }
    }

    /// Hands the coalesced values to the subscriber.
    fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let values = std::mem::take(&mut self.dirty).into_iter().collect();
        self.emit(AppObjectEvent::Changed { values });
    }
}

impl AppObjects {
    /// An empty registry.
    pub fn new() -> Arc<AppObjects> {
        Arc::new(AppObjects {
            state: Mutex::new(Registry::default()),
            changed: Arc::new(Notify::new()),
            next_owner: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The context of one instance about to start: what it may serve.
    pub fn instance(self: &Arc<Self>, grant: AppGrant) -> AppObjectsCtx {
        AppObjectsCtx {
            registry: self.clone(),
            owner: self.next_owner.fetch_add(1, Ordering::Relaxed),
            grant,
            inbox: Arc::new(Inbox::default()),
            last_send: None,
            watching_stop: false,
        }
    }

    /// See [`Runtime::app_object_events`].
    pub fn subscribe(self: &Arc<Self>) -> mpsc::UnboundedReceiver<AppObjectEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = {
            let mut reg = self.lock();
            reg.dirty.clear();
            for s in reg.served.values() {
                let _ = tx.send(AppObjectEvent::Declared {
                    package: s.package.clone(),
                    component: s.component.clone(),
                    def: s.def.clone(),
                });
                if !s.values.is_empty() {
                    let values = s
                        .values
                        .iter()
                        .map(|(&(instance, resource, ri), v)| {
                            (path(s.def.id, instance, resource, ri), v.clone())
                        })
                        .collect();
                    let _ = tx.send(AppObjectEvent::Changed { values });
                }
            }
            reg.events = Some(tx);
            reg.generation += 1;
            reg.generation
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(forward_changes(
                    Arc::downgrade(self),
                    self.changed.clone(),
                    generation,
                ));
            }
            Err(_) => tracing::warn!("app object events subscribed outside tokio: no changes"),
        }
        rx
    }

    /// See [`Runtime::app_request`].
    pub async fn request(
        &self,
        path: AppPath,
        kind: AppRequestKind,
        deadline: Duration,
    ) -> Result<(), AppFailure> {
        let inbox = {
            let reg = self.lock();
            let served = reg
                .served
                .get(&path.object)
                .ok_or(AppFailure::Unavailable)?;
            check_request(&served.def, &path, &kind)?;
            served.inbox.clone()
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let rx = inbox.push(AppRequest { id, path, kind })?;
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(outcome)) => outcome,
            // The app is gone (its sender dropped), or no answer in time.
            Ok(Err(_)) => Err(AppFailure::Unavailable),
            Err(_) => {
                inbox.forget(id);
                Err(AppFailure::Unavailable)
            }
        }
    }

    /// Removes everything `owner` serves and tells the subscriber.
    fn withdraw(&self, owner: u64) {
        let mut reg = self.lock();
        let ids: Vec<u16> = reg
            .served
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            reg.served.remove(&id);
            reg.dirty.retain(|p, _| p.object != id);
            reg.emit(AppObjectEvent::Withdrawn { object: id });
        }
    }

    /// Stores a checked value as `owner`'s newest one for `path`.
    fn publish(&self, owner: u64, p: AppPath, value: AppValue) -> Result<(), String> {
        let mut reg = self.lock();
        let served = reg
            .served
            .get_mut(&p.object)
            .filter(|s| s.owner == owner)
            .ok_or_else(|| format!("object {} is not declared by this app", p.object))?;
        let res = check_path(&served.def, &p).map_err(|e| format!("{p}: {e}"))?;
        if !res.operations.readable() {
            return Err(format!(
                "{p} is not readable: publish only readable resources"
            ));
        }
        check_value(res, &value).map_err(|e| format!("{p}: {e}"))?;
        let key = (p.instance, p.resource, p.resource_instance);
        if let Some(ri) = p.resource_instance
            && !served.values.contains_key(&key)
        {
            let count = served
                .values
                .keys()
                .filter(|(i, r, ri2)| *i == p.instance && *r == p.resource && ri2.is_some())
                .count();
            if count >= MAX_RESOURCE_INSTANCES {
                return Err(format!(
                    "{p}: resource instance {ri} would be more than {MAX_RESOURCE_INSTANCES}"
                ));
            }
        }
        let replaced = served.values.get(&key).map_or(0, value_cost);
        let total = served.value_bytes - replaced + value_cost(&value);
        if total > MAX_OBJECT_VALUE_BYTES {
            return Err(format!(
                "{p}: object {} would hold {total} bytes of values, more than {MAX_OBJECT_VALUE_BYTES}",
                p.object
            ));
        }
        served.value_bytes = total;
        served.values.insert(key, value.clone());
        if reg.events.is_some() {
            reg.dirty.insert(p, value);
            drop(reg);
            self.changed.notify_one();
        }
        Ok(())
    }
}

/// Forwards coalesced values while its subscription is the current one.
async fn forward_changes(registry: Weak<AppObjects>, changed: Arc<Notify>, generation: u64) {
    loop {
        changed.notified().await;
        let Some(reg) = registry.upgrade() else {
            return;
        };
        {
            let mut state = reg.lock();
            if state.generation != generation || state.events.is_none() {
                // Another subscription's task took over; pass the wake-up on.
                drop(state);
                changed.notify_one();
                return;
            }
            state.flush();
        }
        drop(reg);
        tokio::time::sleep(CHANGED_INTERVAL).await;
    }
}

fn path(object: u16, instance: u16, resource: u16, resource_instance: Option<u16>) -> AppPath {
    AppPath {
        object,
        instance,
        resource,
        resource_instance,
    }
}

// ---- checks ---------------------------------------------------------------------------

/// Checks a declaration's shape and caps (not who may serve it).
fn check_def(def: &AppObjectDef) -> Result<(), String> {
    let id = def.id;
    if let Some(v) = &def.version {
        let ok = v.len() <= 7
            && v.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
        if !ok {
            return Err(format!("object {id}: version {v:?} is not \"major.minor\""));
        }
    }
    if def.instances.len() > MAX_INSTANCES {
        return Err(format!(
            "object {id}: {} instances, at most {MAX_INSTANCES}",
            def.instances.len()
        ));
    }
    if def.resources.len() > MAX_RESOURCES {
        return Err(format!(
            "object {id}: {} resources, at most {MAX_RESOURCES}",
            def.resources.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for &i in &def.instances {
        // LwM2M 1.1 Core §7.1: 65535 is reserved.
        if i == u16::MAX || !seen.insert(i) {
            return Err(format!(
                "object {id}: instance {i} is reserved or listed twice"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for r in &def.resources {
        if r.id == u16::MAX || !seen.insert(r.id) {
            return Err(format!(
                "object {id}: resource {} is reserved or listed twice",
                r.id
            ));
        }
        if r.operations == AppOperations::Execute && r.multiple {
            return Err(format!(
                "object {id}: resource {} is executable and multiple",
                r.id
            ));
        }
    }
    Ok(())
}

/// The declared resource `p` names (instance, resource, and a resource
/// instance exactly when the resource is multiple).
fn check_path<'d>(def: &'d AppObjectDef, p: &AppPath) -> Result<&'d AppResourceDef, String> {
    if !def.instances.contains(&p.instance) {
        return Err(format!("instance {} is not declared", p.instance));
    }
    let res = def
        .resource(p.resource)
        .ok_or_else(|| format!("resource {} is not declared", p.resource))?;
    match (res.multiple, p.resource_instance) {
        (true, None) => Err("a multiple resource needs a resource instance".into()),
        (false, Some(_)) => Err("a single resource has no resource instances".into()),
        (true, Some(u16::MAX)) => Err("resource instance 65535 is reserved".into()),
        _ => Ok(res),
    }
}

/// A value fits its resource: its type, [`MAX_VALUE_BYTES`], finite floats.
fn check_value(res: &AppResourceDef, value: &AppValue) -> Result<(), String> {
    if res.operations == AppOperations::Execute {
        return Err("an executable resource has no value".into());
    }
    if value.value_type() != res.value_type {
        return Err(format!(
            "a {:?} value for a {:?} resource",
            value.value_type(),
            res.value_type
        ));
    }
    let len = match value {
        AppValue::String(s) => s.len(),
        AppValue::Opaque(b) => b.len(),
        AppValue::Float(f) if !f.is_finite() => return Err("the float is not finite".into()),
        _ => 0,
    };
    if len > MAX_VALUE_BYTES {
        return Err(format!("{len} bytes, at most {MAX_VALUE_BYTES}"));
    }
    Ok(())
}

/// The host's own check of a Write or Execute before the app sees it.
fn check_request(def: &AppObjectDef, p: &AppPath, kind: &AppRequestKind) -> Result<(), AppFailure> {
    let res = check_path(def, p).map_err(|_| AppFailure::BadRequest)?;
    match kind {
        AppRequestKind::Write(v) => {
            if !res.operations.writable() {
                return Err(AppFailure::NotAllowed);
            }
            check_value(res, v).map_err(|_| AppFailure::BadRequest)
        }
        AppRequestKind::Execute(args) => {
            if res.operations != AppOperations::Execute {
                return Err(AppFailure::NotAllowed);
            }
            if args.len() > MAX_VALUE_BYTES {
                return Err(AppFailure::BadRequest);
            }
            Ok(())
        }
    }
}

// ---- one app's requests ----------------------------------------------------------------

/// Writes and Executes for one instance: queued until `next-request` takes
/// them, then waiting for `respond`.
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    wake: Notify,
    /// Ends the stop watcher once the inbox is closed.
    closed: Notify,
}

#[derive(Default)]
struct InboxState {
    queued: VecDeque<AppRequest>,
    /// Every request not answered yet (queued or handed out), by id; a
    /// Write keeps its path and value to publish when it succeeds.
    waiting: BTreeMap<u64, Waiting>,
    /// The app stops or stopped: nothing more is accepted.
    closed: bool,
}

struct Waiting {
    reply: oneshot::Sender<Result<(), AppFailure>>,
    write: Option<(AppPath, AppValue)>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(
        &self,
        req: AppRequest,
    ) -> Result<oneshot::Receiver<Result<(), AppFailure>>, AppFailure> {
        let mut st = self.lock();
        if st.closed || st.waiting.len() >= MAX_WAITING_REQUESTS {
            return Err(AppFailure::Unavailable);
        }
        let (tx, rx) = oneshot::channel();
        let write = match &req.kind {
            AppRequestKind::Write(v) => Some((req.path, v.clone())),
            AppRequestKind::Execute(_) => None,
        };
        st.waiting.insert(req.id, Waiting { reply: tx, write });
        st.queued.push_back(req);
        drop(st);
        self.wake.notify_one();
        Ok(rx)
    }

    /// A request whose deadline passed: the server got its answer already.
    fn forget(&self, id: u64) {
        let mut st = self.lock();
        st.waiting.remove(&id);
        st.queued.retain(|r| r.id != id);
    }

    fn pop(&self) -> Option<AppRequest> {
        self.lock().queued.pop_front()
    }

    /// Fails everything waiting and accepts nothing more.
    fn close(&self) {
        let waiting = {
            let mut st = self.lock();
            st.closed = true;
            st.queued.clear();
            std::mem::take(&mut st.waiting)
        };
        for (_, w) in waiting {
            let _ = w.reply.send(Err(AppFailure::Unavailable));
        }
        self.closed.notify_one();
    }
}

// ---- one instance's side -----------------------------------------------------------------

/// What a component may serve: its grant, and who it is (for messages and
/// the device's registration).
#[derive(Debug, Clone, Default)]
pub struct AppGrant {
    pub package: String,
    pub component: String,
    /// The manifest's `objects` ids.
    pub objects: Vec<u16>,
}

/// One running instance's view of the registry (in its store's `HostState`).
/// Dropping it (the instance ended, however) withdraws its objects and fails
/// its waiting requests.
pub struct AppObjectsCtx {
    registry: Arc<AppObjects>,
    owner: u64,
    grant: AppGrant,
    inbox: Arc<Inbox>,
    last_send: Option<Instant>,
    watching_stop: bool,
}

impl AppObjectsCtx {
    /// Closes the inbox as soon as `stop` turns true, so requests waiting
    /// for an app that was asked to stop fail then, not at their deadline
    /// (the app may be anywhere but in `next-request`). Once per instance.
    pub fn watch_stop(&mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if std::mem::replace(&mut self.watching_stop, true) {
            return;
        }
        let inbox = self.inbox.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            tokio::select! {
                r = stop.wait_for(|v| *v) => {
                    if r.is_ok() {
                        inbox.close();
                    }
                }
                _ = inbox.closed.notified() => {}
            }
        });
    }

    /// `objects.declare`.
    pub fn declare(&mut self, def: AppObjectDef) -> Result<(), String> {
        let id = def.id;
        if let Some(why) = wasmdm_package::reserved_object(i64::from(id)) {
            return Err(format!("object {id} {why}"));
        }
        if !self.grant.objects.contains(&id) {
            return Err(format!(
                "object {id} is not in this component's `objects` grant {:?} \
                 ([component.sandbox] objects in manifest.toml)",
                self.grant.objects
            ));
        }
        check_def(&def)?;
        let mut reg = self.registry.lock();
        if let Some(s) = reg.served.get(&id) {
            return Err(if s.owner == self.owner {
                format!("object {id} is already declared by this app")
            } else {
                format!(
                    "object {id} is served by {}/{}, which is running",
                    s.package, s.component
                )
            });
        }
        if reg.served.len() >= MAX_APP_OBJECTS {
            return Err(format!(
                "the device serves {MAX_APP_OBJECTS} app objects already"
            ));
        }
        reg.flush();
        reg.emit(AppObjectEvent::Declared {
            package: self.grant.package.clone(),
            component: self.grant.component.clone(),
            def: def.clone(),
        });
        reg.served.insert(
            id,
            Served {
                owner: self.owner,
                package: self.grant.package.clone(),
                component: self.grant.component.clone(),
                def,
                values: BTreeMap::new(),
                value_bytes: 0,
                inbox: self.inbox.clone(),
            },
        );
        Ok(())
    }

    /// `objects.set`.
    pub fn set(&mut self, p: AppPath, value: AppValue) -> Result<(), String> {
        self.registry.publish(self.owner, p, value)
    }

    /// `objects.next-request`: the next queued request, waiting up to `wait`.
    /// The caller races it against the stop request.
    pub fn next_request(&self, wait: Duration) -> impl Future<Output = Option<AppRequest>> + use<> {
        let inbox = self.inbox.clone();
        async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let woken = inbox.wake.notified();
                if let Some(r) = inbox.pop() {
                    return Some(r);
                }
                if tokio::time::timeout_at(deadline, woken).await.is_err() {
                    return inbox.pop();
                }
            }
        }
    }

    /// The app was asked to stop: its requests fail now, not at its deadline.
    pub fn stopping(&self) {
        self.inbox.close();
    }

    /// `objects.respond`. A successful Write of a readable resource becomes
    /// its published value, so a Read after the 2.04 shows what was written.
    pub fn respond(&mut self, id: u64, outcome: Result<(), AppFailure>) {
        let Some(w) = self.inbox.lock().waiting.remove(&id) else {
            return;
        };
        if outcome.is_ok()
            && let Some((p, v)) = w.write
        {
            // A write-only resource is not published; nothing to report.
            let _ = self.registry.publish(self.owner, p, v);
        }
        let _ = w.reply.send(outcome);
    }

    /// `objects.send`.
    pub fn send(&mut self, paths: Vec<AppPath>) -> Result<(), String> {
        if paths.is_empty() || paths.len() > MAX_SEND_PATHS {
            return Err(format!("send takes 1 to {MAX_SEND_PATHS} paths"));
        }
        let now = Instant::now();
        if self
            .last_send
            .is_some_and(|t| now.duration_since(t) < SEND_INTERVAL)
        {
            return Err("send at most once per second".into());
        }
        let mut reg = self.registry.lock();
        for p in &paths {
            let served = reg
                .served
                .get(&p.object)
                .filter(|s| s.owner == self.owner)
                .ok_or_else(|| format!("{p}: object {} is not declared by this app", p.object))?;
            let res = check_path(&served.def, p).map_err(|e| format!("{p}: {e}"))?;
            if !res.operations.readable() {
                return Err(format!("{p} is not readable"));
            }
        }
        self.last_send = Some(now);
        reg.flush();
        reg.emit(AppObjectEvent::Send { paths });
        Ok(())
    }
}

impl Drop for AppObjectsCtx {
    fn drop(&mut self) {
        self.inbox.close();
        self.registry.withdraw(self.owner);
    }
}

// ---- the runtime facade ----------------------------------------------------------------

impl Runtime {
    /// The event stream of app objects, for the device (one subscriber: a
    /// second call replaces the first). Nothing is lost before the call:
    /// the receiver's first events declare every object served now, with
    /// its current values. Bounded in effect: values are coalesced per path.
    pub fn app_object_events(&self) -> mpsc::UnboundedReceiver<AppObjectEvent> {
        self.inner.app_objects.subscribe()
    }

    /// Delivers a Write or Execute to the app serving `path.object`.
    /// Resolves when the app responds; with [`AppFailure::Unavailable`]
    /// after `deadline`, when the app is gone or stopping, or when
    /// [`MAX_WAITING_REQUESTS`] already wait; with `BadRequest` /
    /// `NotAllowed` when the path, operation or value does not fit the
    /// declaration (the app never sees those).
    pub async fn app_request(
        &self,
        path: AppPath,
        kind: AppRequestKind,
        deadline: Duration,
    ) -> Result<(), AppFailure> {
        self.inner.app_objects.request(path, kind, deadline).await
    }
}

/// Refuses a package whose `objects` grant names an id that another
/// installed package's grant names (an upgrade of the same package name is
/// not "another"). Returns the component and reason for
/// `RuntimeError::InstallFailed`.
pub(crate) fn grant_conflict<'a>(
    spec: &super::PackageSpec,
    installed: impl Iterator<Item = &'a super::PackageSpec>,
) -> Result<(), (String, String)> {
    let others: Vec<&super::PackageSpec> = installed.filter(|p| p.name != spec.name).collect();
    for c in &spec.components {
        for &id in &c.sandbox.objects {
            for o in &others {
                if let Some(oc) = o
                    .components
                    .iter()
                    .find(|oc| oc.sandbox.objects.contains(&id))
                {
                    return Err((
                        c.id.clone(),
                        format!(
                            "object {id} is already granted to installed package {:?} \
                             (component {:?}); one object has one app",
                            o.name, oc.id
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "appobjects_tests.rs"]
mod tests;
