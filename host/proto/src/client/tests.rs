//! Scenario tests: a [`Client`] against a fake server built from the same
//! [`Endpoint`], joined by in-memory queues (quinn's `Pair`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet, RequestType};

use super::*;
use crate::coap::block::BlockOpt;
use crate::model::DataType;
use crate::object::{Operations, ResourceDef};

mod app;
mod composite;
mod composite_atomic;
mod handshake;

const RES: &[ResourceDef] = &[
    ResourceDef {
        id: 0,
        name: "name",
        operations: Operations::ReadWrite,
        multiple: false,
        mandatory: true,
        data_type: DataType::String,
    },
    ResourceDef {
        id: 1,
        name: "level",
        operations: Operations::Read,
        multiple: false,
        mandatory: true,
        data_type: DataType::Integer,
    },
    ResourceDef {
        id: 2,
        name: "blob",
        operations: Operations::Write,
        multiple: false,
        mandatory: false,
        data_type: DataType::Opaque,
    },
    ResourceDef {
        id: 3,
        name: "run",
        operations: Operations::Execute,
        multiple: false,
        mandatory: false,
        data_type: DataType::None,
    },
    ResourceDef {
        id: 4,
        name: "big",
        operations: Operations::Read,
        multiple: false,
        mandatory: false,
        data_type: DataType::String,
    },
    ResourceDef {
        id: 5,
        name: "list",
        operations: Operations::ReadWrite,
        multiple: true,
        mandatory: false,
        data_type: DataType::Integer,
    },
];

/// A test object (id 42) recording what the engine asked of it; the test
/// keeps a second handle on the shared state.
#[derive(Default, Clone)]
struct Thing(Rc<RefCell<ThingState>>);

#[derive(Default)]
struct ThingState {
    instances: Vec<u16>,
    name: String,
    level: i64,
    blob: Vec<u8>,
    pieces: Vec<(u64, usize, bool)>,
    runs: Vec<Vec<u8>>,
    persist_on_write: bool,
    /// Resource reads the engine made.
    reads: usize,
    /// What `Object::generation` reports.
    generation: Option<u64>,
}

impl Thing {
    fn s(&self) -> std::cell::RefMut<'_, ThingState> {
        self.0.borrow_mut()
    }
}

impl Object for Thing {
    fn id(&self) -> u16 {
        42
    }
    fn resources(&self) -> &[ResourceDef] {
        RES
    }
    fn instances(&self) -> Vec<u16> {
        self.s().instances.clone()
    }
    fn generation(&self) -> Option<u64> {
        self.s().generation
    }
    fn read(&self, _i: u16, r: u16) -> Result<Option<ResourceValue>, OpError> {
        self.s().reads += 1;
        Ok(match r {
            0 => Some(ResourceValue::Single(Value::String(self.s().name.clone()))),
            1 => Some(ResourceValue::Single(Value::Integer(self.s().level))),
            4 => Some(ResourceValue::Single(Value::String("x".repeat(2500)))),
            5 => Some(ResourceValue::Multiple(vec![
                (0, Value::Integer(1)),
                (1, Value::Integer(5)),
            ])),
            _ => None,
        })
    }
    fn write(
        &mut self,
        _i: u16,
        r: u16,
        value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        match (r, value) {
            (0, ResourceValue::Single(Value::String(s))) => self.s().name = s,
            (5, _) => {}
            _ => return Err(OpError::BadRequest("type".into())),
        }
        Ok(if self.s().persist_on_write {
            vec![Effect::Persist]
        } else {
            vec![]
        })
    }
    fn write_block(
        &mut self,
        _i: u16,
        _r: u16,
        offset: u64,
        bytes: &[u8],
        last: bool,
    ) -> Result<Vec<Effect>, OpError> {
        if offset == 0 {
            self.s().blob.clear();
        }
        self.s().blob.extend_from_slice(bytes);
        self.s().pieces.push((offset, bytes.len(), last));
        Ok(vec![])
    }
    fn execute(&mut self, _i: u16, _r: u16, args: &[u8]) -> Result<Vec<Effect>, OpError> {
        self.s().runs.push(args.to_vec());
        Ok(vec![Effect::Persist])
    }
    fn create(
        &mut self,
        id: Option<u16>,
        _v: Vec<(u16, ResourceValue)>,
    ) -> Result<(u16, Vec<Effect>), OpError> {
        let id = id.unwrap_or_else(|| self.s().instances.iter().max().map_or(0, |m| m + 1));
        self.s().instances.push(id);
        self.s().instances.sort();
        Ok((id, vec![]))
    }
    fn delete(&mut self, i: u16) -> Result<Vec<Effect>, OpError> {
        self.s().instances.retain(|x| *x != i);
        Ok(vec![])
    }
}

fn dev() -> SocketAddr {
    "192.0.2.2:56830".parse().unwrap()
}
fn srv() -> SocketAddr {
    "192.0.2.1:5683".parse().unwrap()
}

/// Device, fake server and a shared clock.
struct Net {
    client: Client,
    thing: Thing,
    server: Endpoint,
    now: Instant,
    /// Datagrams dropped on the way to the server (to exercise timeouts).
    drop_to_server: bool,
    to_server: Vec<Packet>,
    /// Server-side events not consumed yet.
    inbox: Vec<EndpointEvent>,
    client_events: std::collections::VecDeque<Event>,
    /// Complete held responses automatically (Effects acknowledged).
    auto_complete: bool,
}

impl Net {
    fn new() -> Net {
        let cfg = Config {
            retry_base: Duration::from_secs(5),
            lifetime: 300,
            ..Config::new("node1", srv(), 42)
        };
        let thing = Thing::default();
        {
            let mut s = thing.s();
            s.instances = vec![0];
            s.name = "a".into();
            s.level = 10;
        }
        Net {
            client: Client::new(cfg, vec![Box::new(thing.clone())]),
            thing,
            server: Endpoint::new(Params::default(), 7),
            now: Instant::now(),
            drop_to_server: false,
            to_server: Vec::new(),
            inbox: Vec::new(),
            client_events: Default::default(),
            auto_complete: true,
        }
    }

    fn thing(&self) -> std::cell::RefMut<'_, ThingState> {
        self.thing.s()
    }

    /// Moves datagrams both ways until quiet; returns server events.
    fn flush(&mut self) -> Vec<EndpointEvent> {
        let mut evs = Vec::new();
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                self.to_server.push(Packet::from_bytes(&t.bytes).unwrap());
                if !self.drop_to_server {
                    self.server.handle_datagram(self.now, dev(), &t.bytes);
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                self.client.handle_datagram(self.now, srv(), &t.bytes);
            }
            while let Some(e) = self.server.poll_event() {
                evs.push(e);
            }
            if self.auto_complete {
                let mut others = Vec::new();
                while let Some(e) = self.client.poll_event() {
                    match e {
                        Event::Effects { pending, .. } => {
                            moved = true;
                            self.client.complete(self.now, pending);
                        }
                        e => others.push(e),
                    }
                }
                self.client_events.extend(others);
            }
            if !moved {
                let mut all = std::mem::take(&mut self.inbox);
                all.extend(evs);
                return all;
            }
        }
    }

    fn advance_to_next(&mut self) {
        let t = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        self.now = self.now.max(t);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// Registers with the fake server answering 2.01 /rd/5a3f.
    fn register(&mut self) {
        self.client.start(self.now);
        let evs = self.flush();
        let req = expect_request(evs);
        self.reply(&req, Code::CREATED, |p| {
            msg::add_strings(p, CoapOption::LocationPath, &["rd", "5a3f"])
        });
        assert!(matches!(self.event(), Some(Event::Registered { .. })));
    }

    fn reply(&mut self, req: &InboundRequest, code: Code, f: impl FnOnce(&mut Packet)) {
        let mut p = msg::response_to(&req.packet, code);
        f(&mut p);
        self.server.respond(self.now, req, p);
        let evs = self.flush();
        self.inbox.extend(evs);
    }

    /// The next client event (auto-completed Effects excluded).
    /// The next event other than the operation log (`Answered`).
    fn event(&mut self) -> Option<Event> {
        loop {
            let e = match self.client_events.pop_front() {
                Some(e) => Some(e),
                None => self.client.poll_event(),
            };
            if !matches!(e, Some(Event::Answered { .. })) {
                return e;
            }
        }
    }

    /// Sends a DM request and returns the response.
    fn request(&mut self, p: Packet) -> Packet {
        let id = self.server.send_request(self.now, dev(), p);
        let evs = self.flush();
        let mut found = None;
        for e in evs {
            match e {
                EndpointEvent::Response { id: i, packet } if i == id && found.is_none() => {
                    found = Some(packet)
                }
                e => self.inbox.push(e),
            }
        }
        found.expect("no response")
    }
}

fn expect_request(evs: Vec<EndpointEvent>) -> InboundRequest {
    evs.into_iter()
        .find_map(|e| match e {
            EndpointEvent::Request(r) => Some(r),
            _ => None,
        })
        .expect("a request")
}

fn req(method: RequestType, path: &str) -> Packet {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    msg::request(method, &segs)
}

fn with_cf(mut p: Packet, cf: u16, body: &[u8]) -> Packet {
    msg::set_uint(&mut p, CoapOption::ContentFormat, cf.into());
    p.payload = body.to_vec();
    p
}

#[test]
fn register_payload_update_and_deregister() {
    let mut n = Net::new();
    n.client.start(n.now);
    let r = expect_request(n.flush());
    assert_eq!(
        msg::uri_query(&r.packet).unwrap(),
        vec!["ep=node1", "lt=300", "lwm2m=1.1", "b=U"]
    );
    assert_eq!(
        String::from_utf8(r.packet.payload.clone()).unwrap(),
        "</>;rt=\"oma.lwm2m\";ct=110,</42/0>"
    );
    n.reply(&r, Code::CREATED, |p| {
        msg::add_strings(p, CoapOption::LocationPath, &["rd", "5a3f"])
    });
    assert_eq!(
        n.event(),
        Some(Event::Registered {
            location: vec!["rd".into(), "5a3f".into()]
        })
    );
    // Update falls due at lifetime - 93 s
    let t0 = n.now;
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(207));
    let u = expect_request(n.flush());
    assert_eq!(msg::uri_path(&u.packet).unwrap(), vec!["rd", "5a3f"]);
    assert!(
        u.packet.payload.is_empty(),
        "no payload when the object list is unchanged"
    );
    n.reply(&u, Code::CHANGED, |_| {});
    assert_eq!(n.event(), Some(Event::Updated));
    // Create changes the instance list -> Update with payload
    let resp = n.request(with_cf(
        req(RequestType::Post, "/42"),
        11542,
        &[0x08, 0x05, 0x03, 0xC1, 0x00, 0x62],
    ));
    assert_eq!(Code::of(&resp), Code::CREATED);
    assert_eq!(
        msg::string_list(&resp, CoapOption::LocationPath),
        vec!["42", "5"]
    );
    let u = expect_request(n.flush_pending());
    assert!(
        String::from_utf8(u.packet.payload.clone())
            .unwrap()
            .ends_with("</42/0>,</42/5>")
    );
    n.reply(&u, Code::CHANGED, |_| {});
    // De-register
    n.client.deregister(n.now);
    let d = expect_request(n.flush());
    assert_eq!(Code::of(&d.packet), Code::DELETE);
    n.reply(&d, Code::DELETED, |_| {});
    assert_eq!(n.event(), Some(Event::Updated));
    assert_eq!(n.event(), Some(Event::Deregistered));
}

/// The exact Register payload for each `register_formats` setting (reference
/// §1): one format by default (Wakaama's server answers 4.00 to a quoted
/// list), the quoted list of all on request, no root link at all for `None`.
#[test]
fn register_root_link_per_setting() {
    let cases = [
        (
            RootLinkFormats::Single,
            "</>;rt=\"oma.lwm2m\";ct=110,</42/0>",
        ),
        (
            RootLinkFormats::All,
            "</>;rt=\"oma.lwm2m\";ct=\"110 112 11542\",</42/0>",
        ),
        (RootLinkFormats::None, "</42/0>"),
    ];
    assert_eq!(
        Config::new("x", srv(), 1).register_formats,
        RootLinkFormats::Single
    );
    for (setting, payload) in cases {
        let mut n = Net::new();
        n.client.cfg.register_formats = setting;
        n.client.start(n.now);
        let r = expect_request(n.flush());
        assert_eq!(
            String::from_utf8(r.packet.payload.clone()).unwrap(),
            payload,
            "{setting:?}"
        );
        assert_eq!(
            msg::get_uint(&r.packet, CoapOption::ContentFormat, 2).unwrap(),
            Some(40)
        );
    }
    // No supported format listed at all: no root link whatever the setting.
    assert!(RootLinkFormats::Single.pick(&[]).is_empty());
}

/// A refused Register reports the server's code; a silent server, none.
#[test]
fn registration_failure_carries_the_response_code() {
    let mut n = Net::new();
    n.client.start(n.now);
    let r = expect_request(n.flush());
    n.reply(&r, Code::BAD_REQUEST, |_| {});
    assert!(matches!(
        n.event(),
        Some(Event::RegistrationFailed {
            attempt: 1,
            code: Some(Code::BAD_REQUEST),
            ..
        })
    ));
    let mut n = Net::new();
    n.drop_to_server = true;
    n.client.start(n.now);
    n.flush();
    let ev = loop {
        if let Some(e) = n.event() {
            break e;
        }
        n.advance_to_next();
        n.flush();
    };
    assert!(
        matches!(
            ev,
            Event::RegistrationFailed {
                attempt: 1,
                code: None,
                ..
            }
        ),
        "{ev:?}"
    );
}

impl Net {
    /// Server events already queued (no new traffic needed).
    fn flush_pending(&mut self) -> Vec<EndpointEvent> {
        self.flush()
    }
}

#[test]
fn update_404_re_registers_and_register_failure_backs_off() {
    let mut n = Net::new();
    n.register();
    n.client.trigger_update(n.now);
    let u = expect_request(n.flush());
    n.reply(&u, Code::NOT_FOUND, |_| {});
    let r = expect_request(n.flush());
    assert_eq!(msg::uri_path(&r.packet).unwrap(), vec!["rd"]);
    assert!(
        msg::uri_query(&r.packet)
            .unwrap()
            .contains(&"ep=node1".to_string())
    );
    // Register refused: back-off 5 s, then 10 s
    n.reply(&r, Code::FORBIDDEN, |_| {});
    assert_eq!(
        n.event(),
        Some(Event::RegistrationFailed {
            attempt: 1,
            code: Some(Code::FORBIDDEN),
            retry_in: Duration::from_secs(5)
        })
    );
    let t0 = n.now;
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(5));
    let r = expect_request(n.flush());
    n.reply(&r, Code::BAD_REQUEST, |_| {});
    assert_eq!(
        n.event(),
        Some(Event::RegistrationFailed {
            attempt: 2,
            code: Some(Code::BAD_REQUEST),
            retry_in: Duration::from_secs(10)
        })
    );
}

#[test]
fn register_timeout_after_four_retransmissions() {
    let mut n = Net::new();
    n.drop_to_server = true;
    n.client.start(n.now);
    n.flush();
    let t0 = n.now;
    while n.event().is_none() {
        n.advance_to_next();
        n.flush();
    }
    assert_eq!(n.to_server.len(), 5);
    let waited = n.now - t0;
    assert!(
        waited >= Duration::from_secs(62) && waited <= Duration::from_secs(93),
        "{waited:?}"
    );
}

#[test]
fn operations_map_to_response_codes() {
    let mut n = Net::new();
    n.register();
    let cases: Vec<(Packet, Code)> = vec![
        (req(RequestType::Get, "/42/0/0"), Code::CONTENT),
        (req(RequestType::Get, "/42/0"), Code::CONTENT),
        (req(RequestType::Get, "/42/9"), Code::NOT_FOUND),
        (req(RequestType::Get, "/43"), Code::NOT_FOUND),
        (req(RequestType::Get, "/0/0"), Code::UNAUTHORIZED),
        (req(RequestType::Get, "/42/0/2"), Code::METHOD_NOT_ALLOWED),
        (req(RequestType::Get, "/42/0/77"), Code::NOT_FOUND),
        (
            with_cf(req(RequestType::Put, "/42/0/0"), 0, b"bob"),
            Code::CHANGED,
        ),
        (
            with_cf(req(RequestType::Put, "/42/0/1"), 0, b"5"),
            Code::METHOD_NOT_ALLOWED,
        ),
        (
            with_cf(req(RequestType::Put, "/42/0/0"), 9999, b"x"),
            Code::UNSUPPORTED_CONTENT_FORMAT,
        ),
        (
            with_cf(req(RequestType::Put, "/42/0/0"), 40, b"x"),
            Code::UNSUPPORTED_CONTENT_FORMAT,
        ),
        (
            with_cf(req(RequestType::Put, "/42"), 0, b"x"),
            Code::METHOD_NOT_ALLOWED,
        ),
        (
            with_cf(req(RequestType::Put, "/42/0"), 11542, &[0xFF]),
            Code::BAD_REQUEST,
        ),
        (req(RequestType::Post, "/42/0/3"), Code::CHANGED),
        (req(RequestType::Post, "/42/0/0"), Code::METHOD_NOT_ALLOWED),
        (req(RequestType::Delete, "/42"), Code::METHOD_NOT_ALLOWED),
        (req(RequestType::Post, "/42"), Code::BAD_REQUEST),
        (req(RequestType::Post, "/42/0/1/2/3"), Code::NOT_FOUND),
    ];
    for (i, (p, code)) in cases.into_iter().enumerate() {
        let mut p = p;
        p.set_token(vec![i as u8 + 1]);
        let resp = n.request(p);
        // Execute returns Persist: its response is held until complete()
        assert_eq!(Code::of(&resp), code, "case {i}");
    }
}

#[test]
fn read_formats_accept_and_406() {
    let mut n = Net::new();
    n.register();
    let r = n.request(req(RequestType::Get, "/42/0/0"));
    assert_eq!(
        msg::get_uint(&r, CoapOption::ContentFormat, 2).unwrap(),
        Some(0)
    );
    assert_eq!(r.payload, b"a");
    let r = n.request(req(RequestType::Get, "/42/0"));
    assert_eq!(
        msg::get_uint(&r, CoapOption::ContentFormat, 2).unwrap(),
        Some(11542)
    );
    let mut p = req(RequestType::Get, "/42/0");
    msg::set_uint(&mut p, CoapOption::Accept, 0);
    assert_eq!(Code::of(&n.request(p)), Code::NOT_ACCEPTABLE);
    let mut p = req(RequestType::Get, "/42/0/1");
    msg::set_uint(&mut p, CoapOption::Accept, 110);
    let r = n.request(p);
    assert_eq!(
        String::from_utf8(r.payload).unwrap(),
        r#"[{"bn":"/42/0/1","v":10}]"#
    );
    let mut p = req(RequestType::Get, "/42/0/1");
    msg::set_uint(&mut p, CoapOption::Accept, 1234);
    assert_eq!(Code::of(&n.request(p)), Code::NOT_ACCEPTABLE);
    // Discover
    let mut p = req(RequestType::Get, "/42/0");
    msg::set_uint(&mut p, CoapOption::Accept, 40);
    let r = n.request(p);
    assert_eq!(
        String::from_utf8(r.payload).unwrap(),
        "</42/0>,</42/0/0>,</42/0/1>,</42/0/2>,</42/0/3>,</42/0/4>,</42/0/5>;dim=2"
    );
}

#[test]
fn duplicate_execute_runs_once_and_response_waits_for_persist() {
    let mut n = Net::new();
    n.register();
    let mut p = with_cf(req(RequestType::Post, "/42/0/3"), 0, b"0='v1',1");
    p.header.message_id = 0x0BAD;
    p.set_token(vec![9]);
    p.header.set_type(MessageType::Confirmable);
    let bytes = msg::encode(&p).unwrap();
    n.client.handle_datagram(n.now, srv(), &bytes);
    assert!(n.client.poll_transmit().is_none(), "held until persisted");
    let Some(Event::Effects { pending, effects }) = n.event() else {
        panic!()
    };
    assert_eq!(effects, vec![Effect::Persist]);
    n.client.handle_datagram(n.now, srv(), &bytes); // duplicate while pending: ignored
    assert!(n.client.poll_transmit().is_none());
    n.client.complete(n.now, pending);
    let first = n.client.poll_transmit().unwrap().bytes;
    assert_eq!(&first[..4], &[0x61, 0x44, 0x0B, 0xAD]);
    n.client
        .handle_datagram(n.now + Duration::from_secs(5), srv(), &bytes);
    assert_eq!(
        n.client.poll_transmit().unwrap().bytes,
        first,
        "same bytes replayed"
    );
    assert!(n.event().is_none());
    assert_eq!(n.thing().runs, vec![b"0='v1',1".to_vec()]);
}

#[test]
fn ping_gets_rst_and_garbage_changes_nothing() {
    let mut n = Net::new();
    n.register();
    n.client
        .handle_datagram(n.now, srv(), &[0x40, 0x00, 0x12, 0x34]);
    assert_eq!(
        n.client.poll_transmit().unwrap().bytes,
        vec![0x70, 0x00, 0x12, 0x34]
    );
    n.client
        .handle_datagram(n.now, srv(), &[0x43, 0x03, 0x00, 0x01, 0xFF]);
    assert_eq!(
        n.client.poll_transmit().unwrap().bytes,
        vec![0x70, 0x00, 0x00, 0x01]
    );
    n.client.handle_datagram(n.now, srv(), &[0x01, 0x02]);
    assert!(n.client.poll_transmit().is_none());
    assert!(n.event().is_none());
    assert_eq!(n.thing().name, "a");
}

fn block1_put(num: u32, more: bool, szx: u8, data: &[u8], size1: Option<u64>) -> Packet {
    let mut p = with_cf(req(RequestType::Put, "/42/0/2"), 42, data);
    BlockOpt { num, more, szx }.write(&mut p, CoapOption::Block1);
    if let Some(s) = size1 {
        msg::set_uint(&mut p, CoapOption::Size1, s);
    }
    p
}

#[test]
fn block1_push_streams_restarts_and_rejects_out_of_order() {
    let mut n = Net::new();
    n.register();
    let block = |i: u32| vec![i as u8; 1024];
    // 3 blocks, then the server restarts at NUM 0
    for i in 0..3 {
        let r = n.request(block1_put(i, true, 6, &block(i), None));
        assert_eq!(Code::of(&r), Code::CONTINUE);
        assert_eq!(
            BlockOpt::read(&r, CoapOption::Block1).unwrap(),
            Some(BlockOpt {
                num: i,
                more: true,
                szx: 6
            })
        );
    }
    let r = n.request(block1_put(5, true, 6, &block(5), None));
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_INCOMPLETE);
    for i in 0..10 {
        let last = i == 9;
        let data = if last { vec![9u8; 100] } else { block(i) };
        let r = n.request(block1_put(i, !last, 6, &data, None));
        assert_eq!(
            Code::of(&r),
            if last { Code::CHANGED } else { Code::CONTINUE },
            "block {i}"
        );
    }
    let t = n.thing();
    assert_eq!(t.blob.len(), 9 * 1024 + 100);
    assert_eq!(
        t.pieces.iter().filter(|p| p.0 == 0).count(),
        2,
        "restarted once"
    );
    assert_eq!(t.pieces.last(), Some(&(9216, 100, true)));
}

#[test]
fn block1_too_large_and_late_negotiation() {
    let mut n = Net::new();
    n.client.cfg.push_limit = Some(4096);
    n.client.cfg.max_szx = 5;
    n.register();
    let r = n.request(block1_put(0, true, 6, &[0; 1024], Some(10_000)));
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(msg::get_uint(&r, CoapOption::Size1, 4).unwrap(), Some(4096));
    let r = n.request(block1_put(0, true, 6, &[0; 1024], Some(2000)));
    assert_eq!(
        BlockOpt::read(&r, CoapOption::Block1).unwrap(),
        Some(BlockOpt {
            num: 0,
            more: true,
            szx: 5
        })
    );
    let r = n.request(block1_put(2, false, 5, &[1; 10], None));
    assert_eq!(Code::of(&r), Code::CHANGED);
    assert_eq!(n.thing().blob.len(), 1034);
}

/// RFC 7959 §2.9.3 without Size1 announced: the block that would pass the
/// limit gets 4.13 with Size1 = the limit, and the transfer is over.
#[test]
fn block1_past_the_limit_without_size1_is_4_13() {
    let mut n = Net::new();
    n.client.cfg.push_limit = Some(4096);
    n.register();
    for i in 0..4 {
        let r = n.request(block1_put(i, true, 6, &[7; 1024], None));
        assert_eq!(Code::of(&r), Code::CONTINUE, "block {i}");
    }
    let r = n.request(block1_put(4, true, 6, &[7; 1024], None));
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(msg::get_uint(&r, CoapOption::Size1, 4).unwrap(), Some(4096));
    // The sequence is gone: a following block is incomplete, not stored.
    let r = n.request(block1_put(5, false, 6, &[7; 10], None));
    assert_eq!(Code::of(&r), Code::REQUEST_ENTITY_INCOMPLETE);
    assert!(n.thing().pieces.iter().all(|p| p.0 + p.1 as u64 <= 4096));
}

#[test]
fn block1_assembled_text_write() {
    let mut n = Net::new();
    n.register();
    let body = "y".repeat(40);
    for (i, chunk) in body.as_bytes().chunks(16).enumerate() {
        let last = i == 2;
        let mut p = with_cf(req(RequestType::Put, "/42/0/0"), 0, chunk);
        BlockOpt {
            num: i as u32,
            more: !last,
            szx: 0,
        }
        .write(&mut p, CoapOption::Block1);
        let r = n.request(p);
        assert_eq!(
            Code::of(&r),
            if last { Code::CHANGED } else { Code::CONTINUE }
        );
    }
    assert_eq!(n.thing().name, body);
}

#[test]
fn block2_read_of_large_payload() {
    let mut n = Net::new();
    n.register();
    let mut got = Vec::new();
    let mut num = 0;
    loop {
        let mut p = req(RequestType::Get, "/42/0/4");
        if num > 0 {
            BlockOpt {
                num,
                more: false,
                szx: 6,
            }
            .write(&mut p, CoapOption::Block2);
        }
        let r = n.request(p);
        let opt = BlockOpt::read(&r, CoapOption::Block2).unwrap().unwrap();
        assert_eq!(opt.num, num);
        got.extend_from_slice(&r.payload);
        if !opt.more {
            break;
        }
        num += 1;
    }
    assert_eq!(got, "x".repeat(2500).into_bytes());
    assert_eq!(num, 2);
}

/// Reads /42/0 block by block; returns the body, the ETag of each block and
/// the Answered events' continuation flags.
fn read_blocks(n: &mut Net, path: &str) -> (Vec<u8>, Vec<Vec<u8>>, Vec<bool>) {
    let (mut body, mut etags) = (Vec::new(), Vec::new());
    let mut num = 0;
    loop {
        let mut p = req(RequestType::Get, path);
        if num > 0 {
            BlockOpt {
                num,
                more: false,
                szx: 6,
            }
            .write(&mut p, CoapOption::Block2);
        }
        let r = n.request(p);
        assert_eq!(Code::of(&r), Code::CONTENT);
        let opt = BlockOpt::read(&r, CoapOption::Block2).unwrap().unwrap();
        assert_eq!(opt.num, num);
        etags.push(r.get_first_option(CoapOption::ETag).unwrap().clone());
        body.extend_from_slice(&r.payload);
        if !opt.more {
            break;
        }
        num += 1;
        // Something the engine is not told about changes between blocks.
        n.thing().level += 1;
    }
    let mut continuation = Vec::new();
    while let Some(e) = n.client_events.pop_front() {
        if let Event::Answered {
            continuation: c, ..
        } = e
        {
            continuation.push(c);
        }
    }
    while let Some(e) = n.client.poll_event() {
        if let Event::Answered {
            continuation: c, ..
        } = e
        {
            continuation.push(c);
        }
    }
    (body, etags, continuation)
}

#[test]
fn block2_follow_ups_are_sliced_from_the_first_blocks_body() {
    let mut n = Net::new();
    n.register();
    n.thing().name = "one".into();
    let level = n.thing().level;
    let reads_before = n.thing().reads;
    let (body, etags, continuation) = read_blocks(&mut n, "/42/0");
    // One read of the object for the three blocks, one representation.
    assert_eq!(etags.len(), 3);
    assert!(etags.iter().all(|e| *e == etags[0]), "{etags:?}");
    assert_eq!(continuation, vec![false, true, true]);
    let reads_per_body = n.thing().reads - reads_before;
    assert!(reads_per_body > 0);
    // The body is the instance as it was when block 0 was read.
    let node = crate::codec::decode(
        &body,
        Path::instance(42, 0),
        ContentFormat::Tlv,
        &|p: Path| match p.resource {
            Some(0 | 4) => Some(DataType::String),
            Some(1 | 5) => Some(DataType::Integer),
            _ => None,
        },
    )
    .unwrap();
    let crate::model::Node::Instance { resources, .. } = node else {
        panic!("an instance")
    };
    assert!(
        resources.contains(&(1, ResourceValue::Single(Value::Integer(level)))),
        "{resources:?}"
    );
    // A new read starts from the objects: it shows the level reached since.
    let reads_before = n.thing().reads;
    let (_, etags2, _) = read_blocks(&mut n, "/42/0");
    assert_eq!(n.thing().reads - reads_before, reads_per_body);
    assert_ne!(etags2[0], etags[0]);
    // A write in between drops the kept body: the follow-up reads afresh.
    let mut first = req(RequestType::Get, "/42/0");
    first.set_token(b"a".to_vec());
    n.request(first);
    let w = n.request(with_cf(req(RequestType::Put, "/42/0/0"), 0, b"two"));
    assert_eq!(Code::of(&w), Code::CHANGED);
    let reads_before = n.thing().reads;
    let mut next = req(RequestType::Get, "/42/0");
    BlockOpt {
        num: 1,
        more: false,
        szx: 6,
    }
    .write(&mut next, CoapOption::Block2);
    n.request(next);
    assert_eq!(n.thing().reads - reads_before, reads_per_body);
}

#[test]
fn repeated_reads_of_an_unchanged_generation_reuse_the_encoded_body() {
    let mut n = Net::new();
    n.register();
    let read = |n: &mut Net, token: &[u8]| {
        let mut p = req(RequestType::Get, "/42/0/0");
        p.set_token(token.to_vec());
        let r = n.request(p);
        assert_eq!(Code::of(&r), Code::CONTENT);
        assert_eq!(r.get_token(), token);
        r.payload
    };
    // No generation: every Read reads the object.
    n.thing().name = "a".into();
    let before = n.thing().reads;
    read(&mut n, b"1");
    read(&mut n, b"2");
    assert_eq!(n.thing().reads - before, 2);
    // A generation: the second Read at the same generation reads nothing.
    n.thing().generation = Some(7);
    let before = n.thing().reads;
    assert_eq!(read(&mut n, b"3"), b"a");
    assert_eq!(read(&mut n, b"4"), b"a");
    assert_eq!(n.thing().reads - before, 1);
    // Another format is another body.
    let mut p = req(RequestType::Get, "/42/0/0");
    msg::set_uint(&mut p, CoapOption::Accept, 11542);
    n.request(p);
    assert_eq!(n.thing().reads - before, 2);
    // The object changes (and says so): the next Read reads it again.
    n.thing().name = "b".into();
    n.thing().generation = Some(8);
    assert_eq!(read(&mut n, b"5"), b"b");
    assert_eq!(n.thing().reads - before, 3);
    // An Observe registration always reads the object.
    let mut p = req(RequestType::Get, "/42/0/0");
    msg::set_uint(&mut p, CoapOption::Observe, 0);
    n.request(p);
    assert!(n.thing().reads - before > 3);
}

#[test]
fn observe_notify_pmin_pmax_and_cancel() {
    let mut n = Net::new();
    n.register();
    let attrs = msg::request(RequestType::Put, &["42", "0", "1"]);
    let mut attrs = attrs;
    msg::add_strings(
        &mut attrs,
        CoapOption::UriQuery,
        &["pmin=10", "pmax=60", "gt=50"],
    );
    assert_eq!(Code::of(&n.request(attrs)), Code::CHANGED);
    let mut obs = req(RequestType::Get, "/42/0/1");
    obs.set_token(vec![1, 2]);
    msg::set_uint(&mut obs, CoapOption::Observe, 0);
    let id = n.server.send_request(n.now, dev(), obs);
    let first = n.flush().into_iter().find_map(|e| match e {
        EndpointEvent::Response { packet, .. } => Some(packet),
        _ => None,
    });
    let first = first.unwrap();
    assert!(
        msg::get_uint(&first, CoapOption::Observe, 3)
            .unwrap()
            .unwrap()
            >= 1
    );
    let t0 = n.now;
    // 45: no crossing of gt=50 -> nothing before pmax
    n.thing().level = 45;
    n.client
        .resources_changed(n.now, &[Path::resource(42, 0, 1)]);
    assert!(n.flush().is_empty());
    n.thing().level = 55;
    n.now += Duration::from_secs(2);
    n.client
        .resources_changed(n.now, &[Path::resource(42, 0, 1)]);
    assert!(n.flush().is_empty(), "pmin holds it back");
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(10));
    let ev = n.flush();
    let note = ev.iter().find_map(|e| match e {
        EndpointEvent::Response { id: i, packet } if *i == id => Some(packet.clone()),
        _ => None,
    });
    let note = note.expect("notification");
    assert_eq!(note.payload, b"55");
    assert_eq!(msg::type_of(&note), MessageType::NonConfirmable);
    // pmax: another notification 60 s later with no change
    n.advance_to_next();
    assert_eq!(n.now - t0, Duration::from_secs(70));
    assert_eq!(n.flush().len(), 1);
    // cancel by RST: the server forgets the token and rejects the next notification
    n.server.cancel(n.now, id);
    n.advance_to_next();
    n.flush();
    assert_eq!(n.client.observers.len(), 0, "RST cancelled the observation");
    // cancel by GET Observe=1
    let mut obs = req(RequestType::Get, "/42/0/0");
    obs.set_token(vec![3]);
    msg::set_uint(&mut obs, CoapOption::Observe, 0);
    n.server.send_request(n.now, dev(), obs);
    n.flush();
    assert_eq!(n.client.observers.len(), 1);
    let mut cancel = req(RequestType::Get, "/42/0/0");
    cancel.set_token(vec![3]);
    msg::set_uint(&mut cancel, CoapOption::Observe, 1);
    let r = n.request(cancel);
    assert_eq!(Code::of(&r), Code::CONTENT);
    assert!(r.get_first_option(CoapOption::Observe).is_none());
    assert_eq!(n.client.observers.len(), 0);
}

#[test]
fn download_over_block2_with_resume() {
    let mut n = Net::new();
    n.register();
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let id = n
        .client
        .start_download(n.now, srv(), vec!["pkg".into()], vec![], 1, None);
    let mut received = Vec::new();
    loop {
        let evs = n.flush();
        let Some(r) = evs.into_iter().find_map(|e| match e {
            EndpointEvent::Request(r) => Some(r),
            _ => None,
        }) else {
            break;
        };
        let b2 = BlockOpt::read(&r.packet, CoapOption::Block2)
            .unwrap()
            .unwrap();
        let slice = block::block2_slice(&body, Some(b2), 6).unwrap().unwrap();
        let (bytes, opt) = (slice.bytes.to_vec(), slice.opt);
        n.reply(&r, Code::CONTENT, |p| {
            p.add_option(CoapOption::ETag, vec![1]);
            opt.write(p, CoapOption::Block2);
            p.payload = bytes;
        });
        while let Some(e) = n.event() {
            if let Event::DownloadData {
                id: i,
                offset,
                bytes,
                more,
                etag,
            } = e
            {
                assert_eq!(i, id);
                assert_eq!(etag, Some(vec![1]), "the ETag goes with every piece");
                received.push((offset, bytes.len(), more));
            }
        }
    }
    assert_eq!(received, vec![(1024, 1024, true), (2048, 952, false)]);
}

#[test]
fn requests_from_anyone_but_the_server_are_dropped_unanswered() {
    let mut n = Net::new();
    n.register();
    let stranger: SocketAddr = "192.0.2.66:5683".parse().unwrap();
    // A valid Execute, a Write and a ping, each from the right port of the
    // wrong host and from the wrong port of the right host.
    let mut exec = with_cf(req(RequestType::Post, "/42/0/3"), 0, b"0='evil'");
    exec.header.set_type(MessageType::Confirmable);
    let mut write = with_cf(req(RequestType::Put, "/42/0/1"), 0, b"evil");
    write.header.set_type(MessageType::Confirmable);
    let ping = vec![0x40, 0x00, 0x12, 0x34];
    let other_port: SocketAddr = "192.0.2.1:5684".parse().unwrap();
    for from in [stranger, other_port] {
        for bytes in [
            msg::encode(&exec).unwrap(),
            msg::encode(&write).unwrap(),
            ping.clone(),
        ] {
            n.client.handle_datagram(n.now, from, &bytes);
            assert!(n.client.poll_transmit().is_none(), "answered {from}");
        }
    }
    assert!(n.event().is_none());
    assert_eq!(n.client.foreign_requests_dropped(), 6);
    assert!(n.thing().runs.is_empty());
    assert_eq!(n.thing().name, "a");
    // The same Execute from the server runs.
    n.client
        .handle_datagram(n.now, srv(), &msg::encode(&exec).unwrap());
    assert!(matches!(n.event(), Some(Event::Effects { .. })));
}

#[test]
fn a_re_observe_of_the_same_path_replaces_the_old_observation() {
    let mut n = Net::new();
    n.register();
    let observe = |token: u32, path: &str| {
        let mut p = req(RequestType::Get, path);
        p.set_token(token.to_be_bytes().to_vec());
        msg::set_uint(&mut p, CoapOption::Observe, 0);
        p
    };
    // 2,000 observes of the same two paths under new tokens: two observations.
    for t in 0..2_000u32 {
        let path = if t % 2 == 0 { "/42/0/0" } else { "/42/0/1" };
        let r = n.request(observe(t, path));
        assert!(r.get_first_option(CoapOption::Observe).is_some());
    }
    assert_eq!(n.client.observers.len(), 2);
    // One change sends one notification, not one per observe request.
    n.thing().level += 1;
    n.client
        .resources_changed(n.now, &[Path::resource(42, 0, 1)]);
    let notes = n
        .flush()
        .into_iter()
        .filter(|e| matches!(e, EndpointEvent::Response { .. }))
        .count();
    assert_eq!(notes, 1);
}

#[test]
fn block1_transfers_are_capped_and_expire() {
    use crate::client::MAX_BLOCK1_TRANSFERS;
    let mut n = Net::new();
    n.register();
    let first_block = |path: &str| {
        let mut p = with_cf(req(RequestType::Put, path), 0, &[b'x'; 64]);
        BlockOpt {
            num: 0,
            more: true,
            szx: 2,
        }
        .write(&mut p, CoapOption::Block1);
        p
    };
    // 800 paths, one unfinished upload each (what a hostile peer left).
    let mut codes = Vec::new();
    for i in 0..800 {
        let r = n.request(first_block(&format!("/42/0/{}", 100 + i)));
        codes.push(Code::of(&r));
    }
    let continued = codes.iter().filter(|c| **c == Code::CONTINUE).count();
    assert_eq!(continued, MAX_BLOCK1_TRANSFERS, "{codes:?}");
    assert!(
        codes[MAX_BLOCK1_TRANSFERS..]
            .iter()
            .all(|c| *c == Code::SERVICE_UNAVAILABLE)
    );
    // After EXCHANGE_LIFETIME they are gone: a continuation is 4.08 and a
    // new transfer is accepted again.
    n.now += n.client.endpoint_mut().params().exchange_lifetime + Duration::from_secs(1);
    let mut next = with_cf(req(RequestType::Put, "/42/0/100"), 0, &[b'x'; 64]);
    BlockOpt {
        num: 1,
        more: true,
        szx: 2,
    }
    .write(&mut next, CoapOption::Block1);
    assert_eq!(Code::of(&n.request(next)), Code::REQUEST_ENTITY_INCOMPLETE);
    assert_eq!(
        Code::of(&n.request(first_block("/42/0/999"))),
        Code::CONTINUE
    );
}

/// A device with Object 9 (instance 0 INSTALLED, inactive) besides the test object.
fn net_with_swmgmt() -> Net {
    use crate::swmgmt::{Installed, SoftwareManagement, SwMgmtConfig, res};
    let mut sm = SoftwareManagement::new(SwMgmtConfig::default());
    sm.create(Some(0), vec![]).unwrap();
    sm.write(
        0,
        res::PACKAGE_URI,
        ResourceValue::Single(Value::String("http://files.example/app.wdm".into())),
        true,
    )
    .unwrap();
    sm.package_written(0).unwrap();
    sm.integrity_checked(0, Ok(("app".into(), "1.0".into())))
        .unwrap();
    sm.execute(0, res::INSTALL, b"").unwrap();
    sm.install_finished(
        0,
        Ok(Installed {
            name: "app".into(),
            version: "1.0".into(),
            components: vec![],
            active: false,
        }),
    )
    .unwrap();
    sm.take_changed();
    let mut n = Net::new();
    let cfg = Config {
        retry_base: Duration::from_secs(5),
        lifetime: 300,
        ..Config::new("node1", srv(), 42)
    };
    n.client = Client::new(cfg, vec![Box::new(n.thing.clone()), Box::new(sm)]);
    n
}

/// SwMgmt §5.2: the activation machine moves on the Execute, so Activation
/// State (/9/0/12) reads the new value as soon as the 2.04 is out, before
/// the runtime reports the software started (here: never), and an observer
/// of /9/0/12 is notified of it.
#[test]
fn activation_state_is_visible_with_the_execute_answer() {
    let mut n = net_with_swmgmt();
    n.register();
    let read_a = |n: &mut Net| {
        let mut p = req(RequestType::Get, "/9/0/12");
        msg::set_uint(&mut p, CoapOption::Accept, 0);
        let r = n.request(p);
        assert_eq!(Code::of(&r), Code::CONTENT);
        r.payload
    };
    assert_eq!(read_a(&mut n), b"0");
    let mut obs = req(RequestType::Get, "/9/0/12");
    obs.set_token(vec![9]);
    msg::set_uint(&mut obs, CoapOption::Accept, 0);
    msg::set_uint(&mut obs, CoapOption::Observe, 0);
    assert_eq!(n.request(obs).payload, b"0");
    // Activate: 2.04 once the effects (Persist, Activate) are carried out.
    let r = n.request(req(RequestType::Post, "/9/0/10"));
    assert_eq!(Code::of(&r), Code::CHANGED);
    assert_eq!(read_a(&mut n), b"1", "read right after the 2.04");
    let notes: Vec<Packet> = std::mem::take(&mut n.inbox)
        .into_iter()
        .filter_map(|e| match e {
            EndpointEvent::Response { packet, .. } if packet.get_token() == [9] => Some(packet),
            _ => None,
        })
        .collect();
    assert_eq!(
        notes.last().map(|p| p.payload.clone()),
        Some(b"1".to_vec()),
        "observer notified"
    );
    // Deactivate likewise.
    let r = n.request(req(RequestType::Post, "/9/0/11"));
    assert_eq!(Code::of(&r), Code::CHANGED);
    assert_eq!(read_a(&mut n), b"0");
}

/// GETs blocks `from..` of `path` (no Observe) at `szx` in format `cf`;
/// returns the bytes and each block's ETag.
fn fetch_blocks(n: &mut Net, path: &str, cf: u16, szx: u8, from: u32) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (mut body, mut etags) = (Vec::new(), Vec::new());
    let mut num = from;
    loop {
        let mut p = req(RequestType::Get, path);
        msg::set_uint(&mut p, CoapOption::Accept, cf.into());
        BlockOpt {
            num,
            more: false,
            szx,
        }
        .write(&mut p, CoapOption::Block2);
        let r = n.request(p);
        assert_eq!(Code::of(&r), Code::CONTENT);
        assert!(r.get_first_option(CoapOption::Observe).is_none());
        let opt = BlockOpt::read(&r, CoapOption::Block2).unwrap().unwrap();
        assert_eq!((opt.num, opt.szx), (num, szx));
        assert!(r.payload.len() as u64 <= block::szx_size(szx));
        etags.push(r.get_first_option(CoapOption::ETag).unwrap().clone());
        body.extend_from_slice(&r.payload);
        if !opt.more {
            return (body, etags);
        }
        num += 1;
    }
}

/// The name (/42/0/0) in a body of /42/0 in `format`.
fn name_in(body: &[u8], format: ContentFormat) -> String {
    let node = crate::codec::decode(
        body,
        Path::instance(42, 0),
        format,
        &|p: Path| match p.resource {
            Some(0 | 4) => Some(DataType::String),
            Some(1 | 5) => Some(DataType::Integer),
            _ => None,
        },
    )
    .unwrap_or_else(|e| panic!("{format:?}: {e}"));
    let crate::model::Node::Instance { resources, .. } = node else {
        panic!("an instance")
    };
    resources
        .into_iter()
        .find_map(|(id, v)| match (id, v) {
            (0, ResourceValue::Single(Value::String(s))) => Some(s),
            _ => None,
        })
        .expect("name")
}

/// RFC 7959 §2.4/§2.6 with RFC 7641: an observer that asked for small blocks
/// (16 and 64 bytes) gets the first answer and every notification larger
/// than that as block 0 (M=1) at its size, and the rest by GETs with Block2,
/// reassembling to the whole representation (TLV, SenML JSON, SenML CBOR).
#[test]
fn notifications_follow_the_observers_block_size() {
    for format in [
        ContentFormat::Tlv,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
    ] {
        for szx in [0u8, 2] {
            let cf = format.code();
            let mut n = Net::new();
            n.register();
            let mut obs = req(RequestType::Get, "/42/0");
            obs.set_token(vec![7]);
            msg::set_uint(&mut obs, CoapOption::Accept, cf.into());
            msg::set_uint(&mut obs, CoapOption::Observe, 0);
            BlockOpt {
                num: 0,
                more: false,
                szx,
            }
            .write(&mut obs, CoapOption::Block2);
            let first = n.request(obs);
            assert!(first.get_first_option(CoapOption::Observe).is_some());
            let b = BlockOpt::read(&first, CoapOption::Block2).unwrap().unwrap();
            assert_eq!((b.num, b.more, b.szx), (0, true, szx), "{format:?}");
            let (rest, _) = fetch_blocks(&mut n, "/42/0", cf, szx, 1);
            let mut body = first.payload.clone();
            body.extend_from_slice(&rest);
            assert_eq!(name_in(&body, format), "a");

            // A change: the notification is block 0 at the observer's size.
            n.thing().name = "changed".into();
            n.client
                .resources_changed(n.now, &[Path::resource(42, 0, 0)]);
            let notes: Vec<Packet> = n
                .flush()
                .into_iter()
                .filter_map(|e| match e {
                    EndpointEvent::Response { packet, .. } if packet.get_token() == [7] => {
                        Some(packet)
                    }
                    _ => None,
                })
                .collect();
            let [note] = notes.as_slice() else {
                panic!("{format:?} szx {szx}: one notification, got {notes:?}")
            };
            assert!(note.get_first_option(CoapOption::Observe).is_some());
            assert_eq!(
                msg::get_uint(note, CoapOption::ContentFormat, 2).unwrap(),
                Some(cf.into())
            );
            let b = BlockOpt::read(note, CoapOption::Block2).unwrap().unwrap();
            assert_eq!((b.num, b.more, b.szx), (0, true, szx), "{format:?}");
            assert_eq!(note.payload.len() as u64, block::szx_size(szx));
            let etag = note.get_first_option(CoapOption::ETag).unwrap().clone();
            let size2 = msg::get_uint(note, CoapOption::Size2, 4).unwrap().unwrap();
            // The rest by plain GETs with Block2, from the same body.
            let (rest, etags) = fetch_blocks(&mut n, "/42/0", cf, szx, 1);
            assert!(etags.iter().all(|e| *e == etag), "{format:?} szx {szx}");
            let mut body = note.payload.clone();
            body.extend_from_slice(&rest);
            assert_eq!(body.len() as u64, size2);
            assert_eq!(name_in(&body, format), "changed");
        }
    }
}

/// Without a Block2 option in the Observe request, a notification that fits
/// one message goes out whole, with no Block2.
#[test]
fn small_notifications_without_block2_stay_whole() {
    let mut n = Net::new();
    n.register();
    let mut obs = req(RequestType::Get, "/42/0/0");
    obs.set_token(vec![8]);
    msg::set_uint(&mut obs, CoapOption::Observe, 0);
    n.request(obs);
    n.thing().name = "b".into();
    n.client
        .resources_changed(n.now, &[Path::resource(42, 0, 0)]);
    let note = n
        .flush()
        .into_iter()
        .find_map(|e| match e {
            EndpointEvent::Response { packet, .. } if packet.get_token() == [8] => Some(packet),
            _ => None,
        })
        .expect("notification");
    assert_eq!(note.payload, b"b");
    assert!(note.get_first_option(CoapOption::Block2).is_none());
}

/// De-register without a registration sends nothing and says so
/// (`StoppedUnregistered`, not `Deregistered`): before any Register, and
/// with a Register still unanswered (cancelled, no DELETE).
#[test]
fn deregister_without_a_registration_sends_nothing() {
    let mut n = Net::new();
    n.client.deregister(n.now);
    assert!(n.flush().is_empty());
    assert!(n.to_server.is_empty());
    assert_eq!(n.event(), Some(Event::StoppedUnregistered));

    let mut n = Net::new();
    n.drop_to_server = true;
    n.client.start(n.now);
    n.flush();
    assert_eq!(n.to_server.len(), 1);
    n.client.deregister(n.now);
    n.flush();
    assert_eq!(n.to_server.len(), 1, "no DELETE: {:?}", n.to_server);
    assert_eq!(n.event(), Some(Event::StoppedUnregistered));
    assert_eq!(n.event(), None);
}
