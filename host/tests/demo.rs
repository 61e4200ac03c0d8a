//! `wasmdm demo` end to end: a wasmdm server and real wasmdm devices (each
//! with its own runtime and data directory) on loopback; a group install with
//! pull over HTTP and activation, then a group upgrade with Block1 push over
//! CoAP, driven by the server's campaign engine through its HTTP API.

use std::path::Path;

#[test]
fn demo_installs_then_upgrades_a_group_of_wasmdm_devices() {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out");
    assert!(
        guests.join("pkg/counter").exists(),
        "run scripts/build-guests.sh first"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(wasmdm::demo::run(wasmdm::demo::DemoOptions {
            guests,
            devices: 2,
        }))
        .unwrap();
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_eq!(report["summary"]["done"], 2, "{report:#}");
    for job in report["jobs"].as_array().unwrap() {
        assert_eq!(job["update_result"], 2, "{job:#}");
        assert_eq!(job["update_result_name"], "Software successfully installed");
        assert_eq!(job["targets"][0]["old_version"], "1.0.0");
        assert_eq!(job["targets"][0]["new_version"], "2.0.0");
    }
}
