#![no_main]
//! Fuzz target `coap_msg`: the body is `wasmdm_proto::fuzz::coap_msg`, shared with the crate's smoke test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmdm_proto::fuzz::coap_msg(data));
