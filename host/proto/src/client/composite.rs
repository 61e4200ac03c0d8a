//! LwM2M 1.1 composite operations on the root path `/`, with SenML JSON or
//! CBOR bodies naming full paths (reference §6, T7.4.4-6..-8).
//!
//! - Read-Composite (Core 1.1 §6.3.8): FETCH with a list of names and no
//!   values; the answer holds every value under those paths, one record per
//!   value named by its full path, in the format asked for (Accept, else the
//!   request's). A path that does not exist, or has no value yet (an app
//!   resource not published), is left out; if nothing at all could be read
//!   the answer is 4.04.
//! - Observe-Composite (Core 1.1 §6.4.3): the same FETCH with Observe 0
//!   registers one observation of the whole list; each notification is the
//!   Read-Composite answer again. Each path is judged under its own
//!   attributes, as its plain observation would be (§5.1.2): a change of a
//!   path counts when that path's gt/lt/st condition holds (any change when
//!   it has none) and goes out once that path's pmin passed; the shortest
//!   pmax of the paths sends one anyway (see [`Registry::changed`]).
//!   Cancel: the same FETCH with Observe 1, or RST to a notification. It
//!   counts against the observation caps ([`MAX_PER_PEER`],
//!   [`MAX_OBSERVATIONS`]); refused at a cap, the answer carries no Observe
//!   (RFC 7641 §4.1).
//! - Write-Composite (Core 1.1 §6.3.9): iPATCH with records carrying values
//!   for resources or resource instances, possibly in several objects. It is
//!   all-or-nothing: every path exists (4.04), is writable (4.05), its value
//!   fits the resource's type (4.00), and then every object checks all of
//!   its values in order (`Object::check_writes`: ranges, formats, states)
//!   before the first is written; a refusal answers its code and changes
//!   nothing. An app's value is answered later by the app and cannot be
//!   taken back, so it must be the only record (else 4.05); its answer is
//!   held until the driver completes it, like a plain Write.
//!
//! Both bodies may come block-wise (Block1, RFC 8132 §2.1 with RFC 7959
//! §2.5; see `block1.rs`), and a large Read-Composite answer goes out
//! block-wise (Block2) like a Read's.
//!
//! Any path in /0 makes each of them 4.01 (reference §2). The subsection
//! numbers follow the 1.1 Core table of contents; the reference
//! used here has the payloads (T7.4.4-6..-8) but not the text.
//!
//! [`Registry::changed`]: crate::coap::observe::Registry::changed
//! [`MAX_PER_PEER`]: crate::coap::observe::MAX_PER_PEER
//! [`MAX_OBSERVATIONS`]: crate::coap::observe::MAX_OBSERVATIONS

use std::time::Instant;

use coap_lite::{CoapOption, Packet};

use super::Client;
use super::bodies::BodyKey;
use super::dispatch::{self, Failure, Outcome};
use crate::coap::endpoint::InboundRequest;
use crate::coap::msg::{self, Code};
use crate::codec::senml::{self, RawRecord, Record};
use crate::codec::{ResourceTypes, flatten};
use crate::model::{ContentFormat, DataType, Path, ResourceValue};
use crate::object::{PlannedWrite, apply_write};

/// The FETCH method code (RFC 8132).
pub const FETCH: Code = Code(0x05);
/// The iPATCH method code (RFC 8132).
pub const IPATCH: Code = Code(0x07);
/// Paths one Read-Composite or Observe-Composite may name, and records one
/// Write-Composite may carry.
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

/// A request that names paths only: no type to convert values to.
const NO_TYPES: fn(Path) -> Option<DataType> = |_| None;

fn bad_option(_: impl std::fmt::Debug) -> Failure {
    Code::BAD_OPTION.into()
}

/// The payload's SenML format: missing Content-Format 4.00, another 4.15.
fn payload_format(request: &Packet) -> Result<ContentFormat, Failure> {
    let cf = msg::get_uint(request, CoapOption::ContentFormat, 2).map_err(bad_option)?;
    if cf.is_none() {
        return Err(Code::BAD_REQUEST.into());
    }
    Ok(senml_format(cf).ok_or(Code::UNSUPPORTED_CONTENT_FORMAT)?)
}

fn decode(
    payload: &[u8],
    format: ContentFormat,
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, Failure> {
    match format {
        ContentFormat::SenmlCbor => senml::decode_cbor(payload, types),
        _ => senml::decode_json(payload, types),
    }
    .map_err(|_| Failure::from(Code::BAD_REQUEST))
}

/// Paths of a Read-/Observe-Composite request and the answer's format.
fn read_request(request: &Packet) -> Result<(Vec<Path>, ContentFormat), Failure> {
    let cf = msg::get_uint(request, CoapOption::ContentFormat, 2).map_err(bad_option)?;
    let format = senml_format(cf).ok_or(Code::UNSUPPORTED_CONTENT_FORMAT)?;
    let accept = msg::get_uint(request, CoapOption::Accept, 2).map_err(bad_option)?;
    let answer_format = match accept {
        None => format,
        some => senml_format(some).ok_or(Code::NOT_ACCEPTABLE)?,
    };
    let records = decode(&request.payload, format, &NO_TYPES)?;
    if records.is_empty() || records.len() > MAX_COMPOSITE_PATHS {
        return Err(Code::BAD_REQUEST.into());
    }
    if records.iter().any(|r| r.path.object == 0) {
        return Err(Code::UNAUTHORIZED.into());
    }
    Ok((records.into_iter().map(|r| r.path).collect(), answer_format))
}

impl Client {
    /// Answers a Read-Composite request.
    pub(super) fn read_composite(&self, request: &Packet) -> Result<Outcome, Failure> {
        let (paths, format) = read_request(request)?;
        let response = self.composite_answer(request, &paths, format)?;
        Ok(Outcome {
            response,
            effects: Vec::new(),
            changed: Vec::new(),
            instances_changed: false,
        })
    }

    /// A FETCH on `/`: Read-Composite, with Observe 0 Observe-Composite,
    /// with Observe 1 its cancellation (RFC 7641 §3.6: that answer carries
    /// no Observe option).
    /// `body` is the request with its whole payload (assembled from Block1).
    pub(super) fn fetch(
        &mut self,
        now: Instant,
        req: &InboundRequest,
        body: &Packet,
    ) -> Result<Outcome, Failure> {
        let observe = msg::get_uint(body, CoapOption::Observe, 3).map_err(bad_option)?;
        let (paths, format) = read_request(body)?;
        let key = (req.peer, req.packet.get_token().to_vec());
        if observe == Some(1) {
            self.observers.remove(&key);
            self.last_notified.remove(&key);
            self.notify_keys.remove(&key);
        }
        let mut out = self.read_composite(body)?;
        if observe != Some(0) {
            return Ok(out);
        }
        // Refused at a cap: a plain answer, without Observe.
        let values = self.numeric_values(&paths);
        let Ok(replaced) =
            self.observers
                .add_composite(now, key.clone(), paths, format.code(), values)
        else {
            return Ok(out);
        };
        for old in replaced {
            self.last_notified.remove(&old);
            self.notify_keys.remove(&old);
        }
        self.notify_keys
            .insert(key.clone(), BodyKey::of(req.peer, &req.packet));
        self.last_notified.insert(key, out.response.payload.clone());
        let seq = self.observers.next_seq();
        msg::set_uint(&mut out.response, CoapOption::Observe, seq.into());
        Ok(out)
    }

    /// A composite notification's body: the Read-Composite answer of
    /// `paths` in `accept` (the format fixed at registration).
    pub(super) fn composite_notification(
        &self,
        request: &Packet,
        paths: &[Path],
        accept: Option<u16>,
    ) -> Result<Packet, Failure> {
        let format = senml_format(accept.map(u64::from)).unwrap_or(ContentFormat::SenmlCbor);
        self.composite_answer(request, paths, format)
    }

    fn composite_answer(
        &self,
        request: &Packet,
        paths: &[Path],
        format: ContentFormat,
    ) -> Result<Packet, Failure> {
        let mut out: Vec<RawRecord> = Vec::new();
        for path in paths {
            let Some(obj) = self.object(path.object) else {
                continue;
            };
            let Ok(node) = dispatch::read_node(obj, *path) else {
                continue;
            };
            let values = flatten(&node, *path).map_err(|_| Code::INTERNAL_SERVER_ERROR)?;
            out.extend(values.into_iter().map(|(p, v)| RawRecord {
                n: Some(p.to_string()),
                value: Some(senml::senml_value(&v)),
                ..RawRecord::default()
            }));
        }
        if out.is_empty() {
            return Err(Code::NOT_FOUND.into());
        }
        let body = match format {
            ContentFormat::SenmlCbor => senml::to_cbor(&out),
            _ => senml::to_json(&out),
        }
        .map_err(|_| Failure::from(Code::INTERNAL_SERVER_ERROR))?;
        let mut response = msg::response_to(request, Code::CONTENT);
        msg::set_uint(
            &mut response,
            CoapOption::ContentFormat,
            format.code().into(),
        );
        response.payload = body;
        Ok(response)
    }

    /// Answers a Write-Composite request: everything is checked before the
    /// first write, so a refused request changes nothing.
    pub(super) fn write_composite(&mut self, request: &Packet) -> Result<Outcome, Failure> {
        let format = payload_format(request)?;
        // Pass 1, untyped: which paths, and may they be written at all.
        let untyped = decode(&request.payload, format, &NO_TYPES)?;
        if untyped.is_empty() || untyped.len() > MAX_COMPOSITE_PATHS {
            return Err(Code::BAD_REQUEST.into());
        }
        if untyped.iter().any(|r| r.path.object == 0) {
            return Err(Code::UNAUTHORIZED.into());
        }
        for r in &untyped {
            self.check_writable(r)?;
        }
        // Pass 2: each value against its resource's declared type.
        let objects = &self.objects;
        let types = |p: Path| {
            let obj = objects.iter().find(|o| o.id() == p.object)?;
            dispatch::resource_def(obj.as_ref(), p.resource?).map(|d| d.data_type)
        };
        let records = decode(&request.payload, format, &types)?;
        let mut plan: Vec<(u16, PlannedWrite)> = Vec::with_capacity(records.len());
        for r in records {
            let (Some(instance), Some(resource), Some(value)) =
                (r.path.instance, r.path.resource, r.value)
            else {
                return Err(Code::BAD_REQUEST.into());
            };
            let w = match r.path.resource_instance {
                // A resource instance: a partial update of its resource.
                Some(ri) => PlannedWrite {
                    instance,
                    resource,
                    value: ResourceValue::Multiple(vec![(ri, value)]),
                    replace: false,
                },
                None => PlannedWrite {
                    instance,
                    resource,
                    value: ResourceValue::Single(value),
                    replace: true,
                },
            };
            plan.push((r.path.object, w));
        }
        self.check_plan(&plan)?;
        // Pass 3: every object accepted its values; write them, in order.
        let mut out = Outcome {
            response: msg::response_to(request, Code::CHANGED),
            effects: Vec::new(),
            changed: Vec::new(),
            instances_changed: false,
        };
        for (object, w) in plan {
            let obj = self
                .objects
                .iter_mut()
                .find(|o| o.id() == object)
                .ok_or(Code::NOT_FOUND)?;
            let instance = Path::instance(object, w.instance);
            // Cannot fail after an exact check_writes (see check_plan).
            out.effects.extend(apply_write(obj.as_mut(), w)?);
            if !out.changed.contains(&instance) {
                out.changed.push(instance);
            }
        }
        Ok(out)
    }

    /// All-or-nothing (Core 1.1 §6.3.9: the client writes "all" the values;
    /// a refusal must leave none written): each object checks all of its
    /// values, in request order, before the first is written
    /// (`Object::check_writes`). An app's value is answered later by the
    /// app, which may refuse it when the others are written already, and it
    /// cannot be taken back: it is accepted alone only; with any other
    /// record the request is refused 4.05 and nothing is written (write it
    /// with its own Write-Composite or a plain Write).
    fn check_plan(&self, plan: &[(u16, PlannedWrite)]) -> Result<(), Failure> {
        let later = |o: u16| {
            self.object(o)
                .is_some_and(|obj| obj.writes_answered_later())
        };
        if plan.len() > 1 && plan.iter().any(|(o, _)| later(*o)) {
            return Err(Code::METHOD_NOT_ALLOWED.into());
        }
        let mut seen: Vec<u16> = Vec::new();
        for &(id, _) in plan {
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            let writes: Vec<PlannedWrite> = plan
                .iter()
                .filter(|(o, _)| *o == id)
                .map(|(_, w)| w.clone())
                .collect();
            let obj = self.object(id).ok_or(Code::NOT_FOUND)?;
            obj.check_writes(&writes)?;
        }
        Ok(())
    }

    /// One Write-Composite record: a value for an existing, writable
    /// resource (single) or resource instance (multiple).
    fn check_writable(&self, r: &Record) -> Result<(), Failure> {
        let path = r.path;
        let (Some(i), Some(res)) = (path.instance, path.resource) else {
            return Err(Code::BAD_REQUEST.into());
        };
        if r.value.is_none() {
            return Err(Code::BAD_REQUEST.into());
        }
        let obj = self.object(path.object).ok_or(Code::NOT_FOUND)?;
        if !obj.instances().contains(&i) {
            return Err(Code::NOT_FOUND.into());
        }
        let def = dispatch::resource_def(obj, res).ok_or(Code::NOT_FOUND)?;
        if !def.operations.writable() {
            return Err(Code::METHOD_NOT_ALLOWED.into());
        }
        // A multiple resource takes instance values; a single one none.
        if def.multiple != path.resource_instance.is_some() {
            return Err(Code::BAD_REQUEST.into());
        }
        Ok(())
    }
}
