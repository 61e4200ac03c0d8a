//! Archive, signature and pack tests: hostile inputs, limits, and the pack -> unpack round trip.

mod headers;
mod util;

use std::io::{self, Read};
use std::time::Duration;

use tar::EntryType;

use self::util::*;
use crate::signing::{self, fingerprint};
use crate::{
    Digest, EntryStatus, ErrorKind, Limits, PackProgress, PackageError, SignatureStatus, keygen,
    pack, read_manifest,
};

fn limits() -> Limits {
    Limits::default()
}

fn packed(sign: Option<&crate::SigningKey>) -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    let mut out = Vec::new();
    pack(src.path(), &mut out, sign, &mut |_| {}).unwrap();
    out
}

/// Asserts the error kind, and that nothing was written next to staging.
fn refused(scratch: &Scratch, bytes: &[u8], l: &Limits, kind: ErrorKind) -> PackageError {
    let e = scratch.unpack(bytes, l, &[]).unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    assert!(
        scratch.outside_staging().is_empty(),
        "wrote outside staging: {:?}",
        scratch.outside_staging()
    );
    e
}

// ---- happy paths -----------------------------------------------------------------------------

#[test]
fn pack_then_unpack_round_trip_unsigned() {
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    let mut out = Vec::new();
    let mut events = Vec::new();
    let m = pack(src.path(), &mut out, None, &mut |p| events.push(p)).unwrap();
    // Stale digest replaced, missing one filled, css listed automatically, unrelated file not shipped.
    assert_eq!(m.components[0].sha256, Digest::of(APP));
    let paths: Vec<_> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["assets/index.html", "assets/css/site.css"]);
    assert!(matches!(
        events.last(),
        Some(PackProgress::Finished { entries: 4, .. })
    ));
    assert_eq!(&out[..2], &[0x1f, 0x8b], "gzip");

    let s = Scratch::new();
    let v = s.unpack(&out, &limits(), &[]).unwrap();
    assert_eq!(v.manifest, m);
    assert_eq!(v.signed_by, None);
    assert_eq!(v.manifest_bytes, m.to_toml().into_bytes());
    assert_eq!(s.staged("app.wasm").unwrap(), APP);
    assert_eq!(s.staged("assets/index.html").unwrap(), PAGE);
    assert_eq!(s.staged("assets/css/site.css").unwrap(), b"h1{}");
    assert!(s.staged("unrelated.txt").is_none());
    assert!(
        s.staged("manifest.toml").is_none(),
        "metadata is returned, not staged"
    );
    assert_eq!(
        v.total_bytes,
        (v.manifest_bytes.len() + APP.len() + PAGE.len() + 4) as u64
    );
}

#[test]
fn pack_is_deterministic() {
    let a = packed(None);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(a, packed(None));
}

#[test]
fn pack_then_unpack_round_trip_signed() {
    let (sk, pk) = keygen().unwrap();
    let out = packed(Some(&sk));
    let s = Scratch::new();
    let v = s.unpack(&out, &limits(), &[pk]).unwrap();
    assert_eq!(v.signed_by, Some(fingerprint(&pk)));
    assert_eq!(s.staged("app.wasm").unwrap(), APP);
    // Without trusted keys a signed package is still accepted, just not attributed.
    let s2 = Scratch::new();
    assert_eq!(s2.unpack(&out, &limits(), &[]).unwrap().signed_by, None);
}

#[test]
fn plain_tar_and_leading_dot_slash_are_accepted() {
    let mut t = RawTar::new();
    t.dir("./")
        .file("./manifest.toml", manifest().as_bytes())
        .dir("./assets/");
    t.file("./app.wasm", APP).file("./assets/index.html", PAGE);
    let s = Scratch::new();
    let v = s.unpack(&t.finish(), &limits(), &[]).unwrap();
    assert_eq!(v.manifest.package.name, "demo");
    assert_eq!(s.staged("assets/index.html").unwrap(), PAGE);
}

// ---- hostile entries ---------------------------------------------------------------------------

#[test]
fn traversal_is_refused_and_nothing_escapes() {
    let mut t = good_tar();
    t.file("../x", b"evil");
    let s = Scratch::new();
    let e = refused(&s, &gzip(&t.finish()), &limits(), ErrorKind::Integrity);
    assert!(
        matches!(e, PackageError::HostileEntry { ref path, .. } if path == "../x"),
        "{e}"
    );
    assert!(!s.root.path().join("x").exists());

    let mut t = good_tar();
    t.file("assets/../../y", b"evil");
    let s = Scratch::new();
    assert!(matches!(
        refused(&s, &t.finish(), &limits(), ErrorKind::Integrity),
        PackageError::HostileEntry { .. }
    ));
}

#[test]
fn absolute_path_is_refused() {
    let s = Scratch::new();
    let target = s.root.path().join("abs");
    let name = target.to_str().unwrap().to_string();
    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes())
        .file(&name, b"evil");
    let e = refused(&s, &t.finish(), &limits(), ErrorKind::Integrity);
    assert!(e.to_string().contains("absolute"), "{e}");
    assert!(!target.exists());
    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes())
        .file("/etc/x", b"evil");
    refused(&s, &t.finish(), &limits(), ErrorKind::Integrity);
}

#[test]
fn links_devices_and_fifos_are_refused() {
    let cases = [
        (EntryType::Symlink, "/etc/passwd", "symlink"),
        (EntryType::Link, "manifest.toml", "hard link"),
        (EntryType::Char, "", "character device"),
        (EntryType::Block, "", "block device"),
        (EntryType::Fifo, "", "fifo"),
    ];
    for (kind, link, what) in cases {
        let mut t = RawTar::new();
        t.file("manifest.toml", manifest().as_bytes()).entry(
            "app.wasm",
            kind,
            link,
            0,
            io::empty(),
        );
        let s = Scratch::new();
        let e = refused(&s, &t.finish(), &limits(), ErrorKind::Integrity);
        assert!(e.to_string().contains(what), "{what}: {e}");
        assert!(s.staged("app.wasm").is_none());
        assert!(std::fs::symlink_metadata(s.staging().join("app.wasm")).is_err());
    }
}

#[test]
fn symlink_even_before_manifest_is_refused() {
    let mut t = RawTar::new();
    t.entry("assets", EntryType::Symlink, "/", 0, io::empty())
        .file("manifest.toml", manifest().as_bytes());
    let s = Scratch::new();
    refused(&s, &t.finish(), &limits(), ErrorKind::Integrity);
}

#[test]
fn unlisted_file_is_refused() {
    let mut t = good_tar();
    t.file("extra.bin", b"x");
    let e = refused(
        &Scratch::new(),
        &t.finish(),
        &limits(),
        ErrorKind::Integrity,
    );
    assert!(matches!(e, PackageError::UnlistedEntry(ref p) if p == "extra.bin"));
}

#[test]
fn duplicate_entry_is_refused() {
    let mut t = good_tar();
    t.file("app.wasm", APP);
    let e = refused(
        &Scratch::new(),
        &t.finish(),
        &limits(),
        ErrorKind::Integrity,
    );
    assert!(matches!(e, PackageError::DuplicateEntry(ref p) if p == "app.wasm"));
    let mut t = good_tar();
    t.file("./manifest.toml", manifest().as_bytes());
    assert!(matches!(
        refused(
            &Scratch::new(),
            &t.finish(),
            &limits(),
            ErrorKind::Integrity
        ),
        PackageError::DuplicateEntry(_)
    ));
}

#[test]
fn file_before_manifest_is_refused() {
    let mut t = RawTar::new();
    t.file("app.wasm", APP)
        .file("manifest.toml", manifest().as_bytes())
        .file("assets/index.html", PAGE);
    let s = Scratch::new();
    let e = refused(&s, &t.finish(), &limits(), ErrorKind::Integrity);
    assert!(matches!(e, PackageError::EntryBeforeManifest(ref p) if p == "app.wasm"));
    assert!(s.staged("app.wasm").is_none());
}

// ---- limits ----------------------------------------------------------------------------------

#[test]
fn oversize_file_is_refused_from_its_header() {
    let l = Limits {
        max_file_bytes: 8,
        ..limits()
    };
    let e = refused(
        &Scratch::new(),
        &good_tar().finish(),
        &l,
        ErrorKind::TooLarge,
    );
    assert!(
        matches!(e, PackageError::FileTooLarge { ref path, limit: 8, .. } if path == "app.wasm"),
        "{e}"
    );
}

#[test]
fn total_over_limit_is_refused() {
    let l = Limits {
        max_total_bytes: 400,
        ..limits()
    };
    let e = refused(
        &Scratch::new(),
        &good_tar().finish(),
        &l,
        ErrorKind::TooLarge,
    );
    assert!(
        matches!(e, PackageError::TotalTooLarge { limit: 400 }),
        "{e}"
    );
}

#[test]
fn too_many_entries_is_refused() {
    let mut t = good_tar();
    t.dir("a/").dir("b/");
    let l = Limits {
        max_files: 4,
        ..limits()
    };
    let e = refused(&Scratch::new(), &t.finish(), &l, ErrorKind::TooLarge);
    assert!(matches!(e, PackageError::TooManyFiles { limit: 4 }));
    assert!(
        Scratch::new()
            .unpack(
                &good_tar().finish(),
                &Limits {
                    max_files: 3,
                    ..limits()
                },
                &[]
            )
            .is_ok()
    );
}

#[test]
fn oversize_manifest_is_refused() {
    let big = format!("{}# {}\n", manifest(), "x".repeat(64 * 1024));
    let mut t = RawTar::new();
    t.file("manifest.toml", big.as_bytes());
    let e = refused(&Scratch::new(), &t.finish(), &limits(), ErrorKind::TooLarge);
    assert!(matches!(e, PackageError::ManifestTooLarge { .. }));
}

/// Counts bytes the reader hands out, to prove how much of the input was consumed.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

fn bomb(kind: EntryType, name: &str) -> Vec<u8> {
    const SIZE: u64 = 100 << 20;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut t = RawTar::over(gz);
    t.file("manifest.toml", manifest().as_bytes());
    t.entry(name, kind, "", SIZE, io::repeat(0).take(SIZE));
    t.into_inner().finish().unwrap()
}

#[test]
fn gzip_bomb_in_a_listed_file_stops_at_the_header() {
    let bytes = bomb(EntryType::Regular, "app.wasm");
    let l = Limits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 1 << 20,
        ..limits()
    };
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let s = Scratch::new();
    let e = crate::unpack(
        Counting {
            inner: &bytes[..],
            read: read.clone(),
        },
        &s.staging(),
        &l,
        &[],
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert!(
        read.get() < bytes.len() as u64 / 2,
        "read {} of {}",
        read.get(),
        bytes.len()
    );
    assert!(s.staged("app.wasm").is_none());
}

#[test]
fn gzip_bomb_in_tar_metadata_stops_at_the_stream_cap() {
    // A directory entry carrying 100 MiB of data: never read, but skipped through, so only the
    // cap on the decompressed stream stops it.
    let bytes = bomb(EntryType::Directory, "dir/");
    let l = Limits {
        max_total_bytes: 1 << 20,
        max_file_bytes: 1 << 20,
        max_files: 16,
        ..limits()
    };
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let s = Scratch::new();
    let e = crate::unpack(
        Counting {
            inner: &bytes[..],
            read: read.clone(),
        },
        &s.staging(),
        &l,
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, PackageError::TotalTooLarge { .. }), "{e}");
    assert!(
        read.get() < bytes.len() as u64 / 2,
        "read {} of {}",
        read.get(),
        bytes.len()
    );
}

// ---- integrity -------------------------------------------------------------------------------

#[test]
fn wrong_digest_names_the_file() {
    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes())
        .file("app.wasm", b"tampered")
        .file("assets/index.html", PAGE);
    let e = refused(
        &Scratch::new(),
        &t.finish(),
        &limits(),
        ErrorKind::Integrity,
    );
    assert!(matches!(e, PackageError::DigestMismatch { ref file, .. } if file == "app.wasm"));
    assert!(e.to_string().contains("app.wasm"));
}

#[test]
fn missing_file_is_integrity() {
    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes())
        .file("app.wasm", APP);
    let e = refused(
        &Scratch::new(),
        &t.finish(),
        &limits(),
        ErrorKind::Integrity,
    );
    assert!(matches!(e, PackageError::MissingFile(ref p) if p == "assets/index.html"));
}

#[test]
fn truncated_archive_is_integrity() {
    let full = gzip(&good_tar().finish());
    let cut = &full[..full.len() - 40];
    let e = refused(&Scratch::new(), cut, &limits(), ErrorKind::Integrity);
    assert!(
        matches!(
            e,
            PackageError::Corrupt { .. } | PackageError::MissingFile(_)
        ),
        "{e}"
    );
}

#[test]
fn unsigned_with_trusted_keys_is_refused() {
    let (_, pk) = keygen().unwrap();
    let s = Scratch::new();
    let e = s.unpack(&packed(None), &limits(), &[pk]).unwrap_err();
    assert!(matches!(e, PackageError::Unsigned), "{e}");
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(
        s.staged("app.wasm").is_none(),
        "no payload written before the signature check"
    );
}

#[test]
fn signature_by_unknown_key_is_refused() {
    let (sk, _) = keygen().unwrap();
    let (_, trusted) = keygen().unwrap();
    let e = Scratch::new()
        .unpack(&packed(Some(&sk)), &limits(), &[trusted])
        .unwrap_err();
    assert!(matches!(e, PackageError::UnknownKey(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::Integrity);
}

#[test]
fn manifest_tampered_after_signing_is_refused() {
    let (sk, pk) = keygen().unwrap();
    let text = manifest();
    let sig = signing::sign_manifest(&sk, text.as_bytes());
    let tampered = text.replace("version = \"1.0.0\"", "version = \"1.0.1\"");
    let mut t = RawTar::new();
    t.file("manifest.toml", tampered.as_bytes())
        .file("manifest.sig", sig.as_bytes());
    t.file("app.wasm", APP).file("assets/index.html", PAGE);
    let e = Scratch::new()
        .unpack(&t.finish(), &limits(), &[pk])
        .unwrap_err();
    assert!(
        matches!(e, PackageError::BadSignature(ref fp) if *fp == fingerprint(&pk)),
        "{e}"
    );
}

#[test]
fn signature_after_payload_counts_as_unsigned() {
    let (sk, pk) = keygen().unwrap();
    let text = manifest();
    let mut t = RawTar::new();
    t.file("manifest.toml", text.as_bytes())
        .file("app.wasm", APP);
    t.file(
        "manifest.sig",
        signing::sign_manifest(&sk, text.as_bytes()).as_bytes(),
    )
    .file("assets/index.html", PAGE);
    let e = Scratch::new()
        .unpack(&t.finish(), &limits(), &[pk])
        .unwrap_err();
    assert!(matches!(e, PackageError::Unsigned), "{e}");
}

// ---- unsupported -----------------------------------------------------------------------------

fn with_manifest(text: &str) -> Vec<u8> {
    let mut t = RawTar::new();
    t.file("manifest.toml", text.as_bytes())
        .file("app.wasm", APP)
        .file("assets/index.html", PAGE);
    gzip(&t.finish())
}

#[test]
fn manifest_problems_are_unsupported() {
    let s = Scratch::new();
    let cases = [
        (
            "manifest-version = 1\n[package\n".to_string(),
            "manifest.toml",
        ),
        (
            manifest().replace("[package]", "[package]\nlicense = \"MIT\""),
            "license",
        ),
        (
            manifest().replace("wasmdm:device/app", "wasi:http/proxy"),
            "wasi:http/proxy",
        ),
        (
            manifest().replace(
                "[component.sandbox]",
                "[component.sandbox]\nmemory = \"1TB\"",
            ),
            "memory",
        ),
    ];
    for (text, needle) in cases {
        let e = refused(&s, &with_manifest(&text), &limits(), ErrorKind::Unsupported);
        assert!(e.to_string().contains(needle), "{needle}: {e}");
        assert!(s.staged("app.wasm").is_none());
    }
}

#[test]
fn missing_host_requirement_is_unsupported() {
    let text = manifest().replace(
        "version = \"1.0.0\"",
        "version = \"1.0.0\"\nrequires = [\"wasmdm:gpu@1\"]",
    );
    let e = refused(
        &Scratch::new(),
        &with_manifest(&text),
        &limits(),
        ErrorKind::Unsupported,
    );
    assert!(e.to_string().contains("wasmdm:gpu@1"), "{e}");
    let l = Limits {
        host_provides: vec!["wasmdm:gpu@1".into()],
        ..limits()
    };
    assert!(
        Scratch::new()
            .unpack(&with_manifest(&text), &l, &[])
            .is_ok()
    );
}

#[test]
fn non_archives_are_unsupported() {
    let s = Scratch::new();
    let e = refused(
        &s,
        b"this is not a tar file at all, just some text that goes on",
        &limits(),
        ErrorKind::Unsupported,
    );
    assert!(matches!(e, PackageError::NotAnArchive(_)), "{e}");
    assert!(matches!(
        refused(&s, &[0u8; 0], &limits(), ErrorKind::Unsupported),
        PackageError::NoManifest
    ));
    let e = refused(
        &s,
        &gzip(b"plain text inside gzip, still not a tar archive"),
        &limits(),
        ErrorKind::Unsupported,
    );
    assert!(matches!(e, PackageError::NotAnArchive(_)), "{e}");
    let mut t = RawTar::new();
    t.file("app.wasm", APP);
    let e = refused(&s, &t.finish(), &limits(), ErrorKind::Integrity);
    assert!(matches!(e, PackageError::EntryBeforeManifest(_)));
}

// ---- local faults ----------------------------------------------------------------------------

struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
}

#[test]
fn reader_failure_is_io() {
    let s = Scratch::new();
    let e = crate::unpack(Failing, &s.staging(), &limits(), &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let bytes = gzip(&good_tar().finish());
    let e =
        crate::unpack((&bytes[..100]).chain(Failing), &s.staging(), &limits(), &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
}

#[test]
fn existing_file_in_staging_is_not_overwritten() {
    let s = Scratch::new();
    std::fs::write(s.staging().join("app.wasm"), b"keep").unwrap();
    let e = s.unpack(&good_tar().finish(), &limits(), &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(s.staged("app.wasm").unwrap(), b"keep");
}

// ---- inspection ------------------------------------------------------------------------------

#[test]
fn inspection_reports_without_writing() {
    let (sk, _) = keygen().unwrap();
    let i = read_manifest(&packed(Some(&sk))[..], &limits()).unwrap();
    assert!(i.is_clean());
    assert!(matches!(
        i.signature,
        SignatureStatus::Signed { valid: true, .. }
    ));
    assert_eq!(i.manifest.package.name, "demo");

    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes())
        .file("app.wasm", b"bad")
        .file("extra", b"x");
    t.entry("link", EntryType::Symlink, "/etc", 0, io::empty());
    let i = read_manifest(&t.finish()[..], &limits()).unwrap();
    assert!(!i.is_clean());
    assert_eq!(i.signature, SignatureStatus::Unsigned);
    let status: Vec<_> = i
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.status))
        .collect();
    assert!(matches!(
        status[0],
        ("app.wasm", EntryStatus::DigestMismatch { .. })
    ));
    assert_eq!(status[1], ("extra", &EntryStatus::Unlisted));
    assert!(matches!(status[2], ("link", EntryStatus::Refused(_))));
    assert_eq!(i.missing, vec!["assets/index.html".to_string()]);
}

// ---- pack edge cases -------------------------------------------------------------------------

#[test]
fn long_paths_survive_pack_and_unpack() {
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    let deep = format!("assets/{}/{}", "d".repeat(120), "f".repeat(120));
    assert!(deep.len() > 100 && deep.len() <= 255);
    std::fs::create_dir_all(src.path().join(&deep).parent().unwrap()).unwrap();
    std::fs::write(src.path().join(&deep), b"deep").unwrap();
    let mut out = Vec::new();
    let m = pack(src.path(), &mut out, None, &mut |_| {}).unwrap();
    assert!(m.files.iter().any(|f| f.path == deep));
    let s = Scratch::new();
    s.unpack(&out, &limits(), &[]).unwrap();
    assert_eq!(s.staged(&deep).unwrap(), b"deep");
}

#[test]
fn pack_refuses_missing_files_and_symlinked_assets() {
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    std::fs::remove_file(src.path().join("app.wasm")).unwrap();
    let e = pack(src.path(), &mut Vec::new(), None, &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("app.wasm"), "{e}");

    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("assets/passwd")).unwrap();
        let e = pack(src.path(), &mut Vec::new(), None, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}

#[test]
fn pack_refuses_invalid_manifest() {
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    let text = std::fs::read_to_string(src.path().join("manifest.toml")).unwrap();
    std::fs::write(
        src.path().join("manifest.toml"),
        text.replace("wasmdm:device/app", "wasi:http/proxy"),
    )
    .unwrap();
    let e = pack(src.path(), &mut Vec::new(), None, &mut |_| {}).unwrap_err();
    assert!(matches!(e, PackageError::UnknownWorld { .. }), "{e}");
}

#[test]
fn packed_manifest_lists_every_digest() {
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path());
    let mut out = Vec::new();
    pack(src.path(), &mut out, None, &mut |_| {}).unwrap();
    let i = read_manifest(&out[..], &limits()).unwrap();
    let text = String::from_utf8(i.manifest_bytes).unwrap();
    assert!(text.contains(&Digest::of(APP).to_hex()));
    assert!(text.contains(&Digest::of(b"h1{}").to_hex()));
    assert!(!text.contains(&"0".repeat(64)), "stale digest replaced");
}
