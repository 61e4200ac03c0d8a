//! Registration interface, server side (Core 1.1 §6.2; reference §1):
//! Register, Update and De-register requests in, response packets and
//! registry events out. Time is Unix milliseconds passed in by the caller.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use coap_lite::{CoapOption, MessageType, Packet, RequestType};
use serde::{Deserialize, Serialize};
use wasmdm_proto::coap::msg::{self, Code};

use super::link::{self, ObjectList};

/// Default lifetime when `lt` is absent (Core 1.1 Table 6.2.1-1).
pub const DEFAULT_LIFETIME: u64 = 86_400;
/// LwM2M enabler versions this server accepts; others get 4.12.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0", "1.1"];
/// Longest endpoint name accepted (keeps keys and logs bounded).
pub const MAX_ENDPOINT_LEN: usize = 255;

/// Caps on what registering peers can make the server hold (each checked
/// before anything is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Longest lifetime accepted, s; a Register or Update asking more gets
    /// 4.00 (a registration that never expires would be kept for good).
    pub max_lifetime: u64,
    /// Registrations in all; a new endpoint beyond it gets 5.03.
    pub max_registrations: usize,
    /// Registrations from one IP address (many devices may share a NAT); a
    /// new endpoint beyond it gets 4.29 (RFC 8516).
    pub max_per_ip: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_lifetime: 30 * 86_400,
            max_registrations: 100_000,
            max_per_ip: 1_024,
        }
    }
}

/// How registration locations (`/rd/<id>`) are made.
#[derive(Debug)]
enum Locations {
    /// 64 random bits: a peer cannot guess another's location.
    Random(wasmdm_proto::coap::rng::Rng),
    /// Counting up (reference vectors in tests).
    #[cfg(test)]
    Sequential(u64),
}

/// One registered client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Endpoint Client Name (`ep`).
    pub endpoint: String,
    /// Location segment after `rd/`.
    pub location: String,
    /// Lifetime in seconds.
    pub lifetime: u64,
    /// Enabler version (`lwm2m`).
    pub version: String,
    /// Binding letters (`b`), default `U`.
    pub binding: String,
    /// Queue mode (`Q`).
    pub queue_mode: bool,
    /// MSISDN (`sms`).
    pub sms: Option<String>,
    /// Source address, refreshed on every Update (NAT rebinding).
    pub peer: SocketAddr,
    /// Objects and instances announced.
    pub objects: ObjectList,
    /// Unix ms of the Register.
    pub registered_at: u64,
    /// Unix ms of the last Register or Update.
    pub updated_at: u64,
}

impl Registration {
    /// Unix ms when the registration expires without an Update.
    pub fn expires_at(&self) -> u64 {
        self.updated_at
            .saturating_add(self.lifetime.saturating_mul(1000))
    }
}

/// What a registration request changed.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    /// A new registration (`replaced` when the endpoint was already registered).
    Registered { endpoint: String, replaced: bool },
    /// An Update; `objects_changed` when a new object list came with it.
    Updated {
        endpoint: String,
        objects_changed: bool,
    },
    /// A De-register.
    Deregistered { endpoint: String },
    /// The lifetime elapsed without Update (reference §1, 1.0 §5.3).
    Expired { endpoint: String },
}

/// The registration table.
#[derive(Debug)]
pub struct Registry {
    by_endpoint: BTreeMap<String, Registration>,
    by_location: BTreeMap<String, String>,
    locations: Locations,
    limits: RegistryLimits,
    /// Registrations per source IP (kept with every insert, move and removal).
    per_ip: HashMap<IpAddr, usize>,
    /// The endpoint registered from each address, for requests a device
    /// sends on its own (LwM2M 1.1 Send): found without a scan of every
    /// registration.
    by_peer: HashMap<SocketAddr, String>,
}

impl Registry {
    /// An empty registry whose locations come from `seed` (random in
    /// production: getrandom).
    pub fn new(limits: RegistryLimits, seed: u64) -> Self {
        Registry {
            by_endpoint: BTreeMap::new(),
            by_location: BTreeMap::new(),
            locations: Locations::Random(wasmdm_proto::coap::rng::Rng::new(seed)),
            limits,
            per_ip: HashMap::new(),
            by_peer: HashMap::new(),
        }
    }

    /// Restores a persisted registration (server restart).
    pub fn restore(&mut self, reg: Registration) {
        #[cfg(test)]
        if let (Locations::Sequential(next), Ok(n)) =
            (&mut self.locations, u64::from_str_radix(&reg.location, 16))
        {
            *next = (*next).max(n.saturating_add(1));
        }
        self.by_location
            .insert(reg.location.clone(), reg.endpoint.clone());
        if let Some(old) = self.by_endpoint.remove(&reg.endpoint) {
            self.count(old.peer, &old.endpoint, -1);
        }
        self.count(reg.peer, &reg.endpoint, 1);
        self.by_endpoint.insert(reg.endpoint.clone(), reg);
    }

    /// Moves the per-IP count of `peer` by `delta`, and adds (`delta` > 0)
    /// or forgets `endpoint` as the one registered from `peer`.
    fn count(&mut self, peer: SocketAddr, endpoint: &str, delta: isize) {
        let n = self.per_ip.entry(peer.ip()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.per_ip.remove(&peer.ip());
        }
        if delta > 0 {
            self.by_peer.insert(peer, endpoint.to_string());
        } else if self.by_peer.get(&peer).is_some_and(|e| e == endpoint) {
            self.by_peer.remove(&peer);
        }
    }

    /// The endpoint registered from `peer` (the latest, should two share an
    /// address).
    pub fn endpoint_at(&self, peer: SocketAddr) -> Option<&str> {
        self.by_peer.get(&peer).map(String::as_str)
    }

    fn new_location(&mut self) -> String {
        loop {
            let location = match &mut self.locations {
                Locations::Random(rng) => format!("{:016x}", rng.next_u64()),
                #[cfg(test)]
                Locations::Sequential(next) => {
                    let l = format!("{next:x}");
                    *next = next.wrapping_add(1);
                    l
                }
            };
            if !self.by_location.contains_key(&location) {
                return location;
            }
        }
    }

    /// The registration of `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&Registration> {
        self.by_endpoint.get(endpoint)
    }

    /// All registrations by endpoint name.
    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.by_endpoint.values()
    }

    /// Number of registered endpoints.
    pub fn len(&self) -> usize {
        self.by_endpoint.len()
    }

    /// True when nobody is registered.
    pub fn is_empty(&self) -> bool {
        self.by_endpoint.is_empty()
    }

    /// True when `request` is addressed to the registration interface (`/rd...`).
    pub fn is_registration_request(request: &Packet) -> bool {
        msg::uri_path(request).is_some_and(|p| p.first().map(String::as_str) == Some("rd"))
    }

    /// Handles a request to `/rd...` from `peer`; returns the response (the
    /// message layer sets type and MID) and the change it made, if any.
    /// A refused request changes nothing.
    pub fn handle(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        request: &Packet,
    ) -> (Packet, Option<RegistryEvent>) {
        self.handle_authorized(now_ms, peer, request, &|_| true)
    }

    /// Like [`Registry::handle`], but a request on behalf of an endpoint
    /// `may_act_as` refuses (the peer's credentials belong to another, or
    /// NoSec is not allowed for it) gets 4.03 and changes nothing.
    pub fn handle_authorized(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        request: &Packet,
        may_act_as: &dyn Fn(&str) -> bool,
    ) -> (Packet, Option<RegistryEvent>) {
        match self.dispatch(now_ms, peer, request, may_act_as) {
            Ok((response, event)) => (response, event),
            Err(code) => (msg::response_to(request, code), None),
        }
    }

    fn dispatch(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        request: &Packet,
        may_act_as: &dyn Fn(&str) -> bool,
    ) -> Result<(Packet, Option<RegistryEvent>), Code> {
        let path = msg::uri_path(request).ok_or(Code::BAD_REQUEST)?;
        // Leshan (reference §1): registration messages must be confirmable.
        if msg::type_of(request) != MessageType::Confirmable {
            return Err(Code::BAD_REQUEST);
        }
        let method = match request.header.code {
            coap_lite::MessageClass::Request(m) => m,
            _ => return Err(Code::BAD_REQUEST),
        };
        // Core 1.1 §7.1 / Transport §5.2.8: a client registers under the
        // endpoint name its security credentials belong to.
        let authorize = |endpoint: &str| {
            if may_act_as(endpoint) {
                Ok(())
            } else {
                Err(Code::FORBIDDEN)
            }
        };
        match (method, path.as_slice()) {
            (RequestType::Post, [rd]) if rd == "rd" => {
                let endpoint = Query::parse(request)?.ep.ok_or(Code::BAD_REQUEST)?;
                authorize(&endpoint)?;
                self.register(now_ms, peer, request)
            }
            (RequestType::Post | RequestType::Delete, [rd, loc]) if rd == "rd" => {
                let endpoint = self.by_location.get(loc).ok_or(Code::NOT_FOUND)?;
                authorize(endpoint)?;
                if method == RequestType::Post {
                    self.update(now_ms, peer, request, loc)
                } else {
                    self.deregister(request, loc)
                }
            }
            (_, [rd, ..]) if rd == "rd" && path.len() <= 2 => Err(Code::METHOD_NOT_ALLOWED),
            _ => Err(Code::NOT_FOUND),
        }
    }

    // Core 1.1 §6.2.1 Register.
    fn register(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        request: &Packet,
    ) -> Result<(Packet, Option<RegistryEvent>), Code> {
        let q = Query::parse(request)?;
        let endpoint = q.ep.ok_or(Code::BAD_REQUEST)?;
        if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(Code::BAD_REQUEST);
        }
        // Reference §1: `lwm2m` missing -> 4.00, unsupported -> 4.12.
        let version = q.lwm2m.ok_or(Code::BAD_REQUEST)?;
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(Code::PRECONDITION_FAILED);
        }
        let objects = parse_objects(request)?.ok_or(Code::BAD_REQUEST)?;
        let lifetime = q.lt.unwrap_or(DEFAULT_LIFETIME);
        if lifetime > self.limits.max_lifetime {
            return Err(Code::BAD_REQUEST);
        }
        // Caps on new endpoints (a re-registration replaces its own entry).
        if !self.by_endpoint.contains_key(&endpoint) {
            if self.by_endpoint.len() >= self.limits.max_registrations {
                return Err(Code::SERVICE_UNAVAILABLE);
            }
            if self.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= self.limits.max_per_ip {
                return Err(Code::TOO_MANY_REQUESTS);
            }
        }
        let replaced = if let Some(old) = self.by_endpoint.remove(&endpoint) {
            self.by_location.remove(&old.location);
            self.count(old.peer, &old.endpoint, -1);
            true
        } else {
            false
        };
        let location = self.new_location();
        let reg = Registration {
            endpoint: endpoint.clone(),
            location: location.clone(),
            lifetime,
            version,
            binding: q.b.unwrap_or_else(|| "U".to_string()),
            queue_mode: q.queue,
            sms: q.sms,
            peer,
            objects,
            registered_at: now_ms,
            updated_at: now_ms,
        };
        self.by_location.insert(location.clone(), endpoint.clone());
        self.count(peer, &endpoint, 1);
        self.by_endpoint.insert(endpoint.clone(), reg);
        let mut response = msg::response_to(request, Code::CREATED);
        // Reference §1: one Location-Path option per segment (zephyr#7503).
        msg::add_strings(
            &mut response,
            CoapOption::LocationPath,
            &["rd", location.as_str()],
        );
        Ok((
            response,
            Some(RegistryEvent::Registered { endpoint, replaced }),
        ))
    }

    // Core 1.1 §6.2.2 Update.
    fn update(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        request: &Packet,
        loc: &str,
    ) -> Result<(Packet, Option<RegistryEvent>), Code> {
        let endpoint = self.by_location.get(loc).cloned().ok_or(Code::NOT_FOUND)?;
        let q = Query::parse(request)?;
        // Reference §1: `ep` must not appear in Update (Wakaama: 4.00).
        if q.ep.is_some() || q.lwm2m.is_some() {
            return Err(Code::BAD_REQUEST);
        }
        let objects = parse_objects(request)?;
        if q.lt.is_some_and(|lt| lt > self.limits.max_lifetime) {
            return Err(Code::BAD_REQUEST);
        }
        let old_peer = self.by_endpoint.get(&endpoint).ok_or(Code::NOT_FOUND)?.peer;
        if old_peer != peer {
            self.count(old_peer, &endpoint, -1);
            self.count(peer, &endpoint, 1);
        }
        let reg = self.by_endpoint.get_mut(&endpoint).ok_or(Code::NOT_FOUND)?;
        if let Some(lt) = q.lt {
            reg.lifetime = lt;
        }
        if let Some(b) = q.b {
            reg.binding = b;
        }
        if q.sms.is_some() {
            reg.sms = q.sms;
        }
        if q.queue {
            reg.queue_mode = true;
        }
        let objects_changed = objects.is_some();
        if let Some(objects) = objects {
            reg.objects = objects;
        }
        reg.peer = peer;
        reg.updated_at = now_ms;
        let response = msg::response_to(request, Code::CHANGED);
        Ok((
            response,
            Some(RegistryEvent::Updated {
                endpoint,
                objects_changed,
            }),
        ))
    }

    // Core 1.1 §6.2.3 De-register.
    fn deregister(
        &mut self,
        request: &Packet,
        loc: &str,
    ) -> Result<(Packet, Option<RegistryEvent>), Code> {
        let endpoint = self.by_location.remove(loc).ok_or(Code::NOT_FOUND)?;
        if let Some(old) = self.by_endpoint.remove(&endpoint) {
            self.count(old.peer, &old.endpoint, -1);
        }
        Ok((
            msg::response_to(request, Code::DELETED),
            Some(RegistryEvent::Deregistered { endpoint }),
        ))
    }

    /// Drops registrations whose lifetime elapsed at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<RegistryEvent> {
        let gone: Vec<String> = self
            .by_endpoint
            .values()
            .filter(|r| r.expires_at() <= now_ms)
            .map(|r| r.endpoint.clone())
            .collect();
        gone.into_iter()
            .filter_map(|ep| {
                let reg = self.by_endpoint.remove(&ep)?;
                self.by_location.remove(&reg.location);
                self.count(reg.peer, &reg.endpoint, -1);
                Some(RegistryEvent::Expired { endpoint: ep })
            })
            .collect()
    }

    /// Earliest expiry among registrations (Unix ms).
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_endpoint
            .values()
            .map(Registration::expires_at)
            .min()
    }
}

/// Register/Update query parameters (reference §1).
#[derive(Debug, Default)]
struct Query {
    ep: Option<String>,
    lt: Option<u64>,
    lwm2m: Option<String>,
    b: Option<String>,
    sms: Option<String>,
    queue: bool,
}

impl Query {
    fn parse(request: &Packet) -> Result<Query, Code> {
        let mut q = Query::default();
        for item in msg::uri_query(request).unwrap_or_default() {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item.as_str(), None),
            };
            let bare = value.is_none();
            let value = || value.map(str::to_string).ok_or(Code::BAD_REQUEST);
            match name {
                "ep" => q.ep = Some(value()?),
                // Empty or non-numeric `lt` -> 4.00 (Leshan).
                "lt" => q.lt = Some(value()?.parse().map_err(|_| Code::BAD_REQUEST)?),
                "lwm2m" => q.lwm2m = Some(value()?),
                "b" => q.b = Some(value()?),
                "sms" => q.sms = Some(value()?),
                // `Q` takes no value (Leshan answers 4.00 to `Q=...`).
                "Q" if bare => q.queue = true,
                "Q" => return Err(Code::BAD_REQUEST),
                _ => {} // unknown parameters are ignored
            }
        }
        Ok(q)
    }
}

/// Parses the optional object list; CF 40 or absent/0 (Wakaama also takes 0).
fn parse_objects(request: &Packet) -> Result<Option<ObjectList>, Code> {
    if request.payload.is_empty() {
        return Ok(None);
    }
    let cf = msg::get_uint(request, CoapOption::ContentFormat, 2).map_err(|_| Code::BAD_REQUEST)?;
    if !matches!(cf, None | Some(0) | Some(40)) {
        return Err(Code::BAD_REQUEST);
    }
    let links =
        wasmdm_proto::codec::link::parse(&request.payload).map_err(|_| Code::BAD_REQUEST)?;
    if links.len() > link::MAX_LINKS {
        return Err(Code::BAD_REQUEST);
    }
    Ok(Some(ObjectList::from_links(&links)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_bytes::hex;

    fn peer() -> SocketAddr {
        "127.0.0.1:5683".parse().unwrap()
    }
    /// Encodes the response as the message layer would for a CON request (piggy-backed ACK).
    fn ack_bytes(request: &Packet, mut response: Packet) -> Vec<u8> {
        response.header.set_type(MessageType::Acknowledgement);
        response.header.message_id = request.header.message_id;
        msg::encode(&response).unwrap()
    }

    const REGISTER: &str = "44 02 12 34 A1 B2 C3 D4 B2 72 64 11 28 38 65 70 3D 6E 6F 64 65 31 06 6C 74 3D 33 30 30 09 6C 77 6D 32 6D 3D 31
2E 31 03 62 3D 55 FF 3C 2F 3E 3B 72 74 3D 22 6F 6D 61 2E 6C 77 6D 32 6D 22 3B 63 74 3D 31 31 30 2C 3C 2F 31 2F
30 3E 2C 3C 2F 33 2F 30 3E 2C 3C 2F 33 33 30 33 3E 3B 76 65 72 3D 31 2E 31 2C 3C 2F 33 33 30 33 2F 30 3E";

    /// Registry whose next location is `5a3f`, as in the reference capture.
    fn registry() -> Registry {
        Registry {
            locations: Locations::Sequential(0x5a3f),
            ..Registry::new(RegistryLimits::default(), 1)
        }
    }

    #[test]
    fn a_peer_that_may_not_act_as_the_endpoint_gets_4_03_and_changes_nothing() {
        let mut reg = registry();
        let req = Packet::from_bytes(&hex(REGISTER)).unwrap();
        let only = |allowed: &'static str| move |ep: &str| ep == allowed;
        let (resp, ev) = reg.handle_authorized(1_000, peer(), &req, &only("node2"));
        assert_eq!(Code::of(&resp), Code::FORBIDDEN);
        assert!(ev.is_none() && reg.is_empty());
        let (resp, _) = reg.handle_authorized(1_000, peer(), &req, &only("node1"));
        assert_eq!(Code::of(&resp), Code::CREATED);
        // An Update or De-register of node1's location by a peer that may
        // not act as node1 is refused too.
        for method in [RequestType::Post, RequestType::Delete] {
            let mut other = Packet::new();
            other.header.code = coap_lite::MessageClass::Request(method);
            other.header.set_type(MessageType::Confirmable);
            msg::add_strings(&mut other, CoapOption::UriPath, &["rd", "5a3f"]);
            let (resp, ev) = reg.handle_authorized(2_000, peer(), &other, &only("node2"));
            assert_eq!(Code::of(&resp), Code::FORBIDDEN, "{method:?}");
            assert!(ev.is_none());
            assert_eq!(reg.get("node1").unwrap().updated_at, 1_000);
        }
    }

    #[test]
    fn register_update_deregister_reference_vectors() {
        let mut reg = registry();
        let req = Packet::from_bytes(&hex(REGISTER)).unwrap();
        let (resp, ev) = reg.handle(1_000, peer(), &req);
        assert_eq!(
            ack_bytes(&req, resp),
            hex("64 41 12 34 A1 B2 C3 D4 82 72 64 04 35 61 33 66")
        );
        assert_eq!(
            ev,
            Some(RegistryEvent::Registered {
                endpoint: "node1".into(),
                replaced: false
            })
        );
        let r = reg.get("node1").unwrap();
        assert_eq!(
            (r.lifetime, r.version.as_str(), r.binding.as_str()),
            (300, "1.1", "U")
        );
        assert_eq!(r.objects.content_formats, vec![110]);
        assert_eq!(r.expires_at(), 301_000);
        assert_eq!(reg.endpoint_at(peer()), Some("node1"));

        let upd = Packet::from_bytes(&hex(
            "44 02 12 35 A1 B2 C3 D5 B2 72 64 04 35 61 33 66 46 6C 74 3D 36 30 30",
        ))
        .unwrap();
        let new_peer: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let (resp, ev) = reg.handle(2_000, new_peer, &upd);
        assert_eq!(ack_bytes(&upd, resp), hex("64 44 12 35 A1 B2 C3 D5"));
        assert_eq!(
            ev,
            Some(RegistryEvent::Updated {
                endpoint: "node1".into(),
                objects_changed: false
            })
        );
        let r = reg.get("node1").unwrap();
        assert_eq!(
            (r.lifetime, r.peer, r.expires_at()),
            (600, new_peer, 602_000)
        );
        // The device moved: it is found at its new address only.
        assert_eq!(reg.endpoint_at(new_peer), Some("node1"));
        assert_eq!(reg.endpoint_at(peer()), None);

        let dereg =
            Packet::from_bytes(&hex("44 04 12 36 A1 B2 C3 D6 B2 72 64 04 35 61 33 66")).unwrap();
        let (resp, ev) = reg.handle(3_000, peer(), &dereg);
        assert_eq!(ack_bytes(&dereg, resp), hex("64 42 12 36 A1 B2 C3 D6"));
        assert_eq!(
            ev,
            Some(RegistryEvent::Deregistered {
                endpoint: "node1".into()
            })
        );
        assert!(reg.is_empty());
        assert_eq!(reg.endpoint_at(new_peer), None);

        // Reference §1: Update to an unknown location -> 4.04.
        let (resp, ev) = reg.handle(4_000, peer(), &upd);
        assert_eq!(ack_bytes(&upd, resp), hex("64 84 12 35 A1 B2 C3 D5"));
        assert_eq!(ev, None);
    }

    fn register_with(query: &[&str], payload: &[u8]) -> Packet {
        let mut p = msg::request(RequestType::Post, &["rd"]);
        p.set_token(vec![1]);
        msg::add_strings(&mut p, CoapOption::UriQuery, query);
        msg::set_uint(&mut p, CoapOption::ContentFormat, 40);
        p.payload = payload.to_vec();
        p
    }

    #[test]
    fn bad_registers_are_refused_without_state_change() {
        let mut reg = registry();
        let cases: &[(&[&str], &[u8], Code)] = &[
            (&["lt=60", "lwm2m=1.1"], b"</3/0>", Code::BAD_REQUEST), // no ep
            (&["ep=a", "lt=60"], b"</3/0>", Code::BAD_REQUEST),      // no lwm2m
            (&["ep=a", "lwm2m=2.0"], b"</3/0>", Code::PRECONDITION_FAILED),
            (&["ep=a", "lwm2m=1.1", "lt="], b"</3/0>", Code::BAD_REQUEST),
            (&["ep=a", "lwm2m=1.1", "Q=1"], b"</3/0>", Code::BAD_REQUEST),
            (&["ep=a", "lwm2m=1.1"], b"</3/0", Code::BAD_REQUEST), // malformed links
            (&["ep=a", "lwm2m=1.1"], b"", Code::BAD_REQUEST),      // no object list
            (&["ep=", "lwm2m=1.1"], b"</3/0>", Code::BAD_REQUEST),
        ];
        for (q, payload, code) in cases {
            let (resp, ev) = reg.handle(0, peer(), &register_with(q, payload));
            assert_eq!(Code::of(&resp), *code, "{q:?}");
            assert_eq!(ev, None);
        }
        assert!(reg.is_empty());
        // NON Register is refused (Leshan, reference §1).
        let mut non = register_with(&["ep=a", "lwm2m=1.1"], b"</3/0>");
        non.header.set_type(MessageType::NonConfirmable);
        assert_eq!(Code::of(&reg.handle(0, peer(), &non).0), Code::BAD_REQUEST);
        // Wrong method on /rd, unknown path.
        let get = msg::request(RequestType::Get, &["rd"]);
        assert_eq!(
            Code::of(&reg.handle(0, peer(), &get).0),
            Code::METHOD_NOT_ALLOWED
        );
        let other = msg::request(RequestType::Post, &["rd", "x", "y"]);
        assert_eq!(Code::of(&reg.handle(0, peer(), &other).0), Code::NOT_FOUND);
        assert!(reg.is_empty());
    }

    #[test]
    fn reregister_replaces_and_update_with_ep_is_refused() {
        let mut reg = registry();
        let (r1, _) = reg.handle(
            0,
            peer(),
            &register_with(&["ep=a", "lwm2m=1.1", "b=UQ"], b"</9/0>"),
        );
        let (r2, ev) = reg.handle(
            10,
            peer(),
            &register_with(&["ep=a", "lwm2m=1.1", "Q"], b"</9/0>,</9/1>"),
        );
        assert_eq!(
            ev,
            Some(RegistryEvent::Registered {
                endpoint: "a".into(),
                replaced: true
            })
        );
        assert_ne!(
            r1.get_option(CoapOption::LocationPath),
            r2.get_option(CoapOption::LocationPath)
        );
        assert_eq!(reg.len(), 1);
        let a = reg.get("a").unwrap();
        assert!(a.queue_mode);
        assert_eq!(a.lifetime, DEFAULT_LIFETIME);
        assert_eq!(a.objects.instances(9), &[0, 1]);
        let loc = a.location.clone();
        // The old location is gone.
        let mut old = msg::request(RequestType::Post, &["rd", "5a3f"]);
        old.set_token(vec![2]);
        assert_eq!(Code::of(&reg.handle(20, peer(), &old).0), Code::NOT_FOUND);
        let mut bad = msg::request(RequestType::Post, &["rd", loc.as_str()]);
        msg::add_strings(&mut bad, CoapOption::UriQuery, &["ep=a"]);
        assert_eq!(Code::of(&reg.handle(20, peer(), &bad).0), Code::BAD_REQUEST);
        assert_eq!(reg.get("a").unwrap().updated_at, 10);
        // Update with a new object list.
        let mut upd = msg::request(RequestType::Post, &["rd", loc.as_str()]);
        upd.payload = b"</9/0>".to_vec();
        let (_, ev) = reg.handle(30, peer(), &upd);
        assert_eq!(
            ev,
            Some(RegistryEvent::Updated {
                endpoint: "a".into(),
                objects_changed: true
            })
        );
        assert_eq!(reg.get("a").unwrap().objects.instances(9), &[0]);
    }

    #[test]
    fn lifetimes_expire() {
        let mut reg = registry();
        reg.handle(
            0,
            peer(),
            &register_with(&["ep=a", "lwm2m=1.1", "lt=10"], b"</3/0>"),
        );
        reg.handle(
            0,
            peer(),
            &register_with(&["ep=b", "lwm2m=1.1", "lt=20"], b"</3/0>"),
        );
        assert_eq!(reg.next_expiry(), Some(10_000));
        assert!(reg.expire(9_999).is_empty());
        assert_eq!(
            reg.expire(10_000),
            vec![RegistryEvent::Expired {
                endpoint: "a".into()
            }]
        );
        assert_eq!(reg.len(), 1);
        assert_eq!(
            reg.expire(30_000),
            vec![RegistryEvent::Expired {
                endpoint: "b".into()
            }]
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn lifetime_total_and_per_ip_caps_refuse_before_storing() {
        let limits = RegistryLimits {
            max_lifetime: 3_600,
            max_registrations: 3,
            max_per_ip: 2,
        };
        let mut reg = Registry::new(limits, 7);
        let ip = |i: u8, port: u16| SocketAddr::from(([10, 0, 0, i], port));
        let register =
            |ep: &str, lt: &str| register_with(&[&format!("ep={ep}"), lt, "lwm2m=1.1"], b"</3/0>");
        let code = |reg: &mut Registry, peer, req: &Packet| Code::of(&reg.handle(0, peer, req).0);
        // lt=4294967295 (what a hostile peer sends to stay forever): 4.00.
        assert_eq!(
            code(&mut reg, ip(1, 1), &register("a", "lt=4294967295")),
            Code::BAD_REQUEST
        );
        assert!(reg.is_empty());
        assert_eq!(
            code(&mut reg, ip(1, 1), &register("a", "lt=3600")),
            Code::CREATED
        );
        assert_eq!(
            code(&mut reg, ip(1, 2), &register("b", "lt=60")),
            Code::CREATED
        );
        // A third endpoint from the same IP: 4.29; re-registering one is fine.
        assert_eq!(
            code(&mut reg, ip(1, 3), &register("c", "lt=60")),
            Code::TOO_MANY_REQUESTS
        );
        assert_eq!(
            code(&mut reg, ip(1, 2), &register("b", "lt=60")),
            Code::CREATED
        );
        assert_eq!(
            code(&mut reg, ip(2, 1), &register("c", "lt=60")),
            Code::CREATED
        );
        // Total cap: 5.03.
        assert_eq!(
            code(&mut reg, ip(3, 1), &register("d", "lt=60")),
            Code::SERVICE_UNAVAILABLE
        );
        assert_eq!(reg.len(), 3);
        // An Update may not raise the lifetime past the cap either.
        let loc = reg.get("a").unwrap().location.clone();
        let mut update = Packet::new();
        update.header.code = coap_lite::MessageClass::Request(RequestType::Post);
        update.header.set_type(MessageType::Confirmable);
        msg::add_strings(&mut update, CoapOption::UriPath, &["rd", &loc]);
        msg::add_strings(&mut update, CoapOption::UriQuery, &["lt=86400"]);
        assert_eq!(code(&mut reg, ip(1, 1), &update), Code::BAD_REQUEST);
        assert_eq!(reg.get("a").unwrap().lifetime, 3_600);
        // Expiry frees the per-IP slots.
        reg.expire(u64::MAX);
        assert_eq!(
            code(&mut reg, ip(1, 3), &register("c", "lt=60")),
            Code::CREATED
        );
    }

    #[test]
    fn locations_are_random_and_distinct() {
        let mut reg = Registry::new(RegistryLimits::default(), 42);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let (resp, _) = reg.handle(
                0,
                peer(),
                &register_with(&[&format!("ep=n{i}"), "lwm2m=1.1"], b"</3/0>"),
            );
            let loc = resp
                .get_option(CoapOption::LocationPath)
                .unwrap()
                .iter()
                .nth(1)
                .unwrap()
                .clone();
            assert_eq!(loc.len(), 16, "64 bits in hex");
            assert!(seen.insert(loc));
        }
    }

    #[test]
    fn restore_keeps_locations_unique() {
        let mut reg = registry();
        let mut other = registry();
        other.handle(0, peer(), &register_with(&["ep=a", "lwm2m=1.1"], b"</3/0>"));
        reg.restore(other.get("a").unwrap().clone());
        let (resp, _) = reg.handle(0, peer(), &register_with(&["ep=b", "lwm2m=1.1"], b"</3/0>"));
        let locs: Vec<_> = resp
            .get_option(CoapOption::LocationPath)
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(locs[1], b"5a40".to_vec());
    }
}
