//! Maps DM requests (reference §2) onto [`Object`] operations and their
//! results onto CoAP response codes. Pure: no endpoint, no timers.

use coap_lite::{CoapOption, Packet};

use crate::coap::msg::{self, Code};
use crate::coap::observe::{AttributeStore, Attributes, parse_attr_query};
use crate::codec::{self, CodecError};
use crate::model::{ContentFormat, DataType, Node, Path, ResourceValue, Value};
use crate::object::{Effect, Object, OpError, PlannedWrite, ResourceDef, apply_write};

/// The DM operation a request asks for (reference §2 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GET.
    Read,
    /// GET with Accept 40.
    Discover,
    /// PUT with a payload.
    WriteReplace,
    /// POST with a Content-Format on an instance or a multi-instance resource.
    WritePartial,
    /// PUT with only Uri-Query.
    WriteAttributes,
    /// POST on a resource with no CF or CF 0.
    Execute,
    /// POST on an object.
    Create,
    /// DELETE on an instance.
    Delete,
}

/// The result of one operation.
#[derive(Debug)]
pub struct Outcome {
    /// Response (code, options, full payload before Block2 slicing).
    pub response: Packet,
    /// Effects the objects asked for.
    pub effects: Vec<Effect>,
    /// Paths whose values may have changed (for notifications).
    pub changed: Vec<Path>,
    /// True when instances were created or deleted (registration Update).
    pub instances_changed: bool,
}

impl Outcome {
    fn code(request: &Packet, code: Code) -> Outcome {
        Outcome {
            response: msg::response_to(request, code),
            effects: Vec::new(),
            changed: Vec::new(),
            instances_changed: false,
        }
    }
}

/// Failure of an operation, carrying its response code (and Size1 for 4.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Response code.
    pub code: Code,
    /// Size1 to send with 4.13.
    pub size1: Option<u64>,
}

impl From<Code> for Failure {
    fn from(code: Code) -> Self {
        Failure { code, size1: None }
    }
}

impl From<OpError> for Failure {
    /// Core 1.1 §6 / reference §2 failure codes.
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound => Code::NOT_FOUND.into(),
            OpError::MethodNotAllowed(_) => Code::METHOD_NOT_ALLOWED.into(),
            OpError::BadRequest(_) => Code::BAD_REQUEST.into(),
            OpError::Unauthorized => Code::UNAUTHORIZED.into(),
            OpError::TooLarge { limit } => Failure {
                code: Code::REQUEST_ENTITY_TOO_LARGE,
                size1: limit,
            },
            OpError::Internal(_) => Code::INTERNAL_SERVER_ERROR.into(),
            OpError::ServiceUnavailable(_) => Code::SERVICE_UNAVAILABLE.into(),
        }
    }
}

/// Decode errors on Write/Create: 4.15 for a format we lack, 4.04 for an
/// unknown resource, else 4.00.
fn write_codec_failure(e: CodecError) -> Failure {
    match e {
        CodecError::Unsupported(_) => Code::UNSUPPORTED_CONTENT_FORMAT.into(),
        CodecError::UnknownResource(_) => Code::NOT_FOUND.into(),
        _ => Code::BAD_REQUEST.into(),
    }
}

/// Encode errors on Read: 4.06 when the format cannot carry the node.
fn read_codec_failure(e: CodecError) -> Failure {
    match e {
        CodecError::Unsupported(_) | CodecError::NotRepresentable { .. } => {
            Code::NOT_ACCEPTABLE.into()
        }
        _ => Code::INTERNAL_SERVER_ERROR.into(),
    }
}

/// Builds the response for a failure.
pub fn failure_response(request: &Packet, f: Failure) -> Packet {
    let mut p = msg::response_to(request, f.code);
    if let Some(s) = f.size1 {
        msg::set_uint(&mut p, CoapOption::Size1, s);
    }
    p
}

/// The parsed target and options of a DM request.
#[derive(Debug, Clone)]
pub struct Target {
    /// LwM2M path.
    pub path: Path,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Accept.
    pub accept: Option<u16>,
    /// Observe option value.
    pub observe: Option<u64>,
    /// Uri-Query entries.
    pub query: Vec<String>,
}

/// Parses the Uri-Path and the options the dispatcher needs.
pub fn parse_target(request: &Packet) -> Result<Target, Failure> {
    let segments = msg::uri_path(request).ok_or(Code::BAD_REQUEST)?;
    let path = Path::from_segments(&segments).ok_or(Code::NOT_FOUND)?;
    let opt = |o, n| msg::get_uint(request, o, n).map_err(|_| Failure::from(Code::BAD_OPTION));
    let content_format = opt(CoapOption::ContentFormat, 2)?.map(|v| v as u16);
    let accept = opt(CoapOption::Accept, 2)?.map(|v| v as u16);
    let observe = opt(CoapOption::Observe, 3)?;
    let query = msg::uri_query(request).ok_or(Code::BAD_REQUEST)?;
    Ok(Target {
        path,
        content_format,
        accept,
        observe,
        query,
    })
}

/// Decides the operation from method, path depth and options (reference §2).
pub fn classify(
    code: Code,
    t: &Target,
    def: Option<&ResourceDef>,
    has_payload: bool,
) -> Result<Operation, Failure> {
    let depth = t.path.depth();
    match code {
        Code::GET if t.accept == Some(ContentFormat::LinkFormat.code()) => Ok(Operation::Discover),
        Code::GET => Ok(Operation::Read),
        Code::PUT if t.content_format.is_none() && !has_payload && !t.query.is_empty() => {
            Ok(Operation::WriteAttributes)
        }
        Code::PUT if depth == 1 => Err(Code::METHOD_NOT_ALLOWED.into()),
        Code::PUT => Ok(Operation::WriteReplace),
        Code::POST => match depth {
            1 => Ok(Operation::Create),
            2 => Ok(Operation::WritePartial),
            3 => {
                // Leshan's rule: POST on a resource is Execute unless a CF other than 0 targets a writable multiple resource.
                let partial = t.content_format.is_some_and(|cf| cf != 0)
                    && def.is_some_and(|d| d.multiple && d.operations.writable());
                Ok(if partial {
                    Operation::WritePartial
                } else {
                    Operation::Execute
                })
            }
            _ => Err(Code::METHOD_NOT_ALLOWED.into()),
        },
        Code::DELETE if depth == 2 => Ok(Operation::Delete),
        _ => Err(Code::METHOD_NOT_ALLOWED.into()),
    }
}

/// The definition of resource `id` in `obj`.
pub fn resource_def(obj: &dyn Object, id: u16) -> Option<&ResourceDef> {
    obj.resources().iter().find(|d| d.id == id)
}

fn require_instance(obj: &dyn Object, path: Path) -> Result<(), Failure> {
    match path.instance {
        Some(i) if !obj.instances().contains(&i) => Err(Code::NOT_FOUND.into()),
        _ => Ok(()),
    }
}

/// Reads all readable, present resources of one instance. A resource whose
/// value is not available yet (5.03: an app that has not published it) is
/// left out, like an absent optional one.
fn read_instance(obj: &dyn Object, instance: u16) -> Result<Vec<(u16, ResourceValue)>, Failure> {
    let mut out = Vec::new();
    for d in obj.resources().iter().filter(|d| d.operations.readable()) {
        if let Some(v) = present(obj.read(instance, d.id))? {
            out.push((d.id, v));
        }
    }
    Ok(out)
}

/// A read where "no value yet" counts as absent.
fn present(read: Result<Option<ResourceValue>, OpError>) -> Result<Option<ResourceValue>, OpError> {
    match read {
        Err(OpError::ServiceUnavailable(_)) => Ok(None),
        other => other,
    }
}

/// Reads the node at `path` (Read, Observe, notifications).
pub fn read_node(obj: &dyn Object, path: Path) -> Result<Node, Failure> {
    require_instance(obj, path)?;
    match (path.instance, path.resource, path.resource_instance) {
        (None, _, _) => {
            let mut instances = Vec::new();
            for i in obj.instances() {
                instances.push((i, read_instance(obj, i)?));
            }
            Ok(Node::Object {
                id: path.object,
                instances,
            })
        }
        (Some(i), None, _) => Ok(Node::Instance {
            id: i,
            resources: read_instance(obj, i)?,
        }),
        (Some(i), Some(r), ri) => {
            let def = resource_def(obj, r).ok_or(Code::NOT_FOUND)?;
            if !def.operations.readable() {
                return Err(Code::METHOD_NOT_ALLOWED.into());
            }
            let value = obj.read(i, r)?.ok_or(Code::NOT_FOUND)?;
            match (ri, value) {
                (None, value) => Ok(Node::Resource { id: r, value }),
                (Some(ri), ResourceValue::Multiple(items)) => items
                    .into_iter()
                    .find(|(id, _)| *id == ri)
                    .map(|(id, value)| Node::ResourceInstance { id, value })
                    .ok_or(Code::NOT_FOUND.into()),
                (Some(_), ResourceValue::Single(_)) => Err(Code::NOT_FOUND.into()),
            }
        }
    }
}

/// Numeric value at a resource path, for gt/lt/st.
pub fn numeric_value(obj: &dyn Object, path: Path) -> Option<f64> {
    let value = match read_node(obj, path).ok()? {
        Node::Resource {
            value: ResourceValue::Single(v),
            ..
        } => v,
        Node::ResourceInstance { value, .. } => value,
        _ => return None,
    };
    match value {
        Value::Integer(i) | Value::Time(i) => Some(i as f64),
        Value::Unsigned(u) => Some(u as f64),
        Value::Float(f) => Some(f),
        _ => None,
    }
}

/// Read format: Accept if given (unknown -> 4.06); else text (opaque for
/// opaque data) for one value and TLV for anything larger, the format 1.0
/// servers assume (reference §4).
pub fn read_format(
    accept: Option<u16>,
    node: &Node,
    obj: &dyn Object,
) -> Result<ContentFormat, Failure> {
    if let Some(code) = accept {
        return ContentFormat::from_code(code).ok_or(Code::NOT_ACCEPTABLE.into());
    }
    let single = |id: u16, is_value: bool| {
        let opaque = resource_def(obj, id).is_some_and(|d| d.data_type == DataType::Opaque);
        match (is_value, opaque) {
            (true, true) => ContentFormat::Opaque,
            (true, false) => ContentFormat::Text,
            (false, _) => ContentFormat::Tlv,
        }
    };
    Ok(match node {
        Node::Resource { id, value } => single(*id, matches!(value, ResourceValue::Single(_))),
        Node::ResourceInstance { .. } => ContentFormat::Text,
        _ => ContentFormat::Tlv,
    })
}

/// Read: the node encoded in the negotiated format, 2.05.
pub fn read(obj: &dyn Object, request: &Packet, t: &Target) -> Result<Outcome, Failure> {
    let node = read_node(obj, t.path)?;
    let mut format = read_format(t.accept, &node, obj)?;
    // A resource instance read with no Accept in text: opaque instances go opaque.
    if t.accept.is_none()
        && let (
            Node::ResourceInstance {
                value: Value::Opaque(_),
                ..
            },
            ContentFormat::Text,
        ) = (&node, format)
    {
        format = ContentFormat::Opaque;
    }
    let body = codec::encode(&node, t.path, format).map_err(read_codec_failure)?;
    let mut out = Outcome::code(request, Code::CONTENT);
    msg::set_uint(
        &mut out.response,
        CoapOption::ContentFormat,
        format.code().into(),
    );
    out.response.payload = body;
    Ok(out)
}

/// Discover (Core 1.1 §5.4.2): links with attributes and `dim`.
pub fn discover(
    obj: &dyn Object,
    attrs: &AttributeStore,
    defaults: Attributes,
    request: &Packet,
    t: &Target,
) -> Result<Outcome, Failure> {
    require_instance(obj, t.path)?;
    if t.path.resource_instance.is_some() {
        return Err(Code::METHOD_NOT_ALLOWED.into());
    }
    let o = t.path.object;
    let mut links = vec![format!(
        "<{}>{}",
        t.path,
        attrs.effective(t.path, defaults).link_params()
    )];
    let resource_links =
        |links: &mut Vec<String>, i: u16, only: Option<u16>| -> Result<(), Failure> {
            for d in obj
                .resources()
                .iter()
                .filter(|d| only.is_none_or(|r| r == d.id))
            {
                let rp = Path::resource(o, i, d.id);
                let value = if d.operations.readable() {
                    present(obj.read(i, d.id))?
                } else {
                    None
                };
                if d.operations.readable() && value.is_none() {
                    if only.is_some() {
                        return Err(Code::NOT_FOUND.into());
                    }
                    continue;
                }
                if only.is_none() {
                    let dim = match &value {
                        Some(ResourceValue::Multiple(items)) => format!(";dim={}", items.len()),
                        _ => String::new(),
                    };
                    links.push(format!("<{rp}>{}{dim}", attrs.at(rp).link_params()));
                } else if let Some(ResourceValue::Multiple(items)) = &value {
                    if let Some(first) = links.first_mut() {
                        first.push_str(&format!(";dim={}", items.len()));
                    }
                    for (ri, _) in items {
                        let rip = Path::resource_instance(o, i, d.id, *ri);
                        links.push(format!("<{rip}>{}", attrs.at(rip).link_params()));
                    }
                }
            }
            Ok(())
        };
    match (t.path.instance, t.path.resource) {
        (None, _) => {
            for i in obj.instances() {
                let ip = Path::instance(o, i);
                links.push(format!("<{ip}>{}", attrs.at(ip).link_params()));
                resource_links(&mut links, i, None)?;
            }
        }
        (Some(i), None) => resource_links(&mut links, i, None)?,
        (Some(i), Some(r)) => {
            resource_def(obj, r).ok_or(Code::NOT_FOUND)?;
            resource_links(&mut links, i, Some(r))?;
        }
    }
    let mut out = Outcome::code(request, Code::CONTENT);
    msg::set_uint(
        &mut out.response,
        CoapOption::ContentFormat,
        ContentFormat::LinkFormat.code().into(),
    );
    out.response.payload = links.join(",").into_bytes();
    Ok(out)
}

/// Write-Attributes (Core 1.1 §5.4.4): PUT with Uri-Query only.
pub fn write_attributes(
    obj: &dyn Object,
    attrs: &mut AttributeStore,
    request: &Packet,
    t: &Target,
) -> Result<Outcome, Failure> {
    require_instance(obj, t.path)?;
    let numeric = match t.path.resource {
        Some(r) => {
            let d = resource_def(obj, r).ok_or(Code::NOT_FOUND)?;
            matches!(
                d.data_type,
                DataType::Integer | DataType::Unsigned | DataType::Float | DataType::Time
            ) && d.operations.readable()
        }
        None => false,
    };
    let update = parse_attr_query(&t.query).map_err(|_| Failure::from(Code::BAD_REQUEST))?;
    attrs
        .apply(t.path, &update, numeric)
        .map_err(|_| Failure::from(Code::BAD_REQUEST))?;
    let mut out = Outcome::code(request, Code::CHANGED);
    out.changed.push(t.path);
    Ok(out)
}

fn payload_format(t: &Target) -> Result<ContentFormat, Failure> {
    // Reference §2: missing Content-Format on Write/Create is 4.00; unknown is 4.15.
    let code = t.content_format.ok_or(Code::BAD_REQUEST)?;
    ContentFormat::from_code(code).ok_or(Code::UNSUPPORTED_CONTENT_FORMAT.into())
}

fn types_of(obj: &dyn Object) -> impl Fn(Path) -> Option<DataType> + '_ {
    move |p: Path| {
        p.resource
            .and_then(|r| resource_def(obj, r))
            .map(|d| d.data_type)
    }
}

/// Checks every resource is defined and writable before anything is written
/// (bad input -> no state change).
fn check_writable(obj: &dyn Object, ids: impl Iterator<Item = u16>) -> Result<(), Failure> {
    for id in ids {
        let d = resource_def(obj, id).ok_or(Code::NOT_FOUND)?;
        if !d.operations.writable() {
            return Err(Code::METHOD_NOT_ALLOWED.into());
        }
    }
    Ok(())
}

/// Write (Replace with PUT, Partial Update with POST), Core 1.1 §5.4.3.
pub fn write(
    obj: &mut dyn Object,
    request: &Packet,
    t: &Target,
    replace: bool,
) -> Result<Outcome, Failure> {
    require_instance(&*obj, t.path)?;
    let format = payload_format(t)?;
    let Some(i) = t.path.instance else {
        return Err(Code::METHOD_NOT_ALLOWED.into());
    };
    let node = codec::decode(&request.payload, t.path, format, &types_of(&*obj))
        .map_err(write_codec_failure)?;
    let mut effects = Vec::new();
    match node {
        Node::Instance { resources, .. } => {
            check_writable(&*obj, resources.iter().map(|(id, _)| *id))?;
            for (r, v) in resources {
                effects.extend(write_one(obj, i, r, v, replace)?);
            }
        }
        Node::Resource { id, value } if Some(id) == t.path.resource => {
            check_writable(&*obj, std::iter::once(id))?;
            effects.extend(write_one(obj, i, id, value, replace)?);
        }
        Node::ResourceInstance { id, value } if Some(id) == t.path.resource_instance => {
            let r = t.path.resource.ok_or(Code::BAD_REQUEST)?;
            check_writable(&*obj, std::iter::once(r))?;
            effects.extend(obj.write(i, r, ResourceValue::Multiple(vec![(id, value)]), false)?);
        }
        _ => return Err(Code::BAD_REQUEST.into()),
    }
    let mut out = Outcome::code(request, Code::CHANGED);
    out.effects = effects;
    out.changed.push(Path::instance(t.path.object, i));
    Ok(out)
}

/// One resource write; single opaque values go through `write_block` as one
/// piece (the object's streaming path, see [`crate::object::apply_write`]).
pub(super) fn write_one(
    obj: &mut dyn Object,
    instance: u16,
    resource: u16,
    value: ResourceValue,
    replace: bool,
) -> Result<Vec<Effect>, Failure> {
    let w = PlannedWrite {
        instance,
        resource,
        value,
        replace,
    };
    Ok(apply_write(obj, w)?)
}

/// Execute (Core 1.1 §5.4.5): the payload is the argument list.
pub fn execute(obj: &mut dyn Object, request: &Packet, t: &Target) -> Result<Outcome, Failure> {
    require_instance(&*obj, t.path)?;
    let (Some(i), Some(r)) = (t.path.instance, t.path.resource) else {
        return Err(Code::METHOD_NOT_ALLOWED.into());
    };
    let d = resource_def(&*obj, r).ok_or(Code::NOT_FOUND)?;
    if !d.operations.executable() {
        return Err(Code::METHOD_NOT_ALLOWED.into());
    }
    let effects = obj.execute(i, r, &request.payload)?;
    let mut out = Outcome::code(request, Code::CHANGED);
    out.effects = effects;
    out.changed.push(Path::instance(t.path.object, i));
    Ok(out)
}

/// Create (Core 1.1 §5.4.6): 2.01 with Location-Path `/o/i` of the new instance.
pub fn create(obj: &mut dyn Object, request: &Packet, t: &Target) -> Result<Outcome, Failure> {
    let format = payload_format(t)?;
    let o = t.path.object;
    let list = codec::decode_create(&request.payload, o, format, &types_of(&*obj))
        .map_err(write_codec_failure)?;
    let existing = obj.instances();
    for c in &list {
        if c.id.is_some_and(|id| existing.contains(&id)) {
            return Err(Code::BAD_REQUEST.into()); // reference §2: Create of an existing instance
        }
        check_writable(&*obj, c.resources.iter().map(|(id, _)| *id))?;
    }
    let mut out = Outcome::code(request, Code::CREATED);
    for c in list {
        let (id, effects) = obj.create(c.id, c.resources)?;
        out.effects.extend(effects);
        out.changed.push(Path::instance(o, id));
        msg::add_strings(
            &mut out.response,
            CoapOption::LocationPath,
            &[o.to_string(), id.to_string()],
        );
    }
    out.instances_changed = true;
    out.changed.push(Path::object(o));
    Ok(out)
}

/// Delete (Core 1.1 §5.4.7) of one instance.
pub fn delete(
    obj: &mut dyn Object,
    attrs: &mut AttributeStore,
    request: &Packet,
    t: &Target,
) -> Result<Outcome, Failure> {
    require_instance(&*obj, t.path)?;
    let i = t.path.instance.ok_or(Code::METHOD_NOT_ALLOWED)?;
    let effects = obj.delete(i)?;
    attrs.remove_under(t.path);
    let mut out = Outcome::code(request, Code::DELETED);
    out.effects = effects;
    out.instances_changed = true;
    out.changed.push(Path::object(t.path.object));
    Ok(out)
}
