//! The variants on disk: `<data_dir>/precompiled/<file-sha256>/<engine>.pkg`
//! with its own sha256 in `<engine>.sha256` (for the CoAP ETag). Capped in
//! total size (oldest first out) and deleted with their software file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::engine::valid_hash;

/// Default cap on all cached variants, bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

fn valid_sha(s: &str) -> bool {
    s.len() == 64 && valid_hash(s)
}

/// The variant of file `sha` for engine `engine`, if well named and cached.
pub fn variant_path(base: &Path, sha: &str, engine: &str) -> Option<PathBuf> {
    if !valid_sha(sha) || !valid_hash(engine) {
        return None;
    }
    let p = base.join(sha).join(format!("{engine}.pkg"));
    p.is_file().then_some(p)
}

/// The variant's own sha256 (hex), if cached.
pub fn variant_sha(base: &Path, sha: &str, engine: &str) -> Option<String> {
    variant_path(base, sha, engine)?;
    let text = fs::read_to_string(base.join(sha).join(format!("{engine}.sha256"))).ok()?;
    valid_sha(text.trim()).then(|| text.trim().to_string())
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Stores a variant (its digest first: the `.pkg` makes it complete), then
/// evicts the oldest others until all fit in `cap` bytes, except those of
/// files `in_use` (a running campaign may still deliver them: evicting one
/// would fail its pulls with 4.04), so the cap may be exceeded while they run.
pub fn store(
    base: &Path,
    sha: &str,
    engine: &str,
    bytes: &[u8],
    cap: u64,
    in_use: &dyn Fn(&str) -> bool,
) -> std::io::Result<()> {
    if !valid_sha(sha) || !valid_hash(engine) {
        return Err(std::io::Error::other("bad variant name"));
    }
    let dir = base.join(sha);
    fs::create_dir_all(&dir)?;
    let digest = hex::encode(Sha256::digest(bytes));
    write_durably(&dir.join(format!("{engine}.sha256")), digest.as_bytes())?;
    let pkg = dir.join(format!("{engine}.pkg"));
    write_durably(&pkg, bytes)?;
    fs::File::open(&dir)?.sync_all()?;
    evict(base, cap, &pkg, in_use);
    Ok(())
}

/// Removes the oldest variants (by modification time) until the total is
/// at most `cap`; never `keep` nor a variant of a file `in_use`.
fn evict(base: &Path, cap: u64, keep: &Path, in_use: &dyn Fn(&str) -> bool) {
    let mut all: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    let Ok(dirs) = fs::read_dir(base) else {
        return;
    };
    for d in dirs.flatten() {
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "pkg")
                && let Ok(m) = f.metadata()
            {
                let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                all.push((t, m.len(), p));
            }
        }
    }
    let mut total: u64 = all.iter().map(|(_, n, _)| n).sum();
    all.sort();
    for (_, n, p) in all {
        if total <= cap {
            break;
        }
        let file = p
            .parent()
            .and_then(Path::file_name)
            .and_then(|f| f.to_str());
        if p == keep || file.is_none_or(in_use) {
            continue;
        }
        if fs::remove_file(&p).is_ok() {
            let _ = fs::remove_file(p.with_extension("sha256"));
            tracing::info!("precompiled variant {} evicted (cache cap)", p.display());
            total = total.saturating_sub(n);
        }
    }
}

/// Deletes every variant of file `sha` (the file was deleted or expired).
pub fn remove_file(base: &Path, sha: &str) -> std::io::Result<()> {
    if !valid_sha(sha) {
        return Ok(());
    }
    match fs::remove_dir_all(base.join(sha)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_evicts_oldest_and_removes_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let unused = |_: &str| false;
        store(dir.path(), &a, "0011", &[1; 600], 1000, &unused).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A variant of a file a campaign uses stays, over the cap.
        store(dir.path(), &b, "0011", &[2; 600], 1000, &|f| f == a).unwrap();
        assert!(variant_path(dir.path(), &a, "0011").is_some(), "in use");
        std::thread::sleep(std::time::Duration::from_millis(20));
        store(dir.path(), &b, "0022", &[3; 100], 1000, &unused).unwrap();
        assert!(variant_path(dir.path(), &a, "0011").is_none(), "evicted");
        assert!(variant_path(dir.path(), &b, "0011").is_some());
        assert_eq!(
            variant_sha(dir.path(), &b, "0011").unwrap(),
            hex::encode(Sha256::digest([2u8; 600]))
        );
        assert!(variant_path(dir.path(), &b, "../x").is_none());
        remove_file(dir.path(), &b).unwrap();
        assert!(variant_path(dir.path(), &b, "0011").is_none());
    }
}
