//! Client-initiated bootstrap of a wasmdm device (LwM2M 1.1 Core §5.2,
//! §6.1) against an independent bootstrap server: tests/peers/bootstrap_server.py
//! on aiocoap, over plain CoAP (NoSec, allowed here with
//! `bootstrap-allow-nosec`: aiocoap has no DTLS server without the
//! DTLSSocket module). The accounts it provisions point at a `wasmdm server`
//! over DTLS-PSK. Faults: an inconsistent Finish, a kill -9 in the middle of
//! a bootstrap, a wrong bootstrap key (against a DTLS listener).

mod device_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_support::{Net, free_udp_port, wait_for};
use serde_json::{Value as Json, json};
use wasmdm::device::config::DeviceConfig;

fn have_aiocoap() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiocoap"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with aiocoap is not installed (scripts/test.sh installs it)");
    }
    ok
}

/// The aiocoap bootstrap server and the JSON lines it printed.
struct Peer {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Json>>>,
}

impl Peer {
    fn start(sessions: &str, server_uri: &str, identity: &str, key: &str) -> Peer {
        let port = free_udp_port();
        let mut child = Command::new("python3")
            .arg(device_support::repo().join("tests/peers/bootstrap_server.py"))
            .args([
                &port.to_string(),
                sessions,
                server_uri,
                "101",
                identity,
                key,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Json>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let peer = Peer { child, port, lines };
        peer.wait(|l| l["event"] == "listening");
        peer
    }

    fn uri(&self) -> String {
        format!("coap://127.0.0.1:{}", self.port)
    }

    fn lines(&self) -> Vec<Json> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line matching `f`; returns it.
    fn wait(&self, f: impl Fn(&Json) -> bool) -> Json {
        wait_for("the bootstrap peer's line", || {
            self.lines().into_iter().find(|l| f(l))
        })
    }

    /// The `n`-th (0-based) answer to operation `op`.
    fn nth(&self, op: &str, n: usize) -> Json {
        wait_for(&format!("answer {n} to {op}"), || {
            self.lines().into_iter().filter(|l| l["op"] == op).nth(n)
        })
    }

    fn requests(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l["event"] == "request")
            .count()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &str = "00112233445566778899aabbccddeeff";

/// A device with only a bootstrap account.
fn bootstrap_only(net: &Net, ep: &str, bootstrap: &str) -> DeviceConfig {
    DeviceConfig {
        server: String::new(),
        bootstrap_server: Some(bootstrap.into()),
        bootstrap_allow_nosec: true,
        bootstrap_timeout: 5,
        bootstrap_retry: 1,
        ..net.config(ep, String::new())
    }
}

fn accounts_file(data_dir: &Path) -> PathBuf {
    data_dir.join("bootstrap/accounts.json")
}

fn dm(net: &Net, ep: &str, op: Json) -> Json {
    net.api.dm(ep, &op).unwrap()
}

/// The sequence the device answered, and what it holds afterwards.
#[test]
fn bootstraps_from_an_aiocoap_peer_registers_and_keeps_software_across_a_rebootstrap() {
    if !have_aiocoap() {
        return;
    }
    let mut net = Net::start(|_| {});
    let ep = "bs-peer-1";
    net.api
        .put(
            &format!("/api/security/{ep}"),
            &json!({"mode": "psk", "identity": ep, "key": KEY}),
        )
        .unwrap();
    let peer = Peer::start("ok", &net.coaps_uri(), ep, KEY);
    net.device(bootstrap_only(&net, ep, &peer.uri()));
    net.wait_online(&[ep]);

    let request = peer.wait(|l| l["event"] == "request");
    assert_eq!(request["ep"], ep);
    assert_eq!(request["query"], json!([format!("ep={ep}"), "pct=110"]));
    assert_eq!(peer.nth("delete /", 0)["code"], "2.02");
    // /9 holds installed software: never deleted by bootstrap.
    assert_eq!(peer.nth("delete /9", 0)["code"], "4.00");
    let discover = peer.nth("discover /", 0);
    assert_eq!(discover["code"], "2.05");
    assert_eq!(
        discover["payload"],
        format!(
            "lwm2m=\"1.1\",</0/0>;uri=\"{}\",</1>,</3/0>,</9>,</14>,</26500/0>",
            peer.uri()
        )
    );
    assert_eq!(peer.nth("write /0/1", 0)["code"], "2.04");
    assert_eq!(peer.nth("write /1/1", 0)["code"], "2.04");
    let read = peer.nth("read /1/1", 0);
    assert_eq!(read["code"], "2.05");
    assert!(
        read["payload"]
            .as_str()
            .unwrap()
            .starts_with(r#"[{"bn":"/1/1/","n":"0","v":101}"#),
        "{read}"
    );
    assert_eq!(peer.nth("finish", 0)["code"], "2.04");

    // The accounts are on disk, owner-only.
    let file = accounts_file(&net.data_dir(ep));
    let stored: Json = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["security"][1]["uri"], net.coaps_uri());
    assert_eq!(stored["servers"][0]["short_server_id"], 101);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The server reads /1 at the provisioned instance, not /0 (still 4.01).
    let lifetime = net.read(ep, "/1/1/1");
    assert!(lifetime.to_string().contains("60"), "{lifetime}");
    let r = dm(
        &net,
        ep,
        json!({"op": "read", "path": "/0/1", "accept": null}),
    );
    assert_eq!(r["success"], false, "{r}");

    // Software installed over the provisioned account...
    let v1 = net.upload_example("counter", "1.0.0");
    let report = net.campaign(json!({
        "devices": [ep], "op": "install", "package": "counter", "file": v1["sha256"],
        "delivery": "push", "activate": true, "timeout_secs": 60,
    }));
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_eq!(report["jobs"][0]["status"], "done", "{report:#}");

    // ... survives a re-bootstrap the server triggers (/1/x/9), whose
    // Bootstrap-Delete / spares /9.
    let r = dm(
        &net,
        ep,
        json!({"op": "execute", "path": "/1/1/9", "args": null}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(peer.nth("finish", 1)["code"], "2.04");
    assert_eq!(peer.nth("delete /9", 1)["code"], "4.00");
    let discover = peer.nth("discover /", 1);
    assert!(
        discover["payload"].as_str().unwrap().contains("</9/0>"),
        "{discover}"
    );
    wait_for("the device registers again with /9 intact", || {
        // Between registrations the server may refuse the request: retry.
        let r = net
            .api
            .dm(ep, &json!({"op": "read", "path": "/9", "accept": null}))
            .ok()?;
        (r["success"] == true && r.to_string().contains("counter")).then_some(())
    });
}

/// Bootstrap-Finish with no /1 for the account: 4.06 with the reason; the
/// session times out and the device stays with the account it had.
#[test]
fn an_inconsistent_finish_is_refused_and_the_working_account_stays() {
    if !have_aiocoap() {
        return;
    }
    let mut net = Net::start(|_| {});
    let ep = "bs-peer-2";
    net.api
        .put(
            &format!("/api/security/{ep}"),
            &json!({"mode": "psk", "identity": ep, "key": KEY}),
        )
        .unwrap();
    let peer = Peer::start("ok,inconsistent", &net.coaps_uri(), ep, KEY);
    net.device(bootstrap_only(&net, ep, &peer.uri()));
    net.wait_online(&[ep]);
    assert_eq!(peer.nth("finish", 0)["code"], "2.04");
    let file = accounts_file(&net.data_dir(ep));
    let before = std::fs::read(&file).unwrap();

    let r = dm(
        &net,
        ep,
        json!({"op": "execute", "path": "/1/1/9", "args": null}),
    );
    assert_eq!(r["success"], true, "{r}");
    let refused = peer.nth("finish", 1);
    assert_eq!(refused["code"], "4.06", "{refused}");
    let reason = refused["payload"].as_str().unwrap();
    assert_eq!(reason, "/0/1: no /1 instance with Short Server ID 101");
    // Abandoned after bootstrap-timeout (5 s): the same file, and the
    // device answers over its previous session.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    wait_for("the device answers over its previous session", || {
        let r = net
            .api
            .dm(ep, &json!({"op": "read", "path": "/3/0/0", "accept": null}))
            .ok()?;
        (r["success"] == true).then_some(())
    });
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// Register keeps failing with the provisioned account (a plain-CoAP
/// account the server refuses with 4.03): after /1/x/17 = 2 attempts
/// (/1/x/18 = 1 s apart) the device bootstraps again (/1/x/16 defaults to
/// true) and registers with what the second bootstrap provisions.
#[test]
fn failing_registrations_lead_to_a_new_bootstrap() {
    if !have_aiocoap() {
        return;
    }
    let mut net = Net::start(|_| {});
    let ep = "bs-regfail";
    net.api
        .put(
            &format!("/api/security/{ep}"),
            &json!({"mode": "psk", "identity": ep, "key": KEY}),
        )
        .unwrap();
    let refused = format!("nosec=coap://{}", net.bound.coap);
    let peer = Peer::start(&format!("{refused},ok"), &net.coaps_uri(), ep, KEY);
    net.device(bootstrap_only(&net, ep, &peer.uri()));
    assert_eq!(peer.nth("finish", 0)["code"], "2.04");
    // Two refused Registers later: the second bootstrap, then registered.
    assert_eq!(peer.nth("finish", 1)["code"], "2.04");
    assert_eq!(peer.requests(), 2);
    net.wait_online(&[ep]);
    let stored: Json =
        serde_json::from_slice(&std::fs::read(accounts_file(&net.data_dir(ep))).unwrap()).unwrap();
    assert_eq!(stored["security"][1]["uri"], net.coaps_uri());
}

/// A `wasmdm device` process.
struct DeviceProc {
    child: Child,
    log: PathBuf,
}

impl DeviceProc {
    fn start(ep: &str, data_dir: &Path, extra: &[String]) -> DeviceProc {
        let log = data_dir.with_extension(format!("log{}", free_udp_port()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
            .args(["device", "--endpoint", ep, "--bind", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        DeviceProc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DeviceProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// kill -9 while the bootstrap server is half-way: the accounts of the
/// last finished bootstrap stay, and the restarted device uses them
/// without bootstrapping.
#[test]
fn kill_9_mid_bootstrap_keeps_the_previous_accounts() {
    if !have_aiocoap() {
        return;
    }
    let net = Net::start(|_| {});
    let ep = "bs-kill";
    net.api
        .put(
            &format!("/api/security/{ep}"),
            &json!({"mode": "psk", "identity": ep, "key": KEY}),
        )
        .unwrap();
    let peer = Peer::start("ok,stall", &net.coaps_uri(), ep, KEY);
    let data_dir = net.data_dir(ep);
    std::fs::create_dir_all(&data_dir).unwrap();
    let flags: Vec<String> = [
        "--bootstrap-server",
        &peer.uri(),
        "--bootstrap-allow-nosec",
        "--bootstrap-timeout",
        "60",
        "--lifetime",
        "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut device = DeviceProc::start(ep, &data_dir, &flags);
    net.wait_online(&[ep]);
    assert_eq!(peer.nth("finish", 0)["code"], "2.04");
    let file = accounts_file(&data_dir);
    let before = std::fs::read(&file).unwrap();

    // Second bootstrap: both Writes answered, then the peer stalls.
    let r = dm(
        &net,
        ep,
        json!({"op": "execute", "path": "/1/1/9", "args": null}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(peer.nth("write /1/1", 1)["code"], "2.04");
    peer.wait(|l| l["op"] == "stalled");
    device.kill();
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // Restarted: the stored account is used; no new Bootstrap-Request.
    let requests = peer.requests();
    let device = DeviceProc::start(ep, &data_dir, &flags);
    wait_for("the restarted device registers", || {
        device.log().contains("registered").then_some(())
    });
    assert_eq!(peer.requests(), requests);
    let log = device.log();
    assert!(!log.contains("bootstrapping"), "{log}");
    assert!(!log.contains(KEY), "the log shows a key: {log}");
}

/// A bootstrap server that holds another key: the handshake fails, nothing
/// is stored, and the device retries with a doubling back-off.
#[test]
fn a_wrong_bootstrap_key_changes_nothing_and_is_retried_with_backoff() {
    use wasmdm_proto::dtls::{DtlsServer, ServerCredentials, ServerLimits};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let listener = std::thread::spawn(move || {
        let creds = ServerCredentials {
            psk: Some(Arc::new(|_id: &[u8]| Some(b"the-other-key-16".to_vec()))),
            ..ServerCredentials::default()
        };
        let mut dtls = DtlsServer::new(&creds, ServerLimits::default()).unwrap();
        let mut buf = [0u8; 4096];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                dtls.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            dtls.handle_timeout(Instant::now());
            while let Some(d) = dtls.poll_transmit() {
                let _ = socket.send_to(&d.bytes, d.to);
            }
            while dtls.poll_event().is_some() {}
        }
    });
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("dev");
    std::fs::create_dir_all(&data_dir).unwrap();
    let key_file = scratch.path().join("bs.key");
    std::fs::write(&key_file, "6e6f742d7468652d7269676874").unwrap();
    let flags: Vec<String> = [
        "--bootstrap-server",
        &format!("coaps://{addr}"),
        "--bootstrap-psk-identity",
        "bs-wrong",
        "--bootstrap-psk-key-file",
        key_file.to_str().unwrap(),
        "--bootstrap-retry",
        "1",
        "--bootstrap-timeout",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let device = DeviceProc::start("bs-wrong", &data_dir, &flags);
    wait_for("two failed bootstrap attempts", || {
        let log = device.log();
        (log.contains("attempt=1")
            && log.contains("attempt=2")
            && log.matches("bootstrap failed").count() >= 2)
            .then_some(())
    });
    let log = device.log();
    assert!(log.contains("DTLS handshake failed"), "{log}");
    assert!(log.contains("retry_in=1s"), "{log}");
    assert!(log.contains("retry_in=2s"), "{log}");
    assert!(!accounts_file(&data_dir).exists());
    assert!(!log.contains("6e6f742d7468652d7269676874"), "{log}");
    drop(device);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
}
