#![no_main]
//! Fuzz target `execargs`: the body is `wasmdm_proto::fuzz::execargs`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_proto::fuzz::execargs(data));
