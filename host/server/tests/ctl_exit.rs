//! `wasmdm ctl` fails (non-zero exit: `ctl_main` returns an error) when a
//! device answers a DM operation with 4.xx/5.xx, naming the code, and when
//! the server refuses; it succeeds on a 2.xx answer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_server::ctl::{CtlError, ctl_main};

use common::{TestServer, blocking, eventually};

/// A device with Object 3 that answers GET /3/0/0 with 2.05, any other GET
/// with 4.04 and anything else with 4.05.
async fn device(server: SocketAddr, ep: &str) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut reg = msg::request(RequestType::Post, &["rd"]);
    reg.header.message_id = 1;
    reg.set_token(vec![7]);
    let q = [format!("ep={ep}"), "lt=60".into(), "lwm2m=1.1".into()];
    msg::add_strings(&mut reg, CoapOption::UriQuery, &q);
    msg::set_uint(&mut reg, CoapOption::ContentFormat, 40);
    reg.payload = b"</3/0>".to_vec();
    sock.send_to(&msg::encode(&reg).unwrap(), server)
        .await
        .unwrap();
    sock
}

async fn answer(sock: UdpSocket) {
    let mut buf = vec![0u8; 2048];
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        let Ok(req) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        let MessageClass::Request(method) = req.header.code else {
            continue;
        };
        let path = msg::uri_path(&req).unwrap_or_default();
        let mut resp = msg::response_to(&req, Code::CONTENT);
        match (method, path.join("/").as_str()) {
            (RequestType::Get, "3/0/0") => {
                msg::set_uint(&mut resp, CoapOption::ContentFormat, 0);
                resp.payload = b"ok".to_vec();
                // Observe=0 registers an observation (RFC 7641 §3.1).
                if msg::get_uint(&req, CoapOption::Observe, 3).ok().flatten() == Some(0) {
                    msg::set_uint(&mut resp, CoapOption::Observe, 2);
                }
            }
            (RequestType::Get, _) => Code::NOT_FOUND.set_on(&mut resp),
            _ => Code::METHOD_NOT_ALLOWED.set_on(&mut resp),
        }
        resp.header.set_type(MessageType::Acknowledgement);
        resp.header.message_id = req.header.message_id;
        let _ = sock.send_to(&msg::encode(&resp).unwrap(), from).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_error_codes_and_api_errors_fail_ctl() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let sock = device(server.bound.coap, "d1").await;
    tokio::spawn(answer(sock));
    let c = server.client();
    eventually(Duration::from_secs(5), move || {
        let v = c.get("/api/devices/d1").ok()?;
        (v["online"] == true).then_some(())
    })
    .await
    .expect("device registered");
    let (base, data_dir) = (server.http(), dir.path().to_path_buf());
    blocking(move || {
        let nowhere = std::path::Path::new("/nonexistent/wasmdm-server");
        let ctl = |args: &[&str]| -> (Result<(), CtlError>, String) {
            let mut all = vec!["--server", &base, "--data-dir", data_dir.to_str().unwrap()];
            all.extend_from_slice(args);
            let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
            let mut out = Vec::new();
            let r = ctl_main(&all, nowhere, &mut out);
            (r, String::from_utf8(out).unwrap())
        };
        let (r, out) = ctl(&["read", "d1", "/3/0/0"]);
        assert!(r.is_ok(), "{r:?}");
        assert!(out.contains("\"2.05\""), "{out}");

        // The reply is printed, then the error names the code.
        let (r, out) = ctl(&["read", "d1", "/3/0/99"]);
        assert!(out.contains("\"4.04\""), "{out}");
        let e = r.unwrap_err();
        assert!(
            matches!(&e, CtlError::Device { code, meaning: "Not Found" } if code == "4.04"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "device answered 4.04 Not Found");

        let e = ctl(&["exec", "d1", "/3/0/4"]).0.unwrap_err();
        assert_eq!(e.to_string(), "device answered 4.05 Method Not Allowed");
        let e = ctl(&["write", "d1", "/3/0/14", "+02"]).0.unwrap_err();
        assert!(matches!(e, CtlError::Device { .. }), "{e:?}");

        // An observation started from ctl can be cancelled from ctl (the
        // server finds its token); a second cancel finds nothing to cancel.
        let (r, out) = ctl(&["observe", "d1", "/3/0/0"]);
        assert!(r.is_ok() && out.contains("\"2.05\""), "{r:?} {out}");
        let (r, out) = ctl(&["cancel-observe", "d1", "/3/0/0"]);
        assert!(r.is_ok() && out.contains("\"2.05\""), "{r:?} {out}");
        let e = ctl(&["cancel-observe", "d1", "/3/0/0"]).0.unwrap_err();
        assert!(e.to_string().contains("no observation of /3/0/0"), "{e}");

        // The server refusing (device not registered, unknown device) fails too.
        let e = ctl(&["read", "nobody", "/3/0"]).0.unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 409, .. }), "{e:?}");
        let e = ctl(&["device", "nobody"]).0.unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 404, .. }), "{e:?}");
    })
    .await;
    server.shutdown().await;
}
