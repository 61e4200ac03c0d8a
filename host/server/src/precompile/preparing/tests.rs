//! The preparing phase with a stand-in driver (the command channel) and a
//! stand-in compiler: the campaign is stored before anything compiles, the
//! driver gets it only once prepared, a device without an engine on record
//! is read, a cancel stops it before any job, a restart prepares it again.
//! No timing: every step waits for the event it needs.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use wasmdm_package::signing::SigningKey;
use wasmdm_proto::model::{Path, Value};

use super::*;
use crate::campaign::JobStatus;
use crate::core::dm::DmReply;
use crate::core::registry::Registration;
use crate::precompile::tests::{Fake, engine, package};
use crate::precompile::{Precompiler, Service};

const HASH: &str = "00aa";

/// Blocks each compile until the test opens the gate; reports each start.
#[derive(Debug)]
struct Gated {
    started: mpsc::UnboundedSender<()>,
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    compiles: AtomicUsize,
}

impl Precompiler for Gated {
    fn compile(&self, _: &DeviceEngine, wasm: &[u8]) -> Result<(String, Vec<u8>), String> {
        self.compiles.fetch_add(1, Ordering::SeqCst);
        let _ = self.started.send(());
        let _ = self.gate.lock().unwrap().recv();
        Ok((HASH.into(), wasm.to_vec()))
    }
    fn sign(&self, _: &SigningKey, c: &str, e: &str, _: &[u8]) -> String {
        format!("sig {c} {e}")
    }
}

struct World {
    _dir: tempfile::TempDir,
    state: AppState,
    driver: mpsc::Receiver<Command>,
    file: String,
}

/// A store with the package and devices `a` (engine on record, 00aa),
/// `b` (registered, no engine on record) and `c` (engine 00bb).
fn world(precompiler: Option<Arc<dyn Precompiler>>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let file = store.write_blob(&package()).unwrap();
    let registration = Registration {
        endpoint: "b".into(),
        location: "b1".into(),
        lifetime: 60,
        version: "1.1".into(),
        binding: "U".into(),
        queue_mode: false,
        sms: None,
        peer: "127.0.0.1:5683".parse().unwrap(),
        objects: Default::default(),
        registered_at: 0,
        updated_at: 0,
    };
    for (ep, engine, reg) in [
        ("a", Some(engine(HASH, true)), None),
        ("b", None, Some(registration)),
        ("c", Some(engine("00bb", true)), None),
    ] {
        let rec = DeviceRecord {
            endpoint: ep.into(),
            registration: reg,
            labels: Vec::new(),
            last_seen: 0,
            engine,
        };
        store.put(DEVICES, ep, &rec).unwrap();
    }
    let (tx, driver) = mpsc::channel(16);
    let mut state = AppState::new(
        store,
        tx,
        Default::default(),
        (String::new(), String::new()),
        crate::auth::AdminToken::new("token"),
        Default::default(),
    );
    let (key, _) = wasmdm_package::keygen().unwrap();
    state.precompile = precompiler.map(|p| Arc::new(Service::new(p, key, dir.path())));
    World {
        _dir: dir,
        state,
        driver,
        file,
    }
}

fn campaign(file: &str, eps: &[&str]) -> Campaign {
    let spec: CampaignSpec = serde_json::from_value(serde_json::json!({
        "op": "install", "package": "app", "file": file, "delivery": "push",
    }))
    .unwrap();
    let eps = eps.iter().map(|e| e.to_string()).collect();
    Campaign::new("c1".into(), None, spec, eps, 0)
}

/// /26500/0 as device `b` answers it.
fn engine_reply() -> DmReply {
    let res = |r| Path::resource(super::super::engine::ENGINE_OBJECT, 0, r);
    DmReply {
        code: 0x45,
        values: vec![
            (res(0), Value::String("wasmtime 48.0.8".into())),
            (res(1), Value::String("x86_64-linux".into())),
            (res(3), Value::String(HASH.into())),
            (res(8), Value::Boolean(true)),
        ],
        ..Default::default()
    }
}

fn stored(w: &World) -> Campaign {
    w.state.store.get_campaign("c1").unwrap().unwrap()
}

#[tokio::test]
async fn prepares_in_the_background_reads_missing_engines_then_starts() {
    let fake = Arc::new(Fake {
        hash: HASH.into(),
        compiles: AtomicUsize::new(0),
    });
    let mut w = world(Some(fake.clone()));
    let c = campaign(&w.file, &["a", "b", "c"]);
    assert!(needed(&w.state, &c.spec));
    let (c, task) = begin(&w.state, c).await.unwrap();
    // Answered at once: stored as preparing, nothing started.
    assert_eq!(c.status, CampaignStatus::Preparing);
    assert_eq!(stored(&w).status, CampaignStatus::Preparing);
    // The driver first gets the engine read of b (registered, none on record).
    match w.driver.recv().await.unwrap() {
        Command::ReadEngine { endpoint, reply } => {
            assert_eq!(endpoint, "b");
            reply
                .send(DeviceEngine::from_values(&engine_reply().values))
                .unwrap();
        }
        other => panic!("expected the engine read, got {other:?}"),
    }
    task.await.unwrap();
    // Then the campaign, running, with a and b on the variant; c's hash is
    // not what the compiler built: plain file and a note.
    let Command::StartCampaign(started) = w.driver.recv().await.unwrap() else {
        panic!("expected the campaign");
    };
    assert_eq!(started.status, CampaignStatus::Running);
    let got: Vec<Option<&str>> = started
        .jobs
        .iter()
        .map(|j| j.precompiled.as_deref())
        .collect();
    assert_eq!(got, [Some(HASH), Some(HASH), None]);
    assert_eq!(started.notes.len(), 1, "{:?}", started.notes);
    assert_eq!(fake.compiles.load(Ordering::SeqCst), 2);
    let on_disk = stored(&w);
    assert_eq!(on_disk.status, CampaignStatus::Running);
    assert_eq!(on_disk.jobs[1].precompiled.as_deref(), Some(HASH));
    // No longer preparing: a cancel goes to the driver.
    assert!(!cancel(&w.state, "c1").await.unwrap());
}

#[tokio::test]
async fn a_cancel_while_preparing_ends_it_before_any_job() {
    let (started, mut compile_started) = mpsc::unbounded_channel();
    let (open, gate) = std::sync::mpsc::channel();
    let gated = Arc::new(Gated {
        started,
        gate: std::sync::Mutex::new(gate),
        compiles: AtomicUsize::new(0),
    });
    let mut w = world(Some(gated.clone()));
    // a (00aa) and c (00bb): two groups, two compiles if not cancelled.
    let (_, task) = begin(&w.state, campaign(&w.file, &["a", "c"]))
        .await
        .unwrap();
    compile_started.recv().await.unwrap();
    assert!(cancel(&w.state, "c1").await.unwrap());
    let c = stored(&w);
    assert_eq!(c.status, CampaignStatus::Cancelled);
    assert!(c.jobs.iter().all(|j| j.status == JobStatus::Cancelled));
    assert!(c.jobs.iter().all(|j| j.started_at.is_none()));
    open.send(()).unwrap();
    open.send(()).unwrap();
    task.await.unwrap();
    // The second group was not compiled, the driver got nothing.
    assert_eq!(gated.compiles.load(Ordering::SeqCst), 1);
    assert!(w.driver.try_recv().is_err());
    assert_eq!(stored(&w).status, CampaignStatus::Cancelled);
    // Cancelled is final: not cancelled twice.
    assert!(!cancel(&w.state, "c1").await.unwrap());
}

#[tokio::test]
async fn a_restart_prepares_again_or_starts_with_plain_files() {
    // Stored as preparing when the server stopped; it restarts with a compiler.
    let fake = Arc::new(Fake {
        hash: HASH.into(),
        compiles: AtomicUsize::new(0),
    });
    let mut w = world(Some(fake.clone()));
    let mut c = campaign(&w.file, &["a"]);
    c.status = CampaignStatus::Preparing;
    w.state.store.put_campaign(&c, None).unwrap();
    let tasks = resume(&w.state).await;
    assert_eq!(tasks.len(), 1);
    for t in tasks {
        t.await.unwrap();
    }
    let Command::StartCampaign(started) = w.driver.recv().await.unwrap() else {
        panic!("expected the campaign");
    };
    assert_eq!(started.status, CampaignStatus::Running);
    assert_eq!(started.jobs[0].precompiled.as_deref(), Some(HASH));
    assert_eq!(fake.compiles.load(Ordering::SeqCst), 1);

    // The same on a server without a compiler: plain files, started.
    let mut w = world(None);
    let mut c = campaign(&w.file, &["a"]);
    c.status = CampaignStatus::Preparing;
    w.state.store.put_campaign(&c, None).unwrap();
    assert!(!needed(&w.state, &c.spec));
    for t in resume(&w.state).await {
        t.await.unwrap();
    }
    let Command::StartCampaign(started) = w.driver.recv().await.unwrap() else {
        panic!("expected the campaign");
    };
    assert_eq!(started.status, CampaignStatus::Running);
    assert_eq!(started.jobs[0].precompiled, None);
    assert_eq!(stored(&w).status, CampaignStatus::Running);
}

#[tokio::test]
async fn next_registration_arms_devices_that_registered_while_preparing() {
    let mut w = world(None);
    let mut c = campaign(&w.file, &["a", "b"]);
    c.spec.schedule = Schedule::NextRegistration;
    // b's registration (updated at 0) is not older than the campaign (0).
    let (_, task) = begin(&w.state, c).await.unwrap();
    task.await.unwrap();
    let Command::StartCampaign(started) = w.driver.recv().await.unwrap() else {
        panic!("expected the campaign");
    };
    let armed: Vec<bool> = started.jobs.iter().map(|j| j.armed).collect();
    assert_eq!(armed, [false, true]);
}
