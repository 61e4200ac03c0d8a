//! wasmdm devices and the wasmdm server over DTLS (LwM2M 1.1 Transport
//! §5.2), in one process on loopback: PSK and X.509 devices register and take
//! a group install and upgrade; devices whose credentials do not match the
//! endpoint name, or that speak plain CoAP to a server that does not allow
//! it, never register; a NoSec device ignores requests from anyone but its
//! server.

mod device_support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use device_support::{Net, free_udp_port};
use serde_json::{Value as Json, json};
use wasmdm::device::config::{DeviceConfig, Secret};
use wasmdm_proto::objects::SecurityMode;

fn assert_done(report: &Json, eps: &[&str], version: &str) {
    assert_eq!(report["status"], "finished", "{report:#}");
    for ep in eps {
        let job = report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["endpoint"] == *ep)
            .unwrap_or_else(|| panic!("no job for {ep}: {report:#}"));
        assert_eq!(job["status"], "done", "{ep}: {job:#}");
        assert_eq!(job["targets"][0]["new_version"], version, "{ep}: {job:#}");
    }
}

/// Registration, a CoAP pull over coaps:// from the server and a Block1
/// push, all through DTLS-PSK sessions; a plain-CoAP device is refused.
#[test]
fn psk_devices_take_a_group_install_and_upgrade_over_dtls() {
    let mut net = Net::start(|_| {});
    let eps = ["psk-1", "psk-2"];
    for (i, ep) in eps.iter().enumerate() {
        let key = format!("{:032x}", 0x5eed_0000_u128 + i as u128);
        let config = net.psk_device(ep, &format!("id-{ep}"), &key);
        net.device(config);
    }
    // The same software over plain CoAP: NoSec is not allowed here.
    let plain = net.config("plain-1", format!("coap://{}", net.bound.coap));
    net.device(plain);
    net.wait_online(&eps);
    net.api
        .put("/api/groups/psk", &json!({ "endpoints": eps }))
        .unwrap();

    // Install, pulled over coaps:// from the server (the device reuses its
    // DTLS session with it), then upgrade by Block1 push.
    let v1 = net.upload_example("counter", "1.0.0");
    let report = net.campaign(json!({
        "group": "psk", "op": "install", "package": "counter", "file": v1["sha256"],
        "delivery": "pull", "protocol": "coap", "activate": true, "timeout_secs": 60,
    }));
    assert_done(&report, &eps, "1.0.0");
    let v2 = net.upload_example("counter", "2.0.0");
    let report = net.campaign(json!({
        "group": "psk", "op": "upgrade", "package": "counter", "file": v2["sha256"],
        "delivery": "push", "timeout_secs": 60,
    }));
    assert_done(&report, &eps, "2.0.0");
    for ep in eps {
        let v = net.read(ep, "/9/0");
        assert_eq!(v["/9/0/1"], "2.0.0", "{v:#}");
        assert_eq!(v["/9/0/12"], true, "still active: {v:#}");
    }
    // /0 is never readable by the server (Core 1.1 §E.1).
    let r = net
        .api
        .dm(
            "psk-1",
            &json!({"op": "read", "path": "/0/0/5", "accept": null}),
        )
        .unwrap();
    assert_eq!(r["success"], false, "{r:#}");
    assert_eq!(r["code"], "4.01", "{r:#}");
    // The NoSec device never got in.
    assert_eq!(net.online(), vec!["psk-1", "psk-2"]);
}

/// A device with a valid PSK of its own registering under another name,
/// and a device with a wrong key: neither is registered.
#[test]
fn psk_credentials_bind_the_endpoint_name() {
    let mut net = Net::start(|_| {});
    let good = net.psk_device("owner", "id-owner", "00112233445566778899aabbccddeeff");
    net.device(good.clone());
    net.wait_online(&["owner"]);
    // An impostor with owner's identity and key, under another name (it
    // completes the handshake, then gets 4.03 on Register).
    let impostor = DeviceConfig {
        data_dir: net.data_dir("impostor"),
        endpoint: "impostor".into(),
        ..good.clone()
    };
    net.device(impostor);
    // A device that knows owner's identity but not its key.
    let wrong_key = DeviceConfig {
        data_dir: net.data_dir("owner-2"),
        endpoint: "owner".into(),
        psk_key: Some(Secret::new("ffeeddccbbaa99887766554433221100")),
        ..good
    };
    net.device(wrong_key);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(net.online(), vec!["owner"]);
    // Neither took owner's registration over: it answers as before.
    let v = net.read("owner", "/3/0/2");
    assert!(v["/3/0/2"].is_string(), "{v:#}");
}

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wasmdm test CA");
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
        }
    }

    /// Issues a certificate; returns (cert.pem, key.pem) paths.
    fn issue(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(|c| c.unwrap().to_vec())
        .collect()
}

fn pem_key(path: &Path) -> Vec<u8> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    match PrivateKeyDer::from_pem_file(path).unwrap() {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        other => panic!("not PKCS#8: {other:?}"),
    }
}

/// Certificate mode: the device's certificate (CN = endpoint name, from
/// the operator's CA) and the server's (SAN 127.0.0.1, same CA); a device
/// whose certificate names someone else is refused.
#[test]
fn x509_devices_register_under_their_certificate_name() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue("lwm2m-server", &["127.0.0.1"]);
    let mut net = Net::start(|c| {
        c.dtls.certificate = Some((pem_certs(&server_cert), pem_key(&server_key)));
        c.dtls.client_cas = pem_certs(&pki.ca());
    });
    let cert_device = |net: &Net, ep: &str, cert_name: &str| {
        let (cert, key) = pki.issue(cert_name, &[]);
        DeviceConfig {
            security: Some(SecurityMode::Certificate),
            certificate: Some(cert),
            private_key: Some(key),
            server_ca: Some(pki.ca()),
            data_dir: net.data_dir(&format!("{ep}-{cert_name}")),
            ..net.config(ep, net.coaps_uri())
        }
    };
    let good = cert_device(&net, "cert-1", "cert-1");
    net.device(good);
    let liar = cert_device(&net, "cert-2", "somebody-else");
    net.device(liar);
    net.wait_online(&["cert-1"]);
    let v = net.read("cert-1", "/3/0");
    assert!(v["/3/0/0"].is_string(), "{v:#}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(net.online(), vec!["cert-1"]);
}

fn coap_request(method: RequestType, path: &str, payload: &[u8], mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    p.header.set_type(MessageType::Confirmable);
    p.header.message_id = mid;
    p.set_token(vec![0xbe, 0xef]);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    if !payload.is_empty() {
        p.set_content_format(coap_lite::ContentFormat::TextPlain);
        p.payload = payload.to_vec();
    }
    p.to_bytes().unwrap()
}

/// NoSec (allowed on this server): a valid Write of a Package URI and an
/// Execute, sent to the device from another address, get no answer and
/// change nothing; the server's own requests still work.
#[test]
fn a_nosec_device_obeys_only_its_server() {
    let mut net = Net::start(|c| c.allow_nosec = true);
    let port = free_udp_port();
    let config = DeviceConfig {
        bind: format!("127.0.0.1:{port}"),
        ..net.config("nosec-1", format!("coap://{}", net.bound.coap))
    };
    net.device(config);
    net.wait_online(&["nosec-1"]);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let device: SocketAddr = ([127, 0, 0, 1], port).into();
    for (i, (method, path, payload)) in [
        (
            RequestType::Put,
            "/9/0/3",
            &b"http://127.0.0.1:1/evil.wdm"[..],
        ),
        (RequestType::Post, "/9/0/4", &b""[..]),
        (RequestType::Get, "/3/0/0", &b""[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let request = coap_request(method, path, payload, 0x7000 + i as u16);
        stranger.send_to(&request, device).unwrap();
        let mut buf = [0u8; 1500];
        assert!(
            stranger.recv_from(&mut buf).is_err(),
            "the device answered {method:?} {path} from a stranger"
        );
    }
    let v = net.read("nosec-1", "/9/0");
    // Update State INITIAL, Update Result 0: the Write and Install did nothing.
    assert_eq!(v["/9/0/7"], 0, "still INITIAL: {v:#}");
    assert_eq!(v["/9/0/9"], 0, "{v:#}");
}
