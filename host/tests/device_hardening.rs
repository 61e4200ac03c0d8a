//! A wasmdm device under conditions that used to leave it stuck: a package
//! that cannot be stored must return /9 to INITIAL with Update Result 50,
//! persisted, so the next Package URI is accepted (SwMgmt §5.1.2.3).

mod device_support;

use device_support::{Net, wait_for};
use serde_json::json;

/// The delivery directory of /9/0 cannot be created (a file stands where it
/// goes, as on a read-only or full data partition): the pull fails with 50
/// and /9/0 is INITIAL again, not stuck in DOWNLOAD STARTED.
#[test]
fn a_package_that_cannot_be_stored_returns_to_initial_with_50() {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let config = net.config("stuck-1", format!("coap://{}", net.bound.coap));
    let deliveries = config.data_dir.join("deliveries");
    net.device(config);
    net.wait_online(&["stuck-1"]);
    // After start-up (which tidies the data dir), as a failing disk would.
    std::fs::create_dir_all(&deliveries).unwrap();
    std::fs::write(deliveries.join("obj9-0"), b"not a directory").unwrap();
    let write = |uri: &str| {
        net.api
            .dm(
                "stuck-1",
                &json!({"op": "write", "path": "/9/0/3", "replace": true, "format": 0,
                        "payload": hex::encode(uri)}),
            )
            .unwrap()
    };
    let r = write("http://127.0.0.1:9/counter.wdm");
    assert_eq!(r["success"], false, "the storage error is reported: {r:#}");
    let v = wait_for("/9/0 back in INITIAL with 50", || {
        let v = net.read("stuck-1", "/9/0");
        (v["/9/0/7"] == 0 && v["/9/0/9"] == 50).then_some(v)
    });
    assert_eq!(v["/9/0/12"], false, "{v:#}");
    // Not stuck: another URI is taken (and fails the same way, not 4.05).
    let r = write("http://127.0.0.1:9/other.wdm");
    assert_ne!(r["code"], "4.05", "{r:#}");
}
