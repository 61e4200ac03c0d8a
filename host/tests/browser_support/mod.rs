//! A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) over
//! HTTP for the console's browser tests: Debian's `chromedriver` driving
//! headless `chromium`. Only what the tests use: sessions, navigation,
//! finding elements by CSS, clicks, typing, script execution, screenshots.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Finds the system Chromium and chromedriver, or says why not.
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let which = |names: &[&str]| {
        names.iter().find_map(|n| {
            let out = Command::new("which").arg(n).output().ok()?;
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!p.is_empty()).then(|| PathBuf::from(p))
        })
    };
    let browser = which(&["chromium", "chromium-browser"])
        .ok_or("chromium not installed (apt-get install chromium)")?;
    let driver = which(&["chromedriver"])
        .ok_or("chromedriver not installed (apt-get install chromium-driver)")?;
    Ok((browser, driver))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running chromedriver with one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
    /// How long `find` and `wait_*` wait.
    pub timeout: Duration,
    _profile: tempfile::TempDir,
}

/// A found element.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Element {
    /// The element as a script argument (W3C WebDriver §13.2).
    pub fn as_arg(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(ELEMENT.to_string(), json!(self.0));
        Value::Object(m)
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` x `height`.
    /// A browser for test `name`: `None` (with a SKIPPED note) where
    /// chromium or chromedriver is missing; waits up to
    /// `$CONSOLE_TEST_TIMEOUT` seconds (default 90).
    pub fn for_test(name: &str, width: u32, height: u32) -> Option<Browser> {
        let mut browser = match Browser::start(width, height) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIPPED {name}: {e}");
                return None;
            }
        };
        browser.timeout = Duration::from_secs(
            std::env::var("CONSOLE_TEST_TIMEOUT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(90),
        );
        Some(browser)
    }

    pub fn start(width: u32, height: u32) -> Result<Browser, String> {
        let (browser, driver) = find_browser()?;
        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver: {e}"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            agent,
            timeout: Duration::from_secs(60),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.raw("GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not start".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                    format!("--user-data-dir={}", b._profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let v = b.raw("POST", "/session", Some(caps))?;
        let id = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {v}"))?
            .to_string();
        b.base = format!("{}/session/{id}", b.base);
        Ok(b)
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut resp = resp.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status >= 400 {
            return Err(format!("{method} {path}: {status} {}", v["value"]));
        }
        Ok(v)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver: {e}"))["value"]
            .clone()
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an async script: the last argument is the callback to call with the result.
    pub fn js_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn try_find(&self, css: &str) -> Option<Element> {
        let v = self
            .raw(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        v["value"][ELEMENT].as_str().map(|s| Element(s.to_string()))
    }

    /// The first element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            if Instant::now() >= deadline {
                self.failure_shot();
                panic!("no element {css:?} on {}", self.url());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `script` (a function body) returns a truthy value; returns it.
    pub fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + self.timeout;
        loop {
            let v = self.js(script, args.clone());
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                self.failure_shot();
                panic!("timed out waiting until {what} (on {})", self.url());
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits until the text of the first element matching `css` contains `text`.
    pub fn wait_text(&self, css: &str, text: &str) -> String {
        self.wait_js(
            &format!("{css} shows {text:?}"),
            "const e = document.querySelector(arguments[0]); \
             return e && e.textContent.includes(arguments[1]) ? e.textContent : null;",
            json!([css, text]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// Clears the field matching `css` and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
        self.type_into(&e, text);
    }

    /// Types `text` into an element (for a file input: a local path).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Selects the option with `value` in the `<select>` matching `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.find(css);
        let ok = self.js(
            "const s = document.querySelector(arguments[0]); \
             if (![...s.options].some(o => o.value === arguments[1])) return false; \
             s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
            json!([css, value]),
        );
        assert_eq!(ok, json!(true), "{css} has no option {value}");
    }

    /// Text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// On a failure: the page as it was, in the temp directory, and its log.
    fn failure_shot(&self) {
        let path = std::env::temp_dir().join("wasmdm-console-failure.png");
        if let Ok(v) = self.raw("GET", "/screenshot", None)
            && let Ok(png) = base64::engine::general_purpose::STANDARD
                .decode(v["value"].as_str().unwrap_or_default())
        {
            let _ = std::fs::write(&path, png);
            eprintln!("screenshot of the failure: {}", path.display());
        }
        if let Ok(v) = self.raw("POST", "/execute/sync", Some(json!({
            "script": "return document.querySelector('main') && document.querySelector('main').innerText;",
            "args": [],
        }))) {
            eprintln!("page text:\n{}", v["value"].as_str().unwrap_or_default());
        }
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Accepts a `confirm()` dialog if one is open.
    pub fn accept_alert(&self) {
        let _ = self.raw("POST", "/alert/accept", Some(json!({})));
    }

    /// Waits until `script` (a function body) returns an element; that element.
    pub fn find_js(&self, what: &str, script: &str, args: Value) -> Element {
        let v = self.wait_js(what, script, args);
        match v[ELEMENT].as_str() {
            Some(id) => Element(id.to_string()),
            None => panic!("{what}: the script returned {v}, not an element"),
        }
    }

    /// The enabled, visible button (or link) inside an element
    /// matching `scope` whose text or `aria-label` is `label`, as a person
    /// finds it: by what it says.
    pub fn button(&self, scope: &str, label: &str) -> Element {
        self.find_js(
            &format!("a button {label:?} in {scope}"),
            "const [scope, label] = arguments; \
             for (const s of document.querySelectorAll(scope)) \
               for (const b of s.querySelectorAll('button, a, input[type=submit]')) \
                 if (!b.disabled && b.getClientRects().length \
                     && (b.textContent.trim() === label || b.getAttribute('aria-label') === label)) return b; \
             return null;",
            json!([scope, label]),
        )
    }

    /// Clicks the button [`Browser::button`] finds.
    pub fn click_button(&self, scope: &str, label: &str) {
        let e = self.button(scope, label);
        self.click_element(&e);
    }

    /// The form control inside `scope` whose `<label>` text or `aria-label` is `label`.
    pub fn labelled(&self, scope: &str, label: &str) -> Element {
        self.find_js(
            &format!("a field labelled {label:?} in {scope}"),
            "const [scope, label] = arguments; \
             for (const s of document.querySelectorAll(scope)) { \
               for (const l of s.querySelectorAll('label')) \
                 if (l.textContent.trim() === label && l.control && !l.control.disabled) return l.control; \
               for (const c of s.querySelectorAll('input, select, textarea')) \
                 if (c.getAttribute('aria-label') === label && !c.disabled) return c; \
             } \
             return null;",
            json!([scope, label]),
        )
    }

    /// Clears the field labelled `label` inside `scope` and types `text`.
    pub fn fill_labelled(&self, scope: &str, label: &str, text: &str) {
        let e = self.labelled(scope, label);
        self.cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
        self.type_into(&e, text);
    }

    /// Picks the option whose text contains `option` in the `<select>`
    /// labelled `label` inside `scope` (as a change by the user).
    pub fn choose_labelled(&self, scope: &str, label: &str, option: &str) {
        let e = self.labelled(scope, label);
        let ok = self.js(
            "const [s, text] = arguments; \
             const o = [...s.options].find(o => o.textContent.includes(text)); \
             if (!o) return false; \
             s.value = o.value; s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
            json!([e.as_arg(), option]),
        );
        assert_eq!(ok, json!(true), "{label:?} offers no option {option:?}");
    }

    /// Clicks the first visible element matching `css` whose text starts
    /// with `text` (a `<summary>`, a link, a tab).
    pub fn click_text(&self, css: &str, text: &str) {
        let e = self.find_js(
            &format!("{css} reading {text:?}"),
            "return [...document.querySelectorAll(arguments[0])] \
               .find(e => e.getClientRects().length && e.textContent.trim().startsWith(arguments[1])) || null;",
            json!([css, text]),
        );
        self.click_element(&e);
    }

    /// Clicks an element found before.
    pub fn click_element(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }
}

/// A `wasmdm server` (in process, loopback, NoSec allowed, its own data
/// directory under `dir`) on a tokio runtime of its own, for browser tests.
pub struct ConsoleServer {
    rt: tokio::runtime::Runtime,
    pub bound: wasmdm_server::Bound,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ConsoleServer {
    pub fn start(dir: &Path) -> ConsoleServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let data_dir = dir.join("server");
        let mut config = wasmdm_server::ServerConfig::new(any, any, data_dir.clone());
        config.allow_nosec = true;
        let (bound, stop) = crate::device_support::spawn_server(&rt, config);
        ConsoleServer {
            rt,
            bound,
            data_dir,
            stop: Some(stop),
        }
    }
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = &self.rt;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.raw("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
