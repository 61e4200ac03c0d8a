//! Observations the server holds (RFC 7641, LwM2M Core §6.4): which device
//! and path each belongs to, and ordering of notifications (§3.4).

use std::collections::HashMap;

use wasmdm_proto::model::Path;

/// One observation the server asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Device endpoint name.
    pub endpoint: String,
    /// Observed path.
    pub path: Path,
    /// Token of the observe request (needed to cancel it).
    pub token: Vec<u8>,
    /// The paths of an Observe-Composite (Core 1.1 §6.4.3), empty for a
    /// single-path observation; `path` is then the first of them.
    pub composite: Vec<Path>,
    /// Last accepted Observe sequence number and when (ms) it arrived.
    last: Option<(u32, u64)>,
}

/// Observations keyed by an opaque id (the message layer's exchange id).
#[derive(Debug, Default)]
pub struct Observations {
    by_id: HashMap<u64, Observation>,
}

/// RFC 7641 §4.4: after 128 s a sequence number is fresh regardless.
const FRESHNESS_MS: u64 = 128_000;

impl Observations {
    /// Records a new observation.
    pub fn insert(&mut self, id: u64, endpoint: String, path: Path, token: Vec<u8>) {
        self.by_id.insert(
            id,
            Observation {
                endpoint,
                path,
                token,
                composite: Vec::new(),
                last: None,
            },
        );
    }

    /// Records a new Observe-Composite of `paths` (not empty).
    pub fn insert_composite(
        &mut self,
        id: u64,
        endpoint: String,
        paths: Vec<Path>,
        token: Vec<u8>,
    ) {
        let path = paths.first().copied().unwrap_or(Path::object(0));
        self.by_id.insert(
            id,
            Observation {
                endpoint,
                path,
                token,
                composite: paths,
                last: None,
            },
        );
    }

    /// The Observe-Composite of exactly `paths` (in any order) on `endpoint`.
    pub fn find_composite(&self, endpoint: &str, paths: &[Path]) -> Option<u64> {
        let mut want = paths.to_vec();
        want.sort();
        self.by_id
            .iter()
            .find(|(_, o)| {
                let mut have = o.composite.clone();
                have.sort();
                o.endpoint == endpoint && !have.is_empty() && have == want
            })
            .map(|(id, _)| *id)
    }

    /// Removes and returns the observation `id`.
    pub fn remove(&mut self, id: u64) -> Option<Observation> {
        self.by_id.remove(&id)
    }

    /// Removes all observations of `endpoint` (de-registration), returning their ids.
    pub fn remove_endpoint(&mut self, endpoint: &str) -> Vec<u64> {
        let ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, o)| o.endpoint == endpoint)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.by_id.remove(id);
        }
        ids
    }

    /// The observation `id`.
    pub fn get(&self, id: u64) -> Option<&Observation> {
        self.by_id.get(&id)
    }

    /// The observation of `path` on `endpoint`, if any.
    pub fn find(&self, endpoint: &str, path: Path) -> Option<u64> {
        self.by_id
            .iter()
            .find(|(_, o)| o.endpoint == endpoint && o.path == path && o.composite.is_empty())
            .map(|(id, _)| *id)
    }

    /// Number of observations.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Accepts a notification with Observe value `seq` for `id` at `now_ms`
    /// unless it is older than the last one (RFC 7641 §3.4); returns the
    /// observation when it must be processed.
    pub fn accept(&mut self, id: u64, seq: Option<u32>, now_ms: u64) -> Option<&Observation> {
        let o = self.by_id.get_mut(&id)?;
        if let (Some(v2), Some((v1, t1))) = (seq, o.last) {
            // §3.4: V1 < V2 in 24-bit serial arithmetic, or more than 128 s passed.
            let newer = (v1 < v2 && v2 - v1 < (1 << 23)) || (v1 > v2 && v1 - v2 > (1 << 23));
            if !newer && now_ms.saturating_sub(t1) <= FRESHNESS_MS {
                return None;
            }
        }
        if let Some(v) = seq {
            o.last = Some((v, now_ms));
        }
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_notifications_are_dropped() {
        let mut obs = Observations::default();
        obs.insert(7, "dev".into(), Path::resource(9, 0, 7), vec![1, 2]);
        assert_eq!(
            obs.accept(7, Some(5), 0).map(|o| o.path),
            Some(Path::resource(9, 0, 7))
        );
        assert!(obs.accept(7, Some(4), 1_000).is_none(), "older sequence");
        assert!(
            obs.accept(7, Some(5), 1_000).is_none(),
            "duplicate sequence"
        );
        assert!(obs.accept(7, Some(6), 2_000).is_some());
        // Wrap-around of the 24-bit counter counts as newer.
        obs.insert(8, "dev".into(), Path::resource(9, 0, 9), vec![3]);
        assert!(obs.accept(8, Some(0xFF_FFFF), 0).is_some());
        assert!(obs.accept(8, Some(1), 10).is_some());
        // After 128 s anything is fresh.
        assert!(obs.accept(8, Some(0), 200_000).is_some());
        assert!(obs.accept(99, Some(1), 0).is_none(), "unknown observation");
        assert_eq!(obs.find("dev", Path::resource(9, 0, 9)), Some(8));
        let both = vec![Path::resource(9, 0, 9), Path::resource(3, 0, 0)];
        obs.insert_composite(9, "dev".into(), both, vec![4]);
        let reversed = [Path::resource(3, 0, 0), Path::resource(9, 0, 9)];
        assert_eq!(obs.find_composite("dev", &reversed), Some(9));
        assert_eq!(obs.find_composite("dev", &reversed[..1]), None);
        assert_eq!(
            obs.find("dev", Path::resource(9, 0, 9)),
            Some(8),
            "not the composite"
        );
        let mut ids = obs.remove_endpoint("dev");
        ids.sort();
        assert_eq!(ids, vec![7, 8, 9]);
        assert!(obs.is_empty());
    }
}
