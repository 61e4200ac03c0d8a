//! `wasmdm ctl`: a command-line client of the HTTP JSON API, with progress
//! shown while a campaign runs. [`Client`] is the typed layer; [`ctl_main`]
//! parses arguments and prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value as Json, json};
use thiserror::Error;

/// Client errors.
#[derive(Debug, Error)]
pub enum CtlError {
    /// Bad command line; the text says what is expected.
    #[error("usage: {0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("cannot reach server: {0}")]
    Transport(String),
    /// The server refused the request (status and its error message).
    #[error("server answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` text of the JSON body.
        message: String,
    },
    /// A local file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No admin token was given and none could be read (the text says where it looked).
    #[error(
        "no admin token (give --token, set WASMDM_TOKEN, or point --data-dir at the server's data directory): {0}"
    )]
    NoToken(String),
    /// The device answered a DM operation with an error code (4.xx/5.xx);
    /// the reply was printed, the exit status says it failed.
    #[error("device answered {code} {meaning}")]
    Device {
        /// `c.dd` code (`4.04`).
        code: String,
        /// Its name (`Not Found`), or `Unknown` for codes no RFC names.
        meaning: &'static str,
    },
    /// A campaign waited for ended with devices that failed or timed out;
    /// the report was printed.
    #[error("campaign {id}: {failed} device(s) failed, {timed_out} timed out or unreachable")]
    Campaign {
        /// Campaign id.
        id: String,
        /// Jobs `failed`.
        failed: u64,
        /// Jobs `timed_out`.
        timed_out: u64,
    },
    /// Writing output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// The name of a CoAP response code in `c.dd` form (the protocol core's
/// table), so a failed DM operation says why, not just a number.
pub fn code_meaning(code: &str) -> &'static str {
    wasmdm_proto::coap::msg::Code::parse(code).map_or("Unknown", |c| c.name())
}

/// The error a printed reply stands for: a DM reply with `success: false`
/// ([`CtlError::Device`]), or a waited-for campaign report with failed or
/// timed-out devices ([`CtlError::Campaign`]); `None` when all went well.
fn outcome(dm: bool, waited: bool, v: &Json) -> Option<CtlError> {
    if dm && v.get("success").and_then(Json::as_bool) == Some(false) {
        let code = v
            .get("code")
            .and_then(Json::as_str)
            .unwrap_or("?")
            .to_string();
        let meaning = code_meaning(&code);
        return Some(CtlError::Device { code, meaning });
    }
    if waited {
        let s = v.get("summary");
        let count = |k: &str| s.and_then(|s| s.get(k)).and_then(Json::as_u64).unwrap_or(0);
        let (failed, timed_out) = (count("failed"), count("timed_out"));
        if failed + timed_out > 0 {
            let id = v
                .get("id")
                .and_then(Json::as_str)
                .unwrap_or("?")
                .to_string();
            return Some(CtlError::Campaign {
                id,
                failed,
                timed_out,
            });
        }
    }
    None
}

/// A client of one server's API, carrying its admin token.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Client {
    /// A client of `base` (`http://127.0.0.1:8080`; `https://` trusts the
    /// public web roots) sending `token` as `Authorization: Bearer`.
    pub fn new(base: &str, token: Option<&str>) -> Client {
        Self::with_roots(base, token, ureq::tls::RootCerts::WebPki)
    }

    /// Like [`Client::new`], for an `https://` server whose certificate
    /// chains to a CA in the PEM text `ca_pem` (only those CAs are trusted).
    pub fn with_ca_pem(base: &str, token: Option<&str>, ca_pem: &[u8]) -> Result<Client, CtlError> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(ca_pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(CtlError::Usage(format!("CA file is not valid PEM: {e}"))),
            }
        }
        if certs.is_empty() {
            return Err(CtlError::Usage(
                "the CA file holds no PEM certificate".into(),
            ));
        }
        Ok(Self::with_roots(
            base,
            token,
            ureq::tls::RootCerts::from(certs),
        ))
    }

    fn with_roots(base: &str, token: Option<&str>, roots: ureq::tls::RootCerts) -> Client {
        let config = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: config.into(),
            token: token.map(String::from),
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Adds the `Authorization` header (when there is a token).
    fn authed<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn finish(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Json, CtlError> {
        let mut resp = resp.map_err(|e| CtlError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| CtlError::Transport(e.to_string()))?;
        let v: Json = serde_json::from_str(&text).unwrap_or(Json::String(text));
        if status >= 400 {
            let message = v
                .get("error")
                .and_then(Json::as_str)
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            return Err(CtlError::Api { status, message });
        }
        Ok(v)
    }

    /// GET `path` (`/api/devices`).
    pub fn get(&self, path: &str) -> Result<Json, CtlError> {
        Self::finish(
            self.authed(self.agent.get(format!("{}{path}", self.base)))
                .call(),
        )
    }

    /// POST JSON.
    pub fn post(&self, path: &str, body: &Json) -> Result<Json, CtlError> {
        let bytes = body.to_string();
        Self::finish(
            self.authed(self.agent.post(format!("{}{path}", self.base)))
                .header("content-type", "application/json")
                .send(bytes),
        )
    }

    /// PUT JSON.
    pub fn put(&self, path: &str, body: &Json) -> Result<Json, CtlError> {
        let bytes = body.to_string();
        Self::finish(
            self.authed(self.agent.put(format!("{}{path}", self.base)))
                .header("content-type", "application/json")
                .send(bytes),
        )
    }

    /// POST a raw body (`text/csv` for a bootstrap import).
    pub fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Json, CtlError> {
        Self::finish(
            self.authed(self.agent.post(format!("{}{path}", self.base)))
                .header("content-type", content_type)
                .send(body),
        )
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Result<Json, CtlError> {
        Self::finish(
            self.authed(self.agent.delete(format!("{}{path}", self.base)))
                .call(),
        )
    }

    /// Uploads a software file; returns its record (with `sha256`).
    pub fn upload(
        &self,
        content: &[u8],
        name: &str,
        description: Option<&str>,
        retain_secs: Option<u64>,
    ) -> Result<Json, CtlError> {
        let mut req = self
            .authed(self.agent.post(format!("{}/api/files", self.base)))
            .query("name", name);
        if let Some(d) = description {
            req = req.query("description", d);
        }
        if let Some(r) = retain_secs {
            req = req.query("retain_secs", r.to_string());
        }
        Self::finish(
            req.header("content-type", "application/octet-stream")
                .send(content),
        )
    }

    /// Runs a DM operation (`{"op":"read","path":"/3/0"}`) on a device.
    pub fn dm(&self, endpoint: &str, op: &Json) -> Result<Json, CtlError> {
        self.post(&format!("/api/devices/{endpoint}/dm"), op)
    }

    /// Creates a campaign; `body` holds `group` or `devices` and the spec fields.
    pub fn campaign(&self, body: &Json) -> Result<Json, CtlError> {
        self.post("/api/campaigns", body)
    }

    /// Polls a campaign until it is no longer preparing or running, calling `progress` on each change.
    pub fn wait(&self, id: &str, mut progress: impl FnMut(&Json)) -> Result<Json, CtlError> {
        let mut last = Json::Null;
        loop {
            // Polls carry the summary only; the whole report comes at the end.
            let c = self.get(&format!("/api/campaigns/{id}?jobs=none"))?;
            if c.get("summary") != last.get("summary") || c.get("status") != last.get("status") {
                progress(&c);
            }
            // "preparing": the server still compiles for the devices (issue 13).
            if !matches!(
                c.get("status").and_then(Json::as_str),
                Some("running" | "preparing")
            ) {
                return self.get(&format!("/api/campaigns/{id}"));
            }
            last = c;
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Usage text.
pub const USAGE: &str =
    "wasmdm ctl [--server URL] [--token T] [--data-dir DIR] [--ca CA.pem] COMMAND
  devices | device EP | label EP LABEL...
  read EP PATH | discover EP PATH | write EP PATH VALUE | exec EP PATH [ARGS] | delete EP PATH
  attrs EP PATH pmin=N pmax=N ... | observe EP PATH | cancel-observe EP PATH
  read-composite EP PATH... | observe-composite EP PATH... | cancel-observe-composite EP PATH...
  write-composite EP PATH=VALUE...   (VALUE: JSON if it parses (120, true, \"x\"), else text)
  group list | group show NAME | group set NAME [--ep EP]... [--label L]... | group rm NAME
  file list | file upload PATH [--name N] [--description D] [--retain-secs S] | file rm SHA
  install|upgrade|uninstall|activate|deactivate (--group G | --device EP)... --package NAME
      [--version V] [--file SHA | --upload PATH] [--timeout S] [--delivery push|pull]
      [--protocol coap|http] [--base-uri URI] [--quota N] [--at UNIX_MS | --on-registration]
      [--activate] [--no-wait]
  campaign list | campaign show ID | campaign cancel ID | campaign retry ID | campaign wait ID
  native-code-key   (the public key devices trust in `native-code-keys`, as a key file's text:
      wasmdm ctl native-code-key > operator-native.pub)
  security list | security show EP | security remove EP
  security add EP (--psk-identity ID (--psk-key HEX | --psk-key-file F) | --rpk PUBKEY.pem
      | --x509 | --nosec)
  bootstrap list | bootstrap show EP | bootstrap remove EP | bootstrap sessions [EP]
  bootstrap set EP [--psk-identity ID] [--psk-key HEX | --psk-key-file F | --x509 | --nosec]
      [--label L]... [--config FILE.json]
  bootstrap rotate EP (--psk-key HEX | --psk-key-file F) [--psk-identity ID]
  bootstrap rollover (EP | --label L | --all) | bootstrap rollover cancel EP
  bootstrap import FILE.csv   (rows: endpoint,bootstrap_identity,bootstrap_key_hex,labels;...)
  bootstrap label list | bootstrap label show L | bootstrap label set L FILE.json | bootstrap label rm L
The admin token: --token, else $WASMDM_TOKEN, else the file admin-token in the server's data
directory (--data-dir, else $WASMDM_SERVER_DATA_DIR, else the server's default).
--ca: PEM file of the CA that issued an https server's certificate (or $WASMDM_CA).
Exit status 1 when the server refuses, the device answers 4.xx/5.xx (\"device answered
4.04 Not Found\") or a waited-for campaign ends with failed or timed-out devices.";

/// Env var holding the admin token.
pub const TOKEN_ENV: &str = "WASMDM_TOKEN";
/// Env var naming the server's data directory (also read by `wasmdm server`).
pub const DATA_DIR_ENV: &str = "WASMDM_SERVER_DATA_DIR";

/// The admin token for ctl: `token` (from `--token`), else `$WASMDM_TOKEN`,
/// else the token file in `data_dir` (`--data-dir`), `$WASMDM_SERVER_DATA_DIR`
/// or `default_dir` (where `wasmdm server` keeps its data by default).
pub fn resolve_token(
    token: Option<&str>,
    data_dir: Option<&Path>,
    default_dir: &Path,
) -> Result<String, CtlError> {
    if let Some(t) = token {
        return Ok(t.to_string());
    }
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let dir = match data_dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os(DATA_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| default_dir.to_path_buf()),
    };
    let path = crate::auth::token_path(&dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => Err(CtlError::NoToken(format!("{} is empty", path.display()))),
        Err(e) => Err(CtlError::NoToken(format!("{}: {e}", path.display()))),
    }
}

/// Runs `wasmdm ctl` with `args` (after `ctl`), printing to `out`. The server
/// defaults to `$WASMDM_SERVER` or `http://127.0.0.1:8080`; `default_dir`
/// is the server's default data directory (for the token file).
pub fn ctl_main(args: &[String], default_dir: &Path, out: &mut dyn Write) -> Result<(), CtlError> {
    let mut args: Vec<String> = args.to_vec();
    let mut server =
        std::env::var("WASMDM_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let (mut token, mut data_dir, mut ca) =
        (None, None, std::env::var_os("WASMDM_CA").map(PathBuf::from));
    while let Some(opt) = args.first().cloned() {
        if !matches!(opt.as_str(), "--server" | "--token" | "--data-dir" | "--ca") {
            break;
        }
        let value = args
            .get(1)
            .cloned()
            .ok_or_else(|| CtlError::Usage(format!("{opt} takes a value")))?;
        match opt.as_str() {
            "--server" => server = value,
            "--token" => token = Some(value),
            "--data-dir" => data_dir = Some(PathBuf::from(value)),
            _ => ca = Some(PathBuf::from(value)),
        }
        args.drain(..2);
    }
    if args.is_empty() {
        return Err(CtlError::Usage(USAGE.into()));
    }
    let token = resolve_token(token.as_deref(), data_dir.as_deref(), default_dir)?;
    let c = match ca {
        None => Client::new(&server, Some(&token)),
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|source| CtlError::File {
                path: path.display().to_string(),
                source,
            })?;
            Client::with_ca_pem(&server, Some(&token), &pem)?
        }
    };
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let usage = || CtlError::Usage(USAGE.into());
    // DM operations and waited-for campaigns can fail after a 200: checked below.
    let dm = matches!(
        a.first(),
        Some(
            &("read"
                | "discover"
                | "observe"
                | "cancel-observe"
                | "write"
                | "exec"
                | "delete"
                | "attrs"
                | "read-composite"
                | "observe-composite"
                | "cancel-observe-composite"
                | "write-composite")
        )
    );
    let waited = match a.as_slice() {
        ["campaign", "wait", _] => true,
        [
            "install" | "upgrade" | "uninstall" | "activate" | "deactivate",
            rest @ ..,
        ] => !rest.contains(&"--no-wait"),
        _ => false,
    };
    let v = match a.as_slice() {
        ["native-code-key"] => {
            // The key file's text alone, ready to redirect to a file.
            let v = c.get("/api/native-code-key")?;
            let text = v.get("public_key").and_then(Json::as_str).ok_or_else(|| {
                CtlError::Transport("the server's answer carries no `public_key`".into())
            })?;
            write!(out, "{}", public_key_file(text))?;
            return Ok(());
        }
        ["devices"] => c.get("/api/devices")?,
        ["device", ep] => c.get(&format!("/api/devices/{ep}"))?,
        ["label", ep, labels @ ..] => c.put(&format!("/api/devices/{ep}/labels"), &json!(labels))?,
        ["read", ep, path] => c.dm(ep, &json!({"op": "read", "path": path, "accept": null}))?,
        ["discover", ep, path] => c.dm(ep, &json!({"op": "discover", "path": path}))?,
        ["observe", ep, path] => c.dm(ep, &json!({"op": "observe", "path": path, "accept": null}))?,
        ["cancel-observe", ep, path] => c.dm(
            ep,
            &json!({"op": "cancel-observe", "path": path, "accept": null, "token": ""}),
        )?,
        ["write", ep, path, value] => c.dm(
            ep,
            &json!({"op": "write", "path": path, "replace": true, "format": 0, "payload": hex::encode(value.as_bytes())}),
        )?,
        ["exec", ep, path] => c.dm(ep, &json!({"op": "execute", "path": path, "args": null}))?,
        ["exec", ep, path, args] => c.dm(ep, &json!({"op": "execute", "path": path, "args": args}))?,
        ["delete", ep, path] => c.dm(ep, &json!({"op": "delete", "path": path}))?,
        [op @ ("read-composite" | "observe-composite" | "cancel-observe-composite"), ep, paths @ ..] if !paths.is_empty() => {
            c.dm(ep, &json!({"op": op, "paths": paths}))?
        }
        ["write-composite", ep, pairs @ ..] if !pairs.is_empty() => c.dm(ep, &json!({"op": "write-composite", "values": composite_values(pairs)?}))?,
        ["attrs", ep, path, attrs @ ..] => c.dm(ep, &json!({"op": "write-attributes", "path": path, "attrs": attrs}))?,
        ["group", "list"] => c.get("/api/groups")?,
        ["group", "show", name] => c.get(&format!("/api/groups/{name}"))?,
        ["group", "rm", name] => c.delete(&format!("/api/groups/{name}"))?,
        ["group", "set", name, rest @ ..] => {
            let (eps, labels) = (flag_values(rest, "--ep"), flag_values(rest, "--label"));
            c.put(&format!("/api/groups/{name}"), &json!({"endpoints": eps, "labels": labels}))?
        }
        ["file", "list"] => c.get("/api/files")?,
        ["file", "rm", sha] => c.delete(&format!("/api/files/{sha}"))?,
        ["file", "upload", path, rest @ ..] => upload(&c, path, rest)?,
        ["campaign", "list"] => c.get("/api/campaigns")?,
        ["campaign", "show", id] => c.get(&format!("/api/campaigns/{id}"))?,
        ["campaign", "cancel", id] => c.post(&format!("/api/campaigns/{id}/cancel"), &json!({}))?,
        ["campaign", "retry", id] => c.post(&format!("/api/campaigns/{id}/retry"), &json!({}))?,
        ["campaign", "wait", id] => wait(&c, id, out)?,
        ["security", "list"] => c.get("/api/security")?,
        ["security", "show", ep] => c.get(&format!("/api/security/{ep}"))?,
        ["security", "remove", ep] => c.delete(&format!("/api/security/{ep}"))?,
        ["security", "add", ep, rest @ ..] => c.put(&format!("/api/security/{ep}"), &security_body(rest)?)?,
        ["bootstrap", rest @ ..] => crate::bootstrap::ctl::run(&c, rest)?,
        [op @ ("install" | "upgrade" | "uninstall" | "activate" | "deactivate"), rest @ ..] => {
            let body = campaign_body(&c, op, rest)?;
            let created = c.campaign(&body)?;
            let id = created.get("id").and_then(Json::as_str).unwrap_or_default().to_string();
            writeln!(out, "campaign {id} started on {} device(s)", created["jobs"].as_array().map_or(0, Vec::len))?;
            if rest.contains(&"--no-wait") { created } else { wait(&c, &id, out)? }
        }
        _ => return Err(usage()),
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    )?;
    match outcome(dm, waited, &v) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `PATH=VALUE` arguments as the API's `values` object; a VALUE that parses
/// as JSON (`120`, `true`, `"+02"`) is that value, anything else text.
fn composite_values(pairs: &[&str]) -> Result<Json, CtlError> {
    let mut values = serde_json::Map::new();
    for pair in pairs {
        let (path, value) = pair.split_once('=').ok_or_else(|| {
            CtlError::Usage(format!("{pair:?}: write-composite takes PATH=VALUE"))
        })?;
        let v = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_string()));
        values.insert(path.to_string(), v);
    }
    Ok(Json::Object(values))
}

/// `text` ending with exactly one newline, as a key file.
fn public_key_file(text: &str) -> String {
    format!("{}\n", text.trim_end())
}

fn flag_values<'a>(args: &[&'a str], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w.first() == Some(&flag))
        .filter_map(|w| w.get(1).copied())
        .collect()
}

fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    flag_values(args, flag).into_iter().next()
}

fn upload(c: &Client, path: &str, rest: &[&str]) -> Result<Json, CtlError> {
    let content = std::fs::read(path).map_err(|source| CtlError::File {
        path: path.into(),
        source,
    })?;
    let default_name = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let name = flag(rest, "--name")
        .map(String::from)
        .unwrap_or(default_name);
    let retain = match flag(rest, "--retain-secs") {
        Some(s) => Some(
            s.parse()
                .map_err(|_| CtlError::Usage("--retain-secs takes seconds".into()))?,
        ),
        None => None,
    };
    c.upload(&content, &name, flag(rest, "--description"), retain)
}

fn campaign_body(c: &Client, op: &str, rest: &[&str]) -> Result<Json, CtlError> {
    let package = flag(rest, "--package")
        .ok_or_else(|| CtlError::Usage("--package NAME is required".into()))?;
    let mut body = json!({ "op": op, "package": package });
    let devices = flag_values(rest, "--device");
    match (flag(rest, "--group"), devices.is_empty()) {
        (Some(g), true) => body["group"] = json!(g),
        (None, false) => body["devices"] = json!(devices),
        _ => {
            return Err(CtlError::Usage(
                "give --group G or --device EP (one or more)".into(),
            ));
        }
    }
    let file = match (flag(rest, "--file"), flag(rest, "--upload")) {
        (Some(f), None) => Some(f.to_string()),
        (None, Some(p)) => upload(c, p, rest)?
            .get("sha256")
            .and_then(Json::as_str)
            .map(String::from),
        (None, None) => None,
        _ => {
            return Err(CtlError::Usage(
                "--file and --upload exclude each other".into(),
            ));
        }
    };
    if let Some(f) = file {
        body["file"] = json!(f);
    }
    let num = |name: &str| -> Result<Option<u64>, CtlError> {
        flag(rest, name)
            .map(|v| {
                v.parse()
                    .map_err(|_| CtlError::Usage(format!("{name} takes a number")))
            })
            .transpose()
    };
    if let Some(v) = flag(rest, "--version") {
        body["version"] = json!(v);
    }
    if let Some(t) = num("--timeout")? {
        body["timeout_secs"] = json!(t);
    }
    if let Some(q) = num("--quota")? {
        body["quota"] = json!(q);
    }
    for (f, key) in [
        ("--delivery", "delivery"),
        ("--protocol", "protocol"),
        ("--base-uri", "base_uri"),
    ] {
        if let Some(v) = flag(rest, f) {
            body[key] = json!(v);
        }
    }
    if let Some(at) = num("--at")? {
        body["schedule"] = json!({"kind": "at", "unix_ms": at});
    } else if rest.contains(&"--on-registration") {
        body["schedule"] = json!({"kind": "next_registration"});
    }
    if rest.contains(&"--activate") {
        body["activate"] = json!(true);
    }
    Ok(body)
}

/// The PUT body of `security add`: exactly one mode.
fn security_body(rest: &[&str]) -> Result<Json, CtlError> {
    let known = [
        "--psk-identity",
        "--psk-key",
        "--psk-key-file",
        "--rpk",
        "--x509",
        "--nosec",
    ];
    let mut i = 0;
    while let Some(a) = rest.get(i) {
        if !known.contains(a) {
            return Err(CtlError::Usage(format!(
                "security add: unknown argument {a}"
            )));
        }
        // Flags with a value skip it.
        i += if matches!(*a, "--x509" | "--nosec") {
            1
        } else {
            2
        };
    }
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| CtlError::File {
            path: path.into(),
            source,
        })
    };
    let identity = flag(rest, "--psk-identity");
    let key = match (flag(rest, "--psk-key"), flag(rest, "--psk-key-file")) {
        (Some(k), None) => Some(k.trim().to_string()),
        (None, Some(f)) => Some(String::from_utf8_lossy(&read(f)?).trim().to_string()),
        (None, None) => None,
        _ => {
            return Err(CtlError::Usage(
                "--psk-key and --psk-key-file exclude each other".into(),
            ));
        }
    };
    let rpk = flag(rest, "--rpk");
    let (x509, nosec) = (rest.contains(&"--x509"), rest.contains(&"--nosec"));
    let modes = [
        identity.is_some() || key.is_some(),
        rpk.is_some(),
        x509,
        nosec,
    ];
    if modes.iter().filter(|m| **m).count() != 1 {
        return Err(CtlError::Usage(
            "security add EP takes one of --psk-identity ID with --psk-key HEX or \
             --psk-key-file FILE (hex), --rpk PUBKEY.pem, --x509, --nosec"
                .into(),
        ));
    }
    Ok(match (identity, key, rpk) {
        (Some(id), Some(key), _) => json!({"mode": "psk", "identity": id, "key": key}),
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(CtlError::Usage(
                "PSK needs both --psk-identity and --psk-key (or --psk-key-file)".into(),
            ));
        }
        (None, None, Some(path)) => {
            let bytes = read(path)?;
            // PEM text as it is; anything else is taken for DER.
            let text = match String::from_utf8(bytes) {
                Ok(t) if t.contains("-----BEGIN") => t,
                Ok(t) => hex::encode(t.into_bytes()),
                Err(e) => hex::encode(e.into_bytes()),
            };
            json!({"mode": "rpk", "public_key": text})
        }
        _ if x509 => json!({"mode": "x509"}),
        _ => json!({"mode": "nosec"}),
    })
}

fn wait(c: &Client, id: &str, out: &mut dyn Write) -> Result<Json, CtlError> {
    let mut err = None;
    let v = c.wait(id, |c| {
        let s = &c["summary"];
        let line = format!(
            "[{}] done {} failed {} timed out {} pending {} cancelled {} skipped {}",
            c["status"].as_str().unwrap_or("?"),
            s["done"],
            s["failed"],
            s["timed_out"],
            s["pending"],
            s["cancelled"],
            s["skipped"]
        );
        if let Err(e) = writeln!(out, "{line}") {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_values_parse_json_else_text() {
        let v = composite_values(&["/1/0/1=120", "/3/0/14=+02", "/1/0/6=false", "/3/0/15=\"7\""]);
        assert_eq!(
            v.unwrap(),
            json!({"/1/0/1": 120, "/3/0/14": "+02", "/1/0/6": false, "/3/0/15": "7"})
        );
        assert!(matches!(
            composite_values(&["/1/0/1"]),
            Err(CtlError::Usage(_))
        ));
        let mut out = Vec::new();
        let nowhere = Path::new("/nonexistent/wasmdm-server");
        let args: Vec<String> = ["--token", "t", "read-composite", "ep"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(matches!(
            ctl_main(&args, nowhere, &mut out),
            Err(CtlError::Usage(_))
        ));
    }

    #[test]
    fn flags_and_usage() {
        let a = ["--ep", "a", "--label", "x", "--ep", "b"];
        assert_eq!(flag_values(&a, "--ep"), vec!["a", "b"]);
        assert_eq!(flag(&a, "--label"), Some("x"));
        let mut out = Vec::new();
        let nowhere = Path::new("/nonexistent/wasmdm-server");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            ctl_main(&args(&["--token", "t", "bogus"]), nowhere, &mut out),
            Err(CtlError::Usage(_))
        ));
        assert!(matches!(
            ctl_main(&args(&["--token"]), nowhere, &mut out),
            Err(CtlError::Usage(_))
        ));
        let c = Client::new("http://127.0.0.1:1", None);
        let e = campaign_body(&c, "upgrade", &["--package", "app"]).unwrap_err();
        assert!(matches!(e, CtlError::Usage(_)));
        let b = campaign_body(
            &c,
            "upgrade",
            &[
                "--package",
                "app",
                "--group",
                "g",
                "--file",
                "ab",
                "--quota",
                "5",
                "--on-registration",
            ],
        )
        .unwrap();
        assert_eq!(b["quota"], 5);
        assert_eq!(b["schedule"]["kind"], "next_registration");
        assert!(matches!(
            campaign_body(
                &c,
                "upgrade",
                &["--package", "a", "--device", "d", "--quota", "x"]
            ),
            Err(CtlError::Usage(_))
        ));
    }

    #[test]
    fn failed_replies_and_campaigns_are_errors() {
        let ok = json!({"code": "2.05", "success": true});
        assert!(outcome(true, false, &ok).is_none());
        let e = outcome(true, false, &json!({"code": "4.05", "success": false})).unwrap();
        assert_eq!(e.to_string(), "device answered 4.05 Method Not Allowed");
        assert_eq!(code_meaning("6.66"), "Unknown");
        let report = |failed: u64, timed_out: u64| json!({"id": "c1", "summary": {"done": 1, "failed": failed, "timed_out": timed_out}});
        assert!(outcome(false, true, &report(0, 0)).is_none());
        // Not waited for (--no-wait, campaign show): the report alone is no failure.
        assert!(outcome(false, false, &report(1, 0)).is_none());
        let e = outcome(false, true, &report(1, 2)).unwrap();
        assert!(matches!(
            e,
            CtlError::Campaign {
                failed: 1,
                timed_out: 2,
                ..
            }
        ));
    }

    #[test]
    fn security_add_arguments() {
        let b = security_body(&["--psk-identity", "id", "--psk-key", "00ff"]).unwrap();
        assert_eq!(b, json!({"mode": "psk", "identity": "id", "key": "00ff"}));
        assert_eq!(security_body(&["--x509"]).unwrap(), json!({"mode": "x509"}));
        assert_eq!(
            security_body(&["--nosec"]).unwrap(),
            json!({"mode": "nosec"})
        );
        for bad in [
            &[][..],
            &["--psk-identity", "id"],
            &["--psk-key", "00"],
            &["--x509", "--nosec"],
            &["--psk-identity", "id", "--psk-key", "00", "--x509"],
            &[
                "--psk-identity",
                "id",
                "--psk-key",
                "00",
                "--psk-key-file",
                "f",
            ],
            &["--bogus"],
        ] {
            assert!(
                matches!(security_body(bad), Err(CtlError::Usage(_))),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key.hex");
        std::fs::write(&f, "  00112233445566778899aabbccddeeff\n").unwrap();
        let b = security_body(&[
            "--psk-identity",
            "id",
            "--psk-key-file",
            f.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(b["key"], "00112233445566778899aabbccddeeff");
    }
}
