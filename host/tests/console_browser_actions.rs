//! The console's actions that `console_browser.rs` does not click, in a real
//! browser (headless Debian `chromium` through `chromedriver`) against an
//! in-process `wasmdm server` and two real `wasmdm device` processes.
//!
//! Controls are found as a person finds them: buttons by what they say,
//! fields by their labels. After each action the test checks what the page
//! shows and that the device (or the server's store) really changed, through
//! the JSON API:
//! - Groups: one by label and one by explicit endpoints (saved from the
//!   keyboard) with their members, a bad name refused next to the field, a
//!   group deleted.
//! - Software files: a file that is not a package refused next to the
//!   upload field, nothing stored.
//! - Device software tab: Deactivate, Activate, Upgrade (to another file;
//!   the table follows the campaign to its end), Uninstall on a `/9` row,
//!   and the device's refusal of an Activate after it (4.05 by name).
//! - Objects tab (it lists an app's object once the device registers it):
//!   Write of the registration Lifetime (`/1/0/1`), a Read
//!   showing it, the device's Update carrying it; a refused Write (4.00 by
//!   name); the Default Maximum Period written and Observe showing the
//!   device's time as it changes, then Stop observing; Attributes (pmin/pmax)
//!   written on a resource and listed by the device's Discover, a bad value
//!   refused next to its field, the device's refusal of gt on text by name;
//!   two resources of two objects ticked and read at once (Read selected,
//!   one Read-Composite); an app's own resource (the temperature
//!   example's IPSO Application Type, /3303/0/5750) written and read back.
//! - Campaign page: the per-device table filtered by state, for a campaign
//!   with a done and a failed device (one device too small for the package).
//!
//! Skips with a note when chromium or chromedriver is missing
//! (scripts/test.sh installs them).

mod browser_support;
mod device_support;

use std::time::Duration;

use browser_support::{Browser, ConsoleServer};
use device_support::{DeviceProcess, pack_example};
use serde_json::{Value as Json, json};
use wasmdm_server::ctl::Client;

/// The `/9` instances of `ep` as (instance, name, version, Update State,
/// activation), read from the device through the JSON API.
fn software(api: &Client, ep: &str) -> Vec<(u16, String, String, i64, bool)> {
    let r = api
        .dm(ep, &json!({"op": "read", "path": "/9", "accept": null}))
        .unwrap();
    assert_eq!(r["success"], true, "read /9 on {ep}: {r}");
    let values = r["values"].as_object().cloned().unwrap_or_default();
    let mut instances: Vec<u16> = values
        .keys()
        .filter_map(|p| p.split('/').nth(2)?.parse().ok())
        .collect();
    instances.sort();
    instances.dedup();
    let text = |i: u16, r: u16| {
        values
            .get(&format!("/9/{i}/{r}"))
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    instances
        .into_iter()
        .map(|i| {
            let state = values
                .get(&format!("/9/{i}/7"))
                .and_then(Json::as_i64)
                .unwrap_or(-1);
            let active = values.get(&format!("/9/{i}/12")) == Some(&json!(true));
            (i, text(i, 0), text(i, 1), state, active)
        })
        .collect()
}

/// Installs `package` (file `sha`) on `ep` through the JSON API, to its end.
fn install(api: &Client, ep: &str, package: &str, sha: &str) {
    let c = api
        .campaign(
            &json!({"devices": [ep], "op": "install", "package": package,
            "file": sha, "activate": true, "timeout_secs": 120}),
        )
        .unwrap();
    let report = api.wait(c["id"].as_str().unwrap(), |_| {}).unwrap();
    assert_eq!(report["summary"]["done"], 1, "{package} on {ep}: {report}");
}

/// Waits (generously) until `f`, a check through the JSON API, holds.
fn wait_api(what: &str, mut f: impl FnMut() -> bool) {
    device_support::wait_until(Duration::from_secs(90), what, &mut f);
}

/// Waits until the field labelled `label` in `scope` is marked invalid and
/// the error it points to (`aria-describedby`) says `text`.
fn wait_field_error(b: &Browser, scope: &str, label: &str, text: &str) {
    let field = b.labelled(scope, label);
    b.wait_js(
        &format!("the error of {label:?} says {text:?}"),
        "const e = document.getElementById(arguments[0].getAttribute('aria-describedby')); \
         return e && e.textContent.includes(arguments[1]) && arguments[0].getAttribute('aria-invalid') === 'true';",
        json!([field.as_arg(), text]),
    );
}

#[test]
fn console_actions_in_a_real_browser() {
    let Some(browser) = Browser::for_test("console_actions_in_a_real_browser", 1280, 1000) else {
        return;
    };
    let b = &browser;
    let scratch = tempfile::tempdir().unwrap();
    let server = ConsoleServer::start(scratch.path());
    let base = server.bound.api_base();
    let api = server.bound.client();
    let coap_port = server.bound.coap.port();

    // -- Two devices: act-2 has room for no package (its installs fail).
    let small = scratch.path().join("small.toml");
    std::fs::write(&small, "max-package-bytes = 4096\n").unwrap();
    let _devices = [
        DeviceProcess::start("act-1", coap_port, &scratch.path().join("act-1")),
        DeviceProcess::start_with(
            "act-2",
            coap_port,
            &scratch.path().join("act-2"),
            &["-c".as_ref(), small.as_os_str()],
        ),
    ];

    // -- Set up through the JSON API: files, a label, counter 1.0.0 on act-1.
    let upload = |name: &str, version: &str| {
        api.upload(
            &pack_example(name, version),
            &format!("{name}-{version}.wdm"),
            None,
            None,
        )
        .unwrap()["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let counter1 = upload("counter", "1.0.0");
    upload("counter", "2.0.0");
    upload("hello", "1.0.0");
    let temperature = upload("temperature", "1.0.0");
    wait_api("both devices register", || {
        api.get("/api/devices")
            .ok()
            .and_then(|d| d.as_array().cloned())
            .is_some_and(|d| d.iter().filter(|d| d["online"] == true).count() == 2)
    });
    api.put("/api/devices/act-1/labels", &json!(["blue"]))
        .unwrap();
    install(&api, "act-1", "counter", &counter1);

    // -- Sign in.
    b.goto(&format!("{base}/"));
    b.fill_labelled("form", "Admin token", &server.bound.token);
    b.click_button("form", "Sign in");
    b.wait_text("#live", "live");

    // -- Groups: by label, by endpoints, a bad name, a delete.
    b.click_button("header", "Groups");
    let form = "#group-form";
    b.fill_labelled(form, "Name", "blue-ones");
    b.fill_labelled(form, "Member labels (comma-separated)", "blue");
    b.click_button(form, "Save group");
    b.wait_text(form, "saved group blue-ones");
    b.wait_text("[data-group=blue-ones]", "Members (1): act-1");
    b.wait_text("[data-group=blue-ones]", "By label: blue");
    b.fill_labelled(form, "Name", "pair");
    b.fill_labelled(form, "Member labels (comma-separated)", "");
    // From the keyboard: Enter in the last field saves (W3C WebDriver's Enter key).
    b.fill_labelled(
        form,
        "Member endpoints (comma-separated)",
        "act-1, act-2\u{E007}",
    );
    b.wait_text("[data-group=pair]", "Members (2): act-1, act-2");
    let pair = api.get("/api/groups/pair").unwrap();
    assert_eq!(pair["endpoints"], json!(["act-1", "act-2"]));
    assert_eq!(pair["members"], json!(["act-1", "act-2"]));
    assert_eq!(
        api.get("/api/groups/blue-ones").unwrap()["members"],
        json!(["act-1"])
    );
    // A name the API refuses: its message next to the Name field, nothing stored.
    b.fill_labelled(form, "Name", "no spaces allowed");
    b.click_button(form, "Save group");
    wait_field_error(b, form, "Name", "group names use letters, digits");
    assert_eq!(api.get("/api/groups").unwrap().as_array().unwrap().len(), 2);
    // Delete, confirmed in the browser's dialog.
    b.click_button("[data-group=blue-ones]", "Delete");
    b.accept_alert();
    b.wait_js(
        "the deleted group is gone from the page",
        "return !document.querySelector('[data-group=blue-ones]') && document.querySelector('[data-group=pair]');",
        json!([]),
    );
    assert!(api.get("/api/groups/blue-ones").is_err(), "group deleted");

    // -- A file that is not a package: refused next to the upload field.
    b.click_button("header", "Software files");
    b.wait_text("#file-rows", "counter 2.0.0");
    let notes = scratch.path().join("notes.txt");
    std::fs::write(&notes, "these are notes, not a package\n").unwrap();
    let file_field = b.labelled("#upload-form", "Package file (.wdm)");
    b.type_into(&file_field, &notes.display().to_string());
    b.click_button("#upload-form", "Save");
    wait_field_error(
        b,
        "#upload-form",
        "Package file (.wdm)",
        "not a wasmdm package",
    );
    assert_eq!(
        api.get("/api/files").unwrap().as_array().unwrap().len(),
        4,
        "nothing stored"
    );

    // -- Device software tab: the /9 row's actions.
    b.goto(&format!("{base}/#/devices/act-1/software"));
    b.wait_text("#software-rows", "counter");
    let (inst, ..) = software(&api, "act-1")
        .into_iter()
        .find(|s| s.1 == "counter")
        .expect("counter on act-1");
    let row = format!("#software-rows tr[data-instance='{inst}']");
    let cell = |c: &str| format!("{row} td.{c}");
    b.wait_text(&cell("activation"), "active");
    b.click_button(&row, "Deactivate");
    b.wait_text(&cell("activation"), "inactive");
    b.wait_text(&row, "Deactivate done (2.04)");
    let active = || {
        software(&api, "act-1")
            .iter()
            .find(|s| s.0 == inst)
            .map(|s| s.4)
    };
    assert_eq!(active(), Some(false), "deactivated on the device");
    b.click_button(&row, "Activate");
    b.wait_js(
        "the row shows active",
        "return document.querySelector(arguments[0]).textContent === 'active';",
        json!([cell("activation")]),
    );
    assert_eq!(active(), Some(true), "activated on the device");
    // Upgrade to 2.0.0: the table follows the campaign to its end.
    b.choose_labelled(&row, "File to upgrade counter to", "counter 2.0.0");
    b.click_button(&row, "Upgrade");
    b.wait_text(&row, "campaign");
    b.wait_text(&cell("version"), "2.0.0");
    b.wait_text(&row, "finished: 1 done");
    b.wait_text(&cell("state"), "4 INSTALLED");
    let now = software(&api, "act-1");
    assert!(
        now.iter()
            .any(|s| s.0 == inst && s.1 == "counter" && s.2 == "2.0.0" && s.3 == 4),
        "upgraded on the device: {now:?}"
    );
    // Uninstall: the instance goes back to INITIAL with no package.
    b.click_button(&row, "Uninstall");
    b.wait_text(&cell("state"), "0 INITIAL");
    b.wait_text(&row, "Uninstall done");
    assert!(
        software(&api, "act-1")
            .iter()
            .all(|s| s.1 != "counter" && s.3 == 0),
        "uninstalled on the device"
    );
    // The device refuses an Activate now: its answer by name, next to the row.
    b.click_button(&row, "Activate");
    b.wait_text(
        &format!("{row} .action-status.error"),
        "4.05 Method Not Allowed",
    );

    // -- An app with an object of its own (IPSO Temperature, /3303),
    //    installed through the API; the objects tab lists its object.
    install(&api, "act-1", "temperature", &temperature);
    wait_api("the device registers /3303", || {
        !api.get("/api/devices/act-1").unwrap()["registration"]["objects"]["objects"]["3303"]
            .is_null()
    });

    // -- Objects tab: Write the Lifetime, Read it back; a refused Write; Observe.
    b.goto(&format!("{base}/#/devices/act-1/objects"));
    b.wait_text("#tab-body", "/3303 Temperature");
    // Reloaded (drawn before the live data arrives), it still lists them.
    b.js("window.beforeReload = true; location.reload();", json!([]));
    b.wait_js(
        "the reloaded page lists /3303",
        "const t = document.querySelector('#tab-body'); \
         return !window.beforeReload && t && t.textContent.includes('/3303 Temperature');",
        json!([]),
    );
    b.js("window.scrollTo(0, 0);", json!([]));
    b.click_text("details summary", "/1 LwM2M Server");
    let lifetime = "tr[data-path='/1/0/1']";
    b.fill_labelled(lifetime, "New value of /1/0/1 Lifetime", "120");
    b.click_button(lifetime, "Write");
    b.wait_text(&format!("{lifetime} td.ops"), "written (2.04)");
    b.click_button(lifetime, "Read");
    b.wait_js(
        "the read shows 120",
        "return document.querySelector(arguments[0]).textContent.trim() === '120';",
        json!([format!("{lifetime} td.value")]),
    );
    wait_api("the device's Update carries lifetime 120", || {
        api.get("/api/devices/act-1").unwrap()["registration"]["lifetime"] == 120
    });
    // Lifetime 0 is not allowed: the device's 4.00 by name.
    b.fill_labelled(lifetime, "New value of /1/0/1 Lifetime", "0");
    b.click_button(lifetime, "Write");
    b.wait_text(
        &format!("{lifetime} .action-status.error"),
        "4.00 Bad Request",
    );
    assert_eq!(
        api.get("/api/devices/act-1").unwrap()["registration"]["lifetime"],
        120
    );
    // Observe the device's time: with a Default Maximum Period of 2 s
    // written first, the value shown follows the device's notifications.
    let pmax = "tr[data-path='/1/0/3']";
    b.fill_labelled(pmax, "New value of /1/0/3 Default Maximum Period", "2");
    b.click_button(pmax, "Write");
    b.wait_text(&format!("{pmax} td.ops"), "written (2.04)");
    let r = api
        .dm(
            "act-1",
            &json!({"op": "read", "path": "/1/0/3", "accept": null}),
        )
        .unwrap();
    assert_eq!(r["values"]["/1/0/3"], 2, "{r}");
    let time = "tr[data-path='/3/0/13']";
    b.click_button(time, "Observe");
    b.wait_text(&format!("{time} td.ops"), "observing (2.05)");
    let first = b.wait_text(&format!("{time} td.value .observed"), "observed:");
    b.wait_js(
        "a newer time is shown",
        "const e = document.querySelector(arguments[0]); return e && e.textContent !== arguments[1];",
        json!([format!("{time} td.value .observed"), first]),
    );
    // Stop observing: the server cancels its observation (a second cancel
    // through the API finds none left).
    b.click_button(time, "Stop observing");
    b.wait_text(&format!("{time} td.ops"), "observation cancelled (2.05)");
    b.wait_text(&format!("{time} td.value"), "last observed:");
    b.button(time, "Observe");
    let again = api
        .dm(
            "act-1",
            &json!({"op": "cancel-observe", "path": "/3/0/13", "accept": null, "token": ""}),
        )
        .unwrap_err()
        .to_string();
    assert!(again.contains("no observation of /3/0/13"), "{again}");

    // Attributes of a resource: pmin/pmax on the device's time, which the
    // device then holds (its Discover lists them); a bad value refused next
    // to its field; gt on a text resource refused by the device, by name.
    b.click_button(time, "Attributes");
    b.fill_labelled(time, "pmin (minimum period, s)", "-1");
    b.click_button(time, "Write attributes");
    wait_field_error(b, time, "pmin (minimum period, s)", "whole seconds");
    b.fill_labelled(time, "pmin (minimum period, s)", "1");
    b.fill_labelled(time, "pmax (maximum period, s)", "30");
    b.click_button(time, "Write attributes");
    b.wait_text(&format!("{time} .attrs-panel"), "attributes written (2.04)");
    let r = api
        .dm("act-1", &json!({"op": "discover", "path": "/3/0/13"}))
        .unwrap();
    let attrs = r["links"][0]["attrs"].to_string();
    assert!(
        attrs.contains(r#"["pmin","1"]"#) && attrs.contains(r#"["pmax","30"]"#),
        "{r}"
    );
    let maker = "tr[data-path='/3/0/0']";
    b.click_button(maker, "Attributes");
    b.fill_labelled(maker, "gt (greater than)", "5");
    b.click_button(maker, "Write attributes");
    b.wait_text(
        &format!("{maker} .attrs-panel .action-status.error"),
        "4.00 Bad Request",
    );

    // Read selected: two resources of two objects in one Read-Composite,
    // each value shown in its row, as the device holds them.
    let timeout = "tr[data-path='/1/0/5']";
    let e = b.labelled(maker, "Select /3/0/0 Manufacturer");
    b.click_element(&e);
    let e = b.labelled(timeout, "Select /1/0/5 Disable Timeout");
    b.click_element(&e);
    b.wait_text("#selected-count", "2 selected");
    b.click_button("main", "Read selected");
    b.wait_text("#read-selected-status", "read 2 of 2 selected (2.05)");
    let held = api
        .dm(
            "act-1",
            &json!({"op": "read-composite", "paths": ["/3/0/0", "/1/0/5"]}),
        )
        .unwrap();
    for (row, path) in [(maker, "/3/0/0"), (timeout, "/1/0/5")] {
        let want = match &held["values"][path] {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        b.wait_js(
            &format!("{path} shows {want}"),
            "return document.querySelector(arguments[0]).textContent.trim() === arguments[1];",
            json!([format!("{row} td.value"), want]),
        );
    }

    // An app's resource: Write the Application Type, Read it back.
    b.click_text("details summary", "/3303 Temperature");
    b.click_button("[data-path='/3303/0']", "Read /3303/0");
    let app_type = "tr[data-path='/3303/0/5750']";
    b.wait_text(&format!("{app_type} td.value"), "simulated");
    b.fill_labelled(
        app_type,
        "New value of /3303/0/5750 Application Type",
        "greenhouse",
    );
    b.click_button(app_type, "Write");
    b.wait_text(&format!("{app_type} td.ops"), "written (2.04)");
    b.click_button(app_type, "Read");
    b.wait_js(
        "the read shows the new Application Type",
        "return document.querySelector(arguments[0]).textContent.trim() === 'greenhouse';",
        json!([format!("{app_type} td.value")]),
    );
    let r = api
        .dm(
            "act-1",
            &json!({"op": "read", "path": "/3303/0/5750", "accept": null}),
        )
        .unwrap();
    assert_eq!(r["values"]["/3303/0/5750"], "greenhouse", "{r}");

    // -- A campaign with a done and a failed device, and its filters.
    b.goto(&format!("{base}/#/wizard?group=pair&op=install"));
    b.fill_labelled("#wizard-step", "Package name", "hello");
    b.click_button("#wizard-step", "Next");
    b.choose_labelled("#wizard-step", "Software file", "hello-1.0.0.wdm");
    b.fill_labelled("#wizard-step", "Upgrade timeout in seconds", "90");
    b.wait_text("#wizard-preview", "on 2 device(s)");
    b.click_button("#wizard-step", "Install");
    b.wait_text("#campaign-status", "finished");
    let id = b.url().rsplit('/').next().unwrap().to_string();
    let jobs = "#job-rows tr";
    let shown = |b: &Browser| {
        b.js(
            "return [...document.querySelectorAll(arguments[0])].map(r => r.dataset.endpoint).join(',');",
            json!([jobs]),
        )
    };
    b.wait_js(
        "both devices listed",
        "return document.querySelectorAll(arguments[0]).length === 2;",
        json!([jobs]),
    );
    b.choose_labelled("main", "Show devices", "Failed");
    b.wait_js(
        "only the failed device",
        "const r = [...document.querySelectorAll(arguments[0])]; \
         return r.length === 1 && r[0].dataset.endpoint === 'act-2' && r[0].textContent.includes('failed') \
           && r[0].querySelector('.result').textContent === '50 Not enough storage';",
        json!([jobs]),
    );
    b.choose_labelled("main", "Show devices", "Done");
    b.wait_js(
        "only the done device",
        "const r = [...document.querySelectorAll(arguments[0])]; \
         return r.length === 1 && r[0].dataset.endpoint === 'act-1' && r[0].textContent.includes('Software successfully installed');",
        json!([jobs]),
    );
    b.choose_labelled("main", "Show devices", "Timed out");
    b.wait_text("#job-more", "of 0");
    assert_eq!(shown(b), json!(""));
    b.choose_labelled("main", "Show devices", "all");
    b.wait_js(
        "both again",
        "return document.querySelectorAll(arguments[0]).length === 2;",
        json!([jobs]),
    );
    let report = api.get(&format!("/api/campaigns/{id}")).unwrap();
    let job = |ep: &str| {
        report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["endpoint"] == ep)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(job("act-1")["status"], "done", "{report}");
    assert_eq!(job("act-2")["status"], "failed", "{report}");
    assert_eq!(job("act-2")["update_result"], 50, "{report}");

    assert!(
        software(&api, "act-1")
            .iter()
            .any(|s| s.1 == "hello" && s.3 == 4),
        "hello installed on act-1"
    );
    assert!(
        software(&api, "act-2").iter().all(|s| s.1 != "hello"),
        "nothing installed on act-2"
    );
}
