//! Bootstrap sessions as the store keeps them: the last few per endpoint,
//! keyed `<endpoint> <started_ms, 20 digits>` so one endpoint's sessions are
//! one key range in time order (an endpoint name has no spaces).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::session::{SessionRecord, SessionStatus};
use crate::store::{Store, StoreError};

/// Sessions by `<endpoint> <started_ms:020>` (JSON [`SessionRecord`]).
pub const BOOTSTRAP_SESSIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("bootstrap_sessions");

/// Most sessions one listing returns.
pub const MAX_LISTED: usize = 1_000;

fn key(r: &SessionRecord) -> String {
    format!("{} {:020}", r.endpoint, r.started_ms)
}

/// The key range of `endpoint`'s sessions (`' '` < `'!'`).
fn range(endpoint: &str) -> (String, String) {
    (format!("{endpoint} "), format!("{endpoint}!"))
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

fn decode(k: &str, v: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        table: "bootstrap_sessions".into(),
        key: k.into(),
        reason: e.to_string(),
    })
}

impl Store {
    /// Writes session records in one transaction, keeping the newest `keep`
    /// per endpoint.
    pub fn put_bootstrap_sessions(
        &self,
        records: &[SessionRecord],
        keep: usize,
    ) -> Result<(), StoreError> {
        self.end_bootstrap_sessions(records, keep, &[])
    }

    /// Like [`Store::put_bootstrap_sessions`], also forgetting the saved
    /// previous credentials of `succeeded` endpoints (rollback.rs), all in
    /// one transaction: one sync per turn of the driver, however many
    /// sessions ended in it.
    pub fn end_bootstrap_sessions(
        &self,
        records: &[SessionRecord],
        keep: usize,
        succeeded: &[String],
    ) -> Result<(), StoreError> {
        if records.is_empty() && succeeded.is_empty() {
            return Ok(());
        }
        let tx = db_err!(self.db.begin_write())?;
        {
            let mut saved = db_err!(tx.open_table(super::rollback::BOOTSTRAP_PREVIOUS))?;
            for ep in succeeded {
                db_err!(saved.remove(ep.as_str()))?;
            }
        }
        {
            let mut t = db_err!(tx.open_table(BOOTSTRAP_SESSIONS))?;
            let mut endpoints = std::collections::BTreeSet::new();
            for r in records {
                let bytes = serde_json::to_vec(r).map_err(|e| StoreError::Corrupt {
                    table: "bootstrap_sessions".into(),
                    key: key(r),
                    reason: e.to_string(),
                })?;
                db_err!(t.insert(key(r).as_str(), bytes.as_slice()))?;
                endpoints.insert(r.endpoint.clone());
            }
            for ep in endpoints {
                let (lo, hi) = range(&ep);
                let keys: Vec<String> = db_err!(t.range(lo.as_str()..hi.as_str()))?
                    .filter_map(Result::ok)
                    .map(|(k, _)| k.value().to_string())
                    .collect();
                let excess = keys.len().saturating_sub(keep.max(1));
                for k in keys.iter().take(excess) {
                    db_err!(t.remove(k.as_str()))?;
                }
            }
        }
        db_err!(tx.commit())
    }

    /// `endpoint`'s sessions oldest first; with `None`, every endpoint's in
    /// (endpoint, time) order. At most [`MAX_LISTED`]: the last ones of
    /// that order (for one endpoint, the newest).
    pub fn bootstrap_sessions(
        &self,
        endpoint: Option<&str>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(BOOTSTRAP_SESSIONS))?;
        let mut out = std::collections::VecDeque::new();
        let mut push = |k: &str, v: &[u8]| -> Result<(), StoreError> {
            out.push_back(decode(k, v)?);
            if out.len() > MAX_LISTED {
                out.pop_front();
            }
            Ok(())
        };
        match endpoint {
            Some(ep) => {
                let (lo, hi) = range(ep);
                for item in db_err!(t.range(lo.as_str()..hi.as_str()))? {
                    let (k, v) = db_err!(item)?;
                    push(k.value(), v.value())?;
                }
            }
            None => {
                for item in db_err!(t.iter())? {
                    let (k, v) = db_err!(item)?;
                    push(k.value(), v.value())?;
                }
            }
        }
        Ok(out.into())
    }

    /// Marks sessions left `running` by a server that stopped as interrupted.
    pub fn interrupt_bootstrap_sessions(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut stale = Vec::new();
        for mut r in self.bootstrap_sessions(None)? {
            if r.status == SessionStatus::Running {
                r.status = SessionStatus::Interrupted;
                r.error = Some("the server stopped during the session".into());
                r.ended_ms = Some(now_ms);
                stale.push(r);
            }
        }
        self.put_bootstrap_sessions(&stale, usize::MAX)?;
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ep: &str, t: u64, status: SessionStatus) -> SessionRecord {
        SessionRecord {
            id: format!("{ep}@{t}"),
            endpoint: ep.into(),
            peer: "p".into(),
            security: "psk".into(),
            identity: None,
            started_ms: t,
            ended_ms: None,
            status,
            steps: vec![],
            finish_code: None,
            error: None,
            rollover: None,
        }
    }

    #[test]
    fn keeps_the_newest_per_endpoint_and_interrupts_running() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut rs: Vec<_> = (1..=5)
            .map(|t| rec("a", t, SessionStatus::Succeeded))
            .collect();
        rs.push(rec("a-b", 1, SessionStatus::Running));
        s.put_bootstrap_sessions(&rs, 3).unwrap();
        let a: Vec<u64> = s
            .bootstrap_sessions(Some("a"))
            .unwrap()
            .iter()
            .map(|r| r.started_ms)
            .collect();
        assert_eq!(a, [3, 4, 5]);
        assert_eq!(s.bootstrap_sessions(None).unwrap().len(), 4);
        assert_eq!(s.interrupt_bootstrap_sessions(9).unwrap(), 1);
        let ab = s.bootstrap_sessions(Some("a-b")).unwrap();
        assert_eq!(ab[0].status, SessionStatus::Interrupted);
    }
}
