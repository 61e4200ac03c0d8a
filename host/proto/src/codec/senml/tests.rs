use super::*;
use crate::codec::fixtures::{device_instance, hex, objlink, types};
use crate::codec::{assemble, decode, decode_flat, encode};
use crate::model::{ObjLink, ResourceValue};

const T7_4_4_2: &str = concat!(
    r#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"1","vs":"Lightweight M2M Client"},{"n":"2","vs":"345000123"},"#,
    r#"{"n":"3","vs":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"7/0","v":3800},{"n":"7/1","v":5000},{"n":"8/0","v":125},"#,
    r#"{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","vs":"+02:00"},"#,
    r#"{"n":"16","vs":"U"}]"#
);

const DEVICE_CBOR: &str = "
    90 A3 21 65 2F 33 2F 30 2F 00 61 30 03 74 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C
    6C 69 61 6E 63 65 A2 00 61 31 03 76 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20
    43 6C 69 65 6E 74 A2 00 61 32 03 69 33 34 35 30 30 30 31 32 33 A2 00 61 33 03 63 31
    2E 30 A2 00 63 36 2F 30 02 01 A2 00 63 36 2F 31 02 05 A2 00 63 37 2F 30 02 19 0E D8
    A2 00 63 37 2F 31 02 19 13 88 A2 00 63 38 2F 30 02 18 7D A2 00 63 38 2F 31 02 19 03
    84 A2 00 61 39 02 18 64 A2 00 62 31 30 02 0F A2 00 64 31 31 2F 30 02 00 A2 00 62 31
    33 02 1A 51 82 42 8F A2 00 62 31 34 03 66 2B 30 32 3A 30 30 A2 00 62 31 36 03 61 55";

#[test]
fn device_read_as_json_is_table_7_4_4_2_exactly() {
    let bytes = encode(
        &device_instance(),
        Path::instance(3, 0),
        ContentFormat::SenmlJson,
    )
    .unwrap();
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), T7_4_4_2);
    let node = decode(
        T7_4_4_2.as_bytes(),
        Path::instance(3, 0),
        ContentFormat::SenmlJson,
        &types,
    )
    .unwrap();
    assert_eq!(node, device_instance());
}

#[test]
fn device_read_as_cbor_is_the_196_byte_vector() {
    let vector = hex(DEVICE_CBOR);
    assert_eq!(vector.len(), 196);
    let bytes = encode(
        &device_instance(),
        Path::instance(3, 0),
        ContentFormat::SenmlCbor,
    )
    .unwrap();
    assert_eq!(bytes, vector);
    let node = decode(
        &vector,
        Path::instance(3, 0),
        ContentFormat::SenmlCbor,
        &types,
    )
    .unwrap();
    assert_eq!(node, device_instance());
}

#[test]
fn single_resource_is_named_by_bn_alone() {
    let node = Node::Resource {
        id: 0,
        value: ResourceValue::Single(Value::String("Open Mobile Alliance".into())),
    };
    let json = encode(&node, Path::resource(3, 0, 0), ContentFormat::SenmlJson).unwrap();
    assert_eq!(json, br#"[{"bn":"/3/0/0","vs":"Open Mobile Alliance"}]"#);
    assert_eq!(
        decode(
            &json,
            Path::resource(3, 0, 0),
            ContentFormat::SenmlJson,
            &types
        )
        .unwrap(),
        node
    );
}

#[test]
fn opaque_cbor_vector() {
    let vector = hex("81 A2 21 66 2F 30 2F 30 2F 33 08 43 AB CD EF");
    let node = Node::Resource {
        id: 3,
        value: ResourceValue::Single(Value::Opaque(vec![0xAB, 0xCD, 0xEF])),
    };
    assert_eq!(
        encode(&node, Path::resource(0, 0, 3), ContentFormat::SenmlCbor).unwrap(),
        vector
    );
    assert_eq!(
        decode(
            &vector,
            Path::resource(0, 0, 3),
            ContentFormat::SenmlCbor,
            &types
        )
        .unwrap(),
        node
    );
}

#[test]
fn objlink_cbor_vector_uses_text_key_vlo() {
    let vector = hex("81 A2 00 69 2F 36 35 2F 30 2F 30 2F 30 63 76 6C 6F 64 36 36 3A 30");
    let records = decode_cbor(&vector, &types).unwrap();
    assert_eq!(
        records,
        vec![Record {
            path: Path::resource_instance(65, 0, 0, 0),
            time: None,
            value: Some(objlink(66, 0))
        }]
    );
    let raw = vec![RawRecord {
        n: Some("/65/0/0/0".into()),
        value: Some(SenmlValue::ObjLink("66:0".into())),
        ..RawRecord::default()
    }];
    assert_eq!(to_cbor(&raw).unwrap(), vector);
}

#[test]
fn half_float_cbor_vector_decodes() {
    let vector = hex("81 A2 02 F9 5C B0 21 6B 2F 33 34 34 32 2F 30 2F 31 33 30");
    let records = decode_cbor(&vector, &types).unwrap();
    assert_eq!(
        records,
        vec![Record {
            path: Path::resource(3442, 0, 130),
            time: None,
            value: Some(Value::Float(300.0))
        }]
    );
    // And we write 300.0 as a half float too.
    let node = Node::Resource {
        id: 130,
        value: ResourceValue::Single(Value::Float(300.0)),
    };
    let bytes = encode(
        &node,
        Path::resource(3442, 0, 130),
        ContentFormat::SenmlCbor,
    )
    .unwrap();
    assert_eq!(
        bytes,
        hex("81 A2 21 6B 2F 33 34 34 32 2F 30 2F 31 33 30 02 F9 5C B0")
    );
}

#[test]
fn objlink_json_table_7_4_4_4_decodes() {
    let text = concat!(
        r#"[{"bn":"/","n":"65/0/0/0","vlo":"66:0"},{"n":"65/0/0/1","vlo":"66:1"},{"n":"65/0/1","vs":"8613800755500"},{"n":"65/0/2","v":1},"#,
        r#"{"n":"66/0/0","vs":"myService1"},{"n":"66/0/1","vs":"Internet.15.234"},{"n":"66/0/2","vlo":"67:0"},{"n":"66/1/0","vs":"myService2"},"#,
        r#"{"n":"66/1/1","vs":"Internet.15.235"},{"n":"66/1/2","vlo":"65535:65535"},{"n":"67/0/0","vs":"85.76.76.84"},{"n":"67/0/1","vs":"85.76.255.255"}]"#
    );
    let records = decode_json(text.as_bytes(), &types).unwrap();
    assert_eq!(records.len(), 12);
    assert_eq!(records[0].path, Path::resource_instance(65, 0, 0, 0));
    assert_eq!(records[0].value, Some(objlink(66, 0)));
    assert_eq!(records[3].value, Some(Value::Integer(1)));
    assert_eq!(
        records[9].value,
        Some(Value::ObjLink(ObjLink {
            object: 65535,
            instance: 65535
        }))
    );
    assert_eq!(records[11].path, Path::resource(67, 0, 1));
    // One object's slice assembles into a node.
    let flat: Vec<(Path, Value)> = records
        .into_iter()
        .filter(|r| r.path.object == 66)
        .map(|r| (r.path, r.value.unwrap()))
        .collect();
    let node = assemble(Path::object(66), &flat, ContentFormat::SenmlJson).unwrap();
    let Node::Object { instances, .. } = node else {
        panic!("not an object")
    };
    assert_eq!(instances.len(), 2);
    assert_eq!(
        instances[0].1[2],
        (2, ResourceValue::Single(objlink(67, 0)))
    );
}

#[test]
fn timestamped_records_apply_base_time() {
    let text = r#"[{"bn":"/72/","bt":25462634,"n":"1/2","v":22.4,"t":-5},{"n":"1/2","v":22.9,"t":-30},{"n":"1/2","v":24.1,"t":-50}]"#;
    let no_types = |_: Path| Option::<DataType>::None;
    let records = decode_json(text.as_bytes(), &no_types).unwrap();
    assert_eq!(
        records,
        vec![
            Record {
                path: Path::resource(72, 1, 2),
                time: Some(25462629.0),
                value: Some(Value::Float(22.4))
            },
            Record {
                path: Path::resource(72, 1, 2),
                time: Some(25462604.0),
                value: Some(Value::Float(22.9))
            },
            Record {
                path: Path::resource(72, 1, 2),
                time: Some(25462584.0),
                value: Some(Value::Float(24.1))
            },
        ]
    );
    // Written back in the spec's key order.
    let raw = from_json(text.as_bytes()).unwrap();
    assert_eq!(to_json(&raw).unwrap(), text.as_bytes());
}

#[test]
fn vd_is_written_base64url_unpadded_and_read_in_any_alphabet() {
    let node = Node::Resource {
        id: 3,
        value: ResourceValue::Single(Value::Opaque(vec![1, 2, 3, 4, 5])),
    };
    let json = encode(&node, Path::resource(0, 0, 3), ContentFormat::SenmlJson).unwrap();
    assert_eq!(json, br#"[{"bn":"/0/0/3","vd":"AQIDBAU"}]"#);
    for vd in ["AQIDBAU", "AQIDBAU=", "-_8", "+/8=", "+/8"] {
        let text = format!(r#"[{{"bn":"/0/0/3","vd":"{vd}"}}]"#);
        assert!(
            decode(
                text.as_bytes(),
                Path::resource(0, 0, 3),
                ContentFormat::SenmlJson,
                &types
            )
            .is_ok(),
            "{vd}"
        );
    }
    let mixed = r#"[{"bn":"/0/0/3","vd":"-/8"}]"#;
    assert!(
        decode(
            mixed.as_bytes(),
            Path::resource(0, 0, 3),
            ContentFormat::SenmlJson,
            &types
        )
        .is_err()
    );
}

#[test]
fn write_composite_decodes_flat() {
    let text = r#"[{"n":"/3311/0/5850", "vb":false},{"n":"/3311/1/5850", "vb":false},{"n":"/3311/2/5851", "v":20},{"n":"/3308/0/5900", "v":18}]"#;
    let no_types = |_: Path| Option::<DataType>::None;
    let root = Path::object(3311);
    // Records outside the target are refused...
    assert!(decode_flat(text.as_bytes(), root, ContentFormat::SenmlJson, &no_types).is_err());
    // ...but each record decodes on its own.
    let records = decode_json(text.as_bytes(), &no_types).unwrap();
    assert_eq!(records[2].value, Some(Value::Integer(20)));
    assert_eq!(records[3].path, Path::resource(3308, 0, 5900));
}

#[test]
fn read_composite_request_has_no_values() {
    let records =
        decode_json(br#"[{"n":"/3/0/0"},{"n":"/3/0/9"},{"n":"/1/0/1"}]"#, &types).unwrap();
    assert_eq!(
        records.iter().map(|r| r.path).collect::<Vec<_>>(),
        [
            Path::resource(3, 0, 0),
            Path::resource(3, 0, 9),
            Path::resource(1, 0, 1)
        ]
    );
    assert!(records.iter().all(|r| r.value.is_none()));
    assert!(
        decode_flat(
            br#"[{"n":"/3/0/0"}]"#,
            Path::object(3),
            ContentFormat::SenmlJson,
            &types
        )
        .is_err()
    );
}

#[test]
fn declared_types_are_enforced() {
    let write = |text: &str| {
        decode(
            text.as_bytes(),
            Path::instance(3, 0),
            ContentFormat::SenmlJson,
            &types,
        )
    };
    // Integral float for an Integer resource is accepted (CBOR writers shrink 100 to 100.0 at times).
    assert_eq!(
        write(r#"[{"n":"/3/0/9","v":100.0}]"#).unwrap(),
        Node::Instance {
            id: 0,
            resources: vec![(9, ResourceValue::Single(Value::Integer(100)))]
        }
    );
    for bad in [
        r#"[{"n":"/3/0/9","v":1.5}]"#,
        r#"[{"n":"/3/0/9","vs":"100"}]"#,
        r#"[{"n":"/3/0/0","v":1}]"#,
        r#"[{"n":"/3/0/9","v":1,"vs":"x"}]"#,
        r#"[{"n":"/3/0/9","v":1,"n":"/3/0/9"}]"#,
        r#"[{"n":"/3/0","v":1}]"#,
        r#"[{"n":"3/0/9","v":1}]"#,
        r#"[{"n":"/3//9","v":1}]"#,
        r#"[{"n":"/3/0/9","v":1,"x_":1}]"#,
        r#"{"n":"/3/0/9","v":1}"#,
        r#"[{"n":"/3/0/9","v":1}] x"#,
        r#"[{"n":"/3/0/9","v":"1"}]"#,
    ] {
        assert!(
            matches!(write(bad), Err(CodecError::Malformed { .. })),
            "{bad}"
        );
    }
    // Unknown fields that are not must-understand are ignored.
    assert!(write(r#"[{"n":"/3/0/9","v":1,"u":"%"}]"#).is_ok());
}

#[test]
fn cbor_refuses_trailing_bytes_and_wrong_shapes() {
    let mut vector = hex("81 A2 21 66 2F 30 2F 30 2F 33 08 43 AB CD EF");
    vector.push(0);
    assert!(decode_cbor(&vector, &types).is_err());
    assert!(decode_cbor(&hex("A0"), &types).is_err());
    assert!(decode_cbor(&hex("81 80"), &types).is_err());
    // Byte string claiming 4 GiB in a 10-byte payload.
    assert!(decode_cbor(&hex("81 A1 08 5A FF FF FF FF 00"), &types).is_err());
    // Array claiming 2^32 records.
    assert!(decode_cbor(&hex("9A FF FF FF FF A0"), &types).is_err());
}

#[test]
fn object_and_multiple_resource_round_trip_in_both_formats() {
    let object = Node::Object {
        id: 3,
        instances: vec![
            (0, crate::codec::fixtures::device_resources()),
            (1, vec![(9, ResourceValue::Single(Value::Integer(5)))]),
        ],
    };
    let multi = Node::Resource {
        id: 6,
        value: ResourceValue::Multiple(vec![(0, Value::Integer(1)), (1, Value::Integer(5))]),
    };
    for format in [ContentFormat::SenmlJson, ContentFormat::SenmlCbor] {
        let bytes = encode(&object, Path::object(3), format).unwrap();
        assert_eq!(
            decode(&bytes, Path::object(3), format, &types).unwrap(),
            object
        );
        let bytes = encode(&multi, Path::resource(3, 0, 6), format).unwrap();
        assert_eq!(
            decode(&bytes, Path::resource(3, 0, 6), format, &types).unwrap(),
            multi
        );
    }
    let json = encode(&multi, Path::resource(3, 0, 6), ContentFormat::SenmlJson).unwrap();
    assert_eq!(json, br#"[{"bn":"/3/0/6/","n":"0","v":1},{"n":"1","v":5}]"#);
}

#[test]
fn long_numbers_read_correctly_rounded_and_write_back_unchanged() {
    // Found by fuzz/senml_json: an integer too large for u64 is read as a float; without
    // serde_json's float_roundtrip it came out 1 ULP off, so reading back what was written
    // gave another number.
    let input = format!(r#"[{{"bn":"/3/0/","n":"9","v":1{}0}}]"#, "2".repeat(60));
    let exact: f64 = format!("1{}0", "2".repeat(60)).parse().unwrap();
    let first = from_json(input.as_bytes()).unwrap();
    assert_eq!(
        first[0].value,
        Some(SenmlValue::Number(Number::Float(exact)))
    );
    let written = to_json(&first).unwrap();
    assert_eq!(from_json(&written).unwrap(), first);
}
