//! The client side: one DTLS association per peer, opened on demand.
//!
//! A device talks DTLS to its LwM2M server and to `coaps://` file servers.
//! [`DtlsClient::send`] opens the association the first time (plaintext
//! waits in a bounded queue until the handshake completes), so the CoAP
//! engine above never knows a handshake happened: its own retransmissions
//! cover the handshake's latency. A failed handshake backs off (1 s doubling
//! to 60 s) before the next datagram for that peer starts another; an
//! established association is re-opened only when the driver says the peer
//! lost it ([`DtlsClient::reset`]), e.g. after the server stopped answering.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::HandshakeConfig;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_shared::TransportProtocol;

use super::record::without_change_cipher_spec;
use super::{ClientCredentials, Datagram, DtlsError};

/// Plaintext datagrams held per peer while its handshake runs.
pub const QUEUE_CAP: usize = 16;
/// Back-off after the first failed handshake; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest back-off between handshakes.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A handshake not complete after this long has failed, whatever the DTLS
/// stack's timers say: `rtc-dtls` drops its retransmission timer when the
/// peer repeats a flight after our final one (a peer that cannot decrypt
/// our Finished, or a race with a lost datagram), and would wait forever.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake with `peer` completed.
    Connected {
        /// The peer.
        peer: SocketAddr,
    },
    /// Decrypted application data (one CoAP message) from `peer`.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The plaintext.
        bytes: Vec<u8>,
    },
    /// The handshake failed; the next one waits `retry_in`.
    Failed {
        /// The peer.
        peer: SocketAddr,
        /// What went wrong (alert, verification, no answer).
        reason: String,
        /// Back-off before the next attempt.
        retry_in: Duration,
    },
    /// The peer closed the association (close_notify).
    Closed {
        /// The peer.
        peer: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Handshaking { since: Instant },
    Established,
    BackOff { until: Instant },
}

struct Peer {
    config: Arc<HandshakeConfig>,
    phase: Phase,
    queued: VecDeque<Vec<u8>>,
    failures: u32,
}

/// DTLS associations of a client, keyed by peer address.
pub struct DtlsClient {
    credentials: ClientCredentials,
    ep: Endpoint,
    peers: HashMap<SocketAddr, Peer>,
    transmits: VecDeque<Datagram>,
    events: VecDeque<ClientEvent>,
    /// Records that failed authentication or arrived as replays on an
    /// established association: dropped, the association kept.
    rejected_records: u64,
}

impl std::fmt::Debug for DtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("credentials", &self.credentials)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DtlsClient {
    /// A client with one set of credentials (checked here: a key that
    /// cannot be used is a configuration error, not a failed handshake).
    pub fn new(credentials: ClientCredentials) -> Result<Self, DtlsError> {
        credentials.handshake_config("localhost")?;
        Ok(DtlsClient {
            credentials,
            ep: Endpoint::new(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                TransportProtocol::UDP,
                None,
            ),
            peers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rejected_records: 0,
        })
    }

    /// Makes `peer` a DTLS peer named `host` (checked against its
    /// certificate); nothing is sent until the first [`DtlsClient::send`].
    pub fn add_peer(&mut self, peer: SocketAddr, host: &str) -> Result<(), DtlsError> {
        if self.peers.contains_key(&peer) {
            return Ok(());
        }
        let config = self.credentials.handshake_config(host)?;
        self.peers.insert(
            peer,
            Peer {
                config,
                phase: Phase::Idle,
                queued: VecDeque::new(),
                failures: 0,
            },
        );
        Ok(())
    }

    /// Forgets `peer` (sending close_notify if established).
    pub fn remove_peer(&mut self, now: Instant, peer: SocketAddr) {
        if self.peers.remove(&peer).is_some() {
            self.ep.stop(now, peer);
            self.collect_transmits(None);
        }
    }

    /// True if datagrams from `peer` belong to this client.
    pub fn is_peer(&self, peer: SocketAddr) -> bool {
        self.peers.contains_key(&peer)
    }

    /// True once the handshake with `peer` completed.
    pub fn is_established(&self, peer: SocketAddr) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.phase == Phase::Established)
    }

    /// The cipher suite negotiated with `peer` (IANA number, e.g. 0xC0A8).
    pub fn cipher_suite(&self, peer: SocketAddr) -> Option<u16> {
        self.ep
            .get_connection_state(peer)
            .and_then(|s| s.cipher_suite().map(|c| c.id() as u16))
    }

    /// Records dropped on established associations (bad MAC, replays).
    pub fn rejected_records(&self) -> u64 {
        self.rejected_records
    }

    /// Sends `plaintext` to `peer`, opening the association if needed.
    pub fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        plaintext: &[u8],
    ) -> Result<(), DtlsError> {
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(DtlsError::NoSession(peer))?;
        match p.phase {
            Phase::Established => {
                if let Err(e) = self.ep.write(now, peer, plaintext) {
                    let reason = e.to_string();
                    self.fail(now, peer, reason.clone());
                    return Err(DtlsError::Send { peer, reason });
                }
                self.collect_transmits(None);
            }
            Phase::Idle | Phase::Handshaking { .. } | Phase::BackOff { .. } => {
                if p.queued.len() == QUEUE_CAP {
                    p.queued.pop_front();
                }
                p.queued.push_back(plaintext.to_vec());
                if p.phase == Phase::Idle {
                    self.connect(now, peer);
                }
            }
        }
        Ok(())
    }

    /// Forgets the plaintext waiting for `peer`'s handshake (the layer
    /// above gave up on it after a failed handshake and sends afresh); the
    /// back-off stays: the next send waits for it.
    pub fn discard_queued(&mut self, peer: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.queued.clear();
        }
    }

    /// Drops the association with `peer` (e.g. its server restarted and
    /// lost it); the next send performs a new handshake.
    pub fn reset(&mut self, now: Instant, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if matches!(p.phase, Phase::Established | Phase::Handshaking { .. }) {
            p.phase = Phase::Idle;
            self.ep.stop(now, peer);
            self.collect_transmits(None);
        }
    }

    /// Feeds a datagram from `from`. Returns false if `from` is not a DTLS
    /// peer of this client (the caller treats the datagram as plain CoAP).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Some(p) = self.peers.get(&from) else {
            return false;
        };
        let established = p.phase == Phase::Established;
        if !matches!(p.phase, Phase::Handshaking { .. } | Phase::Established) {
            return true;
        }
        let bytes = if established {
            match without_change_cipher_spec(bytes) {
                Some(b) => b,
                None => {
                    self.rejected_records += 1;
                    return true;
                }
            }
        } else {
            bytes.into()
        };
        let result = self.ep.read(now, from, None, BytesMut::from(&bytes[..]));
        match result {
            Ok(events) => {
                self.collect_transmits(None);
                for event in events {
                    self.on_event(now, from, event);
                }
            }
            Err(_) if established => {
                // RFC 6347 §4.1.2.7: an invalid record is discarded, and a
                // forged one must not cost the session. Drop the alert the
                // stack queued in answer.
                self.rejected_records += 1;
                self.collect_transmits(Some(from));
            }
            Err(e) => {
                self.collect_transmits(None);
                self.fail(now, from, e.to_string());
            }
        }
        true
    }

    fn on_event(&mut self, now: Instant, peer: SocketAddr, event: EndpointEvent) {
        match event {
            EndpointEvent::HandshakeComplete => {
                let queued = match self.peers.get_mut(&peer) {
                    Some(p) => {
                        p.phase = Phase::Established;
                        p.failures = 0;
                        std::mem::take(&mut p.queued)
                    }
                    None => return,
                };
                self.events.push_back(ClientEvent::Connected { peer });
                for plaintext in queued {
                    if self.send(now, peer, &plaintext).is_err() {
                        break;
                    }
                }
            }
            EndpointEvent::ApplicationData(bytes) => self.events.push_back(ClientEvent::Data {
                peer,
                bytes: bytes.to_vec(),
            }),
            EndpointEvent::PeerClosed => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.phase = Phase::Idle;
                }
                self.events.push_back(ClientEvent::Closed { peer });
            }
            _ => {}
        }
    }

    /// Runs due handshake retransmissions and back-off ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        let peers: Vec<(SocketAddr, Phase, bool)> = self
            .peers
            .iter()
            .map(|(a, p)| (*a, p.phase, p.queued.is_empty()))
            .collect();
        for (peer, phase, nothing_queued) in peers {
            match phase {
                Phase::Handshaking { since }
                    if now.saturating_duration_since(since) >= HANDSHAKE_DEADLINE =>
                {
                    self.fail(now, peer, "handshake not complete in time".into());
                }
                Phase::Handshaking { .. } => {
                    if let Err(e) = self.ep.handle_timeout(peer, now) {
                        self.collect_transmits(None);
                        self.fail(now, peer, format!("no answer: {e}"));
                    } else {
                        self.collect_transmits(None);
                    }
                }
                Phase::BackOff { until } if until <= now => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.phase = Phase::Idle;
                    }
                    if !nothing_queued {
                        self.connect(now, peer);
                    }
                }
                _ => {}
            }
        }
    }

    /// The next instant [`DtlsClient::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|(addr, p)| match p.phase {
                Phase::Handshaking { since } => {
                    let deadline = since + HANDSHAKE_DEADLINE;
                    Some(
                        self.ep
                            .poll_timeout(addr)
                            .map_or(deadline, |t| t.min(deadline)),
                    )
                }
                Phase::BackOff { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn connect(&mut self, now: Instant, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let config = p.config.clone();
        p.phase = Phase::Handshaking { since: now };
        if let Err(e) = self.ep.connect(now, peer, config, None) {
            self.fail(now, peer, e.to_string());
            return;
        }
        self.collect_transmits(None);
    }

    fn fail(&mut self, now: Instant, peer: SocketAddr, reason: String) {
        self.ep.stop(now, peer);
        // No close_notify for an association that never was.
        self.collect_transmits(Some(peer));
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.failures = p.failures.saturating_add(1);
        let retry_in = BACKOFF_BASE
            .saturating_mul(1 << (p.failures - 1).min(6))
            .min(BACKOFF_CAP);
        p.phase = Phase::BackOff {
            until: now + retry_in,
        };
        // What waits is sent by the next handshake, which starts by itself
        // after the back-off; after three failures in a row it is dropped
        // (the CoAP layer above has given up on it by then).
        if p.failures >= 3 {
            p.queued.clear();
        }
        self.events.push_back(ClientEvent::Failed {
            peer,
            reason,
            retry_in,
        });
    }

    /// Moves the endpoint's datagrams to our queue, dropping those for `drop_for`.
    fn collect_transmits(&mut self, drop_for: Option<SocketAddr>) {
        super::drain_transmits(&mut self.ep, &mut self.transmits, drop_for);
    }
}
