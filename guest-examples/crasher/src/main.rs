//! Crashes in the way its first argument names, to test that the host keeps
//! the cause of a trap in the component's status and log:
//! `unreachable`, `oob` (a load past the end of linear memory),
//! `stack-overflow` (unbounded recursion), `bad-handle` (drops a resource
//! handle it does not own: the host call fails, which is an error without a
//! wasm trap code); anything else executes `unreachable`.

use std::hint::black_box;

/// Recurses until `n` reaches `limit` (never, in practice: `u64::MAX`). All
/// state is in wasm locals, not on Rust's shadow stack in linear memory, so
/// what overflows is wasmtime's native stack; the subtraction after the call
/// keeps LLVM from turning the recursion into a loop.
fn recurse(n: u64, limit: u64) -> u64 {
    if n == limit {
        return n;
    }
    n.wrapping_sub(recurse(n.wrapping_add(1), limit))
}

#[link(wasm_import_module = "wasi:io/streams@0.2.6")]
unsafe extern "C" {
    /// The canonical ABI's drop of an `output-stream` handle.
    #[link_name = "[resource-drop]output-stream"]
    fn drop_output_stream(handle: i32);
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    println!("crashing: {mode}");
    match mode.as_str() {
        "oob" => {
            // An address far beyond any linear memory this guest can have.
            let p = black_box(0xffff_fff0usize) as *const u64;
            // SAFETY: none; the out-of-bounds access is the point (a wasm trap).
            let v = unsafe { core::ptr::read_volatile(p) };
            println!("read {v}");
        }
        "stack-overflow" => println!("{}", recurse(0, black_box(u64::MAX))),
        // SAFETY: none; the bogus handle is the point (the host refuses it).
        "bad-handle" => unsafe { drop_output_stream(black_box(0x7fff_0000)) },
        _ => core::arch::wasm32::unreachable(),
    }
}
