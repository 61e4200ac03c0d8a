//! Tries to consume the device's disk and descriptors from inside `/data`,
//! one attack per argument, and prints one line per attack with how far it
//! got, so host tests can assert the bound:
//! - `write=N`: writes N bytes to /data/big in 64 KiB chunks;
//! - `stream=N`: the same through one `write_all` (WASI output stream);
//! - `grow=N`: sets the length of /data/sparse to N without writing;
//! - `nest=D,N`: nests D directories (long names), then writes N bytes there;
//! - `files=N`: creates N empty files;
//! - `open=N`: opens N files and keeps them all open;
//! - `free`: removes what the other attacks made, then writes 64 KiB.
//!
//! Lines: `<attack> <amount reached> ok` or `<attack> <amount reached> refused: <error>`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

fn report(attack: &str, reached: u64, result: std::io::Result<()>) {
    match result {
        Ok(()) => println!("{attack} {reached} ok"),
        Err(e) => println!("{attack} {reached} refused: {e}"),
    }
}

fn write_chunks(path: &PathBuf, n: u64) -> (u64, std::io::Result<()>) {
    let mut f = match File::create(path) {
        Ok(f) => f,
        Err(e) => return (0, Err(e)),
    };
    let chunk = vec![7u8; 64 << 10];
    let mut done = 0u64;
    while done < n {
        let len = chunk.len().min((n - done) as usize);
        match f.write(&chunk[..len]) {
            Ok(0) => return (done, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(k) => done += k as u64,
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

fn main() {
    for arg in std::env::args().skip(1) {
        let (attack, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        let n = |s: &str| s.parse::<u64>().unwrap_or(0);
        match attack {
            "write" => {
                let (done, r) = write_chunks(&PathBuf::from("/data/big"), n(value));
                report("write", done, r);
            }
            "stream" => {
                let data = vec![1u8; n(value) as usize];
                let r = File::create("/data/streamed").and_then(|mut f| f.write_all(&data));
                let len = std::fs::metadata("/data/streamed")
                    .map(|m| m.len())
                    .unwrap_or(0);
                report("stream", len, r);
            }
            "grow" => {
                let r = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open("/data/sparse")
                    .and_then(|f| f.set_len(n(value)));
                let len = std::fs::metadata("/data/sparse")
                    .map(|m| m.len())
                    .unwrap_or(0);
                report("grow", len, r);
            }
            "nest" => {
                let (d, bytes) = value.split_once(',').unwrap_or((value, "0"));
                let mut path = PathBuf::from("/data");
                let mut depth = 0;
                let mut r = Ok(());
                for _ in 0..n(d) {
                    path.push("d".repeat(200));
                    if let Err(e) = std::fs::create_dir(&path) {
                        r = Err(e);
                        break;
                    }
                    depth += 1;
                }
                report("nest", depth, r);
                let (done, r) = write_chunks(&path.join("deep"), n(bytes));
                report("nest-write", done, r);
            }
            "files" => {
                let mut made = 0;
                let mut r = Ok(());
                for i in 0..n(value) {
                    if let Err(e) = File::create(format!("/data/f{i}")) {
                        r = Err(e);
                        break;
                    }
                    made += 1;
                }
                report("files", made, r);
            }
            "open" => {
                let mut open = Vec::new();
                let mut r = Ok(());
                for i in 0..n(value) {
                    match File::create(format!("/data/o{}", i % 8)) {
                        Ok(f) => open.push(f),
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                report("open", open.len() as u64, r);
                drop(open);
                // Closed again: opening works.
                report("reopen", 1, File::open("/data/o0").map(drop));
            }
            "free" => {
                for entry in std::fs::read_dir("/data").into_iter().flatten().flatten() {
                    let p = entry.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
                let (done, r) = write_chunks(&PathBuf::from("/data/after-free"), 64 << 10);
                report("free", done, r);
            }
            other => println!("unknown attack {other}"),
        }
    }
}
