//! What the bootstrap server knows per device: its bootstrap credential and
//! labels ([`BootstrapEndpoint`]), and which server accounts to provision
//! ([`BootstrapConfig`], per endpoint or per label, like Leshan's bootstrap
//! config: paths to delete first, /0 security and /1 server accounts).
//!
//! All of it is durable in the redb store. Bootstrap keys are secrets: kept
//! here and handed to the DTLS layer, never logged (`Debug` leaves them out)
//! nor returned by the API.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::rollover::PendingCredential;
use crate::security::{PSK_IDENTITY_LEN, PSK_KEY_LEN, valid_endpoint};
use crate::store::{Store, StoreError};

/// Bootstrap accounts by endpoint name (JSON [`BootstrapEndpoint`]).
pub const BOOTSTRAP_ENDPOINTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("bootstrap_endpoints");
/// Index: bootstrap PSK identity -> endpoint name (a handshake names the identity).
pub const BOOTSTRAP_IDENTITIES: TableDefinition<&str, &str> =
    TableDefinition::new("bootstrap_identities");
/// Default configurations by label (JSON [`BootstrapConfig`]).
pub const BOOTSTRAP_LABELS: TableDefinition<&str, &[u8]> = TableDefinition::new("bootstrap_labels");

/// The label whose configuration applies to endpoints no other label covers.
pub const DEFAULT_LABEL: &str = "default";
/// Most server accounts one configuration may provision.
pub const MAX_SERVERS: usize = 8;
/// Most paths deleted before writing.
pub const MAX_DELETE_PATHS: usize = 16;
/// Most labels per endpoint, and the longest label.
pub const MAX_LABELS: usize = 16;
/// Longest label name in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest LwM2M Server URI (/0/x/0 is a String of at most 255 bytes, Core 1.1 §E.1).
pub const MAX_URI_LEN: usize = 255;

/// How a device proves its bootstrap identity on the bootstrap port.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum BootstrapCredential {
    /// DTLS with a pre-shared key.
    Psk {
        /// PSK identity the device sends.
        identity: String,
        /// The key (hex in JSON).
        #[serde(with = "crate::security::hex_bytes")]
        key: Vec<u8>,
    },
    /// DTLS with a certificate from the server's device CA naming the endpoint.
    X509,
    /// Plain CoAP allowed for this endpoint.
    NoSec,
}

impl std::fmt::Debug for BootstrapCredential {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapCredential::Psk { identity, key } => f
                .debug_struct("Psk")
                .field("identity", identity)
                .field("key", &format_args!("<{} bytes>", key.len()))
                .finish(),
            BootstrapCredential::X509 => f.write_str("X509"),
            BootstrapCredential::NoSec => f.write_str("NoSec"),
        }
    }
}

impl BootstrapCredential {
    /// `psk`, `x509` or `nosec`.
    pub fn mode(&self) -> &'static str {
        match self {
            BootstrapCredential::Psk { .. } => "psk",
            BootstrapCredential::X509 => "x509",
            BootstrapCredential::NoSec => "nosec",
        }
    }

    fn psk_identity(&self) -> Option<&str> {
        match self {
            BootstrapCredential::Psk { identity, .. } => Some(identity),
            _ => None,
        }
    }
}

/// How the provisioned server account authenticates (/0/x/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountSecurity {
    /// Mode 0: a fresh PSK generated per bootstrap, identity = endpoint name.
    #[default]
    Psk,
    /// Mode 3: plain CoAP.
    NoSec,
}

/// One LwM2M server account to provision (/0/x and /1/y).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAccount {
    /// /0/x/0 LwM2M Server URI (`coaps://host:5684`); empty: the server's own.
    #[serde(default)]
    pub uri: String,
    /// /0/x/10 and /1/y/0 Short Server ID (1..=65534).
    #[serde(default = "one")]
    pub short_id: u16,
    /// /0/x/2 Security Mode.
    #[serde(default)]
    pub security: AccountSecurity,
    /// /1/y/1 Lifetime, s.
    #[serde(default = "default_lifetime")]
    pub lifetime: u32,
    /// /1/y/7 Binding.
    #[serde(default = "default_binding")]
    pub binding: String,
    /// /1/y/6 Notification Storing When Disabled or Offline.
    #[serde(default = "yes")]
    pub notification_storing: bool,
    /// /1/y/16 Bootstrap on Registration Failure (written only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_on_failure: Option<bool>,
    /// /1/y/17 Communication Retry Count: failed Register attempts in a
    /// sequence (Core 1.1 §6.2.1.1; written only when set, the device's
    /// default is 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u32>,
    /// /1/y/18 Communication Retry Timer, s: the first Register back-off,
    /// doubled per attempt (device default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timer: Option<u32>,
    /// /1/y/19 Communication Sequence Delay Timer, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_delay: Option<u32>,
    /// /1/y/20 Communication Sequence Retry Count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_retry_count: Option<u32>,
}

fn one() -> u16 {
    1
}
fn default_lifetime() -> u32 {
    300
}
fn default_binding() -> String {
    "U".into()
}
fn yes() -> bool {
    true
}
fn default_delete() -> Vec<String> {
    vec!["/0".into(), "/1".into()]
}

impl Default for ServerAccount {
    fn default() -> Self {
        ServerAccount {
            uri: String::new(),
            short_id: 1,
            security: AccountSecurity::Psk,
            lifetime: default_lifetime(),
            binding: default_binding(),
            notification_storing: true,
            bootstrap_on_failure: None,
            retry_count: None,
            retry_timer: None,
            sequence_delay: None,
            sequence_retry_count: None,
        }
    }
}

/// What to provision: paths to delete first, then the server accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Bootstrap-Delete targets, in order (Core 1.1 §5.2.7.5).
    #[serde(default = "default_delete")]
    pub delete: Vec<String>,
    /// Server accounts.
    #[serde(default = "one_server")]
    pub servers: Vec<ServerAccount>,
}

fn one_server() -> Vec<ServerAccount> {
    vec![ServerAccount::default()]
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            delete: default_delete(),
            servers: one_server(),
        }
    }
}

/// A device the bootstrap server knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapEndpoint {
    /// Endpoint client name.
    pub endpoint: String,
    /// Its bootstrap credential.
    pub credential: BootstrapCredential,
    /// Labels choosing a label configuration (first one with a configuration wins).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Its own configuration, over any label's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BootstrapConfig>,
    /// When the credential was last set or rotated (Unix ms).
    #[serde(default)]
    pub updated_ms: u64,
    /// A rollover's new credential, accepted next to `credential` until the
    /// device is known to hold it ([`super::rollover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingCredential>,
}

impl BootstrapEndpoint {
    /// The PSK identities that authenticate this endpoint: the current one
    /// and, during a rollover, the pending one.
    pub fn psk_identities(&self) -> impl Iterator<Item = &str> {
        self.credential
            .psk_identity()
            .into_iter()
            .chain(self.pending.as_ref().map(|p| p.identity.as_str()))
    }

    /// The PSK of `identity`, if it is one of [`Self::psk_identities`].
    pub fn psk_key(&self, identity: &str) -> Option<Vec<u8>> {
        match (&self.credential, &self.pending) {
            (BootstrapCredential::Psk { identity: i, key }, _) if i == identity => {
                Some(key.clone())
            }
            (_, Some(p)) if p.identity == identity => Some(p.key.clone()),
            _ => None,
        }
    }
}

/// Why a bootstrap account or configuration was not stored.
#[derive(Debug, Error)]
pub enum BootstrapConfigError {
    /// Bad endpoint name.
    #[error(
        "endpoint name must be 1-255 bytes without spaces, control characters or any of / ? # & %"
    )]
    BadEndpoint,
    /// PSK identity length.
    #[error("bootstrap PSK identity must be 1-128 bytes (got {0})")]
    BadIdentity(usize),
    /// PSK key length.
    #[error("bootstrap PSK key must be 16-64 bytes (got {0})")]
    BadKey(usize),
    /// A label is empty, too long, or there are too many.
    #[error("labels: at most {MAX_LABELS}, each 1-{MAX_LABEL_LEN} bytes of [A-Za-z0-9._-]")]
    BadLabel,
    /// The configuration is not usable; the text says why.
    #[error("bootstrap config: {0}")]
    BadConfig(String),
    /// The identity belongs to another endpoint.
    #[error("bootstrap PSK identity {identity:?} is already used by endpoint {endpoint}")]
    IdentityInUse {
        /// The identity.
        identity: String,
        /// Its endpoint.
        endpoint: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// True for a label name: `[A-Za-z0-9._-]`, 1..=64 bytes.
pub fn valid_label(l: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&l.len())
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks a configuration before it is stored.
pub fn validate_config(c: &BootstrapConfig) -> Result<(), BootstrapConfigError> {
    let bad = |m: String| Err(BootstrapConfigError::BadConfig(m));
    if c.servers.is_empty() || c.servers.len() > MAX_SERVERS {
        return bad(format!("1-{MAX_SERVERS} servers"));
    }
    if c.delete.len() > MAX_DELETE_PATHS {
        return bad(format!("at most {MAX_DELETE_PATHS} delete paths"));
    }
    for p in &c.delete {
        if parse_delete_path(p).is_none() {
            return bad(format!("delete path {p:?} must be /, /o or /o/i"));
        }
    }
    let mut ids = std::collections::HashSet::new();
    for s in &c.servers {
        // Core 1.1 §E.1: 0 and 65535 are never Short Server IDs.
        if s.short_id == 0 || s.short_id == u16::MAX || !ids.insert(s.short_id) {
            return bad("short_id must be 1-65534 and unique".into());
        }
        if s.uri.len() > MAX_URI_LEN
            || !(s.uri.is_empty() || s.uri.starts_with("coap://") || s.uri.starts_with("coaps://"))
        {
            return bad(format!(
                "server uri must be coap:// or coaps://, at most {MAX_URI_LEN} bytes"
            ));
        }
        let secure = s.uri.starts_with("coaps://");
        if !s.uri.is_empty() && secure != (s.security == AccountSecurity::Psk) {
            return bad(format!(
                "server {}: psk needs a coaps:// uri, nosec a coap:// one",
                s.short_id
            ));
        }
        if s.lifetime == 0 {
            return bad("lifetime must be at least 1 s".into());
        }
        // A retry count or timer of 0 would make the device give up, or
        // retry, at once (Core 1.1 §6.2.1.1).
        if s.retry_count == Some(0) || s.retry_timer == Some(0) || s.sequence_retry_count == Some(0)
        {
            return bad(
                "retry_count, retry_timer and sequence_retry_count must be at least 1".into(),
            );
        }
        if s.binding.is_empty()
            || s.binding.len() > 8
            || !s.binding.chars().all(|c| "UTSNQ".contains(c))
        {
            return bad("binding must be 1-8 of U T S N Q".into());
        }
    }
    Ok(())
}

/// `/`, `/o` or `/o/i` as Uri-Path segments (Bootstrap-Delete targets, Core 1.1 §5.2.7.5).
pub fn parse_delete_path(p: &str) -> Option<Vec<u16>> {
    let rest = p.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let ids: Option<Vec<u16>> = rest
        .split('/')
        .map(|s| s.parse::<u16>().ok().filter(|v| *v != u16::MAX))
        .collect();
    ids.filter(|v| v.len() <= 2)
}

/// Checks an endpoint account before it is stored.
pub fn validate_endpoint(e: &BootstrapEndpoint) -> Result<(), BootstrapConfigError> {
    if !valid_endpoint(&e.endpoint) {
        return Err(BootstrapConfigError::BadEndpoint);
    }
    if let BootstrapCredential::Psk { identity, key } = &e.credential {
        if !PSK_IDENTITY_LEN.contains(&identity.len()) {
            return Err(BootstrapConfigError::BadIdentity(identity.len()));
        }
        if !PSK_KEY_LEN.contains(&key.len()) {
            return Err(BootstrapConfigError::BadKey(key.len()));
        }
    }
    if let Some(p) = &e.pending {
        if !PSK_IDENTITY_LEN.contains(&p.identity.len()) {
            return Err(BootstrapConfigError::BadIdentity(p.identity.len()));
        }
        if !PSK_KEY_LEN.contains(&p.key.len()) {
            return Err(BootstrapConfigError::BadKey(p.key.len()));
        }
        // A rollover replaces a PSK with another one, under a new identity.
        if e.credential.psk_identity().is_none_or(|i| i == p.identity) {
            return Err(BootstrapConfigError::BadConfig(
                "a pending rollover needs a PSK account with another identity".into(),
            ));
        }
    }
    if e.labels.len() > MAX_LABELS || !e.labels.iter().all(|l| valid_label(l)) {
        return Err(BootstrapConfigError::BadLabel);
    }
    if let Some(c) = &e.config {
        validate_config(c)?;
    }
    Ok(())
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

fn corrupt(table: &str, key: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table: table.to_string(),
        key: key.to_string(),
        // serde's message may quote the document: keep key material out of it.
        reason: format!("undecodable at line {} column {}", e.line(), e.column()),
    }
}

fn decode_endpoint(key: &str, bytes: &[u8]) -> Result<BootstrapEndpoint, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("bootstrap_endpoints", key, &e))
}

/// Writes `entries` in the open write transaction, checking identity clashes
/// against the index as it goes (entries of the same batch included).
fn put_endpoints_in(
    tx: &redb::WriteTransaction,
    entries: &[BootstrapEndpoint],
) -> Result<(), (usize, BootstrapConfigError)> {
    let mut t = db_err!(tx.open_table(BOOTSTRAP_ENDPOINTS)).map_err(|e| (0, e.into()))?;
    let mut index = db_err!(tx.open_table(BOOTSTRAP_IDENTITIES)).map_err(|e| (0, e.into()))?;
    for (i, entry) in entries.iter().enumerate() {
        let fail = |e: BootstrapConfigError| (i, e);
        validate_endpoint(entry).map_err(fail)?;
        let ep = entry.endpoint.as_str();
        for identity in entry.psk_identities() {
            if let Some(owner) = db_err!(index.get(identity)).map_err(|e| fail(e.into()))?
                && owner.value() != ep
            {
                return Err(fail(BootstrapConfigError::IdentityInUse {
                    identity: identity.to_string(),
                    endpoint: owner.value().to_string(),
                }));
            }
        }
        let old = match db_err!(t.get(ep)).map_err(|e| fail(e.into()))? {
            Some(v) => Some(decode_endpoint(ep, v.value()).map_err(|e| fail(e.into()))?),
            None => None,
        };
        for old_identity in old.iter().flat_map(|o| o.psk_identities()) {
            db_err!(index.remove(old_identity)).map_err(|e| fail(e.into()))?;
        }
        for identity in entry.psk_identities() {
            db_err!(index.insert(identity, ep)).map_err(|e| fail(e.into()))?;
        }
        let bytes = serde_json::to_vec(entry)
            .map_err(|e| fail(corrupt("bootstrap_endpoints", ep, &e).into()))?;
        db_err!(t.insert(ep, bytes.as_slice())).map_err(|e| fail(e.into()))?;
    }
    Ok(())
}

impl Store {
    /// The bootstrap account of `endpoint`.
    pub fn bootstrap_endpoint(
        &self,
        endpoint: &str,
    ) -> Result<Option<BootstrapEndpoint>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(BOOTSTRAP_ENDPOINTS))?;
        match db_err!(t.get(endpoint))? {
            Some(v) => decode_endpoint(endpoint, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// The bootstrap account whose PSK identity is `identity` (DTLS handshakes).
    pub fn bootstrap_by_identity(
        &self,
        identity: &str,
    ) -> Result<Option<BootstrapEndpoint>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let index = db_err!(tx.open_table(BOOTSTRAP_IDENTITIES))?;
        let Some(ep) = db_err!(index.get(identity))? else {
            return Ok(None);
        };
        let ep = ep.value().to_string();
        let t = db_err!(tx.open_table(BOOTSTRAP_ENDPOINTS))?;
        let Some(v) = db_err!(t.get(ep.as_str()))? else {
            return Ok(None);
        };
        let e = decode_endpoint(&ep, v.value())?;
        // The current identity, or a rollover's pending one.
        let known = e.psk_identities().any(|i| i == identity);
        Ok(known.then_some(e))
    }

    /// Stores bootstrap accounts all or nothing (one transaction); on a
    /// refusal, the index of the entry that failed and why.
    pub fn put_bootstrap_endpoints(
        &self,
        entries: &[BootstrapEndpoint],
    ) -> Result<(), (usize, BootstrapConfigError)> {
        let tx = db_err!(self.db.begin_write()).map_err(|e| (0, e.into()))?;
        // Dropping `tx` without commit aborts it.
        put_endpoints_in(&tx, entries)?;
        db_err!(tx.commit()).map_err(|e| (0, e.into()))?;
        Ok(())
    }

    /// Removes a bootstrap account; true if there was one.
    pub fn remove_bootstrap_endpoint(&self, endpoint: &str) -> Result<bool, StoreError> {
        let tx = db_err!(self.db.begin_write())?;
        let existed = {
            let mut t = db_err!(tx.open_table(BOOTSTRAP_ENDPOINTS))?;
            let old = match db_err!(t.remove(endpoint))? {
                Some(v) => Some(decode_endpoint(endpoint, v.value())?),
                None => None,
            };
            let mut index = db_err!(tx.open_table(BOOTSTRAP_IDENTITIES))?;
            for identity in old.iter().flat_map(|o| o.psk_identities()) {
                db_err!(index.remove(identity))?;
            }
            old.is_some()
        };
        db_err!(tx.commit())?;
        Ok(existed)
    }

    /// Every bootstrap account, by endpoint name.
    pub fn list_bootstrap_endpoints(&self) -> Result<Vec<BootstrapEndpoint>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(BOOTSTRAP_ENDPOINTS))?;
        let mut out = Vec::new();
        for item in db_err!(t.iter())? {
            let (k, v) = db_err!(item)?;
            out.push(decode_endpoint(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The configuration of label `label`.
    pub fn bootstrap_label(&self, label: &str) -> Result<Option<BootstrapConfig>, StoreError> {
        self.get(BOOTSTRAP_LABELS, label)
    }

    /// Every label configuration, by label.
    pub fn list_bootstrap_labels(&self) -> Result<Vec<(String, BootstrapConfig)>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(BOOTSTRAP_LABELS))?;
        let mut out = Vec::new();
        for item in db_err!(t.iter())? {
            let (k, v) = db_err!(item)?;
            let c = serde_json::from_slice(v.value())
                .map_err(|e| corrupt("bootstrap_labels", k.value(), &e))?;
            out.push((k.value().to_string(), c));
        }
        Ok(out)
    }

    /// The configuration that applies to `e`: its own, else its first label
    /// that has one, else the `default` label's, else none.
    pub fn resolve_bootstrap_config(
        &self,
        e: &BootstrapEndpoint,
    ) -> Result<Option<BootstrapConfig>, StoreError> {
        if let Some(c) = &e.config {
            return Ok(Some(c.clone()));
        }
        for l in e.labels.iter().map(String::as_str).chain([DEFAULT_LABEL]) {
            if let Some(c) = self.bootstrap_label(l)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// One CSV line that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong (never quotes the key).
    pub reason: String,
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses CSV rows `endpoint,bootstrap_identity,bootstrap_key_hex,labels`
/// (labels separated by `;` or spaces; a first line starting `endpoint,` is
/// a header; blank lines and `#` comments are skipped). Every bad line is
/// reported; rows are returned only when all are good. The identity and
/// endpoint may not contain commas (no quoting: names cannot need it).
pub fn parse_csv(text: &str, now_ms: u64) -> Result<Vec<BootstrapEndpoint>, Vec<CsvError>> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen_ep = std::collections::HashMap::new();
    let mut seen_id = std::collections::HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || (i == 0 && l.starts_with("endpoint,")) {
            continue;
        }
        let mut err = |reason: String| errors.push(CsvError { line, reason });
        let fields: Vec<&str> = l.split(',').map(str::trim).collect();
        if !(3..=4).contains(&fields.len()) {
            err(format!(
                "expected 3 or 4 comma-separated fields (endpoint,identity,key_hex,labels), got {}",
                fields.len()
            ));
            continue;
        }
        let Ok(key) = hex::decode(fields[2]) else {
            err("bootstrap key must be hex".into());
            continue;
        };
        let labels: Vec<String> = fields
            .get(3)
            .map(|s| {
                s.split([';', ' '])
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let entry = BootstrapEndpoint {
            endpoint: fields[0].to_string(),
            credential: BootstrapCredential::Psk {
                identity: fields[1].to_string(),
                key,
            },
            labels,
            config: None,
            updated_ms: now_ms,
            pending: None,
        };
        if let Err(e) = validate_endpoint(&entry) {
            err(e.to_string());
            continue;
        }
        if let Some(first) = seen_ep.insert(fields[0].to_string(), line) {
            err(format!("endpoint repeated (first on line {first})"));
            continue;
        }
        if let Some(first) = seen_id.insert(fields[1].to_string(), line) {
            err(format!("identity repeated (first on line {first})"));
            continue;
        }
        rows.push((line, entry));
    }
    if errors.is_empty() {
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(ep: &str, id: &str) -> BootstrapEndpoint {
        BootstrapEndpoint {
            endpoint: ep.into(),
            credential: BootstrapCredential::Psk {
                identity: id.into(),
                key: vec![7; 16],
            },
            labels: vec![],
            config: None,
            updated_ms: 1,
            pending: None,
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let text = format!("{:?}", psk("a", "id-a"));
        assert!(text.contains("<16 bytes>") && !text.contains("0707"));
    }

    #[test]
    fn csv_is_all_or_nothing_with_line_numbers() {
        let good = "endpoint,identity,key,labels\ndev-1,bs-1,00112233445566778899aabbccddeeff,fleet;eu\n\n# c\ndev-2,bs-2,00112233445566778899aabbccddeeff\n";
        let rows = parse_csv(good, 5).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].labels, ["fleet", "eu"]);
        assert!(rows[1].labels.is_empty());
        let bad = "dev-1,bs-1,00112233445566778899aabbccddeeff\ndev-2,bs-2,zz\ndev-1,bs-3,00112233445566778899aabbccddeeff\ndev 4,bs-4,00112233445566778899aabbccddeeff\ndev-5,bs-5,0011\na,b\n";
        let errs = parse_csv(bad, 5).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(errs[0].reason.contains("hex"));
        assert!(errs[1].reason.contains("repeated"));
        assert!(errs[3].reason.contains("16-64"));
        // Messages never carry key material.
        assert!(!errs.iter().any(|e| e.reason.contains("0011")));
    }

    #[test]
    fn store_index_clash_and_atomic_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put_bootstrap_endpoints(&[psk("a", "id-a")]).unwrap();
        assert_eq!(
            s.bootstrap_by_identity("id-a").unwrap().unwrap().endpoint,
            "a"
        );
        // b is fine, c clashes with a: nothing of the batch is stored.
        let (i, e) = s
            .put_bootstrap_endpoints(&[psk("b", "id-b"), psk("c", "id-a")])
            .unwrap_err();
        assert_eq!(i, 1);
        assert!(matches!(e, BootstrapConfigError::IdentityInUse { .. }));
        assert!(s.bootstrap_endpoint("b").unwrap().is_none());
        assert!(s.bootstrap_by_identity("id-b").unwrap().is_none());
        // Rotating a's identity frees the old one.
        s.put_bootstrap_endpoints(&[psk("a", "id-a2")]).unwrap();
        assert!(s.bootstrap_by_identity("id-a").unwrap().is_none());
        assert!(s.remove_bootstrap_endpoint("a").unwrap());
        assert!(s.bootstrap_by_identity("id-a2").unwrap().is_none());
        assert!(!s.remove_bootstrap_endpoint("a").unwrap());
    }

    #[test]
    fn config_resolution_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut e = psk("a", "id-a");
        e.labels = vec!["x".into(), "y".into()];
        assert_eq!(s.resolve_bootstrap_config(&e).unwrap(), None);
        let mut def = BootstrapConfig::default();
        def.servers[0].lifetime = 10;
        s.put(BOOTSTRAP_LABELS, DEFAULT_LABEL, &def).unwrap();
        assert_eq!(s.resolve_bootstrap_config(&e).unwrap(), Some(def.clone()));
        let mut y = def.clone();
        y.servers[0].lifetime = 20;
        s.put(BOOTSTRAP_LABELS, "y", &y).unwrap();
        assert_eq!(s.resolve_bootstrap_config(&e).unwrap(), Some(y));
        let c: BootstrapConfig =
            serde_json::from_str(r#"{"servers":[{"uri":"coap://h"}]}"#).unwrap();
        assert!(matches!(
            validate_config(&c),
            Err(BootstrapConfigError::BadConfig(_))
        ));
        let c: BootstrapConfig =
            serde_json::from_str(r#"{"servers":[{"uri":"coaps://h:5684","short_id":3}]}"#).unwrap();
        assert!(validate_config(&c).is_ok());
        assert_eq!(c.delete, ["/0", "/1"]);
        assert_eq!(parse_delete_path("/"), Some(vec![]));
        assert_eq!(parse_delete_path("/0/1"), Some(vec![0, 1]));
        assert_eq!(parse_delete_path("/0/1/2"), None);
        assert_eq!(parse_delete_path("0"), None);
    }
}
