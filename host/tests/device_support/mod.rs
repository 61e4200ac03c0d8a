//! Harness for end-to-end device tests: the `wasmdm device` binary as a real
//! process, an independent LwM2M server (npm `lwm2m-node-lib`, driven through
//! tests/peers/lwm2m-server.js), and small file servers for pulls.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds a package from guest-examples/out/pkg/<name> with the given version.
pub fn pack_example(name: &str, version: &str) -> Vec<u8> {
    let src = repo().join("guest-examples/out/pkg").join(name);
    assert!(
        src.exists(),
        "{} missing: run scripts/build-guests.sh",
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let manifest_path = dir.path().join("manifest.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let manifest = manifest.replacen(
        "version = \"1.0.0\"",
        &format!("version = \"{version}\""),
        1,
    );
    std::fs::write(&manifest_path, manifest).unwrap();
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {}).unwrap();
    out
}

/// The independent LwM2M server.
pub struct NodeServer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Value>,
    /// Every event line seen so far (registrations, notifications).
    pub events: Arc<Mutex<Vec<Value>>>,
    pub port: u16,
    next_id: u64,
}

impl NodeServer {
    pub fn start() -> NodeServer {
        let port = free_udp_port();
        let script = repo().join("tests/peers/lwm2m-server.js");
        assert!(
            repo()
                .join("tests/peers/node_modules/lwm2m-node-lib")
                .exists(),
            "lwm2m-node-lib missing: run `npm ci` in tests/peers (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node must be installed for the interop tests");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("event").is_some() {
                    ev.lock().unwrap().push(v.clone());
                }
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut server = NodeServer {
            child,
            stdin,
            lines,
            events,
            port,
            next_id: 1,
        };
        server.wait_event(Duration::from_secs(30), |e| e["event"] == "ready");
        server
    }

    /// Waits for an event line matching `pred` (already seen ones count).
    pub fn wait_event(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|e| pred(e))
                .cloned()
            {
                return v;
            }
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("LwM2M server exited"),
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a server event; saw {:?}",
                self.events.lock().unwrap()
            );
        }
    }

    /// Sends one operation and returns its answer line.
    pub fn op(&mut self, mut cmd: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        writeln!(self.stdin, "{cmd}").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(v) if v["id"] == json!(id) => return v,
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("LwM2M server exited"),
            }
            assert!(Instant::now() < deadline, "no answer to {cmd}");
        }
    }

    pub fn read(&mut self, ep: &str, path: &str) -> String {
        let v = self.op(json!({"op": "read", "ep": ep, "path": path}));
        assert_eq!(v["ok"], json!(true), "read {path}: {v}");
        v["value"].as_str().unwrap_or_default().to_string()
    }

    pub fn write(&mut self, ep: &str, path: &str, value: &str) -> Value {
        self.op(json!({"op": "write", "ep": ep, "path": path, "value": value}))
    }

    pub fn execute(&mut self, ep: &str, path: &str, args: &str) -> Value {
        self.op(json!({"op": "execute", "ep": ep, "path": path, "value": args}))
    }

    /// Polls a resource until it reads `want`.
    pub fn wait_value(&mut self, ep: &str, path: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.read(ep, path);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} stayed {got:?}, wanted {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `wasmdm device` process.
pub struct DeviceProcess {
    pub child: Child,
    pub endpoint: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl DeviceProcess {
    pub fn start(endpoint: &str, server_port: u16, data_dir: &Path) -> DeviceProcess {
        Self::start_with(endpoint, server_port, data_dir, &[])
    }

    /// As [`DeviceProcess::start`], with extra command-line flags.
    pub fn start_with(
        endpoint: &str,
        server_port: u16,
        data_dir: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> DeviceProcess {
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
            .args([
                "device",
                "--endpoint",
                endpoint,
                "--bind",
                "127.0.0.1:0",
                "--lifetime",
                "60",
            ])
            .arg("--server")
            .arg(format!("coap://127.0.0.1:{server_port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        DeviceProcess {
            child,
            endpoint: endpoint.into(),
            data_dir: data_dir.into(),
            log,
        }
    }

    /// SIGKILL: no de-registration, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a clean stop with de-registration.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 file server with Range support; counts requests.
pub struct HttpFiles {
    pub base: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl HttpFiles {
    pub fn serve(files: Vec<(&'static str, Vec<u8>)>) -> HttpFiles {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().unwrap().push(head.clone());
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body = files
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, b)| b.clone());
                let response = match body {
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"e{}\"\r\nConnection: close\r\n\r\n",
                            body.len(),
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                };
                let _ = stream.write_all(&response);
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
            }
        });
        HttpFiles { base, requests }
    }
}

/// The counter the `counter` guest keeps in its private /data.
pub fn counter_value(data_dir: &Path) -> Option<u64> {
    let path = data_dir.join("appdata/counter/counter/counter");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `text` without terminal colour sequences (CSI: ESC [ ... final byte in @..~).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Keeps a test's temp dir and prints the device log in it
/// (`device.log`) if the test fails.
pub struct LogOnPanic(pub tempfile::TempDir);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.path().join("device.log");
            eprintln!(
                "---- device log ----\n{}",
                strip_ansi(&std::fs::read_to_string(log).unwrap_or_default())
            );
        }
    }
}

/// How many times `ep` registered with the server.
pub fn registrations(server: &NodeServer, ep: &str) -> usize {
    server
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "registration" && e["ep"] == ep)
        .count()
}
