//! Test data shared by the codec tests: the spec's Device /3/0 example and a
//! type table for the objects the spec vectors use.

use crate::model::{DataType, Node, ObjLink, Path, ResourceValue, Value};

/// Parses a hex dump with spaces and newlines.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(digits).unwrap()
}

/// Resource types of objects 1, 2, 3, 65, 66 as the reference vectors use them.
pub(crate) fn types(path: Path) -> Option<DataType> {
    use DataType::{Boolean, Float, Integer, ObjLink, Opaque, String, Time};
    Some(match (path.object, path.resource?) {
        (1, 0 | 1) => Integer,
        (1, 6) => Boolean,
        (1, 7) => String,
        (2, 0..=3) => Integer,
        (3, 0..=3 | 14..=16) => String,
        (3, 6..=11) => Integer,
        (3, 13) => Time,
        (65, 0) => ObjLink,
        (65, 1) => String,
        (65, 2) => Integer,
        (66, 0 | 1) => String,
        (66, 2) => ObjLink,
        (67, 0 | 1) => String,
        (0, 3) => Opaque,
        (3442, 130) => Float,
        _ => return Option::None,
    })
}

fn s(v: &str) -> ResourceValue {
    ResourceValue::Single(Value::String(v.into()))
}
fn i(v: i64) -> ResourceValue {
    ResourceValue::Single(Value::Integer(v))
}
fn multi(items: &[(u16, i64)]) -> ResourceValue {
    ResourceValue::Multiple(
        items
            .iter()
            .map(|(id, v)| (*id, Value::Integer(*v)))
            .collect(),
    )
}

/// The Device instance of Core 1.1 Table 7.4.3-x / 7.4.4-2.
pub(crate) fn device_resources() -> Vec<(u16, ResourceValue)> {
    vec![
        (0, s("Open Mobile Alliance")),
        (1, s("Lightweight M2M Client")),
        (2, s("345000123")),
        (3, s("1.0")),
        (6, multi(&[(0, 1), (1, 5)])),
        (7, multi(&[(0, 3800), (1, 5000)])),
        (8, multi(&[(0, 125), (1, 900)])),
        (9, i(100)),
        (10, i(15)),
        (11, multi(&[(0, 0)])),
        (13, ResourceValue::Single(Value::Time(1367491215))),
        (14, s("+02:00")),
        (16, s("U")),
    ]
}

pub(crate) fn device_instance() -> Node {
    Node::Instance {
        id: 0,
        resources: device_resources(),
    }
}

pub(crate) fn objlink(object: u16, instance: u16) -> Value {
    Value::ObjLink(ObjLink { object, instance })
}

pub(crate) fn device_tlv() -> Vec<u8> {
    hex(
        "C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
         C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
         C8 02 09 33 34 35 30 30 30 31 32 33
         C3 03 31 2E 30
         86 06 41 00 01 41 01 05
         88 07 08 42 00 0E D8 42 01 13 88
         87 08 41 00 7D 42 01 03 84
         C1 09 64
         C1 0A 0F
         83 0B 41 00 00
         C4 0D 51 82 42 8F
         C6 0E 2B 30 32 3A 30 30
         C1 10 55",
    )
}
