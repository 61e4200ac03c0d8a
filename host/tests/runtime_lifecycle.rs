//! Deliver / install / activate / deactivate / uninstall / upgrade / persistence.

mod runtime_support;

use runtime_support::*;
use std::time::Duration;
use wasmdm::runtime::{ComponentState, ExitStatus, Runtime, RuntimeError};
use wasmdm::state::StateError;

fn counts(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("count="))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_install_activate_deactivate_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let info = deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    assert_eq!(info.name, "counter");
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.upgraded_from, None);
    assert!(info.active.is_empty());
    // The delivery slot is consumed by a successful install.
    assert_eq!(rt.delivery_state("0").unwrap(), (0, None));

    let c = comp(&rt, "counter", "counter");
    assert_eq!(c.state, ComponentState::Inactive);
    assert!(!c.active);

    rt.activate("counter", None).await.unwrap();
    assert!(comp(&rt, "counter", "counter").active);
    wait_until(10, "count=3", || {
        counts(&log_text(&rt, "counter", "counter")).contains(&3)
    })
    .await;
    assert_eq!(
        comp(&rt, "counter", "counter").state,
        ComponentState::Running
    );
    let lines = log_text(&rt, "counter", "counter");
    assert!(
        lines.iter().any(|l| l == "hi there"),
        "config greeting: {lines:?}"
    );

    // Activate twice is a no-op.
    rt.activate("counter", Some("counter")).await.unwrap();

    rt.deactivate("counter", None).await.unwrap();
    let c = comp(&rt, "counter", "counter");
    assert_eq!(c.state, ComponentState::Inactive);
    assert_eq!(c.last_exit, Some(ExitStatus::Stopped { forced: false }));
    let lines = log_text(&rt, "counter", "counter");
    assert!(
        lines.iter().any(|l| l.starts_with("counter stopped at")),
        "{lines:?}"
    );
    let appdata = dir.path().join("appdata/counter/counter/counter");
    assert!(appdata.exists());

    rt.uninstall("counter").await.unwrap();
    assert!(rt.list().is_empty());
    assert!(!dir.path().join("packages/counter").exists());
    assert!(!dir.path().join("appdata/counter").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("cache")).unwrap().count(),
        0,
        "cache keeps nothing unreferenced"
    );
    assert!(matches!(
        rt.activate("counter", None).await,
        Err(RuntimeError::UnknownPackage(_))
    ));
    assert!(matches!(
        rt.uninstall("counter").await,
        Err(RuntimeError::UnknownPackage(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_restarts_active_component_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    deliver_install(&rt, "0", &counter_pkg("1.0.0"))
        .await
        .unwrap();
    rt.activate("counter", None).await.unwrap();
    wait_until(10, "count=3", || {
        counts(&log_text(&rt, "counter", "counter")).contains(&3)
    })
    .await;

    // The new package is delivered and verified while v1 keeps running.
    deliver(&rt, "1", &counter_pkg("2.0.0")).await.unwrap();
    assert_eq!(
        comp(&rt, "counter", "counter").state,
        ComponentState::Running
    );
    let info = rt.install("1").await.unwrap();
    assert_eq!(info.upgraded_from.as_deref(), Some("1.0.0"));
    assert_eq!(info.version, "2.0.0");
    assert_eq!(info.active, vec!["counter".to_string()]);
    let before: u64 = std::fs::read_to_string(dir.path().join("appdata/counter/counter/counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(before >= 3);

    let st = rt.status("counter").unwrap();
    assert_eq!(st.version, "2.0.0");
    wait_until(10, "counting past the old value", || {
        counts(&log_text(&rt, "counter", "counter"))
            .iter()
            .any(|n| *n > before + 1)
    })
    .await;
    // Only one generation directory remains.
    let gens = std::fs::read_dir(dir.path().join("packages/counter"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(gens, 1);
    // The count never restarted from 1: /data survived the upgrade.
    let lines = log_text(&rt, "counter", "counter");
    let ones = counts(&lines).iter().filter(|n| **n == 1).count();
    assert!(ones <= 2, "count restarted: {lines:?}"); // stdout + log line of the first run
    rt.deactivate("counter", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_output_is_captured_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let pkg = package(
        "hello",
        "1.0.0",
        "hello",
        "wasi:cli/command",
        "env = { GREETING = \"hi\" }\nargs = [\"--flag\"]",
        "",
    );
    deliver_install(&rt, "0", &pkg).await.unwrap();
    let mut events = rt.subscribe();
    rt.activate("hello", None).await.unwrap();
    wait_state(&rt, "hello", "hello", ComponentState::Exited, 10).await;
    let lines = log_text(&rt, "hello", "hello");
    for want in [
        "hello from wasmdm",
        "arg[0]=hello",
        "arg[1]=--flag",
        "GREETING=hi",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in {lines:?}"
        );
    }
    let c = comp(&rt, "hello", "hello");
    assert_eq!(c.last_exit, Some(ExitStatus::Exited(0)));
    assert!(c.active, "desired state stays active after a clean exit");
    // Events: starting, running, exited.
    let mut seen = Vec::new();
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        seen.push(ev.state);
    }
    assert_eq!(seen.last(), Some(&ComponentState::Exited), "{seen:?}");
    assert!(seen.contains(&ComponentState::Running));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        deliver_install(&rt, "0", &counter_pkg("1.0.0"))
            .await
            .unwrap();
        let hello = package("hello", "1.0.0", "hello", "wasi:cli/command", "", "");
        deliver_install(&rt, "1", &hello).await.unwrap();
        rt.activate("counter", None).await.unwrap();
        wait_until(10, "count=2", || {
            counts(&log_text(&rt, "counter", "counter")).contains(&2)
        })
        .await;
        rt.shutdown().await;
    }
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let names: Vec<String> = rt.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, vec!["counter".to_string(), "hello".to_string()]);
    assert!(comp(&rt, "counter", "counter").active);
    assert!(!comp(&rt, "hello", "hello").active);
    assert_eq!(comp(&rt, "hello", "hello").state, ComponentState::Inactive);
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    wait_until(10, "count continues", || {
        counts(&log_text(&rt, "counter", "counter"))
            .first()
            .is_some_and(|n| *n > 2)
    })
    .await;
    rt.deactivate("counter", None).await.unwrap();
    drop(rt);
    // Deactivation was persisted too.
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    assert!(!comp(&rt, "counter", "counter").active);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        comp(&rt, "counter", "counter").state,
        ComponentState::Inactive
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _rt = Runtime::open(config(dir.path())).await.unwrap();
    match Runtime::open(config(dir.path())).await {
        Err(RuntimeError::State(StateError::InUse { pid, .. })) => {
            assert_eq!(pid, std::process::id())
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    let msg = Runtime::open(config(dir.path()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("is in use by pid"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_recovers_from_crash_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        deliver_install(&rt, "0", &counter_pkg("1.0.0"))
            .await
            .unwrap();
        rt.activate("counter", None).await.unwrap();
        // A delivery that was being verified when the "crash" happened.
        deliver(&rt, "3", &counter_pkg("1.1.0")).await.unwrap();
        rt.shutdown().await;
    }
    let d = dir.path();
    // Half-written upgrade of counter: a generation dir without a record switch.
    std::fs::create_dir_all(d.join("packages/counter/g999")).unwrap();
    std::fs::write(d.join("packages/counter/g999/counter.wasm"), b"partial").unwrap();
    std::fs::write(d.join("packages/counter/.tmp-1-0-record.json"), b"{\"half").unwrap();
    // A fresh install that never got its record.
    std::fs::create_dir_all(d.join("packages/ghost/g1")).unwrap();
    std::fs::write(d.join("packages/ghost/g1/x.wasm"), b"x").unwrap();
    // Slot 3: verification interrupted (delivered.json not yet written).
    std::fs::remove_file(d.join("deliveries/3/delivered.json")).unwrap();
    std::fs::write(d.join("deliveries/3/.tmp-9-0-progress.json"), b"x").unwrap();
    // A stale compiled file and a temp one.
    std::fs::write(d.join("cache/.tmp-1-0-x.cwasm"), b"x").unwrap();
    std::fs::write(d.join("cache/deadbeef-0000.cwasm"), b"x").unwrap();

    let rt = Runtime::open(config(d)).await.unwrap();
    assert!(!d.join("packages/ghost").exists());
    assert!(!d.join("packages/counter/g999").exists());
    assert!(!d.join("packages/counter/.tmp-1-0-record.json").exists());
    assert!(!d.join("deliveries/3/staging").exists());
    assert!(!d.join("deliveries/3/.tmp-9-0-progress.json").exists());
    assert!(!d.join("cache/deadbeef-0000.cwasm").exists());
    assert!(!d.join("cache/.tmp-1-0-x.cwasm").exists());
    // The received bytes survive: the slot can be verified again and installed.
    let (len, delivered) = rt.delivery_state("3").unwrap();
    assert!(len > 0);
    assert_eq!(delivered, None);
    assert!(matches!(
        rt.install("3").await,
        Err(RuntimeError::NotDelivered(_))
    ));
    let info = rt.verify_delivery("3").await.unwrap();
    assert_eq!(info.version, "1.1.0");
    // The installed, active counter came back.
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    let info = rt.install("3").await.unwrap();
    assert_eq!(info.upgraded_from.as_deref(), Some("1.0.0"));
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    rt.deactivate("counter", None).await.unwrap();
}

/// Delivery does not sync its staging files (the package file is the durable
/// copy): a power cut may empty them, so `open` rebuilds a delivered slot's
/// staging from the package file, also over a rebuild cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rebuilds_the_staging_of_a_delivered_slot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        deliver(&rt, "2", &counter_pkg("1.0.0")).await.unwrap();
        deliver(&rt, "5", &counter_pkg("1.1.0")).await.unwrap();
        rt.shutdown().await;
    }
    // Slot 5 lost its package file (a crash while an install removed the
    // slot): nothing to rebuild from, so it is no longer delivered.
    std::fs::remove_file(dir.path().join("deliveries/5/package.part")).unwrap();
    let slot = dir.path().join("deliveries/2");
    // What unsynced files may look like after a power cut: there but empty.
    std::fs::write(slot.join("staging/counter.wasm"), b"").unwrap();
    // And an earlier rebuild that was itself cut short.
    std::fs::create_dir_all(slot.join("staging.rebuild")).unwrap();
    std::fs::write(slot.join("staging.rebuild/counter.wasm"), b"half").unwrap();

    let rt = Runtime::open(config(dir.path())).await.unwrap();
    assert!(!slot.join("staging.rebuild").exists());
    let (_, delivered) = rt.delivery_state("2").unwrap();
    assert_eq!(delivered.map(|d| d.version).as_deref(), Some("1.0.0"));
    assert_eq!(rt.delivery_state("5").unwrap().1, None);
    assert!(!dir.path().join("deliveries/5/staging").exists());
    let info = rt.install("2").await.unwrap();
    assert_eq!(info.version, "1.0.0");
    rt.activate("counter", None).await.unwrap();
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    rt.deactivate("counter", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_stops_instances_before_releasing_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        deliver_install(&rt, "0", &counter_pkg("1.0.0"))
            .await
            .unwrap();
        rt.activate("counter", None).await.unwrap();
        wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
        // Dropped without shutdown().
    }
    // Reopening waits for the old instance to go: never two counters on one /data.
    let rt = loop {
        match Runtime::open(config(dir.path())).await {
            Ok(rt) => break rt,
            Err(RuntimeError::State(StateError::InUse { .. })) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    wait_state(&rt, "counter", "counter", ComponentState::Running, 10).await;
    rt.deactivate("counter", None).await.unwrap();
}

/// A command that finished runs exactly once when the host starts and a
/// replayed Activate arrives (the device re-issues the one it persisted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_command_is_not_run_again_by_a_replayed_activate() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("hello", "1.0.0", "hello", "wasi:cli/command", "", "");
    {
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        deliver_install(&rt, "0", &pkg).await.unwrap();
        rt.activate("hello", None).await.unwrap();
        wait_state(&rt, "hello", "hello", ComponentState::Exited, 10).await;
        rt.shutdown().await;
    }
    // The host starts again: the runtime autostarts what is active, then
    // the device's persisted Activate is replayed.
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    wait_state(&rt, "hello", "hello", ComponentState::Exited, 10).await;
    let runs = |rt: &Runtime| {
        log_text(rt, "hello", "hello")
            .iter()
            .filter(|l| l.as_str() == "hello from wasmdm")
            .count()
    };
    let before = runs(&rt);
    rt.activate("hello", None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(runs(&rt), before, "the command ran again");
    assert_eq!(comp(&rt, "hello", "hello").state, ComponentState::Exited);
    // Deactivate, then Activate: an explicit new run.
    rt.deactivate("hello", None).await.unwrap();
    rt.activate("hello", None).await.unwrap();
    wait_until(10, "the command runs again after a deactivate", || {
        runs(&rt) == before + 1
    })
    .await;
    rt.shutdown().await;
}

/// `wasmdm activate` (a runtime opened without autostart) marks active and
/// runs nothing; the device host then starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_in_a_one_shot_runtime_only_marks_active() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("hello", "1.0.0", "hello", "wasi:cli/command", "", "");
    let mut one_shot = config(dir.path());
    one_shot.autostart = false;
    {
        let rt = Runtime::open(one_shot).await.unwrap();
        deliver_install(&rt, "0", &pkg).await.unwrap();
        rt.activate("hello", None).await.unwrap();
        let c = comp(&rt, "hello", "hello");
        assert!(c.active, "{c:?}");
        assert_eq!(c.state, ComponentState::Inactive, "nothing runs: {c:?}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(log_text(&rt, "hello", "hello").is_empty());
        rt.shutdown().await;
    }
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    wait_state(&rt, "hello", "hello", ComponentState::Exited, 10).await;
    assert!(
        log_text(&rt, "hello", "hello")
            .iter()
            .any(|l| l == "hello from wasmdm")
    );
    rt.shutdown().await;
}
