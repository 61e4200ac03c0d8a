//! LwM2M content-format codecs: [`Node`]s and values to bytes and back.
//!
//! Layout:
//! - [`tlv`]: OMA-TLV (CF 11542), the legacy binary format servers still default to.
//! - [`senml`]: SenML JSON (CF 110) and SenML CBOR (CF 112).
//! - [`text`]: text/plain (CF 0) and opaque (CF 42), one value per payload.
//! - [`cbor`]: plain CBOR (CF 60), one value per payload.
//! - [`link`]: CoRE link format (CF 40) for Register payloads and Discover.
//!
//! Every decoder is pure and bounded: a length field that points past the
//! payload is [`CodecError::Malformed`], never a panic or a large allocation.
//! The dispatchers [`encode`] and [`decode`] pick the codec from a
//! [`ContentFormat`]; formats without a codec give [`CodecError::Unsupported`]
//! so the caller can answer 4.15 (Write) or 4.06 (Read).

pub mod cbor;
pub mod link;
pub mod senml;
pub mod text;
pub mod tlv;

mod assemble;

pub use assemble::{CreateInstance, assemble, flatten};

use crate::model::{ContentFormat, DataType, Node, Path, Value};

/// Why a payload could not be encoded or decoded. Each variant maps to one
/// CoAP response code chosen by the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// No codec for this format (4.15 on Write/Create, 4.06 on Read).
    #[error("unsupported content format {code} ({0:?})", code = .0.code())]
    Unsupported(ContentFormat),
    /// The node cannot be expressed in this format, e.g. an instance as text/plain (4.06).
    #[error("{format:?} cannot carry {what}")]
    NotRepresentable {
        /// The requested format.
        format: ContentFormat,
        /// What the format cannot carry.
        what: &'static str,
    },
    /// The payload does not parse or contradicts the target path (4.00).
    #[error("malformed {format:?} payload: {reason}")]
    Malformed {
        /// The format the payload claimed to be in.
        format: ContentFormat,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload names a resource the type lookup does not know (4.04 or 4.00).
    #[error("no resource type known for {0}")]
    UnknownResource(Path),
    /// The node given to an encoder does not sit at the base path given with it (a caller bug).
    #[error("node does not fit base path {0}")]
    PathMismatch(Path),
}

impl CodecError {
    pub(crate) fn malformed(format: ContentFormat, reason: impl Into<String>) -> Self {
        CodecError::Malformed {
            format,
            reason: reason.into(),
        }
    }
}

/// Resource type lookup used by decoders of formats that carry no type
/// information (TLV, text). Called with a resource path (`/o/i/r`).
pub trait ResourceTypes {
    /// The declared type of the resource at `path`, `None` if there is none.
    fn data_type(&self, path: Path) -> Option<DataType>;
}

impl<F: Fn(Path) -> Option<DataType>> ResourceTypes for F {
    fn data_type(&self, path: Path) -> Option<DataType> {
        self(path)
    }
}

/// The resource path (`/o/i/r`) a path belongs to, used for type lookups.
pub(crate) fn resource_path(path: Path) -> Path {
    Path {
        resource_instance: None,
        ..path
    }
}

/// Encodes `node`, which lives at `base`, in `format`.
///
/// `base` must be the node's own path (a Read of `/3/0` encodes the instance
/// at `/3/0`). TLV alone also accepts an [`Node::Instance`] at an object path,
/// then wrapped in an Object Instance TLV as a Create payload needs.
pub fn encode(node: &Node, base: Path, format: ContentFormat) -> Result<Vec<u8>, CodecError> {
    match format {
        ContentFormat::Tlv => tlv::encode(node, base),
        ContentFormat::SenmlJson => senml::encode_json(node, base),
        ContentFormat::SenmlCbor => senml::encode_cbor(node, base),
        ContentFormat::Text => text::encode_node(node),
        ContentFormat::Opaque => text::encode_opaque_node(node),
        ContentFormat::Cbor => cbor::encode_node(node),
        ContentFormat::LinkFormat | ContentFormat::LwM2mJson => {
            Err(CodecError::Unsupported(format))
        }
    }
}

/// Decodes a Write payload aimed at `base` into the node at `base`.
///
/// TLV and text need `types` to read values; SenML uses it to check and
/// convert numbers but infers the type of resources it does not know.
pub fn decode(
    bytes: &[u8],
    base: Path,
    format: ContentFormat,
    types: &dyn ResourceTypes,
) -> Result<Node, CodecError> {
    match format {
        ContentFormat::Tlv => tlv::decode(bytes, base, types),
        ContentFormat::SenmlJson | ContentFormat::SenmlCbor => {
            let values = decode_flat(bytes, base, format, types)?;
            assemble(base, &values, format)
        }
        ContentFormat::Text => text::decode_node(bytes, base, types),
        ContentFormat::Opaque => text::decode_opaque_node(bytes, base, types),
        ContentFormat::Cbor => cbor::decode_node(bytes, base, types),
        ContentFormat::LinkFormat | ContentFormat::LwM2mJson => {
            Err(CodecError::Unsupported(format))
        }
    }
}

/// Decodes a payload into absolute `(path, value)` pairs, in payload order.
///
/// This is the natural form of SenML (Write-Composite, Send); other formats
/// are decoded at `base` and flattened. SenML records must all lie under
/// `base` (pass `Path::object(..)` or the composite root as needed);
/// records without a value are refused here (see [`senml::decode_json`]
/// for Read-Composite requests).
pub fn decode_flat(
    bytes: &[u8],
    base: Path,
    format: ContentFormat,
    types: &dyn ResourceTypes,
) -> Result<Vec<(Path, Value)>, CodecError> {
    let records = match format {
        ContentFormat::SenmlJson => senml::decode_json(bytes, types)?,
        ContentFormat::SenmlCbor => senml::decode_cbor(bytes, types)?,
        _ => return flatten(&decode(bytes, base, format, types)?, base),
    };
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let Some(value) = record.value else {
            return Err(CodecError::malformed(
                format,
                format!("record {} has no value", record.path),
            ));
        };
        if !assemble::is_within(base, record.path) {
            return Err(CodecError::malformed(
                format,
                format!("record {} is outside target {base}", record.path),
            ));
        }
        out.push((record.path, value));
    }
    Ok(out)
}

/// Decodes a Create payload for object `object`: each instance with the id
/// the server chose, or `None` when the client must assign one
/// (Core 1.1 §6.3.6, OMA issue #422: TLV without an Object Instance wrapper).
pub fn decode_create(
    bytes: &[u8],
    object: u16,
    format: ContentFormat,
    types: &dyn ResourceTypes,
) -> Result<Vec<CreateInstance>, CodecError> {
    match format {
        ContentFormat::Tlv => tlv::decode_create(bytes, object, types),
        ContentFormat::SenmlJson | ContentFormat::SenmlCbor => {
            let base = Path::object(object);
            match decode(bytes, base, format, types)? {
                Node::Object { instances, .. } => Ok(instances
                    .into_iter()
                    .map(|(id, resources)| CreateInstance {
                        id: Some(id),
                        resources,
                    })
                    .collect()),
                _ => Err(CodecError::malformed(
                    format,
                    "Create payload holds no instance",
                )),
            }
        }
        _ => Err(CodecError::Unsupported(format)),
    }
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod fuzz_tests;
