//! The Bootstrap-Request (`POST /bs?ep=NAME[&pct=N]`, LwM2M 1.1 Core
//! §5.2.7.1, §6.1.1) before any session exists: parsing, who may bootstrap
//! as which endpoint, and the caps checked before anything is allocated.
//! Pure functions and plain data; the driver supplies the facts.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use coap_lite::{Packet, RequestType};
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::dtls::PeerIdentity;
use wasmdm_proto::model::ContentFormat;

use super::config::{BootstrapCredential, BootstrapEndpoint};
use crate::core::access::PeerAuth;
use crate::security::{Credential, valid_endpoint};

/// Caps on what devices can make the bootstrap server hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapLimits {
    /// Sessions in progress, all devices.
    pub max_sessions: usize,
    /// Sessions in progress from one IP address.
    pub max_sessions_per_ip: usize,
    /// How long one session may take, Bootstrap-Request to Finish answer.
    pub session_timeout: Duration,
    /// Bootstrap-Requests accepted per endpoint within `rate_window`.
    pub max_requests_per_endpoint: usize,
    /// The window of `max_requests_per_endpoint`.
    pub rate_window: Duration,
    /// Sessions kept per endpoint in the store (older ones are dropped).
    pub kept_sessions: usize,
}

impl Default for BootstrapLimits {
    fn default() -> Self {
        BootstrapLimits {
            max_sessions: 1_024,
            // Many devices behind one NAT may start together.
            max_sessions_per_ip: 256,
            // Five requests, each up to MAX_TRANSMIT_WAIT (93 s) when lossy,
            // would exceed this: a session that slow is better restarted.
            session_timeout: Duration::from_secs(180),
            max_requests_per_endpoint: 5,
            rate_window: Duration::from_secs(600),
            kept_sessions: 20,
        }
    }
}

/// A parsed Bootstrap-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapRequest {
    /// Endpoint client name.
    pub endpoint: String,
    /// Payload format for the Writes (from `pct`, TLV by default).
    pub format: ContentFormat,
}

/// Why a request gets no session, with the code the device is answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not `POST /bs`.
    #[error("not a Bootstrap-Request")]
    NotBootstrap,
    /// Missing or bad `ep`, or an unknown parameter value.
    #[error("bad Bootstrap-Request: {0}")]
    Malformed(&'static str),
    /// `pct` names a format the server does not write.
    #[error("preferred content format {0} not supported")]
    Format(u64),
    /// Unknown endpoint, or the peer's credential does not match it.
    #[error("{0}")]
    Denied(&'static str),
    /// Too many requests from this endpoint lately.
    #[error("too many Bootstrap-Requests from this endpoint")]
    RateLimited,
    /// The session caps are reached.
    #[error("too many bootstrap sessions in progress")]
    Busy,
    /// No configuration or server URI to provision.
    #[error("nothing to provision: {0}")]
    NoConfig(&'static str),
    /// The server failed (store, randomness).
    #[error("server error: {0}")]
    Internal(String),
}

impl Refused {
    /// The response code (Core 1.1 §6.1.1: a mismatch between the endpoint
    /// name and the DTLS identity MUST get 4.00, as does an unknown name).
    pub fn code(&self) -> Code {
        match self {
            Refused::NotBootstrap => Code::NOT_FOUND,
            Refused::Malformed(_) | Refused::Denied(_) | Refused::NoConfig(_) => Code::BAD_REQUEST,
            Refused::Format(_) => Code::UNSUPPORTED_CONTENT_FORMAT,
            Refused::RateLimited => Code::TOO_MANY_REQUESTS,
            Refused::Busy => Code::SERVICE_UNAVAILABLE,
            Refused::Internal(_) => Code::INTERNAL_SERVER_ERROR,
        }
    }
}

/// True for `POST /bs`.
pub fn is_bootstrap_request(p: &Packet) -> bool {
    p.header.code == coap_lite::MessageClass::Request(RequestType::Post)
        && msg::uri_path(p).is_some_and(|s| s == ["bs"])
}

/// Parses `POST /bs?ep=NAME[&pct=N]`; other query parameters are ignored.
pub fn parse(p: &Packet) -> Result<BootstrapRequest, Refused> {
    if !is_bootstrap_request(p) {
        return Err(Refused::NotBootstrap);
    }
    let query = msg::uri_query(p).ok_or(Refused::Malformed("Uri-Query is not UTF-8"))?;
    let mut endpoint = None;
    let mut format = ContentFormat::Tlv;
    for q in query {
        if let Some(v) = q.strip_prefix("ep=") {
            endpoint = Some(v.to_string());
        } else if let Some(v) = q.strip_prefix("pct=") {
            let n: u64 = v.parse().map_err(|_| Refused::Malformed("bad pct"))?;
            format = match n {
                11542 => ContentFormat::Tlv,
                110 => ContentFormat::SenmlJson,
                112 => ContentFormat::SenmlCbor,
                _ => return Err(Refused::Format(n)),
            };
        }
    }
    let endpoint = endpoint.ok_or(Refused::Malformed("ep is required"))?;
    if !valid_endpoint(&endpoint) {
        return Err(Refused::Malformed("bad endpoint name"));
    }
    Ok(BootstrapRequest { endpoint, format })
}

/// Whether a peer that authenticated as `auth` may bootstrap as the
/// endpoint with bootstrap account `account` (and operational credential
/// `operational`); returns the security mode's name.
///
/// - PSK: the handshake's identity must be the endpoint's bootstrap
///   identity, or the pending one of a rollover.
/// - Certificate: the endpoint's account is `x509` and the name is the
///   certificate's CN or a SAN.
/// - Plain CoAP: the account is `nosec`; or, with `allow_nosec` (a lab),
///   the endpoint has no bootstrap account and no operational credential
///   (so a plain request can never re-key a device that has one).
pub fn admit(
    auth: &PeerAuth,
    endpoint: &str,
    account: Option<&BootstrapEndpoint>,
    operational: Option<&Credential>,
    allow_nosec: bool,
) -> Result<&'static str, Refused> {
    let credential = account.map(|a| &a.credential);
    match (auth, credential) {
        (
            PeerAuth::Dtls(PeerIdentity::Psk(id)),
            Some(BootstrapCredential::Psk { identity, .. }),
        ) if id.as_slice() == identity.as_bytes() => Ok("psk"),
        // A rollover's new identity (rollover.rs): the device has it.
        (PeerAuth::Dtls(PeerIdentity::Psk(id)), Some(BootstrapCredential::Psk { .. }))
            if account.is_some_and(|a| super::rollover::proves_pending(a, id)) =>
        {
            Ok("psk")
        }
        (PeerAuth::Dtls(PeerIdentity::Certificate(names)), Some(BootstrapCredential::X509))
            if names.iter().any(|n| n == endpoint) =>
        {
            Ok("x509")
        }
        (PeerAuth::NoSec, Some(BootstrapCredential::NoSec)) => Ok("nosec"),
        (PeerAuth::NoSec, None) if allow_nosec && operational.is_none() => Ok("nosec"),
        (_, None) => Err(Refused::Denied("unknown endpoint")),
        _ => Err(Refused::Denied(
            "the peer's credential is not this endpoint's bootstrap credential",
        )),
    }
}

/// Bootstrap-Requests accepted per endpoint in a sliding window.
#[derive(Debug, Default)]
pub struct RateLimiter {
    seen: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    /// Counts a request of `endpoint` at `now` if it is within `limits`.
    pub fn allow(&mut self, endpoint: &str, now: Instant, limits: &BootstrapLimits) -> bool {
        let q = self.seen.entry(endpoint.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limits.rate_window)
        {
            q.pop_front();
        }
        if q.len() >= limits.max_requests_per_endpoint {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Forgets endpoints with no request in the window (bounds memory).
    pub fn prune(&mut self, now: Instant, limits: &BootstrapLimits) {
        self.seen.retain(|_, q| {
            q.back()
                .is_some_and(|t| now.duration_since(*t) < limits.rate_window)
        });
    }
}

/// Sessions in progress, counted per source IP.
#[derive(Debug, Default)]
pub struct SessionCount {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl SessionCount {
    /// Takes a slot for `ip` if the caps allow.
    pub fn try_add(&mut self, ip: IpAddr, limits: &BootstrapLimits) -> bool {
        let n = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.total >= limits.max_sessions || n >= limits.max_sessions_per_ip {
            return false;
        }
        self.total += 1;
        self.per_ip.insert(ip, n + 1);
        true
    }

    /// Frees `ip`'s slot.
    pub fn remove(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Sessions in progress.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::CoapOption;

    fn req(query: &[&str]) -> Packet {
        let mut p = msg::request(RequestType::Post, &["bs"]);
        msg::add_strings(&mut p, CoapOption::UriQuery, query);
        p
    }

    fn account(c: BootstrapCredential) -> BootstrapEndpoint {
        BootstrapEndpoint {
            endpoint: "dev".into(),
            credential: c,
            labels: vec![],
            config: None,
            updated_ms: 0,
            pending: None,
        }
    }

    #[test]
    fn parsing() {
        let r = parse(&req(&["ep=dev-1", "pct=112"])).unwrap();
        assert_eq!(r.endpoint, "dev-1");
        assert_eq!(r.format, ContentFormat::SenmlCbor);
        assert_eq!(parse(&req(&["ep=d"])).unwrap().format, ContentFormat::Tlv);
        assert_eq!(parse(&req(&[])).unwrap_err().code(), Code::BAD_REQUEST);
        assert_eq!(
            parse(&req(&["ep=d", "pct=11543"])).unwrap_err().code(),
            Code::UNSUPPORTED_CONTENT_FORMAT
        );
        assert_eq!(
            parse(&req(&["ep=a b"])).unwrap_err().code(),
            Code::BAD_REQUEST
        );
        let get = msg::request(RequestType::Get, &["bs"]);
        assert_eq!(parse(&get).unwrap_err(), Refused::NotBootstrap);
    }

    #[test]
    fn admission() {
        let psk = account(BootstrapCredential::Psk {
            identity: "bs-dev".into(),
            key: vec![1; 16],
        });
        let by = |id: &str| PeerAuth::Dtls(PeerIdentity::Psk(id.as_bytes().to_vec()));
        assert_eq!(
            admit(&by("bs-dev"), "dev", Some(&psk), None, false),
            Ok("psk")
        );
        // Another device's valid identity, or none: 4.00.
        let e = admit(&by("bs-other"), "dev", Some(&psk), None, false).unwrap_err();
        assert_eq!(e.code(), Code::BAD_REQUEST);
        assert!(admit(&by("bs-dev"), "dev", None, None, false).is_err());
        // Plain CoAP never for a PSK account, even in a lab.
        assert!(admit(&PeerAuth::NoSec, "dev", Some(&psk), None, true).is_err());
        let nosec = account(BootstrapCredential::NoSec);
        assert_eq!(
            admit(&PeerAuth::NoSec, "dev", Some(&nosec), None, false),
            Ok("nosec")
        );
        // Lab: unknown endpoints over plain CoAP, unless they have a credential.
        assert!(admit(&PeerAuth::NoSec, "new", None, None, false).is_err());
        assert_eq!(
            admit(&PeerAuth::NoSec, "new", None, None, true),
            Ok("nosec")
        );
        assert!(admit(&PeerAuth::NoSec, "new", None, Some(&Credential::X509), true).is_err());
        let x = account(BootstrapCredential::X509);
        let cert = |n: &str| PeerAuth::Dtls(PeerIdentity::Certificate(vec![n.into()]));
        assert_eq!(
            admit(&cert("dev"), "dev", Some(&x), None, false),
            Ok("x509")
        );
        assert!(admit(&cert("other"), "dev", Some(&x), None, false).is_err());
    }

    #[test]
    fn caps() {
        let limits = BootstrapLimits {
            max_sessions: 3,
            max_sessions_per_ip: 2,
            max_requests_per_endpoint: 2,
            rate_window: Duration::from_secs(10),
            ..BootstrapLimits::default()
        };
        let mut c = SessionCount::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(c.try_add(a, &limits) && c.try_add(a, &limits));
        assert!(!c.try_add(a, &limits), "per-IP cap");
        assert!(c.try_add(b, &limits));
        assert!(!c.try_add(b, &limits), "total cap");
        c.remove(a);
        assert!(c.try_add(b, &limits));
        let mut r = RateLimiter::default();
        let t = Instant::now();
        assert!(r.allow("d", t, &limits) && r.allow("d", t, &limits));
        assert!(!r.allow("d", t + Duration::from_secs(9), &limits));
        assert!(r.allow("e", t, &limits));
        assert!(r.allow("d", t + Duration::from_secs(10), &limits));
        r.prune(t + Duration::from_secs(30), &limits);
        assert!(r.seen.is_empty());
    }
}
