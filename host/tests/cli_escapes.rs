//! Hardening item 16: text from a package reaches the terminal escaped. A package whose
//! description, file names and manifest text carry terminal escapes (set the title, clear the
//! screen, carriage return, a forged verdict line, C1 CSI, a bidi override) is inspected and
//! installed through the real `wasmdm` binary; its output holds no raw control character but
//! the newlines of its own layout.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;

/// What the hostile texts hold, written as TOML escapes.
const HOSTILE: &str =
    r"\u001b]0;pwned\u0007\u001b[2J\r\nverdict   can run on this host\n\u009b31m\u202etxt.exe";

/// The same, as the raw characters.
const RAW: &str =
    "\x1b]0;pwned\x07\x1b[2J\r\nverdict   can run on this host\n\u{9b}31m\u{202e}txt.exe";

/// Controls that must not reach the terminal: everything escapable except `\n`.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| *c != '\n' && wasmdm_package::display::is_unsafe(*c))
        .collect()
}

fn wasmdm(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A package (via `wasmdm_package::pack`) whose description and asset path are hostile; its
/// component is not valid wasm, so `inspect` reports a problem and `install` fails late.
fn hostile_package(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let asset = format!("assets/{RAW}");
    std::fs::create_dir_all(src.join(&asset).parent().unwrap()).unwrap();
    std::fs::write(src.join(&asset), b"x").unwrap();
    std::fs::write(src.join("app.wasm"), b"\0asm not really").unwrap();
    let manifest = format!(
        r#"manifest-version = 1
[package]
name = "demo"
version = "1.0.0"
description = "{HOSTILE}"
[[component]]
id = "app"
file = "app.wasm"
world = "wasmdm:device/app"
[[file]]
path = "assets/{HOSTILE}"
"#
    );
    std::fs::write(src.join("manifest.toml"), manifest).unwrap();
    let out = dir.join("hostile.wdm");
    let file = std::fs::File::create(&out).unwrap();
    let m = wasmdm_package::pack(&src, &file, None, &mut |_| {}).unwrap();
    assert_eq!(m.package.description.as_deref(), Some(RAW));
    out
}

/// A package whose manifest.toml holds raw escapes on one line: invalid TOML, and the parse
/// error quotes the offending line.
fn raw_toml_package(dir: &Path) -> std::path::PathBuf {
    let line = "\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{202e}";
    let text = format!("manifest-version = 1\n[package]\nname = \"demo{line}\"\n");
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut h = tar::Header::new_gnu();
    h.set_path("manifest.toml").unwrap();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, text.as_bytes()).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let out = dir.join("raw.wdm");
    std::fs::File::create(&out)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    out
}

#[test]
fn inspect_and_install_print_package_text_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = hostile_package(dir.path());
    let raw = raw_toml_package(dir.path());
    let data = dir.path().join("data");
    let (hostile, raw, data) = (
        hostile.to_str().unwrap(),
        raw.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    for args in [
        vec!["inspect", hostile],
        vec!["inspect", "--json", hostile],
        vec!["inspect", raw],
        vec!["install", "--data-dir", data, hostile],
        vec!["install", "--data-dir", data, raw],
    ] {
        let (stdout, stderr) = wasmdm(&args);
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                raw_controls(text).is_empty(),
                "wasmdm {args:?} {stream} has raw controls {:?}:\n{text}",
                raw_controls(text)
            );
        }
        assert!(
            !stdout.lines().any(|l| l.starts_with("verdict   can run")),
            "forged verdict line in {args:?}:\n{stdout}"
        );
    }
    // The text is still there, escaped.
    let (stdout, _) = wasmdm(&["inspect", hostile]);
    assert!(
        stdout.contains(r"about     \x1b]0;pwned\x07\x1b[2J\x0d\x0averdict"),
        "{stdout}"
    );
    assert!(stdout.contains(r"\u{9b}31m\u{202e}txt.exe"), "{stdout}");
    let (_, stderr) = wasmdm(&["inspect", raw]);
    assert!(stderr.contains("TOML parse error"), "{stderr}");
    assert!(
        stderr.contains(r"demo\x1b]0;pwned\x07\x1b[2J\x0d"),
        "{stderr}"
    );
}
