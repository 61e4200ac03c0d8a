//! Shared helpers for the runtime integration tests: build packages from the
//! example guests (guest-examples/out, built by scripts/build-guests.sh) and
//! drive the runtime.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmdm::runtime::{
    ComponentState, ComponentStatus, InstalledInfo, Runtime, RuntimeConfig, RuntimeError,
};

/// guest-examples/out; tests fail (not skip) when the guests are missing.
pub fn guests() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out");
    assert!(
        p.join("counter.wasm").exists(),
        "guest components missing in {}: run scripts/build-guests.sh first",
        p.display()
    );
    p
}

pub fn guest(name: &str) -> PathBuf {
    guests().join(format!("{name}.wasm"))
}

/// A package with one component `id` built from guest `guest`; `sandbox` is the
/// body of `[component.sandbox]`, `extra` is appended to the manifest.
pub fn package(
    name: &str,
    version: &str,
    guest_name: &str,
    world: &str,
    sandbox: &str,
    extra: &str,
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        guest(guest_name),
        dir.path().join(format!("{guest_name}.wasm")),
    )
    .unwrap();
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"{name}\"\nversion = \"{version}\"\n{extra}\n\
         [[component]]\nid = \"{guest_name}\"\nfile = \"{guest_name}.wasm\"\nworld = \"{world}\"\n\
         [component.sandbox]\n{sandbox}\n"
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {}).unwrap();
    out
}

/// The counter package (`version` printed by the guest is its own crate version).
pub fn counter_pkg(version: &str) -> Vec<u8> {
    package(
        "counter",
        version,
        "counter",
        "wasmdm:device/app",
        "memory = \"16MiB\"\nstop-grace-ms = 2000",
        "[config]\ngreeting = \"hi there\"\ninterval-ms = \"50\"\n",
    )
}

pub fn config(dir: &Path) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(dir);
    c.engine.max_instances = 16;
    c
}

/// Streams `bytes` into `slot` in 1 KiB blocks, as a Block1 push would.
pub async fn deliver(rt: &Runtime, slot: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
    let mut d = rt.delivery(slot)?;
    for (i, chunk) in bytes.chunks(1024).enumerate() {
        d.write_at((i * 1024) as u64, chunk)?;
    }
    d.sync(None)?;
    rt.verify_delivery(slot).await?;
    Ok(())
}

pub async fn deliver_install(
    rt: &Runtime,
    slot: &str,
    bytes: &[u8],
) -> Result<InstalledInfo, RuntimeError> {
    deliver(rt, slot, bytes).await?;
    rt.install(slot).await
}

pub fn comp(rt: &Runtime, pkg: &str, id: &str) -> ComponentStatus {
    rt.status(pkg)
        .unwrap()
        .components
        .into_iter()
        .find(|c| c.id == id)
        .unwrap()
}

/// Polls until `f` holds (or panics after `secs`).
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_state(rt: &Runtime, pkg: &str, id: &str, state: ComponentState, secs: u64) {
    wait_until(secs, &format!("{pkg}/{id} {state:?}"), || {
        comp(rt, pkg, id).state == state
    })
    .await
}

pub fn log_text(rt: &Runtime, pkg: &str, id: &str) -> Vec<String> {
    rt.logs(pkg, id)
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect()
}

/// The compiled artifacts in `<dir>/cache` (`.cwasm`, not temp files).
pub fn artifacts(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "cwasm")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".tmp-"))
        })
        .collect()
}
