//! The API's security: admin token on every `/api` route, the token file,
//! download capabilities, the credential store's API and ctl commands,
//! HTTPS with an rcgen CA, and upload / download caps.

mod common;

use std::time::Duration;

use serde_json::{Value as Json, json};
use wasmdm_server::ctl::{Client, CtlError, ctl_main};
use wasmdm_server::http::API_ROUTES;

use common::{TestServer, blocking};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status, headers' WWW-Authenticate and body of one request.
fn send(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Option<String>, String) {
    let a = agent();
    let with = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match auth {
        Some(h) => r.header("authorization", h),
        None => r,
    };
    let withb = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match auth {
        Some(h) => r.header("authorization", h),
        None => r,
    };
    let body = body.unwrap_or(b"{}");
    let resp = match method {
        "get" => with(a.get(url)).call(),
        "delete" => with(a.delete(url)).call(),
        "put" => withb(a.put(url))
            .content_type("application/json")
            .send(body),
        "post" => withb(a.post(url))
            .content_type("application/json")
            .send(body),
        other => panic!("method {other}"),
    };
    let mut resp = resp.unwrap();
    let www = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), www, text)
}

fn concrete(path: &str) -> String {
    path.replace("{ep}", "dev-x")
        .replace("{name}", "grp-x")
        .replace("{sha}", &"ab".repeat(32))
        .replace("{id}", "c-x")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let base = server.http();
    let token = server.bound.token.clone();
    blocking(move || {
        assert!(API_ROUTES.len() >= 22, "{API_ROUTES:?}");
        let good = format!("Bearer {token}");
        for (method, path) in API_ROUTES {
            let url = format!("{base}{}", concrete(path));
            for bad in [
                None,
                Some("Bearer wrong-token-0123456789"),
                Some("Basic YWRtaW46YWRtaW4="),
                Some(token.as_str()),
                Some("Bearer"),
            ] {
                let (status, www, body) = send(method, &url, bad, None);
                assert_eq!(status, 401, "{method} {path} with {bad:?}: {body}");
                assert_eq!(www.as_deref(), Some("Bearer"), "{method} {path}");
                let v: Json = serde_json::from_str(&body).unwrap();
                assert!(v["error"].is_string(), "{body}");
                assert!(!body.contains(&token), "the token is never echoed");
            }
            let (status, _, body) = send(method, &url, Some(&good), None);
            assert_ne!(status, 401, "{method} {path} with the token: {body}");
        }
        for path in [
            "/api/devices",
            "/api/groups",
            "/api/files",
            "/api/campaigns",
            "/api/security",
        ] {
            let (status, _, body) = send("get", &format!("{base}{path}"), Some(&good), None);
            assert_eq!(status, 200, "{path}: {body}");
        }
        // Refused writes change nothing.
        let grp = format!("{base}/api/groups/grp-x");
        let (s, _, _) = send("put", &grp, None, Some(br#"{"endpoints": ["a"]}"#));
        assert_eq!(s, 401);
        assert_eq!(send("get", &grp, Some(&good), None).0, 404);
        let sec = format!("{base}/api/security/dev-x");
        let (s, _, _) = send(
            "put",
            &sec,
            Some("Bearer nope-nope-nope-nope"),
            Some(br#"{"mode":"nosec"}"#),
        );
        assert_eq!(s, 401);
        assert_eq!(send("get", &sec, Some(&good), None).0, 404);
        let up = format!("{base}/api/files?name=x");
        assert_eq!(send("post", &up, None, Some(b"content")).0, 401);
        assert_eq!(
            send("get", &format!("{base}/api/files"), Some(&good), None).2,
            "[]"
        );
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_is_private_reused_and_rotated_by_deleting_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let path = dir.path().join("admin-token");
    assert_eq!(server.bound.token_path, path);
    let first = server.bound.token.clone();
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), first);
    assert_eq!(first.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!format!("{:?}", server.bound).contains(&first));
    server.shutdown().await;

    let server = TestServer::start(dir.path()).await;
    assert_eq!(server.bound.token, first, "reused across restarts");
    let old = Client::new(&server.http(), Some(&first));
    blocking(move || old.get("/api/devices").unwrap()).await;
    server.shutdown().await;

    std::fs::remove_file(&path).unwrap();
    let server = TestServer::start(dir.path()).await;
    let second = server.bound.token.clone();
    assert_ne!(second, first, "a deleted token file means a new token");
    let old = Client::new(&server.http(), Some(&first));
    let e = blocking(move || old.get("/api/devices").unwrap_err()).await;
    assert!(matches!(e, CtlError::Api { status: 401, .. }), "{e}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_downloads_need_the_capability() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let c = server.client();
    let base = server.http();
    blocking(move || {
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let f = c.upload(&content, "pkg.wdm", None, None).unwrap();
        let sha = f["sha256"].as_str().unwrap().to_string();
        let cap = f["capability"].as_str().unwrap().to_string();
        assert_eq!(cap.len(), 32);
        assert!(cap.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(f["download_path"], format!("/fw/{sha}/{cap}"));
        // The record as listed carries it too; the same content again keeps it.
        assert_eq!(
            c.get(&format!("/api/files/{sha}")).unwrap()["capability"],
            cap
        );
        let again = c.upload(&content, "pkg-again.wdm", None, None).unwrap();
        assert_eq!(again["capability"], cap);

        let a = agent();
        let wrong = "0".repeat(32);
        for path in [
            format!("/fw/{sha}"),
            format!("/fw/{sha}/{wrong}"),
            format!("/fw/{sha}/{}", &cap[..31]),
            format!("/fw/{cap}"),
            format!("/fw/{}/{cap}", "cd".repeat(32)),
        ] {
            let r = a.get(format!("{base}{path}")).call().unwrap();
            assert_eq!(r.status().as_u16(), 404, "{path}");
        }
        let url = format!("{base}/fw/{sha}/{cap}");
        let mut r = a.get(&url).call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-length"], "5000");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(r.body_mut().read_to_vec().unwrap(), content);
        let mut r = a
            .get(&url)
            .header("Range", "bytes=1000-1999")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 1000-1999/5000");
        assert_eq!(r.body_mut().read_to_vec().unwrap(), &content[1000..2000]);
        let mut r = a
            .get(&url)
            .header("Range", "bytes=-10")
            .header("If-Range", &etag)
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.body_mut().read_to_vec().unwrap(), &content[4990..]);
        let r = a.get(&url).header("Range", "bytes=6000-").call().unwrap();
        assert_eq!(r.status().as_u16(), 416);
        let r = a.get(&url).header("If-None-Match", &etag).call().unwrap();
        assert_eq!(r.status().as_u16(), 304);
        // Deleted: the capability no longer opens anything.
        c.delete(&format!("/api/files/{sha}")).unwrap();
        assert_eq!(a.get(&url).call().unwrap().status().as_u16(), 404);
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_api_never_shows_keys() {
    let logs = common::captured_logs("debug");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let base = server.http();
    let token = server.bound.token.clone();
    let key_hex = "5ec2e75ec2e75ec2e75ec2e75ec2e75e".to_string();
    let kh = key_hex.clone();
    let bodies = blocking(move || {
        let auth = format!("Bearer {token}");
        let mut bodies = Vec::new();
        let mut call = |method: &str, path: &str, body: Option<Json>| {
            let bytes = body.map(|b| b.to_string().into_bytes());
            let (status, _, text) =
                send(method, &format!("{base}{path}"), Some(&auth), bytes.as_deref());
            bodies.push(text.clone());
            (status, text)
        };
        let psk = json!({"mode": "psk", "identity": "dev-1-id", "key": kh});
        let (s, t) = call("put", "/api/security/dev-1", Some(psk.clone()));
        assert_eq!(s, 200, "{t}");
        assert_eq!(
            serde_json::from_str::<Json>(&t).unwrap(),
            json!({"endpoint": "dev-1", "mode": "psk", "identity": "dev-1-id"})
        );
        let (s, t) = call("get", "/api/security/dev-1", None);
        assert_eq!(s, 200, "{t}");
        assert!(!t.contains("key"), "{t}");

        // The identity is bound to dev-1: another endpoint cannot take it.
        let (s, t) = call("put", "/api/security/dev-2", Some(psk.clone()));
        assert_eq!(s, 409, "{t}");
        assert_eq!(call("get", "/api/security/dev-2", None).0, 404);

        // Bad input: 400 and nothing stored.
        for bad in [
            json!({"mode": "psk", "identity": "i2", "key": "00112233"}),
            json!({"mode": "psk", "identity": "i2", "key": "not hex at all, not hex at all!!"}),
            json!({"mode": "psk", "identity": "", "key": kh}),
            json!({"mode": "psk", "identity": "i2"}),
            json!({"mode": "psk", "identity": "i2", "key": 12345}),
            json!({"mode": "psk", "identity": "i2", "key": kh, "extra": 1}),
            json!({"mode": "rpk", "public_key": "3059"}),
            json!({"mode": "rpk", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}),
            json!({"mode": "telepathy"}),
            json!({"identity": "i2"}),
            json!(["psk"]),
        ] {
            let (s, t) = call("put", "/api/security/dev-3", Some(bad.clone()));
            assert_eq!(s, 400, "{bad}: {t}");
        }
        let (s, t) = call("put", "/api/security/bad%20name", Some(json!({"mode": "nosec"})));
        assert_eq!(s, 400, "{t}");
        let (s, _, t) = send(
            "put",
            &format!("{base}/api/security/dev-3"),
            Some(&auth),
            Some(b"{not json"),
        );
        assert_eq!(s, 400, "{t}");
        assert_eq!(call("get", "/api/security/dev-3", None).0, 404);

        // RPK from PEM text and from hex DER; X.509; NoSec.
        let kp = rcgen::KeyPair::generate().unwrap();
        let (s, t) = call(
            "put",
            "/api/security/dev-3",
            Some(json!({"mode": "rpk", "public_key": kp.public_key_pem()})),
        );
        assert_eq!(s, 200, "{t}");
        let der = rcgen::PublicKeyData::subject_public_key_info(&kp);
        let (s, t) = call(
            "put",
            "/api/security/dev-4",
            Some(json!({"mode": "rpk", "public_key": hex::encode(&der)})),
        );
        assert_eq!(s, 200, "{t}");
        let v: Json = serde_json::from_str(&t).unwrap();
        assert_eq!(v["mode"], "rpk");
        assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);
        assert_eq!(call("put", "/api/security/dev-5", Some(json!({"mode": "x509"}))).0, 200);
        assert_eq!(call("put", "/api/security/dev-6", Some(json!({"mode": "nosec"}))).0, 200);
        let (s, t) = call("get", "/api/security", None);
        assert_eq!(s, 200);
        let list: Json = serde_json::from_str(&t).unwrap();
        let modes: Vec<(&str, &str)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["endpoint"].as_str().unwrap(), e["mode"].as_str().unwrap()))
            .collect();
        assert_eq!(
            modes,
            [
                ("dev-1", "psk"),
                ("dev-3", "rpk"),
                ("dev-4", "rpk"),
                ("dev-5", "x509"),
                ("dev-6", "nosec")
            ]
        );
        for e in list.as_array().unwrap() {
            assert!(
                e.as_object().unwrap().keys().all(|k| !k.contains("key")),
                "{e}"
            );
        }

        // Re-keying dev-1 under the same identity is fine; removal frees the identity.
        let (s, _) = call("put", "/api/security/dev-1", Some(psk.clone()));
        assert_eq!(s, 200);
        assert_eq!(call("delete", "/api/security/dev-1", None).0, 200);
        assert_eq!(call("delete", "/api/security/dev-1", None).0, 404);
        assert_eq!(call("put", "/api/security/dev-2", Some(psk)).0, 200);
        bodies
    })
    .await;
    for b in &bodies {
        assert!(!b.contains(&key_hex), "a response shows the key: {b}");
    }
    server.shutdown().await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        logs.contains("security: dev-1 set to psk"),
        "logs were captured"
    );
    assert!(!logs.contains(&key_hex), "the logs show the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_security_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let base = server.http();
    let data_dir = dir.path().to_path_buf();
    blocking(move || {
        let nowhere = std::path::Path::new("/nonexistent/wasmdm-server");
        // The token comes from the token file in --data-dir.
        let ctl = |args: &[&str]| -> Result<String, CtlError> {
            let mut all = vec![
                "--server",
                base.as_str(),
                "--data-dir",
                data_dir.to_str().unwrap(),
            ];
            all.extend_from_slice(args);
            let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
            let mut out = Vec::new();
            ctl_main(&all, nowhere, &mut out)?;
            Ok(String::from_utf8(out).unwrap())
        };
        let key = "00112233445566778899aabbccddeeff";
        let out = ctl(&[
            "security",
            "add",
            "ep-1",
            "--psk-identity",
            "id-1",
            "--psk-key",
            key,
        ])
        .unwrap();
        assert!(out.contains("id-1") && !out.contains(key), "{out}");
        let key_file = data_dir.join("ep2.key");
        std::fs::write(&key_file, "ffeeddccbbaa99887766554433221100\n").unwrap();
        ctl(&[
            "security",
            "add",
            "ep-2",
            "--psk-identity",
            "id-2",
            "--psk-key-file",
            key_file.to_str().unwrap(),
        ])
        .unwrap();
        let pem = data_dir.join("ep3.pem");
        std::fs::write(&pem, rcgen::KeyPair::generate().unwrap().public_key_pem()).unwrap();
        ctl(&["security", "add", "ep-3", "--rpk", pem.to_str().unwrap()]).unwrap();
        ctl(&["security", "add", "ep-4", "--nosec"]).unwrap();
        ctl(&["security", "add", "ep-5", "--x509"]).unwrap();
        // A clash is the server's 409.
        let e = ctl(&[
            "security",
            "add",
            "ep-9",
            "--psk-identity",
            "id-1",
            "--psk-key",
            key,
        ])
        .unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 409, .. }), "{e}");
        let e = ctl(&[
            "security",
            "add",
            "ep-9",
            "--psk-identity",
            "id-9",
            "--psk-key",
            "00",
        ])
        .unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 400, .. }), "{e}");
        let e = ctl(&["security", "add", "ep-9", "--x509", "--nosec"]).unwrap_err();
        assert!(matches!(e, CtlError::Usage(_)), "{e}");

        let out = ctl(&["security", "list"]).unwrap();
        let list: Json = serde_json::from_str(&out).unwrap();
        let eps: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpoint"].as_str().unwrap())
            .collect();
        assert_eq!(eps, ["ep-1", "ep-2", "ep-3", "ep-4", "ep-5"]);
        assert!(!out.contains(key) && !out.contains("ffeeddcc"), "{out}");
        let show: Json =
            serde_json::from_str(&ctl(&["security", "show", "ep-2"]).unwrap()).unwrap();
        assert_eq!(show["identity"], "id-2");
        ctl(&["security", "remove", "ep-1"]).unwrap();
        let e = ctl(&["security", "remove", "ep-1"]).unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 404, .. }), "{e}");
        assert_eq!(
            serde_json::from_str::<Json>(&ctl(&["security", "list"]).unwrap())
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            4
        );

        // Without a token anywhere: refused before any request; a wrong one: 401.
        let mut out = Vec::new();
        let args: Vec<String> = [
            "--server",
            base.as_str(),
            "--data-dir",
            "/nonexistent",
            "devices",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = ctl_main(&args, nowhere, &mut out).unwrap_err();
        assert!(matches!(e, CtlError::NoToken(_)), "{e}");
        let args: Vec<String> = [
            "--server",
            base.as_str(),
            "--token",
            "wrong-wrong-wrong",
            "devices",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = ctl_main(&args, nowhere, &mut out).unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 401, .. }), "{e}");
        // The default data directory is where ctl looks last.
        let args: Vec<String> = ["--server", base.as_str(), "devices"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if std::env::var_os("WASMDM_TOKEN").is_none()
            && std::env::var_os("WASMDM_SERVER_DATA_DIR").is_none()
        {
            ctl_main(&args, &data_dir, &mut out).unwrap();
        }
    })
    .await;
    server.shutdown().await;
}

/// A CA and a server certificate for 127.0.0.1 / localhost, as PEM files in `dir`.
fn make_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmdm test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_trusted_through_an_rcgen_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki(pki.path());
    let server = TestServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), |c| {
        c.http_tls = Some(wasmdm_server::tls::HttpTls {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    assert!(server.bound.tls);
    let base = server.http();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let token = server.bound.token.clone();
    let data_dir = dir.path().to_path_buf();
    blocking(move || {
        let ca_pem = std::fs::read(&ca).unwrap();
        let c = Client::with_ca_pem(&base, Some(&token), &ca_pem).unwrap();
        assert_eq!(c.get("/api/devices").unwrap(), json!([]));
        let f = c.upload(b"over tls", "t.bin", None, None).unwrap();
        // Downloads go over TLS too.
        let url = format!("{base}{}", f["download_path"].as_str().unwrap());
        let roots = ureq::tls::RootCerts::from(
            ureq::tls::parse_pem(&ca_pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        );
        let a: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        assert_eq!(
            a.get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_vec()
                .unwrap(),
            b"over tls"
        );
        // Without the token, still 401 over TLS.
        let anon = Client::with_ca_pem(&base, None, &ca_pem).unwrap();
        assert!(matches!(
            anon.get("/api/devices"),
            Err(CtlError::Api { status: 401, .. })
        ));
        // A client that does not trust the CA, and plain HTTP, get nowhere.
        let untrusting = Client::new(&base, Some(&token));
        assert!(matches!(
            untrusting.get("/api/devices"),
            Err(CtlError::Transport(_))
        ));
        let plain = Client::new(&base.replace("https://", "http://"), Some(&token));
        assert!(plain.get("/api/devices").is_err());
        // ctl with --ca.
        let args: Vec<String> = [
            "--server",
            base.as_str(),
            "--ca",
            ca.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "file",
            "list",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut out = Vec::new();
        ctl_main(&args, std::path::Path::new("/nonexistent"), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("t.bin"));
    })
    .await;
    server.shutdown().await;

    // A key that does not match the certificate stops the server at start.
    let other = rcgen::KeyPair::generate().unwrap();
    let bad_key = pki.path().join("other.pem");
    std::fs::write(&bad_key, other.serialize_pem()).unwrap();
    let mut config = wasmdm_server::ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
    );
    config.http_tls = Some(wasmdm_server::tls::HttpTls {
        cert: pki.path().join("cert.pem"),
        key: bad_key,
    });
    let r = wasmdm_server::serve(config, async {}).await;
    assert!(
        matches!(r, Err(wasmdm_server::ServerError::Tls(_))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_caps_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), |c| {
        c.file_limits.max_file = 10_000;
        c.file_limits.max_storage = 25_000;
    })
    .await;
    let c = server.client();
    let base = server.http();
    let token = server.bound.token.clone();
    let files_dir = dir.path().join("files");
    blocking(move || {
        let count_files = || std::fs::read_dir(&files_dir).unwrap().count();
        // Declared too large (Content-Length): 413 before the body is read.
        let e = c.upload(&[7u8; 10_001], "big", None, None).unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 413, .. }), "{e}");
        // Chunked (no Content-Length): cut off while reading.
        // The server answers as soon as the cap is passed and closes; a
        // client still sending may see the connection reset before it reads
        // the answer (a loaded machine makes that likelier). Either way
        // nothing is stored.
        let a = agent();
        let big = vec![7u8; 50_000];
        let sent = a
            .post(format!("{base}/api/files?name=chunked"))
            .header("authorization", format!("Bearer {token}"))
            .send(ureq::SendBody::from_reader(&mut big.as_slice()));
        match sent {
            Ok(mut r) => {
                assert_eq!(r.status().as_u16(), 413);
                let text = r.body_mut().read_to_string().unwrap();
                assert!(text.contains("10000"), "{text}");
            }
            Err(ureq::Error::Io(e)) => eprintln!("note: cut off before the 413 was read: {e}"),
            Err(e) => panic!("chunked upload over the cap: {e}"),
        }
        assert_eq!(c.get("/api/files").unwrap(), json!([]));
        assert_eq!(count_files(), 0, "no temp file left");

        // Total storage: two files of 10 000 fit in 25 000, a third does not.
        c.upload(&[1u8; 10_000], "one", None, None).unwrap();
        c.upload(&[2u8; 10_000], "two", None, None).unwrap();
        let e = c.upload(&[3u8; 10_000], "three", None, None).unwrap_err();
        assert!(matches!(e, CtlError::Api { status: 507, .. }), "{e}");
        let mut small = [4u8; 6_000].as_slice();
        let r = a
            .post(format!("{base}/api/files?name=chunked"))
            .header("authorization", format!("Bearer {token}"))
            .send(ureq::SendBody::from_reader(&mut small))
            .unwrap();
        assert_eq!(r.status().as_u16(), 507);
        assert_eq!(c.get("/api/files").unwrap().as_array().unwrap().len(), 2);
        assert_eq!(count_files(), 2);
        // Room again after a deletion.
        let sha = c.get("/api/files").unwrap()[0]["sha256"]
            .as_str()
            .unwrap()
            .to_string();
        c.delete(&format!("/api/files/{sha}")).unwrap();
        c.upload(&[3u8; 10_000], "three", None, None).unwrap();
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_beyond_the_cap_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), |c| {
        c.file_limits.max_downloads = 1;
    })
    .await;
    let c = server.client();
    let base = server.http();
    blocking(move || {
        // Large enough that an unread response keeps its slot (socket buffers fill).
        let content = vec![9u8; 16 * 1024 * 1024];
        let f = c.upload(&content, "big", None, None).unwrap();
        let url = format!("{base}{}", f["download_path"].as_str().unwrap());
        let a = agent();
        let held = a.get(&url).call().unwrap();
        assert_eq!(held.status().as_u16(), 200);
        let r = a.get(&url).call().unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        // The first one, read to the end, frees its slot.
        let mut held = held;
        assert_eq!(
            held.body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_vec()
                .unwrap()
                .len(),
            content.len()
        );
        drop(held);
        let mut ok = None;
        for _ in 0..50 {
            let r = a.get(&url).header("Range", "bytes=0-0").call().unwrap();
            if r.status().as_u16() == 206 {
                ok = Some(());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ok.is_some(), "the slot was freed");
    })
    .await;
    server.shutdown().await;
}

/// `?require=package` (the console's upload form) reads the manifest before
/// anything is kept: other content is refused with 400 and stored nowhere;
/// a package is stored as any upload is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_must_be_packages_are_read_before_they_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let c = server.client();
    let base = server.http();
    let token = server.bound.token.clone();
    let files_dir = dir.path().join("files");
    blocking(move || {
        let pkg_dir = tempfile::tempdir().unwrap();
        std::fs::write(pkg_dir.path().join("app.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(
            pkg_dir.path().join("manifest.toml"),
            "manifest-version = 1\n[package]\nname = \"app\"\nversion = \"1.0.0\"\n\
             [[component]]\nid = \"app\"\nfile = \"app.wasm\"\nworld = \"wasi:cli/command\"\n",
        )
        .unwrap();
        let mut package = Vec::new();
        wasmdm_package::pack(pkg_dir.path(), &mut package, None, &mut |_| {}).unwrap();
        let send = |body: &[u8], require: &str| {
            agent()
                .post(format!("{base}/api/files?name=f&require={require}"))
                .header("authorization", format!("Bearer {token}"))
                .send(body)
                .unwrap()
        };
        let mut r = send(b"just some text", "package");
        assert_eq!(r.status().as_u16(), 400);
        let text = r.body_mut().read_to_string().unwrap();
        assert!(text.contains("not a wasmdm package"), "{text}");
        let r = send(&package, "something-else");
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(c.get("/api/files").unwrap(), json!([]));
        assert_eq!(std::fs::read_dir(&files_dir).unwrap().count(), 0);
        let r = send(&package, "package");
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(c.get("/api/files").unwrap().as_array().unwrap().len(), 1);
    })
    .await;
    server.shutdown().await;
}

/// A handler that ignores its body (a cancel with `{}`) leaves the
/// connection usable. The body comes after a pause, as it may from a busy
/// client: the server used to answer before it arrived and close the
/// connection, so the client's next request on it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_a_body_the_handler_ignores_reuse_the_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let addr = server.http().trim_start_matches("http://").to_string();
    let token = server.bound.token.clone();
    blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let answer = |s: &mut std::net::TcpStream| {
            let mut buf = vec![0u8; 65536];
            let n = s.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        write!(
            s,
            "POST /api/campaigns/nosuch/cancel HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(b"{}").unwrap();
        assert!(answer(&mut s).starts_with("HTTP/1.1 404"));
        write!(
            s,
            "GET /api/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let second = answer(&mut s);
        assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    })
    .await;
    server.shutdown().await;
}
