//! The web console: a small hand-written front end (HTML, CSS, two scripts,
//! no build step) shipped inside the binary and served by `wasmdm server` on
//! its HTTP port at `/`, plus the API endpoints and the login it needs.
//!
//! Every action of the console goes through the JSON API the CLI uses; the
//! page authenticates with a session cookie got by exchanging the admin
//! token at `/login` ([`session`]). Without a session (or the token) `/`
//! redirects to `/login`, the script and every `/api` call answer 401.

pub mod api;
pub mod events;
pub mod history;
pub mod session;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::http::AppState;
pub use session::Sessions;

/// State of the console kept by the server process.
#[derive(Debug)]
pub struct ConsoleState {
    /// Slots of open event streams ([`events::MAX_STREAMS`]).
    pub streams: std::sync::Arc<tokio::sync::Semaphore>,
    /// Signed-in browsers.
    pub sessions: Sessions,
    /// Software last seen per device (see [`api::InventoryCache`]).
    pub inventory: api::InventoryCache,
    /// DM operations run through the API, per device ([`history`]).
    pub dm_history: history::DmHistory,
    /// Manifest facts per stored file, by sha256 (files never change).
    pub manifests: std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>,
}

impl Default for ConsoleState {
    fn default() -> Self {
        ConsoleState {
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(events::MAX_STREAMS)),
            sessions: Sessions::default(),
            inventory: Default::default(),
            dm_history: Default::default(),
            manifests: Default::default(),
        }
    }
}

const INDEX_HTML: &str = include_str!("../../console/index.html");
const LOGIN_HTML: &str = include_str!("../../console/login.html");
const APP_JS: &str = include_str!("../../console/app.js");
/// The device page (loaded after app.js, whose helpers it uses).
const DEVICE_JS: &str = include_str!("../../console/device.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// Console API routes (method, path), all behind the API's authentication.
pub const CONSOLE_API_ROUTES: &[(&str, &str)] = &[
    ("get", "/api/events"),
    ("get", "/api/console/devices"),
    ("get", "/api/console/devices/{ep}/software"),
    ("get", "/api/console/devices/{ep}/history"),
    ("get", "/api/console/files"),
    ("get", "/api/console/campaigns"),
];

/// The console's `/api` routes; the caller puts them behind authentication.
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events::events))
        .route("/api/console/devices", get(api::list_devices))
        .route(
            "/api/console/devices/{ep}/software",
            get(api::device_software),
        )
        .route(
            "/api/console/devices/{ep}/history",
            get(api::device_history),
        )
        .route("/api/console/files", get(api::list_files))
        .route("/api/console/campaigns", get(api::list_campaigns))
}

/// The pages: `/`, `/login`, `/logout` and the assets.
pub fn page_router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/console/app.js", get(app_js))
        .route("/console/device.js", get(device_js))
        .route("/console/app.css", get(app_css))
}

/// Headers of every console page: no framing (clickjacking), no inline
/// script (CSP), no sniffing, no caching of pages that carry a CSRF token.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 6] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Not `no-referrer`: with it browsers send `Origin: null` on the
        // login form, which the origin check must refuse.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// How a page request is authenticated: the admin token, or a session
/// (whose CSRF token the page embeds).
enum Viewer {
    Token,
    Session(String),
}

fn viewer(s: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if let Some(t) = bearer {
        return s.token.matches(t).then_some(Viewer::Token);
    }
    let id = session::cookie(headers, session::COOKIE)?;
    s.console.sessions.csrf_of(id).map(Viewer::Session)
}

fn secure(s: &AppState) -> bool {
    s.http_base.starts_with("https://")
}

async fn index(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let csrf = match viewer(&s, &headers) {
        None => return Redirect::to("/login").into_response(),
        Some(Viewer::Token) => String::new(),
        Some(Viewer::Session(csrf)) => csrf,
    };
    let html = INDEX_HTML.replace("{{CSRF}}", &csrf);
    (page_headers("text/html; charset=utf-8"), html).into_response()
}

fn login_form(error: Option<&str>) -> String {
    let error = match error {
        Some(e) => format!(r#"<p class="field-error" id="token-error" role="alert">{e}</p>"#),
        None => String::new(),
    };
    LOGIN_HTML.replace("{{ERROR}}", &error).replace(
        "{{INVALID}}",
        if error.is_empty() {
            ""
        } else {
            r#" aria-invalid="true" aria-describedby="token-error""#
        },
    )
}

async fn login_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if viewer(&s, &headers).is_some() {
        return Redirect::to("/").into_response();
    }
    (page_headers("text/html; charset=utf-8"), login_form(None)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<AppState>, headers: HeaderMap, form: Form<LoginForm>) -> Response {
    // A login posted by another site's page is refused (login CSRF).
    if !session::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "request from another origin refused").into_response();
    }
    if !s.token.matches(form.token.trim()) {
        let page = login_form(Some(
            "That is not the admin token (see the admin-token file in the server's data directory).",
        ));
        return (
            StatusCode::UNAUTHORIZED,
            page_headers("text/html; charset=utf-8"),
            page,
        )
            .into_response();
    }
    let Some(new) = s.console.sessions.create() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session could be made",
        )
            .into_response();
    };
    let cookie = session::set_cookie(&new.id, secure(&s));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout(State(s): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    if let Err(r) = s.console.sessions.check(&method, &headers) {
        return crate::auth::unauthorized(r.message());
    }
    if let Some(id) = session::cookie(&headers, session::COOKIE) {
        s.console.sessions.remove(id);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie(secure(&s)))],
        Redirect::to("/login"),
    )
        .into_response()
}

async fn app_js(State(s): State<AppState>, headers: HeaderMap) -> Response {
    script(&s, &headers, APP_JS)
}

async fn device_js(State(s): State<AppState>, headers: HeaderMap) -> Response {
    script(&s, &headers, DEVICE_JS)
}

/// A script of the console, for a signed-in viewer only.
fn script(s: &AppState, headers: &HeaderMap, body: &'static str) -> Response {
    if viewer(s, headers).is_none() {
        return crate::auth::unauthorized("sign in at /login first");
    }
    (page_headers("text/javascript; charset=utf-8"), body).into_response()
}

/// The style sheet is public: the login page needs it, and it holds nothing secret.
async fn app_css() -> Response {
    (page_headers("text/css; charset=utf-8"), APP_CSS).into_response()
}
