#![no_main]
//! Fuzz target `tlv`: the body is `wasmdm_proto::fuzz::tlv`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_proto::fuzz::tlv(data));
