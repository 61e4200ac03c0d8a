//! HTTP JSON API (devices, groups, files, DM operations, campaigns) and the
//! HTTP side of software file delivery (`GET /fw/<sha256>` with ETag and
//! Range, RFC 9110 §13.1.2 and §14). Refused requests change nothing and get
//! `{"error": "..."}` with 400, 404 or 409.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use crate::campaign::{Campaign, CampaignSpec, JobStatus, OpKind, Protocol};
use crate::core::dm::{self, DmOp, DmReply};
use crate::driver::{Command, unix_ms};
use crate::store::{
    CAMPAIGNS, DEVICES, DeviceRecord, FILES, GROUPS, Group, SoftwareFile, Store, StoreError,
};

/// Largest software file accepted by upload.
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The store (read directly; writes for devices and campaigns go via the driver).
    pub store: Arc<Store>,
    /// Commands to the driver task.
    pub commands: mpsc::Sender<Command>,
    /// Default base URIs for pull delivery.
    pub coap_base: String,
    /// Default HTTP base URI.
    pub http_base: String,
    /// Latest values received in notifications.
    pub notified: crate::driver::Notified,
}

/// An API error: status and message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    fn conflict(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::CONFLICT, msg.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// Parses a JSON body into `T`, mapping errors to 400 (axum's own rejection is text).
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/devices", get(list_devices))
        .route("/api/devices/{ep}", get(get_device))
        .route("/api/devices/{ep}/labels", put(put_labels))
        .route("/api/devices/{ep}/dm", post(device_dm))
        .route("/api/devices/{ep}/observed", get(observed))
        .route("/api/groups", get(list_groups))
        .route(
            "/api/groups/{name}",
            get(get_group).put(put_group).delete(delete_group),
        )
        .route("/api/files", get(list_files).post(upload_file))
        .route("/api/files/{sha}", get(get_file).delete(delete_file))
        .route("/api/campaigns", get(list_campaigns).post(create_campaign))
        .route("/api/campaigns/{id}", get(get_campaign))
        .route("/api/campaigns/{id}/cancel", post(cancel_campaign))
        .route("/api/campaigns/{id}/retry", post(retry_campaign))
        .route("/fw/{sha}", get(download))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(state)
}

fn device_json(d: &DeviceRecord) -> Json {
    json!({
        "endpoint": d.endpoint,
        "online": d.registration.is_some(),
        "labels": d.labels,
        "last_seen": d.last_seen,
        "registration": d.registration,
    })
}

async fn list_devices(State(s): State<AppState>) -> ApiResult {
    let devs: Vec<Json> = s
        .store
        .list::<DeviceRecord>(DEVICES)?
        .iter()
        .map(device_json)
        .collect();
    ok(devs)
}

async fn get_device(State(s): State<AppState>, UrlPath(ep): UrlPath<String>) -> ApiResult {
    let d = s
        .store
        .get::<DeviceRecord>(DEVICES, &ep)?
        .ok_or_else(|| ApiError::not_found(format!("no device {ep}")))?;
    ok(device_json(&d))
}

async fn put_labels(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult {
    let labels: Vec<String> = body(&bytes)?;
    let mut d = s
        .store
        .get::<DeviceRecord>(DEVICES, &ep)?
        .ok_or_else(|| ApiError::not_found(format!("no device {ep}")))?;
    d.labels = labels;
    s.store.put(DEVICES, &ep, &d)?;
    ok(device_json(&d))
}

async fn observed(State(s): State<AppState>, UrlPath(ep): UrlPath<String>) -> ApiResult {
    let values = s
        .notified
        .lock()
        .ok()
        .and_then(|n| n.get(&ep).cloned())
        .unwrap_or_default();
    ok(values)
}

/// JSON form of a link: `{"target": "/3/0/7", "attrs": [["dim", "2"], ["q", null]]}`.
fn link_json(l: &wasmdm_proto::codec::link::Link) -> Json {
    let attrs: Vec<Json> = l
        .attrs
        .iter()
        .map(|a| json!([a.name, a.value.as_ref().map(|v| v.as_str())]))
        .collect();
    json!({ "target": l.target, "attrs": attrs })
}

/// JSON form of a DM reply.
pub fn reply_json(r: &DmReply) -> Json {
    let values: serde_json::Map<String, Json> = r
        .values
        .iter()
        .map(|(p, v)| (p.to_string(), dm::value_json(v)))
        .collect();
    json!({
        "code": r.code_text(),
        "success": r.is_success(),
        "values": values,
        "links": r.links.iter().map(link_json).collect::<Vec<_>>(),
        "location": r.location,
        "format": r.format,
    })
}

async fn device_dm(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult {
    let op: DmOp = body(&bytes)?;
    // Validate before anything is sent.
    op.to_packet("").map_err(|e| ApiError::bad(e.to_string()))?;
    if s.store
        .get::<DeviceRecord>(DEVICES, &ep)?
        .and_then(|d| d.registration)
        .is_none()
    {
        return Err(ApiError::conflict(format!("device {ep} is not registered")));
    }
    let (tx, rx) = oneshot::channel();
    s.commands
        .send(Command::Dm {
            endpoint: ep,
            op,
            reply: tx,
        })
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "server stopping".into()))?;
    match rx.await {
        Ok(Ok(r)) => ok(reply_json(&r)),
        Ok(Err(e)) => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, e)),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "server stopping".into(),
        )),
    }
}

fn members(store: &Store, g: &Group) -> Result<Vec<String>, StoreError> {
    let mut eps: Vec<String> = store
        .list::<DeviceRecord>(DEVICES)?
        .into_iter()
        .filter(|d| g.contains(d))
        .map(|d| d.endpoint)
        .collect();
    // Explicit members not seen yet are members too (they may register later).
    for e in &g.endpoints {
        if !eps.contains(e) {
            eps.push(e.clone());
        }
    }
    eps.sort();
    Ok(eps)
}

async fn list_groups(State(s): State<AppState>) -> ApiResult {
    ok(s.store.list::<Group>(GROUPS)?)
}

async fn get_group(State(s): State<AppState>, UrlPath(name): UrlPath<String>) -> ApiResult {
    let g = s
        .store
        .get::<Group>(GROUPS, &name)?
        .ok_or_else(|| ApiError::not_found(format!("no group {name}")))?;
    let m = members(&s.store, &g)?;
    ok(json!({ "name": g.name, "endpoints": g.endpoints, "labels": g.labels, "members": m }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

async fn put_group(
    State(s): State<AppState>,
    UrlPath(name): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult {
    if !valid_name(&name) {
        return Err(ApiError::bad(
            "group names use letters, digits, '-', '_', '.' (1-128)",
        ));
    }
    let b: GroupBody = body(&bytes)?;
    let g = Group {
        name: name.clone(),
        endpoints: b.endpoints,
        labels: b.labels,
    };
    s.store.put(GROUPS, &name, &g)?;
    ok(g)
}

async fn delete_group(State(s): State<AppState>, UrlPath(name): UrlPath<String>) -> ApiResult {
    if !s.store.delete(GROUPS, &name)? {
        return Err(ApiError::not_found(format!("no group {name}")));
    }
    ok(json!({ "deleted": name }))
}

async fn list_files(State(s): State<AppState>) -> ApiResult {
    ok(s.store.list::<SoftwareFile>(FILES)?)
}

async fn get_file(State(s): State<AppState>, UrlPath(sha): UrlPath<String>) -> ApiResult {
    ok(s.store
        .get::<SoftwareFile>(FILES, &sha)?
        .ok_or_else(|| ApiError::not_found(format!("no file {sha}")))?)
}

async fn upload_file(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> ApiResult {
    let name = q
        .get("name")
        .cloned()
        .ok_or_else(|| ApiError::bad("query parameter `name` is required"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad("name must be 1-255 bytes"));
    }
    if bytes.is_empty() {
        return Err(ApiError::bad("empty file"));
    }
    let retain_until = match q.get("retain_secs") {
        None => None,
        Some(v) => {
            let secs: u64 = v
                .parse()
                .map_err(|_| ApiError::bad("retain_secs must be a number of seconds"))?;
            Some(unix_ms().saturating_add(secs.saturating_mul(1000)))
        }
    };
    let sha = s.store.write_blob(&bytes)?;
    let f = SoftwareFile {
        sha256: sha.clone(),
        name,
        description: q.get("description").cloned(),
        size: bytes.len() as u64,
        uploaded_at: unix_ms(),
        retain_until,
    };
    s.store.put(FILES, &sha, &f)?;
    Ok((StatusCode::CREATED, axum::Json(f)).into_response())
}

async fn delete_file(State(s): State<AppState>, UrlPath(sha): UrlPath<String>) -> ApiResult {
    if s.store.get::<SoftwareFile>(FILES, &sha)?.is_none() {
        return Err(ApiError::not_found(format!("no file {sha}")));
    }
    // Headers suffice (status, spec).
    let in_use = s.store.list::<Campaign>(CAMPAIGNS)?.into_iter().any(|c| {
        c.status == crate::campaign::CampaignStatus::Running
            && c.spec.file.as_deref() == Some(sha.as_str())
    });
    if in_use {
        return Err(ApiError::conflict("file is used by a running campaign"));
    }
    s.store.delete(FILES, &sha)?;
    s.store.remove_blob(&sha)?;
    ok(json!({ "deleted": sha }))
}

/// Download with ETag / If-None-Match and a single byte Range (resumable pulls).
async fn download(
    State(s): State<AppState>,
    UrlPath(sha): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let data = s
        .store
        .read_blob(&sha)?
        .ok_or_else(|| ApiError::not_found(format!("no file {sha}")))?;
    let etag = format!("\"{sha}\"");
    let etag_hv = HeaderValue::from_str(&etag).map_err(|e| ApiError::bad(e.to_string()))?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_hv)]).into_response());
    }
    // If-Range with another ETag: send the whole (changed) file.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == etag);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_ok);
    let len = data.len() as u64;
    let base = [
        (header::ETAG, etag_hv.clone()),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ];
    match range.map(|r| parse_range(r, len)) {
        None => Ok((StatusCode::OK, base, data).into_response()),
        Some(Some((start, end))) => {
            let part = data
                .get(start as usize..=end as usize)
                .unwrap_or_default()
                .to_vec();
            let cr = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok((
                StatusCode::PARTIAL_CONTENT,
                base,
                [(header::CONTENT_RANGE, cr)],
                part,
            )
                .into_response())
        }
        Some(None) => {
            let cr = HeaderValue::from_str(&format!("bytes */{len}"))
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, cr)],
            )
                .into_response())
        }
    }
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` (RFC 9110 §14.1.2); `None` when unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?.trim();
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().ok()?, len - 1),
        (s, e) => (s.parse().ok()?, e.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

#[derive(Deserialize)]
struct CampaignBody {
    /// Target group.
    #[serde(default)]
    group: Option<String>,
    /// Or explicit devices.
    #[serde(default)]
    devices: Vec<String>,
    #[serde(flatten)]
    spec: CampaignSpec,
}

async fn create_campaign(State(s): State<AppState>, bytes: Bytes) -> ApiResult {
    let b: CampaignBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))?;
    let mut spec = b.spec;
    let targets = match (&b.group, b.devices.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::bad("give either `group` or `devices`, not both"));
        }
        (None, true) => return Err(ApiError::bad("give `group` or `devices`")),
        (Some(g), true) => {
            let group = s
                .store
                .get::<Group>(GROUPS, g)?
                .ok_or_else(|| ApiError::not_found(format!("no group {g}")))?;
            members(&s.store, &group)?
        }
        (None, false) => b.devices.clone(),
    };
    if targets.is_empty() {
        return Err(ApiError::conflict("the group has no members"));
    }
    if spec.package.is_empty() {
        return Err(ApiError::bad("`package` is required"));
    }
    if spec.timeout_secs == 0 || spec.quota == Some(0) || spec.poll_ms == 0 {
        return Err(ApiError::bad(
            "timeout_secs, quota and poll_ms must be positive",
        ));
    }
    match (spec.op, &spec.file) {
        (OpKind::Install | OpKind::Upgrade, None) => {
            return Err(ApiError::bad("`file` (sha256) is required"));
        }
        (_, Some(f)) if s.store.get::<SoftwareFile>(FILES, f)?.is_none() => {
            return Err(ApiError::not_found(format!("no software file {f}")));
        }
        _ => {}
    }
    if spec.base_uri.is_none() {
        spec.base_uri = Some(match spec.protocol {
            Protocol::Coap => s.coap_base.clone(),
            Protocol::Http => s.http_base.clone(),
        });
    }
    let now = unix_ms();
    let id = format!(
        "c{now:x}{:04x}",
        s.store.list::<Campaign>(CAMPAIGNS)?.len() & 0xFFFF
    );
    let c = Campaign::new(id, b.group, spec, targets, now);
    s.store.put_campaign(&c, None)?;
    let out = campaign_json(&c);
    s.commands
        .send(Command::StartCampaign(Box::new(c)))
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "server stopping".into()))?;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// JSON form of a campaign with its summary.
pub fn campaign_json(c: &Campaign) -> Json {
    let mut v = serde_json::to_value(c).unwrap_or(Json::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "summary".into(),
            serde_json::to_value(c.summary()).unwrap_or(Json::Null),
        );
    }
    v
}

/// Which of a campaign's per-device jobs a report carries: a campaign over
/// thousands of devices is megabytes of JSON, and a progress poll needs only
/// the summary, an operator often only the failures.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    /// `none` leaves the jobs out (`summary` stays); default: the jobs.
    jobs: Option<String>,
    /// Only jobs in these states, comma-separated (`failed,timed_out`).
    status: Option<String>,
    /// Skip this many of the selected jobs.
    offset: Option<usize>,
    /// At most this many jobs.
    limit: Option<usize>,
}

impl JobsQuery {
    fn filtered(&self) -> bool {
        self.jobs.is_some()
            || self.status.is_some()
            || self.offset.is_some()
            || self.limit.is_some()
    }

    /// The report of `c` with the jobs this query selects; `jobs_total` is
    /// how many matched before `offset` and `limit`.
    fn report(&self, c: &Campaign) -> Result<Json, ApiError> {
        let mut v = campaign_json(c);
        if !self.filtered() {
            return Ok(v);
        }
        let wanted: Option<Vec<JobStatus>> = match &self.status {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|w| {
                        serde_json::from_value(Json::String(w.trim().to_string()))
                            .map_err(|_| ApiError::bad(format!("unknown job status {w:?}")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let none = match self.jobs.as_deref() {
            None | Some("all") => false,
            Some("none") => true,
            Some(other) => return Err(ApiError::bad(format!("jobs={other}: use all or none"))),
        };
        let selected: Vec<Json> = v
            .get("jobs")
            .and_then(Json::as_array)
            .map(|jobs| {
                jobs.iter()
                    .zip(&c.jobs)
                    .filter(|(_, j)| wanted.as_ref().is_none_or(|w| w.contains(&j.status)))
                    .map(|(json, _)| json.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("jobs_total".into(), json!(selected.len()));
            if none {
                o.remove("jobs");
            } else {
                let page: Vec<Json> = selected
                    .into_iter()
                    .skip(self.offset.unwrap_or(0))
                    .take(self.limit.unwrap_or(usize::MAX))
                    .collect();
                o.insert("jobs".into(), Json::Array(page));
            }
        }
        Ok(v)
    }
}

async fn list_campaigns(State(s): State<AppState>, Query(q): Query<JobsQuery>) -> ApiResult {
    let cs: Vec<Json> = s
        .store
        .list_campaigns()?
        .iter()
        .map(|c| q.report(c))
        .collect::<Result<_, _>>()?;
    ok(cs)
}

async fn get_campaign(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<JobsQuery>,
) -> ApiResult {
    let c = s
        .store
        .get_campaign(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    ok(q.report(&c)?)
}

async fn cancel_campaign(State(s): State<AppState>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let c = s
        .store
        .get_campaign(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    if c.status != crate::campaign::CampaignStatus::Running {
        return Err(ApiError::conflict(format!("campaign {id} is not running")));
    }
    let (tx, rx) = oneshot::channel();
    let _ = s.commands.send(Command::Cancel(id.clone(), tx)).await;
    let _ = rx.await;
    get_campaign(State(s), UrlPath(id), Query(JobsQuery::default())).await
}

async fn retry_campaign(State(s): State<AppState>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let c = s
        .store
        .get_campaign(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    if c.summary().failed + c.summary().timed_out == 0 {
        return Err(ApiError::conflict(format!(
            "campaign {id} has no failed devices"
        )));
    }
    let (tx, rx) = oneshot::channel();
    let _ = s.commands.send(Command::Retry(id.clone(), tx)).await;
    let _ = rx.await;
    get_campaign(State(s), UrlPath(id), Query(JobsQuery::default())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
