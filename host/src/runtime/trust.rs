//! The signer keys a data directory trusts, kept in it (`trust.json`) so
//! that every tool opening the directory applies the same trust: the device
//! records its `trusted-keys` there at start, and `wasmdm install` on the
//! same directory refuses what the device would refuse.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wasmdm_package::VerifyingKey;

use crate::state::{StateError, atomic_write};

#[derive(Debug, Default, Serialize, Deserialize)]
struct TrustFile {
    /// ed25519 public keys, hex.
    trusted_keys: Vec<String>,
}

fn path(root: &Path) -> PathBuf {
    root.join("trust.json")
}

/// Records `keys` as the directory's trust (empty: unsigned packages accepted).
pub(crate) fn save(root: &Path, keys: &[VerifyingKey]) -> Result<(), StateError> {
    let file = TrustFile {
        trusted_keys: keys.iter().map(|k| hex::encode(k.as_bytes())).collect(),
    };
    let p = path(root);
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    atomic_write(&p, &bytes)
}

/// The directory's recorded trust; none recorded (no device ran here) is
/// empty. A file that cannot be read is an error: trust fails closed.
pub(crate) fn load(root: &Path) -> Result<Vec<VerifyingKey>, StateError> {
    let p = path(root);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::io("read", &p, e)),
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: p.clone(),
        reason,
    };
    let file: TrustFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    file.trusted_keys
        .iter()
        .map(|h| {
            let raw: [u8; 32] = hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt(format!("not a 32-byte hex key: {h:?}")))?;
            VerifyingKey::from_bytes(&raw).map_err(|_| corrupt(format!("not an ed25519 key: {h}")))
        })
        .collect()
}
