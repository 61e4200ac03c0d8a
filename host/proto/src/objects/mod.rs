//! The core LwM2M objects every client has: /0 Security, /1 Server, /3 Device
//! (Core 1.1 Appendix E; resource tables in the reference §8).

pub mod app;
pub mod device;
pub mod engine;
pub mod security;
pub mod server;

pub use app::AppObject;
pub use device::{Device, DeviceInfo};
pub use security::{Security, SecurityMode};
pub use server::Server;

use crate::model::{ResourceValue, Value};
use crate::object::{OpError, ResourceDef};

/// Shorthand for the static resource tables.
pub(crate) const fn def(
    id: u16,
    name: &'static str,
    operations: crate::object::Operations,
    multiple: bool,
    mandatory: bool,
    data_type: crate::model::DataType,
) -> ResourceDef {
    ResourceDef {
        id,
        name,
        operations,
        multiple,
        mandatory,
        data_type,
    }
}

/// The single value of a write, or 4.00.
pub(crate) fn single(value: ResourceValue) -> Result<Value, OpError> {
    match value {
        ResourceValue::Single(v) => Ok(v),
        ResourceValue::Multiple(_) => Err(OpError::BadRequest(
            "single-instance resource given several values".into(),
        )),
    }
}

/// A non-negative integer write (Integer or Unsigned on the wire).
pub(crate) fn non_negative(value: ResourceValue) -> Result<u64, OpError> {
    match single(value)? {
        Value::Integer(i) => {
            u64::try_from(i).map_err(|_| OpError::BadRequest("negative value".into()))
        }
        Value::Unsigned(u) => Ok(u),
        _ => Err(OpError::BadRequest("expected an integer".into())),
    }
}

/// 4.05 for a resource the table knows but the operation does not fit, 4.04 otherwise.
pub(crate) fn not_allowed(table: &[ResourceDef], resource: u16, why: &'static str) -> OpError {
    if table.iter().any(|d| d.id == resource) {
        OpError::MethodNotAllowed(why)
    } else {
        OpError::NotFound
    }
}
