//! Per-endpoint LwM2M credentials: how each device authenticates to the
//! server's DTLS endpoint (PSK, raw public key, X.509) or whether it may use
//! plain CoAP. Kept in the store next to the devices, with an index from PSK
//! identity to endpoint because a DTLS handshake names the identity, not the
//! endpoint, and a server must bind each identity to one endpoint
//! (the registering endpoint name is checked against it).
//!
//! Keys are secrets: they are stored here and handed to the DTLS layer, but
//! never logged (`Debug` leaves them out) nor returned by the HTTP API.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::{Store, StoreError};

/// Credentials by endpoint name (JSON [`SecurityEntry`]).
pub const SECURITY: TableDefinition<&str, &[u8]> = TableDefinition::new("security");
/// Index: PSK identity -> endpoint name.
pub const PSK_IDENTITIES: TableDefinition<&str, &str> = TableDefinition::new("psk_identities");

/// Longest endpoint name (as the registration interface accepts).
pub const MAX_ENDPOINT_LEN: usize = crate::core::registry::MAX_ENDPOINT_LEN;
/// PSK identity length in bytes (RFC 4279 §5.3 allows up to 2^16-1; 128 is plenty).
pub const PSK_IDENTITY_LEN: std::ops::RangeInclusive<usize> = 1..=128;
/// PSK key length in bytes: at least 128 bits, at most 512.
pub const PSK_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// DER prefix of an uncompressed EC P-256 SubjectPublicKeyInfo (RFC 5480):
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 0x04 ... }.
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// Length of such a SubjectPublicKeyInfo: the prefix and X, Y of 32 bytes each.
const P256_SPKI_LEN: usize = P256_SPKI_PREFIX.len() + 64;

/// How one endpoint authenticates to the server (LwM2M 1.1 Core §E.1 /0/x/2 modes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Credential {
    /// Pre-shared key: identity (UTF-8) and key bytes (hex in JSON).
    Psk {
        /// PSK identity the device sends in its handshake.
        identity: String,
        /// The shared key.
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
    },
    /// Raw public key (RFC 7250): the device's SubjectPublicKeyInfo, DER.
    Rpk {
        /// The device's public key (SubjectPublicKeyInfo DER), hex in JSON.
        #[serde(with = "hex_bytes")]
        public_key: Vec<u8>,
    },
    /// X.509: a certificate issued by the server's DTLS CA whose CN or a SAN is the endpoint name.
    X509,
    /// Plain CoAP allowed for this one endpoint.
    NoSec,
}

/// Leaves the PSK key out, so a credential can be logged or put in an error.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Psk { identity, key } => f
                .debug_struct("Psk")
                .field("identity", identity)
                .field("key", &format_args!("<{} bytes>", key.len()))
                .finish(),
            Credential::Rpk { public_key } => f
                .debug_struct("Rpk")
                .field("public_key", &hex::encode(public_key))
                .finish(),
            Credential::X509 => f.write_str("X509"),
            Credential::NoSec => f.write_str("NoSec"),
        }
    }
}

impl Credential {
    /// The mode's name as in JSON (`psk`, `rpk`, `x509`, `nosec`).
    pub fn mode(&self) -> &'static str {
        match self {
            Credential::Psk { .. } => "psk",
            Credential::Rpk { .. } => "rpk",
            Credential::X509 => "x509",
            Credential::NoSec => "nosec",
        }
    }

    /// The PSK identity, in PSK mode.
    pub fn psk_identity(&self) -> Option<&str> {
        match self {
            Credential::Psk { identity, .. } => Some(identity),
            _ => None,
        }
    }
}

/// One endpoint's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEntry {
    /// Endpoint client name.
    pub endpoint: String,
    /// How it authenticates.
    pub credential: Credential,
}

/// Why a credential was not stored.
#[derive(Debug, Error)]
pub enum SecurityError {
    /// The endpoint name is empty, too long or has characters a name cannot have.
    #[error(
        "endpoint name must be 1-{MAX_ENDPOINT_LEN} bytes without spaces, control characters \
         or any of / ? # & %"
    )]
    BadEndpoint,
    /// The PSK identity is too short or too long.
    #[error("PSK identity must be 1-128 bytes (got {0})")]
    BadIdentity(usize),
    /// The PSK key is too short or too long.
    #[error("PSK key must be 16-64 bytes (got {0})")]
    BadKey(usize),
    /// The raw public key is not an EC P-256 SubjectPublicKeyInfo.
    #[error(
        "raw public key must be an EC P-256 SubjectPublicKeyInfo (DER, uncompressed point; \
         e.g. `openssl ec -pubout`)"
    )]
    BadPublicKey,
    /// The PSK identity is bound to another endpoint already.
    #[error("PSK identity {identity:?} is already used by endpoint {endpoint}")]
    IdentityInUse {
        /// The identity.
        identity: String,
        /// The endpoint that has it.
        endpoint: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// True for a usable endpoint name: 1..=255 bytes, no whitespace or control
/// characters, none of the characters that split URIs and queries.
pub fn valid_endpoint(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENDPOINT_LEN
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"/?#&%".contains(c))
}

/// True when `der` is an uncompressed EC P-256 SubjectPublicKeyInfo.
pub fn is_p256_spki(der: &[u8]) -> bool {
    der.len() == P256_SPKI_LEN && der.starts_with(&P256_SPKI_PREFIX)
}

/// Checks an entry before it is stored.
pub fn validate(entry: &SecurityEntry) -> Result<(), SecurityError> {
    if !valid_endpoint(&entry.endpoint) {
        return Err(SecurityError::BadEndpoint);
    }
    match &entry.credential {
        Credential::Psk { identity, key } => {
            if !PSK_IDENTITY_LEN.contains(&identity.len()) {
                return Err(SecurityError::BadIdentity(identity.len()));
            }
            if !PSK_KEY_LEN.contains(&key.len()) {
                return Err(SecurityError::BadKey(key.len()));
            }
        }
        Credential::Rpk { public_key } => {
            if !is_p256_spki(public_key) {
                return Err(SecurityError::BadPublicKey);
            }
        }
        Credential::X509 | Credential::NoSec => {}
    }
    Ok(())
}

macro_rules! db_err {
    ($e:expr) => {
        $e.map_err(|e| StoreError::Db(e.into()))
    };
}

fn decode(key: &str, bytes: &[u8]) -> Result<SecurityEntry, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: SECURITY.to_string(),
        key: key.to_string(),
        // serde's message may quote the document: keep key material out of it.
        reason: format!(
            "undecodable credential at line {} column {}",
            e.line(),
            e.column()
        ),
    })
}

impl Store {
    /// The credential of `endpoint`, if it has one.
    pub fn security(&self, endpoint: &str) -> Result<Option<SecurityEntry>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(SECURITY))?;
        let Some(v) = db_err!(t.get(endpoint))? else {
            return Ok(None);
        };
        decode(endpoint, v.value()).map(Some)
    }

    /// Fast: called during DTLS handshakes. Backed by an index table identity -> endpoint.
    pub fn security_by_psk_identity(
        &self,
        identity: &str,
    ) -> Result<Option<SecurityEntry>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let index = db_err!(tx.open_table(PSK_IDENTITIES))?;
        let Some(ep) = db_err!(index.get(identity))? else {
            return Ok(None);
        };
        let ep = ep.value().to_string();
        let t = db_err!(tx.open_table(SECURITY))?;
        let Some(v) = db_err!(t.get(ep.as_str()))? else {
            return Ok(None);
        };
        let entry = decode(&ep, v.value())?;
        // The index and the entries change in one transaction; check anyway.
        Ok((entry.credential.psk_identity() == Some(identity)).then_some(entry))
    }

    /// Refuses (typed error) a PSK identity already bound to another endpoint; replaces this endpoint's entry.
    pub fn put_security(&self, entry: &SecurityEntry) -> Result<(), SecurityError> {
        validate(entry)?;
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt {
            table: SECURITY.to_string(),
            key: entry.endpoint.clone(),
            reason: e.to_string(),
        })?;
        let ep = entry.endpoint.as_str();
        let tx = db_err!(self.db.begin_write())?;
        {
            let mut t = db_err!(tx.open_table(SECURITY))?;
            let mut index = db_err!(tx.open_table(PSK_IDENTITIES))?;
            if let Some(identity) = entry.credential.psk_identity()
                && let Some(owner) = db_err!(index.get(identity))?
                && owner.value() != ep
            {
                return Err(SecurityError::IdentityInUse {
                    identity: identity.to_string(),
                    endpoint: owner.value().to_string(),
                });
            }
            let old = match db_err!(t.get(ep))? {
                Some(v) => Some(decode(ep, v.value())?),
                None => None,
            };
            if let Some(old_identity) = old.as_ref().and_then(|o| o.credential.psk_identity()) {
                db_err!(index.remove(old_identity))?;
            }
            if let Some(identity) = entry.credential.psk_identity() {
                db_err!(index.insert(identity, ep))?;
            }
            db_err!(t.insert(ep, bytes.as_slice()))?;
        }
        db_err!(tx.commit())?;
        tracing::info!("security: {ep} set to {}", entry.credential.mode());
        Ok(())
    }

    /// Removes the credential of `endpoint`; true if it had one.
    pub fn remove_security(&self, endpoint: &str) -> Result<bool, StoreError> {
        let tx = db_err!(self.db.begin_write())?;
        let existed = {
            let mut t = db_err!(tx.open_table(SECURITY))?;
            let old = match db_err!(t.remove(endpoint))? {
                Some(v) => Some(decode(endpoint, v.value())?),
                None => None,
            };
            if let Some(identity) = old.as_ref().and_then(|o| o.credential.psk_identity()) {
                let mut index = db_err!(tx.open_table(PSK_IDENTITIES))?;
                db_err!(index.remove(identity))?;
            }
            old.is_some()
        };
        db_err!(tx.commit())?;
        if existed {
            tracing::info!("security: credential of {endpoint} removed");
        }
        Ok(existed)
    }

    /// Every credential, by endpoint name.
    pub fn list_security(&self) -> Result<Vec<SecurityEntry>, StoreError> {
        let tx = db_err!(self.db.begin_read())?;
        let t = db_err!(tx.open_table(SECURITY))?;
        let mut out = Vec::new();
        for item in db_err!(t.iter())? {
            let (k, v) = db_err!(item)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }
}

/// Bytes as a hex string in JSON (also the bootstrap keys').
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        // The message names no part of the value: it may be a key.
        hex::decode(text).map_err(|_| serde::de::Error::custom("expected hex bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(ep: &str, identity: &str, key: &[u8]) -> SecurityEntry {
        SecurityEntry {
            endpoint: ep.into(),
            credential: Credential::Psk {
                identity: identity.into(),
                key: key.to_vec(),
            },
        }
    }

    /// A P-256 SubjectPublicKeyInfo made by rcgen.
    pub(crate) fn p256_spki() -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::generate().unwrap())
    }

    #[test]
    fn json_form_and_debug() {
        let e = psk("dev-1", "id-1", &[0xab; 16]);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"endpoint": "dev-1", "credential": {"mode": "psk", "identity": "id-1", "key": "ab".repeat(16)}})
        );
        assert_eq!(serde_json::from_value::<SecurityEntry>(v).unwrap(), e);
        let nosec: Credential = serde_json::from_str(r#"{"mode":"nosec"}"#).unwrap();
        assert_eq!(nosec, Credential::NoSec);
        let x: Credential = serde_json::from_str(r#"{"mode":"x509"}"#).unwrap();
        assert_eq!(x, Credential::X509);
        assert!(!format!("{e:?}").contains("abab"));
        assert!(format!("{e:?}").contains("16 bytes"));
    }

    #[test]
    fn validation() {
        assert!(validate(&psk("d", "i", &[1; 16])).is_ok());
        assert!(validate(&psk("d", "i", &[1; 64])).is_ok());
        assert!(matches!(
            validate(&psk("", "i", &[1; 16])),
            Err(SecurityError::BadEndpoint)
        ));
        assert!(matches!(
            validate(&psk("a b", "i", &[1; 16])),
            Err(SecurityError::BadEndpoint)
        ));
        assert!(matches!(
            validate(&psk("a/b", "i", &[1; 16])),
            Err(SecurityError::BadEndpoint)
        ));
        assert!(validate(&psk("urn:imei:4900", "i", &[1; 16])).is_ok());
        assert!(matches!(
            validate(&psk("d", "", &[1; 16])),
            Err(SecurityError::BadIdentity(0))
        ));
        let long = "x".repeat(129);
        assert!(matches!(
            validate(&psk("d", &long, &[1; 16])),
            Err(SecurityError::BadIdentity(129))
        ));
        assert!(matches!(
            validate(&psk("d", "i", &[1; 15])),
            Err(SecurityError::BadKey(15))
        ));
        assert!(matches!(
            validate(&psk("d", "i", &[1; 65])),
            Err(SecurityError::BadKey(65))
        ));
        let rpk = |k: Vec<u8>| SecurityEntry {
            endpoint: "d".into(),
            credential: Credential::Rpk { public_key: k },
        };
        assert!(validate(&rpk(p256_spki())).is_ok());
        let mut bad = p256_spki();
        bad[3] ^= 1;
        assert!(matches!(
            validate(&rpk(bad)),
            Err(SecurityError::BadPublicKey)
        ));
        assert!(matches!(
            validate(&rpk(vec![0x30; 91])),
            Err(SecurityError::BadPublicKey)
        ));
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(
            validate(&rpk(rcgen::PublicKeyData::subject_public_key_info(&ed))),
            Err(SecurityError::BadPublicKey)
        ));
    }

    #[test]
    fn store_index_and_clashes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put_security(&psk("a", "id-a", &[1; 16])).unwrap();
        s.put_security(&psk("b", "id-b", &[2; 16])).unwrap();
        assert_eq!(
            s.security_by_psk_identity("id-a")
                .unwrap()
                .unwrap()
                .endpoint,
            "a"
        );
        // Another endpoint cannot take id-a; nothing changes.
        let e = s.put_security(&psk("b", "id-a", &[3; 16])).unwrap_err();
        assert!(matches!(e, SecurityError::IdentityInUse { ref endpoint, .. } if endpoint == "a"));
        assert_eq!(
            s.security("b").unwrap().unwrap(),
            psk("b", "id-b", &[2; 16])
        );
        // Re-keying the same endpoint, same identity: fine.
        s.put_security(&psk("a", "id-a", &[9; 16])).unwrap();
        // A new identity for a frees its old one.
        s.put_security(&psk("a", "id-a2", &[9; 16])).unwrap();
        assert!(s.security_by_psk_identity("id-a").unwrap().is_none());
        s.put_security(&psk("b", "id-a", &[3; 16])).unwrap();
        assert_eq!(
            s.security_by_psk_identity("id-a")
                .unwrap()
                .unwrap()
                .endpoint,
            "b"
        );
        // Switching to another mode frees the identity too.
        s.put_security(&SecurityEntry {
            endpoint: "a".into(),
            credential: Credential::X509,
        })
        .unwrap();
        assert!(s.security_by_psk_identity("id-a2").unwrap().is_none());
        assert_eq!(s.list_security().unwrap().len(), 2);
        // Invalid entries store nothing.
        assert!(s.put_security(&psk("c", "id-c", &[1; 4])).is_err());
        assert!(s.security("c").unwrap().is_none());
        assert!(s.security_by_psk_identity("id-c").unwrap().is_none());
        // Removal drops the index entry; survives reopen.
        assert!(s.remove_security("b").unwrap());
        assert!(!s.remove_security("b").unwrap());
        assert!(s.security_by_psk_identity("id-a").unwrap().is_none());
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.list_security().unwrap(),
            vec![SecurityEntry {
                endpoint: "a".into(),
                credential: Credential::X509
            }]
        );
    }
}
