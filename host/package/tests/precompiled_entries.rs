//! Issue 13: the `precompiled/<component-sha256>.{cwasm,sig,engine}` entries
//! a server adds to a package. Strictly named ones within their caps go to
//! the caller's directory (or nowhere); others under `precompiled/` are
//! skipped with a note and the package is still good; files elsewhere that
//! the manifest does not list still refuse it; with trusted keys, nothing
//! is accepted before the signature.

use std::path::Path;

use wasmdm_package::{Digest, Limits, PackageError};

const WASM: &[u8] = b"\0asm\x0d\0\x01\0";

/// A package (tar, manifest first, optionally signed) followed by `extra` entries.
fn package(extra: &[(String, Vec<u8>)], key: Option<&wasmdm_package::SigningKey>) -> Vec<u8> {
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"app\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"app\"\nfile = \"app.wasm\"\nworld = \"wasi:cli/command\"\n\
         sha256 = \"{}\"\n",
        Digest::of(WASM).to_hex()
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("manifest.toml", manifest.as_bytes());
    if let Some(k) = key {
        add(
            "manifest.sig",
            wasmdm_package::sign_manifest(k, manifest.as_bytes()).as_bytes(),
        );
    }
    add("app.wasm", WASM);
    for (p, d) in extra {
        add(p, d);
    }
    b.into_inner().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn limits() -> Limits {
    Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    }
}

#[test]
fn strict_entries_are_kept_others_skipped_and_unlisted_files_refused() {
    let sha = Digest::of(WASM).to_hex();
    let e = |name: &str, len: usize| (format!("precompiled/{name}"), vec![7u8; len]);
    let extra = vec![
        e(&format!("{sha}.cwasm"), 4000),
        e(&format!("{sha}.sig"), 100),
        e(&format!("{sha}.engine"), 16),
        // Over 4 x max_file_bytes, a digest that is no component's, a suffix
        // that means nothing, upper-case hex, a nested path.
        e(&format!("{sha}.engine2"), 1),
        e(&format!("{}.cwasm", "ab".repeat(32)), 10),
        e(&format!("{}.cwasm", sha.to_uppercase()), 10),
        e(&format!("x/{sha}.cwasm"), 10),
    ];
    let mut too_big = extra.clone();
    too_big[0].1 = vec![7u8; 4001];
    let (staging, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let v = wasmdm_package::unpack_with_precompiled(
        package(&extra, None).as_slice(),
        staging.path(),
        Some(out.path()),
        &limits(),
        &[],
    )
    .unwrap();
    assert_eq!(
        files(out.path()),
        [
            format!("{sha}.cwasm"),
            format!("{sha}.engine"),
            format!("{sha}.sig")
        ]
    );
    assert_eq!(v.precompiled.len(), 3);
    assert_eq!(v.precompiled_notes.len(), 4, "{:?}", v.precompiled_notes);
    assert_eq!(files(staging.path()), ["app.wasm"]);

    // Over its cap: skipped (from the header), the package still good.
    let (staging, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let v = wasmdm_package::unpack_with_precompiled(
        package(&too_big, None).as_slice(),
        staging.path(),
        Some(out.path()),
        &limits(),
        &[],
    )
    .unwrap();
    assert!(!files(out.path()).contains(&format!("{sha}.cwasm")));
    assert!(
        v.precompiled_notes[0].contains("over its cap"),
        "{:?}",
        v.precompiled_notes
    );

    // A plain unpack skips them all; a file outside precompiled/ that the
    // manifest does not list still refuses the package.
    let staging = tempfile::tempdir().unwrap();
    wasmdm_package::unpack(
        package(&extra, None).as_slice(),
        staging.path(),
        &limits(),
        &[],
    )
    .unwrap();
    assert_eq!(files(staging.path()), ["app.wasm"]);
    let staging = tempfile::tempdir().unwrap();
    let err = wasmdm_package::unpack_with_precompiled(
        package(&[("precompiledx.cwasm".into(), vec![1])], None).as_slice(),
        staging.path(),
        Some(out.path()),
        &limits(),
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, PackageError::UnlistedEntry(_)), "{err}");
}

#[test]
fn with_trusted_keys_entries_need_the_signed_manifest() {
    let sha = Digest::of(WASM).to_hex();
    let (key, public) = wasmdm_package::keygen().unwrap();
    let extra = vec![(format!("precompiled/{sha}.engine"), b"00aa".to_vec())];
    let (staging, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let v = wasmdm_package::unpack_with_precompiled(
        package(&extra, Some(&key)).as_slice(),
        staging.path(),
        Some(out.path()),
        &limits(),
        &[public],
    )
    .unwrap();
    assert_eq!(v.precompiled, [format!("{sha}.engine")]);
    let (staging, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let err = wasmdm_package::unpack_with_precompiled(
        package(&extra, None).as_slice(),
        staging.path(),
        Some(out.path()),
        &limits(),
        &[public],
    )
    .unwrap_err();
    assert!(matches!(err, PackageError::Unsigned), "{err}");
}
