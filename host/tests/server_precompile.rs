//! Issue 13 part 2 end to end: `wasmdm server` with the runtime's
//! precompiler reads each device's engine (/26500) at registration,
//! compiles a campaign's package once per engine hash, signs it with its
//! native-code key and delivers the variant (Block1 push, CoAP and HTTP pull);
//! devices that trust the key install without compiling. A device trusting
//! another key refuses the code and compiles itself; a device that trusts
//! no native-code key gets the plain file.

mod device_support;

use device_support::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;

/// Every log line of this process (server and devices), as text.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

struct Text(String);
impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut t = Text(String::new());
        event.record(&mut t);
        if let Ok(mut l) = LINES.lock() {
            l.push(t.0);
        }
    }
}

fn lines_with(text: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(text))
        .cloned()
        .collect()
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f";

#[test]
fn campaigns_deliver_precompiled_code_devices_adopt_or_refuse() {
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(Capture);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let mut net = Net::start(|c| {
        c.precompiler = Some(Arc::new(wasmdm::runtime::RuntimePrecompiler));
    });

    // The operator's public key, from the API; never the secret.
    let public = net.api.get("/api/native-code-key").unwrap();
    let public = public["public_key"].as_str().unwrap().to_string();
    let secret_file = net.bound.token_path.with_file_name("native-code.key");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret_b64 = secret.lines().nth(1).unwrap();
    assert!(!public.contains(secret_b64));
    assert!(lines_with(secret_b64).is_empty(), "secret logged");
    // `wasmdm ctl native-code-key` prints it as a key file devices accept.
    let data_dir = net.bound.token_path.parent().unwrap().to_str().unwrap();
    let args: Vec<String> = ["--server", net.api.base(), "--data-dir", data_dir]
        .iter()
        .map(|s| s.to_string())
        .chain(["native-code-key".to_string()])
        .collect();
    let mut printed = Vec::new();
    wasmdm_server::ctl::ctl_main(&args, std::path::Path::new("/nonexistent"), &mut printed)
        .unwrap();
    let printed = String::from_utf8(printed).unwrap();
    assert_eq!(printed.trim_end(), public.trim_end());
    assert!(!printed.contains(secret_b64));
    let keys = tempfile::tempdir().unwrap();
    let operator_key = keys.path().join("operator.pub");
    std::fs::write(&operator_key, &printed).unwrap();
    let stranger_key = keys.path().join("stranger.pub");
    let (_, stranger) = wasmdm_package::keygen().unwrap();
    wasmdm_package::signing::save_public_key(&stranger_key, &stranger).unwrap();

    let devices = [
        ("pc-push", Some(&operator_key)),
        ("pc-pull", Some(&operator_key)),
        ("pc-http", Some(&operator_key)),
        ("pc-stranger", Some(&stranger_key)),
        ("pc-plain", None),
    ];
    for (ep, key) in devices {
        let mut c = net.psk_device(ep, ep, KEY);
        c.native_code_keys = key.into_iter().cloned().collect();
        net.device(c);
    }
    let eps: Vec<&str> = devices.iter().map(|(ep, _)| *ep).collect();
    net.wait_online(&eps);
    // Each device's engine, read at registration, is in its record.
    let mut hash = String::new();
    for ep in &eps {
        let engine = wait_for(&format!("{ep}'s engine report"), || {
            let d = net.api.get(&format!("/api/devices/{ep}")).ok()?;
            (!d["engine"].is_null()).then(|| d["engine"].clone())
        });
        assert_eq!(engine["runtime_version"], wasmdm::runtime::RUNTIME_VERSION);
        assert_eq!(
            engine["accepts_precompiled"],
            *ep != "pc-plain",
            "{ep}: {engine}"
        );
        hash = engine["compatibility_hash"].as_str().unwrap().to_string();
    }

    let file = net.upload_example("hello", "1.0.0");
    // The API answers before anything is compiled: the campaign is
    // preparing; its jobs start once the code is built.
    let push_body = json!({
        "devices": ["pc-push", "pc-stranger", "pc-plain"], "op": "install",
        "package": "hello", "file": file["sha256"], "delivery": "push",
        "activate": true, "timeout_secs": 120,
    });
    let created = net.api.campaign(&push_body).unwrap();
    assert_eq!(created["status"], "preparing", "{created:#}");
    assert!(
        created["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "pending" && j["started_at"].is_null()),
        "{created:#}"
    );
    let push = wait_for("the campaign ends", || {
        let c = net
            .api
            .get(&format!("/api/campaigns/{}", created["id"].as_str()?))
            .ok()?;
        (c["status"] != "running" && c["status"] != "preparing").then_some(c)
    });
    let pull = net.campaign(json!({
        "devices": ["pc-pull"], "op": "install", "package": "hello",
        "file": file["sha256"], "delivery": "pull", "protocol": "coap",
        "activate": true, "timeout_secs": 120,
    }));
    let http = net.campaign(json!({
        "devices": ["pc-http"], "op": "install", "package": "hello",
        "file": file["sha256"], "delivery": "pull", "protocol": "http",
        "activate": true, "timeout_secs": 120,
    }));
    for report in [&push, &pull, &http] {
        assert_eq!(report["status"], "finished", "{report:#}");
        for job in report["jobs"].as_array().unwrap() {
            assert_eq!(job["status"], "done", "{report:#}");
            let want = if job["endpoint"] == "pc-plain" {
                json!(null)
            } else {
                json!(hash)
            };
            assert_eq!(job["precompiled"], want, "{job:#}");
        }
        assert!(report.get("notes").is_none(), "{report:#}");
    }
    // Compiled once for the hash, then taken from the cache.
    // (The other test here compiles hello 2.0.0; both log to LINES.)
    assert_eq!(lines_with("compiling hello 1.0.0").len(), 1);
    // pc-push, pc-pull and pc-http used the code; pc-stranger refused it.
    wait_until(
        std::time::Duration::from_secs(30),
        "installs logged",
        || lines_with("using the precompiled artifact").len() == 3,
    );
    let refused = lines_with("precompiled artifact refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("signature refused"), "{refused:?}");
}

/// `wasmdm inspect` of a variant the server built shows its `precompiled/`
/// entries as precompiled code (engine hash, signing key), not as problems.
#[tokio::test(flavor = "multi_thread")]
async fn inspect_shows_a_variants_precompiled_code() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(wasmdm_server::store::Store::open(dir.path()).unwrap());
    let plain = pack_example("hello", "2.0.0");
    let file = store.write_blob(&plain).unwrap();
    let (key, public) = wasmdm_package::keygen().unwrap();
    let service = std::sync::Arc::new(wasmdm_server::precompile::Service::new(
        Arc::new(wasmdm::runtime::RuntimePrecompiler),
        key,
        dir.path(),
    ));
    // A device engine like this host's, with the hash the server's
    // compiler builds for it.
    use wasmdm_server::precompile::Precompiler as _;
    let wasm = std::fs::read(repo().join("guest-examples/out/pkg/hello/hello.wasm")).unwrap();
    let mut engine = wasmdm_server::precompile::DeviceEngine {
        runtime_version: wasmdm::runtime::RUNTIME_VERSION.into(),
        target: format!("{}-linux", std::env::consts::ARCH),
        compatibility_hash: "0".into(),
        accepts_precompiled: true,
        ..Default::default()
    };
    let (hash, _) = wasmdm::runtime::RuntimePrecompiler
        .compile(&engine, &wasm)
        .unwrap();
    engine.compatibility_hash = hash.clone();
    let spec: wasmdm_server::campaign::CampaignSpec = serde_json::from_value(json!({
        "op": "install", "package": "hello", "file": file, "delivery": "push",
    }))
    .unwrap();
    let fresh = [("dev".to_string(), engine)].into_iter().collect();
    let prepared = service
        .prepare(&store, &spec, &["dev".to_string()], &fresh, &|| true)
        .await;
    assert_eq!(
        prepared.variants.get("dev"),
        Some(&hash),
        "{:?}",
        prepared.notes
    );
    let (variant, _) = store.variant(&file, &hash).unwrap();

    let report = wasmdm::inspect::inspect_package(&variant, &[])
        .await
        .unwrap();
    for f in report
        .files
        .iter()
        .filter(|f| f.path.starts_with("precompiled/"))
    {
        assert_eq!(f.status, "precompiled code (see below)", "{report}");
    }
    assert_eq!(
        report
            .files
            .iter()
            .filter(|f| f.path.starts_with("precompiled/"))
            .count(),
        3,
        "{report}"
    );
    assert_eq!(report.precompiled.len(), 1, "{report}");
    let p = &report.precompiled[0];
    assert_eq!(p.engine.as_deref(), Some(hash.as_str()));
    assert!(p.size > 0);
    assert_eq!(p.signed_by, wasmdm_package::signing::fingerprint(&public));
    assert!(report.runnable, "{report}");
    let text = report.to_string();
    assert!(text.contains(&format!("engine {hash}")), "{text}");
    assert!(!text.contains("not listed"), "{text}");
}
