//! `wasmdm device`: the tokio driver of the sans-IO LwM2M client engine.
//!
//! One task owns the UDP socket and the engine; it feeds datagrams and timer
//! expiries in, sends what the engine wants sent, and carries out the
//! effects objects ask for. Slow work (download, verify, install, activate)
//! runs on spawned tasks that report back through a channel as [`Work`], so
//! the protocol keeps answering while a package compiles.

pub mod config;
pub mod download;
pub mod security;
mod shared;
mod socket;
mod state;
mod transport;

use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};
use config::{ConfigError, DeviceConfig};
use shared::{LiveDevice, Shared};
use socket::DeviceSocket;
use state::{DeviceState, StateFile};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use transport::Transport;
use wasmdm_package::display::escape;
use wasmdm_proto::client::{Client, Config as EngineConfig, DownloadId, Event};
use wasmdm_proto::object::{ComponentAction, Effect, Object, OpError, SwMgmtAction};
use wasmdm_proto::objects::{Device as DeviceObject, DeviceInfo, Server};
use wasmdm_proto::swcomp::SoftwareComponents;
use wasmdm_proto::swmgmt::{Installed, Report, SoftwareManagement, SwMgmtConfig, UpdateResult};

/// Why the device stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("server account: {0}")]
    Security(#[from] security::SecurityError),
    #[error("DTLS: {0}")]
    Dtls(#[from] wasmdm_proto::dtls::DtlsError),
    #[error("cannot resolve the LwM2M server {0}")]
    Resolve(String),
    #[error("UDP socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    State(#[from] state::StateFileError),
    #[error("the device thread stopped unexpectedly")]
    DriverGone,
}

/// The outcome of slow work, fed back into the objects.
#[derive(Debug)]
enum Work {
    HttpDone {
        iid: u16,
        result: Result<u64, download::DownloadError>,
    },
    Verified {
        iid: u16,
        result: Result<(String, String), UpdateResult>,
    },
    Installed {
        iid: u16,
        result: Result<crate::runtime::InstalledInfo, UpdateResult>,
    },
    Uninstalled {
        iid: u16,
        ok: bool,
    },
    Activated {
        iid: u16,
        active: bool,
    },
    ComponentActivated {
        id: u16,
        active: bool,
    },
}

/// How a device run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` completed.
    Shutdown,
    /// The server executed Reboot (/3/0/4): the caller restarts the host.
    RebootRequested,
}

/// Runs the device until `shutdown` completes (or a Reboot), then de-registers.
pub async fn run(
    config: DeviceConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, DeviceError> {
    let server = resolve(&config.server_addr()?).await?;
    // Credentials are read and checked before anything starts: a key that
    // cannot be used is a configuration error, not a handshake to retry.
    let account = security::account(&config, 1)?;
    // Checked before anything starts: a CA file that cannot be used is a
    // configuration error, not a reason to trust something else.
    let http_trust = config.download_trust()?;
    let mut rt_config = RuntimeConfig::new(&config.data_dir);
    rt_config.max_package_bytes = config.max_package_bytes;
    rt_config.engine.max_instances = config.max_instances;
    rt_config.engine.max_memory_per_instance = config.max_instance_memory;
    rt_config.engine.memory_reservation = config.memory_reservation;
    rt_config.allow_downgrade = config.allow_downgrade;
    for key in &config.trusted_keys {
        let key = wasmdm_package::signing::load_public_key(key)
            .map_err(|e| DeviceError::Runtime(RuntimeError::Package(e)))?;
        rt_config.trusted_keys.push(key);
    }
    let runtime = Runtime::open(rt_config).await?;
    let bind: SocketAddr = config
        .bind
        .parse()
        .map_err(|_| DeviceError::Resolve(format!("bind address {}", config.bind)))?;
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.set_nonblocking(true)?;
    info!(endpoint = %config.endpoint, server = %server, local = %socket.local_addr()?, "wasmdm device starting");
    // The protocol loop gets a thread of its own with a current-thread tokio
    // runtime: that thread waits on the socket itself, so a datagram wakes
    // the loop directly (in the multi-thread runtime the caller's `block_on`
    // thread does not poll the IO driver: every datagram was a wake-up
    // handed over from a worker thread). Slow work still runs on the
    // caller's runtime (`Driver::tasks`).
    let tasks = tokio::runtime::Handle::current();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let driver_runtime = runtime.clone();
    std::thread::Builder::new()
        .name("wasmdm-device".into())
        .spawn(move || {
            let result = drive(
                config,
                account,
                http_trust,
                server,
                driver_runtime,
                socket,
                tasks,
                async {
                    let _ = stop_rx.await;
                },
            );
            let _ = done_tx.send(result);
        })?;
    tokio::pin!(shutdown);
    let mut done_rx = done_rx;
    let result = tokio::select! {
        result = &mut done_rx => result,
        () = &mut shutdown => {
            let _ = stop_tx.send(());
            done_rx.await
        }
    };
    runtime.shutdown().await;
    let reboot_requested = result.map_err(|_| DeviceError::DriverGone)??;
    Ok(if reboot_requested {
        Stopped::RebootRequested
    } else {
        Stopped::Shutdown
    })
}

/// The device thread: runs the protocol loop until `stop` completes (or a
/// Reboot) and de-registers; returns whether a Reboot was requested.
#[allow(clippy::too_many_arguments)]
fn drive(
    config: DeviceConfig,
    account: security::Account,
    http_trust: download::TlsTrust,
    server: SocketAddr,
    runtime: Runtime,
    socket: std::net::UdpSocket,
    tasks: tokio::runtime::Handle,
    stop: impl Future<Output = ()>,
) -> Result<bool, DeviceError> {
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    local.block_on(async move {
        let socket = DeviceSocket::new(socket)?;
        let transport =
            Transport::new(socket, server, &config.server_host()?, account.credentials)?;
        let mut device = Driver::new(
            config,
            account.security,
            http_trust,
            server,
            runtime,
            transport,
            tasks,
        )?;
        device.run(stop).await?;
        Ok(device.reboot_requested)
    })
}

/// Receive errors that only mean "an earlier datagram bounced" are skipped.
fn transient(
    received: std::io::Result<(usize, SocketAddr)>,
) -> Result<Option<(usize, SocketAddr)>, DeviceError> {
    match received {
        Ok(r) => Ok(Some(r)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            debug!("datagram bounced: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

async fn resolve(addr: &str) -> Result<SocketAddr, DeviceError> {
    tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| DeviceError::Resolve(addr.to_string()))
}

struct Driver {
    config: DeviceConfig,
    runtime: Runtime,
    /// Where slow work runs (the caller's runtime, not the device thread).
    tasks: tokio::runtime::Handle,
    /// UDP socket and DTLS sessions.
    transport: Transport,
    client: Client,
    swmgmt: Shared<SoftwareManagement>,
    swcomp: Shared<SoftwareComponents>,
    state_file: StateFile,
    /// /9 instance -> installed package name (the runtime's key).
    bindings: BTreeMap<u16, String>,
    work_tx: mpsc::UnboundedSender<Work>,
    work_rx: mpsc::UnboundedReceiver<Work>,
    coap_downloads: BTreeMap<DownloadId, u16>,
    /// The file server of each CoAP pull (a failed handshake fails its pulls).
    coap_download_peers: BTreeMap<DownloadId, SocketAddr>,
    /// Deliveries being written block by block (push, CoAP pull): kept open
    /// between blocks, since only synced bytes survive a reopen.
    open_deliveries: BTreeMap<u16, crate::runtime::Delivery>,
    http_cancel: BTreeMap<u16, Arc<AtomicBool>>,
    /// CAs trusted for https pulls (`download-ca`), parsed once at startup.
    http_trust: download::TlsTrust,
    /// Set by Execute /3/0/4.
    reboot_requested: bool,
}

fn slot(iid: u16) -> String {
    format!("obj9-{iid}")
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Only MIDs, tokens and jitter depend on it: time is a fine fallback.
        return SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    u64::from_le_bytes(bytes)
}

impl Driver {
    fn new(
        config: DeviceConfig,
        security: wasmdm_proto::objects::Security,
        http_trust: download::TlsTrust,
        server: SocketAddr,
        runtime: Runtime,
        transport: Transport,
        tasks: tokio::runtime::Handle,
    ) -> Result<Self, DeviceError> {
        let sw_config = SwMgmtConfig {
            max_instances: usize::from(config.max_packages),
            // coaps:// Package URIs are pulled with the server account's
            // DTLS credentials, so only a DTLS account offers them.
            coaps: transport.secure(),
            https: true,
            max_package_bytes: Some(config.max_package_bytes),
        };
        let state_file = StateFile::new(runtime.data_dir());
        let saved = state_file.load()?;
        let (swmgmt, swcomp, bindings, restored_effects) = match saved {
            Some(s) => {
                let (sm, effects) = SoftwareManagement::from_json(&s.swmgmt, sw_config)
                    .map_err(|e| state::StateFileError::Corrupt(e.to_string()))?;
                let sc: SoftwareComponents = serde_json::from_str(&s.swcomp)
                    .map_err(|e| state::StateFileError::Corrupt(e.to_string()))?;
                (sm, sc, s.bindings, effects)
            }
            None => (
                SoftwareManagement::new(sw_config),
                SoftwareComponents::new(),
                BTreeMap::new(),
                Vec::new(),
            ),
        };
        let mut swmgmt = swmgmt;
        let mut swcomp = swcomp;
        let mut bindings = bindings;
        let adopted = adopt_unmanaged(&runtime, &mut swmgmt, &mut swcomp, &mut bindings);
        if swmgmt.instances().is_empty() {
            // Servers that manage a single package (ThingsBoard, lwm2m-node-lib)
            // expect /9/0 to exist; later packages go to Created instances.
            let _ = swmgmt.create(Some(0), Vec::new());
        }
        let swmgmt = Shared::new(swmgmt);
        let swcomp = Shared::new(swcomp);
        let device = LiveDevice::new(
            DeviceObject::new(DeviceInfo {
                model: config.model.clone(),
                serial: config.serial.clone(),
                firmware_version: env!("CARGO_PKG_VERSION").into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                device_type: "wasmdm host".into(),
            }),
            unix_now,
            memory_free_kib,
        );
        let mut engine_config = EngineConfig::new(config.endpoint.clone(), server, seed());
        engine_config.lifetime = config.lifetime;
        engine_config.register_formats = config.register_content_formats;
        engine_config.push_limit = Some(config.max_package_bytes);
        let objects: Vec<Box<dyn Object>> = vec![
            Box::new(security),
            Box::new(Server::new(1, u64::from(config.lifetime))),
            Box::new(device),
            Box::new(swmgmt.clone()),
            Box::new(swcomp.clone()),
        ];
        let client = Client::new(engine_config, objects);
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let mut driver = Driver {
            config,
            runtime,
            tasks,
            transport,
            client,
            swmgmt,
            swcomp,
            state_file,
            bindings,
            work_tx,
            work_rx,
            coap_downloads: BTreeMap::new(),
            coap_download_peers: BTreeMap::new(),
            open_deliveries: BTreeMap::new(),
            http_cancel: BTreeMap::new(),
            http_trust,
            reboot_requested: false,
        };
        if adopted {
            driver.persist()?;
        }
        // Work interrupted by a restart (a pull to resume, an integrity check
        // or install to redo) comes back as effects of the restored state.
        driver.carry_out(Instant::now(), restored_effects)?;
        driver.stop_unreported_activations();
        Ok(driver)
    }

    /// Stops components the runtime restarted although neither /9 nor /14
    /// says they are active: an Activate whose runtime record became durable
    /// while ours was still being written (see [`Driver::carry_out`]), cut
    /// short by a crash before it was answered. The server knows them
    /// inactive, and that is what we persisted: the runtime follows.
    fn stop_unreported_activations(&self) {
        let sm = self.swmgmt.lock();
        let sc = self.swcomp.lock();
        for (&iid, name) in &self.bindings {
            let Some(p) = sm.instance(iid) else { continue };
            if p.update_state != wasmdm_proto::swmgmt::UpdateState::Installed
                || p.activation
                || p.activation_target.is_some()
            {
                continue;
            }
            let Ok(status) = self.runtime.status(name) else {
                continue;
            };
            for c in status.components.iter().filter(|c| c.active) {
                let reported = sc.instances().into_iter().any(|id| {
                    sc.component(id).is_some_and(|k| {
                        k.owner == iid
                            && k.identity == c.id
                            && (k.active || k.activation_target.is_some())
                    })
                });
                if reported {
                    continue;
                }
                warn!(package = %name, component = %c.id, "active in the runtime but not reported: stopping it");
                let (runtime, name, id) = (self.runtime.clone(), name.clone(), c.id.clone());
                self.tasks.spawn(async move {
                    if let Err(e) = runtime.deactivate(&name, Some(&id)).await {
                        warn!(package = %name, component = %id, "cannot stop: {e}");
                    }
                });
            }
        }
    }

    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), DeviceError> {
        let mut buf = vec![0u8; 2048];
        self.client.start(Instant::now());
        self.flush().await?;
        tokio::pin!(shutdown);
        let mut events = self.runtime.subscribe();
        // One timer, moved only when the engine's deadline changes (not a new
        // timer entry per datagram).
        let idle = tokio::time::Instant::now() + Duration::from_secs(365 * 86400);
        let timer = tokio::time::sleep_until(idle);
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let deadline = self.poll_timeout().map(tokio::time::Instant::from_std);
            if deadline != armed {
                timer.as_mut().reset(deadline.unwrap_or(idle));
                armed = deadline;
            }
            tokio::select! {
                received = self.transport.socket.recv_from(&mut buf) => {
                    // An ICMP "port unreachable" for an earlier send surfaces
                    // here on Linux; the engine's retransmission handles it.
                    let Some((n, from)) = transient(received)? else { continue };
                    let bytes = buf.get(..n).unwrap_or_default();
                    self.transport.inbound(Instant::now(), from, bytes, &mut self.client);
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.handle_timeout(Instant::now());
                }
                Some(work) = self.work_rx.recv() => self.on_work(Instant::now(), work)?,
                event = events.recv() => {
                    if let Ok(event) = event {
                        debug!(package = %event.package, component = %event.component, state = ?event.state, "component state");
                    }
                }
                () = &mut shutdown => break,
            }
            self.flush().await?;
            if self.reboot_requested {
                info!("rebooting: stopping the apps and de-registering first");
                break;
            }
        }
        info!("de-registering");
        self.client.deregister(Instant::now());
        let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            self.flush_transmits().await?;
            if self.drain_events(Instant::now())?.1 {
                break;
            }
            let deadline = self.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                received = self.transport.socket.recv_from(&mut buf) => {
                    if let Some((n, from)) = transient(received)? {
                        let bytes = buf.get(..n).unwrap_or_default();
                        self.transport.inbound(Instant::now(), from, bytes, &mut self.client);
                    }
                }
                _ = sleep_until(deadline) => self.handle_timeout(Instant::now()),
                _ = tokio::time::sleep_until(give_up) => break,
            }
        }
        Ok(())
    }

    /// Sends what the engine queued and handles its events until both are
    /// drained (handling an event can queue more datagrams and events).
    async fn flush(&mut self) -> Result<(), DeviceError> {
        loop {
            self.flush_transmits().await?;
            let (handled, _) = self.drain_events(Instant::now())?;
            let failed = self.fail_pulls_of_failed_file_servers(Instant::now())?;
            if handled == 0 && !failed {
                return Ok(());
            }
        }
    }

    /// A `coaps://` pull whose file server refused or never finished the
    /// handshake fails at once with 52 (its retries would only wait for CoAP
    /// to give up). Returns whether any did.
    fn fail_pulls_of_failed_file_servers(&mut self, now: Instant) -> Result<bool, DeviceError> {
        let failed = self.transport.take_failed_file_servers();
        self.coap_download_peers
            .retain(|id, _| self.coap_downloads.contains_key(id));
        let doomed: Vec<DownloadId> = self
            .coap_download_peers
            .iter()
            .filter(|(_, peer)| failed.contains(peer))
            .map(|(id, _)| *id)
            .collect();
        for id in &doomed {
            self.coap_download_peers.remove(id);
            self.client.cancel_download(now, *id);
            if let Some(iid) = self.coap_downloads.remove(id) {
                warn!(
                    instance = iid,
                    "CoAP download failed: no DTLS session with the file server"
                );
                self.fail_delivery(now, iid, UpdateResult::ConnectionLost)?;
            }
        }
        Ok(!doomed.is_empty())
    }

    async fn flush_transmits(&mut self) -> Result<(), DeviceError> {
        self.transport.flush(Instant::now(), &mut self.client).await;
        Ok(())
    }

    /// The engine's or the DTLS layer's next deadline.
    fn poll_timeout(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.transport.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.transport.handle_timeout(now, &mut self.client);
    }

    /// Handles engine events: how many, and whether de-registration completed.
    fn drain_events(&mut self, now: Instant) -> Result<(usize, bool), DeviceError> {
        let mut deregistered = false;
        let mut handled = 0;
        while let Some(event) = self.client.poll_event() {
            handled += 1;
            match event {
                Event::Registered { location } => {
                    info!(location = %location.join("/"), "registered")
                }
                Event::RegistrationFailed {
                    attempt,
                    code,
                    retry_in,
                } => {
                    // The server's code says why (4.00: it could not parse
                    // the Register, e.g. the root link's `ct`).
                    let code = code.map_or_else(|| "no answer".to_string(), |c| c.to_string());
                    warn!(attempt, %code, retry_in = ?retry_in, "registration failed");
                    self.transport.server_silent(now);
                }
                Event::Updated => debug!("registration updated"),
                Event::ServerSilent => self.transport.server_silent(now),
                Event::Deregistered => {
                    info!("de-registered");
                    deregistered = true;
                }
                Event::StoppedUnregistered => {
                    info!("stopped (never registered: nothing to de-register)");
                    deregistered = true;
                }
                Event::Effects { pending, effects } => match self.carry_out(now, effects) {
                    Ok(()) => self.client.complete(now, pending),
                    Err(e) => {
                        warn!("cannot carry out an operation: {e}");
                        self.client
                            .fail(now, pending, OpError::Internal(e.to_string()));
                    }
                },
                Event::Answered {
                    peer,
                    method,
                    path,
                    code,
                    continuation,
                } => {
                    // One line per LwM2M operation; the further blocks of a
                    // transfer (Block1 2.31, Block2 after the first) only at debug.
                    if continuation {
                        debug!(%peer, op = operation_name(&method), %path, %code, "block");
                    } else {
                        info!(%peer, op = operation_name(&method), %path, %code, "lwm2m");
                    }
                }
                Event::DownloadData {
                    id,
                    offset,
                    bytes,
                    more,
                    etag,
                } => self.on_coap_data(now, id, offset, &bytes, more, etag.as_deref())?,
                Event::DownloadFailed { id, error } => {
                    if let Some(iid) = self.coap_downloads.remove(&id) {
                        warn!(instance = iid, "CoAP download failed: {error}");
                        self.fail_delivery(now, iid, UpdateResult::ConnectionLost)?;
                    }
                }
            }
        }
        Ok((handled, deregistered))
    }

    /// Carries out effects in order; `Persist` is written before anything is answered.
    ///
    /// Except: an Execute Activate/Deactivate (of /9 or /14) asks for a
    /// `Persist` of its intent and the activation change, whose own durable
    /// record the runtime writes before it starts or stops anything. The
    /// change is started first, so the two durable writes overlap instead of
    /// following each other (the answer still waits for ours; the guest
    /// starts after the runtime's). Should the runtime's record land and ours
    /// not (a crash between them, before any answer), the restart stops what
    /// nothing reported active ([`Driver::stop_unreported_activations`]); in
    /// the other order the persisted intent re-issues the change.
    fn carry_out(&mut self, now: Instant, effects: Vec<Effect>) -> Result<(), DeviceError> {
        let effects = if effects.iter().any(is_activation_change)
            && effects
                .iter()
                .all(|e| *e == Effect::Persist || is_activation_change(e))
        {
            let (first, rest): (Vec<_>, Vec<_>) =
                effects.into_iter().partition(is_activation_change);
            first.into_iter().chain(rest).collect()
        } else {
            effects
        };
        for effect in effects {
            match effect {
                Effect::Persist => self.persist()?,
                Effect::RegistrationUpdate => self.client.trigger_update(now),
                // /3/0/4: answered first (the response is held until the
                // effects ran), then the loop stops and the host restarts.
                Effect::Reboot => self.reboot_requested = true,
                Effect::Disable { timeout_s } => {
                    warn!(timeout_s, "disable requested; not supported, ignored")
                }
                Effect::SwMgmt { instance, action } => self.swmgmt_action(now, instance, action)?,
                Effect::Component { instance, action } => self.component_action(instance, action),
            }
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), DeviceError> {
        let swmgmt = self
            .swmgmt
            .lock()
            .to_json()
            .map_err(|e| state::StateFileError::Corrupt(e.to_string()))?;
        let swcomp = serde_json::to_string(&*self.swcomp.lock())
            .map_err(|e| state::StateFileError::Corrupt(e.to_string()))?;
        self.state_file.save(&DeviceState {
            swmgmt,
            swcomp,
            bindings: self.bindings.clone(),
        })?;
        Ok(())
    }

    /// Feeds a transition's report back: notifications, then its effects.
    fn apply(
        &mut self,
        now: Instant,
        report: Result<Report, wasmdm_proto::swmgmt::SwMgmtError>,
    ) -> Result<(), DeviceError> {
        match report {
            Ok(report) => {
                self.sync_components();
                self.carry_out(now, report.effects)?;
                let mut changed = report.changed;
                changed.extend(self.swcomp.lock().take_changed());
                self.log_state_changes(&changed);
                self.client.resources_changed(now, &changed);
            }
            Err(e) => warn!("unexpected Software Management event: {e}"),
        }
        Ok(())
    }

    /// One info line per change of Update State, Update Result, Activation
    /// State or Status Reason (the values servers observe).
    fn log_state_changes(&self, changed: &[wasmdm_proto::model::Path]) {
        let sm = self.swmgmt.lock();
        for path in changed {
            let (Some(instance), Some(resource)) = (path.instance, path.resource) else {
                continue;
            };
            let name = match (path.object, resource) {
                (9, 7) => "update state",
                (9, 9) => "update result",
                (9, 12) => "activation state",
                (9, 16) => "status reason",
                _ => continue,
            };
            use wasmdm_proto::model::{ResourceValue, Value};
            let shown = match sm.read(instance, resource) {
                Ok(Some(ResourceValue::Single(Value::Integer(code)))) if resource == 9 => {
                    let name = UpdateResult::from_code(code)
                        .map(|r| r.name())
                        .unwrap_or("?");
                    format!("{code} ({name})")
                }
                Ok(Some(ResourceValue::Single(Value::Integer(v)))) => v.to_string(),
                Ok(Some(ResourceValue::Single(Value::Boolean(v)))) => u8::from(v).to_string(),
                Ok(Some(other)) => format!("{other:?}"),
                _ => continue,
            };
            info!(path = %path, "{name} -> {shown}");
        }
    }

    fn sync_components(&self) {
        let sm = self.swmgmt.lock();
        self.swcomp.lock().sync_owners(&sm);
    }

    fn swmgmt_action(
        &mut self,
        now: Instant,
        iid: u16,
        action: SwMgmtAction,
    ) -> Result<(), DeviceError> {
        if matches!(action, SwMgmtAction::StorePushed { .. }) {
            debug!(instance = iid, action = ?ActionName(&action), "software management");
        } else {
            info!(instance = iid, action = ?ActionName(&action), "software management");
        }
        let runtime = self.runtime.clone();
        let tx = self.work_tx.clone();
        let slot = slot(iid);
        match action {
            SwMgmtAction::StorePushed { offset, data, last } => {
                let stored = self.open_delivery(iid).and_then(|delivery| {
                    // A push cannot resume after a restart: no syncs before the last block.
                    delivery.set_checkpoints(false);
                    delivery.write_at(offset, &data)?;
                    if last {
                        delivery.sync(None)?;
                    }
                    Ok(())
                });
                if let Err(e) = stored {
                    return self.delivery_failed(now, iid, e);
                }
                if last {
                    self.open_deliveries.remove(&iid);
                    let report = self.swmgmt.lock().package_written(iid);
                    self.apply(now, report)?;
                }
            }
            SwMgmtAction::Download {
                uri,
                username,
                password,
            } => {
                if let Err(e) = self.start_download(now, iid, uri, username, password) {
                    return self.delivery_failed(now, iid, e);
                }
            }
            SwMgmtAction::CancelDelivery => {
                self.open_deliveries.remove(&iid);
                if let Some(flag) = self.http_cancel.remove(&iid) {
                    flag.store(true, Ordering::Relaxed);
                }
                let ids: Vec<_> = self
                    .coap_downloads
                    .iter()
                    .filter(|(_, i)| **i == iid)
                    .map(|(d, _)| *d)
                    .collect();
                for id in ids {
                    self.coap_downloads.remove(&id);
                    self.client.cancel_download(now, id);
                }
                self.discard_delivery(iid);
            }
            SwMgmtAction::VerifyIntegrity => {
                self.tasks.spawn(async move {
                    let result = runtime
                        .verify_delivery(&slot)
                        .await
                        .map(|info| (info.name, info.version))
                        .map_err(|e| {
                            // The reason may quote the package (a TOML error shows the
                            // line): one escaped line, so it cannot forge log lines.
                            let reason = e.to_string();
                            warn!(instance = iid, "package refused: {}", escape(&reason));
                            update_result(&e)
                        });
                    let _ = tx.send(Work::Verified { iid, result });
                });
            }
            SwMgmtAction::Install { .. } => {
                let expected = self
                    .swmgmt
                    .lock()
                    .instance(iid)
                    .map(|p| (p.pkg_name.clone(), p.pkg_version.clone()));
                if let Some(holder) = expected
                    .as_ref()
                    .and_then(|(name, _)| self.held_elsewhere(iid, name))
                {
                    warn!(
                        instance = iid,
                        package = %expected.as_ref().map(|e| escape(&e.0)).unwrap_or_default(),
                        "refused: the package is installed in /9/{holder}; uninstall it there first, \
                         or Uninstall(1) it there to upgrade it"
                    );
                    let _ = tx.send(Work::Installed {
                        iid,
                        result: Err(UpdateResult::InstallFailure),
                    });
                    return Ok(());
                }
                self.tasks.spawn(async move {
                    let result = match runtime.install(&slot).await {
                        // A restart between the runtime's commit (which consumes
                        // the delivery) and our INSTALLED record re-issues the
                        // Install: the package is there, so it succeeded.
                        Err(RuntimeError::NotDelivered(_))
                            if let Some(info) = already_installed(&runtime, expected.as_ref()) =>
                        {
                            Ok(info)
                        }
                        other => other.map_err(|e| {
                            let reason = e.to_string();
                            warn!(instance = iid, "install failed: {}", escape(&reason));
                            update_result(&e)
                        }),
                    };
                    // A successful install consumed the delivery slot.
                    let _ = tx.send(Work::Installed { iid, result });
                });
            }
            SwMgmtAction::Remove | SwMgmtAction::PrepareForUpdate => {
                let for_update = matches!(action, SwMgmtAction::PrepareForUpdate);
                self.open_deliveries.remove(&iid);
                self.discard_delivery(iid);
                let name = if for_update {
                    self.bindings.get(&iid).cloned()
                } else {
                    self.bindings.remove(&iid)
                };
                if !for_update {
                    self.persist()?;
                }
                self.tasks.spawn(async move {
                    let ok = match name {
                        Some(name) if for_update => runtime.prepare_update(&name).await.is_ok(),
                        Some(name) => runtime.uninstall(&name).await.is_ok(),
                        None => true,
                    };
                    let _ = tx.send(Work::Uninstalled { iid, ok });
                });
            }
            SwMgmtAction::Activate | SwMgmtAction::Deactivate => {
                let activate = matches!(action, SwMgmtAction::Activate);
                let Some(name) = self.bindings.get(&iid).cloned() else {
                    return Ok(());
                };
                self.tasks.spawn(async move {
                    let result = if activate {
                        runtime.activate(&name, None).await
                    } else {
                        runtime.deactivate(&name, None).await
                    };
                    let active = match result {
                        Ok(()) => activate,
                        Err(e) => {
                            warn!(package = %name, "activation change failed: {e}");
                            !activate
                        }
                    };
                    let _ = tx.send(Work::Activated { iid, active });
                });
            }
        }
        Ok(())
    }

    fn component_action(&mut self, id: u16, action: ComponentAction) {
        let Some((owner, identity)) = self
            .swcomp
            .lock()
            .component(id)
            .map(|c| (c.owner, c.identity.clone()))
        else {
            return;
        };
        let Some(name) = self.bindings.get(&owner).cloned() else {
            return;
        };
        let runtime = self.runtime.clone();
        let tx = self.work_tx.clone();
        let activate = matches!(action, ComponentAction::Activate);
        self.tasks.spawn(async move {
            let result = if activate {
                runtime.activate(&name, Some(&identity)).await
            } else {
                runtime.deactivate(&name, Some(&identity)).await
            };
            let active = if result.is_ok() { activate } else { !activate };
            let _ = tx.send(Work::ComponentActivated { id, active });
        });
    }

    fn start_download(
        &mut self,
        now: Instant,
        iid: u16,
        uri: String,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<(), DeviceError> {
        let delivery = self.runtime.delivery(&slot(iid))?;
        let coap = match uri.split_once("://") {
            Some(("coap", rest)) => Some((rest, 5683, false)),
            Some(("coaps", rest)) => Some((rest, 5684, true)),
            _ => None,
        };
        if let Some((rest, default_port, secure)) = coap {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let authority = if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:{default_port}")
            };
            let Some(peer) = std::net::ToSocketAddrs::to_socket_addrs(&authority)
                .ok()
                .and_then(|mut a| a.next())
            else {
                let report = self
                    .swmgmt
                    .lock()
                    .download_failed(iid, UpdateResult::InvalidUri);
                return self.apply(now, report);
            };
            // A coaps:// file server is pulled from with the server
            // account's credentials (the server itself: the same session).
            if secure {
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(h, _)| h)
                    .trim_matches(['[', ']']);
                if let Err(e) = self.transport.add_dtls_peer(peer, host) {
                    warn!(instance = iid, "cannot pull over coaps: {e}");
                    let report = self
                        .swmgmt
                        .lock()
                        .download_failed(iid, UpdateResult::ConnectionLost);
                    return self.apply(now, report);
                }
            }
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let segments = path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let query = query
                .split('&')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            // Resume at the first block not yet stored (1024-byte blocks),
            // only with the server's ETag stored with those bytes: without
            // one nothing ties them to what it sends now (RFC 7959 §2.4),
            // so the pull starts over instead of splicing.
            let etag = delivery.resume_tag().and_then(|t| hex::decode(t).ok());
            let start_block = match etag {
                Some(_) => u32::try_from(delivery.len() / 1024).unwrap_or(0),
                None => 0,
            };
            let id = self
                .client
                .start_download(now, peer, segments, query, start_block, etag);
            self.coap_downloads.insert(id, iid);
            self.coap_download_peers.insert(id, peer);
            return Ok(());
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.http_cancel.insert(iid, cancel.clone());
        let tx = self.work_tx.clone();
        let max_bytes = self.config.max_package_bytes;
        let trust = self.http_trust.clone();
        self.tasks.spawn_blocking(move || {
            let mut delivery = delivery;
            let resume = download::ResumePoint {
                offset: delivery.len(),
                etag: delivery.resume_tag().map(str::to_owned),
            };
            info!(instance = iid, offset = resume.offset, "pulling over HTTP");
            let mut sink = DeliverySink(&mut delivery);
            let mut started_tag: Option<String> = None;
            let credentials = username.as_deref().zip(password.as_deref());
            let options = download::HttpOptions {
                max_bytes,
                trust,
                ..Default::default()
            };
            let result = download::http_download(
                &uri,
                credentials,
                &resume,
                &options,
                &cancel,
                &mut sink,
                download::Observer {
                    on_start: &mut |start| started_tag = start.etag.clone(),
                    on_progress: &mut |_| {},
                },
            );
            let result = result.and_then(|total| {
                delivery
                    .sync(started_tag.as_deref())
                    .map(|()| total)
                    .map_err(|e| download::DownloadError::Storage(e.to_string()))
            });
            let _ = tx.send(Work::HttpDone { iid, result });
        });
        Ok(())
    }

    /// SwMgmt §5.1.2.2: after a download error "the faulty package is
    /// removed". (Only a restart resumes a partial download: the state is
    /// still DOWNLOAD STARTED then.)
    fn discard_delivery(&self, iid: u16) {
        // Synchronous: the next delivery into this instance may start with
        // the very next request and must find the slot empty.
        if let Err(e) = self.runtime.discard_delivery_now(&slot(iid)) {
            warn!(instance = iid, "cannot remove the package data: {e}");
        }
    }

    /// Another /9 instance that holds package `name`, unless it was prepared
    /// with Uninstall(1) (then an Install here is its upgrade). One package
    /// name lives in one /9 instance: a second copy would be the same
    /// software in the runtime, which uninstalling either would remove from
    /// under the other.
    fn held_elsewhere(&self, iid: u16, name: &str) -> Option<u16> {
        let sm = self.swmgmt.lock();
        self.bindings
            .iter()
            .filter(|(j, n)| **j != iid && n.as_str() == name)
            .map(|(j, _)| *j)
            .find(|j| !sm.instance(*j).is_some_and(|p| p.for_update))
    }

    /// The package could not be stored (disk full, unwritable data dir):
    /// back to INITIAL with Update Result 50 (SwMgmt §5.1.2.3: "Not enough
    /// storage"), persisted, instead of staying in DOWNLOAD STARTED where
    /// every new Package URI would get 4.05. The request that caused it is
    /// answered with the error.
    fn delivery_failed(
        &mut self,
        now: Instant,
        iid: u16,
        e: DeviceError,
    ) -> Result<(), DeviceError> {
        warn!(instance = iid, "cannot store the package: {e}");
        self.fail_delivery(now, iid, UpdateResult::NotEnoughStorage)?;
        Err(e)
    }

    /// A delivery into `iid` failed: its bytes go (SwMgmt §5.1.2.2: "the
    /// faulty package is removed") and /9 returns to INITIAL with `result`.
    fn fail_delivery(
        &mut self,
        now: Instant,
        iid: u16,
        result: UpdateResult,
    ) -> Result<(), DeviceError> {
        self.open_deliveries.remove(&iid);
        self.discard_delivery(iid);
        let report = self.swmgmt.lock().download_failed(iid, result);
        self.apply(now, report)
    }

    /// The delivery of `iid`, opened once and kept for the following blocks.
    fn open_delivery(&mut self, iid: u16) -> Result<&mut crate::runtime::Delivery, DeviceError> {
        Ok(match self.open_deliveries.entry(iid) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(self.runtime.delivery(&slot(iid))?)
            }
        })
    }

    fn on_coap_data(
        &mut self,
        now: Instant,
        id: DownloadId,
        offset: u64,
        bytes: &[u8],
        more: bool,
        etag: Option<&[u8]>,
    ) -> Result<(), DeviceError> {
        let Some(&iid) = self.coap_downloads.get(&id) else {
            return Ok(());
        };
        let delivery = self.open_delivery(iid)?;
        // Pulled bytes count once a checkpoint synced them: no write per block.
        delivery.set_buffered(true);
        if let Err(e) = delivery.write_at(offset, bytes) {
            warn!(instance = iid, "cannot store downloaded data: {e}");
            self.coap_downloads.remove(&id);
            self.client.cancel_download(now, id);
            return self.fail_delivery(now, iid, update_result(&e));
        }
        // The server's ETag becomes durable with the bytes, at the first
        // checkpoint (no sync of its own: a blocking fsync here held up the
        // next block by milliseconds): a resume after a restart checks the
        // server's answers against it and a changed package fails instead
        // of being spliced onto the old bytes. (A stored tag that differs
        // from the server's, or that the server no longer sends, fails the
        // resume in the engine, and without one the pull starts at block 0:
        // only a missing one needs setting.)
        if let (true, Some(tag)) = (more, etag)
            && let Some(delivery) = self.open_deliveries.get_mut(&iid)
            && delivery.resume_tag().is_none()
        {
            delivery.set_resume_tag(Some(&hex::encode(tag)));
        }
        if !more {
            self.coap_downloads.remove(&id);
            if let Some(mut delivery) = self.open_deliveries.remove(&iid) {
                delivery.sync(None)?;
            }
            let report = self.swmgmt.lock().package_written(iid);
            self.apply(now, report)?;
        }
        Ok(())
    }

    fn on_work(&mut self, now: Instant, work: Work) -> Result<(), DeviceError> {
        let report = match work {
            Work::HttpDone { iid, result } => {
                self.http_cancel.remove(&iid);
                match result {
                    Ok(total) => {
                        info!(instance = iid, bytes = total, "download complete");
                        self.swmgmt.lock().package_written(iid)
                    }
                    Err(download::DownloadError::Cancelled) => return Ok(()),
                    Err(e) => {
                        warn!(instance = iid, "download failed: {e}");
                        self.discard_delivery(iid);
                        let code = match e {
                            download::DownloadError::InvalidUri(_) => UpdateResult::InvalidUri,
                            download::DownloadError::Storage(_) => UpdateResult::NotEnoughStorage,
                            _ => UpdateResult::ConnectionLost,
                        };
                        self.swmgmt.lock().download_failed(iid, code)
                    }
                }
            }
            Work::Verified { iid, result } => self.swmgmt.lock().integrity_checked(iid, result),
            Work::Installed { iid, result } => match result {
                Ok(info) => {
                    info!(instance = iid, package = %info.name, version = %info.version, "installed");
                    // An upgrade of software another instance kept after
                    // Uninstall(1): it lives here now, not there.
                    let moved: Vec<u16> = self
                        .bindings
                        .iter()
                        .filter(|(j, n)| **j != iid && **n == info.name)
                        .map(|(j, _)| *j)
                        .collect();
                    for j in moved {
                        self.bindings.remove(&j);
                        let report = self.swmgmt.lock().released(j);
                        self.apply(now, report)?;
                        info!(
                            instance = j,
                            moved_to = iid,
                            "package moved to another instance by its upgrade"
                        );
                    }
                    self.bindings.insert(iid, info.name.clone());
                    // The package's components become /14 instances linked from /9/x/17.
                    let mut ids = Vec::new();
                    {
                        let mut sc = self.swcomp.lock();
                        for (component, version) in &info.components {
                            let active = info.active.contains(component);
                            match sc.add(iid, component.clone(), version.clone(), active) {
                                Ok(id) => ids.push(id),
                                Err(e) => warn!("cannot add /14 instance: {e}"),
                            }
                        }
                    }
                    let installed = Installed {
                        name: info.name,
                        version: info.version,
                        components: ids,
                        active: !info.active.is_empty(),
                    };
                    self.swmgmt.lock().install_finished(iid, Ok(installed))
                }
                Err(code) => self.swmgmt.lock().install_finished(iid, Err(code)),
            },
            Work::Uninstalled { iid, ok } => self.swmgmt.lock().uninstall_finished(iid, ok),
            Work::Activated { iid, active } => self.swmgmt.lock().activation_finished(iid, active),
            Work::ComponentActivated { id, active } => {
                let _ = self.swcomp.lock().activation_finished(id, active);
                self.persist()?;
                let changed = self.swcomp.lock().take_changed();
                self.client.resources_changed(now, &changed);
                return Ok(());
            }
        };
        self.apply(now, report)
    }
}

/// An Activate or Deactivate of a package (/9) or component (/14).
fn is_activation_change(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::SwMgmt {
            action: SwMgmtAction::Activate | SwMgmtAction::Deactivate,
            ..
        } | Effect::Component { .. }
    )
}

/// The installed package matching the name and version a /9 instance
/// delivered, described as the install that produced it.
fn already_installed(
    runtime: &Runtime,
    expected: Option<&(String, String)>,
) -> Option<crate::runtime::InstalledInfo> {
    let (name, version) = expected?;
    let status = runtime
        .status(name)
        .ok()
        .filter(|s| s.version == *version)?;
    Some(crate::runtime::InstalledInfo {
        name: status.name,
        version: status.version,
        components: status
            .components
            .iter()
            .map(|c| (c.id.clone(), c.version.clone()))
            .collect(),
        upgraded_from: None,
        active: status
            .components
            .iter()
            .filter(|c| c.active)
            .map(|c| c.id.clone())
            .collect(),
    })
}

/// Packages installed outside LwM2M (`wasmdm install` on the data
/// directory) get a /9 instance in INSTALLED and /14 instances for their
/// components. Returns whether anything was adopted.
fn adopt_unmanaged(
    runtime: &Runtime,
    swmgmt: &mut SoftwareManagement,
    swcomp: &mut SoftwareComponents,
    bindings: &mut BTreeMap<u16, String>,
) -> bool {
    let mut adopted = false;
    for package in runtime.list() {
        if bindings.values().any(|name| *name == package.name) {
            continue;
        }
        // A /9 instance that delivered this package and was killed between
        // the runtime's install commit and its own INSTALLED record: its
        // re-issued Install binds it there (one name, one instance).
        let delivered_here = swmgmt.instances().into_iter().any(|i| {
            swmgmt.instance(i).is_some_and(|p| {
                p.pkg_name == package.name
                    && p.update_state == wasmdm_proto::swmgmt::UpdateState::Delivered
            })
        });
        if delivered_here {
            continue;
        }
        let active = package.components.iter().any(|c| c.active);
        let Some(iid) = swmgmt.adopt(Installed {
            name: package.name.clone(),
            version: package.version.clone(),
            components: Vec::new(),
            active,
        }) else {
            warn!(package = %package.name, "no free /9 instance to report this package in");
            continue;
        };
        let ids: Vec<u16> = package
            .components
            .iter()
            .filter_map(|c| {
                swcomp
                    .add(iid, c.id.clone(), c.version.clone(), c.active)
                    .ok()
            })
            .collect();
        swmgmt.set_component_links(iid, ids);
        swcomp.sync_owners(swmgmt);
        info!(instance = iid, package = %package.name, "reporting a package installed outside LwM2M");
        bindings.insert(iid, package.name);
        adopted = true;
    }
    adopted
}

/// The Update Result a runtime error reports (SwMgmt §6 resource 9); the one
/// place where runtime errors become LwM2M result codes.
fn update_result(e: &RuntimeError) -> UpdateResult {
    UpdateResult::from_code(e.update_result_hint()).unwrap_or(UpdateResult::DeviceDefined)
}

struct DeliverySink<'a>(&'a mut crate::runtime::Delivery);

impl download::PackageSink for DeliverySink<'_> {
    fn begin(&mut self, start: &download::ResumePoint) -> std::io::Result<()> {
        if start.offset == 0 {
            // A fresh (or changed) entity: drop what was stored.
            self.0.write_at(0, &[]).map_err(std::io::Error::other)?;
        }
        // The tag is durable before the first byte, so a kill at any point
        // resumes with Range + If-Range instead of starting over.
        self.0
            .sync(start.etag.as_deref())
            .map_err(std::io::Error::other)
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.0
            .write_at(offset, bytes)
            .map_err(std::io::Error::other)
    }
}

struct ActionName<'a>(&'a SwMgmtAction);

impl std::fmt::Debug for ActionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log pushed bytes or credentials.
        match self.0 {
            SwMgmtAction::StorePushed { offset, data, last } => {
                write!(
                    f,
                    "StorePushed {{ offset: {offset}, len: {}, last: {last} }}",
                    data.len()
                )
            }
            SwMgmtAction::Download { uri, .. } => {
                write!(f, "Download {{ uri: {:?} }}", download::for_log(uri))
            }
            other => write!(f, "{other:?}"),
        }
    }
}

/// The CoAP method of a request, named.
fn operation_name(method: &str) -> &'static str {
    match method {
        "0.01" => "GET",
        "0.02" => "POST",
        "0.03" => "PUT",
        "0.04" => "DELETE",
        "0.05" => "FETCH",
        _ => "other",
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The host clock in Unix seconds, for /3/0/13.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// MemAvailable from /proc/meminfo, for /3/0/10.
fn memory_free_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
