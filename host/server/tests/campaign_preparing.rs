//! Issue 13: a campaign that installs a package on a server that
//! precompiles is created `preparing` and answered at once; a campaign a
//! restart caught while preparing is prepared again at start (here by a
//! server without a precompiler: it starts with plain files) and can be
//! cancelled. The compiles themselves: `precompile::preparing` unit tests
//! and host/tests/server_precompile.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, eventually};
use serde_json::{Value as Json, json};
use wasmdm_server::campaign::{Campaign, CampaignSpec, CampaignStatus};
use wasmdm_server::precompile::{DeviceEngine, Precompiler};

/// Never asked: no device here reports an engine.
#[derive(Debug)]
struct Unused;

impl Precompiler for Unused {
    fn compile(&self, _: &DeviceEngine, _: &[u8]) -> Result<(String, Vec<u8>), String> {
        Err("not in this test".into())
    }
    fn sign(&self, _: &wasmdm_package::signing::SigningKey, _: &str, _: &str, _: &[u8]) -> String {
        String::new()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn status_becomes(c: &wasmdm_server::ctl::Client, id: &str, want: &'static str) -> Json {
    let (c, id) = (c.clone(), id.to_string());
    eventually(Duration::from_secs(30), move || {
        let v = c.get(&format!("/api/campaigns/{id}")).ok()?;
        (v["status"] == want).then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("campaign never {want}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_preparing_then_runs_and_a_restart_resumes_preparation() {
    let dir = tempfile::tempdir().unwrap();
    let coap = "127.0.0.1:0".parse().unwrap();
    let server = TestServer::start_with(dir.path(), coap, |c| {
        c.precompiler = Some(Arc::new(Unused));
    })
    .await;
    let c = server.client();
    let cc = c.clone();
    let sha = blocking(move || cc.upload(&[7u8; 300], "app", None, None).unwrap()).await["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"op": "install", "package": "app", "devices": ["offline-1"],
        "file": sha, "delivery": "push", "timeout_secs": 60});
    let cc = c.clone();
    let created = blocking(move || cc.campaign(&body).unwrap()).await;
    assert_eq!(created["status"], "preparing", "{created:#}");
    let id = created["id"].as_str().unwrap().to_string();
    // Nothing to compile for (no engine reported): it runs, its device
    // waits to come online.
    let running = status_becomes(&c, &id, "running").await;
    assert_eq!(running["jobs"][0]["status"], "pending", "{running:#}");
    // An uninstall has nothing to compile: running at once, as before.
    let cc = c.clone();
    let body = json!({"op": "uninstall", "package": "app", "devices": ["offline-1"]});
    let plain = blocking(move || cc.campaign(&body).unwrap()).await;
    assert_eq!(plain["status"], "running", "{plain:#}");
    server.shutdown().await;

    // A campaign stored as preparing (the server stopped mid-compile)...
    {
        let store = wasmdm_server::store::Store::open(dir.path()).unwrap();
        let spec: CampaignSpec = serde_json::from_value(json!({
            "op": "install", "package": "app", "file": sha, "delivery": "push",
        }))
        .unwrap();
        let mut c = Campaign::new("cprep".into(), None, spec, vec!["offline-2".into()], 0);
        c.status = CampaignStatus::Preparing;
        store.put_campaign(&c, None).unwrap();
    }
    // ...is prepared again at start: this server has no precompiler, so it
    // starts with the plain file.
    let server = TestServer::start(dir.path()).await;
    let c = server.client();
    let resumed = status_becomes(&c, "cprep", "running").await;
    assert!(
        resumed["jobs"][0].get("precompiled").is_none(),
        "{resumed:#}"
    );
    let cc = c.clone();
    let cancelled =
        blocking(move || cc.post("/api/campaigns/cprep/cancel", &json!({})).unwrap()).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    server.shutdown().await;
}
