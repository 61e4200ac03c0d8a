//! /26500 wasmdm Engine: what the device's WebAssembly engine accepts, so a
//! server can compile a package for it ahead of time (issue 13 part 2).
//!
//! A wasmdm-specific object in the private range 26241-32768, which needs no
//! registration with OMNA (LwM2M registry, "x" objects); its definition for
//! other servers is `host/proto/ddf/26500.xml`. One instance (0), every
//! resource read-only. The driver fills [`EngineInfo`] from the runtime; the
//! core only serves it.

use serde::{Deserialize, Serialize};

use crate::model::{DataType, Path, ResourceValue, Value};
use crate::object::{Effect, Object, OpError, Operations, ResourceDef};
use crate::objects::{def, not_allowed};

/// The object id (private range, LwM2M registry: 26241-32768).
pub const OBJECT_ID: u16 = 26500;

/// Resource ids.
pub mod res {
    /// "wasmtime 48.0.8".
    pub const RUNTIME_VERSION: u16 = 0;
    /// The target the code must be built for, e.g. `x86_64-linux`, or
    /// `pulley32` where the device interprets Pulley bytecode.
    pub const TARGET: u16 = 1;
    /// CPU features the engine uses (one per resource instance).
    pub const CPU_FEATURES: u16 = 2;
    /// The hash a precompiled artifact must be built under (hex).
    pub const COMPATIBILITY_HASH: u16 = 3;
    /// Component worlds the host runs (one per resource instance).
    pub const WORLDS: u16 = 4;
    /// `auto`, `winch` or `cranelift` (device config `compiler`).
    pub const COMPILER: u16 = 5;
    /// Address space reserved per linear memory, bytes (part of the hash).
    pub const MEMORY_RESERVATION: u16 = 6;
    /// Guard region after each linear memory, bytes (part of the hash).
    pub const MEMORY_GUARD: u16 = 7;
    /// Whether the device accepts precompiled artifacts (it trusts at least
    /// one key for native code).
    pub const ACCEPTS_PRECOMPILED: u16 = 8;
    /// The largest package file the device takes, bytes (its
    /// `max-package-bytes`): a server sends the plain file when the variant
    /// with precompiled code would be larger.
    pub const MAX_PACKAGE_SIZE: u16 = 9;
}

static RESOURCES: [ResourceDef; 10] = [
    def(
        res::RUNTIME_VERSION,
        "Runtime Version",
        Operations::Read,
        false,
        true,
        DataType::String,
    ),
    def(
        res::TARGET,
        "Target",
        Operations::Read,
        false,
        true,
        DataType::String,
    ),
    def(
        res::CPU_FEATURES,
        "CPU Features",
        Operations::Read,
        true,
        false,
        DataType::String,
    ),
    def(
        res::COMPATIBILITY_HASH,
        "Compatibility Hash",
        Operations::Read,
        false,
        true,
        DataType::String,
    ),
    def(
        res::WORLDS,
        "Supported Worlds",
        Operations::Read,
        true,
        true,
        DataType::String,
    ),
    def(
        res::COMPILER,
        "Compiler",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::MEMORY_RESERVATION,
        "Memory Reservation",
        Operations::Read,
        false,
        false,
        DataType::Integer,
    ),
    def(
        res::MEMORY_GUARD,
        "Memory Guard",
        Operations::Read,
        false,
        false,
        DataType::Integer,
    ),
    def(
        res::ACCEPTS_PRECOMPILED,
        "Accepts Precompiled",
        Operations::Read,
        false,
        true,
        DataType::Boolean,
    ),
    def(
        res::MAX_PACKAGE_SIZE,
        "Max Package Size",
        Operations::Read,
        false,
        false,
        DataType::Integer,
    ),
];

/// What the object reports: set once by the device's driver at startup;
/// read back from a device's report by a server ([`EngineInfo::from_values`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    pub runtime_version: String,
    pub target: String,
    pub cpu_features: Vec<String>,
    pub compatibility_hash: String,
    pub worlds: Vec<String>,
    pub compiler: String,
    pub memory_reservation: u64,
    pub memory_guard: u64,
    pub accepts_precompiled: bool,
    /// Largest package file taken, bytes; 0 when the device did not say
    /// (a device from before resource 9).
    #[serde(default)]
    pub max_package_bytes: u64,
}

/// Longest text value taken from a device's report (a version, triple,
/// hash, world); a longer one makes the report invalid.
const MAX_TEXT: usize = 256;
/// Most CPU features or worlds taken from a report.
const MAX_LIST: usize = 64;

impl EngineInfo {
    /// Reads the values of a Read of /26500/0 (or /26500), as a server got
    /// them from a device: `None` when the hash, target or runtime version
    /// is missing or a value is malformed (the device is untrusted input).
    pub fn from_values(values: &[(Path, Value)]) -> Option<EngineInfo> {
        let mut e = EngineInfo::default();
        for (path, value) in values {
            if path.object != OBJECT_ID || path.instance.unwrap_or(0) != 0 {
                continue;
            }
            match path.resource? {
                res::RUNTIME_VERSION => e.runtime_version = text(value)?,
                res::TARGET => e.target = text(value)?,
                res::CPU_FEATURES if e.cpu_features.len() < MAX_LIST => {
                    e.cpu_features.push(text(value)?)
                }
                res::COMPATIBILITY_HASH => e.compatibility_hash = text(value)?,
                res::WORLDS if e.worlds.len() < MAX_LIST => e.worlds.push(text(value)?),
                res::COMPILER => e.compiler = text(value)?,
                res::MEMORY_RESERVATION => e.memory_reservation = number(value)?,
                res::MEMORY_GUARD => e.memory_guard = number(value)?,
                res::ACCEPTS_PRECOMPILED => e.accepts_precompiled = boolean(value)?,
                res::MAX_PACKAGE_SIZE => e.max_package_bytes = number(value)?,
                _ => {}
            }
        }
        let complete = valid_hash(&e.compatibility_hash)
            && !e.target.is_empty()
            && !e.runtime_version.is_empty();
        complete.then_some(e)
    }
}

/// True for a hash fit to name a file: 1-64 lowercase hex digits.
pub fn valid_hash(h: &str) -> bool {
    (1..=64).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Opaque(b) => String::from_utf8(b.clone()).ok()?,
        _ => return None,
    };
    (s.len() <= MAX_TEXT && !s.chars().any(char::is_control)).then_some(s)
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        Value::Unsigned(u) => Some(*u),
        // SenML carries every number as a float; these are whole numbers.
        Value::Float(f) if *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19 => Some(*f as u64),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        Value::Integer(i) => Some(*i != 0),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The object.
#[derive(Debug, Clone)]
pub struct Engine {
    info: EngineInfo,
}

impl Engine {
    pub fn new(info: EngineInfo) -> Self {
        Engine { info }
    }
}

fn multiple(values: &[String]) -> ResourceValue {
    ResourceValue::Multiple(
        (0u16..)
            .zip(values.iter().map(|v| Value::String(v.clone())))
            .collect(),
    )
}

fn integer(v: u64) -> ResourceValue {
    ResourceValue::Single(Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)))
}

impl Object for Engine {
    fn id(&self) -> u16 {
        OBJECT_ID
    }
    fn resources(&self) -> &[ResourceDef] {
        &RESOURCES
    }
    fn instances(&self) -> Vec<u16> {
        vec![0]
    }

    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        let s = |v: &str| Ok(Some(ResourceValue::Single(Value::String(v.to_owned()))));
        let i = &self.info;
        match resource {
            res::RUNTIME_VERSION => s(&i.runtime_version),
            res::TARGET => s(&i.target),
            res::CPU_FEATURES => Ok(Some(multiple(&i.cpu_features))),
            res::COMPATIBILITY_HASH => s(&i.compatibility_hash),
            res::WORLDS => Ok(Some(multiple(&i.worlds))),
            res::COMPILER => s(&i.compiler),
            res::MEMORY_RESERVATION => Ok(Some(integer(i.memory_reservation))),
            res::MEMORY_GUARD => Ok(Some(integer(i.memory_guard))),
            res::ACCEPTS_PRECOMPILED => Ok(Some(ResourceValue::Single(Value::Boolean(
                i.accepts_precompiled,
            )))),
            res::MAX_PACKAGE_SIZE => Ok(Some(integer(i.max_package_bytes))),
            r => Err(not_allowed(&RESOURCES, r, "resource is not readable")),
        }
    }

    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        _value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        Err(not_allowed(&RESOURCES, resource, "read-only object"))
    }

    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        _args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        Err(not_allowed(&RESOURCES, resource, "nothing to execute"))
    }

    /// Never changes while the device runs: repeated Reads reuse the body.
    fn generation(&self) -> Option<u64> {
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> EngineInfo {
        EngineInfo {
            runtime_version: "wasmtime 48.0.8".into(),
            target: "x86_64-linux".into(),
            cpu_features: vec!["sse4.2".into(), "avx2".into()],
            compatibility_hash: "0123456789abcdef".into(),
            worlds: vec![
                "wasi:cli/command@0.2.12".into(),
                "wasmdm:device/app@0.1.0".into(),
            ],
            compiler: "auto".into(),
            memory_reservation: 4 << 30,
            memory_guard: 32 << 20,
            accepts_precompiled: true,
            max_package_bytes: 256 << 20,
        }
    }

    #[test]
    fn reads_every_resource_and_refuses_changes() {
        let mut o = Engine::new(info());
        assert_eq!(o.id(), 26500);
        assert_eq!(
            o.read(0, res::COMPATIBILITY_HASH).unwrap(),
            Some(ResourceValue::Single(Value::String(
                "0123456789abcdef".into()
            )))
        );
        assert_eq!(
            o.read(0, res::WORLDS).unwrap(),
            Some(ResourceValue::Multiple(vec![
                (0, Value::String("wasi:cli/command@0.2.12".into())),
                (1, Value::String("wasmdm:device/app@0.1.0".into())),
            ]))
        );
        assert_eq!(
            o.read(0, res::MEMORY_RESERVATION).unwrap(),
            Some(ResourceValue::Single(Value::Integer(4 << 30)))
        );
        assert_eq!(
            o.read(0, res::ACCEPTS_PRECOMPILED).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(true)))
        );
        assert_eq!(
            o.read(0, res::MAX_PACKAGE_SIZE).unwrap(),
            Some(ResourceValue::Single(Value::Integer(256 << 20)))
        );
        for d in o.resources() {
            assert!(o.read(0, d.id).unwrap().is_some(), "{}", d.name);
        }
        assert_eq!(o.read(1, res::TARGET), Err(OpError::NotFound));
        assert_eq!(o.read(0, 99), Err(OpError::NotFound));
        assert!(matches!(
            o.write(
                0,
                res::COMPILER,
                ResourceValue::Single(Value::String("x".into())),
                true
            ),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            o.execute(0, res::TARGET, b""),
            Err(OpError::MethodNotAllowed(_))
        ));
    }

    fn at(r: u16, ri: Option<u16>) -> Path {
        Path {
            object: OBJECT_ID,
            instance: Some(0),
            resource: Some(r),
            resource_instance: ri,
        }
    }

    /// A server reads a device's report back, whatever format carried the
    /// numbers, and refuses a hash that is not fit to name a file.
    #[test]
    fn a_report_is_read_back_and_a_bad_hash_refused() {
        let mut values = vec![
            (at(0, None), Value::String("wasmtime 48.0.8".into())),
            (at(1, None), Value::String("x86_64-linux".into())),
            (at(2, Some(0)), Value::String("sse4.1".into())),
            (at(2, Some(1)), Value::String("avx2".into())),
            (at(3, None), Value::String("0123456789abcdef".into())),
            (at(6, None), Value::Float(4294967296.0)),
            (at(7, None), Value::Integer(33554432)),
            (at(8, None), Value::Boolean(true)),
            (at(9, None), Value::Integer(268435456)),
        ];
        let e = EngineInfo::from_values(&values).unwrap();
        assert_eq!(e.cpu_features, ["sse4.1", "avx2"]);
        assert_eq!(e.memory_reservation, 4 << 30);
        assert!(e.accepts_precompiled);
        assert_eq!(e.max_package_bytes, 256 << 20);
        values[4].1 = Value::String("../../etc".into());
        assert_eq!(EngineInfo::from_values(&values), None);
    }
}
