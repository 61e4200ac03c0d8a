//! The server logs one `info` line per Register, Update, De-register and
//! expiry, naming the endpoint and the peer (and lifetime and location where
//! there is a registration).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use coap_lite::{CoapOption, Packet, RequestType};
use tokio::net::UdpSocket;
use wasmdm_proto::coap::msg;

use common::{TestServer, exchange};

fn register(ep: &str, lt: u64) -> Packet {
    let mut reg = msg::request(RequestType::Post, &["rd"]);
    let q = [format!("ep={ep}"), format!("lt={lt}"), "lwm2m=1.1".into()];
    msg::add_strings(&mut reg, CoapOption::UriQuery, &q);
    msg::set_uint(&mut reg, CoapOption::ContentFormat, 40);
    reg.payload = b"</3/0>".to_vec();
    reg
}

fn location(resp: &Packet) -> Vec<String> {
    resp.get_option(CoapOption::LocationPath)
        .map(|v| {
            v.iter()
                .map(|s| String::from_utf8_lossy(s).to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn logs_contain(logs: &Mutex<Vec<u8>>, line: &str) -> bool {
    String::from_utf8_lossy(&logs.lock().unwrap())
        .lines()
        .any(|l| l.contains(" INFO ") && l.contains(line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_update_deregister_and_expiry_are_logged_at_info() {
    let logs = common::captured_logs("info");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let coap = server.bound.coap;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();

    let resp = exchange(&sock, coap, register("log-a", 60), 1).await;
    let loc = location(&resp);
    assert_eq!(loc.len(), 2, "{resp:?}");
    assert!(logs_contain(
        &logs,
        &format!(
            "registered \"log-a\" from {me} lifetime 60 s location /rd/{}",
            loc[1]
        )
    ));

    let path: Vec<&str> = loc.iter().map(String::as_str).collect();
    let mut update = msg::request(RequestType::Post, &path);
    msg::add_strings(&mut update, CoapOption::UriQuery, &["lt=90".to_string()]);
    exchange(&sock, coap, update, 2).await;
    assert!(logs_contain(
        &logs,
        &format!("registration update \"log-a\" from {me} lifetime 90 s")
    ));

    exchange(&sock, coap, msg::request(RequestType::Delete, &path), 3).await;
    assert!(logs_contain(
        &logs,
        &format!("de-registered \"log-a\" from {me}")
    ));

    // A lifetime of 1 s without Update: expired by the server's tick.
    exchange(&sock, coap, register("log-b", 1), 4).await;
    let expired = format!("registration expired \"log-b\" (last from {me})");
    let start = std::time::Instant::now();
    while !logs_contain(&logs, &expired) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no expiry line in:\n{}",
            String::from_utf8_lossy(&logs.lock().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}
