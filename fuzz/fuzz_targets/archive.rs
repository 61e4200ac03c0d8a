#![no_main]
//! Fuzz target `archive`: the body is `wasmdm_package::fuzz::archive`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_package::fuzz::archive(data));
