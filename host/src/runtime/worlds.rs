//! What this host offers a component, and a check of a component's imports
//! against it that needs no compile.
//!
//! wasmtime's linker reports only the first import it cannot satisfy, and only
//! after the whole component is compiled (5-8 s for an 18 MB componentize-py
//! app). Reading the import names from the binary takes milliseconds, so
//! `pack`, `inspect` and install check them first and name every missing
//! interface, the worlds this host offers and the usual fix. The linker stays
//! the final authority (function signatures, resource types): this check only
//! refuses what the linker would refuse too.

use super::spec::World;
use std::fmt;

/// WASI 0.2 interfaces `wasmtime_wasi::p2::add_to_linker_async` defines
/// (wasmtime-wasi 48 ships them as version 0.2.12; every 0.2.x import
/// resolves to them, as in wasmtime's linker).
const WASI_P2: &[&str] = &[
    "wasi:io/error@0.2.12",
    "wasi:io/poll@0.2.12",
    "wasi:io/streams@0.2.12",
    "wasi:clocks/wall-clock@0.2.12",
    "wasi:clocks/monotonic-clock@0.2.12",
    "wasi:filesystem/types@0.2.12",
    "wasi:filesystem/preopens@0.2.12",
    "wasi:random/random@0.2.12",
    "wasi:random/insecure@0.2.12",
    "wasi:random/insecure-seed@0.2.12",
    "wasi:cli/exit@0.2.12",
    "wasi:cli/environment@0.2.12",
    "wasi:cli/stdin@0.2.12",
    "wasi:cli/stdout@0.2.12",
    "wasi:cli/stderr@0.2.12",
    "wasi:cli/terminal-input@0.2.12",
    "wasi:cli/terminal-output@0.2.12",
    "wasi:cli/terminal-stdin@0.2.12",
    "wasi:cli/terminal-stdout@0.2.12",
    "wasi:cli/terminal-stderr@0.2.12",
    "wasi:sockets/network@0.2.12",
    "wasi:sockets/instance-network@0.2.12",
    "wasi:sockets/tcp@0.2.12",
    "wasi:sockets/tcp-create-socket@0.2.12",
    "wasi:sockets/udp@0.2.12",
    "wasi:sockets/udp-create-socket@0.2.12",
    "wasi:sockets/ip-name-lookup@0.2.12",
];

/// The wasmdm interfaces (`wit/wasmdm.wit`) a `wasmdm:device/app` also gets.
const WASMDM: &[&str] = &[
    "wasmdm:device/lifecycle@0.1.0",
    "wasmdm:device/config@0.1.0",
    "wasmdm:device/log@0.1.0",
    "wasmdm:device/objects@0.1.0",
];

/// Every interface `world` gives a component on this host.
pub fn offered(world: World) -> Vec<&'static str> {
    let mut all = WASI_P2.to_vec();
    if world == World::App {
        all.extend_from_slice(WASMDM);
    }
    all
}

/// One line per world this host runs, for messages and `inspect`.
pub fn worlds_summary() -> String {
    "wasi:cli/command (WASI 0.2: wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, \
     wasi:random, wasi:sockets, any 0.2.x) and wasmdm:device/app (the same plus \
     wasmdm:device/lifecycle, config, log and objects @0.1.x)"
        .to_string()
}

/// Why a core module is refused, and how to make a component of it.
pub const CORE_MODULE_HINT: &str = "a core wasm module, not a component: build for \
     wasm32-wasip2 (`cargo build --target wasm32-wasip2`), or make a component of a \
     wasip1 module with `wasm-tools component new app.wasm --adapt \
     wasi_snapshot_preview1.command.wasm`";

/// Top-level import and export names of a component, read without compiling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentNames {
    /// Imported names, e.g. `wasi:cli/environment@0.2.6`.
    pub imports: Vec<String>,
    /// Exported names, e.g. `wasi:cli/run@0.2.6`.
    pub exports: Vec<String>,
}

/// What a file is, judged by its preamble and top-level sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binary {
    /// A component with these names.
    Component(ComponentNames),
    /// A core wasm module (e.g. a `wasm32-wasip1` build, or a
    /// `wasm32-unknown-unknown` one not yet turned into a component).
    CoreModule,
}

/// Reads the top-level imports and exports. Errors name what is wrong with
/// the bytes (not wasm, truncated, malformed section).
pub fn read_names(bytes: &[u8]) -> Result<Binary, String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut names = ComponentNames::default();
    // Nesting: 1 = the outer component; nested modules and components open
    // with their own Version and close with an End.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a valid wasm binary: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Ok(Binary::CoreModule);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| format!("bad import section: {e}"))?;
                    names.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| format!("bad export section: {e}"))?;
                    names.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(Binary::Component(names))
}

/// `ns:pkg/iface` and its version (if any) of an import name.
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, v)) => (base, Some(v)),
        None => (name, None),
    }
}

/// The part of a version that decides compatibility, as wasmtime's linker
/// does it (`wasmtime_environ::component::alternate_lookup_key`): the major
/// for 1.x and later, major.minor for 0.x (x > 0); anything else (0.0.x, a
/// pre-release, no version) only matches exactly.
fn compat_track(version: &str) -> Option<String> {
    let v = semver::Version::parse(version).ok()?;
    if !v.pre.is_empty() {
        None
    } else if v.major != 0 {
        Some(format!("{}", v.major))
    } else if v.minor != 0 {
        Some(format!("0.{}", v.minor))
    } else {
        None
    }
}

/// Whether `import` resolves to one of `offered` (same interface, same
/// compatibility track, or the exact same name).
fn satisfied(import: &str, offered: &[&str]) -> bool {
    let (base, version) = split_version(import);
    offered.iter().any(|o| {
        if *o == import {
            return true;
        }
        let (obase, oversion) = split_version(o);
        if obase != base {
            return false;
        }
        match (
            version.and_then(compat_track),
            oversion.and_then(compat_track),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    })
}

/// A component imports what the host's world does not offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingImports {
    /// The world the component was checked against.
    pub world: World,
    /// Every import the world lacks, in the component's order.
    pub missing: Vec<String>,
    /// What usually fixes it, if we know.
    pub hints: Vec<String>,
}

impl fmt::Display for MissingImports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imports {} interface(s) that world {} on this host does not offer: {}. \
             This host offers {}",
            self.missing.len(),
            self.world,
            self.missing.join(", "),
            worlds_summary()
        )?;
        for hint in &self.hints {
            write!(f, ". Hint: {hint}")?;
        }
        Ok(())
    }
}

/// Checks every import against `world`; lists all that are missing.
pub fn check_imports(world: World, names: &ComponentNames) -> Result<(), MissingImports> {
    let offered = offered(world);
    let missing: Vec<String> = names
        .imports
        .iter()
        .filter(|i| !satisfied(i, &offered))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hints = hints(world, &missing);
    Err(MissingImports {
        world,
        missing,
        hints,
    })
}

/// The usual causes of missing imports, each with its fix.
fn hints(world: World, missing: &[String]) -> Vec<String> {
    let mut hints = Vec::new();
    let has = |prefix: &str| missing.iter().any(|m| m.starts_with(prefix));
    if has("wasi:http/") {
        hints.push(
            "wasi:http is not offered. ComponentizeJS (componentize-js, jco componentize) \
             imports it unless told not to: build with `--disable http fetch-event` \
             (`disableFeatures: [\"http\", \"fetch-event\"]`) and disable the other features \
             the app does not use; componentize-py: target a world without wasi:http \
             (e.g. `-w wasi:cli/command@0.2.x`)"
                .to_string(),
        );
    }
    if world == World::Command && has("wasmdm:device/") {
        hints.push(
            "the wasmdm:device interfaces are offered to world \"wasmdm:device/app\": \
             declare `world = \"wasmdm:device/app\"` for this component in manifest.toml"
                .to_string(),
        );
    }
    let wasi_other = missing.iter().any(|m| {
        let (base, v) = split_version(m);
        base.starts_with("wasi:") && v.is_some_and(|v| !v.starts_with("0.2."))
    });
    if wasi_other {
        hints.push(
            "this host runs WASI 0.2 (wasm32-wasip2) components; rebuild against WASI 0.2.x"
                .to_string(),
        );
    }
    if missing.iter().any(|m| !m.contains(':')) {
        hints.push(
            "plain-named imports (not `ns:pkg/interface`) come from a world of the app's own; \
             a device app may import only WASI 0.2 and wasmdm:device"
                .to_string(),
        );
    }
    hints
}

/// Whether `names` export a `wasi:cli/run` 0.2.x (what the runtime calls).
pub fn exports_run(names: &ComponentNames) -> bool {
    names
        .exports
        .iter()
        .any(|e| satisfied(e, &["wasi:cli/run@0.2.12"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(imports: &[&str]) -> ComponentNames {
        ComponentNames {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: vec!["wasi:cli/run@0.2.0".into()],
        }
    }

    #[test]
    fn any_compatible_wasi_version_is_satisfied() {
        let ok = names(&[
            "wasi:cli/environment@0.2.0",
            "wasi:io/streams@0.2.6",
            "wasi:io/streams@0.2.99",
            "wasi:cli/stdout@0.2.12",
        ]);
        assert_eq!(check_imports(World::Command, &ok), Ok(()));
        assert!(exports_run(&ok));
    }

    #[test]
    fn every_missing_import_is_listed_with_the_worlds_and_a_hint() {
        let n = names(&[
            "wasi:cli/environment@0.2.3",
            "wasi:http/types@0.2.3",
            "wasi:http/outgoing-handler@0.2.3",
            "wasi:io/streams@0.3.0",
            "wasmdm:device/log@0.1.0",
            "my-own-func",
        ]);
        let e = check_imports(World::Command, &n).unwrap_err();
        assert_eq!(
            e.missing,
            [
                "wasi:http/types@0.2.3",
                "wasi:http/outgoing-handler@0.2.3",
                "wasi:io/streams@0.3.0",
                "wasmdm:device/log@0.1.0",
                "my-own-func"
            ]
        );
        let text = e.to_string();
        assert!(text.contains("imports 5 interface(s)"), "{text}");
        assert!(text.contains("world wasi:cli/command"), "{text}");
        assert!(text.contains("This host offers wasi:cli/command"), "{text}");
        assert!(text.contains("--disable http"), "{text}");
        assert!(
            text.contains("declare `world = \"wasmdm:device/app\"`"),
            "{text}"
        );
        assert!(text.contains("WASI 0.2"), "{text}");
        assert!(text.contains("plain-named imports"), "{text}");
        // Under the app world the wasmdm interface is offered.
        let e = check_imports(World::App, &n).unwrap_err();
        assert_eq!(e.missing.len(), 4);
        assert!(!e.to_string().contains("declare `world"));
    }

    #[test]
    fn versions_follow_the_linker_rules() {
        assert!(satisfied("wasmdm:device/log@0.1.5", WASMDM));
        assert!(!satisfied("wasmdm:device/log@0.2.0", WASMDM));
        assert!(!satisfied("wasmdm:device/log", WASMDM));
        assert!(!satisfied("wasi:cli/stdout@0.2.0-rc-2023-11-10", WASI_P2));
        assert_eq!(compat_track("1.4.2").as_deref(), Some("1"));
        assert_eq!(compat_track("0.0.3"), None);
    }

    #[test]
    fn core_modules_and_garbage_are_told_apart() {
        assert_eq!(read_names(b"\0asm\x01\0\0\0"), Ok(Binary::CoreModule));
        assert!(read_names(b"garbage").is_err());
        assert!(read_names(b"\0asm\x0d\0\x01\0\x0b\xff").is_err());
    }
}
