//! Bootstrap faults of a wasmdm device against `wasmdm server`'s bootstrap
//! service, over DTLS-PSK on loopback (server and devices in process):
//! - a key mismatch after a lost 2.04 to Bootstrap-Finish (the server put
//!   the device's previous PSK back, the device committed the new one): the
//!   device's Registers fail in the DTLS handshake, at once, and after
//!   /1/x/17 of them it bootstraps again and registers, software intact;
//! - lost datagrams: a relay between device and bootstrap server drops
//!   every third datagram each way (handshake and CoAP alike) and the first
//!   datagram of the Finish exchange; the device still bootstraps, registers,
//!   and what it stored is what the server holds.

mod device_support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_support::{InProcessDevice as Device, Net, stored_accounts, wait_for};
use serde_json::{Value as Json, json};
use wasmdm::device::config::DeviceConfig;

const BOOTSTRAP_KEY: &str = "f0075742a9b0075742a9b0075742a9b1";
/// The operational key the server "restores" in place of the new one.
const PREVIOUS_KEY: &str = "0123456789abcdef0123456789abcdef";

/// A server with its bootstrap service; accounts provisioned get /1/x/17 =
/// 2 Register attempts, /1/x/18 = 1 s apart (Core 1.1 §6.2.1.1), so a
/// failing registration leads to a new bootstrap within seconds.
fn bootstrap_net() -> (Net, SocketAddr) {
    let net = Net::start(|c| {
        let any = "127.0.0.1:0".parse().unwrap();
        c.bootstrap = Some(wasmdm_server::bootstrap::BootstrapListen::new(any, any));
    });
    let (_, bs_coaps) = net.bound.bootstrap.expect("bootstrap listens");
    net.api
        .put(
            "/api/bootstrap/labels/default",
            &json!({"servers": [{
                "uri": net.coaps_uri(), "short_id": 1, "security": "psk", "lifetime": 60,
                "bootstrap_on_failure": true, "retry_count": 2, "retry_timer": 1,
            }]}),
        )
        .unwrap();
    (net, bs_coaps)
}

/// The device's bootstrap account at the server, and its factory config
/// (bootstrap account only) aimed at `bootstrap`.
fn bootstrap_only(net: &Net, ep: &str, bootstrap: SocketAddr) -> DeviceConfig {
    net.api
        .put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &json!({"identity": format!("bs-{ep}"), "key": BOOTSTRAP_KEY, "labels": []}),
        )
        .unwrap();
    net.psk_bootstrap_only(ep, bootstrap, &format!("bs-{ep}"), BOOTSTRAP_KEY)
}

/// The device's stored server account (the non-bootstrap /0 instance).
fn stored_server_account(data_dir: &Path) -> Json {
    let stored = stored_accounts(data_dir);
    stored["security"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["bootstrap"] == false)
        .cloned()
        .expect("a provisioned server account")
}

fn offline(net: &Net, ep: &str) -> bool {
    !net.online().iter().any(|o| o == ep)
}

/// The 2.04 to Bootstrap-Finish was lost: the server restored the device's
/// previous PSK while the device committed the new one. The restarted
/// device's Register fails in the DTLS handshake; two such failures
/// (/1/x/17 = 2) make it bootstrap again, get a fresh key, and register,
/// its installed software untouched.
#[test]
fn a_key_the_server_no_longer_has_leads_to_a_new_bootstrap() {
    let (net, bs_coaps) = bootstrap_net();
    let ep = "flt-key";
    let config = bootstrap_only(&net, ep, bs_coaps);
    let data_dir = net.data_dir(ep);
    let mut device = Device::start(&net, config.clone());
    net.wait_online(&[ep]);
    let first = stored_server_account(&data_dir);
    let v1 = net.upload_example("counter", "1.0.0");
    let report = net.campaign(json!({
        "devices": [ep], "op": "install", "package": "counter", "file": v1["sha256"],
        "delivery": "push", "activate": true, "timeout_secs": 60,
    }));
    assert_eq!(report["jobs"][0]["status"], "done", "{report:#}");

    device.stop();
    wait_for("the device de-registered", || {
        offline(&net, ep).then_some(())
    });
    // What the server does when the 2.04 to Finish never reached it.
    net.api
        .put(
            &format!("/api/security/{ep}"),
            &json!({"mode": "psk", "identity": ep, "key": PREVIOUS_KEY}),
        )
        .unwrap();

    let restarted = Instant::now();
    let _device = Device::start(&net, config);
    // Within the helper's 60 s bound; without a fast handshake failure
    // each Register would wait ~93 s for CoAP to give up.
    let session = wait_for("the device bootstraps again and registers", || {
        let s = net.bootstrap_sessions(ep);
        (s.len() == 2 && s[1]["status"] == "succeeded" && !offline(&net, ep)).then(|| s[1].clone())
    });
    eprintln!(
        "measured: registered again {:.1} s after the restart with a key the server no longer had",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(session["security"], "psk", "{session:#}");
    let second = stored_server_account(&data_dir);
    assert_ne!(second["secret"], first["secret"], "a fresh key");
    assert_eq!(second["identity"], first["identity"]);
    // Installed software survived both bootstraps, still active.
    let sw = net.read(ep, "/9/0");
    assert_eq!(sw["/9/0/0"], "counter", "{sw:#}");
    assert_eq!(sw["/9/0/12"], true, "{sw:#}");
}

/// What the relay did.
#[derive(Debug, Default)]
struct RelayStats {
    /// Datagrams seen, dropped.
    to_server: (u32, u32),
    /// Datagrams seen, dropped.
    to_device: (u32, u32),
    finish_dropped: bool,
}

/// A UDP relay in front of the bootstrap server's DTLS port that loses
/// datagrams deterministically: the 3rd, 6th, 9th... each way, and the
/// first datagram of the Finish exchange (the server's `POST /bs`). After
/// that nothing more is lost (a lost 2.04 to Finish is the other test).
///
/// The Finish is found without decrypting: it is the first application
/// data record from the server whose plaintext is 3 bytes (Uri-Path "bs")
/// longer than the server's first one, the piggy-backed 2.04 to the
/// Bootstrap-Request (same token length, no options, no payload).
struct LossyRelay {
    addr: SocketAddr,
    stats: Arc<Mutex<RelayStats>>,
    stop: Arc<AtomicBool>,
}

/// DTLS record: content type 23 is application data; bytes 11-12 the length.
fn app_data_len(datagram: &[u8]) -> Option<usize> {
    (datagram.first() == Some(&23) && datagram.len() >= 13)
        .then(|| usize::from(u16::from_be_bytes([datagram[11], datagram[12]])))
}

impl LossyRelay {
    fn start(server: SocketAddr) -> LossyRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let device: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        {
            let (front, back, stats, stop, device) = (
                front.clone(),
                back.clone(),
                stats.clone(),
                stop.clone(),
                device.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    *device.lock().unwrap() = Some(from);
                    let mut st = stats.lock().unwrap();
                    st.to_server.0 += 1;
                    let drop = !st.finish_dropped && st.to_server.0 % 3 == 0;
                    if drop {
                        st.to_server.1 += 1;
                    }
                    drop_or(drop, || back.send_to(&buf[..n], server));
                }
            });
        }
        {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut first_app_data = None;
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = back.recv_from(&mut buf) else {
                        continue;
                    };
                    let datagram = &buf[..n];
                    let mut st = stats.lock().unwrap();
                    st.to_device.0 += 1;
                    let mut drop = !st.finish_dropped && st.to_device.0 % 3 == 0;
                    if let Some(len) = app_data_len(datagram) {
                        let first = *first_app_data.get_or_insert(len);
                        if !st.finish_dropped && len == first + 3 {
                            st.finish_dropped = true;
                            drop = true;
                        }
                    }
                    if drop {
                        st.to_device.1 += 1;
                    }
                    let to = *device.lock().unwrap();
                    drop_or(drop || to.is_none(), || {
                        front.send_to(datagram, to.unwrap_or(server))
                    });
                }
            });
        }
        LossyRelay { addr, stats, stop }
    }
}

fn drop_or(drop: bool, send: impl FnOnce() -> std::io::Result<usize>) {
    if !drop {
        let _ = send();
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every third datagram lost each way (DTLS handshake and CoAP), and the
/// server's first Bootstrap-Finish: retransmissions carry the bootstrap
/// through, the device registers, and its stored account is the one the
/// server holds: restarted, it registers with it without bootstrapping.
#[test]
fn lost_datagrams_do_not_stop_a_bootstrap_over_dtls() {
    let (net, bs_coaps) = bootstrap_net();
    let relay = LossyRelay::start(bs_coaps);
    let ep = "flt-loss";
    let config = bootstrap_only(&net, ep, relay.addr);
    let data_dir = net.data_dir(ep);
    let mut device = Device::start(&net, config.clone());
    net.wait_online(&[ep]);
    {
        let st = relay.stats.lock().unwrap();
        eprintln!("relay: {st:?}");
        assert!(st.finish_dropped, "the relay never saw the Finish: {st:?}");
        assert!(st.to_server.1 >= 1 && st.to_device.1 >= 2, "{st:?}");
    }
    let done = net.bootstrap_sessions(ep);
    let last = done.last().expect("a session");
    assert_eq!(last["status"], "succeeded", "{done:#?}");

    // Consistent: the stored account is the server's; the security store
    // has that identity for the endpoint ...
    let account = stored_server_account(&data_dir);
    assert_eq!(account["uri"], net.coaps_uri());
    assert_eq!(account["mode"], 0);
    assert_eq!(account["identity"], hex::encode(ep));
    let security = net.api.get(&format!("/api/security/{ep}")).unwrap();
    assert_eq!(security["identity"], ep, "{security:#}");
    // ... and its key: a new DTLS handshake with it registers, no new bootstrap.
    device.stop();
    wait_for("the device de-registered", || {
        offline(&net, ep).then_some(())
    });
    let _device = Device::start(&net, config);
    net.wait_online(&[ep]);
    assert_eq!(
        net.bootstrap_sessions(ep).len(),
        done.len(),
        "no new bootstrap"
    );
    assert_eq!(stored_server_account(&data_dir), account);
}
