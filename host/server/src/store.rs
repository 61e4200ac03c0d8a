//! Durable state in an embedded redb database: devices, groups, software
//! file metadata and campaigns, each table holding JSON documents by key.
//! A campaign is stored as its header (the campaign without jobs) plus one
//! document per device job, so a step of one device rewrites that job only.
//! Software file contents live next to it, content-addressed by sha256
//! (written to a temp file, fsynced, renamed: never changed in place).

use std::fs;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::campaign::{Campaign, DeviceJob};
use crate::core::registry::Registration;

/// Devices by endpoint name.
pub const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Groups by name.
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// Software file metadata by sha256 hex.
pub const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
/// Campaigns (tasks) by id: the header; jobs are in [`CAMPAIGN_JOBS`]
/// (records written before that split carry their jobs inline).
pub const CAMPAIGNS: TableDefinition<&str, &[u8]> = TableDefinition::new("campaigns");
/// Device jobs of campaigns by `<campaign id>/<job index, 8 digits>`.
pub const CAMPAIGN_JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("campaign_jobs");

fn job_key(id: &str, index: usize) -> String {
    format!("{id}/{index:08}")
}

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A stored document does not decode (corruption or version skew).
    #[error("corrupt record {key} in {table}: {reason}")]
    Corrupt {
        /// Table name.
        table: String,
        /// Record key.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// File system error on the data directory.
    #[error("file store: {0}")]
    Io(#[from] std::io::Error),
    /// The OS gave no randomness (for a download capability).
    #[error("{0}")]
    Random(String),
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

/// A device as the server remembers it, registered or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Endpoint name.
    pub endpoint: String,
    /// The current registration, `None` once de-registered or expired.
    pub registration: Option<Registration>,
    /// Labels used by label-based groups.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Unix ms of the last message seen.
    pub last_seen: u64,
    /// What its engine accepts (/26500, read at registration; issue 13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<crate::precompile::DeviceEngine>,
}

/// A named set of devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Explicit members.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Devices carrying any of these labels are members too.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl Group {
    /// True when `device` belongs to the group.
    pub fn contains(&self, device: &DeviceRecord) -> bool {
        self.endpoints.contains(&device.endpoint)
            || device.labels.iter().any(|l| self.labels.contains(l))
    }
}

/// An uploaded software file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareFile {
    /// Lower-case hex sha256 of the content: its identity.
    pub sha256: String,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Unix ms of the upload.
    pub uploaded_at: u64,
    /// Unix ms after which the file may be purged; `None` keeps it forever.
    pub retain_until: Option<u64>,
    /// Download capability: 128 random bits, hex. Devices cannot send the
    /// admin token, so the download path `/fw/<sha256>/<capability>` is the
    /// credential. `None` only in records written before capabilities
    /// existed; [`Store::open`] gives those one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
}

impl SoftwareFile {
    /// The path devices download this file from (`/fw/<sha256>/<capability>`).
    pub fn download_path(&self) -> Option<String> {
        self.capability
            .as_ref()
            .map(|c| format!("/fw/{}/{c}", self.sha256))
    }
}

/// A fresh download capability (128 random bits, hex).
pub fn new_capability() -> Result<String, StoreError> {
    crate::auth::random_hex(16).map_err(|e| StoreError::Random(e.to_string()))
}

/// Documents to write together: the driver collects the writes of one turn
/// of its loop (every datagram that was waiting) and commits them before the
/// turn's replies and requests go out, so durability costs one sync per turn
/// rather than one per event, and nothing is reported before it is stored.
#[derive(Default)]
pub struct Batch {
    writes: Vec<(Table, String, Vec<u8>)>,
}

/// One of the document tables above.
pub type Table = TableDefinition<'static, &'static str, &'static [u8]>;

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.writes.iter().map(|(t, k, _)| format!("{t}/{k}")))
            .finish()
    }
}

/// A document as stored (JSON); a failure names the table and key.
fn encode<T: Serialize>(table: &str, key: &str, doc: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(doc).map_err(|e| StoreError::Corrupt {
        table: table.to_string(),
        key: key.to_string(),
        reason: e.to_string(),
    })
}

impl Batch {
    /// Adds one document (a later write of the same key wins).
    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: &str,
        doc: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(&table.to_string(), key, doc)?;
        self.writes.push((table, key.to_string(), bytes));
        Ok(())
    }

    /// Adds a campaign's header and its jobs at `jobs` (every job when `None`).
    pub fn put_campaign(&mut self, c: &Campaign, jobs: Option<&[usize]>) -> Result<(), StoreError> {
        self.put(CAMPAIGNS, &c.id, &c.header())?;
        match jobs {
            Some(indices) => {
                for &i in indices {
                    if let Some(job) = c.jobs.get(i) {
                        self.put(CAMPAIGN_JOBS, &job_key(&c.id, i), job)?;
                    }
                }
            }
            None => {
                for (i, job) in c.jobs.iter().enumerate() {
                    self.put(CAMPAIGN_JOBS, &job_key(&c.id, i), job)?;
                }
            }
        }
        Ok(())
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Number of documents added.
    pub fn len(&self) -> usize {
        self.writes.len()
    }
}

/// The database plus the file directory.
pub struct Store {
    pub(crate) db: Database,
    files_dir: PathBuf,
    /// Variants of files with precompiled code (`precompile::cache`).
    precompiled_dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("files_dir", &self.files_dir)
            .finish()
    }
}

impl Store {
    /// Opens or creates the store in `dir` (`server.redb` and `files/`).
    pub fn open(dir: &FsPath) -> Result<Store, StoreError> {
        fs::create_dir_all(dir.join("files"))?;
        let db = db_err!(Database::create(dir.join("server.redb")))?;
        // Create the tables so read transactions never miss them.
        let tx = db_err!(db.begin_write())?;
        for t in [
            DEVICES,
            GROUPS,
            FILES,
            CAMPAIGNS,
            CAMPAIGN_JOBS,
            crate::security::SECURITY,
        ] {
            db_err!(tx.open_table(t))?;
        }
        db_err!(tx.open_table(crate::security::PSK_IDENTITIES))?;
        crate::bootstrap::create_tables(&tx)?;
        db_err!(tx.commit())?;
        let store = Store {
            db,
            files_dir: dir.join("files"),
            precompiled_dir: Store::precompiled_dir(dir),
        };
        store.give_files_capabilities()?;
        Ok(store)
    }

    /// Gives every software file stored without a download capability one
    /// (records from before capabilities existed).
    fn give_files_capabilities(&self) -> Result<(), StoreError> {
        for mut f in self.list::<SoftwareFile>(FILES)? {
            if f.capability.is_none() {
                f.capability = Some(new_capability()?);
                self.put(FILES, &f.sha256.clone(), &f)?;
            }
        }
        Ok(())
    }

    /// The download capability of file `sha256` (`None`: no such file);
    /// a record without one gets one now.
    pub fn file_capability(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        let Some(mut f) = self.get::<SoftwareFile>(FILES, sha256)? else {
            return Ok(None);
        };
        if let Some(c) = f.capability {
            return Ok(Some(c));
        }
        let c = new_capability()?;
        f.capability = Some(c.clone());
        self.put(FILES, sha256, &f)?;
        Ok(Some(c))
    }

    /// True when `capability` is the download capability of stored file
    /// `sha256` (compared in constant time) and its content is there.
    pub fn download_allowed(&self, sha256: &str, capability: &str) -> Result<bool, StoreError> {
        let Some(f) = self.get::<SoftwareFile>(FILES, sha256)? else {
            return Ok(false);
        };
        let ok = f
            .capability
            .is_some_and(|c| crate::auth::secret_eq(&c, capability));
        Ok(ok && self.blob_path(sha256).is_some())
    }

    /// Writes one document.
    pub fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        doc: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(&table.to_string(), key, doc)?;
        let tx = db_err!(self.db.begin_write())?;
        {
            let mut t = db_err!(tx.open_table(table))?;
            db_err!(t.insert(key, bytes.as_slice()))?;
        }
        db_err!(tx.commit())
    }

    /// Reads one document.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(table))?;
        let Some(v) = db_err!(t.get(key))? else {
            return Ok(None);
        };
        decode(table, key, v.value()).map(Some)
    }

    /// All documents of a table in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(table))?;
        let mut out = Vec::new();
        for item in db_err!(t.iter())? {
            let (k, v) = db_err!(item)?;
            out.push(decode(table, k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Deletes one document; true if it existed.
    pub fn delete(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<bool, StoreError> {
        let tx = db_err!(self.db.begin_write())?;
        let existed = {
            let mut t = db_err!(tx.open_table(table))?;
            db_err!(t.remove(key))?.is_some()
        };
        db_err!(tx.commit())?;
        Ok(existed)
    }

    /// Writes a campaign's header and its jobs at `jobs` (every job when
    /// `None`) in one transaction.
    pub fn put_campaign(&self, c: &Campaign, jobs: Option<&[usize]>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.put_campaign(c, jobs)?;
        self.commit(b)
    }

    /// Commits every write of `batch` in one transaction (one sync to disk).
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.writes.is_empty() {
            return Ok(());
        }
        let tx = db_err!(self.db.begin_write())?;
        for (table, key, bytes) in &batch.writes {
            let mut t = db_err!(tx.open_table(*table))?;
            db_err!(t.insert(key.as_str(), bytes.as_slice()))?;
        }
        db_err!(tx.commit())
    }

    /// Reads a campaign with its jobs.
    pub fn get_campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        let Some(mut c) = self.read_campaign(id)? else {
            return Ok(None);
        };
        // Campaigns created before download capabilities: their pull URIs need one.
        if c.spec.file_capability.is_none()
            && let Some(sha) = &c.spec.file
        {
            c.spec.file_capability = self.file_capability(sha)?;
        }
        Ok(Some(c))
    }

    fn read_campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(CAMPAIGNS))?;
        let Some(v) = db_err!(t.get(id))? else {
            return Ok(None);
        };
        let mut c: Campaign = decode(CAMPAIGNS, id, v.value())?;
        let tj = db_err!(tx.open_table(CAMPAIGN_JOBS))?;
        let (lo, hi) = (format!("{id}/"), format!("{id}0"));
        let mut jobs = Vec::new();
        for item in db_err!(tj.range(lo.as_str()..hi.as_str()))? {
            let (k, v) = db_err!(item)?;
            jobs.push(decode::<DeviceJob>(CAMPAIGN_JOBS, k.value(), v.value())?);
        }
        if !jobs.is_empty() {
            c.jobs = jobs;
        }
        Ok(Some(c))
    }

    /// Every campaign with its jobs, in id order.
    pub fn list_campaigns(&self) -> Result<Vec<Campaign>, StoreError> {
        let ids: Vec<String> = self
            .list::<Campaign>(CAMPAIGNS)?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.get_campaign(&id)?);
        }
        Ok(out)
    }

    /// Stores file content; returns its sha256 hex. Idempotent.
    pub fn write_blob(&self, content: &[u8]) -> Result<String, StoreError> {
        let sha = hex::encode(Sha256::digest(content));
        let dest = self.files_dir.join(&sha);
        if !dest.exists() {
            let tmp = self.files_dir.join(format!(".{sha}.tmp"));
            let mut f = fs::File::create(&tmp)?;
            f.write_all(content)?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)?;
        }
        Ok(sha)
    }

    /// A fresh temp file path in the file directory, for a blob being received.
    pub fn blob_temp_path(&self) -> Result<PathBuf, StoreError> {
        let name = crate::auth::random_hex(8).map_err(|e| StoreError::Random(e.to_string()))?;
        Ok(self.files_dir.join(format!(".upload-{name}.tmp")))
    }

    /// Makes the complete, fsynced temp file `tmp` the blob `sha256` (the
    /// digest of its content): renamed into place, or dropped if that
    /// content is stored already.
    pub fn keep_blob(&self, tmp: &FsPath, sha256: &str) -> Result<(), StoreError> {
        let dest = self.files_dir.join(sha256);
        if dest.exists() {
            fs::remove_file(tmp)?;
        } else {
            fs::rename(tmp, &dest)?;
            fs::File::open(&self.files_dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Path of a stored blob; `None` for a malformed or unknown digest.
    pub fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        let well_formed = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        let p = self.files_dir.join(sha256);
        (well_formed && p.is_file()).then_some(p)
    }

    /// Reads a stored blob.
    pub fn read_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.blob_path(sha256) {
            Some(p) => Ok(Some(fs::read(p)?)),
            None => Ok(None),
        }
    }

    /// Removes a blob (file deletion or retention expiry), with its
    /// precompiled variants.
    pub fn remove_blob(&self, sha256: &str) -> Result<(), StoreError> {
        crate::precompile::cache::remove_file(&self.precompiled_dir, sha256)?;
        if let Some(p) = self.blob_path(sha256) {
            fs::remove_file(p)?;
        }
        Ok(())
    }

    /// Where precompiled variants of files live under data dir `dir`.
    pub fn precompiled_dir(dir: &FsPath) -> PathBuf {
        dir.join("precompiled")
    }

    /// The cached variant of file `sha256` for engine hash `engine`, with
    /// its own sha256 (for the ETag).
    pub fn variant(&self, sha256: &str, engine: &str) -> Option<(PathBuf, String)> {
        let path = crate::precompile::cache::variant_path(&self.precompiled_dir, sha256, engine)?;
        let sha = crate::precompile::cache::variant_sha(&self.precompiled_dir, sha256, engine)?;
        Some((path, sha))
    }
}

fn decode<T: DeserializeOwned>(
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.to_string(),
        key: key.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_blobs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let g = Group {
            name: "edge".into(),
            endpoints: vec!["a".into()],
            labels: vec!["lab".into()],
        };
        let sha;
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(GROUPS, "edge", &g).unwrap();
            sha = s.write_blob(b"hello").unwrap();
            assert_eq!(
                sha,
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            );
            assert_eq!(s.write_blob(b"hello").unwrap(), sha);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get::<Group>(GROUPS, "edge").unwrap(), Some(g.clone()));
        assert_eq!(s.list::<Group>(GROUPS).unwrap(), vec![g]);
        assert_eq!(s.read_blob(&sha).unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(s.delete(GROUPS, "edge").unwrap());
        assert!(!s.delete(GROUPS, "edge").unwrap());
        assert_eq!(s.get::<Group>(GROUPS, "edge").unwrap(), None);
        // Path traversal and malformed digests find nothing.
        assert!(s.blob_path("../server.redb").is_none());
        assert!(s.blob_path(&sha.to_uppercase()).is_none());
        s.remove_blob(&sha).unwrap();
        assert!(s.read_blob(&sha).unwrap().is_none());
    }

    #[test]
    fn campaign_jobs_are_stored_apart_and_updated_one_by_one() {
        use crate::campaign::{CampaignSpec, JobStatus};
        let dir = tempfile::tempdir().unwrap();
        let spec: CampaignSpec =
            serde_json::from_str(r#"{"op": "upgrade", "package": "app", "file": "ab"}"#).unwrap();
        // Not in key order, to check the job order survives.
        let eps: Vec<String> = ["z", "a", "m"].iter().map(|s| s.to_string()).collect();
        let mut c = Campaign::new("c1".into(), None, spec.clone(), eps, 5);
        let other = Campaign::new("c10".into(), None, spec, vec!["x".into()], 6);
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_campaign(&c, None).unwrap();
            s.put_campaign(&other, None).unwrap();
            // The header holds no jobs.
            let h: Campaign = s.get(CAMPAIGNS, "c1").unwrap().unwrap();
            assert!(h.jobs.is_empty());
            // A change of job 1 written alone; job 2's change is not written.
            c.jobs[1].status = JobStatus::Done;
            c.jobs[2].status = JobStatus::Failed;
            s.put_campaign(&c, Some(&[1])).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let back = s.get_campaign("c1").unwrap().unwrap();
        let order: Vec<&str> = back.jobs.iter().map(|j| j.endpoint.as_str()).collect();
        assert_eq!(order, ["z", "a", "m"]);
        let status: Vec<JobStatus> = back.jobs.iter().map(|j| j.status).collect();
        assert_eq!(
            status,
            [JobStatus::Pending, JobStatus::Done, JobStatus::Pending]
        );
        assert_eq!(s.get_campaign("c10").unwrap().unwrap().jobs.len(), 1);
        assert_eq!(s.list_campaigns().unwrap().len(), 2);
        assert!(s.get_campaign("c2").unwrap().is_none());
        // A batch: several documents in one commit, the later write of a key wins.
        let mut b = Batch::default();
        c.jobs[0].status = JobStatus::Running;
        b.put_campaign(&c, Some(&[0])).unwrap();
        c.jobs[0].status = JobStatus::Done;
        b.put_campaign(&c, Some(&[0, 2])).unwrap();
        b.put(
            GROUPS,
            "g",
            &Group {
                name: "g".into(),
                endpoints: vec![],
                labels: vec![],
            },
        )
        .unwrap();
        assert_eq!(b.len(), 6);
        s.commit(b).unwrap();
        let back = s.get_campaign("c1").unwrap().unwrap();
        let status: Vec<JobStatus> = back.jobs.iter().map(|j| j.status).collect();
        assert_eq!(
            status,
            [JobStatus::Done, JobStatus::Done, JobStatus::Failed]
        );
        assert!(s.get::<Group>(GROUPS, "g").unwrap().is_some());
        // A record from before the split (jobs inline) still reads whole.
        let mut old = serde_json::to_value(&c).unwrap();
        old["id"] = "old".into();
        s.put(CAMPAIGNS, "old", &old).unwrap();
        assert_eq!(s.get_campaign("old").unwrap().unwrap().jobs.len(), 3);
    }

    #[test]
    fn records_from_before_capabilities_get_one() {
        use crate::campaign::CampaignSpec;
        let dir = tempfile::tempdir().unwrap();
        let sha;
        {
            let s = Store::open(dir.path()).unwrap();
            sha = s.write_blob(b"old file").unwrap();
            // As an older version wrote it: no `capability`.
            let old = serde_json::json!({"sha256": sha, "name": "old", "description": null,
                "size": 8, "uploaded_at": 1, "retain_until": null});
            s.put(FILES, &sha, &old).unwrap();
            let spec: CampaignSpec = serde_json::from_value(
                serde_json::json!({"op": "upgrade", "package": "app", "file": sha}),
            )
            .unwrap();
            s.put_campaign(
                &Campaign::new("c1".into(), None, spec, vec!["d".into()], 5),
                None,
            )
            .unwrap();
            assert!(!s.download_allowed(&sha, "").unwrap());
        }
        let s = Store::open(dir.path()).unwrap();
        let f: SoftwareFile = s.get(FILES, &sha).unwrap().unwrap();
        let cap = f.capability.clone().unwrap();
        assert_eq!(cap.len(), 32);
        assert_eq!(f.download_path().unwrap(), format!("/fw/{sha}/{cap}"));
        assert!(s.download_allowed(&sha, &cap).unwrap());
        assert!(!s.download_allowed(&sha, &"0".repeat(32)).unwrap());
        assert_eq!(s.file_capability(&sha).unwrap(), Some(cap.clone()));
        // A campaign stored without it builds its pull URIs with the file's.
        let c = s.get_campaign("c1").unwrap().unwrap();
        assert_eq!(c.spec.file_capability, Some(cap));
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put(GROUPS, "x", &"not a group").unwrap();
        assert!(matches!(
            s.get::<Group>(GROUPS, "x"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn group_membership_by_endpoint_and_label() {
        let g = Group {
            name: "g".into(),
            endpoints: vec!["a".into()],
            labels: vec!["blue".into()],
        };
        let dev = |ep: &str, labels: &[&str]| DeviceRecord {
            endpoint: ep.into(),
            registration: None,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            last_seen: 0,
            engine: None,
        };
        assert!(g.contains(&dev("a", &[])));
        assert!(g.contains(&dev("b", &["blue"])));
        assert!(!g.contains(&dev("c", &["red"])));
    }
}
