//! Execute Activate (/9/x/10) with a restart in the middle, against
//! lwm2m-node-lib.
//!
//! The device writes its own state (the activation asked for) and the
//! runtime writes its activation record at the same time; the answer goes
//! out once the device's is durable. A crash can leave only the runtime's
//! record durable, the Execute unanswered: the restarted device must then
//! stop what neither /9 nor /14 reports active, so that what runs is what
//! the server was told. An answered activation must survive a restart.

mod device_support;

use device_support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// `wasmdm <args> --data-dir <data>` (the data directory managed without
/// LwM2M, while no device holds it).
fn cli(args: &[&str], data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasmdm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Components the runtime's records mark active, as `package/component`.
fn recorded_active(data: &Path) -> Vec<String> {
    let list: Value = serde_json::from_str(&cli(&["list", "--json"], data)).unwrap();
    let mut active = Vec::new();
    for p in list.as_array().unwrap() {
        for c in p["components"].as_array().unwrap() {
            if c["active"] == json!(true) {
                active.push(format!(
                    "{}/{}",
                    p["name"].as_str().unwrap(),
                    c["id"].as_str().unwrap()
                ));
            }
        }
    }
    active
}

/// The device's log without terminal colours.
fn log(device: &DeviceProcess) -> String {
    strip_ansi(&device.log_text())
}

fn start(server: &mut NodeServer, ep: &str, data: &Path) -> DeviceProcess {
    let before = registrations(server, ep);
    let device = DeviceProcess::start(ep, server.port, data);
    wait_until(T, "the device registers", || {
        server.wait_event(Duration::from_millis(200), |_| true);
        registrations(server, ep) > before
    });
    device
}

#[test]
fn only_what_was_reported_active_runs_after_a_restart() {
    let mut server = NodeServer::start();
    let dir = LogOnPanic(tempfile::tempdir().unwrap());
    let data = dir.0.path().join("device");
    let package = dir.0.path().join("counter.wdm");
    std::fs::write(&package, pack_example("counter", "1.0.0")).unwrap();
    cli(&["install", package.to_str().unwrap()], &data);
    let ep = "wasmdm-activation-1";

    // Adopted as /9/0, INSTALLED and inactive, and persisted so.
    let mut device = start(&mut server, ep, &data);
    assert_eq!(server.read(ep, "/9/0/0"), "counter");
    assert_eq!(server.read(ep, "/9/0/12"), "0");
    device.terminate();

    // Only the runtime's record says active: the state a crash leaves when
    // it lands between the runtime's durable write and the device's.
    cli(&["activate", "counter"], &data);
    assert_eq!(recorded_active(&data), ["counter/counter"]);
    let mut device = start(&mut server, ep, &data);
    assert_eq!(server.read(ep, "/9/0/12"), "0");
    wait_until(T, "the unreported activation is stopped", || {
        let log = log(&device);
        log.contains("active in the runtime but not reported")
            && log.contains("stopped component=counter/counter")
    });
    device.terminate();
    assert!(
        recorded_active(&data).is_empty(),
        "{:?}",
        recorded_active(&data)
    );

    // An answered Activate is kept: after a restart the guest runs again
    // and /9 still reports it active.
    let mut device = start(&mut server, ep, &data);
    assert_eq!(server.execute(ep, "/9/0/10", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/12", "1", T);
    device.terminate();
    assert_eq!(recorded_active(&data), ["counter/counter"]);
    let log_before = log(&device).len();
    let device = start(&mut server, ep, &data);
    assert_eq!(server.read(ep, "/9/0/12"), "1");
    let counted = counter_value(&data).unwrap_or(0);
    wait_until(T, "the counter guest runs again", || {
        counter_value(&data).unwrap_or(0) > counted
    });
    let text = log(&device);
    assert!(
        !text[log_before..].contains("not reported"),
        "an answered activation was stopped:\n{text}"
    );
}
