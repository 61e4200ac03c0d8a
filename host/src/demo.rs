//! `wasmdm demo`: the whole story on loopback in one process, with no set-up.
//!
//! A `wasmdm server` and several `wasmdm device`s start on 127.0.0.1 with
//! throw-away data directories, the devices registering over DTLS with a
//! PSK generated for each (plain CoAP registrations refused); the example
//! `counter` guest is packed as
//! version 1, installed and activated on the group by a campaign, then
//! upgraded to version 2 by a second campaign with push delivery, and the
//! per-device report is printed.
//!
//! What it prints is a narration, one line per event, each headed by who it
//! is about: the server, a device's registration, each device's progress
//! through a campaign, and the guests' own output attributed to the device
//! they run on (read from each device's component log, as `wasmdm logs`
//! does). The hosts' full logs go to a file (`wasmdm demo -v` shows them
//! interleaved instead).

use crate::device::config::DeviceConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    say(
        "server",
        &format!(
            "LwM2M over DTLS on coaps://{coaps}, HTTP API on {} (plain CoAP {} serves file pulls only)",
            bound.api_base(),
            bound.coap
        ),
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
    let mut logs = Vec::new();
    for (endpoint, key) in endpoints.iter().zip(keys) {
        logs.push((
            endpoint.clone(),
            crate::state::DataDir::at(&scratch.path().join(endpoint))
                .log_file("counter", "counter"),
        ));
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
    say(
        "demo",
        &format!(
            "{} devices started, each with its own runtime and data directory",
            endpoints.len()
        ),
    );

    let done = Arc::new(AtomicBool::new(false));
    let tail = {
        let done = done.clone();
        std::thread::spawn(move || tail_guest_output(&logs, &done))
    };
    let result = local
        .run_until(async {
            let endpoints = endpoints.clone();
            blocking(move || story(&api, &endpoints, v1, v2)).await
        })
        .await;
    done.store(true, Ordering::SeqCst);
    let _ = tail.join();

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
    say(
        "server",
        "a fresh DTLS pre-shared key stored for each device (plain CoAP registrations are refused)",
    );
    Ok(keys)
}

fn story(api: &Client, endpoints: &[String], v1: Vec<u8>, v2: Vec<u8>) -> Result<Value, DemoError> {
    let err = |e: wasmdm_server::ctl::CtlError| DemoError::Api(e.to_string());
    // Wait until every device registered, saying so as each one does.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let devices = api.get("/api/devices").map_err(err)?;
        for d in devices.as_array().into_iter().flatten() {
            if let Some(ep) = d["endpoint"].as_str()
                && seen.insert(ep.to_string())
            {
                say(ep, "registered with the server over DTLS");
            }
        }
        if seen.len() >= endpoints.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    api.put("/api/groups/demo", &json!({ "endpoints": endpoints }))
        .map_err(err)?;
    say(
        "server",
        &format!("group `demo` = {}", endpoints.join(", ")),
    );

    let file = api
        .upload(&v1, "counter-1.0.0.wdm", Some("demo counter v1"), None)
        .map_err(err)?;
    let sha1 = file["sha256"].as_str().unwrap_or_default().to_string();
    say(
        "step 1",
        &format!(
            "install counter 1.0.0 ({sha1:.12}…) on group `demo` and activate it: \
             the devices pull it over HTTP, two at a time"
        ),
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

    say(
        "demo",
        "the guests run: their output follows, headed by the device; letting them count for a second",
    );
    std::thread::sleep(Duration::from_secs(1));

    let file = api
        .upload(&v2, "counter-2.0.0.wdm", Some("demo counter v2"), None)
        .map_err(err)?;
    let sha2 = file["sha256"].as_str().unwrap_or_default().to_string();
    say(
        "step 2",
        &format!(
            "upgrade group `demo` to counter 2.0.0 ({sha2:.12}…): the server pushes it \
             (CoAP Block1 inside each device's DTLS session), two at a time"
        ),
    );
    let upgrade = api
        .campaign(
            &json!({"group": "demo", "op": "upgrade", "package": "counter", "file": sha2,
                          "delivery": "push", "protocol": "coap", "quota": 2, "timeout_secs": 120}),
        )
        .map_err(err)?;
    let report = wait(api, &upgrade)?;
    // The new version's first lines, before the report.
    std::thread::sleep(Duration::from_millis(500));
    print_report(&report);
    check_done(&report, endpoints.len())?;
    say(
        "server",
        "reads /9/0 (Software Management) back from each device:",
    );
    for ep in endpoints {
        let r = api
            .dm(ep, &json!({"op": "read", "path": "/9/0", "accept": null}))
            .map_err(err)?;
        let v = &r["values"];
        say(
            ep,
            &format!(
                "/9/0 PkgName={} PkgVersion={} UpdateState={} UpdateResult={} ActivationState={}",
                v["/9/0/0"], v["/9/0/1"], v["/9/0/7"], v["/9/0/9"], v["/9/0/12"]
            ),
        );
    }
    Ok(report)
}

fn wait(api: &Client, created: &Value) -> Result<Value, DemoError> {
    let id = created["id"]
        .as_str()
        .ok_or_else(|| DemoError::Api(format!("no campaign id in {created}")))?;
    // Each device's progress, one line whenever its step or status changes
    // (the whole campaign with its jobs: a few devices, so small).
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let report = loop {
        let c = api
            .get(&format!("/api/campaigns/{id}"))
            .map_err(|e| DemoError::Api(e.to_string()))?;
        for job in c["jobs"].as_array().into_iter().flatten() {
            let Some(ep) = job["endpoint"].as_str() else {
                continue;
            };
            let now = job_progress(job);
            if last.get(ep) != Some(&now) {
                say(ep, &now);
                last.insert(ep.to_string(), now);
            }
        }
        if c["status"].as_str() != Some("running") {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let s = &report["summary"];
    say(
        "server",
        &format!(
            "campaign {id} {}: {} done, {} failed, {} timed out",
            report["status"].as_str().unwrap_or("?"),
            s["done"],
            s["failed"],
            s["timed_out"]
        ),
    );
    Ok(report)
}

/// One narration line: who it is about, then what happened.
fn say(who: &str, what: &str) {
    println!("{who:>14} │ {what}");
}

/// What a campaign's job is doing, in words: its status and, while running,
/// the step of the plan it is at.
fn job_progress(job: &Value) -> String {
    match job["status"].as_str().unwrap_or("?") {
        "running" => {
            let step = &job["plan"][job["pc"].as_u64().unwrap_or(0) as usize];
            let doing = match step {
                Value::String(s) if s == "Inspect" => "reading its installed software (/9)",
                Value::String(s) if s == "Create" => "creating a /9 instance for the package",
                Value::String(s) if s == "Deliver" => "receiving the package",
                Value::String(s) if s == "Finish" => "reading the result back",
                other => match other["Execute"]["res"].as_u64() {
                    Some(4) => "installing: verify, check against the host's worlds, compile",
                    Some(6) => "uninstalling the old version",
                    Some(10) => "activating: the guest starts",
                    Some(11) => "deactivating",
                    _ => "working",
                },
            };
            format!("campaign: {doing}")
        }
        "done" => format!(
            "campaign: done — {}",
            job["update_result_name"].as_str().unwrap_or("finished")
        ),
        "pending" => "campaign: waiting for its turn".to_string(),
        other => format!(
            "campaign: {other} — {}",
            job["details"]
                .as_str()
                .or(job["update_result_name"].as_str())
                .unwrap_or("-")
        ),
    }
}

/// Prints each device's new guest output (its `counter` component log) until
/// `done`, headed by the device: the guests run in the devices' runtimes,
/// each writing its own log, so nothing interleaves unattributed.
fn tail_guest_output(logs: &[(String, PathBuf)], done: &AtomicBool) {
    let mut printed = vec![0usize; logs.len()];
    loop {
        let last_round = done.load(Ordering::SeqCst);
        for ((endpoint, path), n) in logs.iter().zip(printed.iter_mut()) {
            let lines = crate::runtime::read_log_file(path);
            for line in lines.iter().skip(*n) {
                // "<unix ms> <source> <text>", as the runtime writes it.
                let mut parts = line.splitn(3, ' ');
                let (_, source, text) = (parts.next(), parts.next(), parts.next());
                let text = text.unwrap_or_default();
                match source {
                    Some("Host") => say(endpoint, &format!("counter [host: {text}]")),
                    Some("Stdout") => say(endpoint, &format!("counter │ {text}")),
                    // The counter logs each count through `log` as well as
                    // printing it: show the log only above info.
                    Some("Trace" | "Debug" | "Info") => {}
                    Some(other) => say(endpoint, &format!("counter │ [{other}] {text}")),
                    None => {}
                }
            }
            *n = (*n).max(lines.len());
        }
        if last_round {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    say(
        "server",
        &format!(
            "report of campaign {}:",
            report["id"].as_str().unwrap_or("?")
        ),
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
            "{:>14} │   {:<16} {:<10} {:<24} result {} ({})",
            "",
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
    let manifest = manifest
        .replacen(
            "version = \"1.0.0\"",
            &format!("version = \"{version}\""),
            1,
        )
        // The guest prints its greeting at start: the narration shows which
        // package version runs where.
        .replacen(
            "greeting = \"hello from the counter package\"",
            &format!("greeting = \"hello from counter package {version}\""),
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
