//! `wasmdm server` as an LwM2M bootstrap server (LwM2M 1.1 Core §5.2, §6.1),
//! end to end over loopback: accounts imported through the API, a scripted
//! DTLS device (tests/common/bsdevice.rs, our sans-IO DTLS client and
//! coap-lite, independent of the server's session code) bootstrapping and
//! then registering with the PSK it was given; refusals, a refused Finish, a
//! silent device, the caps; libcoap's `coap-client-openssl` as an
//! independent DTLS peer for the Bootstrap-Request; `ctl bootstrap`.

mod common;

#[path = "common/bsdevice.rs"]
mod bsdevice;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value as Json, json};

use bsdevice::{Script, bootstrap, bootstrap_with, register};
use common::{TestServer, blocking, captured_logs, eventually};
use wasmdm_server::bootstrap::{BootstrapLimits, BootstrapListen};
use wasmdm_server::ctl::{Client, CtlError};

const KEY_1: &str = "00112233445566778899aabbccddeeff";
const KEY_2: &str = "ffeeddccbbaa99887766554433221100";

async fn start(dir: &Path, limits: BootstrapLimits) -> TestServer {
    TestServer::start_with(dir, "127.0.0.1:0".parse().unwrap(), move |cfg| {
        cfg.coaps_addr = Some("127.0.0.1:0".parse().unwrap());
        cfg.allow_nosec = false;
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut listen = BootstrapListen::new(any, any);
        listen.limits = limits.clone();
        cfg.bootstrap = Some(listen);
    })
    .await
}

fn bs_coaps(s: &TestServer) -> SocketAddr {
    s.bound.bootstrap.unwrap().1
}

fn bs_coap(s: &TestServer) -> SocketAddr {
    s.bound.bootstrap.unwrap().0
}

async fn import(api: &Client, csv: &str) -> Result<Json, CtlError> {
    let api = api.clone();
    let csv = csv.to_string();
    blocking(move || api.post_bytes("/api/bootstrap/import", "text/csv", csv.as_bytes())).await
}

async fn get(api: &Client, path: &str) -> Result<Json, CtlError> {
    let api = api.clone();
    let path = path.to_string();
    blocking(move || api.get(&path)).await
}

/// The newest session of `ep` once it is no longer running.
async fn finished_session(api: &Client, ep: &str) -> Json {
    let api = api.clone();
    let path = format!("/api/bootstrap/sessions/{ep}");
    eventually(Duration::from_secs(20), move || {
        let v = api.get(&path).ok()?;
        let last = v.as_array()?.last()?.clone();
        (last["status"] != "running").then_some(last)
    })
    .await
    .unwrap_or_else(|| panic!("no finished bootstrap session of {ep}"))
}

fn key(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).unwrap()
}

/// The whole story: CSV import, bootstrap over DTLS, the generated PSK in
/// the security store before the device hears of it, registration with it
/// right after, the session in the API, and no key anywhere in logs or API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_bootstraps_over_dtls_then_registers_with_its_new_psk() {
    let logs = captured_logs("info");
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), BootstrapLimits::default()).await;
    let api = server.client();
    let csv = format!("endpoint,identity,key,labels\nbs-dev-1,bs-id-1,{KEY_1},fleet\n");
    assert_eq!(import(&api, &csv).await.unwrap(), json!({"imported": 1}));

    let out = bootstrap(
        bs_coaps(&server),
        Some((b"bs-id-1", &key(KEY_1))),
        "bs-dev-1",
        &Script::default(),
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("2.04"), "{out:?}");
    assert_eq!(
        out.requests,
        [
            "DELETE /0",
            "DELETE /1",
            "GET /0",
            "PUT /0/1",
            "PUT /1/0",
            "POST /bs"
        ]
    );
    let coaps = server.bound.coaps.unwrap();
    assert_eq!(
        out.server_uri.as_deref(),
        Some(format!("coaps://{coaps}").as_str())
    );
    assert_eq!(out.security_mode, Some(0));
    let (identity, psk) = out.psk.clone().expect("a PSK in /0/1");
    assert_eq!(identity, b"bs-dev-1");
    assert_eq!(psk.len(), 16);
    assert_ne!(psk, key(KEY_1), "a fresh key, not the bootstrap key");

    let session = finished_session(&api, "bs-dev-1").await;
    assert_eq!(session["status"], "succeeded", "{session:#}");
    assert_eq!(session["finish_code"], "2.04");
    assert_eq!(session["security"], "psk");
    let steps: Vec<String> = session["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {} {}", s["op"], s["path"], s["code"]).replace('"', ""))
        .collect();
    assert_eq!(
        steps,
        [
            "delete /0 2.02",
            "delete /1 2.02",
            "discover /0 2.05",
            "write /0/1 2.04",
            "write /1/0 2.04",
            "finish /bs 2.04"
        ]
    );

    // The security store has the credential (without its key in the API).
    let sec = get(&api, "/api/security/bs-dev-1").await.unwrap();
    assert_eq!(
        sec,
        json!({"endpoint": "bs-dev-1", "mode": "psk", "identity": "bs-dev-1"})
    );
    // The device registers with what it was given.
    let code = register(coaps, (&identity, &psk), "bs-dev-1").await;
    assert_eq!(code.as_deref(), Some("2.01"));
    let d = get(&api, "/api/devices/bs-dev-1").await.unwrap();
    assert_eq!(d["online"], true, "{d:#}");

    // Keys never come back from the API nor show in the logs.
    let listed = get(&api, "/api/bootstrap/endpoints").await.unwrap();
    let shown = get(&api, "/api/bootstrap/endpoints/bs-dev-1")
        .await
        .unwrap();
    assert_eq!(shown["identity"], "bs-id-1");
    assert_eq!(shown["labels"], json!(["fleet"]));
    let sessions = get(&api, "/api/bootstrap/sessions").await.unwrap();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for haystack in [
        listed.to_string(),
        shown.to_string(),
        sessions.to_string(),
        text.clone(),
    ] {
        assert!(
            !haystack.contains(KEY_1),
            "bootstrap key leaked: {haystack}"
        );
        assert!(
            !haystack.contains(&hex::encode(&psk)),
            "generated key leaked: {haystack}"
        );
    }
    assert!(text.contains("bootstrap finished"), "{text}");
    server.shutdown().await;
}

/// Wrong key: the handshake fails, no session. Another device's valid
/// identity for this name, or an unknown name: 4.00 (Core 1.1 §6.1.1,
/// identity and endpoint name MUST match). Plain CoAP without NoSec: 4.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), BootstrapLimits::default()).await;
    let api = server.client();
    let csv = format!("r-dev-1,r-id-1,{KEY_1}\nr-dev-2,r-id-2,{KEY_2}\n");
    import(&api, &csv).await.unwrap();
    let quick = Script {
        timeout: Duration::from_secs(15),
        ..Script::default()
    };

    let out = bootstrap(
        bs_coaps(&server),
        Some((b"r-id-1", &key(KEY_2))),
        "r-dev-1",
        &quick,
    )
    .await;
    assert!(out.handshake_failed.is_some(), "{out:?}");
    assert_eq!(out.request_code, None);

    let out = bootstrap(
        bs_coaps(&server),
        Some((b"r-id-1", &key(KEY_1))),
        "r-dev-2",
        &quick,
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("4.00"), "{out:?}");
    assert!(out.requests.is_empty());

    let out = bootstrap(
        bs_coaps(&server),
        Some((b"r-id-1", &key(KEY_1))),
        "nobody",
        &quick,
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("4.00"));

    let out = bootstrap(bs_coap(&server), None, "r-dev-1", &quick).await;
    assert_eq!(out.request_code.as_deref(), Some("4.00"));
    let out = bootstrap(bs_coap(&server), None, "unknown", &quick).await;
    assert_eq!(out.request_code.as_deref(), Some("4.00"));

    for ep in ["r-dev-1", "r-dev-2", "nobody", "unknown"] {
        let s = get(&api, &format!("/api/bootstrap/sessions/{ep}"))
            .await
            .unwrap();
        assert_eq!(s, json!([]), "{ep}");
        assert!(get(&api, &format!("/api/security/{ep}")).await.is_err());
    }
    // A NoSec bootstrap account may use plain CoAP: it gets a NoSec server account.
    blocking({
        let api = api.clone();
        move || {
            api.put(
                "/api/bootstrap/labels/lab",
                &json!({"servers": [{"uri": "coap://127.0.0.1:5683", "security": "nosec"}]}),
            )
            .unwrap();
            api.put(
                "/api/bootstrap/endpoints/r-plain",
                &json!({"mode": "nosec", "labels": ["lab"]}),
            )
            .unwrap();
        }
    })
    .await;
    let out = bootstrap(bs_coap(&server), None, "r-plain", &quick).await;
    assert_eq!(out.request_code.as_deref(), Some("2.04"), "{out:?}");
    assert_eq!(out.security_mode, Some(3));
    assert_eq!(out.server_uri.as_deref(), Some("coap://127.0.0.1:5683"));
    let s = finished_session(&api, "r-plain").await;
    assert_eq!(s["status"], "succeeded", "{s:#}");
    let sec = get(&api, "/api/security/r-plain").await.unwrap();
    assert_eq!(sec["mode"], "nosec");
    server.shutdown().await;
}

/// A device answering 4.06 to Finish fails the session with its reason; a
/// device that goes silent times out. Either way the device keeps its
/// previous account (Core 1.1 §5.2.7.6), so the server puts the endpoint's
/// previous credential back: none, or the old PSK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_finish_and_silent_device_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = BootstrapLimits {
        session_timeout: Duration::from_secs(2),
        ..BootstrapLimits::default()
    };
    let server = start(dir.path(), limits).await;
    let api = server.client();
    import(
        &api,
        &format!("f-dev-1,f-id-1,{KEY_1}\nf-dev-2,f-id-2,{KEY_2}\n"),
    )
    .await
    .unwrap();
    blocking({
        let api = api.clone();
        move || {
            api.put(
                "/api/security/f-dev-1",
                &json!({"mode": "psk", "identity": "old-id-1", "key": KEY_2}),
            )
            .unwrap()
        }
    })
    .await;
    let refuse = Script {
        finish_code: 0x86,
        finish_payload: b"no server account with matching security".to_vec(),
        ..Script::default()
    };
    let out = bootstrap(
        bs_coaps(&server),
        Some((b"f-id-1", &key(KEY_1))),
        "f-dev-1",
        &refuse,
    )
    .await;
    assert!(out.finished, "{out:?}");
    assert_eq!(
        out.psk.as_ref().map(|p| p.0.as_slice()),
        Some(&b"f-dev-1"[..])
    );
    let s = finished_session(&api, "f-dev-1").await;
    assert_eq!(s["status"], "failed", "{s:#}");
    assert_eq!(s["finish_code"], "4.06");
    assert_eq!(
        s["error"],
        "Bootstrap-Finish refused with 4.06: no server account with matching security"
    );
    // The generated PSK (identity f-dev-1) was stored, then replaced by the old one.
    let sec = get(&api, "/api/security/f-dev-1").await.unwrap();
    assert_eq!(sec["identity"], "old-id-1", "{sec:#}");

    let silent = Script {
        silent: true,
        ..Script::default()
    };
    let out = bootstrap(
        bs_coaps(&server),
        Some((b"f-id-2", &key(KEY_2))),
        "f-dev-2",
        &silent,
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("2.04"));
    let s = finished_session(&api, "f-dev-2").await;
    assert_eq!(s["status"], "timed_out", "{s:#}");
    assert_eq!(s["error"], "session timeout");
    server.shutdown().await;
}

/// Sessions per IP are capped (5.03), and Bootstrap-Requests per endpoint
/// (4.29); a device that starts over replaces its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps() {
    let dir = tempfile::tempdir().unwrap();
    let limits = BootstrapLimits {
        max_sessions_per_ip: 1,
        max_requests_per_endpoint: 2,
        session_timeout: Duration::from_secs(60),
        ..BootstrapLimits::default()
    };
    let server = start(dir.path(), limits).await;
    let api = server.client();
    import(
        &api,
        &format!("c-dev-1,c-id-1,{KEY_1}\nc-dev-2,c-id-2,{KEY_2}\n"),
    )
    .await
    .unwrap();
    let silent = Script {
        silent: true,
        ..Script::default()
    };
    let psk1 = key(KEY_1);
    let psk2 = key(KEY_2);
    let bs = bs_coaps(&server);
    let first = bootstrap(bs, Some((b"c-id-1", &psk1)), "c-dev-1", &silent).await;
    assert_eq!(first.request_code.as_deref(), Some("2.04"));
    let other = bootstrap(bs, Some((b"c-id-2", &psk2)), "c-dev-2", &silent).await;
    assert_eq!(other.request_code.as_deref(), Some("5.03"), "per-IP cap");
    let again = bootstrap(bs, Some((b"c-id-1", &psk1)), "c-dev-1", &silent).await;
    assert_eq!(
        again.request_code.as_deref(),
        Some("2.04"),
        "replaces its session"
    );
    let third = bootstrap(bs, Some((b"c-id-1", &psk1)), "c-dev-1", &silent).await;
    assert_eq!(
        third.request_code.as_deref(),
        Some("4.29"),
        "rate per endpoint"
    );
    let s = get(&api, "/api/bootstrap/sessions/c-dev-1").await.unwrap();
    let statuses: Vec<&str> = s
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["interrupted", "running"]);
    server.shutdown().await;
}

/// Import is all or nothing with line numbers; keys are never returned;
/// label configurations are checked; `ctl bootstrap` drives the same API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_labels_and_ctl() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), BootstrapLimits::default()).await;
    let api = server.client();
    let bad = format!("i-1,i-id-1,{KEY_1}\ni-2,i-id-2,xyz\ni-3,i-id-1,{KEY_2}\n");
    match import(&api, &bad).await {
        Err(CtlError::Api {
            status: 400,
            message,
        }) => {
            assert!(
                message.contains("line 2: bootstrap key must be hex"),
                "{message}"
            );
            assert!(message.contains("line 3: identity repeated"), "{message}");
            assert!(!message.contains(KEY_1), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        get(&api, "/api/bootstrap/endpoints").await.unwrap(),
        json!([])
    );
    // A clash with a stored identity is found by the store: nothing imported.
    import(&api, &format!("i-1,i-id-1,{KEY_1}\n"))
        .await
        .unwrap();
    match import(&api, &format!("i-2,i-id-2,{KEY_2}\ni-3,i-id-1,{KEY_2}\n")).await {
        Err(CtlError::Api {
            status: 409,
            message,
        }) => {
            assert!(message.starts_with("line 2:"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(get(&api, "/api/bootstrap/endpoints/i-2").await.is_err());
    let too_big = "x".repeat(2 * 1024 * 1024 + 1);
    assert!(matches!(
        import(&api, &too_big).await,
        Err(CtlError::Api { status: 413, .. })
    ));

    // ctl: set, rotate, label set, list, sessions, remove.
    let base = server.http();
    let token = server.bound.token.clone();
    let dir_path: PathBuf = dir.path().to_path_buf();
    blocking(move || {
        let ctl = |args: &[&str]| -> Result<String, CtlError> {
            let mut all = vec!["--server", base.as_str(), "--token", token.as_str()];
            all.extend_from_slice(args);
            let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
            let mut out = Vec::new();
            wasmdm_server::ctl::ctl_main(&all, Path::new("/nonexistent"), &mut out)?;
            Ok(String::from_utf8(out).unwrap())
        };
        let cfg = dir_path.join("label.json");
        std::fs::write(
            &cfg,
            r#"{"servers":[{"uri":"coaps://192.0.2.1:5684","short_id":7,"lifetime":60,"bootstrap_on_failure":true}]}"#,
        )
        .unwrap();
        ctl(&["bootstrap", "label", "set", "eu", cfg.to_str().unwrap()]).unwrap();
        let bad_cfg = dir_path.join("bad.json");
        std::fs::write(&bad_cfg, r#"{"servers":[{"uri":"http://x","short_id":0}]}"#).unwrap();
        assert!(ctl(&["bootstrap", "label", "set", "eu", bad_cfg.to_str().unwrap()]).is_err());
        ctl(&["bootstrap", "set", "i-9", "--psk-identity", "i-id-9", "--psk-key", KEY_1, "--label", "eu"])
            .unwrap();
        let shown = ctl(&["bootstrap", "show", "i-9"]).unwrap();
        assert!(shown.contains("\"short_id\": 7"), "{shown}");
        assert!(!shown.contains(KEY_1), "{shown}");
        ctl(&["bootstrap", "rotate", "i-9", "--psk-key", KEY_2]).unwrap();
        let csv = dir_path.join("fleet.csv");
        std::fs::write(&csv, format!("i-10,i-id-10,{KEY_2},eu\n")).unwrap();
        let imported = ctl(&["bootstrap", "import", csv.to_str().unwrap()]).unwrap();
        assert!(imported.contains("\"imported\": 1"), "{imported}");
        let list = ctl(&["bootstrap", "list"]).unwrap();
        assert!(list.contains("i-id-9") && list.contains("i-id-10"), "{list}");
        assert!(!list.contains(KEY_2) && !list.contains(KEY_1), "{list}");
        assert_eq!(ctl(&["bootstrap", "sessions", "i-9"]).unwrap().trim(), "[]");
        let labels = ctl(&["bootstrap", "label", "list"]).unwrap();
        assert!(labels.contains("\"eu\"") && labels.contains("192.0.2.1"), "{labels}");
        ctl(&["bootstrap", "label", "rm", "eu"]).unwrap();
        assert!(matches!(
            ctl(&["bootstrap", "label", "show", "eu"]),
            Err(CtlError::Api { status: 404, .. })
        ));
        // An account needs a credential; a bad key never shows in the error.
        let e = ctl(&["bootstrap", "set", "i-11", "--label", "eu"]).unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 400, .. }), "{e}");
        let e = ctl(&["bootstrap", "set", "i-11", "--psk-identity", "x", "--psk-key", "00aa"])
            .unwrap_err();
        assert!(e.to_string().contains("16-64 bytes") && !e.to_string().contains("00aa"), "{e}");
        ctl(&["bootstrap", "remove", "i-9"]).unwrap();
        assert!(matches!(
            ctl(&["bootstrap", "show", "i-9"]),
            Err(CtlError::Api { status: 404, .. })
        ));
    })
    .await;
    server.shutdown().await;
}

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

/// libcoap's OpenSSL client as the device: its Bootstrap-Request over DTLS
/// is answered 2.04 and opens a session (it never answers the server's
/// requests, so the session then fails); with a wrong key, nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_request_from_libcoap() {
    let Some(client) = tool("coap-client-openssl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), BootstrapLimits::default()).await;
    let api = server.client();
    // libcoap 4.3.1 takes `-k` as text: the stored key is those bytes.
    let text_key = "wasmdm-bs-key-0123";
    import(&api, &format!("lib-1,lib-id-1,{}\n", hex::encode(text_key)))
        .await
        .unwrap();
    let uri = format!("coaps://{}/bs?ep=lib-1", bs_coaps(&server));
    let run = move |k: &'static str| {
        let client = client.clone();
        let uri = uri.clone();
        blocking(move || {
            let out = std::process::Command::new(&client)
                .args([
                    "-m", "post", "-B", "3", "-v", "6", "-u", "lib-id-1", "-k", k,
                ])
                .arg(&uri)
                .env_remove("OPENSSL_CONF")
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let wrong = run("wasmdm-bs-key-9999").await;
    assert!(!wrong.contains("c:2.04"), "{wrong}");
    assert_eq!(
        get(&api, "/api/bootstrap/sessions/lib-1").await.unwrap(),
        json!([])
    );
    let out = run("wasmdm-bs-key-0123").await;
    assert!(out.contains("t:ACK c:2.04"), "{out}");
    // libcoap never answers the server's Delete: the session fails.
    let s = finished_session(&api, "lib-1").await;
    assert_eq!(s["status"], "failed", "{s:#}");
    assert_eq!(s["error"], "no answer to delete /0", "{s:#}");
    assert_eq!(s["security"], "psk", "{s:#}");
    assert_eq!(s["steps"][0]["op"], "delete", "{s:#}");
    server.shutdown().await;
}

/// A CA-issued certificate for `cn` (also its only SAN): (DER, PKCS#8 DER).
fn issue(cn: &str, ca: &rcgen::Issuer<'_, rcgen::KeyPair>) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

/// An `x509` bootstrap account: a certificate from the server's device CA
/// naming the endpoint bootstraps; the same certificate asking for another
/// endpoint gets 4.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bootstrap_account() {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bootstrap test CA");
    let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (server_cert, server_key) = issue("localhost", &issuer);
    let (device_cert, device_key) = issue("x-dev-1", &issuer);

    let dir = tempfile::tempdir().unwrap();
    let ca = ca_der.clone();
    let server = TestServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), move |cfg| {
        cfg.coaps_addr = Some("127.0.0.1:0".parse().unwrap());
        cfg.allow_nosec = false;
        cfg.dtls.certificate = Some((vec![server_cert.clone()], server_key.clone()));
        cfg.dtls.client_cas = vec![ca.clone()];
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        cfg.bootstrap = Some(BootstrapListen::new(any, any));
    })
    .await;
    let api = server.client();
    blocking({
        let api = api.clone();
        move || {
            for ep in ["x-dev-1", "x-dev-2"] {
                api.put(
                    &format!("/api/bootstrap/endpoints/{ep}"),
                    &json!({"mode": "x509"}),
                )
                .unwrap();
            }
        }
    })
    .await;
    let creds = || wasmdm_proto::dtls::ClientCredentials::Certificate {
        chain: vec![device_cert.clone()],
        private_key: device_key.clone(),
        trust: wasmdm_proto::dtls::ServerTrust::Ca(vec![ca_der.clone()]),
    };
    let out = bootstrap_with(
        bs_coaps(&server),
        Some(creds()),
        "x-dev-2",
        &Script::default(),
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("4.00"), "{out:?}");
    let out = bootstrap_with(
        bs_coaps(&server),
        Some(creds()),
        "x-dev-1",
        &Script::default(),
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("2.04"), "{out:?}");
    assert!(out.finished && out.psk.is_some(), "{out:?}");
    let s = finished_session(&api, "x-dev-1").await;
    assert_eq!(s["status"], "succeeded", "{s:#}");
    assert_eq!(s["security"], "x509");
    server.shutdown().await;
}

/// A server stopped during a session records it as interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_records_the_session_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), BootstrapLimits::default()).await;
    let api = server.client();
    import(&api, &format!("s-dev-1,s-id-1,{KEY_1}\n"))
        .await
        .unwrap();
    let silent = Script {
        silent: true,
        ..Script::default()
    };
    let out = bootstrap(
        bs_coaps(&server),
        Some((b"s-id-1", &key(KEY_1))),
        "s-dev-1",
        &silent,
    )
    .await;
    assert_eq!(out.request_code.as_deref(), Some("2.04"));
    let s = get(&api, "/api/bootstrap/sessions/s-dev-1").await.unwrap();
    assert_eq!(s[0]["status"], "running", "{s:#}");
    server.shutdown().await;
    let server = start(dir.path(), BootstrapLimits::default()).await;
    let s = get(&server.client(), "/api/bootstrap/sessions/s-dev-1")
        .await
        .unwrap();
    assert_eq!(s[0]["status"], "interrupted", "{s:#}");
    assert!(s[0]["ended_ms"].is_u64(), "{s:#}");
    server.shutdown().await;
}
