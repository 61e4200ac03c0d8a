//! The device's LwM2M state on disk: Objects 9 and 14 and which installed
//! package each /9 instance manages, as one snapshot, so a kill at any
//! moment leaves either the old or the new snapshot.
//!
//! Every reported state change is written first, so the write is on the
//! path of most answers. A temp file + fsync + rename + fsync of the
//! directory costs two journal commits; instead two slot files,
//! `lwm2m.state.0` and `lwm2m.state.1`, are overwritten in place by turns,
//! each write followed by one `fdatasync`. A slot holds a header (magic,
//! sequence number, length, SHA-256 of the rest) and the snapshot; a load
//! takes the valid slot with the highest sequence number. A write cut short
//! leaves its slot invalid and the other slot holding the previous snapshot.
//! A device that last ran with the older single file (`lwm2m.json`, written
//! atomically) starts from it; the file is removed once a slot holds the
//! state.

use crate::state::{StateError, fsync_dir};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// One consistent snapshot.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DeviceState {
    /// Object 9 (`SoftwareManagement::to_json`).
    pub swmgmt: String,
    /// Object 14.
    pub swcomp: String,
    /// /9 instance -> installed package name.
    pub bindings: BTreeMap<u16, String>,
    /// The /1 instance as the LwM2M server wrote it (`server_settings.rs`);
    /// absent in states written before it was kept.
    #[serde(default)]
    pub server: Option<super::server_settings::ServerSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device state is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Write(#[from] crate::state::StateError),
}

const MAGIC: &[u8; 8] = b"WDMSTATE";
/// magic, format version (u32), sequence (u64), length (u64), SHA-256.
const HEADER: usize = 8 + 4 + 8 + 8 + 32;
const VERSION: u32 = 1;
/// Smallest slot file; slots grow to twice the snapshot when it outgrows them.
const MIN_SLOT: usize = 4096;

/// The slot files of `<data dir>` (and the single file of older versions).
pub struct StateFile {
    dir: PathBuf,
    slots: [PathBuf; 2],
    legacy: PathBuf,
    open: RefCell<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Sequence number of the newest snapshot on disk (0: none).
    seq: u64,
    /// The slot holding it.
    newest: Option<usize>,
    files: [Option<File>; 2],
    /// Slot file sizes (the space a snapshot may fill without growing it).
    sizes: [usize; 2],
}

impl StateFile {
    pub fn new(data_dir: &Path) -> Self {
        StateFile {
            dir: data_dir.to_path_buf(),
            slots: [
                data_dir.join("lwm2m.state.0"),
                data_dir.join("lwm2m.state.1"),
            ],
            legacy: data_dir.join("lwm2m.json"),
            open: RefCell::new(Slots::default()),
        }
    }

    /// The last snapshot, or `None` on a fresh device.
    pub fn load(&self) -> Result<Option<DeviceState>, StateFileError> {
        let mut best: Option<(u64, usize, Vec<u8>)> = None;
        let mut open = self.open.borrow_mut();
        for (i, path) in self.slots.iter().enumerate() {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StateFileError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            open.sizes[i] = bytes.len();
            if let Some((seq, payload)) = parse_slot(&bytes)
                && best.as_ref().is_none_or(|(s, _, _)| seq > *s)
            {
                best = Some((seq, i, payload.to_vec()));
            }
        }
        let bytes = match best {
            Some((seq, i, payload)) => {
                open.seq = seq;
                open.newest = Some(i);
                payload
            }
            None => match std::fs::read(&self.legacy) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(StateFileError::Read {
                        path: self.legacy.clone(),
                        source,
                    });
                }
            },
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateFileError::Corrupt(format!("{}: {e}", self.dir.display())))
    }

    /// Writes the snapshot durably into the slot not holding the newest one.
    pub fn save(&self, state: &DeviceState) -> Result<(), StateFileError> {
        let payload =
            serde_json::to_vec(state).map_err(|e| StateFileError::Corrupt(e.to_string()))?;
        let mut open = self.open.borrow_mut();
        let slot = match open.newest {
            Some(i) => 1 - i,
            None => 0,
        };
        let seq = open.seq + 1;
        let mut bytes = slot_bytes(seq, &payload);
        let path = &self.slots[slot];
        let created = open.files[slot].is_none() && !path.exists();
        if bytes.len() > open.sizes[slot] {
            // A new or outgrown slot: room for twice this snapshot, so the
            // next writes overwrite in place (no size change to commit).
            bytes.resize(MIN_SLOT.max(2 * bytes.len()), 0);
        }
        let file = match &mut open.files[slot] {
            Some(f) => f,
            empty => empty.insert(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(|e| StateError::io("open", path, e))?,
            ),
        };
        write_all_at(file, &bytes, 0).map_err(|e| StateError::io("write", path, e))?;
        file.sync_data()
            .map_err(|e| StateError::io("fdatasync", path, e))?;
        if created {
            fsync_dir(&self.dir)?;
        }
        open.sizes[slot] = open.sizes[slot].max(bytes.len());
        open.seq = seq;
        open.newest = Some(slot);
        drop(open);
        if self.legacy.exists() {
            // The slots hold the state now; the old file must not come back.
            std::fs::remove_file(&self.legacy)
                .map_err(|e| StateError::io("remove", &self.legacy, e))?;
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes the snapshot the way versions before the slot files did
    /// (tests: a device upgraded from one of those).
    #[cfg(test)]
    fn save_legacy(&self, state: &DeviceState) -> Result<(), StateFileError> {
        let bytes =
            serde_json::to_vec(state).map_err(|e| StateFileError::Corrupt(e.to_string()))?;
        crate::state::atomic_write(&self.legacy, &bytes)?;
        Ok(())
    }
}

fn slot_bytes(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&digest(seq, payload));
    out.extend_from_slice(payload);
    out
}

fn digest(seq: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seq.to_le_bytes());
    h.update((payload.len() as u64).to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// (sequence, snapshot) of a slot file, if it holds a whole one.
fn parse_slot(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let header = bytes.get(..HEADER)?;
    let (magic, rest) = header.split_at(8);
    let (version, rest) = rest.split_at(4);
    let (seq, rest) = rest.split_at(8);
    let (len, sum) = rest.split_at(8);
    if magic != MAGIC || u32::from_le_bytes(version.try_into().ok()?) != VERSION {
        return None;
    }
    let seq = u64::from_le_bytes(seq.try_into().ok()?);
    let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    (digest(seq, payload) == sum).then_some((seq, payload))
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tag: &str) -> DeviceState {
        DeviceState {
            server: None,
            swmgmt: format!("{{\"tag\":\"{tag}\"}}"),
            swcomp: "{}".into(),
            bindings: BTreeMap::from([(0, tag.to_string())]),
        }
    }

    fn tag(s: &DeviceState) -> String {
        s.bindings.get(&0).cloned().unwrap_or_default()
    }

    #[test]
    fn the_newest_whole_snapshot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        assert!(f.load().unwrap().is_none());
        f.save(&state("a")).unwrap();
        f.save(&state("b")).unwrap();
        f.save(&state(&"c".repeat(10_000))).unwrap(); // outgrows its slot
        f.save(&state("d")).unwrap();
        let again = StateFile::new(dir.path());
        assert_eq!(tag(&again.load().unwrap().unwrap()), "d");
        // It carries on from there, alternating slots.
        again.save(&state("e")).unwrap();
        assert_eq!(
            tag(&StateFile::new(dir.path()).load().unwrap().unwrap()),
            "e"
        );
    }

    #[test]
    fn a_torn_write_leaves_the_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        f.save(&state("old")).unwrap();
        f.save(&state("new")).unwrap();
        // "new" went to slot 1; a write of slot 1 cut short anywhere:
        let full = std::fs::read(&f.slots[1]).unwrap();
        for cut in [0, 10, HEADER - 1, HEADER + 3] {
            let mut torn = full.clone();
            for b in &mut torn[cut..HEADER + 20] {
                *b ^= 0x5A;
            }
            std::fs::write(&f.slots[1], &torn).unwrap();
            let loaded = StateFile::new(dir.path()).load().unwrap().unwrap();
            assert_eq!(tag(&loaded), "old", "cut at {cut}");
        }
        // A slot of garbage or empty is no snapshot either.
        std::fs::write(&f.slots[1], b"").unwrap();
        assert_eq!(
            tag(&StateFile::new(dir.path()).load().unwrap().unwrap()),
            "old"
        );
    }

    #[test]
    fn an_older_single_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        f.save_legacy(&state("legacy")).unwrap();
        let f = StateFile::new(dir.path());
        assert_eq!(tag(&f.load().unwrap().unwrap()), "legacy");
        f.save(&state("slots")).unwrap();
        assert!(!f.legacy.exists());
        assert_eq!(
            tag(&StateFile::new(dir.path()).load().unwrap().unwrap()),
            "slots"
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_not_a_fresh_device() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lwm2m.json"), b"{not json").unwrap();
        assert!(matches!(
            StateFile::new(dir.path()).load(),
            Err(StateFileError::Corrupt(_))
        ));
    }
}
