//! HTTPS pieces for pull tests: a throwaway PKI made with rcgen, and
//! tests/peers/https_server.py (Python's ssl + http.server) as the
//! independent TLS file server.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A CA and two server certificates it signed: one for 127.0.0.1/localhost,
/// one for another name. PEM files in `dir`.
pub struct Pki {
    /// The CA certificate (what a device trusts).
    pub ca: PathBuf,
    /// Chain + key of the leaf for 127.0.0.1 and localhost.
    pub good: (PathBuf, PathBuf),
    /// Chain + key of a leaf for `other.example` only.
    pub wrong_name: (PathBuf, PathBuf),
}

impl Pki {
    /// A fresh PKI whose CA is named `ca_name`.
    pub fn generate(dir: &Path, ca_name: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let ca = dir.join(format!("{ca_name}.pem"));
        std::fs::write(&ca, ca_cert.pem()).unwrap();

        let leaf = |file: &str, names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, &names[0]);
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            let chain = dir.join(format!("{file}.pem"));
            let key_file = dir.join(format!("{file}.key"));
            std::fs::write(&chain, cert.pem() + &ca_cert.pem()).unwrap();
            std::fs::write(&key_file, key.serialize_pem()).unwrap();
            (chain, key_file)
        };
        Pki {
            good: leaf(&format!("{ca_name}-server"), &["127.0.0.1", "localhost"]),
            wrong_name: leaf(&format!("{ca_name}-other"), &["other.example"]),
            ca,
        }
    }
}

/// tests/peers/https_server.py serving the files of a directory.
pub struct HttpsFiles {
    child: Child,
    pub port: u16,
    /// Where the files are: write packages here.
    pub dir: PathBuf,
}

impl HttpsFiles {
    /// Serves `dir` with the certificate chain and key `identity`; the
    /// server's log goes to `dir`.log.
    pub fn serve(dir: &Path, identity: &(PathBuf, PathBuf)) -> HttpsFiles {
        std::fs::create_dir_all(dir).unwrap();
        let script = crate::device_support::repo().join("tests/peers/https_server.py");
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&identity.0)
            .arg(&identity.1)
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("python3 (scripts/test.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("https_server.py did not start: {line:?}"));
        HttpsFiles {
            child,
            port,
            dir: dir.into(),
        }
    }

    /// `https://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// `https://<host>:<port>/<name>`, for names other than the IP.
    pub fn url_as(&self, host: &str, name: &str) -> String {
        format!("https://{host}:{}/{name}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
