//! /0 Security: where the client registers and how. Only bootstrap may read
//! or write it; every Device Management operation answers 4.01 (Core 1.1
//! §E.1, reference §2 "Failure codes": quote in wakaama#440).

use serde::{Deserialize, Serialize};

use crate::model::{DataType, ResourceValue};
use crate::object::{Effect, Object, OpError, Operations, ResourceDef};
use crate::objects::def;

/// The object id.
pub const OBJECT_ID: u16 = 0;

static RESOURCES: [ResourceDef; 5] = [
    def(
        0,
        "LwM2M Server URI",
        Operations::None,
        false,
        true,
        DataType::String,
    ),
    def(
        1,
        "Bootstrap-Server",
        Operations::None,
        false,
        true,
        DataType::Boolean,
    ),
    def(
        2,
        "Security Mode",
        Operations::None,
        false,
        true,
        DataType::Integer,
    ),
    def(
        10,
        "Short Server ID",
        Operations::None,
        false,
        false,
        DataType::Integer,
    ),
    def(
        11,
        "Client Hold Off Time",
        Operations::None,
        false,
        false,
        DataType::Integer,
    ),
];

/// Security Mode 3: NoSec (reference §8).
pub const SECURITY_MODE_NOSEC: i64 = 3;

/// One Security instance (id 0) for the one LwM2M server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub server_uri: String,
    pub bootstrap: bool,
    pub security_mode: i64,
    pub short_server_id: u16,
}

impl Security {
    /// A NoSec, non-bootstrap account for `server_uri`.
    pub fn nosec(server_uri: impl Into<String>, short_server_id: u16) -> Self {
        Security {
            server_uri: server_uri.into(),
            bootstrap: false,
            security_mode: SECURITY_MODE_NOSEC,
            short_server_id,
        }
    }
}

impl Object for Security {
    fn id(&self) -> u16 {
        OBJECT_ID
    }
    fn resources(&self) -> &'static [ResourceDef] {
        &RESOURCES
    }
    fn instances(&self) -> Vec<u16> {
        vec![0]
    }
    fn read(&self, _: u16, _: u16) -> Result<Option<ResourceValue>, OpError> {
        Err(OpError::Unauthorized)
    }
    fn write(&mut self, _: u16, _: u16, _: ResourceValue, _: bool) -> Result<Vec<Effect>, OpError> {
        Err(OpError::Unauthorized)
    }
    fn write_block(
        &mut self,
        _: u16,
        _: u16,
        _: u64,
        _: &[u8],
        _: bool,
    ) -> Result<Vec<Effect>, OpError> {
        Err(OpError::Unauthorized)
    }
    fn execute(&mut self, _: u16, _: u16, _: &[u8]) -> Result<Vec<Effect>, OpError> {
        Err(OpError::Unauthorized)
    }
    fn create(
        &mut self,
        _: Option<u16>,
        _: Vec<(u16, ResourceValue)>,
    ) -> Result<(u16, Vec<Effect>), OpError> {
        Err(OpError::Unauthorized)
    }
    fn delete(&mut self, _: u16) -> Result<Vec<Effect>, OpError> {
        Err(OpError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    #[test]
    fn every_dm_operation_is_unauthorized() {
        let mut s = Security::nosec("coap://127.0.0.1:5683", 1);
        assert_eq!(s.read(0, 0), Err(OpError::Unauthorized));
        assert_eq!(
            s.write(0, 0, ResourceValue::Single(Value::String("x".into())), true),
            Err(OpError::Unauthorized)
        );
        assert_eq!(
            s.write_block(0, 0, 0, b"x", true),
            Err(OpError::Unauthorized)
        );
        assert_eq!(s.execute(0, 0, b""), Err(OpError::Unauthorized));
        assert_eq!(s.create(None, vec![]), Err(OpError::Unauthorized));
        assert_eq!(s.delete(0), Err(OpError::Unauthorized));
        // Nothing changed.
        assert_eq!(s, Security::nosec("coap://127.0.0.1:5683", 1));
        assert_eq!(s.security_mode, 3);
        assert_eq!(s.instances(), vec![0]);
    }
}
