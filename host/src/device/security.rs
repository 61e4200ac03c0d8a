//! The device's server account security (/0): which mode, and the DTLS
//! credentials read from `device.toml` / flags once at startup.
//!
//! Secrets (PSK key, private key) live in [`ClientCredentials`] and the /0
//! instance only: never in logs (every Debug redacts them) and never
//! readable over LwM2M (/0 answers 4.01 to every DM operation, Core 1.1 §E.1).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wasmdm_proto::dtls::{ClientCredentials, ServerTrust};
use wasmdm_proto::objects::{Security, SecurityMode};

use super::config::{DeviceConfig, Secret};

/// A credential setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("security mode {mode:?} needs {what}")]
    Missing {
        mode: &'static str,
        what: &'static str,
    },
    #[error("{key} = {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("psk-key: {0}")]
    PskKey(String),
    #[error("security mode {mode:?} needs a coaps:// server URI, not {uri:?}")]
    Scheme { mode: &'static str, uri: String },
    #[error("a coaps:// server needs a security mode other than nosec")]
    NoSecOverDtls,
    #[error(
        "bootstrap over plain CoAP (nosec) carries credentials in clear: \
         set bootstrap-allow-nosec to allow it"
    )]
    BootstrapNoSec,
    #[error(transparent)]
    Dtls(#[from] wasmdm_proto::dtls::DtlsError),
}

/// The device's account with its LwM2M server, as /0 holds it.
#[derive(Debug)]
pub struct Account {
    /// The /0 instance (mode, public identity, secrets redacted in Debug).
    pub security: Security,
    /// DTLS credentials; `None` in NoSec mode.
    pub credentials: Option<ClientCredentials>,
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::File {
        key,
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Certificates from a PEM file (one or more) or a single DER certificate;
/// `key` names the setting in errors.
pub fn certificates(key: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, SecurityError> {
    let bytes = read_file(key, path)?;
    let bad = |reason: String| SecurityError::File {
        key,
        path: path.into(),
        reason,
    };
    if bytes.starts_with(b"-----") {
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block".into()));
        }
        Ok(certs)
    } else if bytes.first() == Some(&0x30) {
        Ok(vec![bytes])
    } else {
        Err(bad("neither PEM nor DER".into()))
    }
}

/// A PKCS#8 private key from PEM or DER; `key` names the setting in errors.
pub fn private_key(key: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    let bytes = read_file(key, path)?;
    if !bytes.starts_with(b"-----") {
        return Ok(bytes);
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Ok(k.secret_pkcs8_der().to_vec()),
        Ok(_) => Err(SecurityError::File {
            key,
            path: path.into(),
            reason: "the key must be PKCS#8 (BEGIN PRIVATE KEY); convert with \
                     `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        }),
        Err(e) => Err(SecurityError::File {
            key,
            path: path.into(),
            reason: format!("no private key: {e}"),
        }),
    }
}

/// The settings of one account (server or bootstrap), with the key names
/// errors quote.
struct Settings<'a> {
    uri: &'a str,
    mode: SecurityMode,
    psk_identity: Option<&'a String>,
    psk_key: Option<&'a Secret>,
    psk_key_file: Option<&'a Path>,
    certificate: Option<&'a Path>,
    private_key: Option<&'a Path>,
    server_certificate: Option<&'a Path>,
    server_ca: Option<&'a Path>,
    /// Key names: psk-identity, psk-key, psk-key-file, certificate,
    /// private-key, server-certificate, server-ca.
    names: [&'static str; 7],
}

const SERVER_KEYS: [&str; 7] = [
    "psk-identity",
    "psk-key",
    "psk-key-file",
    "certificate",
    "private-key",
    "server-certificate",
    "server-ca",
];
const BOOTSTRAP_KEYS: [&str; 7] = [
    "bootstrap-psk-identity",
    "bootstrap-psk-key",
    "bootstrap-psk-key-file",
    "bootstrap-certificate",
    "bootstrap-private-key",
    "bootstrap-server-certificate",
    "bootstrap-server-ca",
];

/// The PSK from `psk-key` (hex) or `psk-key-file` (hex text, else raw bytes).
fn psk_key(s: &Settings) -> Result<Vec<u8>, SecurityError> {
    let key = match (s.psk_key, s.psk_key_file) {
        (Some(hex_key), None) => hex::decode(hex_key.expose().trim())
            .map_err(|_| SecurityError::PskKey("not hex".into()))?,
        (None, Some(path)) => {
            let bytes = read_file(s.names[2], path)?;
            let text = String::from_utf8_lossy(&bytes);
            hex::decode(text.trim()).unwrap_or(bytes)
        }
        (Some(_), Some(_)) => {
            return Err(SecurityError::PskKey(format!(
                "give {} or {}, not both",
                s.names[1], s.names[2]
            )));
        }
        (None, None) => {
            return Err(SecurityError::Missing {
                mode: "psk",
                what: if s.names[1] == "psk-key" {
                    "psk-key or psk-key-file"
                } else {
                    "bootstrap-psk-key or bootstrap-psk-key-file"
                },
            });
        }
    };
    if !(8..=64).contains(&key.len()) {
        return Err(SecurityError::PskKey(format!(
            "{} bytes; a PSK has 8 to 64",
            key.len()
        )));
    }
    Ok(key)
}

/// Reads the account's credentials (files once, here) and checks they fit
/// the server URI: a configuration that cannot work stops the device.
pub fn account(config: &DeviceConfig, short_server_id: u16) -> Result<Account, SecurityError> {
    let uri = config.server_uri().unwrap_or_default();
    build(
        &Settings {
            uri,
            mode: config.security_mode(),
            psk_identity: config.psk_identity.as_ref(),
            psk_key: config.psk_key.as_ref(),
            psk_key_file: config.psk_key_file.as_deref(),
            certificate: config.certificate.as_deref(),
            private_key: config.private_key.as_deref(),
            server_certificate: config.server_certificate.as_deref(),
            server_ca: config.server_ca.as_deref(),
            names: SERVER_KEYS,
        },
        short_server_id,
    )
}

/// The factory bootstrap account (`bootstrap-server` and its keys), if
/// any; the /0 instance has Bootstrap-Server = true. NoSec only with
/// `bootstrap-allow-nosec`.
pub fn bootstrap_account(config: &DeviceConfig) -> Result<Option<Account>, SecurityError> {
    let Some(uri) = config.bootstrap_server.as_deref() else {
        return Ok(None);
    };
    let mode = super::config::mode_for(config.bootstrap_security, uri);
    if mode == SecurityMode::NoSec && !config.bootstrap_allow_nosec {
        return Err(SecurityError::BootstrapNoSec);
    }
    let mut account = build(
        &Settings {
            uri,
            mode,
            psk_identity: config.bootstrap_psk_identity.as_ref(),
            psk_key: config.bootstrap_psk_key.as_ref(),
            psk_key_file: config.bootstrap_psk_key_file.as_deref(),
            certificate: config.bootstrap_certificate.as_deref(),
            private_key: config.bootstrap_private_key.as_deref(),
            server_certificate: config.bootstrap_server_certificate.as_deref(),
            server_ca: config.bootstrap_server_ca.as_deref(),
            names: BOOTSTRAP_KEYS,
        },
        0,
    )?;
    account.security.bootstrap = true;
    Ok(Some(account))
}

fn build(s: &Settings, short_server_id: u16) -> Result<Account, SecurityError> {
    let coaps = s.uri.starts_with("coaps://");
    let mode = s.mode;
    let name = mode.name();
    if coaps == (mode == SecurityMode::NoSec) {
        return Err(if coaps {
            SecurityError::NoSecOverDtls
        } else {
            SecurityError::Scheme {
                mode: name,
                uri: s.uri.to_string(),
            }
        });
    }
    let mut security = Security::nosec(s.uri.to_string(), short_server_id);
    security.security_mode = mode as i64;
    let credentials = match mode {
        SecurityMode::NoSec => None,
        SecurityMode::Psk => {
            let identity = s.psk_identity.cloned().ok_or(SecurityError::Missing {
                mode: name,
                what: s.names[0],
            })?;
            let key = psk_key(s)?;
            security.public_key_or_identity = identity.clone().into_bytes();
            security.secret_key = key.clone();
            Some(ClientCredentials::Psk {
                identity: identity.into_bytes(),
                key,
            })
        }
        SecurityMode::Certificate => {
            let missing = |what| SecurityError::Missing { mode: name, what };
            let chain = certificates(s.names[3], s.certificate.ok_or(missing(s.names[3]))?)?;
            let key = private_key(s.names[4], s.private_key.ok_or(missing(s.names[4]))?)?;
            let trust = match (s.server_certificate, s.server_ca) {
                (Some(pinned), None) => {
                    let mut certs = certificates(s.names[5], pinned)?;
                    ServerTrust::Pinned(certs.swap_remove(0))
                }
                (None, Some(ca)) => ServerTrust::Ca(certificates(s.names[6], ca)?),
                _ => return Err(missing("exactly one of server-certificate and server-ca")),
            };
            security.public_key_or_identity = chain.first().cloned().unwrap_or_default();
            security.server_public_key = match &trust {
                ServerTrust::Pinned(c) => c.clone(),
                ServerTrust::Ca(cas) => cas.first().cloned().unwrap_or_default(),
            };
            security.secret_key = key.clone();
            Some(ClientCredentials::Certificate {
                chain,
                private_key: key,
                trust,
            })
        }
        SecurityMode::RawPublicKey => {
            return Err(wasmdm_proto::dtls::DtlsError::Unsupported(
                "Raw Public Key (Security Mode 1)",
            )
            .into());
        }
    };
    if let Some(c) = &credentials {
        // Check the key parses now rather than at the first handshake.
        wasmdm_proto::dtls::DtlsClient::new(c.clone())?;
    }
    Ok(Account {
        security,
        credentials,
    })
}
