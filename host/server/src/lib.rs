//! wasmdm's LwM2M server: registration and device management over CoAP/UDP,
//! software files, groups and software upgrade campaigns, with a durable
//! store (redb) and an HTTP JSON API.
//!
//! Entry points for the `wasmdm` binary: [`serve`] with a [`ServerConfig`]
//! for `wasmdm server`, and [`ctl::ctl_main`] for `wasmdm ctl`.

pub mod auth;
pub mod bootstrap;
pub mod campaign;
pub mod console;
pub mod core;
pub mod ctl;
pub mod driver;
pub mod files;
pub mod http;
pub mod precompile;
pub mod security;
pub mod store;
pub mod tls;
pub mod transport;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use wasmdm_proto::coap::Params;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address of the LwM2M (CoAP) endpoint, e.g. `0.0.0.0:5683`.
    pub coap_addr: SocketAddr,
    /// TCP address of the HTTP API and file downloads, e.g. `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Directory for `server.redb` and `files/`.
    pub data_dir: PathBuf,
    /// Base URI devices pull from over CoAP (default `coap://<coap_addr>`).
    pub coap_base_uri: Option<String>,
    /// Base URI devices pull from over HTTP (default `http://<http_addr>`).
    pub http_base_uri: Option<String>,
    /// CoAP transmission parameters (RFC 7252 §4.8 defaults).
    pub coap_params: Params,
    /// Serve the API and HTTP downloads over TLS with this certificate and key.
    pub http_tls: Option<tls::HttpTls>,
    /// Caps on software file uploads, storage and downloads.
    pub file_limits: files::FileLimits,
    /// UDP address of the LwM2M endpoint over DTLS (`coaps`, e.g.
    /// `0.0.0.0:5684`); `None` serves plain CoAP only.
    pub coaps_addr: Option<SocketAddr>,
    /// The server's DTLS certificate and client CAs, and the DTLS caps.
    pub dtls: DtlsConfig,
    /// Accept plain-CoAP registrations of endpoints that have no stored
    /// credential (a lab setting; per endpoint: `ctl security add EP --nosec`).
    pub allow_nosec: bool,
    /// Caps on registrations (lifetime, total, per source IP).
    pub registry_limits: core::registry::RegistryLimits,
    /// Serve LwM2M bootstrap too (`None`: no bootstrap ports).
    pub bootstrap: Option<bootstrap::BootstrapListen>,
    /// Compiles packages for devices' engines (issue 13); `None` delivers
    /// plain files only.
    pub precompiler: Option<Arc<dyn precompile::Precompiler>>,
    /// The native-code signing key file; `None`: `<data_dir>/native-code.key`,
    /// generated on first start.
    pub native_code_key: Option<PathBuf>,
}

/// DTLS settings beyond the per-endpoint PSKs of the store.
#[derive(Clone, Default)]
pub struct DtlsConfig {
    /// The server's certificate chain (DER, leaf first) and PKCS#8 key, for
    /// devices in certificate mode.
    pub certificate: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// CAs (DER) device certificates must chain to; their CN or a SAN is
    /// the endpoint name.
    pub client_cas: Vec<Vec<u8>>,
    /// Caps on sessions and handshakes.
    pub limits: wasmdm_proto::dtls::ServerLimits,
}

impl std::fmt::Debug for DtlsConfig {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsConfig")
            .field("certificate", &self.certificate.is_some())
            .field("client_cas", &self.client_cas.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults: CoAP on `coap_addr`, HTTP on `http_addr`, data in `data_dir`.
    pub fn new(coap_addr: SocketAddr, http_addr: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            coap_addr,
            http_addr,
            data_dir,
            coap_base_uri: None,
            http_base_uri: None,
            coap_params: Params::default(),
            http_tls: None,
            file_limits: files::FileLimits::default(),
            coaps_addr: None,
            dtls: DtlsConfig::default(),
            allow_nosec: false,
            registry_limits: core::registry::RegistryLimits::default(),
            bootstrap: None,
            precompiler: None,
            native_code_key: None,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding the UDP or TCP socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened or loaded.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(std::io::Error),
    /// The TLS certificate or key of the API could not be used.
    #[error("API TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The admin token could not be read or created.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The DTLS certificate, key or CA could not be used.
    #[error("DTLS: {0}")]
    Dtls(#[from] wasmdm_proto::dtls::DtlsError),
    /// The native-code signing key could not be read or created.
    #[error(transparent)]
    NativeCodeKey(#[from] precompile::key::KeyError),
}

/// What a running server bound (port 0 resolved) and the admin token its
/// API takes, so in-process callers (tests, the demo) need not read files.
#[derive(Clone)]
pub struct Bound {
    /// CoAP UDP address.
    pub coap: SocketAddr,
    /// CoAP-over-DTLS UDP address, when DTLS is on.
    pub coaps: Option<SocketAddr>,
    /// HTTP address.
    pub http: SocketAddr,
    /// The admin token (`Authorization: Bearer <token>` on `/api/...`).
    pub token: String,
    /// Where the token is stored (`<data_dir>/admin-token`).
    pub token_path: PathBuf,
    /// True when the API is served over TLS (`https://`).
    pub tls: bool,
    /// Bootstrap plain CoAP and DTLS addresses, when bootstrap is on.
    pub bootstrap: Option<(SocketAddr, SocketAddr)>,
}

impl Bound {
    /// Base URL of the API (`http://127.0.0.1:8080`).
    pub fn api_base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }

    /// An API client of this server carrying its token.
    pub fn client(&self) -> ctl::Client {
        ctl::Client::new(&self.api_base(), Some(&self.token))
    }
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("coap", &self.coap)
            .field("coaps", &self.coaps)
            .field("http", &self.http)
            .field("token_path", &self.token_path)
            .field("tls", &self.tls)
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

/// The DTLS server's credentials: PSKs looked up in the store per
/// handshake (so `ctl security add` takes effect at once), and the
/// certificate settings.
fn dtls_credentials(
    store: &Arc<store::Store>,
    config: &DtlsConfig,
) -> wasmdm_proto::dtls::ServerCredentials {
    let store = store.clone();
    let psk: wasmdm_proto::dtls::PskLookup = Arc::new(move |identity: &[u8]| {
        let identity = std::str::from_utf8(identity).ok()?;
        match store.security_by_psk_identity(identity) {
            Ok(Some(entry)) => match entry.credential {
                security::Credential::Psk { key, .. } => Some(key),
                _ => None,
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("PSK lookup: {e}");
                None
            }
        }
    });
    wasmdm_proto::dtls::ServerCredentials {
        psk: Some(psk),
        certificate: config.certificate.clone(),
        client_cas: config.client_cas.clone(),
    }
}

/// The API's listener: plain TCP, or TLS with `--http-tls`.
enum ApiListener {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

/// `addr` if a device could reach it as it is (not 0.0.0.0 / [::]).
fn reachable(addr: SocketAddr) -> Option<SocketAddr> {
    (!addr.ip().is_unspecified()).then_some(addr)
}

/// Runs the server until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(config, shutdown, |_| {}).await
}

/// Like [`serve`], calling `on_bound` once both sockets are bound (tests use port 0).
pub async fn serve_with(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    let tls_config = config
        .http_tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?;
    let store = Arc::new(store::Store::open(&config.data_dir)?);
    // To see, at the end, that nothing of this server holds it any more.
    let store_left = Arc::downgrade(&store);
    let (token, created) = auth::load_or_create(&config.data_dir)?;
    let token_path = auth::token_path(&config.data_dir);
    if created {
        tracing::info!("created the API admin token in {}", token_path.display());
    } else {
        tracing::info!("API admin token: {}", token_path.display());
    }
    let precompile = match &config.precompiler {
        Some(p) => {
            let (key, created) = precompile::key::load_or_create(
                &config.data_dir,
                config.native_code_key.as_deref(),
            )?;
            let service = precompile::Service::new(p.clone(), key, &config.data_dir);
            if created {
                tracing::info!(
                    "created the native-code signing key in {} (its public key: `wasmdm ctl native-code-key`)",
                    config.data_dir.join(precompile::key::KEY_FILE).display()
                );
            }
            Some(Arc::new(service))
        }
        None => None,
    };
    let udp = UdpSocket::bind(config.coap_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.coap_addr,
            source,
        })?;
    let tcp = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let secure = match config.coaps_addr {
        Some(addr) => {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let dtls = wasmdm_proto::dtls::DtlsServer::new(
                &dtls_credentials(&store, &config.dtls),
                config.dtls.limits.clone(),
            )?;
            Some((Arc::new(socket), dtls))
        }
        None => None,
    };
    let coaps_bound = match &secure {
        Some((socket, _)) => socket.local_addr().ok(),
        None => None,
    };
    let bootstrap = match &config.bootstrap {
        Some(listen) => {
            let settings = bootstrap::driver::DriverSettings {
                limits: listen.limits.clone(),
                allow_nosec: config.allow_nosec,
                default_server_uri: listen.server_uri.clone().or_else(|| {
                    coaps_bound
                        .and_then(reachable)
                        .map(|a| format!("coaps://{a}"))
                }),
                params: config.coap_params.clone(),
            };
            let seed = driver::unix_ms().rotate_left(17) ^ u64::from(listen.coaps.port());
            Some(bootstrap::bind(listen, &config.dtls, &store, settings, seed).await?)
        }
        None => None,
    };
    let bound = Bound {
        coap: udp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.coap_addr,
            source,
        })?,
        coaps: match &secure {
            Some((socket, _)) => Some(socket.local_addr().map_err(|source| ServerError::Bind {
                addr: config.coap_addr,
                source,
            })?),
            None => None,
        },
        http: tcp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.http_addr,
            source,
        })?,
        token_path,
        token: token.clone(),
        tls: tls_config.is_some(),
        bootstrap: bootstrap
            .as_ref()
            .map(|(_, plain, secure)| (*plain, *secure)),
    };
    // Set up before any task starts, so a failure here leaves nothing running.
    let listener = match tls_config {
        None => ApiListener::Plain(tcp),
        Some(config) => {
            ApiListener::Tls(tls::TlsListener::new(tcp, config).map_err(ServerError::Http)?)
        }
    };
    let seed = driver::unix_ms() ^ u64::from(bound.coap.port());
    let notified = driver::Notified::default();
    let driver = driver::Driver::new(
        transport::ServerTransport::new(Arc::new(udp), secure),
        core::access::AccessPolicy {
            allow_nosec: config.allow_nosec,
        },
        config.registry_limits.clone(),
        store.clone(),
        notified.clone(),
        config.coap_params.clone(),
        seed,
    )?;
    let (tx, rx) = mpsc::channel(256);
    let mut state = http::AppState::new(
        store,
        tx,
        notified,
        (
            // Empty (no default) where the socket is bound to 0.0.0.0 /
            // [::]: pull campaigns then need a configured base URI.
            config.coap_base_uri.clone().unwrap_or_else(|| {
                reachable(bound.coap)
                    .map(|a| format!("coap://{a}"))
                    .unwrap_or_default()
            }),
            config.http_base_uri.clone().unwrap_or_else(|| {
                reachable(bound.http)
                    .map(|_| bound.api_base())
                    .unwrap_or_default()
            }),
        ),
        auth::AdminToken::new(&token),
        config.file_limits.clone(),
    );
    state.precompile = precompile;
    // Campaigns a restart caught while they were being prepared (issue 13).
    precompile::preparing::resume(&state).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_http = stop_rx.clone();
    let bootstrap_task = bootstrap.map(|(driver, _, _)| tokio::spawn(driver.run(stop_rx.clone())));
    let mut stop_drv = stop_rx;
    let driver_task = tokio::spawn(driver.run(rx, async move {
        let _ = stop_drv.wait_for(|s| *s).await;
    }));
    match bound.coaps {
        Some(coaps) => tracing::info!(
            "LwM2M server on coaps://{coaps} and coap://{} (NoSec {}), API on {}",
            bound.coap,
            if config.allow_nosec {
                "allowed"
            } else {
                "only for endpoints added with --nosec"
            },
            bound.api_base()
        ),
        None => tracing::info!(
            "LwM2M server on coap://{} , API on {}",
            bound.coap,
            bound.api_base()
        ),
    }
    if let Some((plain, secure)) = bound.bootstrap {
        tracing::info!("LwM2M bootstrap server on coaps://{secure} and coap://{plain}");
    }
    on_bound(bound);
    let preparing = state.preparing_tasks.clone();
    let app = http::router(state);
    let stopped = async move {
        let _ = stop_http.wait_for(|s| *s).await;
    };
    let http_task = match listener {
        ApiListener::Plain(tcp) => tokio::spawn(
            axum::serve(tcp, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
        ApiListener::Tls(tls) => tokio::spawn(
            axum::serve(tls, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
    };
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = driver_task.await;
    if let Some(t) = bootstrap_task {
        let _ = t.await;
    }
    let served = match http_task.await {
        Ok(r) => r.map_err(ServerError::Http),
        Err(_) => Ok(()),
    };
    // Nothing of this server holds the store once it returns, so a server
    // started again in this process (an embedder, the tests) can open it:
    // the preparation tasks end, and the last connection and blocking tasks
    // drop their clones a moment after the HTTP server returned.
    preparing.settle().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while store_left.strong_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    if store_left.strong_count() > 0 {
        tracing::warn!("the store is still held 5 s after the server stopped");
    }
    served
}
