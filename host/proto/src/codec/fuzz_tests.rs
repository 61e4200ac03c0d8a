//! Hostile-input tests: every decoder gets random bytes, truncations and
//! single-byte mutations of valid payloads, and must answer `Err` or `Ok`,
//! never panic. A deterministic xorshift keeps failures reproducible.

use super::fixtures::{device_instance, device_tlv, hex, types};
use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const BASES: [Path; 5] = [
    Path::object(3),
    Path::instance(3, 0),
    Path::resource(3, 0, 6),
    Path::resource(3, 0, 0),
    Path::resource_instance(3, 0, 6, 1),
];

const FORMATS: [ContentFormat; 6] = [
    ContentFormat::Tlv,
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Text,
    ContentFormat::Opaque,
    ContentFormat::Cbor,
];

/// Runs every decoder on `bytes`; results are ignored, panics fail the test.
fn feed(bytes: &[u8]) {
    for format in FORMATS {
        for base in BASES {
            let _ = decode(bytes, base, format, &types);
            let _ = decode_flat(bytes, base, format, &types);
        }
        let _ = decode_create(bytes, 3, format, &types);
    }
    let _ = tlv::parse_entries(bytes);
    let _ = link::parse(bytes);
    let _ = link::parse_register_payload(bytes);
}

fn valid_payloads() -> Vec<Vec<u8>> {
    let base = Path::instance(3, 0);
    let mut wrapped = hex("08 00 79");
    wrapped.extend(device_tlv());
    vec![
        device_tlv(),
        wrapped,
        encode(&device_instance(), base, ContentFormat::SenmlJson).unwrap(),
        encode(&device_instance(), base, ContentFormat::SenmlCbor).unwrap(),
        br#"</>;rt="oma.lwm2m";ct="60 110 112",</1>;ver=1.1,</1/0>,</3/0>"#.to_vec(),
        b"AQIDBAU=".to_vec(),
    ]
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = rng.below(48);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        feed(&bytes);
    }
}

#[test]
fn truncations_and_mutations_never_panic() {
    let mut rng = XorShift(42);
    for payload in valid_payloads() {
        for cut in 0..payload.len() {
            feed(&payload[..cut]);
        }
        for _ in 0..200 {
            let mut bytes = payload.clone();
            if let Some(byte) = bytes.get_mut(rng.below(payload.len())) {
                *byte = rng.next() as u8;
            }
            feed(&bytes);
        }
    }
}

#[test]
fn truncated_payloads_are_errors() {
    let base = Path::instance(3, 0);
    let mut wrapped = hex("08 00 79");
    wrapped.extend(device_tlv());
    let json = encode(&device_instance(), base, ContentFormat::SenmlJson).unwrap();
    let cbor = encode(&device_instance(), base, ContentFormat::SenmlCbor).unwrap();
    for (format, payload) in [
        (ContentFormat::Tlv, wrapped),
        (ContentFormat::SenmlJson, json),
        (ContentFormat::SenmlCbor, cbor),
    ] {
        assert!(decode(&payload, base, format, &types).is_ok());
        for cut in 1..payload.len() {
            let result = decode(&payload[..cut], base, format, &types);
            assert!(
                matches!(result, Err(CodecError::Malformed { .. })),
                "{format:?} cut at {cut}: {result:?}"
            );
        }
    }
}

#[test]
fn lengths_beyond_the_payload_are_malformed() {
    // TLV: 24-bit length 0xFFFFFF, CBOR: text of 2^32 bytes, both with a few bytes behind.
    assert!(matches!(
        decode(
            &hex("C8 00 FF 41"),
            Path::resource(3, 0, 0),
            ContentFormat::Tlv,
            &types
        ),
        Err(CodecError::Malformed { .. })
    ));
    assert!(matches!(
        decode(
            &hex("D8 00 FF FF FF 41"),
            Path::resource(3, 0, 0),
            ContentFormat::Tlv,
            &types
        ),
        Err(CodecError::Malformed { .. })
    ));
    assert!(matches!(
        decode(
            &hex("81 A1 21 7B 00 00 00 01 00 00 00 00 2F"),
            Path::object(3),
            ContentFormat::SenmlCbor,
            &types
        ),
        Err(CodecError::Malformed { .. })
    ));
}

#[test]
fn dispatchers_report_unsupported_formats() {
    let node = device_instance();
    for format in [ContentFormat::LinkFormat, ContentFormat::LwM2mJson] {
        assert_eq!(
            encode(&node, Path::instance(3, 0), format),
            Err(CodecError::Unsupported(format))
        );
        assert_eq!(
            decode(b"", Path::instance(3, 0), format, &types),
            Err(CodecError::Unsupported(format))
        );
    }
    assert!(matches!(
        encode(&node, Path::instance(3, 0), ContentFormat::Text),
        Err(CodecError::NotRepresentable { .. })
    ));
}

#[test]
fn deep_cbor_nesting_is_refused_not_overflowing() {
    let mut bytes = vec![0x81; 100_000];
    bytes.push(0xA0);
    assert!(decode(&bytes, Path::object(3), ContentFormat::SenmlCbor, &types).is_err());
    let json = "[".repeat(100_000);
    assert!(
        decode(
            json.as_bytes(),
            Path::object(3),
            ContentFormat::SenmlJson,
            &types
        )
        .is_err()
    );
}
