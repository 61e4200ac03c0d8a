//! `/api/bootstrap/...`: bootstrap accounts, label configurations, CSV
//! import and session outcomes. Behind the admin token like every `/api`
//! route; bootstrap keys go in and never come out.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::config::{
    BOOTSTRAP_LABELS, BootstrapConfig, BootstrapConfigError, BootstrapCredential,
    BootstrapEndpoint, parse_csv, valid_label, validate_config,
};
use super::rollover::{PendingCredential, RolloverError, RolloverStart};
use crate::driver::unix_ms;
use crate::http::{ApiError, ApiResult, AppState, ok};

/// Largest CSV import body.
pub const MAX_CSV: usize = 2 * 1024 * 1024;
/// Most rows in one import.
pub const MAX_CSV_ROWS: usize = 100_000;

/// API form of an account: never the key.
fn endpoint_json(e: &BootstrapEndpoint) -> Json {
    let mut v = json!({
        "endpoint": e.endpoint,
        "mode": e.credential.mode(),
        "labels": e.labels,
        "config": e.config,
        "updated_ms": e.updated_ms,
    });
    if let BootstrapCredential::Psk { identity, .. } = &e.credential {
        v["identity"] = json!(identity);
    }
    if let Some(p) = &e.pending {
        v["rollover"] = rollover_json(p);
    }
    v
}

/// A pending rollover as the API shows it: identity and times, never the key.
fn rollover_json(p: &PendingCredential) -> Json {
    json!({
        "status": "pending",
        "identity": p.identity,
        "pending_since_ms": p.since_ms,
        "written_ms": p.written_ms,
    })
}

fn config_error(e: BootstrapConfigError) -> ApiError {
    match e {
        BootstrapConfigError::IdentityInUse { .. } => ApiError::conflict(e.to_string()),
        BootstrapConfigError::Store(e) => e.into(),
        e => ApiError::bad(e.to_string()),
    }
}

/// Parses JSON; with `detail`, serde's message about a field is included
/// (label configurations hold no secrets), else only where the error is
/// (an account body may hold a key: its values are never quoted).
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8], detail: bool) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if detail && e.is_data() {
            format!(": {}", e.to_string().split(" at line").next().unwrap_or(""))
        } else {
            String::new()
        };
        ApiError::bad(format!(
            "invalid JSON body (line {} column {}){what}",
            e.line(),
            e.column()
        ))
    })
}

/// `PUT /api/bootstrap/endpoints/{ep}` body; absent fields keep their value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    /// `psk` (default when `key` is given), `x509` or `nosec`.
    mode: Option<String>,
    identity: Option<String>,
    /// Hex.
    key: Option<String>,
    labels: Option<Vec<String>>,
    /// `null` clears the endpoint's own configuration.
    #[serde(default, deserialize_with = "some")]
    config: Option<Option<BootstrapConfig>>,
}

fn some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

pub(crate) async fn list_endpoints(State(s): State<AppState>) -> ApiResult {
    let v: Vec<Json> = s
        .store
        .list_bootstrap_endpoints()?
        .iter()
        .map(endpoint_json)
        .collect();
    ok(v)
}

pub(crate) async fn get_endpoint(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
) -> ApiResult {
    let e = s
        .store
        .bootstrap_endpoint(&ep)?
        .ok_or_else(|| ApiError::not_found(format!("no bootstrap account for {ep}")))?;
    let mut v = endpoint_json(&e);
    v["effective_config"] = json!(s.store.resolve_bootstrap_config(&e)?);
    ok(v)
}

pub(crate) async fn put_endpoint(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult {
    let body: EndpointBody = json_body(&bytes, false)?;
    let old = s.store.bootstrap_endpoint(&ep)?;
    let credential = match (body.mode.as_deref(), body.identity, body.key) {
        (Some("x509"), None, None) => BootstrapCredential::X509,
        (Some("nosec"), None, None) => BootstrapCredential::NoSec,
        (Some("psk") | None, identity, Some(key)) => {
            let key = hex::decode(key.trim()).map_err(|_| ApiError::bad("`key` must be hex"))?;
            // Rotating the key alone keeps the identity.
            let identity = match (identity, old.as_ref().map(|o| &o.credential)) {
                (Some(i), _) => i,
                (None, Some(BootstrapCredential::Psk { identity, .. })) => identity.clone(),
                (None, _) => return Err(ApiError::bad("`identity` is required with `key`")),
            };
            BootstrapCredential::Psk { identity, key }
        }
        (None, None, None) => match &old {
            Some(o) => o.credential.clone(),
            None => {
                return Err(ApiError::bad(
                    "a new account needs `identity` and `key` (hex), or `mode`: x509 or nosec",
                ));
            }
        },
        _ => {
            return Err(ApiError::bad(
                "`mode` is psk (with `identity`, `key`), x509 or nosec (without them)",
            ));
        }
    };
    let rotated = old.as_ref().map(|o| &o.credential) != Some(&credential);
    let entry = BootstrapEndpoint {
        endpoint: ep.clone(),
        credential,
        labels: body
            .labels
            .or_else(|| old.as_ref().map(|o| o.labels.clone()))
            .unwrap_or_default(),
        config: match body.config {
            Some(c) => c,
            None => old.as_ref().and_then(|o| o.config.clone()),
        },
        updated_ms: if rotated {
            unix_ms()
        } else {
            old.as_ref().map_or(0, |o| o.updated_ms)
        },
        // A pending rollover stays: the device may hold it already.
        pending: old.as_ref().and_then(|o| o.pending.clone()),
    };
    s.store
        .put_bootstrap_endpoints(std::slice::from_ref(&entry))
        .map_err(|(_, e)| config_error(e))?;
    if rotated {
        tracing::info!(
            "bootstrap: credential of {ep} set ({})",
            entry.credential.mode()
        );
    }
    ok(endpoint_json(&entry))
}

pub(crate) async fn delete_endpoint(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
) -> ApiResult {
    if !s.store.remove_bootstrap_endpoint(&ep)? {
        return Err(ApiError::not_found(format!(
            "no bootstrap account for {ep}"
        )));
    }
    ok(json!({ "deleted": ep }))
}

/// `POST /api/bootstrap/import`: CSV rows, all stored or none.
pub(crate) async fn import(State(s): State<AppState>, bytes: Bytes) -> ApiResult {
    if bytes.len() > MAX_CSV {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("CSV larger than {MAX_CSV} bytes"),
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad("CSV is not UTF-8"))?;
    let rows = match parse_csv(text, unix_ms()) {
        Ok(rows) => rows,
        Err(errors) => {
            let lines: Vec<Json> = errors
                .iter()
                .take(100)
                .map(|e| json!({"line": e.line, "reason": e.reason}))
                .collect();
            let listed: Vec<String> = errors.iter().take(20).map(ToString::to_string).collect();
            let body = json!({
                "error": format!(
                    "{} bad line(s), nothing imported: {}",
                    errors.len(),
                    listed.join("; ")
                ),
                "lines": lines,
            });
            return Ok((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
        }
    };
    if rows.len() > MAX_CSV_ROWS {
        return Err(ApiError::bad(format!("more than {MAX_CSV_ROWS} rows")));
    }
    // Existing accounts keep their own configuration.
    let mut entries = rows;
    for e in &mut entries {
        if let Some(old) = s.store.bootstrap_endpoint(&e.endpoint)? {
            e.config = old.config;
            // As for PUT: the device may hold a pending rollover's credential.
            e.pending = old.pending;
        }
    }
    // Line numbers of the rows, for an error found by the store.
    let mut line_of = Vec::with_capacity(entries.len());
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if !(l.is_empty() || l.starts_with('#') || (i == 0 && l.starts_with("endpoint,"))) {
            line_of.push(i + 1);
        }
    }
    if let Err((i, e)) = s.store.put_bootstrap_endpoints(&entries) {
        let line = line_of.get(i).copied().unwrap_or(0);
        let status = match e {
            BootstrapConfigError::IdentityInUse { .. } => StatusCode::CONFLICT,
            BootstrapConfigError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = json!({
            "error": format!("line {line}: {e}; nothing imported"),
            "lines": [{"line": line, "reason": e.to_string()}],
        });
        return Ok((status, axum::Json(body)).into_response());
    }
    tracing::info!("bootstrap: imported {} account(s)", entries.len());
    ok(json!({ "imported": entries.len() }))
}

pub(crate) async fn list_labels(State(s): State<AppState>) -> ApiResult {
    let v: Vec<Json> = s
        .store
        .list_bootstrap_labels()?
        .into_iter()
        .map(|(label, config)| json!({"label": label, "config": config}))
        .collect();
    ok(v)
}

pub(crate) async fn get_label(
    State(s): State<AppState>,
    UrlPath(label): UrlPath<String>,
) -> ApiResult {
    let c = s
        .store
        .bootstrap_label(&label)?
        .ok_or_else(|| ApiError::not_found(format!("no bootstrap config for label {label}")))?;
    ok(json!({"label": label, "config": c}))
}

pub(crate) async fn put_label(
    State(s): State<AppState>,
    UrlPath(label): UrlPath<String>,
    bytes: Bytes,
) -> ApiResult {
    if !valid_label(&label) {
        return Err(ApiError::bad("label must be 1-64 bytes of [A-Za-z0-9._-]"));
    }
    let c: BootstrapConfig = json_body(&bytes, true)?;
    validate_config(&c).map_err(config_error)?;
    s.store.put(BOOTSTRAP_LABELS, &label, &c)?;
    ok(json!({"label": label, "config": c}))
}

pub(crate) async fn delete_label(
    State(s): State<AppState>,
    UrlPath(label): UrlPath<String>,
) -> ApiResult {
    if !s.store.delete(BOOTSTRAP_LABELS, &label)? {
        return Err(ApiError::not_found(format!(
            "no bootstrap config for label {label}"
        )));
    }
    ok(json!({ "deleted": label }))
}

pub(crate) async fn list_sessions(State(s): State<AppState>) -> ApiResult {
    ok(s.store.bootstrap_sessions(None)?)
}

pub(crate) async fn endpoint_sessions(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
) -> ApiResult {
    ok(s.store.bootstrap_sessions(Some(&ep))?)
}

fn rollover_error(e: RolloverError) -> ApiError {
    match e {
        RolloverError::Unknown(_) => ApiError::not_found(e.to_string()),
        RolloverError::NotPsk(..) => ApiError::conflict(e.to_string()),
        RolloverError::Store(e) => e.into(),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Starts (or reports) `ep`'s rollover; logs only identity and state.
fn start_rollover(s: &AppState, ep: &str) -> Result<Json, RolloverError> {
    let (state, p) = match s.store.start_bootstrap_rollover(ep, unix_ms())? {
        RolloverStart::Started(p) => {
            tracing::info!(
                endpoint = %ep,
                identity = %p.identity,
                "bootstrap: rollover pending since {} ms",
                p.since_ms
            );
            ("started", p)
        }
        RolloverStart::AlreadyPending(p) => ("already_pending", p),
    };
    let mut v = rollover_json(&p);
    v["endpoint"] = json!(ep);
    v["result"] = json!(state);
    Ok(v)
}

/// `POST /api/bootstrap/endpoints/{ep}/rollover`: a fresh bootstrap PSK,
/// written to the device at its next bootstrap (rollover.rs).
pub(crate) async fn rollover(State(s): State<AppState>, UrlPath(ep): UrlPath<String>) -> ApiResult {
    ok(start_rollover(&s, &ep).map_err(rollover_error)?)
}

/// `DELETE /api/bootstrap/endpoints/{ep}/rollover`: drops a pending
/// rollover no session has written yet (409 once one has: the device may
/// hold it).
pub(crate) async fn cancel_rollover(
    State(s): State<AppState>,
    UrlPath(ep): UrlPath<String>,
) -> ApiResult {
    match s.store.cancel_bootstrap_rollover(&ep)? {
        Ok(true) => {
            tracing::info!(endpoint = %ep, "bootstrap: rollover cancelled");
            ok(json!({"endpoint": ep, "rollover": "cancelled"}))
        }
        Ok(false) => Err(ApiError::not_found(format!("no rollover pending for {ep}"))),
        Err(written_ms) => Err(ApiError::conflict(format!(
            "the rollover of {ep} was written to the device at {written_ms} ms and may be \
             in use: it completes at the device's next bootstrap"
        ))),
    }
}

/// `POST /api/bootstrap/rollover` body: which endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRollover {
    /// Endpoints with this label.
    label: Option<String>,
    /// Every PSK endpoint.
    #[serde(default)]
    all: bool,
}

/// `POST /api/bootstrap/rollover` with `{"label": L}` or `{"all": true}`:
/// a rollover for each PSK account chosen (others are skipped).
pub(crate) async fn rollover_many(State(s): State<AppState>, bytes: Bytes) -> ApiResult {
    let body: BulkRollover = json_body(&bytes, true)?;
    let chosen = |e: &BootstrapEndpoint| match (&body.label, body.all) {
        (Some(l), false) => e.labels.iter().any(|x| x == l),
        (None, true) => true,
        _ => false,
    };
    if body.label.is_some() == body.all {
        return Err(ApiError::bad("give `label` or `all`: true"));
    }
    let (mut started, mut pending, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for e in s
        .store
        .list_bootstrap_endpoints()?
        .iter()
        .filter(|e| chosen(e))
    {
        if !matches!(e.credential, BootstrapCredential::Psk { .. }) {
            skipped.push(json!(e.endpoint));
            continue;
        }
        match start_rollover(&s, &e.endpoint) {
            Ok(v) if v["result"] == "started" => started.push(json!(e.endpoint)),
            Ok(_) => pending.push(json!(e.endpoint)),
            // Removed meanwhile, or changed to x509 / nosec.
            Err(RolloverError::Unknown(_) | RolloverError::NotPsk(..)) => {
                skipped.push(json!(e.endpoint))
            }
            Err(e) => return Err(rollover_error(e)),
        }
    }
    ok(json!({"started": started, "already_pending": pending, "skipped": skipped}))
}
