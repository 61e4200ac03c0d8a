//! /3 Device: who the device is and a few live figures (Core 1.1 §E.4;
//! resource table in the reference §8). The core has no clock: the driver
//! sets the time and free memory before a read ([`Device::set_now`],
//! [`Device::set_memory_free`]).

use serde::{Deserialize, Serialize};

use crate::model::{DataType, ResourceValue, Value};
use crate::object::{Effect, Object, OpError, Operations, ResourceDef};
use crate::objects::{def, not_allowed, single};

/// The object id.
pub const OBJECT_ID: u16 = 3;

/// Resource ids of Object 3 that we implement.
pub mod res {
    pub const MANUFACTURER: u16 = 0;
    pub const MODEL_NUMBER: u16 = 1;
    pub const SERIAL_NUMBER: u16 = 2;
    pub const FIRMWARE_VERSION: u16 = 3;
    pub const REBOOT: u16 = 4;
    pub const MEMORY_FREE: u16 = 10;
    pub const ERROR_CODE: u16 = 11;
    pub const CURRENT_TIME: u16 = 13;
    pub const UTC_OFFSET: u16 = 14;
    pub const SUPPORTED_BINDING: u16 = 16;
    pub const DEVICE_TYPE: u16 = 17;
    pub const SOFTWARE_VERSION: u16 = 19;
}

static RESOURCES: [ResourceDef; 12] = [
    def(
        res::MANUFACTURER,
        "Manufacturer",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::MODEL_NUMBER,
        "Model Number",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::SERIAL_NUMBER,
        "Serial Number",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::FIRMWARE_VERSION,
        "Firmware Version",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::REBOOT,
        "Reboot",
        Operations::Execute,
        false,
        true,
        DataType::None,
    ),
    def(
        res::MEMORY_FREE,
        "Memory Free",
        Operations::Read,
        false,
        false,
        DataType::Integer,
    ),
    def(
        res::ERROR_CODE,
        "Error Code",
        Operations::Read,
        true,
        true,
        DataType::Integer,
    ),
    def(
        res::CURRENT_TIME,
        "Current Time",
        Operations::ReadWrite,
        false,
        false,
        DataType::Time,
    ),
    def(
        res::UTC_OFFSET,
        "UTC Offset",
        Operations::ReadWrite,
        false,
        false,
        DataType::String,
    ),
    def(
        res::SUPPORTED_BINDING,
        "Supported Binding and Modes",
        Operations::Read,
        false,
        true,
        DataType::String,
    ),
    def(
        res::DEVICE_TYPE,
        "Device Type",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::SOFTWARE_VERSION,
        "Software Version",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
];

/// What the driver knows about the device at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub model: String,
    pub serial: String,
    pub firmware_version: String,
    pub software_version: String,
    pub device_type: String,
}

/// The single /3/0 instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub info: DeviceInfo,
    /// Error Code (11): starts as the single instance 0 = 0 "no error".
    pub error_codes: Vec<i64>,
    /// KiB, set by the driver.
    pub memory_free_kib: u64,
    /// The driver's clock, Unix seconds, as of its last `set_now`.
    now: i64,
    /// What a Write of Current Time moved the clock by, in seconds.
    time_offset: i64,
    /// UTC Offset (14), e.g. `+02:00`.
    pub utc_offset: String,
}

impl Device {
    pub fn new(info: DeviceInfo) -> Self {
        Device {
            info,
            error_codes: vec![0],
            memory_free_kib: 0,
            now: 0,
            time_offset: 0,
            utc_offset: "+00:00".into(),
        }
    }

    /// The driver's clock, Unix seconds; Current Time reads this plus what a server Write set.
    pub fn set_now(&mut self, unix_seconds: i64) {
        self.now = unix_seconds;
    }

    pub fn set_memory_free(&mut self, kib: u64) {
        self.memory_free_kib = kib;
    }

    /// Current Time (13) as the server sees it.
    pub fn current_time(&self) -> i64 {
        self.now.saturating_add(self.time_offset)
    }
}

/// UTC Offset is `±HH:MM` (ISO 8601, Core 1.1 §E.4 resource 14).
fn valid_utc_offset(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b, [sign, h1, h2, b':', m1, m2]
        if (*sign == b'+' || *sign == b'-') && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()))
}

impl Object for Device {
    /// Exact: the writes run on a copy (LwM2M 1.1 Core §6.3.9 all-or-nothing).
    fn check_writes(&self, writes: &[crate::object::PlannedWrite]) -> Result<(), OpError> {
        crate::object::dry_run(self, writes)
    }
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
        match resource {
            res::MANUFACTURER => s("wasmdm"),
            res::MODEL_NUMBER => s(&self.info.model),
            res::SERIAL_NUMBER => s(&self.info.serial),
            res::FIRMWARE_VERSION => s(&self.info.firmware_version),
            res::MEMORY_FREE => Ok(Some(ResourceValue::Single(Value::Integer(
                i64::try_from(self.memory_free_kib).unwrap_or(i64::MAX),
            )))),
            res::ERROR_CODE => Ok(Some(ResourceValue::Multiple(
                (0u16..)
                    .zip(self.error_codes.iter().map(|c| Value::Integer(*c)))
                    .collect(),
            ))),
            res::CURRENT_TIME => Ok(Some(ResourceValue::Single(Value::Time(
                self.current_time(),
            )))),
            res::UTC_OFFSET => s(&self.utc_offset),
            res::SUPPORTED_BINDING => s("U"),
            res::DEVICE_TYPE => s(&self.info.device_type),
            res::SOFTWARE_VERSION => s(&self.info.software_version),
            r => Err(not_allowed(&RESOURCES, r, "resource is not readable")),
        }
    }

    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        match resource {
            res::CURRENT_TIME => {
                let t = match single(value)? {
                    Value::Time(t) | Value::Integer(t) => t,
                    _ => return Err(OpError::BadRequest("expected a time".into())),
                };
                self.time_offset = t.saturating_sub(self.now);
                Ok(vec![Effect::Persist])
            }
            res::UTC_OFFSET => match single(value)? {
                Value::String(o) if valid_utc_offset(&o) => {
                    self.utc_offset = o;
                    Ok(vec![Effect::Persist])
                }
                _ => Err(OpError::BadRequest("UTC Offset is ±HH:MM".into())),
            },
            r => Err(not_allowed(&RESOURCES, r, "resource is not writable")),
        }
    }

    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        if instance != 0 {
            return Err(OpError::NotFound);
        }
        crate::execargs::parse(args).map_err(|e| OpError::BadRequest(e.to_string()))?;
        match resource {
            res::REBOOT => Ok(vec![Effect::Reboot]),
            r => Err(not_allowed(&RESOURCES, r, "resource is not executable")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::new(DeviceInfo {
            model: "edge-1".into(),
            serial: "SN42".into(),
            firmware_version: "fw-1.2".into(),
            software_version: "0.1.0".into(),
            device_type: "gateway".into(),
        })
    }

    fn string(s: &str) -> Option<ResourceValue> {
        Some(ResourceValue::Single(Value::String(s.into())))
    }

    #[test]
    fn identity_resources() {
        let d = device();
        assert_eq!(d.read(0, res::MANUFACTURER).unwrap(), string("wasmdm"));
        assert_eq!(d.read(0, res::MODEL_NUMBER).unwrap(), string("edge-1"));
        assert_eq!(d.read(0, res::SERIAL_NUMBER).unwrap(), string("SN42"));
        assert_eq!(d.read(0, res::FIRMWARE_VERSION).unwrap(), string("fw-1.2"));
        assert_eq!(d.read(0, res::SUPPORTED_BINDING).unwrap(), string("U"));
        assert_eq!(d.read(0, res::DEVICE_TYPE).unwrap(), string("gateway"));
        assert_eq!(d.read(0, res::SOFTWARE_VERSION).unwrap(), string("0.1.0"));
        assert_eq!(
            d.read(0, res::ERROR_CODE).unwrap(),
            Some(ResourceValue::Multiple(vec![(0, Value::Integer(0))]))
        );
        assert!(matches!(
            d.read(0, res::REBOOT),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert_eq!(d.read(0, 5), Err(OpError::NotFound));
        assert_eq!(d.read(1, 0), Err(OpError::NotFound));
        // Error Code is a multiple resource per the table.
        assert!(
            d.resources()
                .iter()
                .any(|r| r.id == res::ERROR_CODE && r.multiple)
        );
    }

    #[test]
    fn time_comes_from_the_driver_and_a_write_shifts_it() {
        let mut d = device();
        d.set_now(1_000);
        d.set_memory_free(2048);
        assert_eq!(
            d.read(0, res::CURRENT_TIME).unwrap(),
            Some(ResourceValue::Single(Value::Time(1_000)))
        );
        assert_eq!(
            d.read(0, res::MEMORY_FREE).unwrap(),
            Some(ResourceValue::Single(Value::Integer(2048)))
        );
        assert_eq!(
            d.write(
                0,
                res::CURRENT_TIME,
                ResourceValue::Single(Value::Time(1_476_186_613)),
                true
            )
            .unwrap(),
            vec![Effect::Persist]
        );
        d.set_now(1_010);
        assert_eq!(d.current_time(), 1_476_186_623);
        assert!(matches!(
            d.write(
                0,
                res::CURRENT_TIME,
                ResourceValue::Single(Value::String("x".into())),
                true
            ),
            Err(OpError::BadRequest(_))
        ));
    }

    #[test]
    fn utc_offset_and_read_only_writes() {
        let mut d = device();
        d.write(
            0,
            res::UTC_OFFSET,
            ResourceValue::Single(Value::String("+02:00".into())),
            true,
        )
        .unwrap();
        assert_eq!(d.read(0, res::UTC_OFFSET).unwrap(), string("+02:00"));
        assert!(matches!(
            d.write(
                0,
                res::UTC_OFFSET,
                ResourceValue::Single(Value::String("2h".into())),
                true
            ),
            Err(OpError::BadRequest(_))
        ));
        assert_eq!(d.utc_offset, "+02:00");
        assert!(matches!(
            d.write(
                0,
                res::MANUFACTURER,
                ResourceValue::Single(Value::String("x".into())),
                true
            ),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert_eq!(
            d.write(
                0,
                99,
                ResourceValue::Single(Value::String("x".into())),
                true
            ),
            Err(OpError::NotFound)
        );
    }

    #[test]
    fn reboot_is_an_effect() {
        let mut d = device();
        assert_eq!(
            d.execute(0, res::REBOOT, b"").unwrap(),
            vec![Effect::Reboot]
        );
        assert!(matches!(
            d.execute(0, res::MANUFACTURER, b""),
            Err(OpError::MethodNotAllowed(_))
        ));
    }
}
