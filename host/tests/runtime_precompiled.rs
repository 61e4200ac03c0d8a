//! Issue 13 part 2, device side: a precompiled artifact is used only when it
//! is signed by a key trusted for native code and built for this engine;
//! otherwise the device compiles the component itself.

mod runtime_support;

use runtime_support::*;
use std::path::{Path, PathBuf};
use wasmdm::runtime::{ComponentState, ExitStatus, Runtime, RuntimeConfig, Tier};

fn hello_sha() -> String {
    let bytes = std::fs::read(guest("hello")).unwrap();
    wasmdm_package::Digest::of(&bytes).to_hex()
}

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

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

/// Delivers hello, stages `(compat, code, sig)` for it, installs, and
/// returns the tier of the code it got and whether it ran.
async fn install_with(
    cfg: RuntimeConfig,
    compat: &str,
    code: &[u8],
    sig: &str,
) -> (Tier, Vec<PathBuf>) {
    let dir = cfg.data_dir.clone();
    let rt = Runtime::open(cfg).await.unwrap();
    deliver(&rt, "0", &hello_pkg()).await.unwrap();
    rt.stage_precompiled("0", &hello_sha(), compat, code, sig.as_bytes())
        .unwrap();
    rt.install("0").await.unwrap();
    let tier = rt.code_tier("hello", "hello").unwrap();
    let files = cwasm_files(&dir);
    rt.activate("hello", None).await.unwrap();
    wait_state(&rt, "hello", "hello", ComponentState::Exited, 30).await;
    assert_eq!(
        comp(&rt, "hello", "hello").last_exit,
        Some(ExitStatus::Exited(0))
    );
    rt.shutdown().await;
    (tier, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_artifacts_for_this_engine_are_used_and_all_others_refused() {
    let (operator, operator_pub) = wasmdm_package::keygen().unwrap();
    let (stranger, _) = wasmdm_package::keygen().unwrap();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let sha = hello_sha();
    let cfg_in = |dir: &Path, keys: bool| {
        let mut c = config(dir);
        if keys {
            c.engine.native_code_keys = vec![operator_pub];
        }
        c
    };
    let probe = tempfile::tempdir().unwrap();
    let (compat, code) =
        wasmdm::runtime::precompile(&cfg_in(probe.path(), true).engine, &wasm).unwrap();
    let good_sig = wasmdm::runtime::sign_artifact(&operator, &sha, &compat, &code);

    // Signed by the operator, this engine: used as is, nothing compiled here.
    let dir = tempfile::tempdir().unwrap();
    let (tier, files) = install_with(cfg_in(dir.path(), true), &compat, &code, &good_sig).await;
    assert_eq!(tier, Tier::Optimised);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).unwrap(), code);
    // Engine info says so.
    let rt = Runtime::open(cfg_in(dir.path(), true)).await.unwrap();
    let info = rt.engine_info();
    assert_eq!(info.compatibility_hash, compat);
    assert!(info.accepts_precompiled);
    assert!(
        info.worlds
            .iter()
            .any(|w| w.starts_with("wasi:cli/command"))
    );
    drop(rt);

    // Each of these is refused; the device compiles (Winch) instead.
    let mut tampered = code.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x55;
    let stranger_sig = wasmdm::runtime::sign_artifact(&stranger, &sha, &compat, &code);
    let wrong_hash = "00000000deadbeef".to_string();
    let wrong_hash_sig = wasmdm::runtime::sign_artifact(&operator, &sha, &wrong_hash, &code);
    let cases: [(&str, bool, &str, &[u8], &str); 4] = [
        ("tampered code", true, &compat, &tampered, &good_sig),
        (
            "signed by an untrusted key",
            true,
            &compat,
            &code,
            &stranger_sig,
        ),
        (
            "built for another engine",
            true,
            &wrong_hash,
            &code,
            &wrong_hash_sig,
        ),
        (
            "no native-code key configured",
            false,
            &compat,
            &code,
            &good_sig,
        ),
    ];
    for (what, keys, c, bytes, sig) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (tier, files) = install_with(cfg_in(dir.path(), keys), c, bytes, sig).await;
        assert_eq!(tier, Tier::Baseline, "{what}: compiled locally with Winch");
        assert!(
            files.iter().all(|f| std::fs::read(f).unwrap() != *bytes),
            "{what}: the offered code is not in the cache"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_artifact_that_does_not_load_is_dropped_and_compiled_here() {
    let (operator, operator_pub) = wasmdm_package::keygen().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.engine.native_code_keys = vec![operator_pub];
    let wasm = std::fs::read(guest("hello")).unwrap();
    let (compat, _) = wasmdm::runtime::precompile(&cfg.engine, &wasm).unwrap();
    let garbage = b"not native code at all".to_vec();
    let sig = wasmdm::runtime::sign_artifact(&operator, &hello_sha(), &compat, &garbage);
    let (tier, files) = install_with(cfg, &compat, &garbage, &sig).await;
    assert_eq!(tier, Tier::Baseline);
    assert!(files.iter().all(|f| std::fs::read(f).unwrap() != garbage));
}
