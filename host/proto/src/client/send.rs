//! LwM2M 1.1 Send (Core 1.1 §6.4, Information Reporting: Send): the client
//! POSTs current values to `/dp` on its own initiative, as SenML CBOR or
//! SenML JSON (the only formats Send uses, reference §4), one record per
//! value named by its full path (`n`, like a Read-Composite answer,
//! T7.4.4-7). Confirmable, so the server's 2.04 acknowledges it.

use std::time::Instant;

use coap_lite::{CoapOption, RequestType};

use super::{Client, dispatch};
use crate::coap::msg::{self, Code};
use crate::codec::flatten;
use crate::codec::senml::{self, RawRecord};
use crate::model::{ContentFormat, Path, ResourceValue, Value};
use crate::object::OpError;
use crate::objects::server::res::MUTE_SEND;

/// Paths one Send may name.
pub const MAX_SEND_PATHS: usize = 64;
/// Largest Send payload (one datagram; no Block1 for Send here).
pub const MAX_SEND_BYTES: usize = 4096;

impl Client {
    /// Sends the current values of `paths` (objects, instances, resources or
    /// resource instances) to the server as a CON `POST /dp`.
    ///
    /// Refused, sending nothing: with no registration, with a LwM2M 1.0
    /// registration, when the server muted Send (/1/x/23 true), for an empty
    /// list or more than [`MAX_SEND_PATHS`], for /0 (its secrets), for a path
    /// that does not exist or has no value yet (a resource path: 5.03; inside
    /// a larger path, values not published yet are left out), and for a
    /// payload over [`MAX_SEND_BYTES`].
    pub fn send(&mut self, now: Instant, paths: &[Path]) -> Result<(), OpError> {
        if paths.is_empty() || paths.len() > MAX_SEND_PATHS {
            return Err(OpError::BadRequest(format!(
                "a Send names 1 to {MAX_SEND_PATHS} paths"
            )));
        }
        if !self.is_registered() {
            return Err(OpError::ServiceUnavailable("not registered".into()));
        }
        if self.cfg.lwm2m_version.starts_with("1.0") {
            return Err(OpError::MethodNotAllowed("Send needs LwM2M 1.1"));
        }
        if self.send_muted() {
            return Err(OpError::MethodNotAllowed(
                "Send is muted by the server (/1/x/23)",
            ));
        }
        let format = if self.cfg.content_formats.contains(&ContentFormat::SenmlCbor) {
            ContentFormat::SenmlCbor
        } else {
            ContentFormat::SenmlJson
        };
        let mut records = Vec::new();
        for path in paths {
            if path.object == 0 {
                return Err(OpError::Unauthorized);
            }
            let obj = self.object(path.object).ok_or(OpError::NotFound)?;
            let node = dispatch::read_node(obj, *path).map_err(op_error)?;
            let values = flatten(&node, *path).map_err(|e| OpError::Internal(e.to_string()))?;
            records.extend(values.into_iter().map(|(p, v)| record(p, &v)));
        }
        if records.is_empty() {
            return Err(OpError::ServiceUnavailable("no value published yet".into()));
        }
        let payload = match format {
            ContentFormat::SenmlCbor => senml::to_cbor(&records),
            _ => senml::to_json(&records),
        }
        .map_err(|e| OpError::Internal(e.to_string()))?;
        if payload.len() > MAX_SEND_BYTES {
            return Err(OpError::TooLarge {
                limit: Some(MAX_SEND_BYTES as u64),
            });
        }
        let mut request = msg::request(RequestType::Post, &["dp"]);
        msg::set_uint(
            &mut request,
            CoapOption::ContentFormat,
            format.code().into(),
        );
        request.payload = payload;
        self.ep.send_request(now, self.cfg.server, request);
        self.pump(now);
        Ok(())
    }

    /// /1/x/23 Mute Send of the (first) Server instance is true.
    fn send_muted(&self) -> bool {
        let Some(server) = self.object(1) else {
            return false;
        };
        let Some(instance) = server.instances().first().copied() else {
            return false;
        };
        matches!(
            server.read(instance, MUTE_SEND),
            Ok(Some(ResourceValue::Single(Value::Boolean(true))))
        )
    }
}

/// One record with its full path as `n`.
fn record(path: Path, value: &Value) -> RawRecord {
    RawRecord {
        n: Some(path.to_string()),
        value: Some(senml::senml_value(value)),
        ..RawRecord::default()
    }
}

/// The error a failed read of a Send path stands for.
fn op_error(f: dispatch::Failure) -> OpError {
    match f.code {
        Code::NOT_FOUND => OpError::NotFound,
        Code::SERVICE_UNAVAILABLE => OpError::ServiceUnavailable("no value published yet".into()),
        Code::METHOD_NOT_ALLOWED => OpError::MethodNotAllowed("not readable"),
        Code::UNAUTHORIZED => OpError::Unauthorized,
        code => OpError::Internal(format!("read failed with {code}")),
    }
}
