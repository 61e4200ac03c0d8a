//! Fuzz target bodies: one function per target, taking arbitrary bytes.
//!
//! Each body feeds the bytes to a decoder that meets network input and checks what can be
//! checked without an oracle: no panic, and where an encoder exists, that what was decoded
//! encodes to bytes which decode and encode again to the same bytes (comparing encodings rather
//! than values keeps NaN floats from failing the check). The libFuzzer binaries in `fuzz/` call
//! these, and so does this crate's own smoke test over `fuzz/corpus/`, so `cargo test` runs
//! every body without a fuzzer. Built for tests and with the `fuzz` feature only.

use coap_lite::CoapOption;

use crate::coap::block::BlockOpt;
use crate::coap::msg::{self, Classified};
use crate::codec::{self, link, senml, tlv};
use crate::execargs;
use crate::model::{ContentFormat, DataType, Path};

/// Every data type, picked by resource id, so each value decoder is reachable from any payload.
pub fn types(path: Path) -> Option<DataType> {
    const ALL: [DataType; 10] = [
        DataType::String,
        DataType::Integer,
        DataType::Unsigned,
        DataType::Float,
        DataType::Boolean,
        DataType::Opaque,
        DataType::Time,
        DataType::ObjLink,
        DataType::CoreLink,
        DataType::None,
    ];
    let r = path.resource?;
    // Resource 0 is left without a type to exercise the unknown-resource path.
    (r != 0).then(|| ALL[usize::from(r) % ALL.len()])
}

/// Targets a payload may be aimed at: object, instance, resource, resource instance.
const BASES: [Path; 4] = [
    Path::object(3),
    Path::instance(3, 0),
    Path::resource(3, 0, 6),
    Path::resource_instance(3, 0, 6, 1),
];

/// CoAP message layer: coap-lite's parser behind our RFC 7252 format rules, and the option
/// readers the engines use. A message the rules accept re-encodes (as the endpoint encodes) to
/// bytes that the rules accept as the same packet. (Raw coap-lite alone does not round-trip:
/// it parses a payload after an Empty code and drops it when encoding; `classify` refuses such
/// a message, which is what the first crash this target found showed.)
pub fn coap_msg(data: &[u8]) {
    let Classified::Message(packet) = msg::classify(data) else {
        return;
    };
    let _ = msg::uri_path(&packet);
    let _ = msg::uri_query(&packet);
    let _ = msg::string_list(&packet, CoapOption::LocationPath);
    for option in [CoapOption::Block1, CoapOption::Block2] {
        let _ = BlockOpt::read(&packet, option);
    }
    let _ = msg::get_uint(&packet, CoapOption::Observe, 3);
    let _ = msg::get_uint(&packet, CoapOption::ContentFormat, 2);
    let Some(bytes) = msg::encode(&packet) else {
        return;
    };
    let again = match msg::classify(&bytes) {
        Classified::Message(p) => p,
        other => panic!("re-encoded message refused: {other:?}\n{bytes:02x?}"),
    };
    assert_eq!(again, packet, "packet changed through encode/classify");
    assert_eq!(msg::encode(&again), Some(bytes), "encoding not stable");
}

/// Decodes `data` in `format` at every base; whatever decodes must survive encode/decode.
fn node_round_trip(data: &[u8], format: ContentFormat) {
    for base in BASES {
        let Ok(node) = codec::decode(data, base, format, &types) else {
            continue;
        };
        let Ok(first) = codec::encode(&node, base, format) else {
            continue;
        };
        let again = codec::decode(&first, base, format, &types).unwrap_or_else(|e| {
            panic!("{format:?} at {base}: re-encoded {node:?} does not decode: {e}")
        });
        let second = codec::encode(&again, base, format)
            .unwrap_or_else(|e| panic!("{format:?} at {base}: {again:?} does not re-encode: {e}"));
        assert_eq!(first, second, "{format:?} at {base}: encoding not stable");
    }
    for object in [3, 9] {
        let _ = codec::decode_create(data, object, format, &types);
    }
}

/// OMA-TLV (CF 11542).
pub fn tlv(data: &[u8]) {
    let _ = tlv::parse_entries(data);
    node_round_trip(data, ContentFormat::Tlv);
}

/// SenML JSON (CF 110): the wire records and the decoded node.
pub fn senml_json(data: &[u8]) {
    if let Ok(records) = senml::from_json(data)
        && let Ok(first) = senml::to_json(&records)
    {
        let again = senml::from_json(&first).expect("re-encoded SenML JSON parses");
        let second = senml::to_json(&again).expect("SenML JSON re-encodes");
        assert_eq!(first, second, "SenML JSON encoding not stable");
    }
    let _ = senml::decode_json(data, &types);
    node_round_trip(data, ContentFormat::SenmlJson);
}

/// SenML CBOR (CF 112): the wire records and the decoded node.
pub fn senml_cbor(data: &[u8]) {
    if let Ok(records) = senml::from_cbor(data)
        && let Ok(first) = senml::to_cbor(&records)
    {
        let again = senml::from_cbor(&first).expect("re-encoded SenML CBOR parses");
        let second = senml::to_cbor(&again).expect("SenML CBOR re-encodes");
        assert_eq!(first, second, "SenML CBOR encoding not stable");
    }
    let _ = senml::decode_cbor(data, &types);
    node_round_trip(data, ContentFormat::SenmlCbor);
}

/// CoRE link format (CF 40): Register payloads and Discover answers.
pub fn link_format(data: &[u8]) {
    let _ = link::parse_register_payload(data);
    let Ok(links) = link::parse(data) else {
        return;
    };
    let text = link::write(&links);
    let again = link::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("written links do not parse: {e}\n{text}"));
    assert_eq!(again, links, "links changed through write/parse:\n{text}");
}

/// Execute arguments (Core 1.1.1 §6.3.5). The grammar has one spelling per argument list, so
/// an accepted payload must be exactly its own rendering.
pub fn execargs(data: &[u8]) {
    let Ok(args) = execargs::parse(data) else {
        return;
    };
    let rendered: Vec<String> = args
        .iter()
        .map(|(digit, value)| match value {
            Some(v) => format!("{digit}='{v}'"),
            None => digit.to_string(),
        })
        .collect();
    let rendered = rendered.join(",");
    assert_eq!(
        rendered.as_bytes(),
        data,
        "accepted payload is not canonical"
    );
}

/// A target: its name (as `fuzz/corpus/<name>/` and `fuzz/fuzz_targets/<name>.rs` name it)
/// and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("coap_msg", coap_msg),
    ("tlv", tlv),
    ("senml_json", senml_json),
    ("senml_cbor", senml_cbor),
    ("link_format", link_format),
    ("execargs", execargs),
];

#[cfg(test)]
#[path = "../../../fuzz/replay.rs"]
mod replay;

#[cfg(test)]
mod tests {
    /// Every body over its seed corpus, 3000 mutations of it and 500 random inputs.
    #[test]
    fn fuzz_bodies_survive_corpus_and_mutations() {
        super::replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            super::TARGETS,
            &[0, 0xff, 0x7f, 0x80, b'\'', b'"', b'<'],
            3000,
            500,
        );
    }
}
