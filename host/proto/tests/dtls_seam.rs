//! The DTLS seam (`DtlsClient` / `DtlsServer`) driven in memory, sockets
//! and clocks simulated, on the cases the tests against real peers found
//! (host/server/tests/dtls_fuzz.rs, host/tests/device_dtls_pull.rs):
//!
//! - one plaintext ChangeCipherSpec record at the session's current epoch,
//!   from the peer's address, must not end an established session (either
//!   side);
//! - a handshake with a peer that never answers ends in
//!   `ClientEvent::Failed`, and the next send starts a new one;
//! - a peer that repeats its flight (ServerHello .. ServerHelloDone) instead
//!   of finishing, as OpenSSL does when it cannot decrypt our Finished
//!   (another key), must not leave the client's handshake hanging: it must
//!   fail, so the peer can be tried again;
//! - honest peers, one lost datagram (the client's final flight), and the
//!   server's repeated flight arriving before the client's own timer fires
//!   (both are 1 s; libcoap's OpenSSL server won that race in
//!   device_dtls_pull): the client must answer with its final flight again
//!   (RFC 6347 §4.2.4) and the handshake complete.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmdm_proto::dtls::{
    ClientCredentials, ClientEvent, DtlsClient, DtlsServer, PskLookup, ServerCredentials,
    ServerEvent, ServerLimits,
};

const KEY: [u8; 16] = [0x42; 16];

fn addrs() -> (SocketAddr, SocketAddr) {
    (
        "10.0.0.2:40000".parse().unwrap(),
        "10.0.0.1:5684".parse().unwrap(),
    )
}

fn server() -> DtlsServer {
    let lookup: PskLookup = Arc::new(|id: &[u8]| (id == b"dev-1").then(|| KEY.to_vec()));
    DtlsServer::new(
        &ServerCredentials {
            psk: Some(lookup),
            ..ServerCredentials::default()
        },
        ServerLimits::default(),
    )
    .unwrap()
}

fn client(server: SocketAddr) -> DtlsClient {
    let mut c = DtlsClient::new(ClientCredentials::Psk {
        identity: b"dev-1".to_vec(),
        key: KEY.to_vec(),
    })
    .unwrap();
    c.add_peer(server, "10.0.0.1").unwrap();
    c
}

fn pump(now: Instant, c: &mut DtlsClient, s: &mut DtlsServer) {
    let (client_addr, server_addr) = addrs();
    for _ in 0..50 {
        let mut moved = false;
        while let Some(d) = c.poll_transmit() {
            moved = true;
            s.handle_datagram(now, client_addr, &d.bytes);
        }
        while let Some(d) = s.poll_transmit() {
            moved = true;
            c.handle_datagram(now, server_addr, &d.bytes);
        }
        if !moved {
            return;
        }
    }
    panic!("the two sides never went quiet");
}

/// An established PSK session that carried "register" to the server.
fn established(now: Instant) -> (DtlsClient, DtlsServer) {
    let (client_addr, server_addr) = addrs();
    let (mut c, mut s) = (client(server_addr), server());
    c.send(now, server_addr, b"register").unwrap();
    pump(now, &mut c, &mut s);
    assert!(c.is_established(server_addr));
    let events: Vec<ServerEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(
        events.contains(&ServerEvent::Data {
            peer: client_addr,
            bytes: b"register".to_vec()
        }),
        "{events:?}"
    );
    while c.poll_event().is_some() {}
    (c, s)
}

/// A plaintext ChangeCipherSpec record at epoch 1 with an unused sequence
/// number: 14 bytes anyone who knows (or spoofs) a peer's address can send.
/// `rtc-dtls` does not authenticate CCS records ("nothing to decrypt") and
/// moves the association's read epoch to 2 on one, after which every
/// genuine (epoch 1) record is dropped as an old-epoch one.
const SPOOFED_CCS: [u8; 14] = [20, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0x10, 0, 0, 1, 1];

#[test]
fn a_spoofed_change_cipher_spec_does_not_end_a_client_session() {
    let now = Instant::now();
    let (client_addr, server_addr) = addrs();
    let (mut c, mut s) = established(now);
    // The server's address is spoofed; the device's session must survive.
    c.handle_datagram(now, server_addr, &SPOOFED_CCS);
    s.send(now, client_addr, b"created").unwrap();
    pump(now, &mut c, &mut s);
    let events: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(
        events,
        vec![ClientEvent::Data {
            peer: server_addr,
            bytes: b"created".to_vec()
        }],
        "one unauthenticated ChangeCipherSpec record ended the device's session"
    );
}

#[test]
fn a_spoofed_change_cipher_spec_does_not_end_a_server_session() {
    let now = Instant::now();
    let (client_addr, server_addr) = addrs();
    let (mut c, mut s) = established(now);
    s.handle_datagram(now, client_addr, &SPOOFED_CCS);
    c.send(now, server_addr, b"update").unwrap();
    pump(now, &mut c, &mut s);
    let events: Vec<ServerEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        vec![ServerEvent::Data {
            peer: client_addr,
            bytes: b"update".to_vec()
        }],
        "one unauthenticated ChangeCipherSpec record ended the server's session"
    );
}

#[test]
fn a_handshake_nobody_answers_fails_and_is_retried() {
    let (_, server_addr) = addrs();
    let mut c = client(server_addr);
    let start = Instant::now();
    c.send(start, server_addr, b"GET /pkg").unwrap();
    let mut hellos = 0;
    let mut failed = None;
    // Ten simulated minutes, in 100 ms steps; nothing ever answers.
    for step in 0..6000u64 {
        let now = start + Duration::from_millis(100 * step);
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        while let Some(d) = c.poll_transmit() {
            assert_eq!(d.to, server_addr);
            hellos += 1;
        }
        if let Some(ClientEvent::Failed { retry_in, .. }) = c.poll_event() {
            failed = Some((now - start, retry_in));
            break;
        }
    }
    let Some((after, retry_in)) = failed else {
        panic!(
            "no Failed event in ten minutes ({hellos} datagrams sent, next timer {:?}): \
             the peer stays in its handshake for good, and everything sent to it waits",
            c.poll_timeout().map(|t| t - start)
        );
    };
    assert!(hellos >= 2, "the flight was retransmitted ({hellos})");
    // After the back-off, the next send starts a new handshake.
    let later = start + after + retry_in;
    c.handle_timeout(later);
    c.send(later, server_addr, b"GET /pkg").unwrap();
    c.handle_timeout(later);
    assert!(
        c.poll_transmit().is_some(),
        "no new ClientHello after the back-off"
    );
}

/// `datagram` with `add` added to each record's sequence number.
fn renumbered(datagram: &[u8], add: u64) -> Vec<u8> {
    let mut d = datagram.to_vec();
    let mut at = 0;
    while at + 13 <= d.len() {
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&d[at + 5..at + 11]);
        let seq = (u64::from_be_bytes(seq) + add).to_be_bytes();
        d[at + 5..at + 11].copy_from_slice(&seq[2..]);
        at += 13 + usize::from(u16::from_be_bytes([d[at + 11], d[at + 12]]));
    }
    d
}

/// The file-server case of host/tests/device_dtls_pull.rs, in memory: the
/// server holds another key for our identity and, like OpenSSL, silently
/// drops the Finished it cannot decrypt and repeats its own last flight
/// (ServerHello .. ServerHelloDone) on its timer, 1, 2, 4, 8 s apart, then
/// gives up without a word. Here our `DtlsServer` plays it with its alert
/// held back and its flight repeated by hand.
#[test]
fn a_handshake_whose_finished_is_ignored_fails_and_is_retried() {
    let (client_addr, server_addr) = addrs();
    let lookup: PskLookup = Arc::new(|id: &[u8]| (id == b"dev-1").then(|| vec![0x24; 16]));
    let mut s = DtlsServer::new(
        &ServerCredentials {
            psk: Some(lookup),
            ..ServerCredentials::default()
        },
        ServerLimits::default(),
    )
    .unwrap();
    let mut c = client(server_addr);
    let start = Instant::now();
    c.send(start, server_addr, b"GET /pkg").unwrap();
    // Run the handshake, keeping the server's last flight and dropping its alert.
    let mut last_flight: Vec<Vec<u8>> = Vec::new();
    for _ in 0..20 {
        let mut moved = false;
        while let Some(d) = c.poll_transmit() {
            moved = true;
            s.handle_datagram(start, client_addr, &d.bytes);
        }
        let from_server: Vec<Vec<u8>> = std::iter::from_fn(|| s.poll_transmit())
            .map(|d| d.bytes)
            .filter(|b| b.first() != Some(&21))
            .collect();
        if !from_server.is_empty() {
            moved = true;
            last_flight = from_server.clone();
            for d in &from_server {
                c.handle_datagram(start, server_addr, d);
            }
        }
        if !moved {
            break;
        }
    }
    assert!(!c.is_established(server_addr));
    assert!(!last_flight.is_empty());
    let mut failed = None;
    let mut sent = 0;
    let repeats = [1, 3, 7, 15].map(Duration::from_secs);
    for step in 0..6000u64 {
        let now = start + Duration::from_millis(100 * step);
        if let Some(k) = repeats.iter().position(|r| *r == now - start) {
            // A retransmission carries new record sequence numbers.
            for d in &last_flight {
                c.handle_datagram(now, server_addr, &renumbered(d, 16 * (k as u64 + 1)));
            }
        }
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        sent += std::iter::from_fn(|| c.poll_transmit()).count();
        if let Some(ClientEvent::Failed { retry_in, .. }) = c.poll_event() {
            failed = Some((now - start, retry_in));
            break;
        }
    }
    let Some((after, retry_in)) = failed else {
        panic!(
            "no Failed event in ten minutes ({sent} datagrams sent after the first \
             flight 5, next timer {:?}): the handshake with this peer never ends, and \
             everything later sent to it waits behind it",
            c.poll_timeout().map(|t| t - start)
        );
    };
    let later = start + after + retry_in;
    c.handle_timeout(later);
    c.send(later, server_addr, b"GET /pkg").unwrap();
    c.handle_timeout(later);
    assert!(
        c.poll_transmit().is_some(),
        "no new ClientHello after the back-off"
    );
}

/// Honest peers and one lost datagram: the client's final flight (its
/// ClientKeyExchange, ChangeCipherSpec, Finished) is lost once. The server
/// repeats its flight on its timer, the client must answer with its own
/// again (RFC 6347 §4.2.4), and the handshake completes.
#[test]
fn a_lost_final_flight_is_repeated_and_the_handshake_completes() {
    let (client_addr, server_addr) = addrs();
    let (mut c, mut s) = (client(server_addr), server());
    let start = Instant::now();
    c.send(start, server_addr, b"register").unwrap();
    let mut dropped = false;
    for step in 0..600u64 {
        let now = start + Duration::from_millis(100 * step);
        // The server's timer first: its repeated flight reaches the client
        // before the client's own timer fires (both are 1 s).
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        while let Some(d) = s.poll_transmit() {
            c.handle_datagram(now, server_addr, &d.bytes);
        }
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        while let Some(d) = c.poll_transmit() {
            // A handshake record holding a ClientKeyExchange (type 16).
            let final_flight = d.bytes.len() > 13 && d.bytes[0] == 22 && d.bytes[13] == 16;
            if final_flight && !dropped {
                dropped = true;
                continue;
            }
            s.handle_datagram(now, client_addr, &d.bytes);
        }
        while let Some(d) = s.poll_transmit() {
            c.handle_datagram(now, server_addr, &d.bytes);
        }
        if c.is_established(server_addr) {
            break;
        }
    }
    assert!(dropped, "the final flight was never sent");
    assert!(
        c.is_established(server_addr),
        "no session a minute after one lost datagram (client timer {:?}, server timer {:?})",
        c.poll_timeout().map(|t| t - start),
        s.poll_timeout().map(|t| t - start)
    );
    pump(start + Duration::from_secs(60), &mut c, &mut s);
    let events: Vec<ServerEvent> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(
        events.contains(&ServerEvent::Data {
            peer: client_addr,
            bytes: b"register".to_vec()
        }),
        "{events:?}"
    );
}
