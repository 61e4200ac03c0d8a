//! `wasmdm run`: foreground runs of a bare component and of a package file,
//! stopping with a StopHandle (Ctrl-C), and cache recovery.

mod runtime_support;

use runtime_support::*;
use std::time::{Duration, Instant};
use wasmdm::runtime::{
    ComponentState, ExitStatus, ForegroundOptions, Runtime, RuntimeError, Sandbox, StopHandle,
    World, describe_component, run_foreground,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_bare_component_to_completion() {
    let exit = run_foreground(
        &guest("hello"),
        ForegroundOptions::default(),
        StopHandle::new(),
    )
    .await
    .unwrap();
    assert_eq!(exit, ExitStatus::Exited(0));
    let exit = run_foreground(
        &guest("trapper"),
        ForegroundOptions::default(),
        StopHandle::new(),
    )
    .await
    .unwrap();
    assert!(matches!(exit, ExitStatus::Trapped(_)), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_package_with_data_and_stops_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("counter.wdm");
    std::fs::write(&pkg, counter_pkg("1.0.0")).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let stop = StopHandle::new();
    let opts = ForegroundOptions {
        data_dir: Some(data.clone()),
        ..ForegroundOptions::default()
    };
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { run_foreground(&pkg, opts, stop).await }
    });
    wait_until(10, "counter file", || data.join("counter").exists()).await;
    stop.stop();
    let exit = run.await.unwrap().unwrap();
    assert_eq!(exit, ExitStatus::Stopped { forced: false });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinner_is_interrupted_after_grace() {
    let stop = StopHandle::new();
    let opts = ForegroundOptions {
        sandbox: Sandbox {
            stop_grace_ms: 100,
            ..Sandbox::default()
        },
        world: World::Command,
        ..ForegroundOptions::default()
    };
    let path = guest("spinner");
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { run_foreground(&path, opts, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    stop.stop();
    let exit = run.await.unwrap().unwrap();
    assert_eq!(exit, ExitStatus::Stopped { forced: true });
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_reports_imports_and_world_fit() {
    let bytes = std::fs::read(guest("counter")).unwrap();
    let (iface, fits) = describe_component("counter", &bytes, World::App)
        .await
        .unwrap();
    assert!(
        iface
            .imports
            .iter()
            .any(|i| i.starts_with("wasmdm:device/lifecycle")),
        "{:?}",
        iface.imports
    );
    assert!(iface.exports.iter().any(|e| e.starts_with("wasi:cli/run")));
    assert!(fits.is_ok());
    let (_, fits) = describe_component("counter", &bytes, World::Command)
        .await
        .unwrap();
    assert!(matches!(fits, Err(RuntimeError::InstallFailed { .. })));
    let core = describe_component("x", b"\0asm\x01\0\0\0", World::Command).await;
    assert!(matches!(core, Err(RuntimeError::NotAComponent { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_compiled_cache_is_recompiled_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        deliver_install(&rt, "0", &counter_pkg("1.0.0"))
            .await
            .unwrap();
        rt.activate("counter", None).await.unwrap();
        rt.shutdown().await;
    }
    let cache = dir.path().join("cache");
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    // As if written by another wasmtime build: garbage under the expected
    // name. Put in place by a rename, as any writer of the cache does: the
    // first runtime's background compile may still map the old file, and
    // truncating a mapped file in place is a SIGBUS for whoever reads it.
    let garbage = cache.join("garbage.tmp");
    std::fs::write(&garbage, b"not a cwasm").unwrap();
    std::fs::rename(&garbage, &files[0]).unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 1000);
    rt.deactivate("counter", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_update_keeps_running_and_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    rt.activate("counter", None).await.unwrap();
    rt.prepare_update("counter").await.unwrap();
    let st = rt.status("counter").unwrap();
    assert!(st.for_update);
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    rt.shutdown().await;
    drop(rt);
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    assert!(rt.status("counter").unwrap().for_update);
    // The upgrade clears the mark.
    let info = deliver_install(&rt, "1", &counter_pkg("1.1.0"))
        .await
        .unwrap();
    assert_eq!(info.upgraded_from.as_deref(), Some("1.0.0"));
    assert!(!rt.status("counter").unwrap().for_update);
    rt.deactivate("counter", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_beyond_the_device_slot_is_an_install_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.engine.max_memory_per_instance = 32 << 20;
    let rt = Runtime::open(cfg).await.unwrap();
    let pkg = package(
        "hello",
        "1.0.0",
        "hello",
        "wasi:cli/command",
        "memory = \"64MiB\"",
        "",
    );
    let e = deliver_install(&rt, "0", &pkg).await.unwrap_err();
    assert_eq!(e.update_result_hint(), 58, "{e}");
    assert!(rt.list().is_empty());
}
