//! The operator's key for native code: it signs every artifact the server
//! compiles; devices trust its public key in `native-code-keys` (separate
//! from the package-signing keys: `Component::deserialize` runs whatever it
//! is given). The secret is never logged or returned by the API.

use std::path::{Path, PathBuf};

use wasmdm_package::signing::{self, SigningKey, VerifyingKey};

/// File name of the generated key in the server's data dir (mode 0600).
pub const KEY_FILE: &str = "native-code.key";

/// Why the key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[error("native-code key {path}: {reason}")]
pub struct KeyError {
    path: PathBuf,
    reason: String,
}

/// Loads `given`, or `<data_dir>/native-code.key`, generating the latter on
/// first start. Returns the key and whether it was just created.
pub fn load_or_create(
    data_dir: &Path,
    given: Option<&Path>,
) -> Result<(SigningKey, bool), KeyError> {
    let path = given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(KEY_FILE));
    let err = |reason: String| KeyError {
        path: path.clone(),
        reason,
    };
    if given.is_some() || path.exists() {
        return signing::load_secret_key(&path)
            .map(|k| (k, false))
            .map_err(|e| err(e.to_string()));
    }
    let (key, _) = signing::keygen().map_err(|e| err(e.to_string()))?;
    signing::save_secret_key(&path, &key).map_err(|e| err(e.to_string()))?;
    Ok((key, true))
}

/// Public key file text, for devices' `native-code-keys`.
pub fn public_text(key: &VerifyingKey) -> String {
    signing::encode_public_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, created) = load_or_create(dir.path(), None).unwrap();
        assert!(created);
        let (k2, created) = load_or_create(dir.path(), None).unwrap();
        assert!(!created);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = dir.path().join("none.key");
        assert!(load_or_create(dir.path(), Some(&missing)).is_err());
    }
}
