//! Process lock on the data directory: two wasmdm processes on one directory would
//! corrupt each other's records.

use super::StateError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Holds an exclusive `flock` on `<data>/lock` for the life of the value.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock or fails with [`StateError::InUse`] naming the holder's pid.
    pub fn acquire(data_dir: &Path) -> Result<DirLock, StateError> {
        let path = data_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StateError::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                let pid = s.trim().parse().unwrap_or(0);
                return Err(StateError::InUse {
                    dir: data_dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(StateError::io("lock", &path, e)),
        }
        // The pid is informational only (for the error above); the flock is the lock.
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(file, "{}", std::process::id()))
            .and_then(|_| file.sync_all())
            .map_err(|e| StateError::io("write", &path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _a = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(StateError::InUse { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected InUse, got {other:?}"),
        }
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(DirLock::acquire(dir.path()).unwrap());
        DirLock::acquire(dir.path()).unwrap();
    }
}
