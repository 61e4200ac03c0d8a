//! Ignores stop requests and parks inside a host call (a WASI monotonic-clock
//! poll): epochs can't interrupt it, so the host must drop or abort its future.

use std::time::Duration;

fn main() {
    println!("blocking");
    loop {
        std::thread::sleep(Duration::from_secs(1_000_000));
    }
}
