//! /0 Security: where the client registers and how. Only bootstrap may read
//! or write it; every Device Management operation answers 4.01 (Core 1.1
//! §E.1, reference §2 "Failure codes": quote in wakaama#440).

use serde::{Deserialize, Serialize};

use crate::model::{DataType, ResourceValue};
use crate::object::{Effect, Object, OpError, Operations, ResourceDef};
use crate::objects::def;

/// The object id.
pub const OBJECT_ID: u16 = 0;

static RESOURCES: [ResourceDef; 9] = [
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
        3,
        "Public Key or Identity",
        Operations::None,
        false,
        true,
        DataType::Opaque,
    ),
    def(
        4,
        "Server Public Key",
        Operations::None,
        false,
        true,
        DataType::Opaque,
    ),
    def(
        5,
        "Secret Key",
        Operations::None,
        false,
        true,
        DataType::Opaque,
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
    def(
        12,
        "Bootstrap-Server Account Timeout",
        Operations::None,
        false,
        false,
        DataType::Integer,
    ),
];

/// Security Mode 3: NoSec (reference §8).
pub const SECURITY_MODE_NOSEC: i64 = 3;

/// /0/x/2 Security Mode (Core 1.1 Appendix E.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// 0: Pre-Shared Key.
    Psk = 0,
    /// 1: Raw Public Key (RFC 7250).
    #[serde(rename = "rpk")]
    RawPublicKey = 1,
    /// 2: Certificate.
    Certificate = 2,
    /// 3: NoSec.
    NoSec = 3,
}

impl SecurityMode {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SecurityMode::Psk => "psk",
            SecurityMode::RawPublicKey => "rpk",
            SecurityMode::Certificate => "certificate",
            SecurityMode::NoSec => "nosec",
        }
    }
}

impl std::str::FromStr for SecurityMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "psk" => Ok(SecurityMode::Psk),
            "rpk" => Ok(SecurityMode::RawPublicKey),
            "certificate" | "x509" => Ok(SecurityMode::Certificate),
            "nosec" => Ok(SecurityMode::NoSec),
            other => Err(format!(
                "unknown security mode {other:?}: expected psk, certificate, rpk or nosec"
            )),
        }
    }
}

/// One Security instance (id 0) for the one LwM2M server.
///
/// The key material is held here as the spec places it, but no DM
/// operation can reach it (every one is 4.01), it is never serialized, and
/// Debug shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub server_uri: String,
    pub bootstrap: bool,
    pub security_mode: i64,
    pub short_server_id: u16,
    /// /0/x/3: PSK identity, or own certificate (DER).
    #[serde(default)]
    pub public_key_or_identity: Vec<u8>,
    /// /0/x/4: the server's certificate or CA (DER).
    #[serde(default)]
    pub server_public_key: Vec<u8>,
    /// /0/x/5: PSK key or own private key (secret).
    #[serde(skip)]
    pub secret_key: Vec<u8>,
    /// /0/x/11 Client Hold Off Time (s): how long a client waits before
    /// its first client-initiated Bootstrap-Request (Core 1.1 §E.1).
    #[serde(default)]
    pub client_hold_off: u64,
    /// /0/x/12 Bootstrap-Server Account Timeout (s, 0 = never).
    #[serde(default)]
    pub account_timeout: u64,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("server_uri", &self.server_uri)
            .field("bootstrap", &self.bootstrap)
            .field("security_mode", &self.security_mode)
            .field("short_server_id", &self.short_server_id)
            .field("public_key_or_identity", &self.public_key_or_identity.len())
            .field("server_public_key", &self.server_public_key.len())
            .field(
                "secret_key",
                &format_args!("<{} bytes>", self.secret_key.len()),
            )
            .field("client_hold_off", &self.client_hold_off)
            .field("account_timeout", &self.account_timeout)
            .finish()
    }
}

impl Security {
    /// A NoSec, non-bootstrap account for `server_uri`.
    pub fn nosec(server_uri: impl Into<String>, short_server_id: u16) -> Self {
        Security {
            server_uri: server_uri.into(),
            bootstrap: false,
            security_mode: SECURITY_MODE_NOSEC,
            short_server_id,
            public_key_or_identity: Vec::new(),
            server_public_key: Vec::new(),
            secret_key: Vec::new(),
            client_hold_off: 0,
            account_timeout: 0,
        }
    }
}

impl Object for Security {
    fn id(&self) -> u16 {
        OBJECT_ID
    }
    fn resources(&self) -> &[ResourceDef] {
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
        let mut psk = Security::nosec("coaps://127.0.0.1:5684", 1);
        psk.security_mode = SecurityMode::Psk as i64;
        psk.secret_key = b"sekrit-psk-value".to_vec();
        assert_eq!(psk.read(0, 5), Err(OpError::Unauthorized));
        assert!(!format!("{psk:?}").contains("sekrit"));
        assert!(!serde_json::to_string(&psk).unwrap().contains("sekrit"));
        assert_eq!(s.security_mode, 3);
        assert_eq!(s.instances(), vec![0]);
    }
}
