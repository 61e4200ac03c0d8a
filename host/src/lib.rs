//! wasmdm
