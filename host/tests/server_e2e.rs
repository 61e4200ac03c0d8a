//! End to end: the wasmdm server (`serve_with`, in process, loopback,
//! ephemeral ports, its own data directory) against three real wasmdm devices
//! (`device::run` in process, each with its own data directory, runtime and a
//! shutdown the test controls), driven only through the server's HTTP API.
//!
//! - group install (pull over CoAP) + activate; upgrade by name + version
//!   (pull over HTTP) and by name only (Block1 push); a version that matches
//!   nothing is skipped;
//! - a corrupted software file on one device: Update Result 53, the old
//!   version keeps running, the others are untouched;
//! - a device stopped mid-upgrade (frozen at Execute Install): timed out, the
//!   others done;
//! - cancellation with quota 1: the pending devices are cancelled without
//!   being touched;
//! - a server restart in the middle of a campaign (a device about to pull,
//!   a device in the middle of a push): it resumes and finishes, and every
//!   device's registration reaches the restarted server.
//!
//! A device can sit behind a [`Relay`] (a UDP forwarder between it and the
//! server) that freezes it at an exact request: its `run` future is no longer
//! polled, and the request is either dropped with the link cut
//! ([`Freeze::Cut`]) or left waiting in its socket ([`Freeze::Hold`]).

mod device_support;

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use device_support::{corrupt, counter_value, pack_example};
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use wasmdm::device::config::DeviceConfig;
use wasmdm_proto::coap::block::BlockOpt;
use wasmdm_server::ctl::Client;
use wasmdm_server::{Bound, ServerConfig};

/// Upper bound of any single wait (a campaign, a registration, a guest).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- harness

/// Lets a future be frozen: while paused it is not polled at all (its
/// socket, timers and work channel go unserved), like a stopped process.
#[derive(Default)]
struct Pause {
    paused: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Pause {
    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

struct Pausable<F> {
    inner: Pin<Box<F>>,
    pause: Arc<Pause>,
}

impl<F: Future> Future for Pausable<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.pause.paused.load(Ordering::SeqCst) {
            *this.pause.waker.lock().unwrap() = Some(cx.waker().clone());
            // A resume between the check and storing the waker is not lost.
            if this.pause.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        this.inner.as_mut().poll(cx)
    }
}

type Trigger = Box<dyn Fn(&Packet) -> bool + Send>;
type OnTrigger = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

/// How a device freezes at its trigger.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freeze {
    /// The request is dropped and the link cut both ways: the device is gone.
    Cut,
    /// The request and whatever follows wait in the device's socket until it
    /// is thawed (a stopped process).
    Hold,
}

/// A UDP forwarder between one device and the server. The first request
/// from the server that matches the trigger runs `on_trigger` (the test
/// pauses the device there) and, with [`Freeze::Cut`], is dropped with the
/// link cut both ways.
struct Relay {
    /// Where the device sends (its `server`).
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    triggered: Arc<AtomicBool>,
    trigger: Arc<Mutex<Option<(Trigger, Freeze)>>>,
    on_trigger: OnTrigger,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(server: SocketAddr) -> Relay {
        let device_side = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_side = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&device_side, &server_side] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let addr = device_side.local_addr().unwrap();
        let device_side = Arc::new(device_side);
        let server_side = Arc::new(server_side);
        let device_peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let triggered = Arc::new(AtomicBool::new(false));
        let trigger: Arc<Mutex<Option<(Trigger, Freeze)>>> = Arc::default();
        let on_trigger: OnTrigger = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            // Device -> server.
            let (from, to, peer, cut, stop) = (
                device_side.clone(),
                server_side.clone(),
                device_peer.clone(),
                cut.clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, src)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    *peer.lock().unwrap() = Some(src);
                    if !cut.load(Ordering::SeqCst) {
                        let _ = to.send_to(&buf[..n], server);
                    }
                }
            }));
        }
        {
            // Server -> device.
            let (from, to, peer, cut, stop) = (
                server_side.clone(),
                device_side.clone(),
                device_peer.clone(),
                cut.clone(),
                stop.clone(),
            );
            let (triggered, trigger, on_trigger) =
                (triggered.clone(), trigger.clone(), on_trigger.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, _)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    let fired = Packet::from_bytes(&buf[..n]).ok().and_then(|p| {
                        let mut t = trigger.lock().unwrap();
                        let hit = t.as_ref().is_some_and(|(t, _)| t(&p));
                        t.take_if(|_| hit).map(|(_, freeze)| freeze)
                    });
                    if let Some(freeze) = fired {
                        if freeze == Freeze::Cut {
                            cut.store(true, Ordering::SeqCst);
                        }
                        if let Some(f) = on_trigger.lock().unwrap().as_ref() {
                            f();
                        }
                        triggered.store(true, Ordering::SeqCst);
                    }
                    let device = *peer.lock().unwrap();
                    if let (false, Some(device)) = (cut.load(Ordering::SeqCst), device) {
                        let _ = to.send_to(&buf[..n], device);
                    }
                }
            }));
        }
        Relay {
            addr,
            cut,
            triggered,
            trigger,
            on_trigger,
            stop,
            threads,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Matches a request from the server: method and /9/<any>/<resource>.
fn request_to_9(method: RequestType, resource: &'static str) -> Trigger {
    Box::new(move |p: &Packet| {
        p.header.code == MessageClass::Request(method)
            && wasmdm_proto::coap::msg::uri_path(p)
                .is_some_and(|path| path.len() == 3 && path[0] == "9" && path[2] == resource)
    })
}

/// Matches a Block1 request from the server at block `n` or later.
fn push_block(n: u32) -> Trigger {
    Box::new(move |p: &Packet| {
        p.header.code == MessageClass::Request(RequestType::Put)
            && BlockOpt::read(p, CoapOption::Block1)
                .ok()
                .flatten()
                .is_some_and(|b| b.num >= n)
    })
}

/// A wasmdm device running `device::run` on its own thread.
struct Device {
    endpoint: String,
    data_dir: PathBuf,
    pause: Arc<Pause>,
    relay: Option<Relay>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Device {
    fn start(
        rt: &tokio::runtime::Handle,
        endpoint: &str,
        server: SocketAddr,
        data_dir: PathBuf,
        lifetime: u32,
        relayed: bool,
    ) -> Device {
        let relay = relayed.then(|| Relay::start(server));
        let config = DeviceConfig {
            endpoint: endpoint.into(),
            server: format!("coap://{}", relay.as_ref().map_or(server, |r| r.addr)),
            bind: "127.0.0.1:0".into(),
            lifetime,
            data_dir: data_dir.clone(),
            max_instances: 8,
            ..DeviceConfig::default()
        };
        let pause = Arc::new(Pause::default());
        if let Some(r) = &relay {
            let p = pause.clone();
            *r.on_trigger.lock().unwrap() = Some(Box::new(move || p.pause()));
        }
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (rt, gate) = (rt.clone(), pause.clone());
        let thread = std::thread::Builder::new()
            .name(endpoint.into())
            .spawn(move || {
                // The device future is polled here; what it spawns (guests,
                // downloads, installs) runs on the test's runtime.
                let run = wasmdm::device::run(config, async move {
                    let _ = stop_rx.await;
                });
                rt.block_on(Pausable {
                    inner: Box::pin(run),
                    pause: gate,
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
            })
            .unwrap();
        Device {
            endpoint: endpoint.into(),
            data_dir,
            pause,
            relay,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Freezes the device at the first server request matching `trigger`.
    fn freeze_at(&self, trigger: Trigger, freeze: Freeze) {
        let relay = self.relay.as_ref().expect("device is not relayed");
        *relay.trigger.lock().unwrap() = Some((trigger, freeze));
    }

    fn frozen(&self) -> bool {
        self.relay
            .as_ref()
            .is_some_and(|r| r.triggered.load(Ordering::SeqCst))
    }

    /// Thaws a frozen device: the link is restored and it runs again.
    fn thaw(&self) {
        if let Some(r) = &self.relay {
            *r.trigger.lock().unwrap() = None;
            r.cut.store(false, Ordering::SeqCst);
        }
        self.pause.resume();
    }

    fn counter(&self) -> Option<u64> {
        counter_value(&self.data_dir)
    }

    /// Stops the device (de-registration included), within a deadline.
    fn shutdown(&mut self) {
        self.thaw();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                if let Err(e) = t.join().unwrap() {
                    eprintln!("device {} stopped with: {e}", self.endpoint);
                }
            } else {
                eprintln!("device {} did not stop in time", self.endpoint);
            }
        }
    }
}

/// The server, in process on the test's runtime.
struct Server {
    bound: Bound,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), wasmdm_server::ServerError>>>,
}

impl Server {
    /// Starts on `coap` and `http` (port 0 = any); a server stopped a moment
    /// ago may still hold its database or ports, so this retries a while.
    fn start(
        rt: &tokio::runtime::Runtime,
        dir: &Path,
        coap: SocketAddr,
        http: SocketAddr,
    ) -> Server {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut config = ServerConfig::new(coap, http, dir.to_path_buf());
            config.allow_nosec = true;
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (bound_tx, bound_rx) = oneshot::channel();
            let task = rt.spawn(wasmdm_server::serve_with(
                config,
                async move {
                    let _ = stop_rx.await;
                },
                move |b| {
                    let _ = bound_tx.send(b);
                },
            ));
            match rt.block_on(bound_rx) {
                Ok(bound) => {
                    return Server {
                        bound,
                        stop: Some(stop),
                        task: Some(task),
                    };
                }
                Err(_) => {
                    let why = rt.block_on(task);
                    assert!(Instant::now() < deadline, "server did not start: {why:?}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn api(&self) -> Client {
        self.bound.client()
    }

    fn shutdown(&mut self, rt: &tokio::runtime::Runtime) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await });
            assert!(
                matches!(r, Ok(Ok(Ok(())))),
                "server did not stop cleanly: {r:?}"
            );
        }
    }
}

/// A server and three devices in one scratch directory.
struct Bench {
    devices: Vec<Device>,
    server: Server,
    api: Client,
    rt: Option<tokio::runtime::Runtime>,
    scratch: tempfile::TempDir,
}

impl Bench {
    /// `relayed[i]`: device i sits behind a [`Relay`].
    fn start(name: &str, lifetime: u32, relayed: [bool; 3]) -> Bench {
        let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out/pkg/counter");
        assert!(
            pkg.join("manifest.toml").exists(),
            "{} missing: run scripts/build-guests.sh",
            pkg.display()
        );
        // RUST_LOG=info shows the server's and devices' logs of failing tests.
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
        let server = Server::start(&rt, &scratch.path().join("server"), any, any);
        let devices: Vec<Device> = (0..3)
            .map(|i| {
                let ep = format!("{name}-{}", i + 1);
                let dir = scratch.path().join(&ep);
                Device::start(
                    rt.handle(),
                    &ep,
                    server.bound.coap,
                    dir,
                    lifetime,
                    relayed[i],
                )
            })
            .collect();
        let api = server.api();
        let bench = Bench {
            devices,
            server,
            api,
            rt: Some(rt),
            scratch,
        };
        let endpoints = bench.endpoints();
        wait_for("every device registers", || {
            let devices = bench.api.get("/api/devices").ok()?;
            let online = devices
                .as_array()?
                .iter()
                .filter(|d| d["online"] == true)
                .count();
            (online == endpoints.len()).then_some(())
        });
        bench
            .api
            .put(
                &format!("/api/groups/{name}"),
                &json!({ "endpoints": endpoints }),
            )
            .unwrap();
        bench
    }

    fn endpoints(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.endpoint.clone()).collect()
    }

    fn upload(&self, bytes: &[u8], name: &str) -> String {
        let f = self.api.upload(bytes, name, None, None).unwrap();
        f["sha256"].as_str().unwrap().to_string()
    }

    /// Creates a campaign and returns its id.
    fn campaign(&self, body: Json) -> String {
        let c = self.api.campaign(&body).unwrap();
        assert_eq!(c["status"], "running", "{c:#}");
        c["id"].as_str().unwrap().to_string()
    }

    fn get_campaign(&self, id: &str) -> Json {
        self.api.get(&format!("/api/campaigns/{id}")).unwrap()
    }

    /// Polls the campaign until it is no longer running.
    fn wait_campaign(&self, id: &str) -> Json {
        let mut last = Json::Null;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            // The server may be restarting: a failed poll is retried.
            if let Ok(c) = self.api.get(&format!("/api/campaigns/{id}")) {
                if c["status"] != "running" {
                    return c;
                }
                last = c;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("campaign {id} still running:\n{last:#}");
    }

    /// The /9 instance's resources as the device reports them now.
    fn read(&self, ep: &str, path: &str) -> Json {
        let r = self
            .api
            .dm(ep, &json!({"op": "read", "path": path, "accept": null}))
            .unwrap();
        assert_eq!(r["success"], true, "read {path} on {ep}: {r:#}");
        r["values"].clone()
    }

    /// Waits until every guest counter is past what it was (the guest runs).
    fn counters_grow(&self, which: &[usize]) {
        let before: Vec<Option<u64>> = which.iter().map(|&i| self.devices[i].counter()).collect();
        for (&i, b) in which.iter().zip(before) {
            let d = &self.devices[i];
            wait_for(
                &format!("the counter of {} grows past {b:?}", d.endpoint),
                || d.counter().filter(|&c| b.is_none_or(|b| c > b)).map(|_| ()),
            );
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for d in &mut self.devices {
            d.shutdown();
        }
        if let Some(rt) = self.rt.take() {
            if !std::thread::panicking() {
                self.server.shutdown(&rt);
            } else if let Some(s) = self.server.stop.take() {
                let _ = s.send(());
            }
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("scratch directory: {}", self.scratch.path().display());
        }
    }
}

/// Polls `f` (every 50 ms) until it returns `Some`, within [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn job<'a>(report: &'a Json, ep: &str) -> &'a Json {
    report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["endpoint"] == ep)
        .unwrap_or_else(|| panic!("no job for {ep} in {report:#}"))
}

/// One device's report line: status, Update Result, old -> new version.
fn assert_job(
    report: &Json,
    ep: &str,
    status: &str,
    result: Option<(i64, &str)>,
    versions: Option<(Option<&str>, Option<&str>)>,
) {
    let j = job(report, ep);
    assert_eq!(j["status"], status, "{ep}: {j:#}");
    match result {
        Some((code, name)) => {
            assert_eq!(j["update_result"], code, "{ep}: {j:#}");
            assert_eq!(j["update_result_name"], name, "{ep}: {j:#}");
        }
        None => assert!(j["update_result"].is_null(), "{ep}: {j:#}"),
    }
    if let Some((old, new)) = versions {
        // A free /9 instance (what an install fills) reads PkgVersion "".
        let version = |v: &Json| v.as_str().filter(|s| !s.is_empty()).map(String::from);
        let t = &j["targets"][0];
        assert_eq!(version(&t["old_version"]).as_deref(), old, "{ep}: {j:#}");
        assert_eq!(version(&t["new_version"]).as_deref(), new, "{ep}: {j:#}");
    }
}

/// The group summary: done, failed, timed out, cancelled, skipped (none pending).
fn assert_summary(
    report: &Json,
    done: u64,
    failed: u64,
    timed_out: u64,
    cancelled: u64,
    skipped: u64,
) {
    let s = &report["summary"];
    let got = [
        &s["done"],
        &s["failed"],
        &s["timed_out"],
        &s["cancelled"],
        &s["skipped"],
        &s["pending"],
    ];
    assert_eq!(
        got,
        [
            &json!(done),
            &json!(failed),
            &json!(timed_out),
            &json!(cancelled),
            &json!(skipped),
            &json!(0)
        ],
        "summary {s} of\n{report:#}"
    );
}

const INSTALLED: (i64, &str) = (2, "Software successfully installed");

/// Waits for campaign `id` and checks it finished with every device of
/// `eps` done and installed, from version `old` to `new`.
fn assert_all_installed(b: &Bench, id: &str, eps: &[String], old: Option<&str>, new: &str) -> Json {
    let report = b.wait_campaign(id);
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_summary(&report, eps.len() as u64, 0, 0, 0, 0);
    for ep in eps {
        assert_job(&report, ep, "done", Some(INSTALLED), Some((old, Some(new))));
    }
    report
}

/// Installs counter 1.0.0 on the bench's group and activates it.
fn install_v1(b: &Bench, group: &str, protocol: &str) -> Json {
    let sha = b.upload(&pack_example("counter", "1.0.0"), "counter-1.0.0.wdm");
    let id = b.campaign(json!({
        "group": group, "op": "install", "package": "counter", "file": sha,
        "delivery": "pull", "protocol": protocol, "activate": true, "timeout_secs": 60,
    }));
    assert_all_installed(b, &id, &b.endpoints(), None, "1.0.0")
}

// ------------------------------------------------------------------ tests

/// Install (CoAP pull) + activate, upgrade by name + version (HTTP pull), a
/// version matching nothing, upgrade by name (push), then a corrupted file on
/// one device.
#[test]
fn group_install_upgrades_and_a_corrupted_file() {
    let b = Bench::start("life", 60, [false; 3]);
    let eps = b.endpoints();

    // 1. Install + activate, pulled over CoAP; the guests run.
    let report = install_v1(&b, "life", "coap");
    b.counters_grow(&[0, 1, 2]);
    let instance = |ep: &str| job(&report, ep)["targets"][0]["instance"].as_u64().unwrap();
    for ep in &eps {
        let x = instance(ep);
        let v = b.read(ep, &format!("/9/{x}"));
        assert_eq!(v[format!("/9/{x}/0")], "counter");
        assert_eq!(v[format!("/9/{x}/1")], "1.0.0");
        assert_eq!(v[format!("/9/{x}/7")], 4, "INSTALLED: {v:#}");
        assert_eq!(v[format!("/9/{x}/12")], true, "active: {v:#}");
    }

    // 2a. Upgrade by name + version, pulled over HTTP.
    let v2 = b.upload(&pack_example("counter", "2.0.0"), "counter-2.0.0.wdm");
    let id = b.campaign(json!({
        "group": "life", "op": "upgrade", "package": "counter", "version": "1.0.0",
        "file": v2, "delivery": "pull", "protocol": "http", "timeout_secs": 60,
    }));
    let report = assert_all_installed(&b, &id, &eps, Some("1.0.0"), "2.0.0");
    for ep in &eps {
        assert_eq!(job(&report, ep)["targets"][0]["was_active"], true);
    }
    b.counters_grow(&[0, 1, 2]);

    // The version is a filter: 1.0.0 is gone, so nothing matches.
    let v3 = b.upload(&pack_example("counter", "3.0.0"), "counter-3.0.0.wdm");
    let id = b.campaign(json!({
        "group": "life", "op": "upgrade", "package": "counter", "version": "1.0.0",
        "file": v3, "delivery": "push", "timeout_secs": 60,
    }));
    let report = b.wait_campaign(&id);
    assert_summary(&report, 0, 0, 0, 0, 3);
    for ep in &eps {
        assert_job(&report, ep, "skipped", None, None);
    }

    // 2b. Upgrade by name only, pushed (Block1).
    let id = b.campaign(json!({
        "group": "life", "op": "upgrade", "package": "counter",
        "file": v3, "delivery": "push", "timeout_secs": 60,
    }));
    assert_all_installed(&b, &id, &eps, Some("2.0.0"), "3.0.0");
    b.counters_grow(&[0, 1, 2]);

    // 3. A corrupted file (digest mismatch inside a valid archive) on one device.
    let bad = b.upload(
        &corrupt(&pack_example("counter", "4.0.0")),
        "counter-4.0.0-bad.wdm",
    );
    let target = &eps[0];
    let id = b.campaign(json!({
        "devices": [target], "op": "upgrade", "package": "counter",
        "file": bad, "delivery": "pull", "protocol": "coap", "timeout_secs": 60,
    }));
    let report = b.wait_campaign(&id);
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_summary(&report, 0, 1, 0, 0, 0);
    assert_eq!(report["jobs"].as_array().unwrap().len(), 1);
    assert_job(
        &report,
        target,
        "failed",
        Some((53, "Package integrity check failure")),
        Some((Some("3.0.0"), None)),
    );
    // The device reports the failure and still runs 3.0.0.
    let x = instance(target);
    let v = b.read(target, &format!("/9/{x}"));
    assert_eq!(v[format!("/9/{x}/9")], 53, "{v:#}");
    assert_eq!(v[format!("/9/{x}/1")], "3.0.0", "{v:#}");
    // Its one software component is still 3.0.0 (SenML JSON: the server
    // has no model of Object 14 to type TLV values with).
    let components = b
        .api
        .dm(target, &json!({"op": "read", "path": "/14", "accept": 110}))
        .unwrap();
    let versions: Vec<&Json> = components["values"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/14/") && p.ends_with("/2"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(versions, [&json!("3.0.0")], "{components:#}");
    b.counters_grow(&[0]);
    // The others are untouched.
    for ep in &eps[1..] {
        let x = instance(ep);
        let v = b.read(ep, &format!("/9/{x}"));
        assert_eq!(v[format!("/9/{x}/1")], "3.0.0", "{v:#}");
        assert_eq!(v[format!("/9/{x}/7")], 4, "{v:#}");
        assert_eq!(v[format!("/9/{x}/9")], 2, "{v:#}");
        assert_eq!(v[format!("/9/{x}/12")], true, "{v:#}");
    }
    b.counters_grow(&[1, 2]);
}

/// (4) A device frozen right when the server executes Install (delivered,
/// not installed) times out; the others finish.
#[test]
fn a_device_stopped_mid_upgrade_times_out() {
    let b = Bench::start("stall", 60, [false, true, false]);
    let eps = b.endpoints();
    install_v1(&b, "stall", "http");
    let stalled = &b.devices[1];
    stalled.freeze_at(request_to_9(RequestType::Post, "4"), Freeze::Cut);

    let v2 = b.upload(&pack_example("counter", "2.0.0"), "counter-2.0.0.wdm");
    let id = b.campaign(json!({
        "group": "stall", "op": "upgrade", "package": "counter", "file": v2,
        "delivery": "push", "timeout_secs": 20,
    }));
    wait_for("the device freezes at Execute Install", || {
        stalled.frozen().then_some(())
    });
    let report = b.wait_campaign(&id);
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_summary(&report, 2, 0, 1, 0, 0);
    for ep in [&eps[0], &eps[2]] {
        assert_job(
            &report,
            ep,
            "done",
            Some(INSTALLED),
            Some((Some("1.0.0"), Some("2.0.0"))),
        );
    }
    // Delivered (DELIVERED leaves Update Result 0), never installed.
    let j = job(&report, &eps[1]);
    assert_job(
        &report,
        &eps[1],
        "timed_out",
        Some((0, "Initial")),
        Some((Some("1.0.0"), None)),
    );
    assert_eq!(j["update_state"], 3, "{j:#}");
    assert!(
        j["details"].as_str().unwrap_or_default().contains("20 s"),
        "{j:#}"
    );
}

/// (5) Cancellation with quota 1 while the first device is mid-upgrade: every
/// device is cancelled, the pending ones untouched (still 1.0.0, running).
#[test]
fn cancelling_a_campaign_leaves_pending_devices_untouched() {
    let b = Bench::start("cancel", 60, [true, false, false]);
    let eps = b.endpoints();
    let installed = install_v1(&b, "cancel", "coap");
    let first = &b.devices[0];
    first.freeze_at(request_to_9(RequestType::Post, "4"), Freeze::Cut);

    let v2 = b.upload(&pack_example("counter", "2.0.0"), "counter-2.0.0.wdm");
    let id = b.campaign(json!({
        "group": "cancel", "op": "upgrade", "package": "counter", "file": v2,
        "delivery": "pull", "protocol": "coap", "quota": 1, "timeout_secs": 60,
    }));
    wait_for("the first device freezes at Execute Install", || {
        first.frozen().then_some(())
    });
    let running = b.get_campaign(&id);
    assert_eq!(job(&running, &eps[0])["status"], "running", "{running:#}");
    for ep in &eps[1..] {
        assert_eq!(job(&running, ep)["status"], "pending", "{running:#}");
    }

    let cancelled = b
        .api
        .post(&format!("/api/campaigns/{id}/cancel"), &json!({}))
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    assert_summary(&cancelled, 0, 0, 0, 3, 0);
    for ep in &eps {
        assert_eq!(job(&cancelled, ep)["status"], "cancelled", "{cancelled:#}");
    }
    for ep in &eps[1..] {
        let j = job(&cancelled, ep);
        assert!(j["started_at"].is_null(), "{ep} never started: {j:#}");
        assert!(j["update_result"].is_null(), "{j:#}");
    }
    // Cancelling again is refused; nothing more happens to the campaign.
    assert!(
        b.api
            .post(&format!("/api/campaigns/{id}/cancel"), &json!({}))
            .is_err()
    );
    first.thaw();
    b.counters_grow(&[1, 2]);
    let later = b.get_campaign(&id);
    assert_eq!(
        later["jobs"], cancelled["jobs"],
        "the campaign changed after cancel"
    );
    // Nor to the pending devices: still 1.0.0, installed and running.
    for ep in &eps[1..] {
        let x = job(&installed, ep)["targets"][0]["instance"]
            .as_u64()
            .unwrap();
        let v = b.read(ep, &format!("/9/{x}"));
        assert_eq!(v[format!("/9/{x}/1")], "1.0.0", "{v:#}");
        assert_eq!(v[format!("/9/{x}/7")], 4, "{v:#}");
        assert_eq!(v[format!("/9/{x}/9")], 2, "{v:#}");
        assert_eq!(v[format!("/9/{x}/12")], true, "{v:#}");
    }
}

/// (6) The server stops while the second of three devices (quota 1) is
/// frozen in the middle of its part and starts again on the same data
/// directory and ports: the campaign resumes and finishes; every device's
/// registration reaches the restarted server.
fn restart_mid_campaign(
    b: &mut Bench,
    campaign: Json,
    freeze: (Trigger, Freeze),
    old: Option<&str>,
) {
    let eps = b.endpoints();
    let new = campaign["file_version"].as_str().unwrap().to_string();
    let sha = b.upload(&pack_example("counter", &new), "counter.wdm");
    let mut body = campaign;
    body["file"] = json!(sha);
    body.as_object_mut().unwrap().remove("file_version");
    let second = &b.devices[1];
    second.freeze_at(freeze.0, freeze.1);
    let id = b.campaign(body);
    wait_for("the second device freezes", || {
        second.frozen().then_some(())
    });
    let before = b.get_campaign(&id);
    assert_eq!(job(&before, &eps[0])["status"], "done", "{before:#}");
    assert_eq!(job(&before, &eps[1])["status"], "running", "{before:#}");
    assert_eq!(job(&before, &eps[2])["status"], "pending", "{before:#}");

    let bound = b.server.bound.clone();
    let rt = b.rt.take().unwrap();
    b.server.shutdown(&rt);
    let restarted_at = wasmdm_server::driver::unix_ms();
    let dir = b.scratch.path().join("server");
    b.server = Server::start(&rt, &dir, bound.coap, bound.http);
    b.rt = Some(rt);
    b.api = b.server.api();
    b.devices[1].thaw();

    assert_all_installed(b, &id, &eps, old, &new);
    b.counters_grow(&[0, 1, 2]);
    // Every device talks to the restarted server's registration interface.
    for ep in &eps {
        wait_for(&format!("{ep} refreshes its registration"), || {
            let d = b.api.get(&format!("/api/devices/{ep}")).ok()?;
            let updated = d["registration"]["updated_at"].as_u64()?;
            (d["online"] == true && updated > restarted_at).then_some(())
        });
    }
}

/// (6) An install pulled over HTTP; the device stops (its datagrams wait)
/// just before the server writes its Package URI, and goes on after the
/// restart: the resumed campaign must wait for the pull it then starts,
/// not write the URI again.
#[test]
fn a_campaign_survives_a_server_restart_while_a_device_pulls() {
    // Short lifetime: registration Updates every 5 s.
    let mut b = Bench::start("restart-pull", 10, [false, true, false]);
    let campaign = json!({
        "group": "restart-pull", "op": "install", "package": "counter", "file_version": "1.0.0",
        "delivery": "pull", "protocol": "http", "activate": true, "quota": 1, "timeout_secs": 60,
    });
    let freeze = (request_to_9(RequestType::Put, "3"), Freeze::Hold);
    restart_mid_campaign(&mut b, campaign, freeze, None);
}

/// (6) An upgrade pushed with Block1; the device drops out in the middle of
/// the transfer and the server restarts: the push starts over.
#[test]
fn a_campaign_survives_a_server_restart_mid_push() {
    let mut b = Bench::start("restart-push", 10, [false, true, false]);
    install_v1(&b, "restart-push", "coap");
    let campaign = json!({
        "group": "restart-push", "op": "upgrade", "package": "counter", "file_version": "2.0.0",
        "delivery": "push", "quota": 1, "timeout_secs": 60,
    });
    let freeze = (push_block(4), Freeze::Cut);
    restart_mid_campaign(&mut b, campaign, freeze, Some("1.0.0"));
}
