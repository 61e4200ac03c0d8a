//! Apps serving LwM2M objects (issue 14), end to end: `wasmdm device` runs
//! the example `temperature` app (IPSO Temperature, 3303) and the
//! independent LwM2M server of the npm package `lwm2m-node-lib` reads,
//! observes, writes and executes its resources; the app's object joins and
//! leaves the registration; a hanging app is answered for within the
//! deadline; and packages granting a core object, or an object another
//! package has, are refused.

mod device_support;

use device_support::*;
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// The temperature example packed as `name`, sampling every 200 ms, with
/// `config` lines added to its `[config]`.
fn temperature(name: &str, config: &str) -> Vec<u8> {
    let src = repo().join("guest-examples/out/pkg/temperature");
    assert!(
        src.exists(),
        "{} missing: run scripts/build-guests.sh",
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("temperature.wasm"),
        dir.path().join("temperature.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(src.join("manifest.toml"))
        .unwrap()
        .replacen("name = \"temperature\"", &format!("name = \"{name}\""), 1)
        .replacen(
            "interval-ms = \"1000\"",
            &format!("interval-ms = \"200\"\n{config}"),
            1,
        );
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    let mut out = Vec::new();
    wasmdm_package::pack(dir.path(), &mut out, None, &mut |_| {}).unwrap();
    out
}

/// `pkg` with its manifest's `objects = [3303]` turned into `objects = [3]`:
/// what a hostile packer could send (`wasmdm pack` refuses to make it).
fn granting_a_core_object(pkg: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(pkg)
        .read_to_end(&mut tar)
        .unwrap();
    let from = b"objects = [3303]";
    let at = tar
        .windows(from.len())
        .position(|w| w == from)
        .expect("the grant is in the manifest");
    // Same length: the tar headers (sizes, checksums) stay right.
    tar[at..at + from.len()].copy_from_slice(b"objects = [3]   ");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// `wasmdm <args> --data-dir <data>`, which must succeed.
fn wasmdm(data: &Path, args: &[&str]) {
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
}

/// Installs and activates `pkg` in a device data directory, before the device runs.
fn install_active(data: &Path, pkg: &[u8], name: &str) {
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let file = data.with_extension("wdm");
    std::fs::write(&file, pkg).unwrap();
    wasmdm(data, &["install", file.to_str().unwrap()]);
    wasmdm(data, &["activate", name]);
}

/// The link list the server last got from `ep` (Register or Update with
/// a payload).
fn last_links(server: &NodeServer, ep: &str) -> Option<String> {
    server
        .events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["event"] == "registration" || e["event"] == "update")
        .filter(|e| e["ep"] == ep || e["event"] == "update")
        .find_map(|e| e["payload"].as_str().map(str::to_string))
}

fn logs(data: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(["logs", name, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temperature_of(v: &str) -> f64 {
    let t: f64 = v.parse().unwrap_or_else(|e| panic!("{v:?}: {e}"));
    assert!((17.0..=25.0).contains(&t), "{t}");
    t
}

#[test]
fn lwm2m_node_lib_reads_observes_writes_and_executes_an_app_object() {
    let mut server = NodeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("device");
    install_active(&data, &temperature("temperature", ""), "temperature");
    let ep = "wasmdm-appobjects-1";
    let mut device = DeviceProcess::start(ep, server.port, &data);
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    // The app declares its object once it runs: it joins the registration.
    wait_until(T, "</3303/0> in the registration", || {
        last_links(&server, ep).is_some_and(|l| l.contains("</3303/0>"))
    });

    // Reads are answered by the host from the published values.
    temperature_of(&server.read(ep, "/3303/0/5700"));
    assert_eq!(server.read(ep, "/3303/0/5701"), "Cel");
    assert_eq!(
        server.read(ep, "/3303/0/5603").parse::<f64>().unwrap(),
        -40.0
    );
    assert_eq!(server.read(ep, "/3303/0/5750"), "simulated");

    // Observe: the host notifies as the app publishes.
    let obs = server.op(json!({"op": "observe", "ep": ep, "path": "/3303/0/5700"}));
    assert_eq!(obs["ok"], json!(true), "{obs}");
    let notified = |server: &NodeServer| -> Vec<String> {
        server
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "notify" && e["path"] == "/3303/0/5700")
            .filter_map(|e| e["value"].as_str().map(str::to_string))
            .collect()
    };
    wait_until(T, "three notifications of 5700", || {
        notified(&server).len() >= 3
    });
    let values = notified(&server);
    for v in &values {
        temperature_of(v);
    }
    assert!(
        values.windows(2).any(|w| w[0] != w[1]),
        "the simulated sensor moves: {values:?}"
    );

    // Write reaches the app; what it accepted is what is read next.
    let r = server.write(ep, "/3303/0/5750", "greenhouse");
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(server.read(ep, "/3303/0/5750"), "greenhouse");
    // Execute reaches the app: Reset Min and Max Measured Values.
    let r = server.execute(ep, "/3303/0/5605", "");
    assert_eq!(r["ok"], json!(true), "{r}");
    wait_until(T, "the app's answers in its log", || {
        let l = logs(&data, "temperature");
        l.contains("application type set to \"greenhouse\"") && l.contains("min/max reset to")
    });
    // Read-only resources refuse a Write, without asking the app.
    let r = server.write(ep, "/3303/0/5700", "1.0");
    assert_eq!(r["ok"], json!(false), "{r}");

    // Deactivate: the app stops and its object leaves the registration.
    assert_eq!(server.execute(ep, "/9/0/11", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/12", "0", T);
    wait_until(T, "an Update without 3303", || {
        last_links(&server, ep).is_some_and(|l| !l.contains("3303"))
    });
    let r = server.op(json!({"op": "read", "ep": ep, "path": "/3303/0/5700"}));
    assert_eq!(r["ok"], json!(false), "{r}");

    assert!(device.terminate().success(), "{}", device.log_text());
    if std::env::var_os("WASMDM_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", device.log_text());
    }
}

#[test]
fn a_hanging_app_is_answered_for_and_forbidden_grants_are_refused() {
    let mut server = NodeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("device");
    let ep = "wasmdm-appobjects-2";
    let mut device = DeviceProcess::start(ep, server.port, &data);
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);
    let files = HttpFiles::serve(vec![
        (
            "/core.wdm",
            granting_a_core_object(&temperature("core", "")),
        ),
        ("/hang.wdm", temperature("temperature", "hang = \"true\"")),
    ]);

    // A package granting a core object: refused at delivery with Update
    // Result 54 (unsupported package), nothing kept.
    let r = server.write(ep, "/9/0/3", &format!("{}/core.wdm", files.base));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/9", "54", T);
    assert_eq!(server.read(ep, "/9/0/7"), "0");
    wait_until(T, "the refusal in the device log", || {
        device.log_text().contains("object 3 is an OMA core object")
    });

    // An app that never takes requests (hang mode).
    let r = server.write(ep, "/9/0/3", &format!("{}/hang.wdm", files.base));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.execute(ep, "/9/0/10", "")["ok"], json!(true));
    wait_until(T, "</3303/0> in the registration", || {
        last_links(&server, ep).is_some_and(|l| l.contains("</3303/0>"))
    });
    // A Read never waits on the app.
    temperature_of(&server.read(ep, "/3303/0/5700"));
    // The device answers Write and Execute itself at its deadline (2 s).
    for (op, path, value) in [
        ("write", "/3303/0/5750", "x"),
        ("execute", "/3303/0/5605", ""),
    ] {
        let t = Instant::now();
        let r = server.op(json!({"op": op, "ep": ep, "path": path, "value": value}));
        let took = t.elapsed();
        assert_eq!(r["ok"], json!(false), "{op}: {r}");
        assert!(took >= Duration::from_millis(1500), "{op} took {took:?}");
        assert!(took < Duration::from_secs(20), "{op} took {took:?}");
    }
    // The device still answers everything else at once.
    assert_eq!(server.read(ep, "/3/0/0"), "wasmdm");
    assert!(device.terminate().success(), "{}", device.log_text());

    // Another package granting 3303, which `temperature` has: refused at
    // install, naming the package that has it; nothing changes.
    let second = data.with_extension("second.wdm");
    std::fs::write(&second, temperature("second", "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .arg("install")
        .arg(&second)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("object 3303 is already granted to installed package \"temperature\""),
        "{err}"
    );
}

/// A JSON number, or text holding one (text/plain reads carry no type).
fn number(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn wasmdm_server_reads_observes_writes_and_executes_an_app_object() {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let ep = "wasmdm-appobjects-3";
    let config = net.config(ep, format!("coap://{}", net.bound.coap));
    install_active(
        &config.data_dir,
        &temperature("temperature", ""),
        "temperature",
    );
    net.device(config);
    net.wait_online(&[ep]);
    let dm = |op: serde_json::Value| net.api.dm(ep, &op).unwrap();
    // Once the app declared its object, the server reads it like any other.
    let v = wait_for("a Read of /3303/0/5700", || {
        let r = dm(json!({"op": "read", "path": "/3303/0/5700", "accept": null}));
        (r["success"] == true).then_some(r)
    });
    let t = number(&v["values"]["/3303/0/5700"]);
    assert!((17.0..=25.0).contains(&t), "{v:#}");
    // The whole instance, in SenML JSON (typed: the server has no
    // definition of 3303).
    let r = dm(json!({"op": "read", "path": "/3303/0", "accept": 110}));
    assert_eq!(r["code"], "2.05", "{r:#}");
    let inst = &r["values"];
    assert_eq!(inst["/3303/0/5701"], "Cel", "{inst:#}");
    assert_eq!(inst["/3303/0/5750"], "simulated", "{inst:#}");
    assert_eq!(number(&inst["/3303/0/5603"]), -40.0, "{inst:#}");
    assert!(inst.get("/3303/0/5605").is_none(), "executable: {inst:#}");
    // Discover lists the declared resources.
    let d = dm(json!({"op": "discover", "path": "/3303"}));
    let links = d["links"].to_string();
    for r in ["</3303/0/5700>", "</3303/0/5605>", "</3303/0/5750>"] {
        assert!(links.contains(&r[1..r.len() - 1]), "{r}: {d:#}");
    }
    // Write-Attributes, then Observe: notifications as the sensor moves.
    let r = dm(
        json!({"op": "write-attributes", "path": "/3303/0/5700", "attrs": ["pmin=0", "pmax=30"]}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    let r = dm(json!({"op": "observe", "path": "/3303/0/5700", "accept": null}));
    assert_eq!(r["code"], "2.05", "{r:#}");
    let first = r["values"]["/3303/0/5700"].clone();
    wait_for("a notification with a new 5700", || {
        let n = net.api.get(&format!("/api/devices/{ep}/observed")).ok()?;
        let v = n["/3303/0/5700"].clone();
        (!v.is_null() && v != first).then_some(())
    });
    // Write (text) and Execute reach the app.
    let r = dm(
        json!({"op": "write", "path": "/3303/0/5750", "replace": true, "format": 0,
                      "payload": hex::encode("lab")}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    let r = dm(json!({"op": "read", "path": "/3303/0/5750", "accept": null}));
    assert_eq!(r["values"]["/3303/0/5750"], "lab", "{r:#}");
    let r = dm(json!({"op": "execute", "path": "/3303/0/5605", "args": null}));
    assert_eq!(r["code"], "2.04", "{r:#}");
    // What the declaration forbids is refused without the app.
    let r = dm(
        json!({"op": "write", "path": "/3303/0/5700", "replace": true, "format": 0,
                      "payload": hex::encode("1.5")}),
    );
    assert_eq!(r["code"], "4.05", "{r:#}");
    let r = dm(json!({"op": "execute", "path": "/3303/0/5700", "args": null}));
    assert_eq!(r["code"], "4.05", "{r:#}");
    // Deactivate: the object is gone.
    let r = dm(json!({"op": "execute", "path": "/9/0/11", "args": null}));
    assert_eq!(r["code"], "2.04", "{r:#}");
    wait_for("/3303 gone", || {
        let r = dm(json!({"op": "read", "path": "/3303/0/5700", "accept": null}));
        (r["code"] == "4.04").then_some(())
    });

    // Another package granting 3303 (still granted to the installed
    // `temperature`), delivered into a new /9 instance: Install fails with
    // Update Result 58 and nothing changes.
    let r = dm(json!({"op": "create", "path": "/9", "format": 11542, "payload": ""}));
    assert_eq!(r["code"], "2.01", "{r:#}");
    let i: u16 = r["location"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(1);
    let file = net
        .api
        .upload(&temperature("second", ""), "second.wdm", None, None)
        .unwrap();
    let uri = format!(
        "{}{}",
        net.bound.api_base(),
        file["download_path"].as_str().unwrap()
    );
    let r = dm(
        json!({"op": "write", "path": format!("/9/{i}/3"), "replace": true,
                      "format": 0, "payload": hex::encode(uri)}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    wait_for("delivered", || {
        (net.read(ep, &format!("/9/{i}"))[format!("/9/{i}/7")] == 3).then_some(())
    });
    let _ = dm(json!({"op": "execute", "path": format!("/9/{i}/4"), "args": null}));
    let v = wait_for("Install refused with 58", || {
        let v = net.read(ep, &format!("/9/{i}"));
        (v[format!("/9/{i}/9")] == 58).then_some(v)
    });
    assert_ne!(v[format!("/9/{i}/7")], 4, "not installed: {v:#}");
    assert_eq!(net.read(ep, "/9/0")["/9/0/0"], "temperature");
}

/// LwM2M 1.1 Send: the app asks for periodic reports; `wasmdm server` keeps
/// the values it receives (without observing anything).
#[test]
fn the_app_reports_with_send_to_wasmdm_server() {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let ep = "wasmdm-appobjects-4";
    let config = net.config(ep, format!("coap://{}", net.bound.coap));
    install_active(
        &config.data_dir,
        &temperature("temperature", "send-interval-ms = \"300\""),
        "temperature",
    );
    net.device(config);
    net.wait_online(&[ep]);
    let kept = wait_for("Sent values kept by the server", || {
        let n = net.api.get(&format!("/api/devices/{ep}/observed")).ok()?;
        (!n["/3303/0/5700"].is_null() && !n["/3303/0/5601"].is_null()).then_some(n)
    });
    let t = number(&kept["/3303/0/5700"]);
    assert!((17.0..=25.0).contains(&t), "{kept:#}");
    assert!(number(&kept["/3303/0/5601"]) <= t, "{kept:#}");
}
