//! Conversions between a [`Node`] tree and flat `(path, value)` lists, the
//! shape SenML carries on the wire.

use std::collections::BTreeMap;

use super::CodecError;
use crate::model::{ContentFormat, Node, Path, ResourceValue, Value};

/// One instance of a Create payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateInstance {
    /// The id chosen by the server, `None` when the client must assign one.
    pub id: Option<u16>,
    /// The resources to create, ascending id order.
    pub resources: Vec<(u16, ResourceValue)>,
}

/// True when `path` is `base` or lies below it.
pub(crate) fn is_within(base: Path, path: Path) -> bool {
    let b = [
        Some(base.object),
        base.instance,
        base.resource,
        base.resource_instance,
    ];
    let p = [
        Some(path.object),
        path.instance,
        path.resource,
        path.resource_instance,
    ];
    b.iter().zip(p.iter()).all(|(b, p)| b.is_none() || b == p)
}

/// The path of `node` given `base`, its own path or any path holding its
/// parent's ids: a node carries only its own id.
pub(crate) fn node_path(node: &Node, base: Path) -> Result<Path, CodecError> {
    let path = match node {
        Node::Object { id, .. } => Some(Path::object(*id)),
        Node::Instance { id, .. } => Some(Path::instance(base.object, *id)),
        Node::Resource { id, .. } => base.instance.map(|i| Path::resource(base.object, i, *id)),
        Node::ResourceInstance { id, .. } => match (base.instance, base.resource) {
            (Some(i), Some(r)) => Some(Path::resource_instance(base.object, i, r, *id)),
            _ => None,
        },
    };
    match path {
        // `base` must be the node's own path or its parent's: an instance 1
        // handed over with base /3/0 is a caller bug, not something to guess at.
        Some(path) if is_within(base, path) => Ok(path),
        _ => Err(CodecError::PathMismatch(base)),
    }
}

/// Lists every value in `node` with its absolute path, in tree order.
/// `base` is the node's path or its parent's (the parent is enough: nodes carry their own id).
pub fn flatten(node: &Node, base: Path) -> Result<Vec<(Path, Value)>, CodecError> {
    let path = node_path(node, base)?;
    let mut out = Vec::new();
    match node {
        Node::Object { instances, .. } => {
            for (iid, resources) in instances {
                push_resources(&mut out, Path::instance(path.object, *iid), resources);
            }
        }
        Node::Instance { resources, .. } => push_resources(&mut out, path, resources),
        Node::Resource { value, .. } => push_resource(&mut out, path, value),
        Node::ResourceInstance { value, .. } => out.push((path, value.clone())),
    }
    Ok(out)
}

fn push_resources(
    out: &mut Vec<(Path, Value)>,
    instance: Path,
    resources: &[(u16, ResourceValue)],
) {
    for (rid, value) in resources {
        let iid = instance.instance.unwrap_or_default();
        push_resource(out, Path::resource(instance.object, iid, *rid), value);
    }
}

fn push_resource(out: &mut Vec<(Path, Value)>, resource: Path, value: &ResourceValue) {
    match value {
        ResourceValue::Single(v) => out.push((resource, v.clone())),
        ResourceValue::Multiple(items) => {
            for (ri, v) in items {
                out.push((
                    Path {
                        resource_instance: Some(*ri),
                        ..resource
                    },
                    v.clone(),
                ));
            }
        }
    }
}

/// One resource while it is being assembled.
enum Building {
    Single(Value),
    Multiple(BTreeMap<u16, Value>),
}

/// Builds the node at `base` from flat values (all within `base`). A value at
/// `/o/i/r` makes a single resource, values at `/o/i/r/ri` a multiple one;
/// mixing both or repeating a path is malformed. `format` only labels errors.
pub fn assemble(
    base: Path,
    values: &[(Path, Value)],
    format: ContentFormat,
) -> Result<Node, CodecError> {
    let bad = |reason: String| CodecError::malformed(format, reason);
    // instance id -> resource id -> value, ordered by id.
    let mut tree: BTreeMap<u16, BTreeMap<u16, Building>> = BTreeMap::new();
    for (path, value) in values {
        if !is_within(base, *path) {
            return Err(bad(format!("{path} is outside target {base}")));
        }
        let (Some(iid), Some(rid)) = (path.instance, path.resource) else {
            return Err(bad(format!("value at {path}, which is not a resource")));
        };
        let resources = tree.entry(iid).or_default();
        match (path.resource_instance, resources.get_mut(&rid)) {
            (None, None) => {
                resources.insert(rid, Building::Single(value.clone()));
            }
            (Some(ri), None) => {
                resources.insert(
                    rid,
                    Building::Multiple(BTreeMap::from([(ri, value.clone())])),
                );
            }
            (Some(ri), Some(Building::Multiple(items))) if !items.contains_key(&ri) => {
                items.insert(ri, value.clone());
            }
            _ => {
                return Err(bad(format!(
                    "{path} given twice or as both single and multiple"
                )));
            }
        }
    }
    let finish = |resources: BTreeMap<u16, Building>| -> Vec<(u16, ResourceValue)> {
        resources
            .into_iter()
            .map(|(rid, b)| {
                let v = match b {
                    Building::Single(v) => ResourceValue::Single(v),
                    Building::Multiple(items) => {
                        ResourceValue::Multiple(items.into_iter().collect())
                    }
                };
                (rid, v)
            })
            .collect()
    };
    match (base.instance, base.resource, base.resource_instance) {
        (None, _, _) => Ok(Node::Object {
            id: base.object,
            instances: tree.into_iter().map(|(iid, r)| (iid, finish(r))).collect(),
        }),
        (Some(iid), None, _) => Ok(Node::Instance {
            id: iid,
            resources: tree.remove(&iid).map(finish).unwrap_or_default(),
        }),
        (Some(iid), Some(rid), ri) => {
            let resource = tree
                .remove(&iid)
                .and_then(|mut r| r.remove(&rid))
                .ok_or_else(|| bad(format!("no value for {base}")))?;
            match (ri, resource) {
                (None, Building::Single(v)) => Ok(Node::Resource {
                    id: rid,
                    value: ResourceValue::Single(v),
                }),
                (None, Building::Multiple(items)) => Ok(Node::Resource {
                    id: rid,
                    value: ResourceValue::Multiple(items.into_iter().collect()),
                }),
                (Some(ri), Building::Multiple(mut items)) => match items.remove(&ri) {
                    Some(value) => Ok(Node::ResourceInstance { id: ri, value }),
                    None => Err(bad(format!("no value for {base}"))),
                },
                (Some(_), Building::Single(_)) => Err(bad(format!("no value for {base}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: ContentFormat = ContentFormat::SenmlJson;

    #[test]
    fn assembles_instance_with_single_and_multiple_resources() {
        let values = vec![
            (Path::resource_instance(3, 0, 6, 1), Value::Integer(5)),
            (Path::resource(3, 0, 0), Value::String("a".into())),
            (Path::resource_instance(3, 0, 6, 0), Value::Integer(1)),
        ];
        let node = assemble(Path::instance(3, 0), &values, F).unwrap();
        assert_eq!(
            node,
            Node::Instance {
                id: 0,
                resources: vec![
                    (0, ResourceValue::Single(Value::String("a".into()))),
                    (
                        6,
                        ResourceValue::Multiple(vec![
                            (0, Value::Integer(1)),
                            (1, Value::Integer(5))
                        ])
                    ),
                ]
            }
        );
        let mut flat = flatten(&node, Path::instance(3, 0)).unwrap();
        flat.sort_by_key(|(p, _)| *p);
        let mut expected = values.clone();
        expected.sort_by_key(|(p, _)| *p);
        assert_eq!(flat, expected);
    }

    #[test]
    fn refuses_duplicates_mixes_and_outsiders() {
        let dup = vec![
            (Path::resource(3, 0, 0), Value::Integer(1)),
            (Path::resource(3, 0, 0), Value::Integer(2)),
        ];
        assert!(matches!(
            assemble(Path::instance(3, 0), &dup, F),
            Err(CodecError::Malformed { .. })
        ));
        let mixed = vec![
            (Path::resource(3, 0, 6), Value::Integer(1)),
            (Path::resource_instance(3, 0, 6, 0), Value::Integer(2)),
        ];
        assert!(assemble(Path::instance(3, 0), &mixed, F).is_err());
        let outside = vec![(Path::resource(3, 1, 0), Value::Integer(1))];
        assert!(assemble(Path::instance(3, 0), &outside, F).is_err());
        let not_resource = vec![(Path::instance(3, 0), Value::Integer(1))];
        assert!(assemble(Path::object(3), &not_resource, F).is_err());
        assert!(assemble(Path::resource(3, 0, 1), &[], F).is_err());
    }

    #[test]
    fn assembles_resource_and_resource_instance_targets() {
        let values = vec![(Path::resource_instance(3, 0, 6, 2), Value::Integer(7))];
        assert_eq!(
            assemble(Path::resource(3, 0, 6), &values, F).unwrap(),
            Node::Resource {
                id: 6,
                value: ResourceValue::Multiple(vec![(2, Value::Integer(7))])
            }
        );
        assert_eq!(
            assemble(Path::resource_instance(3, 0, 6, 2), &values, F).unwrap(),
            Node::ResourceInstance {
                id: 2,
                value: Value::Integer(7)
            }
        );
        assert!(is_within(Path::object(3), Path::resource(3, 1, 2)));
        assert!(!is_within(Path::resource(3, 0, 1), Path::instance(3, 0)));
    }
}
