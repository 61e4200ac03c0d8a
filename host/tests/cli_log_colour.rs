//! Log lines written to a pipe (or file) carry no ANSI colour codes: the real
//! `wasmdm server` logs its start-up lines to a piped stderr.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first stderr lines of `wasmdm server` up to its first `INFO` line.
fn first_log_lines(no_color: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmdm"));
    cmd.args(["server", "--no-coaps", "--coap", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if line.contains("INFO") {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    for no_color in [false, true] {
        let text = first_log_lines(no_color);
        assert!(text.contains("INFO"), "no log line: {text:?}");
        assert!(!text.contains('\x1b'), "colour codes in {text:?}");
    }
}
