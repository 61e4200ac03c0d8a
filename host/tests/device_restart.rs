//! `wasmdm device` killed with SIGKILL at awkward moments, then restarted on
//! the same data directory, with lwm2m-node-lib as the LwM2M server:
//!
//! - during an HTTP pull: the pull must resume where the durable bytes end
//!   (`Range: bytes=N-` with `If-Range: <ETag>`, RFC 9110 §14.2, §13.1.5;
//!   scenario "whole client reconnects halfway -> resumes with Range") and end
//!   DELIVERED with a package that installs;
//! - during Execute Install: afterwards either DELIVERED with result 0 (and a
//!   new Install works) or INSTALLED with result 2 (and the software really is
//!   installed); never anything in between.

mod device_support;

use device_support::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const ETAG: &str = "\"slow-v1\"";

/// The counter package made big (a 320 KiB incompressible custom section in
/// its component, which wasm runtimes ignore), so a pull spans the device's
/// periodic fsync points and takes a while. Still a valid, runnable package.
fn big_counter_package() -> Vec<u8> {
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
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
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
