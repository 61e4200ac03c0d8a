//! The device's LwM2M state on disk: Objects 9 and 14 and which installed
//! package each /9 instance manages, in one file written atomically, so a
//! kill at any moment leaves either the old or the new snapshot.

use crate::state::atomic_write;
use std::collections::BTreeMap;
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

/// `<data dir>/lwm2m.json`.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(data_dir: &Path) -> Self {
        StateFile {
            path: data_dir.join("lwm2m.json"),
        }
    }

    /// The last snapshot, or `None` on a fresh device.
    pub fn load(&self) -> Result<Option<DeviceState>, StateFileError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateFileError::Corrupt(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateFileError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the snapshot durably (temp file, fsync, rename, fsync dir).
    pub fn save(&self, state: &DeviceState) -> Result<(), StateFileError> {
        let bytes =
            serde_json::to_vec(state).map_err(|e| StateFileError::Corrupt(e.to_string()))?;
        atomic_write(&self.path, &bytes)?;
        Ok(())
    }
}
