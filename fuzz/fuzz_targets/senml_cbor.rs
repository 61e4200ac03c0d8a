#![no_main]
//! Fuzz target `senml_cbor`: the body is `wasmdm_proto::fuzz::senml_cbor`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_proto::fuzz::senml_cbor(data));
