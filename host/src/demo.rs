//! `wasmdm demo`: the whole story on loopback in one process, with no set-up.
//!
//! A `wasmdm server` and several `wasmdm device`s start on 127.0.0.1 with
//! throw-away data directories, the devices registering over DTLS with a
//! PSK generated for each (plain CoAP registrations refused); the example
//! `counter` guest is packed as
//! version 1, installed and activated on the group by a campaign (its output
//! shows in the log), then upgraded to version 2 by a second campaign with
//! push delivery, and the per-device report is printed.

use crate::device::config::DeviceConfig;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use wasmdm_server::ctl::Client;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("example guest not found at {0}: run scripts/build-guests.sh first")]
    MissingGuest(PathBuf),
    #[error("packing the example: {0}")]
    Pack(#[from] wasmdm_package::PackageError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("server: {0}")]
    Server(String),
    #[error("API call failed: {0}")]
    Api(String),
    #[error("{0}")]
    Failed(String),
}

/// Options of `wasmdm demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Directory holding `pkg/counter/` (built by scripts/build-guests.sh).
    pub guests: PathBuf,
    /// How many devices.
    pub devices: usize,
}

/// Runs the demo and returns the final campaign report.
pub async fn run(options: DemoOptions) -> Result<Value, DemoError> {
    let pkg_dir = options.guests.join("pkg/counter");
    if !pkg_dir.join("manifest.toml").exists() {
        return Err(DemoError::MissingGuest(pkg_dir));
    }
    let scratch = tempfile::tempdir()?;
    let v1 = pack_version(&pkg_dir, "1.0.0", scratch.path())?;
    let v2 = pack_version(&pkg_dir, "2.0.0", scratch.path())?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // The server, on ephemeral loopback ports.
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let loopback: std::net::SocketAddr = "127.0.0.1:0"
        .parse()
        .map_err(|_| DemoError::Failed("address".into()))?;
    let mut server_config =
        wasmdm_server::ServerConfig::new(loopback, loopback, scratch.path().join("server"));
    // The secure path: devices register over DTLS with a PSK each; plain
    // CoAP registrations are refused.
    server_config.coaps_addr = Some(loopback);
    let server = tokio::spawn(wasmdm_server::serve_with(
        server_config,
        stopped(stop_rx.clone()),
        move |b| {
            let _ = bound_tx.send(b);
        },
    ));
    let bound = bound_rx
        .await
        .map_err(|_| DemoError::Server("did not start".into()))?;
    let coaps = bound
        .coaps
        .ok_or_else(|| DemoError::Server("no DTLS port".into()))?;
    println!(
        "== server: LwM2M coaps://{coaps} (DTLS-PSK; plain CoAP {} for file pulls only), API {}",
        bound.coap,
        bound.api_base()
    );

    // The devices, each with its own data directory and runtime.
    let local = tokio::task::LocalSet::new();
    let endpoints: Vec<String> = (1..=options.devices)
        .map(|i| format!("demo-device-{i}"))
        .collect();
    let api = bound.client();
    let keys = {
        let (api, endpoints) = (api.clone(), endpoints.clone());
        blocking(move || provision_psks(&api, &endpoints)).await?
    };
    for (endpoint, key) in endpoints.iter().zip(keys) {
        let config = DeviceConfig {
            endpoint: endpoint.clone(),
            server: format!("coaps://{coaps}"),
            psk_identity: Some(endpoint.clone()),
            psk_key: Some(crate::device::config::Secret::new(key)),
            bind: "127.0.0.1:0".into(),
            lifetime: 60,
            data_dir: scratch.path().join(endpoint),
            ..DeviceConfig::default()
        };
        let rx = stop_rx.clone();
        local.spawn_local(async move {
            if let Err(e) = crate::device::run(config, stopped(rx)).await {
                tracing::error!("device stopped: {e}");
            }
        });
    }
    println!(
        "== {} devices started: {}",
        endpoints.len(),
        endpoints.join(", ")
    );

    let result = local
        .run_until(async {
            let endpoints = endpoints.clone();
            blocking(move || story(&api, &endpoints, v1, v2)).await
        })
        .await;

    let _ = stop_tx.send(true);
    // Let the devices de-register and stop their guests.
    local
        .run_until(tokio::time::sleep(Duration::from_millis(500)))
        .await;
    local.await;
    let _ = server.await;
    result
}

/// A random 128-bit PSK per device, stored with the server (identity =
/// endpoint name), as `wasmdm ctl security add EP --psk-identity EP
/// --psk-key HEX` does; returns the keys as hex for the devices' config.
fn provision_psks(api: &Client, endpoints: &[String]) -> Result<Vec<String>, DemoError> {
    let mut keys = Vec::new();
    for endpoint in endpoints {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| DemoError::Failed(format!("random: {e}")))?;
        let key = hex::encode(key);
        api.put(
            &format!("/api/security/{endpoint}"),
            &json!({"mode": "psk", "identity": endpoint, "key": key}),
        )
        .map_err(|e| DemoError::Api(e.to_string()))?;
        keys.push(key);
    }
    println!("== provisioned a DTLS pre-shared key for each device");
    Ok(keys)
}

fn story(api: &Client, endpoints: &[String], v1: Vec<u8>, v2: Vec<u8>) -> Result<Value, DemoError> {
    let err = |e: wasmdm_server::ctl::CtlError| DemoError::Api(e.to_string());
    // Wait until every device registered.
    for _ in 0..100 {
        let devices = api.get("/api/devices").map_err(err)?;
        let registered = devices.as_array().map(|d| d.len()).unwrap_or(0);
        if registered >= endpoints.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    api.put("/api/groups/demo", &json!({ "endpoints": endpoints }))
        .map_err(err)?;
    println!("== group `demo`: {}", endpoints.join(", "));

    let file = api
        .upload(&v1, "counter-1.0.0.wdm", Some("demo counter v1"), None)
        .map_err(err)?;
    let sha1 = file["sha256"].as_str().unwrap_or_default().to_string();
    println!(
        "== uploaded counter 1.0.0 ({sha1:.12}…); installing on the group (pull over HTTP), then activating"
    );
    let install = api
        .campaign(
            &json!({"group": "demo", "op": "install", "package": "counter", "file": sha1,
                          "delivery": "pull", "protocol": "http", "activate": true, "quota": 2,
                          "timeout_secs": 120}),
        )
        .map_err(err)?;
    let report = wait(api, &install)?;
    check_done(&report, endpoints.len())?;

    println!("== the guests run (count lines above); letting them count for a second");
    std::thread::sleep(Duration::from_secs(1));

    let file = api
        .upload(&v2, "counter-2.0.0.wdm", Some("demo counter v2"), None)
        .map_err(err)?;
    let sha2 = file["sha256"].as_str().unwrap_or_default().to_string();
    println!(
        "== uploaded counter 2.0.0 ({sha2:.12}…); upgrading the group (push, Block1 over CoAP in the DTLS session)"
    );
    let upgrade = api
        .campaign(
            &json!({"group": "demo", "op": "upgrade", "package": "counter", "file": sha2,
                          "delivery": "push", "protocol": "coap", "quota": 2, "timeout_secs": 120}),
        )
        .map_err(err)?;
    let report = wait(api, &upgrade)?;
    print_report(&report);
    check_done(&report, endpoints.len())?;
    for ep in endpoints {
        let r = api
            .dm(ep, &json!({"op": "read", "path": "/9/0", "accept": null}))
            .map_err(err)?;
        let v = &r["values"];
        println!(
            "   {ep}: /9/0 PkgName={} PkgVersion={} UpdateState={} UpdateResult={} ActivationState={}",
            v["/9/0/0"], v["/9/0/1"], v["/9/0/7"], v["/9/0/9"], v["/9/0/12"]
        );
    }
    Ok(report)
}

fn wait(api: &Client, created: &Value) -> Result<Value, DemoError> {
    let id = created["id"]
        .as_str()
        .ok_or_else(|| DemoError::Api(format!("no campaign id in {created}")))?;
    api.wait(id, |c| {
        let s = &c["summary"];
        println!(
            "   campaign {id}: {} — done {} failed {} timed out {} pending {}",
            c["status"].as_str().unwrap_or("?"),
            s["done"],
            s["failed"],
            s["timed_out"],
            s["pending"]
        );
    })
    .map_err(|e| DemoError::Api(e.to_string()))
}

fn check_done(report: &Value, expected: usize) -> Result<(), DemoError> {
    let done = report["summary"]["done"].as_u64().unwrap_or(0);
    if done as usize == expected {
        Ok(())
    } else {
        print_report(report);
        Err(DemoError::Failed(format!(
            "campaign finished with {done} of {expected} devices done"
        )))
    }
}

fn print_report(report: &Value) {
    println!(
        "== report of campaign {}",
        report["id"].as_str().unwrap_or("?")
    );
    for job in report["jobs"].as_array().into_iter().flatten() {
        let versions: Vec<String> = job["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "/9/{} {} -> {}",
                    t["instance"],
                    t["old_version"].as_str().unwrap_or("-"),
                    t["new_version"].as_str().unwrap_or("-")
                )
            })
            .collect();
        println!(
            "   {:<16} {:<10} {:<24} result {} ({})",
            job["endpoint"].as_str().unwrap_or("?"),
            job["status"].as_str().unwrap_or("?"),
            versions.join(", "),
            job["update_result"],
            job["update_result_name"].as_str().unwrap_or("-")
        );
    }
}

/// Packs the example at `version` into memory.
fn pack_version(src: &Path, version: &str, scratch: &Path) -> Result<Vec<u8>, DemoError> {
    let dir = scratch.join(format!("counter-{version}"));
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    let manifest = std::fs::read_to_string(dir.join("manifest.toml"))?;
    let manifest = manifest.replacen(
        "version = \"1.0.0\"",
        &format!("version = \"{version}\""),
        1,
    );
    std::fs::write(dir.join("manifest.toml"), manifest)?;
    let mut out = Vec::new();
    wasmdm_package::pack(&dir, &mut out, None, &mut |_| {})?;
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DemoError> + Send + 'static,
) -> Result<T, DemoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DemoError::Failed(e.to_string()))?
}
