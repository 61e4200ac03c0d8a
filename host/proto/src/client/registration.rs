//! The Registration interface (Core 1.1 §6.2, reference §1): Register,
//! Update, De-register, as a state machine named after what it waits for.

use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet, RequestType};

use super::{Client, Event};
use crate::coap::endpoint::{ExchangeId, MAX_TRANSMIT_WAIT};
use crate::coap::msg::{self, Code};
use crate::model::ContentFormat;
use crate::object::Object;

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Not started.
    Idle,
    /// Register sent, waiting for 2.01.
    AwaitRegister {
        /// The Register exchange.
        ex: ExchangeId,
        /// 1 for the first try.
        attempt: u32,
    },
    /// Registered at `location`; Update due at `update_at`.
    Registered {
        /// Location-Path segments from the 2.01.
        location: Vec<String>,
        /// When the next Update is due.
        update_at: Instant,
    },
    /// Update sent, waiting for 2.04.
    AwaitUpdate {
        /// The Update exchange.
        ex: ExchangeId,
        /// The registration being updated.
        location: Vec<String>,
        /// Payload sent with the Update, if the object list changed.
        payload: Option<String>,
        /// Lifetime sent with the Update (if changed).
        lifetime: u32,
    },
    /// Register failed; next attempt at `until`.
    BackOff {
        /// When to retry.
        until: Instant,
        /// Number of the next attempt.
        attempt: u32,
    },
    /// De-register sent, waiting for 2.02.
    AwaitDeregister {
        /// The De-register exchange.
        ex: ExchangeId,
    },
    /// Finished (after `deregister`).
    Deregistered,
}

/// When to send the Update: `lifetime - max(lifetime/10, min(MAX_TRANSMIT_WAIT, lifetime/2))`
/// after registering, so it lands before the server drops us (reference §1).
pub fn update_delay(lifetime: u32) -> Duration {
    let lt = Duration::from_secs(lifetime.into());
    let margin = (lt / 10).max(MAX_TRANSMIT_WAIT.min(lt / 2));
    lt.saturating_sub(margin)
}

/// Register back-off: `base × 2^(attempt-1)`, capped (Core 1.1 §6.2.1.1).
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

impl Client {
    /// The DTLS handshake with the server failed (an alert, a key the
    /// server no longer has, no answer within the handshake deadline):
    /// nothing in flight to the server can arrive, so the outstanding
    /// Register or Update fails now, not when CoAP gives up on it (~93 s).
    ///
    /// - A Register fails like one refused or unanswered
    ///   ([`Event::RegistrationFailed`] without a code): the next attempt
    ///   comes after the back-off of `/1/x/18` Communication Retry Timer, and
    ///   the driver counts it toward `/1/x/17` Communication Retry Count and
    ///   `/1/x/16` Bootstrap on Registration Failure (Core 1.1 §6.2.1.1; the
    ///   resources in §E.2).
    /// - An Update fails like one unanswered: Register again at once (which
    ///   waits for the DTLS layer's own handshake back-off).
    ///
    /// Otherwise nothing changes (other exchanges keep their CoAP timers).
    pub fn handshake_failed(&mut self, now: Instant) {
        match self.reg.clone() {
            RegState::AwaitRegister { ex, attempt } => {
                self.ep.cancel(now, ex);
                self.register_failed(now, attempt, None);
            }
            RegState::AwaitUpdate { ex, .. } => {
                self.ep.cancel(now, ex);
                self.send_register(now, 1);
            }
            _ => return,
        }
        self.pump(now);
    }

    /// Register attempt `attempt` failed (`code`: the server's answer, `None`
    /// for none): back off `/1/x/18 × 2^(attempt-1)` (Core 1.1 §6.2.1.1).
    pub(super) fn register_failed(&mut self, now: Instant, attempt: u32, code: Option<Code>) {
        let retry_in = backoff(self.cfg.retry_base, self.cfg.retry_cap, attempt);
        self.reg = RegState::BackOff {
            until: now + retry_in,
            attempt: attempt + 1,
        };
        self.events.push_back(Event::RegistrationFailed {
            attempt,
            code,
            retry_in,
        });
    }
}

/// What the root link `</>;rt="oma.lwm2m"` of the Register payload says
/// about content formats (reference §1: the root link and its `ct` are
/// optional; one format is `ct=110`, several a quoted space list
/// `ct="110 112 11542"`).
///
/// Wakaama's server core (and servers built on it) parses `ct` as one
/// number and answers 4.00 to a quoted list, after which the device waits
/// out the Register back-off and never registers; so the default announces
/// one format. In device.toml: `register-content-formats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootLinkFormats {
    /// No root link at all (`</1/0>,…` only).
    None,
    /// `</>;rt="oma.lwm2m";ct=110`: the first (preferred) format only.
    #[default]
    Single,
    /// `</>;rt="oma.lwm2m";ct="110 112 11542"`: every supported format
    /// (Leshan and lwm2m-node-lib accept it).
    All,
}

impl RootLinkFormats {
    /// The formats to announce out of the supported ones (preferred first).
    pub fn pick(self, supported: &[ContentFormat]) -> &[ContentFormat] {
        match self {
            RootLinkFormats::None => &[],
            RootLinkFormats::Single => supported.get(..1).unwrap_or(&[]),
            RootLinkFormats::All => supported,
        }
    }
}

/// The CoRE link list of objects and instances (reference §1): optional root
/// link announcing content formats, `ver` on object links, no Security (/0)
/// object (Core 1.1 §6.2.1: Security and OSCORE objects are never listed).
pub fn link_payload(objects: &[Box<dyn Object>], formats: &[ContentFormat]) -> String {
    let mut links: Vec<String> = Vec::new();
    match formats {
        [] => {}
        [one] => links.push(format!("</>;rt=\"oma.lwm2m\";ct={}", one.code())),
        many => {
            let codes: Vec<String> = many.iter().map(|f| f.code().to_string()).collect();
            links.push(format!("</>;rt=\"oma.lwm2m\";ct=\"{}\"", codes.join(" ")));
        }
    }
    let mut sorted: Vec<&dyn Object> = objects
        .iter()
        .map(|o| o.as_ref())
        .filter(|o| o.id() != 0 && o.id() != 21)
        .collect();
    sorted.sort_by_key(|o| o.id());
    for o in sorted {
        let instances = o.instances();
        match o.version() {
            Some(v) => links.push(format!("</{}>;ver={v}", o.id())),
            None if instances.is_empty() => links.push(format!("</{}>", o.id())),
            None => {}
        }
        for i in instances {
            links.push(format!("</{}/{i}>", o.id()));
        }
    }
    links.join(",")
}

/// Register: CON POST /rd?ep=&lt=&lwm2m=&b= with the link payload (CF 40).
pub fn register_request(
    endpoint: &str,
    lifetime: u32,
    version: &str,
    binding: &str,
    payload: &str,
) -> Packet {
    let mut p = msg::request(RequestType::Post, &["rd"]);
    let q = [
        format!("ep={endpoint}"),
        format!("lt={lifetime}"),
        format!("lwm2m={version}"),
        format!("b={binding}"),
    ];
    msg::add_strings(&mut p, CoapOption::UriQuery, &q);
    msg::set_uint(
        &mut p,
        CoapOption::ContentFormat,
        ContentFormat::LinkFormat.code().into(),
    );
    p.payload = payload.as_bytes().to_vec();
    p
}

/// Update: CON POST /{location}[?lt=][payload] (only what changed, reference §1).
pub fn update_request(location: &[String], lifetime: Option<u32>, payload: Option<&str>) -> Packet {
    let mut p = msg::request(RequestType::Post, &[]);
    msg::add_strings(&mut p, CoapOption::UriPath, location);
    if let Some(lt) = lifetime {
        msg::add_strings(&mut p, CoapOption::UriQuery, &[format!("lt={lt}")]);
    }
    if let Some(body) = payload {
        msg::set_uint(
            &mut p,
            CoapOption::ContentFormat,
            ContentFormat::LinkFormat.code().into(),
        );
        p.payload = body.as_bytes().to_vec();
    }
    p
}

/// De-register: CON DELETE /{location}.
pub fn deregister_request(location: &[String]) -> Packet {
    let mut p = msg::request(RequestType::Delete, &[]);
    msg::add_strings(&mut p, CoapOption::UriPath, location);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_timing_and_backoff() {
        assert_eq!(update_delay(86400), Duration::from_secs(86400 - 8640));
        assert_eq!(update_delay(300), Duration::from_secs(300 - 93));
        assert_eq!(update_delay(60), Duration::from_secs(30));
        let base = Duration::from_secs(60);
        let cap = Duration::from_secs(3600);
        assert_eq!(backoff(base, cap, 1), base);
        assert_eq!(backoff(base, cap, 3), Duration::from_secs(240));
        assert_eq!(backoff(base, cap, 30), cap);
    }

    #[test]
    fn wire_vectors_from_reference() {
        let payload = "</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</3303>;ver=1.1,</3303/0>";
        let mut p = register_request("node1", 300, "1.1", "U", payload);
        p.header.message_id = 0x1234;
        p.set_token(vec![0xA1, 0xB2, 0xC3, 0xD4]);
        let hex = "44 02 12 34 A1 B2 C3 D4 B2 72 64 11 28 38 65 70 3D 6E 6F 64 65 31 06 6C 74 3D 33 30 30 09 6C 77 6D 32 6D 3D 31 \
                   2E 31 03 62 3D 55 FF 3C 2F 3E 3B 72 74 3D 22 6F 6D 61 2E 6C 77 6D 32 6D 22 3B 63 74 3D 31 31 30 2C 3C 2F 31 2F \
                   30 3E 2C 3C 2F 33 2F 30 3E 2C 3C 2F 33 33 30 33 3E 3B 76 65 72 3D 31 2E 31 2C 3C 2F 33 33 30 33 2F 30 3E";
        assert_eq!(msg::encode(&p).unwrap(), bytes(hex));
        let loc = vec!["rd".to_string(), "5a3f".to_string()];
        let mut u = update_request(&loc, Some(600), None);
        u.header.message_id = 0x1235;
        u.set_token(vec![0xA1, 0xB2, 0xC3, 0xD5]);
        assert_eq!(
            msg::encode(&u).unwrap(),
            bytes("44 02 12 35 A1 B2 C3 D5 B2 72 64 04 35 61 33 66 46 6C 74 3D 36 30 30")
        );
        let mut d = deregister_request(&loc);
        d.header.message_id = 0x1236;
        d.set_token(vec![0xA1, 0xB2, 0xC3, 0xD6]);
        assert_eq!(
            msg::encode(&d).unwrap(),
            bytes("44 04 12 36 A1 B2 C3 D6 B2 72 64 04 35 61 33 66")
        );
    }

    pub(crate) fn bytes(hex: &str) -> Vec<u8> {
        hex.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }
}
