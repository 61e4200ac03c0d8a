//! The tokio driver: one task owns the sockets (through [`ServerTransport`]: plain CoAP and DTLS), the CoAP message layer,
//! the registry, observations and running campaigns; the HTTP API talks to
//! it through [`Command`]s. Everything it learns is written to the store.

mod campaigns;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};

use tokio::sync::{mpsc, oneshot};
use wasmdm_proto::coap::block::{BlockOpt, block2_window};
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::coap::{Endpoint, EndpointEvent, ExchangeId, InboundRequest, Params};
use wasmdm_proto::model::Path;

use crate::campaign::{Action, CAMPAIGN_OBSERVED, Campaign, CampaignStatus, Input, Request};
use crate::core::access::{AccessPolicy, PeerAuth};
use crate::core::block1::{Block1Sender, Block1Step, DEFAULT_SZX};
use crate::core::composite;
use crate::core::dm::{self, DmFailure, DmOp, DmReply};
use crate::core::observe::Observations;
use crate::core::registry::{Registry, RegistryEvent, RegistryLimits};
use crate::store::{Batch, DEVICES, DeviceRecord, FILES, SoftwareFile, Store};
use crate::transport::{ServerTransport, Turn, pump};

/// Current Unix time in ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Latest notified values per endpoint, path text -> JSON value (read by the API).
pub type Notified =
    Arc<std::sync::Mutex<HashMap<String, std::collections::BTreeMap<String, serde_json::Value>>>>;

/// Result of a DM request for the API.
pub type DmResult = Result<DmReply, DmFailure>;

/// Requests from the HTTP API to the driver task.
#[derive(Debug)]
pub enum Command {
    /// Run one DM operation on a registered device.
    Dm {
        /// Device.
        endpoint: String,
        /// Operation.
        op: DmOp,
        /// Where the answer goes.
        reply: oneshot::Sender<DmResult>,
    },
    /// Start (or adopt) a campaign.
    StartCampaign(Box<Campaign>),
    /// Cancel a campaign.
    Cancel(String, oneshot::Sender<bool>),
    /// Retry failed devices of a campaign.
    Retry(String, oneshot::Sender<bool>),
    /// Read a registered device's engine (/26500/0), keep it in its record,
    /// and answer it (`None`: no usable report).
    ReadEngine {
        /// Device.
        endpoint: String,
        /// Where the engine goes.
        reply: oneshot::Sender<Option<crate::precompile::DeviceEngine>>,
    },
}

/// What an outgoing exchange is for.
#[derive(Debug)]
enum Purpose {
    /// An API request.
    Api(oneshot::Sender<DmResult>),
    /// A campaign request.
    Campaign {
        id: String,
        endpoint: String,
        tag: u64,
    },
    /// An observation.
    Observe,
    /// The Read of a device's engine (/26500/0) after it registered, or
    /// for a campaign that prepares (which gets the engine too).
    Engine(
        String,
        Option<oneshot::Sender<Option<crate::precompile::DeviceEngine>>>,
    ),
}

#[derive(Debug)]
struct Pending {
    endpoint: String,
    path: Path,
    /// Format assumed for an unlabelled answer (40 for Discover).
    default_format: Option<u16>,
    purpose: Purpose,
    /// Block1 push in progress.
    block1: Option<Block1Sender>,
    /// Block2 body collected so far, with the request to repeat.
    block2: Option<(Packet, Vec<u8>)>,
    /// The request of a composite operation: its answer names full paths,
    /// and a Block2 continuation repeats it (RFC 8132 §2.3.2).
    composite: Option<Packet>,
}

/// How often expired software files are purged.
const PURGE_PERIOD_MS: u64 = 1_000;

/// Largest Block2 body the server collects (bounds memory per read).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The driver state.
pub struct Driver {
    transport: ServerTransport,
    /// Who may register as which endpoint.
    policy: AccessPolicy,
    /// DTLS sessions to end once this turn's datagrams are out (de-registered).
    closing: Vec<std::net::SocketAddr>,
    endpoint: Endpoint,
    registry: Registry,
    observations: Observations,
    pending: HashMap<ExchangeId, Pending>,
    campaigns: HashMap<String, Campaign>,
    store: Arc<Store>,
    /// Store writes of the current turn, committed before its datagrams are sent.
    batch: Batch,
    /// Software files being pushed, shared by every push of the same file
    /// and freed when the last one ends (CoAP pulls read blocks from disk).
    files: HashMap<String, std::sync::Weak<Vec<u8>>>,
    notified: Notified,
    start: Instant,
    last_purge: u64,
}

impl Turn for Driver {
    fn parts(&mut self) -> (&mut Endpoint, &mut ServerTransport) {
        (&mut self.endpoint, &mut self.transport)
    }

    /// Commits the turn's store writes (one transaction).
    fn commit(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let n = batch.len();
        if let Err(e) = self.store.commit(batch) {
            tracing::warn!("store {n} documents: {e}");
        }
    }

    fn event(&mut self, ev: EndpointEvent) {
        match ev {
            EndpointEvent::Request(req) => self.inbound(req),
            EndpointEvent::Response { id, packet } => self.response(id, packet),
            EndpointEvent::Timeout { id } | EndpointEvent::Reset { id } => {
                self.observations.remove(id);
                if let Some(p) = self.pending.remove(&id) {
                    self.complete(p, Err(DmFailure::NoResponse));
                }
            }
            EndpointEvent::Acked { .. } => {}
        }
    }

    fn take_closing(&mut self) -> Vec<std::net::SocketAddr> {
        std::mem::take(&mut self.closing)
    }
}

impl Driver {
    /// Loads registrations and running campaigns from the store.
    pub fn new(
        transport: ServerTransport,
        policy: AccessPolicy,
        registry_limits: RegistryLimits,
        store: Arc<Store>,
        notified: Notified,
        params: Params,
        seed: u64,
    ) -> Result<Driver, crate::store::StoreError> {
        // Registration locations must be unguessable: not from `seed`
        // (time and port), from the OS.
        let mut location_seed = [0u8; 8];
        if getrandom::fill(&mut location_seed).is_err() {
            tracing::warn!("no OS randomness for registration locations: using the clock");
            location_seed = (seed ^ unix_ms().rotate_left(32)).to_le_bytes();
        }
        let mut registry = Registry::new(registry_limits, u64::from_le_bytes(location_seed));
        for d in store.list::<DeviceRecord>(DEVICES)? {
            if let Some(r) = d.registration {
                registry.restore(r);
            }
        }
        let mut campaigns = HashMap::new();
        for mut c in store.list_campaigns()? {
            if c.status == CampaignStatus::Running {
                c.resume();
                c.take_dirty();
                // Whole, so later writes of single jobs complete it (and a
                // record with inline jobs is split).
                store.put_campaign(&c, None)?;
                campaigns.insert(c.id.clone(), c);
            }
        }
        Ok(Driver {
            transport,
            policy,
            closing: Vec::new(),
            endpoint: Endpoint::new(params, seed),
            registry,
            observations: Observations::default(),
            pending: HashMap::new(),
            campaigns,
            store,
            batch: Batch::default(),
            files: HashMap::new(),
            notified,
            start: Instant::now(),
            last_purge: 0,
        })
    }

    /// Runs until `commands` closes or `shutdown` fires.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tokio::pin!(shutdown);
        loop {
            let wake = self.transport.next_wake(&self.endpoint);
            tokio::select! {
                _ = &mut shutdown => break,
                r = self.transport.recv() => match r {
                    Ok(first) => self.transport.inbound_burst(first, &mut self.endpoint),
                    Err(e) => tracing::debug!("udp receive: {e}"),
                },
                c = commands.recv() => match c {
                    Some(c) => self.command(c),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => self.transport.wake(&mut self.endpoint),
                _ = tick.tick() => self.on_tick(),
            }
            pump(&mut self).await;
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::ReadEngine { endpoint, reply } => {
                let op = DmOp::Read {
                    path: format!("/{}/0", crate::precompile::engine::ENGINE_OBJECT),
                    accept: None,
                };
                self.send_dm(
                    &endpoint,
                    op,
                    Purpose::Engine(endpoint.clone(), Some(reply)),
                );
            }
            Command::Dm {
                endpoint,
                op,
                reply,
            } => {
                self.send_dm(&endpoint, op, Purpose::Api(reply));
            }
            Command::StartCampaign(c) => {
                let id = c.id.clone();
                self.campaigns.insert(id.clone(), *c);
                self.campaign_input(&id, Input::Tick);
            }
            Command::Cancel(id, reply) => {
                let found = self.campaigns.contains_key(&id);
                self.campaign_input(&id, Input::Cancel);
                // The API answers from the store once replied to.
                self.commit();
                let _ = reply.send(found);
            }
            Command::Retry(id, reply) => {
                if !self.campaigns.contains_key(&id)
                    && let Ok(Some(c)) = self.store.get_campaign(&id)
                {
                    if let Err(e) = self.store.put_campaign(&c, None) {
                        tracing::warn!("store campaign {id}: {e}");
                    }
                    self.campaigns.insert(id.clone(), c);
                }
                let found = self.campaigns.contains_key(&id);
                self.campaign_input(&id, Input::RetryFailed);
                self.commit();
                let _ = reply.send(found);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = unix_ms();
        if self.registry.next_expiry().is_some_and(|t| t <= now) {
            // Their DTLS sessions expire with them.
            self.closing.extend(
                self.registry
                    .iter()
                    .filter(|r| r.expires_at() <= now)
                    .map(|r| r.peer),
            );
        }
        // Peers of the registrations about to expire, for their log lines.
        let peers: HashMap<String, std::net::SocketAddr> = self
            .registry
            .iter()
            .filter(|r| r.expires_at() <= now)
            .map(|r| (r.endpoint.clone(), r.peer))
            .collect();
        for ev in self.registry.expire(now) {
            let peer = match &ev {
                RegistryEvent::Expired { endpoint } => peers.get(endpoint).copied(),
                _ => None,
            };
            if let Some(peer) = peer {
                self.log_registration(&ev, peer);
            }
            self.registry_event(ev);
        }
        let ids: Vec<String> = self.campaigns.keys().cloned().collect();
        for id in ids {
            self.campaign_input(&id, Input::Tick);
        }
        if now.saturating_sub(self.last_purge) >= PURGE_PERIOD_MS {
            self.last_purge = now;
            self.purge_files(now);
        }
    }

    fn inbound(&mut self, req: InboundRequest) {
        let now = Instant::now();
        if Registry::is_registration_request(&req.packet) {
            let auth = self.transport.auth(req.peer);
            let (store, policy) = (&self.store, self.policy);
            let may_act_as = |endpoint: &str| {
                let stored = match store.security(endpoint) {
                    Ok(entry) => entry.map(|e| e.credential),
                    // Fail closed: an unreadable store admits no one.
                    Err(e) => {
                        tracing::warn!("credentials of {endpoint}: {e}");
                        return false;
                    }
                };
                match policy.check(&auth, endpoint, stored.as_ref()) {
                    Ok(()) => true,
                    Err(denied) => {
                        tracing::warn!(peer = %req.peer, %endpoint, "registration refused: {denied}");
                        false
                    }
                }
            };
            let (resp, ev) =
                self.registry
                    .handle_authorized(unix_ms(), req.peer, &req.packet, &may_act_as);
            self.endpoint.respond(now, &req, resp);
            if let Some(ev) = ev {
                self.log_registration(&ev, req.peer);
                if matches!(ev, RegistryEvent::Deregistered { .. }) {
                    // The session ends with its registration, once the
                    // 2.02 went out through it.
                    self.closing.push(req.peer);
                }
                self.registry_event(ev);
            }
            return;
        }
        let path = msg::uri_path(&req.packet).unwrap_or_default();
        let resp = match (req.packet.header.code, path.as_slice()) {
            (MessageClass::Request(RequestType::Get), [fw, sha, cap]) if fw == "fw" => {
                self.serve_file(&req.packet, sha, cap, None)
            }
            // The variant with code precompiled for engine `engine` (issue 13).
            (MessageClass::Request(RequestType::Get), [fw, sha, cap, engine]) if fw == "fw" => {
                self.serve_file(&req.packet, sha, cap, Some(engine))
            }
            (MessageClass::Request(RequestType::Post), [dp]) if dp == "dp" => self.sent(&req),
            _ => msg::response_to(&req.packet, Code::NOT_FOUND),
        };
        self.endpoint.respond(now, &req, resp);
    }

    /// LwM2M 1.1 Send (`POST /dp`, core/send.rs): from a registered
    /// device's own session only; the values join its observed ones.
    fn sent(&mut self, req: &InboundRequest) -> Packet {
        let endpoint = crate::core::send::sender(&self.registry, req.peer);
        let allowed = endpoint.as_deref().is_some_and(|ep| {
            let stored = self.store.security(ep).ok().flatten().map(|e| e.credential);
            let auth = self.transport.auth(req.peer);
            self.policy.check(&auth, ep, stored.as_ref()).is_ok()
        });
        let (resp, values) = crate::core::send::handle(&req.packet, endpoint.as_deref(), allowed);
        if let (Some(ep), Some(values), Ok(mut n)) = (endpoint, values, self.notified.lock()) {
            crate::core::send::keep(n.entry(ep).or_default(), &values);
        }
        resp
    }

    /// Serves a software file with Block2 (RFC 7959 §2.4) and an ETag, to
    /// whoever names its download capability (`/fw/<sha256>/<capability>`);
    /// anything else is 4.04, as if there were no such file.
    fn serve_file(
        &mut self,
        request: &Packet,
        sha: &str,
        capability: &str,
        engine: Option<&str>,
    ) -> Packet {
        if !matches!(self.store.download_allowed(sha, capability), Ok(true)) {
            return msg::response_to(request, Code::NOT_FOUND);
        }
        let found = match engine {
            None => self.store.blob_path(sha).map(|p| (p, sha.to_string())),
            Some(engine) => self.store.variant(sha, engine),
        };
        let Some((path, etag_sha)) = found else {
            return msg::response_to(request, Code::NOT_FOUND);
        };
        let sha = etag_sha.as_str();
        let requested = match BlockOpt::read(request, CoapOption::Block2) {
            Ok(r) => r,
            Err(_) => return msg::response_to(request, Code::BAD_OPTION),
        };
        let mut resp = msg::response_to(request, Code::CONTENT);
        msg::set_uint(&mut resp, CoapOption::ContentFormat, 42);
        // ETag: first 8 bytes of the digest, so a resumed download can check it.
        if let Ok(tag) = hex::decode(sha.get(..16).unwrap_or_default()) {
            resp.add_option(CoapOption::ETag, tag);
        }
        // One block read from disk per request: nothing of the file stays
        // in memory between requests.
        let read = |offset: u64, end: u64| -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0; usize::try_from(end - offset).unwrap_or(0)];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return msg::response_to(request, Code::NOT_FOUND),
        };
        let (offset, end) = match block2_window(len, requested, DEFAULT_SZX) {
            Ok(Some((offset, end, opt))) => {
                opt.write(&mut resp, CoapOption::Block2);
                if opt.num == 0 {
                    msg::set_uint(&mut resp, CoapOption::Size2, len);
                }
                (offset, end)
            }
            Ok(None) => (0, len),
            Err(code) => return msg::response_to(request, code),
        };
        match read(offset, end) {
            Ok(bytes) => resp.payload = bytes,
            Err(e) => {
                tracing::warn!("software file {sha}: {e}");
                return msg::response_to(request, Code::INTERNAL_SERVER_ERROR);
            }
        }
        resp
    }

    /// One `info` line per registration change, so an operator sees devices
    /// come and go: endpoint, peer address, DTLS identity (if any) and, for
    /// Register / Update, lifetime and location. Device-chosen text (endpoint,
    /// identity) is Debug-quoted: it cannot forge log lines.
    fn log_registration(&self, ev: &RegistryEvent, peer: std::net::SocketAddr) {
        let identity = match self.transport.auth(peer) {
            PeerAuth::Dtls(id) => format!(" identity {:?}", id.display_name()),
            PeerAuth::NoSec => String::new(),
        };
        let lease = |ep: &str| {
            self.registry
                .get(ep)
                .map(|r| format!(" lifetime {} s location /rd/{}", r.lifetime, r.location))
                .unwrap_or_default()
        };
        match ev {
            RegistryEvent::Registered { endpoint, replaced } => {
                let again = if *replaced {
                    " (replacing its registration)"
                } else {
                    ""
                };
                tracing::info!(
                    "registered {endpoint:?} from {peer}{identity}{}{again}",
                    lease(endpoint)
                );
            }
            RegistryEvent::Updated { endpoint, .. } => {
                tracing::info!(
                    "registration update {endpoint:?} from {peer}{identity}{}",
                    lease(endpoint)
                );
            }
            RegistryEvent::Deregistered { endpoint } => {
                tracing::info!("de-registered {endpoint:?} from {peer}{identity}");
            }
            RegistryEvent::Expired { endpoint } => {
                tracing::info!("registration expired {endpoint:?} (last from {peer}{identity})");
            }
        }
    }

    fn registry_event(&mut self, ev: RegistryEvent) {
        let now = unix_ms();
        let (ep, online) = match &ev {
            RegistryEvent::Registered { endpoint, .. }
            | RegistryEvent::Updated { endpoint, .. } => (endpoint.clone(), true),
            RegistryEvent::Deregistered { endpoint } | RegistryEvent::Expired { endpoint } => {
                (endpoint.clone(), false)
            }
        };
        if matches!(ev, RegistryEvent::Registered { .. }) || !online {
            // Observations of an old registration are gone on the device side.
            for id in self.observations.remove_endpoint(&ep) {
                self.endpoint.cancel(Instant::now(), id);
            }
        }
        let mut rec = self
            .store
            .get::<DeviceRecord>(DEVICES, &ep)
            .ok()
            .flatten()
            .unwrap_or(DeviceRecord {
                endpoint: ep.clone(),
                registration: None,
                labels: Vec::new(),
                last_seen: now,
                engine: None,
            });
        rec.registration = self.registry.get(&ep).cloned();
        rec.last_seen = now;
        // Committed with the turn, before the response goes out.
        if let Err(e) = self.batch.put(DEVICES, &ep, &rec) {
            tracing::warn!("store device {ep}: {e}");
        }
        let announced = |list: &crate::core::link::ObjectList| {
            list.objects
                .contains_key(&crate::precompile::engine::ENGINE_OBJECT)
        };
        let read_engine = match &ev {
            RegistryEvent::Registered { .. } => true,
            // Also when the record has none yet (a device registered
            // before this server read engines, or whose last read failed).
            RegistryEvent::Updated {
                objects_changed, ..
            } => *objects_changed || rec.engine.is_none(),
            _ => false,
        } && rec
            .registration
            .as_ref()
            .is_some_and(|r| announced(&r.objects));
        if online {
            let ids: Vec<String> = self.campaigns.keys().cloned().collect();
            for id in ids {
                self.campaign_input(&id, Input::Registered(ep.clone()));
            }
        }
        if read_engine {
            // What its engine accepts, for campaigns that precompile (issue 13).
            let op = DmOp::Read {
                path: format!("/{}/0", crate::precompile::engine::ENGINE_OBJECT),
                accept: Some(110),
            };
            self.send_dm(&ep, op, Purpose::Engine(ep.clone(), None));
        }
    }

    /// Keeps a device's engine report (/26500/0) in its record.
    fn engine_read(
        &mut self,
        endpoint: &str,
        result: DmResult,
    ) -> Option<crate::precompile::DeviceEngine> {
        let engine = match result {
            Ok(reply) if reply.code == Code::CONTENT.0 => {
                crate::precompile::DeviceEngine::from_values(&reply.values)
            }
            _ => None,
        };
        let Some(engine) = engine else {
            tracing::debug!("{endpoint:?}: no usable engine report (/26500/0)");
            return None;
        };
        tracing::info!(
            "engine of {endpoint:?}: {} on {}, hash {}{}",
            engine.runtime_version,
            engine.target,
            engine.compatibility_hash,
            if engine.accepts_precompiled {
                ", accepts precompiled code"
            } else {
                ""
            }
        );
        match self.store.get::<DeviceRecord>(DEVICES, endpoint) {
            Ok(Some(mut rec)) => {
                rec.engine = Some(engine.clone());
                if let Err(e) = self.batch.put(DEVICES, endpoint, &rec) {
                    tracing::warn!("store device {endpoint}: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("device {endpoint}: {e}"),
        }
        Some(engine)
    }

    /// Sends a DM op to a registered endpoint; failures to send complete `purpose` with an error.
    fn send_dm(&mut self, endpoint: &str, op: DmOp, purpose: Purpose) {
        // A cancel without a token ends the server's own observation of that
        // path (or those composite paths): RFC 7641 §3.6, the request again
        // with Observe=1 and that observation's token (an API client never
        // saw the token).
        let op = match self.own_token(endpoint, op) {
            Ok(op) => op,
            Err(why) => return self.complete_purpose(purpose, Err(DmFailure::Other(why))),
        };
        let built = match self.registry.get(endpoint) {
            None => Err(DmFailure::NotRegistered(endpoint.to_string())),
            Some(reg) => op
                .to_packet(&reg.objects.root)
                .map(|p| (reg.peer, p))
                .map_err(DmFailure::from),
        };
        let (peer, packet) = match built {
            Ok(b) => b,
            Err(e) => return self.complete_purpose(purpose, Err(e)),
        };
        let path = dm::parse_path(op.path()).unwrap_or(Path::object(0));
        let observe = matches!(op, DmOp::Observe { .. } | DmOp::ObserveComposite { .. });
        let id = self
            .endpoint
            .send_request(Instant::now(), peer, packet.clone());
        match &op {
            DmOp::ObserveComposite { paths, .. } => {
                let paths = composite::parse_paths(paths).unwrap_or_default();
                let token = packet.get_token().to_vec();
                self.observations
                    .insert_composite(id, endpoint.to_string(), paths, token);
            }
            DmOp::Observe { .. } => {
                self.observations.insert(
                    id,
                    endpoint.to_string(),
                    path,
                    packet.get_token().to_vec(),
                );
            }
            _ => {}
        }
        let purpose = if observe && !matches!(purpose, Purpose::Api(_)) {
            Purpose::Observe
        } else {
            purpose
        };
        let default_format = matches!(op, DmOp::Discover { .. }).then_some(40);
        self.pending.insert(
            id,
            Pending {
                endpoint: endpoint.to_string(),
                path,
                default_format,
                purpose,
                block1: None,
                block2: None,
                composite: op.is_composite().then_some(packet),
            },
        );
    }

    /// `op` with the token of the server's own observation filled in, for
    /// a cancel that carries none; it ends that observation here.
    fn own_token(&mut self, endpoint: &str, op: DmOp) -> Result<DmOp, String> {
        let held = match &op {
            DmOp::CancelObserve { path, token, .. } if token.is_empty() => dm::parse_path(path)
                .ok()
                .and_then(|p| self.observations.find(endpoint, p))
                .ok_or_else(|| format!("no observation of {path} on {endpoint}"))?,
            DmOp::CancelObserveComposite { paths, token, .. } if token.is_empty() => {
                composite::parse_paths(paths)
                    .ok()
                    .and_then(|p| self.observations.find_composite(endpoint, &p))
                    .ok_or_else(|| {
                        format!(
                            "no composite observation of {} on {endpoint}",
                            paths.join(",")
                        )
                    })?
            }
            _ => return Ok(op),
        };
        let token = self
            .observations
            .remove(held)
            .map(|o| o.token)
            .unwrap_or_default();
        self.endpoint.cancel(Instant::now(), held);
        Ok(match op {
            DmOp::CancelObserve { path, accept, .. } => DmOp::CancelObserve {
                path,
                accept,
                token,
            },
            DmOp::CancelObserveComposite { paths, format, .. } => DmOp::CancelObserveComposite {
                paths,
                format,
                token,
            },
            other => other,
        })
    }

    fn response(&mut self, id: ExchangeId, packet: Packet) {
        // Notifications of an observation keep its exchange open.
        if self.observations.get(id).is_some() && !self.pending.contains_key(&id) {
            let seq = msg::get_uint(&packet, CoapOption::Observe, 3)
                .ok()
                .flatten()
                .map(|v| v as u32);
            let Some(o) = self.observations.accept(id, seq, unix_ms()).cloned() else {
                return;
            };
            let reply = if o.composite.is_empty() {
                dm::parse_reply(o.path, &packet)
            } else {
                composite::parse_reply(&packet)
            };
            if let Ok(reply) = reply {
                self.notify(&o.endpoint, reply);
            }
            return;
        }
        let Some(mut p) = self.pending.remove(&id) else {
            return;
        };
        // Block1 continuation.
        if let Some(sender) = p.block1.as_mut() {
            match sender.on_response(&packet) {
                Block1Step::Send(next) => {
                    if let Some(peer) = self.registry.get(&p.endpoint).map(|r| r.peer) {
                        let nid = self.endpoint.send_request(Instant::now(), peer, next);
                        self.pending.insert(nid, p);
                    } else {
                        let gone = DmFailure::NotRegistered(p.endpoint.clone());
                        self.complete(p, Err(gone));
                    }
                    return;
                }
                Block1Step::Done(code) | Block1Step::Failed(code) => {
                    let reply = DmReply {
                        code,
                        ..DmReply::default()
                    };
                    self.complete(p, Ok(reply));
                    return;
                }
            }
        }
        // Block2 continuation of a large read (RFC 7959 §2.4, §3.4 for notifications).
        if let Ok(Some(b2)) = BlockOpt::read(&packet, CoapOption::Block2) {
            let (template, mut body) = p
                .block2
                .take()
                .unwrap_or_else(|| (packet.clone(), Vec::new()));
            if u64::try_from(body.len()).unwrap_or(u64::MAX) == b2.offset() {
                body.extend_from_slice(&packet.payload);
            }
            if b2.more
                && body.len() < MAX_BODY
                && let (Some(peer), Some(root)) = (
                    self.registry.get(&p.endpoint).map(|r| r.peer),
                    self.registry
                        .get(&p.endpoint)
                        .map(|r| r.objects.root.clone()),
                )
            {
                let op = DmOp::Read {
                    path: p.path.to_string(),
                    accept: None,
                };
                let next = match &p.composite {
                    Some(request) => {
                        let mut again = request.clone();
                        again.clear_option(CoapOption::Observe);
                        Ok(again)
                    }
                    None => op.to_packet(&root),
                };
                if let Ok(mut next) = next {
                    if let Some(cf) = template.get_first_option(CoapOption::ContentFormat) {
                        // A composite request carries its Accept already.
                        next.clear_option(CoapOption::Accept);
                        next.add_option(CoapOption::Accept, cf.clone());
                    }
                    BlockOpt {
                        num: b2.num + 1,
                        more: false,
                        szx: b2.szx,
                    }
                    .write(&mut next, CoapOption::Block2);
                    let nid = self.endpoint.send_request(Instant::now(), peer, next);
                    p.block2 = Some((template, body));
                    self.pending.insert(nid, p);
                    return;
                }
            }
            let mut full = template;
            full.payload = body;
            full.clear_option(CoapOption::Block2);
            let result = Self::parse(&p, &full);
            self.complete(p, result);
            return;
        }
        let result = Self::parse(&p, &packet);
        if self.observations.get(id).is_some() {
            // First answer to an observe: later notifications route via `observations`.
            let seq = msg::get_uint(&packet, CoapOption::Observe, 3)
                .ok()
                .flatten()
                .map(|v| v as u32);
            let _ = self.observations.accept(id, seq, unix_ms());
            if !self.endpoint.is_open(id) {
                self.observations.remove(id);
            }
            // The first answer shows the state when the device took the
            // request, which a campaign asks for in the same turn as its next
            // action: it may predate that action (a device still showing the
            // Update Result 53 of an earlier attempt would fail the retry).
            // Campaigns read the state themselves and learn of changes from
            // the notifications; the API's view takes it.
            if let Ok(r) = &result {
                self.record_notified(&p.endpoint, r);
            }
        }
        self.complete(p, result);
    }

    /// Decodes the answer to `p`'s request.
    fn parse(p: &Pending, packet: &Packet) -> DmResult {
        if p.composite.is_some() {
            composite::parse_reply(packet)
        } else {
            dm::parse_reply_as(p.path, packet, p.default_format)
        }
        .map_err(DmFailure::from)
    }

    /// Keeps the latest observed values of `endpoint` for the API.
    fn record_notified(&self, endpoint: &str, reply: &DmReply) {
        if let Ok(mut n) = self.notified.lock() {
            let entry = n.entry(endpoint.to_string()).or_default();
            for (p, v) in &reply.values {
                entry.insert(p.to_string(), dm::value_json(v));
            }
        }
    }

    /// A notification: recorded for the API and fed to the campaigns.
    fn notify(&mut self, endpoint: &str, reply: DmReply) {
        if reply.values.is_empty() {
            return;
        }
        self.record_notified(endpoint, &reply);
        let ids: Vec<String> = self.campaigns.keys().cloned().collect();
        for id in ids {
            let input = Input::Values {
                endpoint: endpoint.to_string(),
                values: reply.values.clone(),
            };
            self.campaign_input(&id, input);
        }
    }

    fn complete(&mut self, p: Pending, result: DmResult) {
        self.complete_purpose(p.purpose, result);
    }

    fn complete_purpose(&mut self, purpose: Purpose, result: DmResult) {
        match purpose {
            Purpose::Api(tx) => {
                let _ = tx.send(result);
            }
            Purpose::Campaign { id, endpoint, tag } => self.campaign_input(
                &id,
                Input::Reply {
                    endpoint,
                    tag,
                    result,
                },
            ),
            Purpose::Observe => {}
            Purpose::Engine(endpoint, reply) => {
                let engine = self.engine_read(&endpoint, result);
                if let Some(reply) = reply {
                    let _ = reply.send(engine);
                }
            }
        }
    }

    /// Milliseconds since the driver started (diagnostics).
    pub fn uptime_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }
}
