//! Building a package from a source directory: fills in digests, lists read-only assets, writes a
//! deterministic tar.gz (manifest first, then signature, then payload in path order).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::GzBuilder;
use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};
use crate::error::{PackageError, Result};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest, RawFile, parse_raw};
use crate::relpath::{self, MANIFEST_NAME, SIGNATURE_NAME};
use crate::signing::{SigningKey, sign_manifest};

/// Progress events from [`pack`], for CLI output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackProgress {
    /// A payload file was hashed.
    Hashed {
        /// Archive path.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// An entry was written to the archive.
    Added {
        /// Archive path.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// The archive is complete.
    Finished {
        /// Entries written (manifest and signature included).
        entries: usize,
        /// Sum of entry sizes.
        bytes: u64,
    },
}

/// Packs `dir` (which holds `manifest.toml` and the files it lists) into `out`, signing the
/// manifest when `sign` is given. Returns the manifest as written into the package.
pub fn pack<W: Write>(
    dir: &Path,
    out: W,
    sign: Option<&SigningKey>,
    progress: &mut dyn FnMut(PackProgress),
) -> Result<Manifest> {
    let manifest = prepare_manifest(dir, progress)?;
    let text = manifest.to_toml();
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PackageError::ManifestTooLarge {
            path: MANIFEST_NAME.into(),
            limit: MAX_MANIFEST_BYTES,
        });
    }

    let gz = GzBuilder::new().mtime(0).write(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    let archive_err = |e: io::Error| PackageError::io("write package", e);
    let mut entries = 0usize;
    let mut bytes = 0u64;

    append(&mut tar, MANIFEST_NAME, text.len() as u64, text.as_bytes()).map_err(archive_err)?;
    entries += 1;
    bytes += text.len() as u64;
    progress(PackProgress::Added {
        path: MANIFEST_NAME.into(),
        bytes: text.len() as u64,
    });
    if let Some(key) = sign {
        let sig = sign_manifest(key, text.as_bytes());
        append(&mut tar, SIGNATURE_NAME, sig.len() as u64, sig.as_bytes()).map_err(archive_err)?;
        entries += 1;
        bytes += sig.len() as u64;
        progress(PackProgress::Added {
            path: SIGNATURE_NAME.into(),
            bytes: sig.len() as u64,
        });
    }

    for (path, want) in manifest.payload() {
        let source = dir.join(&path);
        let ctx = || format!("read {}", source.display());
        let file = fs::File::open(&source).map_err(|e| PackageError::io(ctx(), e))?;
        let len = file
            .metadata()
            .map_err(|e| PackageError::io(ctx(), e))?
            .len();
        // Hash again while writing: a file edited since hashing must not ship under a stale digest.
        let mut hashing = HashingReader {
            inner: file.take(len),
            hasher: Sha256::new(),
            read: 0,
        };
        append(&mut tar, &path, len, &mut hashing)
            .map_err(|e| PackageError::io(format!("pack {path}"), e))?;
        let actual = Digest(hashing.hasher.finalize().into());
        if hashing.read != len || actual != want {
            return Err(PackageError::io(
                format!("pack {path}"),
                io::Error::other("file changed while packing; run pack again"),
            ));
        }
        entries += 1;
        bytes += len;
        progress(PackProgress::Added { path, bytes: len });
    }

    let gz = tar.into_inner().map_err(archive_err)?;
    let mut out = gz.finish().map_err(archive_err)?;
    out.flush().map_err(archive_err)?;
    progress(PackProgress::Finished { entries, bytes });
    Ok(manifest)
}

/// Deterministic header: regular file, mode 0644, mtime 0, uid/gid 0, no owner names.
fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    path: &str,
    len: u64,
    data: R,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(len);
    tar.append_data(&mut header, path, data)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads `dir/manifest.toml`, lists files below read-only sources, computes every digest and
/// validates the result.
fn prepare_manifest(dir: &Path, progress: &mut dyn FnMut(PackProgress)) -> Result<Manifest> {
    let path = dir.join(MANIFEST_NAME);
    let ctx = || format!("read {}", path.display());
    let len = fs::metadata(&path)
        .map_err(|e| PackageError::io(ctx(), e))?
        .len();
    if len > MAX_MANIFEST_BYTES {
        return Err(PackageError::ManifestTooLarge {
            path: MANIFEST_NAME.into(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let text = fs::read_to_string(&path).map_err(|e| PackageError::io(ctx(), e))?;
    let mut raw = parse_raw(&text)?;

    // Every file below a read-only source dir ships as a [[file]] (unless listed already).
    let component_files: BTreeSet<String> = raw.components.iter().map(|c| c.file.clone()).collect();
    let mut listed: BTreeSet<String> = raw.files.iter().map(|f| f.path.clone()).collect();
    let sources: Vec<(String, String)> = raw
        .components
        .iter()
        .flat_map(|c| {
            c.sandbox.readonly.iter().enumerate().map(move |(i, m)| {
                (
                    format!("component[{}].sandbox.readonly[{i}].source", c.id),
                    m.source.clone(),
                )
            })
        })
        .collect();
    for (key, source) in sources {
        relpath::check_relative(&source)
            .map_err(|e| PackageError::invalid(&key, format!("{source:?}: {e}")))?;
        let mut found = Vec::new();
        walk(dir, &source, &key, &mut found)?;
        for p in found {
            if !component_files.contains(&p) && listed.insert(p.clone()) {
                raw.files.push(RawFile {
                    path: p,
                    sha256: None,
                });
            }
        }
    }

    for c in &mut raw.components {
        relpath::check_relative(&c.file).map_err(|e| {
            PackageError::invalid(
                format!("component[{}].file", c.id),
                format!("{:?}: {e}", c.file),
            )
        })?;
        c.sha256 = Some(hash_file(dir, &c.file, progress)?.to_hex());
    }
    for f in &mut raw.files {
        relpath::check_relative(&f.path).map_err(|e| {
            PackageError::invalid(
                format!("file[{}].path", f.path),
                format!("{:?}: {e}", f.path),
            )
        })?;
        f.sha256 = Some(hash_file(dir, &f.path, progress)?.to_hex());
    }
    raw.resolve()
}

fn hash_file(dir: &Path, rel: &str, progress: &mut dyn FnMut(PackProgress)) -> Result<Digest> {
    let path = dir.join(rel);
    let ctx = || format!("read {}", path.display());
    let mut file = fs::File::open(&path).map_err(|e| PackageError::io(ctx(), e))?;
    let mut sink = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut sink).map_err(|e| PackageError::io(ctx(), e))?;
    let bytes = sink.written();
    let (_, digest) = sink.finish();
    progress(PackProgress::Hashed {
        path: rel.to_string(),
        bytes,
    });
    Ok(digest)
}

/// Collects regular files below `dir/rel` as archive paths, sorted. Symlinks are refused so a
/// package never ships something from outside its source tree by accident.
fn walk(dir: &Path, rel: &str, key: &str, out: &mut Vec<String>) -> Result<()> {
    let path = dir.join(rel);
    let ctx = || format!("list {}", path.display());
    let mut names = Vec::new();
    for entry in fs::read_dir(&path).map_err(|e| PackageError::io(ctx(), e))? {
        let entry = entry.map_err(|e| PackageError::io(ctx(), e))?;
        let name = entry.file_name().into_string().map_err(|n| {
            PackageError::invalid(key, format!("non-UTF-8 file name {n:?} in {rel:?}"))
        })?;
        let kind = entry.file_type().map_err(|e| PackageError::io(ctx(), e))?;
        names.push((name, kind));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in names {
        let child = format!("{rel}/{name}");
        if kind.is_symlink() {
            return Err(PackageError::invalid(
                key,
                format!("{child:?} is a symlink; copy the file instead"),
            ));
        } else if kind.is_dir() {
            walk(dir, &child, key, out)?;
        } else if kind.is_file() {
            relpath::check_relative(&child)
                .map_err(|e| PackageError::invalid(key, format!("{child:?}: {e}")))?;
            out.push(child);
        } else {
            return Err(PackageError::invalid(
                key,
                format!("{child:?} is not a regular file"),
            ));
        }
    }
    Ok(())
}
