//! The LwM2M bootstrap server (LwM2M 1.1 Core §5.2, §6.1): devices that
//! leave the factory knowing only a bootstrap account send
//! `POST /bs?ep=NAME` to its own port (coaps 5784, plain CoAP 5783 only
//! where NoSec is allowed) and get their server accounts written, with a
//! fresh operational PSK stored in this server's security store first.
//!
//! - [`config`]: bootstrap accounts per endpoint (credential, labels) and
//!   configurations per endpoint or label, durable in the store; CSV import.
//! - [`request`]: the Bootstrap-Request, who may make it, and the caps.
//! - [`session`]: one session's sequence, sans-IO.
//! - [`records`]: the sessions kept per endpoint for the API.
//! - [`rollback`]: the credential a failed session puts back.
//! - [`rollover`]: a new bootstrap credential written to the device, both
//!   accepted until it is known to hold it.
//! - [`driver`]: the tokio task that runs the sockets and the sessions.
//! - [`api`], [`ctl`]: the HTTP routes and `wasmdm ctl bootstrap`.

pub mod api;
pub mod config;
pub mod ctl;
pub mod driver;
pub mod records;
pub mod request;
pub mod rollback;
pub mod rollover;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

pub use config::{BootstrapConfig, BootstrapCredential, BootstrapEndpoint, ServerAccount};
pub use request::BootstrapLimits;

use crate::store::{Store, StoreError};
use crate::{DtlsConfig, ServerError};

/// Where and how the bootstrap server listens.
#[derive(Debug, Clone)]
pub struct BootstrapListen {
    /// Plain CoAP (`0.0.0.0:5783`); requests on it are admitted only for
    /// NoSec bootstrap accounts, or with `--allow-nosec` for endpoints
    /// without any credential.
    pub coap: SocketAddr,
    /// CoAP over DTLS (`0.0.0.0:5784`).
    pub coaps: SocketAddr,
    /// The LwM2M server URI written for accounts whose configuration names
    /// none (default: `coaps://<the server's coaps address>` when that is
    /// reachable as it is).
    pub server_uri: Option<String>,
    /// Caps.
    pub limits: BootstrapLimits,
}

impl BootstrapListen {
    /// Listening on `coap` and `coaps` with default caps.
    pub fn new(coap: SocketAddr, coaps: SocketAddr) -> Self {
        BootstrapListen {
            coap,
            coaps,
            server_uri: None,
            limits: BootstrapLimits::default(),
        }
    }
}

/// Creates the bootstrap tables (so read transactions never miss them).
pub(crate) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let e = |e: redb::TableError| StoreError::Db(e.into());
    tx.open_table(config::BOOTSTRAP_ENDPOINTS).map_err(e)?;
    tx.open_table(config::BOOTSTRAP_IDENTITIES).map_err(e)?;
    tx.open_table(config::BOOTSTRAP_LABELS).map_err(e)?;
    tx.open_table(records::BOOTSTRAP_SESSIONS).map_err(e)?;
    tx.open_table(rollback::BOOTSTRAP_PREVIOUS).map_err(e)?;
    Ok(())
}

/// The bootstrap port's DTLS credentials: bootstrap PSKs looked up in the
/// store per handshake (an import takes effect at once), and the server's
/// certificate for devices whose bootstrap account is `x509`.
fn credentials(store: &Arc<Store>, dtls: &DtlsConfig) -> wasmdm_proto::dtls::ServerCredentials {
    let store = store.clone();
    let psk: wasmdm_proto::dtls::PskLookup = Arc::new(move |identity: &[u8]| {
        let identity = std::str::from_utf8(identity).ok()?;
        match store.bootstrap_by_identity(identity) {
            // The current key, or a pending rollover's (rollover.rs).
            Ok(Some(e)) => e.psk_key(identity),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("bootstrap PSK lookup: {e}");
                None
            }
        }
    });
    wasmdm_proto::dtls::ServerCredentials {
        psk: Some(psk),
        certificate: dtls.certificate.clone(),
        client_cas: dtls.client_cas.clone(),
    }
}

/// Binds the bootstrap sockets and builds its driver; returns it with the
/// bound plain and DTLS addresses.
pub(crate) async fn bind(
    listen: &BootstrapListen,
    dtls: &DtlsConfig,
    store: &Arc<Store>,
    settings: driver::DriverSettings,
    seed: u64,
) -> Result<(driver::BootstrapDriver, SocketAddr, SocketAddr), ServerError> {
    let bind = |addr: SocketAddr| async move {
        UdpSocket::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let plain = bind(listen.coap).await?;
    let secure = bind(listen.coaps).await?;
    let local = |s: &UdpSocket, addr| {
        s.local_addr()
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let (plain_addr, secure_addr) = (local(&plain, listen.coap)?, local(&secure, listen.coaps)?);
    let mut limits = dtls.limits.clone();
    // A bootstrap association is needed for one session only.
    limits.idle_timeout = listen.limits.session_timeout * 2;
    let server = wasmdm_proto::dtls::DtlsServer::new(&credentials(store, dtls), limits)?;
    let transport =
        crate::transport::ServerTransport::new(Arc::new(plain), Some((Arc::new(secure), server)));
    let driver = driver::BootstrapDriver::new(transport, store.clone(), settings, seed)?;
    Ok((driver, plain_addr, secure_addr))
}
