//! End to end over real sockets: simulated LwM2M devices (raw CoAP on
//! loopback, one /9 instance each) upgraded by group campaigns with push
//! (Block1) and pull (HTTP Range, CoAP Block2); bad API input; restart.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use serde_json::{Value as Json, json};
use tokio::net::UdpSocket;
use wasmdm_proto::coap::block::BlockOpt;
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_server::ctl::Client;

use common::{TestServer, blocking, eventually};

#[derive(Debug, Default)]
struct Sw {
    name: String,
    version: String,
    state: i64,
    result: i64,
    active: bool,
    received: Vec<u8>,
    expected: Vec<u8>,
    observers: Vec<(u16, Vec<u8>)>,
    seq: u32,
    /// Accept Install but do not finish it (a device stalled mid-upgrade).
    hold_install: bool,
    /// Answer nothing at all.
    silent: bool,
}

/// A minimal LwM2M device with one /9 instance, answering over UDP.
async fn fake_device(server: SocketAddr, ep: &str, sw: Arc<Mutex<Sw>>) -> Arc<UdpSocket> {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let mut reg = msg::request(RequestType::Post, &["rd"]);
    reg.header.message_id = 1;
    reg.set_token(vec![9]);
    let q = [format!("ep={ep}"), "lt=60".into(), "lwm2m=1.1".into()];
    msg::add_strings(&mut reg, CoapOption::UriQuery, &q);
    msg::set_uint(&mut reg, CoapOption::ContentFormat, 40);
    reg.payload = b"</9/0>".to_vec();
    sock.send_to(&msg::encode(&reg).unwrap(), server)
        .await
        .unwrap();
    let s2 = sock.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let mut mid = 100u16;
        while let Ok((n, from)) = s2.recv_from(&mut buf).await {
            let Ok(req) = Packet::from_bytes(&buf[..n]) else {
                continue;
            };
            let MessageClass::Request(method) = req.header.code else {
                continue;
            };
            // A stalled device: requests go unanswered.
            if sw.lock().unwrap().silent {
                continue;
            }
            let path = msg::uri_path(&req).unwrap_or_default();
            // Pull over HTTP in two ranges (a resumed download), off the
            // async workers and without holding the device's lock: the
            // server answering it runs on the same runtime.
            let mut pulled = None;
            if method == RequestType::Put && path == ["9", "0", "3"] {
                let uri = String::from_utf8_lossy(&req.payload).to_string();
                pulled = tokio::task::spawn_blocking(move || http_fetch_in_two(&uri))
                    .await
                    .ok()
                    .flatten();
            }
            let mut resp = msg::response_to(&req, Code::CHANGED);
            let mut notify = false;
            {
                let mut sw = sw.lock().unwrap();
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                match (method, p.as_slice()) {
                    (RequestType::Get, ["9", ..]) => {
                        if req
                            .get_first_option(CoapOption::Observe)
                            .is_some_and(|v| v.is_empty())
                        {
                            sw.observers.push((
                                p.get(2).and_then(|r| r.parse().ok()).unwrap_or(0),
                                req.get_token().to_vec(),
                            ));
                            msg::set_uint(&mut resp, CoapOption::Observe, 1);
                        }
                        Code::CONTENT.set_on(&mut resp);
                        msg::set_uint(&mut resp, CoapOption::ContentFormat, 110);
                        resp.payload = senml(&sw).into_bytes();
                    }
                    (RequestType::Post, ["9", "0", "6"]) => {
                        sw.state = 0;
                        sw.result = 0;
                        sw.active = false;
                        sw.received.clear();
                        notify = true;
                    }
                    (RequestType::Put, ["9", "0", "2"]) => {
                        let b = BlockOpt::read(&req, CoapOption::Block1).unwrap().unwrap();
                        if b.offset() == sw.received.len() as u64 {
                            sw.received.extend_from_slice(&req.payload);
                        }
                        if b.more {
                            Code::CONTINUE.set_on(&mut resp);
                            b.write(&mut resp, CoapOption::Block1);
                        } else {
                            b.write(&mut resp, CoapOption::Block1);
                            deliver(&mut sw);
                            notify = true;
                        }
                    }
                    (RequestType::Put, ["9", "0", "3"]) => {
                        sw.received = pulled.take().unwrap_or_default();
                        deliver(&mut sw);
                        notify = true;
                    }
                    (RequestType::Post, ["9", "0", "4"]) if sw.state == 3 && sw.hold_install => {}
                    (RequestType::Post, ["9", "0", "4"]) if sw.state == 3 => {
                        sw.state = 4;
                        sw.result = 2;
                        sw.version = "2.0".into();
                        notify = true;
                    }
                    (RequestType::Post, ["9", "0", "10"]) if sw.state == 4 => {
                        sw.active = true;
                        notify = true;
                    }
                    _ => Code::METHOD_NOT_ALLOWED.set_on(&mut resp),
                }
            }
            resp.header.set_type(MessageType::Acknowledgement);
            resp.header.message_id = req.header.message_id;
            let _ = s2.send_to(&msg::encode(&resp).unwrap(), from).await;
            if notify {
                let notes: Vec<Packet> = {
                    let mut sw = sw.lock().unwrap();
                    sw.seq += 1;
                    let seq = sw.seq + 1;
                    sw.observers
                        .iter()
                        .map(|(_, token)| {
                            let mut n = Packet::new();
                            n.header.set_type(MessageType::NonConfirmable);
                            Code::CONTENT.set_on(&mut n);
                            mid = mid.wrapping_add(1);
                            n.header.message_id = mid;
                            n.set_token(token.clone());
                            msg::set_uint(&mut n, CoapOption::Observe, u64::from(seq));
                            msg::set_uint(&mut n, CoapOption::ContentFormat, 110);
                            n.payload = senml(&sw).into_bytes();
                            n
                        })
                        .collect()
                };
                for n in notes {
                    let _ = s2.send_to(&msg::encode(&n).unwrap(), from).await;
                }
            }
        }
    });
    sock
}

fn deliver(sw: &mut Sw) {
    if sw.received == sw.expected {
        sw.state = 3;
        sw.result = 3;
    } else {
        sw.state = 0;
        sw.result = 53;
    }
}

fn senml(sw: &Sw) -> String {
    json!([
        {"bn": "/9/0/", "n": "0", "vs": sw.name},
        {"n": "1", "vs": sw.version},
        {"n": "7", "v": sw.state},
        {"n": "9", "v": sw.result},
        {"n": "12", "vb": sw.active},
    ])
    .to_string()
}

fn http_fetch_in_two(uri: &str) -> Option<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut first = agent.get(uri).header("Range", "bytes=0-999").call().ok()?;
    assert_eq!(first.status().as_u16(), 206);
    let etag = first.headers().get("etag")?.to_str().ok()?.to_string();
    let mut body = first.body_mut().read_to_vec().ok()?;
    let mut rest = agent
        .get(uri)
        .header("Range", "bytes=1000-")
        .header("If-Range", &etag)
        .call()
        .ok()?;
    assert_eq!(rest.status().as_u16(), 206);
    body.extend(rest.body_mut().read_to_vec().ok()?);
    Some(body)
}

fn app_v1(expected: &[u8]) -> Arc<Mutex<Sw>> {
    Arc::new(Mutex::new(Sw {
        name: "app".into(),
        version: "1.0".into(),
        state: 4,
        result: 2,
        active: true,
        expected: expected.to_vec(),
        ..Sw::default()
    }))
}

async fn wait_campaign(c: &Client, id: &str) -> Json {
    let (c, id) = (c.clone(), id.to_string());
    blocking(move || c.wait(&id, |_| {}).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_upgrade_push_and_pull_with_bad_input_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let c = server.client();
    let package: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let (cc, p) = (c.clone(), package.clone());
    let file = blocking(move || cc.upload(&p, "app-2.0.wasm", Some("v2"), None))
        .await
        .unwrap();
    let sha = file["sha256"].as_str().unwrap().to_string();

    let d1 = app_v1(&package);
    let d2 = app_v1(&package);
    let bad = app_v1(b"something else");
    let _s1 = fake_device(server.bound.coap, "d1", d1.clone()).await;
    let _s2 = fake_device(server.bound.coap, "d2", d2.clone()).await;
    let _s3 = fake_device(server.bound.coap, "bad", bad.clone()).await;
    let cc = c.clone();
    eventually(Duration::from_secs(30), move || {
        let v = cc.get("/api/devices").ok()?;
        (v.as_array()?.iter().filter(|d| d["online"] == true).count() == 3).then_some(())
    })
    .await
    .expect("3 devices registered");

    // Group by explicit endpoint and by label.
    let cc = c.clone();
    blocking(move || {
        cc.put("/api/devices/d2/labels", &json!(["lab"])).unwrap();
        cc.put("/api/devices/bad/labels", &json!(["lab"])).unwrap();
        cc.put(
            "/api/groups/edge",
            &json!({"endpoints": ["d1"], "labels": ["lab"]}),
        )
        .unwrap();
        let g = cc.get("/api/groups/edge").unwrap();
        assert_eq!(g["members"], json!(["bad", "d1", "d2"]));
    })
    .await;

    // Bad input: clear errors, nothing created.
    let cc = c.clone();
    let sha2 = sha.clone();
    blocking(move || {
        let status = |r: Result<Json, wasmdm_server::ctl::CtlError>| match r {
            Err(wasmdm_server::ctl::CtlError::Api { status, .. }) => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(cc.post("/api/campaigns", &json!({"op": "upgrade"}))), 400);
        assert_eq!(status(cc.post("/api/campaigns", &json!({"op": "upgrade", "package": "app", "group": "nope", "file": sha2}))), 404);
        assert_eq!(status(cc.post("/api/campaigns", &json!({"op": "upgrade", "package": "app", "group": "edge", "file": "00"}))), 404);
        assert_eq!(status(cc.post("/api/campaigns", &json!({"op": "upgrade", "package": "app", "group": "edge"}))), 400);
        assert_eq!(status(cc.post("/api/campaigns", &json!({"op": "upgrade", "package": "app", "group": "edge", "file": sha2, "quota": 0}))), 400);
        assert_eq!(status(cc.put("/api/groups/bad%20name", &json!({}))), 400);
        assert_eq!(status(cc.put("/api/groups/x", &json!({"endpoints": "notalist"}))), 400);
        assert_eq!(status(cc.put("/api/devices/ghost/labels", &json!(["a"]))), 404);
        assert_eq!(status(cc.get("/api/campaigns/none")), 404);
        assert_eq!(status(cc.delete("/api/files/abc")), 404);
        assert_eq!(status(cc.dm("d1", &json!({"op": "delete", "path": "/9"}))), 400);
        assert_eq!(cc.get("/api/campaigns").unwrap(), json!([]));
        assert!(cc.get("/api/groups/x").is_err());
    })
    .await;

    // Push upgrade of the group, quota 2.
    let cc = c.clone();
    let body = json!({"op": "upgrade", "package": "app", "group": "edge", "file": sha, "delivery": "push", "quota": 2, "timeout_secs": 30});
    let created = blocking(move || cc.campaign(&body).unwrap()).await;
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_campaign(&c, &id).await;
    assert_eq!(done["status"], "finished", "{done:#}");
    assert_eq!(done["summary"]["done"], 2, "{done:#}");
    assert_eq!(done["summary"]["failed"], 1, "{done:#}");
    let jobs = done["jobs"].as_array().unwrap();
    let bad_job = jobs.iter().find(|j| j["endpoint"] == "bad").unwrap();
    assert_eq!(bad_job["update_result"], 53);
    assert_eq!(
        bad_job["update_result_name"],
        "Package integrity check failure"
    );
    // Reports restricted to some jobs: the summary stays whole.
    let (cc, idq) = (c.clone(), id.clone());
    blocking(move || {
        let get = |q: &str| cc.get(&format!("/api/campaigns/{idq}?{q}")).unwrap();
        let failed = get("status=failed,timed_out");
        assert_eq!(failed["jobs_total"], 1, "{failed:#}");
        assert_eq!(failed["jobs"][0]["endpoint"], "bad");
        assert_eq!(failed["summary"]["done"], 2);
        let bare = get("jobs=none");
        assert!(bare.get("jobs").is_none(), "{bare:#}");
        assert_eq!(bare["jobs_total"], 3);
        assert_eq!(bare["status"], "finished");
        let page = get("offset=1&limit=1");
        assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1));
        assert_eq!(page["jobs_total"], 3);
        for bad in ["status=exploded", "jobs=some", "colour=red"] {
            assert!(
                matches!(
                    cc.get(&format!("/api/campaigns/{idq}?{bad}")),
                    Err(wasmdm_server::ctl::CtlError::Api { status: 400, .. })
                ),
                "{bad}"
            );
        }
    })
    .await;
    let d1_job = jobs.iter().find(|j| j["endpoint"] == "d1").unwrap();
    assert_eq!(d1_job["targets"][0]["old_version"], "1.0");
    assert_eq!(d1_job["targets"][0]["new_version"], "2.0");
    for d in [&d1, &d2] {
        let sw = d.lock().unwrap();
        assert_eq!(sw.received, package, "Block1 push delivered the file");
        assert_eq!((sw.state, sw.version.as_str(), sw.active), (4, "2.0", true));
    }

    // Retry of the failed device after fixing it; then a pull (HTTP Range) upgrade by name + version.
    bad.lock().unwrap().expected = package.clone();
    let (cc, id2) = (c.clone(), id.clone());
    blocking(move || {
        cc.post(&format!("/api/campaigns/{id2}/retry"), &json!({}))
            .unwrap()
    })
    .await;
    let done = wait_campaign(&c, &id).await;
    assert_eq!(done["summary"]["done"], 3, "{done:#}");
    d1.lock().unwrap().version = "1.5".into();
    let cc = c.clone();
    let body = json!({"op": "upgrade", "package": "app", "version": "1.5", "group": "edge", "file": sha,
                      "delivery": "pull", "protocol": "http", "timeout_secs": 30});
    let created = blocking(move || cc.campaign(&body).unwrap()).await;
    let id3 = created["id"].as_str().unwrap().to_string();
    let done = wait_campaign(&c, &id3).await;
    assert_eq!(
        (
            done["summary"]["done"].as_u64(),
            done["summary"]["skipped"].as_u64()
        ),
        (Some(1), Some(2)),
        "{done:#}"
    );
    assert_eq!(
        d1.lock().unwrap().received,
        package,
        "pulled over HTTP in two ranges"
    );

    // CoAP Block2 download of the file from the server: only with its capability.
    let cap = file["capability"].as_str().unwrap().to_string();
    assert_eq!(file["download_path"], format!("/fw/{sha}/{cap}"));
    let got = coap_fetch(server.bound.coap, &["fw", &sha, &cap]).await;
    assert_eq!(got, package);
    let wrong = "0".repeat(32);
    for path in [&["fw", &sha][..], &["fw", &sha, &wrong], &["fw", &cap]] {
        let resp = coap_get_block(server.bound.coap, path, 0).await;
        assert_eq!(Code::of(&resp), Code::NOT_FOUND, "{path:?}");
    }

    // Restart on the same data directory: devices, groups, files and campaigns are still there.
    let coap = server.bound.coap;
    server.shutdown().await;
    let server = TestServer::start_on(dir.path(), coap).await;
    let c = server.client();
    blocking(move || {
        assert_eq!(c.get("/api/devices").unwrap().as_array().unwrap().len(), 3);
        assert_eq!(
            c.get("/api/groups/edge").unwrap()["members"],
            json!(["bad", "d1", "d2"])
        );
        assert_eq!(c.get("/api/files").unwrap().as_array().unwrap().len(), 1);
        assert_eq!(
            c.get("/api/campaigns").unwrap().as_array().unwrap().len(),
            2
        );
        // A DM to a device registered before the restart still works.
        let r = c
            .dm("d2", &json!({"op": "read", "path": "/9/0", "accept": null}))
            .unwrap();
        assert_eq!(r["values"]["/9/0/1"], "2.0", "{r}");
    })
    .await;
    server.shutdown().await;
}

/// One Block2 GET of `path` (512-byte blocks).
async fn coap_get_block(server: SocketAddr, path: &[&str], num: u32) -> Packet {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 2048];
    let mut req = msg::request(RequestType::Get, path);
    req.header.message_id = 500 + num as u16;
    req.set_token(vec![num as u8]);
    BlockOpt {
        num,
        more: false,
        szx: 5,
    }
    .write(&mut req, CoapOption::Block2);
    sock.send_to(&msg::encode(&req).unwrap(), server)
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Packet::from_bytes(&buf[..n]).unwrap()
}

/// GETs `path` (`/fw/<sha>/<capability>`) block by block (RFC 7959 §2.4).
async fn coap_fetch(server: SocketAddr, path: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    for num in 0.. {
        let resp = coap_get_block(server, path, num).await;
        assert_eq!(Code::of(&resp), Code::CONTENT);
        assert!(resp.get_first_option(CoapOption::ETag).is_some());
        body.extend_from_slice(&resp.payload);
        let b = BlockOpt::read(&resp, CoapOption::Block2).unwrap().unwrap();
        assert_eq!(b.num, num);
        if !b.more {
            break;
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_campaign_continues_and_cancel_stops_a_stalled_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let c = server.client();
    let package = vec![5u8; 700];
    let (cc, p) = (c.clone(), package.clone());
    let sha = blocking(move || cc.upload(&p, "app", None, Some(3600)).unwrap()).await["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = app_v1(&package);
    dev.lock().unwrap().hold_install = true;
    let _sock = fake_device(server.bound.coap, "slow", dev.clone()).await;
    let cc = c.clone();
    eventually(Duration::from_secs(30), move || {
        cc.get("/api/devices/slow")
            .ok()
            .filter(|d| d["online"] == true)
    })
    .await
    .expect("registered");
    let cc = c.clone();
    let body = json!({"op": "upgrade", "package": "app", "devices": ["slow"], "file": sha, "delivery": "push", "timeout_secs": 60});
    let id = blocking(move || cc.campaign(&body).unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait until the device sits in DELIVERED with Install executed but not finished.
    let d = dev.clone();
    eventually(Duration::from_secs(30), move || {
        (d.lock().unwrap().state == 3).then_some(())
    })
    .await
    .expect("delivered");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The server stops; meanwhile the device finishes installing.
    let coap = server.bound.coap;
    server.shutdown().await;
    {
        let mut sw = dev.lock().unwrap();
        sw.state = 4;
        sw.result = 2;
        sw.version = "2.0".into();
    }
    let server = TestServer::start_on(dir.path(), coap).await;
    let c = server.client();
    let done = wait_campaign(&c, &id).await;
    assert_eq!(done["status"], "finished", "{done:#}");
    assert_eq!(done["summary"]["done"], 1, "{done:#}");
    assert!(dev.lock().unwrap().active, "re-activated after the restart");

    // A device that stops answering: the campaign is cancelled through the API.
    dev.lock().unwrap().silent = true;
    let cc = c.clone();
    let body =
        json!({"op": "deactivate", "package": "app", "devices": ["slow"], "timeout_secs": 60});
    let id = blocking(move || cc.campaign(&body).unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (cc, id2) = (c.clone(), id.clone());
    let cancelled = blocking(move || {
        cc.post(&format!("/api/campaigns/{id2}/cancel"), &json!({}))
            .unwrap()
    })
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    assert_eq!(cancelled["summary"]["cancelled"], 1);
    // Cancelling twice is a conflict and changes nothing.
    let (cc, id2) = (c.clone(), id.clone());
    let again =
        blocking(move || cc.post(&format!("/api/campaigns/{id2}/cancel"), &json!({}))).await;
    assert!(matches!(
        again,
        Err(wasmdm_server::ctl::CtlError::Api { status: 409, .. })
    ));

    // Retention: a file kept for 0 s is purged; one kept forever stays.
    let cc = c.clone();
    blocking(move || {
        let tmp = cc.upload(b"short-lived", "tmp", None, Some(0)).unwrap();
        let sha = tmp["sha256"].as_str().unwrap().to_string();
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            cc.get(&format!("/api/files/{sha}")).is_err()
        });
        assert!(gone, "expired file purged");
        assert_eq!(cc.get("/api/files").unwrap().as_array().unwrap().len(), 1);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_coap_gets_rst_or_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 1500];
    let mut ask = async |bytes: &[u8]| -> Vec<u8> {
        sock.send_to(bytes, server.bound.coap).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf[..n].to_vec()
    };
    // CON with a truncated option: RST with the same MID (RFC 7252 §4.2).
    assert_eq!(
        ask(&[0x40, 0x02, 0x12, 0x34, 0xB5, 0x72]).await,
        vec![0x70, 0x00, 0x12, 0x34]
    );
    // CoAP ping: RST.
    assert_eq!(
        ask(&[0x40, 0x00, 0x00, 0x07]).await,
        vec![0x70, 0x00, 0x00, 0x07]
    );
    // Register without `lwm2m`: 4.00; with an unsupported version: 4.12.
    let mut reg = msg::request(RequestType::Post, &["rd"]);
    reg.header.message_id = 0x2000;
    reg.set_token(vec![1]);
    msg::add_strings(&mut reg, CoapOption::UriQuery, &["ep=x"]);
    reg.payload = b"</3/0>".to_vec();
    let r = Packet::from_bytes(&ask(&msg::encode(&reg).unwrap()).await).unwrap();
    assert_eq!(Code::of(&r), Code::BAD_REQUEST);
    reg.header.message_id = 0x2001;
    msg::add_strings(&mut reg, CoapOption::UriQuery, &["lwm2m=9.9"]);
    let r = Packet::from_bytes(&ask(&msg::encode(&reg).unwrap()).await).unwrap();
    assert_eq!(Code::of(&r), Code::PRECONDITION_FAILED);
    // Unknown resource on the server: 4.04; unknown file: 4.04.
    let mut get = msg::request(RequestType::Get, &["fw", &"0".repeat(64)]);
    get.header.message_id = 0x2002;
    let r = Packet::from_bytes(&ask(&msg::encode(&get).unwrap()).await).unwrap();
    assert_eq!(Code::of(&r), Code::NOT_FOUND);
    let c = server.client();
    let devices = blocking(move || c.get("/api/devices").unwrap()).await;
    assert_eq!(devices, json!([]), "nothing registered");
    server.shutdown().await;
}

/// A server bound to 0.0.0.0 has no address to hand devices for pulls:
/// a pull campaign without a base URI is refused, saying what to set,
/// instead of sending devices `coap://0.0.0.0:...`; a base URI makes it
/// go, and push needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_0_0_0_0_refuses_pull_campaigns_without_a_base_uri() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), "0.0.0.0:0".parse().unwrap(), |_| {}).await;
    let c = server.client();
    blocking(move || {
        let f = c.upload(b"bytes", "x.wasm", None, None).unwrap();
        let sha = f["sha256"].as_str().unwrap();
        c.put("/api/groups/none", &json!({"endpoints": ["nobody"]}))
            .unwrap();
        let body = |extra: Json| {
            let mut b = json!({"group": "none", "op": "install", "package": "x", "file": sha,
                "delivery": "pull", "protocol": "coap"});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            b
        };
        let err = c.campaign(&body(json!({}))).unwrap_err().to_string();
        assert!(err.contains("--coap-base-uri"), "{err}");
        assert!(
            c.campaign(&body(json!({"base_uri": "coap://192.0.2.10:5683"})))
                .is_ok()
        );
        assert!(c.campaign(&body(json!({"delivery": "push"}))).is_ok());
        let campaigns = c.get("/api/campaigns?jobs=none").unwrap();
        let uris: Vec<String> = campaigns
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["spec"]["base_uri"].as_str().map(String::from))
            .collect();
        assert!(uris.iter().all(|u| !u.contains("0.0.0.0")), "{uris:?}");
    })
    .await;
}
