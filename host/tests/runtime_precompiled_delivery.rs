//! Issue 13 part 2: a package variant with precompiled code (extra archive
//! entries a server adds) is unpacked into the delivery slot and adopted at
//! install when it verifies; a tampered, wrongly signed, wrong-hash or
//! malformed one is refused, and the device compiles locally and still
//! installs. A plain unpack (another host, `wasmdm install FILE`) ignores
//! the entries.

mod runtime_support;

use runtime_support::*;
use std::path::Path;
use wasmdm::runtime::{ComponentState, ExitStatus, Runtime, RuntimeConfig, Tier};
use wasmdm_server::precompile::variant::{self, Artifact};

fn hello_pkg() -> Vec<u8> {
    package(
        "hello",
        "1.0.0",
        "hello",
        "wasi:cli/command",
        "env = { GREETING = \"hi\" }",
        "",
    )
}

fn hello_sha() -> String {
    wasmdm_package::Digest::of(&std::fs::read(guest("hello")).unwrap()).to_hex()
}

/// Installs `pkg` on a fresh device with `cfg`, runs it, and returns the
/// tier of the code install got (Optimised without a local compile means
/// the precompiled code was used: the device's own install compiles with
/// Winch) and the precompiled files left in the slot after delivery.
async fn install(cfg: RuntimeConfig, pkg: &[u8]) -> (Tier, Vec<String>) {
    let rt = Runtime::open(cfg.clone()).await.unwrap();
    deliver(&rt, "0", pkg).await.unwrap();
    let staged_dir = cfg.data_dir.join("deliveries/0/precompiled");
    let mut staged: Vec<String> = std::fs::read_dir(&staged_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    staged.sort();
    rt.install("0").await.unwrap();
    let tier = rt.code_tier("hello", "hello").unwrap();
    rt.activate("hello", None).await.unwrap();
    wait_state(&rt, "hello", "hello", ComponentState::Exited, 30).await;
    assert_eq!(
        comp(&rt, "hello", "hello").last_exit,
        Some(ExitStatus::Exited(0))
    );
    rt.shutdown().await;
    (tier, staged)
}

fn with_keys(dir: &Path, key: Option<wasmdm_package::VerifyingKey>) -> RuntimeConfig {
    let mut c = config(dir);
    c.engine.native_code_keys = key.into_iter().collect();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_are_adopted_when_they_verify_and_compiled_locally_otherwise() {
    let (operator, operator_pub) = wasmdm_package::keygen().unwrap();
    let (stranger, _) = wasmdm_package::keygen().unwrap();
    let pkg = hello_pkg();
    let sha = hello_sha();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let probe = tempfile::tempdir().unwrap();
    let (compat, code) =
        wasmdm::runtime::precompile(&with_keys(probe.path(), None).engine, &wasm).unwrap();
    let artifact =
        |sha: &str, engine: &str, code: &[u8], key: &wasmdm_package::SigningKey| Artifact {
            component_sha256: sha.to_string(),
            engine: engine.to_string(),
            code: code.to_vec(),
            signature: wasmdm::runtime::sign_artifact(key, sha, engine, code),
        };
    let build = |a: Vec<Artifact>| variant::build(&pkg, 1 << 30, &a).unwrap();

    // The good variant: unpacked into the slot and used, nothing compiled.
    let good = build(vec![artifact(&sha, &compat, &code, &operator)]);
    let dir = tempfile::tempdir().unwrap();
    let (tier, staged) = install(with_keys(dir.path(), Some(operator_pub)), &good).await;
    assert_eq!(
        staged,
        [
            format!("{sha}.cwasm"),
            format!("{sha}.engine"),
            format!("{sha}.sig")
        ]
    );
    assert_eq!(tier, Tier::Optimised, "the precompiled code was adopted");

    // Another host (or `wasmdm install FILE`) unpacks the variant as the
    // plain package: the entries are skipped, nothing else changes.
    let scratch = tempfile::tempdir().unwrap();
    let v = wasmdm_package::unpack(
        good.as_slice(),
        scratch.path(),
        &wasmdm_package::Limits::default(),
        &[],
    )
    .unwrap();
    assert!(v.precompiled.is_empty() && v.precompiled_notes.is_empty());
    assert!(!scratch.path().join("precompiled").exists());

    let mut tampered = code.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x55;
    let mut tampered_art = artifact(&sha, &compat, &code, &operator);
    tampered_art.code = tampered;
    let cases: Vec<(
        &str,
        Vec<Artifact>,
        Option<wasmdm_package::VerifyingKey>,
        usize,
    )> = vec![
        ("tampered code", vec![tampered_art], Some(operator_pub), 3),
        (
            "signed by a key the device does not trust",
            vec![artifact(&sha, &compat, &code, &stranger)],
            Some(operator_pub),
            3,
        ),
        (
            "the device trusts no native-code key",
            vec![artifact(&sha, &compat, &code, &operator)],
            None,
            3,
        ),
        (
            "built for another engine hash",
            vec![artifact(&sha, "00000000deadbeef", &code, &operator)],
            Some(operator_pub),
            3,
        ),
        (
            "entries not named after a component of the manifest",
            vec![artifact(&"ab".repeat(32), &compat, &code, &operator)],
            Some(operator_pub),
            0,
        ),
        (
            "an engine entry over its cap (skipped, the rest incomplete)",
            vec![artifact(&sha, &"a".repeat(65), &code, &operator)],
            Some(operator_pub),
            2,
        ),
    ];
    for (what, arts, key, staged_files) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (tier, staged) = install(with_keys(dir.path(), key), &build(arts)).await;
        assert_eq!(staged.len(), staged_files, "{what}: {staged:?}");
        assert_eq!(tier, Tier::Baseline, "{what}: compiled locally, installed");
    }
}

/// The engine a server reads from this device's /26500.
fn reported(rt: &Runtime) -> wasmdm_server::precompile::DeviceEngine {
    rt.engine_info()
}

/// What `wasmdm server` compiles from a device's report (explicit target
/// triple and ISA flags, nothing detected) has exactly the device's engine
/// hash, and the device runs it without compiling.
async fn server_code_for_this_device() {
    use wasmdm_server::precompile::Precompiler as _;
    let (operator, operator_pub) = wasmdm_package::keygen().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_keys(dir.path(), Some(operator_pub));
    let engine = {
        let rt = Runtime::open(cfg.clone()).await.unwrap();
        let e = reported(&rt);
        rt.shutdown().await;
        e
    };
    let wasm = std::fs::read(guest("hello")).unwrap();
    let server = wasmdm::runtime::RuntimePrecompiler;
    let (hash, code) = server.compile(&engine, &wasm).unwrap();
    assert_eq!(hash, engine.compatibility_hash, "{engine:?}");
    let sha = hello_sha();
    let signature = server.sign(&operator, &sha, &hash, &code);
    let v = variant::build(
        &hello_pkg(),
        1 << 30,
        &[Artifact {
            component_sha256: sha,
            engine: hash,
            code,
            signature,
        }],
    )
    .unwrap();
    let (tier, staged) = install(cfg, &v).await;
    assert_eq!(staged.len(), 3);
    assert_eq!(
        tier,
        Tier::Optimised,
        "{}: the server's code was used",
        engine.target
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_code_for_this_device_has_its_hash_and_runs() {
    server_code_for_this_device().await;
}

/// The same for a Pulley device (armv7's code path): forced with
/// `WASMDM_CODE_TARGET=pulley`, read once per process, so in a child.
#[test]
fn the_servers_pulley_code_for_a_pulley_device_has_its_hash_and_runs() {
    const ENV: &str = "WASMDM_CODE_TARGET";
    let name = "the_servers_pulley_code_for_a_pulley_device_has_its_hash_and_runs";
    let forced = std::env::var(ENV).is_ok_and(|v| v == "pulley");
    if forced || wasmdm::runtime::CodeTarget::host() == wasmdm::runtime::CodeTarget::Pulley {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(server_code_for_this_device());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(ENV, "pulley")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "under Pulley:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With wasmtime's backends for other targets in the build, the server
/// compiles for an aarch64 device on this host; the hash it reports is that
/// engine's, which the caller compares with the device's.
#[cfg(feature = "cross-precompile")]
#[test]
fn the_server_cross_compiles_for_another_architecture() {
    use wasmdm_server::precompile::Precompiler as _;
    let engine = wasmdm_server::precompile::DeviceEngine {
        runtime_version: wasmdm::runtime::RUNTIME_VERSION.into(),
        target: "aarch64-linux".into(),
        cpu_features: vec!["lse".into(), "fp16".into()],
        compatibility_hash: "0000000000000000".into(),
        memory_reservation: 4 << 30,
        memory_guard: 32 << 20,
        accepts_precompiled: true,
        ..Default::default()
    };
    let wasm = std::fs::read(guest("hello")).unwrap();
    let (hash, code) = wasmdm::runtime::RuntimePrecompiler
        .compile(&engine, &wasm)
        .unwrap();
    assert!(!code.is_empty());
    assert_ne!(hash, engine.compatibility_hash);
    // A device of another wasmtime version is never compiled for.
    let old = wasmdm_server::precompile::DeviceEngine {
        runtime_version: "wasmtime 47.0.0".into(),
        ..engine
    };
    let err = wasmdm::runtime::RuntimePrecompiler
        .compile(&old, &wasm)
        .unwrap_err();
    assert!(err.contains("wasmtime 47.0.0"), "{err}");
}
