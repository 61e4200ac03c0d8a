//! The server side: associations keyed by peer address, every piece of
//! state an unauthenticated sender can create capped before it is created.
//!
//! - A datagram from an unknown address opens an association only if it is
//!   a plaintext ClientHello (RFC 6347 §4.2.1); anything else is dropped
//!   without an answer.
//! - Half-open associations are capped in total and per source IP, and
//!   expire after [`ServerLimits::handshake_timeout`]. At the total cap the
//!   oldest one that never answered our HelloVerifyRequest goes first (a
//!   spoofed source never can), so a flood cannot starve real clients.
//! - Established associations are capped and expire when idle; the driver
//!   closes them earlier when their registration ends.
//! - A record that fails authentication or is replayed on an established
//!   association is dropped and the association kept (RFC 6347 §4.1.2.7).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_shared::TransportProtocol;

use super::config::certificate_names;
use super::record::{client_hello_has_cookie, first_record, without_change_cipher_spec};
use super::{Datagram, DtlsError, PeerIdentity, ServerCredentials};

/// Caps on what peers can make the server hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Established associations.
    pub max_sessions: usize,
    /// Handshakes in progress, all sources.
    pub max_half_open: usize,
    /// Handshakes in progress from one IP address.
    pub max_half_open_per_ip: usize,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// An established association with no datagram for this long is closed.
    pub idle_timeout: Duration,
    /// A new ClientHello from the address of an established association
    /// replaces it only after the association was idle this long (a device
    /// that restarted behind the same NAT mapping), so a spoofed ClientHello
    /// cannot tear down a live session.
    pub replace_after_idle: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_sessions: 20_000,
            max_half_open: 512,
            // Many devices may share one NAT address and boot together.
            max_half_open_per_ip: 64,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(86_400),
            replace_after_idle: Duration::from_secs(30),
        }
    }
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Established associations now.
    pub established: usize,
    /// Handshakes in progress now.
    pub half_open: usize,
    /// Datagrams from unknown addresses that were not a ClientHello.
    pub dropped_datagrams: u64,
    /// ClientHellos refused at a cap (or evicted from one).
    pub refused_hellos: u64,
    /// Handshakes that failed (alert, verification, timeout).
    pub failed_handshakes: u64,
    /// Records dropped on established associations (bad MAC, replays).
    pub rejected_records: u64,
}

/// What the server reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A handshake completed: `peer` is `identity`.
    Established {
        /// The peer.
        peer: SocketAddr,
        /// Who it proved to be.
        identity: PeerIdentity,
    },
    /// Decrypted application data (one CoAP message) from `peer`.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The plaintext.
        bytes: Vec<u8>,
    },
    /// A handshake failed.
    Failed {
        /// The peer.
        peer: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// An established association ended (peer's close_notify, idle,
    /// replaced, or closed by the driver).
    Closed {
        /// The peer.
        peer: SocketAddr,
    },
}

#[derive(Debug)]
struct Session {
    /// `None` while the handshake runs.
    identity: Option<PeerIdentity>,
    started: Instant,
    last_seen: Instant,
    /// Datagrams received during the handshake: 1 means the peer never
    /// answered our HelloVerifyRequest.
    datagrams: u32,
}

/// DTLS server associations.
pub struct DtlsServer {
    ep: Endpoint,
    limits: ServerLimits,
    sessions: HashMap<SocketAddr, Session>,
    /// Kept with every change of `sessions`, so no datagram pays a scan of
    /// all sessions: the half-open ones (at most `max_half_open`), their
    /// count per source IP, and the number of established ones.
    half_open: HashSet<SocketAddr>,
    half_open_by_ip: HashMap<IpAddr, usize>,
    established: usize,
    transmits: VecDeque<Datagram>,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
    next_sweep: Option<Instant>,
}

impl std::fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How often idle established associations are looked for.
const SWEEP: Duration = Duration::from_secs(1);

impl DtlsServer {
    /// A server authenticating clients with `credentials`.
    pub fn new(credentials: &ServerCredentials, limits: ServerLimits) -> Result<Self, DtlsError> {
        let config = credentials.handshake_config()?;
        Ok(DtlsServer {
            ep: Endpoint::new(
                SocketAddr::from(([0, 0, 0, 0], 0)),
                TransportProtocol::UDP,
                Some(config),
            ),
            limits,
            sessions: HashMap::new(),
            half_open: HashSet::new(),
            half_open_by_ip: HashMap::new(),
            established: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
            next_sweep: None,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            established: self.established,
            half_open: self.half_open.len(),
            ..self.stats.clone()
        }
    }

    /// Recounts from `sessions` and compares with the kept counters.
    #[cfg(test)]
    pub(crate) fn counters_match(&self) -> bool {
        let established = self
            .sessions
            .values()
            .filter(|s| s.identity.is_some())
            .count();
        let half_open: HashSet<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.identity.is_none())
            .map(|(a, _)| *a)
            .collect();
        let mut by_ip: HashMap<IpAddr, usize> = HashMap::new();
        for a in &half_open {
            *by_ip.entry(a.ip()).or_default() += 1;
        }
        established == self.established
            && half_open == self.half_open
            && by_ip == self.half_open_by_ip
    }

    fn insert_half_open(&mut self, peer: SocketAddr, session: Session) {
        if let Some(old) = self.sessions.insert(peer, session) {
            self.forget(peer, &old);
        }
        self.half_open.insert(peer);
        *self.half_open_by_ip.entry(peer.ip()).or_default() += 1;
    }

    /// A half-open association becomes a session of `identity`.
    fn promote(&mut self, peer: SocketAddr, identity: PeerIdentity) -> bool {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return false;
        };
        if s.identity.is_some() {
            return false;
        }
        s.identity = Some(identity);
        self.half_open.remove(&peer);
        self.uncount_ip(peer);
        self.established += 1;
        true
    }

    fn take_session(&mut self, peer: SocketAddr) -> Option<Session> {
        let s = self.sessions.remove(&peer)?;
        self.forget(peer, &s);
        Some(s)
    }

    /// Takes a removed `session` out of the counters.
    fn forget(&mut self, peer: SocketAddr, session: &Session) {
        if session.identity.is_some() {
            self.established = self.established.saturating_sub(1);
        } else if self.half_open.remove(&peer) {
            self.uncount_ip(peer);
        }
    }

    fn uncount_ip(&mut self, peer: SocketAddr) {
        if let Some(n) = self.half_open_by_ip.get_mut(&peer.ip()) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.half_open_by_ip.remove(&peer.ip());
            }
        }
    }

    /// Who `peer` proved to be, once its handshake completed.
    pub fn identity(&self, peer: SocketAddr) -> Option<&PeerIdentity> {
        self.sessions.get(&peer).and_then(|s| s.identity.as_ref())
    }

    /// The cipher suite negotiated with `peer` (IANA number, e.g. 0xC0A8).
    pub fn cipher_suite(&self, peer: SocketAddr) -> Option<u16> {
        self.ep
            .get_connection_state(peer)
            .and_then(|s| s.cipher_suite().map(|c| c.id() as u16))
    }

    /// Feeds one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let hello = first_record(bytes).is_some_and(|r| r.is_client_hello());
        let replace = match self.sessions.get(&from) {
            Some(s) if s.identity.is_some() && hello => {
                if now.saturating_duration_since(s.last_seen) < self.limits.replace_after_idle {
                    self.stats.refused_hellos += 1;
                    return;
                }
                true
            }
            // A half-open handshake past its cookie exchange that gets a
            // fresh (cookieless) ClientHello: the client gave up on it and
            // starts over (its last flight may be the one lost).
            Some(s) if s.identity.is_none() && s.datagrams > 1 => {
                client_hello_has_cookie(bytes) == Some(false)
            }
            _ => false,
        };
        if replace {
            self.drop_session(now, from, true);
        }
        if !self.sessions.contains_key(&from) {
            if !hello {
                self.stats.dropped_datagrams += 1;
                return;
            }
            if !self.admit(now, from) {
                self.stats.refused_hellos += 1;
                return;
            }
            self.insert_half_open(
                from,
                Session {
                    identity: None,
                    started: now,
                    last_seen: now,
                    datagrams: 0,
                },
            );
        }
        // `last_seen` moves only for what authenticates (below): a spoofed
        // datagram must not keep a dead session from expiring or being replaced.
        let established = self
            .sessions
            .get_mut(&from)
            .map(|s| {
                s.datagrams = s.datagrams.saturating_add(1);
                if s.identity.is_none() {
                    s.last_seen = now;
                }
                s.identity.is_some()
            })
            .unwrap_or(false);
        let bytes = if established {
            match without_change_cipher_spec(bytes) {
                Some(b) => b,
                None => {
                    self.stats.rejected_records += 1;
                    return;
                }
            }
        } else {
            bytes.into()
        };
        match self.ep.read(now, from, None, BytesMut::from(&bytes[..])) {
            Ok(events) => {
                self.collect_transmits(None);
                if events
                    .iter()
                    .any(|e| matches!(e, EndpointEvent::ApplicationData(_)))
                    && let Some(s) = self.sessions.get_mut(&from)
                {
                    s.last_seen = now;
                }
                for event in events {
                    self.on_event(now, from, event);
                }
            }
            Err(_) if established => {
                // Drop the record and the alert answering it; keep the session.
                self.stats.rejected_records += 1;
                self.collect_transmits(Some(from));
            }
            Err(e) => {
                // The alert (e.g. for an unknown PSK identity) goes out.
                self.collect_transmits(None);
                self.handshake_failed(now, from, e.to_string());
            }
        }
        self.arm_sweep(now);
    }

    /// Whether a new handshake from `from` fits the caps (evicting the
    /// stalest half-open one at the total cap).
    fn admit(&mut self, now: Instant, from: SocketAddr) -> bool {
        let from_ip = self.half_open_by_ip.get(&from.ip()).copied().unwrap_or(0);
        if self.established >= self.limits.max_sessions
            || from_ip >= self.limits.max_half_open_per_ip
        {
            return false;
        }
        if self.half_open.len() >= self.limits.max_half_open {
            let victim = self
                .half_open
                .iter()
                .filter_map(|a| self.sessions.get(a).map(|s| (*a, s)))
                .min_by_key(|(_, s)| (s.datagrams > 1, s.started))
                .map(|(a, _)| a);
            match victim {
                Some(v) => {
                    self.stats.refused_hellos += 1;
                    self.drop_session(now, v, false);
                }
                None => return false,
            }
        }
        true
    }

    fn on_event(&mut self, now: Instant, peer: SocketAddr, event: EndpointEvent) {
        match event {
            EndpointEvent::HandshakeComplete => {
                let identity = self.ep.get_connection_state(peer).and_then(|state| {
                    if state.is_cipher_suite_psk() {
                        Some(PeerIdentity::Psk(state.identity_hint.clone()))
                    } else {
                        state
                            .peer_certificates
                            .first()
                            .map(|leaf| PeerIdentity::Certificate(certificate_names(leaf)))
                    }
                });
                match identity {
                    Some(identity) if self.promote(peer, identity.clone()) => {
                        self.events
                            .push_back(ServerEvent::Established { peer, identity });
                    }
                    _ => self.handshake_failed(now, peer, "no peer identity".into()),
                }
            }
            EndpointEvent::ApplicationData(bytes) => self.events.push_back(ServerEvent::Data {
                peer,
                bytes: bytes.to_vec(),
            }),
            EndpointEvent::PeerClosed => {
                // `Closed` is for sessions; a handshake that ends is just gone.
                let removed = self.take_session(peer);
                if removed.is_some_and(|s| s.identity.is_some()) {
                    self.events.push_back(ServerEvent::Closed { peer });
                }
            }
            _ => {}
        }
    }

    /// Encrypts `plaintext` for the established association with `to`.
    pub fn send(
        &mut self,
        now: Instant,
        to: SocketAddr,
        plaintext: &[u8],
    ) -> Result<(), DtlsError> {
        if self.identity(to).is_none() {
            return Err(DtlsError::NoSession(to));
        }
        self.ep
            .write(now, to, plaintext)
            .map_err(|e| DtlsError::Send {
                peer: to,
                reason: e.to_string(),
            })?;
        self.collect_transmits(None);
        Ok(())
    }

    /// Ends the association with `peer` (close_notify), e.g. when its
    /// registration ended.
    pub fn close(&mut self, now: Instant, peer: SocketAddr) {
        if self.sessions.contains_key(&peer) {
            self.drop_session(now, peer, true);
        }
    }

    /// Runs handshake retransmissions, handshake and idle expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let half_open: Vec<(SocketAddr, Instant)> = self
            .half_open
            .iter()
            .filter_map(|a| self.sessions.get(a).map(|s| (*a, s.started)))
            .collect();
        for (peer, started) in half_open {
            if now.saturating_duration_since(started) >= self.limits.handshake_timeout {
                self.handshake_failed(now, peer, "handshake timed out".into());
                continue;
            }
            let due = self.ep.poll_timeout(&peer).is_some_and(|t| t <= now);
            if due {
                let result = self.ep.handle_timeout(peer, now);
                self.collect_transmits(None);
                if let Err(e) = result {
                    self.handshake_failed(now, peer, format!("no answer: {e}"));
                }
            }
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.next_sweep = None;
            let idle: Vec<SocketAddr> = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    s.identity.is_some()
                        && now.saturating_duration_since(s.last_seen) >= self.limits.idle_timeout
                })
                .map(|(a, _)| *a)
                .collect();
            for peer in idle {
                self.drop_session(now, peer, true);
            }
            self.arm_sweep(now);
        }
    }

    /// The next instant [`DtlsServer::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.half_open
            .iter()
            .filter_map(|a| self.sessions.get(a).map(|s| (a, s)))
            .flat_map(|(a, s)| {
                [
                    self.ep.poll_timeout(a),
                    Some(s.started + self.limits.handshake_timeout),
                ]
            })
            .flatten()
            .chain(self.next_sweep)
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn arm_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() && self.established > 0 {
            self.next_sweep = Some(now + SWEEP);
        }
    }

    fn handshake_failed(&mut self, now: Instant, peer: SocketAddr, reason: String) {
        self.stats.failed_handshakes += 1;
        self.ep.stop(now, peer);
        self.collect_transmits(Some(peer));
        self.take_session(peer);
        self.events.push_back(ServerEvent::Failed { peer, reason });
    }

    /// Removes `peer`; `notify` sends close_notify and reports `Closed` for
    /// an established association.
    fn drop_session(&mut self, now: Instant, peer: SocketAddr, notify: bool) {
        let was_established = self
            .take_session(peer)
            .is_some_and(|s| s.identity.is_some());
        self.ep.stop(now, peer);
        let keep = notify && was_established;
        self.collect_transmits(if keep { None } else { Some(peer) });
        if was_established {
            self.events.push_back(ServerEvent::Closed { peer });
        }
    }

    fn collect_transmits(&mut self, drop_for: Option<SocketAddr>) {
        super::drain_transmits(&mut self.ep, &mut self.transmits, drop_for);
    }
}
