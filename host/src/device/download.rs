//! Pull delivery over HTTP(S): the Package URI (/9/x/3) fetched into the
//! delivery file, resumable with `Range` + `If-Range` (RFC 9110 §14.2,
//! §13.1.5) after a lost connection or a host restart.
//!
//! Blocking (ureq): the driver runs it on a blocking thread. The CoAP pull
//! lives in the proto crate's block-wise download session.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Where downloaded bytes go: the runtime's delivery file.
pub trait PackageSink {
    /// Called once the server's answer fixes where the transfer starts (and
    /// the entity tag), before any byte is written.
    fn begin(&mut self, _start: &ResumePoint) -> std::io::Result<()> {
        Ok(())
    }
    /// Writes `bytes` at `offset`; offset 0 starts the file afresh.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
}

/// What a resumed download must match: the entity tag of the bytes already stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// Bytes already stored.
    pub offset: u64,
    /// The server's ETag for them, if it sent one. Without an ETag a resume
    /// cannot prove the file did not change, so it starts over.
    pub etag: Option<String>,
}

/// Why a pull failed, in the terms of the Update Result codes (SwMgmt §6 res. 9).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// 56: the URI is malformed, its host does not resolve, or the server says
    /// the package is not there.
    #[error("invalid URI: {0}")]
    InvalidUri(String),
    /// 52: the connection failed, stalled past the timeout or closed early.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// 50: the package is larger than the device accepts, or the disk is full.
    #[error("not enough storage: {0}")]
    Storage(String),
    /// The download was cancelled (instance deleted, host shutting down).
    #[error("download cancelled")]
    Cancelled,
}

/// Limits of one pull.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest package accepted.
    pub max_bytes: u64,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Longest silence while receiving (a stalled server counts as lost, scenario "stall").
    pub read_timeout: Duration,
    /// Which certificate authorities an `https` server may be vouched for by.
    pub trust: TlsTrust,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            trust: TlsTrust::default(),
        }
    }
}

/// The certificate authorities trusted for `https` pulls. Built once at
/// startup from the device config (PEM parsed and checked there) and cloned
/// into each download: the certificates sit behind an `Arc`.
#[derive(Debug, Clone)]
pub struct TlsTrust {
    /// `None`: nothing is trusted, so an https URI is refused before any
    /// connection (scenario "HTTPS URI with no download credentials" -> 56).
    roots: Option<RootCerts>,
}

impl Default for TlsTrust {
    /// The public web roots only: what ureq trusted before this was configurable.
    fn default() -> Self {
        TlsTrust {
            roots: Some(RootCerts::WebPki),
        }
    }
}

/// A CA file for downloads that cannot be used. (The underlying error is
/// the `source`, printed by the caller's error chain.)
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read download-ca file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("download-ca file {path} is not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("download-ca file {path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error("download-ca file {path}: certificate {index} cannot be a trust anchor")]
    Certificate {
        path: PathBuf,
        index: usize,
        source: rustls::Error,
    },
}

impl TlsTrust {
    /// Trusts the certificates of the PEM file `ca` (if any) and, when
    /// `public_roots`, Mozilla's public roots built into the binary.
    pub fn load(ca: Option<&Path>, public_roots: bool) -> Result<TlsTrust, TrustError> {
        let mut certs = match ca {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let roots = match (certs.is_empty(), public_roots) {
            (true, true) => Some(RootCerts::WebPki),
            (true, false) => None,
            (false, add_public) => {
                if add_public {
                    // ureq trusts either its own WebPki roots or a given list:
                    // both at once means listing the public roots as well.
                    certs.extend(
                        webpki_root_certs::TLS_SERVER_ROOT_CERTS
                            .iter()
                            .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
                    );
                }
                Some(RootCerts::from(certs))
            }
        };
        Ok(TlsTrust { roots })
    }

    /// Whether an https URI can be tried at all.
    pub fn trusts_anything(&self) -> bool {
        self.roots.is_some()
    }
}

/// The certificates of a PEM file, each checked to be usable as a trust
/// anchor (ureq itself would skip a bad one silently).
fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, TrustError> {
    let pem = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.into(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {} // a key next to the certificate: not a trust anchor
            Err(e) => {
                return Err(TrustError::Pem {
                    path: path.into(),
                    reason: e.to_string(),
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(TrustError::Empty { path: path.into() });
    }
    let mut check = rustls::RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        check
            .add(rustls::pki_types::CertificateDer::from(cert.der()))
            .map_err(|source| TrustError::Certificate {
                path: path.into(),
                index,
                source,
            })?;
    }
    Ok(certs)
}

/// What the caller hears while a download runs.
pub struct Observer<'a> {
    /// The resume point the transfer really starts from (offset and ETag),
    /// told before any byte is written, so the caller can persist it.
    pub on_start: &'a mut dyn FnMut(&ResumePoint),
    /// Bytes stored so far.
    pub on_progress: &'a mut dyn FnMut(u64),
}

/// `uri` as logs show it: no `user:password@`, no query, and long hex path
/// segments (a file's sha256, a download capability) cut to 8 characters, so
/// a log line never carries what would let its reader fetch the file.
pub fn for_log(uri: &str) -> String {
    let uri = without_userinfo(uri);
    let (head, query) = match uri.split_once('?') {
        Some((head, _)) => (head, "?…"),
        None => (uri.as_ref(), ""),
    };
    let (prefix, path) = match head.find("://") {
        Some(i) => {
            let rest = &head[i + 3..];
            let cut = i + 3 + rest.find('/').unwrap_or(rest.len());
            head.split_at(cut)
        }
        None => ("", head),
    };
    let path: Vec<String> = path
        .split('/')
        .map(|seg| {
            if seg.len() >= 24 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                format!("{}…", &seg[..8])
            } else {
                seg.to_string()
            }
        })
        .collect();
    format!("{prefix}{}{query}", path.join("/"))
}

/// `uri` without the `user:password@` of its authority, for messages and
/// logs (credentials belong in /9/x/14-15, but a URI may carry them too).
pub fn without_userinfo(uri: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.into();
    };
    let rest = uri.get(scheme_end..).unwrap_or_default();
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or_default();
    match authority.rfind('@') {
        Some(at) => format!(
            "{}***@{}",
            uri.get(..scheme_end).unwrap_or_default(),
            rest.get(at + 1..).unwrap_or_default()
        )
        .into(),
        None => uri.into(),
    }
}

/// Downloads `uri` into `sink`, continuing from `resume` when the server still
/// has the same entity. Returns the total size.
pub fn http_download(
    uri: &str,
    credentials: Option<(&str, &str)>,
    resume: &ResumePoint,
    options: &HttpOptions,
    cancel: &Arc<AtomicBool>,
    sink: &mut dyn PackageSink,
    observer: Observer<'_>,
) -> Result<u64, DownloadError> {
    // Errors and log lines show the URI without any `user:password@`.
    let shown = without_userinfo(uri);
    let shown = shown.as_ref();
    let parsed: ureq::http::Uri = uri
        .parse()
        .map_err(|e| DownloadError::InvalidUri(format!("{shown}: {e}")))?;
    match parsed.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(DownloadError::InvalidUri(format!(
                "{shown}: not an http(s) URI"
            )));
        }
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(DownloadError::InvalidUri(format!("{shown}: no host")));
    }

    let roots = match (&options.trust.roots, parsed.scheme_str()) {
        (Some(roots), _) => roots.clone(),
        (None, Some("https")) => {
            return Err(DownloadError::InvalidUri(format!(
                "{shown}: no certificate authority is trusted for https downloads \
                 (device config download-ca / download-public-roots)"
            )));
        }
        (None, _) => RootCerts::WebPki, // plain http: never used
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .http_status_as_error(false)
        .timeout_connect(Some(options.connect_timeout))
        .timeout_per_read(Some(options.read_timeout))
        .timeout_recv_response(Some(options.read_timeout))
        .build()
        .into();

    let mut request = agent.get(uri);
    let resuming = resume.offset > 0 && resume.etag.is_some();
    if let (true, Some(etag)) = (resuming, resume.etag.as_deref()) {
        request = request
            .header("Range", format!("bytes={}-", resume.offset))
            .header("If-Range", etag);
    }
    if let Some((user, password)) = credentials {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header("Authorization", format!("Basic {token}"));
    }

    let response = request.call().map_err(|e| transport_error(shown, e))?;
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let start = match status {
        206 if resuming => content_range_start(&response)
            .filter(|s| *s == resume.offset)
            .ok_or_else(|| {
                DownloadError::ConnectionLost("206 with an unexpected Content-Range".into())
            })?,
        200 => 0,
        401 | 403 | 404 | 410 => {
            return Err(DownloadError::InvalidUri(format!("{shown}: HTTP {status}")));
        }
        416 => {
            return Err(DownloadError::ConnectionLost(format!(
                "{shown}: HTTP 416, resume point beyond the file"
            )));
        }
        _ => {
            return Err(DownloadError::ConnectionLost(format!(
                "{shown}: HTTP {status}"
            )));
        }
    };
    if let Some(length) = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && start + length > options.max_bytes
    {
        return Err(DownloadError::Storage(format!(
            "package of {} bytes exceeds the limit of {} bytes",
            start + length,
            options.max_bytes
        )));
    }
    let point = ResumePoint {
        offset: start,
        etag,
    };
    sink.begin(&point)
        .map_err(|e| DownloadError::Storage(e.to_string()))?;
    (observer.on_start)(&point);

    let mut reader = response
        .into_body()
        .into_with_config()
        .limit(u64::MAX)
        .reader();
    let mut offset = start;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(DownloadError::ConnectionLost(e.to_string())),
        };
        if offset + n as u64 > options.max_bytes {
            return Err(DownloadError::Storage(format!(
                "package exceeds the limit of {} bytes",
                options.max_bytes
            )));
        }
        let chunk = buf.get(..n).unwrap_or_default();
        sink.write_at(offset, chunk)
            .map_err(|e| DownloadError::Storage(e.to_string()))?;
        offset += n as u64;
        (observer.on_progress)(offset);
    }
    Ok(offset)
}

fn content_range_start<B>(response: &ureq::http::Response<B>) -> Option<u64> {
    // "bytes 100-199/200"
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn transport_error(uri: &str, error: ureq::Error) -> DownloadError {
    match error {
        ureq::Error::BadUri(e) => DownloadError::InvalidUri(e),
        // Scenario "HTTP URI with an unresolvable host -> R = 56 (not 52)".
        ureq::Error::HostNotFound => DownloadError::InvalidUri("host not found".into()),
        // Scenarios "HTTPS server presents a certificate whose name does not
        // match -> R = 52" and "handshake fails -> R = 52": a TLS failure is a
        // lost connection, logged as what it is so the operator can fix it.
        other => match tls_failure(&other) {
            Some(rustls::Error::InvalidCertificate(reason)) => {
                tracing::warn!(uri, "https download: server certificate rejected: {reason}");
                DownloadError::ConnectionLost(format!(
                    "server certificate rejected: {reason} \
                     (trusted: download-ca, download-public-roots)"
                ))
            }
            Some(tls) => {
                tracing::warn!(uri, "https download: TLS handshake failed: {tls}");
                DownloadError::ConnectionLost(format!("TLS handshake failed: {tls}"))
            }
            None => DownloadError::ConnectionLost(other.to_string()),
        },
    }
}

/// The rustls error behind a ureq error: handshake failures come wrapped in
/// the `io::Error` of the socket they happened on.
fn tls_failure(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    struct MemSink(Vec<u8>);
    impl PackageSink for MemSink {
        fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
            self.0.truncate(offset as usize);
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    type Responder = Box<dyn Fn(&str) -> Vec<u8> + Send>;

    /// A one-shot HTTP server answering each connection with `respond(request_head)`.
    fn serve(responses: Vec<Responder>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pkg.wdm", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for respond in responses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    head.push_str(&line);
                }
                stream.write_all(&respond(&head)).unwrap();
                heads.push(head);
            }
            heads
        });
        (url, handle)
    }

    fn run(
        url: &str,
        resume: &ResumePoint,
        sink: &mut MemSink,
    ) -> Result<(u64, ResumePoint), DownloadError> {
        let mut started = ResumePoint::default();
        let total = http_download(
            url,
            None,
            resume,
            &HttpOptions {
                read_timeout: Duration::from_secs(2),
                ..HttpOptions::default()
            },
            &Arc::new(AtomicBool::new(false)),
            sink,
            Observer {
                on_start: &mut |p| started = p.clone(),
                on_progress: &mut |_| {},
            },
        )?;
        Ok((total, started))
    }

    #[test]
    fn downloads_whole_file_and_reports_etag() {
        let (url, server) = serve(vec![Box::new(|_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"v1\"\r\n\r\nhello".to_vec()
        })]);
        let mut sink = MemSink(Vec::new());
        let (total, started) = run(&url, &ResumePoint::default(), &mut sink).unwrap();
        assert_eq!((total, sink.0.as_slice()), (5, &b"hello"[..]));
        assert_eq!(
            started,
            ResumePoint {
                offset: 0,
                etag: Some("\"v1\"".into())
            }
        );
        server.join().unwrap();
    }

    #[test]
    fn resumes_with_range_and_if_range() {
        let (url, server) = serve(vec![Box::new(|_| {
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\nContent-Range: bytes 2-4/5\r\nETag: \"v1\"\r\n\r\nllo"
                .to_vec()
        })]);
        let mut sink = MemSink(b"he".to_vec());
        let resume = ResumePoint {
            offset: 2,
            etag: Some("\"v1\"".into()),
        };
        let (total, _) = run(&url, &resume, &mut sink).unwrap();
        assert_eq!((total, sink.0.as_slice()), (5, &b"hello"[..]));
        let heads = server.join().unwrap();
        let head = heads[0].to_ascii_lowercase();
        assert!(head.contains("range: bytes=2-"), "{head}");
        assert!(head.contains("if-range: \"v1\""), "{head}");
    }

    #[test]
    fn changed_file_restarts_from_zero() {
        // If-Range did not match: the server sends the whole new entity.
        let (url, server) = serve(vec![Box::new(|_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nETag: \"v2\"\r\n\r\nnew!".to_vec()
        })]);
        let mut sink = MemSink(b"old".to_vec());
        let resume = ResumePoint {
            offset: 3,
            etag: Some("\"v1\"".into()),
        };
        let (_, started) = run(&url, &resume, &mut sink).unwrap();
        assert_eq!(sink.0, b"new!");
        assert_eq!(started.offset, 0);
        server.join().unwrap();
    }

    #[test]
    fn not_found_is_invalid_uri_and_early_close_is_connection_lost() {
        let (url, server) = serve(vec![
            Box::new(|_| b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
            Box::new(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()),
        ]);
        let mut sink = MemSink(Vec::new());
        assert!(matches!(
            run(&url, &ResumePoint::default(), &mut sink),
            Err(DownloadError::InvalidUri(_))
        ));
        assert!(matches!(
            run(&url, &ResumePoint::default(), &mut sink),
            Err(DownloadError::ConnectionLost(_))
        ));
        server.join().unwrap();
    }

    #[test]
    fn bad_uris_are_refused_before_any_connection() {
        let mut sink = MemSink(Vec::new());
        for uri in ["", "ftp://x/y", "http://", "not a uri"] {
            assert!(
                matches!(
                    run(uri, &ResumePoint::default(), &mut sink),
                    Err(DownloadError::InvalidUri(_))
                ),
                "{uri}"
            );
        }
    }

    #[test]
    fn log_lines_show_no_capability_query_or_password() {
        let sha = "ab".repeat(32);
        let cap = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            for_log(&format!("coaps://u:p@10.0.0.1:5684/fw/{sha}/{cap}?k=v")),
            "coaps://***@10.0.0.1:5684/fw/abababab…/01234567…?…"
        );
        assert_eq!(for_log("http://h/pkg.wdm"), "http://h/pkg.wdm");
    }

    #[test]
    fn messages_show_uris_without_credentials() {
        for (uri, shown) in [
            (
                "http://u:secret@h:8080/p?q=a@b",
                "http://***@h:8080/p?q=a@b",
            ),
            ("https://u@h/p", "https://***@h/p"),
            ("http://h/p@x", "http://h/p@x"),
            ("coap://h", "coap://h"),
            ("not a uri", "not a uri"),
        ] {
            assert_eq!(without_userinfo(uri), shown);
        }
        // The InvalidUri text of a refused URI carries no password either.
        let mut sink = MemSink(Vec::new());
        let e = run("ftp://u:secret@h/p", &ResumePoint::default(), &mut sink).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn ca_files_are_checked_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let load = |path: &std::path::Path| TlsTrust::load(Some(path), true);
        assert!(matches!(
            load(&dir.path().join("missing.pem")),
            Err(TrustError::Read { .. })
        ));
        assert!(matches!(
            load(&file("text.pem", "no PEM here\n")),
            Err(TrustError::Empty { .. })
        ));
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            load(&file("b64.pem", bad_base64)),
            Err(TrustError::Pem { .. })
        ));
        let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            load(&file("der.pem", not_der)),
            Err(TrustError::Certificate { index: 0, .. })
        ));

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        // Two CAs in one file, and a key beside them (ignored).
        let good = file("ca.pem", &format!("{ca}{ca}{}", key.serialize_pem()));
        for public in [false, true] {
            assert!(
                TlsTrust::load(Some(&good), public)
                    .unwrap()
                    .trusts_anything()
            );
        }
        assert!(TlsTrust::load(None, true).unwrap().trusts_anything());
        assert!(!TlsTrust::load(None, false).unwrap().trusts_anything());
    }

    #[test]
    fn oversized_package_is_a_storage_error() {
        let (url, server) = serve(vec![Box::new(|_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n".to_vec()
        })]);
        let mut sink = MemSink(Vec::new());
        assert!(matches!(
            run(&url, &ResumePoint::default(), &mut sink),
            Err(DownloadError::Storage(_))
        ));
        server.join().unwrap();
    }
}
