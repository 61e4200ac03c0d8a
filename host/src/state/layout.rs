//! Where things live under the data directory.
//!
//! ```text
//! <data>/lock                         process lock (DirLock)
//! <data>/packages/<name>/record.json  installed package record, written last
//! <data>/packages/<name>/<gen>/       files of one installed generation
//! <data>/deliveries/<slot>/           package.part, progress.json, staging/, delivered.json
//! <data>/cache/<sha>-<engine>.cwasm   precompiled components (derived, disposable)
//! <data>/appdata/<package>/<comp>/    private /data of a component; survives upgrades
//! ```

use super::{StateError, is_temp_name};
use std::path::{Path, PathBuf};

/// The data directory layout.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// True for names safe as a single path segment under our directories
/// (`[a-z0-9][a-z0-9-_.]{0,63}`, the manifest's name rule).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    b.len() <= 64
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

impl DataDir {
    /// The layout of `root` without touching the disk (read-only users such
    /// as `wasmdm logs`).
    pub fn at(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    /// Creates the directory tree if needed.
    pub fn create(root: &Path) -> Result<DataDir, StateError> {
        let d = DataDir {
            root: root.to_path_buf(),
        };
        for p in [
            d.root.clone(),
            d.packages(),
            d.deliveries(),
            d.cache(),
            d.appdata_root(),
        ] {
            std::fs::create_dir_all(&p).map_err(|e| StateError::io("create dir", &p, e))?;
        }
        Ok(d)
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// All installed packages.
    pub fn packages(&self) -> PathBuf {
        self.root.join("packages")
    }
    /// One installed package.
    pub fn package(&self, name: &str) -> PathBuf {
        self.packages().join(name)
    }
    /// The record that makes a package installed.
    pub fn package_record(&self, name: &str) -> PathBuf {
        self.package(name).join("record.json")
    }
    /// All delivery slots.
    pub fn deliveries(&self) -> PathBuf {
        self.root.join("deliveries")
    }
    /// One delivery slot.
    pub fn delivery(&self, slot: &str) -> PathBuf {
        self.deliveries().join(slot)
    }
    /// Precompiled code.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// All private app data.
    pub fn appdata_root(&self) -> PathBuf {
        self.root.join("appdata")
    }
    /// Private data of one component.
    pub fn appdata(&self, package: &str, component: &str) -> PathBuf {
        self.appdata_root().join(package).join(component)
    }

    /// `<data>/logs`: per-component rotating log files.
    pub fn logs_root(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `<data>/logs/<package>/<component>.log`.
    pub fn log_file(&self, package: &str, component: &str) -> PathBuf {
        self.logs_root()
            .join(package)
            .join(format!("{component}.log"))
    }

    /// `<data>/logs/<package>/<component>.exit.json`: the last exit and crash
    /// loop of a component, for `wasmdm list` from another process.
    pub fn exit_file(&self, package: &str, component: &str) -> PathBuf {
        self.logs_root()
            .join(package)
            .join(format!("{component}.exit.json"))
    }

    /// Removes temp files left by an interrupted [`super::atomic_write`] anywhere in
    /// our own directories (not inside app data, which belongs to the apps).
    pub fn remove_temp_files(&self) -> Result<usize, StateError> {
        let mut n = 0;
        for top in [self.packages(), self.deliveries(), self.cache()] {
            n += remove_temps_in(&top)?;
        }
        Ok(n)
    }
}

fn remove_temps_in(dir: &Path) -> Result<usize, StateError> {
    let mut n = 0;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StateError::io("read dir", dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| StateError::io("read dir", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let is_temp = name.to_str().is_some_and(is_temp_name);
        let ft = entry
            .file_type()
            .map_err(|e| StateError::io("stat", &path, e))?;
        if is_temp {
            if ft.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .map_err(|e| StateError::io("remove", &path, e))?;
            n += 1;
        } else if ft.is_dir() && !path.ends_with("staging") {
            n += remove_temps_in(&path)?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("counter"));
        assert!(valid_name("a-b_c.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("A"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn temp_files_are_removed_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::create(dir.path()).unwrap();
        std::fs::create_dir_all(d.package("p")).unwrap();
        std::fs::write(d.package("p").join(".tmp-1-record.json"), b"x").unwrap();
        std::fs::write(d.package("p").join("keep"), b"x").unwrap();
        std::fs::write(d.cache().join(".tmp-2-a.cwasm"), b"x").unwrap();
        assert_eq!(d.remove_temp_files().unwrap(), 2);
        assert!(d.package("p").join("keep").exists());
    }
}
