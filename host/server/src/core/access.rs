//! Who may register (and update, and de-register) as which endpoint: a pure
//! function of how the peer authenticated and the endpoint's stored
//! credential.
//!
//! - DTLS with a PSK: the identity must be the one stored for that endpoint
//!   (the handshake already proved the key), so a device cannot register
//!   under another device's name with its own valid key.
//! - DTLS with a certificate (chained to the operator's CA in the
//!   handshake): the endpoint name must be the certificate's CN or one of
//!   its SANs, and the endpoint must not be bound to another mode.
//! - Plain CoAP: only where NoSec is allowed, for that one endpoint, or for
//!   the whole server (a lab) and then only for endpoints that have no
//!   stored credential.

use wasmdm_proto::dtls::PeerIdentity;

use crate::security::Credential;

/// How a peer reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAuth {
    /// Plain CoAP: the source address proves nothing.
    NoSec,
    /// A DTLS session with this identity.
    Dtls(PeerIdentity),
}

/// Why a peer may not act as an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "plain CoAP is not allowed for this endpoint (NoSec off): give it a key \
         (`wasmdm ctl security add EP --psk-identity ID --psk-key-file F`), or allow NoSec \
         for it (`--nosec`) or for all (`wasmdm server --allow-nosec`, a lab)"
    )]
    NoSec,
    #[error("the PSK identity belongs to another endpoint, or none")]
    WrongIdentity,
    #[error("the endpoint name is neither the certificate's CN nor one of its SANs")]
    NotInCertificate,
    #[error("the endpoint's stored credential is of another security mode")]
    ModeMismatch,
}

/// The server's access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessPolicy {
    /// Accept plain CoAP registrations from any endpoint (a lab setting).
    pub allow_nosec: bool,
}

impl AccessPolicy {
    /// Whether `auth` may act as `endpoint`, whose stored credential is `stored`.
    pub fn check(
        &self,
        auth: &PeerAuth,
        endpoint: &str,
        stored: Option<&Credential>,
    ) -> Result<(), Denied> {
        match (auth, stored) {
            (PeerAuth::NoSec, Some(Credential::NoSec)) => Ok(()),
            // A lab's NoSec never extends to an endpoint bound to credentials.
            (PeerAuth::NoSec, None) if self.allow_nosec => Ok(()),
            (PeerAuth::NoSec, _) => Err(Denied::NoSec),
            (PeerAuth::Dtls(PeerIdentity::Psk(id)), Some(Credential::Psk { identity, .. }))
                if identity.as_bytes() == id.as_slice() =>
            {
                Ok(())
            }
            (PeerAuth::Dtls(PeerIdentity::Psk(_)), _) => Err(Denied::WrongIdentity),
            (PeerAuth::Dtls(PeerIdentity::Certificate(names)), stored) => {
                if !names.iter().any(|n| n == endpoint) {
                    Err(Denied::NotInCertificate)
                } else if matches!(stored, None | Some(Credential::X509)) {
                    Ok(())
                } else {
                    Err(Denied::ModeMismatch)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(identity: &str) -> Credential {
        Credential::Psk {
            identity: identity.into(),
            key: vec![7; 16],
        }
    }

    #[test]
    fn psk_identity_must_be_the_endpoints_own() {
        let p = AccessPolicy::default();
        let auth = PeerAuth::Dtls(PeerIdentity::Psk(b"id-1".to_vec()));
        assert_eq!(p.check(&auth, "dev-1", Some(&psk("id-1"))), Ok(()));
        // dev-2's name with dev-1's (valid) identity.
        assert_eq!(
            p.check(&auth, "dev-2", Some(&psk("id-2"))),
            Err(Denied::WrongIdentity)
        );
        assert_eq!(p.check(&auth, "dev-3", None), Err(Denied::WrongIdentity));
        assert_eq!(
            p.check(&auth, "dev-1", Some(&Credential::X509)),
            Err(Denied::WrongIdentity)
        );
    }

    #[test]
    fn a_certificate_must_name_the_endpoint() {
        let p = AccessPolicy::default();
        let auth = PeerAuth::Dtls(PeerIdentity::Certificate(vec![
            "dev-7".into(),
            "dev-7.example".into(),
        ]));
        assert_eq!(p.check(&auth, "dev-7", None), Ok(()));
        assert_eq!(
            p.check(&auth, "dev-7.example", Some(&Credential::X509)),
            Ok(())
        );
        assert_eq!(p.check(&auth, "dev-8", None), Err(Denied::NotInCertificate));
        assert_eq!(
            p.check(&auth, "dev-7", Some(&psk("dev-7"))),
            Err(Denied::ModeMismatch)
        );
    }

    #[test]
    fn plain_coap_only_where_nosec_is_allowed() {
        let strict = AccessPolicy::default();
        let lab = AccessPolicy { allow_nosec: true };
        assert_eq!(
            strict.check(&PeerAuth::NoSec, "d", None),
            Err(Denied::NoSec)
        );
        assert_eq!(
            strict.check(&PeerAuth::NoSec, "d", Some(&psk("d"))),
            Err(Denied::NoSec)
        );
        assert_eq!(
            strict.check(&PeerAuth::NoSec, "d", Some(&Credential::NoSec)),
            Ok(())
        );
        assert_eq!(lab.check(&PeerAuth::NoSec, "d", None), Ok(()));
        assert_eq!(
            lab.check(&PeerAuth::NoSec, "d", Some(&psk("d"))),
            Err(Denied::NoSec)
        );
    }
}
