//! Pull over HTTPS (Package URI /9/x/3 = https://...) against a real TLS
//! peer, Python's ssl + http.server (tests/peers/https_server.py), with
//! certificates made here by rcgen. Scenarios from the Object 9 checklist:
//! a trusted server certificate -> DELIVERED and installable; a certificate
//! for another name or from an untrusted CA -> Update Result 52, state 0.

mod device_support;
#[path = "device_support/https.rs"]
mod https;

use device_support::*;
use https::{HttpsFiles, Pki};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use wasmdm::device::download::{
    DownloadError, HttpOptions, Observer, PackageSink, ResumePoint, TlsTrust, http_download,
};

const T: Duration = Duration::from_secs(60);

struct MemSink(Vec<u8>);

impl PackageSink for MemSink {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.0.truncate(offset as usize);
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Pulls `url` with `trust` into `sink`; the total and where it started.
fn pull(
    url: &str,
    trust: &TlsTrust,
    resume: &ResumePoint,
    sink: &mut MemSink,
) -> Result<(u64, ResumePoint), DownloadError> {
    let mut started = ResumePoint::default();
    let options = HttpOptions {
        read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        trust: trust.clone(),
        ..HttpOptions::default()
    };
    let total = http_download(
        url,
        None,
        resume,
        &options,
        &Arc::new(AtomicBool::new(false)),
        sink,
        Observer {
            on_start: &mut |p| started = p.clone(),
            on_progress: &mut |_| {},
        },
    )?;
    Ok((total, started))
}

/// 300 KB that are not a repeating pattern, so a misplaced chunk shows.
fn package_bytes() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..300 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn serve_package(dir: &Path, identity: &(std::path::PathBuf, std::path::PathBuf)) -> HttpsFiles {
    let files = HttpsFiles::serve(dir, identity);
    std::fs::write(files.dir.join("pkg.bin"), package_bytes()).unwrap();
    files
}

fn trust(ca: &Path, public_roots: bool) -> TlsTrust {
    TlsTrust::load(Some(ca), public_roots).unwrap()
}

fn assert_certificate_rejected(result: Result<(u64, ResumePoint), DownloadError>) {
    match result {
        Err(DownloadError::ConnectionLost(msg)) => {
            assert!(msg.contains("certificate"), "{msg}")
        }
        other => panic!("want ConnectionLost (52) for a certificate problem, got {other:?}"),
    }
}

#[test]
fn https_pull_with_the_ca_configured_gets_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"), "test-ca");
    let files = serve_package(&dir.path().join("www"), &pki.good);
    let want = package_bytes();
    // The operator's CA alone, and next to the public roots; by IP and by name.
    for (trust, url) in [
        (trust(&pki.ca, false), files.url("pkg.bin")),
        (trust(&pki.ca, true), files.url("pkg.bin")),
        (trust(&pki.ca, false), files.url_as("localhost", "pkg.bin")),
    ] {
        let mut sink = MemSink(Vec::new());
        let (total, started) = pull(&url, &trust, &ResumePoint::default(), &mut sink)
            .unwrap_or_else(|e| panic!("{url}: {e}\n{}", files.log_text()));
        assert_eq!(total, want.len() as u64);
        assert!(sink.0 == want, "{url}: bytes differ");
        assert_eq!(started.offset, 0);
        assert!(started.etag.is_some(), "the server sends an ETag");
    }
}

#[test]
fn https_pull_resumes_with_range_and_if_range() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"), "test-ca");
    let files = serve_package(&dir.path().join("www"), &pki.good);
    let trust = trust(&pki.ca, false);
    let want = package_bytes();
    let mut sink = MemSink(Vec::new());
    let (_, first) = pull(
        &files.url("pkg.bin"),
        &trust,
        &ResumePoint::default(),
        &mut sink,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", files.log_text()));

    // As after a lost connection: 100000 bytes stored with the server's ETag.
    let resume = ResumePoint {
        offset: 100_000,
        etag: first.etag.clone(),
    };
    let mut sink = MemSink(want[..100_000].to_vec());
    let (total, started) = pull(&files.url("pkg.bin"), &trust, &resume, &mut sink).unwrap();
    assert_eq!(started, resume, "the server answered 206 from the offset");
    assert_eq!(total, want.len() as u64);
    assert!(sink.0 == want, "resumed bytes differ");

    // A stale ETag: If-Range fails, the whole new entity comes from 0.
    let stale = ResumePoint {
        offset: 100_000,
        etag: Some("\"old\"".into()),
    };
    let mut sink = MemSink(vec![0; 100_000]);
    let (_, started) = pull(&files.url("pkg.bin"), &trust, &stale, &mut sink).unwrap();
    assert_eq!(started.offset, 0);
    assert!(sink.0 == want);
}

#[test]
fn untrusted_issuer_is_connection_lost() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"), "test-ca");
    let other = Pki::generate(&dir.path().join("other"), "other-ca");
    let files = serve_package(&dir.path().join("www"), &pki.good);
    let url = files.url("pkg.bin");
    let mut sink = MemSink(Vec::new());
    // Another CA configured, and the public roots only (the default).
    assert_certificate_rejected(pull(
        &url,
        &trust(&other.ca, false),
        &ResumePoint::default(),
        &mut sink,
    ));
    assert_certificate_rejected(pull(
        &url,
        &TlsTrust::default(),
        &ResumePoint::default(),
        &mut sink,
    ));
    assert!(sink.0.is_empty());
}

#[test]
fn certificate_for_another_name_is_connection_lost() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"), "test-ca");
    let files = serve_package(&dir.path().join("www"), &pki.wrong_name);
    let mut sink = MemSink(Vec::new());
    assert_certificate_rejected(pull(
        &files.url("pkg.bin"),
        &trust(&pki.ca, false),
        &ResumePoint::default(),
        &mut sink,
    ));
    assert!(sink.0.is_empty());
}

#[test]
fn nothing_trusted_refuses_https_before_connecting() {
    // Scenario "HTTPS URI with no download credentials at all -> 56".
    let none = TlsTrust::load(None, false).unwrap();
    assert!(!none.trusts_anything());
    let mut sink = MemSink(Vec::new());
    // Port 9 (discard) on loopback: nothing listens, nothing is tried.
    assert!(matches!(
        pull(
            "https://127.0.0.1:9/pkg.bin",
            &none,
            &ResumePoint::default(),
            &mut sink
        ),
        Err(DownloadError::InvalidUri(_))
    ));
}

/// A real `wasmdm device` with `--download-ca`: a server certificate for
/// another name fails the pull with 52 and state 0, the trusted one delivers
/// (state 3) and installs.
#[test]
fn device_pulls_over_https_with_its_download_ca_and_installs() {
    let mut server = NodeServer::start();
    let guard = LogOnPanic(tempfile::tempdir().unwrap());
    let dir = guard.0.path();
    let pki = Pki::generate(&dir.join("pki"), "device-ca");
    let good = HttpsFiles::serve(&dir.join("www"), &pki.good);
    let wrong = HttpsFiles::serve(&dir.join("www-wrong"), &pki.wrong_name);
    let package = pack_example("counter", "1.0.0");
    std::fs::write(good.dir.join("counter-1.wdm"), &package).unwrap();
    std::fs::write(wrong.dir.join("counter-1.wdm"), &package).unwrap();

    let ep = "wasmdm-https-1";
    let data = dir.join("device");
    let device = DeviceProcess::start_with(
        ep,
        server.port,
        &data,
        &["--download-ca".as_ref(), pki.ca.as_os_str()],
    );
    server.wait_event(T, |e| e["event"] == "registration" && e["ep"] == ep);

    // Name mismatch: Connection Lost (52), back to INITIAL, logged as a
    // certificate problem.
    let r = server.write(ep, "/9/0/3", &wrong.url("counter-1.wdm"));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/9", "52", T);
    assert_eq!(server.read(ep, "/9/0/7"), "0");
    let log = strip_ansi(&device.log_text());
    assert!(
        log.contains("server certificate rejected"),
        "the log names the certificate problem:\n{log}"
    );

    // Trusted: DELIVERED, then Install -> INSTALLED.
    let r = server.write(ep, "/9/0/3", &good.url("counter-1.wdm"));
    assert_eq!(r["ok"], json!(true), "{r}");
    server.wait_value(ep, "/9/0/7", "3", T);
    assert_eq!(server.read(ep, "/9/0/0"), "counter");
    assert_eq!(server.execute(ep, "/9/0/4", "")["ok"], json!(true));
    server.wait_value(ep, "/9/0/7", "4", T);
    assert_eq!(server.read(ep, "/9/0/9"), "2");
}

/// A CA file that cannot be used stops the device at startup, saying why.
#[test]
fn device_refuses_to_start_with_a_bad_download_ca() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "this is no certificate\n").unwrap();
    for ca in [bad, dir.path().join("missing.pem")] {
        let data = dir.path().join("device");
        let mut device = DeviceProcess::start_with(
            "wasmdm-https-bad",
            free_udp_port(),
            &data,
            &["--download-ca".as_ref(), ca.as_os_str()],
        );
        let mut status = None;
        wait_until(T, "the device exits", || {
            status = device.child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.unwrap();
        let log = strip_ansi(&device.log_text());
        assert!(!status.success(), "{log}");
        assert!(log.contains("download-ca"), "{log}");
        assert!(log.contains(&ca.display().to_string()), "{log}");
        let _ = std::fs::remove_file(&device.log);
    }
}
