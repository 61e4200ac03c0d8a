//! Client and server driven against each other in memory: handshakes,
//! suites, refusals, retransmission and the caps, without sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

const CLIENT: &str = "10.0.0.2:40000";
const SERVER: &str = "10.0.0.1:5684";
const PSK_CCM_8: u16 = 0xC0A8;
const ECDHE_ECDSA_CCM_8: u16 = 0xC0AE;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn psk_lookup(identity: &'static str, key: &'static [u8]) -> PskLookup {
    Arc::new(move |id: &[u8]| (id == identity.as_bytes()).then(|| key.to_vec()))
}

fn psk_server() -> DtlsServer {
    let creds = ServerCredentials {
        psk: Some(psk_lookup("dev-1", b"0123456789abcdef")),
        ..ServerCredentials::default()
    };
    DtlsServer::new(&creds, ServerLimits::default()).unwrap()
}

fn psk_client(identity: &str, key: &[u8]) -> DtlsClient {
    let mut c = DtlsClient::new(ClientCredentials::Psk {
        identity: identity.as_bytes().to_vec(),
        key: key.to_vec(),
    })
    .unwrap();
    c.add_peer(addr(SERVER), "10.0.0.1").unwrap();
    c
}

/// Moves datagrams both ways until both sides are quiet; `filter` may drop
/// (return false) or see each datagram on its way.
fn pump_with(
    now: Instant,
    c: &mut DtlsClient,
    s: &mut DtlsServer,
    mut filter: impl FnMut(bool, &Datagram) -> bool,
) {
    for _ in 0..100 {
        let mut moved = false;
        while let Some(d) = c.poll_transmit() {
            moved = true;
            if filter(true, &d) {
                s.handle_datagram(now, addr(CLIENT), &d.bytes);
            }
        }
        while let Some(d) = s.poll_transmit() {
            moved = true;
            if filter(false, &d) {
                c.handle_datagram(now, addr(SERVER), &d.bytes);
            }
        }
        if !moved {
            return;
        }
    }
    panic!("the two sides never went quiet");
}

fn pump(now: Instant, c: &mut DtlsClient, s: &mut DtlsServer) {
    pump_with(now, c, s, |_, _| true);
}

fn client_events(c: &mut DtlsClient) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn server_events(s: &mut DtlsServer) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn psk_handshake_carries_data_both_ways_with_ccm_8() {
    let now = Instant::now();
    let (mut c, mut s) = (psk_client("dev-1", b"0123456789abcdef"), psk_server());
    // Sent before any handshake: held, then delivered once it completes.
    c.send(now, addr(SERVER), b"register").unwrap();
    pump(now, &mut c, &mut s);
    assert_eq!(
        server_events(&mut s),
        vec![
            ServerEvent::Established {
                peer: addr(CLIENT),
                identity: PeerIdentity::Psk(b"dev-1".to_vec()),
            },
            ServerEvent::Data {
                peer: addr(CLIENT),
                bytes: b"register".to_vec(),
            },
        ]
    );
    assert_eq!(s.cipher_suite(addr(CLIENT)), Some(PSK_CCM_8));
    assert_eq!(c.cipher_suite(addr(SERVER)), Some(PSK_CCM_8));
    assert_eq!(
        client_events(&mut c),
        vec![ClientEvent::Connected { peer: addr(SERVER) }]
    );
    s.send(now, addr(CLIENT), b"created").unwrap();
    pump(now, &mut c, &mut s);
    assert_eq!(
        client_events(&mut c),
        vec![ClientEvent::Data {
            peer: addr(SERVER),
            bytes: b"created".to_vec(),
        }]
    );
    let st = s.stats();
    assert_eq!((st.established, st.half_open), (1, 0));
}

#[test]
fn a_wrong_key_or_identity_fails_the_handshake_and_delivers_nothing() {
    for (identity, key) in [
        ("dev-1", &b"fedcba9876543210"[..]),
        ("stranger", &b"0123456789abcdef"[..]),
    ] {
        let now = Instant::now();
        let (mut c, mut s) = (psk_client(identity, key), psk_server());
        c.send(now, addr(SERVER), b"register").unwrap();
        pump(now, &mut c, &mut s);
        let events = server_events(&mut s);
        assert!(
            matches!(events.as_slice(), [ServerEvent::Failed { .. }]),
            "{identity}: {events:?}"
        );
        assert!(!c.is_established(addr(SERVER)));
        let st = s.stats();
        assert_eq!(
            (st.established, st.half_open, st.failed_handshakes),
            (0, 0, 1)
        );
    }
}

#[test]
fn the_client_gives_up_after_retransmissions_and_backs_off() {
    let start = Instant::now();
    let mut c = psk_client("dev-1", b"0123456789abcdef");
    c.send(start, addr(SERVER), b"register").unwrap();
    let first = c.poll_transmit().unwrap();
    assert!(first_record(&first.bytes).unwrap().is_client_hello());
    // No server: the ClientHello is retransmitted (RFC 6347 §4.2.4) until
    // the stack gives up.
    let mut now = start;
    let mut sent = 1;
    let failed = loop {
        let Some(t) = c.poll_timeout() else {
            panic!("no timer while handshaking")
        };
        assert!(t > now, "timer in the past");
        now = t;
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {
            sent += 1;
        }
        if let Some(ClientEvent::Failed { retry_in, .. }) = c.poll_event() {
            break retry_in;
        }
        assert!(now - start < Duration::from_secs(600), "never gave up");
    };
    assert!(sent > 2, "retransmitted {sent} times");
    assert_eq!(failed, Duration::from_secs(1));
    // During back-off nothing is sent; the next datagram after it starts a
    // new handshake, and a second failure doubles the wait.
    c.send(now, addr(SERVER), b"register").unwrap();
    assert!(c.poll_transmit().is_none());
    now += Duration::from_secs(1);
    c.handle_timeout(now);
    assert!(
        first_record(&c.poll_transmit().unwrap().bytes)
            .unwrap()
            .is_client_hello()
    );
    let second = loop {
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {}
        if let Some(ClientEvent::Failed { retry_in, .. }) = c.poll_event() {
            break retry_in;
        }
    };
    assert_eq!(second, Duration::from_secs(2));
}

#[test]
fn a_lost_flight_is_retransmitted_and_the_handshake_completes() {
    let now = Instant::now();
    let (mut c, mut s) = (psk_client("dev-1", b"0123456789abcdef"), psk_server());
    c.send(now, addr(SERVER), b"x").unwrap();
    // Lose the server's first two answers.
    let mut lost = 0;
    pump_with(now, &mut c, &mut s, |from_client, _| {
        if !from_client && lost < 2 {
            lost += 1;
            return false;
        }
        true
    });
    assert!(!c.is_established(addr(SERVER)));
    let mut t = now;
    for _ in 0..10 {
        t = c.poll_timeout().unwrap().max(t);
        c.handle_timeout(t);
        s.handle_timeout(t);
        pump(t, &mut c, &mut s);
        if c.is_established(addr(SERVER)) {
            break;
        }
    }
    assert!(c.is_established(addr(SERVER)));
    assert!(
        server_events(&mut s)
            .iter()
            .any(|e| matches!(e, ServerEvent::Data { bytes, .. } if bytes == b"x"))
    );
}

/// Datagrams the client sends once established, for tampering with.
fn established_pair(now: Instant) -> (DtlsClient, DtlsServer) {
    let (mut c, mut s) = (psk_client("dev-1", b"0123456789abcdef"), psk_server());
    c.send(now, addr(SERVER), b"hello").unwrap();
    pump(now, &mut c, &mut s);
    server_events(&mut s);
    client_events(&mut c);
    (c, s)
}

#[test]
fn tampered_and_replayed_records_are_dropped_and_the_session_survives() {
    let now = Instant::now();
    let (mut c, mut s) = established_pair(now);
    c.send(now, addr(SERVER), b"update").unwrap();
    let record = c.poll_transmit().unwrap();
    let mut tampered = record.bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    s.handle_datagram(now, addr(CLIENT), &tampered);
    assert!(s.poll_transmit().is_none(), "no alert for a forged record");
    assert!(server_events(&mut s).is_empty());
    s.handle_datagram(now, addr(CLIENT), &record.bytes);
    s.handle_datagram(now, addr(CLIENT), &record.bytes); // replay
    assert_eq!(
        server_events(&mut s),
        vec![ServerEvent::Data {
            peer: addr(CLIENT),
            bytes: b"update".to_vec(),
        }]
    );
    let st = s.stats();
    assert_eq!((st.established, st.rejected_records), (1, 1));
    // The same holds on the client side.
    s.send(now, addr(CLIENT), b"read").unwrap();
    let record = s.poll_transmit().unwrap();
    let mut tampered = record.bytes.clone();
    tampered[20] ^= 0x80;
    assert!(c.handle_datagram(now, addr(SERVER), &tampered));
    assert!(c.poll_transmit().is_none());
    assert!(c.handle_datagram(now, addr(SERVER), &record.bytes));
    assert_eq!(
        client_events(&mut c),
        vec![ClientEvent::Data {
            peer: addr(SERVER),
            bytes: b"read".to_vec(),
        }]
    );
    assert!(c.is_established(addr(SERVER)));
    assert_eq!(c.rejected_records(), 1);
}

#[test]
fn unknown_senders_get_nothing_but_for_a_client_hello() {
    let now = Instant::now();
    let mut s = psk_server();
    let coap_get = [0x40, 0x01, 0x12, 0x34, 0xb1, b'3'];
    let fake_app = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4];
    for junk in [&coap_get[..], &fake_app[..], &[][..], &[22u8; 40][..]] {
        s.handle_datagram(now, addr("10.9.9.9:1"), junk);
    }
    assert!(s.poll_transmit().is_none());
    let st = s.stats();
    assert_eq!((st.half_open, st.dropped_datagrams), (0, 4));
}

/// A real ClientHello, as a client would send it first.
fn client_hello() -> Vec<u8> {
    let mut c = psk_client("dev-1", b"0123456789abcdef");
    c.send(Instant::now(), addr(SERVER), b"x").unwrap();
    c.poll_transmit().unwrap().bytes
}

#[test]
fn a_client_hello_flood_is_capped_and_a_real_client_still_gets_in() {
    let now = Instant::now();
    let limits = ServerLimits {
        max_half_open: 64,
        max_half_open_per_ip: 2,
        ..ServerLimits::default()
    };
    let creds = ServerCredentials {
        psk: Some(psk_lookup("dev-1", b"0123456789abcdef")),
        ..ServerCredentials::default()
    };
    let mut s = DtlsServer::new(&creds, limits).unwrap();
    let hello = client_hello();
    // 5000 spoofed sources, 3 ports each from the same IP.
    let mut answered_bytes = 0;
    for i in 0..5000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + 100 + i);
        for port in [1000, 1001, 1002] {
            s.handle_datagram(now, SocketAddr::from((ip, port)), &hello);
        }
        while let Some(d) = s.poll_transmit() {
            answered_bytes += d.bytes.len();
        }
    }
    let st = s.stats();
    assert!(st.half_open <= 64, "{st:?}");
    assert_eq!(st.established, 0);
    // Per-IP cap: the third port of each IP was refused.
    assert!(st.refused_hellos >= 5000, "{st:?}");
    // No amplification: a HelloVerifyRequest is smaller than the ClientHello.
    assert!(answered_bytes <= 10_000 * hello.len(), "{answered_bytes}");
    // A real client, arriving during the flood, completes its handshake.
    let mut c = psk_client("dev-1", b"0123456789abcdef");
    c.send(now, addr(SERVER), b"register").unwrap();
    pump(now, &mut c, &mut s);
    assert!(c.is_established(addr(SERVER)));
    assert!(s.counters_match());
    // Half-open associations expire.
    s.handle_timeout(now + Duration::from_secs(31));
    assert!(s.counters_match());
    assert_eq!(s.stats().half_open, 0);
    assert_eq!(s.stats().established, 1);
}

#[test]
fn a_new_client_hello_replaces_a_session_only_once_it_is_idle() {
    let now = Instant::now();
    let (_c, mut s) = established_pair(now);
    let hello = client_hello();
    s.handle_datagram(now + Duration::from_secs(1), addr(CLIENT), &hello);
    assert!(s.poll_transmit().is_none());
    assert!(s.identity(addr(CLIENT)).is_some(), "live session kept");
    // Idle for longer than replace_after_idle: a restarted device (same
    // NAT mapping) handshakes again.
    let later = now + Duration::from_secs(60);
    let mut c2 = psk_client("dev-1", b"0123456789abcdef");
    c2.send(later, addr(SERVER), b"again").unwrap();
    pump(later, &mut c2, &mut s);
    assert!(c2.is_established(addr(SERVER)));
    let events = server_events(&mut s);
    assert!(s.counters_match());
    assert!(events.contains(&ServerEvent::Closed { peer: addr(CLIENT) }));
    assert!(events.contains(&ServerEvent::Data {
        peer: addr(CLIENT),
        bytes: b"again".to_vec(),
    }));
}

#[test]
fn idle_sessions_expire_and_close_notifies() {
    let now = Instant::now();
    let (mut c, mut s) = established_pair(now);
    s.handle_timeout(now + Duration::from_secs(86_401));
    assert_eq!(s.stats().established, 0);
    assert_eq!(
        server_events(&mut s),
        vec![ServerEvent::Closed { peer: addr(CLIENT) }]
    );
    // The close_notify reaches the client, which reports it.
    let close = s.poll_transmit().unwrap();
    c.handle_datagram(now, addr(SERVER), &close.bytes);
    assert_eq!(
        client_events(&mut c),
        vec![ClientEvent::Closed { peer: addr(SERVER) }]
    );
}

// ---- certificates ----

struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca: Vec<u8>,
    server_chain: Vec<Vec<u8>>,
    server_key: Vec<u8>,
    client_chain: Vec<Vec<u8>>,
    client_key: Vec<u8>,
}

fn issued(names: &[&str], cn: &str, ca: &rcgen::Issuer<'_, rcgen::KeyPair>) -> (Vec<u8>, Vec<u8>) {
    issued_with(names, cn, ca, |_| {})
}

fn issued_with(
    names: &[&str],
    cn: &str,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    tweak: impl FnOnce(&mut rcgen::CertificateParams),
) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    tweak(&mut params);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmdm test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (server, server_key) = issued(&["10.0.0.1", "lwm2m.example"], "lwm2m.example", &issuer);
    let (client, client_key) = issued(&["dev-7"], "dev-7", &issuer);
    Pki {
        issuer,
        ca: ca_cert.der().to_vec(),
        server_chain: vec![server],
        server_key,
        client_chain: vec![client],
        client_key,
    }
}

fn cert_server(p: &Pki) -> DtlsServer {
    let creds = ServerCredentials {
        psk: Some(psk_lookup("dev-1", b"0123456789abcdef")),
        certificate: Some((p.server_chain.clone(), p.server_key.clone())),
        client_cas: vec![p.ca.clone()],
    };
    DtlsServer::new(&creds, ServerLimits::default()).unwrap()
}

fn cert_client(p: &Pki, trust: ServerTrust, host: &str) -> DtlsClient {
    let mut c = DtlsClient::new(ClientCredentials::Certificate {
        chain: p.client_chain.clone(),
        private_key: p.client_key.clone(),
        trust,
    })
    .unwrap();
    c.add_peer(addr(SERVER), host).unwrap();
    c
}

#[test]
fn certificates_authenticate_both_sides_with_ecdhe_ecdsa_ccm_8() {
    let now = Instant::now();
    let p = pki();
    let mut s = cert_server(&p);
    for (trust, host) in [
        (ServerTrust::Ca(vec![p.ca.clone()]), "10.0.0.1"),
        (ServerTrust::Ca(vec![p.ca.clone()]), "lwm2m.example"),
        (ServerTrust::Pinned(p.server_chain[0].clone()), "anything"),
    ] {
        let mut c = cert_client(&p, trust.clone(), host);
        c.send(now, addr(SERVER), b"register").unwrap();
        pump(now, &mut c, &mut s);
        assert!(c.is_established(addr(SERVER)), "{trust:?} {host}");
        assert_eq!(c.cipher_suite(addr(SERVER)), Some(ECDHE_ECDSA_CCM_8));
        let events = server_events(&mut s);
        assert!(
            events.contains(&ServerEvent::Established {
                peer: addr(CLIENT),
                identity: PeerIdentity::Certificate(vec!["dev-7".into(), "dev-7".into()]),
            }),
            "{events:?}"
        );
        s.close(now, addr(CLIENT));
        server_events(&mut s);
        while s.poll_transmit().is_some() {}
    }
    // The same server still takes PSK clients.
    let mut c = psk_client("dev-1", b"0123456789abcdef");
    c.send(now, addr(SERVER), b"x").unwrap();
    pump(now, &mut c, &mut s);
    assert_eq!(c.cipher_suite(addr(SERVER)), Some(PSK_CCM_8));
}

#[test]
fn a_server_certificate_that_does_not_check_out_is_refused() {
    let now = Instant::now();
    let p = pki();
    let other = pki();
    for (trust, host) in [
        // Right CA, wrong name.
        (ServerTrust::Ca(vec![p.ca.clone()]), "10.0.0.99"),
        // Another CA.
        (ServerTrust::Ca(vec![other.ca.clone()]), "10.0.0.1"),
        // Pinned to another certificate.
        (
            ServerTrust::Pinned(other.server_chain[0].clone()),
            "10.0.0.1",
        ),
    ] {
        let mut s = cert_server(&p);
        let mut c = cert_client(&p, trust.clone(), host);
        c.send(now, addr(SERVER), b"register").unwrap();
        pump(now, &mut c, &mut s);
        assert!(!c.is_established(addr(SERVER)), "{trust:?} {host}");
        assert!(
            client_events(&mut c)
                .iter()
                .any(|e| matches!(e, ClientEvent::Failed { .. })),
            "{trust:?} {host}"
        );
        assert!(
            !server_events(&mut s)
                .iter()
                .any(|e| matches!(e, ServerEvent::Data { .. }))
        );
    }
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let now = Instant::now();
    let p = pki();
    let other = pki();
    let mut s = cert_server(&p);
    let mut c = DtlsClient::new(ClientCredentials::Certificate {
        chain: other.client_chain.clone(),
        private_key: other.client_key.clone(),
        trust: ServerTrust::Ca(vec![p.ca.clone()]),
    })
    .unwrap();
    c.add_peer(addr(SERVER), "10.0.0.1").unwrap();
    c.send(now, addr(SERVER), b"register").unwrap();
    pump(now, &mut c, &mut s);
    assert!(!c.is_established(addr(SERVER)));
    assert_eq!(s.stats().established, 0);
    assert!(
        server_events(&mut s)
            .iter()
            .any(|e| matches!(e, ServerEvent::Failed { .. }))
    );
}

#[test]
fn unusable_credentials_are_configuration_errors() {
    let p = pki();
    assert!(matches!(
        DtlsClient::new(ClientCredentials::RawPublicKey),
        Err(DtlsError::Unsupported(_))
    ));
    assert!(matches!(
        DtlsClient::new(ClientCredentials::Certificate {
            chain: p.client_chain.clone(),
            private_key: b"not a key".to_vec(),
            trust: ServerTrust::Ca(vec![p.ca.clone()]),
        }),
        Err(DtlsError::Credentials(_))
    ));
    assert!(matches!(
        DtlsClient::new(ClientCredentials::Psk {
            identity: b"x".to_vec(),
            key: Vec::new(),
        }),
        Err(DtlsError::Credentials(_))
    ));
    assert!(matches!(
        DtlsServer::new(&ServerCredentials::default(), ServerLimits::default()),
        Err(DtlsError::Credentials(_))
    ));
    // Debug output never shows a key.
    let psk = ClientCredentials::Psk {
        identity: b"dev-1".to_vec(),
        key: b"supersecretkey!!".to_vec(),
    };
    assert!(!format!("{psk:?}").contains("supersecret"));
}

#[test]
fn certificate_names_lists_cn_then_sans() {
    let p = pki();
    assert_eq!(
        certificate_names(&p.server_chain[0]),
        vec!["lwm2m.example", "10.0.0.1", "lwm2m.example"]
    );
    assert!(certificate_names(b"junk").is_empty());
}

#[test]
fn expired_certificates_are_refused_on_both_sides() {
    let now = Instant::now();
    let p = pki();
    let expire = |params: &mut rcgen::CertificateParams| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    };
    // The server's certificate expired.
    let (old_server, old_key) = issued_with(&["10.0.0.1"], "lwm2m", &p.issuer, expire);
    let creds = ServerCredentials {
        psk: None,
        certificate: Some((vec![old_server], old_key)),
        client_cas: vec![p.ca.clone()],
    };
    let mut s = DtlsServer::new(&creds, ServerLimits::default()).unwrap();
    let mut c = cert_client(&p, ServerTrust::Ca(vec![p.ca.clone()]), "10.0.0.1");
    c.send(now, addr(SERVER), b"register").unwrap();
    pump(now, &mut c, &mut s);
    assert!(!c.is_established(addr(SERVER)));
    // The device's certificate expired.
    let (old_client, old_client_key) = issued_with(&[], "dev-7", &p.issuer, expire);
    let mut s = cert_server(&p);
    let mut c = DtlsClient::new(ClientCredentials::Certificate {
        chain: vec![old_client],
        private_key: old_client_key,
        trust: ServerTrust::Ca(vec![p.ca.clone()]),
    })
    .unwrap();
    c.add_peer(addr(SERVER), "10.0.0.1").unwrap();
    c.send(now, addr(SERVER), b"register").unwrap();
    pump(now, &mut c, &mut s);
    assert_eq!(s.stats().established, 0);
    assert!(
        !server_events(&mut s)
            .iter()
            .any(|e| matches!(e, ServerEvent::Data { .. }))
    );
}

/// xorshift64*: deterministic junk without a dependency.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// `base` with a few bytes flipped, cut or extended, or pure noise.
    fn mutate(&mut self, base: &[u8]) -> Vec<u8> {
        let mut d = base.to_vec();
        match self.below(4) {
            0 => (0..self.below(1400)).map(|_| self.next() as u8).collect(),
            1 => {
                d.truncate(self.below(d.len().max(1)));
                d
            }
            _ => {
                for _ in 0..1 + self.below(4) {
                    if !d.is_empty() {
                        let i = self.below(d.len());
                        d[i] ^= 1 << self.below(8);
                    }
                }
                if self.below(4) == 0 {
                    d.extend((0..self.below(64)).map(|_| self.next() as u8));
                }
                d
            }
        }
    }
}

#[test]
fn random_and_mutated_datagrams_neither_crash_nor_cost_a_session() {
    let now = Instant::now();
    let (mut c, mut s) = established_pair(now);
    let hello = client_hello();
    c.send(now, addr(SERVER), b"sample").unwrap();
    let record = c.poll_transmit().unwrap().bytes;
    s.handle_datagram(now, addr(CLIENT), &record);
    server_events(&mut s);
    s.send(now, addr(CLIENT), b"answer").unwrap();
    let answer = s.poll_transmit().unwrap().bytes;
    // Both records delivered once: any verbatim copy below is a replay.
    c.handle_datagram(now, addr(SERVER), &answer);
    client_events(&mut c);
    let mut junk = Junk(0x9e37_79b9_7f4a_7c15);
    for i in 0..20_000u32 {
        let base = [&hello[..], &record[..], &answer[..]][junk.below(3)];
        let d = junk.mutate(base);
        // From strangers, and from the session's own address.
        let from = if i % 2 == 0 {
            SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1000 + (i % 7) as u16))
        } else {
            addr(CLIENT)
        };
        s.handle_datagram(now, from, &d);
        c.handle_datagram(now, addr(SERVER), &junk.mutate(base));
    }
    while s.poll_transmit().is_some() {}
    while c.poll_transmit().is_some() {}
    assert!(
        !server_events(&mut s).iter().any(|e| matches!(
            e,
            ServerEvent::Data { .. } | ServerEvent::Established { .. }
        )),
        "junk became data or a session"
    );
    assert!(
        !client_events(&mut c)
            .iter()
            .any(|e| matches!(e, ClientEvent::Data { .. }))
    );
    assert!(s.stats().half_open <= ServerLimits::default().max_half_open);
    assert!(s.counters_match());
    // The real session still carries data both ways.
    assert!(c.is_established(addr(SERVER)));
    c.send(now, addr(SERVER), b"still here").unwrap();
    pump(now, &mut c, &mut s);
    assert!(server_events(&mut s).contains(&ServerEvent::Data {
        peer: addr(CLIENT),
        bytes: b"still here".to_vec(),
    }));
}

#[test]
fn a_lost_final_flight_is_repeated_although_ccs_records_are_cut() {
    let now = Instant::now();
    let (mut c, mut s) = (psk_client("dev-1", b"0123456789abcdef"), psk_server());
    c.send(now, addr(SERVER), b"x").unwrap();
    // Lose everything the server sends once it holds the session: its final
    // flight (CCS + Finished). The client repeats its own final flight
    // (ClientKeyExchange, CCS, Finished) to a server already established.
    let mut lost = 0;
    pump_with(now, &mut c, &mut s, |from_client, _| {
        if !from_client && s_established_hint(&mut lost) {
            return false;
        }
        true
    });
    fn s_established_hint(lost: &mut u32) -> bool {
        *lost += 1;
        *lost == 3
    }
    assert!(s.identity(addr(CLIENT)).is_some(), "the server finished");
    assert!(!c.is_established(addr(SERVER)), "its final flight was lost");
    let mut t = now;
    for _ in 0..10 {
        if c.is_established(addr(SERVER)) {
            break;
        }
        t = c.poll_timeout().unwrap().max(t);
        c.handle_timeout(t);
        s.handle_timeout(t);
        pump(t, &mut c, &mut s);
    }
    assert!(c.is_established(addr(SERVER)), "lost {lost}");
    s.send(t, addr(CLIENT), b"ok").unwrap();
    pump(t, &mut c, &mut s);
    assert!(client_events(&mut c).contains(&ClientEvent::Data {
        peer: addr(SERVER),
        bytes: b"ok".to_vec(),
    }));
}

#[test]
fn a_first_client_hello_has_no_cookie() {
    assert_eq!(
        record::client_hello_has_cookie(&client_hello()),
        Some(false)
    );
    assert_eq!(record::client_hello_has_cookie(b"\x17\xfe\xfd"), None);
}

/// What waited for a failed handshake, discarded (the engine above gave
/// it up and sends afresh), opens no handshake when the back-off ends; the
/// next send does, and not before the back-off ends.
#[test]
fn discarded_plaintext_opens_no_handshake_and_the_back_off_still_applies() {
    let start = Instant::now();
    let (mut c, mut s) = (psk_client("dev-1", b"fedcba9876543210"), psk_server());
    c.send(start, addr(SERVER), b"register").unwrap();
    pump(start, &mut c, &mut s);
    let retry_in = match c.poll_event() {
        Some(ClientEvent::Failed { retry_in, .. }) => retry_in,
        other => panic!("{other:?}"),
    };
    assert_eq!(retry_in, Duration::from_secs(1));
    c.discard_queued(addr(SERVER));
    let mut now = start + retry_in;
    c.handle_timeout(now);
    assert!(c.poll_transmit().is_none(), "no handshake for nothing");
    // A new send right after a second failure waits for its 2 s back-off.
    c.send(now, addr(SERVER), b"register again").unwrap();
    pump(now, &mut c, &mut s);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Failed { retry_in, .. }) if retry_in == Duration::from_secs(2)
    ));
    c.discard_queued(addr(SERVER));
    c.send(now, addr(SERVER), b"third").unwrap();
    assert!(c.poll_transmit().is_none(), "within the back-off");
    now += Duration::from_secs(2);
    c.handle_timeout(now);
    assert!(
        first_record(&c.poll_transmit().unwrap().bytes)
            .unwrap()
            .is_client_hello()
    );
}
