//! Floods the host's log, to test that a component's output is bounded on
//! the way in. Arguments, in any order:
//! `stdout=N` writes N bytes to stdout as 1000-byte lines;
//! `longline=N` writes one N-byte line to stdout;
//! `log=N` makes one `wasmdm:device/log` call with an N-byte message;
//! `forge` logs and prints a message containing a newline followed by a
//! fake host log line.

use std::io::Write;

wit_bindgen::generate!({ path: "../../wit", world: "app-imports" });
use wasmdm::device::log;

/// The size in `key=N`, 0 when malformed (the host test controls the args).
fn size(v: &str) -> usize {
    v.parse().unwrap_or(0)
}

fn main() {
    let mut out = std::io::stdout().lock();
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("stdout", n)) => {
                let mut line = vec![b'x'; 999];
                line.push(b'\n');
                let mut left = size(n);
                while left > 0 {
                    let chunk = line.get(line.len().saturating_sub(left)..).unwrap_or(&line);
                    let _ = out.write_all(chunk);
                    left = left.saturating_sub(chunk.len());
                }
            }
            Some(("longline", n)) => {
                let _ = out.write_all(&vec![b'y'; size(n)]);
                let _ = out.write_all(b"\n");
            }
            Some(("log", n)) => log::log(log::Level::Info, &"z".repeat(size(n))),
            _ if arg == "forge" => {
                let fake = "hello\n2024-01-01T00:00:00Z  INFO wasmdm: package verified\x1b[2J";
                log::log(log::Level::Warn, fake);
                let _ = writeln!(out, "{fake}\r");
            }
            _ => {
                let _ = writeln!(out, "unknown argument {arg}");
            }
        }
    }
    let _ = out.flush();
    println!("flood done");
}
