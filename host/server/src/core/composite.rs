//! Composite DM requests the server sends (LwM2M 1.1 Core §6.3.8
//! Read-Composite, §6.3.9 Write-Composite, §6.4.3 Observe-Composite):
//! FETCH / iPATCH (RFC 8132) on the client's root with a SenML JSON (110)
//! or CBOR (112) body whose records name full paths (reference §6,
//! T7.4.4-6..-8), and the decoding of their answers.
//!
//! Caps (checked before anything is sent): at most
//! [`MAX_COMPOSITE_PATHS`] paths or records per request, and an encoded body
//! of at most [`MAX_COMPOSITE_BODY`] bytes (sent in one message, no Block1).

use coap_lite::{CoapOption, Packet, RequestType};
use serde_json::Value as Json;
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::codec::senml::{self, Number, RawRecord, SenmlValue};
use wasmdm_proto::model::{ContentFormat, DataType, Path};

use super::dm::{self, DmError, DmReply};

/// Paths one Read-/Observe-Composite may name, records one Write-Composite
/// may carry (the same number the wasmdm device accepts).
pub const MAX_COMPOSITE_PATHS: usize = 64;
/// Largest encoded composite request body: one CoAP message, no Block1.
pub const MAX_COMPOSITE_BODY: usize = 4096;

/// The SenML format of a composite request: 110 unless 112 is asked for.
pub fn format(code: Option<u16>) -> Result<ContentFormat, DmError> {
    match code.map_or(Some(ContentFormat::SenmlJson), ContentFormat::from_code) {
        Some(f @ (ContentFormat::SenmlJson | ContentFormat::SenmlCbor)) => Ok(f),
        _ => Err(DmError::Composite(format!(
            "format {} is not SenML JSON (110) or SenML CBOR (112)",
            code.unwrap_or_default()
        ))),
    }
}

fn count_check(n: usize, what: &str) -> Result<(), DmError> {
    if n == 0 {
        return Err(DmError::Composite(format!("no {what} given")));
    }
    if n > MAX_COMPOSITE_PATHS {
        return Err(DmError::Composite(format!(
            "{n} {what}: at most {MAX_COMPOSITE_PATHS} per composite operation"
        )));
    }
    Ok(())
}

/// Parses the paths of a Read-/Observe-Composite (1 to 64, any depth).
pub fn parse_paths(paths: &[String]) -> Result<Vec<Path>, DmError> {
    count_check(paths.len(), "paths")?;
    paths.iter().map(|p| dm::parse_path(p)).collect()
}

/// Encodes request records, refusing a body over [`MAX_COMPOSITE_BODY`].
pub fn encode(records: &[RawRecord], format: ContentFormat) -> Result<Vec<u8>, DmError> {
    let body = match format {
        ContentFormat::SenmlCbor => senml::to_cbor(records)?,
        _ => senml::to_json(records)?,
    };
    if body.len() > MAX_COMPOSITE_BODY {
        return Err(DmError::Composite(format!(
            "request body of {} bytes: at most {MAX_COMPOSITE_BODY}",
            body.len()
        )));
    }
    Ok(body)
}

/// The body of a Read-/Observe-Composite: one record per path, a name and
/// no value (T7.4.4-6).
pub fn read_body(paths: &[Path], format: ContentFormat) -> Result<Vec<u8>, DmError> {
    let records: Vec<RawRecord> = paths
        .iter()
        .map(|p| RawRecord {
            n: Some(p.to_string()),
            ..RawRecord::default()
        })
        .collect();
    encode(&records, format)
}

/// A JSON value of `{"/1/0/1": 120}` as a SenML value, typed by what the
/// server knows of the resource: numbers in text become numbers for numeric
/// resources, `"3:0"` an object link for Objlnk ones, `{"hex": ".."}` opaque.
fn json_value(path: Path, v: &Json) -> Result<SenmlValue, DmError> {
    let bad = || DmError::Composite(format!("value {v} for {path} cannot be written"));
    let known = dm::known_type(path);
    let number = |n: &serde_json::Number| {
        n.as_i64()
            .map(Number::Int)
            .or_else(|| n.as_u64().map(Number::UInt))
            .or_else(|| n.as_f64().map(Number::Float))
    };
    Ok(match (v, known) {
        (Json::Number(n), _) => SenmlValue::Number(number(n).ok_or_else(bad)?),
        (Json::Bool(b), _) => SenmlValue::Bool(*b),
        (Json::String(s), Some(DataType::Integer | DataType::Time | DataType::Unsigned)) => {
            SenmlValue::Number(Number::Int(s.trim().parse().map_err(|_| bad())?))
        }
        (Json::String(s), Some(DataType::Float)) => {
            SenmlValue::Number(Number::Float(s.trim().parse().map_err(|_| bad())?))
        }
        (Json::String(s), Some(DataType::Boolean)) => SenmlValue::Bool(match s.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad()),
        }),
        (Json::String(s), Some(DataType::ObjLink)) => SenmlValue::ObjLink(s.clone()),
        (Json::String(s), _) => SenmlValue::String(s.clone()),
        (Json::Object(o), _) => match o.get("hex").and_then(Json::as_str) {
            Some(h) if o.len() == 1 => SenmlValue::Data(hex::decode(h).map_err(|_| bad())?),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    })
}

/// The records of a Write-Composite from the API's `values`: an object
/// `{"/1/0/1": 120, "/3/0/14": "+02"}` or a SenML JSON list
/// `[{"n": "/1/0/1", "v": 120}, ...]` (T7.4.4-8). Every record must name
/// a resource or resource instance and carry a value.
pub fn write_records(values: &Json) -> Result<Vec<RawRecord>, DmError> {
    let raw: Vec<RawRecord> = match values {
        Json::Object(map) => map
            .iter()
            .map(|(p, v)| {
                let path = dm::parse_path(p)?;
                Ok(RawRecord {
                    n: Some(path.to_string()),
                    value: Some(json_value(path, v)?),
                    ..RawRecord::default()
                })
            })
            .collect::<Result<_, DmError>>()?,
        Json::Array(_) => senml::from_json(values.to_string().as_bytes())?,
        _ => {
            return Err(DmError::Composite(
                "values must be an object of path: value or a SenML list".into(),
            ));
        }
    };
    count_check(raw.len(), "values")?;
    let untyped = |_: Path| None::<DataType>;
    let resolved = senml::resolve(raw.clone(), ContentFormat::SenmlJson, &untyped)?;
    for r in &resolved {
        if r.value.is_none() {
            return Err(DmError::Composite(format!("{} has no value", r.path)));
        }
        if r.path.depth() < 3 {
            return Err(DmError::BadPath(r.path.to_string()));
        }
    }
    Ok(raw)
}

/// Builds a composite request on the client's root `root`: FETCH (Read,
/// with `observe` Observe-Composite or its cancel) or iPATCH (Write), with
/// Content-Format and, for a FETCH, Accept of the same SenML format.
pub fn request(
    root: &str,
    method: RequestType,
    observe: Option<u64>,
    format: ContentFormat,
    body: Vec<u8>,
) -> Packet {
    let segs: Vec<&str> = root
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut p = msg::request(method, &segs);
    if let Some(o) = observe {
        msg::set_uint(&mut p, CoapOption::Observe, o);
    }
    msg::set_uint(&mut p, CoapOption::ContentFormat, u64::from(format.code()));
    if method == RequestType::Fetch {
        msg::set_uint(&mut p, CoapOption::Accept, u64::from(format.code()));
    }
    p.payload = body;
    p
}

/// Decodes the answer to a Read-/Observe-Composite (or a notification of
/// one): SenML records named by full paths, possibly in several objects.
pub fn parse_reply(packet: &Packet) -> Result<DmReply, DmError> {
    let mut reply = dm::reply_header(packet)?;
    if !Code(reply.code).is_success() || packet.payload.is_empty() {
        return Ok(reply);
    }
    let types = |p: Path| dm::known_type(p).filter(|t| *t != DataType::None);
    let records = match reply.format.and_then(ContentFormat::from_code) {
        Some(ContentFormat::SenmlCbor) => senml::decode_cbor(&packet.payload, &types)?,
        Some(ContentFormat::SenmlJson) => senml::decode_json(&packet.payload, &types)?,
        _ => return Ok(reply), // kept raw in `payload`
    };
    reply.values = records
        .into_iter()
        .filter_map(|r| Some((r.path, r.value?)))
        .collect();
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dm::DmOp;
    use serde_json::json;
    use wasmdm_proto::model::Value;

    use crate::core::test_bytes::{hex, wire};

    #[test]
    fn read_composite_is_a_fetch_on_root_with_the_t7_4_4_6_body() {
        let op: DmOp = serde_json::from_value(
            json!({"op": "read-composite", "paths": ["/3/0/0", "/3/0/9", "/1/0/1"]}),
        )
        .unwrap();
        let p = op.to_packet("").unwrap();
        let body = br#"[{"n":"/3/0/0"},{"n":"/3/0/9"},{"n":"/1/0/1"}]"#;
        assert_eq!(p.payload, body.to_vec(), "T7.4.4-6");
        // CON FETCH (0.05), MID 0x0201, token 09; Content-Format 110 (option
        // 12: delta 12, length 1, 0x6E) and Accept 110 (option 17: delta 5).
        let mut expected = hex("41 05 02 01 09 C1 6E 51 6E FF");
        expected.extend_from_slice(body);
        assert_eq!(wire(p, 0x0201, &[9]), expected);
        // Under an alternate root, with Observe 0 and CBOR.
        let op: DmOp = serde_json::from_value(
            json!({"op": "observe-composite", "paths": ["/3/0/9"], "format": 112}),
        )
        .unwrap();
        let p = op.to_packet("/lwm2m").unwrap();
        assert_eq!(msg::uri_path(&p).unwrap(), vec!["lwm2m"]);
        // Observe 0 (option 6, empty), Uri-Path, CF 112 (0x70), Accept 112;
        // body [{0: "/3/0/9"}].
        assert_eq!(
            wire(p, 0x0202, &[1]),
            hex("41 05 02 02 01 60 55 6C 77 6D 32 6D 11 70 51 70 FF 81 A1 00 66 2F 33 2F 30 2F 39")
        );
    }

    #[test]
    fn write_composite_is_an_ipatch_with_typed_records() {
        let op: DmOp = serde_json::from_value(json!({
            "op": "write-composite",
            "values": {"/1/0/1": 120, "/3/0/14": "+02", "/1/0/6": "true"}
        }))
        .unwrap();
        let p = op.to_packet("").unwrap();
        assert_eq!(
            String::from_utf8(p.payload.clone()).unwrap(),
            r#"[{"n":"/1/0/1","v":120},{"n":"/1/0/6","vb":true},{"n":"/3/0/14","vs":"+02"}]"#
        );
        // CON iPATCH (0.07), CF 110 and no Accept.
        assert_eq!(
            wire(p, 0x0203, &[2])[..8],
            hex("41 07 02 03 02 C1 6E FF")[..]
        );
        // The SenML list form, as given (T7.4.4-8).
        let list = json!([{"n": "/3311/0/5850", "vb": false}, {"n": "/3308/0/5900", "v": 18}]);
        let op = DmOp::WriteComposite {
            values: list,
            format: None,
        };
        assert_eq!(
            op.to_packet("").unwrap().payload,
            br#"[{"n":"/3311/0/5850","vb":false},{"n":"/3308/0/5900","v":18}]"#.to_vec()
        );
    }

    #[test]
    fn caps_and_bad_input_are_refused_before_sending() {
        let paths: Vec<String> = (0..65).map(|i| format!("/3/0/{i}")).collect();
        let too_many = DmOp::ReadComposite {
            paths: paths.clone(),
            format: None,
        };
        assert!(matches!(too_many.to_packet(""), Err(DmError::Composite(_))));
        let ok = DmOp::ReadComposite {
            paths: paths[..64].to_vec(),
            format: None,
        };
        assert!(ok.to_packet("").is_ok());
        let none = DmOp::ReadComposite {
            paths: vec![],
            format: None,
        };
        assert!(none.to_packet("").is_err());
        let bad_format = DmOp::ReadComposite {
            paths: vec!["/3/0/0".into()],
            format: Some(11542),
        };
        assert!(bad_format.to_packet("").is_err());
        let values: serde_json::Map<String, Json> =
            (0..65).map(|i| (format!("/3/0/{i}"), json!(1))).collect();
        let w = |values: Json| DmOp::WriteComposite {
            values,
            format: None,
        };
        assert!(w(Json::Object(values)).to_packet("").is_err());
        assert!(w(json!({"/3/0": 1})).to_packet("").is_err(), "depth");
        assert!(w(json!({"/x": 1})).to_packet("").is_err());
        assert!(
            w(json!([{"n": "/1/0/1"}])).to_packet("").is_err(),
            "no value"
        );
        assert!(w(json!({"/1/0/1": "soon"})).to_packet("").is_err(), "type");
        assert!(w(json!({"/1/0/1": null})).to_packet("").is_err());
        assert!(w(json!("x")).to_packet("").is_err());
        let big = "x".repeat(MAX_COMPOSITE_BODY);
        assert!(
            w(json!({"/3/0/15": big})).to_packet("").is_err(),
            "body cap"
        );
    }

    #[test]
    fn parses_t7_4_4_7_answers_across_objects() {
        let mut p = Packet::new();
        Code::CONTENT.set_on(&mut p);
        msg::set_uint(&mut p, CoapOption::ContentFormat, 110);
        p.payload = br#"[{"n":"/3/0/0", "vs":"Open Mobile Alliance"},{"n" :"/3/0/9", "v":95},{"n":"/1/0/1", "v":86400}]"#.to_vec();
        let r = parse_reply(&p).unwrap();
        assert_eq!(
            r.value(Path::resource(3, 0, 0)),
            Some(&Value::String("Open Mobile Alliance".into()))
        );
        assert_eq!(
            r.value(Path::resource(1, 0, 1)),
            Some(&Value::Integer(86400))
        );
        assert_eq!(r.values.len(), 3);
        p.payload = b"[{".to_vec();
        assert!(parse_reply(&p).is_err());
        let mut nf = Packet::new();
        Code::NOT_FOUND.set_on(&mut nf);
        assert_eq!(parse_reply(&nf).unwrap().code_text(), "4.04");
    }
}
