//! The web console in a real browser: headless Debian `chromium` driven
//! through `chromedriver` (W3C WebDriver), against a `wasmdm server` (in
//! process, loopback, its own data directory) and three real `wasmdm
//! device` processes.
//!
//! One scenario, in the order an operator works: the login refuses a wrong
//! token and lets the right one in; devices appear live as they register;
//! they are put into a group; a package is uploaded; the wizard installs it
//! on the group and then upgrades it (the campaign page reaches done for all
//! three, live); a device made to fail (a corrupted file) shows its Update
//! Result name and is retried to success; a running campaign is cancelled;
//! the objects tab reads /3/0 and executes an Activate; signing out ends the
//! session. Screenshots of the main pages go to target/screenshots/, or to
//! `$WASMDM_SCREENSHOTS` (`WASMDM_SCREENSHOTS=docs/screenshots` refreshes the
//! ones README shows; a plain test run leaves the work tree alone).
//!
//! Skips with a note when chromium or chromedriver is missing
//! (scripts/test.sh installs them).

mod browser_support;
mod device_support;

use std::path::PathBuf;

use browser_support::{Browser, ConsoleServer as Server};
use device_support::{DeviceProcess, corrupt, pack_example, repo};
use serde_json::json;

fn screenshots_dir() -> PathBuf {
    // A relative path is taken from the repository root.
    std::env::var_os("WASMDM_SCREENSHOTS")
        .map(|p| repo().join(p))
        .unwrap_or_else(|| repo().join("target/screenshots"))
}

/// Waits on a campaign page until its status badge reads `status`.
fn wait_campaign(b: &Browser, status: &str) {
    b.wait_text("#campaign-status", status);
}

/// Waits until the campaign page's `kind` card shows `n`.
fn wait_count(b: &Browser, kind: &str, n: usize) {
    b.wait_js(
        &format!("{n} {kind}"),
        "const e = document.querySelector(`#campaign-counts [data-count=${arguments[0]}] .n`); \
         return e && e.textContent === arguments[1];",
        json!([kind, n.to_string()]),
    );
}

/// Uploads `path` with the upload form on the current page.
fn upload(b: &Browser, path: &std::path::Path, name: &str) {
    let input = b.find("#upload-file");
    b.type_into(&input, &path.display().to_string());
    b.fill("#upload-name", name);
    b.fill("#upload-description", "uploaded by the browser test");
    b.click("#retain-30d");
    b.click("#upload-save");
    b.wait_text("#upload-status", "saved");
}

#[test]
fn console_scenario_in_a_real_browser() {
    let Some(browser) = Browser::for_test("console_scenario_in_a_real_browser", 1280, 900) else {
        return;
    };
    let b = &browser;
    let shots = screenshots_dir();
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path());
    let base = server.bound.api_base();
    let coap_port = server.bound.coap.port();

    // -- Without a session the console and its API refuse.
    b.goto(&format!("{base}/"));
    b.find("#token");
    assert!(b.url().ends_with("/login"), "redirected: {}", b.url());
    let status = b.js_async(
        "fetch('/api/devices').then(r => arguments[0](r.status));",
        json!([]),
    );
    assert_eq!(status, json!(401));

    // -- Sign in: a wrong token is refused next to the field, the right one enters.
    b.fill("#token", "not-the-token-at-all");
    b.click("#sign-in");
    b.wait_text("#token-error", "not the admin token");
    b.screenshot(&shots.join("login.png"));
    b.fill("#token", &server.bound.token);
    b.click("#sign-in");
    b.wait_text("#live", "live");
    let cookie_visible = b.js(
        "return document.cookie.includes('wasmdm_session');",
        json!([]),
    );
    assert_eq!(
        cookie_visible,
        json!(false),
        "the session cookie is HttpOnly"
    );

    // -- Devices appear live as they register.
    let eps = ["console-1", "console-2", "console-3"];
    let mut devices: Vec<DeviceProcess> = Vec::new();
    for ep in eps {
        devices.push(DeviceProcess::start(
            ep,
            coap_port,
            &scratch.path().join(ep),
        ));
    }
    b.wait_js(
        "three devices online in the table",
        "return document.querySelectorAll('#device-rows tr.online').length === 3;",
        json!([]),
    );

    // -- Select all, put them into a group.
    b.click("#select-all");
    b.fill("#bulk-group", "fleet");
    b.click("#bulk-group-btn");
    b.wait_text("#bulk-status", "group fleet");
    b.fill("#bulk-label", "lab");
    b.click("#bulk-label-btn");
    b.wait_text("#bulk-status", "labelled 3");
    b.click("#bulk-read-btn");
    b.wait_text("#bulk-status", "read the software of 3 device(s)");
    b.wait_js(
        "the groups column shows fleet",
        "return [...document.querySelectorAll('#device-rows tr')].every(r => r.textContent.includes('fleet'));",
        json!([]),
    );

    // -- Upload version 1 on the files page.
    let v1 = scratch.path().join("counter-1.0.0.wdm");
    std::fs::write(&v1, pack_example("counter", "1.0.0")).unwrap();
    b.goto(&format!("{base}/#/files"));
    upload(b, &v1, "counter-1.0.0.wdm");
    b.wait_text("#file-rows", "counter 1.0.0");

    // -- Groups page shows the members.
    b.goto(&format!("{base}/#/groups"));
    b.wait_text("[data-group=fleet]", "Members (3)");
    b.screenshot(&shots.join("groups.png"));

    // -- Wizard: install on the group (pull, CoAP), then the campaign page.
    b.goto(&format!("{base}/#/wizard?group=fleet&op=install"));
    // A missing package name is reported next to its field.
    b.click("#wizard-next");
    b.wait_text("#wizard-package-error", "a package name");
    b.fill("#wizard-package", "counter");
    b.click("#wizard-next");
    b.wait_js(
        "the file list offers version 1",
        "return document.querySelector('#wizard-file') && document.querySelector('#wizard-file').options.length > 1;",
        json!([]),
    );
    b.select("#wizard-file", &sha_of(&v1));
    b.fill("#wizard-timeout", "90");
    b.wait_text("#wizard-preview", "on 3 device(s)");
    b.click("#wizard-start");
    wait_campaign(b, "finished");
    wait_count(b, "done", 3);

    // -- Wizard: upgrade 1.0.0 on the group, uploading version 2 inside the wizard, pushed.
    let v2 = scratch.path().join("counter-2.0.0.wdm");
    std::fs::write(&v2, pack_example("counter", "2.0.0")).unwrap();
    b.goto(&format!("{base}/#/wizard?group=fleet&op=upgrade"));
    b.fill("#wizard-package", "counter");
    b.fill("#wizard-version", "1.0.0");
    b.click("#wizard-next");
    b.click("#wizard-upload-toggle");
    upload(b, &v2, "counter-2.0.0.wdm");
    b.wait_js(
        "version 2 is picked",
        "return document.querySelector('#wizard-file').value === arguments[0];",
        json!([sha_of(&v2)]),
    );
    b.select("#wizard-delivery", "push");
    b.wait_text(
        "#wizard-preview",
        "3 of them are known to have counter 1.0.0",
    );
    b.resize(1280, 1400);
    b.js(
        "window.scrollTo(0, 0); document.activeElement.blur();",
        json!([]),
    );
    b.screenshot(&shots.join("wizard.png"));
    b.resize(1280, 900);
    b.click("#wizard-start");
    wait_campaign(b, "finished");
    wait_count(b, "done", 3);
    b.wait_text("#job-rows", "1.0.0 → 2.0.0");
    b.screenshot(&shots.join("campaign.png"));

    // -- A device made to fail: the stored content of a package corrupted on
    //    the server's disk, installed from the device page.
    let hello = scratch.path().join("hello-1.0.0.wdm");
    let hello_bytes = pack_example("hello", "1.0.0");
    std::fs::write(&hello, &hello_bytes).unwrap();
    b.goto(&format!("{base}/#/files"));
    upload(b, &hello, "hello-1.0.0.wdm");
    b.wait_text("#file-rows", "hello 1.0.0");
    b.resize(1280, 1200);
    b.js("window.scrollTo(0, 0);", json!([]));
    b.screenshot(&shots.join("files.png"));
    b.resize(1280, 900);
    let hello_sha = sha_of(&hello);
    let blob = server.data_dir.join("files").join(&hello_sha);
    std::fs::write(&blob, corrupt(&hello_bytes)).unwrap();
    b.goto(&format!("{base}/#/devices/console-1/software"));
    b.wait_text("#software-rows", "INSTALLED");
    b.wait_text("#software-rows", "2.0.0");
    let instance = b
        .js(
            "return document.querySelector('#software-rows tr[data-instance]').dataset.instance;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();
    b.screenshot(&shots.join("device-software.png"));
    b.select("#install-file", &hello_sha);
    b.click("#install-activate");
    b.click("#install-btn");
    b.click("#install-status a");
    wait_campaign(b, "finished");
    wait_count(b, "failed", 1);
    b.wait_text("#job-rows .result", "53 Package integrity check failure");
    b.screenshot(&shots.join("campaign-failed.png"));
    // The content restored, the failed device is retried and succeeds.
    std::fs::write(&blob, &hello_bytes).unwrap();
    b.click("#campaign-retry");
    b.wait_text("#campaign-action-status", "retrying");
    b.wait_js(
        "the retried device is done",
        "return document.querySelector('#campaign-counts [data-count=done] .n').textContent === '1' \
            && document.querySelector('#job-rows .result').textContent.includes('Software successfully installed');",
        json!([]),
    );
    wait_campaign(b, "finished");

    // -- Cancel a running campaign (scheduled for later, so still waiting).
    b.goto(&format!("{base}/#/wizard?group=fleet&op=upgrade"));
    b.fill("#wizard-package", "counter");
    b.click("#wizard-next");
    b.find(&format!("#wizard-file option[value='{}']", sha_of(&v2)));
    b.select("#wizard-file", &sha_of(&v2));
    // Scheduled far ahead: it stays running with every device pending.
    b.select("#wizard-schedule", "at");
    b.js(
        "document.querySelector('#wizard-at').value = '2099-01-01T00:00';",
        json!([]),
    );
    b.click("#wizard-use-quota");
    b.fill("#wizard-quota", "1");
    b.click("#wizard-start");
    wait_campaign(b, "running");
    let running = b.url();
    // The API's refusal shows next to the action that caused it: the file
    // of a running campaign cannot be deleted.
    b.goto(&format!("{base}/#/files"));
    b.js("window.confirm = () => true;", json!([]));
    let v2_row = format!("#file-rows tr[data-sha='{}']", sha_of(&v2));
    b.click(&format!("{v2_row} button.delete"));
    b.wait_text(
        &format!("{v2_row} .action-status.error"),
        "used by a running campaign (HTTP 409)",
    );
    b.goto(&running);
    wait_campaign(b, "running");
    b.click("#campaign-cancel");
    wait_campaign(b, "cancelled");
    wait_count(b, "cancelled", 3);

    // -- Campaign list.
    b.goto(&format!("{base}/#/campaigns"));
    b.wait_js(
        "four campaigns listed",
        "return document.querySelectorAll('#campaign-rows tr[data-id]').length === 4;",
        json!([]),
    );
    b.screenshot(&shots.join("campaigns.png"));

    // -- Objects tab: read /3/0, execute Activate on the package's /9 instance.
    b.goto(&format!("{base}/#/devices/console-1/objects"));
    b.click("#read--3-0");
    b.wait_text("#status--3-0", "read 2.05");
    b.wait_text("[data-path='/3/0'] td.value[data-path='/3/0/0']", "");
    let manufacturer = b.text("td.value[data-path='/3/0/0']");
    assert!(!manufacturer.trim().is_empty() && manufacturer != "—");
    b.js(
        "document.querySelector('#object-9').open = true;",
        json!([]),
    );
    let exec = format!("#exec-9-{instance}-10");
    b.click(&exec);
    b.wait_js(
        "Activate executed",
        "const r = document.querySelector(arguments[0]).closest('tr'); return r.textContent.includes('executed (2.04)');",
        json!([exec]),
    );
    // Observe the current time: the first value comes with the answer.
    b.click("tr[data-path='/3/0/13'] button.observe");
    b.wait_text("tr[data-path='/3/0/13'] td.ops", "observing (2.05)");
    b.wait_text("tr[data-path='/3/0/13'] td.value", "observed:");
    b.screenshot(&shots.join("device-objects.png"));

    // -- History lists the campaigns the device took part in.
    b.goto(&format!("{base}/#/devices/console-1/history"));
    b.wait_text("#history-status", "operation(s)");
    b.wait_text("#history-table", "1.0.0 → 2.0.0");
    b.wait_text("#history-table", "hello");
    b.wait_text("#operations-table", "device answered 2.04");
    b.wait_text("#operations-table", &format!("/9/{instance}/10"));
    b.screenshot(&shots.join("device-history.png"));

    // -- The devices table knows the software from the campaigns.
    b.goto(&format!("{base}/#/devices"));
    b.wait_js(
        "every device shows counter 2.0.0 and its label",
        "const rows = [...document.querySelectorAll('#device-rows tr')]; \
         return rows.length === 3 && rows.every(r => r.textContent.includes('counter 2.0.0') && r.textContent.includes('lab'));",
        json!([]),
    );
    b.screenshot(&shots.join("devices.png"));

    // -- Phone width.
    b.resize(390, 844);
    b.goto(&format!("{base}/#/devices"));
    b.wait_js(
        "three rows",
        "return document.querySelectorAll('#device-rows tr').length === 3;",
        json!([]),
    );
    b.screenshot(&shots.join("devices-phone.png"));

    // -- Sign out: the session ends for pages and API alike.
    b.click("#logout-form button");
    b.find("#token");
    let status = b.js_async(
        "fetch('/api/devices').then(r => arguments[0](r.status));",
        json!([]),
    );
    assert_eq!(status, json!(401));
    drop(devices);
}

fn sha_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}
