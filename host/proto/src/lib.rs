//! Sans-IO core of wasmdm's LwM2M: bytes and commands in, bytes, events and
//! timers out. No sockets, no clock, no files: the tokio drivers in the
//! `wasmdm` crate own those.

pub mod codec;
pub mod model;
pub mod object;
pub mod coap;
pub mod execargs;
pub mod objects;
pub mod swcomp;
pub mod swmgmt;
pub mod client;
