//! Sandbox denials, limits, stopping hostile guests, restart policy, refused packages.

mod runtime_support;

use runtime_support::*;
use std::time::{Duration, Instant};
use wasmdm::runtime::{ComponentState, ExitStatus, Runtime, RuntimeError};

async fn rt(dir: &std::path::Path) -> Runtime {
    Runtime::open(config(dir)).await.unwrap()
}

async fn install_guest(rt: &Runtime, guest_name: &str, sandbox: &str) {
    let pkg = package(
        guest_name,
        "1.0.0",
        guest_name,
        "wasi:cli/command",
        sandbox,
        "",
    );
    deliver_install(rt, "0", &pkg).await.unwrap();
}

/// The escaper's `ALLOWED ...` / `DENIED ...` lines.
fn probe_lines(rt: &Runtime) -> Vec<String> {
    log_text(rt, "escaper", "escaper")
        .into_iter()
        .filter(|l| l.starts_with("DENIED") || l.starts_with("ALLOWED"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaper_is_denied_everything_but_data() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    install_guest(&rt, "escaper", "").await;
    rt.activate("escaper", None).await.unwrap();
    wait_state(&rt, "escaper", "escaper", ComponentState::Exited, 10).await;
    let lines = probe_lines(&rt);
    assert_eq!(lines.len(), 7, "{lines:?}");
    for l in &lines {
        if l.contains("/data/ok") {
            assert_eq!(l, "ALLOWED write /data/ok");
        } else {
            assert!(l.starts_with("DENIED "), "escape not denied: {l}");
        }
    }
    assert_eq!(
        std::fs::read(dir.path().join("appdata/escaper/escaper/ok")).unwrap(),
        b"ok\n"
    );
    assert!(!std::path::Path::new("/tmp/escaper").exists());
}

/// What a manifest grants, and nothing more: a read-only directory shipped
/// in the package is readable and not writable; the network allow list lets
/// exactly the listed address through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_readonly_dir_and_network_allow_list_and_nothing_else() {
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_at = allowed.local_addr().unwrap();
    let other_at = other.local_addr().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::copy(guest("escaper"), src.path().join("escaper.wasm")).unwrap();
    std::fs::create_dir(src.path().join("assets")).unwrap();
    std::fs::write(src.path().join("assets/hello.txt"), "shipped\n").unwrap();
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"escaper\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"escaper\"\nfile = \"escaper.wasm\"\nworld = \"wasi:cli/command\"\n\
         [component.sandbox]\n\
         args = [\"read=/assets/hello.txt\", \"write=/assets/evil\", \"connect={allowed_at}\", \"connect={other_at}\"]\n\
         readonly = [{{ source = \"assets\", guest = \"/assets\" }}]\n\
         network = {{ allow = [\"{allowed_at}\"] }}\n"
    );
    std::fs::write(src.path().join("manifest.toml"), manifest).unwrap();
    let mut pkg = Vec::new();
    wasmdm_package::pack(src.path(), &mut pkg, None, &mut |_| {}).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    deliver_install(&rt, "0", &pkg).await.unwrap();
    rt.activate("escaper", None).await.unwrap();
    wait_state(&rt, "escaper", "escaper", ComponentState::Exited, 10).await;
    let lines = probe_lines(&rt);
    let outcome = |what: &str| {
        lines
            .iter()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(what))
            })
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no probe {what:?} in {lines:?}"))
    };
    assert_eq!(outcome("read /assets/hello.txt"), "ALLOWED");
    assert_eq!(outcome("write /assets/evil"), "DENIED");
    assert_eq!(outcome(&format!("tcp connect {allowed_at}")), "ALLOWED");
    assert_eq!(outcome(&format!("tcp connect {other_at}")), "DENIED");
    // The default probes: still nothing outside the grants.
    assert_eq!(outcome("tcp connect 127.0.0.1:80"), "DENIED");
    assert_eq!(outcome("read /etc/passwd"), "DENIED");
    assert_eq!(outcome("resolve localhost"), "DENIED");
    assert_eq!(outcome("write /data/ok"), "ALLOWED");
    // The allowed peer really saw the connection; the shipped file is intact.
    allowed.set_nonblocking(true).unwrap();
    assert!(
        allowed.accept().is_ok(),
        "no connection reached the allowed address"
    );
    other.set_nonblocking(true).unwrap();
    assert!(
        other.accept().is_err(),
        "a connection reached a denied address"
    );
    let shipped = std::fs::read_dir(dir.path().join("packages/escaper"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("assets"))
        .find(|p| p.exists())
        .expect("the package's assets directory");
    assert!(!shipped.join("evil").exists());
    assert_eq!(
        std::fs::read_to_string(shipped.join("hello.txt")).unwrap(),
        "shipped\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memhog_is_stopped_at_its_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    install_guest(&rt, "memhog", "memory = \"24MiB\"").await;
    rt.activate("memhog", None).await.unwrap();
    wait_state(&rt, "memhog", "memhog", ComponentState::Failed, 20).await;
    let c = comp(&rt, "memhog", "memhog");
    assert_eq!(
        c.last_exit,
        Some(ExitStatus::MemoryLimitExceeded { limit: 24 << 20 })
    );
    assert_eq!(
        c.last_exit.unwrap().to_string(),
        format!("memory limit exceeded ({} bytes)", 24 << 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinner_and_blocker_are_gone_within_grace_plus_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    for (slot, g) in [("0", "spinner"), ("1", "blocker")] {
        let pkg = package(g, "1.0.0", g, "wasi:cli/command", "stop-grace-ms = 300", "");
        deliver_install(&rt, slot, &pkg).await.unwrap();
        rt.activate(g, None).await.unwrap();
    }
    for g in ["spinner", "blocker"] {
        wait_until(10, &format!("{g} output"), || {
            !log_text(&rt, g, g).is_empty()
        })
        .await;
        wait_state(&rt, g, g, ComponentState::Running, 10).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for g in ["spinner", "blocker"] {
        let t = Instant::now();
        rt.deactivate(g, None).await.unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "{g} stopped before grace: {took:?}"
        );
        assert!(took < Duration::from_millis(300 + 400), "{g} took {took:?}");
        let c = comp(&rt, g, g);
        assert_eq!(c.state, ComponentState::Inactive);
        assert_eq!(c.last_exit, Some(ExitStatus::Stopped { forced: true }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapper_status_shows_the_trap() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    install_guest(&rt, "trapper", "").await;
    rt.activate("trapper", None).await.unwrap();
    wait_state(&rt, "trapper", "trapper", ComponentState::Failed, 10).await;
    match comp(&rt, "trapper", "trapper").last_exit {
        Some(ExitStatus::Trapped(m)) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failer_restarts_max_retries_times_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    install_guest(
        &rt,
        "failer",
        "restart = { policy = \"on-failure\", max-retries = 2, backoff-ms = 50 }",
    )
    .await;
    let mut events = rt.subscribe();
    rt.activate("failer", None).await.unwrap();
    wait_state(&rt, "failer", "failer", ComponentState::Failed, 10).await;
    let c = comp(&rt, "failer", "failer");
    assert_eq!(c.restart_count, 2);
    // WASI 0.2 `exit` carries only ok/err: the guest's exit(3) arrives as code 1.
    assert_eq!(c.last_exit, Some(ExitStatus::Exited(1)));
    let runs = log_text(&rt, "failer", "failer")
        .iter()
        .filter(|l| *l == "failing")
        .count();
    assert_eq!(runs, 3);
    // The LwM2M layer learns about the failure from the event stream.
    let mut failed = None;
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        if ev.state == ComponentState::Failed {
            failed = Some(ev);
        }
    }
    let ev = failed.expect("a Failed event");
    assert_eq!(
        (ev.package.as_str(), ev.component.as_str()),
        ("failer", "failer")
    );
    assert_eq!(ev.exit, Some(ExitStatus::Exited(1)));
    // Re-activating after failure starts a fresh retry budget.
    rt.activate("failer", None).await.unwrap();
    wait_state(&rt, "failer", "failer", ComponentState::Failed, 10).await;
    assert_eq!(comp(&rt, "failer", "failer").restart_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_policy_restarts_until_deactivated() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    install_guest(
        &rt,
        "hello",
        "restart = { policy = \"always\", backoff-ms = 20 }",
    )
    .await;
    rt.activate("hello", None).await.unwrap();
    wait_until(10, "3 restarts", || {
        comp(&rt, "hello", "hello").restart_count >= 3
    })
    .await;
    rt.deactivate("hello", None).await.unwrap();
    let n = comp(&rt, "hello", "hello").restart_count;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = comp(&rt, "hello", "hello");
    assert_eq!(c.restart_count, n);
    assert_eq!(c.state, ComponentState::Inactive);
}

/// Data already over the quota when the component starts (a quota lowered
/// by an upgrade, say) does not keep it from running: it can still read and
/// delete, but nothing it writes may grow `/data`, and its log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_over_quota_at_start_runs_but_cannot_grow() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    let pkg = package(
        "filler",
        "1.0.0",
        "filler",
        "wasi:cli/command",
        "data-quota = \"4KiB\"\nargs = [\"grow=1\", \"free\"]",
        "",
    );
    deliver_install(&rt, "0", &pkg).await.unwrap();
    let data = dir.path().join("appdata/filler/filler");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("big"), vec![0u8; 8192]).unwrap();
    rt.activate("filler", None).await.unwrap();
    wait_state(&rt, "filler", "filler", ComponentState::Exited, 20).await;
    let log = log_text(&rt, "filler", "filler");
    assert!(
        log.iter()
            .any(|l| l.contains("holds 12288 bytes, over its quota of 4096")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("grow 0 refused")),
        "{log:?}"
    );
    // Deleting gave the space back, but 64 KiB is still more than 4 KiB.
    assert!(
        log.iter()
            .any(|l| l.starts_with("free ") && l.contains("refused")),
        "{log:?}"
    );
    assert!(!data.join("big").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_unsupported_packages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;

    // Not an archive at all: unsupported (54), nothing delivered.
    let mut d = rt.delivery("0").unwrap();
    d.write_at(0, b"this is not a package").unwrap();
    let e = rt.verify_delivery("0").await.unwrap_err();
    assert_eq!(e.update_result_hint(), 54, "{e}");
    assert_eq!(rt.delivery_state("0").unwrap().1, None);

    // A manifest pinning the wrong digest: integrity (53).
    let mut tar = tar::Builder::new(Vec::new());
    let wasm = std::fs::read(guest("hello")).unwrap();
    let manifest = format!(
        "manifest-version = 1\n[package]\nname = \"evil\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"hello\"\nfile = \"hello.wasm\"\nsha256 = \"{}\"\nworld = \"wasi:cli/command\"\n",
        "0".repeat(64)
    );
    for (name, data) in [
        ("manifest.toml", manifest.as_bytes()),
        ("hello.wasm", &wasm[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    }
    let bad = tar.into_inner().unwrap();
    let e = {
        let mut d = rt.delivery("1").unwrap();
        d.write_at(0, &bad).unwrap();
        rt.verify_delivery("1").await.unwrap_err()
    };
    assert_eq!(e.update_result_hint(), 53, "{e}");

    // A core module instead of a component: verified, but install refuses it (54).
    let core = b"\0asm\x01\0\0\0".to_vec();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("core.wasm"), &core).unwrap();
    std::fs::write(
        tmp.path().join("manifest.toml"),
        "manifest-version = 1\n[package]\nname = \"core\"\nversion = \"1.0.0\"\n\
         [[component]]\nid = \"core\"\nfile = \"core.wasm\"\nworld = \"wasi:cli/command\"\n",
    )
    .unwrap();
    let mut pkg = Vec::new();
    wasmdm_package::pack(tmp.path(), &mut pkg, None, &mut |_| {}).unwrap();
    deliver(&rt, "2", &pkg).await.unwrap();
    let e = rt.install("2").await.unwrap_err();
    assert!(matches!(e, RuntimeError::NotAComponent { .. }), "{e}");
    assert_eq!(e.update_result_hint(), 54);
    assert!(rt.delivery_state("2").unwrap().1.is_some(), "delivery kept");

    // A wasmdm app declared as a plain command: its imports are not satisfied (58).
    let pkg = package("counter", "1.0.0", "counter", "wasi:cli/command", "", "");
    deliver(&rt, "3", &pkg).await.unwrap();
    let e = rt.install("3").await.unwrap_err();
    assert!(matches!(e, RuntimeError::InstallFailed { .. }), "{e}");
    assert_eq!(e.update_result_hint(), 58);
    assert!(rt.delivery_state("3").unwrap().1.is_some(), "delivery kept");

    // Nothing got installed and nothing was left behind.
    assert!(rt.list().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("packages"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("appdata"))
            .unwrap()
            .count(),
        0
    );

    // A failed upgrade leaves the installed version untouched.
    deliver_install(&rt, "4", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    rt.activate("counter", None).await.unwrap();
    let e = rt.install("3").await.unwrap_err();
    assert_eq!(e.update_result_hint(), 58);
    let st = rt.status("counter").unwrap();
    assert_eq!(st.version, "1.0.0");
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    rt.deactivate("counter", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_slot_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    assert!(matches!(
        rt.delivery("../x"),
        Err(RuntimeError::InvalidName(_))
    ));
    assert!(matches!(
        rt.install("").await,
        Err(RuntimeError::InvalidName(_))
    ));
}
