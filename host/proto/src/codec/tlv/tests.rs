use super::*;
use crate::codec::fixtures::{device_instance, device_resources, device_tlv, hex, objlink, types};

#[test]
fn read_device_instance_is_the_121_byte_spec_vector() {
    let bytes = encode(&device_instance(), Path::instance(3, 0)).unwrap();
    assert_eq!(bytes.len(), 121);
    assert_eq!(bytes, device_tlv());
    assert_eq!(
        decode(&bytes, Path::instance(3, 0), &types).unwrap(),
        device_instance()
    );
}

#[test]
fn instance_at_object_path_is_wrapped_in_124_bytes() {
    let mut wrapped = hex("08 00 79");
    wrapped.extend(device_tlv());
    let bytes = encode(&device_instance(), Path::object(3)).unwrap();
    assert_eq!(bytes.len(), 124);
    assert_eq!(bytes, wrapped);
    // A Write to /3/0 may carry the wrapper too.
    assert_eq!(
        decode(&wrapped, Path::instance(3, 0), &types).unwrap(),
        device_instance()
    );
    // Read of /3 decodes as an object with one instance.
    assert_eq!(
        decode(&wrapped, Path::object(3), &types).unwrap(),
        Node::Object {
            id: 3,
            instances: vec![(0, device_resources())]
        }
    );
    // A wrapper naming another instance is refused.
    let mut other = hex("08 01 79");
    other.extend(device_tlv());
    assert!(matches!(
        decode(&other, Path::instance(3, 0), &types),
        Err(CodecError::Malformed { .. })
    ));
}

#[test]
fn single_resource_manufacturer() {
    let vector = hex("C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65");
    let node = Node::Resource {
        id: 0,
        value: ResourceValue::Single(Value::String("Open Mobile Alliance".into())),
    };
    assert_eq!(encode(&node, Path::resource(3, 0, 0)).unwrap(), vector);
    assert_eq!(
        decode(&vector, Path::resource(3, 0, 0), &types).unwrap(),
        node
    );
    // The same TLV sent to another resource is refused.
    assert!(decode(&vector, Path::resource(3, 0, 1), &types).is_err());
}

#[test]
fn multiple_resource_both_forms() {
    let node = Node::Resource {
        id: 6,
        value: ResourceValue::Multiple(vec![(0, Value::Integer(1)), (1, Value::Integer(5))]),
    };
    let wrapped = hex("86 06 41 00 01 41 01 05");
    assert_eq!(encode(&node, Path::resource(3, 0, 6)).unwrap(), wrapped);
    assert_eq!(
        decode(&wrapped, Path::resource(3, 0, 6), &types).unwrap(),
        node
    );
    assert_eq!(
        decode(&hex("41 00 01 41 01 05"), Path::resource(3, 0, 6), &types).unwrap(),
        node
    );
}

#[test]
fn resource_instance_alone() {
    let node = Node::ResourceInstance {
        id: 1,
        value: Value::Integer(5),
    };
    let bytes = hex("41 01 05");
    assert_eq!(
        encode(&node, Path::resource_instance(3, 0, 6, 1)).unwrap(),
        bytes
    );
    assert_eq!(
        decode(&bytes, Path::resource_instance(3, 0, 6, 1), &types).unwrap(),
        node
    );
    assert!(decode(&bytes, Path::resource_instance(3, 0, 6, 0), &types).is_err());
}

#[test]
fn access_control_object_with_16_bit_resource_instance_id() {
    let vector = hex("08 00 0E C1 00 01 C1 01 00 83 02 41 7F 07 C1 03 7F
         08 02 12 C1 00 03 C1 01 00 87 02 41 7F 07 61 01 36 01 C1 03 7F");
    let int = |v| ResourceValue::Single(Value::Integer(v));
    let node = Node::Object {
        id: 2,
        instances: vec![
            (
                0,
                vec![
                    (0, int(1)),
                    (1, int(0)),
                    (2, ResourceValue::Multiple(vec![(127, Value::Integer(7))])),
                    (3, int(127)),
                ],
            ),
            (
                2,
                vec![
                    (0, int(3)),
                    (1, int(0)),
                    (
                        2,
                        ResourceValue::Multiple(vec![
                            (127, Value::Integer(7)),
                            (310, Value::Integer(1)),
                        ]),
                    ),
                    (3, int(127)),
                ],
            ),
        ],
    };
    assert_eq!(vector.len(), 38);
    assert_eq!(encode(&node, Path::object(2)).unwrap(), vector);
    assert_eq!(decode(&vector, Path::object(2), &types).unwrap(), node);
}

#[test]
fn server_object() {
    let vector = hex("08 00 0F C1 00 01 C4 01 00 01 51 80 C1 06 01 C1 07 55");
    let node = Node::Object {
        id: 1,
        instances: vec![(
            0,
            vec![
                (0, ResourceValue::Single(Value::Integer(1))),
                (1, ResourceValue::Single(Value::Integer(86400))),
                (6, ResourceValue::Single(Value::Boolean(true))),
                (7, ResourceValue::Single(Value::String("U".into()))),
            ],
        )],
    };
    assert_eq!(encode(&node, Path::object(1)).unwrap(), vector);
    assert_eq!(decode(&vector, Path::object(1), &types).unwrap(), node);
}

#[test]
fn object_links_65_and_66() {
    let v65 = hex(
        "88 00 0C 44 00 00 42 00 00 44 01 00 42 00 01 C8 01 0D 38 36 31 33 38 30 30 37 35 35 35 30 30
         C4 02 12 34 56 78",
    );
    let n65 = Node::Instance {
        id: 0,
        resources: vec![
            (
                0,
                ResourceValue::Multiple(vec![(0, objlink(66, 0)), (1, objlink(66, 1))]),
            ),
            (
                1,
                ResourceValue::Single(Value::String("8613800755500".into())),
            ),
            (2, ResourceValue::Single(Value::Integer(305419896))),
        ],
    };
    assert_eq!(encode(&n65, Path::instance(65, 0)).unwrap(), v65);
    assert_eq!(decode(&v65, Path::instance(65, 0), &types).unwrap(), n65);

    let v66 = hex(
        "08 00 26 C8 00 0B 6D 79 53 65 72 76 69 63 65 20 31 C8 01 0F 49 6E 74 65 72 6E 65 74 2E 31 35 2E 32 33 34 C4 02 00 43
         00 00 08 01 26 C8 00 0B 6D 79 53 65 72 76 69 63 65 20 32 C8 01 0F 49 6E 74 65 72 6E 65 74 2E 31 35 2E 32 33 35 C4 02
         FF FF FF FF",
    );
    let inst = |name: &str, apn: &str, link: Value| {
        vec![
            (0, ResourceValue::Single(Value::String(name.into()))),
            (1, ResourceValue::Single(Value::String(apn.into()))),
            (2, ResourceValue::Single(link)),
        ]
    };
    let n66 = Node::Object {
        id: 66,
        instances: vec![
            (0, inst("myService 1", "Internet.15.234", objlink(67, 0))),
            (
                1,
                inst("myService 2", "Internet.15.235", objlink(65535, 65535)),
            ),
        ],
    };
    assert_eq!(encode(&n66, Path::object(66)).unwrap(), v66);
    assert_eq!(decode(&v66, Path::object(66), &types).unwrap(), n66);
}

#[test]
fn values_use_the_smallest_width_and_round_trip() {
    assert_eq!(encode_value(&Value::Integer(127)), [0x7F]);
    assert_eq!(encode_value(&Value::Integer(128)), [0x00, 0x80]);
    assert_eq!(encode_value(&Value::Integer(-129)), [0xFF, 0x7F]);
    assert_eq!(encode_value(&Value::Integer(1 << 40)).len(), 8);
    assert_eq!(encode_value(&Value::Unsigned(255)), [0xFF]);
    assert_eq!(encode_value(&Value::Float(1.5)), 1.5f32.to_be_bytes());
    assert_eq!(encode_value(&Value::Float(0.1)), 0.1f64.to_be_bytes());
    for (v, t) in [
        (Value::Integer(i64::MIN), DataType::Integer),
        (Value::Integer(-70000), DataType::Integer),
        (Value::Unsigned(u64::MAX), DataType::Unsigned),
        (Value::Unsigned(40000), DataType::Unsigned),
        (Value::Float(-2.25), DataType::Float),
        (Value::Float(0.1), DataType::Float),
        (Value::Boolean(false), DataType::Boolean),
        (Value::Time(-1), DataType::Time),
        (Value::Opaque(vec![0, 1, 2]), DataType::Opaque),
        (Value::CoreLink("</3/0>".into()), DataType::CoreLink),
    ] {
        assert_eq!(decode_value(&encode_value(&v), t).unwrap(), v);
    }
}

#[test]
fn bad_values_are_refused() {
    assert!(decode_value(&[0, 0, 0], DataType::Integer).is_err());
    assert!(decode_value(&[0; 9], DataType::Integer).is_err());
    assert!(decode_value(&[2], DataType::Boolean).is_err());
    assert!(decode_value(&[0, 0], DataType::Boolean).is_err());
    assert!(decode_value(&[0, 0], DataType::Float).is_err());
    assert!(decode_value(&[0, 0, 0], DataType::ObjLink).is_err());
    assert!(decode_value(&[0xFF, 0xFE], DataType::String).is_err());
    assert!(decode_value(&[], DataType::None).is_err());
}

#[test]
fn hostile_structure_is_refused() {
    // 24-bit length of 16 MiB with 1 byte of value.
    assert!(parse_entries(&[0xD8, 0x00, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    // Length field cut short.
    assert!(parse_entries(&[0xD0, 0x00, 0x01]).is_err());
    // 16-bit identifier cut short.
    assert!(parse_entries(&[0xE1, 0x00]).is_err());
    // Duplicate resource ids.
    assert!(decode(&hex("C1 09 64 C1 09 65"), Path::instance(3, 0), &types).is_err());
    // A resource instance where resources belong.
    assert!(decode(&hex("41 09 64"), Path::instance(3, 0), &types).is_err());
    // Instances must wrap an object payload.
    assert!(decode(&hex("C1 09 64"), Path::object(3), &types).is_err());
    // Unknown resource is reported as such.
    assert_eq!(
        decode(&hex("C1 63 01"), Path::instance(3, 0), &types),
        Err(CodecError::UnknownResource(Path::resource(3, 0, 99)))
    );
}

#[test]
fn create_with_and_without_instance_id() {
    let with_id = decode_create(&hex("08 05 03 C1 09 64"), 3, &types).unwrap();
    assert_eq!(
        with_id,
        vec![CreateInstance {
            id: Some(5),
            resources: vec![(9, ResourceValue::Single(Value::Integer(100)))]
        }]
    );
    let without = decode_create(&hex("C1 09 64"), 3, &types).unwrap();
    assert_eq!(
        without,
        vec![CreateInstance {
            id: None,
            resources: vec![(9, ResourceValue::Single(Value::Integer(100)))]
        }]
    );
}

#[test]
fn node_must_fit_its_base() {
    let node = Node::Resource {
        id: 0,
        value: ResourceValue::Single(Value::Integer(1)),
    };
    assert!(matches!(
        encode(&node, Path::object(3)),
        Err(CodecError::PathMismatch(_))
    ));
    assert!(matches!(
        encode(&device_instance(), Path::instance(3, 1)),
        Err(CodecError::PathMismatch(_))
    ));
}

#[test]
fn sixteen_bit_ids_and_long_values_use_wider_fields() {
    let long = "x".repeat(300);
    let node = Node::Resource {
        id: 300,
        value: ResourceValue::Single(Value::String(long.clone())),
    };
    let bytes = encode(&node, Path::resource(3, 0, 300)).unwrap();
    assert_eq!(&bytes[..5], &[0xF0, 0x01, 0x2C, 0x01, 0x2C]);
    let t = |_: Path| Some(DataType::String);
    assert_eq!(decode(&bytes, Path::resource(3, 0, 300), &t).unwrap(), node);
}
