//! The LwM2M 1.1 client engine (sans-IO), compatible with 1.0 servers.
//!
//! [`Client`] owns the CoAP [`Endpoint`], the objects, the registration state
//! machine, write-attributes and observations. Drive it like quinn-proto:
//! - A. getters: [`Client::registration`], [`Client::object`], [`Client::is_registered`];
//! - B. inputs: [`Client::handle_datagram`], [`Client::handle_timeout`],
//!   [`Client::handshake_failed`];
//! - C. commands: [`Client::start`], [`Client::complete`], [`Client::resources_changed`],
//!   [`Client::trigger_update`], [`Client::deregister`], [`Client::start_download`], [`Client::object_mut`],
//!   [`Client::add_object`], [`Client::remove_object`], [`Client::send`];
//! - D. outputs, drained after every input or command in this order:
//!   [`Client::poll_transmit`], [`Client::poll_event`], [`Client::poll_timeout`].
//!
//! Durability: an operation whose object returns effects gets its response
//! held; the driver receives [`Event::Effects`] with a [`PendingId`], carries
//! out the effects (persisting first) and calls [`Client::complete`], which
//! sends the response. So a device never reports a change it has not stored.

mod block1;
pub mod bodies;
pub mod composite;
pub mod dispatch;
mod download;
mod dynamic;
mod notify;
use notify::etag;
pub mod registration;
pub mod send;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};

use crate::coap::block::{self, Block1Rx, BlockDownload, BlockOpt, DownloadError};
use crate::coap::endpoint::{
    Endpoint, EndpointEvent, ExchangeId, InboundRequest, Params, Transmit,
};
use crate::coap::msg::{self, Code};
use crate::coap::observe::{AttributeStore, Attributes, ObsKey, Registry};
use crate::model::{ContentFormat, Path, ResourceValue, Value};
use crate::object::{Effect, Object, OpError};
use bodies::{BodyCache, BodyKey, ReadCache};
use dispatch::{Failure, Operation, Outcome, Target};
use registration::RegState;
pub use registration::RootLinkFormats;

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Endpoint Client Name (`ep`).
    pub endpoint_name: String,
    /// The LwM2M server.
    pub server: SocketAddr,
    /// Lifetime (s) used when Object 1 gives none.
    pub lifetime: u32,
    /// Binding (`b`), "U".
    pub binding: String,
    /// Enabler version (`lwm2m`), "1.1".
    pub lwm2m_version: String,
    /// Content formats the device supports, preferred first (reference §1, field notes).
    pub content_formats: Vec<ContentFormat>,
    /// Which of them the Register root link announces ([`RootLinkFormats`]).
    pub register_formats: RootLinkFormats,
    /// Register retry base (60 s in Core 1.1 §6.2.1.1; shorter in tests).
    pub retry_base: Duration,
    /// Cap of the Register back-off.
    pub retry_cap: Duration,
    /// Largest block exponent we send or accept (6 = 1024 bytes).
    pub max_szx: u8,
    /// Largest non-streamed Block1 body assembled in memory.
    pub assembly_cap: u64,
    /// Largest streamed opaque body (package push), `None` = unlimited.
    pub push_limit: Option<u64>,
    /// Seed for MIDs, tokens and jitter (from getrandom in production).
    pub seed: u64,
    /// CoAP transmission parameters.
    pub coap: Params,
}

impl Config {
    /// Defaults for `endpoint_name` registering at `server`.
    pub fn new(endpoint_name: impl Into<String>, server: SocketAddr, seed: u64) -> Self {
        Config {
            endpoint_name: endpoint_name.into(),
            server,
            lifetime: 86400,
            binding: "U".into(),
            lwm2m_version: "1.1".into(),
            content_formats: vec![
                ContentFormat::SenmlJson,
                ContentFormat::SenmlCbor,
                ContentFormat::Tlv,
            ],
            register_formats: RootLinkFormats::default(),
            retry_base: Duration::from_secs(60),
            retry_cap: Duration::from_secs(3600),
            max_szx: block::MAX_SZX,
            assembly_cap: 64 * 1024,
            push_limit: None,
            seed,
            coap: Params::default(),
        }
    }
}

/// A held response waiting for [`Client::complete`].
pub type PendingId = u64;
/// A download started with [`Client::start_download`].
pub type DownloadId = u64;

/// Why a download stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadFailure {
    /// The block session failed (status, ETag change, bad block).
    #[error(transparent)]
    Block(#[from] DownloadError),
    /// A GET got no answer after all retransmissions.
    #[error("no answer from the file server")]
    Timeout,
    /// The file server rejected the GET with RST.
    #[error("file server reset the request")]
    Reset,
}

/// What the engine reports to its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Registered (2.01) at `location`.
    Registered {
        /// Location-Path segments.
        location: Vec<String>,
    },
    /// A Register attempt failed; the next is in `retry_in`.
    RegistrationFailed {
        /// Attempt number that failed.
        attempt: u32,
        /// The server's response code (e.g. 4.00 for a payload it cannot
        /// parse), `None` when no answer came (timeout, RST, or a failed
        /// DTLS handshake: [`Client::handshake_failed`]).
        code: Option<Code>,
        /// Back-off before the next attempt.
        retry_in: Duration,
    },
    /// An Update got 2.04.
    Updated,
    /// An Update got no answer at all (the driver may re-open its DTLS
    /// session before the Register that follows is retransmitted).
    ServerSilent,
    /// De-registered (2.02, error or timeout after [`Client::deregister`]).
    Deregistered,
    /// [`Client::deregister`] without a registration to end (never
    /// registered, or a Register still unanswered): no De-register was
    /// sent, the client is stopped.
    StoppedUnregistered,
    /// Effects to carry out; call [`Client::complete`] with `pending` after
    /// the durable ones (Persist, StorePushed) are done.
    Effects {
        /// The held response.
        pending: PendingId,
        /// What the objects asked for.
        effects: Vec<Effect>,
    },
    /// A downloaded piece; offset 0 means start from scratch.
    DownloadData {
        /// The download.
        id: DownloadId,
        /// Offset in the body.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
        /// More follow.
        more: bool,
        /// The representation's ETag, if the server sends one: persist it
        /// with the offset, so a resume after a restart detects a changed
        /// body (RFC 7959 §2.4).
        etag: Option<Vec<u8>>,
    },
    /// A request from `peer` was answered (for the operation log; 2.31
    /// Continue answers of block-wise transfers included).
    Answered {
        /// Who asked.
        peer: SocketAddr,
        /// Request code, e.g. `0.01` (GET).
        method: String,
        /// Uri-Path, e.g. `/9/0/7`.
        path: String,
        /// Response code, e.g. `2.05`.
        code: String,
        /// A further block of a block-wise transfer: a 2.31 Continue, or a
        /// Block2 block after the first (one operation, many datagrams).
        continuation: bool,
    },
    /// A download failed.
    DownloadFailed {
        /// The download.
        id: DownloadId,
        /// Why.
        error: DownloadFailure,
    },
}

#[derive(Debug)]
struct Held {
    request: InboundRequest,
    response: Packet,
    block2: bool,
    /// Objects the request changed (a Write-Composite's are not in its
    /// Uri-Path): their removal answers it 5.03.
    objects: Vec<u16>,
}

#[derive(Debug)]
struct Download {
    peer: SocketAddr,
    session: BlockDownload,
    exchange: Option<ExchangeId>,
}

/// One Block1 transfer in progress (per peer, method and Uri-Path).
#[derive(Debug, Default)]
struct Block1Transfer {
    rx: Option<Block1Rx>,
    buffer: Vec<u8>,
    /// When its last block arrived (expiry after EXCHANGE_LIFETIME).
    last: Option<Instant>,
}

/// Block1 transfers in progress at once (RFC 7959 §2.3 keeps state per
/// peer and path). Assembled ones hold at most `assembly_cap` bytes each;
/// streamed ones (package pushes) go to disk block by block.
pub const MAX_BLOCK1_TRANSFERS: usize = 8;

/// The LwM2M client engine.
pub struct Client {
    cfg: Config,
    ep: Endpoint,
    objects: Vec<Box<dyn Object>>,
    reg: RegState,
    reg_payload: String,
    reg_lifetime: u32,
    update_wanted: bool,
    attrs: AttributeStore,
    observers: Registry,
    last_notified: HashMap<ObsKey, Vec<u8>>,
    /// Per observation, the key its observer's follow-up GETs (Block2
    /// num > 0) carry, under which a large notification's body is kept.
    notify_keys: HashMap<ObsKey, BodyKey>,
    held: BTreeMap<PendingId, Held>,
    next_pending: PendingId,
    block1: HashMap<block1::Block1Key, Block1Transfer>,
    downloads: BTreeMap<DownloadId, Download>,
    next_download: DownloadId,
    events: VecDeque<Event>,
    bodies: BodyCache,
    reads: ReadCache,
    foreign_dropped: u64,
}

/// True for a CoAP request (code 0.01-0.31) or an empty CON (a ping, which
/// a message layer answers with RST): what only the server may send us.
pub(crate) fn is_request_or_ping(bytes: &[u8]) -> bool {
    match bytes {
        [first, code, ..] => {
            let confirmable = (first >> 4) & 0x3 == 0;
            (*code >> 5 == 0 && *code != 0) || (*code == 0 && confirmable)
        }
        // Not a CoAP message at all: the message layer drops it anyway.
        _ => false,
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("reg", &self.reg)
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Creates the engine with its objects (one per object id).
    pub fn new(cfg: Config, objects: Vec<Box<dyn Object>>) -> Self {
        let ep = Endpoint::new(cfg.coap.clone(), cfg.seed);
        Client {
            reg_lifetime: cfg.lifetime,
            cfg,
            ep,
            objects,
            reg: RegState::Idle,
            reg_payload: String::new(),
            update_wanted: false,
            attrs: AttributeStore::default(),
            observers: Registry::new(),
            last_notified: HashMap::new(),
            notify_keys: HashMap::new(),
            held: BTreeMap::new(),
            next_pending: 1,
            block1: HashMap::new(),
            downloads: BTreeMap::new(),
            next_download: 1,
            events: VecDeque::new(),
            bodies: BodyCache::default(),
            reads: ReadCache::default(),
            foreign_dropped: 0,
        }
    }

    // ---- A. getters ----

    /// The registration state.
    pub fn registration(&self) -> &RegState {
        &self.reg
    }

    /// True while registered (including while an Update is in flight).
    pub fn is_registered(&self) -> bool {
        matches!(
            self.reg,
            RegState::Registered { .. } | RegState::AwaitUpdate { .. }
        )
    }

    /// An object by id.
    pub fn object(&self, id: u16) -> Option<&dyn Object> {
        self.objects
            .iter()
            .find(|o| o.id() == id)
            .map(|o| o.as_ref())
    }

    /// Mutable access for the driver to feed outcomes into an object; follow
    /// with [`Client::resources_changed`].
    pub fn object_mut(&mut self, id: u16) -> Option<&mut (dyn Object + 'static)> {
        self.objects
            .iter_mut()
            .find(|o| o.id() == id)
            .map(|o| o.as_mut())
    }

    /// The message layer (e.g. to fix the next MID in tests).
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// The current link payload (objects and instances).
    pub fn link_payload(&self) -> String {
        let formats = self.cfg.register_formats.pick(&self.cfg.content_formats);
        registration::link_payload(&self.objects, formats)
    }

    // ---- B. inputs ----

    /// Requests and pings from anyone but the server, dropped unanswered.
    pub fn foreign_requests_dropped(&self) -> u64 {
        self.foreign_dropped
    }

    /// Processes one datagram from `from`.
    ///
    /// Only the LwM2M server may operate on the device (Core 1.1 §7.3: a
    /// client serves the servers it is registered with): a request, or an
    /// empty CON ping, from any other address is dropped before the message
    /// layer sees it, unanswered and without any state change. Other peers
    /// (file servers of CoAP pulls) only ever answer our requests.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if from != self.cfg.server && is_request_or_ping(bytes) {
            self.foreign_dropped += 1;
            return;
        }
        self.ep.handle_datagram(now, from, bytes);
        self.pump(now);
    }

    /// Runs due timers; safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        match self.reg {
            RegState::Registered { update_at, .. } if update_at <= now => self.update_wanted = true,
            RegState::BackOff { until, attempt } if until <= now => {
                self.send_register(now, attempt)
            }
            _ => {}
        }
        self.pump(now);
    }

    // ---- C. commands ----

    /// Starts registration (Register now).
    pub fn start(&mut self, now: Instant) {
        if matches!(self.reg, RegState::Idle | RegState::Deregistered) {
            self.send_register(now, 1);
            self.pump(now);
        }
    }

    /// Points the engine at another LwM2M server with new /0 and /1
    /// objects, after a bootstrap provisioned them (Core 1.1 §5.2.5): the
    /// registration, observations and held answers of the old server end,
    /// without a De-register (the old server may be what failed). Call
    /// [`Client::start`] to register with the new one.
    pub fn retarget(
        &mut self,
        now: Instant,
        server: SocketAddr,
        security: Box<dyn Object>,
        server_object: Box<dyn Object>,
        retry_base: Duration,
    ) {
        match &self.reg {
            RegState::AwaitRegister { ex, .. }
            | RegState::AwaitUpdate { ex, .. }
            | RegState::AwaitDeregister { ex } => self.ep.cancel(now, *ex),
            _ => {}
        }
        self.objects.retain(|o| o.id() != 0 && o.id() != 1);
        self.objects.insert(0, server_object);
        self.objects.insert(0, security);
        self.cfg.server = server;
        self.cfg.retry_base = retry_base;
        self.reg = RegState::Idle;
        self.update_wanted = false;
        self.observers = Registry::new();
        self.last_notified.clear();
        self.notify_keys.clear();
        self.attrs = AttributeStore::default();
        self.held.clear();
        self.bodies.clear();
    }

    /// Sends the response held for `pending` (after the driver carried out its effects).
    pub fn complete(&mut self, now: Instant, pending: PendingId) {
        if let Some(h) = self.held.remove(&pending) {
            self.send_response(now, &h.request, h.response, h.block2);
            self.pump(now);
        }
    }

    /// Answers a held request with an error instead (the driver could not
    /// carry out a durable effect).
    pub fn fail(&mut self, now: Instant, pending: PendingId, error: OpError) {
        if let Some(h) = self.held.remove(&pending) {
            let resp = dispatch::failure_response(&h.request.packet, error.into());
            self.send_response(now, &h.request, resp, false);
            self.pump(now);
        }
    }

    /// Tells the engine resources changed (after the driver fed an object):
    /// observers get notified, and an instance list change triggers an Update.
    pub fn resources_changed(&mut self, now: Instant, paths: &[Path]) {
        for p in paths {
            self.mark_changed(*p);
        }
        if self.is_registered() && self.link_payload() != self.reg_payload {
            self.update_wanted = true;
        }
        self.pump(now);
    }

    /// Registration Update Trigger (/1/x/8) or any reason to Update now.
    pub fn trigger_update(&mut self, now: Instant) {
        self.update_wanted = true;
        self.pump(now);
    }

    /// De-registers (DELETE location); [`Event::Deregistered`] follows, or
    /// [`Event::StoppedUnregistered`] when there was no registration.
    pub fn deregister(&mut self, now: Instant) {
        let location = match std::mem::replace(&mut self.reg, RegState::Deregistered) {
            RegState::Registered { location, .. } => location,
            RegState::AwaitUpdate { ex, location, .. } => {
                self.ep.cancel(now, ex);
                location
            }
            RegState::AwaitRegister { ex, .. } => {
                self.ep.cancel(now, ex);
                self.events.push_back(Event::StoppedUnregistered);
                return;
            }
            RegState::AwaitDeregister { ex } => {
                self.reg = RegState::AwaitDeregister { ex };
                return;
            }
            _ => {
                self.events.push_back(Event::StoppedUnregistered);
                return;
            }
        };
        let ex = self.ep.send_request(
            now,
            self.cfg.server,
            registration::deregister_request(&location),
        );
        self.reg = RegState::AwaitDeregister { ex };
        self.pump(now);
    }

    // ---- D. outputs ----

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ep.poll_transmit()
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let reg = match self.reg {
            RegState::Registered { update_at, .. } => Some(update_at),
            RegState::BackOff { until, .. } => Some(until),
            _ => None,
        };
        let notify = self
            .observers
            .next_deadline(&self.attrs, self.default_attrs());
        [self.ep.poll_timeout(), reg, notify]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- internals: event pump ----

    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                EndpointEvent::Request(req) => self.on_request(now, req),
                EndpointEvent::Response { id, packet } => self.on_response(now, id, Some(packet)),
                EndpointEvent::Timeout { id } | EndpointEvent::Reset { id } => {
                    if self.observers.remove_by_exchange(id) {
                        continue; // RFC 7641 §3.6/§4.5: the observer is gone
                    }
                    self.on_response(now, id, None);
                }
                EndpointEvent::Acked { .. } => {}
            }
        }
        if self.update_wanted {
            self.try_update(now);
        }
        self.flush_notifications(now);
    }

    fn on_response(&mut self, now: Instant, id: ExchangeId, packet: Option<Packet>) {
        if let Some(dl) = self
            .downloads
            .iter()
            .find(|(_, d)| d.exchange == Some(id))
            .map(|(k, _)| *k)
        {
            self.on_download_response(now, dl, packet);
            return;
        }
        let code = packet.as_ref().map(Code::of);
        match self.reg.clone() {
            RegState::AwaitRegister { ex, attempt } if ex == id => match (code, packet) {
                (Some(Code::CREATED), Some(p)) => {
                    let location = msg::string_list(&p, CoapOption::LocationPath);
                    // A new registration session: old observations are void.
                    self.observers = Registry::new();
                    self.last_notified.clear();
                    self.notify_keys.clear();
                    self.reg = RegState::Registered {
                        location: location.clone(),
                        update_at: now + registration::update_delay(self.reg_lifetime),
                    };
                    // Objects added or removed while the Register was in
                    // flight (an app declared one): the server learns at once.
                    if self.link_payload() != self.reg_payload {
                        self.update_wanted = true;
                    }
                    self.events.push_back(Event::Registered { location });
                }
                _ => self.register_failed(now, attempt, code),
            },
            RegState::AwaitUpdate {
                ex,
                location,
                payload,
                lifetime,
            } if ex == id => {
                if code.is_some_and(Code::is_success) {
                    if let Some(p) = payload {
                        self.reg_payload = p;
                    }
                    self.reg_lifetime = lifetime;
                    self.reg = RegState::Registered {
                        location,
                        update_at: now + registration::update_delay(lifetime),
                    };
                    self.events.push_back(Event::Updated);
                } else {
                    if code.is_none() {
                        self.events.push_back(Event::ServerSilent);
                    }
                    // 4.04 (or any failure) to Update: register afresh (reference §1).
                    self.send_register(now, 1);
                }
            }
            RegState::AwaitDeregister { ex } if ex == id => {
                self.reg = RegState::Deregistered;
                self.events.push_back(Event::Deregistered);
            }
            _ => {}
        }
    }

    fn current_lifetime(&self) -> u32 {
        // Lifetime lives in /1/x/1 when the Server object is present.
        let from_server = self.object(1).and_then(|o| {
            let i = *o.instances().first()?;
            match o.read(i, 1).ok()?? {
                ResourceValue::Single(Value::Integer(v)) => u32::try_from(v).ok(),
                ResourceValue::Single(Value::Unsigned(v)) => u32::try_from(v).ok(),
                _ => None,
            }
        });
        from_server.unwrap_or(self.cfg.lifetime)
    }

    fn send_register(&mut self, now: Instant, attempt: u32) {
        let payload = self.link_payload();
        let lifetime = self.current_lifetime();
        let p = registration::register_request(
            &self.cfg.endpoint_name,
            lifetime,
            &self.cfg.lwm2m_version,
            &self.cfg.binding,
            &payload,
        );
        let ex = self.ep.send_request(now, self.cfg.server, p);
        self.reg_payload = payload;
        self.reg_lifetime = lifetime;
        self.update_wanted = false;
        self.reg = RegState::AwaitRegister { ex, attempt };
    }

    fn try_update(&mut self, now: Instant) {
        let RegState::Registered { location, .. } = &self.reg else {
            return;
        };
        let location = location.clone();
        self.update_wanted = false;
        let payload = self.link_payload();
        let payload = (payload != self.reg_payload).then_some(payload);
        let lifetime = self.current_lifetime();
        let lt = (lifetime != self.reg_lifetime).then_some(lifetime);
        let p = registration::update_request(&location, lt, payload.as_deref());
        let ex = self.ep.send_request(now, self.cfg.server, p);
        self.reg = RegState::AwaitUpdate {
            ex,
            location,
            payload,
            lifetime,
        };
    }

    // ---- internals: requests ----

    fn default_attrs(&self) -> Attributes {
        // Server defaults /1/x/2 (pmin) and /1/x/3 (pmax), reference §3.
        let read = |r: u16| -> Option<u32> {
            let o = self.object(1)?;
            let i = *o.instances().first()?;
            match o.read(i, r).ok()?? {
                ResourceValue::Single(Value::Integer(v)) => u32::try_from(v).ok(),
                ResourceValue::Single(Value::Unsigned(v)) => u32::try_from(v).ok(),
                _ => None,
            }
        };
        Attributes {
            pmin: read(2),
            pmax: read(3),
            ..Attributes::default()
        }
    }

    fn send_response(
        &mut self,
        now: Instant,
        req: &InboundRequest,
        mut response: Packet,
        block2: bool,
    ) {
        let mut continuation = Code::of(&response) == Code::CONTINUE;
        if block2 && Code::of(&response) == Code::CONTENT {
            let requested = BlockOpt::read(&req.packet, CoapOption::Block2)
                .ok()
                .flatten();
            match block::block2_slice(&response.payload, requested, self.cfg.max_szx) {
                Ok(Some(slice)) => {
                    let (chunk, opt) = (slice.bytes.to_vec(), slice.opt);
                    if opt.num == 0 && opt.more {
                        // Follow-up blocks are sliced from this very body
                        // (also after an Observe registration's first answer:
                        // the rest comes by plain GETs, RFC 7959 §2.6).
                        let mut kept = response.clone();
                        kept.clear_option(CoapOption::Observe);
                        self.bodies
                            .store(now, BodyKey::of(req.peer, &req.packet), &kept);
                    }
                    continuation = opt.num > 0;
                    // An ETag lets the reader detect a body changing between blocks (RFC 7959 §2.4).
                    response.add_option(CoapOption::ETag, etag(&response.payload));
                    if opt.num == 0 {
                        let total = response.payload.len() as u64;
                        msg::set_uint(&mut response, CoapOption::Size2, total);
                    }
                    opt.write(&mut response, CoapOption::Block2);
                    response.payload = chunk;
                }
                Ok(None) => {}
                Err(code) => response = dispatch::failure_response(&req.packet, code.into()),
            }
        }
        self.events.push_back(Event::Answered {
            peer: req.peer,
            method: Code::of(&req.packet).to_string(),
            path: format!(
                "/{}",
                msg::uri_path(&req.packet).unwrap_or_default().join("/")
            ),
            code: Code::of(&response).to_string(),
            continuation,
        });
        self.ep.respond(now, req, response);
    }

    fn on_request(&mut self, now: Instant, req: InboundRequest) {
        let code = Code::of(&req.packet);
        if code != Code::GET && code != composite::FETCH {
            // Anything but a read may change what a kept body shows.
            self.bodies.clear();
        } else if let Some(response) = self.bodies.follow_up(now, req.peer, &req.packet) {
            self.send_response(now, &req, response, true);
            return;
        }
        // RFC 8132 §2.1 with RFC 7959 §2.5: Block1 carries the request
        // body of a FETCH or iPATCH as it does a PUT's or POST's.
        let result = match BlockOpt::read(&req.packet, CoapOption::Block1) {
            Err(_) => Err(Failure::from(Code::BAD_OPTION)),
            Ok(Some(b1)) if block1::takes_block1(code) => self.block1_request(now, &req, b1),
            _ => self.operate_any(now, &req, &req.packet).map(Some),
        };
        let outcome = match result {
            Ok(Some(o)) => o,
            Ok(None) => return, // already answered (2.31 Continue)
            Err(f) => {
                let resp = dispatch::failure_response(&req.packet, f);
                self.send_response(now, &req, resp, false);
                return;
            }
        };
        self.finish_outcome(now, req, outcome);
    }

    fn finish_outcome(&mut self, now: Instant, req: InboundRequest, outcome: Outcome) {
        for p in &outcome.changed {
            self.mark_changed(*p);
        }
        if outcome.instances_changed && self.is_registered() {
            self.update_wanted = true;
        }
        // Reads and Read-Composite (FETCH) answers go block-wise when large.
        let block2 = matches!(Code::of(&req.packet), Code::GET | composite::FETCH);
        if outcome.effects.is_empty() {
            self.send_response(now, &req, outcome.response, block2);
        } else {
            let pending = self.next_pending;
            self.next_pending += 1;
            self.held.insert(
                pending,
                Held {
                    request: req,
                    response: outcome.response,
                    block2,
                    objects: outcome.changed.iter().map(|p| p.object).collect(),
                },
            );
            self.events.push_back(Event::Effects {
                pending,
                effects: outcome.effects,
            });
        }
    }

    /// Runs one DM operation on a complete request (`body` carries the
    /// assembled payload for Block1 writes).
    fn operate(
        &mut self,
        now: Instant,
        req: &InboundRequest,
        body: &Packet,
    ) -> Result<Outcome, Failure> {
        let t = dispatch::parse_target(body)?;
        // Reference §2: any DM operation on Security (/0) is 4.01.
        if t.path.object == 0 {
            return Err(Code::UNAUTHORIZED.into());
        }
        let defaults = self.default_attrs();
        let Some(idx) = self.objects.iter().position(|o| o.id() == t.path.object) else {
            return Err(Code::NOT_FOUND.into());
        };
        let obj = self.objects.get_mut(idx).ok_or(Code::NOT_FOUND)?;
        let def = t
            .path
            .resource
            .and_then(|r| dispatch::resource_def(obj.as_ref(), r));
        let op = dispatch::classify(Code::of(body), &t, def, !body.payload.is_empty())?;
        match op {
            Operation::Read => {
                let mut out = match (t.observe, obj.generation()) {
                    (None, Some(generation)) => {
                        let kept = self
                            .reads
                            .get(t.path, t.accept, generation, body.get_token());
                        match kept {
                            Some(response) => Outcome {
                                response,
                                effects: Vec::new(),
                                changed: Vec::new(),
                                instances_changed: false,
                            },
                            None => {
                                let out = dispatch::read(obj.as_ref(), body, &t)?;
                                self.reads
                                    .store(t.path, t.accept, generation, &out.response);
                                out
                            }
                        }
                    }
                    _ => dispatch::read(obj.as_ref(), body, &t)?,
                };
                match t.observe {
                    Some(0) => {
                        let key = (req.peer, req.packet.get_token().to_vec());
                        let value = dispatch::numeric_value(obj.as_ref(), t.path);
                        // Refused at a cap: a plain answer, without Observe.
                        if let Ok(replaced) =
                            self.observers
                                .add(now, key.clone(), t.path, t.accept, value)
                        {
                            for old in replaced {
                                self.last_notified.remove(&old);
                            }
                            // RFC 7959 §2.6: the block size asked for in the
                            // Observe request holds for its notifications.
                            let szx = BlockOpt::read(&req.packet, CoapOption::Block2)
                                .ok()
                                .flatten()
                                .map(|b| b.szx);
                            self.observers.set_block_szx(&key, szx);
                            let observers = &self.observers;
                            self.notify_keys.retain(|k, _| observers.get(k).is_some());
                            self.notify_keys
                                .insert(key.clone(), BodyKey::of(req.peer, &req.packet));
                            self.last_notified.insert(key, out.response.payload.clone());
                            let seq = self.observers.next_seq();
                            msg::set_uint(&mut out.response, CoapOption::Observe, seq.into());
                        }
                    }
                    Some(1) => {
                        // RFC 7641 §3.6: cancel; the answer carries no Observe option.
                        let key = (req.peer, req.packet.get_token().to_vec());
                        self.observers.remove(&key);
                        self.last_notified.remove(&key);
                        self.notify_keys.remove(&key);
                    }
                    _ => {}
                }
                Ok(out)
            }
            Operation::Discover => {
                dispatch::discover(obj.as_ref(), &self.attrs, defaults, body, &t)
            }
            Operation::WriteAttributes => {
                dispatch::write_attributes(obj.as_ref(), &mut self.attrs, body, &t)
            }
            Operation::WriteReplace => dispatch::write(obj.as_mut(), body, &t, true),
            Operation::WritePartial => dispatch::write(obj.as_mut(), body, &t, false),
            Operation::Execute => dispatch::execute(obj.as_mut(), body, &t),
            Operation::Create => dispatch::create(obj.as_mut(), body, &t),
            Operation::Delete => dispatch::delete(obj.as_mut(), &mut self.attrs, body, &t),
        }
    }
}
