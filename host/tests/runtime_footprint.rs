//! Issue 15, small footprint: under `code-loading = "on-demand"` an inactive
//! package holds no loaded component; activation loads its code, the last
//! instance's end drops it, and a load finds the optimiser's newest artifact.
//! `resident` keeps every installed component loaded. Both run the guests.

mod runtime_support;

use runtime_support::*;
use std::path::Path;
use std::time::Duration;
use wasmdm::runtime::{
    CodeLoading, CompilerChoice, ComponentState, ExitStatus, Runtime, RuntimeConfig, Tier,
};

fn cfg(dir: &Path, loading: CodeLoading) -> RuntimeConfig {
    let mut c = config(dir);
    c.engine.code_loading = loading;
    c
}

async fn open(dir: &Path, loading: CodeLoading) -> Runtime {
    Runtime::open(cfg(dir, loading)).await.unwrap()
}

fn hello_pkg(name: &str) -> Vec<u8> {
    package(
        name,
        "1.0.0",
        "hello",
        "wasi:cli/command",
        "env = { GREETING = \"hi\" }",
        "",
    )
}

async fn wait_loaded(rt: &Runtime, n: usize) {
    wait_until(30, &format!("{n} loaded components"), || {
        rt.loaded_components() == n
    })
    .await;
}

/// Activates `name` (hello), waits for exit 0 and its greeting, deactivates.
async fn run_hello(rt: &Runtime, name: &str) {
    rt.activate(name, None).await.unwrap();
    wait_state(rt, name, "hello", ComponentState::Exited, 30).await;
    assert_eq!(
        comp(rt, name, "hello").last_exit,
        Some(ExitStatus::Exited(0))
    );
    let log = log_text(rt, name, "hello");
    assert!(log.iter().any(|l| l.contains("GREETING=hi")), "{log:?}");
    rt.deactivate(name, None).await.unwrap();
}

/// Activates counter, waits for its first count, deactivates.
async fn run_counter(rt: &Runtime) {
    let before = log_text(rt, "counter", "counter").len();
    rt.activate("counter", None).await.unwrap();
    wait_until(30, "counter counts", || {
        log_text(rt, "counter", "counter")
            .iter()
            .skip(before)
            .any(|l| l.starts_with("count="))
    })
    .await;
    assert_eq!(
        comp(rt, "counter", "counter").state,
        ComponentState::Running
    );
    rt.deactivate("counter", None).await.unwrap();
    let log = log_text(rt, "counter", "counter");
    assert!(
        log.iter()
            .skip(before)
            .any(|l| l.starts_with("counter stopped at")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_loads_at_activation_and_unloads_at_the_last_stop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CodeLoading::OnDemand).await;
    assert_eq!(rt.code_loading(), CodeLoading::OnDemand);
    deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    deliver_install(&rt, "1", &hello_pkg("hello"))
        .await
        .unwrap();
    // Installed (compiled and checked), but nothing kept in memory.
    assert_eq!(rt.loaded_components(), 0);

    rt.activate("counter", None).await.unwrap();
    wait_until(30, "counter counts", || {
        log_text(&rt, "counter", "counter")
            .iter()
            .any(|l| l.starts_with("count="))
    })
    .await;
    assert_eq!(rt.loaded_components(), 1);
    // A command that ends drops its code with its supervisor.
    rt.activate("hello", None).await.unwrap();
    wait_state(&rt, "hello", "hello", ComponentState::Exited, 30).await;
    wait_loaded(&rt, 1).await;
    rt.deactivate("hello", None).await.unwrap();

    // The last stop unloads: deactivate returns once the instance is gone.
    rt.deactivate("counter", None).await.unwrap();
    assert_eq!(rt.loaded_components(), 0);

    // An upgrade of an active component restarts it on the new version's
    // code, loaded once; the old version's is gone.
    rt.activate("counter", None).await.unwrap();
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    let info = deliver_install(&rt, "2", &counter_pkg("1.0.1"))
        .await
        .unwrap();
    assert_eq!(info.active, vec!["counter".to_string()]);
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    assert_eq!(rt.loaded_components(), 1);
    rt.deactivate("counter", None).await.unwrap();
    assert_eq!(rt.loaded_components(), 0);

    // Opening the data directory again loads nothing; what was active
    // starts and is the only code loaded.
    rt.activate("counter", None).await.unwrap();
    rt.shutdown().await;
    assert_eq!(rt.loaded_components(), 0);
    drop(rt);
    let rt = open(dir.path(), CodeLoading::OnDemand).await;
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    assert_eq!(rt.loaded_components(), 1);
    assert_eq!(comp(&rt, "hello", "hello").state, ComponentState::Inactive);
    rt.shutdown().await;
    assert_eq!(rt.loaded_components(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_keeps_every_installed_component_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CodeLoading::Resident).await;
    deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    deliver_install(&rt, "1", &hello_pkg("hello"))
        .await
        .unwrap();
    assert_eq!(rt.loaded_components(), 2);
    // A running instance shares the kept code: still one per component.
    rt.activate("counter", None).await.unwrap();
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    assert_eq!(rt.loaded_components(), 2);
    rt.deactivate("counter", None).await.unwrap();
    assert_eq!(rt.loaded_components(), 2);
    rt.uninstall("hello").await.unwrap();
    assert_eq!(rt.loaded_components(), 1);
    drop(rt);
    let rt = open(dir.path(), CodeLoading::Resident).await;
    assert_eq!(rt.loaded_components(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_strategies_run_the_example_guests() {
    for loading in [CodeLoading::OnDemand, CodeLoading::Resident] {
        let dir = tempfile::tempdir().unwrap();
        let rt = open(dir.path(), loading).await;
        deliver_install(&rt, "0", &counter_pkg("1.0.0"))
            .await
            .unwrap();
        deliver_install(&rt, "1", &hello_pkg("hello"))
            .await
            .unwrap();
        for _ in 0..2 {
            run_hello(&rt, "hello").await;
            run_counter(&rt).await;
        }
        let expect = match loading {
            CodeLoading::OnDemand => 0,
            CodeLoading::Resident => 2,
        };
        assert_eq!(rt.loaded_components(), expect, "{loading:?}");
        rt.shutdown().await;
    }
}

/// A component loaded on demand starts on the newest artifact: after the
/// optimiser's swap the Winch artifact is gone and the next load takes the
/// Cranelift one (compiling nothing: no Winch artifact comes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_on_demand_load_takes_the_optimised_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), CodeLoading::OnDemand);
    c.engine.compiler = CompilerChoice::Auto;
    let rt = Runtime::open(c).await.unwrap();
    deliver_install(&rt, "0", &hello_pkg("hello"))
        .await
        .unwrap();
    assert_eq!(rt.loaded_components(), 0);
    run_hello(&rt, "hello").await;
    assert!(rt.wait_optimised(Duration::from_secs(120)).await);
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Optimised);
    let optimised = artifacts(dir.path());
    assert_eq!(optimised.len(), 1, "{optimised:?}");
    run_hello(&rt, "hello").await;
    assert_eq!(artifacts(dir.path()), optimised);
    assert_eq!(rt.loaded_components(), 0);
}

/// Code that cannot be loaded at activation (artifact and .wasm gone):
/// the component fails with the reason, nothing stays loaded, and its
/// instance slot is given back (`max-instances = 1` still starts another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_on_demand_load_fails_the_component_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), CodeLoading::OnDemand);
    c.engine.max_instances = 1;
    c.engine.compiler = CompilerChoice::Cranelift;
    let rt = Runtime::open(c).await.unwrap();
    deliver_install(&rt, "0", &hello_pkg("broken"))
        .await
        .unwrap();
    deliver_install(&rt, "1", &hello_pkg("hello"))
        .await
        .unwrap();
    // Both packages hold the same component: the one artifact serves both.
    for a in artifacts(dir.path()) {
        std::fs::remove_file(a).unwrap();
    }
    let pkg_dir = dir.path().join("packages/broken");
    for g in std::fs::read_dir(&pkg_dir).unwrap().flatten() {
        if g.path().is_dir() {
            std::fs::remove_file(g.path().join("hello.wasm")).unwrap();
        }
    }
    rt.activate("broken", None).await.unwrap();
    wait_state(&rt, "broken", "hello", ComponentState::Failed, 30).await;
    let st = comp(&rt, "broken", "hello");
    assert!(
        matches!(&st.last_exit, Some(ExitStatus::StartFailed(m)) if m.contains("cannot load")),
        "{st:?}"
    );
    assert_eq!(rt.loaded_components(), 0);
    // The slot came back: with one slot, the intact package runs (its load
    // compiles the missing artifact again).
    run_hello(&rt, "hello").await;
    assert_eq!(rt.loaded_components(), 0);
}

/// `max-instances` counts running instances, not installed packages: with
/// one slot, a second activation is refused while the first runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_counts_what_runs_under_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), CodeLoading::OnDemand);
    c.engine.max_instances = 1;
    let rt = Runtime::open(c).await.unwrap();
    deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    deliver_install(&rt, "1", &hello_pkg("hello"))
        .await
        .unwrap();
    rt.activate("counter", None).await.unwrap();
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    assert!(rt.activate("hello", None).await.is_err());
    assert_eq!(rt.loaded_components(), 1);
    rt.deactivate("counter", None).await.unwrap();
    run_hello(&rt, "hello").await;
    assert_eq!(rt.loaded_components(), 0);
}

/// Instances of one component running at once (the same code in two
/// packages) share one load; it goes when the last of them stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_instances_of_the_same_code_share_one_load() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CodeLoading::OnDemand).await;
    for (slot, name) in [("0", "one"), ("1", "two")] {
        let pkg = package(
            name,
            "1.0.0",
            "counter",
            "wasmdm:device/app",
            "memory = \"16MiB\"\nstop-grace-ms = 2000",
            "[config]\ninterval-ms = \"50\"\n",
        );
        deliver_install(&rt, slot, &pkg).await.unwrap();
    }
    for name in ["one", "two"] {
        rt.activate(name, None).await.unwrap();
        wait_state(&rt, name, "counter", ComponentState::Running, 30).await;
    }
    assert_eq!(rt.loaded_components(), 1);
    rt.deactivate("one", None).await.unwrap();
    assert_eq!(rt.loaded_components(), 1);
    assert_eq!(comp(&rt, "two", "counter").state, ComponentState::Running);
    rt.deactivate("two", None).await.unwrap();
    assert_eq!(rt.loaded_components(), 0);
}
