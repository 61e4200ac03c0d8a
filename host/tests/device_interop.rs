//! `wasmdm device` end to end against an independent LwM2M server, the npm
//! package `lwm2m-node-lib` (its server, bound to loopback): registration,
//! reads of /3 and /9, pull of a package over HTTP, Install, Activate (the
//! guest's own counter file proves it runs), Observe of Update State,
//! upgrade through Uninstall(1) + new package + Install, Deactivate,
//! Uninstall, and a SIGKILL restart that comes back in the same state.
//!
//! lwm2m-node-lib reads and writes single resources as text/plain only and
//! cannot send block-wise writes, so pushes are tested in device_push.rs with
//! aiocoap as the sending peer.

mod device_support;

use device_support::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn pull_install_activate_upgrade_uninstall_against_lwm2m_node_lib() {
    let mut server = NodeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("device");
    let ep = "wasmdm-interop-1";
    let mut device = DeviceProcess::start(ep, server.port, &data);
    let reg = server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    let payload = reg["payload"].as_str().unwrap();
    for link in ["</3/0>", "</9/0>", "</14>", "</1/0>"] {
        assert!(payload.contains(link), "{payload}");
    }
    assert!(
        !payload.contains("</0"),
        "Security must not be announced: {payload}"
    );
    assert_eq!(reg["version"], json!("1.1"));

    // Device object and an empty /9/0 (SwMgmt §5.1.2.1: INITIAL, result 0).
    assert_eq!(server.read(ep, "/3/0/0"), "wasmdm");
    assert_eq!(server.read(ep, "/3/0/3"), env!("CARGO_PKG_VERSION"));
    assert_eq!(server.read(ep, "/9/0/7"), "0");
    assert_eq!(server.read(ep, "/9/0/9"), "0");
    assert_eq!(server.read(ep, "/9/0/12"), "0");

    // Observe Update State; every change is notified.
    let obs = server.op(json!({"op": "observe", "ep": ep, "path": "/9/0/7"}));
    assert_eq!(obs["ok"], json!(true), "{obs}");

    // Wrong-state operations answer 4.05 and change nothing (common practice, field notes).
    let r = server.execute(ep, "/9/0/4", "");
    assert_eq!(
        r["ok"],
        json!(false),
        "Install in INITIAL must be refused: {r}"
    );
    let r = server.execute(ep, "/9/0/10", "");
    assert_eq!(
        r["ok"],
        json!(false),
        "Activate in INITIAL must be refused: {r}"
    );
    // An unsupported scheme: 4.00 and Update Result 56 (Invalid URI).
    let r = server.write(ep, "/9/0/3", "ftp://example.org/x");
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(server.read(ep, "/9/0/9"), "56");
    assert_eq!(server.read(ep, "/9/0/7"), "0");

    // Pull over HTTP.
    let v1 = pack_example("counter", "1.0.0");
    let v2 = pack_example("counter", "2.0.0");
    let files = HttpFiles::serve(vec![("/counter-1.wdm", v1), ("/counter-2.wdm", v2)]);
    let r = server.write(ep, "/9/0/3", &format!("{}/counter-1.wdm", files.base));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(
        server.read(ep, "/9/0/9"),
        "0",
        "DELIVERED keeps result 0 (§5.1.2.3)"
    );
    assert_eq!(server.read(ep, "/9/0/0"), "counter");
    assert_eq!(server.read(ep, "/9/0/1"), "1.0.0");
    server.wait_event(T, |e| e["event"] == "notify" && e["value"] == "3");

    // Install (§5.1.3.1): INSTALLED, result 2, inactive.
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/9"), "2");
    assert_eq!(server.read(ep, "/9/0/12"), "0");
    assert_eq!(
        server.read(ep, "/9/0/18"),
        "1",
        "one component, one /14 instance"
    );
    assert_eq!(server.read(ep, "/14/0/0"), "counter");

    // Activate (§5.2): the guest runs and counts in its private /data.
    assert_eq!(server.execute(ep, "/9/0/10", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/12", "1", T);
    wait_until(T, "counter guest writes /data/counter", || {
        counter_value(&data).unwrap_or(0) >= 3
    });

    // Its output is in the device's log, readable while the device runs.
    let logs = std::process::Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(["logs", "counter", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("[counter]") && logs.contains("count=1"),
        "{logs}"
    );

    // Upgrade: Uninstall(1) keeps the software running (§5.1.3.2 "ForUpdate").
    assert_eq!(server.execute(ep, "/9/0/6", "1")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "0", T);
    let before = counter_value(&data).unwrap();
    wait_until(T, "still running after Uninstall(1)", || {
        counter_value(&data).unwrap_or(0) > before
    });
    let r = server.write(ep, "/9/0/3", &format!("{}/counter-2.wdm", files.base));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/1"), "2.0.0");
    assert_eq!(
        server.read(ep, "/9/0/18"),
        "1",
        "the old version's /14 instance is gone"
    );
    assert_eq!(
        server.read(ep, "/9/0/12"),
        "1",
        "what was active restarts on the new version"
    );
    let carried = counter_value(&data).unwrap();
    assert!(
        carried >= before,
        "the data directory is kept across the upgrade"
    );
    wait_until(T, "the new version keeps counting", || {
        counter_value(&data).unwrap_or(0) > carried
    });

    // SIGKILL, restart: same states, re-registered, the guest runs again.
    device.kill();
    let mut device = DeviceProcess::start(ep, server.port, &data);
    let registrations = || registrations(&server, ep);
    wait_until(T, "re-registration after restart", || registrations() >= 2);
    assert_eq!(server.read(ep, "/9/0/7"), "4");
    assert_eq!(server.read(ep, "/9/0/9"), "2");
    assert_eq!(server.read(ep, "/9/0/12"), "1");
    let after_restart = counter_value(&data).unwrap();
    wait_until(T, "reactivated after restart", || {
        counter_value(&data).unwrap_or(0) > after_restart
    });

    // Deactivate, then Uninstall (no argument): back to INITIAL.
    assert_eq!(server.execute(ep, "/9/0/11", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/12", "0", T);
    let stopped = counter_value(&data).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        counter_value(&data).unwrap(),
        stopped,
        "a deactivated guest does not run"
    );
    assert_eq!(server.execute(ep, "/9/0/6", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "0", T);
    assert_eq!(server.read(ep, "/9/0/9"), "0");

    // Clean stop de-registers.
    assert!(device.terminate().success(), "{}", device.log_text());
    server.wait_event(T, |e| e["event"] == "deregistration" && e["ep"] == ep);
    if std::env::var_os("WASMDM_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", device.log_text());
    }
    let http_gets = files.requests.lock().unwrap().len();
    assert_eq!(http_gets, 2, "one GET per package");
}

/// A package installed with `wasmdm install` while the device was off is
/// reported in Object 9 (INSTALLED, result 2) and 14 once the device starts,
/// so the server sees everything the device runs; it can then be managed.
#[test]
fn packages_installed_from_the_cli_are_reported_and_manageable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("device");
    let pkg = dir.path().join("hello.wdm");
    std::fs::write(&pkg, pack_example("hello", "1.0.0")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .arg("install")
        .arg("--data-dir")
        .arg(&data)
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed hello 1.0.0"));

    let mut server = NodeServer::start();
    let ep = "wasmdm-interop-2";
    let _device = DeviceProcess::start(ep, server.port, &data);
    let reg = server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    assert!(reg["payload"].as_str().unwrap().contains("</9/0>"), "{reg}");
    assert_eq!(server.read(ep, "/9/0/0"), "hello");
    assert_eq!(server.read(ep, "/9/0/1"), "1.0.0");
    assert_eq!(server.read(ep, "/9/0/7"), "4");
    assert_eq!(server.read(ep, "/9/0/9"), "2");
    assert_eq!(server.read(ep, "/14/0/0"), "hello");
    // Managed like any other: Uninstall removes it from the runtime.
    assert_eq!(server.execute(ep, "/9/0/6", "0")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "0", T);

    // Reboot (/3/0/4): answered, then the host restarts itself (same
    // process id, re-executed) and registers again with the same state.
    assert_eq!(server.execute(ep, "/3/0/4", "")["ok"], json!(true));
    wait_until(T, "re-registration after Reboot", || {
        registrations(&server, ep) >= 2
    });
    assert_eq!(server.read(ep, "/9/0/7"), "0");
    assert_eq!(server.read(ep, "/3/0/0"), "wasmdm");
}
