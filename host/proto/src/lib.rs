//! Sans-IO core of wasmdm's LwM2M: bytes and commands in, bytes, events and
//! timers out. No sockets, no clock, no files: the tokio drivers in the
//! `wasmdm` crate own those.

pub mod bootstrap;
pub mod client;
pub mod coap;
pub mod codec;
pub mod dtls;
pub mod execargs;
/// Fuzz target bodies, for `fuzz/` and the smoke test (feature `fuzz`).
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod model;
pub mod object;
pub mod objects;
pub mod swcomp;
pub mod swmgmt;
