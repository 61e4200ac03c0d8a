//! `wasmdm device` receiving packages from independent CoAP peers.
//!
//! Push (Write to /9/0/2, SwMgmt §5.1.2.2): lwm2m-node-lib is the LwM2M server
//! (registration, reads, Execute) but it cannot send block-wise writes, so a
//! second independent client, aiocoap (tests/peers/coap_push.py), PUTs the
//! package with RFC 7959 Block1 in 1024-byte blocks. The device takes
//! requests only from the server it registered with, so both reach it from
//! one server address ([`SharedServerAddr`]): on the wire this is what a
//! server's own Block1 push looks like.
//!
//! Pull over CoAP (Write to /9/0/3 with a coap:// URI): aiocoap-fileserver, an
//! independent CoAP file server answering with Block2, hosts the package.

mod device_support;

use device_support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// PUTs `body` to `uri` with aiocoap (Block1 when over 1024 bytes); returns
/// the script's JSON line: {"code": "2.04", "blocks": [[num, more, szx], ...], ...}.
fn aiocoap_put(uri: &str, body: &[u8], content_format: u16) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("tests/peers/coap_push.py"))
        .arg(uri)
        .arg(&file)
        .arg(content_format.to_string())
        .output()
        .expect("python3 with aiocoap must be installed (scripts/test.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "coap_push.py: {e}; stdout {stdout:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The Block1 acknowledgements of a push of `len` bytes in 1024-byte blocks
/// (RFC 7959 §2.3): 2.31 for each block with M=1 echoed, the last with M=0,
/// all with szx 6 (the device did not ask for smaller blocks).
fn expected_acks(len: usize) -> Value {
    let n = len.div_ceil(1024);
    json!(
        (0..n)
            .map(|i| json!([i, u8::from(i + 1 < n), 6]))
            .collect::<Vec<_>>()
    )
}

struct Setup {
    server: NodeServer,
    _shared: SharedServerAddr,
    device: DeviceProcess,
    ep: &'static str,
    uri: String,
    _dir: LogOnPanic,
    data: std::path::PathBuf,
}

fn setup(ep: &'static str) -> Setup {
    let server = NodeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("device");
    let shared = SharedServerAddr::start(([127, 0, 0, 1], server.port).into());
    let device = DeviceProcess::start(ep, shared.addr.port(), &data);
    let uri = format!("coap://127.0.0.1:{}/9/0/2", shared.side_port);
    let mut setup = Setup {
        server,
        _shared: shared,
        device,
        ep,
        uri,
        _dir: LogOnPanic(dir),
        data,
    };
    setup
        .server
        .wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    setup
}

#[test]
fn block1_push_from_aiocoap_installs_and_runs() {
    let Setup {
        mut server,
        device,
        ep,
        uri,
        data,
        _dir,
        _shared,
        ..
    } = setup("wasmdm-push-1");
    assert_eq!(server.read(ep, "/9/0/7"), "0");

    let package = pack_example("counter", "1.0.0");
    assert!(
        package.len() > 4 * 1024,
        "the push must take several blocks"
    );
    let r = aiocoap_put(&uri, &package, 42);
    assert_eq!(r["code"], json!("2.04"), "{r}\n{}", device.log_text());
    // Every block acknowledged with its own Block1, 1024 bytes each.
    assert_eq!(r["blocks"], expected_acks(package.len()), "{r}");

    // SwMgmt §5.1.2.3: written, verified -> DELIVERED with result 0.
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    assert_eq!(server.read(ep, "/9/0/0"), "counter");
    assert_eq!(server.read(ep, "/9/0/1"), "1.0.0");

    // A push in DELIVERED is refused on its first block and changes nothing.
    let r = aiocoap_put(&uri, &package, 42);
    assert_eq!(r["code"], json!("4.05"), "{r}");
    assert_eq!(server.read(ep, "/9/0/7"), "3");
    assert_eq!(server.read(ep, "/9/0/9"), "0");

    // Install (§5.1.3.1) then Activate (§5.2): the guest counts in its /data.
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/9"), "2");
    assert_eq!(server.read(ep, "/9/0/12"), "0");
    assert_eq!(server.execute(ep, "/9/0/10", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/12", "1", T);
    wait_until(T, "counter guest writes /data/counter", || {
        counter_value(&data).unwrap_or(0) >= 3
    });
    drop(device);
}

#[test]
fn corrupted_and_foreign_pushes_fail_with_result_codes() {
    let Setup {
        mut server,
        device,
        ep,
        uri,
        _dir,
        _shared,
        ..
    } = setup("wasmdm-push-2");

    // Flipped bytes in the middle of a real package: the archive still parses
    // but a digest no longer matches -> 53 Integrity failure, back to INITIAL
    // with the package dropped (SwMgmt §5.1.2.3, "PKG Integrity not OK").
    let mut corrupted = pack_example("counter", "1.0.0");
    let mid = corrupted.len() / 2;
    for b in &mut corrupted[mid..mid + 16] {
        *b ^= 0xff;
    }
    let r = aiocoap_put(&uri, &corrupted, 42);
    assert_eq!(
        r["code"],
        json!("2.04"),
        "every block is stored; the check comes after: {r}"
    );
    server.wait_value(ep, "/9/0/9", "53", T);
    assert_eq!(server.read(ep, "/9/0/7"), "0");

    // Bytes that are no package at all: 54 Unsupported package type (the
    // archive reader cannot recognise a package; 53 is for a package whose
    // digests or signature do not match).
    let foreign: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 13) as u8).collect();
    let r = aiocoap_put(&uri, &foreign, 42);
    assert_eq!(r["code"], json!("2.04"), "{r}");
    assert_eq!(r["blocks"], expected_acks(foreign.len()), "{r}");
    server.wait_value(ep, "/9/0/7", "0", T);
    let result = wait_result(&mut server, ep);
    assert!(
        result == "53" || result == "54",
        "non-package bytes give 53 or 54, got {result}"
    );
    assert_eq!(
        result, FOREIGN_RESULT,
        "the device's classification of non-package bytes changed"
    );
    assert_eq!(server.read(ep, "/9/0/7"), "0");

    // After both failures a good package still goes through.
    let good = pack_example("counter", "1.0.0");
    let r = aiocoap_put(&uri, &good, 42);
    assert_eq!(r["code"], json!("2.04"), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    drop(device);
}

/// What the device reports for non-package bytes (see the test above).
const FOREIGN_RESULT: &str = "54";

/// Waits until Update Result leaves the in-progress values and returns it.
fn wait_result(server: &mut NodeServer, ep: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let r = server.read(ep, "/9/0/9");
        if r != "0" && r != "1" {
            return r;
        }
        assert!(Instant::now() < deadline, "Update Result stayed {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for DELIVERED; a failure result on the way fails at once with it.
fn wait_delivered(server: &mut NodeServer, ep: &str) {
    let deadline = Instant::now() + T;
    loop {
        let state = server.read(ep, "/9/0/7");
        if state == "3" {
            return;
        }
        let result = server.read(ep, "/9/0/9");
        assert!(
            result == "0" || result == "1",
            "delivery failed: /9/0/7 = {state}, /9/0/9 = {result}"
        );
        assert!(Instant::now() < deadline, "/9/0/7 stayed {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// aiocoap-fileserver serving `dir` on a free UDP port of loopback.
struct CoapFileServer {
    child: Child,
    port: u16,
}

impl CoapFileServer {
    fn start(dir: &Path) -> CoapFileServer {
        let port = free_udp_port();
        let child = Command::new("aiocoap-fileserver")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiocoap-fileserver must be installed (scripts/test.sh does)");
        // Ready once the port is taken.
        wait_until(T, "aiocoap-fileserver binds its port", || {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
        });
        CoapFileServer { child, port }
    }
}

impl Drop for CoapFileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn coap_pull_from_aiocoap_fileserver() {
    let Setup {
        mut server,
        device,
        ep,
        data,
        _dir,
        _shared,
        ..
    } = setup("wasmdm-coap-pull-1");
    let files = tempfile::tempdir().unwrap();
    let package = pack_example("counter", "1.0.0");
    assert!(
        package.len() > 2048,
        "the pull must take several Block2 blocks"
    );
    std::fs::write(files.path().join("counter.wdm"), &package).unwrap();
    let fileserver = CoapFileServer::start(files.path());

    let r = server.write(
        ep,
        "/9/0/3",
        &format!("coap://127.0.0.1:{}/counter.wdm", fileserver.port),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_delivered(&mut server, ep);
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    assert_eq!(server.read(ep, "/9/0/0"), "counter");

    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/9"), "2");
    assert_eq!(server.execute(ep, "/9/0/10", "")["ok"], json!(true));
    wait_until(T, "the pulled counter runs", || {
        counter_value(&data).unwrap_or(0) >= 2
    });
    drop(device);
}
