//! Fuzz target bodies: one function per target, taking arbitrary bytes.
//!
//! The libFuzzer binaries in `fuzz/` call these, and so does this crate's smoke test over
//! `fuzz/corpus/`, so `cargo test` runs every body without a fuzzer. Built for tests and with
//! the `fuzz` feature only.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::{EntryStatus, Limits, Manifest, read_manifest, unpack};

/// Manifest parsing and validation. An accepted manifest renders to TOML that parses back to
/// the same manifest, and renders the same again.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::from_bytes(data) else {
        return;
    };
    let _ = m.check_requirements(crate::DEFAULT_HOST_FEATURES);
    let _ = m.payload();
    let text = m.to_toml();
    let again = Manifest::from_toml(&text)
        .unwrap_or_else(|e| panic!("rendered manifest does not parse: {e}\n{text}"));
    assert_eq!(
        again, m,
        "manifest changed through to_toml/from_toml:\n{text}"
    );
    assert_eq!(again.to_toml(), text, "rendering not stable");
}

/// Small caps, so the fuzzer reaches every limit with small inputs.
fn limits() -> Limits {
    Limits {
        max_file_bytes: 16 << 10,
        max_total_bytes: 64 << 10,
        max_files: 16,
        ..Limits::default()
    }
}

/// This process's scratch root, holding `staging/`; made once, so that the common case (an
/// input refused before anything is written) costs no filesystem work.
fn scratch() -> Option<&'static (PathBuf, PathBuf)> {
    static SCRATCH: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    SCRATCH
        .get_or_init(|| {
            let root =
                std::env::temp_dir().join(format!("wasmdm-fuzz-staging-{}", std::process::id()));
            let stage = root.join("staging");
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&stage).ok()?;
            Some((root, stage))
        })
        .as_ref()
}

/// The archive reader, both ways it is used: `read_manifest` (inspect) and `unpack` (install,
/// the device's verification). A package `unpack` accepts, inspection must find whole: every
/// entry listed and matching, nothing missing. Nothing may land outside the staging dir.
pub fn archive(data: &[u8]) {
    let limits = limits();
    let inspected = read_manifest(data, &limits);
    if let Ok(i) = &inspected {
        manifest(&i.manifest_bytes);
    }
    let Some((root, stage)) = scratch() else {
        return;
    };
    let unpacked = unpack(data, stage, &limits, &[]);
    let outside: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        outside,
        std::slice::from_ref(stage),
        "unpack wrote outside staging"
    );
    if let Ok(v) = &unpacked {
        let i = match &inspected {
            Ok(i) => i,
            Err(e) => panic!("unpack accepted what inspection refused: {e}"),
        };
        assert_eq!(i.manifest, v.manifest);
        assert!(
            i.missing.is_empty(),
            "unpacked, yet missing {:?}",
            i.missing
        );
        assert!(
            i.entries.iter().all(|e| e.status == EntryStatus::Ok),
            "unpacked, yet inspection objects: {:?}",
            i.entries
        );
        for path in v.manifest.payload().keys() {
            assert!(stage.join(path).is_file(), "{path} not staged");
        }
    }
    // Empty the staging dir for the next input, if this one wrote anything.
    if std::fs::read_dir(stage).is_ok_and(|mut d| d.next().is_some()) {
        let _ = std::fs::remove_dir_all(stage);
        let _ = std::fs::create_dir(stage);
    }
}

/// A target: its name (as `fuzz/corpus/<name>/` and `fuzz/fuzz_targets/<name>.rs` name it)
/// and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[("manifest", manifest), ("archive", archive)];

#[cfg(test)]
#[path = "../../../fuzz/replay.rs"]
mod replay;

#[cfg(test)]
mod tests {
    /// Every body over its seed corpus, 2000 mutations of it and 300 random inputs.
    #[test]
    fn fuzz_bodies_survive_corpus_and_mutations() {
        super::replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            super::TARGETS,
            &[0, 0xff, b'"', b'=', b'\n', b'['],
            2000,
            300,
        );
    }
}
