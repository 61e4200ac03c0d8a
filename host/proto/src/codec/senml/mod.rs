//! SenML (RFC 8428) as LwM2M 1.1 uses it: JSON (CF 110) and CBOR (CF 112).
//!
//! Two layers: [`RawRecord`] is a record as it is on the wire (base fields
//! not yet applied, numbers untyped); [`Record`] is resolved, with its full
//! LwM2M path, its absolute time and a typed [`Value`]. The record name is
//! `bn` + `n` = the full LwM2M path (Core 1.1 §7.4.4).

mod cbor;
mod json;

pub use cbor::{from_cbor, to_cbor};
pub use json::{from_json, to_json};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

use super::assemble::{flatten, node_path};
use super::text::parse_objlink;
use super::{CodecError, ResourceTypes, resource_path};
use crate::model::{ContentFormat, DataType, Node, Path, Value};

/// A SenML number as sent: JSON and CBOR keep integers apart from floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// Anything with a fraction or exponent.
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::UInt(u) => u as f64,
            Number::Float(f) => f,
        }
    }
}

/// A record's value field before the resource type is known (Core 1.1 §7.4.4:
/// Integer/Unsigned/Float/Time -> `v`, Boolean -> `vb`, String/Corelnk -> `vs`,
/// Opaque -> `vd`, Objlnk -> `vlo`).
#[derive(Debug, Clone, PartialEq)]
pub enum SenmlValue {
    /// `v`.
    Number(Number),
    /// `vs`.
    String(String),
    /// `vb`.
    Bool(bool),
    /// `vd`: base64 text in JSON, a byte string in CBOR.
    Data(Vec<u8>),
    /// `vlo`: `"oid:iid"`, LwM2M's registered extension (OMA issue #485).
    ObjLink(String),
}

/// One SenML record as it is on the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawRecord {
    /// Base name, carried forward to later records.
    pub bn: Option<String>,
    /// Base time, carried forward to later records.
    pub bt: Option<Number>,
    /// Name, appended to the current base name.
    pub n: Option<String>,
    /// The value field, absent in Read-Composite requests.
    pub value: Option<SenmlValue>,
    /// Time, added to the current base time.
    pub t: Option<Number>,
}

/// A resolved record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The full LwM2M path `bn` + `n` names.
    pub path: Path,
    /// `bt` + `t`, when either was given.
    pub time: Option<f64>,
    /// The typed value, absent in Read-Composite requests.
    pub value: Option<Value>,
}

/// Base64url without padding when writing `vd` (RFC 8428 §4.3, what Leshan demands).
const URL_NO_PAD: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// Reading `vd` accepts both alphabets, padding optional: Wakaama sends
/// standard base64 with padding (reference §6).
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);

pub(crate) fn encode_vd(bytes: &[u8]) -> String {
    URL_NO_PAD.encode(bytes)
}

pub(crate) fn decode_vd(text: &str) -> Option<Vec<u8>> {
    if text.contains(['-', '_']) {
        URL_LENIENT.decode(text)
    } else {
        STANDARD_LENIENT.decode(text)
    }
    .ok()
}

/// The wire form of a typed value.
pub fn senml_value(value: &Value) -> SenmlValue {
    match value {
        Value::String(s) | Value::CoreLink(s) => SenmlValue::String(s.clone()),
        Value::Integer(i) | Value::Time(i) => SenmlValue::Number(Number::Int(*i)),
        Value::Unsigned(u) => SenmlValue::Number(match i64::try_from(*u) {
            Ok(i) => Number::Int(i),
            Err(_) => Number::UInt(*u),
        }),
        Value::Float(f) => SenmlValue::Number(Number::Float(*f)),
        Value::Boolean(b) => SenmlValue::Bool(*b),
        Value::Opaque(bytes) => SenmlValue::Data(bytes.clone()),
        Value::ObjLink(link) => SenmlValue::ObjLink(format!("{}:{}", link.object, link.instance)),
    }
}

/// The records for `node` at `base`. A single value is one record named by
/// `bn` alone (T7.4.4-5); otherwise `bn` is the node's path plus `/` and
/// each record's `n` the rest of its path (T7.4.4-2).
pub fn records(node: &Node, base: Path) -> Result<Vec<RawRecord>, CodecError> {
    let path = node_path(node, base)?;
    let values = flatten(node, base)?;
    if let [(only, value)] = values.as_slice()
        && *only == path
    {
        return Ok(vec![RawRecord {
            bn: Some(path.to_string()),
            value: Some(senml_value(value)),
            ..RawRecord::default()
        }]);
    }
    let skip = path.depth();
    Ok(values
        .iter()
        .enumerate()
        .map(|(index, (p, value))| {
            let ids = [Some(p.object), p.instance, p.resource, p.resource_instance];
            let rest: Vec<String> = ids
                .iter()
                .flatten()
                .skip(skip)
                .map(u16::to_string)
                .collect();
            RawRecord {
                bn: (index == 0).then(|| format!("{path}/")),
                n: Some(rest.join("/")),
                value: Some(senml_value(value)),
                ..RawRecord::default()
            }
        })
        .collect())
}

/// Encodes `node` at `base` as SenML JSON.
pub fn encode_json(node: &Node, base: Path) -> Result<Vec<u8>, CodecError> {
    to_json(&records(node, base)?)
}

/// Encodes `node` at `base` as SenML CBOR.
pub fn encode_cbor(node: &Node, base: Path) -> Result<Vec<u8>, CodecError> {
    to_cbor(&records(node, base)?)
}

/// Decodes SenML JSON into resolved records, in payload order.
pub fn decode_json(bytes: &[u8], types: &dyn ResourceTypes) -> Result<Vec<Record>, CodecError> {
    resolve(from_json(bytes)?, ContentFormat::SenmlJson, types)
}

/// Decodes SenML CBOR into resolved records, in payload order.
pub fn decode_cbor(bytes: &[u8], types: &dyn ResourceTypes) -> Result<Vec<Record>, CodecError> {
    resolve(from_cbor(bytes)?, ContentFormat::SenmlCbor, types)
}

/// Applies base name and base time (RFC 8428 §4.5) and types each value.
///
/// Numbers are converted to the resource's declared type and refused when
/// they do not fit; for a resource `types` does not know, the type is read
/// from the record (integer -> Integer, fraction -> Float, `vs` -> String, ...).
pub fn resolve(
    raw: Vec<RawRecord>,
    format: ContentFormat,
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    let mut base_name = String::new();
    let mut base_time: Option<f64> = None;
    let mut out = Vec::with_capacity(raw.len());
    for record in raw {
        if let Some(bn) = record.bn {
            base_name = bn;
        }
        if let Some(bt) = record.bt {
            base_time = Some(bt.as_f64());
        }
        let name = format!("{base_name}{}", record.n.as_deref().unwrap_or(""));
        let path = parse_name(&name)
            .ok_or_else(|| CodecError::malformed(format, format!("bad name {name:?}")))?;
        let time = match (base_time, record.t) {
            (None, None) => None,
            (bt, t) => Some(bt.unwrap_or(0.0) + t.map_or(0.0, Number::as_f64)),
        };
        let value = match record.value {
            Some(v) => Some(typed(path, v, format, types)?),
            None => None,
        };
        out.push(Record { path, time, value });
    }
    Ok(out)
}

/// Parses `/o[/i[/r[/ri]]]`, one trailing `/` tolerated (a `bn` used alone).
fn parse_name(name: &str) -> Option<Path> {
    let rest = name.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Path::from_segments(&segments)
}

fn typed(
    path: Path,
    value: SenmlValue,
    format: ContentFormat,
    types: &dyn ResourceTypes,
) -> Result<Value, CodecError> {
    let bad = |why: &str| CodecError::malformed(format, format!("{path}: {why}"));
    if path.resource.is_none() {
        return Err(bad("a value needs a resource path"));
    }
    let declared = types.data_type(resource_path(path));
    Ok(match (declared, value) {
        (Some(DataType::Integer), SenmlValue::Number(n)) => {
            Value::Integer(to_i64(n).ok_or_else(|| bad("not an integer"))?)
        }
        (Some(DataType::Time), SenmlValue::Number(n)) => {
            Value::Time(to_i64(n).ok_or_else(|| bad("not an integer time"))?)
        }
        (Some(DataType::Unsigned), SenmlValue::Number(n)) => {
            Value::Unsigned(to_u64(n).ok_or_else(|| bad("not an unsigned integer"))?)
        }
        (Some(DataType::Float), SenmlValue::Number(n)) => Value::Float(n.as_f64()),
        (Some(DataType::String) | None, SenmlValue::String(s)) => Value::String(s),
        (Some(DataType::CoreLink), SenmlValue::String(s)) => Value::CoreLink(s),
        (Some(DataType::Boolean) | None, SenmlValue::Bool(b)) => Value::Boolean(b),
        (Some(DataType::Opaque) | None, SenmlValue::Data(d)) => Value::Opaque(d),
        (Some(DataType::ObjLink) | None, SenmlValue::ObjLink(s)) => {
            Value::ObjLink(parse_objlink(&s).ok_or_else(|| bad("vlo is not oid:iid"))?)
        }
        (None, SenmlValue::Number(Number::Int(i))) => Value::Integer(i),
        (None, SenmlValue::Number(Number::UInt(u))) => Value::Unsigned(u),
        (None, SenmlValue::Number(Number::Float(f))) => Value::Float(f),
        (Some(t), _) => return Err(bad(&format!("value field does not match type {t:?}"))),
    })
}

/// 2^63 as f64: the first float above every i64.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

fn to_i64(n: Number) -> Option<i64> {
    match n {
        Number::Int(i) => Some(i),
        Number::UInt(u) => i64::try_from(u).ok(),
        // Exact integral floats (e.g. CBOR 300.0) are accepted as integers.
        Number::Float(f) if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) => Some(f as i64),
        Number::Float(_) => None,
    }
}

fn to_u64(n: Number) -> Option<u64> {
    match n {
        Number::Int(i) => u64::try_from(i).ok(),
        Number::UInt(u) => Some(u),
        Number::Float(f) if f.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&f) => Some(f as u64),
        Number::Float(_) => None,
    }
}

/// Meaning of a SenML field label, shared by the JSON names and the CBOR
/// integer labels (RFC 8428 §6, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    BaseName,
    BaseTime,
    Name,
    Time,
    Value,
    StringValue,
    BoolValue,
    DataValue,
    ObjLinkValue,
    /// A field LwM2M does not use (units, sums, versions): ignored.
    Ignored,
}

impl Field {
    /// Maps a text label; `None` for a must-understand label (ending in `_`,
    /// RFC 8428 §4.4) the record cannot be processed without.
    pub(crate) fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "bn" => Field::BaseName,
            "bt" => Field::BaseTime,
            "n" => Field::Name,
            "t" => Field::Time,
            "v" => Field::Value,
            "vs" => Field::StringValue,
            "vb" => Field::BoolValue,
            "vd" => Field::DataValue,
            "vlo" => Field::ObjLinkValue,
            other if other.ends_with('_') => return None,
            _ => Field::Ignored,
        })
    }

    pub(crate) fn from_label(label: i128) -> Field {
        match label {
            -2 => Field::BaseName,
            -3 => Field::BaseTime,
            0 => Field::Name,
            2 => Field::Value,
            3 => Field::StringValue,
            4 => Field::BoolValue,
            6 => Field::Time,
            8 => Field::DataValue,
            _ => Field::Ignored,
        }
    }
}

/// Stores one parsed field in `record`, refusing repeats and a second value field.
pub(crate) fn set_field(
    record: &mut RawRecord,
    field: Field,
    value: FieldValue,
    format: ContentFormat,
) -> Result<(), CodecError> {
    let bad = |why: &str| CodecError::malformed(format, why.to_owned());
    fn put<T>(slot: &mut Option<T>, v: T) -> bool {
        slot.replace(v).is_none()
    }
    let fresh = match (field, value) {
        (Field::Ignored, _) => true,
        (Field::BaseName, FieldValue::Text(s)) => put(&mut record.bn, s),
        (Field::Name, FieldValue::Text(s)) => put(&mut record.n, s),
        (Field::BaseTime, FieldValue::Number(n)) => put(&mut record.bt, n),
        (Field::Time, FieldValue::Number(n)) => put(&mut record.t, n),
        (Field::Value, FieldValue::Number(n)) => put(&mut record.value, SenmlValue::Number(n)),
        (Field::StringValue, FieldValue::Text(s)) => put(&mut record.value, SenmlValue::String(s)),
        (Field::BoolValue, FieldValue::Bool(b)) => put(&mut record.value, SenmlValue::Bool(b)),
        (Field::DataValue, FieldValue::Bytes(d)) => put(&mut record.value, SenmlValue::Data(d)),
        (Field::ObjLinkValue, FieldValue::Text(s)) => {
            put(&mut record.value, SenmlValue::ObjLink(s))
        }
        (field, _) => return Err(bad(&format!("field {field:?} has the wrong type"))),
    };
    if fresh {
        Ok(())
    } else {
        Err(bad(&format!(
            "field {field:?} repeated or two value fields"
        )))
    }
}

/// A field's content once read from JSON or CBOR.
pub(crate) enum FieldValue {
    Text(String),
    Number(Number),
    Bool(bool),
    Bytes(Vec<u8>),
    /// Anything else: fine for an ignored field, an error for a known one.
    Other,
}

#[cfg(test)]
mod tests;
