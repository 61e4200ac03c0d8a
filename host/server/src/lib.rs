//! wasmdm's LwM2M server: registration and device management over CoAP/UDP,
//! software files, groups and software upgrade campaigns, with a durable
//! store (redb) and an HTTP JSON API.
//!
//! Entry points for the `wasmdm` binary: [`serve`] with a [`ServerConfig`]
//! for `wasmdm server`, and [`ctl::ctl_main`] for `wasmdm ctl`.

pub mod auth;
pub mod campaign;
pub mod core;
pub mod ctl;
pub mod driver;
pub mod files;
pub mod http;
pub mod security;
pub mod store;
pub mod tls;

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
}

/// What a running server bound (port 0 resolved) and the admin token its
/// API takes, so in-process callers (tests, the demo) need not read files.
#[derive(Clone)]
pub struct Bound {
    /// CoAP UDP address.
    pub coap: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// The admin token (`Authorization: Bearer <token>` on `/api/...`).
    pub token: String,
    /// Where the token is stored (`<data_dir>/admin-token`).
    pub token_path: PathBuf,
    /// True when the API is served over TLS (`https://`).
    pub tls: bool,
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
            .field("http", &self.http)
            .field("token_path", &self.token_path)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The API's listener: plain TCP, or TLS with `--http-tls`.
enum ApiListener {
    Plain(TcpListener),
    Tls(tls::TlsListener),
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
    let (token, created) = auth::load_or_create(&config.data_dir)?;
    let token_path = auth::token_path(&config.data_dir);
    if created {
        tracing::info!("created the API admin token in {}", token_path.display());
    } else {
        tracing::info!("API admin token: {}", token_path.display());
    }
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
    let bound = Bound {
        coap: udp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.coap_addr,
            source,
        })?,
        http: tcp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.http_addr,
            source,
        })?,
        token_path,
        token: token.clone(),
        tls: tls_config.is_some(),
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
        Arc::new(udp),
        store.clone(),
        notified.clone(),
        config.coap_params.clone(),
        seed,
    )?;
    let (tx, rx) = mpsc::channel(256);
    let state = http::AppState::new(
        store,
        tx,
        notified,
        (
            config
                .coap_base_uri
                .clone()
                .unwrap_or_else(|| format!("coap://{}", bound.coap)),
            config
                .http_base_uri
                .clone()
                .unwrap_or_else(|| bound.api_base()),
        ),
        auth::AdminToken::new(&token),
        config.file_limits.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_http = stop_rx.clone();
    let mut stop_drv = stop_rx;
    let driver_task = tokio::spawn(driver.run(rx, async move {
        let _ = stop_drv.wait_for(|s| *s).await;
    }));
    tracing::info!(
        "LwM2M server on coap://{} , API on {}",
        bound.coap,
        bound.api_base()
    );
    on_bound(bound);
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
    match http_task.await {
        Ok(r) => r.map_err(ServerError::Http),
        Err(_) => Ok(()),
    }
}
