//! DTLS benchmarks (figures in BENCHMARKS.md, section "DTLS", made by
//! `scripts/bench-dtls.sh`). Not tests: nothing here asserts on time.
//!
//! ```text
//! cargo bench -q -p wasmdm-proto --bench dtls -- handshake N [--libcoap DIR]
//! cargo bench -q -p wasmdm-proto --bench dtls -- pki DIR
//! cargo bench -q -p wasmdm-proto --bench dtls -- register --server ADDR --api HOST:PORT \
//!     --token-file FILE --server-pid PID [--devices 1000] [--window 50] [--prefix NAME] [--plain]
//!     [--same-ip]
//! ```
//!
//! - `handshake`: full DTLS 1.2 handshakes, PSK (TLS_PSK_WITH_AES_128_CCM_8)
//!   and ECDHE-ECDSA (TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, P-256, both sides
//!   authenticated by certificates from one rcgen CA), each a fresh
//!   [`DtlsClient`] against one long-lived [`DtlsServer`]: in memory (one
//!   thread drives both, no sockets: the CPU both sides spend) and over UDP
//!   loopback (server on its own thread, client on this one, a new client
//!   socket per handshake). With `--libcoap DIR` (what `pki` wrote, plus
//!   `force_ciphers.so`) the same loop also times libcoap's
//!   `coap-client-openssl` GETs against `coap-server-openssl`: a NoSec run,
//!   a PSK run and an ECDHE-ECDSA run per round, so load hits all alike.
//! - `pki DIR`: writes the benchmark CA, server and client certificates and
//!   keys as PEM (for libcoap and `wasmdm server --dtls-cert`).
//! - `register`: simulated devices (one [`DtlsClient`] and one UDP socket
//!   each, all in this process on one thread) provision a PSK each through
//!   the server's API, then send a CON Register (`POST /rd?ep=..&lt=300&
//!   lwm2m=1.1&b=U`, the payload of tests/bench/lwm2m_scale.py) over DTLS-PSK,
//!   at most `--window` at once; prints registrations/s, latencies and the
//!   server's RSS before and after. `--plain` registers over plain CoAP
//!   instead (server with `--allow-nosec`), for the difference. Devices bind
//!   127.1.x.y, one address each, unless `--same-ip` (all on 127.0.0.1, where
//!   the server's cap of 8 half-open handshakes per source IP applies).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use wasmdm_proto::dtls::{
    ClientCredentials, ClientEvent, DtlsClient, DtlsServer, PskLookup, ServerCredentials,
    ServerLimits, ServerTrust,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PSK_IDENTITY: &str = "bench-dev";
const PSK_KEY: &[u8] = b"0123456789abcdef";
/// What the in-memory server believes its own address is.
const MEM_SERVER: &str = "10.0.0.1:5684";

// ---------------------------------------------------------------- statistics

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

fn table_head() {
    println!("| measurement | n | p50 | p99 | min | max |");
    println!("|---|---|---|---|---|---|");
}

/// One Markdown row: name, n, p50, p99, min, max. Returns (p50, min).
fn row(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let (p50, min) = (
        pct(samples, 50.0),
        samples.first().copied().unwrap_or_default(),
    );
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        samples.len(),
        fmt(p50),
        fmt(pct(samples, 99.0)),
        fmt(min),
        fmt(samples.last().copied().unwrap_or_default()),
    );
    (p50, min)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------- credentials

struct Pki {
    ca: Vec<u8>,
    ca_pem: String,
    server_chain: Vec<Vec<u8>>,
    server_key: Vec<u8>,
    server_pem: (String, String),
    client_chain: Vec<Vec<u8>>,
    client_key: Vec<u8>,
    client_pem: (String, String),
}

fn issued(
    names: &[&str],
    cn: &str,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> Result<(Vec<u8>, Vec<u8>, String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, ca)?;
    Ok((
        cert.der().to_vec(),
        key.serialize_der(),
        cert.pem(),
        key.serialize_pem(),
    ))
}

/// A P-256 CA, a server certificate for 127.0.0.1 / localhost and a device
/// certificate (CN = `bench-dev`), all ECDSA P-256 from rcgen.
fn pki() -> Result<Pki> {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wasmdm bench CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (server, server_key, server_pem, server_key_pem) = issued(
        &["127.0.0.1", "10.0.0.1", "localhost"],
        "localhost",
        &issuer,
    )?;
    let (client, client_key, client_pem, client_key_pem) =
        issued(&[PSK_IDENTITY], PSK_IDENTITY, &issuer)?;
    Ok(Pki {
        ca: ca_cert.der().to_vec(),
        ca_pem: ca_cert.pem(),
        server_chain: vec![server],
        server_key,
        server_pem: (server_pem, server_key_pem),
        client_chain: vec![client],
        client_key,
        client_pem: (client_pem, client_key_pem),
    })
}

fn write_pki(p: &Pki, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in [
        ("ca.pem", &p.ca_pem),
        ("server.pem", &p.server_pem.0),
        ("server.key", &p.server_pem.1),
        ("client.pem", &p.client_pem.0),
        ("client.key", &p.client_pem.1),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// A server holding both a PSK table and a certificate, as `wasmdm server
/// --dtls-cert` does: the client's offer picks the suite.
fn server_credentials(p: &Pki) -> ServerCredentials {
    let psk: PskLookup =
        Arc::new(|id: &[u8]| (id == PSK_IDENTITY.as_bytes()).then(|| PSK_KEY.to_vec()));
    ServerCredentials {
        psk: Some(psk),
        certificate: Some((p.server_chain.clone(), p.server_key.clone())),
        client_cas: vec![p.ca.clone()],
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Psk,
    Ecdsa,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Psk => "PSK, TLS_PSK_WITH_AES_128_CCM_8",
            Kind::Ecdsa => "ECDHE-ECDSA P-256 (mutual), TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
        }
    }

    /// The IANA number the handshake must end on.
    fn suite(self) -> u16 {
        match self {
            Kind::Psk => 0xC0A8,
            Kind::Ecdsa => 0xC0AE,
        }
    }

    fn credentials(self, p: &Pki) -> ClientCredentials {
        match self {
            Kind::Psk => ClientCredentials::Psk {
                identity: PSK_IDENTITY.as_bytes().to_vec(),
                key: PSK_KEY.to_vec(),
            },
            Kind::Ecdsa => ClientCredentials::Certificate {
                chain: p.client_chain.clone(),
                private_key: p.client_key.clone(),
                trust: ServerTrust::Ca(vec![p.ca.clone()]),
            },
        }
    }
}

// ---------------------------------------------------------------- handshakes

/// A client for `server`, its configuration built outside the timed part.
fn new_client(creds: &ClientCredentials, server: SocketAddr) -> Result<DtlsClient> {
    let mut c = DtlsClient::new(creds.clone())?;
    c.add_peer(server, &server.ip().to_string())?;
    Ok(c)
}

fn check_failed(c: &mut DtlsClient) -> Result<()> {
    while let Some(e) = c.poll_event() {
        if let ClientEvent::Failed { reason, .. } = e {
            return Err(format!("handshake failed: {reason}").into());
        }
    }
    Ok(())
}

/// One handshake, both sides in this thread: from the first `send` (which
/// starts it) until the client holds the server's Finished.
fn mem_handshake(
    s: &mut DtlsServer,
    creds: &ClientCredentials,
    from: SocketAddr,
    kind: Kind,
) -> Result<Duration> {
    let server: SocketAddr = MEM_SERVER.parse()?;
    let mut c = new_client(creds, server)?;
    let t0 = Instant::now();
    c.send(t0, server, b"x")?;
    while !c.is_established(server) {
        let mut moved = false;
        while let Some(d) = c.poll_transmit() {
            moved = true;
            s.handle_datagram(Instant::now(), from, &d.bytes);
        }
        while let Some(d) = s.poll_transmit() {
            moved = true;
            c.handle_datagram(Instant::now(), server, &d.bytes);
        }
        if !moved {
            check_failed(&mut c)?;
            return Err("in-memory handshake stalled".into());
        }
    }
    let took = t0.elapsed();
    if c.cipher_suite(server) != Some(kind.suite()) {
        return Err(format!("negotiated {:04X?}", c.cipher_suite(server)).into());
    }
    // The queued plaintext and the server's events: not timed.
    while let Some(d) = c.poll_transmit() {
        s.handle_datagram(Instant::now(), from, &d.bytes);
    }
    while s.poll_event().is_some() {}
    while s.poll_transmit().is_some() {}
    Ok(took)
}

/// A DTLS server on a UDP loopback socket, on its own thread, driven the
/// way `host/server/src/transport.rs` drives it (receive, feed, send what
/// it queued, timers when due).
struct UdpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    fn start(creds: &ServerCredentials) -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let addr = sock.local_addr()?;
        let mut s = DtlsServer::new(creds, ServerLimits::default())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(Ordering::Relaxed) {
                let now = Instant::now();
                let wait = s
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(Duration::from_millis(50))
                    .clamp(Duration::from_micros(100), Duration::from_millis(50));
                let _ = sock.set_read_timeout(Some(wait));
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    s.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                let now = Instant::now();
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
                while let Some(d) = s.poll_transmit() {
                    let _ = sock.send_to(&d.bytes, d.to);
                }
                while s.poll_event().is_some() {}
            }
        });
        Ok(UdpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One handshake over UDP loopback, from the first `send` until the client
/// holds the server's Finished, from a fresh socket on `local` (an address
/// of its own: the server keeps every session, and refuses for 30 s a
/// ClientHello from the address of a live one, which a reused ephemeral
/// port would be).
fn udp_handshake(
    server: SocketAddr,
    local: std::net::IpAddr,
    creds: &ClientCredentials,
    kind: Kind,
) -> Result<Duration> {
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
    let mut c = new_client(creds, server)?;
    let mut buf = vec![0u8; 65_536];
    let t0 = Instant::now();
    c.send(t0, server, b"x")?;
    loop {
        while let Some(d) = c.poll_transmit() {
            sock.send_to(&d.bytes, d.to)?;
        }
        if c.is_established(server) {
            break;
        }
        check_failed(&mut c)?;
        if t0.elapsed() > Duration::from_secs(20) {
            return Err("UDP handshake took over 20 s".into());
        }
        let now = Instant::now();
        let wait = c
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_micros(100));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                c.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            Err(_) => c.handle_timeout(Instant::now()),
        }
    }
    let took = t0.elapsed();
    if c.cipher_suite(server) != Some(kind.suite()) {
        return Err(format!("negotiated {:04X?}", c.cipher_suite(server)).into());
    }
    Ok(took)
}

// ---------------------------------------------------------------- libcoap

/// The libcoap peers: `coap-server-openssl` with a PSK and a certificate,
/// restricted (through force_ciphers.so) to the suite under test.
struct Libcoap {
    dir: PathBuf,
    psk_port: u16,
    cert_port: u16,
    servers: Vec<Child>,
}

fn free_udp_port() -> Result<u16> {
    // Two consecutive ports: libcoap serves coap on P and coaps on P+1.
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let p = a.local_addr()?.port();
        if p < 65_000 && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err("no two free consecutive UDP ports".into())
}

fn libcoap_env(cmd: &mut Command, dir: &Path, ciphers: &str) {
    cmd.env("LD_PRELOAD", dir.join("force_ciphers.so"))
        .env("WASMDM_FORCE_CIPHERS", ciphers)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
}

const LIBCOAP_PSK: &str = "PSK-AES128-CCM8:@SECLEVEL=0";
const LIBCOAP_ECDSA: &str = "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0";

impl Libcoap {
    fn start(dir: &Path) -> Result<Self> {
        let key = std::str::from_utf8(PSK_KEY)?;
        let psk_port = free_udp_port()?;
        let mut psk = Command::new("coap-server-openssl");
        psk.args(["-A", "127.0.0.1", "-p", &psk_port.to_string(), "-k", key]);
        libcoap_env(&mut psk, dir, LIBCOAP_PSK);
        let psk = psk.spawn()?;
        let cert_port = free_udp_port()?;
        let mut cert = Command::new("coap-server-openssl");
        cert.args(["-A", "127.0.0.1", "-p", &cert_port.to_string()]);
        cert.arg("-c").arg(dir.join("server.pem"));
        cert.arg("-j").arg(dir.join("server.key"));
        cert.arg("-C").arg(dir.join("ca.pem"));
        libcoap_env(&mut cert, dir, LIBCOAP_ECDSA);
        let cert = cert.spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Libcoap {
            dir: dir.to_path_buf(),
            psk_port,
            cert_port,
            servers: vec![psk, cert],
        })
    }

    /// Wall time of one `coap-client-openssl -m get` process.
    fn run(&self, kind: Option<Kind>) -> Result<Duration> {
        let key = std::str::from_utf8(PSK_KEY)?;
        let mut cmd = Command::new("coap-client-openssl");
        cmd.args(["-m", "get", "-B", "10"]);
        match kind {
            None => {
                cmd.arg(format!("coap://127.0.0.1:{}/", self.psk_port));
                libcoap_env(&mut cmd, &self.dir, LIBCOAP_PSK);
            }
            Some(Kind::Psk) => {
                cmd.args(["-u", PSK_IDENTITY, "-k", key]);
                cmd.arg(format!("coaps://127.0.0.1:{}/", self.psk_port + 1));
                libcoap_env(&mut cmd, &self.dir, LIBCOAP_PSK);
            }
            Some(Kind::Ecdsa) => {
                cmd.arg("-c").arg(self.dir.join("client.pem"));
                cmd.arg("-j").arg(self.dir.join("client.key"));
                cmd.arg("-C").arg(self.dir.join("ca.pem"));
                cmd.arg(format!("coaps://127.0.0.1:{}/", self.cert_port + 1));
                libcoap_env(&mut cmd, &self.dir, LIBCOAP_ECDSA);
            }
        }
        let t0 = Instant::now();
        let status = cmd.status()?;
        let took = t0.elapsed();
        if !status.success() {
            return Err(format!("coap-client-openssl failed: {status}").into());
        }
        Ok(took)
    }

    /// The suite libcoap negotiated, from `-v 9` (checked once, untimed).
    fn negotiated(&self, kind: Kind) -> Result<String> {
        let key = std::str::from_utf8(PSK_KEY)?;
        let mut cmd = Command::new("coap-client-openssl");
        cmd.args(["-m", "get", "-v", "9"]);
        let ciphers = match kind {
            Kind::Psk => {
                cmd.args(["-u", PSK_IDENTITY, "-k", key]);
                cmd.arg(format!("coaps://127.0.0.1:{}/", self.psk_port + 1));
                LIBCOAP_PSK
            }
            Kind::Ecdsa => {
                cmd.arg("-c").arg(self.dir.join("client.pem"));
                cmd.arg("-j").arg(self.dir.join("client.key"));
                cmd.arg("-C").arg(self.dir.join("ca.pem"));
                cmd.arg(format!("coaps://127.0.0.1:{}/", self.cert_port + 1));
                LIBCOAP_ECDSA
            }
        };
        libcoap_env(&mut cmd, &self.dir, ciphers);
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok(text
            .lines()
            .find_map(|l| l.split("Using cipher: ").nth(1))
            .unwrap_or("?")
            .trim()
            .to_string())
    }
}

impl Drop for Libcoap {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn handshake(args: &[String]) -> Result<()> {
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let libcoap_dir = args
        .iter()
        .position(|a| a == "--libcoap")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    if let Some(dir) = &libcoap_dir
        && !dir.join("force_ciphers.so").is_file()
    {
        // `cargo bench` runs this in the package's directory: paths must be absolute.
        return Err(format!(
            "{}/force_ciphers.so missing (give an absolute --libcoap DIR)",
            dir.display()
        )
        .into());
    }
    let p = pki()?;
    let creds = server_credentials(&p);
    let mut mem_server = DtlsServer::new(&creds, ServerLimits::default())?;
    let udp_server = UdpServer::start(&creds)?;
    let libcoap = match &libcoap_dir {
        Some(dir) => {
            write_pki(&p, dir)?;
            Some(Libcoap::start(dir)?)
        }
        None => None,
    };
    let kinds = [Kind::Psk, Kind::Ecdsa];
    let client_creds: Vec<ClientCredentials> = kinds.iter().map(|k| k.credentials(&p)).collect();
    // Warm-up (first-use allocations, page faults), not counted.
    for (j, (k, c)) in kinds.iter().zip(&client_creds).enumerate() {
        // A new address each: the server keeps every session, and a
        // ClientHello from the address of a live one is refused.
        let from = SocketAddr::from(([10, 9, 9, 9], 1 + j as u16));
        mem_handshake(&mut mem_server, c, from, *k)?;
        udp_handshake(udp_server.addr, [127, 2, 255, 1 + j as u8].into(), c, *k)?;
        if let Some(l) = &libcoap {
            l.run(Some(*k))?;
        }
    }
    let load_start = loadavg();
    let mut mem: [Vec<Duration>; 2] = Default::default();
    let mut udp: [Vec<Duration>; 2] = Default::default();
    let mut lib: [Vec<Duration>; 3] = Default::default();
    for i in 0..n {
        for (j, (k, c)) in kinds.iter().zip(&client_creds).enumerate() {
            let from: SocketAddr = format!("10.1.{}.{}:{}", i / 250, i % 250 + 1, 40_000 + j)
                .parse()
                .map_err(|e| format!("{e}"))?;
            mem[j].push(mem_handshake(&mut mem_server, c, from, *k)?);
            let local = [127, 2 + j as u8, (i / 250) as u8, (i % 250 + 1) as u8].into();
            udp[j].push(udp_handshake(udp_server.addr, local, c, *k)?);
        }
        if let Some(l) = &libcoap {
            lib[0].push(l.run(None)?);
            lib[1].push(l.run(Some(Kind::Psk))?);
            lib[2].push(l.run(Some(Kind::Ecdsa))?);
        }
    }
    println!(
        "\n{n} rounds, interleaved (each round: every row once); load average (1 min) {load_start} at the start, {} at the end, on {} cores.\n",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    table_head();
    let mut ours = [(Duration::ZERO, Duration::ZERO); 2];
    for (j, k) in kinds.iter().enumerate() {
        row(
            &format!(
                "wasmdm, in memory (sans-IO, both sides on one thread): {}",
                k.name()
            ),
            &mut mem[j],
        );
        ours[j] = row(
            &format!(
                "wasmdm, UDP loopback (server thread, client thread): {}",
                k.name()
            ),
            &mut udp[j],
        );
    }
    if let Some(l) = &libcoap {
        let suites = [l.negotiated(Kind::Psk)?, l.negotiated(Kind::Ecdsa)?];
        let nosec = row(
            "libcoap `coap-client-openssl -m get coap://` process, NoSec (process start + 1 GET)",
            &mut lib[0],
        );
        let mut diffs = Vec::new();
        for (j, k) in kinds.iter().enumerate() {
            let (p50, min) = row(
                &format!(
                    "libcoap `coap-client-openssl -m get coaps://` process, {} (OpenSSL: {})",
                    k.name(),
                    suites[j]
                ),
                &mut lib[j + 1],
            );
            diffs.push((*k, p50.saturating_sub(nosec.0), min.saturating_sub(nosec.1)));
        }
        println!();
        println!(
            "| handshake | wasmdm UDP p50 (min) | libcoap DTLS − NoSec process, p50 (min) | wasmdm / libcoap (p50) |"
        );
        println!("|---|---|---|---|");
        for (j, (k, d50, dmin)) in diffs.into_iter().enumerate() {
            println!(
                "| {} | {} ({}) | {} ({}) | {:.2}x |",
                k.name(),
                fmt(ours[j].0),
                fmt(ours[j].1),
                fmt(d50),
                fmt(dmin),
                ours[j].0.as_secs_f64() / d50.as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- register

struct RegisterArgs {
    server: SocketAddr,
    api: String,
    token: String,
    server_pid: Option<u32>,
    devices: usize,
    window: usize,
    prefix: String,
    plain: bool,
    same_ip: bool,
}

fn parse_register(args: &[String]) -> Result<RegisterArgs> {
    let get = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let token_file = get("--token-file").ok_or("--token-file FILE")?;
    Ok(RegisterArgs {
        server: get("--server").ok_or("--server ADDR")?.parse()?,
        api: get("--api").ok_or("--api HOST:PORT")?,
        token: std::fs::read_to_string(token_file)?.trim().to_string(),
        server_pid: get("--server-pid").map(|p| p.parse()).transpose()?,
        devices: get("--devices")
            .map(|p| p.parse())
            .transpose()?
            .unwrap_or(1000),
        window: get("--window")
            .map(|p| p.parse())
            .transpose()?
            .unwrap_or(50),
        prefix: get("--prefix").unwrap_or_else(|| "dtls-sim-".into()),
        plain: args.iter().any(|a| a == "--plain"),
        same_ip: args.iter().any(|a| a == "--same-ip"),
    })
}

/// One HTTP/1.1 request to the API (no keep-alive); returns the status.
fn http(api: &str, token: &str, method: &str, path: &str, body: &str) -> Result<u16> {
    let mut s = TcpStream::connect(api)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status")?;
    Ok(status)
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn device_key(i: usize) -> Vec<u8> {
    let mut key = PSK_KEY.to_vec();
    key[..4].copy_from_slice(&(i as u32).to_be_bytes());
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn register_packet(name: &str, mid: u16, token: &[u8]) -> Result<Vec<u8>> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.add_option(CoapOption::ContentFormat, vec![40]);
    for q in [
        format!("ep={name}"),
        "lt=300".into(),
        "lwm2m=1.1".into(),
        "b=U".into(),
    ] {
        p.add_option(CoapOption::UriQuery, q.into_bytes());
    }
    p.payload = b"</>;rt=\"oma.lwm2m\",</1/0>,</3/0>,</9/0>".to_vec();
    Ok(p.to_bytes()?)
}

/// (time to Connected, time to 2.01 Created) of one simulated device. The
/// session and the socket are handed back so they stay open.
struct Registered {
    handshake: Option<Duration>,
    register: Duration,
    _keep: (tokio::net::UdpSocket, Option<DtlsClient>),
}

async fn register_one(
    server: SocketAddr,
    local: std::net::IpAddr,
    name: String,
    key: Vec<u8>,
    plain: bool,
    mid: u16,
) -> Result<Registered> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    let mut dtls = if plain {
        None
    } else {
        let mut c = DtlsClient::new(ClientCredentials::Psk {
            identity: name.clone().into_bytes(),
            key,
        })?;
        c.add_peer(server, &server.ip().to_string())?;
        Some(c)
    };
    let token = mid.to_be_bytes();
    let request = register_packet(&name, mid, &token)?;
    let mut buf = vec![0u8; 4096];
    let t0 = Instant::now();
    let mut handshake = None;
    let mut attempts = 0u32;
    let mut next_send = t0;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let now = Instant::now();
        // CoAP retransmission of the Register (2 s doubling, RFC 7252
        // §4.2), once the DTLS session (if any) is up; the handshake has
        // its own flight timers inside DtlsClient.
        if now >= next_send && (plain || attempts == 0 || handshake.is_some()) {
            match &mut dtls {
                Some(c) => c.send(now, server, &request)?,
                None => {
                    sock.send_to(&request, server).await?;
                }
            }
            attempts += 1;
            next_send = now + Duration::from_secs(2u64 << attempts.min(4));
        }
        if let Some(c) = &mut dtls {
            while let Some(d) = c.poll_transmit() {
                sock.send_to(&d.bytes, d.to).await?;
            }
        }
        if now > deadline {
            return Err(format!("{name}: no 2.01 within 60 s").into());
        }
        let mut wake = next_send.min(deadline);
        if let Some(t) = dtls.as_ref().and_then(|c| c.poll_timeout()) {
            wake = wake.min(t);
        }
        let got = tokio::time::timeout_at(wake.into(), sock.recv_from(&mut buf)).await;
        let now = Instant::now();
        let mut responses = Vec::new();
        match (got, &mut dtls) {
            (Ok(Ok((n, from))), Some(c)) => {
                c.handle_datagram(now, from, &buf[..n]);
            }
            (Ok(Ok((n, _))), None) => responses.push(buf[..n].to_vec()),
            (Ok(Err(e)), _) => return Err(e.into()),
            (Err(_), Some(c)) => c.handle_timeout(now),
            (Err(_), None) => {}
        }
        if let Some(c) = &mut dtls {
            while let Some(e) = c.poll_event() {
                match e {
                    ClientEvent::Connected { .. } => handshake = Some(t0.elapsed()),
                    ClientEvent::Data { bytes, .. } => responses.push(bytes),
                    ClientEvent::Failed { reason, .. } => {
                        return Err(format!("{name}: handshake failed: {reason}").into());
                    }
                    ClientEvent::Closed { .. } => {}
                }
            }
        }
        for r in responses {
            let Ok(p) = Packet::from_bytes(&r) else {
                continue;
            };
            if p.get_token() != token {
                continue;
            }
            if p.header.code == MessageClass::Response(ResponseType::Created) {
                let register = t0.elapsed();
                if let Some(c) = &mut dtls {
                    while let Some(d) = c.poll_transmit() {
                        sock.send_to(&d.bytes, d.to).await?;
                    }
                }
                return Ok(Registered {
                    handshake,
                    register,
                    _keep: (sock, dtls),
                });
            }
            return Err(format!("{name}: Register answered {}", p.header.code).into());
        }
    }
}

fn register(args: &[String]) -> Result<()> {
    let a = parse_register(args)?;
    let mode = if a.plain {
        "NoSec (plain CoAP)"
    } else {
        "DTLS-PSK, TLS_PSK_WITH_AES_128_CCM_8"
    };
    if !a.plain {
        let t = Instant::now();
        for i in 0..a.devices {
            let name = format!("{}{i:05}", a.prefix);
            let body = format!(
                r#"{{"mode":"psk","identity":"{name}","key":"{}"}}"#,
                hex(&device_key(i))
            );
            let status = http(
                &a.api,
                &a.token,
                "PUT",
                &format!("/api/security/{name}"),
                &body,
            )?;
            if !(200..300).contains(&status) {
                return Err(format!("PUT /api/security/{name}: HTTP {status}").into());
            }
        }
        println!(
            "provisioned {} PSKs through PUT /api/security/{{ep}} in {:.2} s",
            a.devices,
            t.elapsed().as_secs_f64()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = a.server_pid.and_then(rss_kib);
    let load_start = loadavg();
    let (results, took) = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(a.window));
        let mut tasks = Vec::new();
        let t0 = Instant::now();
        for i in 0..a.devices {
            let sem = sem.clone();
            let name = format!("{}{i:05}", a.prefix);
            let (server, plain) = (a.server, a.plain);
            // Each device its own loopback address (127.1.x.y), as devices
            // in the field have theirs: the server caps half-open
            // handshakes per source IP (8 by default).
            let local = if a.same_ip {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                std::net::IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8])
            };
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.ok();
                register_one(server, local, name, device_key(i), plain, i as u16)
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        (results, t0.elapsed())
    });
    // Let the server settle (its store commit, allocator) before reading RSS.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = a.server_pid.and_then(rss_kib);
    let ok: Vec<&Registered> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "\n{} simulated devices, {mode}, at most {} Registers in flight, one thread, {}; load average (1 min) {load_start} at the start, {} at the end.\n",
        a.devices,
        a.window,
        if a.same_ip {
            "all from 127.0.0.1"
        } else {
            "each from its own address 127.1.x.y"
        },
        loadavg()
    );
    println!(
        "- Register: {} ok, {} failed in {:.2} s = **{:.0} registrations/s**{}",
        ok.len(),
        failed.len(),
        took.as_secs_f64(),
        ok.len() as f64 / took.as_secs_f64(),
        failed
            .first()
            .map(|e| format!(" (first failure: {e})"))
            .unwrap_or_default()
    );
    if let (Some(b), Some(af)) = (rss_before, rss_after) {
        println!(
            "- server VmRSS: {b} KiB before, {af} KiB after ({} sessions kept open): **{:.1} KiB per {}**",
            ok.len(),
            (af as f64 - b as f64) / ok.len().max(1) as f64,
            if a.plain { "registration" } else { "session" }
        );
        println!(
            "RSS_PER_DEVICE_KIB {:.1}",
            (af as f64 - b as f64) / ok.len().max(1) as f64
        );
    }
    println!("REG_PER_S {:.0}", ok.len() as f64 / took.as_secs_f64());
    println!();
    table_head();
    let mut hs: Vec<Duration> = ok.iter().filter_map(|r| r.handshake).collect();
    let mut reg: Vec<Duration> = ok.iter().map(|r| r.register).collect();
    if !hs.is_empty() {
        row(
            "DTLS handshake (first ClientHello -> client has the server's Finished)",
            &mut hs,
        );
    }
    row(
        if a.plain {
            "Register (CON sent -> 2.01 Created)"
        } else {
            "Register incl. handshake (first ClientHello -> 2.01 Created)"
        },
        &mut reg,
    );
    drop(results);
    Ok(())
}

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; drop it and anything before our mode.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("handshake") => handshake(&args[1..]),
        Some("pki") => {
            let dir = args.get(1).ok_or("pki DIR")?;
            write_pki(&pki()?, Path::new(dir))
        }
        Some("register") => register(&args[1..]),
        _ => {
            eprintln!(
                "usage: dtls handshake N [--libcoap DIR] | pki DIR | register --server ADDR --api HOST:PORT --token-file FILE [--server-pid PID] [--devices N] [--window W] [--prefix P] [--plain] [--same-ip]"
            );
            Ok(())
        }
    }
}
