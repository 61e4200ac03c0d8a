//! Console sessions: the login form exchanges the admin token for a session
//! cookie, so the token need not live in the browser.
//!
//! - The cookie (`wasmdm_session`) is `HttpOnly` (no script reads it),
//!   `SameSite=Strict` (no other site's page sends it), `Path=/`, and `Secure`
//!   when the API is served over TLS.
//! - Every change made with the cookie (any method but GET/HEAD) must also
//!   carry the session's CSRF token in `X-CSRF-Token` (the page gets it in
//!   a `<meta>` of the console's HTML, which another origin cannot read), and
//!   an `Origin` header, when the browser sends one, must be this server's.
//! - Sessions live in memory (a restart signs everyone out), at most
//!   [`MAX_SESSIONS`] at once (the oldest is dropped), each for
//!   [`SESSION_IDLE`] after its last use. Ids are kept as SHA-256 digests
//!   and compared through the map, never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, header};
use sha2::{Digest, Sha256};

use crate::auth::{random_hex, secret_eq};

/// Name of the session cookie.
pub const COOKIE: &str = "wasmdm_session";
/// Header carrying the CSRF token on changes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Most sessions kept at once; a new login beyond drops the oldest.
pub const MAX_SESSIONS: usize = 64;
/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// The sessions of this server process.
#[derive(Debug, Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// A new session: the cookie value and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value (secret).
    pub id: String,
    /// The CSRF token the page sends on changes.
    pub csrf: String,
}

/// Why a request with a session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No session cookie.
    NoSession,
    /// The cookie names no live session.
    Expired,
    /// A change without the session's CSRF token.
    Csrf,
    /// A change from a page of another origin.
    Origin,
}

impl Refusal {
    /// The message the API answers with.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoSession => {
                "missing `Authorization: Bearer <admin token>` header or console session"
            }
            Refusal::Expired => "the console session has ended: sign in again",
            Refusal::Csrf => "missing or wrong X-CSRF-Token for this console session",
            Refusal::Origin => "request from another origin refused",
        }
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// True when the request's `Origin` (if any) is the host it was sent to:
/// browsers send Origin on every cross-origin request and on same-origin
/// changes, so a foreign page's form or fetch is caught even if it got past
/// SameSite.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

impl Sessions {
    /// Starts a session (dropping expired ones, and the oldest beyond the cap).
    pub fn create(&self) -> Option<NewSession> {
        let id = random_hex(32).ok()?;
        let csrf = random_hex(32).ok()?;
        let now = Instant::now();
        let mut map = self.by_digest.lock().ok()?;
        map.retain(|_, s| now.duration_since(s.last_used) < SESSION_IDLE);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)?;
            map.remove(&oldest);
        }
        map.insert(
            digest(&id),
            Session {
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        Some(NewSession { id, csrf })
    }

    /// The CSRF token of live session `id`, refreshing its idle timer.
    pub fn csrf_of(&self, id: &str) -> Option<String> {
        let mut map = self.by_digest.lock().ok()?;
        let key = digest(id);
        let now = Instant::now();
        let s = map.get_mut(&key)?;
        if now.duration_since(s.last_used) >= SESSION_IDLE {
            map.remove(&key);
            return None;
        }
        s.last_used = now;
        Some(s.csrf.clone())
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.by_digest.lock() {
            map.remove(&digest(id));
        }
    }

    /// Number of live sessions (tests).
    pub fn len(&self) -> usize {
        self.by_digest.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a request that carries no bearer token: a live session, and
    /// for a change the CSRF token and the origin.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let id = cookie(headers, COOKIE).ok_or(Refusal::NoSession)?;
        let csrf = self.csrf_of(id).ok_or(Refusal::Expired)?;
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if !same_origin(headers) {
            return Err(Refusal::Origin);
        }
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(Refusal::Csrf)?;
        if secret_eq(&csrf, presented) {
            Ok(())
        } else {
            Err(Refusal::Csrf)
        }
    }
}

/// `Set-Cookie` value starting a session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_IDLE.as_secs()
    )
}

/// `Set-Cookie` value ending the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn session_cookie_and_csrf_rules() {
        let s = Sessions::default();
        let n = s.create().unwrap();
        let cookie = format!("other=1; {COOKIE}={}", n.id);
        // Reads need the cookie only.
        assert_eq!(
            s.check(&Method::GET, &headers(&[("cookie", &cookie)])),
            Ok(())
        );
        assert_eq!(
            s.check(&Method::GET, &headers(&[])),
            Err(Refusal::NoSession)
        );
        assert_eq!(
            s.check(&Method::GET, &headers(&[("cookie", "wasmdm_session=nope")])),
            Err(Refusal::Expired)
        );
        // Changes need the CSRF token and, when present, the same origin.
        assert_eq!(
            s.check(&Method::POST, &headers(&[("cookie", &cookie)])),
            Err(Refusal::Csrf)
        );
        assert_eq!(
            s.check(
                &Method::POST,
                &headers(&[("cookie", &cookie), ("x-csrf-token", "0000")])
            ),
            Err(Refusal::Csrf)
        );
        let good = [
            ("cookie", cookie.as_str()),
            ("x-csrf-token", n.csrf.as_str()),
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ];
        assert_eq!(s.check(&Method::DELETE, &headers(&good)), Ok(()));
        let mut evil = good;
        evil[3] = ("origin", "http://evil.example");
        assert_eq!(
            s.check(&Method::DELETE, &headers(&evil)),
            Err(Refusal::Origin)
        );
        s.remove(&n.id);
        assert_eq!(
            s.check(&Method::GET, &headers(&[("cookie", &cookie)])),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn sessions_are_capped() {
        let s = Sessions::default();
        let first = s.create().unwrap();
        for _ in 0..MAX_SESSIONS {
            s.create().unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.csrf_of(&first.id).is_none(), "the oldest was dropped");
    }

    #[test]
    fn cookie_attributes() {
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
