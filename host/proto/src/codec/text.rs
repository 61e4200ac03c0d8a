//! text/plain (CF 0) and opaque (CF 42): one value per payload, for a single
//! resource or one resource instance (OMA issue #489; reference §7).

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use super::{CodecError, ResourceTypes, resource_path};
use crate::model::{ContentFormat, DataType, Node, ObjLink, Path, ResourceValue, Value};

/// Standard alphabet, padding optional when reading (Core 1.1 Table C.2 writes it).
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::malformed(ContentFormat::Text, reason)
}

/// Encodes one value as text (Core 1.1 Appendix C, reference §7).
pub fn encode_value(value: &Value) -> Result<String, CodecError> {
    Ok(match value {
        Value::String(s) | Value::CoreLink(s) => s.clone(),
        Value::Integer(i) | Value::Time(i) => i.to_string(),
        Value::Unsigned(u) => u.to_string(),
        Value::Float(f) if f.is_finite() => f.to_string(),
        Value::Float(_) => {
            return Err(CodecError::NotRepresentable {
                format: ContentFormat::Text,
                what: "a non-finite float",
            });
        }
        // Leshan rejects "true"/"false": only 0 and 1 interoperate.
        Value::Boolean(b) => if *b { "1" } else { "0" }.to_owned(),
        Value::Opaque(bytes) => STANDARD.encode(bytes),
        Value::ObjLink(link) => format!("{}:{}", link.object, link.instance),
    })
}

/// Decodes one value of `data_type` from text.
pub fn decode_value(bytes: &[u8], data_type: DataType) -> Result<Value, CodecError> {
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("text is not UTF-8"))?;
    let bad = || malformed(format!("{text:?} is not a valid {data_type:?}"));
    Ok(match data_type {
        DataType::String => Value::String(text.to_owned()),
        DataType::CoreLink => Value::CoreLink(text.to_owned()),
        DataType::Integer => Value::Integer(text.parse().map_err(|_| bad())?),
        DataType::Time => Value::Time(text.parse().map_err(|_| bad())?),
        DataType::Unsigned => Value::Unsigned(text.parse().map_err(|_| bad())?),
        DataType::Float => {
            // Rust also parses "inf" and "NaN": neither is a number LwM2M can carry.
            let f: f64 = text.parse().map_err(|_| bad())?;
            if !f.is_finite() {
                return Err(bad());
            }
            Value::Float(f)
        }
        DataType::Boolean => match text {
            "0" => Value::Boolean(false),
            "1" => Value::Boolean(true),
            _ => return Err(bad()),
        },
        DataType::Opaque => Value::Opaque(STANDARD_LENIENT.decode(text).map_err(|_| bad())?),
        DataType::ObjLink => Value::ObjLink(parse_objlink(text).ok_or_else(bad)?),
        DataType::None => return Err(malformed("an executable resource carries no value")),
    })
}

/// Parses `oid:iid` in decimal (Core 1.1 Appendix C; `65535:65535` is the null link).
pub fn parse_objlink(text: &str) -> Option<ObjLink> {
    let (object, instance) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(object) || !digits(instance) {
        return None;
    }
    Some(ObjLink {
        object: object.parse().ok()?,
        instance: instance.parse().ok()?,
    })
}

/// The single value a text or opaque payload can carry, or why there is none.
fn single_value(node: &Node, format: ContentFormat) -> Result<&Value, CodecError> {
    match node {
        Node::Resource {
            value: ResourceValue::Single(v),
            ..
        }
        | Node::ResourceInstance { value: v, .. } => Ok(v),
        _ => Err(CodecError::NotRepresentable {
            format,
            what: "more than one value",
        }),
    }
}

/// Encodes a single resource or resource instance as text/plain.
pub fn encode_node(node: &Node) -> Result<Vec<u8>, CodecError> {
    Ok(encode_value(single_value(node, ContentFormat::Text)?)?.into_bytes())
}

/// Decodes a text/plain Write aimed at a resource or resource instance `base`.
pub fn decode_node(
    bytes: &[u8],
    base: Path,
    types: &dyn ResourceTypes,
) -> Result<Node, CodecError> {
    let data_type = target_type(base, types, ContentFormat::Text)?;
    wrap(base, decode_value(bytes, data_type)?)
}

/// Encodes an Opaque single resource or resource instance as raw bytes (CF 42).
pub fn encode_opaque_node(node: &Node) -> Result<Vec<u8>, CodecError> {
    match single_value(node, ContentFormat::Opaque)? {
        Value::Opaque(bytes) => Ok(bytes.clone()),
        _ => Err(CodecError::NotRepresentable {
            format: ContentFormat::Opaque,
            what: "a value that is not Opaque",
        }),
    }
}

/// Decodes an opaque (CF 42) Write: raw bytes, only for Opaque resources
/// (reference §7); any other resource type is answered 4.15 by the caller.
pub fn decode_opaque_node(
    bytes: &[u8],
    base: Path,
    types: &dyn ResourceTypes,
) -> Result<Node, CodecError> {
    match target_type(base, types, ContentFormat::Opaque)? {
        DataType::Opaque => wrap(base, Value::Opaque(bytes.to_vec())),
        _ => Err(CodecError::Unsupported(ContentFormat::Opaque)),
    }
}

fn target_type(
    base: Path,
    types: &dyn ResourceTypes,
    format: ContentFormat,
) -> Result<DataType, CodecError> {
    if base.resource.is_none() {
        return Err(CodecError::NotRepresentable {
            format,
            what: "an object or instance",
        });
    }
    let path = resource_path(base);
    types
        .data_type(path)
        .ok_or(CodecError::UnknownResource(path))
}

fn wrap(base: Path, value: Value) -> Result<Node, CodecError> {
    match (base.resource, base.resource_instance) {
        (_, Some(ri)) => Ok(Node::ResourceInstance { id: ri, value }),
        (Some(r), None) => Ok(Node::Resource {
            id: r,
            value: ResourceValue::Single(value),
        }),
        (None, None) => Err(CodecError::PathMismatch(base)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::fixtures::types;

    #[test]
    fn values_encode_as_the_reference_says() {
        assert_eq!(encode_value(&Value::Integer(-5)).unwrap(), "-5");
        assert_eq!(encode_value(&Value::Float(22.4)).unwrap(), "22.4");
        assert_eq!(encode_value(&Value::Boolean(true)).unwrap(), "1");
        assert_eq!(encode_value(&Value::Boolean(false)).unwrap(), "0");
        assert_eq!(
            encode_value(&Value::Time(1476186613)).unwrap(),
            "1476186613"
        );
        assert_eq!(
            encode_value(&Value::ObjLink(ObjLink {
                object: 66,
                instance: 0
            }))
            .unwrap(),
            "66:0"
        );
        assert_eq!(
            encode_value(&Value::Opaque(vec![1, 2, 3, 4, 5])).unwrap(),
            "AQIDBAU="
        );
        assert!(encode_value(&Value::Float(f64::NAN)).is_err());
    }

    #[test]
    fn values_decode_per_type() {
        assert_eq!(
            decode_value(b"3600", DataType::Integer).unwrap(),
            Value::Integer(3600)
        );
        assert_eq!(
            decode_value(b"-5", DataType::Integer).unwrap(),
            Value::Integer(-5)
        );
        assert_eq!(
            decode_value(b"2.5e1", DataType::Float).unwrap(),
            Value::Float(25.0)
        );
        assert_eq!(
            decode_value(b"1", DataType::Boolean).unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            decode_value(b"AQIDBAU=", DataType::Opaque).unwrap(),
            Value::Opaque(vec![1, 2, 3, 4, 5])
        );
        assert_eq!(
            decode_value(b"AQIDBAU", DataType::Opaque).unwrap(),
            Value::Opaque(vec![1, 2, 3, 4, 5])
        );
        assert_eq!(
            decode_value(b"65535:65535", DataType::ObjLink).unwrap(),
            Value::ObjLink(ObjLink {
                object: 65535,
                instance: 65535
            })
        );
        for (text, t) in [
            (&b"true"[..], DataType::Boolean),
            (b"2", DataType::Boolean),
            (b"1.5", DataType::Integer),
            (b"-1", DataType::Unsigned),
            (b"inf", DataType::Float),
            (b"NaN", DataType::Float),
            (b"66", DataType::ObjLink),
            (b"66:+1", DataType::ObjLink),
            (b"70000:0", DataType::ObjLink),
            (b"AQ-D", DataType::Opaque),
            (b"\xFF", DataType::String),
            (b"1", DataType::None),
        ] {
            assert!(
                matches!(decode_value(text, t), Err(CodecError::Malformed { .. })),
                "{text:?} as {t:?}"
            );
        }
    }

    #[test]
    fn nodes_carry_one_value() {
        let node = decode_node(b"100", Path::resource(3, 0, 9), &types).unwrap();
        assert_eq!(
            node,
            Node::Resource {
                id: 9,
                value: ResourceValue::Single(Value::Integer(100))
            }
        );
        assert_eq!(encode_node(&node).unwrap(), b"100");
        let ri = decode_node(b"7", Path::resource_instance(3, 0, 6, 1), &types).unwrap();
        assert_eq!(
            ri,
            Node::ResourceInstance {
                id: 1,
                value: Value::Integer(7)
            }
        );
        assert!(matches!(
            decode_node(b"1", Path::instance(3, 0), &types),
            Err(CodecError::NotRepresentable { .. })
        ));
        assert_eq!(
            decode_node(b"1", Path::resource(3, 0, 99), &types),
            Err(CodecError::UnknownResource(Path::resource(3, 0, 99)))
        );
        let instance = Node::Instance {
            id: 0,
            resources: vec![],
        };
        assert!(matches!(
            encode_node(&instance),
            Err(CodecError::NotRepresentable { .. })
        ));
    }

    #[test]
    fn opaque_is_raw_and_only_for_opaque_resources() {
        let node = decode_opaque_node(&[0, 0xFF], Path::resource(0, 0, 3), &types).unwrap();
        assert_eq!(
            node,
            Node::Resource {
                id: 3,
                value: ResourceValue::Single(Value::Opaque(vec![0, 0xFF]))
            }
        );
        assert_eq!(encode_opaque_node(&node).unwrap(), vec![0, 0xFF]);
        assert_eq!(
            decode_opaque_node(b"x", Path::resource(3, 0, 0), &types),
            Err(CodecError::Unsupported(ContentFormat::Opaque))
        );
        let string = Node::Resource {
            id: 0,
            value: ResourceValue::Single(Value::String("x".into())),
        };
        assert!(encode_opaque_node(&string).is_err());
    }
}
