//! A package file with precompiled code: the plain file's archive, its end
//! marker replaced by `precompiled/<component-sha256>.{cwasm,sig,engine}`
//! entries (outside the signed manifest; the device checks their own
//! signature), gzipped again.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Tar block size (POSIX ustar).
const BLOCK: usize = 512;

/// Why a variant could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    /// The plain file is not a package this server can read.
    #[error("package: {0}")]
    Package(String),
    /// Reading or writing bytes failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The plain file as a tar stream (gunzipped when gzipped), at most `cap` bytes.
fn tar_bytes(file: &[u8], cap: u64) -> Result<Vec<u8>, VariantError> {
    let mut out = Vec::new();
    if file.starts_with(&[0x1f, 0x8b]) {
        GzDecoder::new(file).take(cap + 1).read_to_end(&mut out)?;
    } else {
        out = file.to_vec();
    }
    if out.len() as u64 > cap {
        return Err(VariantError::Package(format!(
            "over {cap} bytes uncompressed"
        )));
    }
    Ok(out)
}

/// Where the archive's end marker (the first all-zero header block) starts.
fn end_of_entries(tar: &[u8]) -> Result<usize, VariantError> {
    let mut at = 0usize;
    loop {
        let Some(block) = tar.get(at..at + BLOCK) else {
            return Err(VariantError::Package("archive has no end marker".into()));
        };
        if block.iter().all(|b| *b == 0) {
            return Ok(at);
        }
        let header = tar::Header::from_byte_slice(block);
        let size = header
            .entry_size()
            .map_err(|e| VariantError::Package(format!("tar header: {e}")))?;
        let data = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(BLOCK - 1))
            .map(|s| s / BLOCK * BLOCK)
            .ok_or_else(|| VariantError::Package("tar entry size".into()))?;
        at = at
            .checked_add(BLOCK + data)
            .ok_or_else(|| VariantError::Package("tar entry size".into()))?;
    }
}

/// The regular files of the archive whose paths are in `wanted`, by path.
pub fn extract(
    file: &[u8],
    cap: u64,
    wanted: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, VariantError> {
    let tar = tar_bytes(file, cap)?;
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut out = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        if wanted.contains(&path) && entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            (&mut entry).take(cap).read_to_end(&mut data)?;
            out.insert(path, data);
        }
    }
    Ok(out)
}

/// One component's precompiled code.
pub struct Artifact {
    /// sha256 (hex) of the component the code was compiled from.
    pub component_sha256: String,
    /// Engine hash it runs on.
    pub engine: String,
    /// The code.
    pub code: Vec<u8>,
    /// Its `.sig` text.
    pub signature: String,
}

/// The plain package `file` with `artifacts` appended, gzipped.
pub fn build(file: &[u8], cap: u64, artifacts: &[Artifact]) -> Result<Vec<u8>, VariantError> {
    let tar = tar_bytes(file, cap)?;
    let end = end_of_entries(&tar)?;
    let mut builder = tar::Builder::new(Vec::new());
    for a in artifacts {
        let base = format!("{}/{}", wasmdm_package::PRECOMPILED_DIR, a.component_sha256);
        for (suffix, bytes) in [
            ("engine", a.engine.as_bytes()),
            ("sig", a.signature.as_bytes()),
            ("cwasm", a.code.as_slice()),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, format!("{base}.{suffix}"), bytes)?;
        }
    }
    let appended = builder.into_inner()?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(tar.get(..end).unwrap_or_default())?;
    gz.write_all(&appended)?;
    Ok(gz.finish()?)
}
