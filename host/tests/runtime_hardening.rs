//! Hostile guests against the runtime's resource bounds: crash causes kept,
//! log floods bounded, restart storms damped, network binds confined to the grant.

mod runtime_support;

use runtime_support::*;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmdm::runtime::{
    ComponentState, ExitStatus, HOST_LOG_BURST_BYTES, HOST_LOG_BYTES_PER_SEC, MAX_LINE_BYTES,
    Runtime, read_log_file,
};

async fn rt(dir: &std::path::Path) -> Runtime {
    Runtime::open(config(dir)).await.unwrap()
}

/// [`rt`], for where a local `rt` shadows it.
async fn reopen(dir: &std::path::Path) -> Runtime {
    rt(dir).await
}

/// Installs guest `guest_name` as package `name` (world `app` when it uses
/// the wasmdm interfaces).
async fn install_as(rt: &Runtime, name: &str, guest_name: &str, world: &str, sandbox: &str) {
    let pkg = package(name, "1.0.0", guest_name, world, sandbox, "");
    deliver_install(rt, name, &pkg).await.unwrap();
}

// ---- item 5: crash causes ---------------------------------------------------

/// Every kind of trap keeps its cause in the status and the log, not just
/// "error while executing at wasm backtrace".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_causes_are_kept_in_status_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    let cases = [
        ("unreachable", "unreachable"),
        ("oob", "out of bounds"),
        ("stack-overflow", "call stack exhausted"),
        ("bad-handle", "handle"),
    ];
    for (mode, cause) in cases {
        let name = format!("crash-{mode}");
        install_as(
            &rt,
            &name,
            "crasher",
            "wasi:cli/command",
            &format!("args = [\"{mode}\"]"),
        )
        .await;
        rt.activate(&name, None).await.unwrap();
        wait_state(&rt, &name, "crasher", ComponentState::Failed, 20).await;
        let exit = comp(&rt, &name, "crasher").last_exit;
        let Some(ExitStatus::Trapped(msg)) = exit else {
            panic!("{mode}: expected a trap, got {exit:?}");
        };
        assert!(
            msg.contains(cause),
            "{mode}: status lacks {cause:?}: {msg:?}"
        );
        assert!(!msg.contains('\n'), "{mode}: one line: {msg:?}");
        let logged = log_text(&rt, &name, "crasher");
        assert!(
            logged
                .iter()
                .any(|l| l.contains("trapped") && l.contains(cause)),
            "{mode}: log lacks {cause:?}: {logged:?}"
        );
    }
}

// ---- item 3: logs -----------------------------------------------------------

/// The host's own log (`tracing`), captured for the whole test binary: only
/// byte and line counts per component label, and the text of matching lines
/// up to a small limit, so an unbounded flood cannot exhaust the test.
#[derive(Default)]
struct HostLog {
    /// (label, bytes, lines, kept text)
    per_label: Mutex<Vec<(String, u64, u64, String)>>,
}

#[derive(Clone)]
struct HostLogWriter(Arc<HostLog>);

impl std::io::Write for HostLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut labels = self.0.per_label.lock().unwrap();
        for (label, bytes, lines, kept) in labels.iter_mut() {
            if text.contains(&format!("component={label}")) {
                *bytes += buf.len() as u64;
                *lines += text.matches('\n').count() as u64;
                if kept.len() < 1 << 20 {
                    kept.push_str(&text);
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn host_log() -> &'static Arc<HostLog> {
    static LOG: OnceLock<Arc<HostLog>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(HostLog::default());
        let writer = HostLogWriter(log.clone());
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        log
    })
}

/// Starts counting the host log lines of component `label` ("pkg/id").
fn watch_host_log(label: &str) {
    host_log()
        .per_label
        .lock()
        .unwrap()
        .push((label.to_string(), 0, 0, String::new()));
}

/// (bytes, lines, text) of the host log lines of `label`.
fn host_log_of(label: &str) -> (u64, u64, String) {
    let labels = host_log().per_label.lock().unwrap();
    let (_, bytes, lines, text) = labels.iter().find(|l| l.0 == label).unwrap();
    (*bytes, *lines, text.clone())
}

/// 100 MB of stdout and an 8 MiB `log` call: the component log stays within
/// its 64 KiB cap on disk and in memory with no line over the line limit, the
/// host log within its rate limit, and both say how much was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_bounded_in_the_component_and_the_host_log() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    watch_host_log("flood/flooder");
    install_as(
        &rt,
        "flood",
        "flooder",
        "wasmdm:device/app",
        "args = [\"log=8388608\", \"stdout=100000000\"]",
    )
    .await;
    let started = Instant::now();
    rt.activate("flood", None).await.unwrap();
    wait_state(&rt, "flood", "flooder", ComponentState::Exited, 120).await;
    let secs = started.elapsed().as_secs() + 1;

    let lines = rt.logs("flood", "flooder").unwrap();
    let kept: usize = lines.iter().map(|l| l.text.len()).sum();
    assert!(kept <= 64 << 10, "ring holds {kept} bytes");
    for l in &lines {
        assert!(
            l.text.len() <= MAX_LINE_BYTES + 32,
            "line of {}",
            l.text.len()
        );
    }
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.starts_with("dropped ")),
        "no summary in {:?}",
        &texts[texts.len().saturating_sub(5)..]
    );
    assert!(texts.contains(&"flood done") || texts.iter().any(|t| t.starts_with("dropped ")));

    let file = dir.path().join("logs/flood/flooder.log");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let on_disk = size(&file) + size(&dir.path().join("logs/flood/flooder.log.1"));
    assert!(on_disk <= 64 << 10, "log files hold {on_disk} bytes");

    let (bytes, count, text) = host_log_of("flood/flooder");
    // The budget counts text + LINE_OVERHEAD_BYTES per line; a formatted
    // host log line adds a timestamp, level and fields: at most 4x.
    let budget = HOST_LOG_BURST_BYTES + HOST_LOG_BYTES_PER_SEC * secs;
    eprintln!("host log: {bytes} bytes / {count} lines in {secs} s (budget {budget})");
    assert!(
        bytes <= 4 * budget,
        "host log took {bytes} bytes (budget {budget})"
    );
    assert!(text.contains("dropped "), "no summary in the host log");
    // The 8 MiB `log` call came first: in the host log, cut to the line limit.
    let big = text.lines().find(|l| l.contains("zzz")).unwrap();
    assert!(big.len() <= MAX_LINE_BYTES + 200, "{}", big.len());
    assert!(big.contains(" bytes cut]"), "{big:.80}");
}

/// A guest message with a newline and a terminal escape cannot forge a line
/// of the device's log or the component log: both show it escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_text_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    watch_host_log("forge/flooder");
    install_as(
        &rt,
        "forge",
        "flooder",
        "wasmdm:device/app",
        "args = [\"forge\"]",
    )
    .await;
    rt.activate("forge", None).await.unwrap();
    wait_state(&rt, "forge", "flooder", ComponentState::Exited, 20).await;
    let fake = "2024-01-01T00:00:00Z";
    let lines = log_text(&rt, "forge", "flooder");
    // From `log`: one line, the newline escaped. On stdout a newline ends a
    // line (the second one is shown with its source, not as a host line).
    let forged: Vec<&String> = lines.iter().filter(|l| l.contains(fake)).collect();
    assert_eq!(forged.len(), 2, "{lines:?}");
    assert!(forged[0].starts_with("hello\\x0a2024"), "{lines:?}");
    for l in &lines {
        assert!(!l.chars().any(wasmdm_package::display::is_unsafe), "{l:?}");
    }
    let file = read_log_file(&dir.path().join("logs/forge/flooder.log"));
    assert!(file.iter().all(|l| !l.starts_with(fake)), "{file:?}");
    let (_, _, host) = host_log_of("forge/flooder");
    assert!(host.contains("hello\\x0a2024"), "{host}");
    assert!(
        host.lines()
            .all(|l| !l.starts_with(fake) && !l.starts_with("hello")),
        "{host}"
    );
    assert!(!host.contains('\x1b'), "{host}");
}

// ---- item 4: restart storms -------------------------------------------------

/// A guest that traps at start under `policy = "always"` with `backoff-ms = 0`
/// (and the default `max-retries = 5`) restarted ~840 times a second forever:
/// now it restarts 5 times, each delay at least 100 ms and doubling, and is
/// then reported failed, as a crash loop, with the trap kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_under_always_stops_after_max_retries() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt(dir.path()).await;
    install_as(
        &rt,
        "trapper",
        "trapper",
        "wasi:cli/command",
        "restart = { policy = \"always\", backoff-ms = 0 }",
    )
    .await;
    let mut events = rt.subscribe();
    rt.activate("trapper", None).await.unwrap();
    wait_state(&rt, "trapper", "trapper", ComponentState::Failed, 30).await;
    let c = comp(&rt, "trapper", "trapper");
    assert_eq!(c.restart_count, 5);
    assert!(c.crash_loop);
    assert!(c.active, "still activated: /9 and /14 keep reporting it so");
    assert!(
        matches!(&c.last_exit, Some(ExitStatus::Trapped(m)) if m.contains("unreachable")),
        "{:?}",
        c.last_exit
    );
    let log = log_text(&rt, "trapper", "trapper");
    assert_eq!(log.iter().filter(|l| *l == "started").count(), 6);
    let delays: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("restarting in"))
        .collect();
    let expected: Vec<String> = [100, 200, 400, 800, 1600]
        .iter()
        .enumerate()
        .map(|(i, ms)| format!("restarting in {ms} ms (restart {} of 5)", i + 1))
        .collect();
    assert_eq!(delays, expected.iter().collect::<Vec<_>>());
    assert!(
        log.last().unwrap().contains("crash loop"),
        "{:?}",
        log.last()
    );
    // The LwM2M side hears of it as a Failed event carrying the trap.
    let mut failed = None;
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        if ev.state == ComponentState::Failed {
            failed = Some(ev);
        }
    }
    assert!(matches!(
        failed.and_then(|e| e.exit),
        Some(ExitStatus::Trapped(_))
    ));
    // No further restarts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(comp(&rt, "trapper", "trapper").restart_count, 5);
    // A new activation starts a fresh budget.
    rt.activate("trapper", None).await.unwrap();
    assert!(!comp(&rt, "trapper", "trapper").crash_loop);
}

/// Restart counts survive a host restart (issue 10, item 9): a component
/// that crashed k times before the host went down does not get a fresh
/// budget of 5 from the reboot (before: k + 5 restarts, and a device that
/// reboots often restarted a crashing app forever), and one whose policy gave
/// up stays Failed, not started, until it is activated again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_counts_and_crash_loops_survive_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = "restart = { policy = \"always\", backoff-ms = 0 }";
    let before = {
        let rt = rt(dir.path()).await;
        install_as(&rt, "trapper", "trapper", "wasi:cli/command", sandbox).await;
        rt.activate("trapper", None).await.unwrap();
        wait_until(20, "two restarts", || {
            comp(&rt, "trapper", "trapper").restart_count >= 2
        })
        .await;
        rt.shutdown().await;
        comp(&rt, "trapper", "trapper").restart_count
    };
    assert!((2..5).contains(&before), "{before}");

    let rt = reopen(dir.path()).await;
    // (It is started at once and may have restarted again already.)
    assert!(comp(&rt, "trapper", "trapper").restart_count >= before);
    wait_state(&rt, "trapper", "trapper", ComponentState::Failed, 30).await;
    let c = comp(&rt, "trapper", "trapper");
    assert!(c.crash_loop);
    assert_eq!(c.restart_count, 5, "the budget went on from {before}");
    rt.shutdown().await;
    drop(rt);

    // Reopened after the crash loop: Failed, counts kept, nothing started.
    let rt = reopen(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = comp(&rt, "trapper", "trapper");
    assert_eq!(c.state, ComponentState::Failed);
    assert!(c.crash_loop && c.active);
    assert_eq!(c.restart_count, 5);
    let log = log_text(&rt, "trapper", "trapper");
    assert!(
        !log.iter().any(|l| l == "started"),
        "not started again: {log:?}"
    );
    // An operator's activation is a fresh budget.
    rt.activate("trapper", None).await.unwrap();
    assert!(!comp(&rt, "trapper", "trapper").crash_loop);
    wait_until(10, "a first restart of a fresh budget", || {
        log_text(&rt, "trapper", "trapper")
            .iter()
            .any(|l| l == "restarting in 100 ms (restart 1 of 5)")
    })
    .await;
}

// ---- item 7: network binds --------------------------------------------------

/// A free loopback port (bound and released: the guest binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the binder with `args` under `network` and returns its report lines.
async fn binder(dir: &std::path::Path, network: &str, args: &[String]) -> Vec<String> {
    let rt = rt(dir).await;
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    let sandbox = format!("network = {network}\nargs = [{}]", args.join(", "));
    install_as(&rt, "binder", "binder", "wasi:cli/command", &sandbox).await;
    rt.activate("binder", None).await.unwrap();
    wait_state(&rt, "binder", "binder", ComponentState::Exited, 20).await;
    let lines = log_text(&rt, "binder", "binder")
        .into_iter()
        .filter(|l| l.starts_with("ALLOWED") || l.starts_with("DENIED"))
        .collect();
    rt.shutdown().await;
    lines
}

fn verdict<'a>(lines: &'a [String], what: &str) -> &'a str {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!(" {what}")))
        .unwrap_or_else(|| panic!("no probe {what} in {lines:?}"));
    line.split(' ').next().unwrap()
}

/// An outbound-only grant connects to what it allows and binds nothing: not
/// a chosen port on every interface (before: any UDP port was granted), not
/// on loopback, no listening socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_grant_binds_no_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = server.local_addr().unwrap();
    let p = free_port();
    let probes = [
        format!("connect={peer}"),
        format!("udp=0.0.0.0:{p}"),
        format!("tcp=0.0.0.0:{p}"),
        format!("udp=127.0.0.1:{p}"),
        format!("tcp=127.0.0.1:{p}"),
    ];
    let lines = binder(dir.path(), "{ allow = [\"127.0.0.0/8:*\"] }", &probes).await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(verdict(&lines, &format!("tcp connect {peer}")), "ALLOWED");
    for what in [
        format!("udp bind 0.0.0.0:{p}"),
        format!("tcp bind 0.0.0.0:{p}"),
        format!("udp bind 127.0.0.1:{p}"),
        format!("tcp bind 127.0.0.1:{p}"),
    ] {
        assert_eq!(verdict(&lines, &what), "DENIED", "{what}: {lines:?}");
    }
}

/// `bind` names exactly the local addresses a guest may listen on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_grant_binds_only_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q) = (free_port(), free_port());
    let probes = [
        format!("tcp=127.0.0.1:{p}"),
        format!("udp=127.0.0.1:{p}"),
        format!("tcp=0.0.0.0:{p}"),
        format!("tcp=127.0.0.1:{q}"),
    ];
    let network = format!("{{ allow = [\"127.0.0.1:*\"], bind = [\"127.0.0.1:{p}\"] }}");
    let lines = binder(dir.path(), &network, &probes).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        verdict(&lines, &format!("tcp bind 127.0.0.1:{p}")),
        "ALLOWED"
    );
    assert_eq!(
        verdict(&lines, &format!("udp bind 127.0.0.1:{p}")),
        "ALLOWED"
    );
    assert_eq!(verdict(&lines, &format!("tcp bind 0.0.0.0:{p}")), "DENIED");
    assert_eq!(
        verdict(&lines, &format!("tcp bind 127.0.0.1:{q}")),
        "DENIED"
    );
}

/// The last exit and crash loop outlive the process that ran the component:
/// a runtime opened afresh (as `wasmdm list` does) shows them, and so does
/// `wasmdm list` itself, in text and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_exit_and_crash_loop_are_shown_by_a_fresh_runtime_and_list() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = rt(dir.path()).await;
        install_as(
            &rt,
            "trapper",
            "trapper",
            "wasi:cli/command",
            "restart = { policy = \"on-failure\", max-retries = 0 }",
        )
        .await;
        rt.activate("trapper", None).await.unwrap();
        wait_state(&rt, "trapper", "trapper", ComponentState::Failed, 30).await;
        assert!(comp(&rt, "trapper", "trapper").crash_loop);
        rt.deactivate("trapper", None).await.unwrap();
    }
    let again = async {
        loop {
            match Runtime::open(config(dir.path())).await {
                Ok(rt) => return rt,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    let rt = tokio::time::timeout(Duration::from_secs(10), again)
        .await
        .expect("the data directory is released");
    let c = comp(&rt, "trapper", "trapper");
    assert_eq!(c.state, ComponentState::Inactive);
    assert!(c.crash_loop);
    assert!(
        matches!(&c.last_exit, Some(ExitStatus::Trapped(m)) if m.contains("unreachable")),
        "{:?}",
        c.last_exit
    );
    drop(rt);

    let list = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wasmdm"));
        cmd.args(["list", "--data-dir"]).arg(dir.path());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.env("RUST_LOG", "off").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = list(false);
    assert!(text.contains("last exit: trapped"), "{text}");
    assert!(text.contains("(crash loop)"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&list(true)).unwrap();
    let c = &v[0]["components"][0];
    assert_eq!(c["crash_loop"], true, "{v}");
    assert!(c["last_exit"]["Trapped"].is_string(), "{v}");
}

/// `max-instances` bounds the instances running at once over both engines
/// (baseline and optimised code each have a pool of that many slots): one
/// past it is refused at activation, with the reason, and a slot given back
/// by a stop is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_counts_running_instances_over_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.engine.max_instances = 1;
    let rt = Runtime::open(cfg).await.unwrap();
    for name in ["one", "two"] {
        let pkg = package(
            name,
            "1.0.0",
            "counter",
            "wasmdm:device/app",
            "memory = \"16MiB\"",
            "",
        );
        deliver_install(&rt, name, &pkg).await.unwrap();
    }
    rt.activate("one", None).await.unwrap();
    let e = rt.activate("two", None).await.unwrap_err().to_string();
    assert!(e.contains("not enough instance slots"), "{e}");
    assert!(
        !comp(&rt, "two", "counter").active,
        "refused, not half-active"
    );
    rt.deactivate("one", None).await.unwrap();
    rt.activate("two", None).await.unwrap();
    wait_state(&rt, "two", "counter", ComponentState::Running, 20).await;
}
