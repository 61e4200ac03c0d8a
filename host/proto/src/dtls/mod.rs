//! DTLS 1.2 under the CoAP endpoint (LwM2M 1.1 Transport §5.2), sans-IO.
//!
//! The CoAP [`Endpoint`](crate::coap::Endpoint) speaks plaintext datagrams;
//! this layer turns them into DTLS records and back, as rustls sits under
//! quinn. Like the CoAP core it owns no socket and reads no clock: datagrams
//! and instants in, datagrams, events and deadlines out.
//!
//! - [`DtlsClient`]: the device side. One association per peer (its LwM2M
//!   server, and any `coaps://` file server a Package URI names), opened on
//!   demand, re-opened with back-off after a failure; plaintext sent before
//!   the handshake completes waits in a small queue.
//! - [`DtlsServer`]: the server side. Associations keyed by peer address,
//!   with the peer's authenticated identity (PSK identity or certificate
//!   names) reported when a handshake completes, and every piece of state an
//!   unauthenticated sender can create capped ([`ServerLimits`]).
//!
//! The handshake, the record layer and the cipher suites are the `rtc-dtls`
//! crate's (a sans-IO port of pion/dtls). What it lacks, kept out of reach
//! behind this seam so it can be added without touching the drivers:
//! - Raw Public Keys (RFC 7250, Security Mode 1): refused with
//!   [`DtlsError::Unsupported`] at configuration time;
//! - Connection ID (RFC 9146): associations are keyed by address, so a NAT
//!   rebinding costs a new handshake (which the client does by itself after
//!   its next exchange times out);
//! - a stateless cookie: `rtc-dtls` answers a ClientHello with a
//!   HelloVerifyRequest (RFC 6347 §4.2.1, so no amplification), but keeps a
//!   small half-open association per source meanwhile; [`DtlsServer`] caps
//!   those in number (total and per source address) and in time.

mod client;
mod config;
mod record;
mod server;
#[cfg(test)]
mod tests;

pub use client::{ClientEvent, DtlsClient};
pub use config::{ClientCredentials, PskLookup, ServerCredentials, ServerTrust, certificate_names};
pub use record::{ContentType, RecordInfo, first_record, without_change_cipher_spec};
pub use server::{DtlsServer, ServerEvent, ServerLimits, ServerStats};

use std::net::SocketAddr;

/// A datagram to send to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Destination.
    pub to: SocketAddr,
    /// The DTLS records.
    pub bytes: Vec<u8>,
}

/// Moves `ep`'s queued datagrams to `out`, dropping those for `drop_for`
/// (an alert or close_notify that must not go out).
fn drain_transmits(
    ep: &mut rtc_dtls::endpoint::Endpoint,
    out: &mut std::collections::VecDeque<Datagram>,
    drop_for: Option<SocketAddr>,
) {
    while let Some(t) = ep.poll_transmit() {
        if Some(t.transport.peer_addr) == drop_for {
            continue;
        }
        out.push_back(Datagram {
            to: t.transport.peer_addr,
            bytes: t.message.to_vec(),
        });
    }
}

/// Who the peer proved to be in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A PSK handshake: the identity the client sent (Security Mode 0).
    Psk(Vec<u8>),
    /// A certificate handshake (Security Mode 2): the names of the peer's
    /// verified leaf certificate, Subject CN first, then its SANs.
    Certificate(Vec<String>),
}

impl PeerIdentity {
    /// The PSK identity as text (lossy), or the certificate's first name.
    pub fn display_name(&self) -> String {
        match self {
            PeerIdentity::Psk(id) => String::from_utf8_lossy(id).into_owned(),
            PeerIdentity::Certificate(names) => names.first().cloned().unwrap_or_default(),
        }
    }
}

/// Why a DTLS configuration or association failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    /// A key, certificate or CA could not be used.
    #[error("DTLS credentials: {0}")]
    Credentials(String),
    /// A security mode this build cannot offer.
    #[error("{0} is not supported by this build's DTLS stack")]
    Unsupported(&'static str),
    /// No association with the peer (never connected, or failed and closed).
    #[error("no DTLS session with {0}")]
    NoSession(SocketAddr),
    /// The handshake failed (alert, verification, retransmissions exhausted).
    #[error("DTLS handshake with {peer} failed: {reason}")]
    Handshake {
        /// The peer.
        peer: SocketAddr,
        /// What the DTLS stack said.
        reason: String,
    },
    /// Sending on an established association failed.
    #[error("DTLS send to {peer}: {reason}")]
    Send {
        /// The peer.
        peer: SocketAddr,
        /// What the DTLS stack said.
        reason: String,
    },
}
