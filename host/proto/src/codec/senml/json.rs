//! SenML JSON (CF 110, RFC 8428 §5). Written by hand so the key order is
//! the spec examples' (`bn`, `bt`, `n`, value, `t`) and output matches
//! T7.4.4-2 byte for byte; read with `serde_json`.

use serde_json::Value as Json;

use super::{Field, FieldValue, Number, RawRecord, SenmlValue, decode_vd, encode_vd, set_field};
use crate::codec::CodecError;
use crate::model::ContentFormat;

const FORMAT: ContentFormat = ContentFormat::SenmlJson;

/// Serialises records as a SenML JSON array.
pub fn to_json(records: &[RawRecord]) -> Result<Vec<u8>, CodecError> {
    let mut out = String::from("[");
    for (index, record) in records.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(bn) = &record.bn {
            fields.push(("bn", string(bn)));
        }
        if let Some(bt) = record.bt {
            fields.push(("bt", number(bt)?));
        }
        if let Some(n) = &record.n {
            fields.push(("n", string(n)));
        }
        match &record.value {
            None => {}
            Some(SenmlValue::Number(n)) => fields.push(("v", number(*n)?)),
            Some(SenmlValue::String(s)) => fields.push(("vs", string(s))),
            Some(SenmlValue::Bool(b)) => fields.push(("vb", b.to_string())),
            Some(SenmlValue::Data(d)) => fields.push(("vd", string(&encode_vd(d)))),
            Some(SenmlValue::ObjLink(s)) => fields.push(("vlo", string(s))),
        }
        if let Some(t) = record.t {
            fields.push(("t", number(t)?));
        }
        out.push('{');
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        out.push_str(&body.join(","));
        out.push('}');
    }
    out.push(']');
    Ok(out.into_bytes())
}

fn string(s: &str) -> String {
    Json::String(s.to_owned()).to_string()
}

fn number(n: Number) -> Result<String, CodecError> {
    match n {
        Number::Int(i) => Ok(i.to_string()),
        Number::UInt(u) => Ok(u.to_string()),
        Number::Float(f) => serde_json::Number::from_f64(f)
            .map(|n| n.to_string())
            .ok_or(CodecError::NotRepresentable {
                format: FORMAT,
                what: "a non-finite float",
            }),
    }
}

/// Parses a SenML JSON array into wire records. A key repeated inside one
/// record is refused, not silently collapsed as a JSON map would.
pub fn from_json(bytes: &[u8]) -> Result<Vec<RawRecord>, CodecError> {
    let bad = |why: String| CodecError::malformed(FORMAT, why);
    let items: Vec<Pairs> = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut records = Vec::with_capacity(items.len());
    for Pairs(pairs) in items {
        let mut record = RawRecord::default();
        for (key, value) in pairs {
            let field = Field::from_name(&key)
                .ok_or_else(|| bad(format!("must-understand field {key:?}")))?;
            let value = match (field, value) {
                (Field::DataValue, Json::String(s)) => {
                    FieldValue::Bytes(decode_vd(&s).ok_or_else(|| bad("vd is not base64".into()))?)
                }
                (_, Json::String(s)) => FieldValue::Text(s),
                (_, Json::Bool(b)) => FieldValue::Bool(b),
                (_, Json::Number(n)) => FieldValue::Number(json_number(&n)),
                _ => FieldValue::Other,
            };
            set_field(&mut record, field, value, FORMAT)?;
        }
        records.push(record);
    }
    Ok(records)
}

/// One JSON object as its key/value pairs in order, duplicates kept.
struct Pairs(Vec<(String, Json)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a SenML record object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Json>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

fn json_number(n: &serde_json::Number) -> Number {
    if let Some(i) = n.as_i64() {
        Number::Int(i)
    } else if let Some(u) = n.as_u64() {
        Number::UInt(u)
    } else {
        Number::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}
