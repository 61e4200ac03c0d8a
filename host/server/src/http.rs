//! HTTP JSON API (devices, groups, files, DM operations, campaigns) and the
//! HTTP side of software file delivery (`GET /fw/<sha256>` with ETag and
//! Range, RFC 9110 §13.1.2 and §14). Refused requests change nothing and get
//! `{"error": "..."}` with 400, 404 or 409; a request to `/api/...` without
//! the admin token gets 401 before any handler runs ([`crate::auth`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{self, AdminToken};
use crate::campaign::{Campaign, CampaignSpec, JobStatus, OpKind, Protocol};
use crate::core::dm::{self, DmOp, DmReply};
use crate::driver::{Command, unix_ms};
use crate::files::{self, FileLimits};
use crate::security::{Credential, SecurityEntry, SecurityError};
use crate::store::{
    CAMPAIGNS, DEVICES, DeviceRecord, FILES, GROUPS, Group, SoftwareFile, Store, StoreError,
};
use sha2::{Digest, Sha256};

pub use crate::files::{MAX_UPLOAD, parse_range};

/// Largest JSON body of an API request (uploads stream and have their own cap).
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

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
    /// The token every `/api` request must carry.
    pub token: Arc<AdminToken>,
    /// Caps on software files.
    pub file_limits: FileLimits,
    /// Held by an upload while it runs (one at a time: exact storage accounting).
    pub uploads: Arc<tokio::sync::Mutex<()>>,
    /// Download slots (`file_limits.max_downloads`).
    pub downloads: Arc<tokio::sync::Semaphore>,
    /// The web console's sessions and caches ([`crate::console`]).
    pub console: Arc<crate::console::ConsoleState>,
    /// Compiles packages for devices' engines (issue 13); `None`: plain files.
    pub precompile: Option<Arc<crate::precompile::Service>>,
    /// Campaigns being prepared ([`crate::precompile::preparing`]).
    pub preparing: crate::precompile::preparing::Preparing,
    /// Their tasks, which a stopping server waits for.
    pub preparing_tasks: crate::precompile::preparing::Tasks,
}

impl AppState {
    /// State over `store` with the given token and limits.
    pub fn new(
        store: Arc<Store>,
        commands: mpsc::Sender<Command>,
        notified: crate::driver::Notified,
        bases: (String, String),
        token: AdminToken,
        file_limits: FileLimits,
    ) -> AppState {
        let downloads = Arc::new(tokio::sync::Semaphore::new(file_limits.max_downloads));
        AppState {
            store,
            commands,
            coap_base: bases.0,
            http_base: bases.1,
            notified,
            token: Arc::new(token),
            file_limits,
            uploads: Arc::default(),
            console: Arc::default(),
            downloads,
            precompile: None,
            preparing: Arc::default(),
            preparing_tasks: Default::default(),
        }
    }
}

/// An API error: status and message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    pub(crate) fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    pub(crate) fn conflict(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::CONFLICT, msg.into())
    }
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
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

pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// Parses a JSON body into `T`, mapping errors to 400 (axum's own rejection is text).
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// Declares the API routes once: the router is built from the list and the
/// list is public, so tests can check every route (e.g. that each needs the
/// admin token) without keeping a copy.
macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:path;)*) => {
        /// Every `/api` route as (method, path template).
        pub const API_ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn api_router() -> Router<AppState> {
            Router::new()$(.route($path, axum::routing::$method($handler)))*
        }
    };
}

api_routes! {
    get "/api/devices" => list_devices;
    get "/api/devices/{ep}" => get_device;
    put "/api/devices/{ep}/labels" => put_labels;
    post "/api/devices/{ep}/dm" => device_dm;
    get "/api/devices/{ep}/observed" => observed;
    get "/api/groups" => list_groups;
    get "/api/groups/{name}" => get_group;
    put "/api/groups/{name}" => put_group;
    delete "/api/groups/{name}" => delete_group;
    get "/api/files" => files::list_files;
    post "/api/files" => files::upload_file;
    get "/api/files/{sha}" => files::get_file;
    delete "/api/files/{sha}" => files::delete_file;
    get "/api/campaigns" => list_campaigns;
    post "/api/campaigns" => create_campaign;
    get "/api/campaigns/{id}" => get_campaign;
    post "/api/campaigns/{id}/cancel" => cancel_campaign;
    post "/api/campaigns/{id}/retry" => retry_campaign;
    get "/api/native-code-key" => native_code_key;
    get "/api/security" => list_security;
    get "/api/security/{ep}" => get_security;
    put "/api/security/{ep}" => put_security;
    delete "/api/security/{ep}" => delete_security;
    get "/api/bootstrap/endpoints" => crate::bootstrap::api::list_endpoints;
    get "/api/bootstrap/endpoints/{ep}" => crate::bootstrap::api::get_endpoint;
    put "/api/bootstrap/endpoints/{ep}" => crate::bootstrap::api::put_endpoint;
    delete "/api/bootstrap/endpoints/{ep}" => crate::bootstrap::api::delete_endpoint;
    post "/api/bootstrap/endpoints/{ep}/rollover" => crate::bootstrap::api::rollover;
    delete "/api/bootstrap/endpoints/{ep}/rollover" => crate::bootstrap::api::cancel_rollover;
    post "/api/bootstrap/rollover" => crate::bootstrap::api::rollover_many;
    post "/api/bootstrap/import" => crate::bootstrap::api::import;
    get "/api/bootstrap/labels" => crate::bootstrap::api::list_labels;
    get "/api/bootstrap/labels/{label}" => crate::bootstrap::api::get_label;
    put "/api/bootstrap/labels/{label}" => crate::bootstrap::api::put_label;
    delete "/api/bootstrap/labels/{label}" => crate::bootstrap::api::delete_label;
    get "/api/bootstrap/sessions" => crate::bootstrap::api::list_sessions;
    get "/api/bootstrap/sessions/{ep}" => crate::bootstrap::api::endpoint_sessions;
}

/// The router: `/api/...` behind the admin token, `/fw/<sha256>/<capability>`
/// open to devices (the capability is their credential).
pub fn router(state: AppState) -> Router {
    // The console's API routes and pages; `/api` takes the admin token or a
    // console session (crate::console::session).
    let api = api_router()
        .merge(crate::console::api_router())
        .layer(middleware::from_fn(read_small_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::console::history::record,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ));
    Router::new()
        .merge(api)
        .merge(crate::console::page_router())
        .route("/fw/{sha}/{capability}", get(files::download))
        .route(
            "/fw/{sha}/{capability}/{engine}",
            get(files::download_variant),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state)
}

/// Request bodies up to this size are read before the handler runs.
const SMALL_BODY: usize = 64 * 1024;

/// Reads a small request body (Content-Length up to [`SMALL_BODY`]) before
/// the handler runs, whether or not the handler wants it. hyper keeps a
/// connection for the next request only when the request body was read to
/// its end; a handler that ignores its body (`POST .../cancel` with `{}`)
/// otherwise races the client's body bytes, and the connection may close
/// under the client's next request ("peer disconnected"). Larger bodies
/// (file uploads) stream to their handler as before. Runs after the
/// authentication check, so only an authenticated request is read.
async fn read_small_body(req: axum::extract::Request, next: middleware::Next) -> Response {
    let small = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > 0 && n <= SMALL_BODY);
    if !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, SMALL_BODY).await {
        Ok(bytes) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(req).await
        }
        Err(e) => ApiError::bad(format!("cannot read the request body: {e}")).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

fn device_json(d: &DeviceRecord) -> Json {
    json!({
        "endpoint": d.endpoint,
        "online": d.registration.is_some(),
        "labels": d.labels,
        "last_seen": d.last_seen,
        "registration": d.registration,
        "engine": d.engine,
    })
}

/// The public native-code key (issue 13), for devices' `native-code-keys`.
async fn native_code_key(State(s): State<AppState>) -> ApiResult {
    match &s.precompile {
        Some(p) => ok(json!({ "public_key": p.public_key() })),
        None => Err(ApiError::not_found(
            "this server does not precompile (no native-code key)",
        )),
    }
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
        "code_name": wasmdm_proto::coap::msg::Code(r.code).name(),
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
    let r = crate::console::api::run_dm(&s, &ep, op).await?;
    ok(reply_json(&r))
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
    // Pull URIs carry the file's capability; whatever the body said is ignored.
    spec.file_capability = match &spec.file {
        Some(f) => s.store.file_capability(f)?,
        None => None,
    };
    if spec.base_uri.is_none() {
        let base = match spec.protocol {
            Protocol::Coap => s.coap_base.clone(),
            Protocol::Http => s.http_base.clone(),
        };
        // A server bound to 0.0.0.0 / [::] has no address to give devices:
        // `coap://0.0.0.0:5683` would send every device to itself.
        if base.is_empty() && spec.delivery == crate::campaign::Delivery::Pull {
            return Err(ApiError::bad(
                "the server listens on an unspecified address (0.0.0.0 / [::]), which devices \
                 cannot pull from: start it with --coap-base-uri / --http-base-uri naming an \
                 address devices reach, or give base_uri in the campaign",
            ));
        }
        spec.base_uri = Some(base);
    }
    let now = unix_ms();
    let id = format!(
        "c{now:x}{:04x}",
        s.store.list::<Campaign>(CAMPAIGNS)?.len() & 0xFFFF
    );
    let c = Campaign::new(id, b.group, spec, targets, now);
    // Issue 13: code compiled for the devices' engines, in the background;
    // the campaign starts when it is ready.
    if crate::precompile::preparing::needed(&s, &c.spec) {
        let (c, _) = crate::precompile::preparing::begin(&s, c).await?;
        return Ok((StatusCode::CREATED, axum::Json(campaign_json(&c))).into_response());
    }
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
    if c.status == crate::campaign::CampaignStatus::Preparing
        && crate::precompile::preparing::cancel(&s, &id).await?
    {
        return get_campaign(State(s), UrlPath(id), Query(JobsQuery::default())).await;
    }
    if c.status != crate::campaign::CampaignStatus::Running
        && c.status != crate::campaign::CampaignStatus::Preparing
    {
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

/// API form of a credential: endpoint, mode, the PSK identity or the raw
/// public key's SHA-256 fingerprint; never key material.
fn security_json(e: &SecurityEntry) -> Json {
    let mut v = json!({ "endpoint": e.endpoint, "mode": e.credential.mode() });
    match &e.credential {
        Credential::Psk { identity, .. } => v["identity"] = json!(identity),
        Credential::Rpk { public_key } => {
            v["fingerprint"] = json!(hex::encode(Sha256::digest(public_key)))
        }
        Credential::X509 | Credential::NoSec => {}
    }
    v
}

/// Reads a credential from a PUT body: `{"mode":"psk","identity":"..","key":"<hex>"}`,
/// `{"mode":"rpk","public_key":"<hex DER or PEM>"}`, `{"mode":"x509"}`,
/// `{"mode":"nosec"}`. Messages never quote the body: it may hold a key.
fn parse_credential(bytes: &[u8]) -> Result<Credential, ApiError> {
    let v: Json = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad(format!(
            "invalid JSON body (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad("the body must be a JSON object"))?;
    let mode = obj
        .get("mode")
        .and_then(Json::as_str)
        .ok_or_else(|| ApiError::bad("`mode` (psk, rpk, x509 or nosec) is required"))?;
    let allowed: &[&str] = match mode {
        "psk" => &["mode", "identity", "key"],
        "rpk" => &["mode", "public_key"],
        "x509" | "nosec" => &["mode"],
        _ => return Err(ApiError::bad("`mode` must be psk, rpk, x509 or nosec")),
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown field `{k}` for mode {mode} (expected {})",
            allowed.join(", ")
        )));
    }
    let text = |field: &str| {
        obj.get(field)
            .and_then(Json::as_str)
            .ok_or_else(|| ApiError::bad(format!("`{field}` (a string) is required")))
    };
    Ok(match mode {
        "psk" => Credential::Psk {
            identity: text("identity")?.to_string(),
            key: hex::decode(text("key")?.trim())
                .map_err(|_| ApiError::bad("`key` must be the key in hex"))?,
        },
        "rpk" => Credential::Rpk {
            public_key: public_key_der(text("public_key")?)?,
        },
        "x509" => Credential::X509,
        _ => Credential::NoSec,
    })
}

/// A SubjectPublicKeyInfo given as PEM text (`-----BEGIN PUBLIC KEY-----`) or hex DER.
fn public_key_der(text: &str) -> Result<Vec<u8>, ApiError> {
    use rustls::pki_types::SubjectPublicKeyInfoDer;
    use rustls::pki_types::pem::PemObject;
    if text.contains("-----BEGIN") {
        SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
            .map(|k| k.as_ref().to_vec())
            .map_err(|_| ApiError::bad("`public_key`: no PEM PUBLIC KEY block in the text"))
    } else {
        hex::decode(text.trim())
            .map_err(|_| ApiError::bad("`public_key` must be PEM text or hex DER"))
    }
}

async fn list_security(State(s): State<AppState>) -> ApiResult {
    let entries: Vec<Json> = s.store.list_security()?.iter().map(security_json).collect();
    ok(entries)
}

async fn get_security(State(s): State<AppState>, UrlPath(ep): UrlPath<String>) -> ApiResult {
    let e = s
        .store
        .security(&ep)?
        .ok_or_else(|| ApiError::not_found(format!("no credential for {ep}")))?;
    ok(security_json(&e))
}

async fn put_security(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult {
    let entry = SecurityEntry {
        endpoint: ep,
        credential: parse_credential(&bytes)?,
    };
    match s.store.put_security(&entry) {
        Ok(()) => ok(security_json(&entry)),
        Err(e @ SecurityError::IdentityInUse { .. }) => Err(ApiError::conflict(e.to_string())),
        Err(SecurityError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::bad(e.to_string())),
    }
}

async fn delete_security(State(s): State<AppState>, UrlPath(ep): UrlPath<String>) -> ApiResult {
    if !s.store.remove_security(&ep)? {
        return Err(ApiError::not_found(format!("no credential for {ep}")));
    }
    ok(json!({ "deleted": ep }))
}
