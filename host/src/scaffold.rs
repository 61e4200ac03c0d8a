//! `wasmdm new`: a guest project that builds, packs and runs as it is, so a
//! developer's first component is a `cargo build` away. Three kinds: a
//! `wasi:cli/command` (runs and exits), an app (a service using the
//! device's lifecycle, config and log interfaces, state in `/data`), and an
//! app serving its own LwM2M object. The WIT the app kinds need is this
//! host's own (`wit/wasmdm.wit`), copied into the project.

use std::path::{Path, PathBuf};

/// The host's WIT, as guests generate their bindings from it.
pub const WASMDM_WIT: &str = include_str!("../../wit/wasmdm.wit");

/// wit-bindgen release the templates are written for (as the examples).
const WIT_BINDGEN: &str = "0.61";

/// The object id the objects template serves: the first of the LwM2M
/// registry's private range (26241-32768), which needs no registration.
const TEMPLATE_OBJECT: u16 = 26241;

/// What kind of guest to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A `wasi:cli/command`: runs, prints, exits.
    Command,
    /// A service: lifecycle, config and log interfaces, state in /data.
    App,
    /// A service that serves its own LwM2M object.
    Objects,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0:?} cannot name a package and a crate: use [a-z][a-z0-9-]*, at most 64 characters")]
    BadName(String),
    #[error("{0} already exists and is not empty")]
    NotEmpty(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A name both a wasmdm package (`[a-z0-9][a-z0-9-_.]{0,63}`) and a Cargo
/// binary accept, and that names the same file in both.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64
        && !name.ends_with('-')
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// The project's files, relative to its directory.
pub fn files(name: &str, kind: Kind) -> Result<Vec<(PathBuf, String)>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let object = TEMPLATE_OBJECT.to_string();
    let (kind_name, world, main, description) = match kind {
        Kind::Command => (
            "command",
            "wasi:cli/command",
            include_str!("../templates/new/command.rs"),
            "A command: runs and exits",
        ),
        Kind::App => (
            "app",
            "wasmdm:device/app",
            include_str!("../templates/new/app.rs"),
            "A service that counts in /data until the device stops it",
        ),
        Kind::Objects => (
            "app serving an LwM2M object",
            "wasmdm:device/app",
            include_str!("../templates/new/objects.rs"),
            "A service serving its own LwM2M object",
        ),
    };
    let uses_wit = kind != Kind::Command;
    let dependencies = if uses_wit {
        format!("wit-bindgen = \"{WIT_BINDGEN}\"\n")
    } else {
        String::new()
    };
    let config = if uses_wit {
        "\n[config]\ninterval-ms = \"1000\"\n"
    } else {
        ""
    };
    let sandbox = match kind {
        Kind::Command => String::new(),
        Kind::App => "data-quota = \"1MiB\"\n".to_string(),
        Kind::Objects => format!("objects = [{object}]\n"),
    };
    let wit_note = if uses_wit {
        " `wit/wasmdm.wit` is the device's\ninterface, as this wasmdm version has it;"
    } else {
        ""
    };
    let vars = [
        ("name", name),
        ("kind", kind_name),
        ("world", world),
        ("description", description),
        ("dependencies", dependencies.as_str()),
        ("config", config),
        ("sandbox", sandbox.as_str()),
        ("object", object.as_str()),
        ("wit_note", wit_note),
    ];
    let mut out = vec![
        (
            PathBuf::from("Cargo.toml"),
            fill(include_str!("../templates/new/Cargo.toml.in"), &vars),
        ),
        (
            PathBuf::from(".cargo/config.toml"),
            include_str!("../templates/new/cargo-config.toml").to_string(),
        ),
        (
            PathBuf::from(".gitignore"),
            include_str!("../templates/new/gitignore").to_string(),
        ),
        (
            PathBuf::from("manifest.toml"),
            fill(include_str!("../templates/new/manifest.toml.in"), &vars),
        ),
        (
            PathBuf::from("README.md"),
            fill(include_str!("../templates/new/README.md.in"), &vars),
        ),
        (PathBuf::from("src/main.rs"), fill(main, &vars)),
    ];
    if uses_wit {
        out.push((PathBuf::from("wit/wasmdm.wit"), WASMDM_WIT.to_string()));
    }
    Ok(out)
}

/// Writes a new project into `dir` (created; an existing one must be
/// empty), named `name`; returns the files written.
pub fn create(dir: &Path, name: &str, kind: Kind) -> Result<Vec<PathBuf>, ScaffoldError> {
    let files = files(name, kind)?;
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let mut written = Vec::with_capacity(files.len());
    for (rel, text) in files {
        let path = dir.join(&rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_placeholders_all_filled() {
        for bad in [
            "",
            "Upper",
            "1st",
            "a_b",
            "a.b",
            "trailing-",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(files(bad, Kind::App), Err(ScaffoldError::BadName(_))),
                "{bad}"
            );
        }
        for kind in [Kind::Command, Kind::App, Kind::Objects] {
            let files = files("my-app", kind).unwrap();
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{}: {text}", path.display());
            }
            let manifest = &files
                .iter()
                .find(|(p, _)| p == Path::new("manifest.toml"))
                .unwrap()
                .1;
            let parsed: toml::Value = toml::from_str(manifest).unwrap();
            assert_eq!(parsed["package"]["name"].as_str(), Some("my-app"));
            let has_wit = files.iter().any(|(p, _)| p == Path::new("wit/wasmdm.wit"));
            assert_eq!(has_wit, kind != Kind::Command);
        }
    }

    #[test]
    fn an_occupied_directory_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let e = create(dir.path(), "app", Kind::App).unwrap_err();
        assert!(matches!(e, ScaffoldError::NotEmpty(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let fresh = dir.path().join("new");
        let written = create(&fresh, "app", Kind::App).unwrap();
        assert!(written.contains(&PathBuf::from("src/main.rs")));
        assert!(fresh.join("wit/wasmdm.wit").is_file());
    }
}
