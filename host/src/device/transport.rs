//! The device's datagram path: UDP socket, DTLS where the peer is a DTLS
//! peer, and the LwM2M client engine above.
//!
//! Every datagram from the server's address goes through the DTLS session
//! when the server URI is `coaps://` (so nothing unauthenticated from that
//! address reaches the engine), and so does every datagram the engine sends
//! there. Other addresses are plain CoAP unless a `coaps://` Package URI
//! made them DTLS peers. Which requests the engine accepts at all (only the
//! server's) is the engine's rule ([`Client::handle_datagram`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use wasmdm_proto::bootstrap::BootstrapClient;
use wasmdm_proto::client::Client;
use wasmdm_proto::coap::endpoint::Transmit;
use wasmdm_proto::dtls::{ClientCredentials, ClientEvent, DtlsClient, DtlsError};

use super::socket::DeviceSocket;

/// At most one "dropped requests from other sources" line per this period.
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The sans-IO engine above the transport: the LwM2M client, or the
/// bootstrap client while the device bootstraps.
pub(crate) trait Engine {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn foreign_requests_dropped(&self) -> u64;
    /// The DTLS handshake with the engine's server failed.
    fn handshake_failed(&mut self, _now: Instant, _reason: &str) {}
}

impl Engine for Client {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        Client::handle_datagram(self, now, from, bytes)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Client::poll_transmit(self)
    }
    fn foreign_requests_dropped(&self) -> u64 {
        Client::foreign_requests_dropped(self)
    }
    /// A Register or Update whose handshake failed (e.g. a key the server
    /// no longer has) fails now as a registration failure, not when CoAP
    /// gives up on it (Core 1.1 §6.2.1.1).
    fn handshake_failed(&mut self, now: Instant, _reason: &str) {
        Client::handshake_failed(self, now)
    }
}

impl Engine for BootstrapClient {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        BootstrapClient::handle_datagram(self, now, from, bytes)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        BootstrapClient::poll_transmit(self)
    }
    fn foreign_requests_dropped(&self) -> u64 {
        BootstrapClient::foreign_requests_dropped(self)
    }
    /// A bootstrap attempt whose handshake failed (e.g. a wrong bootstrap
    /// key) fails now, not when CoAP gives up on its request.
    fn handshake_failed(&mut self, now: Instant, reason: &str) {
        self.transport_failed(now, format!("DTLS handshake failed: {reason}"))
    }
}

/// Which server the transport talks to, and its DTLS sessions
/// ([`Transport::retarget`] hands the previous one back).
pub(crate) struct Target {
    dtls: Option<DtlsClient>,
    server: SocketAddr,
}

/// Socket plus DTLS sessions.
pub(crate) struct Transport {
    pub(crate) socket: DeviceSocket,
    dtls: Option<DtlsClient>,
    server: SocketAddr,
    /// Foreign requests already reported, and when.
    dropped_logged: (u64, Option<Instant>),
    /// File servers whose handshake failed since the last look: their pulls
    /// fail now instead of when CoAP gives up (~90 s later).
    failed_file_servers: Vec<SocketAddr>,
}

impl Transport {
    /// A transport to `server`; `credentials` make it a DTLS peer named `host`.
    pub(crate) fn new(
        socket: DeviceSocket,
        server: SocketAddr,
        host: &str,
        credentials: Option<ClientCredentials>,
    ) -> Result<Self, DtlsError> {
        let target = Self::target(server, host, credentials)?;
        Ok(Transport {
            socket,
            dtls: target.dtls,
            server,
            dropped_logged: (0, None),
            failed_file_servers: Vec::new(),
        })
    }

    fn target(
        server: SocketAddr,
        host: &str,
        credentials: Option<ClientCredentials>,
    ) -> Result<Target, DtlsError> {
        let dtls = match credentials {
            Some(c) => {
                let mut client = DtlsClient::new(c)?;
                client.add_peer(server, host)?;
                Some(client)
            }
            None => None,
        };
        Ok(Target { dtls, server })
    }

    /// Points the transport at another server (bootstrap server, or the
    /// server bootstrap provisioned): new DTLS sessions, same socket.
    /// Returns the previous target for [`Transport::restore`].
    pub(crate) fn retarget(
        &mut self,
        server: SocketAddr,
        host: &str,
        credentials: Option<ClientCredentials>,
    ) -> Result<Target, DtlsError> {
        let next = Self::target(server, host, credentials)?;
        Ok(self.restore(next))
    }

    /// Ends a target no longer used: close_notify to its server (so the
    /// server drops the association at once and accepts a new handshake
    /// from this address), sent now.
    pub(crate) async fn close(&mut self, now: Instant, target: Target) {
        let Some(mut dtls) = target.dtls else { return };
        dtls.remove_peer(now, target.server);
        while let Some(d) = dtls.poll_transmit() {
            self.send_raw(&d.bytes, d.to).await;
        }
    }

    /// Goes back to a previous target; returns the one replaced.
    pub(crate) fn restore(&mut self, target: Target) -> Target {
        let old = Target {
            dtls: self.dtls.take(),
            server: self.server,
        };
        self.dtls = target.dtls;
        self.server = target.server;
        old
    }

    /// True when the server account uses DTLS (so `coaps://` pulls can too).
    pub(crate) fn secure(&self) -> bool {
        self.dtls.is_some()
    }

    /// Makes a `coaps://` file server a DTLS peer (same credentials).
    pub(crate) fn add_dtls_peer(&mut self, peer: SocketAddr, host: &str) -> Result<(), DtlsError> {
        match &mut self.dtls {
            Some(d) => d.add_peer(peer, host),
            None => Err(DtlsError::NoSession(peer)),
        }
    }

    /// Feeds a received datagram to DTLS or straight to the engine.
    pub(crate) fn inbound<E: Engine>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        client: &mut E,
    ) {
        let consumed = self
            .dtls
            .as_mut()
            .is_some_and(|d| d.handle_datagram(now, from, bytes));
        if !consumed {
            client.handle_datagram(now, from, bytes);
        }
        self.drain_dtls_events(now, client);
        self.log_foreign_drops(now, from, client);
    }

    /// The server stopped answering: its side of the session may be gone
    /// (restart, expiry), so the next datagram performs a new handshake.
    pub(crate) fn server_silent(&mut self, now: Instant) {
        if let Some(d) = &mut self.dtls
            && d.is_established(self.server)
        {
            info!("no answer from the server: a new DTLS handshake comes with the next message");
            d.reset(now, self.server);
        }
    }

    /// Sends what the engine queued (through DTLS where due) and what DTLS queued.
    pub(crate) async fn flush<E: Engine>(&mut self, now: Instant, client: &mut E) {
        while let Some(t) = client.poll_transmit() {
            match &mut self.dtls {
                Some(d) if d.is_peer(t.to) => {
                    if let Err(e) = d.send(now, t.to, &t.bytes) {
                        debug!(to = %t.to, "DTLS send: {e}");
                    }
                }
                _ => self.send_raw(&t.bytes, t.to).await,
            }
        }
        self.flush_dtls().await;
    }

    async fn flush_dtls(&mut self) {
        while let Some(d) = self.dtls.as_mut().and_then(|d| d.poll_transmit()) {
            self.send_raw(&d.bytes, d.to).await;
        }
    }

    async fn send_raw(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            warn!(%to, "send failed: {e}");
        }
    }

    /// `coaps://` file servers whose handshake failed since the last call.
    pub(crate) fn take_failed_file_servers(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.failed_file_servers)
    }

    /// When [`Transport::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.dtls.as_ref().and_then(|d| d.poll_timeout())
    }

    /// Runs DTLS retransmissions and back-off ends.
    pub(crate) fn handle_timeout<E: Engine>(&mut self, now: Instant, client: &mut E) {
        if let Some(d) = &mut self.dtls {
            d.handle_timeout(now);
        }
        self.drain_dtls_events(now, client);
    }

    fn drain_dtls_events<E: Engine>(&mut self, now: Instant, client: &mut E) {
        let Some(d) = &mut self.dtls else { return };
        while let Some(event) = d.poll_event() {
            match event {
                ClientEvent::Data { peer, bytes } => client.handle_datagram(now, peer, &bytes),
                ClientEvent::Connected { peer } => {
                    let suite = d.cipher_suite(peer).unwrap_or_default();
                    info!(%peer, cipher_suite = format_args!("0x{suite:04X}"), "DTLS session established");
                }
                ClientEvent::Failed {
                    peer,
                    reason,
                    retry_in,
                } => {
                    warn!(%peer, retry_in = ?retry_in, "DTLS handshake failed: {reason}");
                    if peer != self.server {
                        self.failed_file_servers.push(peer);
                    } else {
                        // The engine gave up what waited for this handshake
                        // and sends afresh after its own back-off; a stale
                        // copy must not open the next handshake (which still
                        // waits for DTLS's back-off).
                        client.handshake_failed(now, &reason);
                        d.discard_queued(peer);
                    }
                }
                ClientEvent::Closed { peer } => info!(%peer, "DTLS session closed by the peer"),
            }
        }
    }

    /// Logs requests from other sources, at most once per [`DROP_LOG_PERIOD`].
    fn log_foreign_drops<E: Engine>(&mut self, now: Instant, from: SocketAddr, client: &E) {
        let dropped = client.foreign_requests_dropped();
        let (logged, at) = self.dropped_logged;
        if dropped == logged || at.is_some_and(|t| now.duration_since(t) < DROP_LOG_PERIOD) {
            return;
        }
        warn!(
            dropped = dropped - logged,
            last_from = %from,
            "dropped requests that did not come from the LwM2M server"
        );
        self.dropped_logged = (dropped, Some(now));
    }
}
