//! Issue 13: install compiles with Winch, Cranelift follows in the background;
//! the import check names every missing interface before any compile.

mod runtime_support;

use runtime_support::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmdm::runtime::{
    CompilerChoice, ComponentState, ExitStatus, Runtime, RuntimeConfig, RuntimeError, Tier,
};

fn cfg(dir: &Path, compiler: CompilerChoice) -> RuntimeConfig {
    let mut c = config(dir);
    c.engine.compiler = compiler;
    c
}

async fn open(dir: &Path, compiler: CompilerChoice) -> Runtime {
    Runtime::open(cfg(dir, compiler)).await.unwrap()
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

/// Activates hello, waits for it to exit 0 and for its greeting.
async fn run_hello(rt: &Runtime) {
    rt.activate("hello", None).await.unwrap();
    wait_state(rt, "hello", "hello", ComponentState::Exited, 30).await;
    let c = comp(rt, "hello", "hello");
    assert_eq!(c.last_exit, Some(ExitStatus::Exited(0)));
    assert!(
        log_text(rt, "hello", "hello")
            .iter()
            .any(|l| l.contains("hi")),
        "{:?}",
        log_text(rt, "hello", "hello")
    );
    rt.deactivate("hello", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_runs_winch_code_then_cranelift_code_from_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CompilerChoice::Auto).await;
    deliver_install(&rt, "0", &hello_pkg()).await.unwrap();
    // Installed with Winch code; the optimiser waits for nothing but idle CPU,
    // so it may be done already, but the first load was Winch's.
    let first = artifacts(dir.path());
    assert!(!first.is_empty());
    run_hello(&rt).await;
    assert!(rt.wait_optimised(Duration::from_secs(120)).await);
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Optimised);
    // The Winch artifact is gone, the Cranelift one is the only one left.
    let after = artifacts(dir.path());
    assert_eq!(after.len(), 1, "{after:?}");
    run_hello(&rt).await;
    // A counter service: an app world component, also swapped.
    deliver_install(&rt, "1", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    rt.activate("counter", None).await.unwrap();
    wait_until(30, "counter output", || {
        log_text(&rt, "counter", "counter").len() >= 2
    })
    .await;
    assert!(rt.wait_optimised(Duration::from_secs(120)).await);
    assert_eq!(rt.code_tier("counter", "counter").unwrap(), Tier::Optimised);
    // Still running its Winch code (no restart policy): untouched.
    assert_eq!(
        comp(&rt, "counter", "counter").state,
        ComponentState::Running
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_compiler_is_the_only_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CompilerChoice::Cranelift).await;
    deliver_install(&rt, "0", &hello_pkg()).await.unwrap();
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Optimised);
    run_hello(&rt).await;
    drop(rt);

    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CompilerChoice::Winch).await;
    deliver_install(&rt, "0", &hello_pkg()).await.unwrap();
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Baseline);
    run_hello(&rt).await;
    assert!(rt.wait_optimised(Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Baseline);
    assert_eq!(artifacts(dir.path()).len(), 1);
}

/// Pending optimisations are the Winch artifacts without a Cranelift one:
/// a device that stopped before optimising resumes at its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_optimisations_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = open(dir.path(), CompilerChoice::Winch).await;
        deliver_install(&rt, "0", &hello_pkg()).await.unwrap();
        rt.shutdown().await;
    }
    let rt = open(dir.path(), CompilerChoice::Auto).await;
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Baseline);
    assert!(rt.wait_optimised(Duration::from_secs(120)).await);
    assert_eq!(rt.code_tier("hello", "hello").unwrap(), Tier::Optimised);
    run_hello(&rt).await;
}

/// `restart-when-optimised`: a running service is restarted onto its
/// Cranelift code (stop request, grace, start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_when_optimised_moves_a_running_service_to_the_new_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), CompilerChoice::Auto);
    c.engine.restart_when_optimised = true;
    let rt = Runtime::open(c).await.unwrap();
    let mut events = rt.subscribe();
    deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    rt.activate("counter", None).await.unwrap();
    assert!(rt.wait_optimised(Duration::from_secs(120)).await);
    assert_eq!(rt.code_tier("counter", "counter").unwrap(), Tier::Optimised);
    // Started, then (once optimised) stopped and started again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut running = 0;
    while running < 2 && Instant::now() < deadline {
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            && e.state == ComponentState::Running
        {
            running += 1;
        }
    }
    assert_eq!(running, 2, "restarted onto the optimised code");
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    rt.shutdown().await;
}

/// Another engine (here: another memory layout, as after an upgrade of
/// wasmtime) has another compatibility hash: the old artifacts are dropped
/// and the component is compiled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_change_recompiles_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = open(dir.path(), CompilerChoice::Winch).await;
        deliver_install(&rt, "0", &hello_pkg()).await.unwrap();
        rt.shutdown().await;
    }
    let old = artifacts(dir.path());
    let mut c = cfg(dir.path(), CompilerChoice::Winch);
    c.engine.memory_reservation = c.engine.max_memory_per_instance;
    let rt = Runtime::open(c).await.unwrap();
    let new = artifacts(dir.path());
    assert_eq!(new.len(), 1);
    assert!(old.is_disjoint(&new), "{old:?} {new:?}");
    run_hello(&rt).await;
}

/// Winch code keeps every guarantee: forced stop by epoch interruption,
/// the memory cap, the sandbox's denials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winch_code_keeps_the_sandbox_and_the_forced_stop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CompilerChoice::Winch).await;
    let spinner = package(
        "spinner",
        "1.0.0",
        "spinner",
        "wasi:cli/command",
        "stop-grace-ms = 300",
        "",
    );
    deliver_install(&rt, "0", &spinner).await.unwrap();
    assert_eq!(rt.code_tier("spinner", "spinner").unwrap(), Tier::Baseline);
    rt.activate("spinner", None).await.unwrap();
    wait_until(10, "spinner output", || {
        !log_text(&rt, "spinner", "spinner").is_empty()
    })
    .await;
    let t = Instant::now();
    rt.deactivate("spinner", None).await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(300 + 1000), "{took:?}");
    assert_eq!(
        comp(&rt, "spinner", "spinner").last_exit,
        Some(ExitStatus::Stopped { forced: true })
    );

    let memhog = package(
        "memhog",
        "1.0.0",
        "memhog",
        "wasi:cli/command",
        "memory = \"24MiB\"",
        "",
    );
    deliver_install(&rt, "1", &memhog).await.unwrap();
    assert_eq!(rt.code_tier("memhog", "memhog").unwrap(), Tier::Baseline);
    rt.activate("memhog", None).await.unwrap();
    wait_state(&rt, "memhog", "memhog", ComponentState::Failed, 30).await;
    assert_eq!(
        comp(&rt, "memhog", "memhog").last_exit,
        Some(ExitStatus::MemoryLimitExceeded { limit: 24 << 20 })
    );

    let escaper = package("escaper", "1.0.0", "escaper", "wasi:cli/command", "", "");
    deliver_install(&rt, "2", &escaper).await.unwrap();
    assert_eq!(rt.code_tier("escaper", "escaper").unwrap(), Tier::Baseline);
    rt.activate("escaper", None).await.unwrap();
    wait_state(&rt, "escaper", "escaper", ComponentState::Exited, 30).await;
    let probes: Vec<String> = log_text(&rt, "escaper", "escaper")
        .into_iter()
        .filter(|l| l.starts_with("DENIED") || l.starts_with("ALLOWED"))
        .collect();
    assert!(probes.len() >= 5, "{probes:?}");
    for l in &probes {
        if !l.contains("/data/") {
            assert!(l.starts_with("DENIED "), "escape not denied: {l}");
        }
    }
    rt.shutdown().await;
}

/// The child half of the kill -9 test: opens the data directory (whose
/// component has only Winch code) so the optimiser starts, and waits to be
/// killed. Runs only when the parent test starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by a_kill_at_any_point_of_the_swap_leaves_loadable_code"]
async fn kill_child() {
    let Some(dir) = std::env::var_os("WASMDM_KILL_CHILD_DIR") else {
        return;
    };
    let rt = open(Path::new(&dir), CompilerChoice::Auto).await;
    println!("child open");
    rt.wait_optimised(Duration::from_secs(120)).await;
    println!("child optimised");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// kill -9 of a device while its optimiser compiles and swaps: at every
/// moment the cache holds complete code, and the next start loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_point_of_the_swap_leaves_loadable_code() {
    let dir = tempfile::tempdir().unwrap();
    let escaper = package("escaper", "1.0.0", "escaper", "wasi:cli/command", "", "");
    {
        let rt = open(dir.path(), CompilerChoice::Winch).await;
        deliver_install(&rt, "0", &escaper).await.unwrap();
        rt.shutdown().await;
    }
    let winch: BTreeSet<PathBuf> = artifacts(dir.path());
    assert_eq!(winch.len(), 1);
    let exe = std::env::current_exe().unwrap();
    let mut saw_optimised = false;
    // Kills at fixed delays, then one after the child says it is done.
    let rounds = [
        0u64, 30, 60, 100, 150, 200, 225, 250, 275, 300, 400, 600, 900,
    ];
    for round in 0..=rounds.len() {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "kill_child", "--ignored", "--nocapture"])
            .env("WASMDM_KILL_CHILD_DIR", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        match rounds.get(round) {
            Some(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            None => {
                use std::io::BufRead;
                let done = std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .any(|l| l.contains("child optimised"));
                assert!(done, "the child never finished optimising");
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let present = artifacts(dir.path());
        assert!(
            !present.is_empty(),
            "no complete artifact after round {round}"
        );
        let optimised_present = present.iter().any(|p| !winch.contains(p));
        saw_optimised |= optimised_present;
        eprintln!(
            "round {round}: {} artifact(s), optimised: {optimised_present}",
            present.len()
        );
        // Open without an optimiser: loads what is there.
        let rt = open(dir.path(), CompilerChoice::Winch).await;
        let tier = rt.code_tier("escaper", "escaper").unwrap();
        if optimised_present {
            assert_eq!(tier, Tier::Optimised, "round {round}");
        }
        rt.activate("escaper", None).await.unwrap();
        wait_state(&rt, "escaper", "escaper", ComponentState::Exited, 30).await;
        assert_eq!(
            comp(&rt, "escaper", "escaper").last_exit,
            Some(ExitStatus::Exited(0))
        );
        rt.deactivate("escaper", None).await.unwrap();
        rt.shutdown().await;
        drop(rt);
        // Start the next round with work to do again.
        if optimised_present {
            for p in present.iter().filter(|p| !winch.contains(*p)) {
                std::fs::remove_file(p).unwrap();
            }
            let rt = open(dir.path(), CompilerChoice::Winch).await;
            assert_eq!(rt.code_tier("escaper", "escaper").unwrap(), Tier::Baseline);
            rt.shutdown().await;
        }
    }
    assert!(saw_optimised, "no round got through the whole swap");
}

// ---- import check (issue 13 part 3) ------------------------------------------------

/// A component that imports the named interfaces (empty instance types:
/// the check is by name, before any compile).
fn component_importing(imports: &[&str]) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut c = Component::new();
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    c.section(&types);
    let mut section = ComponentImportSection::new();
    for name in imports {
        section.import(*name, ComponentTypeRef::Instance(0));
    }
    c.section(&section);
    c.finish()
}

/// A package with one component made of `bytes`.
fn package_of(bytes: &[u8], world: &str) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.wasm"), bytes).unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        format!(
            "manifest-version = 1\n[package]\nname = \"app\"\nversion = \"1.0.0\"\n\
             [[component]]\nid = \"app\"\nfile = \"app.wasm\"\nworld = \"{world}\"\n"
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {}).unwrap();
    (dir, out)
}

const JS_LIKE: &[&str] = &[
    "wasi:cli/environment@0.2.3",
    "wasi:io/streams@0.2.3",
    "wasi:http/types@0.2.3",
    "wasi:http/outgoing-handler@0.2.3",
    "wasmdm:device/log@0.1.0",
];

fn assert_lists_every_missing_import(text: &str) {
    for m in [
        "wasi:http/types@0.2.3",
        "wasi:http/outgoing-handler@0.2.3",
        "wasmdm:device/log@0.1.0",
    ] {
        assert!(text.contains(m), "{m} not named in: {text}");
    }
    assert!(!text.contains("wasi:io/streams@0.2.3,"), "{text}");
    assert!(text.contains("imports 3 interface(s)"), "{text}");
    assert!(text.contains("This host offers wasi:cli/command"), "{text}");
    assert!(text.contains("wasmdm:device/app"), "{text}");
    assert!(text.contains("--disable http"), "{text}");
    assert!(
        text.contains("declare `world = \"wasmdm:device/app\"`"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_names_every_missing_import_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(dir.path(), CompilerChoice::Auto).await;
    let (_src, pkg) = package_of(&component_importing(JS_LIKE), "wasi:cli/command");
    let t = Instant::now();
    let err = deliver_install(&rt, "0", &pkg).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InstallFailed { .. }), "{err}");
    assert_eq!(err.update_result_hint(), 58);
    assert_lists_every_missing_import(&err.to_string());
    // Nothing was compiled, nothing installed.
    assert!(artifacts(dir.path()).is_empty());
    assert!(rt.status("app").is_err());
    assert!(t.elapsed() < Duration::from_secs(30));

    // Imports all offered, but no wasi:cli/run: said before compiling too.
    let (_src, pkg) = package_of(
        &component_importing(&["wasi:cli/environment@0.2.0"]),
        "wasi:cli/command",
    );
    let err = deliver_install(&rt, "1", &pkg).await.unwrap_err();
    assert!(
        err.to_string().contains("does not export wasi:cli/run"),
        "{err}"
    );

    // A core module: unsupported (54), with how to make a component.
    let (_src, pkg) = package_of(b"\0asm\x01\0\0\0", "wasi:cli/command");
    let err = deliver_install(&rt, "2", &pkg).await.unwrap_err();
    assert_eq!(err.update_result_hint(), 54, "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
    assert!(artifacts(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_guests_pass_the_import_check_for_their_worlds() {
    for (g, world) in [
        ("hello", wasmdm::runtime::World::Command),
        ("counter", wasmdm::runtime::World::App),
        ("escaper", wasmdm::runtime::World::Command),
        ("binder", wasmdm::runtime::World::Command),
    ] {
        let bytes = std::fs::read(guest(g)).unwrap();
        wasmdm::runtime::check_component(g, &bytes, world).unwrap();
    }
    // counter needs the app world; as a plain command it is told so.
    let bytes = std::fs::read(guest("counter")).unwrap();
    let err = wasmdm::runtime::check_component("counter", &bytes, wasmdm::runtime::World::Command)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wasmdm:device/"), "{err}");
    assert!(err.contains("declare `world"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_names_every_missing_import() {
    let (_src, pkg) = package_of(&component_importing(JS_LIKE), "wasi:cli/command");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.wdm");
    std::fs::write(&file, pkg).unwrap();
    let report = wasmdm::inspect::inspect_package(&file, &[]).await.unwrap();
    assert!(!report.runnable);
    let c = &report.components[0];
    assert_eq!(c.imports.len(), JS_LIKE.len());
    assert_lists_every_missing_import(c.problem.as_deref().unwrap());
    let text = report.to_string();
    assert!(text.contains("runs on this host: NO"), "{text}");
    // It says what this host compiles to (issue 15: Pulley on 32-bit ARM).
    let arch = std::env::consts::ARCH;
    let expected = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        format!("host code native {arch} code")
    } else {
        "host code pulley".to_string()
    };
    assert!(text.contains(&expected), "{text}");
}

#[test]
fn pack_warns_about_core_modules_and_missing_imports() {
    let bin = env!("CARGO_BIN_EXE_wasmdm");
    let out = tempfile::tempdir().unwrap();
    let (src, _) = package_of(b"\0asm\x01\0\0\0", "wasi:cli/command");
    let run = std::process::Command::new(bin)
        .args(["pack", "-o"])
        .arg(out.path().join("a.wdm"))
        .arg(src.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: component app cannot run on this host: a core wasm module"),
        "{stderr}"
    );
    assert!(stderr.contains("wasm32-wasip2"), "{stderr}");

    let (src, _) = package_of(&component_importing(JS_LIKE), "wasi:cli/command");
    let run = std::process::Command::new(bin)
        .args(["pack", "-o"])
        .arg(out.path().join("b.wdm"))
        .arg(src.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: component app cannot run on this host: imports 3"),
        "{stderr}"
    );
    assert_lists_every_missing_import(&stderr);

    // A runnable component packs without a warning.
    let (src, _) = package_of(&std::fs::read(guest("hello")).unwrap(), "wasi:cli/command");
    let run = std::process::Command::new(bin)
        .args(["pack", "-o"])
        .arg(out.path().join("c.wdm"))
        .arg(src.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// Third-party components (componentize-py, ComponentizeJS) run from Winch
/// code and from Cranelift code. They are large and their toolchains come
/// from PyPI and npm, so they are built by scripts/bench-fast-install.sh
/// (into target/bench-thirdparty); without them this test says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_components_run_on_winch_and_on_cranelift_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-thirdparty");
    let apps = [
        (
            "python",
            root.join("pyapp/app.wasm"),
            "hello from componentize-py",
        ),
        (
            "js",
            root.join("jsapp/app.wasm"),
            "hello from ComponentizeJS",
        ),
    ];
    for (name, wasm, greeting) in apps {
        if !wasm.exists() {
            eprintln!(
                "note: {} missing (built by scripts/bench-fast-install.sh); skipped",
                wasm.display()
            );
            continue;
        }
        let src = tempfile::tempdir().unwrap();
        std::fs::copy(&wasm, src.path().join("app.wasm")).unwrap();
        std::fs::write(
            src.path().join("manifest.toml"),
            format!(
                "manifest-version = 1\n[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n\
                 [[component]]\nid = \"app\"\nfile = \"app.wasm\"\nworld = \"wasi:cli/command\"\n\
                 [component.sandbox]\nmemory = \"128MiB\"\n"
            ),
        )
        .unwrap();
        let mut pkg = Vec::new();
        wasmdm_package::pack(src.path(), &mut pkg, None, &mut |_| {}).unwrap();
        for compiler in [CompilerChoice::Winch, CompilerChoice::Cranelift] {
            let dir = tempfile::tempdir().unwrap();
            let mut c = cfg(dir.path(), compiler);
            c.max_package_bytes = 256 << 20;
            let rt = Runtime::open(c).await.unwrap();
            deliver_install(&rt, "0", &pkg).await.unwrap();
            let tier = rt.code_tier(name, "app").unwrap();
            assert_eq!(
                tier,
                if compiler == CompilerChoice::Winch {
                    Tier::Baseline
                } else {
                    Tier::Optimised
                }
            );
            rt.activate(name, None).await.unwrap();
            wait_state(&rt, name, "app", ComponentState::Exited, 120).await;
            assert_eq!(
                comp(&rt, name, "app").last_exit,
                Some(ExitStatus::Exited(0))
            );
            let lines = log_text(&rt, name, "app");
            assert!(
                lines.iter().any(|l| l.contains(greeting)),
                "{name} on {tier}: {lines:?}"
            );
            rt.shutdown().await;
        }
    }
}
