//! What a device's WebAssembly engine accepts, as it reports it in the
//! wasmdm Engine object /26500 (`host/proto/ddf/26500.xml`), kept in the
//! device record and shown by `GET /api/devices/{ep}`.

use serde::{Deserialize, Serialize};
use wasmdm_proto::model::{Path, Value};

/// The wasmdm Engine object (private range; see the DDF).
pub const ENGINE_OBJECT: u16 = wasmdm_proto::objects::engine::OBJECT_ID;

/// Longest text value kept from the device (a version, triple, hash, world);
/// longer values make the report invalid.
const MAX_TEXT: usize = 256;
/// Most CPU features or worlds kept.
const MAX_LIST: usize = 64;

/// A device's engine (resources of /26500/0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEngine {
    /// /26500/0/0, e.g. "wasmtime 48.0.8".
    pub runtime_version: String,
    /// /26500/0/1: `x86_64-linux`, `aarch64-linux`, or `pulley32`/`pulley64`.
    pub target: String,
    /// /26500/0/2: CPU features the engine uses (`sse4.1`, `avx2`, `lse`...).
    pub cpu_features: Vec<String>,
    /// /26500/0/3: the hash precompiled code must be built under (hex).
    pub compatibility_hash: String,
    /// /26500/0/4: component worlds the host runs.
    pub worlds: Vec<String>,
    /// /26500/0/5: `auto`, `winch` or `cranelift`.
    pub compiler: String,
    /// /26500/0/6: address space reserved per linear memory, bytes.
    pub memory_reservation: u64,
    /// /26500/0/7: guard region after each linear memory, bytes.
    pub memory_guard: u64,
    /// /26500/0/8: the device trusts a key for native code.
    pub accepts_precompiled: bool,
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

/// True for a hash fit to name a file: 1-64 lowercase hex digits.
pub fn valid_hash(h: &str) -> bool {
    (1..=64).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl DeviceEngine {
    /// Reads the values of a Read of /26500/0 (or /26500); `None` when the
    /// hash, target or runtime version is missing or a value is malformed.
    pub fn from_values(values: &[(Path, Value)]) -> Option<DeviceEngine> {
        let mut e = DeviceEngine::default();
        for (path, value) in values {
            if path.object != ENGINE_OBJECT || path.instance.unwrap_or(0) != 0 {
                continue;
            }
            match path.resource? {
                0 => e.runtime_version = text(value)?,
                1 => e.target = text(value)?,
                2 if e.cpu_features.len() < MAX_LIST => e.cpu_features.push(text(value)?),
                3 => e.compatibility_hash = text(value)?,
                4 if e.worlds.len() < MAX_LIST => e.worlds.push(text(value)?),
                5 => e.compiler = text(value)?,
                6 => e.memory_reservation = number(value)?,
                7 => e.memory_guard = number(value)?,
                8 => e.accepts_precompiled = boolean(value)?,
                _ => {}
            }
        }
        let complete = valid_hash(&e.compatibility_hash)
            && !e.target.is_empty()
            && !e.runtime_version.is_empty();
        complete.then_some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(r: u16, ri: Option<u16>) -> Path {
        Path {
            object: ENGINE_OBJECT,
            instance: Some(0),
            resource: Some(r),
            resource_instance: ri,
        }
    }

    #[test]
    fn reads_a_report_and_refuses_a_bad_hash() {
        let mut values = vec![
            (res(0, None), Value::String("wasmtime 48.0.8".into())),
            (res(1, None), Value::String("x86_64-linux".into())),
            (res(2, Some(0)), Value::String("sse4.1".into())),
            (res(2, Some(1)), Value::String("avx2".into())),
            (res(3, None), Value::String("0123456789abcdef".into())),
            (res(6, None), Value::Float(4294967296.0)),
            (res(7, None), Value::Integer(33554432)),
            (res(8, None), Value::Boolean(true)),
        ];
        let e = DeviceEngine::from_values(&values).unwrap();
        assert_eq!(e.cpu_features, ["sse4.1", "avx2"]);
        assert_eq!(e.memory_reservation, 4 << 30);
        assert!(e.accepts_precompiled);
        values[4].1 = Value::String("../../etc".into());
        assert_eq!(DeviceEngine::from_values(&values), None);
    }
}
