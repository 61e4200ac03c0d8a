//! The LwM2M data model shared by the codecs and the objects: paths, typed
//! values and the content formats a payload can be in.
//!
//! Codecs turn bytes into [`Node`]s and back; objects read and write
//! [`Value`]s. Neither knows about the other.

use std::fmt;

/// An LwM2M path: `/o`, `/o/i`, `/o/i/r` or `/o/i/r/ri` (Core 1.1 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    pub object: u16,
    pub instance: Option<u16>,
    pub resource: Option<u16>,
    pub resource_instance: Option<u16>,
}

impl Path {
    pub const fn object(object: u16) -> Self {
        Path {
            object,
            instance: None,
            resource: None,
            resource_instance: None,
        }
    }
    pub const fn instance(object: u16, instance: u16) -> Self {
        Path {
            object,
            instance: Some(instance),
            resource: None,
            resource_instance: None,
        }
    }
    pub const fn resource(object: u16, instance: u16, resource: u16) -> Self {
        Path {
            object,
            instance: Some(instance),
            resource: Some(resource),
            resource_instance: None,
        }
    }
    pub const fn resource_instance(object: u16, instance: u16, resource: u16, ri: u16) -> Self {
        Path {
            object,
            instance: Some(instance),
            resource: Some(resource),
            resource_instance: Some(ri),
        }
    }

    /// Parses URI path segments (`["9", "0", "7"]`). Ids above 65534 are
    /// refused: 65535 is the "no instance" marker of object links.
    pub fn from_segments<S: AsRef<str>>(segments: &[S]) -> Option<Path> {
        let ids: Option<Vec<u16>> = segments
            .iter()
            .map(|s| s.as_ref().parse::<u16>().ok().filter(|id| *id != u16::MAX))
            .collect();
        let ids = ids?;
        match ids.as_slice() {
            [o] => Some(Path::object(*o)),
            [o, i] => Some(Path::instance(*o, *i)),
            [o, i, r] => Some(Path::resource(*o, *i, *r)),
            [o, i, r, ri] => Some(Path::resource_instance(*o, *i, *r, *ri)),
            _ => None,
        }
    }

    /// Number of levels present (1 to 4).
    pub fn depth(&self) -> usize {
        1 + self.instance.is_some() as usize
            + self.resource.is_some() as usize
            + self.resource_instance.is_some() as usize
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.object)?;
        for id in [self.instance, self.resource, self.resource_instance]
            .into_iter()
            .flatten()
        {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

/// An object link value `oid:iid` (Core 1.1 Appendix C); `65535:65535` is the null link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjLink {
    pub object: u16,
    pub instance: u16,
}

/// A typed resource value (Core 1.1 Appendix C data types).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    Boolean(bool),
    Opaque(Vec<u8>),
    /// Seconds since the Unix epoch.
    Time(i64),
    ObjLink(ObjLink),
    CoreLink(String),
}

/// The data type a resource is declared with; decoders need it because TLV
/// and text carry no type information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    String,
    Integer,
    Unsigned,
    Float,
    Boolean,
    Opaque,
    Time,
    ObjLink,
    CoreLink,
    /// Executable resources carry no value.
    None,
}

/// One resource, single or multiple, with its value(s).
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceValue {
    Single(Value),
    /// Resource instances in ascending id order.
    Multiple(Vec<(u16, Value)>),
}

/// A decoded or to-be-encoded piece of the object tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A whole object: its instances in ascending id order.
    Object {
        id: u16,
        instances: Vec<(u16, Vec<(u16, ResourceValue)>)>,
    },
    /// One object instance: its resources in ascending id order.
    Instance {
        id: u16,
        resources: Vec<(u16, ResourceValue)>,
    },
    /// One resource.
    Resource { id: u16, value: ResourceValue },
    /// One resource instance.
    ResourceInstance { id: u16, value: Value },
}

/// The content formats LwM2M 1.1 defines for its payloads (Core 1.1 §7.1, IANA CoAP registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentFormat {
    Text,
    LinkFormat,
    Opaque,
    Cbor,
    SenmlJson,
    SenmlCbor,
    Tlv,
    LwM2mJson,
}

impl ContentFormat {
    pub const fn code(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::Tlv => 11542,
            ContentFormat::LwM2mJson => 11543,
        }
    }

    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0 => ContentFormat::Text,
            40 => ContentFormat::LinkFormat,
            42 => ContentFormat::Opaque,
            60 => ContentFormat::Cbor,
            110 => ContentFormat::SenmlJson,
            112 => ContentFormat::SenmlCbor,
            11542 => ContentFormat::Tlv,
            11543 => ContentFormat::LwM2mJson,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parses_and_prints() {
        let p = Path::from_segments(&["9", "0", "7"]).unwrap();
        assert_eq!(p, Path::resource(9, 0, 7));
        assert_eq!(p.to_string(), "/9/0/7");
        assert_eq!(p.depth(), 3);
        assert!(Path::from_segments(&["9", "x"]).is_none());
        assert!(Path::from_segments(&["9", "65535"]).is_none());
        assert!(Path::from_segments::<&str>(&[]).is_none());
    }
}
