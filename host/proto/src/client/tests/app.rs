//! App objects in the engine (issue 14): reads from published values, held
//! Writes/Executes, objects added and removed at run time, LwM2M 1.1 Send.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::object::AppRequest;
use crate::objects::Server;
use crate::objects::app::{APP_RESOURCE_NAME, AppObject};

fn rdef(id: u16, operations: Operations, data_type: DataType) -> ResourceDef {
    ResourceDef {
        id,
        name: APP_RESOURCE_NAME,
        operations,
        multiple: false,
        mandatory: false,
        data_type,
    }
}

/// IPSO Temperature (3303) as the example app declares it, plus a writable float.
fn temperature() -> AppObject {
    AppObject::new(
        3303,
        Some("1.1".into()),
        vec![0],
        vec![
            rdef(5700, Operations::Read, DataType::Float),
            rdef(5701, Operations::Read, DataType::String),
            rdef(5605, Operations::Execute, DataType::None),
            rdef(5750, Operations::ReadWrite, DataType::String),
            rdef(5900, Operations::ReadWrite, DataType::Float),
            rdef(5910, Operations::ReadWrite, DataType::Opaque),
        ],
    )
    .unwrap()
}

/// The test's handle on the AppObject the engine serves (as the device
/// driver keeps one, `Shared` there).
#[derive(Clone)]
pub(super) struct SharedApp {
    inner: Rc<RefCell<AppObject>>,
    resources: Vec<ResourceDef>,
}

impl SharedApp {
    fn new(app: AppObject) -> Self {
        SharedApp {
            resources: app.resources().to_vec(),
            inner: Rc::new(RefCell::new(app)),
        }
    }
}

impl Object for SharedApp {
    fn id(&self) -> u16 {
        self.inner.borrow().id()
    }
    fn version(&self) -> Option<&str> {
        Some("1.1")
    }
    fn resources(&self) -> &[ResourceDef] {
        &self.resources
    }
    fn instances(&self) -> Vec<u16> {
        self.inner.borrow().instances()
    }
    fn read(&self, i: u16, r: u16) -> Result<Option<ResourceValue>, OpError> {
        self.inner.borrow().read(i, r)
    }
    fn write(
        &mut self,
        i: u16,
        r: u16,
        v: ResourceValue,
        replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        self.inner.borrow_mut().write(i, r, v, replace)
    }
    fn write_block(
        &mut self,
        i: u16,
        r: u16,
        offset: u64,
        bytes: &[u8],
        last: bool,
    ) -> Result<Vec<Effect>, OpError> {
        self.inner
            .borrow_mut()
            .write_block(i, r, offset, bytes, last)
    }
    fn execute(&mut self, i: u16, r: u16, args: &[u8]) -> Result<Vec<Effect>, OpError> {
        self.inner.borrow_mut().execute(i, r, args)
    }
    fn writes_answered_later(&self) -> bool {
        self.inner.borrow().writes_answered_later()
    }
}

/// A registered device serving the test object, /1 and 3303.
pub(super) fn net_with_app() -> (Net, SharedApp) {
    let app = SharedApp::new(temperature());
    let mut n = Net::new();
    let cfg = Config {
        retry_base: Duration::from_secs(5),
        lifetime: 300,
        ..Config::new("node1", srv(), 42)
    };
    n.client = Client::new(
        cfg,
        vec![
            Box::new(Server::new(1, 300)),
            Box::new(n.thing.clone()),
            Box::new(app.clone()),
        ],
    );
    n.register();
    (n, app)
}

pub(super) fn set(n: &mut Net, app: &SharedApp, r: u16, v: Value) {
    let path = app.inner.borrow_mut().set(0, r, None, v).unwrap();
    let now = n.now;
    n.client.resources_changed(now, &[path]);
}

fn get(n: &mut Net, path: &str, accept: Option<u16>) -> Packet {
    let mut p = req(RequestType::Get, path);
    if let Some(a) = accept {
        msg::set_uint(&mut p, CoapOption::Accept, a.into());
    }
    n.request(p)
}

#[test]
fn reads_serve_published_values_in_every_format() {
    let (mut n, app) = net_with_app();
    // Nothing published: 5.03 for the resource, an instance without it.
    assert_eq!(
        Code::of(&get(&mut n, "/3303/0/5700", None)),
        Code::SERVICE_UNAVAILABLE
    );
    let r = get(&mut n, "/3303/0", None);
    assert_eq!(Code::of(&r), Code::CONTENT);
    assert!(r.payload.is_empty());
    set(&mut n, &app, 5700, Value::Float(21.5));
    set(&mut n, &app, 5701, Value::String("Cel".into()));
    // TLV of the instance: 5700 as a 4-byte float, 5701; 5750/5900 unset, 5605 not readable.
    let r = get(&mut n, "/3303/0", None);
    assert_eq!(
        msg::get_uint(&r, CoapOption::ContentFormat, 2).unwrap(),
        Some(11542)
    );
    assert_eq!(
        r.payload,
        vec![
            0xE4, 0x16, 0x44, 0x41, 0xAC, 0x00, 0x00, 0xE3, 0x16, 0x45, b'C', b'e', b'l'
        ]
    );
    assert_eq!(get(&mut n, "/3303/0/5700", None).payload, b"21.5");
    assert_eq!(
        String::from_utf8(get(&mut n, "/3303/0", Some(110)).payload).unwrap(),
        r#"[{"bn":"/3303/0/","n":"5700","v":21.5},{"n":"5701","vs":"Cel"}]"#
    );
    // SenML CBOR of one resource: [{-2: "/3303/0/5700", 2: 21.5 (half float)}].
    let mut want = vec![0x81, 0xA2, 0x21, 0x6C];
    want.extend_from_slice(b"/3303/0/5700");
    want.extend_from_slice(&[0x02, 0xF9, 0x4D, 0x60]);
    assert_eq!(get(&mut n, "/3303/0/5700", Some(112)).payload, want);
    assert_eq!(
        get(&mut n, "/3303/0/5700", Some(60)).payload,
        vec![0xF9, 0x4D, 0x60]
    );
    // Opaque values go opaque by default.
    set(&mut n, &app, 5910, Value::Opaque(vec![0, 0xFF]));
    let r = get(&mut n, "/3303/0/5910", None);
    assert_eq!(
        msg::get_uint(&r, CoapOption::ContentFormat, 2).unwrap(),
        Some(42)
    );
    assert_eq!(r.payload, vec![0, 0xFF]);
    // Opaque (42) carries opaque values only.
    assert_eq!(
        Code::of(&get(&mut n, "/3303/0/5701", Some(42))),
        Code::NOT_ACCEPTABLE
    );
    // Discover lists what is there; Write-Attributes on a numeric resource.
    let d = get(&mut n, "/3303/0", Some(40));
    assert_eq!(
        String::from_utf8(d.payload).unwrap(),
        "</3303/0>;pmin=0,</3303/0/5605>,</3303/0/5700>,</3303/0/5701>,</3303/0/5910>"
    );
    let mut wa = req(RequestType::Put, "/3303/0/5700");
    msg::add_strings(&mut wa, CoapOption::UriQuery, &["pmin=5", "st=0.5"]);
    assert_eq!(Code::of(&n.request(wa)), Code::CHANGED);
    let d = get(&mut n, "/3303/0/5700", Some(40));
    assert_eq!(
        String::from_utf8(d.payload).unwrap(),
        "</3303/0/5700>;pmin=5;st=0.5"
    );
    // The registration lists the object with its version.
    assert!(
        n.client
            .link_payload()
            .ends_with("</3303>;ver=1.1,</3303/0>")
    );
}

#[test]
fn notifications_of_published_values_honour_pmin() {
    let (mut n, app) = net_with_app();
    set(&mut n, &app, 5700, Value::Float(20.0));
    let mut wa = req(RequestType::Put, "/3303/0/5700");
    msg::add_strings(&mut wa, CoapOption::UriQuery, &["pmin=10"]);
    assert_eq!(Code::of(&n.request(wa)), Code::CHANGED);
    let mut obs = req(RequestType::Get, "/3303/0/5700");
    obs.set_token(vec![7]);
    msg::set_uint(&mut obs, CoapOption::Observe, 0);
    let id = n.server.send_request(n.now, dev(), obs);
    let first = n
        .flush()
        .into_iter()
        .find_map(|e| match e {
            EndpointEvent::Response { id: i, packet } if i == id => Some(packet),
            _ => None,
        })
        .expect("first answer");
    assert_eq!(first.payload, b"20");
    let t0 = n.now;
    n.now += Duration::from_secs(3);
    set(&mut n, &app, 5700, Value::Float(22.5));
    assert!(n.flush().is_empty(), "pmin holds the change back");
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(10));
    let note = n
        .flush()
        .into_iter()
        .find_map(|e| match e {
            EndpointEvent::Response { id: i, packet } if i == id => Some(packet),
            _ => None,
        })
        .expect("notification at pmin");
    assert_eq!(note.payload, b"22.5");
    assert!(
        msg::get_uint(&note, CoapOption::Observe, 3)
            .unwrap()
            .unwrap()
            > 2
    );
}

#[test]
fn writes_are_checked_then_held_for_the_app() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    // A wrong type never reaches the app: 4.00, no Effects.
    let r = n.request(with_cf(req(RequestType::Put, "/3303/0/5900"), 0, b"hot"));
    assert_eq!(Code::of(&r), Code::BAD_REQUEST);
    let r = n.request(with_cf(
        req(RequestType::Put, "/3303/0/5900"),
        110,
        br#"[{"bn":"/3303/0/5900","vs":"hot"}]"#,
    ));
    assert_eq!(Code::of(&r), Code::BAD_REQUEST);
    let r = n.request(with_cf(req(RequestType::Put, "/3303/0/5700"), 0, b"1.5"));
    assert_eq!(Code::of(&r), Code::METHOD_NOT_ALLOWED, "read-only");
    assert!(n.event().is_none());
    // A good write is held until the app answers.
    let id = n.server.send_request(
        n.now,
        dev(),
        with_cf(req(RequestType::Put, "/3303/0/5900"), 0, b"19.5"),
    );
    assert!(n.flush().is_empty(), "no answer before the app's");
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
    let r = n.flush().into_iter().find_map(|e| match e {
        EndpointEvent::Response { id: i, packet } if i == id => Some(packet),
        _ => None,
    });
    assert_eq!(Code::of(&r.expect("answer")), Code::CHANGED);
    // An opaque write (CF 42) is one value for the app; over 1 KiB: 4.13.
    n.server.send_request(
        n.now,
        dev(),
        with_cf(req(RequestType::Put, "/3303/0/5910"), 42, &[1, 2, 3]),
    );
    n.flush();
    let Some(Event::Effects { pending, effects }) = n.event() else {
        panic!("effects expected")
    };
    assert_eq!(
        effects,
        vec![Effect::App {
            path: Path::resource(3303, 0, 5910),
            request: AppRequest::Write(Value::Opaque(vec![1, 2, 3])),
        }]
    );
    n.client.complete(n.now, pending);
    n.flush();
    let r = n.request(with_cf(
        req(RequestType::Put, "/3303/0/5910"),
        42,
        &[0; 1025],
    ));
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(msg::get_uint(&r, CoapOption::Size1, 4).unwrap(), Some(1024));
}

#[test]
fn held_executes_are_completed_or_failed() {
    let (mut n, _app) = net_with_app();
    n.auto_complete = false;
    for (outcome, code) in [
        (None, Code::CHANGED),
        (
            Some(OpError::ServiceUnavailable("no answer in time".into())),
            Code::SERVICE_UNAVAILABLE,
        ),
        (Some(OpError::BadRequest("no".into())), Code::BAD_REQUEST),
        (
            Some(OpError::Internal("app failed".into())),
            Code::INTERNAL_SERVER_ERROR,
        ),
    ] {
        let id = n
            .server
            .send_request(n.now, dev(), req(RequestType::Post, "/3303/0/5605"));
        assert!(n.flush().is_empty());
        let Some(Event::Effects { pending, effects }) = n.event() else {
            panic!("effects expected")
        };
        assert_eq!(
            effects,
            vec![Effect::App {
                path: Path::resource(3303, 0, 5605),
                request: AppRequest::Execute(String::new()),
            }]
        );
        match outcome {
            None => n.client.complete(n.now, pending),
            Some(e) => n.client.fail(n.now, pending, e),
        }
        let r = n.flush().into_iter().find_map(|e| match e {
            EndpointEvent::Response { id: i, packet } if i == id => Some(packet),
            _ => None,
        });
        assert_eq!(Code::of(&r.expect("answer")), code);
    }
    // Malformed arguments: 4.00 before the app.
    let r = n.request(with_cf(req(RequestType::Post, "/3303/0/5605"), 0, b"0=x"));
    assert_eq!(Code::of(&r), Code::BAD_REQUEST);
    assert!(n.event().is_none());
}

#[test]
fn objects_come_and_go_with_registration_updates() {
    let (mut n, app) = net_with_app();
    n.auto_complete = false;
    set(&mut n, &app, 5700, Value::Float(20.0));
    // An observer and a held Execute on 3303.
    let mut obs = req(RequestType::Get, "/3303/0/5700");
    obs.set_token(vec![9]);
    msg::set_uint(&mut obs, CoapOption::Observe, 0);
    let obs_id = n.server.send_request(n.now, dev(), obs);
    n.flush();
    let exec = n
        .server
        .send_request(n.now, dev(), req(RequestType::Post, "/3303/0/5605"));
    n.flush();
    assert!(matches!(n.event(), Some(Event::Effects { .. })));
    let removed = n.client.remove_object(n.now, 3303).expect("removed");
    assert_eq!(removed.id(), 3303);
    let evs = n.flush();
    let response = |evs: &[EndpointEvent], id| {
        evs.iter().find_map(|e| match e {
            EndpointEvent::Response { id: i, packet } if *i == id => Some(packet.clone()),
            _ => None,
        })
    };
    assert_eq!(
        Code::of(&response(&evs, exec).expect("held answer")),
        Code::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        Code::of(&response(&evs, obs_id).expect("final notification")),
        Code::NOT_FOUND
    );
    assert_eq!(n.client.observers.len(), 0);
    let update = evs
        .into_iter()
        .find_map(|e| match e {
            EndpointEvent::Request(r) => Some(r),
            _ => None,
        })
        .expect("an Update");
    assert_eq!(msg::uri_path(&update.packet).unwrap(), vec!["rd", "5a3f"]);
    assert_eq!(
        String::from_utf8(update.packet.payload.clone()).unwrap(),
        "</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</42/0>"
    );
    n.reply(&update, Code::CHANGED, |_| {});
    assert_eq!(
        Code::of(&get(&mut n, "/3303/0/5700", None)),
        Code::NOT_FOUND
    );
    assert!(n.client.remove_object(n.now, 3303).is_none());
    // Back again: an Update with it; an id already served is refused.
    n.client.add_object(n.now, removed).unwrap();
    let update = expect_request(n.flush());
    assert!(
        String::from_utf8(update.packet.payload.clone())
            .unwrap()
            .ends_with("</42/0>,</3303>;ver=1.1,</3303/0>")
    );
    n.reply(&update, Code::CHANGED, |_| {});
    assert!(matches!(
        n.client.add_object(n.now, Box::new(temperature())),
        Err(OpError::BadRequest(_))
    ));
}

#[test]
fn an_object_added_while_registering_is_announced_by_an_update() {
    let mut n = Net::new();
    n.client.start(n.now);
    let register = expect_request(n.flush());
    n.client.add_object(n.now, Box::new(temperature())).unwrap();
    n.reply(&register, Code::CREATED, |p| {
        msg::add_strings(p, CoapOption::LocationPath, &["rd", "1"])
    });
    let update = expect_request(n.flush_pending());
    assert!(
        String::from_utf8(update.packet.payload.clone())
            .unwrap()
            .ends_with("</3303>;ver=1.1,</3303/0>")
    );
}

#[test]
fn send_posts_current_values_as_senml_cbor() {
    let (mut n, app) = net_with_app();
    set(&mut n, &app, 5700, Value::Float(21.5));
    n.client
        .send(n.now, &[Path::resource(3303, 0, 5700)])
        .unwrap();
    let r = expect_request(n.flush());
    assert_eq!(Code::of(&r.packet), Code::POST);
    assert_eq!(msg::uri_path(&r.packet).unwrap(), vec!["dp"]);
    assert_eq!(msg::type_of(&r.packet), MessageType::Confirmable);
    assert_eq!(
        msg::get_uint(&r.packet, CoapOption::ContentFormat, 2).unwrap(),
        Some(112)
    );
    // [{0: "/3303/0/5700", 2: 21.5}]
    let mut want = vec![0x81, 0xA2, 0x00, 0x6C];
    want.extend_from_slice(b"/3303/0/5700");
    want.extend_from_slice(&[0x02, 0xF9, 0x4D, 0x60]);
    assert_eq!(r.packet.payload, want);
    n.reply(&r, Code::CHANGED, |_| {});
    // An instance: what is published; SenML JSON when CBOR is not supported.
    set(&mut n, &app, 5701, Value::String("Cel".into()));
    n.client.cfg.content_formats = vec![ContentFormat::SenmlJson, ContentFormat::Tlv];
    n.client.send(n.now, &[Path::instance(3303, 0)]).unwrap();
    let r = expect_request(n.flush());
    assert_eq!(
        String::from_utf8(r.packet.payload.clone()).unwrap(),
        r#"[{"n":"/3303/0/5700","v":21.5},{"n":"/3303/0/5701","vs":"Cel"}]"#
    );
    n.reply(&r, Code::CHANGED, |_| {});
    // Refusals send nothing.
    let unset = [Path::resource(3303, 0, 5900)];
    assert!(matches!(
        n.client.send(n.now, &unset),
        Err(OpError::ServiceUnavailable(_))
    ));
    assert_eq!(
        n.client.send(n.now, &[Path::object(0)]),
        Err(OpError::Unauthorized)
    );
    assert_eq!(
        n.client.send(n.now, &[Path::object(77)]),
        Err(OpError::NotFound)
    );
    assert!(n.client.send(n.now, &[]).is_err());
    let many = vec![Path::resource(3303, 0, 5700); 65];
    assert!(n.client.send(n.now, &many).is_err());
    // The server mutes Send (/1/0/23 true).
    let r = n.request(with_cf(req(RequestType::Put, "/1/0/23"), 0, b"1"));
    assert_eq!(Code::of(&r), Code::CHANGED);
    assert!(matches!(
        n.client.send(n.now, &[Path::resource(3303, 0, 5700)]),
        Err(OpError::MethodNotAllowed(_))
    ));
    // A 1.0 registration has no Send.
    n.request(with_cf(req(RequestType::Put, "/1/0/23"), 0, b"0"));
    n.client.cfg.lwm2m_version = "1.0".into();
    assert!(matches!(
        n.client.send(n.now, &[Path::resource(3303, 0, 5700)]),
        Err(OpError::MethodNotAllowed(_))
    ));
    assert!(n.flush().is_empty(), "nothing was sent");
    // An object with nothing published: nothing to send.
    n.client.cfg.lwm2m_version = "1.1".into();
    let empty = AppObject::new(
        3304,
        None,
        vec![0],
        vec![rdef(5700, Operations::Read, DataType::Float)],
    )
    .unwrap();
    n.client.add_object(n.now, Box::new(empty)).unwrap();
    assert!(matches!(
        n.client.send(n.now, &[Path::object(3304)]),
        Err(OpError::ServiceUnavailable(_))
    ));
}

/// A FETCH on the root (Read-Composite) with `body` in `cf`.
pub(super) fn fetch(n: &mut Net, cf: u16, accept: Option<u16>, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = coap_lite::MessageClass::Request(RequestType::Fetch);
    p.header.set_type(MessageType::Confirmable);
    msg::set_uint(&mut p, CoapOption::ContentFormat, cf.into());
    if let Some(a) = accept {
        msg::set_uint(&mut p, CoapOption::Accept, a.into());
    }
    p.payload = body.to_vec();
    n.request(p)
}

/// Read-Composite: T7.4.4-6/-7 with this device's paths, JSON and CBOR.
#[test]
fn read_composite_answers_every_readable_path() {
    let (mut n, app) = net_with_app();
    set(&mut n, &app, 5700, Value::Float(21.5));
    let r = fetch(
        &mut n,
        110,
        None,
        br#"[{"n":"/42/0/0"},{"n":"/3303/0"},{"n":"/1/0/1"},{"n":"/3303/0/5900"},{"n":"/77"}]"#,
    );
    assert_eq!(Code::of(&r), Code::CONTENT);
    assert_eq!(
        msg::get_uint(&r, CoapOption::ContentFormat, 2).unwrap(),
        Some(110)
    );
    // Unpublished (/3303/0/5900) and absent (/77) paths are left out.
    assert_eq!(
        String::from_utf8(r.payload).unwrap(),
        r#"[{"n":"/42/0/0","vs":"a"},{"n":"/3303/0/5700","v":21.5},{"n":"/1/0/1","v":300}]"#
    );
    // CBOR request [{0:"/1/0/1"}], CBOR answer [{0:"/1/0/1", 2:300}].
    let mut body = vec![0x81, 0xA1, 0x00, 0x66];
    body.extend_from_slice(b"/1/0/1");
    let r = fetch(&mut n, 112, Some(112), &body);
    let mut want = vec![0x81, 0xA2, 0x00, 0x66];
    want.extend_from_slice(b"/1/0/1");
    want.extend_from_slice(&[0x02, 0x19, 0x01, 0x2C]);
    assert_eq!(r.payload, want);
    let code = |n: &mut Net, cf, accept, body: &[u8]| Code::of(&fetch(n, cf, accept, body));
    let list = br#"[{"n":"/1/0/1"}]"#;
    assert_eq!(
        code(&mut n, 11542, None, list),
        Code::UNSUPPORTED_CONTENT_FORMAT
    );
    assert_eq!(code(&mut n, 110, Some(11542), list), Code::NOT_ACCEPTABLE);
    assert_eq!(code(&mut n, 110, None, b"[{"), Code::BAD_REQUEST);
    assert_eq!(
        code(&mut n, 110, None, br#"[{"n":"/0/0/3"}]"#),
        Code::UNAUTHORIZED
    );
    assert_eq!(
        code(&mut n, 110, None, br#"[{"n":"/77/0"}]"#),
        Code::NOT_FOUND
    );
    // A large answer goes block-wise (RFC 7959 with FETCH, RFC 8132 §2.3.2).
    let r = fetch(&mut n, 110, None, br#"[{"n":"/42/0/4"}]"#);
    assert_eq!(Code::of(&r), Code::CONTENT);
    assert_eq!(r.payload.len(), 1024);
    let b2 = BlockOpt::read(&r, CoapOption::Block2).unwrap().unwrap();
    assert!(b2.more && b2.num == 0);
}
