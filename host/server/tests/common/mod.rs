//! Shared helpers: a server on loopback ports chosen by the OS.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmdm_server::{Bound, ServerConfig, serve_with};

/// A running server; dropping `stop` (or sending on it) shuts it down.
pub struct TestServer {
    pub bound: Bound,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), wasmdm_server::ServerError>>,
}

impl TestServer {
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_on(dir, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(dir: &Path, coap: std::net::SocketAddr) -> TestServer {
        Self::start_with(dir, coap, |_| {}).await
    }

    /// Starts with `tweak` applied to the configuration (TLS, limits).
    pub async fn start_with(
        dir: &Path,
        coap: std::net::SocketAddr,
        tweak: impl Fn(&mut ServerConfig),
    ) -> TestServer {
        // A server stopped a moment ago may still be closing its database
        // (tasks winding down hold it): retry for a little while.
        let mut last = String::new();
        for _ in 0..50 {
            match Self::try_start(dir, coap, &tweak).await {
                Ok(server) => return server,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not start: {last}");
    }

    async fn try_start(
        dir: &Path,
        coap: std::net::SocketAddr,
        tweak: &impl Fn(&mut ServerConfig),
    ) -> Result<TestServer, String> {
        let mut config = ServerConfig::new(coap, "127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
        // These tests speak plain CoAP (the DTLS ones turn it off in `tweak`).
        config.allow_nosec = true;
        tweak(&mut config);
        config.coap_params.ack_timeout = Duration::from_millis(500);
        config.coap_params.ack_jitter = Duration::from_millis(100);
        config.coap_params.max_retransmit = 2;
        let (stop, rx) = oneshot::channel::<()>();
        let (btx, brx) = oneshot::channel();
        let task = tokio::spawn(serve_with(
            config,
            async move {
                let _ = rx.await;
            },
            move |b| {
                let _ = btx.send(b);
            },
        ));
        match brx.await {
            Ok(bound) => Ok(TestServer {
                bound,
                stop: Some(stop),
                task,
            }),
            Err(_) => Err(format!("{:?}", task.await)),
        }
    }

    pub fn http(&self) -> String {
        self.bound.api_base()
    }

    /// An API client carrying the server's admin token.
    pub fn client(&self) -> wasmdm_server::ctl::Client {
        self.bound.client()
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// Polls `f` (blocking HTTP calls run on a blocking thread) until it returns Some.
pub async fn eventually<T: Send + 'static>(
    timeout: Duration,
    f: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let g = f.clone();
        if let Ok(Some(v)) = tokio::task::spawn_blocking(g).await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Runs a blocking closure off the runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Every log line of this test binary at `filter` and above (the first
/// call's filter wins: one subscriber per process), to check what the
/// server logs — and that no secret is in it.
pub fn captured_logs(filter: &str) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || SharedWriter(sink.clone()))
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

struct SharedWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends one CON request from `sock` to `server` (message id and token from
/// `mid`) and returns the response.
pub async fn exchange(
    sock: &tokio::net::UdpSocket,
    server: std::net::SocketAddr,
    mut req: coap_lite::Packet,
    mid: u16,
) -> coap_lite::Packet {
    req.header.message_id = mid;
    req.set_token(vec![mid as u8]);
    sock.send_to(&wasmdm_proto::coap::msg::encode(&req).unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    coap_lite::Packet::from_bytes(&buf[..n]).unwrap()
}
