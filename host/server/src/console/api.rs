//! API endpoints the console needs beyond the CLI's: views that join what
//! the store holds (devices with their credential mode, groups and known
//! software; files with their manifests and where they are used; campaign
//! counts without the jobs; a device's history) and a live read of a
//! device's software. They sit under `/api/console/...`, behind the same
//! authentication as the rest of `/api`.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use wasmdm_proto::swmgmt::UpdateState;

use crate::campaign::{Campaign, JobStatus, update_result_name};
use crate::core::dm::{DmOp, DmReply, value_json};
use crate::driver::{Command, unix_ms};
use crate::http::{ApiError, ApiResult, AppState, ok};
use crate::store::{DEVICES, DeviceRecord, FILES, GROUPS, Group, SoftwareFile};

/// Largest software file the console inspects for its manifest (the
/// archive reader streams it with the package crate's caps; bigger files are
/// listed without manifest details).
const MAX_INSPECT: u64 = 64 * 1024 * 1024;

/// Name of an Update State value (SwMgmt §6 resource 7).
pub fn update_state_name(code: i64) -> &'static str {
    [
        UpdateState::Initial,
        UpdateState::DownloadStarted,
        UpdateState::Downloaded,
        UpdateState::Delivered,
        UpdateState::Installed,
    ]
    .into_iter()
    .find(|s| s.code() == code)
    .map(|s| s.name())
    .unwrap_or("unknown")
}

/// One /9 instance as the console last saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SoftwareRow {
    /// /9 instance id.
    pub instance: u16,
    /// PkgName (/9/x/0).
    pub name: Option<String>,
    /// PkgVersion (/9/x/1).
    pub version: Option<String>,
    /// Update State (/9/x/7).
    pub update_state: Option<i64>,
    /// Update Result (/9/x/9).
    pub update_result: Option<i64>,
    /// Activation State (/9/x/12).
    pub active: Option<bool>,
}

/// Known software of one device and where the knowledge came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Inventory {
    /// Rows by instance.
    pub rows: Vec<SoftwareRow>,
    /// Unix ms of the read or campaign step it comes from.
    pub seen_at: u64,
}

/// Software per endpoint, from the console's reads of /9 and from campaign
/// jobs (the values their steps saw): the server keeps no other copy of a
/// device's /9, and reading every device on each page view would not scale.
pub type InventoryCache = std::sync::Mutex<HashMap<String, Inventory>>;

/// Most endpoints the inventory cache holds (a bound against unbounded
/// growth from endpoints that come and go).
pub const MAX_INVENTORY: usize = 100_000;

/// Records `inv` for `ep` if it is newer than what is known.
pub fn remember(cache: &InventoryCache, ep: &str, inv: Inventory) {
    if let Ok(mut map) = cache.lock() {
        if map.len() >= MAX_INVENTORY && !map.contains_key(ep) {
            return;
        }
        match map.get(ep) {
            Some(old) if old.seen_at > inv.seen_at => {}
            _ => {
                map.insert(ep.to_string(), inv);
            }
        }
    }
}

/// The inventory a campaign job saw (its per-instance values).
pub fn inventory_of_job(job: &crate::campaign::DeviceJob) -> Option<Inventory> {
    if job.instances.is_empty() {
        return None;
    }
    let rows = job
        .instances
        .iter()
        .map(|(i, s)| SoftwareRow {
            instance: *i,
            name: s.name.clone(),
            version: s.version.clone(),
            update_state: s.update_state,
            update_result: s.update_result,
            active: s.active,
        })
        .collect();
    Some(Inventory {
        rows,
        seen_at: job
            .finished_at
            .or(job.started_at)
            .unwrap_or(job.last_activity),
    })
}

/// Credential mode per endpoint (`psk`, `rpk`, `x509`, `nosec`).
fn security_modes(s: &AppState) -> Result<HashMap<String, String>, ApiError> {
    Ok(s.store
        .list_security()?
        .into_iter()
        .map(|e| (e.endpoint, e.credential.mode().to_string()))
        .collect())
}

/// The console's view of every device.
pub fn devices_view(s: &AppState) -> Result<Vec<Json>, ApiError> {
    let devices = s.store.list::<DeviceRecord>(DEVICES)?;
    let groups = s.store.list::<Group>(GROUPS)?;
    let modes = security_modes(s)?;
    let inventory = s
        .console
        .inventory
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    Ok(devices
        .iter()
        .map(|d| device_view(d, &groups, &modes, &inventory))
        .collect())
}

fn device_view(
    d: &DeviceRecord,
    groups: &[Group],
    modes: &HashMap<String, String>,
    inventory: &HashMap<String, Inventory>,
) -> Json {
    let reg = d.registration.as_ref();
    let mode = modes.get(&d.endpoint).cloned().unwrap_or_else(|| {
        // No stored credential: only a NoSec registration can exist.
        "nosec".to_string()
    });
    json!({
        "endpoint": d.endpoint,
        "online": reg.is_some(),
        "last_seen": d.last_seen,
        "labels": d.labels,
        "groups": groups.iter().filter(|g| g.contains(d)).map(|g| &g.name).collect::<Vec<_>>(),
        "security": mode,
        "lwm2m": reg.map(|r| r.version.clone()),
        "binding": reg.map(|r| r.binding.clone()),
        "lifetime": reg.map(|r| r.lifetime),
        "registered_at": reg.map(|r| r.registered_at),
        "objects": reg.map(|r| &r.objects.objects),
        "software": inventory.get(&d.endpoint),
    })
}

pub(crate) async fn list_devices(State(s): State<AppState>) -> ApiResult {
    ok(devices_view(&s)?)
}

/// Runs one DM operation on a registered device through the driver: for
/// `POST /api/devices/{ep}/dm` and the console's actions.
pub(crate) async fn run_dm(s: &AppState, ep: &str, op: DmOp) -> Result<DmReply, ApiError> {
    if s.store
        .get::<DeviceRecord>(DEVICES, ep)?
        .and_then(|d| d.registration)
        .is_none()
    {
        return Err(ApiError::conflict(format!("device {ep} is not registered")));
    }
    let (tx, rx) = oneshot::channel();
    s.commands
        .send(Command::Dm {
            endpoint: ep.to_string(),
            op,
            reply: tx,
        })
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping"))?;
    match rx.await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string())),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server stopping",
        )),
    }
}

/// Values of a reply as `path -> JSON`.
fn values(r: &DmReply) -> BTreeMap<String, Json> {
    r.values
        .iter()
        .map(|(p, v)| (p.to_string(), value_json(v)))
        .collect()
}

/// `/o/i/r` split into numbers.
fn ids(path: &str) -> Vec<u32> {
    path.trim_start_matches('/')
        .split('/')
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn as_i64(v: &Json) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn as_bool(v: &Json) -> Option<bool> {
    v.as_bool()
        .or_else(|| v.as_i64().map(|i| i != 0))
        .or_else(|| match v.as_str() {
            Some("true" | "1") => Some(true),
            Some("false" | "0") => Some(false),
            _ => None,
        })
}

/// `GET /api/console/devices/{ep}/software`: reads /9 and /14 from the
/// device now; one row per /9 instance with the names of its Update State
/// and Update Result and its /14 components.
pub(crate) async fn device_software(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
) -> ApiResult {
    let r9 = run_dm(
        &s,
        &ep,
        DmOp::Read {
            path: "/9".into(),
            accept: None,
        },
    )
    .await?;
    if !r9.is_success() {
        // A device without software instances answers 4.04: no rows.
        if r9.code_text() != "4.04" {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the device answered {} to Read /9", r9.code_text()),
            ));
        }
    }
    // SenML JSON: the server has no model of Object 14 to type TLV with.
    let r14 = run_dm(
        &s,
        &ep,
        DmOp::Read {
            path: "/14".into(),
            accept: Some(110),
        },
    )
    .await
    .ok()
    .filter(|r| r.is_success());
    let mut rows: BTreeMap<u32, BTreeMap<u32, Json>> = BTreeMap::new();
    for (p, v) in values(&r9) {
        if let [9, i, r, ..] = ids(&p)[..] {
            rows.entry(i).or_default().insert(r, v);
        }
    }
    let mut comps: BTreeMap<u32, BTreeMap<u32, Json>> = BTreeMap::new();
    if let Some(r) = &r14 {
        for (p, v) in values(r) {
            if let [14, i, r, ..] = ids(&p)[..] {
                comps.entry(i).or_default().insert(r, v);
            }
        }
    }
    let mut out = Vec::new();
    let mut cache_rows = Vec::new();
    for (i, res) in &rows {
        let state = res.get(&7).and_then(as_i64);
        let result = res.get(&9).and_then(as_i64);
        let active = res.get(&12).and_then(as_bool);
        let name = res.get(&0).and_then(|v| v.as_str()).map(String::from);
        let version = res.get(&1).and_then(|v| v.as_str()).map(String::from);
        // /9/x/17: links "14:n" to this package's components (SwMgmt §6 res 17).
        let linked: Vec<u32> = r9
            .values
            .iter()
            .filter(|(p, _)| matches!(ids(&p.to_string())[..], [9, x, 17, ..] if x == *i))
            .filter_map(|(_, v)| match value_json(v) {
                Json::String(s) => s.split(':').nth(1).and_then(|n| n.parse().ok()),
                _ => None,
            })
            .collect();
        let components: Vec<Json> = linked
            .iter()
            .filter_map(|c| {
                comps.get(c).map(|r| {
                    json!({
                        "instance": c,
                        "identity": r.get(&0),
                        "version": r.get(&2),
                        "active": r.get(&5).and_then(as_bool),
                    })
                })
            })
            .collect();
        out.push(json!({
            "instance": i,
            "name": name,
            "version": version,
            "update_state": state,
            "update_state_name": state.map(update_state_name),
            "update_result": result,
            "update_result_name": result.map(update_result_name),
            "active": active,
            "components": components,
        }));
        cache_rows.push(SoftwareRow {
            instance: u16::try_from(*i).unwrap_or(u16::MAX),
            name,
            version,
            update_state: state,
            update_result: result,
            active,
        });
    }
    remember(
        &s.console.inventory,
        &ep,
        Inventory {
            rows: cache_rows,
            seen_at: unix_ms(),
        },
    );
    ok(out)
}

/// Counts of a campaign by job status, with `running` apart from `pending`.
pub fn counts(c: &Campaign) -> Json {
    let mut n: BTreeMap<&str, usize> = [
        "pending",
        "running",
        "done",
        "failed",
        "timed_out",
        "cancelled",
        "skipped",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for j in &c.jobs {
        let k = match j.status {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Skipped => "skipped",
        };
        *n.entry(k).or_default() += 1;
    }
    json!(n)
}

/// A campaign without its jobs, with counts.
pub fn campaign_view(c: &Campaign) -> Json {
    let mut spec = serde_json::to_value(&c.spec).unwrap_or(Json::Null);
    if let Some(o) = spec.as_object_mut() {
        // The capability is the file's download credential: not for display.
        o.remove("file_capability");
    }
    json!({
        "id": c.id,
        "group": c.group,
        "status": c.status,
        "created_at": c.created_at,
        "spec": spec,
        "total": c.jobs.len(),
        "counts": counts(c),
        // Changes with any job's progress, so a change that leaves the
        // counts as they were (a retry that fails again) still shows.
        "updated_at": c.jobs.iter().map(|j| {
            j.last_activity.max(j.started_at.unwrap_or(0)).max(j.finished_at.unwrap_or(0))
        }).max().unwrap_or(0).max(c.created_at),
    })
}

pub(crate) async fn list_campaigns(State(s): State<AppState>) -> ApiResult {
    let cs: Vec<Json> = s
        .store
        .list_campaigns()?
        .iter()
        .rev()
        .map(campaign_view)
        .collect();
    ok(cs)
}

/// `GET /api/console/devices/{ep}/history`: every campaign the device took
/// part in, newest first, with its outcome (`campaigns`), and the DM
/// operations run on it through the API since the server started
/// (`operations`, [`super::history`]).
pub(crate) async fn device_history(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
) -> ApiResult {
    let mut out = Vec::new();
    for c in s.store.list_campaigns()?.iter().rev() {
        for j in c.jobs.iter().filter(|j| j.endpoint == ep) {
            out.push(json!({
                "campaign": c.id,
                "op": c.spec.op,
                "package": c.spec.package,
                "version": c.spec.version,
                "created_at": c.created_at,
                "status": j.status,
                "update_result": j.update_result,
                "update_result_name": j.update_result_name,
                "details": j.details,
                "started_at": j.started_at,
                "finished_at": j.finished_at,
                "targets": j.targets,
            }));
        }
    }
    ok(json!({ "campaigns": out, "operations": super::history::view(&s, &ep) }))
}

/// Manifest facts of a stored package file, or why there are none; read
/// once per file (content-addressed, so they never change).
fn manifest_view(s: &AppState, f: &SoftwareFile) -> Json {
    if let Some(v) = s
        .console
        .manifests
        .lock()
        .ok()
        .and_then(|m| m.get(&f.sha256).cloned())
    {
        return v;
    }
    let v = inspect(s, f);
    if let Ok(mut m) = s.console.manifests.lock() {
        // Forget files deleted since (the map follows the store's file list).
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(f.sha256.clone(), v.clone());
    }
    v
}

fn inspect(s: &AppState, f: &SoftwareFile) -> Json {
    use wasmdm_package::{Limits, SignatureStatus, read_manifest};
    if f.size > MAX_INSPECT {
        return json!({ "error": "too large to inspect" });
    }
    let Some(path) = s.store.blob_path(&f.sha256) else {
        return json!({ "error": "content missing" });
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    match read_manifest(std::io::BufReader::new(file), &Limits::default()) {
        Ok(i) => {
            let signature = match &i.signature {
                SignatureStatus::Unsigned => json!({ "status": "unsigned" }),
                SignatureStatus::Signed { fingerprint, valid } => json!({
                    "status": if *valid { "signed" } else { "bad signature" },
                    "key": fingerprint,
                }),
                SignatureStatus::Malformed(m) => json!({ "status": "malformed", "error": m }),
            };
            json!({
                "name": i.manifest.package.name,
                "version": i.manifest.package.version.to_string(),
                "description": i.manifest.package.description,
                "signature": signature,
                "clean": i.is_clean(),
                "components": i.manifest.components.iter().map(|c| json!({
                    "id": c.id,
                    "version": c.version.to_string(),
                    "world": c.world.as_str(),
                })).collect::<Vec<_>>(),
            })
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// `GET /api/console/files`: files with their manifest, and the campaigns using each.
pub(crate) async fn list_files(State(s): State<AppState>) -> ApiResult {
    let files = s.store.list::<SoftwareFile>(FILES)?;
    let campaigns = s.store.list::<Campaign>(crate::store::CAMPAIGNS)?;
    let s2 = s.clone();
    let out = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|f| {
                let used_by: Vec<Json> = campaigns
                    .iter()
                    .filter(|c| c.spec.file.as_deref() == Some(f.sha256.as_str()))
                    .map(|c| json!({ "id": c.id, "status": c.status, "group": c.group }))
                    .collect();
                json!({
                    "sha256": f.sha256,
                    "name": f.name,
                    "description": f.description,
                    "size": f.size,
                    "uploaded_at": f.uploaded_at,
                    "retain_until": f.retain_until,
                    "manifest": manifest_view(&s2, f),
                    "used_by": used_by,
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    ok(out)
}
