//! The CoAP message layer (RFC 7252 §4), role-agnostic and sans-IO.
//!
//! It owns MIDs, tokens, retransmission of CONs, duplicate detection and
//! the NSTART=1 queue; it knows nothing of LwM2M. Drive it like quinn-proto:
//! - B. inputs: [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`];
//! - C. commands: [`Endpoint::send_request`], [`Endpoint::send_message`],
//!   [`Endpoint::respond`], [`Endpoint::cancel`];
//! - D. outputs, drained in this order after every input: [`Endpoint::poll_transmit`],
//!   [`Endpoint::poll_event`], then [`Endpoint::poll_timeout`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet};

use super::msg::{self, Classified, Code};
use super::rng::Rng;

/// Transmission parameters (RFC 7252 §4.8; LwM2M uses the defaults).
#[derive(Debug, Clone)]
pub struct Params {
    /// ACK_TIMEOUT: the lower bound of the first retransmission timeout.
    pub ack_timeout: Duration,
    /// ACK_TIMEOUT × (ACK_RANDOM_FACTOR − 1): the random extra on the first timeout.
    pub ack_jitter: Duration,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// EXCHANGE_LIFETIME: how long a CON MID is remembered for dedup.
    pub exchange_lifetime: Duration,
    /// NON_LIFETIME: how long a NON MID is remembered for dedup.
    pub non_lifetime: Duration,
    /// How long to wait for a separate response after an empty ACK.
    pub separate_response_timeout: Duration,
    /// Upper bound of the dedup cache; the entry closest to expiry is evicted first.
    pub dedup_capacity: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            ack_timeout: Duration::from_secs(2),
            ack_jitter: Duration::from_secs(1),
            max_retransmit: 4,
            exchange_lifetime: Duration::from_secs(247),
            non_lifetime: Duration::from_secs(145),
            separate_response_timeout: Duration::from_secs(247),
            dedup_capacity: 512,
        }
    }
}

/// MAX_TRANSMIT_WAIT with default parameters (RFC 7252 §4.8.2).
pub const MAX_TRANSMIT_WAIT: Duration = Duration::from_secs(93);

/// Identifies one outgoing exchange (request or CON/NON message).
pub type ExchangeId = u64;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Encoded CoAP message.
    pub bytes: Vec<u8>,
}

/// A request received from a peer; hand it back to [`Endpoint::respond`].
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// Who sent it.
    pub peer: SocketAddr,
    /// The decoded request.
    pub packet: Packet,
    /// [`fingerprint`] of the datagram, for the dedup entry of its reply.
    fingerprint: u64,
}

impl InboundRequest {
    /// True for a CON request (its response is piggy-backed on the ACK).
    pub fn confirmable(&self) -> bool {
        msg::type_of(&self.packet) == MessageType::Confirmable
    }
    fn key(&self) -> (SocketAddr, u16) {
        (self.peer, self.packet.header.message_id)
    }
}

/// What the message layer reports upwards.
#[derive(Debug)]
pub enum EndpointEvent {
    /// A new (non-duplicate) request; answer it with [`Endpoint::respond`].
    Request(InboundRequest),
    /// A response matched to an outgoing request by token and peer.
    Response {
        /// The request's exchange.
        id: ExchangeId,
        /// The response.
        packet: Packet,
    },
    /// A CON message sent with [`Endpoint::send_message`] was acknowledged.
    Acked {
        /// The exchange.
        id: ExchangeId,
    },
    /// The peer answered with RST (e.g. rejecting a notification, RFC 7641 §3.6).
    Reset {
        /// The exchange.
        id: ExchangeId,
    },
    /// No answer after MAX_RETRANSMIT retransmissions or the response timeout.
    Timeout {
        /// The exchange.
        id: ExchangeId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Expects a response; subject to NSTART.
    Request,
    /// A request with Observe=0: stays open for notifications after the first response.
    ObserveRequest,
    /// A message that expects only an ACK (CON) or nothing (NON).
    Message,
}

#[derive(Debug)]
enum State {
    /// Waiting for the NSTART slot of its peer.
    Queued,
    /// CON sent, waiting for ACK/RST; retransmitted at `at`.
    AwaitAck {
        retries: u32,
        timeout: Duration,
        at: Instant,
    },
    /// Acknowledged (or NON), waiting for a response until `until`.
    AwaitResponse { until: Instant },
    /// Open observation (client role): notifications keep arriving.
    Observing,
    /// NON message sent; remembered until `until` to match an RST.
    NonSent { until: Instant },
}

#[derive(Debug)]
struct Outgoing {
    peer: SocketAddr,
    mid: u16,
    token: Vec<u8>,
    packet: Packet,
    bytes: Vec<u8>,
    con: bool,
    kind: Kind,
    state: State,
}

impl Outgoing {
    /// Holds the peer's NSTART slot (RFC 7252 §4.7).
    fn outstanding(&self) -> bool {
        matches!(self.kind, Kind::Request | Kind::ObserveRequest)
            && match self.state {
                State::AwaitAck { .. } => true,
                State::AwaitResponse { .. } => !self.con,
                _ => false,
            }
    }
    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::AwaitAck { at, .. } => Some(at),
            State::AwaitResponse { until } | State::NonSent { until } => Some(until),
            State::Queued | State::Observing => None,
        }
    }
}

#[derive(Debug)]
struct Dedup {
    expires: Instant,
    /// Hash of the datagram first seen with this MID. A retransmission is the
    /// same message (RFC 7252 §4.2), so a different datagram under a MID still
    /// remembered is a new message from a peer that reused the MID early (the
    /// npm `coap` agent behind lwm2m-node-lib starts every request at a
    /// random MID from one socket): it is processed, not swallowed.
    fingerprint: u64,
    /// The reply sent for this MID, replayed on duplicates; `None` while the
    /// request is still being processed (duplicates are then ignored).
    reply: Option<Vec<u8>>,
    /// Insertion number, matching the entry to its [`Endpoint::dedup_order`] record.
    seq: u64,
}

/// A dedup entry's place in expiry order: (expires, seq, key).
type DedupRecord = (Instant, u64, (SocketAddr, u16));

/// The CoAP message layer for one socket.
#[derive(Debug)]
pub struct Endpoint {
    params: Params,
    rng: Rng,
    next_mid: u16,
    next_id: ExchangeId,
    outgoing: BTreeMap<ExchangeId, Outgoing>,
    dedup: HashMap<(SocketAddr, u16), Dedup>,
    /// Dedup entries by expiry, CON entries then NON ones (each queue is in
    /// expiry order, as one lifetime applies to all its entries): expiry and
    /// eviction pop from the fronts instead of scanning the whole cache. A
    /// record whose entry was replaced since (another `seq`) is skipped.
    dedup_order: [VecDeque<DedupRecord>; 2],
    next_dedup_seq: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
}

impl Endpoint {
    /// Creates an endpoint; `seed` drives MIDs, tokens and jitter.
    pub fn new(params: Params, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let next_mid = (rng.next_u64() & 0xFFFF) as u16;
        Endpoint {
            params,
            rng,
            next_mid,
            next_id: 1,
            outgoing: BTreeMap::new(),
            dedup: HashMap::new(),
            dedup_order: [VecDeque::new(), VecDeque::new()],
            next_dedup_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The transmission parameters in use.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// A fresh 8-byte token (RFC 7252 §5.3.1).
    pub fn new_token(&mut self) -> Vec<u8> {
        self.rng.token()
    }

    /// Overrides the next MID (tests reproducing wire captures).
    pub fn set_next_mid(&mut self, mid: u16) {
        self.next_mid = mid;
    }

    fn alloc_mid(&mut self) -> u16 {
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        mid
    }

    /// Random mutable access for the layers above (e.g. registration jitter).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    // ---- B. inputs ----

    /// Processes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.purge(now);
        let packet = match msg::classify(bytes) {
            Classified::Message(p) => p,
            Classified::RejectCon(mid) => {
                self.send_empty(from, MessageType::Reset, mid);
                return;
            }
            Classified::Ignore => return,
        };
        let code = Code::of(&packet);
        let mid = packet.header.message_id;
        match msg::type_of(&packet) {
            MessageType::Acknowledgement => self.on_ack(now, from, packet),
            MessageType::Reset => self.on_reset(now, from, mid),
            t @ (MessageType::Confirmable | MessageType::NonConfirmable) => {
                let con = t == MessageType::Confirmable;
                if code == Code::EMPTY {
                    // RFC 7252 §4.3: an empty CON is a ping, answered with RST.
                    if con {
                        self.send_empty(from, MessageType::Reset, mid);
                    }
                    return;
                }
                let fingerprint = fingerprint(bytes);
                if let Some(d) = self
                    .dedup
                    .get(&(from, mid))
                    .filter(|d| d.fingerprint == fingerprint && d.expires > now)
                {
                    // §4.5: acknowledge duplicates the same way, process once.
                    if let (true, Some(reply)) = (con, d.reply.clone()) {
                        self.transmits.push_back(Transmit {
                            to: from,
                            bytes: reply,
                        });
                    }
                    return;
                }
                let life = if con {
                    self.params.exchange_lifetime
                } else {
                    self.params.non_lifetime
                };
                self.insert_dedup((from, mid), now + life, fingerprint, None, con);
                if code.class() == 0 {
                    self.events
                        .push_back(EndpointEvent::Request(InboundRequest {
                            peer: from,
                            packet,
                            fingerprint,
                        }));
                } else {
                    self.on_separate_response(now, from, con, packet);
                }
            }
        }
    }

    /// Fires due retransmissions and timeouts; safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.purge(now);
        let due: Vec<ExchangeId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(o) = self.outgoing.get_mut(&id) else {
                continue;
            };
            match &mut o.state {
                State::AwaitAck {
                    retries,
                    timeout,
                    at,
                } if *retries < self.params.max_retransmit => {
                    // RFC 7252 §4.2: double the timeout per retransmission.
                    *retries += 1;
                    *timeout *= 2;
                    *at = now + *timeout;
                    self.transmits.push_back(Transmit {
                        to: o.peer,
                        bytes: o.bytes.clone(),
                    });
                }
                State::NonSent { .. } if o.kind == Kind::Message => {
                    self.finish(now, id);
                }
                _ => {
                    self.finish(now, id);
                    self.events.push_back(EndpointEvent::Timeout { id });
                }
            }
        }
    }

    // ---- C. commands ----

    /// Sends a request (CON or NON as set in its header). A token is assigned
    /// when it has none. Queued behind another outstanding request to the same
    /// peer (NSTART = 1, RFC 7252 §4.7).
    pub fn send_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut packet: Packet,
    ) -> ExchangeId {
        if packet.get_token().is_empty() {
            let token = self.new_token();
            packet.set_token(token);
        }
        let observe = packet
            .get_first_option(CoapOption::Observe)
            .is_some_and(|v| v.is_empty());
        let kind = if observe {
            Kind::ObserveRequest
        } else {
            Kind::Request
        };
        self.enqueue(now, peer, packet, kind)
    }

    /// Sends a message that is not a request (notification, separate
    /// response). CON ones are retransmitted until ACK/RST; NON ones are
    /// remembered for NON_LIFETIME to match an RST. Not subject to NSTART.
    pub fn send_message(&mut self, now: Instant, peer: SocketAddr, packet: Packet) -> ExchangeId {
        self.enqueue(now, peer, packet, Kind::Message)
    }

    /// Answers a request: piggy-backed in the ACK for a CON, a NON otherwise.
    /// The reply is cached so a duplicate gets the same bytes (RFC 7252 §4.5).
    pub fn respond(&mut self, now: Instant, request: &InboundRequest, mut response: Packet) {
        if response.get_token().is_empty() {
            response.set_token(request.packet.get_token().to_vec());
        }
        if request.confirmable() {
            response.header.set_type(MessageType::Acknowledgement);
            response.header.message_id = request.packet.header.message_id;
        } else {
            response.header.set_type(MessageType::NonConfirmable);
            response.header.message_id = self.alloc_mid();
        }
        let Some(bytes) = msg::encode(&response) else {
            return;
        };
        match self.dedup.get_mut(&request.key()) {
            // The entry made when the request arrived: its lifetime runs from then.
            Some(d) if d.fingerprint == request.fingerprint => d.reply = Some(bytes.clone()),
            _ => {
                let con = request.confirmable();
                let life = if con {
                    self.params.exchange_lifetime
                } else {
                    self.params.non_lifetime
                };
                let fingerprint = request.fingerprint;
                let reply = Some(bytes.clone());
                self.insert_dedup(request.key(), now + life, fingerprint, reply, con);
            }
        }
        self.transmits.push_back(Transmit {
            to: request.peer,
            bytes,
        });
    }

    /// Forgets an exchange without an event (e.g. abandoning an observation
    /// or a download); frees its NSTART slot.
    pub fn cancel(&mut self, now: Instant, id: ExchangeId) {
        self.finish(now, id);
    }

    /// True while the exchange is still open.
    pub fn is_open(&self, id: ExchangeId) -> bool {
        self.outgoing.contains_key(&id)
    }

    // ---- D. outputs ----

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the layer above.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outgoing.values().filter_map(Outgoing::deadline).min()
    }

    // ---- internals ----

    fn enqueue(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut packet: Packet,
        kind: Kind,
    ) -> ExchangeId {
        let con = msg::type_of(&packet) == MessageType::Confirmable;
        if !con {
            packet.header.set_type(MessageType::NonConfirmable);
        }
        let id = self.next_id;
        self.next_id += 1;
        let token = packet.get_token().to_vec();
        let busy = kind != Kind::Message
            && self
                .outgoing
                .values()
                .any(|o| o.peer == peer && o.outstanding());
        let o = Outgoing {
            peer,
            mid: 0,
            token,
            packet,
            bytes: Vec::new(),
            con,
            kind,
            state: State::Queued,
        };
        self.outgoing.insert(id, o);
        if !busy {
            self.start(now, id);
        }
        id
    }

    /// Assigns the MID, encodes and sends a queued exchange.
    fn start(&mut self, now: Instant, id: ExchangeId) {
        let mid = self.alloc_mid();
        let jitter_ms = u64::try_from(self.params.ack_jitter.as_millis()).unwrap_or(u64::MAX);
        let first =
            self.params.ack_timeout + Duration::from_millis(self.rng.below_inclusive(jitter_ms));
        let non_life = self.params.non_lifetime;
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        o.mid = mid;
        o.packet.header.message_id = mid;
        let Some(bytes) = msg::encode(&o.packet) else {
            self.outgoing.remove(&id);
            self.events.push_back(EndpointEvent::Timeout { id });
            return;
        };
        o.bytes = bytes.clone();
        // RFC 7252 §4.2: the first timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT × 1.5].
        o.state = if o.con {
            State::AwaitAck {
                retries: 0,
                timeout: first,
                at: now + first,
            }
        } else if o.kind == Kind::Message {
            State::NonSent {
                until: now + non_life,
            }
        } else {
            State::AwaitResponse {
                until: now + non_life,
            }
        };
        let to = o.peer;
        self.transmits.push_back(Transmit { to, bytes });
    }

    /// Removes an exchange and starts the next queued one for its peer.
    fn finish(&mut self, now: Instant, id: ExchangeId) {
        if let Some(o) = self.outgoing.remove(&id) {
            self.start_next(now, o.peer);
        }
    }

    fn start_next(&mut self, now: Instant, peer: SocketAddr) {
        if self
            .outgoing
            .values()
            .any(|o| o.peer == peer && o.outstanding())
        {
            return;
        }
        let next = self
            .outgoing
            .iter()
            .find(|(_, o)| o.peer == peer && matches!(o.state, State::Queued))
            .map(|(id, _)| *id);
        if let Some(id) = next {
            self.start(now, id);
        }
    }

    fn on_ack(&mut self, now: Instant, from: SocketAddr, packet: Packet) {
        let mid = packet.header.message_id;
        let found = self
            .outgoing
            .iter()
            .find(|(_, o)| {
                o.peer == from && o.mid == mid && matches!(o.state, State::AwaitAck { .. })
            })
            .map(|(id, _)| *id);
        let Some(id) = found else { return };
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        let code = Code::of(&packet);
        match o.kind {
            Kind::Message => {
                self.finish(now, id);
                self.events.push_back(EndpointEvent::Acked { id });
            }
            Kind::Request | Kind::ObserveRequest if code == Code::EMPTY => {
                // §5.2.2: empty ACK; the response comes separately.
                o.state = State::AwaitResponse {
                    until: now + self.params.separate_response_timeout,
                };
                let peer = o.peer;
                self.start_next(now, peer);
            }
            Kind::Request | Kind::ObserveRequest => {
                if packet.get_token() != o.token.as_slice() {
                    return; // §5.3.2: a piggy-backed response must carry the request's token
                }
                self.deliver_response(now, id, packet);
            }
        }
    }

    fn on_reset(&mut self, now: Instant, from: SocketAddr, mid: u16) {
        let found = self
            .outgoing
            .iter()
            .find(|(_, o)| {
                o.peer == from
                    && o.mid == mid
                    && matches!(
                        o.state,
                        State::AwaitAck { .. }
                            | State::NonSent { .. }
                            | State::AwaitResponse { .. }
                    )
            })
            .map(|(id, _)| *id);
        if let Some(id) = found {
            self.finish(now, id);
            self.events.push_back(EndpointEvent::Reset { id });
        }
    }

    fn on_separate_response(&mut self, now: Instant, from: SocketAddr, con: bool, packet: Packet) {
        let mid = packet.header.message_id;
        let token = packet.get_token().to_vec();
        let found = self
            .outgoing
            .iter()
            .find(|(_, o)| {
                o.peer == from
                    && o.token == token
                    && matches!(o.kind, Kind::Request | Kind::ObserveRequest)
                    && !matches!(o.state, State::Queued)
            })
            .map(|(id, _)| *id);
        let Some(id) = found else {
            // §4.2/§4.3 and RFC 7641 §3.6: reject a response nobody waits for.
            self.send_empty(from, MessageType::Reset, mid);
            self.dedup_reply(from, mid, MessageType::Reset);
            return;
        };
        if con {
            self.send_empty(from, MessageType::Acknowledgement, mid);
            self.dedup_reply(from, mid, MessageType::Acknowledgement);
        }
        self.deliver_response(now, id, packet);
    }

    fn deliver_response(&mut self, now: Instant, id: ExchangeId, packet: Packet) {
        let keep = self
            .outgoing
            .get(&id)
            .is_some_and(|o| o.kind == Kind::ObserveRequest)
            && packet.get_first_option(CoapOption::Observe).is_some()
            && Code::of(&packet).is_success();
        if keep {
            if let Some(o) = self.outgoing.get_mut(&id) {
                let peer = o.peer;
                o.state = State::Observing;
                self.start_next(now, peer);
            }
        } else {
            self.finish(now, id);
        }
        self.events
            .push_back(EndpointEvent::Response { id, packet });
    }

    fn send_empty(&mut self, to: SocketAddr, kind: MessageType, mid: u16) {
        if let Some(bytes) = msg::encode(&msg::empty(kind, mid)) {
            self.transmits.push_back(Transmit { to, bytes });
        }
    }

    fn dedup_reply(&mut self, from: SocketAddr, mid: u16, kind: MessageType) {
        if let (Some(d), Some(bytes)) = (
            self.dedup.get_mut(&(from, mid)),
            msg::encode(&msg::empty(kind, mid)),
        ) {
            d.reply = Some(bytes);
        }
    }

    fn insert_dedup(
        &mut self,
        key: (SocketAddr, u16),
        expires: Instant,
        fingerprint: u64,
        reply: Option<Vec<u8>>,
        con: bool,
    ) {
        if !self.dedup.contains_key(&key) {
            // Bounded cache: evict the entries that would expire first.
            while self.dedup.len() >= self.params.dedup_capacity.max(1) && self.evict_first() {}
        }
        let seq = self.next_dedup_seq;
        self.next_dedup_seq += 1;
        let queue = &mut self.dedup_order[usize::from(!con)];
        queue.push_back((expires, seq, key));
        self.dedup.insert(
            key,
            Dedup {
                expires,
                fingerprint,
                reply,
                seq,
            },
        );
        if self.dedup_order.iter().map(VecDeque::len).sum::<usize>()
            > 2 * self.params.dedup_capacity.max(16)
        {
            // Many replaced entries: drop their stale records.
            let dedup = &self.dedup;
            for q in &mut self.dedup_order {
                q.retain(|(_, seq, key)| dedup.get(key).is_some_and(|d| d.seq == *seq));
            }
        }
    }

    /// Removes the live entry whose record is first in either queue (the
    /// earlier expiry of the two fronts); false when nothing is left.
    fn evict_first(&mut self) -> bool {
        loop {
            let [con, non] = &self.dedup_order;
            let pick = match (con.front(), non.front()) {
                (Some(a), Some(b)) => usize::from(b.0 < a.0),
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (None, None) => return false,
            };
            let Some((_, seq, key)) = self.dedup_order[pick].pop_front() else {
                return false;
            };
            if self.dedup.get(&key).is_some_and(|d| d.seq == seq) {
                self.dedup.remove(&key);
                return true;
            }
        }
    }

    /// Forgets expired MIDs: pops expired records off the queue fronts.
    fn purge(&mut self, now: Instant) {
        for q in &mut self.dedup_order {
            while let Some(&(expires, seq, key)) = q.front() {
                if expires > now {
                    break;
                }
                q.pop_front();
                if self.dedup.get(&key).is_some_and(|d| d.seq == seq) {
                    self.dedup.remove(&key);
                }
            }
        }
    }
}

/// Identifies a datagram for dedup (not security relevant: a peer can only
/// confuse its own retransmissions). A multiply-rotate hash over 8-byte words:
/// every datagram is hashed, and SipHash over a 1 KiB block cost more than the
/// rest of the message layer.
fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517C_C1B7_2722_0A95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h, u64::from_le_bytes(b));
    }
    for b in words.remainder() {
        h = mix(h, u64::from(*b));
    }
    // Final avalanche (splitmix64) so nearby datagrams spread.
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::RequestType;

    fn peer() -> SocketAddr {
        "192.0.2.1:5683".parse().unwrap()
    }

    fn get(mid: u16, con: bool) -> Vec<u8> {
        let mut p = msg::request(RequestType::Get, &["3", "0"]);
        p.header.message_id = mid;
        p.header.set_type(if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        p.set_token(vec![7]);
        msg::encode(&p).unwrap()
    }

    #[test]
    fn ping_gets_rst_and_garbage_con_gets_rst() {
        let mut ep = Endpoint::new(Params::default(), 1);
        let now = Instant::now();
        ep.handle_datagram(now, peer(), &[0x40, 0x00, 0xAB, 0xCD]);
        assert_eq!(
            ep.poll_transmit().unwrap().bytes,
            vec![0x70, 0x00, 0xAB, 0xCD]
        );
        ep.handle_datagram(now, peer(), &[0x40, 0x01, 0x00, 0x09, 0xBF]);
        assert_eq!(
            ep.poll_transmit().unwrap().bytes,
            vec![0x70, 0x00, 0x00, 0x09]
        );
        // malformed NON: silently ignored, no event
        ep.handle_datagram(now, peer(), &[0x50, 0x01, 0x00, 0x0A, 0xBF]);
        assert!(ep.poll_transmit().is_none());
        assert!(ep.poll_event().is_none());
    }

    #[test]
    fn duplicate_con_replays_same_reply_and_is_processed_once() {
        let mut ep = Endpoint::new(Params::default(), 1);
        let now = Instant::now();
        ep.handle_datagram(now, peer(), &get(0x1234, true));
        let Some(EndpointEvent::Request(req)) = ep.poll_event() else {
            panic!()
        };
        // duplicate before the answer: ignored
        ep.handle_datagram(now, peer(), &get(0x1234, true));
        assert!(ep.poll_event().is_none() && ep.poll_transmit().is_none());
        let mut resp = msg::response_to(&req.packet, Code::CONTENT);
        resp.payload = b"x".to_vec();
        ep.respond(now, &req, resp);
        let first = ep.poll_transmit().unwrap().bytes;
        assert_eq!(&first[..4], &[0x61, 0x45, 0x12, 0x34]);
        ep.handle_datagram(now + Duration::from_secs(10), peer(), &get(0x1234, true));
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.poll_transmit().unwrap().bytes, first);
        // after EXCHANGE_LIFETIME the MID is new again
        ep.handle_datagram(now + Duration::from_secs(248), peer(), &get(0x1234, true));
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Request(_))));
        // NON duplicates are dropped silently
        ep.handle_datagram(now, peer(), &get(0x2000, false));
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Request(_))));
        ep.handle_datagram(now, peer(), &get(0x2000, false));
        assert!(ep.poll_event().is_none());
    }

    #[test]
    fn a_different_message_under_a_remembered_mid_is_a_new_request() {
        // lwm2m-node-lib sends each request from its server socket with a
        // random MID; one in a few hundred repeats a MID we still remember.
        let mut ep = Endpoint::new(Params::default(), 1);
        let now = Instant::now();
        ep.handle_datagram(now, peer(), &get(0x0042, true));
        let Some(EndpointEvent::Request(first)) = ep.poll_event() else {
            panic!()
        };
        ep.respond(now, &first, msg::response_to(&first.packet, Code::CONTENT));
        let first_reply = ep.poll_transmit().unwrap().bytes;
        let mut other = msg::request(RequestType::Get, &["9", "0", "7"]);
        other.header.message_id = 0x0042;
        other.set_token(vec![8, 9]);
        ep.handle_datagram(now, peer(), &msg::encode(&other).unwrap());
        let Some(EndpointEvent::Request(second)) = ep.poll_event() else {
            panic!("the new request was taken for a duplicate")
        };
        assert_eq!(second.packet.get_token(), &[8, 9]);
        assert!(ep.poll_transmit().is_none(), "the old reply was replayed");
        ep.respond(
            now,
            &second,
            msg::response_to(&second.packet, Code::CONTENT),
        );
        let second_reply = ep.poll_transmit().unwrap().bytes;
        assert_ne!(second_reply, first_reply);
        // Its retransmission now replays its own reply.
        ep.handle_datagram(now, peer(), &msg::encode(&other).unwrap());
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.poll_transmit().unwrap().bytes, second_reply);
    }

    #[test]
    fn fingerprints_tell_datagrams_apart() {
        let base = get(0x1234, true);
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(fingerprint(&base)));
        assert_eq!(fingerprint(&base), fingerprint(&base.clone()));
        // Any one byte changed, or one byte more or less, is another datagram.
        for i in 0..base.len() {
            let mut d = base.clone();
            d[i] ^= 0x01;
            assert!(seen.insert(fingerprint(&d)), "byte {i}");
        }
        let mut longer = base.clone();
        longer.push(0);
        assert!(seen.insert(fingerprint(&longer)));
        assert!(seen.insert(fingerprint(&base[..base.len() - 1])));
        let block = vec![0xAB; 1024];
        let mut other = block.clone();
        other[1000] = 0xAC;
        assert_ne!(fingerprint(&block), fingerprint(&other));
    }

    #[test]
    fn dedup_cache_is_bounded() {
        let mut ep = Endpoint::new(
            Params {
                dedup_capacity: 4,
                ..Params::default()
            },
            1,
        );
        let now = Instant::now();
        for mid in 0..10 {
            ep.handle_datagram(
                now + Duration::from_millis(mid.into()),
                peer(),
                &get(mid, true),
            );
        }
        assert_eq!(ep.dedup.len(), 4);
        while ep.poll_event().is_some() {}
        // The oldest went first: 9 is still a duplicate, 0 is new again.
        let later = now + Duration::from_millis(20);
        ep.handle_datagram(later, peer(), &get(9, true));
        assert!(ep.poll_event().is_none());
        ep.handle_datagram(later, peer(), &get(0, true));
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Request(_))));
        assert_eq!(ep.dedup.len(), 4);
    }

    #[test]
    fn dedup_entries_expire_per_lifetime_and_replaced_ones_stay() {
        let mut ep = Endpoint::new(Params::default(), 1);
        let t0 = Instant::now();
        ep.handle_datagram(t0, peer(), &get(1, true));
        ep.handle_datagram(t0, peer(), &get(2, false));
        let Some(EndpointEvent::Request(con)) = ep.poll_event() else {
            panic!()
        };
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Request(_))));
        // Another message under MID 1 replaces the entry a second later.
        let mut other = msg::request(RequestType::Get, &["9"]);
        other.header.message_id = 1;
        other.set_token(vec![9]);
        let t1 = t0 + Duration::from_secs(1);
        ep.handle_datagram(t1, peer(), &msg::encode(&other).unwrap());
        let Some(EndpointEvent::Request(second)) = ep.poll_event() else {
            panic!()
        };
        ep.respond(t1, &con, msg::response_to(&con.packet, Code::CONTENT));
        ep.respond(t1, &second, msg::response_to(&second.packet, Code::CONTENT));
        while ep.poll_transmit().is_some() {}
        // NON_LIFETIME (145 s) ends the NON entry only.
        let t = t0 + Duration::from_secs(146);
        ep.handle_timeout(t);
        assert_eq!(ep.dedup.len(), 1);
        // The first MID-1 entry's expiry (247 s) does not end its replacement.
        ep.handle_timeout(t0 + Duration::from_secs(247));
        assert_eq!(ep.dedup.len(), 1);
        ep.handle_datagram(
            t0 + Duration::from_secs(247),
            peer(),
            &msg::encode(&other).unwrap(),
        );
        assert!(ep.poll_event().is_none(), "still a duplicate");
        assert!(ep.poll_transmit().is_some(), "its reply replayed");
        ep.handle_timeout(t1 + Duration::from_secs(247));
        assert!(ep.dedup.is_empty());
        assert!(ep.dedup_order.iter().all(VecDeque::is_empty));
    }

    #[test]
    fn con_retransmits_with_doubling_then_times_out() {
        for seed in 0..20 {
            let mut ep = Endpoint::new(Params::default(), seed);
            let t0 = Instant::now();
            let id = ep.send_request(t0, peer(), msg::request(RequestType::Post, &["rd"]));
            let first = ep.poll_transmit().unwrap().bytes;
            let mut sends = vec![Duration::ZERO];
            let mut now = t0;
            while let Some(t) = ep.poll_timeout() {
                now = t;
                ep.handle_timeout(now);
                if let Some(tx) = ep.poll_transmit() {
                    assert_eq!(tx.bytes, first, "retransmission reuses MID and bytes");
                    sends.push(now - t0);
                }
            }
            assert_eq!(sends.len(), 5, "1 + MAX_RETRANSMIT");
            let t = sends[1];
            assert!(
                t >= Duration::from_secs(2) && t <= Duration::from_secs(3),
                "{t:?}"
            );
            assert_eq!(sends[2], t * 3);
            assert_eq!(sends[3], t * 7);
            assert_eq!(sends[4], t * 15);
            assert_eq!(now - t0, t * 31);
            assert!(matches!(ep.poll_event(), Some(EndpointEvent::Timeout { id: i }) if i == id));
        }
    }

    #[test]
    fn nstart_one_queues_second_request_and_matches_by_token() {
        let mut ep = Endpoint::new(Params::default(), 3);
        let now = Instant::now();
        let a = ep.send_request(now, peer(), msg::request(RequestType::Get, &["a"]));
        let b = ep.send_request(now, peer(), msg::request(RequestType::Get, &["b"]));
        let tx = ep.poll_transmit().unwrap();
        assert!(ep.poll_transmit().is_none(), "second request waits");
        let sent = Packet::from_bytes(&tx.bytes).unwrap();
        // piggy-backed response with the wrong token is ignored
        let mut bad = msg::response_to(&sent, Code::CONTENT);
        bad.set_token(vec![0xEE]);
        bad.header.set_type(MessageType::Acknowledgement);
        bad.header.message_id = sent.header.message_id;
        ep.handle_datagram(now, peer(), &msg::encode(&bad).unwrap());
        assert!(ep.poll_event().is_none());
        // empty ACK frees the slot; separate CON response is ACKed and delivered
        ep.handle_datagram(
            now,
            peer(),
            &msg::encode(&msg::empty(
                MessageType::Acknowledgement,
                sent.header.message_id,
            ))
            .unwrap(),
        );
        assert!(ep.poll_transmit().is_some(), "b starts after the ACK");
        let mut sep = msg::response_to(&sent, Code::CONTENT);
        sep.header.set_type(MessageType::Confirmable);
        sep.header.message_id = 0x7777;
        ep.handle_datagram(now, peer(), &msg::encode(&sep).unwrap());
        assert_eq!(
            ep.poll_transmit().unwrap().bytes,
            vec![0x60, 0x00, 0x77, 0x77]
        );
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Response { id, .. }) if id == a));
        assert!(ep.is_open(b));
        // an unexpected response is rejected with RST
        let mut stray = msg::response_to(&sent, Code::CONTENT);
        stray.set_token(vec![1, 2, 3]);
        stray.header.set_type(MessageType::NonConfirmable);
        stray.header.message_id = 0x0101;
        ep.handle_datagram(now, peer(), &msg::encode(&stray).unwrap());
        assert_eq!(
            ep.poll_transmit().unwrap().bytes,
            vec![0x70, 0x00, 0x01, 0x01]
        );
    }

    #[test]
    fn rst_to_non_message_is_reported() {
        let mut ep = Endpoint::new(Params::default(), 3);
        let now = Instant::now();
        let mut n = msg::response_to(&Packet::new(), Code::CONTENT);
        n.header.set_type(MessageType::NonConfirmable);
        n.set_token(vec![1, 2]);
        let id = ep.send_message(now, peer(), n);
        let tx = Packet::from_bytes(&ep.poll_transmit().unwrap().bytes).unwrap();
        ep.handle_datagram(
            now,
            peer(),
            &msg::encode(&msg::empty(MessageType::Reset, tx.header.message_id)).unwrap(),
        );
        assert!(matches!(ep.poll_event(), Some(EndpointEvent::Reset { id: i }) if i == id));
    }
}
