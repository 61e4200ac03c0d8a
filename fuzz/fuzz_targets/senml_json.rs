#![no_main]
//! Fuzz target `senml_json`: the body is `wasmdm_proto::fuzz::senml_json`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_proto::fuzz::senml_json(data));
