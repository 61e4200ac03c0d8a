//! `wasmdm new` as a guest developer meets it: each kind of project it
//! makes builds with cargo as it is, packs with `wasmdm pack`, and runs
//! under `wasmdm run` in the device's sandbox with the output its template
//! promises.
//!
//! The three projects share one cargo target directory (each project's
//! `target` links to it) and the examples' Cargo.lock, so wit-bindgen is
//! built once and nothing is fetched (`--offline`: the crates the examples
//! use are already in cargo's cache after `scripts/build-guests.sh`). Skips
//! with a note where cargo or the wasm32-wasip2 target is missing.

mod device_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use device_support::repo;

fn wasmdm(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn have_wasip2() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
}

/// Runs a package until it prints a line containing `expect` (a service
/// does not end by itself), or `time` passes; returns what it printed.
fn run_until(dir: &Path, package: &str, expect: &str, time: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(["run", package])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + time;
    let mut printed = String::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if line.contains(expect) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    printed
}

#[test]
fn new_projects_build_pack_and_run_as_they_are() {
    if !have_wasip2() {
        eprintln!("note: rustup target wasm32-wasip2 missing; skipped (scripts/test.sh adds it)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared-target");
    std::fs::create_dir(&shared).unwrap();
    let cases = [
        ("command", "hello-cmd", "hello from hello-cmd"),
        ("app", "ticker", "tick 2"),
        ("objects", "my-object", "count 2"),
    ];
    for (kind, name, expect) in cases {
        let made = wasmdm(root.path(), &["new", "--kind", kind, name]);
        assert!(made.status.success(), "new {kind}: {made:?}");
        let dir = root.path().join(name);
        std::os::unix::fs::symlink(&shared, dir.join("target")).unwrap();
        std::fs::copy(
            repo().join("guest-examples/Cargo.lock"),
            dir.join("Cargo.lock"),
        )
        .unwrap();
        let built = Command::new("cargo")
            .args(["build", "--release", "--offline", "--quiet"])
            .env("CARGO_TARGET_DIR", &shared)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "cargo build of the {kind} project:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let packed = wasmdm(&dir, &["pack", "."]);
        assert!(packed.status.success(), "pack {kind}: {packed:?}");
        let package = format!("{name}-0.1.0.wdm");
        let inspected = wasmdm(&dir, &["inspect", &package]);
        let text = String::from_utf8_lossy(&inspected.stdout);
        assert!(inspected.status.success(), "inspect {kind}: {text}");
        let out = run_until(&dir, &package, expect, Duration::from_secs(60));
        assert!(out.contains(expect), "{kind} printed:\n{out}");
    }
    // A second `new` into an existing project changes nothing.
    let again = wasmdm(root.path(), &["new", "ticker"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{again:?}"
    );
}
