//! One bootstrap session, sans-IO: what the server sends after it answered a
//! Bootstrap-Request, and what it makes of each answer (LwM2M 1.1 Core
//! §5.2.7, §6.1). No socket, no clock, no store: the driver feeds answers
//! and instants in, and carries out the [`Next`] actions it polls.
//!
//! The sequence:
//! 1. Bootstrap-Delete of each configured path (§5.2.7.5). A refusal is
//!    recorded and the session goes on: a device may lack the object.
//! 2. Bootstrap-Discover of /0 (§5.2.7.4), to put the new accounts on /0
//!    instances the device's bootstrap account does not use. Without a 2.05
//!    (a 1.0 device) the new accounts start at /0/1.
//! 3. The operational credentials are handed to the driver to store
//!    ([`Next::Store`]) *before* they go to the device, so it can register
//!    right after Finish.
//! 4. Bootstrap-Write (PUT) of each /0/x, then each /1/y (§5.2.7.2). A
//!    refusal ends the session: a Finish would commit half a configuration.
//! 5. With a bootstrap credential rollover pending ([`super::rollover`]):
//!    Bootstrap-Write of the device's own bootstrap account (the /0
//!    instance Discover listed without `ssid`) with the new PSK identity
//!    and key, its Server URI kept. A refusal is recorded and the session
//!    goes on: the rollover stays pending, the operational accounts still
//!    reach the device.
//! 6. Bootstrap-Finish (`POST /bs`, §5.2.7.6): 2.04 succeeds; anything else
//!    (4.06 with the device's reason) is recorded as a failure.

use coap_lite::{CoapOption, Packet, RequestType};
use serde::{Deserialize, Serialize};
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::codec;
use wasmdm_proto::model::{ContentFormat, Node, Path, ResourceValue, Value};

use super::config::{AccountSecurity, MAX_URI_LEN, ServerAccount, parse_delete_path};
use super::rollover::Rollover;
use crate::security::{Credential, SecurityEntry};

/// Longest diagnostic text kept from a device's answer.
const MAX_DIAGNOSTIC: usize = 256;

/// A server account ready to write: its URI resolved and, in PSK mode, the
/// credential generated for this session.
#[derive(Clone)]
pub struct ResolvedAccount {
    /// The account settings (`uri` filled in).
    pub account: ServerAccount,
    /// PSK identity and key, in PSK mode.
    pub psk: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ResolvedAccount {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedAccount")
            .field("account", &self.account)
            .field("psk_identity", &self.psk.as_ref().map(|p| &p.0))
            .finish()
    }
}

/// Everything a session will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bootstrap-Delete targets, in order.
    pub delete: Vec<String>,
    /// Accounts to write.
    pub accounts: Vec<ResolvedAccount>,
    /// Payload format of the Writes (TLV, SenML JSON or SenML CBOR).
    pub format: ContentFormat,
    /// A pending bootstrap credential to write into the device's bootstrap
    /// account.
    pub rollover: Option<Rollover>,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// In progress.
    Running,
    /// Finish answered 2.04.
    Succeeded,
    /// A step failed or Finish was refused.
    Failed,
    /// The session ran out of time.
    TimedOut,
    /// The server stopped, or the device started another bootstrap.
    Interrupted,
}

/// One request of a session and its outcome, as recorded (never a secret value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `delete`, `discover`, `write` or `finish`.
    pub op: String,
    /// Target path (`/0/1`, `/bs`).
    pub path: String,
    /// The device's answer (`2.04`), absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What was written (resource summary), or the device's diagnostic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A session as the API shows it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// `<endpoint>@<started_ms>`.
    pub id: String,
    /// Endpoint client name.
    pub endpoint: String,
    /// Source address of the Bootstrap-Request.
    pub peer: String,
    /// How it authenticated (`psk`, `x509`, `nosec`).
    pub security: String,
    /// The PSK identity it authenticated with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// When the Bootstrap-Request came (Unix ms).
    pub started_ms: u64,
    /// When the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Outcome.
    pub status: SessionStatus,
    /// Steps so far.
    pub steps: Vec<StepRecord>,
    /// The code the device answered Finish with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_code: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What became of a pending bootstrap credential rollover (never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<String>,
}

/// A request to send to the device.
#[derive(Debug, Clone, PartialEq)]
pub struct BsRequest {
    /// CoAP method.
    pub method: RequestType,
    /// Uri-Path segments.
    pub path: Vec<String>,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Accept.
    pub accept: Option<u16>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl BsRequest {
    /// The CON request (token and message id are the message layer's).
    pub fn to_packet(&self) -> Packet {
        let segments: Vec<&str> = self.path.iter().map(String::as_str).collect();
        let mut p = msg::request(self.method, &segments);
        if let Some(cf) = self.content_format {
            msg::set_uint(&mut p, CoapOption::ContentFormat, u64::from(cf));
        }
        if let Some(a) = self.accept {
            msg::set_uint(&mut p, CoapOption::Accept, u64::from(a));
        }
        p.payload = self.payload.clone();
        p
    }
}

/// What the driver must do next.
#[derive(Debug, Clone)]
pub enum Next {
    /// Send this request and feed its answer to [`Session::handle_response`]
    /// (or [`Session::handle_no_response`]).
    Send(BsRequest),
    /// Store these credentials in the security store, then call
    /// [`Session::handle_stored`].
    Store(Vec<SecurityEntry>),
    /// The session is over; [`Session::record`] has the outcome.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Delete(usize),
    Discover,
    Store,
    /// Index into the security writes then the server writes.
    Write(usize),
    /// The rollover's Write of the device's bootstrap account.
    WriteBootstrap,
    Finish,
    Done,
}

/// One endpoint's bootstrap.
#[derive(Debug)]
pub struct Session {
    plan: Plan,
    stage: Stage,
    /// An action was handed out and its answer is awaited.
    waiting: bool,
    /// /0 instance ids for the accounts, once known.
    security_ids: Vec<u16>,
    /// The device's bootstrap account (/0 instance, Server URI), from Discover.
    bootstrap_account: Option<(u16, String)>,
    /// The rollover's Write was answered with success.
    rollover_written: bool,
    record: SessionRecord,
}

impl Session {
    /// A session for `endpoint` (reached from `peer`, authenticated by
    /// `security`) that starts at `now_ms`.
    pub fn new(endpoint: &str, peer: &str, security: &str, now_ms: u64, plan: Plan) -> Session {
        Session {
            plan,
            stage: Stage::Delete(0),
            waiting: false,
            security_ids: Vec::new(),
            bootstrap_account: None,
            rollover_written: false,
            record: SessionRecord {
                id: format!("{endpoint}@{now_ms}"),
                endpoint: endpoint.to_string(),
                peer: peer.to_string(),
                security: security.to_string(),
                identity: None,
                started_ms: now_ms,
                ended_ms: None,
                status: SessionStatus::Running,
                steps: Vec::new(),
                finish_code: None,
                error: None,
                rollover: None,
            },
        }
    }

    /// Records the PSK identity the peer authenticated with.
    pub fn set_identity(&mut self, identity: Option<String>) {
        self.record.identity = identity;
    }

    /// The pending identity this session wrote into the device's bootstrap
    /// account (answered with success); it is the device's once Finish
    /// succeeds.
    pub fn rollover_written(&self) -> Option<&str> {
        self.plan
            .rollover
            .as_ref()
            .filter(|_| self.rollover_written)
            .map(|r| r.identity.as_str())
    }

    /// The record so far.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// True once the session ended.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// The next action, once: `None` while an answer is awaited.
    pub fn poll(&mut self) -> Option<Next> {
        if self.waiting {
            return None;
        }
        if self.stage == Stage::Done {
            return None;
        }
        // Skip stages with nothing to do.
        if let Stage::Delete(i) = self.stage
            && i >= self.plan.delete.len()
        {
            self.stage = Stage::Discover;
        }
        let next = match self.stage {
            Stage::Delete(i) => {
                let path = self.plan.delete.get(i).cloned().unwrap_or_default();
                let segments = parse_delete_path(&path).unwrap_or_default();
                self.step("delete", &path, None);
                Next::Send(BsRequest {
                    method: RequestType::Delete,
                    path: segments.iter().map(u16::to_string).collect(),
                    content_format: None,
                    accept: None,
                    payload: Vec::new(),
                })
            }
            Stage::Discover => {
                self.step("discover", "/0", None);
                Next::Send(BsRequest {
                    method: RequestType::Get,
                    path: vec!["0".into()],
                    content_format: None,
                    accept: Some(ContentFormat::LinkFormat.code()),
                    payload: Vec::new(),
                })
            }
            Stage::Store => Next::Store(self.credentials()),
            Stage::Write(i) => match self.write_request(i) {
                Ok(req) => Next::Send(req),
                Err(e) => {
                    self.fail(SessionStatus::Failed, e, None);
                    return Some(Next::Done);
                }
            },
            Stage::WriteBootstrap => match self.bootstrap_write_request() {
                Ok(req) => Next::Send(req),
                Err(e) => {
                    self.fail(SessionStatus::Failed, e, None);
                    return Some(Next::Done);
                }
            },
            Stage::Finish => {
                self.step("finish", "/bs", None);
                Next::Send(BsRequest {
                    method: RequestType::Post,
                    path: vec!["bs".into()],
                    content_format: None,
                    accept: None,
                    payload: Vec::new(),
                })
            }
            Stage::Done => return None,
        };
        self.waiting = true;
        Some(next)
    }

    /// The device answered the request last handed out.
    pub fn handle_response(&mut self, code: Code, payload: &[u8]) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        if let Some(s) = self.record.steps.last_mut() {
            s.code = Some(code.to_string());
        }
        match self.stage {
            // A refused delete is noted and the session goes on.
            Stage::Delete(i) => self.stage = Stage::Delete(i + 1),
            Stage::Discover => {
                let used = if code == Code::CONTENT {
                    self.bootstrap_account = bootstrap_account(payload);
                    security_instances(payload)
                } else {
                    // 1.0 device: assume the bootstrap account is /0/0.
                    vec![0]
                };
                self.security_ids = free_ids(&used, self.plan.accounts.len());
                self.stage = Stage::Store;
            }
            Stage::Write(i) => {
                if code.is_success() {
                    self.stage = Stage::Write(i + 1);
                    if i + 1 >= 2 * self.plan.accounts.len() {
                        self.stage = self.after_writes();
                    }
                } else {
                    let path = self.record.steps.last().map(|s| s.path.clone());
                    let e = format!(
                        "Bootstrap-Write of {} refused with {code}",
                        path.unwrap_or_default()
                    );
                    self.fail(SessionStatus::Failed, e, Some(diagnostic(payload)));
                }
            }
            Stage::WriteBootstrap => {
                let identity = self.plan.rollover.as_ref().map(|r| r.identity.clone());
                let identity = identity.unwrap_or_default();
                if code.is_success() {
                    self.rollover_written = true;
                    self.record.rollover = Some(format!(
                        "new bootstrap identity {identity} written; the device takes it at Finish"
                    ));
                } else {
                    let d = diagnostic(payload);
                    let why = if d.is_empty() {
                        String::new()
                    } else {
                        format!(": {d}")
                    };
                    self.record.rollover = Some(format!(
                        "the device refused the new bootstrap account with {code}{why}; \
                         the rollover stays pending"
                    ));
                }
                self.stage = Stage::Finish;
            }
            Stage::Finish => {
                self.record.finish_code = Some(code.to_string());
                if code == Code::CHANGED {
                    self.record.status = SessionStatus::Succeeded;
                    if let Some(id) = self.rollover_written().map(str::to_string) {
                        self.record.rollover = Some(format!(
                            "new bootstrap identity {id} written and committed by Finish"
                        ));
                    }
                    self.end();
                } else {
                    let d = diagnostic(payload);
                    if let Some(s) = self.record.steps.last_mut() {
                        s.detail = (!d.is_empty()).then(|| d.clone());
                    }
                    let e = format!("Bootstrap-Finish refused with {code}");
                    self.fail(SessionStatus::Failed, e, Some(d));
                }
            }
            Stage::Store | Stage::Done => {}
        }
    }

    /// The credentials handed out with [`Next::Store`] were stored, or not.
    pub fn handle_stored(&mut self, result: Result<(), String>) {
        if !(self.waiting && self.stage == Stage::Store) {
            return;
        }
        self.waiting = false;
        match result {
            Ok(()) => self.stage = Stage::Write(0),
            Err(e) => self.fail(
                SessionStatus::Failed,
                format!("operational credential not stored: {e}"),
                None,
            ),
        }
    }

    /// The request last handed out got no answer (retransmissions exhausted).
    pub fn handle_no_response(&mut self) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        let (op, path) = self
            .record
            .steps
            .last()
            .map(|s| (s.op.clone(), s.path.clone()))
            .unwrap_or_default();
        self.fail(
            SessionStatus::Failed,
            format!("no answer to {op} {path}"),
            None,
        );
    }

    /// The session's time is up, or it was interrupted.
    pub fn abort(&mut self, status: SessionStatus, reason: &str) {
        if self.stage != Stage::Done {
            self.fail(status, reason.to_string(), None);
        }
    }

    /// Stamps the end time (the driver calls this when it sees [`Next::Done`]).
    pub fn set_ended(&mut self, now_ms: u64) {
        if self.record.ended_ms.is_none() {
            self.record.ended_ms = Some(now_ms);
        }
    }

    /// After the account writes: the rollover's Write when one is pending
    /// and the device's bootstrap account is known, else Finish.
    fn after_writes(&mut self) -> Stage {
        let Some(r) = &self.plan.rollover else {
            return Stage::Finish;
        };
        match &self.bootstrap_account {
            Some((_, uri)) if uri.starts_with("coaps://") && uri.len() <= MAX_URI_LEN => {
                Stage::WriteBootstrap
            }
            Some((i, _)) => {
                self.record.rollover = Some(format!(
                    "the device's bootstrap account /0/{i} is not coaps://; rollover of {} \
                     not written, still pending",
                    r.identity
                ));
                Stage::Finish
            }
            None => {
                self.record.rollover = Some(format!(
                    "the device listed no bootstrap account (Bootstrap-Discover of /0); \
                     rollover of {} not written, still pending",
                    r.identity
                ));
                Stage::Finish
            }
        }
    }

    /// The rollover's Write of the device's bootstrap account (Core 1.1
    /// §E.1): URI kept, Bootstrap-Server true, PSK mode, the pending
    /// identity and key, no server public key. Other resources (Client Hold
    /// Off Time, Account Timeout) are not in the payload: a Write to an
    /// instance updates the resources it carries, so the device keeps them.
    ///
    /// The Server URI is the one the device listed for this instance in
    /// Bootstrap-Discover (Core 1.1 §5.2.7.1: `uri` on each /0 instance,
    /// `ssid` on all but the Bootstrap-Server account), not the server's
    /// idea of its own address: the device may reach this server through
    /// a name, NAT or relay the server cannot know, and a bootstrap server
    /// may not Bootstrap-Read /0 (§5.2.7.2) to learn it otherwise. Writing
    /// a URI the device did not use could leave it unable to bootstrap.
    fn bootstrap_write_request(&mut self) -> Result<BsRequest, String> {
        let (Some(r), Some((x, uri))) = (&self.plan.rollover, &self.bootstrap_account) else {
            return Err("no bootstrap account to write".into());
        };
        let x = *x;
        let resources = vec![
            (0, single(Value::String(uri.clone()))),
            (1, single(Value::Boolean(true))),
            (2, single(Value::Integer(0))),
            (3, single(Value::Opaque(r.identity.as_bytes().to_vec()))),
            (4, single(Value::Opaque(Vec::new()))),
            (5, single(Value::Opaque(r.key.clone()))),
        ];
        let detail = format!(
            "bootstrap account uri={uri} mode=psk identity={} key=<generated {} bytes>",
            r.identity,
            r.key.len()
        );
        let node = Node::Instance { id: x, resources };
        self.bootstrap_write(Path::instance(0, x), &node, detail)
    }

    /// A Bootstrap-Write (PUT) of `node` at `path` in the plan's format,
    /// recorded as a step.
    fn bootstrap_write(
        &mut self,
        path: Path,
        node: &Node,
        detail: String,
    ) -> Result<BsRequest, String> {
        let payload = codec::encode(node, path, self.plan.format)
            .map_err(|e| format!("cannot encode {path}: {e}"))?;
        self.step("write", &path.to_string(), Some(detail));
        Ok(BsRequest {
            method: RequestType::Put,
            path: segments(path),
            content_format: Some(self.plan.format.code()),
            accept: None,
            payload,
        })
    }

    fn fail(&mut self, status: SessionStatus, error: String, diagnostic: Option<String>) {
        self.record.status = status;
        self.record.error = Some(match diagnostic.filter(|d| !d.is_empty()) {
            Some(d) => format!("{error}: {d}"),
            None => error,
        });
        self.end();
    }

    fn end(&mut self) {
        self.stage = Stage::Done;
        self.waiting = false;
    }

    fn step(&mut self, op: &str, path: &str, detail: Option<String>) {
        self.record.steps.push(StepRecord {
            op: op.into(),
            path: path.into(),
            code: None,
            detail,
        });
    }

    /// The credentials this server keeps for the endpoint: the PSK of its
    /// PSK accounts, or NoSec when all accounts are NoSec.
    fn credentials(&self) -> Vec<SecurityEntry> {
        let endpoint = self.record.endpoint.clone();
        let credential = match self.plan.accounts.iter().find_map(|a| a.psk.clone()) {
            Some((identity, key)) => Credential::Psk { identity, key },
            None => Credential::NoSec,
        };
        vec![SecurityEntry {
            endpoint,
            credential,
        }]
    }

    /// Write number `i`: the /0 accounts first, then the /1 ones.
    fn write_request(&mut self, i: usize) -> Result<BsRequest, String> {
        let n = self.plan.accounts.len();
        let (path, node, detail) = if i < n {
            let a = self.plan.accounts[i].clone();
            let x = self.security_ids.get(i).copied().unwrap_or(i as u16 + 1);
            let (node, detail) = security_instance(x, &a);
            (Path::instance(0, x), node, detail)
        } else {
            let y = (i - n) as u16;
            let a = self.plan.accounts[i - n].account.clone();
            let (node, detail) = server_instance(y, &a);
            (Path::instance(1, y), node, detail)
        };
        self.bootstrap_write(path, &node, detail)
    }
}

fn segments(p: Path) -> Vec<String> {
    p.to_string()
        .trim_start_matches('/')
        .split('/')
        .map(String::from)
        .collect()
}

fn single(v: Value) -> ResourceValue {
    ResourceValue::Single(v)
}

/// /0/x for account `a` (Core 1.1 §E.1), and its summary without secrets.
fn security_instance(x: u16, a: &ResolvedAccount) -> (Node, String) {
    let (mode, identity, key) = match (&a.account.security, &a.psk) {
        (AccountSecurity::Psk, Some((id, key))) => (0, id.as_bytes().to_vec(), key.clone()),
        _ => (3, Vec::new(), Vec::new()),
    };
    let resources = vec![
        (0, single(Value::String(a.account.uri.clone()))),
        (1, single(Value::Boolean(false))),
        (2, single(Value::Integer(mode))),
        (3, single(Value::Opaque(identity))),
        (4, single(Value::Opaque(Vec::new()))),
        (5, single(Value::Opaque(key.clone()))),
        (10, single(Value::Integer(i64::from(a.account.short_id)))),
    ];
    let detail = match &a.psk {
        Some((id, _)) if mode == 0 => format!(
            "uri={} mode=psk identity={id} key=<generated {} bytes> ssid={}",
            a.account.uri,
            key.len(),
            a.account.short_id
        ),
        _ => format!(
            "uri={} mode=nosec ssid={}",
            a.account.uri, a.account.short_id
        ),
    };
    (Node::Instance { id: x, resources }, detail)
}

/// /1/y for account `a` (Core 1.1 §E.2).
fn server_instance(y: u16, a: &ServerAccount) -> (Node, String) {
    let mut resources = vec![
        (0, single(Value::Integer(i64::from(a.short_id)))),
        (1, single(Value::Integer(i64::from(a.lifetime)))),
        (6, single(Value::Boolean(a.notification_storing))),
        (7, single(Value::String(a.binding.clone()))),
    ];
    let mut optional = String::new();
    if let Some(b) = a.bootstrap_on_failure {
        resources.push((16, single(Value::Boolean(b))));
        optional.push_str(&format!(" bootstrap_on_failure={b}"));
    }
    // The communication retry resources (Core 1.1 §6.2.1.1, §E.2).
    for (r, name, v) in [
        (17, "retry_count", a.retry_count),
        (18, "retry_timer", a.retry_timer),
        (19, "sequence_delay", a.sequence_delay),
        (20, "sequence_retry_count", a.sequence_retry_count),
    ] {
        if let Some(v) = v {
            resources.push((r, single(Value::Integer(i64::from(v)))));
            optional.push_str(&format!(" {name}={v}"));
        }
    }
    let detail = format!(
        "ssid={} lifetime={} binding={} storing={}{optional}",
        a.short_id, a.lifetime, a.binding, a.notification_storing,
    );
    (Node::Instance { id: y, resources }, detail)
}

/// /0 instance ids named in a Bootstrap-Discover answer (`</0/N>` links;
/// the leading `lwm2m="1.1"` and attributes are ignored).
pub fn security_instances(payload: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(payload);
    let mut out = Vec::new();
    for part in text.split('<').skip(1) {
        let Some(target) = part.split('>').next() else {
            continue;
        };
        let ids: Vec<&str> = target.trim_start_matches('/').split('/').collect();
        if let [o, i] = ids.as_slice()
            && *o == "0"
            && let Ok(i) = i.parse::<u16>()
        {
            out.push(i);
        }
    }
    out
}

/// The bootstrap account in a Bootstrap-Discover answer of /0 (Core 1.1
/// §5.2.7.1): the one /0/N link without `ssid`, with its `uri`. None when
/// there is not exactly one such link with a URI.
pub fn bootstrap_account(payload: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut found = Vec::new();
    for link in split_unquoted(text, ',') {
        let mut parts = split_unquoted(link.trim(), ';').into_iter();
        let target = parts.next()?.trim();
        let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
            continue;
        };
        let ids: Vec<&str> = target.trim_start_matches('/').split('/').collect();
        let [o, i] = ids.as_slice() else { continue };
        let (Ok(0), Ok(i)) = (o.parse::<u16>(), i.parse::<u16>()) else {
            continue;
        };
        let mut ssid = false;
        let mut uri = None;
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k.trim() {
                "ssid" => ssid = true,
                "uri" => uri = Some(v.trim().trim_matches('"').to_string()),
                _ => {}
            }
        }
        if !ssid {
            found.push((i, uri));
        }
    }
    match found.as_slice() {
        [(i, Some(uri))] if !uri.is_empty() => Some((*i, uri.clone())),
        _ => None,
    }
}

/// `text` split at `sep` outside double quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

/// `n` instance ids, smallest first, not in `used` (65535 is never an id).
pub fn free_ids(used: &[u16], n: usize) -> Vec<u16> {
    (0..u16::MAX)
        .filter(|i| !used.contains(i))
        .take(n)
        .collect()
}

/// A device's diagnostic payload as short printable text.
fn diagnostic(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_DIAGNOSTIC)
        .collect()
}

#[cfg(test)]
mod tests;
