//! The session sequence, byte for byte.

use super::*;
use crate::bootstrap::config::ServerAccount;

const URI: &str = "coaps://127.0.0.1:5684";

fn plan(format: ContentFormat) -> Plan {
    Plan {
        delete: vec!["/0".into(), "/1".into()],
        accounts: vec![ResolvedAccount {
            account: ServerAccount {
                uri: URI.into(),
                ..ServerAccount::default()
            },
            psk: Some(("dev-1".into(), vec![0x11; 16])),
        }],
        format,
        rollover: None,
    }
}

/// The request as CoAP bytes with message id `mid` and no token.
fn bytes(next: Option<Next>, mid: u16) -> Vec<u8> {
    let Some(Next::Send(req)) = next else {
        panic!("expected a request, got {next:?}");
    };
    let mut p = req.to_packet();
    p.header.message_id = mid;
    msg::encode(&p).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    ::hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn full_sequence_bytes() {
    let mut s = Session::new(
        "dev-1",
        "127.0.0.1:9",
        "psk",
        1000,
        plan(ContentFormat::Tlv),
    );
    // Bootstrap-Delete /0: CON DELETE, Uri-Path "0".
    assert_eq!(bytes(s.poll(), 1), hex("40 04 00 01 B1 30"));
    assert!(s.poll().is_none(), "one request at a time");
    s.handle_response(Code::DELETED, b"");
    assert_eq!(bytes(s.poll(), 2), hex("40 04 00 02 B1 31"));
    s.handle_response(Code::DELETED, b"");
    // Bootstrap-Discover /0 with Accept 40.
    assert_eq!(bytes(s.poll(), 3), hex("40 01 00 03 B1 30 61 28"));
    // The bootstrap account is /0/0 and /0/1 is taken too: the new one is /0/2.
    s.handle_response(
        Code::CONTENT,
        br#"lwm2m="1.1",</0/0>,</0/1>;ssid=7,</1>,</3/0>"#,
    );
    // The credential is stored before anything goes to the device.
    match s.poll() {
        Some(Next::Store(entries)) => {
            assert_eq!(
                entries,
                vec![SecurityEntry {
                    endpoint: "dev-1".into(),
                    credential: Credential::Psk {
                        identity: "dev-1".into(),
                        key: vec![0x11; 16]
                    }
                }]
            );
        }
        other => panic!("expected Store, got {other:?}"),
    }
    assert!(s.poll().is_none());
    s.handle_stored(Ok(()));
    // Bootstrap-Write /0/2, TLV (11542 = 2D 16): URI, not bootstrap, mode 0
    // (PSK), identity, empty server key, key, SSID 1.
    let mut want = hex("40 03 00 04 B1 30 01 32 12 2D 16 FF C8 00 16");
    want.extend_from_slice(URI.as_bytes());
    want.extend(hex("C1 01 00 C1 02 00 C5 03"));
    want.extend_from_slice(b"dev-1");
    want.extend(hex("C0 04 C8 05 10"));
    want.extend([0x11; 16]);
    want.extend(hex("C1 0A 01"));
    assert_eq!(bytes(s.poll(), 4), want);
    s.handle_response(Code::CHANGED, b"");
    // Bootstrap-Write /1/0: SSID 1, lifetime 300, storing true, binding U.
    assert_eq!(
        bytes(s.poll(), 5),
        hex("40 03 00 05 B1 31 01 30 12 2D 16 FF C1 00 01 C2 01 01 2C C1 06 01 C1 07 55")
    );
    s.handle_response(Code::CHANGED, b"");
    // Bootstrap-Finish: POST /bs.
    assert_eq!(bytes(s.poll(), 6), hex("40 02 00 06 B2 62 73"));
    s.handle_response(Code::CHANGED, b"");
    assert!(s.is_done());
    let r = s.record();
    assert_eq!(r.status, SessionStatus::Succeeded);
    assert_eq!(r.finish_code.as_deref(), Some("2.04"));
    let steps: Vec<(&str, &str, &str)> = r
        .steps
        .iter()
        .map(|s| {
            (
                s.op.as_str(),
                s.path.as_str(),
                s.code.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("delete", "/0", "2.02"),
            ("delete", "/1", "2.02"),
            ("discover", "/0", "2.05"),
            ("write", "/0/2", "2.04"),
            ("write", "/1/0", "2.04"),
            ("finish", "/bs", "2.04"),
        ]
    );
    // The record names what was written but never the key.
    let json = serde_json::to_string(r).unwrap();
    assert!(json.contains("identity=dev-1") && json.contains("<generated 16 bytes>"));
    assert!(!json.contains("1111"));
}

#[test]
fn finish_refused_with_4_06_is_a_failure_with_the_reason() {
    let mut s = Session::new("d", "p", "psk", 0, plan(ContentFormat::Tlv));
    for code in [Code::DELETED, Code::DELETED, Code::NOT_FOUND] {
        assert!(matches!(s.poll(), Some(Next::Send(_))));
        s.handle_response(code, b"");
    }
    assert!(matches!(s.poll(), Some(Next::Store(_))));
    s.handle_stored(Ok(()));
    // Discover refused: a 1.0 device, the account goes to /0/1.
    match s.poll() {
        Some(Next::Send(r)) => assert_eq!(r.path, ["0", "1"]),
        other => panic!("{other:?}"),
    }
    s.handle_response(Code::CHANGED, b"");
    assert!(matches!(s.poll(), Some(Next::Send(_))));
    s.handle_response(Code::CHANGED, b"");
    assert!(matches!(s.poll(), Some(Next::Send(_))));
    s.handle_response(Code::NOT_ACCEPTABLE, b"no usable server account\n");
    assert!(s.is_done());
    let r = s.record();
    assert_eq!(r.status, SessionStatus::Failed);
    assert_eq!(r.finish_code.as_deref(), Some("4.06"));
    assert_eq!(
        r.error.as_deref(),
        Some("Bootstrap-Finish refused with 4.06: no usable server account")
    );
    assert!(s.poll().is_none());
}

#[test]
fn a_refused_write_ends_the_session_without_finish() {
    let mut s = Session::new("d", "p", "psk", 0, plan(ContentFormat::Tlv));
    for _ in 0..3 {
        assert!(matches!(s.poll(), Some(Next::Send(_))));
        s.handle_response(Code::DELETED, b"");
    }
    assert!(matches!(s.poll(), Some(Next::Store(_))));
    s.handle_stored(Ok(()));
    assert!(matches!(s.poll(), Some(Next::Send(_))));
    s.handle_response(Code::BAD_REQUEST, b"");
    assert!(s.is_done());
    assert_eq!(s.record().status, SessionStatus::Failed);
    assert!(s.record().steps.iter().all(|st| st.op != "finish"));
}

#[test]
fn store_failure_and_silence_and_timeout() {
    let mut s = Session::new("d", "p", "psk", 0, plan(ContentFormat::Tlv));
    for _ in 0..3 {
        let _ = s.poll();
        s.handle_response(Code::DELETED, b"");
    }
    let _ = s.poll();
    s.handle_stored(Err("identity in use".into()));
    assert_eq!(s.record().status, SessionStatus::Failed);
    assert!(s.poll().is_none());

    let mut s = Session::new("d", "p", "psk", 0, plan(ContentFormat::Tlv));
    let _ = s.poll();
    s.handle_no_response();
    assert_eq!(s.record().error.as_deref(), Some("no answer to delete /0"));

    let mut s = Session::new("d", "p", "psk", 0, plan(ContentFormat::Tlv));
    let _ = s.poll();
    s.abort(SessionStatus::TimedOut, "session timeout");
    assert_eq!(s.record().status, SessionStatus::TimedOut);
    // A late answer changes nothing.
    s.handle_response(Code::DELETED, b"");
    assert_eq!(s.record().status, SessionStatus::TimedOut);
}

#[test]
fn senml_cbor_writes_and_nosec_accounts() {
    let mut p = plan(ContentFormat::SenmlCbor);
    p.delete.clear();
    p.accounts[0].account.security = AccountSecurity::NoSec;
    p.accounts[0].account.uri = "coap://h:5683".into();
    p.accounts[0].psk = None;
    let mut s = Session::new("d", "p", "nosec", 0, p);
    // No deletes: Discover first.
    let _ = s.poll();
    s.handle_response(Code::CONTENT, b"</0/0>");
    match s.poll() {
        Some(Next::Store(e)) => assert_eq!(e[0].credential, Credential::NoSec),
        other => panic!("{other:?}"),
    }
    s.handle_stored(Ok(()));
    let Some(Next::Send(req)) = s.poll() else {
        panic!()
    };
    assert_eq!(req.content_format, Some(112));
    // A CBOR array naming /0/1.
    assert_eq!(req.payload[0] & 0xE0, 0x80);
    assert!(req.payload.windows(5).any(|w| w == b"/0/1/"));
}

#[test]
fn discover_parsing() {
    assert_eq!(
        security_instances(br#"lwm2m="1.1",</0/0>;ssid=1,</0/3>;uri="coaps://x",</1/0>"#),
        [0, 3]
    );
    assert_eq!(free_ids(&[0, 1, 3], 3), [2, 4, 5]);
}

/// A device asking `pct=110` gets SenML JSON its codec decodes back to the
/// same /0 values (opaque key included), as the device side will.
#[test]
fn senml_json_write_decodes_back() {
    use wasmdm_proto::model::DataType;
    let mut p = plan(ContentFormat::SenmlJson);
    p.delete.clear();
    let mut s = Session::new("dev-1", "p", "psk", 0, p);
    let _ = s.poll();
    s.handle_response(Code::CONTENT, b"</0/0>");
    let _ = s.poll();
    s.handle_stored(Ok(()));
    let Some(Next::Send(req)) = s.poll() else {
        panic!()
    };
    assert_eq!(req.content_format, Some(110));
    let types = |p: Path| {
        Some(match p.resource? {
            0 => DataType::String,
            1 => DataType::Boolean,
            2 | 10 => DataType::Integer,
            _ => DataType::Opaque,
        })
    };
    let node = wasmdm_proto::codec::decode(
        &req.payload,
        Path::instance(0, 1),
        ContentFormat::SenmlJson,
        &types,
    )
    .unwrap();
    let Node::Instance { id: 1, resources } = node else {
        panic!("{node:?}")
    };
    let get = |r: u16| {
        resources
            .iter()
            .find(|(id, _)| *id == r)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get(0), Some(single(Value::String(URI.into()))));
    assert_eq!(get(2), Some(single(Value::Integer(0))));
    assert_eq!(get(3), Some(single(Value::Opaque(b"dev-1".to_vec()))));
    assert_eq!(get(5), Some(single(Value::Opaque(vec![0x11; 16]))));
    assert_eq!(get(10), Some(single(Value::Integer(1))));
}

/// The communication retry resources are written to /1/y only when the
/// configuration sets them (Core 1.1 §6.2.1.1, §E.2), and shown in the
/// session's record.
#[test]
fn retry_resources_are_written_when_set() {
    let plain = ServerAccount::default();
    let (Node::Instance { resources, .. }, detail) = server_instance(0, &plain) else {
        panic!()
    };
    let ids: Vec<u16> = resources.iter().map(|(r, _)| *r).collect();
    assert_eq!(ids, [0, 1, 6, 7]);
    assert_eq!(detail, "ssid=1 lifetime=300 binding=U storing=true");
    let tuned = ServerAccount {
        bootstrap_on_failure: Some(true),
        retry_count: Some(2),
        retry_timer: Some(1),
        sequence_retry_count: Some(1),
        ..ServerAccount::default()
    };
    let (Node::Instance { resources, .. }, detail) = server_instance(0, &tuned) else {
        panic!()
    };
    assert_eq!(
        resources[4..],
        [
            (16, single(Value::Boolean(true))),
            (17, single(Value::Integer(2))),
            (18, single(Value::Integer(1))),
            (20, single(Value::Integer(1))),
        ]
    );
    assert_eq!(
        detail,
        "ssid=1 lifetime=300 binding=U storing=true bootstrap_on_failure=true \
         retry_count=2 retry_timer=1 sequence_retry_count=1"
    );
    use crate::bootstrap::config::{BootstrapConfig, validate_config};
    let zero = BootstrapConfig {
        servers: vec![ServerAccount {
            retry_timer: Some(0),
            ..ServerAccount::default()
        }],
        ..BootstrapConfig::default()
    };
    assert!(validate_config(&zero).is_err());
}
