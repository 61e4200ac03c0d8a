//! The operational credential an endpoint had before a bootstrap session
//! replaced it, kept until the session ends. The new credential must be in
//! the security store before it is written to the device (so the device can
//! register right after Finish), but a device commits what it was written
//! only at a successful Finish (Core 1.1 §5.2.7.6): a session that fails,
//! times out or is cut off leaves the device with its previous account, so
//! the server puts the previous credential back. Durable, so a server
//! killed mid-session restores it when it starts again.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::security::{Credential, SecurityEntry};
use crate::store::{Store, StoreError};

/// Saved credentials by endpoint (JSON [`Saved`]; holds keys: never listed by the API).
pub const BOOTSTRAP_PREVIOUS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("bootstrap_previous");

/// What the endpoint had: a credential, or none.
#[derive(Serialize, Deserialize)]
struct Saved {
    credential: Option<Credential>,
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

fn corrupt(key: &str) -> StoreError {
    StoreError::Corrupt {
        table: "bootstrap_previous".into(),
        key: key.into(),
        // serde's text could quote key material.
        reason: "undecodable saved credential".into(),
    }
}

impl Store {
    /// Saves `endpoint`'s credential as it is now; an earlier saved one (of
    /// a session never ended) is kept: it is the one the device may have.
    pub fn save_previous_credential(&self, endpoint: &str) -> Result<(), StoreError> {
        let credential = self.security(endpoint)?.map(|e| e.credential);
        let bytes = serde_json::to_vec(&Saved { credential }).map_err(|_| corrupt(endpoint))?;
        let tx = db_err!(self.db.begin_write())?;
        {
            let mut t = db_err!(tx.open_table(BOOTSTRAP_PREVIOUS))?;
            if db_err!(t.get(endpoint))?.is_none() {
                db_err!(t.insert(endpoint, bytes.as_slice()))?;
            }
        }
        db_err!(tx.commit())
    }

    /// Forgets the saved credential (the session succeeded).
    pub fn forget_previous_credential(&self, endpoint: &str) -> Result<(), StoreError> {
        self.delete(BOOTSTRAP_PREVIOUS, endpoint).map(|_| ())
    }

    /// Puts the saved credential back (none saved: nothing changes) and
    /// forgets it; true if one was restored.
    pub fn restore_previous_credential(&self, endpoint: &str) -> Result<bool, StoreError> {
        let saved = {
            let tx = db_err!(self.db.begin_read())?;
            let t = db_err!(tx.open_table(BOOTSTRAP_PREVIOUS))?;
            match db_err!(t.get(endpoint))? {
                Some(v) => {
                    serde_json::from_slice::<Saved>(v.value()).map_err(|_| corrupt(endpoint))?
                }
                None => return Ok(false),
            }
        };
        match saved.credential {
            Some(credential) => {
                let entry = SecurityEntry {
                    endpoint: endpoint.to_string(),
                    credential,
                };
                if let Err(e) = self.put_security(&entry) {
                    // E.g. its identity was given to another endpoint since.
                    tracing::warn!(
                        "bootstrap: previous credential of {endpoint} not restored: {e}"
                    );
                }
            }
            None => {
                self.remove_security(endpoint)?;
            }
        }
        self.forget_previous_credential(endpoint)?;
        Ok(true)
    }

    /// Restores every saved credential (sessions a stopped server cut off).
    pub fn restore_all_previous_credentials(&self) -> Result<usize, StoreError> {
        let endpoints: Vec<String> = {
            let tx = db_err!(self.db.begin_read())?;
            let t = db_err!(tx.open_table(BOOTSTRAP_PREVIOUS))?;
            let mut v = Vec::new();
            for item in db_err!(t.iter())? {
                let (k, _) = db_err!(item)?;
                v.push(k.value().to_string());
            }
            v
        };
        let mut n = 0;
        for ep in endpoints {
            n += usize::from(self.restore_previous_credential(&ep)?);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(key: u8) -> Credential {
        Credential::Psk {
            identity: "dev".into(),
            key: vec![key; 16],
        }
    }

    #[test]
    fn save_restore_forget() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let put = |c: Credential| {
            s.put_security(&SecurityEntry {
                endpoint: "dev".into(),
                credential: c,
            })
            .unwrap()
        };
        let now = || s.security("dev").unwrap().map(|e| e.credential);
        // None before: a failed session removes the new one.
        s.save_previous_credential("dev").unwrap();
        put(psk(1));
        assert!(s.restore_previous_credential("dev").unwrap());
        assert_eq!(now(), None);
        // Some before, two sessions cut off in a row: the first saved wins.
        put(psk(1));
        s.save_previous_credential("dev").unwrap();
        put(psk(2));
        s.save_previous_credential("dev").unwrap();
        put(psk(3));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.restore_all_previous_credentials().unwrap(), 1);
        assert_eq!(s.security("dev").unwrap().unwrap().credential, psk(1));
        assert!(!s.restore_previous_credential("dev").unwrap());
        // A success keeps the new one.
        s.save_previous_credential("dev").unwrap();
        s.put_security(&SecurityEntry {
            endpoint: "dev".into(),
            credential: psk(4),
        })
        .unwrap();
        s.forget_previous_credential("dev").unwrap();
        assert!(!s.restore_previous_credential("dev").unwrap());
        assert_eq!(s.security("dev").unwrap().unwrap().credential, psk(4));
    }
}
