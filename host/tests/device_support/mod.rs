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

/// The registration events of `ep` the server printed, oldest first.
pub fn registration_events(server: &NodeServer, ep: &str) -> Vec<Value> {
    server
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "registration" && e["ep"] == ep)
        .cloned()
        .collect()
}

/// How many times `ep` registered with the server.
pub fn registrations(server: &NodeServer, ep: &str) -> usize {
    registration_events(server, ep).len()
}

/// Starts `wasmdm server` with `config` on `rt`; dropping or sending on
/// the returned sender stops it.
pub fn spawn_server(
    rt: &tokio::runtime::Runtime,
    config: ServerConfig,
) -> (wasmdm_server::Bound, oneshot::Sender<()>) {
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (bound_tx, bound_rx) = oneshot::channel();
    rt.spawn(wasmdm_server::serve_with(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |b| {
            let _ = bound_tx.send(b);
        },
    ));
    (rt.block_on(bound_rx).expect("server starts"), stop)
}

/// Where the CoAP relay sends a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Server,
    Side,
}

#[derive(Default)]
struct MuxState {
    device: Option<std::net::SocketAddr>,
    side: Option<std::net::SocketAddr>,
    next_mid: u16,
    /// Relay MID -> (who sent the message, from where, its own MID).
    mids: std::collections::HashMap<u16, (Origin, std::net::SocketAddr, u16)>,
    /// Where the server's messages come from (node-coap sends requests from
    /// an agent port of its own, not from its listening port).
    server_from: std::collections::HashMap<Vec<u8>, std::net::SocketAddr>,
    /// Tokens of requests the side peer sent (their responses go back to it).
    side_tokens: std::collections::HashSet<Vec<u8>>,
}

/// One "server address" shared by two independent CoAP peers: the device
/// only takes requests from the server it registered with (its source
/// address), so a second client (aiocoap pushing a package) reaches it
/// through this relay, as a server's own Block1 push would.
///
/// The device registers with `addr`; everything it sends goes to the LwM2M
/// server, except responses to the side peer's requests (matched by token).
/// Requests from the LwM2M server and from the side peer (sent to
/// `side_port`) reach the device from `addr`, their MIDs renumbered so the
/// device's duplicate detection never confuses the two (ACKs and RSTs get
/// their original MIDs back on the way out).
pub struct SharedServerAddr {
    pub addr: std::net::SocketAddr,
    pub side_port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SharedServerAddr {
    pub fn start(server: std::net::SocketAddr) -> SharedServerAddr {
        let to_device = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to_server = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to_side = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let addr = to_device.local_addr().unwrap();
        let side_port = to_side.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = Arc::new(Mutex::new(MuxState {
            next_mid: 0x4000,
            ..MuxState::default()
        }));
        for s in [&to_device, &to_server, &to_side] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let header = |b: &[u8]| -> Option<(u8, u8, u16, Vec<u8>)> {
            let tkl = usize::from(*b.first()? & 0x0f);
            let token = b.get(4..4 + tkl)?.to_vec();
            Some((
                (b[0] >> 4) & 3,
                b[1],
                u16::from_be_bytes([b[2], b[3]]),
                token,
            ))
        };
        // From the device: to the server, or to the side peer for its responses.
        {
            let (dev, srv, side, state, stop) = (
                to_device.clone(),
                to_server.clone(),
                to_side.clone(),
                state.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((n, from)) = dev.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut msg = buf[..n].to_vec();
                    let Some((ty, code, mid, token)) = header(&msg) else {
                        continue;
                    };
                    let mut st = state.lock().unwrap();
                    st.device = Some(from);
                    let (origin, to) = if ty >= 2 {
                        // ACK / RST: back to whoever sent the CON, with its MID.
                        match st.mids.get(&mid) {
                            Some(&(origin, from, original)) => {
                                msg[2..4].copy_from_slice(&original.to_be_bytes());
                                (origin, from)
                            }
                            None => (Origin::Server, server),
                        }
                    } else if code >> 5 != 0 && st.side_tokens.contains(&token) {
                        (Origin::Side, st.side.unwrap_or(server))
                    } else if code >> 5 != 0 {
                        // A separate response or notification: to whoever asked.
                        (
                            Origin::Server,
                            st.server_from.get(&token).copied().unwrap_or(server),
                        )
                    } else {
                        (Origin::Server, server)
                    };
                    drop(st);
                    match origin {
                        Origin::Side => drop(side.send_to(&msg, to)),
                        Origin::Server => drop(srv.send_to(&msg, to)),
                    }
                }
            });
        }
        // From the server or the side peer: to the device, MIDs renumbered.
        for (sock, origin) in [
            (to_server.clone(), Origin::Server),
            (to_side.clone(), Origin::Side),
        ] {
            let (dev, state, stop) = (to_device.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut msg = buf[..n].to_vec();
                    let Some((ty, code, mid, token)) = header(&msg) else {
                        continue;
                    };
                    let mut st = state.lock().unwrap();
                    let request = code >> 5 == 0 && code != 0;
                    match origin {
                        Origin::Side => {
                            st.side = Some(from);
                            if request {
                                st.side_tokens.insert(token);
                            }
                        }
                        Origin::Server if request => {
                            st.server_from.insert(token, from);
                        }
                        Origin::Server => {}
                    }
                    if ty < 2 {
                        // CON / NON: a MID of the relay's own.
                        let new = st.next_mid;
                        st.next_mid = st.next_mid.wrapping_add(1);
                        st.mids.insert(new, (origin, from, mid));
                        msg[2..4].copy_from_slice(&new.to_be_bytes());
                    }
                    let device = st.device;
                    drop(st);
                    if let Some(d) = device {
                        let _ = dev.send_to(&msg, d);
                    }
                }
            });
        }
        SharedServerAddr {
            addr,
            side_port,
            stop,
        }
    }
}

impl Drop for SharedServerAddr {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

// ---- an in-process wasmdm server with in-process wasmdm devices ----

use serde_json::Value as Json;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use wasmdm::device::config::{DeviceConfig, Secret};
use wasmdm_server::ctl::Client;
use wasmdm_server::{Bound, ServerConfig};

pub const WAIT: Duration = Duration::from_secs(60);

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server and devices in one scratch directory, on one tokio runtime.
pub struct Net {
    pub rt: tokio::runtime::Runtime,
    pub bound: Bound,
    pub api: Client,
    server_stop: Option<oneshot::Sender<()>>,
    devices: Vec<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
    scratch: tempfile::TempDir,
}

impl Net {
    /// Uploads example package `name` packed at `version`; the file's record
    /// (`sha256`, ...).
    pub fn upload_example(&self, name: &str, version: &str) -> Json {
        self.api
            .upload(
                &pack_example(name, version),
                &format!("{name}-{version}.wdm"),
                None,
                None,
            )
            .unwrap()
    }

    /// A server with DTLS on a known port (pull URIs name it), plain CoAP,
    /// and whatever `tweak` sets.
    pub fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Net {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let coaps: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
        let mut config = ServerConfig::new(any, any, scratch.path().join("server"));
        config.coaps_addr = Some(coaps);
        config.coap_base_uri = Some(format!("coaps://{coaps}"));
        tweak(&mut config);
        let (bound, stop) = spawn_server(&rt, config);
        let api = bound.client();
        Net {
            rt,
            bound,
            api,
            server_stop: Some(stop),
            devices: Vec::new(),
            scratch,
        }
    }

    pub fn coaps_uri(&self) -> String {
        format!("coaps://{}", self.bound.coaps.unwrap())
    }

    pub fn data_dir(&self, ep: &str) -> PathBuf {
        self.scratch.path().join(ep)
    }

    /// Runs `wasmdm device` with `config` on a thread of its own.
    pub fn device(&mut self, config: DeviceConfig) {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let rt = self.rt.handle().clone();
        let thread = std::thread::spawn(move || {
            let run = wasmdm::device::run(config, async move {
                let _ = stop_rx.await;
            });
            if let Err(e) = rt.block_on(run) {
                eprintln!("device stopped: {e}");
            }
        });
        self.devices.push((stop, thread));
    }

    pub fn config(&self, ep: &str, server: String) -> DeviceConfig {
        DeviceConfig {
            endpoint: ep.into(),
            server,
            bind: "127.0.0.1:0".into(),
            lifetime: 60,
            data_dir: self.data_dir(ep),
            max_instances: 8,
            ..DeviceConfig::default()
        }
    }

    /// Stores a PSK for `ep` and returns a device config using it.
    pub fn psk_device(&self, ep: &str, identity: &str, key: &str) -> DeviceConfig {
        self.api
            .put(
                &format!("/api/security/{ep}"),
                &json!({"mode": "psk", "identity": identity, "key": key}),
            )
            .unwrap();
        DeviceConfig {
            psk_identity: Some(identity.into()),
            psk_key: Some(Secret::new(key)),
            ..self.config(ep, self.coaps_uri())
        }
    }

    /// A factory configuration with a PSK bootstrap account only (no
    /// server account), aimed at `bootstrap`, retrying after 1 s.
    pub fn psk_bootstrap_only(
        &self,
        ep: &str,
        bootstrap: SocketAddr,
        identity: &str,
        key: &str,
    ) -> DeviceConfig {
        DeviceConfig {
            server: String::new(),
            bootstrap_server: Some(format!("coaps://{bootstrap}")),
            bootstrap_psk_identity: Some(identity.into()),
            bootstrap_psk_key: Some(Secret::new(key)),
            bootstrap_retry: 1,
            ..self.config(ep, String::new())
        }
    }

    /// The bootstrap sessions the server recorded for `ep`, oldest first.
    pub fn bootstrap_sessions(&self, ep: &str) -> Vec<Json> {
        self.api
            .get(&format!("/api/bootstrap/sessions/{ep}"))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Executes /1/0/9 Bootstrap-Request Trigger on `ep` (answered 2.04).
    pub fn trigger_bootstrap(&self, ep: &str) {
        let r = self
            .api
            .dm(
                ep,
                &json!({"op": "execute", "path": "/1/0/9", "args": null}),
            )
            .unwrap();
        assert_eq!(r["success"], true, "{r:#}");
    }

    pub fn online(&self) -> Vec<String> {
        let devices = self.api.get("/api/devices").unwrap();
        let mut online: Vec<String> = devices
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["online"] == true)
            .map(|d| d["endpoint"].as_str().unwrap().to_string())
            .collect();
        online.sort();
        online
    }

    pub fn wait_online(&self, eps: &[&str]) {
        wait_for(&format!("{eps:?} register"), || {
            let online = self.online();
            eps.iter()
                .all(|e| online.iter().any(|o| o == e))
                .then_some(())
        });
    }

    pub fn read(&self, ep: &str, path: &str) -> Json {
        let r = self
            .api
            .dm(ep, &json!({"op": "read", "path": path, "accept": null}))
            .unwrap();
        assert_eq!(r["success"], true, "read {path} on {ep}: {r:#}");
        r["values"].clone()
    }

    /// Runs a campaign to its end and returns the report.
    pub fn campaign(&self, body: Json) -> Json {
        let c = self.api.campaign(&body).unwrap();
        let id = c["id"].as_str().unwrap().to_string();
        wait_for("the campaign ends", || {
            let c = self.api.get(&format!("/api/campaigns/{id}")).ok()?;
            (c["status"] != "running" && c["status"] != "preparing").then_some(c)
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (stop, thread) in self.devices.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
        if let Some(s) = self.server_stop.take() {
            let _ = s.send(());
        }
    }
}

/// `pkg` with one byte of its first component flipped: still a well-formed
/// archive with a valid manifest, but the component's sha256 no longer matches.
pub fn corrupt(pkg: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(pkg)
        .read_to_end(&mut tar)
        .unwrap();
    let (offset, size) = {
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().extension().is_some_and(|x| x == "wasm"))
            .expect("a .wasm entry");
        (entry.raw_file_position() as usize, entry.size() as usize)
    };
    tar[offset + size / 2] ^= 0xFF;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A `wasmdm device` on a [`Net`]'s runtime, in a thread of its own, that a
/// test stops (it de-registers) and starts again on the same data directory.
pub struct InProcessDevice {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessDevice {
    pub fn start(net: &Net, config: DeviceConfig) -> InProcessDevice {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let rt = net.rt.handle().clone();
        let thread = std::thread::spawn(move || {
            let run = wasmdm::device::run(config, async move {
                let _ = stop_rx.await;
            });
            if let Err(e) = rt.block_on(run) {
                eprintln!("device stopped: {e}");
            }
        });
        InProcessDevice {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InProcessDevice {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The accounts a device stored from bootstrap (`<data>/bootstrap/accounts.json`).
pub fn stored_accounts(data_dir: &Path) -> Value {
    let bytes = std::fs::read(data_dir.join("bootstrap/accounts.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
