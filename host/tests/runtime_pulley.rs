//! The runtime under wasmtime's Pulley interpreter on any host (issue 15).
//!
//! armv7 devices run Pulley because Cranelift has no 32-bit ARM backend;
//! `WASMDM_CODE_TARGET=pulley` forces the same code path on x86_64 and
//! aarch64, so the native test run (and CI) covers it too. The variable is
//! read once per process, so each test re-runs itself in a child process
//! with it set (on a Pulley-only build it runs in place).

mod runtime_support;

use runtime_support::*;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmdm::runtime::{CodeTarget, ComponentState, ExitStatus, Runtime};

const ENV: &str = "WASMDM_CODE_TARGET";

/// Runs `body` in a process whose engines compile to Pulley: this one if
/// they already do, else a child running only test `name` with the variable.
fn under_pulley<F: Future<Output = ()>>(name: &str, body: impl FnOnce() -> F) {
    let forced = std::env::var(ENV).is_ok_and(|v| v == "pulley");
    if forced || CodeTarget::build_default() == CodeTarget::Pulley {
        assert_eq!(CodeTarget::host(), CodeTarget::Pulley);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(ENV, "pulley")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} under Pulley failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in the child:\n{stdout}"
    );
}

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "cwasm") {
                out.push(p);
            }
        }
    }
    out
}

/// Both example worlds install and run as Pulley bytecode, the device
/// reports the Pulley target, and the compiled files on disk are Pulley's.
#[test]
fn example_guests_run_as_pulley_bytecode() {
    under_pulley("example_guests_run_as_pulley_bytecode", || async {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::open(config(dir.path())).await.unwrap();
        let triple = CodeTarget::Pulley.triple().unwrap();
        assert_eq!(rt.engine_info().target, triple);

        let hello = package("hello", "1.0.0", "hello", "wasi:cli/command", "", "");
        deliver_install(&rt, "0", &hello).await.unwrap();
        rt.activate("hello", None).await.unwrap();
        wait_state(&rt, "hello", "hello", ComponentState::Exited, 60).await;
        let lines = log_text(&rt, "hello", "hello");
        assert!(lines.iter().any(|l| l == "hello from wasmdm"), "{lines:?}");

        deliver_install(&rt, "1", &counter_pkg("1.0.0"))
            .await
            .unwrap();
        rt.activate("counter", None).await.unwrap();
        wait_until(60, "counter output", || {
            log_text(&rt, "counter", "counter")
                .iter()
                .any(|l| l.contains("hi there"))
        })
        .await;
        rt.deactivate("counter", None).await.unwrap();
        assert_eq!(
            comp(&rt, "counter", "counter").state,
            ComponentState::Inactive
        );

        let cwasms = cwasm_files(dir.path());
        assert!(!cwasms.is_empty(), "no compiled code under {dir:?}");
        for f in cwasms {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                bytes.windows(triple.len()).any(|w| w == triple.as_bytes()),
                "{} is not {triple} code",
                f.display()
            );
        }
    });
}

/// The sandbox is the same under the interpreter: the memory cap stops a
/// hog, epoch interruption stops a guest that never yields.
#[test]
fn memory_cap_and_epochs_hold_under_pulley() {
    under_pulley("memory_cap_and_epochs_hold_under_pulley", || async {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::open(config(dir.path())).await.unwrap();

        let memhog = package(
            "memhog",
            "1.0.0",
            "memhog",
            "wasi:cli/command",
            "memory = \"24MiB\"",
            "",
        );
        deliver_install(&rt, "0", &memhog).await.unwrap();
        rt.activate("memhog", None).await.unwrap();
        wait_state(&rt, "memhog", "memhog", ComponentState::Failed, 60).await;
        assert_eq!(
            comp(&rt, "memhog", "memhog").last_exit,
            Some(ExitStatus::MemoryLimitExceeded { limit: 24 << 20 })
        );

        let spinner = package(
            "spinner",
            "1.0.0",
            "spinner",
            "wasi:cli/command",
            "stop-grace-ms = 300",
            "",
        );
        deliver_install(&rt, "1", &spinner).await.unwrap();
        rt.activate("spinner", None).await.unwrap();
        wait_until(60, "spinner output", || {
            !log_text(&rt, "spinner", "spinner").is_empty()
        })
        .await;
        wait_state(&rt, "spinner", "spinner", ComponentState::Running, 60).await;
        let t = Instant::now();
        rt.deactivate("spinner", None).await.unwrap();
        // Generous: only that the interpreter's epoch checks end it at all
        // (a spinner that never yields would otherwise never stop).
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        let c = comp(&rt, "spinner", "spinner");
        assert_eq!(c.state, ComponentState::Inactive);
        assert_eq!(c.last_exit, Some(ExitStatus::Stopped { forced: true }));
    });
}
