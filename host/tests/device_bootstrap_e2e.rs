//! The provisioning story end to end, over DTLS on loopback: a wasmdm
//! device that leaves the factory with only a bootstrap account (PSK)
//! bootstraps from `wasmdm server`'s bootstrap service, gets a fresh
//! operational PSK, registers with the server and takes an install and an
//! upgrade by campaign.

mod device_support;

use device_support::{Net, wait_for};
use serde_json::json;
use wasmdm::device::config::DeviceConfig;
use wasmdm_proto::objects::SecurityMode;

const BOOTSTRAP_KEY: &str = "b0075742a9b0075742a9b0075742a9b0";

#[test]
fn a_bootstrap_only_device_bootstraps_registers_and_is_upgraded_over_dtls() {
    let mut net = Net::start(|c| {
        let any = "127.0.0.1:0".parse().unwrap();
        c.bootstrap = Some(wasmdm_server::bootstrap::BootstrapListen::new(any, any));
    });
    let (_, bs_coaps) = net.bound.bootstrap.expect("bootstrap listens");
    let ep = "e2e-bs-1";
    // The operator's side: the device's bootstrap credential, and which
    // server its endpoints get (by the default label).
    net.api
        .put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &json!({"identity": format!("bs-{ep}"), "key": BOOTSTRAP_KEY, "labels": []}),
        )
        .unwrap();
    net.api
        .put(
            "/api/bootstrap/labels/default",
            &json!({"servers": [{
                "uri": net.coaps_uri(), "short_id": 1, "security": "psk", "lifetime": 60,
            }]}),
        )
        .unwrap();

    // The factory configuration: the bootstrap account only.
    let config = net.psk_bootstrap_only(ep, bs_coaps, &format!("bs-{ep}"), BOOTSTRAP_KEY);
    let data_dir = net.data_dir(ep);
    net.device(config);
    net.wait_online(&[ep]);
    let stored = device_support::stored_accounts(&data_dir);
    let server_account = stored["security"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["bootstrap"] == false)
        .expect("a provisioned server account");
    assert_eq!(server_account["uri"], net.coaps_uri());
    assert_eq!(server_account["mode"], 0);
    // The bootstrap key is not what the device registers with.
    assert_ne!(server_account["secret"], BOOTSTRAP_KEY);

    // The server recorded the session.
    wait_for("the bootstrap session is recorded", || {
        let sessions = net.api.get("/api/bootstrap/sessions").ok()?;
        sessions.to_string().contains(ep).then_some(())
    });

    // First campaign: install, pulled over coaps:// with the provisioned
    // credentials; then an upgrade pushed by Block1.
    let v1 = net.upload_example("counter", "1.0.0");
    let report = net.campaign(json!({
        "devices": [ep], "op": "install", "package": "counter", "file": v1["sha256"],
        "delivery": "pull", "protocol": "coap", "activate": true, "timeout_secs": 60,
    }));
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_eq!(report["jobs"][0]["status"], "done", "{report:#}");
    let v2 = net.upload_example("counter", "2.0.0");
    let report = net.campaign(json!({
        "devices": [ep], "op": "upgrade", "package": "counter", "file": v2["sha256"],
        "delivery": "push", "timeout_secs": 60,
    }));
    assert_eq!(report["status"], "finished", "{report:#}");
    assert_eq!(report["jobs"][0]["status"], "done", "{report:#}");
    assert_eq!(
        report["jobs"][0]["targets"][0]["new_version"], "2.0.0",
        "{report:#}"
    );
}

/// Certificate mode with the bootstrap server: the device's certificate
/// (CN = endpoint, from the server's device CA) authenticates it to the
/// bootstrap port, whose certificate (SAN 127.0.0.1) the device checks
/// against the same CA; it is provisioned a PSK account and registers.
#[test]
fn a_device_bootstraps_in_certificate_mode() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bootstrap test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_der = ca_cert.der().to_vec();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let issue = |cn: &str, sans: &[&str]| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join(format!("{cn}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{cn}.key")), key.serialize_pem()).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    };
    let (server_cert, server_key) = issue("bs-server", &["127.0.0.1"]);
    let ep = "e2e-bs-x509";
    issue(ep, &[]);

    let mut net = Net::start(|c| {
        let any = "127.0.0.1:0".parse().unwrap();
        c.bootstrap = Some(wasmdm_server::bootstrap::BootstrapListen::new(any, any));
        c.dtls.certificate = Some((vec![server_cert], server_key));
        c.dtls.client_cas = vec![ca_der];
    });
    let (_, bs_coaps) = net.bound.bootstrap.expect("bootstrap listens");
    net.api
        .put(
            &format!("/api/bootstrap/endpoints/{ep}"),
            &json!({"mode": "x509"}),
        )
        .unwrap();
    net.api
        .put(
            "/api/bootstrap/labels/default",
            &json!({"servers": [{"uri": net.coaps_uri(), "short_id": 1, "security": "psk"}]}),
        )
        .unwrap();
    let config = DeviceConfig {
        server: String::new(),
        bootstrap_server: Some(format!("coaps://{bs_coaps}")),
        bootstrap_security: Some(SecurityMode::Certificate),
        bootstrap_certificate: Some(dir.path().join(format!("{ep}.pem"))),
        bootstrap_private_key: Some(dir.path().join(format!("{ep}.key"))),
        bootstrap_server_ca: Some(dir.path().join("ca.pem")),
        bootstrap_retry: 1,
        ..net.config(ep, String::new())
    };
    net.device(config);
    net.wait_online(&[ep]);
    let session = wait_for("the bootstrap session is recorded", || {
        net.bootstrap_sessions(ep).last().cloned()
    });
    assert_eq!(session["status"], "succeeded", "{session:#}");
    assert_eq!(session["security"], "x509", "{session:#}");
    // Bootstrap-Request Trigger: the account kept in accounts.json (the
    // factory one, with its CA trust) bootstraps again.
    net.trigger_bootstrap(ep);
    wait_for("a second certificate-mode bootstrap", || {
        let s = net.api.get(&format!("/api/bootstrap/sessions/{ep}")).ok()?;
        let s = s.as_array()?;
        (s.len() == 2 && s[1]["status"] == "succeeded").then_some(())
    });
    net.wait_online(&[ep]);
}
