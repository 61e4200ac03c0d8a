//! Observe-Composite and Write-Composite from an independent CoAP peer:
//! aiocoap (PyPI) plays the LwM2M server over loopback UDP and sends a
//! FETCH `/` with Observe 0 (SenML CBOR path list), receives the first
//! answer and a notification after a value changed, then an iPATCH `/`
//! (SenML JSON), then a FETCH and an iPATCH whose bodies aiocoap sends
//! block-wise (Block1, RFC 8132 §2.1 / RFC 7959 §2.5), and last a FETCH
//! whose answer comes block-wise (Block2). The sans-IO client is driven by
//! a minimal socket loop.
//! Skips with a note when python3 has no aiocoap (scripts/test.sh installs it).

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wasmdm_proto::client::{Client, Config, Event};
use wasmdm_proto::model::{DataType, Path, ResourceValue, Value};
use wasmdm_proto::object::{Effect, Object, OpError, Operations, ResourceDef};

const RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        id: 5700,
        name: "Sensor Value",
        operations: Operations::Read,
        multiple: false,
        mandatory: true,
        data_type: DataType::Float,
    },
    ResourceDef {
        id: 5900,
        name: "Setpoint",
        operations: Operations::ReadWrite,
        multiple: false,
        mandatory: false,
        data_type: DataType::Float,
    },
];

/// 3303/0 with a sensor value and a writable setpoint, shared with the test.
#[derive(Clone)]
struct Temperature(Rc<RefCell<(f64, f64)>>);

impl Object for Temperature {
    fn id(&self) -> u16 {
        3303
    }
    fn resources(&self) -> &[ResourceDef] {
        RESOURCES
    }
    fn instances(&self) -> Vec<u16> {
        vec![0]
    }
    fn read(&self, _i: u16, r: u16) -> Result<Option<ResourceValue>, OpError> {
        let (value, setpoint) = *self.0.borrow();
        Ok(match r {
            5700 => Some(ResourceValue::Single(Value::Float(value))),
            5900 => Some(ResourceValue::Single(Value::Float(setpoint))),
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
            (5900, ResourceValue::Single(Value::Float(f))) => self.0.borrow_mut().1 = f,
            _ => return Err(OpError::BadRequest("type".into())),
        }
        Ok(Vec::new())
    }
    fn execute(&mut self, _i: u16, _r: u16, _args: &[u8]) -> Result<Vec<Effect>, OpError> {
        Err(OpError::MethodNotAllowed("no executable resource"))
    }
}

const PEER: &str = r#"
import asyncio, sys, json
import aiocoap, aiocoap.resource, warnings
from aiocoap import Message, Code
from aiocoap.optiontypes import BlockOption
warnings.simplefilter('ignore', DeprecationWarning)

def say(**kw):
    print(json.dumps(kw), flush=True)

async def main():
    dev, port = int(sys.argv[1]), int(sys.argv[2])
    ctx = await aiocoap.Context.create_server_context(aiocoap.resource.Site(), bind=('127.0.0.1', port))
    uri = 'coap://127.0.0.1:%d/' % dev
    paths = bytes([0x82, 0xA1, 0x00, 0x6C]) + b'/3303/0/5700' + bytes([0xA1, 0x00, 0x6C]) + b'/3303/0/5900'
    pr = ctx.request(Message(code=Code.FETCH, uri=uri, observe=0, payload=paths, content_format=112))
    first = await asyncio.wait_for(pr.response, 30)
    say(step='first', code=str(first.code), observe=first.opt.observe, payload=first.payload.hex())
    it = pr.observation.__aiter__()
    note = await asyncio.wait_for(it.__anext__(), 30)
    say(step='note', code=str(note.code), payload=note.payload.hex())
    pr.observation.cancel()
    body = b'[{"n":"/3303/0/5900","v":18.5}]'
    r = await asyncio.wait_for(ctx.request(Message(code=Code.iPATCH, uri=uri, payload=body, content_format=110)).response, 30)
    say(step='patch', code=str(r.code))
    bad = b'[{"n":"/3303/0/5900","v":1},{"n":"/3303/0/5700","v":2}]'
    r = await asyncio.wait_for(ctx.request(Message(code=Code.iPATCH, uri=uri, payload=bad, content_format=110)).response, 30)
    say(step='bad', code=str(r.code))
    # Bodies over one 64-byte block: aiocoap sends them with Block1 (its
    # managed block-wise transfer, SZX 2), the device reassembles.
    small = BlockOption.BlockwiseTuple(0, False, 2)
    names = b'[' + b','.join([b'{"n":"/3303/1/5700"}'] * 9 + [b'{"n":"/3303/0/5900"}']) + b']'
    m = Message(code=Code.FETCH, uri=uri, payload=names, content_format=110)
    m.opt.block1 = small
    r = await asyncio.wait_for(ctx.request(m).response, 30)
    say(step='bigfetch', code=str(r.code), payload=r.payload.decode())
    records = b'[' + b','.join([b'{"n":"/3303/0/5900","v":1}'] * 9 + [b'{"n":"/3303/0/5900","v":17.25}']) + b']'
    m = Message(code=Code.iPATCH, uri=uri, payload=records, content_format=110)
    m.opt.block1 = small
    r = await asyncio.wait_for(ctx.request(m).response, 30)
    say(step='bigpatch', code=str(r.code), len=len(records))
    # An answer over one block (1024 bytes): aiocoap fetches the rest with
    # Block2 follow-ups that carry no payload.
    names = b'[' + b','.join([b'{"n":"/3303/0/5700"}'] * 40) + b']'
    r = await asyncio.wait_for(ctx.request(Message(code=Code.FETCH, uri=uri, payload=names, content_format=110)).response, 30)
    say(step='bigread', code=str(r.code), payload=r.payload.decode())
    await ctx.shutdown()

asyncio.run(main())
"#;

fn have_aiocoap() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiocoap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 with aiocoap is not installed (scripts/test.sh installs it)");
    }
    ok
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SenML CBOR `[{0: "/3303/0/5700", 2: v}, {0: "/3303/0/5900", 2: 20.0}]`
/// with `v` a half float given by its two bytes.
fn answer(half: [u8; 2]) -> String {
    let mut want = vec![0x82, 0xA2, 0x00, 0x6C];
    want.extend_from_slice(b"/3303/0/5700");
    want.extend_from_slice(&[0x02, 0xF9, half[0], half[1], 0xA2, 0x00, 0x6C]);
    want.extend_from_slice(b"/3303/0/5900");
    want.extend_from_slice(&[0x02, 0xF9, 0x4D, 0x00]);
    hex(&want)
}

#[test]
fn aiocoap_observes_and_writes_composite() {
    if !have_aiocoap() {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server: SocketAddr = ([127, 0, 0, 1], server_port).into();
    let state = Temperature(Rc::new(RefCell::new((21.5, 20.0))));
    let mut client = Client::new(
        Config::new("interop", server, 7),
        vec![Box::new(state.clone())],
    );
    let mut child = Command::new("python3")
        .args(["-c", PEER])
        .arg(sock.local_addr().unwrap().port().to_string())
        .arg(server_port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let mut buf = [0u8; 2048];
    // 2.31 Continue answers: Block1 blocks before the last.
    let mut continues = 0;
    while lines.len() < 7 && Instant::now() < deadline {
        let now = Instant::now();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            client.handle_datagram(Instant::now(), from, &buf[..n]);
        }
        client.handle_timeout(Instant::now());
        while let Some(t) = client.poll_transmit() {
            sock.send_to(&t.bytes, t.to).unwrap();
        }
        while let Some(e) = client.poll_event() {
            match e {
                Event::Effects { pending, .. } => client.complete(now, pending),
                Event::Answered {
                    code,
                    continuation: true,
                    ..
                } if code == "2.31" => continues += 1,
                _ => {}
            }
        }
        while let Ok(line) = rx.try_recv() {
            let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
            // The setpoint as the peer's step left it.
            v["setpoint"] = state.0.borrow().1.into();
            if v["step"] == "first" {
                // The observer is in: change one path.
                state.0.borrow_mut().0 = 22.5;
                client.resources_changed(Instant::now(), &[Path::resource(3303, 0, 5700)]);
            }
            lines.push(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 7, "peer steps: {lines:?}");
    assert_eq!(lines[0]["code"], "2.05 Content");
    assert!(lines[0]["observe"].is_u64(), "registered: {:?}", lines[0]);
    assert_eq!(lines[0]["payload"], answer([0x4D, 0x60]));
    assert_eq!(lines[1]["payload"], answer([0x4D, 0xA0]));
    assert_eq!(lines[2]["code"], "2.04 Changed");
    assert_eq!(lines[2]["setpoint"], 18.5);
    assert_eq!(lines[3]["code"], "4.05 Method Not Allowed");
    assert_eq!(
        lines[3]["setpoint"], 18.5,
        "a refused Write-Composite wrote nothing"
    );
    // Block1 FETCH: the absent /3303/1 paths are left out.
    assert_eq!(lines[4]["code"], "2.05 Content");
    assert_eq!(lines[4]["payload"], r#"[{"n":"/3303/0/5900","v":18.5}]"#);
    // Block1 iPATCH of 10 records (over 64 bytes): all applied, in order.
    assert_eq!(lines[5]["code"], "2.04 Changed");
    assert!(lines[5]["len"].as_u64().unwrap() > 64);
    assert_eq!(lines[5]["setpoint"], 17.25);
    assert!(
        continues >= 6,
        "both bodies came block-wise: {continues} x 2.31"
    );
    // Block2 Read-Composite: 40 records, reassembled by aiocoap.
    assert_eq!(lines[6]["code"], "2.05 Content");
    let record = r#"{"n":"/3303/0/5700","v":22.5}"#;
    let want = format!("[{}]", vec![record; 40].join(","));
    assert!(want.len() > 1024);
    assert_eq!(lines[6]["payload"], want.as_str());
}
