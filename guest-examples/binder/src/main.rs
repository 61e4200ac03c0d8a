//! Tries to bind and listen on the addresses given as arguments
//! (`tcp=IP:PORT`, `udp=IP:PORT`) and to connect (`connect=IP:PORT`); prints
//! one line per attempt, `ALLOWED <what>` or `DENIED <what>: <error>`, for
//! the host's network-grant tests.

use std::fmt::Display;
use std::net::{TcpListener, TcpStream, UdpSocket};

/// Prints the outcome of one attempt in the line format the host tests grep.
fn report<T, E: Display>(what: &str, result: Result<T, E>) {
    match result {
        Ok(_) => println!("ALLOWED {what}"),
        Err(e) => println!("DENIED {what}: {e}"),
    }
}

fn main() {
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("tcp", addr)) => report(&format!("tcp bind {addr}"), TcpListener::bind(addr)),
            Some(("udp", addr)) => report(&format!("udp bind {addr}"), UdpSocket::bind(addr)),
            Some(("connect", addr)) => {
                report(&format!("tcp connect {addr}"), TcpStream::connect(addr))
            }
            _ => println!("unknown probe {arg}"),
        }
    }
}
