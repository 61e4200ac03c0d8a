//! Traps on purpose, to test that the host reports a crash (Update Result,
//! restart policy) rather than a clean exit.

fn main() {
    println!("about to trap");
    // Executes the wasm `unreachable` instruction: a trap, not a Rust panic.
    core::arch::wasm32::unreachable();
}
