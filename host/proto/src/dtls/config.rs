//! Credentials and the handshake configurations built from them.
//!
//! Cipher suites follow LwM2M 1.1 Transport §5.2.8: a PSK client offers
//! TLS_PSK_WITH_AES_128_CCM_8 (mandatory) first, then the GCM and CCM
//! variants for servers that prefer them; a certificate client offers
//! TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (mandatory) first, likewise. A server
//! accepts every suite of each family it holds credentials for.

use std::fmt;
use std::sync::Arc;

use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::{RTCCryptoProvider, SignatureScheme, default_provider};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use super::DtlsError;

/// PSK suites in the order a client offers them.
const PSK_SUITES: [CipherSuiteId; 3] = [
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
    CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
];

/// ECDHE-ECDSA suites in the order a client offers them.
const CERT_SUITES: [CipherSuiteId; 3] = [
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm_8,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm,
];

/// How a client checks the server's certificate (/0/x/4 "Server Public Key").
#[derive(Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// CA certificates (DER): the server's chain must end at one of them and
    /// its certificate must name the host of the server URI.
    Ca(Vec<Vec<u8>>),
    /// Exactly this certificate (DER), e.g. a server's self-signed one.
    Pinned(Vec<u8>),
}

impl fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerTrust::Ca(cas) => write!(f, "Ca({} certificates)", cas.len()),
            ServerTrust::Pinned(_) => f.write_str("Pinned"),
        }
    }
}

/// A client's credentials for one server account (LwM2M Security Mode).
#[derive(Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// Mode 0: PSK identity (/0/x/3) and key (/0/x/5).
    Psk {
        /// The identity sent in the handshake (not secret).
        identity: Vec<u8>,
        /// The key (secret).
        key: Vec<u8>,
    },
    /// Mode 2: own certificate chain (/0/x/3, leaf first, DER), own private
    /// key (/0/x/5, PKCS#8 DER, P-256) and how to check the server.
    Certificate {
        /// Leaf first.
        chain: Vec<Vec<u8>>,
        /// PKCS#8 DER (secret).
        private_key: Vec<u8>,
        /// The server's CA or pinned certificate.
        trust: ServerTrust,
    },
    /// Mode 1 (RFC 7250): not offered by this build.
    RawPublicKey,
}

impl fmt::Debug for ClientCredentials {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCredentials::Psk { identity, .. } => f
                .debug_struct("Psk")
                .field("identity", &String::from_utf8_lossy(identity))
                .finish_non_exhaustive(),
            ClientCredentials::Certificate { chain, trust, .. } => f
                .debug_struct("Certificate")
                .field("chain", &chain.len())
                .field("trust", trust)
                .finish_non_exhaustive(),
            ClientCredentials::RawPublicKey => f.write_str("RawPublicKey"),
        }
    }
}

/// Finds the PSK for an identity a client sent; `None` refuses the handshake.
pub type PskLookup = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// What a server authenticates clients with.
#[derive(Clone, Default)]
pub struct ServerCredentials {
    /// PSK identities and keys (Mode 0).
    pub psk: Option<PskLookup>,
    /// Own certificate chain (leaf first, DER) and PKCS#8 key, for Mode 2.
    pub certificate: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// CAs (DER) client certificates must chain to; required with `certificate`.
    pub client_cas: Vec<Vec<u8>>,
}

impl fmt::Debug for ServerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCredentials")
            .field("psk", &self.psk.is_some())
            .field("certificate", &self.certificate.is_some())
            .field("client_cas", &self.client_cas.len())
            .finish()
    }
}

fn provider() -> Result<Arc<dyn RTCCryptoProvider>, DtlsError> {
    default_provider().map_err(|e| DtlsError::Credentials(e.to_string()))
}

fn certificate(
    provider: &Arc<dyn RTCCryptoProvider>,
    chain: &[Vec<u8>],
    private_key: &[u8],
) -> Result<Certificate, DtlsError> {
    if chain.is_empty() {
        return Err(DtlsError::Credentials("empty certificate chain".into()));
    }
    let key = provider
        .crypto()
        .import_signing_key(SignatureScheme::EcdsaP256Sha256, private_key)
        .map_err(|e| {
            DtlsError::Credentials(format!("private key is not a PKCS#8 P-256 key: {e}"))
        })?;
    let chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    Ok(Certificate::from_signing_key(chain, key))
}

fn roots(cas: &[Vec<u8>]) -> Result<RootCertStore, DtlsError> {
    let mut store = RootCertStore::empty();
    for ca in cas {
        store
            .add(CertificateDer::from(ca.clone()))
            .map_err(|e| DtlsError::Credentials(format!("unusable CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(DtlsError::Credentials("no CA certificate".into()));
    }
    Ok(store)
}

impl ClientCredentials {
    /// The handshake configuration for a server named `host` (checked
    /// against its certificate under [`ServerTrust::Ca`]).
    pub(crate) fn handshake_config(&self, host: &str) -> Result<Arc<HandshakeConfig>, DtlsError> {
        let provider = provider()?;
        let builder = ConfigBuilder::default()
            .with_crypto_provider(provider.clone())
            .with_server_name(host.to_string());
        let builder = match self {
            ClientCredentials::Psk { identity, key } => {
                if key.is_empty() {
                    return Err(DtlsError::Credentials("empty PSK".into()));
                }
                let key = key.clone();
                builder
                    .with_cipher_suites(PSK_SUITES.to_vec())
                    .with_psk(Some(Arc::new(move |_hint: &[u8]| Ok(key.clone()))))
                    .with_psk_identity_hint(Some(identity.clone()))
            }
            ClientCredentials::Certificate {
                chain,
                private_key,
                trust,
            } => {
                let builder = builder
                    .with_cipher_suites(CERT_SUITES.to_vec())
                    .with_certificates(vec![certificate(&provider, chain, private_key)?]);
                match trust {
                    ServerTrust::Ca(cas) => builder.with_roots_cas(roots(cas)?),
                    ServerTrust::Pinned(pinned) => {
                        let pinned = pinned.clone();
                        // The signature over the key exchange is still
                        // checked against this certificate's key.
                        builder
                            .with_insecure_skip_verify(true)
                            .with_verify_peer_certificate(Some(Arc::new(
                                move |certs: &[Vec<u8>], _| {
                                    if certs.first() == Some(&pinned) {
                                        Ok(())
                                    } else {
                                        Err(rtc_shared::error::Error::Other(
                                            "server certificate is not the pinned one".into(),
                                        ))
                                    }
                                },
                            )))
                    }
                }
            }
            ClientCredentials::RawPublicKey => {
                return Err(DtlsError::Unsupported("Raw Public Key (Security Mode 1)"));
            }
        };
        builder
            .build(true, None)
            .map(Arc::new)
            .map_err(|e| DtlsError::Credentials(e.to_string()))
    }
}

impl ServerCredentials {
    /// The handshake configuration for incoming associations.
    pub(crate) fn handshake_config(&self) -> Result<Arc<HandshakeConfig>, DtlsError> {
        let provider = provider()?;
        let mut suites = Vec::new();
        let mut builder = ConfigBuilder::default().with_crypto_provider(provider.clone());
        if let Some(lookup) = &self.psk {
            let lookup = lookup.clone();
            suites.extend(PSK_SUITES);
            builder = builder.with_psk(Some(Arc::new(move |identity: &[u8]| {
                lookup(identity)
                    .ok_or_else(|| rtc_shared::error::Error::Other("unknown PSK identity".into()))
            })));
        }
        if let Some((chain, key)) = &self.certificate {
            suites.extend(CERT_SUITES);
            builder = builder
                .with_certificates(vec![certificate(&provider, chain, key)?])
                .with_client_auth(ClientAuthType::RequireAndVerifyClientCert)
                .with_client_cas(roots(&self.client_cas)?);
        }
        if suites.is_empty() {
            return Err(DtlsError::Credentials(
                "a DTLS server needs a PSK lookup or a certificate".into(),
            ));
        }
        builder
            .with_cipher_suites(suites)
            .build(false, None)
            .map(Arc::new)
            .map_err(|e| DtlsError::Credentials(e.to_string()))
    }
}

/// A certificate's names: the Subject's CN first, then DNS, IP and URI SANs.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) => names.push((*n).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names
                        .push(std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]]).to_string()),
                    16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(ip);
                        names.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    names
}
