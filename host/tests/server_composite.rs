//! The server API's composite operations and Write-Attributes against a
//! real `wasmdm device` (LwM2M 1.1 Core §6.3.8 Read-Composite, §6.3.9
//! Write-Composite, §6.4.3 Observe-Composite, §5.1.2 attributes): values
//! across objects in one request, all-or-nothing writes, notifications
//! paced by pmin/pmax, the caps refused before anything is sent, and the
//! matching `wasmdm ctl` subcommands.

mod device_support;

use device_support::*;
use serde_json::{Value as Json, json};
use std::process::Command;
use std::time::{Duration, Instant};
use wasmdm_server::ctl::CtlError;

/// A server and one plain-CoAP device `ep`, online.
fn net_with(ep: &str) -> Net {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let config = net.config(ep, format!("coap://{}", net.bound.coap));
    net.device(config);
    net.wait_online(&[ep]);
    net
}

fn dm(net: &Net, ep: &str, op: Json) -> Json {
    net.api.dm(ep, &op).unwrap()
}

fn observed(net: &Net, ep: &str) -> Json {
    net.api.get(&format!("/api/devices/{ep}/observed")).unwrap()
}

/// The API's refusal (HTTP status and message) of `op`.
fn refused(net: &Net, ep: &str, op: Json) -> (u16, String) {
    match net.api.dm(ep, &op) {
        Err(CtlError::Api { status, message }) => (status, message),
        other => panic!("{op} was not refused: {other:?}"),
    }
}

#[test]
fn composite_reads_and_writes_span_objects_all_or_nothing() {
    let ep = "comp-1";
    let net = net_with(ep);

    // Read-Composite: two objects in one FETCH; the absent path is left out.
    for format in [110, 112] {
        let r = dm(
            &net,
            ep,
            json!({"op": "read-composite", "paths": ["/3/0/0", "/1/0/1", "/3/0/999"], "format": format}),
        );
        assert_eq!(r["code"], "2.05", "{r:#}");
        assert_eq!(r["format"], format);
        let v = r["values"].as_object().unwrap();
        assert_eq!(v.len(), 2, "{r:#}");
        assert!(v["/3/0/0"].is_string(), "{r:#}");
        assert_eq!(v["/1/0/1"], 60, "the device's lifetime: {r:#}");
    }
    // Two whole objects, each named twice: an answer over one block (1024
    // bytes) comes in Block2 blocks, collected by repeating the FETCH
    // (RFC 8132 §2.3.2).
    let paths = ["/3", "/1", "/3", "/1", "/3", "/1"];
    let r = dm(&net, ep, json!({"op": "read-composite", "paths": paths}));
    assert_eq!(r["code"], "2.05", "{r:#}");
    let mut parts = serde_json::Map::new();
    for path in ["/3", "/1"] {
        let r = dm(&net, ep, json!({"op": "read-composite", "paths": [path]}));
        parts.extend(r["values"].as_object().unwrap().clone());
    }
    let mut whole = r["values"].as_object().unwrap().clone();
    for moving in ["/3/0/10", "/3/0/13"] {
        whole.remove(moving);
        parts.remove(moving);
    }
    assert_eq!(whole, parts);
    // Nothing readable at all: 4.04, not an empty 2.05.
    let r = dm(
        &net,
        ep,
        json!({"op": "read-composite", "paths": ["/3/0/999", "/4242/0"]}),
    );
    assert_eq!(
        (r["code"].as_str(), r["success"].as_bool()),
        (Some("4.04"), Some(false))
    );

    // Write-Composite: two /1 resources in one iPATCH, read back.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-composite", "values": {"/1/0/5": 300, "/1/0/6": false}}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    let v = net.read(ep, "/1/0");
    assert_eq!(
        (&v["/1/0/5"], &v["/1/0/6"]),
        (&json!(300), &json!(false)),
        "{v:#}"
    );
    // The SenML list form in CBOR: the same.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-composite", "format": 112,
               "values": [{"n": "/1/0/5", "v": 301}, {"n": "/1/0/6", "vb": true}]}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    assert_eq!(net.read(ep, "/1/0/5")["/1/0/5"], 301);
    // One refused record (Short Server ID is read-only): 4.05, nothing written.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-composite", "values": {"/1/0/5": 999, "/1/0/0": 7}}),
    );
    assert_eq!(
        (r["code"].as_str(), r["success"].as_bool()),
        (Some("4.05"), Some(false)),
        "{r:#}"
    );
    let v = net.read(ep, "/1/0");
    assert_eq!(
        (&v["/1/0/5"], &v["/1/0/0"]),
        (&json!(301), &json!(1)),
        "{v:#}"
    );
    // A value the object's own rules refuse (Lifetime 0, Core 1.1 §E.2)
    // after one it accepts: the object checks all of them before the first
    // is written, so 4.00 and nothing changed.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-composite",
               "values": [{"n": "/1/0/5", "v": 555}, {"n": "/1/0/1", "v": 0}]}),
    );
    assert_eq!(
        (r["code"].as_str(), r["success"].as_bool()),
        (Some("4.00"), Some(false)),
        "{r:#}"
    );
    assert_eq!(net.read(ep, "/1/0/5")["/1/0/5"], 301);
    // A record of the wrong type (4.00 from the device), nothing written.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-composite", "values": [{"n": "/1/0/5", "v": 5}, {"n": "/1/0/6", "vs": "maybe"}]}),
    );
    assert_eq!(r["success"], false, "{r:#}");
    assert_eq!(net.read(ep, "/1/0/5")["/1/0/5"], 301);

    // The console's history names the composite's paths.
    let h = net
        .api
        .get(&format!("/api/console/devices/{ep}/history"))
        .unwrap();
    let ops = h["operations"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["op"] == "write-composite" && o["path"] == "/1/0/5,/1/0/6"),
        "{h:#}"
    );
}

#[test]
fn caps_and_bad_requests_are_refused_before_anything_is_sent() {
    let ep = "comp-caps";
    let net = net_with(ep);
    let paths: Vec<String> = (0..65).map(|i| format!("/3/0/{i}")).collect();
    let (status, message) = refused(&net, ep, json!({"op": "read-composite", "paths": paths}));
    assert_eq!(status, 400);
    assert!(message.contains("at most 64"), "{message}");
    // 64 is allowed (the device leaves out what it does not have).
    let r = dm(
        &net,
        ep,
        json!({"op": "read-composite", "paths": &paths[..64]}),
    );
    assert_eq!(r["code"], "2.05", "{r:#}");
    let values: serde_json::Map<String, Json> =
        (0..65).map(|i| (format!("/1/0/{i}"), json!(1))).collect();
    let (status, _) = refused(&net, ep, json!({"op": "write-composite", "values": values}));
    assert_eq!(status, 400);
    for bad in [
        json!({"op": "read-composite", "paths": []}),
        json!({"op": "observe-composite", "paths": ["/3/x"]}),
        json!({"op": "read-composite", "paths": ["/3/0/0"], "format": 11542}),
        json!({"op": "write-composite", "values": {"/1/0": 5}}),
        json!({"op": "write-composite", "values": {"/1/0/5": "soon"}}),
        json!({"op": "write-composite", "values": {"/3/0/15": "x".repeat(5000)}}),
        json!({"op": "write-attributes", "path": "/3/0/9", "attributes": {"foo": 1}}),
        json!({"op": "write-attributes", "path": "/3/0/9", "attributes": {"pmin": -1}}),
        json!({"op": "write-attributes", "path": "/3/0/9", "attributes": {}}),
    ] {
        let (status, _) = refused(&net, ep, bad);
        assert_eq!(status, 400);
    }
    // Nothing of it reached the device.
    assert_eq!(net.read(ep, "/1/0/5")["/1/0/5"], 86400);
    // No composite observation to cancel.
    let (status, message) = refused(
        &net,
        ep,
        json!({"op": "cancel-observe-composite", "paths": ["/3/0/13"]}),
    );
    assert_eq!(status, 504, "{message}");
    assert!(message.contains("no composite observation"), "{message}");
}

#[test]
fn write_attributes_pace_plain_and_composite_observations() {
    let ep = "comp-attrs";
    let net = net_with(ep);
    let time = |net: &Net| observed(net, ep)["/3/0/13"].as_i64();

    // gt on a string resource: the device refuses (4.00).
    let r = dm(
        &net,
        ep,
        json!({"op": "write-attributes", "path": "/3/0/0", "attributes": {"gt": 5}}),
    );
    assert_eq!(r["code"], "4.00", "{r:#}");
    // pmax 1 on Current Time: an Observe-Composite of it and another
    // path is notified every second although nothing else changes.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-attributes", "path": "/3/0/13", "attributes": {"pmin": 1, "pmax": 1}}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    let r = dm(
        &net,
        ep,
        json!({"op": "observe-composite", "paths": ["/3/0/13", "/3/0/0"]}),
    );
    assert_eq!(r["code"], "2.05", "{r:#}");
    let first = r["values"]["/3/0/13"].as_i64().expect("current time");
    let seen = wait_for("two notifications paced by pmax", || {
        time(&net).filter(|t| *t >= first + 2)
    });
    assert!(seen >= first + 2);
    // Cancelled: no more notifications.
    let r = dm(
        &net,
        ep,
        json!({"op": "cancel-observe-composite", "paths": ["/3/0/0", "/3/0/13"]}),
    );
    assert_eq!(r["code"], "2.05", "{r:#}");
    std::thread::sleep(Duration::from_millis(300));
    let after = time(&net);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(time(&net), after, "notifications after the cancel");

    // pmin 2 on Disable Timeout: a change written right after the observe
    // is notified, but not before 2 s since the last notification.
    let r = dm(
        &net,
        ep,
        json!({"op": "write-attributes", "path": "/1/0/5", "attributes": {"pmin": 2, "pmax": null}}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    // The device answers (and its pmin starts) after this.
    let observe_sent = Instant::now();
    let r = dm(
        &net,
        ep,
        json!({"op": "observe", "path": "/1/0/5", "accept": null}),
    );
    assert_eq!(r["code"], "2.05", "{r:#}");
    let r = dm(
        &net,
        ep,
        json!({"op": "write-composite", "values": {"/1/0/5": 4242}}),
    );
    assert_eq!(r["code"], "2.04", "{r:#}");
    let early = observed(&net, ep)["/1/0/5"].clone();
    if observe_sent.elapsed() < Duration::from_millis(1500) {
        assert_eq!(early, 86400, "notified before pmin passed");
    }
    wait_for("the change notified after pmin", || {
        (observed(&net, ep)["/1/0/5"] == 4242).then_some(())
    });
    assert!(observe_sent.elapsed() >= Duration::from_millis(1900));
    let r = dm(
        &net,
        ep,
        json!({"op": "cancel-observe", "path": "/1/0/5", "accept": null, "token": ""}),
    );
    assert_eq!(r["success"], true, "{r:#}");
}

#[test]
fn ctl_composite_subcommands() {
    let ep = "comp-ctl";
    let net = net_with(ep);
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmdm"))
            .args([
                "ctl",
                "--server",
                &net.bound.api_base(),
                "--token",
                &net.bound.token,
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = ctl(&["read-composite", ep, "/3/0/0", "/1/0/1"]);
    assert!(ok, "{text}");
    assert!(text.contains("\"/1/0/1\": 60"), "{text}");
    let (ok, text) = ctl(&["write-composite", ep, "/1/0/5=120", "/1/0/6=false"]);
    assert!(ok, "{text}");
    assert_eq!(net.read(ep, "/1/0/5")["/1/0/5"], 120);
    // A device refusal: exit status 1 and the code's meaning.
    let (ok, text) = ctl(&["write-composite", ep, "/1/0/5=7", "/1/0/0=3"]);
    assert!(!ok, "{text}");
    assert!(text.contains("4.05 Method Not Allowed"), "{text}");
    assert_eq!(net.read(ep, "/1/0/5")["/1/0/5"], 120);
    let (ok, text) = ctl(&["write-composite", ep, "no-equals"]);
    assert!(!ok && text.contains("PATH=VALUE"), "{text}");
    let (ok, text) = ctl(&["observe-composite", ep, "/3/0/9", "/3/0/10"]);
    assert!(ok, "{text}");
    let (ok, text) = ctl(&["cancel-observe-composite", ep, "/3/0/10", "/3/0/9"]);
    assert!(ok, "{text}");
}
