#![no_main]
//! Fuzz target `manifest`: the body is `wasmdm_package::fuzz::manifest`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_package::fuzz::manifest(data));
