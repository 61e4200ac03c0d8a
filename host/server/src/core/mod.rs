//! Sans-IO server core: registration, DM request building and response
//! parsing, Block1 sending and observation bookkeeping. No sockets, no
//! clock: callers pass time in as Unix milliseconds.

pub mod access;
pub mod block1;
pub mod composite;
pub mod dm;
pub mod link;
pub mod observe;
pub mod registry;
pub mod send;
