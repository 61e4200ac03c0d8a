//! One trust per data directory: the keys a device requires are recorded
//! there, `wasmdm install` on that directory applies them, and installed
//! packages are re-checked at every start.

mod runtime_support;

use runtime_support::*;
use std::process::Command;
use wasmdm::runtime::{ComponentState, Runtime};

fn cli_install(data: &std::path::Path, package: &[u8]) -> std::process::Output {
    let file = data.with_extension("wdm");
    std::fs::write(&file, package).unwrap();
    Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .arg("install")
        .arg(&file)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_a_restart_apply_the_devices_trust() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_signing, public) = wasmdm_package::keygen().unwrap();

    // A device that requires signatures ran here: the CLI refuses an
    // unsigned package, as the device would.
    let mut device = config(&data);
    device.trusted_keys = vec![public];
    drop(Runtime::open(device.clone()).await.unwrap());
    let out = cli_install(&data, &counter_pkg("1.0.0"));
    assert!(
        !out.status.success(),
        "the CLI installed an unsigned package"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sign"), "{err}");

    // Without required signatures (a device that trusts none ran last) the
    // same install goes through and the package is activated...
    drop(Runtime::open(config(&data)).await.unwrap());
    let out = cli_install(&data, &counter_pkg("1.0.0"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = Runtime::open(config(&data)).await.unwrap();
    rt.activate("counter", None).await.unwrap();
    wait_state(&rt, "counter", "counter", ComponentState::Running, 30).await;
    rt.shutdown().await;
    drop(rt);

    // ...but a device that requires signatures does not start it.
    let rt = Runtime::open(device).await.unwrap();
    let c = comp(&rt, "counter", "counter");
    assert!(
        !matches!(c.state, ComponentState::Running | ComponentState::Starting),
        "an unsigned package runs on a device that requires signatures: {c:?}"
    );
    rt.shutdown().await;
}
