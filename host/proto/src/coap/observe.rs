//! Observe (RFC 7641) with LwM2M notification attributes (Core 1.1 §5.1.1,
//! reference §2-§3): per-path attribute storage with inheritance, and the
//! observation registry that decides when a notification is due.
//!
//! Notification type policy: notifications go out NON, except that an
//! observation gets a CON at least every 24 hours (RFC 7641 §4.5) so a
//! vanished observer is detected; a CON notification that times out, or an
//! RST to any notification, cancels the observation.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::endpoint::ExchangeId;
use crate::model::Path;

/// RFC 7641 §4.5: send a CON notification at least this often.
pub const CON_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Notification attributes attached at one path level.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Attributes {
    /// Minimum period between notifications, seconds.
    pub pmin: Option<u32>,
    /// Maximum period between notifications, seconds (0 = none).
    pub pmax: Option<u32>,
    /// Greater-than threshold.
    pub gt: Option<f64>,
    /// Less-than threshold.
    pub lt: Option<f64>,
    /// Step.
    pub st: Option<f64>,
}

impl Attributes {
    fn is_empty(&self) -> bool {
        *self == Attributes::default()
    }
    /// `other` overrides what it sets.
    fn overlay(self, other: Attributes) -> Attributes {
        Attributes {
            pmin: other.pmin.or(self.pmin),
            pmax: other.pmax.or(self.pmax),
            gt: other.gt.or(self.gt),
            lt: other.lt.or(self.lt),
            st: other.st.or(self.st),
        }
    }
    /// Appends `;pmin=..;..` for Discover (Core 1.1 §5.1.1 link attributes).
    pub fn link_params(&self) -> String {
        let mut s = String::new();
        if let Some(v) = self.pmin {
            s.push_str(&format!(";pmin={v}"));
        }
        if let Some(v) = self.pmax {
            s.push_str(&format!(";pmax={v}"));
        }
        if let Some(v) = self.gt {
            s.push_str(&format!(";gt={v}"));
        }
        if let Some(v) = self.lt {
            s.push_str(&format!(";lt={v}"));
        }
        if let Some(v) = self.st {
            s.push_str(&format!(";st={v}"));
        }
        s
    }
}

/// One attribute in a Write-Attributes request.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Change<T> {
    /// Not mentioned: keep.
    #[default]
    Keep,
    /// `?name=value`.
    Set(T),
    /// `?name` without value: unset at this level (Core 1.0.2 §8.2.5).
    Unset,
}

impl<T: Copy> Change<T> {
    fn apply(self, old: Option<T>) -> Option<T> {
        match self {
            Change::Keep => old,
            Change::Set(v) => Some(v),
            Change::Unset => None,
        }
    }
}

/// A parsed Write-Attributes query.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttrUpdate {
    /// pmin.
    pub pmin: Change<u32>,
    /// pmax.
    pub pmax: Change<u32>,
    /// gt.
    pub gt: Change<f64>,
    /// lt.
    pub lt: Change<f64>,
    /// st.
    pub st: Change<f64>,
}

impl AttrUpdate {
    fn touches_value_attrs(&self) -> bool {
        !matches!(
            (self.gt, self.lt, self.st),
            (Change::Keep, Change::Keep, Change::Keep)
        )
    }
}

/// Why Write-Attributes is refused; all map to 4.00.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttrError {
    /// An attribute name this client does not know.
    #[error("unknown attribute {0}")]
    Unknown(String),
    /// A value that does not parse.
    #[error("bad value for {0}")]
    BadValue(String),
    /// The merged attributes break a rule (pmin <= pmax, lt < gt, lt + 2 st < gt).
    #[error("invalid attribute combination: {0}")]
    Invalid(&'static str),
    /// gt/lt/st on something other than a numeric resource.
    #[error("gt/lt/st need a numeric resource")]
    NotNumeric,
}

fn parse_f64(name: &str, v: &str) -> Result<f64, AttrError> {
    // Reference §2: accept a leading '-' despite the 1.x grammar (OMA#563).
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| AttrError::BadValue(name.into()))
}

/// Parses Uri-Query entries of a Write-Attributes request.
pub fn parse_attr_query(queries: &[String]) -> Result<AttrUpdate, AttrError> {
    let mut u = AttrUpdate::default();
    for q in queries {
        let (name, value) = match q.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (q.as_str(), None),
        };
        match name {
            "pmin" | "pmax" => {
                let c = match value {
                    None => Change::Unset,
                    Some(v) => Change::Set(
                        v.parse::<u32>()
                            .map_err(|_| AttrError::BadValue(name.into()))?,
                    ),
                };
                if name == "pmin" {
                    u.pmin = c;
                } else {
                    u.pmax = c;
                }
            }
            "gt" | "lt" | "st" => {
                let c = match value {
                    None => Change::Unset,
                    Some(v) => Change::Set(parse_f64(name, v)?),
                };
                if name == "st" && matches!(c, Change::Set(s) if s < 0.0) {
                    return Err(AttrError::BadValue(name.into()));
                }
                match name {
                    "gt" => u.gt = c,
                    "lt" => u.lt = c,
                    _ => u.st = c,
                }
            }
            // LwM2M 1.1 evaluation periods: accepted, not used (values are
            // pushed by the driver, never sampled by this core).
            "epmin" | "epmax" => {}
            _ => return Err(AttrError::Unknown(name.into())),
        }
    }
    Ok(u)
}

/// Attributes per path level (object, instance, resource, resource instance).
#[derive(Debug, Clone, Default)]
pub struct AttributeStore {
    levels: BTreeMap<Path, Attributes>,
}

impl AttributeStore {
    /// Applies an update at `path`; on error nothing changes. `numeric` says
    /// whether `path` is a numeric resource (gt/lt/st allowed).
    pub fn apply(
        &mut self,
        path: Path,
        update: &AttrUpdate,
        numeric: bool,
    ) -> Result<(), AttrError> {
        if update.touches_value_attrs() && (path.depth() < 3 || !numeric) {
            return Err(AttrError::NotNumeric);
        }
        let old = self.levels.get(&path).copied().unwrap_or_default();
        let new = Attributes {
            pmin: update.pmin.apply(old.pmin),
            pmax: update.pmax.apply(old.pmax),
            gt: update.gt.apply(old.gt),
            lt: update.lt.apply(old.lt),
            st: update.st.apply(old.st),
        };
        // Validation rules, reference §2 [L:ATTR].
        if let (Some(a), Some(b)) = (new.pmin, new.pmax)
            && a > b
        {
            return Err(AttrError::Invalid("pmin > pmax"));
        }
        if let (Some(lt), Some(gt)) = (new.lt, new.gt) {
            if lt >= gt {
                return Err(AttrError::Invalid("lt >= gt"));
            }
            if let Some(st) = new.st
                && lt + 2.0 * st >= gt
            {
                return Err(AttrError::Invalid("lt + 2 st >= gt"));
            }
        }
        if new.is_empty() {
            self.levels.remove(&path);
        } else {
            self.levels.insert(path, new);
        }
        Ok(())
    }

    /// The attributes set at exactly this level.
    pub fn at(&self, path: Path) -> Attributes {
        self.levels.get(&path).copied().unwrap_or_default()
    }

    /// Effective attributes: resource instance over resource over instance
    /// over object over the server defaults (Core 1.1.1 §5.1.1).
    pub fn effective(&self, path: Path, defaults: Attributes) -> Attributes {
        let mut eff = defaults;
        for p in ancestors(path) {
            eff = eff.overlay(self.at(p));
        }
        eff
    }

    /// Forgets attributes at and below `path` (instance deleted).
    pub fn remove_under(&mut self, path: Path) {
        self.levels.retain(|p, _| !is_within(path, *p));
    }
}

/// `path` and its ancestors, object first.
fn ancestors(path: Path) -> Vec<Path> {
    let mut v = vec![Path::object(path.object)];
    if let Some(i) = path.instance {
        v.push(Path::instance(path.object, i));
        if let Some(r) = path.resource {
            v.push(Path::resource(path.object, i, r));
            if path.resource_instance.is_some() {
                v.push(path);
            }
        }
    }
    v
}

/// True when `inner` is `outer` or lies below it.
pub fn is_within(outer: Path, inner: Path) -> bool {
    let pairs = [
        (Some(outer.object), Some(inner.object)),
        (outer.instance, inner.instance),
        (outer.resource, inner.resource),
        (outer.resource_instance, inner.resource_instance),
    ];
    pairs.iter().all(|(o, i)| o.is_none() || o == i)
}

/// Key of an observation: the observer and its token (RFC 7641 §3.1).
pub type ObsKey = (SocketAddr, Vec<u8>);

/// One registered observation.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Observed path (the first one of a composite observation).
    pub path: Path,
    /// Every observed path: `[path]`, or the list of an Observe-Composite
    /// (LwM2M 1.1 Core §6.4.3), whose notifications carry all of them.
    pub paths: Vec<Path>,
    /// True for an Observe-Composite (FETCH); `accept` then holds its
    /// answer format.
    pub composite: bool,
    /// Content format the observer asked for (Accept), if any.
    pub accept: Option<u16>,
    last_sent: Instant,
    last_con: Instant,
    /// Per path (same order as `paths`): the numeric value the last
    /// notification carried (for `st`) and the last one seen (for `gt`/`lt`
    /// crossings); `None` where the path has no single numeric value.
    sent_values: Vec<Option<f64>>,
    seen_values: Vec<Option<f64>>,
    /// The observed paths whose change condition holds (each waits for its
    /// own pmin).
    pending: Vec<Path>,
    /// The exchange of the last notification (RST to it cancels).
    pub last_exchange: Option<ExchangeId>,
    /// The Block2 SZX the observer asked with (early negotiation in its
    /// Observe request, RFC 7959 §2.4/§2.6): larger notifications go out as
    /// block 0 at this size.
    pub block_szx: Option<u8>,
}

/// Observations one peer may hold (its server: every /9 and /14 resource a
/// campaign watches fits many times over).
pub const MAX_PER_PEER: usize = 256;
/// Observations in all.
pub const MAX_OBSERVATIONS: usize = 512;

/// An observation refused at a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveRefused;

/// The observation registry.
#[derive(Debug, Default)]
pub struct Registry {
    obs: HashMap<ObsKey, Observation>,
    seq: u32,
}

impl Registry {
    /// An empty registry; the first Observe value handed out is 2 (a peer
    /// drops a first answer whose Observe is 0, field notes).
    pub fn new() -> Self {
        Registry {
            obs: HashMap::new(),
            seq: 1,
        }
    }

    /// The next Observe sequence number (24 bits, RFC 7641 §3.4), never 0 or 1.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = if self.seq >= 0xFF_FFFF {
            2
        } else {
            self.seq.max(1) + 1
        };
        self.seq
    }

    /// Registers (or re-registers, same key) an observation; the first
    /// response is sent by the caller right away and counts as a notification.
    ///
    /// An observation of the same path by the same peer under another token
    /// is replaced (a server re-observing after losing its state must not
    /// double the notifications); those keys are returned. Beyond
    /// [`MAX_PER_PEER`] or [`MAX_OBSERVATIONS`] new observations are refused
    /// before anything is stored: the caller answers without Observe, which
    /// tells the peer it was not added (RFC 7641 §4.1).
    pub fn add(
        &mut self,
        now: Instant,
        key: ObsKey,
        path: Path,
        accept: Option<u16>,
        value: Option<f64>,
    ) -> Result<Vec<ObsKey>, ObserveRefused> {
        self.insert(now, key, vec![path], false, accept, vec![value])
    }

    /// Registers an Observe-Composite of `paths` (non-empty, capped by the
    /// caller) answered in `accept`, with each path's current numeric value
    /// (`values[k]` for `paths[k]`, for its gt/lt/st); it counts against the
    /// same caps as a plain observation and is refused the same way, before
    /// anything is stored. The same peer observing the same list under
    /// another token replaces the old one.
    pub fn add_composite(
        &mut self,
        now: Instant,
        key: ObsKey,
        paths: Vec<Path>,
        accept: u16,
        values: Vec<Option<f64>>,
    ) -> Result<Vec<ObsKey>, ObserveRefused> {
        if paths.is_empty() {
            return Err(ObserveRefused);
        }
        self.insert(now, key, paths, true, Some(accept), values)
    }

    fn insert(
        &mut self,
        now: Instant,
        key: ObsKey,
        paths: Vec<Path>,
        composite: bool,
        accept: Option<u16>,
        mut values: Vec<Option<f64>>,
    ) -> Result<Vec<ObsKey>, ObserveRefused> {
        values.resize(paths.len(), None);
        let Some(&path) = paths.first() else {
            return Err(ObserveRefused);
        };
        let replaced: Vec<ObsKey> = self
            .obs
            .iter()
            .filter(|(k, o)| {
                k.0 == key.0 && k.1 != key.1 && o.composite == composite && o.paths == paths
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !self.obs.contains_key(&key) && replaced.is_empty() {
            let from_peer = self.obs.keys().filter(|k| k.0 == key.0).count();
            if from_peer >= MAX_PER_PEER || self.obs.len() >= MAX_OBSERVATIONS {
                return Err(ObserveRefused);
            }
        }
        for k in &replaced {
            self.obs.remove(k);
        }
        self.obs.insert(
            key,
            Observation {
                path,
                paths,
                composite,
                accept,
                last_sent: now,
                last_con: now,
                sent_values: values.clone(),
                seen_values: values,
                pending: Vec::new(),
                last_exchange: None,
                block_szx: None,
            },
        );
        Ok(replaced)
    }

    /// Records the block size the observer asked for (see
    /// [`Observation::block_szx`]).
    pub fn set_block_szx(&mut self, key: &ObsKey, szx: Option<u8>) {
        if let Some(o) = self.obs.get_mut(key) {
            o.block_szx = szx;
        }
    }

    /// Cancels one observation.
    pub fn remove(&mut self, key: &ObsKey) -> bool {
        self.obs.remove(key).is_some()
    }

    /// Cancels the observation whose last notification was `id` (RST, CON timeout).
    pub fn remove_by_exchange(&mut self, id: ExchangeId) -> bool {
        let before = self.obs.len();
        self.obs.retain(|_, o| o.last_exchange != Some(id));
        before != self.obs.len()
    }

    /// Cancels everything a peer observes (re-registration, RFC 7641 §3.6 says
    /// a new registration session ends old observations; LwM2M §5.1.2).
    pub fn remove_peer(&mut self, peer: SocketAddr) {
        self.obs.retain(|(p, _), _| *p != peer);
    }

    /// Cancels every observation of a path in `object` (the object is gone);
    /// returns their keys, for the observers to be told.
    pub fn remove_object(&mut self, object: u16) -> Vec<ObsKey> {
        let gone: Vec<ObsKey> = self
            .obs
            .iter()
            .filter(|(_, o)| o.paths.iter().any(|p| p.object == object))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.obs.remove(k);
        }
        gone
    }

    /// Number of observations.
    pub fn len(&self) -> usize {
        self.obs.len()
    }

    /// True when nothing is observed.
    pub fn is_empty(&self) -> bool {
        self.obs.is_empty()
    }

    /// Looks an observation up.
    pub fn get(&self, key: &ObsKey) -> Option<&Observation> {
        self.obs.get(key)
    }

    /// Records that `changed` changed. `value_of` gives the current numeric
    /// value of a resource path (for gt/lt/st). An observation of a path
    /// containing `changed` (or contained in it) becomes pending when the
    /// change condition holds (reference §3).
    pub fn changed(
        &mut self,
        changed: Path,
        attrs: &AttributeStore,
        defaults: Attributes,
        value_of: &dyn Fn(Path) -> Option<f64>,
    ) {
        for o in self.obs.values_mut() {
            // Each path of a composite observation is judged on its own
            // attributes, as a plain observation of that path would be:
            // LwM2M 1.1 Core §6.4.3 (Observe-Composite) makes the server
            // "ensure that the Minimum and Maximum Period Attributes
            // attached to observed resources follow the rules" of §5.1.2
            // (quoted in zephyr#93315), i.e. the attributes of the observed
            // paths govern, and §5.1.2's notification rule (reference §3)
            // applies per path: [gt/lt/st condition of that path, if any,
            // AND its pmin] OR pmax. Only the attributes at or above an
            // observed path count (OMA#478): gt/lt/st exist on resources
            // and resource instances only.
            for (k, p) in o.paths.iter().enumerate() {
                if !(is_within(*p, changed) || is_within(changed, *p)) {
                    continue;
                }
                let eff = attrs.effective(*p, defaults);
                let value = if p.depth() >= 3 { value_of(*p) } else { None };
                let seen = o.seen_values.get(k).copied().flatten();
                let sent = o.sent_values.get(k).copied().flatten();
                let holds = match value {
                    Some(new) if eff.gt.is_some() || eff.lt.is_some() || eff.st.is_some() => {
                        // gt/lt: each crossing of the threshold (either way).
                        let crossed = |t: f64| seen.is_some_and(|old| (old > t) != (new > t));
                        let crossed_lt = |t: f64| seen.is_some_and(|old| (old < t) != (new < t));
                        eff.gt.is_some_and(crossed)
                            || eff.lt.is_some_and(crossed_lt)
                            // st: a change of at least st since the last notification.
                            || eff
                                .st
                                .is_some_and(|st| sent.is_none_or(|last| (new - last).abs() >= st))
                    }
                    _ => true,
                };
                if value.is_some()
                    && let Some(slot) = o.seen_values.get_mut(k)
                {
                    *slot = value;
                }
                if holds && !o.pending.contains(p) {
                    o.pending.push(*p);
                }
            }
        }
    }

    /// The earliest due time over the observed paths, each under its own
    /// effective attributes: a composite observation notifies when any path
    /// changed and its pmin passed, or at the shortest pmax (the reading
    /// Anjay and Zephyr follow, AVSystem/Anjay#69, zephyr#93315).
    fn due_of(o: &Observation, attrs: &AttributeStore, defaults: Attributes) -> Option<Instant> {
        o.paths
            .iter()
            .filter_map(|p| Self::due_at(o, *p, attrs.effective(*p, defaults)))
            .min()
    }

    fn due_at(o: &Observation, path: Path, eff: Attributes) -> Option<Instant> {
        let pmin = Duration::from_secs(eff.pmin.unwrap_or(0).into());
        let change = o.pending.contains(&path).then_some(o.last_sent + pmin);
        // pmax 0 or below pmin is ignored (Core 1.1, reference §3).
        let periodic = eff
            .pmax
            .filter(|p| *p > 0 && *p >= eff.pmin.unwrap_or(0))
            .map(|p| o.last_sent + Duration::from_secs(p.into()));
        match (change, periodic) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Observations whose notification is due at `now`:
    /// [(change condition AND pmin elapsed) OR pmax elapsed].
    pub fn due(&self, now: Instant, attrs: &AttributeStore, defaults: Attributes) -> Vec<ObsKey> {
        self.obs
            .iter()
            .filter(|(_, o)| Self::due_of(o, attrs, defaults).is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The earliest time a notification may become due.
    pub fn next_deadline(&self, attrs: &AttributeStore, defaults: Attributes) -> Option<Instant> {
        self.obs
            .values()
            .filter_map(|o| Self::due_of(o, attrs, defaults))
            .min()
    }

    /// True when pmax has elapsed for `key` (a notification is owed even if
    /// the value did not change).
    pub fn pmax_due(
        &self,
        key: &ObsKey,
        now: Instant,
        attrs: &AttributeStore,
        defaults: Attributes,
    ) -> bool {
        let Some(o) = self.obs.get(key) else {
            return false;
        };
        o.paths.iter().any(|path| {
            let eff = attrs.effective(*path, defaults);
            eff.pmax
                .filter(|p| *p > 0 && *p >= eff.pmin.unwrap_or(0))
                .is_some_and(|p| o.last_sent + Duration::from_secs(p.into()) <= now)
        })
    }

    /// Drops a pending change that turned out not to change the payload.
    pub fn clear_pending(&mut self, key: &ObsKey) {
        if let Some(o) = self.obs.get_mut(key) {
            o.pending.clear();
        }
    }

    /// True when the next notification for `key` must be CON (24 h rule).
    pub fn wants_con(&self, key: &ObsKey, now: Instant) -> bool {
        self.obs
            .get(key)
            .is_some_and(|o| now.saturating_duration_since(o.last_con) >= CON_INTERVAL)
    }

    /// Records a sent notification carrying `values` (per observed path,
    /// in order; `None` keeps what was known).
    pub fn sent(
        &mut self,
        key: &ObsKey,
        now: Instant,
        values: &[Option<f64>],
        con: bool,
        exchange: ExchangeId,
    ) {
        if let Some(o) = self.obs.get_mut(key) {
            o.last_sent = now;
            o.pending.clear();
            o.last_exchange = Some(exchange);
            if con {
                o.last_con = now;
            }
            for (k, value) in values.iter().enumerate() {
                if value.is_some() {
                    if let Some(slot) = o.sent_values.get_mut(k) {
                        *slot = *value;
                    }
                    if let Some(slot) = o.seen_values.get_mut(k) {
                        *slot = *value;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn attributes_parse_validate_inherit_and_unset() {
        let mut st = AttributeStore::default();
        let r = Path::resource(3, 0, 9);
        st.apply(
            Path::object(3),
            &parse_attr_query(&q(&["pmin=100", "pmax=200"])).unwrap(),
            false,
        )
        .unwrap();
        st.apply(
            r,
            &parse_attr_query(&q(&["pmin=10", "gt=50", "lt=20", "st=1"])).unwrap(),
            true,
        )
        .unwrap();
        let eff = st.effective(r, Attributes::default());
        assert_eq!(
            (eff.pmin, eff.pmax, eff.gt),
            (Some(10), Some(200), Some(50.0))
        );
        assert_eq!(st.at(r).link_params(), ";pmin=10;gt=50;lt=20;st=1");
        // value-less attribute unsets at that level: the object's pmin shows through
        st.apply(r, &parse_attr_query(&q(&["pmin"])).unwrap(), true)
            .unwrap();
        assert_eq!(st.effective(r, Attributes::default()).pmin, Some(100));
        // invalid combinations leave state untouched
        let before = st.at(r);
        assert_eq!(
            st.apply(r, &parse_attr_query(&q(&["lt=60"])).unwrap(), true),
            Err(AttrError::Invalid("lt >= gt"))
        );
        assert_eq!(
            st.apply(r, &parse_attr_query(&q(&["st=20"])).unwrap(), true),
            Err(AttrError::Invalid("lt + 2 st >= gt"))
        );
        assert_eq!(
            st.apply(
                Path::object(3),
                &parse_attr_query(&q(&["pmin=300"])).unwrap(),
                false
            ),
            Err(AttrError::Invalid("pmin > pmax"))
        );
        assert_eq!(st.at(r), before);
        assert_eq!(
            st.apply(
                Path::instance(3, 0),
                &parse_attr_query(&q(&["gt=1"])).unwrap(),
                false
            ),
            Err(AttrError::NotNumeric)
        );
        assert!(matches!(
            parse_attr_query(&q(&["foo=1"])),
            Err(AttrError::Unknown(_))
        ));
        assert!(matches!(
            parse_attr_query(&q(&["pmin=-1"])),
            Err(AttrError::BadValue(_))
        ));
        assert_eq!(
            parse_attr_query(&q(&["lt=-5"])).unwrap().lt,
            Change::Set(-5.0)
        );
    }

    #[test]
    fn pmin_pmax_and_change_conditions() {
        let peer: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        let key = (peer, vec![1]);
        let r = Path::resource(3, 0, 9);
        let mut st = AttributeStore::default();
        st.apply(
            r,
            &parse_attr_query(&q(&["pmin=10", "pmax=60", "gt=50"])).unwrap(),
            true,
        )
        .unwrap();
        let mut reg = Registry::new();
        assert_eq!(reg.next_seq(), 2);
        let t0 = Instant::now();
        reg.add(t0, key.clone(), r, None, Some(40.0)).unwrap();
        let d = Attributes::default();
        assert_eq!(
            reg.next_deadline(&st, d),
            Some(t0 + Duration::from_secs(60))
        );
        // 45: below gt, not crossing -> no notification before pmax
        reg.changed(r, &st, d, &|_| Some(45.0));
        assert!(reg.due(t0 + Duration::from_secs(59), &st, d).is_empty());
        // 55 crosses gt=50 at t=2 -> due at pmin (10 s)
        reg.changed(r, &st, d, &|_| Some(55.0));
        assert!(reg.due(t0 + Duration::from_secs(9), &st, d).is_empty());
        assert_eq!(
            reg.due(t0 + Duration::from_secs(10), &st, d),
            vec![key.clone()]
        );
        reg.sent(&key, t0 + Duration::from_secs(10), &[Some(55.0)], false, 7);
        // pmax since last notification
        assert_eq!(
            reg.next_deadline(&st, d),
            Some(t0 + Duration::from_secs(70))
        );
        // st: change >= st since the last notification
        st.apply(r, &parse_attr_query(&q(&["gt", "st=5"])).unwrap(), true)
            .unwrap();
        reg.changed(r, &st, d, &|_| Some(58.0));
        assert!(reg.due(t0 + Duration::from_secs(30), &st, d).is_empty());
        reg.changed(r, &st, d, &|_| Some(60.0));
        assert_eq!(reg.due(t0 + Duration::from_secs(30), &st, d).len(), 1);
        // RST to the last notification cancels
        assert!(reg.remove_by_exchange(7));
        assert!(reg.is_empty());
    }

    #[test]
    fn instance_observation_sees_resource_change_and_con_every_day() {
        let peer: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        let key = (peer, vec![2]);
        let mut reg = Registry::new();
        let st = AttributeStore::default();
        let t0 = Instant::now();
        reg.add(t0, key.clone(), Path::instance(9, 0), None, None)
            .unwrap();
        reg.changed(Path::resource(9, 1, 7), &st, Attributes::default(), &|_| {
            None
        });
        assert!(reg.due(t0, &st, Attributes::default()).is_empty());
        reg.changed(Path::resource(9, 0, 7), &st, Attributes::default(), &|_| {
            None
        });
        assert_eq!(reg.due(t0, &st, Attributes::default()), vec![key.clone()]);
        assert!(!reg.wants_con(&key, t0 + Duration::from_secs(3600)));
        assert!(reg.wants_con(&key, t0 + CON_INTERVAL));
    }

    #[test]
    fn observations_are_capped_per_peer_and_in_all_before_storing() {
        let t0 = Instant::now();
        let mut reg = Registry::new();
        let peer = |i: u8| -> SocketAddr { ([192, 0, 2, i], 5683).into() };
        let path = |i: usize| Path::resource(9, (i % 1000) as u16, (i / 1000) as u16);
        for i in 0..MAX_PER_PEER {
            reg.add(
                t0,
                (peer(1), vec![i as u8, (i >> 8) as u8]),
                path(i),
                None,
                None,
            )
            .unwrap();
        }
        let over = (peer(1), b"over".to_vec());
        assert_eq!(
            reg.add(t0, over.clone(), path(MAX_PER_PEER), None, None),
            Err(ObserveRefused)
        );
        assert!(reg.get(&over).is_none());
        // Re-observing a held path (new token) still works at the cap.
        assert_eq!(
            reg.add(t0, over.clone(), path(0), None, None)
                .map(|r| r.len()),
            Ok(1)
        );
        // Other peers fill up to the total cap.
        let mut i = 0usize;
        while reg.len() < MAX_OBSERVATIONS {
            reg.add(
                t0,
                (
                    peer(2 + (i / MAX_PER_PEER) as u8),
                    vec![i as u8, (i >> 8) as u8],
                ),
                path(i),
                None,
                None,
            )
            .unwrap();
            i += 1;
        }
        assert_eq!(
            reg.add(t0, (peer(9), vec![1]), path(1), None, None),
            Err(ObserveRefused)
        );
        assert_eq!(reg.len(), MAX_OBSERVATIONS);
    }

    /// Observe-Composite timing, instants in and due observations out:
    /// /3303/0/5700 (gt=25, pmin=10) and /42/0/1 (st=5, pmax=60). A change
    /// of a path counts only when that path's condition holds, and waits
    /// for that path's pmin; the shortest pmax sends anyway.
    #[test]
    fn composite_paths_keep_their_own_change_conditions_and_periods() {
        let peer: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        let key = (peer, vec![3]);
        let (a, b) = (Path::resource(3303, 0, 5700), Path::resource(42, 0, 1));
        let mut st = AttributeStore::default();
        st.apply(
            a,
            &parse_attr_query(&q(&["gt=25", "pmin=10"])).unwrap(),
            true,
        )
        .unwrap();
        st.apply(
            b,
            &parse_attr_query(&q(&["st=5", "pmax=60"])).unwrap(),
            true,
        )
        .unwrap();
        let d = Attributes::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut reg = Registry::new();
        reg.add_composite(
            at(0),
            key.clone(),
            vec![a, b],
            112,
            vec![Some(20.0), Some(10.0)],
        )
        .unwrap();
        assert_eq!(reg.next_deadline(&st, d), Some(at(60)));
        // a: 22 does not cross gt; b: 14 is 4 from the 10 last sent.
        reg.changed(a, &st, d, &|_| Some(22.0));
        reg.changed(b, &st, d, &|_| Some(14.0));
        assert_eq!(reg.next_deadline(&st, d), Some(at(60)));
        assert!(reg.due(at(59), &st, d).is_empty());
        // a crosses gt at 3 s: due at a's pmin, 10 s after the last send.
        reg.changed(a, &st, d, &|_| Some(26.0));
        assert_eq!(reg.next_deadline(&st, d), Some(at(10)));
        assert!(reg.due(at(9), &st, d).is_empty());
        assert_eq!(reg.due(at(10), &st, d), vec![key.clone()]);
        reg.sent(&key, at(10), &[Some(26.0), Some(14.0)], false, 1);
        assert_eq!(
            reg.next_deadline(&st, d),
            Some(at(70)),
            "pmax from the send"
        );
        // b: 18 is 4 from the 14 sent; 19 is 5 = st, and b has no pmin.
        reg.changed(b, &st, d, &|_| Some(18.0));
        assert!(reg.due(at(12), &st, d).is_empty());
        reg.changed(b, &st, d, &|_| Some(19.0));
        assert_eq!(reg.due(at(12), &st, d), vec![key.clone()]);
        reg.sent(&key, at(12), &[Some(26.0), Some(19.0)], false, 2);
        // a: 30 stays above gt (no crossing); 24 crosses down at 13 s and
        // waits for pmin: 12 + 10.
        reg.changed(a, &st, d, &|_| Some(30.0));
        assert_eq!(reg.next_deadline(&st, d), Some(at(72)));
        reg.changed(a, &st, d, &|_| Some(24.0));
        assert!(reg.due(at(21), &st, d).is_empty());
        assert_eq!(reg.due(at(22), &st, d), vec![key.clone()]);
        // Without a condition any change of a path counts (an instance path).
        let k2 = (peer, vec![4]);
        reg.add_composite(
            at(0),
            k2.clone(),
            vec![Path::instance(42, 0)],
            112,
            vec![None],
        )
        .unwrap();
        reg.changed(b, &st, d, &|_| Some(19.5));
        assert!(reg.due(at(0), &st, d).contains(&k2));
    }
}
