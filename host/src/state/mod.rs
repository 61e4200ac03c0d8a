//! Durable state of the runtime: packages, records and app data.
//!
//! Crash consistency comes from two rules: files are replaced with [`atomic_write`]
//! (temp file, fsync, rename, fsync dir), and "record" files that make a multi-file
//! change visible are written last. Anything else found after a crash is garbage and
//! [`DataDir::remove_temp_files`] removes it. (The device's LwM2M state, written
//! on every reported change, uses two checksummed slot files instead, one
//! fdatasync each: see `device::state`.)

mod atomic;
mod layout;
mod lock;

pub use atomic::{TEMP_PREFIX, atomic_write, atomic_write_private, fsync_dir, is_temp_name};
pub use layout::{DataDir, valid_name};
pub use lock::DirLock;

use std::path::PathBuf;

/// Errors from the durable state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another live process holds the data directory lock.
    #[error("data directory {dir} is in use by pid {pid}")]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The pid recorded by the holder (0 if unreadable).
        pid: u32,
    },
    /// A stored record could not be decoded.
    #[error("corrupt state file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it could not be decoded.
        reason: String,
    },
}

impl StateError {
    /// Builds an [`StateError::Io`] with context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StateError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
