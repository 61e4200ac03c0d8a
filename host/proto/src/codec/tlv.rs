//! OMA-TLV (CF 11542), Core 1.1 §7.4.3: `type | id (1-2 B) | length (0-3 B) | value`.
//!
//! TLV carries no value types, so decoding needs a [`ResourceTypes`] lookup.
//! Integers are written in the smallest of 1, 2, 4 or 8 bytes, floats in 4
//! bytes when that loses nothing, else 8 (Core 1.1 Appendix C).

use super::assemble::{CreateInstance, node_path};
use super::{CodecError, ResourceTypes};
use crate::model::{ContentFormat, DataType, Node, ObjLink, Path, ResourceValue, Value};

const FORMAT: ContentFormat = ContentFormat::Tlv;
/// Largest value a 24-bit length field can describe.
const MAX_LEN: usize = 0xFF_FFFF;

/// The identifier type, bits 7-6 of the type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `00`: value is resource TLVs.
    ObjectInstance,
    /// `01`: one instance inside a multiple resource.
    ResourceInstance,
    /// `10`: value is resource-instance TLVs.
    MultipleResource,
    /// `11`: value is the resource's value.
    Resource,
}

impl Kind {
    const fn bits(self) -> u8 {
        match self {
            Kind::ObjectInstance => 0b00,
            Kind::ResourceInstance => 0b01,
            Kind::MultipleResource => 0b10,
            Kind::Resource => 0b11,
        }
    }
}

/// One parsed TLV entry, borrowing its value from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// What the entry identifies.
    pub kind: Kind,
    /// Its identifier.
    pub id: u16,
    /// Its value bytes (nested TLVs for instances and multiple resources).
    pub value: &'a [u8],
}

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::malformed(FORMAT, reason)
}

/// Splits a payload into its top-level entries. Every length is checked
/// against the bytes that remain, so hostile lengths fail cleanly.
pub fn parse_entries(bytes: &[u8]) -> Result<Vec<Entry<'_>>, CodecError> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while let Some((&type_byte, after_type)) = rest.split_first() {
        let kind = match type_byte >> 6 {
            0b00 => Kind::ObjectInstance,
            0b01 => Kind::ResourceInstance,
            0b10 => Kind::MultipleResource,
            _ => Kind::Resource,
        };
        let id_len = if type_byte & 0x20 != 0 { 2 } else { 1 };
        let len_len = usize::from((type_byte >> 3) & 0b11);
        let (id_bytes, after_id) = take(after_type, id_len, "identifier")?;
        let id = id_bytes
            .iter()
            .fold(0u16, |acc, b| (acc << 8) | u16::from(*b));
        let (len_bytes, after_len) = take(after_id, len_len, "length field")?;
        let len = if len_len == 0 {
            usize::from(type_byte & 0b111)
        } else {
            len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let (value, after_value) = take(after_len, len, "value")?;
        entries.push(Entry { kind, id, value });
        rest = after_value;
    }
    Ok(entries)
}

fn take<'a>(bytes: &'a [u8], n: usize, what: &str) -> Result<(&'a [u8], &'a [u8]), CodecError> {
    if bytes.len() < n {
        return Err(malformed(format!(
            "{what} runs past the end of the payload"
        )));
    }
    Ok(bytes.split_at(n))
}

/// Appends one entry with the shortest identifier and length fields.
fn write_entry(out: &mut Vec<u8>, kind: Kind, id: u16, value: &[u8]) -> Result<(), CodecError> {
    let mut type_byte = kind.bits() << 6;
    if id > 0xFF {
        type_byte |= 0x20;
    }
    let len = value.len();
    let len_bytes: &[u8] = &(len as u32).to_be_bytes();
    let len_field = match len {
        0..=7 => {
            type_byte |= len as u8;
            &[][..]
        }
        8..=0xFF => {
            type_byte |= 0b01 << 3;
            &len_bytes[3..]
        }
        0x100..=0xFFFF => {
            type_byte |= 0b10 << 3;
            &len_bytes[2..]
        }
        0x1_0000..=MAX_LEN => {
            type_byte |= 0b11 << 3;
            &len_bytes[1..]
        }
        _ => {
            return Err(CodecError::NotRepresentable {
                format: FORMAT,
                what: "a value over 16 MiB",
            });
        }
    };
    out.push(type_byte);
    if id > 0xFF {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(len_field);
    out.extend_from_slice(value);
    Ok(())
}

/// Encodes a value's bytes (Core 1.1 Appendix C).
pub fn encode_value(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) | Value::CoreLink(s) => s.as_bytes().to_vec(),
        Value::Integer(i) | Value::Time(i) => encode_int(*i),
        Value::Unsigned(u) => encode_uint(*u),
        Value::Float(f) => {
            let narrow = *f as f32;
            if f64::from(narrow).to_bits() == f.to_bits() {
                narrow.to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        Value::Boolean(b) => vec![u8::from(*b)],
        Value::Opaque(bytes) => bytes.clone(),
        Value::ObjLink(link) => {
            let mut out = link.object.to_be_bytes().to_vec();
            out.extend_from_slice(&link.instance.to_be_bytes());
            out
        }
    }
}

fn encode_int(i: i64) -> Vec<u8> {
    if let Ok(v) = i8::try_from(i) {
        v.to_be_bytes().to_vec()
    } else if let Ok(v) = i16::try_from(i) {
        v.to_be_bytes().to_vec()
    } else if let Ok(v) = i32::try_from(i) {
        v.to_be_bytes().to_vec()
    } else {
        i.to_be_bytes().to_vec()
    }
}

fn encode_uint(u: u64) -> Vec<u8> {
    if let Ok(v) = u8::try_from(u) {
        vec![v]
    } else if let Ok(v) = u16::try_from(u) {
        v.to_be_bytes().to_vec()
    } else if let Ok(v) = u32::try_from(u) {
        v.to_be_bytes().to_vec()
    } else {
        u.to_be_bytes().to_vec()
    }
}

/// Decodes a value's bytes as `data_type` (Core 1.1 Appendix C; widths as Leshan accepts).
pub fn decode_value(bytes: &[u8], data_type: DataType) -> Result<Value, CodecError> {
    let wrong_len = || {
        malformed(format!(
            "{} bytes is not a valid {data_type:?}",
            bytes.len()
        ))
    };
    Ok(match data_type {
        DataType::String => Value::String(utf8(bytes)?),
        DataType::CoreLink => Value::CoreLink(utf8(bytes)?),
        DataType::Opaque => Value::Opaque(bytes.to_vec()),
        DataType::Integer => Value::Integer(decode_int(bytes).ok_or_else(wrong_len)?),
        DataType::Time => Value::Time(decode_int(bytes).ok_or_else(wrong_len)?),
        DataType::Unsigned => Value::Unsigned(match *bytes {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_be_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ => return Err(wrong_len()),
        }),
        DataType::Float => Value::Float(match *bytes {
            [a, b, c, d] => f64::from(f32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => f64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ => return Err(wrong_len()),
        }),
        DataType::Boolean => Value::Boolean(match *bytes {
            [0] => false,
            [1] => true,
            _ => return Err(malformed("boolean must be one byte 0 or 1")),
        }),
        DataType::ObjLink => match *bytes {
            [a, b, c, d] => Value::ObjLink(ObjLink {
                object: u16::from_be_bytes([a, b]),
                instance: u16::from_be_bytes([c, d]),
            }),
            _ => return Err(wrong_len()),
        },
        DataType::None => return Err(malformed("an executable resource carries no value")),
    })
}

fn decode_int(bytes: &[u8]) -> Option<i64> {
    Some(match *bytes {
        [a] => i64::from(i8::from_be_bytes([a])),
        [a, b] => i64::from(i16::from_be_bytes([a, b])),
        [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => return None,
    })
}

fn utf8(bytes: &[u8]) -> Result<String, CodecError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not UTF-8"))
}

/// Encodes `node` at `base` (its own path, or for an instance also its
/// object's path). An instance at its own path is bare resource TLVs (Read
/// `/3/0`); at the object path it is wrapped in an Object Instance TLV.
pub fn encode(node: &Node, base: Path) -> Result<Vec<u8>, CodecError> {
    node_path(node, base)?;
    let mut out = Vec::new();
    match node {
        Node::Object { instances, .. } => {
            for (iid, resources) in instances {
                write_entry(
                    &mut out,
                    Kind::ObjectInstance,
                    *iid,
                    &encode_resources(resources)?,
                )?;
            }
        }
        Node::Instance { id, resources } => {
            let inner = encode_resources(resources)?;
            if base.instance.is_none() {
                write_entry(&mut out, Kind::ObjectInstance, *id, &inner)?;
            } else {
                out = inner;
            }
        }
        Node::Resource { id, value } => write_resource(&mut out, *id, value)?,
        Node::ResourceInstance { id, value } => {
            write_entry(&mut out, Kind::ResourceInstance, *id, &encode_value(value))?;
        }
    }
    Ok(out)
}

fn encode_resources(resources: &[(u16, ResourceValue)]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    for (rid, value) in resources {
        write_resource(&mut out, *rid, value)?;
    }
    Ok(out)
}

fn write_resource(out: &mut Vec<u8>, id: u16, value: &ResourceValue) -> Result<(), CodecError> {
    match value {
        ResourceValue::Single(v) => write_entry(out, Kind::Resource, id, &encode_value(v)),
        ResourceValue::Multiple(items) => {
            let mut inner = Vec::new();
            for (ri, v) in items {
                write_entry(&mut inner, Kind::ResourceInstance, *ri, &encode_value(v))?;
            }
            write_entry(out, Kind::MultipleResource, id, &inner)
        }
    }
}

/// Decodes a payload aimed at `base` into the node at `base`.
///
/// At an instance path both bare resources and one wrapping Object Instance
/// TLV with the same id are accepted; at a resource path a multiple resource
/// may come wrapped (`86 06 ..`) or as bare resource instances.
pub fn decode(bytes: &[u8], base: Path, types: &dyn ResourceTypes) -> Result<Node, CodecError> {
    let entries = parse_entries(bytes)?;
    match (base.instance, base.resource, base.resource_instance) {
        (None, _, _) => {
            let mut instances = Vec::with_capacity(entries.len());
            for e in &entries {
                if e.kind != Kind::ObjectInstance {
                    return Err(malformed(
                        "an object payload must hold Object Instance TLVs",
                    ));
                }
                instances.push((e.id, decode_resources(e.value, base.object, e.id, types)?));
            }
            Ok(Node::Object {
                id: base.object,
                instances: sorted_unique(instances)?,
            })
        }
        (Some(iid), None, _) => {
            let resources = match entries.as_slice() {
                [e] if e.kind == Kind::ObjectInstance => {
                    if e.id != iid {
                        return Err(malformed(format!("instance {} sent to {base}", e.id)));
                    }
                    decode_resources(e.value, base.object, iid, types)?
                }
                _ => resources_from(&entries, base.object, iid, types)?,
            };
            Ok(Node::Instance { id: iid, resources })
        }
        (Some(iid), Some(rid), None) => {
            let path = Path::resource(base.object, iid, rid);
            match entries.as_slice() {
                [e] if matches!(e.kind, Kind::Resource | Kind::MultipleResource) => {
                    if e.id != rid {
                        return Err(malformed(format!("resource {} sent to {base}", e.id)));
                    }
                    Ok(Node::Resource {
                        id: rid,
                        value: decode_resource(e, path, types)?,
                    })
                }
                [] => Err(malformed("empty payload")),
                _ => Ok(Node::Resource {
                    id: rid,
                    value: ResourceValue::Multiple(resource_instances(&entries, path, types)?),
                }),
            }
        }
        (Some(iid), Some(rid), Some(ri)) => match entries.as_slice() {
            [e] if e.kind == Kind::ResourceInstance && e.id == ri => {
                let data_type = lookup(types, Path::resource(base.object, iid, rid))?;
                Ok(Node::ResourceInstance {
                    id: ri,
                    value: decode_value(e.value, data_type)?,
                })
            }
            _ => Err(malformed(format!(
                "expected one Resource Instance TLV for {base}"
            ))),
        },
    }
}

/// Decodes a Create payload for `object`: Object Instance TLVs keep their
/// ids; bare resource TLVs are one instance the client numbers (Core 1.1
/// §6.3.6). Types of such an instance are looked up with instance id 65535.
pub fn decode_create(
    bytes: &[u8],
    object: u16,
    types: &dyn ResourceTypes,
) -> Result<Vec<CreateInstance>, CodecError> {
    let entries = parse_entries(bytes)?;
    if entries.iter().all(|e| e.kind == Kind::ObjectInstance) && !entries.is_empty() {
        let mut instances = Vec::with_capacity(entries.len());
        for e in &entries {
            instances.push((e.id, decode_resources(e.value, object, e.id, types)?));
        }
        return Ok(sorted_unique(instances)?
            .into_iter()
            .map(|(id, resources)| CreateInstance {
                id: Some(id),
                resources,
            })
            .collect());
    }
    let resources = resources_from(&entries, object, u16::MAX, types)?;
    Ok(vec![CreateInstance {
        id: None,
        resources,
    }])
}

fn decode_resources(
    bytes: &[u8],
    object: u16,
    instance: u16,
    types: &dyn ResourceTypes,
) -> Result<Vec<(u16, ResourceValue)>, CodecError> {
    resources_from(&parse_entries(bytes)?, object, instance, types)
}

fn resources_from(
    entries: &[Entry<'_>],
    object: u16,
    instance: u16,
    types: &dyn ResourceTypes,
) -> Result<Vec<(u16, ResourceValue)>, CodecError> {
    let mut resources = Vec::with_capacity(entries.len());
    for e in entries {
        if !matches!(e.kind, Kind::Resource | Kind::MultipleResource) {
            return Err(malformed(format!(
                "{:?} TLV where a resource was expected",
                e.kind
            )));
        }
        let path = Path::resource(object, instance, e.id);
        resources.push((e.id, decode_resource(e, path, types)?));
    }
    sorted_unique(resources)
}

fn decode_resource(
    e: &Entry<'_>,
    path: Path,
    types: &dyn ResourceTypes,
) -> Result<ResourceValue, CodecError> {
    if e.kind == Kind::MultipleResource {
        return Ok(ResourceValue::Multiple(resource_instances(
            &parse_entries(e.value)?,
            path,
            types,
        )?));
    }
    Ok(ResourceValue::Single(decode_value(
        e.value,
        lookup(types, path)?,
    )?))
}

fn resource_instances(
    entries: &[Entry<'_>],
    path: Path,
    types: &dyn ResourceTypes,
) -> Result<Vec<(u16, Value)>, CodecError> {
    let data_type = lookup(types, path)?;
    let mut items = Vec::with_capacity(entries.len());
    for e in entries {
        if e.kind != Kind::ResourceInstance {
            return Err(malformed(format!(
                "{:?} TLV inside multiple resource {path}",
                e.kind
            )));
        }
        items.push((e.id, decode_value(e.value, data_type)?));
    }
    sorted_unique(items)
}

fn lookup(types: &dyn ResourceTypes, path: Path) -> Result<DataType, CodecError> {
    types
        .data_type(path)
        .ok_or(CodecError::UnknownResource(path))
}

/// Sorts by id and refuses a repeated id: a payload naming one id twice is ambiguous.
fn sorted_unique<T>(mut items: Vec<(u16, T)>) -> Result<Vec<(u16, T)>, CodecError> {
    items.sort_by_key(|(id, _)| *id);
    if items.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
        return Err(malformed("the same id appears twice"));
    }
    Ok(items)
}

#[cfg(test)]
mod tests;
