//! SenML CBOR (CF 112, RFC 8428 §6): integer labels, except LwM2M's `vlo`
//! which keeps its text label (OMA issue #484). Floats are written in the
//! shortest lossless width, as ciborium does (half-float `F9 5C B0` = 300.0).

use ciborium::Value as Cbor;

use super::{Field, FieldValue, Number, RawRecord, SenmlValue, set_field};
use crate::codec::CodecError;
use crate::model::ContentFormat;

const FORMAT: ContentFormat = ContentFormat::SenmlCbor;

/// Serialises records as a SenML CBOR array (definite lengths, minimal heads).
pub fn to_cbor(records: &[RawRecord]) -> Result<Vec<u8>, CodecError> {
    let mut array = Vec::with_capacity(records.len());
    for record in records {
        let mut map: Vec<(Cbor, Cbor)> = Vec::new();
        if let Some(bn) = &record.bn {
            map.push((label(-2), Cbor::Text(bn.clone())));
        }
        if let Some(bt) = record.bt {
            map.push((label(-3), number(bt)));
        }
        if let Some(n) = &record.n {
            map.push((label(0), Cbor::Text(n.clone())));
        }
        match &record.value {
            None => {}
            Some(SenmlValue::Number(n)) => map.push((label(2), number(*n))),
            Some(SenmlValue::String(s)) => map.push((label(3), Cbor::Text(s.clone()))),
            Some(SenmlValue::Bool(b)) => map.push((label(4), Cbor::Bool(*b))),
            Some(SenmlValue::Data(d)) => map.push((label(8), Cbor::Bytes(d.clone()))),
            Some(SenmlValue::ObjLink(s)) => {
                map.push((Cbor::Text("vlo".into()), Cbor::Text(s.clone())))
            }
        }
        if let Some(t) = record.t {
            map.push((label(6), number(t)));
        }
        array.push(Cbor::Map(map));
    }
    let mut out = Vec::new();
    ciborium::into_writer(&Cbor::Array(array), &mut out).map_err(|_| {
        CodecError::NotRepresentable {
            format: FORMAT,
            what: "these records",
        }
    })?;
    Ok(out)
}

fn label(l: i8) -> Cbor {
    Cbor::Integer(l.into())
}

fn number(n: Number) -> Cbor {
    match n {
        Number::Int(i) => Cbor::Integer(i.into()),
        Number::UInt(u) => Cbor::Integer(u.into()),
        Number::Float(f) => Cbor::Float(f),
    }
}

/// Parses a SenML CBOR array into wire records. Trailing bytes after the
/// array are refused; nesting is bounded by ciborium's recursion limit.
pub fn from_cbor(bytes: &[u8]) -> Result<Vec<RawRecord>, CodecError> {
    let bad = |why: String| CodecError::malformed(FORMAT, why);
    let mut reader = bytes;
    let cbor: Cbor = ciborium::from_reader(&mut reader).map_err(|e| bad(e.to_string()))?;
    if !reader.is_empty() {
        return Err(bad("trailing bytes after the array".into()));
    }
    let Cbor::Array(items) = cbor else {
        return Err(bad("top level is not an array".into()));
    };
    let mut records = Vec::with_capacity(items.len());
    for item in items {
        let Cbor::Map(map) = item else {
            return Err(bad("record is not a map".into()));
        };
        let mut record = RawRecord::default();
        for (key, value) in map {
            let field = match key {
                Cbor::Integer(l) => Field::from_label(i128::from(l)),
                Cbor::Text(name) => Field::from_name(&name)
                    .ok_or_else(|| bad(format!("must-understand field {name:?}")))?,
                _ => return Err(bad("record key is neither integer nor text".into())),
            };
            let value = match value {
                Cbor::Text(s) => FieldValue::Text(s),
                Cbor::Bool(b) => FieldValue::Bool(b),
                Cbor::Bytes(d) => FieldValue::Bytes(d),
                Cbor::Float(f) => FieldValue::Number(Number::Float(f)),
                Cbor::Integer(i) => {
                    let i = i128::from(i);
                    match (i64::try_from(i), u64::try_from(i)) {
                        (Ok(i), _) => FieldValue::Number(Number::Int(i)),
                        (_, Ok(u)) => FieldValue::Number(Number::UInt(u)),
                        _ => FieldValue::Other,
                    }
                }
                _ => FieldValue::Other,
            };
            set_field(&mut record, field, value, FORMAT)?;
        }
        records.push(record);
    }
    Ok(records)
}
