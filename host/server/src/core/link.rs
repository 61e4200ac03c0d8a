//! CoRE link format (RFC 6690) as LwM2M uses it in Register/Update payloads
//! and Discover responses. Own parser: the proto crate's `codec::link` is
//! still empty, and the server must read links from any client.

use std::collections::BTreeMap;

use thiserror::Error;
use wasmdm_proto::model::Path;

/// Why a link-format payload was refused (Register answers 4.00).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    /// A link does not start with `<` or its target is not closed by `>`.
    #[error("malformed link at byte {0}")]
    Malformed(usize),
    /// A quoted attribute value is not terminated.
    #[error("unterminated quoted value at byte {0}")]
    Unterminated(usize),
    /// The payload is not UTF-8.
    #[error("link payload is not UTF-8")]
    NotUtf8,
    /// More links than a device may reasonably announce.
    #[error("too many links ({0})")]
    TooMany(usize),
}

/// Bound on the number of links accepted in one payload (memory safety).
pub const MAX_LINKS: usize = 4096;

/// One link: `</3/0>;ver=1.1`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    /// The target between `<` and `>`.
    pub target: String,
    /// Attributes in order; `None` for a bare name (`;Q`).
    pub attrs: Vec<(String, Option<String>)>,
}

impl Link {
    /// The value of attribute `name`, if present with a value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Parses a link-format payload: links separated by `,`, attributes by `;`,
/// values optionally quoted (RFC 6690 §2).
pub fn parse(bytes: &[u8]) -> Result<Vec<Link>, LinkError> {
    let text = std::str::from_utf8(bytes).map_err(|_| LinkError::NotUtf8)?;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut links = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let pos = |i: usize| chars.get(i).map(|(p, _)| *p).unwrap_or(text.len());
    while i < chars.len() {
        while matches!(at(i), Some(c) if c.is_ascii_whitespace()) {
            i += 1;
        }
        if at(i) != Some('<') {
            return Err(LinkError::Malformed(pos(i)));
        }
        i += 1;
        let start = i;
        while matches!(at(i), Some(c) if c != '>') {
            i += 1;
        }
        if at(i) != Some('>') {
            return Err(LinkError::Malformed(pos(start)));
        }
        let target = text[pos(start)..pos(i)].to_string();
        i += 1;
        let mut attrs = Vec::new();
        while at(i) == Some(';') {
            i += 1;
            let name_start = i;
            while matches!(at(i), Some(c) if c != '=' && c != ';' && c != ',') {
                i += 1;
            }
            let name = text[pos(name_start)..pos(i)].trim().to_string();
            let mut value = None;
            if at(i) == Some('=') {
                i += 1;
                if at(i) == Some('"') {
                    i += 1;
                    let vstart = i;
                    while matches!(at(i), Some(c) if c != '"') {
                        i += 1;
                    }
                    if at(i) != Some('"') {
                        return Err(LinkError::Unterminated(pos(vstart)));
                    }
                    value = Some(text[pos(vstart)..pos(i)].to_string());
                    i += 1;
                } else {
                    let vstart = i;
                    while matches!(at(i), Some(c) if c != ';' && c != ',') {
                        i += 1;
                    }
                    value = Some(text[pos(vstart)..pos(i)].to_string());
                }
            }
            attrs.push((name, value));
        }
        links.push(Link { target, attrs });
        if links.len() > MAX_LINKS {
            return Err(LinkError::TooMany(links.len()));
        }
        match at(i) {
            Some(',') => i += 1,
            None => {}
            Some(_) => return Err(LinkError::Malformed(pos(i))),
        }
    }
    Ok(links)
}

/// What a Register payload says about the client (Core 1.1 §6.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectList {
    /// Alternate path (`</lwm2m>;rt="oma.lwm2m"`), empty for the default root.
    pub root: String,
    /// Content formats announced with `ct` on the root link.
    pub content_formats: Vec<u16>,
    /// Objects with their version (if announced) and instance ids.
    pub objects: BTreeMap<u16, ObjectInfo>,
}

/// One announced object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    /// `ver` attribute of the object link.
    pub version: Option<String>,
    /// Announced instance ids, ascending.
    pub instances: Vec<u16>,
}

impl ObjectList {
    /// Interprets Register links; links that are not object paths are ignored.
    pub fn from_links(links: &[Link]) -> ObjectList {
        let mut list = ObjectList::default();
        for link in links {
            if link.attr("rt") == Some("oma.lwm2m") {
                list.root = link.target.trim_end_matches('/').to_string();
                if let Some(ct) = link.attr("ct") {
                    list.content_formats = ct.split(' ').filter_map(|c| c.parse().ok()).collect();
                }
                continue;
            }
            let target = link
                .target
                .strip_prefix(list.root.as_str())
                .unwrap_or(&link.target);
            let segments: Vec<&str> = target.trim_matches('/').split('/').collect();
            let Some(path) = Path::from_segments(&segments) else {
                continue;
            };
            let entry = list.objects.entry(path.object).or_default();
            match path.instance {
                None => {
                    if let Some(v) = link.attr("ver") {
                        entry.version = Some(v.to_string());
                    }
                }
                Some(i) => {
                    if let Err(pos) = entry.instances.binary_search(&i) {
                        entry.instances.insert(pos, i);
                    }
                }
            }
        }
        list
    }

    /// Instance ids of `object`, empty if not announced.
    pub fn instances(&self, object: u16) -> &[u16] {
        self.objects
            .get(&object)
            .map(|o| o.instances.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_payload_from_reference() {
        // lwm2m-core-reference §1 wire example payload.
        let p = br#"</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</3303>;ver=1.1,</3303/0>"#;
        let links = parse(p).unwrap();
        assert_eq!(links.len(), 5);
        assert_eq!(links[0].attr("rt"), Some("oma.lwm2m"));
        let list = ObjectList::from_links(&links);
        assert_eq!(list.content_formats, vec![110]);
        assert_eq!(list.instances(3), &[0]);
        assert_eq!(list.objects[&3303].version.as_deref(), Some("1.1"));
        assert_eq!(list.instances(9), &[] as &[u16]);
    }

    #[test]
    fn quoted_ct_list_and_alternate_root() {
        let p =
            br#"</lwm2m>;rt="oma.lwm2m";ct="60 110 112",</lwm2m/9/0>,</lwm2m/9/2>,</lwm2m/9/1>"#;
        let list = ObjectList::from_links(&parse(p).unwrap());
        assert_eq!(list.root, "/lwm2m");
        assert_eq!(list.content_formats, vec![60, 110, 112]);
        assert_eq!(list.instances(9), &[0, 1, 2]);
    }

    #[test]
    fn discover_attributes() {
        let links = parse(b"</3/0/9>;pmin=100;pmax=200;st=1;lt=20;gt=50,</3/0/7>;dim=2").unwrap();
        assert_eq!(links[0].attr("pmax"), Some("200"));
        assert_eq!(links[1].attr("dim"), Some("2"));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(matches!(parse(b"</1/0"), Err(LinkError::Malformed(_))));
        assert!(matches!(parse(b"/1/0>"), Err(LinkError::Malformed(0))));
        assert!(matches!(
            parse(b"</1>;x=\"abc"),
            Err(LinkError::Unterminated(_))
        ));
        assert!(matches!(parse(b"</1>x"), Err(LinkError::Malformed(_))));
        assert_eq!(parse(&[0xFF, 0xFE]), Err(LinkError::NotUtf8));
        assert_eq!(parse(b"").unwrap(), vec![]);
    }
}
