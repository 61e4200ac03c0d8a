//! What an LwM2M server writes to the device's /1 Server instance survives a
//! restart, against an independent server (npm `lwm2m-node-lib`): it writes
//! Lifetime and Mute Send, the device is killed (SIGKILL) and started again,
//! and it registers with the written lifetime and still reads the written
//! values. Started with another `--lifetime`, the configuration wins.

mod device_support;

use device_support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn server_writes_to_slash_1_survive_a_kill_until_the_configuration_changes() {
    let mut server = NodeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let ep = "settings-dev";
    let mut dev = DeviceProcess::start(ep, server.port, &data);
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    assert_eq!(registration_events(&server, ep)[0]["lifetime"], "60");

    let w = server.write(ep, "/1/0/1", "300");
    assert_eq!(w["ok"], true, "{w}");
    let w = server.write(ep, "/1/0/23", "1");
    assert_eq!(w["ok"], true, "{w}");
    assert_eq!(server.read(ep, "/1/0/1"), "300");

    // SIGKILL right after the answers: the write was persisted before them.
    dev.kill();
    let mut dev = DeviceProcess::start(ep, server.port, &data);
    wait_until(T, "the second registration", || {
        registration_events(&server, ep).len() >= 2
    });
    assert_eq!(registration_events(&server, ep)[1]["lifetime"], "300");
    assert_eq!(server.read(ep, "/1/0/1"), "300");
    assert_eq!(server.read(ep, "/1/0/23"), "1");

    // A new lifetime in the configuration wins over what was written.
    dev.kill();
    let mut third = std::process::Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(["device", "--endpoint", ep, "--bind", "127.0.0.1:0"])
        .args(["--lifetime", "90"])
        .arg("--server")
        .arg(format!("coap://127.0.0.1:{}", server.port))
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(T, "the third registration", || {
        registration_events(&server, ep).len() >= 3
    });
    assert_eq!(registration_events(&server, ep)[2]["lifetime"], "90");
    assert_eq!(server.read(ep, "/1/0/23"), "0");
    let _ = third.kill();
    let _ = third.wait();
}
