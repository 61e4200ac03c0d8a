//! wasmdm software packages: manifest, hostile-input-safe archive reader, digests, signatures and
//! the packer. Pure: no wasmtime, no networking, files only where the caller says.
//!
//! A package is a tar (usually gzip-compressed, `.wdm`) holding `manifest.toml` first, optionally
//! `manifest.sig`, then the component `.wasm` files and read-only assets the manifest pins by sha256.

mod archive;
mod digest;
pub mod display;
mod error;
/// Fuzz target bodies, for `fuzz/` and the smoke test (feature `fuzz`).
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod manifest;
mod network;
mod pack;
mod relpath;
pub mod signing;
mod units;

pub use archive::{
    DEFAULT_HOST_FEATURES, EntryReport, EntryStatus, Inspection, Limits,
    MAX_EXTENSION_HEADER_BYTES, SignatureStatus, Verified, read_manifest, unpack,
};
// Issue 13: precompiled-code entries a server adds to a package.
pub use archive::{
    MAX_PRECOMPILED_ENGINE_BYTES, PRECOMPILED_CODE_FACTOR, PRECOMPILED_DIR, unpack_with_precompiled,
};
pub use digest::Digest;
pub use error::{ErrorKind, PackageError, Result};
pub use manifest::{
    Component, DATA_GUEST_PATH, DEFAULT_CPU_PERCENT, DEFAULT_MAX_DESCRIPTORS, FileEntry,
    MANIFEST_VERSION, MAX_MANIFEST_BYTES, MAX_OBJECT_GRANTS, Manifest, PackageInfo, ReadonlyMount,
    Restart, RestartPolicy, Sandbox, WASMDM_ENGINE_OBJECT, World, reserved_object,
};
pub use network::{NetRule, NetworkGrant, PortRange};
pub use pack::{PackProgress, pack};
pub use relpath::{MANIFEST_NAME, SIGNATURE_NAME};
pub use signing::{SigningKey, VerifyingKey, keygen, sign_manifest};

#[cfg(test)]
mod tests;
