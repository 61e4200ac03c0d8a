//! The web console's authentication over plain HTTP: without the token or a
//! session every page and API call is refused; the login exchanges the admin
//! token for an HttpOnly, SameSite=Strict session cookie; every change made
//! with the cookie needs the session's CSRF token and the same origin;
//! logout ends the session; the event stream needs it too.

mod common;

use std::io::Read;
use std::time::Duration;

use serde_json::{Value as Json, json};
use wasmdm_server::console::CONSOLE_API_ROUTES;
use wasmdm_server::http::API_ROUTES;

use common::{TestServer, blocking};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One response: status, headers we look at, body.
struct Resp {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: ureq::http::HeaderMap,
    body: String,
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let a = agent();
    let resp = match method {
        "get" => {
            let mut r = a.get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        "delete" => {
            let mut r = a.delete(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        m => {
            let mut r = match m {
                "put" => a.put(url),
                _ => a.post(url),
            };
            let mut typed = false;
            for (k, v) in headers {
                typed |= k.eq_ignore_ascii_case("content-type");
                r = r.header(*k, *v);
            }
            if !typed {
                r = r.header("content-type", "application/json");
            }
            r.send(body.unwrap_or("{}"))
        }
    };
    let mut resp = resp.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (location, set_cookie) = (h("location"), h("set-cookie"));
    let headers = resp.headers().clone();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Resp {
        status: resp.status().as_u16(),
        location,
        set_cookie,
        headers,
        body,
    }
}

fn concrete(path: &str) -> String {
    path.replace("{ep}", "dev-x")
        .replace("{name}", "grp-x")
        .replace("{sha}", &"ab".repeat(32))
        .replace("{id}", "c-x")
        .replace("{label}", "lbl-x")
}

/// Signs in with `token`; returns the cookie pair `wasmdm_session=...`.
fn login(base: &str, token: &str) -> String {
    let host = base.trim_start_matches("http://");
    let r = send(
        "post",
        &format!("{base}/login"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", base),
            ("host", host),
        ],
        Some(&format!("token={token}")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/"));
    let cookie = r.set_cookie.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    cookie.split(';').next().unwrap().to_string()
}

/// The CSRF token the console page carries for this session.
fn csrf(base: &str, cookie: &str) -> String {
    let r = send("get", &format!("{base}/"), &[("cookie", cookie)], None);
    assert_eq!(r.status, 200);
    let marker = r#"name="csrf-token" content=""#;
    let start = r.body.find(marker).unwrap() + marker.len();
    let end = start + r.body[start..].find('"').unwrap();
    let t = r.body[start..end].to_string();
    assert_eq!(t.len(), 64, "{t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_token_or_session_everything_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let base = server.http();
    let token = server.bound.token.clone();
    blocking(move || {
        // Pages: the console redirects to the login, its script is refused.
        let r = send("get", &format!("{base}/"), &[], None);
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/login")));
        for script in ["app.js", "device.js"] {
            let r = send("get", &format!("{base}/console/{script}"), &[], None);
            assert_eq!(r.status, 401, "{script}");
        }
        let r = send("get", &format!("{base}/login"), &[], None);
        assert_eq!(r.status, 200);
        assert!(r.body.contains(r#"<label for="token">"#), "{}", r.body);
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert!(
            r.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        // Every API route, the console's included: no header, a bogus
        // cookie, a wrong token.
        let mut routes: Vec<(&str, &str)> = API_ROUTES.to_vec();
        routes.extend_from_slice(CONSOLE_API_ROUTES);
        for (method, path) in routes {
            let url = format!("{base}{}", concrete(path));
            for headers in [
                vec![],
                vec![("cookie", "wasmdm_session=0123456789abcdef")],
                vec![("authorization", "Bearer wrong-token-0123456789")],
            ] {
                let r = send(method, &url, &headers, None);
                assert_eq!(
                    r.status, 401,
                    "{method} {path} with {headers:?}: {}",
                    r.body
                );
                assert!(!r.body.contains(&token));
            }
        }
        // The admin token opens the console page too (no CSRF needed: no cookie).
        let auth = format!("Bearer {token}");
        let r = send(
            "get",
            &format!("{base}/"),
            &[("authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200);
        let r = send(
            "get",
            &format!("{base}/api/console/devices"),
            &[("authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_csrf_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let base = server.http();
    let token = server.bound.token.clone();
    let api = server.bound.client();
    blocking(move || {
        let host = base.trim_start_matches("http://").to_string();
        let form = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", base.as_str()),
            ("host", host.as_str()),
        ];
        // A wrong token: the form again with the error next to the field, no cookie.
        let r = send("post", &format!("{base}/login"), &form, Some("token=nope"));
        assert_eq!(r.status, 401);
        assert!(r.set_cookie.is_none());
        assert!(r.body.contains(r#"id="token-error""#), "{}", r.body);
        assert!(r.body.contains(r#"aria-describedby="token-error""#));
        // A login posted from another site's page is refused.
        let evil = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ];
        let r = send(
            "post",
            &format!("{base}/login"),
            &evil,
            Some(&format!("token={token}")),
        );
        assert_eq!(r.status, 403);
        assert!(r.set_cookie.is_none());

        let cookie = login(&base, &token);
        let csrf = csrf(&base, &cookie);
        // Reads need the cookie only.
        let r = send(
            "get",
            &format!("{base}/api/devices"),
            &[("cookie", &cookie)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        for script in ["app.js", "device.js"] {
            let r = send(
                "get",
                &format!("{base}/console/{script}"),
                &[("cookie", &cookie)],
                None,
            );
            assert_eq!(r.status, 200, "{script}");
        }
        // Changes: refused without the CSRF token, with a wrong one, from
        // another origin; nothing is changed.
        let url = format!("{base}/api/groups/g1");
        let group = r#"{"labels": ["blue"]}"#;
        for headers in [
            vec![("cookie", cookie.as_str())],
            vec![("cookie", cookie.as_str()), ("x-csrf-token", "00")],
            vec![
                ("cookie", cookie.as_str()),
                ("x-csrf-token", csrf.as_str()),
                ("origin", "http://evil.example"),
            ],
        ] {
            let r = send("put", &url, &headers, Some(group));
            assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        }
        assert!(api.get("/api/groups/g1").is_err(), "nothing was created");
        let r = send(
            "put",
            &url,
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", &base),
                ("host", &host),
            ],
            Some(group),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            api.get("/api/groups/g1").unwrap()["labels"],
            json!(["blue"])
        );

        // The event stream: the first batch is the full state.
        let a = agent();
        let mut resp = a
            .get(format!("{base}/api/events"))
            .header("cookie", &cookie)
            .call()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut reader = resp.body_mut().as_reader();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("event: devices") {
            let n = reader.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let data = seen
            .lines()
            .skip_while(|l| *l != "event: devices")
            .nth(1)
            .unwrap();
        let v: Json = serde_json::from_str(data.trim_start_matches("data: ")).unwrap();
        assert_eq!(v["full"], true);
        drop(reader);

        // Logout needs the CSRF token, then the cookie is worthless.
        let r = send(
            "post",
            &format!("{base}/logout"),
            &[("cookie", &cookie)],
            None,
        );
        assert_eq!(r.status, 401);
        let r = send(
            "post",
            &format!("{base}/logout"),
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            None,
        );
        assert_eq!(r.status, 303);
        assert!(r.set_cookie.unwrap().contains("Max-Age=0"));
        let r = send(
            "get",
            &format!("{base}/api/devices"),
            &[("cookie", &cookie)],
            None,
        );
        assert_eq!(r.status, 401);
        let r = send("get", &format!("{base}/"), &[("cookie", &cookie)], None);
        assert_eq!(r.status, 303);
    })
    .await;
}
