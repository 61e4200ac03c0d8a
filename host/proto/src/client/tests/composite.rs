//! Observe-Composite (FETCH + Observe) and Write-Composite (iPATCH), LwM2M
//! 1.1 Core §6.4.3 / §6.3.9, against the test object /42 and the app
//! object 3303.

use super::app::{net_with_app, set};
use super::*;
use crate::coap::observe::{MAX_PER_PEER, Registry};
use crate::object::AppRequest;

/// `[{0: "/3303/0/5700"}, {0: "/42/0/1"}]`: the SenML CBOR path list.
fn two_paths_cbor() -> Vec<u8> {
    let mut body = vec![0x82, 0xA1, 0x00, 0x6C];
    body.extend_from_slice(b"/3303/0/5700");
    body.extend_from_slice(&[0xA1, 0x00, 0x67]);
    body.extend_from_slice(b"/42/0/1");
    body
}

/// `[{0: "/3303/0/5700", 2: t}, {0: "/42/0/1", 2: level}]` with `t` a
/// half float (its two bytes) and `level` a small unsigned.
fn two_values_cbor(half: [u8; 2], level: u8) -> Vec<u8> {
    let mut want = vec![0x82, 0xA2, 0x00, 0x6C];
    want.extend_from_slice(b"/3303/0/5700");
    want.extend_from_slice(&[0x02, 0xF9, half[0], half[1], 0xA2, 0x00, 0x67]);
    want.extend_from_slice(b"/42/0/1");
    want.extend_from_slice(&[0x02, level]);
    want
}

fn observe_composite(token: &[u8], observe: u64, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = coap_lite::MessageClass::Request(RequestType::Fetch);
    p.header.set_type(MessageType::Confirmable);
    p.set_token(token.to_vec());
    msg::set_uint(&mut p, CoapOption::Observe, observe);
    msg::set_uint(&mut p, CoapOption::ContentFormat, 112);
    p.payload = body.to_vec();
    p
}

fn response_to(evs: &[EndpointEvent], id: ExchangeId) -> Option<Packet> {
    evs.iter().find_map(|e| match e {
        EndpointEvent::Response { id: i, packet } if *i == id => Some(packet.clone()),
        _ => None,
    })
}

fn observe_seq(p: &Packet) -> Option<u64> {
    msg::get_uint(p, CoapOption::Observe, 3).unwrap()
}

#[test]
fn observe_composite_notifies_on_any_path_honouring_its_pmin() {
    let (mut n, app) = net_with_app();
    set(&mut n, &app, 5700, Value::Float(21.5));
    let mut wa = req(RequestType::Put, "/3303/0/5700");
    msg::add_strings(&mut wa, CoapOption::UriQuery, &["pmin=10"]);
    assert_eq!(Code::of(&n.request(wa)), Code::CHANGED);
    let request = observe_composite(&[0xC0], 0, &two_paths_cbor());
    // The request on the wire: CON FETCH, token C0, Observe 0, CF 112.
    let bytes = request.to_bytes().unwrap();
    assert_eq!(&bytes[..2], &[0x41, 0x05]);
    assert_eq!(&bytes[4..10], &[0xC0, 0x60, 0x61, 0x70, 0xFF, 0x82]);
    let id = n.server.send_request(n.now, dev(), request);
    let first = response_to(&n.flush(), id).expect("first answer");
    assert_eq!(Code::of(&first), Code::CONTENT);
    assert_eq!(first.payload, two_values_cbor([0x4D, 0x60], 10));
    assert_eq!(
        msg::get_uint(&first, CoapOption::ContentFormat, 2).unwrap(),
        Some(112)
    );
    let seq0 = observe_seq(&first).expect("registered: Observe in the answer");
    assert_eq!(n.client.observers.len(), 1);
    // 5700 changes 3 s later: its pmin (10 s) holds the notification back.
    let t0 = n.now;
    n.now += Duration::from_secs(3);
    set(&mut n, &app, 5700, Value::Float(22.5));
    assert!(n.flush().is_empty(), "pmin of /3303/0/5700 holds it back");
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(10));
    let note = response_to(&n.flush(), id).expect("notification at pmin");
    // 22.5 = half float 4D A0; both paths in every notification.
    assert_eq!(note.payload, two_values_cbor([0x4D, 0xA0], 10));
    assert_eq!(msg::type_of(&note), MessageType::NonConfirmable);
    assert!(observe_seq(&note).unwrap() > seq0);
    // /42/0/1 has no pmin: its change goes out at once.
    n.thing().level = 11;
    let now = n.now;
    n.client.resources_changed(now, &[Path::resource(42, 0, 1)]);
    let note = response_to(&n.flush(), id).expect("immediate notification");
    assert_eq!(note.payload, two_values_cbor([0x4D, 0xA0], 11));
    // A change elsewhere in /42 does not concern this observation.
    n.client.resources_changed(now, &[Path::resource(42, 0, 0)]);
    assert!(n.flush().is_empty());
    // Cancel with Observe 1 (same token): a plain answer, no Observe.
    let r = n.request(observe_composite(&[0xC0], 1, &two_paths_cbor()));
    assert_eq!(Code::of(&r), Code::CONTENT);
    assert!(observe_seq(&r).is_none());
    assert_eq!(n.client.observers.len(), 0);
}

#[test]
fn observe_composite_is_cancelled_by_rst_and_ends_at_pmax() {
    let (mut n, app) = net_with_app();
    set(&mut n, &app, 5700, Value::Float(21.5));
    // pmax on /42/0/1 only: the shortest pmax of the paths governs.
    let mut wa = req(RequestType::Put, "/42/0/1");
    msg::add_strings(&mut wa, CoapOption::UriQuery, &["pmax=30"]);
    assert_eq!(Code::of(&n.request(wa)), Code::CHANGED);
    let id = n.server.send_request(
        n.now,
        dev(),
        observe_composite(&[0xC1], 0, &two_paths_cbor()),
    );
    assert!(response_to(&n.flush(), id).is_some());
    let t0 = n.now;
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(30));
    let note = response_to(&n.flush(), id).expect("notification at pmax");
    assert_eq!(note.payload, two_values_cbor([0x4D, 0x60], 10));
    // The server forgets the token and answers the next notification with RST.
    n.server.cancel(n.now, id);
    set(&mut n, &app, 5700, Value::Float(23.0));
    n.flush();
    assert_eq!(n.client.observers.len(), 0, "RST cancelled it");
}

#[test]
fn observe_composite_counts_against_the_observation_caps() {
    let (mut n, _app) = net_with_app();
    let body = br#"[{"n":"/42/0/1"},{"n":"/1/0/1"}]"#;
    let json = |token: u8, body: &[u8]| {
        let mut p = observe_composite(&[token], 0, body);
        msg::set_uint(&mut p, CoapOption::ContentFormat, 110);
        p
    };
    let r = n.request(json(1, body));
    assert_eq!(
        String::from_utf8(r.payload.clone()).unwrap(),
        r#"[{"n":"/42/0/1","v":10},{"n":"/1/0/1","v":300}]"#
    );
    assert!(observe_seq(&r).is_some());
    // Re-observing the same list under a new token replaces it.
    let r = n.request(json(2, body));
    assert!(observe_seq(&r).is_some());
    assert_eq!(n.client.observers.len(), 1);
    // Fill the peer's quota: the next composite observation is refused
    // before it is stored, and answered as a plain Read-Composite.
    let mut reg = Registry::new();
    for i in 0..MAX_PER_PEER {
        let key = (srv(), vec![0xEE, i as u8, (i >> 8) as u8]);
        let path = Path::resource_instance(42, 0, 5, i as u16);
        reg.add(n.now, key, path, None, None).unwrap();
    }
    n.client.observers = reg;
    let r = n.request(json(3, body));
    assert_eq!(Code::of(&r), Code::CONTENT);
    assert!(observe_seq(&r).is_none(), "refused at the cap");
    assert_eq!(n.client.observers.len(), MAX_PER_PEER);
    // More than 64 paths, /0, or nothing readable: no observation either.
    n.client.observers = Registry::new();
    let many = format!("[{}]", vec![r#"{"n":"/42/0/1"}"#; 65].join(","));
    assert_eq!(
        Code::of(&n.request(json(4, many.as_bytes()))),
        Code::BAD_REQUEST
    );
    assert_eq!(
        Code::of(&n.request(json(5, br#"[{"n":"/0/0/0"}]"#))),
        Code::UNAUTHORIZED
    );
    assert_eq!(
        Code::of(&n.request(json(6, br#"[{"n":"/77/0/1"}]"#))),
        Code::NOT_FOUND
    );
    assert_eq!(n.client.observers.len(), 0);
}

fn ipatch(cf: Option<u16>, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = coap_lite::MessageClass::Request(RequestType::IPatch);
    p.header.set_type(MessageType::Confirmable);
    if let Some(cf) = cf {
        msg::set_uint(&mut p, CoapOption::ContentFormat, cf.into());
    }
    p.payload = body.to_vec();
    p
}

#[test]
fn write_composite_writes_all_and_holds_the_answer_for_the_app() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    let body = br#"[{"bn":"/3303/0/","n":"5900","v":19.5}]"#;
    let id = n.server.send_request(n.now, dev(), ipatch(Some(110), body));
    assert!(response_to(&n.flush(), id).is_none(), "held for the app");
    let Some(Event::Effects { pending, effects }) = n.event() else {
        panic!("effects expected")
    };
    assert_eq!(
        effects,
        vec![Effect::App {
            path: Path::resource(3303, 0, 5900),
            request: AppRequest::Write(Value::Float(19.5)),
        }]
    );
    n.client.complete(n.now, pending);
    let r = response_to(&n.flush(), id).expect("answer after completion");
    assert_eq!(Code::of(&r), Code::CHANGED);
    let r = n.request(ipatch(Some(110), br#"[{"bn":"/42/0/","n":"0","vs":"b"}]"#));
    assert_eq!(Code::of(&r), Code::CHANGED);
    assert_eq!(n.thing().name, "b");
    // SenML CBOR [{0: "/42/0/0", 3: "z"}]: no effects, answered at once.
    let mut cbor = vec![0x81, 0xA2, 0x00, 0x67];
    cbor.extend_from_slice(b"/42/0/0");
    cbor.extend_from_slice(&[0x03, 0x61, b'z']);
    assert_eq!(
        Code::of(&n.request(ipatch(Some(112), &cbor))),
        Code::CHANGED
    );
    assert_eq!(n.thing().name, "z");
    // A resource instance of a multiple resource.
    let r = n.request(ipatch(Some(110), br#"[{"n":"/42/0/5/1","v":7}]"#));
    assert_eq!(Code::of(&r), Code::CHANGED);
}

#[test]
fn write_composite_refusals_change_nothing() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    let cases: &[(Option<u16>, &[u8], Code)] = &[
        // A string for the float 5900, after a good record for /42/0/0.
        (
            Some(110),
            br#"[{"n":"/42/0/0","vs":"c"},{"n":"/3303/0/5900","vs":"hot"}]"#,
            Code::BAD_REQUEST,
        ),
        // 5700 is read-only.
        (
            Some(110),
            br#"[{"n":"/42/0/0","vs":"c"},{"n":"/3303/0/5700","v":1}]"#,
            Code::METHOD_NOT_ALLOWED,
        ),
        (
            Some(110),
            br#"[{"n":"/42/0/0","vs":"c"},{"n":"/3303/0/9999","v":1}]"#,
            Code::NOT_FOUND,
        ),
        (
            Some(110),
            br#"[{"n":"/42/0/0","vs":"c"},{"n":"/42/7/0","vs":"c"}]"#,
            Code::NOT_FOUND,
        ),
        (
            Some(110),
            br#"[{"n":"/42/0/0","vs":"c"},{"n":"/0/0/3","vd":"AQ"}]"#,
            Code::UNAUTHORIZED,
        ),
        // A name without a value, an instance path, no records.
        (Some(110), br#"[{"n":"/42/0/0"}]"#, Code::BAD_REQUEST),
        (Some(110), br#"[{"n":"/42/0","vs":"c"}]"#, Code::BAD_REQUEST),
        (Some(110), b"[]", Code::BAD_REQUEST),
        (
            Some(0),
            br#"[{"n":"/42/0/0","vs":"c"}]"#,
            Code::UNSUPPORTED_CONTENT_FORMAT,
        ),
        (None, br#"[{"n":"/42/0/0","vs":"c"}]"#, Code::BAD_REQUEST),
    ];
    for (cf, body, code) in cases {
        let r = n.request(ipatch(*cf, body));
        assert_eq!(Code::of(&r), *code, "{}", String::from_utf8_lossy(body));
        assert_eq!(n.thing().name, "a", "nothing written");
        assert!(n.event().is_none(), "no effects");
    }
    let many = format!("[{}]", vec![r#"{"n":"/42/0/0","vs":"c"}"#; 65].join(","));
    assert_eq!(
        Code::of(&n.request(ipatch(Some(110), many.as_bytes()))),
        Code::BAD_REQUEST
    );
    assert_eq!(n.thing().name, "a");
}

#[test]
fn observe_composite_with_an_absent_first_path_still_notifies() {
    let (mut n, _app) = net_with_app();
    let mut p = observe_composite(&[0xC2], 0, br#"[{"n":"/77/0/1"},{"n":"/42/0/1"}]"#);
    msg::set_uint(&mut p, CoapOption::ContentFormat, 110);
    let id = n.server.send_request(n.now, dev(), p);
    let first = response_to(&n.flush(), id).expect("first answer");
    assert_eq!(first.payload, br#"[{"n":"/42/0/1","v":10}]"#);
    assert!(observe_seq(&first).is_some());
    n.thing().level = 12;
    let now = n.now;
    n.client.resources_changed(now, &[Path::resource(42, 0, 1)]);
    let note = response_to(&n.flush(), id).expect("notification");
    assert_eq!(note.payload, br#"[{"n":"/42/0/1","v":12}]"#);
    assert!(n.client.poll_timeout().is_none_or(|t| t > n.now));
}

/// `[{0: "/3303/0/5700", 2: t}, {0: "/42/0/1", 2: level}]` with `t` a
/// half float; the answer format of [`two_paths_cbor`].
fn expect_note(n: &mut Net, id: ExchangeId, half: [u8; 2], level: u8) {
    let note = response_to(&n.flush(), id).expect("a notification");
    assert_eq!(note.payload, two_values_cbor(half, level));
}

/// LwM2M 1.1 Core §6.4.3 with §5.1.2: each path of an Observe-Composite
/// keeps its own change conditions; the notification (all paths) goes out
/// when any path's condition holds.
#[test]
fn observe_composite_honours_gt_lt_st_of_each_path() {
    let (mut n, app) = net_with_app();
    set(&mut n, &app, 5700, Value::Float(21.5));
    for (path, query) in [("/3303/0/5700", "gt=25"), ("/42/0/1", "st=5")] {
        let mut wa = req(RequestType::Put, path);
        msg::add_strings(&mut wa, CoapOption::UriQuery, &[query]);
        assert_eq!(Code::of(&n.request(wa)), Code::CHANGED);
    }
    let id = n.server.send_request(
        n.now,
        dev(),
        observe_composite(&[0xC3], 0, &two_paths_cbor()),
    );
    assert!(response_to(&n.flush(), id).is_some());
    // 22.0: below gt, no crossing. Level 10 -> 12: less than st.
    set(&mut n, &app, 5700, Value::Float(22.0));
    n.thing().level = 12;
    let now = n.now;
    n.client.resources_changed(now, &[Path::resource(42, 0, 1)]);
    assert!(n.flush().is_empty(), "no condition holds");
    // 26.0 crosses gt=25 (half float 4E 80): the whole list goes out.
    set(&mut n, &app, 5700, Value::Float(26.0));
    expect_note(&mut n, id, [0x4E, 0x80], 12);
    // Level 12 -> 16 is 4 since the last notification (12): nothing;
    // 16 -> 17 makes it 5 = st: notified.
    n.thing().level = 16;
    n.client.resources_changed(now, &[Path::resource(42, 0, 1)]);
    assert!(n.flush().is_empty());
    n.thing().level = 17;
    n.client.resources_changed(now, &[Path::resource(42, 0, 1)]);
    expect_note(&mut n, id, [0x4E, 0x80], 17);
    // 26.5 stays above gt: nothing; 24.0 crosses back down: notified.
    set(&mut n, &app, 5700, Value::Float(26.5));
    assert!(n.flush().is_empty());
    set(&mut n, &app, 5700, Value::Float(24.0));
    expect_note(&mut n, id, [0x4E, 0x00], 17);
}
