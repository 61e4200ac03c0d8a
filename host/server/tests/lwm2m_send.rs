//! LwM2M 1.1 Send (`POST /dp`) received by `wasmdm server`: a registered
//! device's values show up in its observed values in the API; a peer that
//! is not a registered device's address is refused with 4.03 and nothing
//! is kept.

mod common;

use coap_lite::{CoapOption, Packet, RequestType};
use serde_json::json;
use tokio::net::UdpSocket;
use wasmdm_proto::coap::msg::{self, Code};

use common::{TestServer, blocking, exchange};

fn register(ep: &str) -> Packet {
    let mut reg = msg::request(RequestType::Post, &["rd"]);
    let q = [format!("ep={ep}"), "lt=60".into(), "lwm2m=1.1".into()];
    msg::add_strings(&mut reg, CoapOption::UriQuery, &q);
    msg::set_uint(&mut reg, CoapOption::ContentFormat, 40);
    reg.payload = b"</3/0>,</3303>;ver=1.1,</3303/0>".to_vec();
    reg
}

fn send(cf: u16, body: &[u8]) -> Packet {
    let mut p = msg::request(RequestType::Post, &["dp"]);
    msg::set_uint(&mut p, CoapOption::ContentFormat, cf.into());
    p.payload = body.to_vec();
    p
}

/// What `wasmdm device` sends for /3303/0/5700 = 21.5 (proto's Send test).
fn cbor_21_5() -> Vec<u8> {
    let mut b = vec![0x81, 0xA2, 0x00, 0x6C];
    b.extend_from_slice(b"/3303/0/5700");
    b.extend_from_slice(&[0x02, 0xF9, 0x4D, 0x60]);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_from_registered_devices_are_kept_and_strangers_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let coap = server.bound.coap;
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Before registering: 4.03.
    let r = exchange(&device, coap, send(112, &cbor_21_5()), 1).await;
    assert_eq!(Code::of(&r), Code::FORBIDDEN);
    let r = exchange(&device, coap, register("send-a"), 2).await;
    assert_eq!(Code::of(&r), Code::CREATED);
    let r = exchange(&device, coap, send(112, &cbor_21_5()), 3).await;
    assert_eq!(Code::of(&r), Code::CHANGED);
    let json_send = br#"[{"n":"/3303/0/5700","v":22},{"n":"/3303/0/5701","vs":"Cel"}]"#;
    let r = exchange(&device, coap, send(110, json_send), 4).await;
    assert_eq!(Code::of(&r), Code::CHANGED);
    // Another address naming the same values: refused, nothing kept.
    let evil = br#"[{"n":"/3303/0/5701","vs":"hijacked"}]"#;
    let r = exchange(&stranger, coap, send(110, evil), 5).await;
    assert_eq!(Code::of(&r), Code::FORBIDDEN);
    // Not SenML; malformed.
    let r = exchange(&device, coap, send(0, b"21"), 6).await;
    assert_eq!(Code::of(&r), Code::UNSUPPORTED_CONTENT_FORMAT);
    let r = exchange(&device, coap, send(112, &[0x81, 0xA2]), 7).await;
    assert_eq!(Code::of(&r), Code::BAD_REQUEST);

    let api = server.client();
    let observed = blocking(move || api.get("/api/devices/send-a/observed").unwrap()).await;
    assert_eq!(observed, json!({"/3303/0/5700": 22, "/3303/0/5701": "Cel"}));
    server.shutdown().await;
}
