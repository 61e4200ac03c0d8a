//! Probes the sandbox: each attempt prints one line, `ALLOWED <what>` or
//! `DENIED <what>: <error>`, so a host test can assert the exact policy.
//! Only writing inside /data should be allowed under the default sandbox.
//! Arguments add probes for granted sandboxes: `read=<path>`,
//! `write=<path>` and `connect=<ip:port>`.

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

/// Prints the outcome of one attempt in the line format the host tests grep.
fn report<T, E: Display>(what: &str, result: Result<T, E>) {
    match result {
        Ok(_) => println!("ALLOWED {what}"),
        Err(e) => println!("DENIED {what}: {e}"),
    }
}

fn read_to_string(path: &str) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?.read_to_string(&mut s)?;
    Ok(s)
}

fn main() {
    report("read /etc/passwd", read_to_string("/etc/passwd"));
    report(
        "read /data/../../etc/passwd",
        read_to_string("/data/../../etc/passwd"),
    );
    report(
        "list /",
        std::fs::read_dir("/").map(|d| d.filter_map(Result::ok).count()),
    );
    report("create /tmp/escaper", std::fs::File::create("/tmp/escaper"));
    report(
        "write /data/ok",
        std::fs::File::create("/data/ok").and_then(|mut f| f.write_all(b"ok\n")),
    );
    report(
        "tcp connect 127.0.0.1:80",
        TcpStream::connect("127.0.0.1:80"),
    );
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("read", path)) => report(&format!("read {path}"), read_to_string(path)),
            Some(("write", path)) => report(
                &format!("write {path}"),
                std::fs::File::create(path).and_then(|mut f| f.write_all(b"x")),
            ),
            Some(("connect", addr)) => {
                report(&format!("tcp connect {addr}"), TcpStream::connect(addr))
            }
            _ => println!("unknown probe {arg}"),
        }
    }
    report(
        "resolve localhost",
        ("localhost", 80).to_socket_addrs().and_then(|mut a| {
            a.next()
                .ok_or_else(|| std::io::Error::other("no addresses"))
        }),
    );
}
