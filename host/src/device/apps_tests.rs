//! The glue without a runtime: events applied to a real client engine, and
//! app answers completing held requests.

use super::*;
use coap_lite::{CoapOption, Packet, RequestType};
use std::net::SocketAddr;
use wasmdm_proto::client::{Config, Event};
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::model::ResourceValue;

fn server() -> SocketAddr {
    "192.0.2.1:5683".parse().unwrap()
}

fn client() -> Client {
    Client::new(Config::new("dev", server(), 1), Vec::new())
}

fn rdef(id: u16, value_type: AppValueType, operations: AppOperations) -> AppResourceDef {
    AppResourceDef {
        id,
        value_type,
        operations,
        multiple: false,
        mandatory: false,
    }
}

fn temperature() -> AppObjectEvent {
    AppObjectEvent::Declared {
        package: "temp".into(),
        component: "temp".into(),
        def: AppObjectDef {
            id: 3303,
            version: Some("1.1".into()),
            instances: vec![0],
            resources: vec![
                rdef(5700, AppValueType::Float, AppOperations::Read),
                rdef(5605, AppValueType::String, AppOperations::Execute),
                rdef(5750, AppValueType::String, AppOperations::ReadWrite),
            ],
        },
    }
}

fn path(resource: u16) -> AppPath {
    AppPath {
        object: 3303,
        instance: 0,
        resource,
        resource_instance: None,
    }
}

fn read(c: &Client, resource: u16) -> Option<ResourceValue> {
    c.object(3303)?.read(0, resource).ok()?
}

#[test]
fn declared_changed_and_withdrawn_objects_follow_the_runtime() {
    let now = Instant::now();
    let mut c = client();
    let mut apps = Apps::new(Duration::from_secs(2));
    apps.on_event(&mut c, now, temperature());
    assert!(c.link_payload().ends_with("</3303>;ver=1.1,</3303/0>"));
    // An execute resource is typeless whatever the app said.
    let defs = c.object(3303).unwrap().resources().to_vec();
    assert_eq!(defs[0].id, 5605);
    assert_eq!(defs[0].data_type, DataType::None);
    assert_eq!(defs[1].data_type, DataType::Float);
    apps.on_event(
        &mut c,
        now,
        AppObjectEvent::Changed {
            values: vec![
                (path(5700), AppValue::Float(21.5)),
                // Wrong type, unknown object: dropped, the rest kept.
                (path(5750), AppValue::Integer(3)),
                (
                    AppPath {
                        object: 9999,
                        ..path(1)
                    },
                    AppValue::Integer(1),
                ),
            ],
        },
    );
    assert_eq!(
        read(&c, 5700),
        Some(ResourceValue::Single(Value::Float(21.5)))
    );
    assert_eq!(read(&c, 5750), None);
    apps.on_event(&mut c, now, AppObjectEvent::Withdrawn { object: 3303 });
    assert!(c.object(3303).is_none());
    assert!(!c.link_payload().contains("3303"));
    // Withdrawing what is not served changes nothing.
    apps.on_event(&mut c, now, AppObjectEvent::Withdrawn { object: 3303 });
    // Declared again after a restart: served afresh, without old values.
    apps.on_event(&mut c, now, temperature());
    apps.on_event(&mut c, now, temperature());
    assert!(c.object(3303).is_some());
    assert_eq!(read(&c, 5700), None);
}

#[test]
fn bad_declarations_are_refused_and_change_nothing() {
    let now = Instant::now();
    let mut c = client();
    let mut apps = Apps::new(Duration::from_secs(2));
    let AppObjectEvent::Declared { mut def, .. } = temperature() else {
        unreachable!()
    };
    def.instances = (0..17).collect();
    apps.on_event(
        &mut c,
        now,
        AppObjectEvent::Declared {
            package: "p".into(),
            component: "c".into(),
            def,
        },
    );
    assert!(c.object(3303).is_none());
    assert!(apps.served.is_empty());
    // More than MAX_APP_OBJECTS on the device.
    for id in 0..(MAX_APP_OBJECTS as u16 + 1) {
        let def = AppObjectDef {
            id: 20000 + id,
            version: None,
            instances: vec![0],
            resources: vec![],
        };
        apps.on_event(
            &mut c,
            now,
            AppObjectEvent::Declared {
                package: "p".into(),
                component: "c".into(),
                def,
            },
        );
    }
    assert_eq!(apps.served.len(), MAX_APP_OBJECTS);
    assert!(c.object(20000 + MAX_APP_OBJECTS as u16).is_none());
    // Send while not registered: refused, nothing sent.
    apps.on_event(
        &mut c,
        now,
        AppObjectEvent::Send {
            paths: vec![path(5700)],
        },
    );
    assert!(c.poll_transmit().is_none());
}

/// A PUT from the server, answered only when the app's answer arrives.
fn held_write(c: &mut Client, now: Instant, mid: u16) -> PendingId {
    let mut p = msg::request(RequestType::Put, &["3303", "0", "5750"]);
    p.header.message_id = mid;
    p.set_token(vec![mid as u8]);
    msg::set_uint(&mut p, CoapOption::ContentFormat, 0);
    p.payload = b"lab".to_vec();
    c.handle_datagram(now, server(), &msg::encode(&p).unwrap());
    assert!(c.poll_transmit().is_none(), "held");
    loop {
        match c.poll_event() {
            Some(Event::Effects { pending, effects }) => {
                assert!(is_app_request(&effects));
                return pending;
            }
            Some(_) => continue,
            None => panic!("no effects"),
        }
    }
}

fn answer_code(c: &mut Client) -> Code {
    let t = c.poll_transmit().expect("the answer");
    Code::of(&Packet::from_bytes(&t.bytes).unwrap())
}

#[test]
fn app_answers_complete_or_fail_held_requests() {
    let now = Instant::now();
    let mut c = client();
    let mut apps = Apps::new(Duration::from_secs(2));
    apps.on_event(&mut c, now, temperature());
    let pending = held_write(&mut c, now, 1);
    let written = vec![(Path::resource(3303, 0, 5750), Value::String("lab".into()))];
    apps.answered(
        &mut c,
        now,
        AppAnswer {
            pending,
            result: Ok(()),
            written,
        },
    );
    assert_eq!(answer_code(&mut c), Code::CHANGED);
    // The accepted value reads back at once.
    assert_eq!(
        read(&c, 5750),
        Some(ResourceValue::Single(Value::String("lab".into())))
    );
    for (mid, failure, code) in [
        (2, AppFailure::BadRequest, Code::BAD_REQUEST),
        (3, AppFailure::NotAllowed, Code::METHOD_NOT_ALLOWED),
        (4, AppFailure::Internal, Code::INTERNAL_SERVER_ERROR),
        (5, AppFailure::Unavailable, Code::SERVICE_UNAVAILABLE),
    ] {
        let pending = held_write(&mut c, now, mid);
        apps.answered(
            &mut c,
            now,
            AppAnswer {
                pending,
                result: Err(failure),
                written: Vec::new(),
            },
        );
        assert_eq!(answer_code(&mut c), code, "{failure:?}");
    }
}

#[test]
fn requests_convert_to_the_runtime_types() {
    assert_eq!(
        app_path(Path::resource_instance(3303, 1, 6000, 4)),
        Some(AppPath {
            object: 3303,
            instance: 1,
            resource: 6000,
            resource_instance: Some(4)
        })
    );
    assert_eq!(app_path(Path::instance(3303, 1)), None);
    assert_eq!(
        app_kind(&AppRequest::Write(Value::Float(1.5))),
        Some(AppRequestKind::Write(AppValue::Float(1.5)))
    );
    assert_eq!(
        app_kind(&AppRequest::Execute("0='x'".into())),
        Some(AppRequestKind::Execute("0='x'".into()))
    );
    assert_eq!(
        app_kind(&AppRequest::Write(Value::CoreLink("</1>".into()))),
        None
    );
    assert_eq!(proto_path(path(5700)), Path::resource(3303, 0, 5700));
}

/// Answers every request the client sent (Register 2.01, Update 2.04) and
/// returns the `POST /dp` ones.
fn serve(c: &mut Client, now: Instant) -> Vec<Packet> {
    let mut sends = Vec::new();
    while let Some(t) = c.poll_transmit() {
        let p = Packet::from_bytes(&t.bytes).unwrap();
        let path = msg::uri_path(&p).unwrap_or_default();
        let code = match path.first().map(String::as_str) {
            Some("dp") => {
                sends.push(p.clone());
                Code::CHANGED
            }
            Some("rd") if path.len() == 1 => Code::CREATED,
            _ => Code::CHANGED,
        };
        let mut resp = msg::response_to(&p, code);
        resp.header
            .set_type(coap_lite::MessageType::Acknowledgement);
        resp.header.message_id = p.header.message_id;
        if code == Code::CREATED {
            msg::add_strings(&mut resp, CoapOption::LocationPath, &["rd", "1"]);
        }
        c.handle_datagram(now, server(), &msg::encode(&resp).unwrap());
    }
    sends
}

#[test]
fn an_apps_send_event_posts_its_values_once_registered() {
    let now = Instant::now();
    let mut c = client();
    let mut apps = Apps::new(Duration::from_secs(2));
    c.start(now);
    serve(&mut c, now);
    assert!(c.is_registered());
    apps.on_event(&mut c, now, temperature());
    apps.on_event(
        &mut c,
        now,
        AppObjectEvent::Changed {
            values: vec![(path(5700), AppValue::Float(21.5))],
        },
    );
    apps.on_event(
        &mut c,
        now,
        AppObjectEvent::Send {
            paths: vec![path(5700)],
        },
    );
    let sends = serve(&mut c, now);
    assert_eq!(sends.len(), 1);
    let mut want = vec![0x81, 0xA2, 0x00, 0x6C];
    want.extend_from_slice(b"/3303/0/5700");
    want.extend_from_slice(&[0x02, 0xF9, 0x4D, 0x60]);
    assert_eq!(sends[0].payload, want);
    // A path with no value: nothing sent.
    apps.on_event(
        &mut c,
        now,
        AppObjectEvent::Send {
            paths: vec![path(5750)],
        },
    );
    assert!(serve(&mut c, now).is_empty());
}
