//! `wasmdm demo` end to end, as `./scripts/run.sh` runs it: a wasmdm server
//! and real wasmdm devices (each with its own runtime and data directory) on
//! loopback; a group install with pull over HTTP and activation, then a
//! group upgrade with Block1 push over CoAP, driven by the server's campaign
//! engine through its HTTP API. What it prints is a narration, every line
//! headed by whom it is about, with the guests' output attributed to their
//! device; the hosts' logs go to a file (issue 10, item 14).

use std::path::Path;

#[test]
fn demo_narrates_a_group_install_and_upgrade() {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/out");
    assert!(
        guests.join("pkg/counter").exists(),
        "run scripts/build-guests.sh first"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .args(["demo", "--devices", "2", "--guests"])
        .arg(&guests)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // No host log lines on the terminal: they went to the file named first.
    assert!(stderr.trim().is_empty(), "stderr: {stderr}");
    let first = stdout.lines().next().unwrap();
    let log_path = first
        .split("full logs in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no log file named in {first:?}"));
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains(" INFO "), "the full log has the hosts' lines");
    let _ = std::fs::remove_file(log_path);

    // Every narration line says whom it is about.
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    for l in &lines {
        assert!(
            l.contains(" │ ") || *l == "demo complete",
            "unattributed line {l:?} in\n{stdout}"
        );
        assert!(!l.contains(" INFO ") && !l.contains('\x1b'), "{l:?}");
    }
    let has = |who: &str, what: &str| {
        lines
            .iter()
            .any(|l| l.trim_start().starts_with(&format!("{who} │")) && l.contains(what))
    };
    for ep in ["demo-device-1", "demo-device-2"] {
        assert!(has(ep, "registered with the server over DTLS"), "{stdout}");
        // The guests' own output, attributed to the device it runs on, for
        // each version in turn.
        assert!(
            has(ep, "counter │ hello from counter package 1.0.0"),
            "{stdout}"
        );
        assert!(
            has(ep, "counter │ hello from counter package 2.0.0"),
            "{stdout}"
        );
        assert!(
            has(ep, "campaign: done — Software successfully installed"),
            "{stdout}"
        );
        assert!(
            lines.iter().any(|l| l.contains(ep)
                && l.contains("done")
                && l.contains("/9/0 1.0.0 -> 2.0.0")
                && l.contains("result 2 (Software successfully installed)")),
            "report line of {ep}: {stdout}"
        );
        assert!(has(ep, "PkgVersion=\"2.0.0\""), "{stdout}");
    }
    assert!(has("server", "finished: 2 done, 0 failed"), "{stdout}");
    assert_eq!(lines.last(), Some(&"demo complete"));
}
