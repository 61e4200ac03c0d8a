//! wasmdm
pub mod runtime;
pub mod state;
