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

fn dm(net: &Net, ep: &str, op: serde_json::Value) -> serde_json::Value {
    net.api.dm(ep, &op).unwrap()
}

/// Waits until /9/`i` reads `state` (Update State) and returns its values.
fn wait_state(net: &Net, ep: &str, i: u16, state: i64) -> serde_json::Value {
    wait_for(&format!("/9/{i}/7 = {state}"), || {
        let v = net.read(ep, &format!("/9/{i}"));
        (v[format!("/9/{i}/7")] == state).then_some(v)
    })
}

/// Writes the Package URI of /9/`i` to the server's download URL of `file`.
fn deliver(net: &Net, ep: &str, i: u16, file: &serde_json::Value) {
    let uri = format!(
        "{}{}",
        net.bound.api_base(),
        file["download_path"].as_str().unwrap()
    );
    let r = dm(
        net,
        ep,
        json!({"op": "write", "path": format!("/9/{i}/3"), "replace": true, "format": 0,
               "payload": hex::encode(uri)}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    wait_state(net, ep, i, 3);
}

/// Uploads the counter example as `version`; returns the file record.
fn upload_counter(net: &Net, version: &str) -> serde_json::Value {
    net.api
        .upload(
            &device_support::pack_example("counter", version),
            &format!("counter-{version}.wdm"),
            None,
            None,
        )
        .unwrap()
}

fn execute(net: &Net, ep: &str, path: &str, args: Option<&str>) -> serde_json::Value {
    dm(
        net,
        ep,
        json!({"op": "execute", "path": path, "args": args}),
    )
}

/// One package name lives in one /9 instance: installing it into a second
/// instance fails with 58 and leaves the first untouched; after
/// Uninstall(1) of the first, the second install is its upgrade and the
/// first forgets the package (uninstalling it cannot remove the new one).
#[test]
fn a_package_name_lives_in_one_instance() {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let config = net.config("twice-1", format!("coap://{}", net.bound.coap));
    net.device(config);
    net.wait_online(&["twice-1"]);
    let upload = |version: &str| upload_counter(&net, version);
    let (v1, v2) = (upload("1.0.0"), upload("2.0.0"));
    deliver(&net, "twice-1", 0, &v1);
    assert_eq!(execute(&net, "twice-1", "/9/0/4", None)["code"], "2.04");
    wait_state(&net, "twice-1", 0, 4);
    // A second instance with the same package.
    let r = dm(
        &net,
        "twice-1",
        json!({"op": "create", "path": "/9", "format": 11542, "payload": ""}),
    );
    assert_eq!(r["code"], "2.01", "{r:#}");
    let second: u16 = r["location"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(1);
    deliver(&net, "twice-1", second, &v2);
    execute(&net, "twice-1", &format!("/9/{second}/4"), None);
    let v = wait_for("the second install fails with 58", || {
        let v = net.read("twice-1", &format!("/9/{second}"));
        (v[format!("/9/{second}/9")] == 58).then_some(v)
    });
    assert_eq!(v[format!("/9/{second}/7")], 3, "stays DELIVERED: {v:#}");
    let first = net.read("twice-1", "/9/0");
    assert_eq!(first["/9/0/1"], "1.0.0", "{first:#}");
    assert_eq!(first["/9/0/7"], 4, "{first:#}");
    // The upgrade path: Uninstall(1) there, then Install here.
    assert_eq!(
        execute(&net, "twice-1", "/9/0/6", Some("1"))["code"],
        "2.04"
    );
    wait_state(&net, "twice-1", 0, 0);
    assert_eq!(
        execute(&net, "twice-1", &format!("/9/{second}/4"), None)["code"],
        "2.04"
    );
    let v = wait_state(&net, "twice-1", second, 4);
    assert_eq!(v[format!("/9/{second}/1")], "2.0.0", "{v:#}");
    let first = wait_for("/9/0 forgets the package", || {
        let v = net.read("twice-1", "/9/0");
        (v["/9/0/0"] == "").then_some(v)
    });
    assert_eq!(first["/9/0/7"], 0, "{first:#}");
    // Nothing left in /9/0 to uninstall; the package stays installed.
    assert_eq!(execute(&net, "twice-1", "/9/0/6", None)["code"], "4.05");
    let v = net.read("twice-1", &format!("/9/{second}"));
    assert_eq!(v[format!("/9/{second}/7")], 4, "{v:#}");
}

/// A lower version over an installed one is refused (57, a policy
/// refusal, not 58) and the installed version keeps running.
#[test]
fn a_downgrade_is_refused_by_default() {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let config = net.config("down-1", format!("coap://{}", net.bound.coap));
    net.device(config);
    net.wait_online(&["down-1"]);
    let upload = |version: &str| upload_counter(&net, version);
    let (new, old) = (upload("1.0.0"), upload("0.9.0"));
    deliver(&net, "down-1", 0, &new);
    execute(&net, "down-1", "/9/0/4", None);
    wait_state(&net, "down-1", 0, 4);
    assert_eq!(execute(&net, "down-1", "/9/0/6", Some("1"))["code"], "2.04");
    wait_state(&net, "down-1", 0, 0);
    deliver(&net, "down-1", 0, &old);
    execute(&net, "down-1", "/9/0/4", None);
    let v = wait_for("the downgrade is refused with 57", || {
        let v = net.read("down-1", "/9/0");
        (v["/9/0/9"] == 57).then_some(v)
    });
    assert_eq!(v["/9/0/7"], 3, "stays DELIVERED: {v:#}");
}
