//! Plain CBOR (CF 60, listed in Core 1.1.1 Table 7.4-2): one value per
//! payload, like text/plain, as one CBOR data item.
//!
//! Integer/Time -> CBOR integer, Unsigned -> unsigned integer, Float -> the
//! shortest lossless float, Boolean -> true/false, String/Corelnk -> text,
//! Opaque -> byte string, Objlnk -> text `"oid:iid"`. Time is read from an
//! integer with or without tag 1 (epoch date/time, RFC 8949 §3.4.2).

use ciborium::Value as Cbor;

use super::text::parse_objlink;
use super::{CodecError, ResourceTypes, resource_path};
use crate::model::{ContentFormat, DataType, Node, Path, ResourceValue, Value};

const FORMAT: ContentFormat = ContentFormat::Cbor;

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::malformed(FORMAT, reason)
}

/// Encodes one value as a CBOR data item.
pub fn encode_value(value: &Value) -> Result<Vec<u8>, CodecError> {
    let item = match value {
        Value::String(s) | Value::CoreLink(s) => Cbor::Text(s.clone()),
        Value::Integer(i) | Value::Time(i) => Cbor::Integer((*i).into()),
        Value::Unsigned(u) => Cbor::Integer((*u).into()),
        Value::Float(f) => Cbor::Float(*f),
        Value::Boolean(b) => Cbor::Bool(*b),
        Value::Opaque(bytes) => Cbor::Bytes(bytes.clone()),
        Value::ObjLink(link) => Cbor::Text(format!("{}:{}", link.object, link.instance)),
    };
    let mut out = Vec::new();
    ciborium::into_writer(&item, &mut out).map_err(|_| CodecError::NotRepresentable {
        format: FORMAT,
        what: "this value",
    })?;
    Ok(out)
}

/// Decodes one CBOR data item as `data_type`; trailing bytes are refused.
pub fn decode_value(bytes: &[u8], data_type: DataType) -> Result<Value, CodecError> {
    let mut reader = bytes;
    let item: Cbor = ciborium::from_reader(&mut reader).map_err(|e| malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(malformed("trailing bytes after the value"));
    }
    let mismatch = || malformed(format!("CBOR item does not fit type {data_type:?}"));
    let int = |item: &Cbor| match item {
        Cbor::Integer(i) => i64::try_from(i128::from(*i)).ok(),
        _ => None,
    };
    Ok(match (data_type, item) {
        (DataType::String, Cbor::Text(s)) => Value::String(s),
        (DataType::CoreLink, Cbor::Text(s)) => Value::CoreLink(s),
        (DataType::Integer, ref i) => Value::Integer(int(i).ok_or_else(mismatch)?),
        (DataType::Time, Cbor::Tag(1, inner)) => Value::Time(int(&inner).ok_or_else(mismatch)?),
        (DataType::Time, ref i) => Value::Time(int(i).ok_or_else(mismatch)?),
        (DataType::Unsigned, Cbor::Integer(i)) => {
            Value::Unsigned(u64::try_from(i128::from(i)).map_err(|_| mismatch())?)
        }
        (DataType::Float, Cbor::Float(f)) => Value::Float(f),
        // A writer may shrink 3.0 to the integer 3.
        (DataType::Float, Cbor::Integer(i)) => Value::Float(i128::from(i) as f64),
        (DataType::Boolean, Cbor::Bool(b)) => Value::Boolean(b),
        (DataType::Opaque, Cbor::Bytes(b)) => Value::Opaque(b),
        (DataType::ObjLink, Cbor::Text(s)) => {
            Value::ObjLink(parse_objlink(&s).ok_or_else(mismatch)?)
        }
        (DataType::None, _) => return Err(malformed("an executable resource carries no value")),
        _ => return Err(mismatch()),
    })
}

/// Encodes a single resource or resource instance as CBOR.
pub fn encode_node(node: &Node) -> Result<Vec<u8>, CodecError> {
    match node {
        Node::Resource {
            value: ResourceValue::Single(v),
            ..
        }
        | Node::ResourceInstance { value: v, .. } => encode_value(v),
        _ => Err(CodecError::NotRepresentable {
            format: FORMAT,
            what: "more than one value",
        }),
    }
}

/// Decodes a CBOR Write aimed at a resource or resource instance `base`.
pub fn decode_node(
    bytes: &[u8],
    base: Path,
    types: &dyn ResourceTypes,
) -> Result<Node, CodecError> {
    let Some(rid) = base.resource else {
        return Err(CodecError::NotRepresentable {
            format: FORMAT,
            what: "an object or instance",
        });
    };
    let path = resource_path(base);
    let data_type = types
        .data_type(path)
        .ok_or(CodecError::UnknownResource(path))?;
    let value = decode_value(bytes, data_type)?;
    Ok(match base.resource_instance {
        Some(ri) => Node::ResourceInstance { id: ri, value },
        None => Node::Resource {
            id: rid,
            value: ResourceValue::Single(value),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::fixtures::{hex, objlink, types};

    #[test]
    fn values_round_trip_with_minimal_heads() {
        assert_eq!(encode_value(&Value::Integer(100)).unwrap(), hex("18 64"));
        assert_eq!(encode_value(&Value::Integer(-1)).unwrap(), hex("20"));
        assert_eq!(encode_value(&Value::Float(300.0)).unwrap(), hex("F9 5C B0"));
        assert_eq!(encode_value(&Value::Boolean(true)).unwrap(), hex("F5"));
        assert_eq!(
            encode_value(&Value::String("U".into())).unwrap(),
            hex("61 55")
        );
        assert_eq!(
            encode_value(&Value::Opaque(vec![0xAB])).unwrap(),
            hex("41 AB")
        );
        assert_eq!(
            encode_value(&objlink(66, 0)).unwrap(),
            hex("64 36 36 3A 30")
        );
        for (v, t) in [
            (Value::Integer(i64::MIN), DataType::Integer),
            (Value::Unsigned(u64::MAX), DataType::Unsigned),
            (Value::Float(0.1), DataType::Float),
            (Value::Time(1367491215), DataType::Time),
            (objlink(65535, 65535), DataType::ObjLink),
            (Value::CoreLink("</3>".into()), DataType::CoreLink),
        ] {
            assert_eq!(decode_value(&encode_value(&v).unwrap(), t).unwrap(), v);
        }
    }

    #[test]
    fn time_accepts_tag_1_and_mismatches_are_refused() {
        assert_eq!(
            decode_value(&hex("C1 1A 51 82 42 8F"), DataType::Time).unwrap(),
            Value::Time(1367491215)
        );
        assert_eq!(
            decode_value(&hex("03"), DataType::Float).unwrap(),
            Value::Float(3.0)
        );
        for (bytes, t) in [
            ("61 55", DataType::Integer),
            ("20", DataType::Unsigned),
            ("F5", DataType::String),
            ("18 64 00", DataType::Integer),
            ("18", DataType::Integer),
            ("1B FF FF FF FF FF FF FF FF", DataType::Integer),
            ("63 36 36 30", DataType::ObjLink),
            ("00", DataType::None),
        ] {
            assert!(
                matches!(
                    decode_value(&hex(bytes), t),
                    Err(CodecError::Malformed { .. })
                ),
                "{bytes}"
            );
        }
    }

    #[test]
    fn nodes_carry_one_value() {
        let node = decode_node(&hex("18 64"), Path::resource(3, 0, 9), &types).unwrap();
        assert_eq!(
            node,
            Node::Resource {
                id: 9,
                value: ResourceValue::Single(Value::Integer(100))
            }
        );
        assert_eq!(encode_node(&node).unwrap(), hex("18 64"));
        assert!(decode_node(&hex("18 64"), Path::instance(3, 0), &types).is_err());
        assert!(
            encode_node(&Node::Instance {
                id: 0,
                resources: vec![]
            })
            .is_err()
        );
    }
}
