//! Software files over HTTP: upload into the store (`POST /api/files`,
//! admin), listing and deletion, and the device side, `GET
//! /fw/<sha256>/<capability>` (ETag, single Range, RFC 9110 §13.1 and §14).
//!
//! Uploads stream to a temp file while hashed, capped per file and in total
//! (413 / 507, refused from Content-Length before any byte is read when the
//! client declares it). Downloads stream from disk, at most
//! [`FileLimits::max_downloads`] at once (503 with Retry-After beyond).

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::campaign::Campaign;
use crate::driver::unix_ms;
use crate::http::{ApiError, ApiResult, AppState, ok};
use crate::store::{CAMPAIGNS, FILES, SoftwareFile, new_capability};

/// Largest software file accepted by upload (default of [`FileLimits::max_file`]).
pub const MAX_UPLOAD: u64 = 64 * 1024 * 1024;
/// Default cap on all stored software files together.
pub const MAX_STORAGE: u64 = 1024 * 1024 * 1024;
/// Default number of `/fw` downloads served at once.
pub const MAX_DOWNLOADS: usize = 64;
/// Seconds a client refused for too many downloads is asked to wait.
const RETRY_AFTER_SECS: &str = "5";
/// Read size when streaming a file out.
const CHUNK: usize = 64 * 1024;

/// Caps on software files.
#[derive(Debug, Clone)]
pub struct FileLimits {
    /// Largest single upload, bytes (413 beyond).
    pub max_file: u64,
    /// All stored files together, bytes (507 beyond).
    pub max_storage: u64,
    /// Concurrent `/fw` downloads (503 beyond).
    pub max_downloads: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_file: MAX_UPLOAD,
            max_storage: MAX_STORAGE,
            max_downloads: MAX_DOWNLOADS,
        }
    }
}

/// API form of a file record: the record plus the path devices pull it from.
fn file_json(f: &SoftwareFile) -> Json {
    let mut v = serde_json::to_value(f).unwrap_or(Json::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("download_path".into(), json!(f.download_path()));
    }
    v
}

pub(crate) async fn list_files(State(s): State<AppState>) -> ApiResult {
    let files: Vec<Json> = s
        .store
        .list::<SoftwareFile>(FILES)?
        .iter()
        .map(file_json)
        .collect();
    ok(files)
}

pub(crate) async fn get_file(
    State(s): State<AppState>,
    UrlPath(sha): UrlPath<String>,
) -> ApiResult {
    let f = s
        .store
        .get::<SoftwareFile>(FILES, &sha)?
        .ok_or_else(|| ApiError::not_found(format!("no file {sha}")))?;
    ok(file_json(&f))
}

/// The files a running or preparing campaign (issue 13: it reads the file
/// to compile it) delivers: such a file is neither deleted nor purged at
/// the end of its retention, nor are its precompiled variants evicted.
pub(crate) fn files_in_use(
    store: &crate::store::Store,
) -> Result<std::collections::BTreeSet<String>, crate::store::StoreError> {
    use crate::campaign::CampaignStatus;
    // Headers suffice (status, spec).
    Ok(store
        .list::<Campaign>(CAMPAIGNS)?
        .into_iter()
        .filter(|c| {
            matches!(
                c.status,
                CampaignStatus::Running | CampaignStatus::Preparing
            )
        })
        .filter_map(|c| c.spec.file)
        .collect())
}

/// Whether file `sha` is in [`files_in_use`].
pub(crate) fn used_by_a_campaign(
    store: &crate::store::Store,
    sha: &str,
) -> Result<bool, crate::store::StoreError> {
    Ok(files_in_use(store)?.contains(sha))
}

pub(crate) async fn delete_file(
    State(s): State<AppState>,
    UrlPath(sha): UrlPath<String>,
) -> ApiResult {
    if s.store.get::<SoftwareFile>(FILES, &sha)?.is_none() {
        return Err(ApiError::not_found(format!("no file {sha}")));
    }
    if used_by_a_campaign(&s.store, &sha)? {
        return Err(ApiError::conflict("file is used by a running campaign"));
    }
    s.store.delete(FILES, &sha)?;
    s.store.remove_blob(&sha)?;
    ok(json!({ "deleted": sha }))
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("file larger than the server's limit of {max} bytes"),
    )
}

fn no_room(used: u64, max: u64) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        format!(
            "not enough room: stored files use {used} of {max} bytes; delete files \
             (wasmdm ctl file rm) or raise --max-storage"
        ),
    )
}

/// A temp file in the store removed on drop unless it was kept.
struct TempBlob(Option<PathBuf>);

impl Drop for TempBlob {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) async fn upload_file(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let name = q
        .get("name")
        .cloned()
        .ok_or_else(|| ApiError::bad("query parameter `name` is required"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad("name must be 1-255 bytes"));
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
    let limits = &s.file_limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_file) {
        return Err(too_large(limits.max_file));
    }
    // One upload at a time, so the room check below stays exact.
    let _one = s.uploads.lock().await;
    let used: u64 = s
        .store
        .list::<SoftwareFile>(FILES)?
        .iter()
        .map(|f| f.size)
        .sum();
    if declared.is_some_and(|n| used.saturating_add(n) > limits.max_storage) {
        return Err(no_room(used, limits.max_storage));
    }

    let tmp_path = s.store.blob_temp_path()?;
    let mut tmp = TempBlob(Some(tmp_path.clone()));
    let mut file = tokio::fs::File::create(&tmp_path)
        .await
        .map_err(|e| ApiError::internal(format!("temp file: {e}")))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("upload interrupted: {e}")))?;
        size = size.saturating_add(chunk.len() as u64);
        if size > limits.max_file {
            return Err(too_large(limits.max_file));
        }
        if used.saturating_add(size) > limits.max_storage {
            return Err(no_room(used, limits.max_storage));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("writing the file: {e}")))?;
    }
    if size == 0 {
        return Err(ApiError::bad("empty file"));
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::internal(format!("writing the file: {e}")))?;
    drop(file);
    require(q.get("require").map(String::as_str), &tmp_path).await?;
    let sha = hex::encode(hasher.finalize());
    s.store.keep_blob(&tmp_path, &sha)?;
    tmp.0 = None;
    // The same content uploaded again keeps its capability (URIs handed out stay valid).
    let capability = match s.store.get::<SoftwareFile>(FILES, &sha)? {
        Some(SoftwareFile {
            capability: Some(c),
            ..
        }) => c,
        _ => new_capability()?,
    };
    let f = SoftwareFile {
        sha256: sha.clone(),
        name,
        description: q.get("description").cloned(),
        size,
        uploaded_at: unix_ms(),
        retain_until,
        capability: Some(capability),
    };
    s.store.put(FILES, &sha, &f)?;
    tracing::info!("software file {sha} stored ({size} bytes)");
    Ok((StatusCode::CREATED, axum::Json(file_json(&f))).into_response())
}

/// `?require=package` (the console's upload form): the upload is refused,
/// before it is stored, unless it is a wasmdm package whose manifest reads
/// (read with the package crate's caps). Without it any content is kept.
async fn require(what: Option<&str>, path: &std::path::Path) -> Result<(), ApiError> {
    match what {
        None => Ok(()),
        Some("package") => {
            let path = path.to_path_buf();
            let read = tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
                wasmdm_package::read_manifest(
                    std::io::BufReader::new(f),
                    &wasmdm_package::Limits::default(),
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
            read.map_err(|e| ApiError::bad(format!("not a wasmdm package: {e}")))
        }
        Some(other) => Err(ApiError::bad(format!(
            "require={other}: only `package` is known"
        ))),
    }
}

/// A body streaming `reader`, holding a download slot until it is dropped.
fn stream_body(reader: impl AsyncRead + Send + 'static, permit: OwnedSemaphorePermit) -> Body {
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK).map(move |chunk| {
        let _slot = &permit;
        chunk
    });
    Body::from_stream(stream)
}

/// `GET /fw/<sha256>/<capability>`: the file to whoever names its
/// capability, with ETag / If-None-Match and a single byte Range (resumable
/// pulls); anything else is 404 as if there were no such file.
pub(crate) async fn download(
    State(s): State<AppState>,
    UrlPath((sha, capability)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    serve_download(s, sha, capability, None, headers).await
}

/// `/fw/<sha256>/<capability>/<engine>`: the file's variant with code
/// precompiled for engine hash `engine` (issue 13, `crate::precompile`).
pub(crate) async fn download_variant(
    State(s): State<AppState>,
    UrlPath((sha, capability, engine)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    serve_download(s, sha, capability, Some(engine), headers).await
}

async fn serve_download(
    s: AppState,
    sha: String,
    capability: String,
    engine: Option<String>,
    headers: HeaderMap,
) -> ApiResult {
    let not_found = || ApiError::not_found(format!("no file {sha}"));
    if !s.store.download_allowed(&sha, &capability)? {
        return Err(not_found());
    }
    let Ok(permit) = s.downloads.clone().try_acquire_owned() else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            )],
            axum::Json(json!({ "error": "too many downloads at once; retry later" })),
        )
            .into_response());
    };
    // A variant has its own content, so its own ETag (its digest).
    let (path, sha) = match &engine {
        None => (s.store.blob_path(&sha).ok_or_else(not_found)?, sha.clone()),
        Some(engine) => s.store.variant(&sha, engine).ok_or_else(not_found)?,
    };
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len();
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
    let base = [
        (header::ETAG, etag_hv),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ];
    match range.map(|r| parse_range(r, len)) {
        None => Ok((
            StatusCode::OK,
            base,
            [(header::CONTENT_LENGTH, HeaderValue::from(len))],
            stream_body(file.take(len), permit),
        )
            .into_response()),
        Some(Some((start, end))) => {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let part = end - start + 1;
            let cr = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok((
                StatusCode::PARTIAL_CONTENT,
                base,
                [
                    (header::CONTENT_RANGE, cr),
                    (header::CONTENT_LENGTH, HeaderValue::from(part)),
                ],
                stream_body(file.take(part), permit),
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

    #[test]
    fn running_and_preparing_campaigns_keep_their_file() {
        use crate::campaign::{Campaign, CampaignSpec, CampaignStatus};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let spec: CampaignSpec = serde_json::from_value(json!({
            "op": "install", "package": "app", "file": "aa", "delivery": "push",
        }))
        .unwrap();
        let mut c = Campaign::new("c1".into(), None, spec, vec!["dev".into()], 0);
        for (status, used) in [
            (CampaignStatus::Preparing, true),
            (CampaignStatus::Running, true),
            (CampaignStatus::Cancelled, false),
        ] {
            c.status = status;
            store.put_campaign(&c, None).unwrap();
            assert_eq!(
                used_by_a_campaign(&store, "aa").unwrap(),
                used,
                "{status:?}"
            );
            assert!(!used_by_a_campaign(&store, "bb").unwrap());
        }
    }
}
