//! `wasmdm device`: the tokio driver of the sans-IO LwM2M client engine.
//!
//! One task owns the UDP socket and the engine; it feeds datagrams and timer
//! expiries in, sends what the engine wants sent, and carries out the
//! effects objects ask for. Slow work (download, verify, install, activate)
//! runs on spawned tasks that report back through a channel as [`Work`], so
//! the protocol keeps answering while a package compiles.

mod apps;
mod bootstrap;
pub mod config;
pub mod download;
mod packages;
pub mod security;
mod server_settings;
mod shared;
mod socket;
mod state;
mod transport;

use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};
use config::{ConfigError, DeviceConfig};
use packages::adopt_unmanaged;
use server_settings::ServerSettings;
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
    #[error("no usable server account and no usable bootstrap account")]
    NoAccount,
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
    // Credentials are read and checked before anything starts: a key that
    // cannot be used is a configuration error, not a handshake to retry.
    let provisioning = bootstrap::Provisioning::load(&config)?;
    // Checked before anything starts: a CA file that cannot be used is a
    // configuration error, not a reason to trust something else.
    let http_trust = config.download_trust()?;
    let mut rt_config = RuntimeConfig::new(&config.data_dir);
    rt_config.max_package_bytes = config.max_package_bytes;
    rt_config.engine.max_instances = config.max_instances;
    rt_config.engine.max_memory_per_instance = config.max_instance_memory;
    rt_config.engine.memory_reservation = config.memory_reservation;
    rt_config.engine.compiler = config.compiler;
    rt_config.engine.restart_when_optimised = config.restart_when_optimised;
    rt_config.engine.code_loading = config.code_loading;
    for key in &config.native_code_keys {
        let key = wasmdm_package::signing::load_public_key(key)
            .map_err(|e| DeviceError::Runtime(RuntimeError::Package(e)))?;
        rt_config.engine.native_code_keys.push(key);
    }
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
    info!(endpoint = %config.endpoint, local = %socket.local_addr()?, "wasmdm device starting");
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
                provisioning,
                http_trust,
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
    mut provisioning: bootstrap::Provisioning,
    http_trust: download::TlsTrust,
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
        tokio::pin!(stop);
        // With no usable server account the device bootstraps first.
        let Some((transport, active, server)) =
            bootstrap::connect(socket, &config, &mut provisioning, stop.as_mut()).await?
        else {
            return Ok(false);
        };
        info!(server = %provisioning.describe(Some(&active)), "server account");
        let mut device = Driver::new(
            config,
            active,
            provisioning,
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
    /// /1 as the client serves it, and as it was configured or provisioned
    /// (kept across restarts: `server_settings.rs`).
    server: Shared<Server>,
    server_base: Server,
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
    /// Accounts and when to bootstrap (`bootstrap.rs`).
    provisioning: bootstrap::Provisioning,
    /// The objects apps serve (`apps.rs`).
    apps: apps::Apps,
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
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: DeviceConfig,
        active: bootstrap::Active,
        provisioning: bootstrap::Provisioning,
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
        let mut saved = state_file.load()?;
        let server_settings = ServerSettings::restore(
            saved.as_mut().and_then(|s| s.server.take()),
            active.server.clone(),
        );
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
        // Core 1.1 §6.2.1.1: /1/x/18 Communication Retry Timer (default 60 s).
        engine_config.retry_base =
            Duration::from_secs(active.server.retry_policy().retry_timer.max(1));
        let server_object = Shared::new(server_settings.current);
        let objects: Vec<Box<dyn Object>> = vec![
            Box::new(active.security),
            Box::new(server_object.clone()),
            Box::new(device),
            Box::new(swmgmt.clone()),
            Box::new(swcomp.clone()),
            // /26500: what this engine accepts, for servers that precompile.
            Box::new(wasmdm_proto::objects::engine::Engine::new(
                runtime.engine_info(),
            )),
        ];
        let client = Client::new(engine_config, objects);
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let apps = apps::Apps::new(Duration::from_millis(config.app_request_timeout_ms));
        let mut driver = Driver {
            apps,
            config,
            runtime,
            tasks,
            transport,
            client,
            swmgmt,
            swcomp,
            server: server_object,
            server_base: server_settings.base,
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
            provisioning,
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
        let mut app_events = self.runtime.app_object_events();
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
                Some(event) = app_events.recv() => self.apps.on_event(&mut self.client, Instant::now(), event),
                Some(answer) = self.apps.answers_rx.recv() => self.apps.answered(&mut self.client, Instant::now(), answer),
                event = events.recv() => {
                    if let Ok(event) = event {
                        debug!(package = %event.package, component = %event.component, state = ?event.state, "component state");
                    }
                }
                () = &mut shutdown => break,
            }
            self.flush().await?;
            if self.provisioning.due() {
                if !self.rebootstrap(shutdown.as_mut()).await? {
                    break;
                }
                self.flush().await?;
            }
            if self.reboot_requested {
                info!("rebooting: stopping the apps and de-registering first");
                break;
            }
        }
        if self.client.is_registered() {
            info!("de-registering");
        }
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
                    self.provisioning.registered();
                    info!(location = %location.join("/"), "registered")
                }
                Event::RegistrationFailed {
                    attempt,
                    code,
                    retry_in,
                } => {
                    // The server's code says why (4.00: it could not parse
                    // the Register, e.g. the root link's `ct`).
                    let code = code
                        .map_or_else(|| "no answer".to_string(), |c| format!("{c} {}", c.name()));
                    warn!(attempt, %code, retry_in = ?retry_in, "registration failed");
                    self.transport.server_silent(now);
                    self.provisioning.register_failed();
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
                Event::Effects { pending, effects } if apps::is_app_request(&effects) => {
                    // A Write-Composite may touch host resources as well as
                    // an app's: their effects (Persist, Update) are carried
                    // out first, then the app answers for the response.
                    let (app, host): (Vec<_>, Vec<_>) = effects
                        .into_iter()
                        .partition(|e| matches!(e, Effect::App { .. }));
                    match self.carry_out(now, host) {
                        Ok(()) => self.apps.request(&self.runtime, &self.tasks, pending, app),
                        Err(e) => {
                            warn!("cannot carry out an operation: {e}");
                            self.client
                                .fail(now, pending, OpError::Internal(e.to_string()));
                        }
                    }
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
                Effect::BootstrapRequest => self.bootstrap_requested(),
                Effect::SwMgmt { instance, action } => self.swmgmt_action(now, instance, action)?,
                Effect::Component { instance, action } => self.component_action(instance, action),
                // Routed to the app before carry_out (apps.rs); never reaches here.
                Effect::App { path, .. } => {
                    warn!(%path, "app request without an app");
                }
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
            server: Some(ServerSettings {
                base: self.server_base.clone(),
                current: self.server.lock().clone(),
            }),
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

/// The CoAP method of a request, named.
fn operation_name(method: &str) -> &'static str {
    match method {
        "0.01" => "GET",
        "0.02" => "POST",
        "0.03" => "PUT",
        "0.04" => "DELETE",
        "0.05" => "FETCH",
        "0.07" => "iPATCH",
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
