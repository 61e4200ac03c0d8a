//! Bodies of block-wise reads kept for their follow-up blocks (RFC 7959 §2.4),
//! and encoded Reads of objects that can tell when they change.
//!
//! A Read whose representation spans several Block2 blocks (e.g. GET /9 with
//! 50 packages) is read and encoded once, when its first block is asked for;
//! the following blocks are sliced from the same body instead of reading and
//! encoding the whole object again per block. So a reader gets one consistent
//! representation, as the ETag of every block says.
//!
//! The same holds for a Read-Composite (FETCH, RFC 8132 §2.3): its
//! follow-ups are FETCHes with Block2, with the same path list or, as
//! aiocoap sends them, with no payload at all.
//!
//! An entry is dropped as soon as the engine learns that anything changed
//! ([`BodyCache::clear`]: a change marked for Observe, or any request other
//! than GET and FETCH), after [`BODY_TTL`], or when more than [`MAX_BODIES`]
//! are kept.
//! Only follow-ups (Block2 number > 0, no Observe option) are answered from
//! here: every new read starts from the objects.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet};

/// How long a body stays servable after it was read.
pub const BODY_TTL: Duration = Duration::from_secs(30);
/// How many bodies are kept at most (one per reader and target).
pub const MAX_BODIES: usize = 16;

/// What a follow-up must ask for to be served a kept body: same peer, same
/// method, target and query, same Accept, and the same request payload (a
/// FETCH's path list, by its hash) or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyKey {
    peer: SocketAddr,
    method: u8,
    path: Vec<Vec<u8>>,
    query: Vec<Vec<u8>>,
    accept: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl BodyKey {
    /// The key of a request from `peer`.
    pub fn of(peer: SocketAddr, request: &Packet) -> BodyKey {
        let list = |o| {
            request
                .get_option(o)
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_default()
        };
        BodyKey {
            peer,
            method: crate::coap::msg::Code::of(request).0,
            path: list(CoapOption::UriPath),
            query: list(CoapOption::UriQuery),
            accept: request.get_first_option(CoapOption::Accept).cloned(),
            payload: (!request.payload.is_empty()).then(|| super::etag(&request.payload)),
        }
    }

    /// True when a follow-up with key `asked` may be served this body: a
    /// follow-up without payload matches any (RFC 7959 §2.4 leaves it to
    /// the body's ETag to tell a changed representation).
    fn serves(&self, asked: &BodyKey) -> bool {
        self.peer == asked.peer
            && self.method == asked.method
            && self.path == asked.path
            && self.query == asked.query
            && self.accept == asked.accept
            && (asked.payload.is_none() || self.payload == asked.payload)
    }
}

#[derive(Debug)]
struct Kept {
    key: BodyKey,
    /// The full response (code, Content-Format, whole payload), no token.
    response: Packet,
    expires: Instant,
}

/// The kept bodies, oldest first.
#[derive(Debug, Default)]
pub struct BodyCache {
    kept: VecDeque<Kept>,
}

impl BodyCache {
    /// Keeps the full `response` (before slicing) read for `key`.
    pub fn store(&mut self, now: Instant, key: BodyKey, response: &Packet) {
        self.kept.retain(|k| k.key != key && k.expires > now);
        if self.kept.len() >= MAX_BODIES {
            self.kept.pop_front();
        }
        let mut response = response.clone();
        response.set_token(Vec::new());
        self.kept.push_back(Kept {
            key,
            response,
            expires: now + BODY_TTL,
        });
    }

    /// The kept response for a follow-up block of `request`, with the
    /// request's token; `None` for anything but a follow-up or when nothing
    /// is kept.
    pub fn follow_up(&self, now: Instant, peer: SocketAddr, request: &Packet) -> Option<Packet> {
        if !is_follow_up(request) || self.kept.is_empty() {
            return None;
        }
        let key = BodyKey::of(peer, request);
        let kept = self
            .kept
            .iter()
            .find(|k| k.key.serves(&key) && k.expires > now)?;
        let mut response = kept.response.clone();
        response.set_token(request.get_token().to_vec());
        Some(response)
    }

    /// Forgets every body (something may have changed).
    pub fn clear(&mut self) {
        self.kept.clear();
    }

    /// How many bodies are kept (tests).
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// How many encoded Reads [`ReadCache`] keeps.
pub const MAX_READS: usize = 8;

/// Encoded Reads of objects that report an [`crate::object::Object::generation`]:
/// a Read of the same target in the same format, while the object's
/// generation is unchanged, gets the same response without reading and
/// encoding the object again (GET /9 with 50 packages is most of the cost of
/// a read).
#[derive(Debug, Default)]
pub struct ReadCache {
    kept: VecDeque<KeptRead>,
}

#[derive(Debug)]
struct KeptRead {
    path: crate::model::Path,
    accept: Option<u16>,
    generation: u64,
    /// The full response (code, Content-Format, payload), no token.
    response: Packet,
}

impl ReadCache {
    /// The response kept for a Read of `path` with `accept` at `generation`,
    /// with `token` set.
    pub fn get(
        &self,
        path: crate::model::Path,
        accept: Option<u16>,
        generation: u64,
        token: &[u8],
    ) -> Option<Packet> {
        let kept = self
            .kept
            .iter()
            .find(|k| k.path == path && k.accept == accept && k.generation == generation)?;
        let mut response = kept.response.clone();
        response.set_token(token.to_vec());
        Some(response)
    }

    /// Keeps a successful Read's response.
    pub fn store(
        &mut self,
        path: crate::model::Path,
        accept: Option<u16>,
        generation: u64,
        response: &Packet,
    ) {
        self.kept
            .retain(|k| !(k.path == path && k.accept == accept));
        if self.kept.len() >= MAX_READS {
            self.kept.pop_front();
        }
        let mut response = response.clone();
        response.set_token(Vec::new());
        self.kept.push_back(KeptRead {
            path,
            accept,
            generation,
            response,
        });
    }

    /// Forgets every Read (an object was added or removed: a new object
    /// under an old id starts its generations afresh).
    pub fn clear(&mut self) {
        self.kept.clear();
    }

    /// How many Reads are kept (tests).
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// A GET for a block after the first, outside an observation.
fn is_follow_up(request: &Packet) -> bool {
    request.get_first_option(CoapOption::Observe).is_none()
        && matches!(
            crate::coap::block::BlockOpt::read(request, CoapOption::Block2),
            Ok(Some(b)) if b.num > 0
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::block::BlockOpt;
    use crate::coap::msg::{self, Code};
    use coap_lite::RequestType;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn get(path: &[&str], block: Option<u32>, token: &[u8]) -> Packet {
        let mut p = msg::request(RequestType::Get, path);
        p.set_token(token.to_vec());
        if let Some(num) = block {
            BlockOpt {
                num,
                more: false,
                szx: 6,
            }
            .write(&mut p, CoapOption::Block2);
        }
        p
    }

    fn body(tag: u8) -> Packet {
        let mut p = msg::response_to(&get(&["9"], None, b"t0"), Code::CONTENT);
        p.payload = vec![tag; 2400];
        p
    }

    #[test]
    fn follow_ups_get_the_kept_body_with_their_own_token() {
        let t = Instant::now();
        let mut c = BodyCache::default();
        let first = get(&["9"], None, b"t0");
        c.store(t, BodyKey::of(peer(1), &first), &body(1));
        let r = c
            .follow_up(t, peer(1), &get(&["9"], Some(1), b"t1"))
            .expect("kept");
        assert_eq!(r.get_token(), b"t1");
        assert_eq!(r.payload, vec![1; 2400]);
        assert_eq!(Code::of(&r), Code::CONTENT);
    }

    #[test]
    fn first_blocks_other_targets_peers_and_observe_are_not_served() {
        let t = Instant::now();
        let mut c = BodyCache::default();
        c.store(t, BodyKey::of(peer(1), &get(&["9"], None, b"a")), &body(1));
        // A new read (no Block2, or block 0) always reads the objects.
        assert!(c.follow_up(t, peer(1), &get(&["9"], None, b"b")).is_none());
        assert!(
            c.follow_up(t, peer(1), &get(&["9"], Some(0), b"b"))
                .is_none()
        );
        // Another peer, another path, another Accept.
        assert!(
            c.follow_up(t, peer(2), &get(&["9"], Some(1), b"b"))
                .is_none()
        );
        assert!(
            c.follow_up(t, peer(1), &get(&["9", "0"], Some(1), b"b"))
                .is_none()
        );
        let mut accept = get(&["9"], Some(1), b"b");
        msg::set_uint(&mut accept, CoapOption::Accept, 11542);
        assert!(c.follow_up(t, peer(1), &accept).is_none());
        // A follow-up inside an observation is left to the objects.
        let mut obs = get(&["9"], Some(1), b"b");
        msg::set_uint(&mut obs, CoapOption::Observe, 0);
        assert!(c.follow_up(t, peer(1), &obs).is_none());
    }

    #[test]
    fn reads_are_kept_per_target_format_and_generation() {
        use crate::model::Path;
        let mut c = ReadCache::default();
        let p9 = Path::object(9);
        c.store(p9, None, 1, &body(1));
        assert_eq!(c.get(p9, None, 1, b"k").unwrap().get_token(), b"k");
        assert_eq!(c.get(p9, None, 1, b"k").unwrap().payload, vec![1; 2400]);
        assert!(c.get(p9, None, 2, b"k").is_none(), "the object changed");
        assert!(c.get(p9, Some(110), 1, b"k").is_none(), "another format");
        assert!(c.get(Path::instance(9, 0), None, 1, b"k").is_none());
        c.store(p9, None, 2, &body(2));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(p9, None, 2, b"k").unwrap().payload, vec![2; 2400]);
        for i in 0..(MAX_READS as u16 + 3) {
            c.store(Path::instance(9, i), None, 2, &body(3));
        }
        assert_eq!(c.len(), MAX_READS);
        assert!(!c.is_empty());
    }

    #[test]
    fn entries_expire_are_replaced_bounded_and_cleared() {
        let t = Instant::now();
        let mut c = BodyCache::default();
        let key = BodyKey::of(peer(1), &get(&["9"], None, b"a"));
        c.store(t, key.clone(), &body(1));
        c.store(t, key.clone(), &body(2));
        assert_eq!(c.len(), 1);
        let next = get(&["9"], Some(1), b"b");
        assert_eq!(c.follow_up(t, peer(1), &next).unwrap().payload[0], 2);
        assert!(c.follow_up(t + BODY_TTL, peer(1), &next).is_none());
        for port in 0..(MAX_BODIES as u16 + 4) {
            c.store(t, BodyKey::of(peer(port), &next), &body(3));
        }
        assert_eq!(c.len(), MAX_BODIES);
        c.clear();
        assert!(c.is_empty());
        assert!(c.follow_up(t, peer(5), &next).is_none());
    }
}
