//! The Bootstrap Interface without sockets: a fake bootstrap server feeds
//! encoded requests in and reads the device's datagrams back, byte by byte
//! where the wire form is fixed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

use super::*;
use crate::model::Value;
use crate::objects::{Security, SecurityMode, Server};

const BS: &str = "10.0.0.1:5784";
const KEY: [u8; 16] = *b"0123456789abcdef";

fn bs_addr() -> SocketAddr {
    BS.parse().unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The factory bootstrap account, as instance 0.
fn factory() -> Accounts {
    let mut s = Security::nosec("coaps://10.0.0.1:5784", 0);
    s.bootstrap = true;
    s.security_mode = SecurityMode::Psk as i64;
    s.public_key_or_identity = b"bs-dev1".to_vec();
    s.secret_key = b"bootstrap-secret".to_vec();
    let mut a = Accounts::default();
    a.security.insert(0, s);
    a
}

struct Bench {
    bs: BootstrapClient,
    now: Instant,
    mid: u16,
}

impl Bench {
    fn new() -> Bench {
        Bench::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Bench {
        let mut cfg = Config::new("dev1", bs_addr(), 7);
        cfg.other_objects = vec![
            ObjectLinks {
                id: 3,
                version: None,
                instances: vec![0],
            },
            ObjectLinks {
                id: 9,
                version: None,
                instances: vec![0, 1],
            },
        ];
        tweak(&mut cfg);
        let mut bs = BootstrapClient::new(cfg, factory());
        bs.endpoint_mut().set_next_mid(0x1000);
        Bench {
            bs,
            now: Instant::now(),
            mid: 0x7000,
        }
    }

    fn transmits(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(t) = self.bs.poll_transmit() {
            assert_eq!(t.to, bs_addr());
            out.push(Packet::from_bytes(&t.bytes).unwrap());
        }
        out
    }

    fn raw_transmits(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(t) = self.bs.poll_transmit() {
            out.push(t.bytes);
        }
        out
    }

    fn events(&mut self) -> Vec<BootstrapEvent> {
        std::iter::from_fn(|| self.bs.poll_event()).collect()
    }

    /// Starts and accepts the session (the server's piggy-backed 2.04).
    fn accepted() -> Bench {
        let mut b = Bench::new();
        b.bs.start(b.now);
        let req = b.transmits().pop().unwrap();
        let mut ack = Packet::new();
        ack.header.set_type(MessageType::Acknowledgement);
        ack.header.message_id = req.header.message_id;
        ack.header.code = MessageClass::from(0x44);
        ack.set_token(req.get_token().to_vec());
        b.bs.handle_datagram(b.now, bs_addr(), &ack.to_bytes().unwrap());
        assert!(matches!(b.bs.state(), BootstrapState::Serving { .. }));
        b.events();
        b
    }

    /// Sends a CON request with token `[0xB0, n]`; returns the device's datagram(s).
    fn request(
        &mut self,
        method: RequestType,
        path: &str,
        opts: &[(CoapOption, u64)],
        payload: &[u8],
    ) -> Vec<Vec<u8>> {
        self.request_from(bs_addr(), method, path, opts, payload)
    }

    fn request_from(
        &mut self,
        from: SocketAddr,
        method: RequestType,
        path: &str,
        opts: &[(CoapOption, u64)],
        payload: &[u8],
    ) -> Vec<Vec<u8>> {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = self.mid;
        p.set_token(vec![0xB0, self.mid as u8]);
        self.mid += 1;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        for (o, v) in opts {
            crate::coap::msg::set_uint(&mut p, *o, *v);
        }
        p.payload = payload.to_vec();
        self.bs
            .handle_datagram(self.now, from, &p.to_bytes_unlimited().unwrap());
        self.raw_transmits()
    }

    /// One answer, decoded.
    fn ask(
        &mut self,
        method: RequestType,
        path: &str,
        opts: &[(CoapOption, u64)],
        payload: &[u8],
    ) -> Packet {
        let mut out = self.request(method, path, opts, payload);
        assert_eq!(out.len(), 1, "one answer to {method:?} {path}");
        Packet::from_bytes(&out.remove(0)).unwrap()
    }
}

fn code(p: &Packet) -> String {
    Code::of(p).to_string()
}

const CF: CoapOption = CoapOption::ContentFormat;
const TLV: u64 = 11542;

/// TLV of /0/1: URI coaps://10.0.0.2:5684, not bootstrap, PSK, identity
/// "dev1", key KEY, SSID 101 (Core 1.1 §7.4.3 encoding, by hand).
fn security_tlv() -> Vec<u8> {
    let uri = b"coaps://10.0.0.2:5684";
    let mut t = vec![0xC8, 0x00, uri.len() as u8];
    t.extend_from_slice(uri);
    t.extend_from_slice(&[0xC1, 0x01, 0x00]); // Bootstrap-Server false
    t.extend_from_slice(&[0xC1, 0x02, 0x00]); // Security Mode 0 (PSK)
    t.extend_from_slice(&[0xC4, 0x03]);
    t.extend_from_slice(b"dev1");
    t.extend_from_slice(&[0xC8, 0x05, 16]);
    t.extend_from_slice(&KEY);
    t.extend_from_slice(&[0xC1, 0x0A, 101]); // Short Server ID
    t
}

/// TLV of /1/1: SSID 101, lifetime 60, storing true, binding U.
fn server_tlv() -> Vec<u8> {
    hex("C1 00 65 C1 01 3C C1 06 01 C1 07 55")
}

fn provision(b: &mut Bench) {
    let r = b.ask(RequestType::Put, "/0/1", &[(CF, TLV)], &security_tlv());
    assert_eq!(code(&r), "2.04");
    let r = b.ask(RequestType::Put, "/1/1", &[(CF, TLV)], &server_tlv());
    assert_eq!(code(&r), "2.04");
}

#[test]
fn bootstrap_request_bytes() {
    let mut b = Bench::new();
    b.bs.start(b.now);
    let raw = b.raw_transmits();
    assert_eq!(raw.len(), 1);
    let bytes = &raw[0];
    // CON, TKL 8, POST, MID 0x1000, then the token.
    assert_eq!(&bytes[..4], &hex("48 02 10 00")[..]);
    // Uri-Path "bs", Uri-Query "ep=dev1", "pct=110" (Core 1.1 §6.1.3); no payload.
    let mut want = hex("B2 62 73 47");
    want.extend_from_slice(b"ep=dev1");
    want.push(0x07);
    want.extend_from_slice(b"pct=110");
    assert_eq!(&bytes[12..], &want[..]);
    assert_eq!(b.events(), vec![BootstrapEvent::Requested { attempt: 1 }]);
    assert!(matches!(b.bs.state(), BootstrapState::Requesting { .. }));
    // Without a preferred format: only ep.
    let mut cfg = Config::new("dev1", bs_addr(), 1);
    cfg.preferred_format = None;
    let p = request_packet(&cfg);
    assert_eq!(
        crate::coap::msg::uri_query(&p).unwrap(),
        vec!["ep=dev1".to_string()]
    );
}

#[test]
fn a_full_session_writes_tlv_and_finishes_after_the_store() {
    let mut b = Bench::accepted();
    // The write's answer, byte for byte: ACK 2.04, same MID and token.
    let out = b.request(RequestType::Put, "/0/1", &[(CF, TLV)], &security_tlv());
    assert_eq!(out, vec![hex("62 44 70 00 B0 00")]);
    let r = b.ask(RequestType::Put, "/1/1", &[(CF, TLV)], &server_tlv());
    assert_eq!(code(&r), "2.04");
    let s = &b.bs.staged().security[&1];
    assert_eq!(s.server_uri, "coaps://10.0.0.2:5684");
    assert_eq!(
        (s.security_mode, s.short_server_id, s.bootstrap),
        (0, 101, false)
    );
    assert_eq!(
        (&s.public_key_or_identity[..], &s.secret_key[..]),
        (&b"dev1"[..], &KEY[..])
    );
    let srv = &b.bs.staged().servers[&1];
    assert_eq!(
        (srv.short_server_id, srv.lifetime, srv.instance),
        (101, 60, 1)
    );
    b.events();
    // Finish: consistent, but nothing is answered before the driver stored it.
    let out = b.request(RequestType::Post, "/bs", &[], b"");
    assert!(out.is_empty(), "2.04 only after the store");
    let events = b.events();
    let [BootstrapEvent::Finished { accounts, usable }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(accounts.security.len(), 2);
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].authority, "10.0.0.2:5684");
    assert_eq!(usable[0].server.short_server_id, 101);
    assert!(matches!(
        usable[0].credentials,
        Some(crate::dtls::ClientCredentials::Psk { .. })
    ));
    // No key material in what a log line would show.
    assert!(!format!("{events:?}").contains("0123456789abcdef"));
    b.bs.finish_stored(b.now, Ok(()));
    assert_eq!(b.raw_transmits(), vec![hex("62 44 70 02 B0 02")]);
    assert_eq!(b.bs.state(), &BootstrapState::Done);
    assert!(b.events().contains(&BootstrapEvent::Done));
    // A retransmitted Finish gets the same answer from the dedup cache.
    b.mid = 0x7002;
    assert_eq!(
        b.request(RequestType::Post, "/bs", &[], b""),
        vec![hex("62 44 70 02 B0 02")]
    );
}

#[test]
fn senml_json_and_cbor_writes() {
    let mut b = Bench::accepted();
    let json = br#"[{"bn":"/0/2/","n":"0","vs":"coaps://srv.example:5684"},{"n":"1","vb":false},{"n":"2","v":0},{"n":"3","vd":"ZGV2MQ"},{"n":"5","vd":"MDEyMzQ1Njc4OWFiY2RlZg"},{"n":"10","v":7}]"#;
    let r = b.ask(RequestType::Put, "/0/2", &[(CF, 110)], json);
    assert_eq!(
        code(&r),
        "2.04",
        "{:?}",
        String::from_utf8_lossy(&r.payload)
    );
    let s = &b.bs.staged().security[&2];
    assert_eq!(
        (s.server_uri.as_str(), s.short_server_id),
        ("coaps://srv.example:5684", 7)
    );
    assert_eq!(s.secret_key, KEY);
    // SenML CBOR: [{-2: "/1/2/", 0: "0", 2: 7}, {0: "1", 2: 120}]
    let cbor = hex("82 A3 21 65 2F 31 2F 32 2F 00 61 30 02 07 A2 00 61 31 02 18 78");
    let r = b.ask(RequestType::Put, "/1/2", &[(CF, 112)], &cbor);
    assert_eq!(
        code(&r),
        "2.04",
        "{:?}",
        String::from_utf8_lossy(&r.payload)
    );
    assert_eq!(b.bs.staged().servers[&2].lifetime, 120);
    // One resource as text.
    let r = b.ask(RequestType::Put, "/1/2/1", &[(CF, 0)], b"300");
    assert_eq!(code(&r), "2.04");
    assert_eq!(b.bs.staged().servers[&2].lifetime, 300);
    // Object-level TLV with two instances.
    let mut obj = vec![0x06, 0x05];
    obj.extend_from_slice(&hex("C1 00 0B C1 01 3C"));
    obj.extend_from_slice(&[0x06, 0x06]);
    obj.extend_from_slice(&hex("C1 00 0C C1 01 3C"));
    let r = b.ask(RequestType::Put, "/1", &[(CF, TLV)], &obj);
    assert_eq!(code(&r), "2.04");
    assert_eq!(b.bs.staged().servers[&6].short_server_id, 12);
}

#[test]
fn bad_writes_change_nothing() {
    let mut b = Bench::accepted();
    let before = b.bs.staged().clone();
    // No Content-Format: 4.00; unknown: 4.15; /3: 4.00; SSID 0: 4.00.
    let r = b.ask(RequestType::Put, "/0/1", &[], &security_tlv());
    assert_eq!(code(&r), "4.00");
    let r = b.ask(RequestType::Put, "/0/1", &[(CF, 9999)], &security_tlv());
    assert_eq!(code(&r), "4.15");
    let r = b.ask(RequestType::Put, "/3/0/1", &[(CF, 0)], b"x");
    assert_eq!(code(&r), "4.00");
    assert!(String::from_utf8_lossy(&r.payload).contains("/3"));
    let r = b.ask(RequestType::Put, "/9/0/1", &[(CF, 0)], b"x");
    assert_eq!(code(&r), "4.00");
    let mut t = security_tlv();
    let n = t.len();
    t[n - 1] = 0; // SSID 0, after valid resources: all or nothing
    let r = b.ask(RequestType::Put, "/0/1", &[(CF, TLV)], &t);
    assert_eq!(code(&r), "4.00");
    // Malformed TLV, a binding without U, a resource unknown to /1.
    let r = b.ask(RequestType::Put, "/1/1", &[(CF, TLV)], &hex("C8 00 40 01"));
    assert_eq!(code(&r), "4.00");
    let r = b.ask(RequestType::Put, "/1/1/7", &[(CF, 0)], b"T");
    assert_eq!(code(&r), "4.00");
    let r = b.ask(RequestType::Put, "/1/1/99", &[(CF, 0)], b"1");
    assert_eq!(code(&r), "4.04");
    assert_eq!(b.bs.staged(), &before);
}

#[test]
fn caps_apply_before_anything_is_kept() {
    let mut b = Bench::with(|c| {
        c.max_body = 64;
        c.max_instances = 2;
    });
    b.bs.start(b.now);
    b.transmits();
    // A request before the 2.04 starts the session as well.
    let big = vec![0u8; 65];
    let r = b.ask(RequestType::Put, "/0/1", &[(CF, TLV)], &big);
    assert_eq!(code(&r), "4.13");
    assert_eq!(
        crate::coap::msg::get_uint(&r, CoapOption::Size1, 4).unwrap(),
        Some(64)
    );
    // Block1 announcing a larger body: 4.13 at block 0.
    let r = b.ask(
        RequestType::Put,
        "/0/1",
        &[
            (CF, TLV),
            (CoapOption::Block1, 0x08),
            (CoapOption::Size1, 1000),
        ],
        &[0u8; 16],
    );
    assert_eq!(code(&r), "4.13");
    // Instances: a third /1 instance is refused.
    for i in 1..=2 {
        let r = b.ask(RequestType::Put, &format!("/1/{i}/1"), &[(CF, 0)], b"60");
        assert_eq!(code(&r), "2.04");
    }
    let r = b.ask(RequestType::Put, "/1/3/1", &[(CF, 0)], b"60");
    assert_eq!(code(&r), "4.00");
    assert_eq!(b.bs.staged().servers.len(), 2);
}

#[test]
fn block1_writes_are_assembled() {
    let mut b = Bench::accepted();
    let body = security_tlv(); // 58 bytes: 16-byte blocks, the last one shorter
    let chunks: Vec<&[u8]> = body.chunks(16).collect();
    let block = |num: usize, more: bool| {
        (
            CoapOption::Block1,
            ((num as u64) << 4) | (u64::from(more) << 3),
        )
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let r = b.ask(
            RequestType::Put,
            "/0/1",
            &[(CF, TLV), block(i, !last)],
            chunk,
        );
        if last {
            assert_eq!(code(&r), "2.04");
        } else {
            assert_eq!(code(&r), "2.31");
            assert!(!b.bs.staged().security.contains_key(&1));
        }
    }
    assert_eq!(b.bs.staged().security[&1].short_server_id, 101);
}

#[test]
fn inconsistent_finish_is_4_06_with_the_reason_and_the_session_goes_on() {
    let mut b = Bench::accepted();
    let finish = |b: &mut Bench| {
        let r = b.ask(RequestType::Post, "/bs", &[], b"");
        (code(&r), String::from_utf8_lossy(&r.payload).into_owned())
    };
    // Only the bootstrap account.
    let (c, why) = finish(&mut b);
    assert_eq!(c, "4.06");
    assert_eq!(why, "no LwM2M server account in /0");
    // A security account without its /1 instance.
    b.ask(RequestType::Put, "/0/1", &[(CF, TLV)], &security_tlv());
    let (c, why) = finish(&mut b);
    assert_eq!(c, "4.06");
    assert!(
        why.contains("no /1 instance with Short Server ID 101"),
        "{why}"
    );
    // A /1 instance whose SSID matches nothing.
    b.ask(
        RequestType::Put,
        "/1/1",
        &[(CF, TLV)],
        &hex("C1 00 66 C1 01 3C"),
    );
    let (_, why) = finish(&mut b);
    assert!(
        why.contains("/1/1: no /0 account with Short Server ID 102"),
        "{why}"
    );
    b.ask(RequestType::Put, "/1/1/0", &[(CF, 0)], b"101");
    // A PSK too short for use.
    b.ask(RequestType::Put, "/0/1/5", &[(CF, 42)], b"short");
    let (_, why) = finish(&mut b);
    assert!(why.contains("PSK of 5 bytes"), "{why}");
    b.ask(RequestType::Put, "/0/1/5", &[(CF, 42)], &KEY);
    // PSK over plain coap://.
    b.ask(RequestType::Put, "/0/1/0", &[(CF, 0)], b"coap://10.0.0.2");
    let (_, why) = finish(&mut b);
    assert!(why.contains("needs a coaps:// URI"), "{why}");
    // NoSec is not allowed on this device.
    b.ask(RequestType::Put, "/0/1/2", &[(CF, 0)], b"3");
    let (_, why) = finish(&mut b);
    assert!(why.contains("NoSec (mode 3) is not allowed"), "{why}");
    // RPK is not supported; a URI without host is refused.
    b.ask(RequestType::Put, "/0/1/2", &[(CF, 0)], b"1");
    let (_, why) = finish(&mut b);
    assert!(why.contains("Raw Public Key"), "{why}");
    b.ask(RequestType::Put, "/0/1/2", &[(CF, 0)], b"0");
    b.ask(RequestType::Put, "/0/1/0", &[(CF, 0)], b"coaps://");
    let (_, why) = finish(&mut b);
    assert!(why.contains("names no host"), "{why}");
    assert!(
        b.events()
            .iter()
            .any(|e| matches!(e, BootstrapEvent::Rejected { .. }))
    );
    // Corrected: the same session finishes.
    b.ask(RequestType::Put, "/0/1/0", &[(CF, 0)], b"coaps://10.0.0.2");
    assert!(b.request(RequestType::Post, "/bs", &[], b"").is_empty());
    let events = b.events();
    let Some(BootstrapEvent::Finished { usable, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(usable[0].authority, "10.0.0.2:5684");
}

#[test]
fn nosec_accounts_pass_only_where_allowed() {
    let mut b = Bench::with(|c| c.allow_nosec = true);
    b.bs.start(b.now);
    b.transmits();
    let json = br#"[{"bn":"/0/1/","n":"0","vs":"coap://127.0.0.1:5683"},{"n":"1","vb":false},{"n":"2","v":3},{"n":"10","v":1}]"#;
    assert_eq!(
        code(&b.ask(RequestType::Put, "/0/1", &[(CF, 110)], json)),
        "2.04"
    );
    assert_eq!(
        code(&b.ask(RequestType::Put, "/1/0/0", &[(CF, 0)], b"1")),
        "2.04"
    );
    assert!(b.request(RequestType::Post, "/bs", &[], b"").is_empty());
    let events = b.events();
    let Some(BootstrapEvent::Finished { usable, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(usable[0].credentials, None);
}

#[test]
fn bootstrap_read_is_for_the_server_object_only() {
    let mut b = Bench::accepted();
    provision(&mut b);
    // /1/1 in TLV (default), byte for byte: ACK 2.05, CF 11542, the resources.
    let out = b.request(RequestType::Get, "/1/1", &[], b"");
    let mut want = hex("62 45 70 02 B0 02 C2 2D 16 FF");
    want.extend_from_slice(&hex(
        "C1 00 65 C1 01 3C C1 02 00 C4 05 00 01 51 80 C1 06 01 C1 07 55 C1 10 01",
    ));
    assert_eq!(out, vec![want]);
    let r = b.ask(RequestType::Get, "/1", &[(CoapOption::Accept, 110)], b"");
    assert_eq!(code(&r), "2.05");
    let text = String::from_utf8(r.payload).unwrap();
    assert!(
        text.starts_with(r#"[{"bn":"/1/","n":"1/0","v":101}"#),
        "{text}"
    );
    // /0 never (its secrets), /3 neither: 4.01; /2 is absent: 4.04.
    assert_eq!(code(&b.ask(RequestType::Get, "/0", &[], b"")), "4.01");
    assert_eq!(code(&b.ask(RequestType::Get, "/0/1", &[], b"")), "4.01");
    assert_eq!(code(&b.ask(RequestType::Get, "/3/0", &[], b"")), "4.01");
    assert_eq!(code(&b.ask(RequestType::Get, "/2", &[], b"")), "4.04");
    assert_eq!(code(&b.ask(RequestType::Get, "/1/7", &[], b"")), "4.04");
    assert_eq!(code(&b.ask(RequestType::Get, "/1/1/1", &[], b"")), "4.00");
    assert_eq!(
        code(&b.ask(RequestType::Get, "/1", &[(CoapOption::Accept, 0)], b"")),
        "4.06"
    );
}

#[test]
fn bootstrap_discover_lists_accounts_with_ssid_and_uri() {
    let mut b = Bench::accepted();
    provision(&mut b);
    let r = b.ask(RequestType::Get, "/", &[(CoapOption::Accept, 40)], b"");
    assert_eq!(code(&r), "2.05");
    assert_eq!(crate::coap::msg::get_uint(&r, CF, 2).unwrap(), Some(40));
    assert_eq!(
        String::from_utf8(r.payload).unwrap(),
        "lwm2m=\"1.1\",</0/0>;uri=\"coaps://10.0.0.1:5784\",\
         </0/1>;ssid=101;uri=\"coaps://10.0.0.2:5684\",</1/1>;ssid=101,</3/0>,</9/0>,</9/1>"
    );
    let r = b.ask(RequestType::Get, "/1", &[(CoapOption::Accept, 40)], b"");
    assert_eq!(
        String::from_utf8(r.payload).unwrap(),
        "lwm2m=\"1.1\",</1/1>;ssid=101"
    );
    assert_eq!(
        code(&b.ask(RequestType::Get, "/1/1", &[(CoapOption::Accept, 40)], b"")),
        "4.00"
    );
    assert_eq!(
        code(&b.ask(RequestType::Get, "/77", &[(CoapOption::Accept, 40)], b"")),
        "4.04"
    );
}

#[test]
fn bootstrap_delete_spares_the_bootstrap_account_device_and_software() {
    let mut b = Bench::accepted();
    provision(&mut b);
    assert_eq!(code(&b.ask(RequestType::Delete, "/", &[], b"")), "2.02");
    let s = b.bs.staged();
    assert_eq!(s.security.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert!(s.security[&0].bootstrap);
    assert!(s.servers.is_empty());
    provision(&mut b);
    assert_eq!(code(&b.ask(RequestType::Delete, "/0", &[], b"")), "2.02");
    assert_eq!(b.bs.staged().security.len(), 1);
    assert_eq!(b.bs.staged().servers.len(), 1);
    assert_eq!(code(&b.ask(RequestType::Delete, "/1/1", &[], b"")), "2.02");
    assert!(b.bs.staged().servers.is_empty());
    assert_eq!(code(&b.ask(RequestType::Delete, "/1/5", &[], b"")), "2.02");
    // The bootstrap account by itself, /3 and the software objects: 4.00.
    assert_eq!(code(&b.ask(RequestType::Delete, "/0/0", &[], b"")), "4.00");
    assert_eq!(code(&b.ask(RequestType::Delete, "/3", &[], b"")), "4.00");
    assert_eq!(code(&b.ask(RequestType::Delete, "/3/0", &[], b"")), "4.00");
    assert_eq!(code(&b.ask(RequestType::Delete, "/9", &[], b"")), "4.00");
    assert_eq!(code(&b.ask(RequestType::Delete, "/9/1", &[], b"")), "4.00");
    assert_eq!(
        code(&b.ask(RequestType::Delete, "/1/1/1", &[], b"")),
        "4.00"
    );
    assert_eq!(b.bs.staged().security.len(), 1);
    // Other methods.
    assert_eq!(code(&b.ask(RequestType::Post, "/1/1", &[], b"")), "4.05");
}

#[test]
fn requests_from_anyone_else_are_dropped_unanswered() {
    let mut b = Bench::accepted();
    let other: SocketAddr = "10.0.0.9:5784".parse().unwrap();
    let out = b.request_from(
        other,
        RequestType::Put,
        "/0/1",
        &[(CF, TLV)],
        &security_tlv(),
    );
    assert!(out.is_empty());
    let out = b.request_from(other, RequestType::Post, "/bs", &[], b"");
    assert!(out.is_empty());
    assert_eq!(b.bs.foreign_requests_dropped(), 2);
    assert!(!b.bs.staged().security.contains_key(&1));
    assert!(b.events().is_empty());
}

#[test]
fn a_session_without_finish_is_abandoned_and_retried_with_backoff() {
    let mut b = Bench::with(|c| {
        c.timeout = Duration::from_secs(30);
        c.retry_base = Duration::from_secs(5);
    });
    b.bs.start(b.now);
    b.transmits();
    provision(&mut b);
    b.events();
    assert_eq!(b.bs.staged().security.len(), 2);
    b.now += Duration::from_secs(31);
    b.bs.handle_timeout(b.now);
    assert_eq!(
        b.events(),
        vec![BootstrapEvent::Failed {
            attempt: 1,
            reason: AttemptFailure::Timeout(Duration::from_secs(30)),
            retry_in: Duration::from_secs(5),
        }]
    );
    // Nothing staged survives; a late write is refused (no session).
    assert_eq!(b.bs.staged(), &factory());
    let r = b.ask(RequestType::Put, "/0/1", &[(CF, TLV)], &security_tlv());
    assert_eq!(code(&r), "4.03");
    b.events();
    // The retry comes at the back-off, as attempt 2; its failure doubles it.
    let retry_at = b.now + Duration::from_secs(5);
    assert_eq!(
        b.bs.state(),
        &BootstrapState::BackOff {
            until: retry_at,
            attempt: 2
        }
    );
    b.now = retry_at;
    b.bs.handle_timeout(b.now);
    assert_eq!(b.transmits().len(), 1);
    assert_eq!(b.events(), vec![BootstrapEvent::Requested { attempt: 2 }]);
    b.bs.transport_failed(b.now, "DTLS handshake failed: bad key");
    assert_eq!(
        b.events(),
        vec![BootstrapEvent::Failed {
            attempt: 2,
            reason: AttemptFailure::Transport("DTLS handshake failed: bad key".into()),
            retry_in: Duration::from_secs(10),
        }]
    );
}

#[test]
fn a_refused_or_unanswered_request_fails_the_attempt() {
    let mut b = Bench::new();
    b.bs.start(b.now);
    let req = b.transmits().pop().unwrap();
    let mut nack = Packet::new();
    nack.header.set_type(MessageType::Acknowledgement);
    nack.header.message_id = req.header.message_id;
    nack.header.code = MessageClass::from(0x80); // 4.00
    nack.set_token(req.get_token().to_vec());
    b.bs.handle_datagram(b.now, bs_addr(), &nack.to_bytes().unwrap());
    let events = b.events();
    assert!(matches!(
        events.last(),
        Some(BootstrapEvent::Failed {
            reason: AttemptFailure::Refused(Code::BAD_REQUEST),
            ..
        })
    ));
    // No answer at all: CoAP gives up after its retransmissions.
    let mut b = Bench::new();
    b.bs.start(b.now);
    for _ in 0..10 {
        let Some(t) = b.bs.poll_timeout() else { break };
        b.now = t;
        b.bs.handle_timeout(b.now);
        b.transmits();
    }
    assert!(b.events().iter().any(|e| matches!(
        e,
        BootstrapEvent::Failed {
            reason: AttemptFailure::NoAnswer,
            attempt: 1,
            ..
        }
    )));
}

#[test]
fn a_failed_store_answers_5_00_and_keeps_the_old_accounts() {
    let mut b = Bench::accepted();
    provision(&mut b);
    assert!(b.request(RequestType::Post, "/bs", &[], b"").is_empty());
    b.events();
    b.bs.finish_stored(b.now, Err("disk full".into()));
    let out = b.transmits();
    assert_eq!(code(&out[0]), "5.00");
    let events = b.events();
    assert!(matches!(
        events.last(),
        Some(BootstrapEvent::Failed {
            reason: AttemptFailure::Store(_),
            ..
        })
    ));
    assert_eq!(b.bs.staged(), &factory());
}

#[test]
fn the_hold_off_delays_the_first_request() {
    let mut b = Bench::with(|c| c.hold_off = Duration::from_secs(3));
    b.bs.start(b.now);
    assert!(b.transmits().is_empty());
    assert_eq!(b.bs.poll_timeout(), Some(b.now + Duration::from_secs(3)));
    b.now += Duration::from_secs(3);
    b.bs.handle_timeout(b.now);
    assert_eq!(b.transmits().len(), 1);
}

#[test]
fn server_uris() {
    use accounts::parse_server_uri;
    let ok = |u: &str| parse_server_uri(u).unwrap();
    assert_eq!(ok("coaps://h:5690").authority, "h:5690");
    assert!(ok("coaps://h").secure);
    assert_eq!(ok("coap://h").authority, "h:5683");
    assert_eq!(ok("coaps://[::1]").authority, "[::1]:5684");
    assert_eq!(ok("coaps://[::1]:7/x").authority, "[::1]:7");
    for bad in [
        "http://h",
        "coap://",
        "coaps://h:0",
        "coaps://h:x",
        "coaps://[::1",
    ] {
        assert!(parse_server_uri(bad).is_err(), "{bad}");
    }
}

#[test]
fn written_values_read_back_through_the_types() {
    // The type table covers what a full-instance write carries.
    use crate::model::DataType;
    use accounts::resource_type;
    assert_eq!(
        resource_type(Path::resource(0, 1, 5)),
        Some(DataType::Opaque)
    );
    assert_eq!(
        resource_type(Path::resource(1, 1, 16)),
        Some(DataType::Boolean)
    );
    assert_eq!(resource_type(Path::resource(1, 1, 99)), None);
    let mut a = Accounts::default();
    let node = crate::model::Node::Resource {
        id: 3,
        value: crate::model::ResourceValue::Single(Value::String("ident".into())),
    };
    a.write(Path::resource(0, 4, 3), node, 8).unwrap();
    assert_eq!(a.security[&4].public_key_or_identity, b"ident");
    let _ = Server::new(1, 1);
}

/// After a bootstrap the LwM2M client engine moves to the provisioned
/// server: the old Register is dropped, the new one names /1 at its
/// provisioned instance and goes to the new address only.
#[test]
fn the_client_engine_retargets_to_the_provisioned_server() {
    use crate::client::{Client, Config as ClientConfig};
    let old: SocketAddr = "10.0.0.5:5684".parse().unwrap();
    let new: SocketAddr = "10.0.0.6:5684".parse().unwrap();
    let mut now = Instant::now();
    let mut client = Client::new(
        ClientConfig::new("dev1", old, 3),
        vec![
            Box::new(Security::nosec("coap://10.0.0.5", 1)),
            Box::new(Server::new(1, 60)),
        ],
    );
    client.start(now);
    assert_eq!(client.poll_transmit().unwrap().to, old);
    let mut server = Server::new(101, 120);
    server.instance = 3;
    client.retarget(
        now,
        new,
        Box::new(Security::nosec("coap://10.0.0.6", 101)),
        Box::new(server),
        Duration::from_secs(1),
    );
    client.start(now);
    let t = client.poll_transmit().unwrap();
    assert_eq!(t.to, new);
    let p = Packet::from_bytes(&t.bytes).unwrap();
    assert!(String::from_utf8_lossy(&p.payload).contains("</1/3>"));
    assert!(
        crate::coap::msg::uri_query(&p)
            .unwrap()
            .contains(&"lt=120".to_string())
    );
    // Retransmissions go to the new server only.
    for _ in 0..3 {
        let Some(at) = client.poll_timeout() else {
            break;
        };
        now = at;
        client.handle_timeout(now);
        while let Some(t) = client.poll_transmit() {
            assert_eq!(t.to, new);
        }
    }
}

/// A lost answer: the server retransmits the same Write (same MID), and
/// gets the same answer from the message layer's dedup cache without the
/// write running twice; a lost Finish answer likewise.
#[test]
fn retransmitted_requests_are_answered_once() {
    let mut b = Bench::accepted();
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Put);
    p.header.message_id = 0x4242;
    p.set_token(vec![0x42]);
    p.add_option(CoapOption::UriPath, b"1".to_vec());
    p.add_option(CoapOption::UriPath, b"1".to_vec());
    crate::coap::msg::set_uint(&mut p, CF, TLV);
    p.payload = server_tlv();
    let bytes = p.to_bytes().unwrap();
    b.bs.handle_datagram(b.now, bs_addr(), &bytes);
    let first = b.raw_transmits();
    let answered = b.events().len();
    b.bs.handle_datagram(b.now, bs_addr(), &bytes);
    assert_eq!(b.raw_transmits(), first);
    assert_eq!(first, vec![hex("61 44 42 42 42")]);
    assert_eq!(answered, 1);
    assert!(b.events().is_empty(), "the write ran once");
}

/// An attempt abandoned while its Bootstrap-Request is unanswered stops
/// the request's retransmissions: the next request comes at the back-off.
#[test]
fn an_abandoned_request_is_not_retransmitted() {
    let mut b = Bench::with(|c| c.retry_base = Duration::from_secs(100));
    let start = b.now;
    b.bs.start(b.now);
    assert_eq!(b.transmits().len(), 1);
    b.bs.transport_failed(b.now, "DTLS handshake failed");
    for s in [3, 7, 15, 31, 60, 99] {
        b.now = start + Duration::from_secs(s);
        b.bs.handle_timeout(b.now);
        assert!(b.transmits().is_empty(), "at {s} s");
    }
    b.now = start + Duration::from_secs(100);
    b.bs.handle_timeout(b.now);
    assert_eq!(b.transmits().len(), 1);
}
