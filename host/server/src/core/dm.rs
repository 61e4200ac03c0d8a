//! Device Management requests the server sends (Core 1.1 §6.3, reference §2)
//! and the parsing of their responses with the proto codecs.

use std::collections::BTreeMap;

use coap_lite::{CoapOption, Packet, RequestType};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::codec::{self, CodecError};
use wasmdm_proto::model::{ContentFormat, DataType, Path, Value};

use wasmdm_proto::codec::link::{self, Link};

use super::composite;

/// Why a DM request got no reply from the device. A campaign tells the
/// device being unreachable apart from anything else that went wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DmFailure {
    /// No answer after the CoAP retransmissions, or a Reset: the device is unreachable.
    #[error("no response (timeout or reset)")]
    NoResponse,
    /// The device is not (or no longer) registered.
    #[error("device {0} is not registered")]
    NotRegistered(String),
    /// The request could not be built, or the answer not understood.
    #[error(transparent)]
    Dm(#[from] DmError),
    /// Anything else that stopped the request (a missing software file).
    #[error("{0}")]
    Other(String),
}

impl DmFailure {
    /// True when the device could not be reached (no answer, or gone):
    /// not a refusal by the device.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DmFailure::NoResponse | DmFailure::NotRegistered(_))
    }
}

/// A DM operation, independent of any transport detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum DmOp {
    /// GET, optionally with Accept.
    Read { path: String, accept: Option<u16> },
    /// GET with Accept 40.
    Discover { path: String },
    /// PUT (replace) or POST (partial update) with a content format.
    Write {
        path: String,
        replace: bool,
        format: u16,
        #[serde(with = "serde_bytes_hex")]
        payload: Vec<u8>,
    },
    /// POST without Content-Format, optional text arguments (Core 1.1 §6.3.5).
    Execute { path: String, args: Option<String> },
    /// POST on an object path.
    Create {
        path: String,
        format: u16,
        #[serde(with = "serde_bytes_hex")]
        payload: Vec<u8>,
    },
    /// DELETE of an instance.
    Delete { path: String },
    /// PUT with Uri-Query attributes only (Core 1.1 §5.1.2, §6.3.4): raw
    /// `attrs` (`pmin=10`, `pmax` to unset) and/or named `attributes`
    /// (`{"pmin": 1, "pmax": 10, "gt": 20.5, "st": null}`, null unsets).
    WriteAttributes {
        path: String,
        #[serde(default)]
        attrs: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        attributes: BTreeMap<String, serde_json::Value>,
    },
    /// GET with Observe=0.
    Observe { path: String, accept: Option<u16> },
    /// GET with Observe=1 and the token of the observation (RFC 7641 §3.6).
    CancelObserve {
        path: String,
        accept: Option<u16>,
        #[serde(with = "serde_bytes_hex")]
        token: Vec<u8>,
    },
    /// FETCH on the root with the SenML names of `paths` (Core 1.1 §6.3.8);
    /// `format` 110 (default) or 112.
    ReadComposite {
        paths: Vec<String>,
        #[serde(default)]
        format: Option<u16>,
    },
    /// The Read-Composite FETCH with Observe=0 (Core 1.1 §6.4.3).
    ObserveComposite {
        paths: Vec<String>,
        #[serde(default)]
        format: Option<u16>,
    },
    /// The FETCH with Observe=1 and the observation's token; an empty token
    /// ends the server's own observation of exactly these paths.
    CancelObserveComposite {
        paths: Vec<String>,
        #[serde(default)]
        format: Option<u16>,
        #[serde(default, with = "serde_bytes_hex")]
        token: Vec<u8>,
    },
    /// iPATCH on the root (Core 1.1 §6.3.9): `values` is `{"/1/0/1": 120}`
    /// or a SenML JSON list (see [`composite::write_records`]).
    WriteComposite {
        values: serde_json::Value,
        #[serde(default)]
        format: Option<u16>,
    },
}

/// Hex (de)serialisation of byte payloads in JSON.
mod serde_bytes_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// Why a DM operation could not be built or its answer not understood.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DmError {
    /// The path is not an LwM2M path, or has the wrong depth for the operation.
    #[error("invalid path {0:?} for this operation")]
    BadPath(String),
    /// Execute arguments outside the Core 1.1 §6.3.5 grammar.
    #[error("invalid execute arguments {0:?}")]
    BadArgs(String),
    /// The response carries a format the server cannot decode.
    #[error("cannot decode response: {0}")]
    Codec(#[from] CodecError),
    /// An option of the response is malformed.
    #[error("malformed response option")]
    BadOption,
    /// A composite request that breaks a cap or names nothing usable.
    #[error("{0}")]
    Composite(String),
    /// A Write-Attributes attribute this server does not send, or a bad value.
    #[error("invalid attribute: {0}")]
    BadAttribute(String),
}

/// Parses `/o/i/r` text into a [`Path`].
pub fn parse_path(text: &str) -> Result<Path, DmError> {
    let segments: Vec<&str> = text.trim_matches('/').split('/').collect();
    Path::from_segments(&segments).ok_or_else(|| DmError::BadPath(text.to_string()))
}

/// Core 1.1 §6.3.5 argument list: `d` or `d='chars'`, comma separated, no spaces.
pub fn valid_execute_args(args: &str) -> bool {
    if args.is_empty() {
        return true;
    }
    args.split(',').all(|arg| {
        let b = arg.as_bytes();
        match b {
            [d] => d.is_ascii_digit(),
            [d, b'=', b'\'', rest @ .., b'\''] => {
                d.is_ascii_digit()
                    && rest
                        .iter()
                        .all(|c| matches!(c, b'!' | 0x23..=0x26 | 0x28..=0x5B | 0x5D..=0x7E))
            }
            _ => false,
        }
    })
}

fn segments(path: Path) -> Vec<String> {
    let mut v = vec![path.object.to_string()];
    v.extend(
        [path.instance, path.resource, path.resource_instance]
            .into_iter()
            .flatten()
            .map(|i| i.to_string()),
    );
    v
}

impl DmOp {
    /// The target path of the operation.
    pub fn path(&self) -> &str {
        match self {
            DmOp::Read { path, .. }
            | DmOp::Discover { path }
            | DmOp::Write { path, .. }
            | DmOp::Execute { path, .. }
            | DmOp::Create { path, .. }
            | DmOp::Delete { path }
            | DmOp::WriteAttributes { path, .. }
            | DmOp::Observe { path, .. }
            | DmOp::CancelObserve { path, .. } => path,
            DmOp::ReadComposite { .. }
            | DmOp::ObserveComposite { .. }
            | DmOp::CancelObserveComposite { .. }
            | DmOp::WriteComposite { .. } => "/",
        }
    }

    /// True for the composite operations (FETCH/iPATCH on the root).
    pub fn is_composite(&self) -> bool {
        self.path() == "/"
    }

    /// A composite operation's request (reference §6, RFC 8132).
    fn composite_packet(&self, root: &str) -> Result<Packet, DmError> {
        let read = |paths: &[String], fmt: Option<u16>| -> Result<_, DmError> {
            let f = composite::format(fmt)?;
            Ok((f, composite::read_body(&composite::parse_paths(paths)?, f)?))
        };
        Ok(match self {
            DmOp::ReadComposite { paths, format } => {
                let (f, body) = read(paths, *format)?;
                composite::request(root, RequestType::Fetch, None, f, body)
            }
            DmOp::ObserveComposite { paths, format } => {
                let (f, body) = read(paths, *format)?;
                composite::request(root, RequestType::Fetch, Some(0), f, body)
            }
            DmOp::CancelObserveComposite {
                paths,
                format,
                token,
            } => {
                let (f, body) = read(paths, *format)?;
                let mut p = composite::request(root, RequestType::Fetch, Some(1), f, body);
                p.set_token(token.clone());
                p
            }
            DmOp::WriteComposite { values, format } => {
                let f = composite::format(*format)?;
                let records = composite::write_records(values)?;
                let body = composite::encode(&records, f)?;
                composite::request(root, RequestType::IPatch, None, f, body)
            }
            _ => return Err(DmError::BadPath(self.path().to_string())),
        })
    }

    /// Builds the CoAP request (CON, no MID/token yet) under the client's
    /// alternate root `root` (`""` for the default). Checks path depth per
    /// reference §2's table.
    pub fn to_packet(&self, root: &str) -> Result<Packet, DmError> {
        if self.is_composite() {
            return self.composite_packet(root);
        }
        let path = parse_path(self.path())?;
        let bad = || DmError::BadPath(self.path().to_string());
        let (method, ok) = match self {
            DmOp::Read { .. } | DmOp::Observe { .. } | DmOp::CancelObserve { .. } => {
                (RequestType::Get, true)
            }
            DmOp::Discover { .. } => (RequestType::Get, path.resource_instance.is_none()),
            DmOp::Write { replace, .. } => (
                if *replace {
                    RequestType::Put
                } else {
                    RequestType::Post
                },
                path.instance.is_some(),
            ),
            DmOp::Execute { .. } => (RequestType::Post, path.depth() == 3),
            DmOp::Create { .. } => (RequestType::Post, path.depth() == 1),
            DmOp::Delete { .. } => (RequestType::Delete, path.depth() == 2),
            DmOp::WriteAttributes { .. } => (RequestType::Put, true),
            _ => (RequestType::Fetch, false),
        };
        if !ok {
            return Err(bad());
        }
        let mut segs: Vec<String> = root
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        segs.extend(segments(path));
        let seg_refs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let mut p = msg::request(method, &seg_refs);
        match self {
            DmOp::Read { accept, .. } => {
                if let Some(a) = accept {
                    msg::set_uint(&mut p, CoapOption::Accept, u64::from(*a));
                }
            }
            DmOp::Discover { .. } => msg::set_uint(&mut p, CoapOption::Accept, 40),
            DmOp::Write {
                format, payload, ..
            }
            | DmOp::Create {
                format, payload, ..
            } => {
                msg::set_uint(&mut p, CoapOption::ContentFormat, u64::from(*format));
                p.payload = payload.clone();
            }
            DmOp::Execute { args, .. } => {
                if let Some(a) = args {
                    if !valid_execute_args(a) {
                        return Err(DmError::BadArgs(a.clone()));
                    }
                    if !a.is_empty() {
                        msg::set_uint(&mut p, CoapOption::ContentFormat, 0);
                        p.payload = a.as_bytes().to_vec();
                    }
                }
            }
            DmOp::Delete { .. } => {}
            DmOp::WriteAttributes {
                attrs, attributes, ..
            } => {
                let mut queries = attrs.clone();
                queries.extend(attribute_queries(attributes)?);
                if queries.is_empty() {
                    return Err(DmError::BadAttribute("no attributes given".into()));
                }
                msg::add_strings(&mut p, CoapOption::UriQuery, &queries);
            }
            DmOp::Observe { accept, .. } => {
                msg::set_uint(&mut p, CoapOption::Observe, 0);
                if let Some(a) = accept {
                    msg::set_uint(&mut p, CoapOption::Accept, u64::from(*a));
                }
            }
            DmOp::CancelObserve { accept, token, .. } => {
                msg::set_uint(&mut p, CoapOption::Observe, 1);
                if let Some(a) = accept {
                    msg::set_uint(&mut p, CoapOption::Accept, u64::from(*a));
                }
                p.set_token(token.clone());
            }
            // Built by `composite_packet`.
            DmOp::ReadComposite { .. }
            | DmOp::ObserveComposite { .. }
            | DmOp::CancelObserveComposite { .. }
            | DmOp::WriteComposite { .. } => {}
        }
        Ok(p)
    }
}

/// Uri-Query entries for named Write-Attributes `attributes` (Core 1.1
/// §5.1.2): `pmin`/`pmax`/`epmin`/`epmax` take whole seconds, `gt`/`lt`/`st`
/// numbers (`st` not negative); null (or `""`) sends the bare name, which
/// removes the attribute.
pub fn attribute_queries(
    attributes: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<String>, DmError> {
    use serde_json::Value as Json;
    let mut out = Vec::with_capacity(attributes.len());
    for (name, v) in attributes {
        let bad = || DmError::BadAttribute(format!("{name}={v}"));
        let text = match v {
            Json::Null => None,
            Json::String(s) if s.trim().is_empty() => None,
            Json::String(s) => Some(s.trim().to_string()),
            Json::Number(n) => Some(n.to_string()),
            _ => return Err(bad()),
        };
        match (name.as_str(), text) {
            ("pmin" | "pmax" | "epmin" | "epmax" | "gt" | "lt" | "st", None) => {
                out.push(name.clone());
            }
            ("pmin" | "pmax" | "epmin" | "epmax", Some(t)) => {
                let n: u32 = t.parse().map_err(|_| bad())?;
                out.push(format!("{name}={n}"));
            }
            ("gt" | "lt" | "st", Some(t)) => {
                let f: f64 = t.parse().map_err(|_| bad())?;
                if !f.is_finite() || (name == "st" && f < 0.0) {
                    return Err(bad());
                }
                out.push(format!("{name}={t}"));
            }
            _ => return Err(DmError::BadAttribute(format!("unknown attribute {name}"))),
        }
    }
    Ok(out)
}

/// A decoded DM response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DmReply {
    /// CoAP response code (e.g. `0x45` for 2.05).
    pub code: u8,
    /// Decoded values of a Read/Observe/notification, as absolute paths.
    pub values: Vec<(Path, Value)>,
    /// Links of a Discover.
    pub links: Vec<Link>,
    /// Location-Path of a Create (`/9/3`).
    pub location: Option<String>,
    /// Observe sequence number, if present.
    pub observe: Option<u32>,
    /// Content format of the payload, if any.
    pub format: Option<u16>,
    /// Raw payload, kept for formats the server does not decode.
    pub payload: Vec<u8>,
}

impl DmReply {
    /// True for a 2.xx code.
    pub fn is_success(&self) -> bool {
        Code(self.code).is_success()
    }
    /// The value at `path`, if the reply carries it.
    pub fn value(&self, path: Path) -> Option<&Value> {
        self.values.iter().find(|(p, _)| *p == path).map(|(_, v)| v)
    }
    /// `c.dd` text of the response code.
    pub fn code_text(&self) -> String {
        format!("{}.{:02}", self.code >> 5, self.code & 0x1F)
    }
}

/// Resource types the server knows for decoding TLV and text; resources not
/// listed decode as opaque (TLV) or string (text) so nothing is lost.
pub fn known_type(path: Path) -> Option<DataType> {
    use DataType::*;
    let r = path.resource?;
    Some(match (path.object, r) {
        // Object 9 (SwMgmt §6 resource table).
        (9, 0 | 1 | 3 | 13 | 14 | 15 | 16) => String,
        (9, 2) => Opaque,
        (9, 4 | 6 | 10 | 11) => None,
        (9, 5 | 17) => ObjLink,
        (9, 7 | 9 | 18) => Integer,
        (9, 8 | 12) => Boolean,
        // Object 3 Device.
        (3, 0..=3 | 14 | 15 | 17..=19) => String,
        (3, 4 | 5 | 12) => None,
        (3, 6..=11 | 20 | 21) => Integer,
        (3, 13) => Time,
        (3, 16) => String,
        // Object 1 Server.
        (1, 0..=3 | 5 | 11..=13 | 17..=20) => Integer,
        (1, 4 | 8 | 9) => None,
        (1, 6 | 16) => Boolean,
        (1, 7 | 22) => String,
        _ => return Option::None,
    })
}

/// Decodes a DM response for `path` (the request's target).
pub fn parse_reply(path: Path, packet: &Packet) -> Result<DmReply, DmError> {
    parse_reply_as(path, packet, None)
}

/// Like [`parse_reply`], with the format to assume when the response has no
/// Content-Format (a Discover answer is link format even if unlabelled).
pub fn parse_reply_as(
    path: Path,
    packet: &Packet,
    default_format: Option<u16>,
) -> Result<DmReply, DmError> {
    let mut reply = reply_header(packet)?;
    if !Code(reply.code).is_success() || packet.payload.is_empty() {
        return Ok(reply);
    }
    let format = reply.format;
    let cf = format
        .or(default_format)
        .map(ContentFormat::from_code)
        .unwrap_or(Some(ContentFormat::Text));
    decode_values(&mut reply, path, packet, cf)?;
    Ok(reply)
}

/// A reply's code, options and raw payload, values not yet decoded.
pub(crate) fn reply_header(packet: &Packet) -> Result<DmReply, DmError> {
    let code = Code::of(packet).0;
    let format = msg::get_uint(packet, CoapOption::ContentFormat, 2)
        .map_err(|_| DmError::BadOption)?
        .map(|f| f as u16);
    let observe = msg::get_uint(packet, CoapOption::Observe, 3)
        .map_err(|_| DmError::BadOption)?
        .map(|v| v as u32);
    let location = packet.get_option(CoapOption::LocationPath).map(|segs| {
        segs.iter()
            .map(|s| format!("/{}", String::from_utf8_lossy(s)))
            .collect::<String>()
    });
    Ok(DmReply {
        code,
        observe,
        format,
        location,
        payload: packet.payload.clone(),
        ..DmReply::default()
    })
}

fn decode_values(
    reply: &mut DmReply,
    path: Path,
    packet: &Packet,
    cf: Option<ContentFormat>,
) -> Result<(), DmError> {
    match cf {
        Some(ContentFormat::LinkFormat) => reply.links = link::parse(&packet.payload)?,
        Some(ContentFormat::Opaque) if path.resource.is_some() => {
            reply.values = vec![(path, Value::Opaque(packet.payload.clone()))];
        }
        Some(
            f @ (ContentFormat::Tlv
            | ContentFormat::SenmlJson
            | ContentFormat::SenmlCbor
            | ContentFormat::Text),
        ) => {
            let fallback = if f == ContentFormat::Text {
                DataType::String
            } else {
                DataType::Opaque
            };
            let types = move |p: Path| {
                Some(
                    known_type(p)
                        .filter(|t| *t != DataType::None)
                        .unwrap_or(fallback),
                )
            };
            let senml = matches!(f, ContentFormat::SenmlJson | ContentFormat::SenmlCbor);
            let types_senml = |p: Path| known_type(p).filter(|t| *t != DataType::None);
            let base = if senml {
                Path::object(path.object)
            } else {
                path
            };
            reply.values = if senml {
                codec::decode_flat(&packet.payload, base, f, &types_senml)?
            } else {
                codec::decode_flat(&packet.payload, base, f, &types)?
            };
        }
        _ => {} // kept raw in `payload`
    }
    Ok(())
}

/// A value as JSON for the HTTP API.
pub fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::String(s) | Value::CoreLink(s) => json!(s),
        Value::Integer(i) | Value::Time(i) => json!(i),
        Value::Unsigned(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Boolean(b) => json!(b),
        Value::Opaque(b) => json!({ "hex": hex::encode(b) }),
        Value::ObjLink(l) => json!(format!("{}:{}", l.object, l.instance)),
    }
}

/// Integer view of a value (Update State, Update Result arrive as Integer,
/// or as String/Opaque when decoded without a type).
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) | Value::Time(i) => Some(*i),
        Value::Unsigned(u) => i64::try_from(*u).ok(),
        Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
        Value::Boolean(b) => Some(i64::from(*b)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Boolean view of a value (`1`/`true`).
pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        Value::String(s) => match s.trim() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        },
        other => as_int(other).map(|i| i != 0),
    }
}

/// String view of a value.
pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Opaque(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::MessageType;

    use crate::core::test_bytes::{hex, wire};

    #[test]
    fn request_builders_match_reference_vectors() {
        // Reference §2: CON GET /3/0, token 07, Accept 40.
        let p = DmOp::Discover {
            path: "/3/0".into(),
        }
        .to_packet("")
        .unwrap();
        assert_eq!(
            wire(p, 0x0103, &[0x07]),
            hex("41 01 01 03 07 B1 33 01 30 61 28")
        );
        // Write-Attributes PUT /3/0/9?pmin=10&pmax=60&st=1.
        let attrs = vec!["pmin=10".into(), "pmax=60".into(), "st=1".into()];
        let p = DmOp::WriteAttributes {
            path: "/3/0/9".into(),
            attrs,
            attributes: BTreeMap::new(),
        }
        .to_packet("")
        .unwrap();
        assert_eq!(
            wire(p, 0x0104, &[0x08]),
            hex(
                "41 03 01 04 08 B1 33 01 30 01 39 47 70 6D 69 6E 3D 31 30 07 70 6D 61 78 3D 36 30 04 73 74 3D 31"
            )
        );
        // Execute POST /9/0/6 "0='v1',1".
        let p = DmOp::Execute {
            path: "/9/0/6".into(),
            args: Some("0='v1',1".into()),
        }
        .to_packet("")
        .unwrap();
        assert_eq!(
            wire(p, 0x0106, &[0x0A]),
            hex("41 02 01 06 0A B1 39 01 30 01 36 10 FF 30 3D 27 76 31 27 2C 31")
        );
        // Reference §3: observe / cancel of /3/0/9 with Accept 0, token 01 02.
        let p = DmOp::Observe {
            path: "/3/0/9".into(),
            accept: Some(0),
        }
        .to_packet("")
        .unwrap();
        assert_eq!(
            wire(p, 0x0101, &[1, 2]),
            hex("42 01 01 01 01 02 60 51 33 01 30 01 39 60")
        );
        let p = DmOp::CancelObserve {
            path: "/3/0/9".into(),
            accept: Some(0),
            token: vec![1, 2],
        }
        .to_packet("")
        .unwrap();
        assert_eq!(
            wire(p, 0x0102, &[1, 2]),
            hex("42 01 01 02 01 02 61 01 51 33 01 30 01 39 60")
        );
    }

    #[test]
    fn depth_and_argument_checks() {
        let bad = |op: DmOp| op.to_packet("").unwrap_err();
        assert!(matches!(
            bad(DmOp::Execute {
                path: "/9/0".into(),
                args: None
            }),
            DmError::BadPath(_)
        ));
        assert!(matches!(
            bad(DmOp::Delete { path: "/9".into() }),
            DmError::BadPath(_)
        ));
        assert!(matches!(
            bad(DmOp::Create {
                path: "/9/0".into(),
                format: 11542,
                payload: vec![]
            }),
            DmError::BadPath(_)
        ));
        assert!(matches!(
            bad(DmOp::Write {
                path: "/9".into(),
                replace: true,
                format: 0,
                payload: vec![]
            }),
            DmError::BadPath(_)
        ));
        assert!(matches!(
            bad(DmOp::Read {
                path: "/x/0".into(),
                accept: None
            }),
            DmError::BadPath(_)
        ));
        assert!(matches!(
            bad(DmOp::Execute {
                path: "/9/0/6".into(),
                args: Some("1, 2".into())
            }),
            DmError::BadArgs(_)
        ));
        assert!(valid_execute_args("1"));
        assert!(valid_execute_args("7,0='https://www.omaspecworks.org'"));
        assert!(!valid_execute_args("0='a b'"));
        assert!(!valid_execute_args("12"));
        // Alternate root is prefixed.
        let p = DmOp::Delete {
            path: "/9/1".into(),
        }
        .to_packet("/lwm2m")
        .unwrap();
        assert_eq!(msg::uri_path(&p).unwrap(), vec!["lwm2m", "9", "1"]);
    }

    #[test]
    fn parses_text_tlv_and_notification_replies() {
        // Reference §3: response "100" to the observe of /3/0/9.
        let p = Packet::from_bytes(&hex("62 45 01 01 01 02 61 01 60 FF 31 30 30")).unwrap();
        let r = parse_reply(Path::resource(3, 0, 9), &p).unwrap();
        assert_eq!(r.value(Path::resource(3, 0, 9)), Some(&Value::Integer(100)));
        assert_eq!(r.observe, Some(1));
        assert_eq!(r.code_text(), "2.05");
        // NON notification "95".
        let p = Packet::from_bytes(&hex("52 45 50 01 01 02 61 02 60 FF 39 35")).unwrap();
        let r = parse_reply(Path::resource(3, 0, 9), &p).unwrap();
        assert_eq!(
            (r.observe, r.value(Path::resource(3, 0, 9))),
            (Some(2), Some(&Value::Integer(95)))
        );
        // TLV read of /9/0: PkgName "app", Update State 3 (resource TLVs).
        let mut resp = Packet::new();
        resp.header.set_type(MessageType::Acknowledgement);
        Code::CONTENT.set_on(&mut resp);
        msg::set_uint(&mut resp, CoapOption::ContentFormat, 11542);
        resp.payload = hex("C3 00 61 70 70 C1 07 03");
        let r = parse_reply(Path::instance(9, 0), &resp).unwrap();
        assert_eq!(
            r.value(Path::resource(9, 0, 0)),
            Some(&Value::String("app".into()))
        );
        assert_eq!(r.value(Path::resource(9, 0, 7)).and_then(as_int), Some(3));
        // Malformed TLV is an error, not a panic.
        resp.payload = hex("C3 00 61");
        assert!(matches!(
            parse_reply(Path::instance(9, 0), &resp),
            Err(DmError::Codec(_))
        ));
        // Discover answer.
        msg::set_uint(&mut resp, CoapOption::ContentFormat, 40);
        resp.payload = b"</3/0/7>;dim=2,</3/0/7/0>".to_vec();
        assert_eq!(
            parse_reply(Path::resource(3, 0, 7), &resp)
                .unwrap()
                .links
                .len(),
            2
        );
        // Created with Location-Path.
        let mut created = Packet::new();
        Code::CREATED.set_on(&mut created);
        msg::add_strings(&mut created, CoapOption::LocationPath, &["9", "4"]);
        assert_eq!(
            parse_reply(Path::object(9), &created)
                .unwrap()
                .location
                .as_deref(),
            Some("/9/4")
        );
        // Errors carry their code.
        let mut nf = Packet::new();
        Code::NOT_FOUND.set_on(&mut nf);
        let r = parse_reply(Path::object(9), &nf).unwrap();
        assert!(!r.is_success());
        assert_eq!(r.code_text(), "4.04");
    }

    #[test]
    fn named_attributes_become_uri_queries() {
        let attrs = |v: serde_json::Value| {
            let map: BTreeMap<String, serde_json::Value> = serde_json::from_value(v).unwrap();
            attribute_queries(&map)
        };
        assert_eq!(
            attrs(serde_json::json!({"pmin": 10, "pmax": "60", "st": 1.5, "gt": null, "lt": -2}))
                .unwrap(),
            vec!["gt", "lt=-2", "pmax=60", "pmin=10", "st=1.5"]
        );
        for bad in [
            serde_json::json!({"pmin": -1}),
            serde_json::json!({"pmax": 1.5}),
            serde_json::json!({"st": -1}),
            serde_json::json!({"gt": "x"}),
            serde_json::json!({"gt": true}),
            serde_json::json!({"dim": 1}),
        ] {
            assert!(matches!(attrs(bad), Err(DmError::BadAttribute(_))));
        }
        // Sent as Uri-Query options of a PUT; none at all is refused.
        let op: DmOp = serde_json::from_value(serde_json::json!(
            {"op": "write-attributes", "path": "/3/0/9", "attributes": {"pmin": 10}}
        ))
        .unwrap();
        let p = op.to_packet("").unwrap();
        assert_eq!(
            wire(p, 0x0104, &[0x08]),
            hex("41 03 01 04 08 B1 33 01 30 01 39 47 70 6D 69 6E 3D 31 30")
        );
        let none: DmOp =
            serde_json::from_value(serde_json::json!({"op": "write-attributes", "path": "/3/0/9"}))
                .unwrap();
        assert!(matches!(none.to_packet(""), Err(DmError::BadAttribute(_))));
    }

    #[test]
    fn value_views() {
        assert_eq!(as_int(&Value::String("4".into())), Some(4));
        assert_eq!(as_bool(&Value::String("1".into())), Some(true));
        assert_eq!(as_bool(&Value::Integer(0)), Some(false));
        assert_eq!(
            as_string(&Value::Opaque(b"v2".to_vec())).as_deref(),
            Some("v2")
        );
    }
}
