//! Write-Composite is all-or-nothing (LwM2M 1.1 Core §6.3.9), and the
//! bodies of FETCH and iPATCH may come block-wise (RFC 8132 §2.1, RFC 7959
//! §2.5).

use super::app::net_with_app;
use super::*;
use crate::swmgmt::{SoftwareManagement, SwMgmtConfig};

fn composite(method: RequestType, cf: u16, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = coap_lite::MessageClass::Request(method);
    p.header.set_type(MessageType::Confirmable);
    msg::set_uint(&mut p, CoapOption::ContentFormat, cf.into());
    p.payload = body.to_vec();
    p
}

fn ipatch_json(body: &[u8]) -> Packet {
    composite(RequestType::IPatch, 110, body)
}

fn text(n: &mut Net, path: &str) -> String {
    let r = n.request(req(RequestType::Get, path));
    assert_eq!(Code::of(&r), Code::CONTENT, "{path}");
    String::from_utf8(r.payload).unwrap()
}

#[test]
fn a_value_the_object_refuses_leaves_every_record_unwritten() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    // Each value has the right type; /1 refuses a lifetime of 0 and the
    // binding UQ only when it would write them (its own rules).
    let refused: &[&[u8]] = &[
        br#"[{"n":"/42/0/0","vs":"c"},{"n":"/1/0/1","v":0}]"#,
        br#"[{"n":"/1/0/1","v":600},{"n":"/1/0/7","vs":"UQ"}]"#,
        br#"[{"n":"/1/0/2","v":5},{"n":"/42/0/0","vs":"c"},{"n":"/1/0/3","v":-1}]"#,
    ];
    for body in refused {
        let r = n.request(ipatch_json(body));
        assert_eq!(
            Code::of(&r),
            Code::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(r.payload.is_empty());
        assert_eq!(n.thing().name, "a", "nothing written");
        assert!(n.event().is_none(), "no effects");
    }
    assert_eq!(text(&mut n, "/1/0/1"), "300");
    assert_eq!(text(&mut n, "/1/0/7"), "U");
    assert_eq!(text(&mut n, "/1/0/2"), "0");
    // The same values, acceptable: all written, one answer after the
    // effects (Persist, and an Update for the new lifetime).
    n.auto_complete = true;
    let body = br#"[{"n":"/42/0/0","vs":"c"},{"n":"/1/0/1","v":600}]"#;
    assert_eq!(Code::of(&n.request(ipatch_json(body))), Code::CHANGED);
    assert_eq!(n.thing().name, "c");
    assert_eq!(text(&mut n, "/1/0/1"), "600");
}

#[test]
fn a_later_value_that_an_earlier_one_makes_invalid_is_refused_up_front() {
    // /9/0 in INITIAL: Package URI (3) alone is fine, but it starts a pull,
    // after which Package (2) is 4.05 (SwMgmt §5.1.2). The dry run applies
    // the values in order on a copy, so the pair is refused whole.
    let mut sm = SoftwareManagement::new(SwMgmtConfig::default());
    sm.create(Some(0), vec![]).unwrap();
    let mut n = Net::new();
    n.client = Client::new(
        Config::new("node1", srv(), 42),
        vec![Box::new(n.thing.clone()), Box::new(sm)],
    );
    n.auto_complete = false;
    let both = br#"[{"n":"/42/0/0","vs":"c"},{"n":"/9/0/3","vs":"coap://files.example/a"},{"n":"/9/0/2","vd":"AQID"}]"#;
    let r = n.request(ipatch_json(both));
    assert_eq!(Code::of(&r), Code::METHOD_NOT_ALLOWED);
    // A URI the object refuses (4.00) does not even set Update Result 56:
    // the refusal happened on the copy.
    let bad = br#"[{"n":"/42/0/0","vs":"c"},{"n":"/9/0/3","vs":"ftp://files.example/a"}]"#;
    assert_eq!(Code::of(&n.request(ipatch_json(bad))), Code::BAD_REQUEST);
    assert!(n.event().is_none(), "no effects");
    assert_eq!(n.thing().name, "a");
    assert_eq!(text(&mut n, "/9/0/7"), "0", "still INITIAL");
    assert_eq!(text(&mut n, "/9/0/9"), "0", "Update Result untouched");
    // The URI alone: accepted, the pull starts (its effects are held).
    let one = br#"[{"n":"/9/0/3","vs":"coap://files.example/a"}]"#;
    let id = n.server.send_request(n.now, dev(), ipatch_json(one));
    n.flush();
    let Some(Event::Effects { pending, effects }) = n.event() else {
        panic!("effects expected")
    };
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::SwMgmt {
            action: crate::object::SwMgmtAction::Download { .. },
            ..
        }
    )));
    n.client.complete(n.now, pending);
    let answered = n.flush().into_iter().any(|e| {
        matches!(e, EndpointEvent::Response { id: i, ref packet } if i == id && Code::of(packet) == Code::CHANGED)
    });
    assert!(answered);
}

#[test]
fn the_device_object_checks_its_utc_offset_before_anything_is_written() {
    use crate::objects::device::{Device, DeviceInfo};
    let info = DeviceInfo {
        model: "m".into(),
        serial: "s".into(),
        firmware_version: "1".into(),
        software_version: "1".into(),
        device_type: "t".into(),
    };
    let mut n = Net::new();
    n.client = Client::new(
        Config::new("node1", srv(), 42),
        vec![Box::new(n.thing.clone()), Box::new(Device::new(info))],
    );
    let bad = br#"[{"n":"/42/0/0","vs":"c"},{"n":"/3/0/14","vs":"UTC+2"}]"#;
    assert_eq!(Code::of(&n.request(ipatch_json(bad))), Code::BAD_REQUEST);
    assert_eq!(n.thing().name, "a");
    let good = br#"[{"n":"/42/0/0","vs":"c"},{"n":"/3/0/14","vs":"+02:00"}]"#;
    assert_eq!(Code::of(&n.request(ipatch_json(good))), Code::CHANGED);
    assert_eq!(n.thing().name, "c");
    assert_eq!(text(&mut n, "/3/0/14"), "+02:00");
}

#[test]
fn an_app_value_is_written_alone_or_not_at_all() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    // With a host value, or a second app value: 4.05, nothing written, the
    // app not asked (it could refuse after the others were written).
    for body in [
        &br#"[{"n":"/3303/0/5900","v":19.5},{"n":"/42/0/0","vs":"b"}]"#[..],
        &br#"[{"n":"/42/0/0","vs":"b"},{"n":"/3303/0/5900","v":19.5}]"#[..],
        &br#"[{"n":"/3303/0/5900","v":19.5},{"n":"/3303/0/5900","v":20}]"#[..],
    ] {
        let r = n.request(ipatch_json(body));
        assert_eq!(Code::of(&r), Code::METHOD_NOT_ALLOWED);
        assert_eq!(n.thing().name, "a");
        assert!(n.event().is_none(), "the app is not asked");
    }
    // A type error still answers 4.00 before that rule matters.
    let r = n.request(ipatch_json(
        br#"[{"n":"/3303/0/5900","vs":"hot"},{"n":"/42/0/0","vs":"b"}]"#,
    ));
    assert_eq!(Code::of(&r), Code::BAD_REQUEST);
}

fn with_block1(mut p: Packet, num: u32, more: bool, size1: Option<u64>) -> Packet {
    BlockOpt { num, more, szx: 0 }.write(&mut p, CoapOption::Block1);
    if let Some(s) = size1 {
        msg::set_uint(&mut p, CoapOption::Size1, s);
    }
    p
}

/// Sends `body` as 16-byte Block1 blocks of `method` and returns the
/// answers (2.31 for all but the last).
fn send_in_blocks(n: &mut Net, method: RequestType, body: &[u8]) -> Vec<Packet> {
    let chunks: Vec<&[u8]> = body.chunks(16).collect();
    let mut answers = Vec::new();
    for (num, chunk) in chunks.iter().enumerate() {
        let more = num + 1 < chunks.len();
        let p = with_block1(composite(method, 110, chunk), num as u32, more, None);
        answers.push(n.request(p));
    }
    answers
}

#[test]
fn fetch_and_ipatch_bodies_come_block_wise() {
    let (mut n, _app) = net_with_app();
    // Read-Composite, 35 bytes in three blocks of 16.
    let answers = send_in_blocks(
        &mut n,
        RequestType::Fetch,
        br#"[{"n":"/42/0/0"},{"n":"/42/0/1"}]"#,
    );
    let codes: Vec<Code> = answers.iter().map(Code::of).collect();
    assert_eq!(codes, [Code::CONTINUE, Code::CONTINUE, Code::CONTENT]);
    // Block1 echoed: NUM/M/SZX = 0/1/0, 1/1/0, then 2/0/0 with the answer.
    let b1: Vec<Vec<u8>> = answers
        .iter()
        .map(|a| {
            a.get_option(CoapOption::Block1)
                .unwrap()
                .front()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(b1, [vec![0x08], vec![0x18], vec![0x20]]);
    assert!(answers[0].payload.is_empty());
    assert_eq!(
        answers[2].payload,
        br#"[{"n":"/42/0/0","vs":"a"},{"n":"/42/0/1","v":10}]"#
    );
    // Write-Composite in blocks: nothing written before the last one.
    let body = br#"[{"n":"/42/0/0","vs":"written-in-blocks"},{"n":"/1/0/1","v":900}]"#;
    let chunks: Vec<&[u8]> = body.chunks(16).collect();
    for (num, chunk) in chunks.iter().enumerate() {
        let more = num + 1 < chunks.len();
        let p = with_block1(ipatch_json(chunk), num as u32, more, None);
        let r = n.request(p);
        if more {
            assert_eq!(Code::of(&r), Code::CONTINUE);
            assert_eq!(n.thing().name, "a");
        } else {
            assert_eq!(Code::of(&r), Code::CHANGED);
        }
    }
    assert_eq!(n.thing().name, "written-in-blocks");
    assert_eq!(text(&mut n, "/1/0/1"), "900");
}

#[test]
fn composite_block1_caps_and_missing_blocks() {
    let (mut n, _app) = net_with_app();
    // Size1 over the assembly cap (64 KiB): 4.13 with the cap as Size1.
    let p = with_block1(ipatch_json(&[b'['; 16]), 0, true, Some(64 * 1024 + 1));
    let r = n.request(p);
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(
        msg::get_uint(&r, CoapOption::Size1, 4).unwrap(),
        Some(64 * 1024)
    );
    // Block 0, then block 2: 4.08, and nothing written.
    let body = br#"[{"n":"/42/0/0","vs":"never-complete"}]"#;
    let r = n.request(with_block1(ipatch_json(&body[..16]), 0, true, None));
    assert_eq!(Code::of(&r), Code::CONTINUE);
    let r = n.request(with_block1(ipatch_json(&body[32..]), 2, false, None));
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_INCOMPLETE);
    assert_eq!(n.thing().name, "a");
    // A FETCH in blocks between an iPATCH's blocks: two transfers.
    let patch = br#"[{"n":"/42/0/0","vs":"interleaved"}]"#;
    let r = n.request(with_block1(ipatch_json(&patch[..16]), 0, true, None));
    assert_eq!(Code::of(&r), Code::CONTINUE);
    let answers = send_in_blocks(&mut n, RequestType::Fetch, br#"[{"n":"/42/0/1"}]"#);
    assert_eq!(Code::of(answers.last().unwrap()), Code::CONTENT);
    let r = n.request(with_block1(ipatch_json(&patch[16..32]), 1, true, None));
    assert_eq!(Code::of(&r), Code::CONTINUE);
    let r = n.request(with_block1(ipatch_json(&patch[32..]), 2, false, None));
    assert_eq!(Code::of(&r), Code::CHANGED);
    assert_eq!(n.thing().name, "interleaved");
}

#[test]
fn a_held_write_composite_ends_5_03_when_the_app_object_leaves() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    let body = br#"[{"n":"/3303/0/5900","v":19.5}]"#;
    let id = n.server.send_request(n.now, dev(), ipatch_json(body));
    n.flush();
    assert!(matches!(n.event(), Some(Event::Effects { .. })));
    n.client.remove_object(n.now, 3303).expect("removed");
    let answer = n.flush().into_iter().find_map(|e| match e {
        EndpointEvent::Response { id: i, packet } if i == id => Some(packet),
        _ => None,
    });
    assert_eq!(
        Code::of(&answer.expect("the held answer")),
        Code::SERVICE_UNAVAILABLE
    );
}

/// An Observe-Composite whose path list comes block-wise registers on the
/// last block (its Observe option) like one in a single datagram.
#[test]
fn an_observe_composite_body_may_come_block_wise() {
    let (mut n, _app) = net_with_app();
    let body = br#"[{"n":"/42/0/1"},{"n":"/42/0/0"}]"#;
    let chunks: Vec<&[u8]> = body.chunks(16).collect();
    let mut last = None;
    for (num, chunk) in chunks.iter().enumerate() {
        let more = num + 1 < chunks.len();
        let mut p = with_block1(
            composite(RequestType::Fetch, 110, chunk),
            num as u32,
            more,
            None,
        );
        p.set_token(vec![0xB1]);
        msg::set_uint(&mut p, CoapOption::Observe, 0);
        last = Some(n.request(p));
    }
    let first = last.unwrap();
    assert_eq!(Code::of(&first), Code::CONTENT);
    assert!(
        msg::get_uint(&first, CoapOption::Observe, 3)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        first.payload,
        br#"[{"n":"/42/0/1","v":10},{"n":"/42/0/0","vs":"a"}]"#
    );
    assert_eq!(n.client.observers.len(), 1);
    n.thing().level = 11;
    let now = n.now;
    n.client.resources_changed(now, &[Path::resource(42, 0, 1)]);
    let note = n.flush().into_iter().find_map(|e| match e {
        EndpointEvent::Request(r) => Some(r.packet),
        EndpointEvent::Response { packet, .. } => Some(packet),
        _ => None,
    });
    let note = note.expect("a notification");
    assert_eq!(note.get_token(), &[0xB1]);
    assert_eq!(
        note.payload,
        br#"[{"n":"/42/0/1","v":11},{"n":"/42/0/0","vs":"a"}]"#
    );
}

/// A Read-Composite answer over one block goes out with Block2; its
/// follow-ups (FETCH with Block2, with the path list again or with no
/// payload, as aiocoap sends them) are sliced from the same body.
#[test]
fn a_large_read_composite_answer_comes_block_wise() {
    let (mut n, _app) = net_with_app();
    let names = br#"[{"n":"/42/0/4"}]"#;
    let want = format!(r#"[{{"n":"/42/0/4","vs":"{}"}}]"#, "x".repeat(2500));
    let first = n.request(composite(RequestType::Fetch, 110, names));
    assert_eq!(Code::of(&first), Code::CONTENT);
    let opt = BlockOpt::read(&first, CoapOption::Block2).unwrap().unwrap();
    assert_eq!((opt.num, opt.more, opt.szx), (0, true, 6));
    assert_eq!(
        msg::get_uint(&first, CoapOption::Size2, 4).unwrap(),
        Some(want.len() as u64)
    );
    let etag = first.get_first_option(CoapOption::ETag).unwrap().clone();
    let mut body = first.payload.clone();
    for (num, payload) in [(1u32, &b""[..]), (2, &names[..])] {
        let mut p = composite(RequestType::Fetch, 110, payload);
        BlockOpt {
            num,
            more: false,
            szx: 6,
        }
        .write(&mut p, CoapOption::Block2);
        let r = n.request(p);
        assert_eq!(Code::of(&r), Code::CONTENT, "block {num}");
        let opt = BlockOpt::read(&r, CoapOption::Block2).unwrap().unwrap();
        assert_eq!((opt.num, opt.more), (num, num == 1));
        assert_eq!(r.get_first_option(CoapOption::ETag), Some(&etag));
        body.extend_from_slice(&r.payload);
    }
    assert_eq!(String::from_utf8(body).unwrap(), want);
}
