//! The server's coaps endpoint against independent DTLS 1.2 stacks: the
//! libcoap example clients (Debian `libcoap3-bin` 4.3.1) built on OpenSSL 3
//! (`coap-client-openssl`) and GnuTLS 3.7 (`coap-client-gnutls`), plus the
//! plain `coap-client-notls`. Each test is skipped (with a note on stderr)
//! when its binary is missing.
//!
//! What works, and how (libcoap 4.3.1):
//! - PSK: `-u IDENTITY -k KEY`. `-k` is the key as text (no hex form in
//!   4.3.1), so the server stores the same ASCII bytes.
//! - PKI: `-c CERT.pem -j KEY.pem -C CA.pem` (PKCS#8 `BEGIN PRIVATE KEY` is
//!   accepted by both builds; `-C` also makes the client check our chain).
//! - `-v 6` prints every PDU (`v:1 t:ACK c:2.01 ... [ Location-Path:rd, ...]`)
//!   and a refusal also as `4.03` on stderr; `-v 9` adds the TLS library's
//!   log, where the suite shows: OpenSSL `Using cipher: NAME`, GnuTLS
//!   `Selected cipher suite: NAME`. The clients exit 0 whatever happened
//!   (a failed handshake too: `cannot send CoAP pdu`), so the output is
//!   what tells.
//! - Suites: our server takes the client's first suite it supports, and
//!   both libraries list GCM before CCM_8, so by default they negotiate
//!   TLS_PSK_WITH_AES_128_GCM_SHA256 (0x00A8) and
//!   TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xC02B). The LwM2M mandatory
//!   CCM_8 suites are forced through GnuTLS: `GNUTLS_SYSTEM_PRIORITY_FILE`
//!   naming a file whose `[overrides]` disable every other bulk cipher, and
//!   the handshakes then select GNUTLS_PSK_AES_128_CCM_8 (0xC0A8) and
//!   GNUTLS_ECDHE_ECDSA_AES_128_CCM_8 (0xC0AE).
//! - What did not work: forcing CCM_8 with OpenSSL. This OpenSSL (3.0.19)
//!   offers PSK-AES128-CCM8 even at the default security level, but after
//!   GCM, and libcoap 4.3.1 has no option to choose suites: it sets its own
//!   list (`PSK:!NULL` for PSK), which replaces any `CipherString` an
//!   `OPENSSL_CONF` file gives (`PSK-AES128-CCM8@SECLEVEL=0` there still
//!   ends in another suite). So the OpenSSL client is checked with the suite
//!   it prefers, and GnuTLS carries the CCM_8 checks.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value as Json, json};

use common::{TestServer, blocking};
use wasmdm_server::ctl::Client;

/// A PSK as libcoap's `-k` takes it: text, used byte for byte.
const KEY: &str = "wasmdm-psk-key-0123";
const WRONG_KEY: &str = "wasmdm-psk-key-9999";

/// GnuTLS system priority overrides leaving AES-128-CCM-8 as the only
/// bulk cipher (so PSK and ECDHE-ECDSA handshakes must use the CCM_8 suites).
const GNUTLS_CCM8_ONLY: &str = "[overrides]
tls-disabled-cipher = AES-128-GCM
tls-disabled-cipher = AES-256-GCM
tls-disabled-cipher = CHACHA20-POLY1305
tls-disabled-cipher = AES-128-CCM
tls-disabled-cipher = AES-256-CCM
tls-disabled-cipher = AES-128-CBC
tls-disabled-cipher = AES-256-CBC
tls-disabled-cipher = CAMELLIA-128-GCM
tls-disabled-cipher = CAMELLIA-256-GCM
tls-disabled-cipher = CAMELLIA-128-CBC
tls-disabled-cipher = CAMELLIA-256-CBC
";

/// `name` on the PATH, or None with a note that the test is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipping: {name} not found (Debian package libcoap3-bin)");
    }
    found
}

/// Runs a libcoap client and returns its stdout and stderr together.
fn run(bin: &Path, args: &[String], env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Our OPENSSL_CONF / GnuTLS overrides only where a test asks.
        .env_remove("OPENSSL_CONF")
        .env_remove("GNUTLS_SYSTEM_PRIORITY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(out)) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        other => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{} {args:?} did not finish: {other:?}", bin.display());
        }
    }
}

/// Arguments of a Register (`POST /rd?ep=..`) to `uri_base`, with `extra`
/// credentials flags; `-B 5` bounds the wait, `-v` the log level.
fn register_args(uri_base: &str, ep: &str, extra: &[&str], verbosity: u8) -> Vec<String> {
    let mut args: Vec<String> = [
        "-m",
        "post",
        "-B",
        "5",
        "-v",
        &verbosity.to_string(),
        "-e",
        "</1/0>,</3/0>",
        "-t",
        "40",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("{uri_base}/rd?ep={ep}&lt=60&lwm2m=1.1&b=U"));
    args
}

/// The code of the last response PDU in a client's log (`v:1 t:ACK c:2.01 ...`).
fn response_code(out: &str) -> Option<String> {
    out.lines().rev().find_map(|l| {
        let pdu = &l[l.find("v:1 t:")?..];
        let code = pdu.split_whitespace().find_map(|w| w.strip_prefix("c:"))?;
        code.starts_with(|c: char| c.is_ascii_digit())
            .then(|| code.to_string())
    })
}

/// The Location-Path of the last response PDU: `rd/5` -> `5`.
fn location(out: &str) -> Option<String> {
    let line = out.lines().rev().find(|l| l.contains("Location-Path:"))?;
    let segments: Vec<&str> = line
        .split("Location-Path:")
        .skip(1)
        .map(|s| s.split([',', ' ', ']']).next().unwrap_or(""))
        .collect();
    match segments.as_slice() {
        ["rd", id] => Some(id.to_string()),
        _ => None,
    }
}

/// The suite the TLS library reports at `-v 9`, if it does.
fn negotiated_suite(out: &str) -> Option<String> {
    out.lines().find_map(|l| {
        l.split_once("Using cipher: ")
            .or_else(|| l.split_once("Selected cipher suite: "))
            .map(|(_, s)| s.trim().to_string())
    })
}

/// The handshake did not complete: no CoAP answer at all, and the log
/// says so (`cannot send CoAP pdu`) or names the alert (`signs`).
fn assert_handshake_failed(out: &str, what: &str, signs: &[&str]) {
    assert_eq!(response_code(out), None, "{what}: got an answer\n{out}");
    assert!(
        out.contains("cannot send CoAP pdu")
            && (signs.is_empty() || signs.iter().any(|s| out.contains(s))),
        "{what}: no sign of the failed handshake ({signs:?})\n{out}"
    );
}

async fn start(dir: &Path, tweak: impl Fn(&mut wasmdm_server::ServerConfig)) -> TestServer {
    TestServer::start_with(dir, "127.0.0.1:0".parse().unwrap(), |cfg| {
        cfg.coaps_addr = Some("127.0.0.1:0".parse().unwrap());
        cfg.allow_nosec = false;
        tweak(cfg);
    })
    .await
}

fn put_psk(api: &Client, ep: &str, identity: &str, key: &str) {
    api.put(
        &format!("/api/security/{ep}"),
        &json!({"mode": "psk", "identity": identity, "key": hex::encode(key)}),
    )
    .unwrap();
}

/// The device record, or None when the server never saw the endpoint.
fn device(api: &Client, ep: &str) -> Option<Json> {
    match api.get(&format!("/api/devices/{ep}")) {
        Ok(d) => Some(d),
        Err(wasmdm_server::ctl::CtlError::Api { status: 404, .. }) => None,
        Err(e) => panic!("GET /api/devices/{ep}: {e}"),
    }
}

/// Endpoint names the server knows, sorted.
fn endpoints(api: &Client) -> Vec<String> {
    let mut eps: Vec<String> = api
        .get("/api/devices")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint"].as_str().unwrap().to_string())
        .collect();
    eps.sort();
    eps
}

/// A 2.01 answer, and the device online with the location the client got.
fn assert_registered(api: &Client, ep: &str, out: &str) {
    assert_eq!(
        response_code(out).as_deref(),
        Some("2.01"),
        "register {ep}\n{out}"
    );
    let loc = location(out).unwrap_or_else(|| panic!("no Location-Path rd/..\n{out}"));
    let d = device(api, ep).unwrap_or_else(|| panic!("{ep} not in the API"));
    assert_eq!(d["online"], true, "{d:#}");
    assert_eq!(d["registration"]["endpoint"], ep, "{d:#}");
    assert_eq!(d["registration"]["location"], loc.as_str(), "{d:#}");
    assert_eq!(d["registration"]["lifetime"], 60, "{d:#}");
}

/// A refusal (4.03) and nothing stored for `ep`.
fn assert_forbidden(api: &Client, ep: &str, out: &str) {
    assert_eq!(
        response_code(out).as_deref(),
        Some("4.03"),
        "register {ep}\n{out}"
    );
    assert!(device(api, ep).is_none(), "{ep} was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psk_register_from_libcoap_openssl() {
    let Some(client) = tool("coap-client-openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let api = server.client();
    let coaps = format!("coaps://{}", server.bound.coaps.unwrap());
    blocking(move || {
        put_psk(&api, "lc-ossl", "lc-ossl-id", KEY);
        put_psk(&api, "lc-victim", "lc-victim-id", "victim-key-0123456789");
        put_psk(&api, "lc-wrongkey", "lc-wrongkey-id", KEY);

        // The right identity and key: registered.
        let out = run(
            &client,
            &register_args(&coaps, "lc-ossl", &["-u", "lc-ossl-id", "-k", KEY], 9),
            &[],
        );
        assert_registered(&api, "lc-ossl", &out);
        // OpenSSL lists GCM first (see the module doc): PSK-AES128-GCM-SHA256.
        let suite = negotiated_suite(&out);
        eprintln!("coap-client-openssl PSK suite: {suite:?}");
        assert!(
            matches!(
                suite.as_deref(),
                Some("PSK-AES128-GCM-SHA256" | "PSK-AES128-CCM8" | "PSK-AES128-CCM")
            ),
            "a suite our server does not offer? {suite:?}"
        );

        // A stored identity with the wrong key: the handshake fails.
        let out = run(
            &client,
            &register_args(
                &coaps,
                "lc-wrongkey",
                &["-u", "lc-wrongkey-id", "-k", WRONG_KEY],
                6,
            ),
            &[],
        );
        assert_handshake_failed(&out, "wrong key", &[]);
        assert!(device(&api, "lc-wrongkey").is_none());

        // An identity the server does not know: the handshake fails.
        let out = run(
            &client,
            &register_args(&coaps, "lc-stranger", &["-u", "lc-stranger", "-k", KEY], 6),
            &[],
        );
        assert_handshake_failed(&out, "unknown identity", &[]);
        assert!(device(&api, "lc-stranger").is_none());

        // lc-ossl's valid credentials used to register as another endpoint:
        // one bound to another identity, and one without any credential.
        for other in ["lc-victim", "lc-nocred"] {
            let out = run(
                &client,
                &register_args(&coaps, other, &["-u", "lc-ossl-id", "-k", KEY], 6),
                &[],
            );
            assert_forbidden(&api, other, &out);
        }

        // lc-ossl registers again (a new session, a new port): still fine,
        // and the refusals above left it alone.
        let out = run(
            &client,
            &register_args(&coaps, "lc-ossl", &["-u", "lc-ossl-id", "-k", KEY], 6),
            &[],
        );
        assert_registered(&api, "lc-ossl", &out);
        assert_eq!(endpoints(&api), ["lc-ossl"]);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psk_register_from_libcoap_gnutls_with_ccm_8() {
    let Some(client) = tool("coap-client-gnutls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let priorities = dir.path().join("gnutls-ccm8.cfg");
    std::fs::write(&priorities, GNUTLS_CCM8_ONLY).unwrap();
    let server = start(dir.path(), |_| {}).await;
    let api = server.client();
    let coaps = format!("coaps://{}", server.bound.coaps.unwrap());
    blocking(move || {
        put_psk(&api, "lc-gnutls", "lc-gnutls-id", KEY);
        put_psk(&api, "lc-gnutls-2", "lc-gnutls-2-id", KEY);
        let ccm8 = [("GNUTLS_SYSTEM_PRIORITY_FILE", priorities.as_path())];

        // Only CCM_8 offered: the LwM2M mandatory PSK suite (0xC0A8).
        let out = run(
            &client,
            &register_args(&coaps, "lc-gnutls", &["-u", "lc-gnutls-id", "-k", KEY], 9),
            &ccm8,
        );
        assert_eq!(
            negotiated_suite(&out).as_deref(),
            Some("GNUTLS_PSK_AES_128_CCM_8"),
            "{out}"
        );
        assert_registered(&api, "lc-gnutls", &out);

        // GnuTLS's own preference (GCM) works too.
        let out = run(
            &client,
            &register_args(
                &coaps,
                "lc-gnutls-2",
                &["-u", "lc-gnutls-2-id", "-k", KEY],
                9,
            ),
            &[],
        );
        eprintln!(
            "coap-client-gnutls default PSK suite: {:?}",
            negotiated_suite(&out)
        );
        assert_registered(&api, "lc-gnutls-2", &out);

        // Wrong key, with CCM_8 and without: no handshake, nothing stored.
        put_psk(&api, "lc-gnutls-3", "lc-gnutls-3-id", KEY);
        for env in [&ccm8[..], &[]] {
            let out = run(
                &client,
                &register_args(
                    &coaps,
                    "lc-gnutls-3",
                    &["-u", "lc-gnutls-3-id", "-k", WRONG_KEY],
                    6,
                ),
                env,
            );
            assert_handshake_failed(&out, "gnutls wrong key", &[]);
        }
        assert!(device(&api, "lc-gnutls-3").is_none());

        // A valid session registering under another endpoint's name.
        let out = run(
            &client,
            &register_args(&coaps, "lc-gnutls-3", &["-u", "lc-gnutls-id", "-k", KEY], 6),
            &ccm8,
        );
        assert_forbidden(&api, "lc-gnutls-3", &out);
        assert_eq!(endpoints(&api), ["lc-gnutls", "lc-gnutls-2"]);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_register_is_refused_without_nosec() {
    let Some(client) = tool("coap-client-notls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let api = server.client();
    let coap = format!("coap://{}", server.bound.coap);
    blocking(move || {
        put_psk(&api, "lc-psk", "lc-psk-id", KEY);
        // No credential and NoSec off; a PSK endpoint's name over plain CoAP.
        for ep in ["lc-plain", "lc-psk"] {
            let out = run(&client, &register_args(&coap, ep, &[], 6), &[]);
            assert_forbidden(&api, ep, &out);
        }
        // An endpoint added as NoSec may use plain CoAP.
        api.put("/api/security/lc-nosec", &json!({"mode": "nosec"}))
            .unwrap();
        let out = run(&client, &register_args(&coap, "lc-nosec", &[], 6), &[]);
        assert_registered(&api, "lc-nosec", &out);
        assert_eq!(endpoints(&api), ["lc-nosec"]);
    })
    .await;
    server.shutdown().await;
}

/// A P-256 CA and certificates it issues, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
    ca_der: Vec<u8>,
    server: (Vec<u8>, Vec<u8>),
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path, cn: &str) -> Pki {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{cn}.pem")), cert.pem()).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let mut pki = Pki {
            dir: dir.to_path_buf(),
            ca_der: cert.der().to_vec(),
            server: (Vec::new(), Vec::new()),
            issuer,
        };
        pki.server = pki.issue("server", "127.0.0.1", &["127.0.0.1"]);
        pki
    }

    /// Issues a leaf named `cn` with `sans`; writes `<file>.pem` and
    /// `<file>.key` (PKCS#8); returns its DER certificate and key.
    fn issue(&self, file: &str, cn: &str, sans: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    /// `-c <file>.pem -j <file>.key -C <ca>.pem`.
    fn flags(&self, file: &str, ca: &str) -> Vec<String> {
        let p = |name: String| self.dir.join(name).display().to_string();
        vec![
            "-c".into(),
            p(format!("{file}.pem")),
            "-j".into(),
            p(format!("{file}.key")),
            "-C".into(),
            p(format!("{ca}.pem")),
        ]
    }
}

/// A server with the CA's certificate and the CA as the device CA.
async fn x509_server(dir: &Path, pki: &Pki) -> TestServer {
    let (cert, key) = pki.server.clone();
    let ca = pki.ca_der.clone();
    start(dir, move |cfg| {
        cfg.dtls.certificate = Some((vec![cert.clone()], key.clone()));
        cfg.dtls.client_cas = vec![ca.clone()];
    })
    .await
}

fn args_with(base: &str, ep: &str, flags: &[String], verbosity: u8) -> Vec<String> {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    register_args(base, ep, &flags, verbosity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_register_from_libcoap_openssl() {
    let Some(client) = tool("coap-client-openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    pki.issue("dev", "lc-x509", &["lc-x509"]);
    pki.issue("other", "lc-x509-other", &["lc-x509-other"]);
    // Same CN, issued by a CA the server does not trust.
    let rogue = Pki::new(dir.path(), "rogue-ca");
    rogue.issue("rogue", "lc-x509", &["lc-x509"]);
    let server = x509_server(dir.path(), &pki).await;
    let api = server.client();
    let coaps = format!("coaps://{}", server.bound.coaps.unwrap());
    blocking(move || {
        // Bound to certificate mode explicitly.
        api.put("/api/security/lc-x509", &json!({"mode": "x509"}))
            .unwrap();
        let out = run(
            &client,
            &args_with(&coaps, "lc-x509", &pki.flags("dev", "ca"), 9),
            &[],
        );
        assert_registered(&api, "lc-x509", &out);
        let suite = negotiated_suite(&out);
        eprintln!("coap-client-openssl certificate suite: {suite:?}");
        assert!(
            matches!(
                suite.as_deref(),
                Some(
                    "ECDHE-ECDSA-AES128-GCM-SHA256"
                        | "ECDHE-ECDSA-AES128-CCM8"
                        | "ECDHE-ECDSA-AES128-CCM"
                )
            ),
            "a suite our server does not offer? {suite:?}"
        );

        // A valid certificate naming another endpoint: 4.03, nothing stored.
        let out = run(
            &client,
            &args_with(&coaps, "lc-x509-b", &pki.flags("other", "ca"), 6),
            &[],
        );
        assert_forbidden(&api, "lc-x509-b", &out);

        // The right CN under an untrusted CA: no handshake.
        let out = run(
            &client,
            &args_with(&coaps, "lc-x509-c", &rogue.flags("rogue", "ca"), 6),
            &[],
        );
        // Our server's alert, as OpenSSL logs it.
        assert_handshake_failed(&out, "untrusted client CA", &["alert bad certificate"]);
        assert!(device(&api, "lc-x509-c").is_none());

        // The client checks our chain: with another CA as its trust anchor
        // it refuses the server.
        let out = run(
            &client,
            &args_with(&coaps, "lc-x509-d", &pki.flags("dev", "rogue-ca"), 6),
            &[],
        );
        assert_handshake_failed(
            &out,
            "client trusting another CA",
            &["certificate verify failed"],
        );
        assert!(device(&api, "lc-x509-d").is_none());

        // A certificate endpoint cannot be taken over with a PSK either.
        put_psk(&api, "lc-psk", "lc-psk-id", KEY);
        let out = run(
            &client,
            &register_args(&coaps, "lc-x509", &["-u", "lc-psk-id", "-k", KEY], 6),
            &[],
        );
        assert_eq!(response_code(&out).as_deref(), Some("4.03"), "{out}");
        assert_eq!(endpoints(&api), ["lc-x509"]);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_register_from_libcoap_gnutls_with_ccm_8() {
    let Some(client) = tool("coap-client-gnutls") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let priorities = dir.path().join("gnutls-ccm8.cfg");
    std::fs::write(&priorities, GNUTLS_CCM8_ONLY).unwrap();
    let pki = Pki::new(dir.path(), "ca");
    pki.issue("dev", "lc-x509-g", &["lc-x509-g"]);
    pki.issue("other", "lc-x509-other", &[]);
    let server = x509_server(dir.path(), &pki).await;
    let api = server.client();
    let coaps = format!("coaps://{}", server.bound.coaps.unwrap());
    blocking(move || {
        let ccm8 = [("GNUTLS_SYSTEM_PRIORITY_FILE", priorities.as_path())];
        // No stored credential: a certificate naming the endpoint suffices.
        let out = run(
            &client,
            &args_with(&coaps, "lc-x509-g", &pki.flags("dev", "ca"), 9),
            &ccm8,
        );
        assert_eq!(
            negotiated_suite(&out).as_deref(),
            Some("GNUTLS_ECDHE_ECDSA_AES_128_CCM_8"),
            "{out}"
        );
        assert_registered(&api, "lc-x509-g", &out);

        // A CN-only certificate naming another endpoint.
        let out = run(
            &client,
            &args_with(&coaps, "lc-x509-g2", &pki.flags("other", "ca"), 6),
            &ccm8,
        );
        assert_forbidden(&api, "lc-x509-g2", &out);
        assert_eq!(endpoints(&api), ["lc-x509-g"]);
    })
    .await;
    server.shutdown().await;
}
