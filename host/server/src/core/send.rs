//! LwM2M 1.1 Send received (Core 1.1 §6.4, Information Reporting: Send): a
//! registered device POSTs values to `/dp` as SenML CBOR or SenML JSON (the
//! only formats Send uses, reference §4). The server keeps the newest value
//! per path, next to the observed ones the API shows
//! (`GET /api/devices/{ep}/observed`), and answers 2.04.
//!
//! Who may Send: only a registered endpoint, from the address it registered
//! (or last updated) from, and only if its session still passes the access
//! rule of registration ([`crate::core::access`]); anyone else gets 4.03 and
//! nothing is kept. A device can add at most [`MAX_SENT_PATHS`] paths of its
//! own this way.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use coap_lite::{CoapOption, Packet};
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::codec;
use wasmdm_proto::model::{ContentFormat, Path, Value};

use super::dm::{known_type, value_json};
use super::registry::Registry;

/// Paths one device's Sends may add to its kept values (a path already kept
/// is always updated).
pub const MAX_SENT_PATHS: usize = 256;
/// Largest Send payload decoded (what one datagram carries).
pub const MAX_SEND_BYTES: usize = 16 * 1024;

/// The endpoint registered from `peer`, if any.
pub fn sender(registry: &Registry, peer: SocketAddr) -> Option<String> {
    registry.endpoint_at(peer).map(str::to_string)
}

/// Decodes a Send payload into its values: 4.15 for a format other than
/// SenML CBOR/JSON, 4.13 beyond [`MAX_SEND_BYTES`], 4.00 if malformed or empty.
pub fn decode(packet: &Packet) -> Result<Vec<(Path, Value)>, Code> {
    let format = msg::get_uint(packet, CoapOption::ContentFormat, 2)
        .map_err(|_| Code::BAD_OPTION)?
        .and_then(|f| ContentFormat::from_code(f as u16));
    let format = match format {
        Some(f @ (ContentFormat::SenmlCbor | ContentFormat::SenmlJson)) => f,
        _ => return Err(Code::UNSUPPORTED_CONTENT_FORMAT),
    };
    if packet.payload.len() > MAX_SEND_BYTES {
        return Err(Code::REQUEST_ENTITY_TOO_LARGE);
    }
    let records = match format {
        ContentFormat::SenmlCbor => codec::senml::decode_cbor(&packet.payload, &known),
        _ => codec::senml::decode_json(&packet.payload, &known),
    }
    .map_err(|_| Code::BAD_REQUEST)?;
    let values: Option<Vec<(Path, Value)>> = records
        .into_iter()
        .map(|r| Some((r.path, r.value?)))
        .collect();
    match values {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Code::BAD_REQUEST),
    }
}

fn known(path: Path) -> Option<wasmdm_proto::model::DataType> {
    known_type(path).filter(|t| *t != wasmdm_proto::model::DataType::None)
}

/// Keeps the newest value per path in `kept` (a device's entry); a new path
/// beyond [`MAX_SENT_PATHS`] kept ones is dropped. Returns how many were kept.
pub fn keep(kept: &mut BTreeMap<String, serde_json::Value>, values: &[(Path, Value)]) -> usize {
    let mut n = 0;
    for (path, value) in values {
        let key = path.to_string();
        if !kept.contains_key(&key) && kept.len() >= MAX_SENT_PATHS {
            continue;
        }
        kept.insert(key, value_json(value));
        n += 1;
    }
    n
}

/// Handles a `POST /dp`: `endpoint` is the sender (from [`sender`]), `allowed`
/// whether its session passes the access rule. Returns the response and
/// the values to keep.
pub fn handle(
    packet: &Packet,
    endpoint: Option<&str>,
    allowed: bool,
) -> (Packet, Option<Vec<(Path, Value)>>) {
    if endpoint.is_none() || !allowed {
        return (msg::response_to(packet, Code::FORBIDDEN), None);
    }
    match decode(packet) {
        Ok(values) => (msg::response_to(packet, Code::CHANGED), Some(values)),
        Err(code) => (msg::response_to(packet, code), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::RequestType;

    fn send(cf: u16, body: &[u8]) -> Packet {
        let mut p = msg::request(RequestType::Post, &["dp"]);
        msg::set_uint(&mut p, CoapOption::ContentFormat, cf.into());
        p.payload = body.to_vec();
        p
    }

    /// The bytes `wasmdm device` sends for /3303/0/5700 = 21.5 (proto's test).
    fn cbor_21_5() -> Vec<u8> {
        let mut b = vec![0x81, 0xA2, 0x00, 0x6C];
        b.extend_from_slice(b"/3303/0/5700");
        b.extend_from_slice(&[0x02, 0xF9, 0x4D, 0x60]);
        b
    }

    #[test]
    fn senml_cbor_and_json_sends_are_decoded_and_answered_2_04() {
        let (resp, values) = handle(&send(112, &cbor_21_5()), Some("dev"), true);
        assert_eq!(Code::of(&resp), Code::CHANGED);
        assert_eq!(
            values.unwrap(),
            vec![(Path::resource(3303, 0, 5700), Value::Float(21.5))]
        );
        let json = br#"[{"bn":"/3303/0/","n":"5700","v":21.5},{"n":"5701","vs":"Cel"},{"bn":"/3/0/","n":"9","v":80}]"#;
        let (resp, values) = handle(&send(110, json), Some("dev"), true);
        assert_eq!(Code::of(&resp), Code::CHANGED);
        let values = values.unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(
            values[1],
            (Path::resource(3303, 0, 5701), Value::String("Cel".into()))
        );
        assert_eq!(values[2], (Path::resource(3, 0, 9), Value::Integer(80)));
    }

    #[test]
    fn strangers_bad_formats_and_bad_payloads_are_refused() {
        let body = cbor_21_5();
        for (endpoint, allowed) in [(None, true), (Some("dev"), false)] {
            let (resp, values) = handle(&send(112, &body), endpoint, allowed);
            assert_eq!(Code::of(&resp), Code::FORBIDDEN);
            assert!(values.is_none());
        }
        let code = |p: Packet| Code::of(&handle(&p, Some("dev"), true).0);
        assert_eq!(code(send(11542, &body)), Code::UNSUPPORTED_CONTENT_FORMAT);
        assert_eq!(code(send(0, b"21.5")), Code::UNSUPPORTED_CONTENT_FORMAT);
        assert_eq!(code(send(112, &body[..10])), Code::BAD_REQUEST);
        assert_eq!(code(send(110, b"[]")), Code::BAD_REQUEST);
        assert_eq!(code(send(110, br#"[{"n":"/3/0/9"}]"#)), Code::BAD_REQUEST);
        assert_eq!(
            code(send(110, &vec![b' '; MAX_SEND_BYTES + 1])),
            Code::REQUEST_ENTITY_TOO_LARGE
        );
    }

    #[test]
    fn newest_values_are_kept_per_path_up_to_the_cap() {
        let mut kept = BTreeMap::new();
        let p = Path::resource(3303, 0, 5700);
        assert_eq!(keep(&mut kept, &[(p, Value::Float(1.0))]), 1);
        assert_eq!(keep(&mut kept, &[(p, Value::Float(2.5))]), 1);
        assert_eq!(kept["/3303/0/5700"], serde_json::json!(2.5));
        let many: Vec<_> = (0..300u16)
            .map(|i| (Path::resource(3303, i, 5700), Value::Integer(i.into())))
            .collect();
        keep(&mut kept, &many);
        assert_eq!(kept.len(), MAX_SENT_PATHS);
        // A kept path still updates at the cap.
        assert_eq!(keep(&mut kept, &[(p, Value::Float(3.0))]), 1);
        assert_eq!(kept["/3303/0/5700"], serde_json::json!(3.0));
    }
}
