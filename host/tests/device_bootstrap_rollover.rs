//! Bootstrap credential rollover, end to end over DTLS-PSK on loopback: a
//! wasmdm device with a factory bootstrap account bootstraps from `wasmdm
//! server`; the operator rolls its bootstrap credential over; the device
//! is made to bootstrap again (Bootstrap-Request Trigger, /1/0/9) and the
//! session writes the new credential into its bootstrap account. The device
//! then holds it (its stored accounts, not the factory key), bootstraps
//! with it after a restart, the old identity no longer completes a
//! handshake with the bootstrap port, and the installed software is
//! untouched throughout.

mod device_support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use device_support::{InProcessDevice as Device, Net, stored_accounts, wait_for};
use serde_json::{Value as Json, json};
use wasmdm_proto::dtls::{ClientCredentials, ClientEvent, DtlsClient};

/// The factory bootstrap key (printable bytes, so a libcoap client could use it too).
const FACTORY_KEY: &[u8] = b"wasmdm-rollover-key1";

/// The device's stored bootstrap account (the /0 instance with bootstrap = true).
fn stored_bootstrap_account(data_dir: &Path) -> Json {
    let stored = stored_accounts(data_dir);
    let accounts: Vec<&Json> = stored["security"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["bootstrap"] == true)
        .collect();
    assert_eq!(accounts.len(), 1, "{stored:#}");
    accounts[0].clone()
}

/// Waits until `ep` has `n` sessions, the last one ended; returns it.
fn nth_session(net: &Net, ep: &str, n: usize) -> Json {
    wait_for(&format!("bootstrap session {n} of {ep} ends"), || {
        let s = net.bootstrap_sessions(ep);
        (s.len() == n && s[n - 1]["status"] != "running").then(|| s[n - 1].clone())
    })
}

/// A DTLS-PSK handshake with `server`; `Ok` once it completes, `Err` with
/// the failure (or silence) otherwise.
fn handshake(server: SocketAddr, identity: &[u8], key: &[u8]) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut client = DtlsClient::new(ClientCredentials::Psk {
        identity: identity.to_vec(),
        key: key.to_vec(),
    })
    .unwrap();
    client.add_peer(server, "localhost").unwrap();
    // A CoAP ping, queued until the handshake completes: it opens no session.
    client
        .send(Instant::now(), server, &[0x40, 0x00, 0x12, 0x34])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        while let Some(t) = client.poll_transmit() {
            let _ = socket.send_to(&t.bytes, t.to);
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Connected { .. } => return Ok(()),
                ClientEvent::Failed { reason, .. } => return Err(reason),
                _ => {}
            }
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                client.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            Err(_) => client.handle_timeout(Instant::now()),
        }
    }
    Err("no handshake within 15 s".into())
}

#[test]
fn a_rolled_over_bootstrap_credential_reaches_the_device() {
    let net = Net::start(|c| {
        let any = "127.0.0.1:0".parse().unwrap();
        c.bootstrap = Some(wasmdm_server::bootstrap::BootstrapListen::new(any, any));
    });
    let (_, bs_coaps) = net.bound.bootstrap.expect("bootstrap listens");
    let ep = "roll-1";
    let old_identity = format!("bs-{ep}");
    net.api
        .put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &json!({"identity": old_identity, "key": hex::encode(FACTORY_KEY)}),
        )
        .unwrap();
    net.api
        .put(
            "/api/bootstrap/labels/default",
            &json!({"servers": [{
                "uri": net.coaps_uri(), "short_id": 1, "security": "psk", "lifetime": 60,
            }]}),
        )
        .unwrap();
    let factory = net.psk_bootstrap_only(ep, bs_coaps, &old_identity, &hex::encode(FACTORY_KEY));
    let data_dir = net.data_dir(ep);
    let started = Instant::now();
    let mut device = Device::start(&net, factory.clone());
    net.wait_online(&[ep]);
    let first = nth_session(&net, ep, 1);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(first["identity"], old_identity.as_str(), "{first:#}");
    let v1 = net.upload_example("counter", "1.0.0");
    let report = net.campaign(json!({
        "devices": [ep], "op": "install", "package": "counter", "file": v1["sha256"],
        "delivery": "push", "activate": true, "timeout_secs": 60,
    }));
    assert_eq!(report["jobs"][0]["status"], "done", "{report:#}");

    // The operator rolls over: a new identity, pending; never the key.
    let r = net
        .api
        .post(
            &format!("/api/bootstrap/endpoints/{ep}/rollover"),
            &json!({}),
        )
        .unwrap();
    assert_eq!(r["result"], "started", "{r:#}");
    assert_eq!(r["status"], "pending", "{r:#}");
    let new_identity = r["identity"].as_str().unwrap().to_string();
    assert!(new_identity.starts_with("roll-1-bs-"), "{r:#}");
    assert!(r.get("key").is_none(), "{r:#}");
    let shown = net
        .api
        .get(&format!("/api/bootstrap/endpoints/{ep}"))
        .unwrap();
    assert_eq!(shown["identity"], old_identity.as_str(), "{shown:#}");
    assert_eq!(
        shown["rollover"]["identity"],
        new_identity.as_str(),
        "{shown:#}"
    );

    // The device bootstraps again and is written the new credential.
    net.trigger_bootstrap(ep);
    let second = nth_session(&net, ep, 2);
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(second["identity"], old_identity.as_str(), "{second:#}");
    let note = second["rollover"].as_str().unwrap_or_default();
    assert!(note.contains("committed by Finish"), "{second:#}");
    assert!(
        second["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"] == "/0/0" && s["code"] == "2.04"),
        "the bootstrap account /0/0 was written: {second:#}"
    );
    // Promoted: the new identity is the account's, nothing pending.
    let shown = net
        .api
        .get(&format!("/api/bootstrap/endpoints/{ep}"))
        .unwrap();
    assert_eq!(shown["identity"], new_identity.as_str(), "{shown:#}");
    assert!(shown.get("rollover").is_none(), "{shown:#}");
    assert!(!shown.to_string().contains("key\""), "{shown:#}");
    net.wait_online(&[ep]);

    // What the device stored: the new identity and a key that is not the
    // factory one, at the URI it bootstrapped from.
    let stored = stored_bootstrap_account(&data_dir);
    assert_eq!(stored["identity"], hex::encode(&new_identity), "{stored:#}");
    assert_ne!(stored["secret"], hex::encode(FACTORY_KEY), "{stored:#}");
    assert_eq!(stored["uri"], format!("coaps://{bs_coaps}"), "{stored:#}");
    assert_eq!(stored["mode"], 0, "{stored:#}");
    let new_key = hex::decode(stored["secret"].as_str().unwrap()).unwrap();
    assert_eq!(new_key.len(), 32);

    // Restarted with the same factory configuration, the device keeps the
    // stored bootstrap account and bootstraps with it.
    device.stop();
    let _device = Device::start(&net, factory);
    net.wait_online(&[ep]);
    net.trigger_bootstrap(ep);
    let third = nth_session(&net, ep, 3);
    assert_eq!(third["status"], "succeeded", "{third:#}");
    assert_eq!(third["identity"], new_identity.as_str(), "{third:#}");
    assert!(
        third.get("rollover").is_none(),
        "nothing pending: {third:#}"
    );
    net.wait_online(&[ep]);

    // The old identity is refused at the bootstrap port; the new one works.
    handshake(bs_coaps, new_identity.as_bytes(), &new_key).expect("the new credential");
    let old = handshake(bs_coaps, old_identity.as_bytes(), FACTORY_KEY);
    assert!(
        old.is_err(),
        "the old bootstrap identity still completes a handshake"
    );
    eprintln!("old identity refused: {}", old.unwrap_err());

    // Installed software untouched by three bootstraps and a restart.
    let sw = net.read(ep, "/9/0");
    assert_eq!(sw["/9/0/0"], "counter", "{sw:#}");
    assert_eq!(sw["/9/0/12"], true, "{sw:#}");
    eprintln!(
        "measured: whole rollover story in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The operator's side for many endpoints and the cancel, through `wasmdm
/// ctl bootstrap rollover` (its code, on the API): by label, a second time
/// (kept), a certificate account skipped, a cancel before any session, and
/// what is refused.
#[test]
fn rollover_by_label_all_and_cancel_from_ctl() {
    use wasmdm_server::bootstrap::ctl::run;
    let net = Net::start(|c| {
        let any = "127.0.0.1:0".parse().unwrap();
        c.bootstrap = Some(wasmdm_server::bootstrap::BootstrapListen::new(any, any));
    });
    for (ep, body) in [
        (
            "fleet-a",
            json!({"identity": "bs-a", "key": hex::encode(FACTORY_KEY), "labels": ["eu"]}),
        ),
        (
            "fleet-b",
            json!({"identity": "bs-b", "key": hex::encode(FACTORY_KEY), "labels": ["eu"]}),
        ),
        (
            "fleet-c",
            json!({"identity": "bs-c", "key": hex::encode(FACTORY_KEY), "labels": ["us"]}),
        ),
        ("fleet-x", json!({"mode": "x509", "labels": ["eu"]})),
    ] {
        net.api
            .put(&format!("/api/bootstrap/endpoints/{ep}"), &body)
            .unwrap();
    }
    let r = run(&net.api, &["rollover", "--label", "eu"]).unwrap();
    assert_eq!(
        r,
        json!({"started": ["fleet-a", "fleet-b"], "already_pending": [], "skipped": ["fleet-x"]})
    );
    let r = run(&net.api, &["rollover", "--all"]).unwrap();
    assert_eq!(
        r,
        json!({"started": ["fleet-c"], "already_pending": ["fleet-a", "fleet-b"], "skipped": ["fleet-x"]})
    );
    let a = net.api.get("/api/bootstrap/endpoints/fleet-a").unwrap();
    let again = run(&net.api, &["rollover", "fleet-a"]).unwrap();
    assert_eq!(again["result"], "already_pending");
    assert_eq!(again["identity"], a["rollover"]["identity"]);
    // Nothing in any answer looks like a key: identities and times only.
    let all = net.api.get("/api/bootstrap/endpoints").unwrap().to_string();
    assert!(!all.contains("\"key\""), "{all}");
    // Cancel: only while no session wrote it; then nothing to cancel.
    let r = run(&net.api, &["rollover", "cancel", "fleet-a"]).unwrap();
    assert_eq!(r["rollover"], "cancelled");
    let shown = net.api.get("/api/bootstrap/endpoints/fleet-a").unwrap();
    assert!(shown.get("rollover").is_none(), "{shown:#}");
    assert!(run(&net.api, &["rollover", "cancel", "fleet-a"]).is_err());
    // Refused: certificate accounts, unknown endpoints, a bad bulk body.
    assert!(run(&net.api, &["rollover", "fleet-x"]).is_err());
    assert!(run(&net.api, &["rollover", "nobody"]).is_err());
    assert!(run(&net.api, &["rollover", "--bogus"]).is_err());
    assert!(
        net.api
            .post(
                "/api/bootstrap/rollover",
                &json!({"label": "eu", "all": true})
            )
            .is_err()
    );
    // A rotate keeps the pending rollover (the device may hold it).
    net.api
        .put(
            "/api/bootstrap/endpoints/fleet-b",
            &json!({"key": hex::encode(b"another-factory-key!")}),
        )
        .unwrap();
    let b = net.api.get("/api/bootstrap/endpoints/fleet-b").unwrap();
    assert_eq!(b["rollover"]["status"], "pending", "{b:#}");
}
