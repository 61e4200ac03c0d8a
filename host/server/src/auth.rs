//! The admin token that guards the HTTP API. `wasmdm server` creates
//! `<data_dir>/admin-token` on first start (32 random bytes, hex, mode 0600)
//! and reuses it after; every `/api/...` request must carry
//! `Authorization: Bearer <token>`. Rotation: delete the file and restart.
//!
//! Secrets are compared as SHA-256 digests in constant time, so neither the
//! length nor a matching prefix of a guess shows in the response time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Name of the token file in the server's data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// Shortest token accepted from an existing file (an operator may write their own).
const MIN_TOKEN_LEN: usize = 16;

/// Why the admin token could not be loaded or created.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Reading or writing the token file failed.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but holds no usable token.
    #[error(
        "admin token file {path} must hold one token of at least {MIN_TOKEN_LEN} printable \
         ASCII characters (delete it to have a new one created)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// No randomness from the OS.
    #[error("random token: {0}")]
    Random(String),
}

/// The token the API accepts, kept as its digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Accepts `token`.
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// True when `presented` is the token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(d.ct_eq(&self.digest))
    }
}

/// Constant-time equality of two secrets of any length (compared as digests).
pub fn secret_eq(a: &str, b: &str) -> bool {
    AdminToken::new(a).matches(b)
}

/// `n` random bytes as lower-case hex (tokens, capabilities).
pub fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// Path of the token file in `data_dir`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token of `data_dir`, creating it first if there is none.
/// Returns the token and whether it was created now.
pub fn load_or_create(data_dir: &Path) -> Result<(String, bool), AuthError> {
    let path = token_path(data_dir);
    let io = |source| AuthError::Io {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_exposed(&path);
            let token = text.trim();
            let usable =
                token.len() >= MIN_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic());
            if !usable {
                return Err(AuthError::Malformed { path });
            }
            Ok((token.to_string(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io)?;
            let token = random_hex(32)?;
            write_private(&path, token.as_bytes()).map_err(io)?;
            Ok((token, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes `content` to `path` readable by the owner only: a temp file made
/// with mode 0600, fsynced, renamed over `path`, then the directory fsynced,
/// so a crash leaves either no file or the whole token.
pub fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temp file left by a crash may have any mode: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Logs (path only) when the token file can be read by others.
fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "admin token file {} is readable by group or others (chmod 600 it)",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The token of an `Authorization: Bearer <token>` header, if that is its form.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: lets a request through only with the admin token; otherwise
/// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3) before any handler runs.
pub async fn require_token(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).map(bearer);
    let reason = match presented {
        None => "missing `Authorization: Bearer <admin token>` header",
        Some(None) => "the Authorization header must be `Bearer <admin token>`",
        Some(Some(t)) if token.matches(t) => return next.run(request).await,
        Some(Some(_)) => "wrong admin token",
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        axum::Json(json!({ "error": reason })),
    )
        .into_response()
}

/// A 401 answer with `WWW-Authenticate: Bearer` (RFC 6750 §3) and `{"error": reason}`.
pub fn unauthorized(reason: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        axum::Json(json!({ "error": reason })),
    )
        .into_response()
}

/// Middleware of `/api`: the admin token as with [`require_token`], or,
/// without an Authorization header, a console session (cookie) whose
/// changes carry its CSRF token ([`crate::console::session`]).
pub async fn require_auth(
    State(state): State<crate::http::AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.headers().contains_key(header::AUTHORIZATION) {
        return require_token(State(state.token.clone()), request, next).await;
    }
    match state
        .console
        .sessions
        .check(request.method(), request.headers())
    {
        Ok(()) => next.run(request).await,
        Err(r) => unauthorized(r.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(t1.len(), 64);
        assert!(t1.bytes().all(|b| b.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(token_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn malformed_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(token_path(dir.path()), "short\n").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(AuthError::Malformed { .. })
        ));
    }

    #[test]
    fn comparison_and_header_forms() {
        let t = AdminToken::new("0123456789abcdef");
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeF"));
        assert!(!t.matches(""));
        assert!(secret_eq("a", "a") && !secret_eq("a", "ab"));
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("abc")), None);
        assert!(!format!("{t:?}").contains("0123"));
    }
}
