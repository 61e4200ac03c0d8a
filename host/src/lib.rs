//! wasmdm: a WebAssembly component runtime for installable software on edge
//! devices, managed remotely over OMA LwM2M.
//!
//! - [`runtime`]: packages of Wasm components installed, precompiled and run in
//!   sandboxes (wasmtime); knows nothing of LwM2M.
//! - [`state`]: the data directory, atomic durable writes, the process lock.
//! - [`device`]: the tokio driver of the sans-IO LwM2M client in `wasmdm-proto`.
//! - [`inspect`]: what a package holds and whether this host can run it.
pub mod demo;
pub mod device;
pub mod inspect;
pub mod runtime;
pub mod scaffold;
pub mod state;
