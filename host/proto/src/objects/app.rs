//! Objects an app declares at run time (issue 14): the app publishes values,
//! the engine serves Read/Observe/Discover from them, and Writes and
//! Executes go to the app as [`Effect::App`], their answer held until the
//! driver has the app's.
//!
//! Reads never wait on the app: a readable resource that was never
//! published answers 5.03 when read by itself and is left out of instance
//! and object reads. Everything a (possibly hostile) app declares or
//! publishes is checked against the caps below before it is kept.

use std::collections::BTreeMap;

use crate::model::{DataType, Path, ResourceValue, Value};
use crate::object::{AppRequest, Effect, Object, OpError, Operations, ResourceDef};

/// Instances one app object may declare.
pub const MAX_INSTANCES: usize = 16;
/// Resources one app object may declare.
pub const MAX_RESOURCES: usize = 32;
/// Resource instances one multiple resource may hold.
pub const MAX_RESOURCE_INSTANCES: usize = 16;
/// Largest String/Opaque (and Core Link) value, and largest Execute argument payload.
pub const MAX_VALUE_BYTES: usize = 1024;
/// App objects one device serves at most (checked by the driver).
pub const MAX_APP_OBJECTS: usize = 64;
/// Object ids below this are the core objects (Core 1.1 Appendix E and the
/// OMA objects up to 14), never served by an app.
pub const FIRST_APP_OBJECT_ID: u16 = 15;
/// The name every app resource carries ([`ResourceDef::name`] is static).
pub const APP_RESOURCE_NAME: &str = "app resource";

/// A resource's published value(s).
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Single(Value),
    Multiple(BTreeMap<u16, Value>),
}

/// An object declared by an app.
#[derive(Debug, Clone)]
pub struct AppObject {
    id: u16,
    version: Option<String>,
    instances: Vec<u16>,
    resources: Vec<ResourceDef>,
    values: BTreeMap<(u16, u16), Stored>,
}

fn bad(why: impl Into<String>) -> OpError {
    OpError::BadRequest(why.into())
}

/// `major.minor`, as the `ver` link attribute carries it (Core 1.1 §6.2.1):
/// anything else could break out of the Register payload's link.
fn valid_version(v: &str) -> bool {
    let mut parts = v.split('.');
    let digits = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// Whether `value` is of `data_type` and within the size cap.
fn check_value(data_type: DataType, value: &Value) -> Result<(), OpError> {
    let len = match value {
        Value::String(s) | Value::CoreLink(s) => s.len(),
        Value::Opaque(b) => b.len(),
        _ => 0,
    };
    if len > MAX_VALUE_BYTES {
        return Err(OpError::TooLarge {
            limit: Some(MAX_VALUE_BYTES as u64),
        });
    }
    let fits = match (data_type, value) {
        // SenML JSON cannot carry NaN or infinities.
        (DataType::Float, Value::Float(f)) => f.is_finite(),
        (DataType::String, Value::String(_))
        | (DataType::CoreLink, Value::CoreLink(_))
        | (DataType::Opaque, Value::Opaque(_))
        | (DataType::Integer, Value::Integer(_))
        | (DataType::Unsigned, Value::Unsigned(_))
        | (DataType::Boolean, Value::Boolean(_))
        | (DataType::Time, Value::Time(_))
        | (DataType::ObjLink, Value::ObjLink(_)) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(bad(format!(
            "value {value:?} does not fit type {data_type:?}"
        )))
    }
}

impl AppObject {
    /// Checks a declaration: object id outside the core range, a `major.minor`
    /// version, at most [`MAX_INSTANCES`] distinct instances and
    /// [`MAX_RESOURCES`] distinct resources, each resource with operations,
    /// executables without a type and single, readable/writable ones typed.
    pub fn new(
        id: u16,
        version: Option<String>,
        instances: Vec<u16>,
        resources: Vec<ResourceDef>,
    ) -> Result<Self, OpError> {
        if id < FIRST_APP_OBJECT_ID || id == u16::MAX {
            return Err(bad(format!("object id {id} cannot be served by an app")));
        }
        if let Some(v) = &version
            && !valid_version(v)
        {
            return Err(bad("object version must be major.minor, e.g. 1.1"));
        }
        if instances.len() > MAX_INSTANCES {
            return Err(bad(format!("more than {MAX_INSTANCES} instances")));
        }
        if resources.len() > MAX_RESOURCES {
            return Err(bad(format!("more than {MAX_RESOURCES} resources")));
        }
        let mut instances = instances;
        instances.sort_unstable();
        if instances.windows(2).any(|w| w[0] == w[1]) || instances.contains(&u16::MAX) {
            return Err(bad("instance ids must be distinct and below 65535"));
        }
        let mut resources = resources;
        resources.sort_by_key(|d| d.id);
        if resources.windows(2).any(|w| w[0].id == w[1].id)
            || resources.iter().any(|d| d.id == u16::MAX)
        {
            return Err(bad("resource ids must be distinct and below 65535"));
        }
        for d in &resources {
            let ok = match d.operations {
                Operations::None => false,
                Operations::Execute => d.data_type == DataType::None && !d.multiple,
                _ => d.data_type != DataType::None,
            };
            if !ok {
                return Err(bad(format!(
                    "resource {}: {:?} with type {:?}{} is not a valid definition",
                    d.id,
                    d.operations,
                    d.data_type,
                    if d.multiple { " (multiple)" } else { "" }
                )));
            }
        }
        Ok(AppObject {
            id,
            version,
            instances,
            resources,
            values: BTreeMap::new(),
        })
    }

    fn def(&self, resource: u16) -> Result<&ResourceDef, OpError> {
        self.resources
            .iter()
            .find(|d| d.id == resource)
            .ok_or(OpError::NotFound)
    }

    /// Stores a value the app published, checked against the declaration;
    /// returns the resource path to hand to `Client::resources_changed`. A
    /// multiple resource's value is set per resource instance.
    pub fn set(
        &mut self,
        instance: u16,
        resource: u16,
        resource_instance: Option<u16>,
        value: Value,
    ) -> Result<Path, OpError> {
        if !self.instances.contains(&instance) {
            return Err(OpError::NotFound);
        }
        let def = *self.def(resource)?;
        if !def.operations.readable() {
            return Err(bad(format!("resource {resource} is not readable")));
        }
        check_value(def.data_type, &value)?;
        match (def.multiple, resource_instance) {
            (false, None) => {
                self.values
                    .insert((instance, resource), Stored::Single(value));
            }
            (true, Some(ri)) if ri != u16::MAX => {
                let entry = self
                    .values
                    .entry((instance, resource))
                    .or_insert_with(|| Stored::Multiple(BTreeMap::new()));
                if let Stored::Multiple(items) = entry {
                    if !items.contains_key(&ri) && items.len() >= MAX_RESOURCE_INSTANCES {
                        return Err(bad(format!(
                            "more than {MAX_RESOURCE_INSTANCES} resource instances"
                        )));
                    }
                    items.insert(ri, value);
                }
            }
            (false, Some(_)) => return Err(bad("a single resource has no resource instances")),
            (true, _) => return Err(bad("a multiple resource is set per resource instance")),
        }
        Ok(Path::resource(self.id, instance, resource))
    }

    /// The published value at a resource or resource instance, if any.
    pub fn value(
        &self,
        instance: u16,
        resource: u16,
        resource_instance: Option<u16>,
    ) -> Option<&Value> {
        match (self.values.get(&(instance, resource))?, resource_instance) {
            (Stored::Single(v), None) => Some(v),
            (Stored::Multiple(items), Some(ri)) => items.get(&ri),
            _ => None,
        }
    }

    /// The effect asking the app to store `value` at `path`.
    fn write_effect(
        &self,
        data_type: DataType,
        path: Path,
        value: Value,
    ) -> Result<Effect, OpError> {
        check_value(data_type, &value)?;
        Ok(Effect::App {
            path,
            request: AppRequest::Write(value),
        })
    }
}

impl Object for AppObject {
    /// The app answers each write later and may refuse it (Effect::App).
    fn writes_answered_later(&self) -> bool {
        true
    }
    fn id(&self) -> u16 {
        self.id
    }
    fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    fn resources(&self) -> &[ResourceDef] {
        &self.resources
    }
    fn instances(&self) -> Vec<u16> {
        self.instances.clone()
    }
    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        match self.values.get(&(instance, resource)) {
            Some(Stored::Single(v)) => Ok(Some(ResourceValue::Single(v.clone()))),
            Some(Stored::Multiple(items)) if !items.is_empty() => Ok(Some(
                ResourceValue::Multiple(items.iter().map(|(k, v)| (*k, v.clone())).collect()),
            )),
            _ => Err(OpError::ServiceUnavailable("no value published yet".into())),
        }
    }
    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        let def = *self.def(resource)?;
        if !def.operations.writable() {
            return Err(OpError::MethodNotAllowed("not writable"));
        }
        let path = Path::resource(self.id, instance, resource);
        match (def.multiple, value) {
            (false, ResourceValue::Single(v)) => {
                Ok(vec![self.write_effect(def.data_type, path, v)?])
            }
            (true, ResourceValue::Multiple(items)) => {
                if items.is_empty() || items.len() > MAX_RESOURCE_INSTANCES {
                    return Err(bad(format!(
                        "a write of a multiple resource takes 1 to {MAX_RESOURCE_INSTANCES} instances"
                    )));
                }
                items
                    .into_iter()
                    .map(|(ri, v)| {
                        let path = Path::resource_instance(self.id, instance, resource, ri);
                        self.write_effect(def.data_type, path, v)
                    })
                    .collect()
            }
            (false, ResourceValue::Multiple(_)) => {
                Err(bad("single-instance resource given several values"))
            }
            (true, ResourceValue::Single(_)) => Err(bad("multiple resource given a single value")),
        }
    }
    /// An opaque Write arrives here as one piece; a streamed (Block1) one
    /// longer than [`MAX_VALUE_BYTES`] is refused with 4.13 at its first block.
    fn write_block(
        &mut self,
        instance: u16,
        resource: u16,
        offset: u64,
        bytes: &[u8],
        last: bool,
    ) -> Result<Vec<Effect>, OpError> {
        if offset != 0 || !last || bytes.len() > MAX_VALUE_BYTES {
            return Err(OpError::TooLarge {
                limit: Some(MAX_VALUE_BYTES as u64),
            });
        }
        self.write(
            instance,
            resource,
            ResourceValue::Single(Value::Opaque(bytes.to_vec())),
            true,
        )
    }
    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        let def = *self.def(resource)?;
        if !def.operations.executable() {
            return Err(OpError::MethodNotAllowed("not executable"));
        }
        if args.len() > MAX_VALUE_BYTES {
            return Err(OpError::TooLarge {
                limit: Some(MAX_VALUE_BYTES as u64),
            });
        }
        // Core 1.1 §5.4.5: the app only ever sees well-formed arguments.
        crate::execargs::parse(args).map_err(|e| bad(e.to_string()))?;
        let args = String::from_utf8(args.to_vec()).map_err(|_| bad("arguments are not text"))?;
        Ok(vec![Effect::App {
            path: Path::resource(self.id, instance, resource),
            request: AppRequest::Execute(args),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdef(id: u16, operations: Operations, multiple: bool, data_type: DataType) -> ResourceDef {
        ResourceDef {
            id,
            name: APP_RESOURCE_NAME,
            operations,
            multiple,
            mandatory: false,
            data_type,
        }
    }

    /// IPSO Temperature (3303), as the example app declares it.
    pub(crate) fn temperature() -> AppObject {
        AppObject::new(
            3303,
            Some("1.1".into()),
            vec![0],
            vec![
                rdef(5700, Operations::Read, false, DataType::Float),
                rdef(5701, Operations::Read, false, DataType::String),
                rdef(5601, Operations::Read, false, DataType::Float),
                rdef(5602, Operations::Read, false, DataType::Float),
                rdef(5605, Operations::Execute, false, DataType::None),
                rdef(5750, Operations::ReadWrite, false, DataType::String),
                rdef(6000, Operations::ReadWrite, true, DataType::Integer),
            ],
        )
        .unwrap()
    }

    #[test]
    fn declarations_are_checked_before_anything_is_kept() {
        let ok = |id| AppObject::new(id, None, vec![0], vec![]);
        assert!(ok(3303).is_ok());
        for id in [0, 3, 9, 14, u16::MAX] {
            assert!(matches!(ok(id), Err(OpError::BadRequest(_))), "{id}");
        }
        for v in ["1", "1.1.1", "1.x", "1.1>,</0", "", "1234.0"] {
            assert!(
                AppObject::new(3303, Some(v.into()), vec![], vec![]).is_err(),
                "{v}"
            );
        }
        assert!(AppObject::new(3303, None, (0..17).collect(), vec![]).is_err());
        assert!(AppObject::new(3303, None, vec![1, 1], vec![]).is_err());
        let many: Vec<_> = (0..33)
            .map(|i| rdef(i, Operations::Read, false, DataType::Integer))
            .collect();
        assert!(AppObject::new(3303, None, vec![0], many).is_err());
        let twice = vec![
            rdef(1, Operations::Read, false, DataType::Integer),
            rdef(1, Operations::Read, false, DataType::Float),
        ];
        assert!(AppObject::new(3303, None, vec![0], twice).is_err());
        for d in [
            rdef(1, Operations::Execute, false, DataType::Integer),
            rdef(1, Operations::Execute, true, DataType::None),
            rdef(1, Operations::Read, false, DataType::None),
            rdef(1, Operations::None, false, DataType::Integer),
        ] {
            assert!(
                AppObject::new(3303, None, vec![0], vec![d]).is_err(),
                "{d:?}"
            );
        }
    }

    #[test]
    fn set_checks_type_size_and_shape() {
        let mut t = temperature();
        assert_eq!(
            t.set(0, 5700, None, Value::Float(21.5)),
            Ok(Path::resource(3303, 0, 5700))
        );
        assert!(matches!(
            t.set(0, 5700, None, Value::Integer(21)),
            Err(OpError::BadRequest(_))
        ));
        assert!(t.set(0, 5700, None, Value::Float(f64::NAN)).is_err());
        assert_eq!(
            t.set(1, 5700, None, Value::Float(1.0)),
            Err(OpError::NotFound)
        );
        assert_eq!(t.set(0, 1, None, Value::Float(1.0)), Err(OpError::NotFound));
        assert!(t.set(0, 5605, None, Value::Float(1.0)).is_err(), "execute");
        assert!(matches!(
            t.set(0, 5701, None, Value::String("x".repeat(1025))),
            Err(OpError::TooLarge { .. })
        ));
        assert!(t.set(0, 5701, Some(0), Value::String("C".into())).is_err());
        assert!(t.set(0, 6000, None, Value::Integer(1)).is_err());
        for ri in 0..16 {
            t.set(0, 6000, Some(ri), Value::Integer(ri.into())).unwrap();
        }
        assert!(
            t.set(0, 6000, Some(16), Value::Integer(1)).is_err(),
            "17th instance"
        );
        t.set(0, 6000, Some(3), Value::Integer(30)).unwrap();
        assert_eq!(t.value(0, 6000, Some(3)), Some(&Value::Integer(30)));
        assert_eq!(t.value(0, 5700, None), Some(&Value::Float(21.5)));
    }

    #[test]
    fn unpublished_values_are_unavailable_and_published_ones_read() {
        let mut t = temperature();
        assert!(matches!(
            t.read(0, 5700),
            Err(OpError::ServiceUnavailable(_))
        ));
        t.set(0, 5700, None, Value::Float(20.0)).unwrap();
        assert_eq!(
            t.read(0, 5700),
            Ok(Some(ResourceValue::Single(Value::Float(20.0))))
        );
    }

    #[test]
    fn writes_and_executes_become_app_requests() {
        let mut t = temperature();
        let effects = t
            .write(
                0,
                5750,
                ResourceValue::Single(Value::String("lab".into())),
                true,
            )
            .unwrap();
        assert_eq!(
            effects,
            vec![Effect::App {
                path: Path::resource(3303, 0, 5750),
                request: AppRequest::Write(Value::String("lab".into())),
            }]
        );
        // The value is the app's to publish: nothing is stored by the write.
        assert!(t.read(0, 5750).is_err());
        let effects = t
            .write(
                0,
                6000,
                ResourceValue::Multiple(vec![(0, Value::Integer(1)), (4, Value::Integer(2))]),
                false,
            )
            .unwrap();
        assert_eq!(effects.len(), 2);
        assert!(matches!(
            &effects[1],
            Effect::App { path, request: AppRequest::Write(Value::Integer(2)) }
                if *path == Path::resource_instance(3303, 0, 6000, 4)
        ));
        assert!(matches!(
            t.write(0, 5750, ResourceValue::Single(Value::Integer(1)), true),
            Err(OpError::BadRequest(_))
        ));
        assert!(matches!(
            t.write(0, 5700, ResourceValue::Single(Value::Float(1.0)), true),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert_eq!(
            t.execute(0, 5605, b"0='now'").unwrap(),
            vec![Effect::App {
                path: Path::resource(3303, 0, 5605),
                request: AppRequest::Execute("0='now'".into()),
            }]
        );
        assert!(matches!(
            t.execute(0, 5605, b"x y"),
            Err(OpError::BadRequest(_))
        ));
        assert!(matches!(
            t.execute(0, 5605, &[b'1'; 1025]),
            Err(OpError::TooLarge { .. })
        ));
        assert!(matches!(
            t.execute(0, 5700, b""),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            t.write_block(0, 5750, 0, b"abc", false),
            Err(OpError::TooLarge { limit: Some(1024) })
        ));
    }
}
