//! The server's datagram path: a plain CoAP socket (5683), a DTLS socket
//! (5684) with the sans-IO [`DtlsServer`] on it, and the one CoAP endpoint
//! above both.
//!
//! The CoAP endpoint keys peers by address; this layer remembers which
//! addresses have a DTLS session, sends their datagrams through it, and
//! drops plain datagrams claiming such an address (anyone can forge a UDP
//! source). [`ServerTransport::auth`] tells the registration policy how a
//! peer authenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use wasmdm_proto::coap::{Endpoint, EndpointEvent, Transmit};
use wasmdm_proto::dtls::{DtlsServer, ServerEvent, ServerStats};

use crate::core::access::PeerAuth;

/// Largest datagram read (a CoAP message with a 1024-byte block, DTLS
/// overhead included, fits many times over).
const BUF: usize = 65_536;

/// At most one line per this period for failed handshakes and drops.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// Most datagrams taken from the sockets in one turn of a driver's loop
/// (their store writes share one commit).
const MAX_DATAGRAMS_PER_TURN: usize = 64;

/// Which socket a datagram came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Plain CoAP.
    Plain,
    /// DTLS.
    Secure,
}

struct Secure {
    socket: Arc<UdpSocket>,
    dtls: DtlsServer,
    buf: Vec<u8>,
    /// Stats last logged, and when.
    logged: (ServerStats, Option<Instant>),
}

/// Sockets, DTLS sessions, and the routing between them and the endpoint.
pub struct ServerTransport {
    plain: Arc<UdpSocket>,
    plain_buf: Vec<u8>,
    secure: Option<Secure>,
    /// Plain datagrams dropped because their source has a DTLS session.
    spoofed: u64,
    /// Peers that reached us over DTLS: nothing is ever sent to them in
    /// plaintext, even after their session ended (a DM request then waits
    /// for the device's next handshake instead of leaking).
    dtls_peers: DtlsPeers,
}

/// Addresses that authenticated over DTLS, oldest forgotten first past
/// [`DtlsPeers::MAX`]: only authenticated peers are added, but a fleet behind
/// NATs that rebind their ports adds a new address now and then forever.
#[derive(Debug, Default)]
struct DtlsPeers {
    set: std::collections::HashSet<SocketAddr>,
    /// Insertion order; may hold addresses removed since (skipped, and
    /// compacted when it grows past twice the cap).
    order: std::collections::VecDeque<SocketAddr>,
}

impl DtlsPeers {
    /// Twice the DTLS server's session cap: every live session, and as many
    /// ended ones.
    const MAX: usize = 40_000;

    fn contains(&self, peer: &SocketAddr) -> bool {
        self.set.contains(peer)
    }

    fn insert(&mut self, peer: SocketAddr) {
        if !self.set.insert(peer) {
            return;
        }
        self.order.push_back(peer);
        while self.set.len() > Self::MAX {
            match self.order.pop_front() {
                Some(old) => {
                    self.set.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > 2 * Self::MAX {
            let set = &self.set;
            self.order.retain(|p| set.contains(p));
        }
    }

    fn remove(&mut self, peer: &SocketAddr) {
        self.set.remove(peer);
    }
}

impl ServerTransport {
    /// A transport over `plain`, and `secure` when DTLS is on.
    pub fn new(plain: Arc<UdpSocket>, secure: Option<(Arc<UdpSocket>, DtlsServer)>) -> Self {
        ServerTransport {
            plain,
            plain_buf: vec![0; BUF],
            secure: secure.map(|(socket, dtls)| Secure {
                socket,
                dtls,
                buf: vec![0; BUF],
                logged: (ServerStats::default(), None),
            }),
            spoofed: 0,
            dtls_peers: DtlsPeers::default(),
        }
    }

    /// How `peer` authenticated: its DTLS identity, or none.
    pub fn auth(&self, peer: SocketAddr) -> PeerAuth {
        match self.secure.as_ref().and_then(|s| s.dtls.identity(peer)) {
            Some(identity) => PeerAuth::Dtls(identity.clone()),
            None => PeerAuth::NoSec,
        }
    }

    /// DTLS counters (sessions, refusals), if DTLS is on.
    pub fn dtls_stats(&self) -> Option<ServerStats> {
        self.secure.as_ref().map(|s| s.dtls.stats())
    }

    /// Waits for a datagram on either socket; it stays in that side's
    /// buffer for [`ServerTransport::inbound`].
    pub async fn recv(&mut self) -> std::io::Result<(Side, usize, SocketAddr)> {
        match &mut self.secure {
            None => {
                let (n, from) = self.plain.recv_from(&mut self.plain_buf).await?;
                Ok((Side::Plain, n, from))
            }
            Some(secure) => tokio::select! {
                r = self.plain.recv_from(&mut self.plain_buf) => r.map(|(n, from)| (Side::Plain, n, from)),
                r = secure.socket.recv_from(&mut secure.buf) => r.map(|(n, from)| (Side::Secure, n, from)),
            },
        }
    }

    /// A datagram already waiting on either socket, without waiting.
    pub fn try_recv(&mut self) -> Option<(Side, usize, SocketAddr)> {
        if let Ok((n, from)) = self.plain.try_recv_from(&mut self.plain_buf) {
            return Some((Side::Plain, n, from));
        }
        let secure = self.secure.as_mut()?;
        let (n, from) = secure.socket.try_recv_from(&mut secure.buf).ok()?;
        Some((Side::Secure, n, from))
    }

    /// Feeds the datagram [`ServerTransport::recv`] returned to DTLS or the endpoint.
    pub fn inbound(
        &mut self,
        now: Instant,
        side: Side,
        n: usize,
        from: SocketAddr,
        endpoint: &mut Endpoint,
    ) {
        match (side, &mut self.secure) {
            (Side::Plain, secure) => {
                if secure
                    .as_ref()
                    .is_some_and(|s| s.dtls.identity(from).is_some())
                {
                    self.spoofed += 1;
                    return;
                }
                let bytes = self.plain_buf.get(..n).unwrap_or_default();
                endpoint.handle_datagram(now, from, bytes);
            }
            (Side::Secure, Some(secure)) => {
                let bytes = secure.buf.get(..n).unwrap_or_default();
                secure.dtls.handle_datagram(now, from, bytes);
                self.drain_dtls_events(now, endpoint);
            }
            (Side::Secure, None) => {}
        }
    }

    /// Sends one datagram of the endpoint: through the peer's DTLS session
    /// when it has one, else plain.
    pub async fn send(&mut self, now: Instant, t: &Transmit) {
        if let Some(secure) = &mut self.secure
            && secure.dtls.identity(t.to).is_some()
        {
            if let Err(e) = secure.dtls.send(now, t.to, &t.bytes) {
                tracing::debug!("DTLS send to {}: {e}", t.to);
            }
            return;
        }
        if self.dtls_peers.contains(&t.to) {
            tracing::debug!("{} has no DTLS session now: not sent in plaintext", t.to);
            return;
        }
        if let Err(e) = self.plain.send_to(&t.bytes, t.to).await {
            tracing::debug!("udp send to {}: {e}", t.to);
        }
    }

    /// Sends the DTLS records queued (handshake flights, encrypted data);
    /// true if there were any.
    pub async fn flush_dtls(&mut self) -> bool {
        let Some(secure) = &mut self.secure else {
            return false;
        };
        let mut sent = false;
        while let Some(d) = secure.dtls.poll_transmit() {
            sent = true;
            if let Err(e) = secure.socket.send_to(&d.bytes, d.to).await {
                tracing::debug!("udp send to {}: {e}", d.to);
            }
        }
        sent
    }

    /// When DTLS next has timer work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.secure.as_ref().and_then(|s| s.dtls.poll_timeout())
    }

    /// Runs DTLS retransmissions and expiries.
    pub fn handle_timeout(&mut self, now: Instant, endpoint: &mut Endpoint) {
        if let Some(secure) = &mut self.secure {
            secure.dtls.handle_timeout(now);
        }
        self.drain_dtls_events(now, endpoint);
    }

    /// Ends `peer`'s DTLS session (its registration ended).
    pub fn close(&mut self, now: Instant, peer: SocketAddr) {
        self.dtls_peers.remove(&peer);
        if let Some(secure) = &mut self.secure {
            secure.dtls.close(now, peer);
            while secure.dtls.poll_event().is_some() {}
        }
    }

    /// Feeds `first` (what [`ServerTransport::recv`] returned) and whatever
    /// else is already waiting, up to [`MAX_DATAGRAMS_PER_TURN`], so they
    /// all join one turn and its commit.
    pub fn inbound_burst(&mut self, first: (Side, usize, SocketAddr), endpoint: &mut Endpoint) {
        let (side, n, from) = first;
        self.inbound(Instant::now(), side, n, from, endpoint);
        for _ in 1..MAX_DATAGRAMS_PER_TURN {
            let Some((side, n, from)) = self.try_recv() else {
                break;
            };
            self.inbound(Instant::now(), side, n, from, endpoint);
        }
    }

    /// When the endpoint or DTLS next has timer work (a second from now
    /// when neither has).
    pub fn next_wake(&self, endpoint: &Endpoint) -> Instant {
        [endpoint.poll_timeout(), self.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
    }

    /// Runs the endpoint's and DTLS's timers.
    pub fn wake(&mut self, endpoint: &mut Endpoint) {
        let now = Instant::now();
        endpoint.handle_timeout(now);
        self.handle_timeout(now, endpoint);
    }

    fn drain_dtls_events(&mut self, now: Instant, endpoint: &mut Endpoint) {
        let Some(secure) = &mut self.secure else {
            return;
        };
        while let Some(event) = secure.dtls.poll_event() {
            match event {
                ServerEvent::Data { peer, bytes } => endpoint.handle_datagram(now, peer, &bytes),
                ServerEvent::Established { peer, identity } => {
                    self.dtls_peers.insert(peer);
                    let suite = secure.dtls.cipher_suite(peer).unwrap_or_default();
                    tracing::debug!(
                        %peer,
                        identity = %identity.display_name(),
                        cipher_suite = format_args!("0x{suite:04X}"),
                        "DTLS session established"
                    );
                }
                ServerEvent::Failed { peer, reason } => {
                    tracing::debug!(%peer, "DTLS handshake failed: {reason}");
                }
                ServerEvent::Closed { peer } => tracing::debug!(%peer, "DTLS session closed"),
            }
        }
        // Refusals and failures in aggregate, rate-limited: a flood must
        // not turn into a log flood.
        let stats = secure.dtls.stats();
        let (last, at) = &secure.logged;
        let changed = stats.failed_handshakes != last.failed_handshakes
            || stats.refused_hellos != last.refused_hellos
            || stats.rejected_records != last.rejected_records;
        if changed && at.is_none_or(|t| now.duration_since(t) >= LOG_PERIOD) {
            tracing::warn!(
                failed_handshakes = stats.failed_handshakes - last.failed_handshakes,
                refused_hellos = stats.refused_hellos - last.refused_hellos,
                rejected_records = stats.rejected_records - last.rejected_records,
                spoofed_plain = self.spoofed,
                sessions = stats.established,
                half_open = stats.half_open,
                "DTLS refusals since the last report"
            );
            secure.logged = (stats, Some(now));
        }
    }
}

/// A driver of one CoAP endpoint over a [`ServerTransport`] (the LwM2M
/// driver, the bootstrap driver): what [`pump`] asks of it.
pub trait Turn {
    /// The endpoint and the transport under it.
    fn parts(&mut self) -> (&mut Endpoint, &mut ServerTransport);
    /// Handles one endpoint event.
    fn event(&mut self, ev: EndpointEvent);
    /// Makes the turn's state changes durable, before anything is sent
    /// that reports them.
    fn commit(&mut self);
    /// Peers whose DTLS session is to end once their last datagram is out.
    fn take_closing(&mut self) -> Vec<SocketAddr>;
}

/// Processes the endpoint's events, commits their store writes, then sends
/// the queued datagrams and DTLS records; until quiet.
pub async fn pump<D: Turn + Send>(driver: &mut D) {
    loop {
        let mut progressed = false;
        while let Some(ev) = driver.parts().0.poll_event() {
            progressed = true;
            driver.event(ev);
        }
        driver.commit();
        let now = Instant::now();
        let closing = driver.take_closing();
        let (endpoint, transport) = driver.parts();
        while let Some(t) = endpoint.poll_transmit() {
            progressed = true;
            transport.send(now, &t).await;
        }
        // Handshake flights and the records just encrypted.
        transport.flush_dtls().await;
        for peer in closing {
            transport.close(now, peer);
            transport.flush_dtls().await;
        }
        if !progressed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtls_peers_are_capped_oldest_first() {
        let mut peers = DtlsPeers::default();
        let addr =
            |i: usize| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5684));
        for i in 0..DtlsPeers::MAX + 10 {
            peers.insert(addr(i));
        }
        assert_eq!(peers.set.len(), DtlsPeers::MAX);
        assert!(!peers.contains(&addr(9)), "the oldest are forgotten");
        assert!(peers.contains(&addr(10)));
        assert!(peers.contains(&addr(DtlsPeers::MAX + 9)));
        // Churn (sessions that come and go) does not grow the order queue
        // without bound.
        for i in 0..5 * DtlsPeers::MAX {
            let a = addr(100_000 + (i % 70_000));
            peers.insert(a);
            peers.remove(&a);
        }
        assert!(peers.order.len() <= 2 * DtlsPeers::MAX + 1);
        assert!(peers.set.len() <= DtlsPeers::MAX);
    }
}
