//! Builders for test archives, including hostile ones the `tar` Builder would refuse to write.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use crate::{Digest, Limits, PackageError, Verified, VerifyingKey, unpack};

/// Writes tar entries with raw headers so any name, type or link can be produced.
pub struct RawTar<W: Write> {
    builder: tar::Builder<W>,
}

impl RawTar<Vec<u8>> {
    pub fn new() -> Self {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

impl<W: Write> RawTar<W> {
    pub fn over(out: W) -> Self {
        RawTar {
            builder: tar::Builder::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        self.builder.into_inner().unwrap()
    }

    pub fn entry(
        &mut self,
        name: &str,
        kind: EntryType,
        link: &str,
        size: u64,
        data: impl Read,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Regular, "", data.len() as u64, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, EntryType::Directory, "", 0, io::empty())
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub const APP: &[u8] = b"\0asm pretend component";
pub const PAGE: &[u8] = b"<h1>hi</h1>";

/// A manifest listing `app.wasm` (component) and `assets/index.html`, with correct digests.
pub fn manifest() -> String {
    manifest_with(Digest::of(APP), Digest::of(PAGE))
}

pub fn manifest_with(app: Digest, page: Digest) -> String {
    format!(
        r#"manifest-version = 1
[package]
name = "demo"
version = "1.0.0"
[[component]]
id = "app"
file = "app.wasm"
sha256 = "{app}"
world = "wasmdm:device/app"
[component.sandbox]
readonly = [{{ source = "assets", guest = "/assets" }}]
[[file]]
path = "assets/index.html"
sha256 = "{page}"
"#
    )
}

/// A well-formed package (uncompressed tar) to start hostile variants from.
pub fn good_tar() -> RawTar<Vec<u8>> {
    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes())
        .file("app.wasm", APP)
        .file("assets/index.html", PAGE);
    t
}

/// A scratch root holding `staging/`; lets tests prove nothing lands beside staging.
pub struct Scratch {
    pub root: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("staging")).unwrap();
        Scratch { root }
    }

    pub fn staging(&self) -> PathBuf {
        self.root.path().join("staging")
    }

    pub fn unpack(
        &self,
        bytes: &[u8],
        limits: &Limits,
        keys: &[VerifyingKey],
    ) -> Result<Verified, PackageError> {
        unpack(bytes, &self.staging(), limits, keys)
    }

    /// Everything under the root other than `staging/` and its contents.
    pub fn outside_staging(&self) -> Vec<PathBuf> {
        fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &self.staging())
            .collect()
    }

    pub fn staged(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.staging().join(rel)).ok()
    }
}

/// Builds a source dir for `pack`: manifest without digests, a component, assets in subdirs.
pub fn source_dir(dir: &Path) {
    let manifest = r#"manifest-version = 1
[package]
name = "demo"
version = "1.0.0"
[[component]]
id = "app"
file = "app.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
world = "wasmdm:device/app"
[component.sandbox]
readonly = [{ source = "assets", guest = "/assets" }]
[[file]]
path = "assets/index.html"
"#;
    fs::write(dir.join("manifest.toml"), manifest).unwrap();
    fs::write(dir.join("app.wasm"), APP).unwrap();
    fs::create_dir_all(dir.join("assets/css")).unwrap();
    fs::write(dir.join("assets/index.html"), PAGE).unwrap();
    fs::write(dir.join("assets/css/site.css"), b"h1{}").unwrap();
    fs::write(dir.join("unrelated.txt"), b"not shipped").unwrap();
}
