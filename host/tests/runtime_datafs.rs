//! The data quota and the descriptor cap are enforced where they are
//! consumed (issue 9, items 1 and 2): a guest's writes, file growth, new
//! entries and open descriptors beyond its grant fail in the guest with an
//! error, the host's disk holds no more than the quota, and the guest keeps
//! running. The `filler` guest prints how far each attack got.

mod runtime_support;

use runtime_support::*;
use std::path::Path;
use wasmdm::runtime::{ComponentState, ExitStatus, Runtime};

const QUOTA: u64 = 1 << 20;
/// What the quota charges per file, directory or link besides its bytes.
const ENTRY: u64 = 4096;

/// Runs `filler` with `args` under `sandbox` to its exit; its output lines.
async fn fill(rt: &Runtime, name: &str, sandbox: &str, args: &[&str]) -> Vec<String> {
    let args = args
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let pkg = package(
        name,
        "1.0.0",
        "filler",
        "wasi:cli/command",
        &format!("{sandbox}\nargs = [{args}]"),
        "",
    );
    deliver_install(rt, name, &pkg).await.unwrap();
    rt.activate(name, None).await.unwrap();
    wait_until(60, &format!("{name} to exit"), || {
        matches!(
            comp(rt, name, "filler").state,
            ComponentState::Exited | ComponentState::Failed
        )
    })
    .await;
    assert_eq!(
        comp(rt, name, "filler").last_exit,
        Some(ExitStatus::Exited(0)),
        "the guest is not stopped, its writes fail: {:?}",
        log_text(rt, name, "filler")
    );
    log_text(rt, name, "filler")
}

/// The amount an attack reached and whether it was refused, from its line.
fn outcome(lines: &[String], attack: &str) -> (u64, Option<String>) {
    let prefix = format!("{attack} ");
    // The guest's lines, not the host's ("open refused: ..."), start with a count.
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix)?.split_once(' '))
        .find_map(|(n, verdict)| {
            let refused = verdict.strip_prefix("refused: ").map(str::to_string);
            Some((n.parse().ok()?, refused))
        })
        .unwrap_or_else(|| panic!("no {attack:?} line in {lines:?}"))
}

/// Bytes of files plus one entry cost per entry under `dir`, as the host
/// sees its disk (a deep tree walked by handles, not paths).
fn on_disk(dir: &Path) -> u64 {
    fn walk(d: &cap_std::fs::Dir) -> u64 {
        let mut n = 0;
        for e in d.entries().unwrap() {
            let e = e.unwrap();
            n += ENTRY;
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                n += walk(&e.open_dir().unwrap());
            } else if ft.is_file() {
                n += e.metadata().unwrap().len();
            }
        }
        n
    }
    walk(&cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()).unwrap())
}

fn data_of(root: &Path, name: &str) -> std::path::PathBuf {
    root.join("appdata").join(name).join("filler")
}

/// A writer far over its quota (before: overshot by gigabytes, then was
/// stopped gracefully while it kept writing) gets "quota exceeded" from the
/// write that would cross it; the disk holds at most the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_quota_fail_in_the_guest_before_they_land() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let lines = fill(
        &rt,
        "writer",
        "data-quota = \"1MiB\"",
        &["write=8388608", "stream=4194304", "grow=1099511627776"],
    )
    .await;

    let (written, refused) = outcome(&lines, "write");
    // wasi-libc reports any failed stream write as EIO (it does not ask
    // `filesystem-error-code`, which says `quota`); the host log says why.
    assert!(
        refused.is_some(),
        "the write past the quota is refused: {lines:?}"
    );
    assert!(written + ENTRY <= QUOTA, "{written} bytes written");
    assert!(
        written >= QUOTA - 2 * ENTRY - (64 << 10),
        "writes up to the quota pass: {written}"
    );

    // The same through one WASI output stream, and a file grown by set-size
    // without writing (1 TiB): both refused, nothing beyond the quota.
    let (streamed, refused) = outcome(&lines, "stream");
    assert!(refused.is_some(), "{lines:?}");
    let (grown, refused) = outcome(&lines, "grow");
    assert!(refused.is_some(), "{lines:?}");
    assert_eq!(grown, 0);
    let used = on_disk(&data_of(dir.path(), "writer"));
    assert!(used <= QUOTA, "{used} bytes on disk under a {QUOTA} quota");
    assert!(written + streamed <= QUOTA);

    // The host says why, once.
    let log = log_text(&rt, "writer", "filler");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("/data quota of 1048576 bytes reached"))
            .count(),
        1,
        "{log:?}"
    );
}

/// Directories and empty files cost an entry each: ~1500 nested directories
/// (deeper than PATH_MAX as one path; the old walk failed there and counted
/// it as "under quota") and 100,000 empty files both stop at the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_count_and_a_deep_tree_cannot_hide_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let lines = fill(
        &rt,
        "nester",
        "data-quota = \"1MiB\"",
        &["nest=1500,536870912"],
    )
    .await;
    let (depth, refused) = outcome(&lines, "nest");
    assert!(refused.is_some(), "{lines:?}");
    assert!(depth <= QUOTA / ENTRY, "{depth} directories");
    let (written, _) = outcome(&lines, "nest-write");
    assert!(written < QUOTA);
    assert!(on_disk(&data_of(dir.path(), "nester")) <= QUOTA);

    let lines = fill(&rt, "toucher", "data-quota = \"1MiB\"", &["files=100000"]).await;
    let (made, refused) = outcome(&lines, "files");
    assert!(refused.is_some(), "{lines:?}");
    assert_eq!(made, QUOTA / ENTRY, "one entry cost per file");
}

/// Space given back by deleting is usable again, and a restarted guest finds
/// its earlier usage measured: the quota holds across runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_space_is_reusable_and_usage_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let lines = fill(
        &rt,
        "cycler",
        "data-quota = \"1MiB\"",
        &["write=8388608", "free"],
    )
    .await;
    assert!(outcome(&lines, "write").1.is_some());
    assert_eq!(outcome(&lines, "free"), (64 << 10, None), "{lines:?}");

    // A second run finds 64 KiB + one entry used: a 1 MiB write is refused
    // short of the quota, not at 1 MiB.
    let pkg = package(
        "cycler",
        "1.0.1",
        "filler",
        "wasi:cli/command",
        "data-quota = \"1MiB\"\nargs = [\"stream=1048576\"]",
        "",
    );
    deliver_install(&rt, "cycler2", &pkg).await.unwrap();
    rt.activate("cycler", None).await.unwrap();
    wait_state(&rt, "cycler", "filler", ComponentState::Exited, 60).await;
    let lines = log_text(&rt, "cycler", "filler");
    let (streamed, refused) = outcome(&lines, "stream");
    assert!(refused.is_some(), "{lines:?}");
    assert!(streamed + (64 << 10) + 2 * ENTRY <= QUOTA, "{streamed}");
    assert!(on_disk(&data_of(dir.path(), "cycler")) <= QUOTA);
}

/// A guest that opens files without closing them (before: ~20,000, until the
/// device's own installs failed with "Too many open files") is refused past
/// `max-descriptors`; closing them makes opening work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_descriptors_are_capped_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let lines = fill(&rt, "opener", "max-descriptors = 64", &["open=20000"]).await;
    let (open, refused) = outcome(&lines, "open");
    assert!(refused.is_some(), "{lines:?}");
    assert_eq!(open, 64, "{lines:?}");
    assert_eq!(outcome(&lines, "reopen"), (1, None));
    let log = log_text(&rt, "opener", "filler");
    assert!(
        log.iter()
            .any(|l| l.contains("open refused: 64 descriptors open")),
        "{log:?}"
    );

    // The default is 256.
    let lines = fill(&rt, "opener2", "", &["open=20000"]).await;
    assert_eq!(outcome(&lines, "open").0, 256, "{lines:?}");
}

/// `wasmdm run` (a bare .wasm with `--data`) enforces the default quota too
/// (before: not at all).
#[test]
fn wasmdm_run_enforces_the_quota() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmdm"))
        .arg("run")
        .arg(guest("filler"))
        .arg("--data")
        .arg(data.path())
        .arg("--")
        .arg("write=67108864")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    let (written, refused) = outcome(&lines, "write");
    assert!(refused.is_some(), "{stdout}\n{stderr}");
    let quota = 16 << 20;
    assert!(written <= quota, "{written}");
    assert!(on_disk(data.path()) <= quota);
}

/// `wasmdm run` takes the same descriptor share a device does: under a
/// process limit too small for it (900 descriptors, 512 kept for the host), a
/// guest granted the default 256 (a share of 512) is refused before it runs,
/// instead of running the host out of descriptors.
#[test]
fn wasmdm_run_refuses_a_guest_the_descriptor_limit_cannot_hold() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: prlimit (util-linux) not installed; skipped");
        return;
    }
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=900:900")
        .arg(env!("CARGO_BIN_EXE_wasmdm"))
        .arg("run")
        .arg(guest("filler"))
        .arg("--")
        .arg("open=10")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("not enough file descriptors left for its share: it needs 512, 388"),
        "{stderr}"
    );
    assert!(!stdout.contains("open "), "the guest did not run: {stdout}");
}
