//! What a Register payload says about a client: its root path, content
//! formats and the objects and instances it announces (Core 1.1 §6.2.1).
//! The link format itself is read by the proto crate's `codec::link`, the
//! same parser the device side uses.

use std::collections::BTreeMap;

use wasmdm_proto::codec::link::Link;
use wasmdm_proto::model::Path;

/// Bound on the number of links accepted in one Register payload.
pub const MAX_LINKS: usize = 4096;

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
    use wasmdm_proto::codec::link::parse;

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
}
