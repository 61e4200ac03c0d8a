//! One error type for everything a package can get wrong, sorted by whose fault it is.
//!
//! The host maps [`ErrorKind`] onto LwM2M Update Result codes (SwMgmt §6, resource 9 "Update
//! Result"; the integrity check of §5.1.2.3 DOWNLOADED): `Integrity` -> 53, `Unsupported` -> 54,
//! `TooLarge` -> 50; `Io` is a local fault (57, device defined error, is a reasonable choice).

use std::io;

/// Coarse class of a [`PackageError`]; this is what decides the LwM2M Update Result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The package is damaged, tampered with, hostile or unsigned where a signature is required.
    Integrity,
    /// The package is well formed but this host cannot or will not use it (format, manifest, features).
    Unsupported,
    /// The package exceeds a configured limit ("not enough storage").
    TooLarge,
    /// A local disk error unrelated to the package contents.
    Io,
}

/// Everything that can go wrong reading, validating, signing or writing a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A local file operation failed; `context` says which one.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The input is neither a gzip-compressed nor a plain tar archive.
    #[error("not a package archive (expected tar or tar.gz): {0}")]
    NotAnArchive(String),
    /// The archive became unreadable part way through (truncated or corrupted).
    #[error("corrupt archive after entry {after:?}: {reason}")]
    Corrupt {
        /// Last entry read successfully, if any.
        after: Option<String>,
        /// What the archive reader reported.
        reason: String,
    },
    /// The archive has no `manifest.toml`.
    #[error("package has no manifest.toml")]
    NoManifest,
    /// `manifest.toml` is not valid TOML, is not UTF-8, or has an unknown key or wrong type.
    #[error("manifest.toml: {0}")]
    ManifestSyntax(String),
    /// `manifest-version` is missing or not one this host understands.
    #[error("manifest.toml: unsupported manifest-version {0} (this host supports 1)")]
    ManifestVersion(String),
    /// A manifest value is out of range or malformed; `key` locates it.
    #[error("manifest.toml: {key}: {reason}")]
    InvalidManifest {
        /// Dotted location of the bad value, e.g. `component[counter].sandbox.memory`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A component targets a world this host does not implement.
    #[error("manifest.toml: component[{component}].world: unsupported world {world:?}")]
    UnknownWorld {
        /// Component id.
        component: String,
        /// The world named by the manifest.
        world: String,
    },
    /// The package requires host features this host does not provide.
    #[error("package requires host features this host lacks: {}", .0.join(", "))]
    MissingRequirement(Vec<String>),
    /// An archive entry is of a refused type or has an unsafe path.
    #[error("hostile archive entry {path:?}: {reason}")]
    HostileEntry {
        /// The entry path as found in the archive (lossy UTF-8).
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// An archive entry is not listed by the manifest.
    #[error("archive entry {0:?} is not listed in manifest.toml")]
    UnlistedEntry(String),
    /// The same path appears twice in the archive.
    #[error("archive entry {0:?} appears more than once")]
    DuplicateEntry(String),
    /// A file arrived before `manifest.toml`, which must be the first entry.
    #[error("archive entry {0:?} comes before manifest.toml (manifest must be first)")]
    EntryBeforeManifest(String),
    /// A file's sha256 differs from the manifest.
    #[error("digest mismatch for {file:?}: manifest says {expected}, content is {actual}")]
    DigestMismatch {
        /// Archive path.
        file: String,
        /// Digest from the manifest (hex).
        expected: String,
        /// Digest of the bytes received (hex).
        actual: String,
    },
    /// A file listed by the manifest is absent from the archive.
    #[error("file {0:?} listed in manifest.toml is missing from the archive")]
    MissingFile(String),
    /// Trusted keys are configured but the package carries no signature.
    #[error(
        "package is unsigned but this host requires a signature (manifest.sig right after manifest.toml)"
    )]
    Unsigned,
    /// `manifest.sig` or a key file is not in the expected format.
    #[error("malformed {what}: {reason}")]
    MalformedSignature {
        /// Which file or text was being parsed.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing key is not among the trusted keys.
    #[error("package signed by untrusted key {0}")]
    UnknownKey(String),
    /// The signature does not verify over the manifest bytes.
    #[error("signature by key {0} does not verify over manifest.toml")]
    BadSignature(String),
    /// A single file exceeds `Limits::max_file_bytes`.
    #[error("file {path:?} is {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge {
        /// Archive path.
        path: String,
        /// Size announced or read so far.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The archive expands past `Limits::max_total_bytes`.
    #[error("package expands past the limit of {limit} bytes")]
    TotalTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The archive has more entries than `Limits::max_files`.
    #[error("package has more than {limit} entries")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// `manifest.toml` (or `manifest.sig`) exceeds its fixed size cap.
    #[error("{path} is larger than {limit} bytes")]
    ManifestTooLarge {
        /// Which file.
        path: String,
        /// The cap.
        limit: u64,
    },
    /// A GNU long-name / long-link or PAX extended header is over its fixed cap; refused from the
    /// size in its tar header, before any of its data is read.
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    HeaderTooLarge {
        /// Which kind of header.
        what: &'static str,
        /// Size announced by the tar header.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// The archive has more GNU long-name / long-link and PAX extended headers than
    /// `Limits::max_files`.
    #[error("package has more than {limit} GNU long-name and PAX extended headers")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// Random number generation failed while creating a key.
    #[error("cannot generate key: {0}")]
    Random(String),
}

impl PackageError {
    /// The class of this error, used to pick the LwM2M Update Result.
    pub fn kind(&self) -> ErrorKind {
        use PackageError::*;
        match self {
            // A full disk while staging is "not enough storage", not a generic local fault.
            Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) =>
            {
                ErrorKind::TooLarge
            }
            Io { .. } | Random(_) => ErrorKind::Io,
            NotAnArchive(_)
            | NoManifest
            | ManifestSyntax(_)
            | ManifestVersion(_)
            | InvalidManifest { .. }
            | UnknownWorld { .. }
            | MissingRequirement(_) => ErrorKind::Unsupported,
            Corrupt { .. }
            | HostileEntry { .. }
            | UnlistedEntry(_)
            | DuplicateEntry(_)
            | EntryBeforeManifest(_)
            | DigestMismatch { .. }
            | MissingFile(_)
            | Unsigned
            | MalformedSignature { .. }
            | UnknownKey(_)
            | BadSignature(_) => ErrorKind::Integrity,
            FileTooLarge { .. }
            | TotalTooLarge { .. }
            | TooManyFiles { .. }
            | ManifestTooLarge { .. }
            | HeaderTooLarge { .. }
            | TooManyHeaders { .. } => ErrorKind::TooLarge,
        }
    }

    /// Wraps a local I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        PackageError::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`PackageError::InvalidManifest`].
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        PackageError::InvalidManifest {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = PackageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_too_large_other_io_is_io() {
        let full = PackageError::io("write x", io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.kind(), ErrorKind::TooLarge);
        let quota = PackageError::io("write x", io::Error::from(io::ErrorKind::QuotaExceeded));
        assert_eq!(quota.kind(), ErrorKind::TooLarge);
        let denied = PackageError::io("write x", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.kind(), ErrorKind::Io);
        assert!(denied.to_string().starts_with("write x: "));
    }
}
