//! Exits with a non-zero code, to test the on-failure restart policy.
//!
//! WASI 0.2's stable `wasi:cli/exit.exit` takes only `result<_, _>`, so the
//! host sees `exit(err)` (wasmtime-wasi reports `I32Exit(1)`), not 3: any
//! non-zero code is "failed". Code 3 would need the unstable `exit-with-code`.

fn main() {
    println!("failing");
    std::process::exit(3);
}
