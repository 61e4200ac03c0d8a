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

use std::collections::{HashMap, VecDeque};
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
            max_half_open_per_ip: 8,
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
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
            next_sweep: None,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> ServerStats {
        let established = self
            .sessions
            .values()
            .filter(|s| s.identity.is_some())
            .count();
        ServerStats {
            established,
            half_open: self.sessions.len() - established,
            ..self.stats.clone()
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
            self.sessions.insert(
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
        let ip: IpAddr = from.ip();
        let mut half_open = 0;
        let mut from_ip = 0;
        let mut established = 0;
        for (addr, s) in &self.sessions {
            if s.identity.is_some() {
                established += 1;
            } else {
                half_open += 1;
                if addr.ip() == ip {
                    from_ip += 1;
                }
            }
        }
        if established >= self.limits.max_sessions || from_ip >= self.limits.max_half_open_per_ip {
            return false;
        }
        if half_open >= self.limits.max_half_open {
            let victim = self
                .sessions
                .iter()
                .filter(|(_, s)| s.identity.is_none())
                .min_by_key(|(_, s)| (s.datagrams > 1, s.started))
                .map(|(a, _)| *a);
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
                match (identity, self.sessions.get_mut(&peer)) {
                    (Some(identity), Some(s)) => {
                        s.identity = Some(identity.clone());
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
                let removed = self.sessions.remove(&peer);
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
            .sessions
            .iter()
            .filter(|(_, s)| s.identity.is_none())
            .map(|(a, s)| (*a, s.started))
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
        self.sessions
            .iter()
            .filter(|(_, s)| s.identity.is_none())
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
        if self.next_sweep.is_none() && self.sessions.values().any(|s| s.identity.is_some()) {
            self.next_sweep = Some(now + SWEEP);
        }
    }

    fn handshake_failed(&mut self, now: Instant, peer: SocketAddr, reason: String) {
        self.stats.failed_handshakes += 1;
        self.ep.stop(now, peer);
        self.collect_transmits(Some(peer));
        self.sessions.remove(&peer);
        self.events.push_back(ServerEvent::Failed { peer, reason });
    }

    /// Removes `peer`; `notify` sends close_notify and reports `Closed` for
    /// an established association.
    fn drop_session(&mut self, now: Instant, peer: SocketAddr, notify: bool) {
        let was_established = self
            .sessions
            .remove(&peer)
            .is_some_and(|s| s.identity.is_some());
        self.ep.stop(now, peer);
        let keep = notify && was_established;
        self.collect_transmits(if keep { None } else { Some(peer) });
        if was_established {
            self.events.push_back(ServerEvent::Closed { peer });
        }
    }

    fn collect_transmits(&mut self, drop_for: Option<SocketAddr>) {
        while let Some(t) = self.ep.poll_transmit() {
            if Some(t.transport.peer_addr) == drop_for {
                continue;
            }
            self.transmits.push_back(Datagram {
                to: t.transport.peer_addr,
                bytes: t.message.to_vec(),
            });
        }
    }
}
