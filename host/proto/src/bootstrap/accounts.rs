//! The accounts a bootstrap provisions: /0 Security and /1 Server
//! instances (Core 1.1 §E.1, §E.2), and what the Bootstrap Interface may do
//! with them (Core 1.1 §5.2.7, §6.1). Pure data: the engine in
//! [`super::BootstrapClient`] decides when, this module decides what.
//!
//! Only /0 and /1 are provisioned on a wasmdm device. /3 (Device) and the
//! software objects /9 and /14 are listed by Bootstrap-Discover but never
//! written or deleted by bootstrap: installed software outlives any
//! re-provisioning (issue 11).

use std::collections::BTreeMap;

use crate::coap::msg::Code;
use crate::codec;
use crate::dtls::{ClientCredentials, DtlsClient, ServerTrust};
use crate::model::{ContentFormat, DataType, Node, Path, ResourceValue, Value};
use crate::objects::server::{Server, res as srv};
use crate::objects::{Security, SecurityMode};

/// Longest LwM2M Server URI (/0/x/0 is a String of at most 255 bytes, reference §8).
pub const MAX_URI_LEN: usize = 255;
/// Largest opaque credential resource (/0/x/3, /0/x/4, /0/x/5) accepted.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;
/// Shortest and longest PSK accepted (as the factory `psk-key`).
pub const PSK_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// Why a bootstrap operation failed; [`BootstrapError::code`] is the one
/// place that maps it to a CoAP response code (Core 1.1 §6.1, Transport §6.7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    /// 4.00: malformed, or an operation this device does not allow.
    #[error("{0}")]
    BadRequest(String),
    /// 4.01: Bootstrap-Read outside /1 and /2 (Core 1.1 §5.2.7.2).
    #[error("bootstrap may not read {0}")]
    Unauthorized(Path),
    /// 4.04: no such instance or resource.
    #[error("not found")]
    NotFound,
    /// 4.05: method not allowed on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 4.06: Read in a format we cannot produce, or an inconsistent Finish.
    #[error("{0}")]
    NotAcceptable(String),
    /// 4.13: a payload above the cap.
    #[error("payload larger than {limit} bytes")]
    TooLarge {
        /// The cap, sent as Size1.
        limit: u64,
    },
    /// 4.15: a Content-Format without a codec.
    #[error("unsupported content format")]
    UnsupportedFormat,
}

impl BootstrapError {
    /// The response code.
    pub fn code(&self) -> Code {
        match self {
            BootstrapError::BadRequest(_) => Code::BAD_REQUEST,
            BootstrapError::Unauthorized(_) => Code::UNAUTHORIZED,
            BootstrapError::NotFound => Code::NOT_FOUND,
            BootstrapError::MethodNotAllowed => Code::METHOD_NOT_ALLOWED,
            BootstrapError::NotAcceptable(_) => Code::NOT_ACCEPTABLE,
            BootstrapError::TooLarge { .. } => Code::REQUEST_ENTITY_TOO_LARGE,
            BootstrapError::UnsupportedFormat => Code::UNSUPPORTED_CONTENT_FORMAT,
        }
    }

    fn bad(why: impl Into<String>) -> Self {
        BootstrapError::BadRequest(why.into())
    }
}

/// An object the device has besides /0 and /1, for Bootstrap-Discover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLinks {
    /// Object id.
    pub id: u16,
    /// Object version, when not 1.0.
    pub version: Option<String>,
    /// Its instances.
    pub instances: Vec<u16>,
}

/// The /0 and /1 instances, keyed by instance id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// /0 Security instances.
    pub security: BTreeMap<u16, Security>,
    /// /1 Server instances.
    pub servers: BTreeMap<u16, Server>,
}

/// A server account that passed the Bootstrap-Finish check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableAccount {
    /// Its /0 instance.
    pub security: Security,
    /// Its /1 instance.
    pub server: Server,
    /// Where it is: `host:port`.
    pub authority: String,
    /// DTLS credentials (`None`: NoSec).
    pub credentials: Option<ClientCredentials>,
}

/// A parsed `coap://` or `coaps://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUri {
    /// `coaps://`.
    pub secure: bool,
    /// `host:port` (default port 5683 / 5684), `[v6]:port` for IPv6.
    pub authority: String,
}

/// Parses `coap://host[:port][/...]` or `coaps://...` (Core 1.1 §E.1 /0/x/0).
pub fn parse_server_uri(uri: &str) -> Result<ServerUri, String> {
    let (rest, secure, port) = if let Some(r) = uri.strip_prefix("coaps://") {
        (r, true, 5684)
    } else if let Some(r) = uri.strip_prefix("coap://") {
        (r, false, 5683)
    } else {
        return Err(format!("{uri:?} is not a coap:// or coaps:// URI"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, explicit) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, tail)) => (h, Some(tail.strip_prefix(':').unwrap_or(tail))),
            None => return Err(format!("{uri:?}: unclosed IPv6 literal")),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{uri:?} names no host"));
    }
    let port = match explicit {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{uri:?}: bad port"))?,
        None => port,
    };
    let authority = if authority.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(ServerUri { secure, authority })
}

/// The DTLS credentials a /0 instance describes, or why it cannot be used.
/// `Ok(None)` is NoSec, allowed only with `allow_nosec` (plain CoAP carries
/// credentials in clear, so it is opt-in).
pub fn credentials(sec: &Security, allow_nosec: bool) -> Result<Option<ClientCredentials>, String> {
    let uri = parse_server_uri(&sec.server_uri)?;
    let mode = sec.security_mode;
    let need_coaps = |secure: bool| {
        if uri.secure == secure {
            Ok(())
        } else if secure {
            Err(format!("security mode {mode} needs a coaps:// URI"))
        } else {
            Err("NoSec (mode 3) needs a coap:// URI".to_string())
        }
    };
    let creds = match mode {
        m if m == SecurityMode::Psk as i64 => {
            need_coaps(true)?;
            if sec.public_key_or_identity.is_empty() {
                return Err("PSK mode without an identity (/0/x/3)".into());
            }
            if !PSK_LEN.contains(&sec.secret_key.len()) {
                return Err(format!(
                    "PSK of {} bytes (/0/x/5); 8 to 64 are accepted",
                    sec.secret_key.len()
                ));
            }
            ClientCredentials::Psk {
                identity: sec.public_key_or_identity.clone(),
                key: sec.secret_key.clone(),
            }
        }
        m if m == SecurityMode::Certificate as i64 => {
            need_coaps(true)?;
            if sec.public_key_or_identity.is_empty()
                || sec.secret_key.is_empty()
                || sec.server_public_key.is_empty()
            {
                return Err(
                    "certificate mode needs /0/x/3 (certificate), /0/x/4 (server certificate) \
                     and /0/x/5 (private key)"
                        .into(),
                );
            }
            ClientCredentials::Certificate {
                chain: vec![sec.public_key_or_identity.clone()],
                private_key: sec.secret_key.clone(),
                trust: ServerTrust::Pinned(sec.server_public_key.clone()),
            }
        }
        m if m == SecurityMode::NoSec as i64 => {
            need_coaps(false)?;
            if !allow_nosec {
                return Err("NoSec (mode 3) is not allowed on this device".into());
            }
            return Ok(None);
        }
        m if m == SecurityMode::RawPublicKey as i64 => {
            return Err("Raw Public Key (mode 1) is not supported".into());
        }
        other => return Err(format!("security mode {other} is not supported")),
    };
    // The DTLS stack must take the key material as it is.
    DtlsClient::new(creds.clone()).map_err(|e| e.to_string())?;
    Ok(Some(creds))
}

/// Type of a /0 or /1 resource, for decoders of untyped formats (TLV,
/// text). Resources we accept but do not use are typed too, so a server
/// writing a full instance is not refused for them.
pub fn resource_type(path: Path) -> Option<DataType> {
    use DataType::*;
    let r = path.resource?;
    Some(match (path.object, r) {
        (0, 0 | 9 | 14) => String,
        (0, 1) => Boolean,
        (0, 2 | 6 | 10 | 11 | 12 | 13 | 15 | 16) => Integer,
        (0, 3 | 4 | 5 | 7 | 8) => Opaque,
        (0, 17) => ObjLink,
        (1, 0..=3 | 5 | 13 | 14 | 17..=20) => Integer,
        (1, 4 | 8 | 9) => None,
        (1, 6 | 15 | 16 | 21 | 23) => Boolean,
        (1, 7 | 22) => String,
        (1, 10) => ObjLink,
        (1, 11) => Integer,
        (1, 12) => Time,
        _ => return Option::None,
    })
}

fn single(v: ResourceValue) -> Result<Value, BootstrapError> {
    match v {
        ResourceValue::Single(v) => Ok(v),
        ResourceValue::Multiple(_) => Err(BootstrapError::bad("expected a single value")),
    }
}

fn integer(v: ResourceValue) -> Result<i64, BootstrapError> {
    match single(v)? {
        Value::Integer(i) | Value::Time(i) => Ok(i),
        Value::Unsigned(u) => i64::try_from(u).map_err(|_| BootstrapError::bad("out of range")),
        _ => Err(BootstrapError::bad("expected an integer")),
    }
}

fn non_negative(v: ResourceValue) -> Result<u64, BootstrapError> {
    u64::try_from(integer(v)?).map_err(|_| BootstrapError::bad("expected a non-negative integer"))
}

fn short_server_id(v: ResourceValue) -> Result<u16, BootstrapError> {
    // Reference §8: 1..65534; 0 and 65535 are never used.
    u16::try_from(integer(v)?)
        .ok()
        .filter(|id| (1..u16::MAX).contains(id))
        .ok_or_else(|| BootstrapError::bad("Short Server ID must be 1..65534"))
}

fn boolean(v: ResourceValue) -> Result<bool, BootstrapError> {
    match single(v)? {
        Value::Boolean(b) => Ok(b),
        _ => Err(BootstrapError::bad("expected a boolean")),
    }
}

fn string(v: ResourceValue, max: usize) -> Result<String, BootstrapError> {
    match single(v)? {
        Value::String(s) if s.len() <= max => Ok(s),
        Value::String(_) => Err(BootstrapError::bad(format!(
            "string longer than {max} bytes"
        ))),
        _ => Err(BootstrapError::bad("expected a string")),
    }
}

/// Opaque; a string is taken as its UTF-8 bytes (SenML `vs` for an identity).
fn opaque(v: ResourceValue) -> Result<Vec<u8>, BootstrapError> {
    let bytes = match single(v)? {
        Value::Opaque(b) => b,
        Value::String(s) => s.into_bytes(),
        _ => return Err(BootstrapError::bad("expected opaque bytes")),
    };
    if bytes.len() > MAX_CREDENTIAL_LEN {
        return Err(BootstrapError::TooLarge {
            limit: MAX_CREDENTIAL_LEN as u64,
        });
    }
    Ok(bytes)
}

/// A fresh /0 instance before any resource is written.
fn blank_security() -> Security {
    let mut s = Security::nosec(String::new(), 0);
    s.security_mode = -1;
    s
}

/// Writes one /0 resource (Core 1.1 §E.1).
fn write_security(s: &mut Security, r: u16, v: ResourceValue) -> Result<(), BootstrapError> {
    match r {
        0 => s.server_uri = string(v, MAX_URI_LEN)?,
        1 => s.bootstrap = boolean(v)?,
        2 => {
            let m = integer(v)?;
            if !(0..=4).contains(&m) {
                return Err(BootstrapError::bad("Security Mode must be 0..4"));
            }
            s.security_mode = m;
        }
        3 => s.public_key_or_identity = opaque(v)?,
        4 => s.server_public_key = opaque(v)?,
        5 => s.secret_key = opaque(v)?,
        10 => s.short_server_id = short_server_id(v)?,
        11 => s.client_hold_off = non_negative(v)?,
        12 => s.account_timeout = non_negative(v)?,
        // SMS (6-9), Matching Type, SNI, Certificate Usage, Cipher Suites,
        // OSCORE (13-17): accepted, not used by this device.
        6..=9 | 13..=17 => {}
        _ => return Err(BootstrapError::NotFound),
    }
    Ok(())
}

/// Writes one /1 resource (Core 1.1 §E.2).
fn write_server(s: &mut Server, r: u16, v: ResourceValue) -> Result<(), BootstrapError> {
    match r {
        srv::SHORT_SERVER_ID => s.short_server_id = short_server_id(v)?,
        srv::LIFETIME => {
            s.lifetime = non_negative(v)?;
            if s.lifetime == 0 {
                return Err(BootstrapError::bad("lifetime must be at least 1 s"));
            }
        }
        srv::DEFAULT_PMIN => s.default_pmin = non_negative(v)?,
        srv::DEFAULT_PMAX => s.default_pmax = Some(non_negative(v)?),
        srv::DISABLE_TIMEOUT => s.disable_timeout = non_negative(v)?,
        srv::NOTIFICATION_STORING => s.notification_storing = boolean(v)?,
        srv::BINDING => {
            // The device speaks UDP only; a binding offering U (e.g. "UQ") is taken as U.
            if !string(v, 16)?.contains('U') {
                return Err(BootstrapError::bad("this device supports binding U only"));
            }
            s.binding = crate::objects::server::BINDING_UDP.into();
        }
        srv::BOOTSTRAP_ON_REGISTRATION_FAILURE => s.bootstrap_on_failure = boolean(v)?,
        srv::COMMUNICATION_RETRY_COUNT => s.retry_count = Some(non_negative(v)?),
        srv::COMMUNICATION_RETRY_TIMER => s.retry_timer = Some(non_negative(v)?),
        srv::COMMUNICATION_SEQUENCE_DELAY_TIMER => s.sequence_delay = Some(non_negative(v)?),
        srv::COMMUNICATION_SEQUENCE_RETRY_COUNT => s.sequence_retry_count = Some(non_negative(v)?),
        srv::DISABLE | srv::REGISTRATION_UPDATE_TRIGGER | srv::BOOTSTRAP_REQUEST_TRIGGER => {
            return Err(BootstrapError::bad("an executable resource takes no value"));
        }
        srv::MUTE_SEND => s.mute_send = boolean(v)?,
        // APN link, alert code, last bootstrapped, priorities, trigger,
        // preferred transport: accepted, not used.
        10..=15 | 21..=22 => {}
        _ => return Err(BootstrapError::NotFound),
    }
    Ok(())
}

/// The /1 resources a Bootstrap-Read returns.
fn server_resources(s: &Server) -> Vec<(u16, ResourceValue)> {
    let int = |v: u64| ResourceValue::Single(Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)));
    let mut out = vec![
        (srv::SHORT_SERVER_ID, int(u64::from(s.short_server_id))),
        (srv::LIFETIME, int(s.lifetime)),
        (srv::DEFAULT_PMIN, int(s.default_pmin)),
    ];
    if let Some(p) = s.default_pmax {
        out.push((srv::DEFAULT_PMAX, int(p)));
    }
    out.push((srv::DISABLE_TIMEOUT, int(s.disable_timeout)));
    out.push((
        srv::NOTIFICATION_STORING,
        ResourceValue::Single(Value::Boolean(s.notification_storing)),
    ));
    out.push((
        srv::BINDING,
        ResourceValue::Single(Value::String(s.binding.clone())),
    ));
    out.push((
        srv::BOOTSTRAP_ON_REGISTRATION_FAILURE,
        ResourceValue::Single(Value::Boolean(s.bootstrap_on_failure)),
    ));
    for (r, v) in [
        (srv::COMMUNICATION_RETRY_COUNT, s.retry_count),
        (srv::COMMUNICATION_RETRY_TIMER, s.retry_timer),
        (srv::COMMUNICATION_SEQUENCE_DELAY_TIMER, s.sequence_delay),
        (
            srv::COMMUNICATION_SEQUENCE_RETRY_COUNT,
            s.sequence_retry_count,
        ),
    ] {
        if let Some(v) = v {
            out.push((r, int(v)));
        }
    }
    out
}

impl Accounts {
    /// Bootstrap-Write (Core 1.1 §5.2.7.4): the values are written whether
    /// or not the instance exists (missing instances are created, at most
    /// `max_instances` per object). All or nothing: a bad resource leaves
    /// the accounts as they were.
    pub fn write(
        &mut self,
        target: Path,
        node: Node,
        max_instances: usize,
    ) -> Result<(), BootstrapError> {
        check_writable(target)?;
        let writes: Vec<(u16, Vec<(u16, ResourceValue)>)> = match (node, target.instance) {
            (Node::Object { instances, .. }, None) => instances,
            (Node::Instance { id, resources }, Some(i)) if id == i => vec![(i, resources)],
            (Node::Resource { id, value }, Some(i)) if Some(id) == target.resource => {
                vec![(i, vec![(id, value)])]
            }
            _ => {
                return Err(BootstrapError::bad(
                    "payload does not match the target path",
                ));
            }
        };
        let mut next = self.clone();
        for (i, resources) in writes {
            next.write_instance(target.object, i, resources)?;
        }
        let count = next.security.len().max(next.servers.len());
        if count > max_instances {
            return Err(BootstrapError::bad(format!(
                "more than {max_instances} instances per object"
            )));
        }
        *self = next;
        Ok(())
    }

    fn write_instance(
        &mut self,
        object: u16,
        i: u16,
        resources: Vec<(u16, ResourceValue)>,
    ) -> Result<(), BootstrapError> {
        if object == 0 {
            let mut s = self
                .security
                .get(&i)
                .cloned()
                .unwrap_or_else(blank_security);
            for (r, v) in resources {
                write_security(&mut s, r, v)?;
            }
            self.security.insert(i, s);
        } else {
            let mut s = self.servers.get(&i).cloned().unwrap_or_else(|| {
                let mut s = Server::new(0, 86_400);
                s.instance = i;
                s
            });
            for (r, v) in resources {
                write_server(&mut s, r, v)?;
            }
            self.servers.insert(i, s);
        }
        Ok(())
    }

    /// Bootstrap-Read (Core 1.1 §5.2.7.2): /1 (and /2, which this device
    /// lacks) only, at object or instance level; TLV unless Accept says
    /// SenML JSON or CBOR.
    pub fn read(
        &self,
        target: Path,
        accept: Option<u16>,
    ) -> Result<(Vec<u8>, ContentFormat), BootstrapError> {
        match target.object {
            1 => {}
            2 => return Err(BootstrapError::NotFound),
            _ => return Err(BootstrapError::Unauthorized(target)),
        }
        if target.resource.is_some() {
            return Err(BootstrapError::bad(
                "Bootstrap-Read targets an object or an instance",
            ));
        }
        let format = match accept {
            None => ContentFormat::Tlv,
            Some(code) => match ContentFormat::from_code(code) {
                Some(
                    f @ (ContentFormat::Tlv | ContentFormat::SenmlJson | ContentFormat::SenmlCbor),
                ) => f,
                _ => {
                    return Err(BootstrapError::NotAcceptable(format!(
                        "cannot read /1 as content format {code}"
                    )));
                }
            },
        };
        let node = match target.instance {
            None => Node::Object {
                id: 1,
                instances: self
                    .servers
                    .iter()
                    .map(|(i, s)| (*i, server_resources(s)))
                    .collect(),
            },
            Some(i) => Node::Instance {
                id: i,
                resources: server_resources(self.servers.get(&i).ok_or(BootstrapError::NotFound)?),
            },
        };
        let bytes = codec::encode(&node, target, format)
            .map_err(|e| BootstrapError::NotAcceptable(e.to_string()))?;
        Ok((bytes, format))
    }

    /// Bootstrap-Discover (Core 1.1 §5.2.7.1) of `/` (`object` `None`) or
    /// one object: `lwm2m="1.1"`, then the instances, /0 with `ssid` (not
    /// for the bootstrap account) and `uri`, /1 with `ssid`.
    pub fn discover(
        &self,
        object: Option<u16>,
        others: &[ObjectLinks],
    ) -> Result<String, BootstrapError> {
        let wanted = |id: u16| object.is_none_or(|o| o == id);
        if let Some(o) = object
            && !matches!(o, 0 | 1)
            && !others.iter().any(|l| l.id == o)
        {
            return Err(BootstrapError::NotFound);
        }
        let mut links = vec!["lwm2m=\"1.1\"".to_string()];
        if wanted(0) {
            if self.security.is_empty() {
                links.push("</0>".into());
            }
            for (i, s) in &self.security {
                let ssid = if s.bootstrap {
                    String::new()
                } else {
                    format!(";ssid={}", s.short_server_id)
                };
                let uri = s.server_uri.replace(['"', '\\'], "");
                links.push(format!("</0/{i}>{ssid};uri=\"{uri}\""));
            }
        }
        if wanted(1) {
            if self.servers.is_empty() {
                links.push("</1>".into());
            }
            for (i, s) in &self.servers {
                links.push(format!("</1/{i}>;ssid={}", s.short_server_id));
            }
        }
        for l in others.iter().filter(|l| wanted(l.id)) {
            match &l.version {
                Some(v) => links.push(format!("</{}>;ver={v}", l.id)),
                None if l.instances.is_empty() => links.push(format!("</{}>", l.id)),
                None => {}
            }
            for i in &l.instances {
                links.push(format!("</{}/{i}>", l.id));
            }
        }
        Ok(links.join(","))
    }

    /// Bootstrap-Delete (Core 1.1 §5.2.7.5) of `/` (`None`), an object or
    /// an instance. The bootstrap account survives a delete of `/` or `/0`
    /// and cannot be deleted by itself; /3 and the software objects named
    /// in `protected` are never deleted (4.00). Deleting what is not there
    /// succeeds.
    pub fn delete(
        &mut self,
        target: Option<Path>,
        protected: &[u16],
    ) -> Result<(), BootstrapError> {
        let Some(t) = target else {
            self.security.retain(|_, s| s.bootstrap);
            self.servers.clear();
            return Ok(());
        };
        if t.resource.is_some() {
            return Err(BootstrapError::bad(
                "Bootstrap-Delete targets an object or an instance",
            ));
        }
        if t.object == 3 || protected.contains(&t.object) {
            return Err(BootstrapError::bad(format!(
                "/{} is never deleted by bootstrap on this device",
                t.object
            )));
        }
        match (t.object, t.instance) {
            (0, None) => self.security.retain(|_, s| s.bootstrap),
            (0, Some(i)) => {
                if self.security.get(&i).is_some_and(|s| s.bootstrap) {
                    return Err(BootstrapError::bad(
                        "the bootstrap account cannot be deleted",
                    ));
                }
                self.security.remove(&i);
            }
            (1, None) => self.servers.clear(),
            (1, Some(i)) => {
                self.servers.remove(&i);
            }
            _ => {}
        }
        Ok(())
    }

    /// The Bootstrap-Finish check (Core 1.1 §5.2.5, §6.1.7.x): every /1
    /// instance has a /0 account of its Short Server ID, at most one
    /// bootstrap account, no SSID twice, and at least one server account
    /// usable as written (URI, mode, credentials). Returns the usable
    /// accounts, lowest SSID first, or the reasons it is inconsistent.
    pub fn check(&self, allow_nosec: bool) -> Result<Vec<UsableAccount>, String> {
        let mut problems = Vec::new();
        if self.security.values().filter(|s| s.bootstrap).count() > 1 {
            problems.push("more than one bootstrap account in /0".to_string());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.security.iter().filter(|(_, s)| !s.bootstrap) {
            if !seen.insert(s.short_server_id) {
                problems.push(format!(
                    "/0/{i}: Short Server ID {} used twice",
                    s.short_server_id
                ));
            }
        }
        for (i, srv) in &self.servers {
            if srv.short_server_id == 0 {
                problems.push(format!("/1/{i} has no Short Server ID"));
            } else if !seen.contains(&srv.short_server_id) {
                problems.push(format!(
                    "/1/{i}: no /0 account with Short Server ID {}",
                    srv.short_server_id
                ));
            }
        }
        let mut usable = Vec::new();
        for (i, s) in self.security.iter().filter(|(_, s)| !s.bootstrap) {
            if s.short_server_id == 0 {
                problems.push(format!("/0/{i} has no Short Server ID (/0/{i}/10)"));
                continue;
            }
            let Some(server) = self
                .servers
                .values()
                .find(|v| v.short_server_id == s.short_server_id)
            else {
                problems.push(format!(
                    "/0/{i}: no /1 instance with Short Server ID {}",
                    s.short_server_id
                ));
                continue;
            };
            match credentials(s, allow_nosec) {
                Ok(creds) => usable.push(UsableAccount {
                    security: s.clone(),
                    server: server.clone(),
                    authority: parse_server_uri(&s.server_uri)
                        .map(|u| u.authority)
                        .unwrap_or_default(),
                    credentials: creds,
                }),
                Err(why) => problems.push(format!("/0/{i}: {why}")),
            }
        }
        if usable.is_empty() && problems.is_empty() {
            problems.push("no LwM2M server account in /0".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        usable.sort_by_key(|a| a.security.short_server_id);
        Ok(usable)
    }
}

/// Bootstrap-Write reaches /0 and /1 only on this device (4.00 otherwise,
/// before the payload is decoded).
pub fn check_writable(target: Path) -> Result<(), BootstrapError> {
    if matches!(target.object, 0 | 1) {
        Ok(())
    } else {
        Err(BootstrapError::bad(format!(
            "bootstrap writes only /0 and /1 on this device, not /{}",
            target.object
        )))
    }
}

/// A Bootstrap-Write payload decoded for `target`.
pub fn decode_write(
    bytes: &[u8],
    target: Path,
    content_format: Option<u16>,
) -> Result<Node, BootstrapError> {
    // Reference §2: a missing Content-Format is 4.00, an unknown one 4.15.
    let code = content_format.ok_or_else(|| BootstrapError::bad("no Content-Format"))?;
    let format = ContentFormat::from_code(code).ok_or(BootstrapError::UnsupportedFormat)?;
    codec::decode(bytes, target, format, &resource_type).map_err(|e| match e {
        codec::CodecError::Unsupported(_) => BootstrapError::UnsupportedFormat,
        codec::CodecError::UnknownResource(_) => BootstrapError::NotFound,
        other => BootstrapError::bad(other.to_string()),
    })
}
