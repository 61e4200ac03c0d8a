#![no_main]
//! Fuzz target `link_format`: the body is `wasmdm_proto::fuzz::link_format`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_proto::fuzz::link_format(data));
