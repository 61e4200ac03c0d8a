//! Atomic file replacement.

use super::StateError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every temp file we create; anything with it is garbage after a crash.
pub const TEMP_PREFIX: &str = ".tmp-";

/// True for names made by [`atomic_write`] (or other temp writers in this crate).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new
/// content, never a mix: temp file in the same directory, write, fsync, rename,
/// fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_replacing(path, bytes, None)
}

/// [`atomic_write`] for secrets: the file (and its temp file, from its
/// creation on) is readable by the owner only (mode 0600 on Unix).
pub fn atomic_write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_replacing(path, bytes, Some(0o600))
}

fn write_replacing(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), StateError> {
    let dir = path
        .parent()
        .ok_or_else(|| StateError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StateError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id()));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = options
            .open(&tmp)
            .map_err(|e| StateError::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| StateError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| StateError::io("fsync", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| StateError::io("rename", path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a directory entry change (create, rename, unlink) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), StateError> {
    let d = File::open(dir).map_err(|e| StateError::io("open dir", dir, e))?;
    d.sync_all()
        .map_err(|e| StateError::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("rec.json");
        assert!(matches!(atomic_write(&p, b"x"), Err(StateError::Io { .. })));
    }
}
