//! Read-Composite (LwM2M 1.1 Core §6.3 / reference T7.4.4-6, -7): FETCH
//! on the root with a SenML JSON or CBOR list of names and no values; the
//! answer holds every value under those paths, one record per value named by
//! its full path, in the format asked for (Accept, else the request's).
//!
//! A path that does not exist, or has no value yet (an app resource not
//! published), is left out; if nothing at all could be read the answer is
//! 4.04. Any path in /0 makes it 4.01 (reference §2). Observe-Composite is
//! not offered: an Observe option is ignored (the answer carries none,
//! which tells the server no observation was made, RFC 7641 §4.1).

use coap_lite::{CoapOption, Packet};

use super::Client;
use super::dispatch::{self, Failure, Outcome};
use crate::coap::msg::{self, Code};
use crate::codec::flatten;
use crate::codec::senml::{self, RawRecord};
use crate::model::{ContentFormat, DataType, Path};

/// The FETCH method code (RFC 8132).
pub const FETCH: Code = Code(0x05);
/// Paths one Read-Composite may name.
pub const MAX_COMPOSITE_PATHS: usize = 64;

fn senml_format(code: Option<u64>) -> Option<ContentFormat> {
    match code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(ContentFormat::from_code)
    {
        Some(f @ (ContentFormat::SenmlJson | ContentFormat::SenmlCbor)) => Some(f),
        _ => None,
    }
}

impl Client {
    /// Answers a Read-Composite request.
    pub(super) fn read_composite(&self, request: &Packet) -> Result<Outcome, Failure> {
        let cf = msg::get_uint(request, CoapOption::ContentFormat, 2)
            .map_err(|_| Failure::from(Code::BAD_OPTION))?;
        let format = senml_format(cf).ok_or(Code::UNSUPPORTED_CONTENT_FORMAT)?;
        let accept = msg::get_uint(request, CoapOption::Accept, 2)
            .map_err(|_| Failure::from(Code::BAD_OPTION))?;
        let answer_format = match accept {
            None => format,
            some => senml_format(some).ok_or(Code::NOT_ACCEPTABLE)?,
        };
        let no_types = |_: Path| -> Option<DataType> { None };
        let records = match format {
            ContentFormat::SenmlCbor => senml::decode_cbor(&request.payload, &no_types),
            _ => senml::decode_json(&request.payload, &no_types),
        }
        .map_err(|_| Failure::from(Code::BAD_REQUEST))?;
        if records.is_empty() || records.len() > MAX_COMPOSITE_PATHS {
            return Err(Code::BAD_REQUEST.into());
        }
        if records.iter().any(|r| r.path.object == 0) {
            return Err(Code::UNAUTHORIZED.into());
        }
        let mut out: Vec<RawRecord> = Vec::new();
        for r in &records {
            let Some(obj) = self.object(r.path.object) else {
                continue;
            };
            let Ok(node) = dispatch::read_node(obj, r.path) else {
                continue;
            };
            let values = flatten(&node, r.path).map_err(|_| Code::INTERNAL_SERVER_ERROR)?;
            out.extend(values.into_iter().map(|(p, v)| RawRecord {
                n: Some(p.to_string()),
                value: Some(senml::senml_value(&v)),
                ..RawRecord::default()
            }));
        }
        if out.is_empty() {
            return Err(Code::NOT_FOUND.into());
        }
        let body = match answer_format {
            ContentFormat::SenmlCbor => senml::to_cbor(&out),
            _ => senml::to_json(&out),
        }
        .map_err(|_| Failure::from(Code::INTERNAL_SERVER_ERROR))?;
        let mut response = msg::response_to(request, Code::CONTENT);
        msg::set_uint(
            &mut response,
            CoapOption::ContentFormat,
            answer_format.code().into(),
        );
        response.payload = body;
        Ok(Outcome {
            response,
            effects: Vec::new(),
            changed: Vec::new(),
            instances_changed: false,
        })
    }
}
