//! Archive-relative paths: the one rule set shared by the manifest, the archive reader and `pack`.

/// Longest path accepted, in bytes (fits the GNU tar long-name path and common filesystems).
pub const MAX_PATH_BYTES: usize = 255;

/// Names reserved for package metadata; the manifest may not list them as payload.
pub const MANIFEST_NAME: &str = "manifest.toml";
/// Signature entry name (see [`crate::signing`]).
pub const SIGNATURE_NAME: &str = "manifest.sig";

/// Checks that `path` is relative and normalised: no leading `/`, no `.` or `..` segments, no empty
/// segments (so no trailing `/`), no backslash or NUL, at most [`MAX_PATH_BYTES`] bytes.
/// Returns the reason when it is not, for the caller to wrap with context.
pub fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path is {} bytes, longer than {MAX_PATH_BYTES}",
            path.len()
        ));
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\\') {
        return Err("backslash in path".into());
    }
    if path.contains('\0') {
        return Err("NUL in path".into());
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("empty path segment".into()),
            "." => return Err("'.' path segment".into()),
            ".." => return Err("'..' path segment".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Checks an absolute guest mount path (`/assets`): absolute, normalised, not `/` itself.
pub fn check_guest_path(path: &str) -> Result<(), String> {
    let rest = path
        .strip_prefix('/')
        .ok_or("guest path must be absolute")?;
    if rest.is_empty() {
        return Err("guest path must not be '/'".into());
    }
    check_relative(rest)
}

/// True when `path` is `dir` itself or lies below it (segment-wise, so `assets2/x` is not in `assets`).
pub fn is_within(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_relative_paths() {
        for ok in [
            "a",
            "counter.wasm",
            "assets/index.html",
            "a/b/c.d",
            ".hidden",
            "a..b",
        ] {
            assert_eq!(check_relative(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_unsafe_paths() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "/etc/x",
            "../x",
            "a/../x",
            "a/..",
            "./a",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            long.as_str(),
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_relative(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn guest_paths_are_absolute_and_normal() {
        assert!(check_guest_path("/assets").is_ok());
        assert!(check_guest_path("/srv/www").is_ok());
        for bad in ["/", "assets", "/a/../b", "//a", "/a/"] {
            assert!(check_guest_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn within_is_segment_wise() {
        assert!(is_within("assets/x", "assets"));
        assert!(is_within("assets", "assets"));
        assert!(!is_within("assets2/x", "assets"));
        assert!(is_within("/data/x", "/data"));
    }
}
