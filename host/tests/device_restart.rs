//! `wasmdm device` killed with SIGKILL at awkward moments, then restarted on
//! the same data directory, with lwm2m-node-lib as the LwM2M server:
//!
//! - during an HTTP pull: the pull must resume where the durable bytes end
//!   (`Range: bytes=N-` with `If-Range: <ETag>`, RFC 9110 §14.2, §13.1.5;
//!   scenario "whole client reconnects halfway -> resumes with Range") and end
//!   DELIVERED with a package that installs;
//! - during a CoAP Block2 pull from aiocoap (tests/peers/coap_slow_file.py):
//!   the pull resumes at the first block not synced, checks the server's ETag
//!   against the one stored with the bytes (RFC 7959 §2.4), and a package
//!   changed meanwhile fails the delivery instead of being spliced;
//! - during Execute Install: afterwards either DELIVERED with result 0 (and a
//!   new Install works) or INSTALLED with result 2 (and the software really is
//!   installed); never anything in between.

mod device_support;

use device_support::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const ETAG: &str = "\"slow-v1\"";

/// The counter package made big (a 320 KiB incompressible custom section in
/// its component, which wasm runtimes ignore), so a pull spans the device's
/// periodic fsync points and takes a while. Still a valid, runnable package.
fn big_counter_package() -> Vec<u8> {
    big_counter_package_seeded(0x9e37_79b9_7f4a_7c15)
}

fn big_counter_package_seeded(seed: u64) -> Vec<u8> {
    let src = repo().join("guest-examples/out/pkg/counter");
    assert!(src.exists(), "run scripts/build-guests.sh");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let wasm_path = dir.path().join("counter.wasm");
    let mut wasm = std::fs::read(&wasm_path).unwrap();
    let name = b"wasmdm-test-padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    let mut x: u64 = seed;
    for _ in 0..320 * 1024 {
        // xorshift64: bytes gzip cannot shrink.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.push(x as u8);
    }
    wasm.push(0); // custom section id
    leb128(&mut wasm, payload.len() as u64);
    wasm.extend_from_slice(&payload);
    std::fs::write(&wasm_path, wasm).unwrap();
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {}).unwrap();
    out
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An HTTP/1.1 server that sends one file in small chunks with pauses,
/// honours `Range: bytes=N-` when `If-Range` matches its ETag, and on the
/// first connection stalls for good after `stall_after` bytes (the test kills
/// the device while it waits).
struct SlowHttp {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
    /// Body bytes written to the first connection.
    served_first: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl SlowHttp {
    fn serve(body: Vec<u8>, stall_after: u64) -> SlowHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/big.wdm", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let served_first = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, st) = (heads.clone(), served_first.clone(), stop.clone());
        let body = Arc::new(body);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let (h, s, st, body) = (h.clone(), s.clone(), st.clone(), body.clone());
                std::thread::spawn(move || {
                    let first = n == 0;
                    let _ = answer(stream, &body, &h, first.then_some((stall_after, &*s)), &st);
                });
            }
        });
        SlowHttp {
            url,
            heads,
            served_first,
            stop,
        }
    }
}

impl Drop for SlowHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(
    mut stream: std::net::TcpStream,
    body: &[u8],
    heads: &Mutex<Vec<String>>,
    stall: Option<(u64, &AtomicU64)>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    heads.lock().unwrap().push(head.clone());
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let range_start = header("range")
        .and_then(|r| {
            r.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        })
        .filter(|_| header("if-range").as_deref() == Some(ETAG))
        .filter(|s| *s < body.len());
    let (status, start) = match range_start {
        Some(s) => (
            format!(
                "206 Partial Content\r\nContent-Range: bytes {s}-{}/{}",
                body.len() - 1,
                body.len()
            ),
            s,
        ),
        None => ("200 OK".to_string(), 0),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {ETAG}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len() - start
    )?;
    let mut sent = 0u64;
    for chunk in body.get(start..).unwrap_or_default().chunks(8 * 1024) {
        if let Some((limit, _)) = stall
            && sent >= limit
        {
            // Stall: the device is killed meanwhile.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        stream.write_all(chunk)?;
        stream.flush()?;
        sent += chunk.len() as u64;
        if let Some((_, served)) = stall {
            served.store(sent, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    Ok(())
}

#[test]
fn kill_during_http_pull_resumes_with_range_and_if_range() {
    let mut server = NodeServer::start();
    let dir = LogOnPanic(tempfile::tempdir().unwrap());
    let data = dir.0.path().join("device");
    let ep = "wasmdm-restart-pull";
    let package = big_counter_package();
    assert!(package.len() > 330 * 1024, "{}", package.len());
    // Stall well past the device's first periodic fsync (256 KiB).
    let stall_after = 300 * 1024;
    let http = SlowHttp::serve(package.clone(), stall_after);

    let mut device = DeviceProcess::start(ep, server.port, &data);
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    let r = server.write(ep, "/9/0/3", &http.url);
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_until(T, "the first connection is served up to the stall", || {
        http.served_first.load(Ordering::Relaxed) >= stall_after
    });
    assert_eq!(server.read(ep, "/9/0/7"), "1", "DOWNLOAD STARTED");
    // Let the device write (and fsync) what it received.
    std::thread::sleep(Duration::from_secs(1));
    device.kill();

    let _device = DeviceProcess::start(ep, server.port, &data);
    wait_until(T, "re-registration after the kill", || {
        registrations(&server, ep) >= 2
    });
    wait_until(T, "a second GET", || http.heads.lock().unwrap().len() >= 2);
    let second = http.heads.lock().unwrap()[1].to_ascii_lowercase();
    let resumed_at = second
        .lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .and_then(|r| r.trim().strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        matches!(resumed_at, Some(n) if n > 0 && n <= stall_after),
        "the restarted pull must resume with Range: bytes=N- (N > 0); request was:\n{second}"
    );
    assert!(
        second.contains(&format!("if-range: {}", ETAG.to_ascii_lowercase())),
        "the resumed request must carry If-Range with the ETag:\n{second}"
    );

    // The resumed bytes make the same, intact package.
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    assert_eq!(http.heads.lock().unwrap().len(), 2, "exactly two requests");
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/9"), "2");
}

/// tests/peers/coap_slow_file.py: one file over CoAP Block2 (1024-byte
/// blocks, an ETag of its content) from aiocoap, each block after a short
/// pause; requests from block `stall_from` on wait for [`SlowCoap::release`].
/// Every requested block is logged, in order.
struct SlowCoap {
    child: Child,
    stdin: ChildStdin,
    /// The request lines `{"block": n, "szx": s, "etags": [...]}` seen so far.
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
    url: String,
}

impl SlowCoap {
    fn serve(file: &Path, stall_from: u32, etag: bool) -> SlowCoap {
        let port = free_udp_port();
        let mut child = Command::new("python3")
            .arg(repo().join("tests/peers/coap_slow_file.py"))
            .arg(port.to_string())
            .arg(file)
            .args(["--delay-ms", "2", "--stall-from", &stall_from.to_string()])
            .args((!etag).then_some("--no-etag"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiocoap (scripts/test.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v.get("ready").is_some() {
                    let _ = ready_tx.send(());
                }
                if v.get("block").is_some() {
                    seen.lock().unwrap().push(v);
                }
            }
        });
        ready_rx
            .recv_timeout(T)
            .expect("coap_slow_file.py did not start (is aiocoap installed?)");
        let name = file.file_name().unwrap().to_string_lossy();
        SlowCoap {
            child,
            stdin,
            requests,
            url: format!("coap://127.0.0.1:{port}/{name}"),
        }
    }

    /// Block numbers requested so far.
    fn blocks(&self) -> Vec<u64> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|v| v["block"].as_u64())
            .collect()
    }

    /// Answers the held requests and every later one.
    fn release(&mut self) {
        writeln!(self.stdin, "release").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for SlowCoap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The delivery slot's durable progress (`progress.json`): synced length and
/// resume tag (for a CoAP pull, the server's ETag in hex).
fn synced_progress(data: &Path) -> (u64, Option<String>) {
    let path = data.join("deliveries/obj9-0/progress.json");
    let Some(v) = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return (0, None);
    };
    (
        v["synced_len"].as_u64().unwrap_or(0),
        v["resume_tag"].as_str().map(str::to_owned),
    )
}

/// The ETag coap_slow_file.py gives `body` (its first 8 sha256 bytes), hex.
fn coap_etag(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(body)[..8])
}

/// Starts a CoAP pull of the big package (from a server that sends an ETag,
/// or none), stalls the server past the device's first checkpoint (256 KiB),
/// waits until that checkpoint is on disk and SIGKILLs the device. Returns
/// what the restarted device needs.
struct KilledCoapPull {
    server: NodeServer,
    /// Held for its drop: the temp dir goes (and its logs print on a panic).
    _dir: LogOnPanic,
    data: PathBuf,
    file: PathBuf,
    coap: SlowCoap,
    package: Vec<u8>,
    /// Requests the first device made.
    first_requests: usize,
    /// Bytes durable at the kill.
    synced: u64,
}

impl KilledCoapPull {
    /// Lets the file server answer again and restarts the device on the
    /// same data directory, until it has registered again.
    fn restart(&mut self, ep: &str) -> DeviceProcess {
        self.coap.release();
        let device = DeviceProcess::start(ep, self.server.port, &self.data);
        wait_until(T, "re-registration after the kill", || {
            registrations(&self.server, ep) >= 2
        });
        device
    }

    /// Block numbers the restarted device asked for, in order.
    fn resumed_blocks(&self) -> Vec<u64> {
        let requests = self.coap.requests.lock().unwrap();
        requests[self.first_requests..]
            .iter()
            .filter_map(|v| v["block"].as_u64())
            .collect()
    }

    /// The package the device holds in slot 0.
    fn delivered(&self) -> Vec<u8> {
        std::fs::read(self.data.join("deliveries/obj9-0/package.part")).unwrap_or_default()
    }
}

fn kill_during_coap_pull(ep: &str, etag: bool) -> KilledCoapPull {
    let server = NodeServer::start();
    let dir = LogOnPanic(tempfile::tempdir().unwrap());
    let data = dir.0.path().join("device");
    let package = big_counter_package();
    assert!(package.len() > 330 * 1024, "{}", package.len());
    let file = dir.0.path().join("big.wdm");
    std::fs::write(&file, &package).unwrap();
    // Block 300 (300 KiB) is past the first checkpoint (256 KiB of unsynced
    // bytes) and before the last block.
    let stall_from = 300;
    let coap = SlowCoap::serve(&file, stall_from, etag);
    let mut server = server;
    let mut device = DeviceProcess::start(ep, server.port, &data);
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    let r = server.write(ep, "/9/0/3", &coap.url);
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_until(T, "the pull reaches the stalled block", || {
        coap.blocks().contains(&u64::from(stall_from))
    });
    // The checkpoint syncs behind the transfer: wait until it is on disk.
    wait_until(T, "the first checkpoint is durable", || {
        synced_progress(&data).0 >= 256 * 1024
    });
    assert_eq!(server.read(ep, "/9/0/7"), "1", "DOWNLOAD STARTED");
    device.kill();
    let (synced, tag) = synced_progress(&data);
    assert_eq!(
        tag,
        etag.then(|| coap_etag(&package)),
        "the server's ETag is stored with the synced bytes"
    );
    let first_requests = coap.requests.lock().unwrap().len();
    let blocks = coap.blocks();
    assert_eq!(blocks.first(), Some(&0), "{blocks:?}");
    assert!(
        blocks.windows(2).all(|w| w[1] == w[0] + 1),
        "one block after the other: {blocks:?}"
    );
    KilledCoapPull {
        server,
        _dir: dir,
        data,
        file,
        coap,
        package,
        first_requests,
        synced,
    }
}

#[test]
fn kill_during_coap_pull_resumes_at_the_first_unsynced_block() {
    let ep = "wasmdm-restart-coap";
    let mut killed = kill_during_coap_pull(ep, true);
    let _device = killed.restart(ep);
    let (server, synced) = (&mut killed.server, killed.synced);
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    let resumed = killed.resumed_blocks();
    // Resume, not restart: the first block asked for is the first one not
    // synced before the kill (1024-byte blocks), then the rest in order.
    assert_eq!(
        resumed.first().copied(),
        Some(synced / 1024),
        "resumed requests: {resumed:?}"
    );
    assert!(synced / 1024 > 0);
    let last = (killed.package.len() as u64 - 1) / 1024;
    assert_eq!(
        resumed,
        (synced / 1024..=last).collect::<Vec<_>>(),
        "each remaining block once"
    );
    let requests = killed.coap.requests.lock().unwrap().clone();
    for r in &requests[killed.first_requests..] {
        // Asking with an ETag would be a validation request (RFC 7252
        // §5.10.6.2, answered 2.03 without a body); the device checks the
        // tag of the answers instead.
        assert_eq!(r["etags"], json!([]), "{r}");
        assert_eq!(r["szx"], json!(6), "{r}");
    }
    // Byte-exact: the delivered package is the served one.
    assert!(killed.delivered() == killed.package);
    let server = &mut killed.server;
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/9"), "2");
}

#[test]
fn coap_pull_of_a_package_changed_during_a_restart_fails_instead_of_splicing() {
    let ep = "wasmdm-restart-coap-changed";
    let mut killed = kill_during_coap_pull(ep, true);
    // The same URI now serves another package (another ETag).
    let new = big_counter_package_seeded(0x2545_f491_4f6c_dd1d);
    assert_ne!(coap_etag(&new), coap_etag(&killed.package));
    std::fs::write(&killed.file, &new).unwrap();
    let _device = killed.restart(ep);
    let server = &mut killed.server;
    // The resumed GET gets a block of the new package with its new ETag:
    // RFC 7959 §2.4, the blocks are not of one representation, so the
    // delivery fails (SwMgmt §5.1.2.2: back to INITIAL, the faulty package
    // removed) rather than joining old and new bytes.
    server.wait_value(ep, "/9/0/7", "0", T);
    assert_eq!(
        server.read(ep, "/9/0/9"),
        "52",
        "connection lost during download"
    );
    assert_eq!(
        killed.resumed_blocks(),
        vec![killed.synced / 1024],
        "one GET, then it stopped"
    );
    assert!(
        !killed.data.join("deliveries/obj9-0/package.part").exists(),
        "the old bytes are gone"
    );
    // A new Package URI write pulls the new package from block 0.
    let server = &mut killed.server;
    let r = server.write(ep, "/9/0/3", &killed.coap.url);
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(killed.resumed_blocks()[1], 0);
    assert!(killed.delivered() == new);
}

#[test]
fn coap_pull_without_etag_starts_over_after_a_restart() {
    let ep = "wasmdm-restart-coap-no-etag";
    let mut killed = kill_during_coap_pull(ep, false);
    assert!(killed.synced >= 256 * 1024);
    let _device = killed.restart(ep);
    let server = &mut killed.server;
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    // No ETag stored with the synced bytes: nothing shows the server still
    // has the same package (RFC 7959 §2.4), so the pull starts at block 0.
    let last = (killed.package.len() as u64 - 1) / 1024;
    assert_eq!(killed.resumed_blocks(), (0..=last).collect::<Vec<_>>());
    assert!(killed.delivered() == killed.package);
}

/// When to SIGKILL the device after Execute Install.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// As soon as the Execute was answered (the install is compiling).
    AfterAnswer,
    /// As soon as the runtime's package record appears: the runtime has
    /// committed the install, Object 9 may not have recorded it yet.
    AtRuntimeCommit,
    /// As soon as the runtime has also removed the delivery slot: the bytes
    /// to install from are gone, Object 9 may still say "installing".
    AfterSlotRemoved,
}

fn kill_during_install(point: KillPoint, ep: &'static str) {
    let mut server = NodeServer::start();
    let dir = LogOnPanic(tempfile::tempdir().unwrap());
    let data = dir.0.path().join("device");
    let files = HttpFiles::serve(vec![("/counter.wdm", pack_example("counter", "1.0.0"))]);
    let mut device = DeviceProcess::start(ep, server.port, &data);
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    let r = server.write(ep, "/9/0/3", &format!("{}/counter.wdm", files.base));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);

    let record = data.join("packages/counter/record.json");
    assert!(!record.exists());
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    match point {
        KillPoint::AfterAnswer => {}
        KillPoint::AtRuntimeCommit => {
            let deadline = Instant::now() + T;
            while !record.exists() {
                assert!(Instant::now() < deadline, "install never committed");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        KillPoint::AfterSlotRemoved => {
            let slot = data.join("deliveries/obj9-0");
            let deadline = Instant::now() + T;
            while !record.exists() || slot.exists() {
                assert!(Instant::now() < deadline, "install never removed the slot");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    device.kill();
    let installed_before_restart = record.exists();

    let _device = DeviceProcess::start(ep, server.port, &data);
    wait_until(T, "re-registration after the kill", || {
        registrations(&server, ep) >= 2
    });
    // An install re-issued from the restored state may still be running:
    // give S and R time to settle.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (state, result) = loop {
        // S and R change together in one transition: a pair read between two
        // equal reads of S is one snapshot.
        let s = server.read(ep, "/9/0/7");
        let r = server.read(ep, "/9/0/9");
        if server.read(ep, "/9/0/7") != s {
            continue;
        }
        if s != "3" || r != "0" || Instant::now() > deadline {
            break (s, r);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "{point:?}: after restart /9/0/7 = {state}, /9/0/9 = {result}; \
         runtime record at the kill: {installed_before_restart}"
    );
    match (state.as_str(), result.as_str()) {
        ("3", "0") => {
            // DELIVERED, nothing installed: a new Install must work.
            assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
            server.wait_value(ep, "/9/0/7", "4", T);
            assert_eq!(server.read(ep, "/9/0/9"), "2");
        }
        ("4", "2") => {}
        other => panic!(
            "{point:?}: inconsistent state after restart: /9/0/7, /9/0/9 = {other:?} \
             (runtime record existed at the kill: {installed_before_restart}, exists now: {})",
            record.exists()
        ),
    }
    // Either way the package is really installed now and runs.
    assert!(record.exists());
    assert_eq!(server.read(ep, "/9/0/0"), "counter");
    assert_eq!(server.execute(ep, "/9/0/10", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/12", "1", T);
    wait_until(T, "the counter runs", || {
        counter_value(&data).unwrap_or(0) >= 2
    });
}

#[test]
fn kill_right_after_install_answer_is_consistent() {
    kill_during_install(KillPoint::AfterAnswer, "wasmdm-restart-install-1");
}

#[test]
fn kill_at_runtime_install_commit_is_consistent() {
    kill_during_install(KillPoint::AtRuntimeCommit, "wasmdm-restart-install-2");
}

#[test]
fn kill_after_install_removed_the_delivery_is_consistent() {
    kill_during_install(KillPoint::AfterSlotRemoved, "wasmdm-restart-install-3");
}
