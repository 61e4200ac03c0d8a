//! Malformed input at the server's coaps port, in process: ~20,000 datagrams
//! of pure random bytes, random DTLS-looking records, and mutations (bit
//! flips, overwritten bytes, truncation, extension, splices, length and
//! epoch edits) of the records a real PSK client and the server exchanged
//! in a handshake and after it (ClientHellos with and without cookie, the
//! ServerHello flight, ClientKeyExchange / ChangeCipherSpec / Finished,
//! encrypted CoAP), plus exact replays of them. They come from sixteen
//! sockets on other loopback addresses (127.0.0.2..=127.0.0.17), and about
//! one in eight from the real client's own address (what a spoofer on its
//! path could send into its session).
//!
//! Meanwhile that client (our sans-IO `DtlsClient`, PSK, over a real UDP
//! socket) keeps its session: after every batch of junk it sends a
//! registration Update and must get 2.04. Afterwards a second client
//! completes a fresh handshake and registers, and the API lists exactly
//! the two real endpoints, the first still at its first location.
//!
//! The PRNG is a fixed-seed xorshift64* (`DTLS_FUZZ_SEED=N` runs another
//! sequence; the mutations depend on each run's session keys too, so a run
//! is repeatable in kind rather than byte for byte). Batches are small
//! enough that the kernel's socket buffer drops none of the junk before the
//! server reads it. A failure prints the datagrams sent from the client's
//! address since the last good Update; `DTLS_FUZZ_CHECK_EACH=1` checks the
//! session after each of those, which pins down the one that broke it.
//!
//! The last test is the reduced form of what this fuzzing found first: one
//! plaintext ChangeCipherSpec record at the session's current epoch, from
//! the peer's address, silently ended a DTLS session (rtc-dtls moved the
//! read epoch on it). host/proto/tests/dtls_seam.rs has the same for both
//! sides of the sans-IO seam.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType};
use serde_json::json;
use wasmdm_proto::dtls::{ClientCredentials, ClientEvent, DtlsClient};

use common::{TestServer, blocking};

const DATAGRAMS: usize = 20_000;
const BATCH: usize = 100;
const JUNK_SOURCES: u8 = 16;

/// xorshift64*: small, fixed-seed, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// One mutation of `orig` (never the empty datagram unless asked for).
fn mutate(rng: &mut Rng, orig: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = orig.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = d.len().max(1);
        match rng.below(11) {
            // Flip one bit.
            0 => {
                let i = rng.below(len);
                if let Some(b) = d.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // Overwrite a byte with an interesting value.
            1 => {
                let i = rng.below(len);
                let v = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff][rng.below(6)];
                if let Some(b) = d.get_mut(i) {
                    *b = v;
                }
            }
            // Overwrite a run with random bytes.
            2 => {
                let i = rng.below(len);
                let n = 1 + rng.below(16);
                for j in i..(i + n).min(d.len()) {
                    d[j] = rng.byte();
                }
            }
            // Truncate.
            3 => d.truncate(rng.below(len)),
            // Append random bytes.
            4 => {
                let n = 1 + rng.below(64);
                d.extend(rng.bytes(n));
            }
            // Splice in a piece of another captured datagram.
            5 => {
                if let Some(other) = corpus.get(rng.below(corpus.len())) {
                    let from = rng.below(other.len().max(1));
                    let n = rng.below(other.len() - from.min(other.len()) + 1);
                    let at = rng.below(d.len() + 1);
                    let piece: Vec<u8> = other[from..(from + n).min(other.len())].to_vec();
                    d.splice(at..at, piece);
                }
            }
            // Record length field (bytes 11..13) to something else.
            6 if d.len() >= 13 => {
                let v: u16 = match rng.below(4) {
                    0 => 0,
                    1 => 0xffff,
                    2 => (d.len() as u16).wrapping_add(rng.below(8) as u16),
                    _ => rng.next() as u16,
                };
                d[11..13].copy_from_slice(&v.to_be_bytes());
            }
            // Handshake length (bytes 14..17), fragment offset (19..22) or
            // fragment length (22..25) of a handshake record.
            7 if d.len() >= 25 => {
                let at = [14, 19, 22][rng.below(3)];
                let v = [[0, 0, 0], [0xff, 0xff, 0xff], [0, 0, 1], [0, 0x40, 0]][rng.below(4)];
                d[at..at + 3].copy_from_slice(&v);
            }
            // Epoch (bytes 3..5) and sequence number (5..11).
            8 if d.len() >= 11 => {
                let epoch: u16 = [0, 1, 2, 0xffff][rng.below(4)];
                d[3..5].copy_from_slice(&epoch.to_be_bytes());
                if rng.below(2) == 0 {
                    let seq = rng.bytes(6);
                    d[5..11].copy_from_slice(&seq);
                }
            }
            // Duplicate the datagram (two records back to back).
            9 => {
                let copy = d.clone();
                d.extend(copy);
            }
            // Content type (byte 0) to another record type, or garbage.
            _ => {
                if let Some(b) = d.first_mut() {
                    *b = [20, 21, 22, 23, 24, 25, 0, 0xff][rng.below(8)];
                }
            }
        }
    }
    d
}

/// A record header (DTLS 1.2) with a random type, epoch and body.
fn random_record(rng: &mut Rng) -> Vec<u8> {
    let body_len = rng.below(300);
    let mut d = vec![[20, 21, 22, 23][rng.below(4)], 0xfe, 0xfd];
    d.extend([0, [0, 1][rng.below(2)]]);
    d.extend(rng.bytes(6));
    d.extend((body_len as u16).to_be_bytes());
    if d[0] == 22 && rng.below(2) == 0 {
        // A handshake header: type, length, message_seq, offset, frag length.
        let ty = [1, 2, 3, 11, 12, 13, 14, 15, 16, 20][rng.below(10)];
        d.push(ty);
        let l = (body_len.saturating_sub(12) as u32).to_be_bytes();
        d.extend(&l[1..]);
        d.extend(rng.bytes(2));
        d.extend([0, 0, 0]);
        d.extend(&l[1..]);
        d.extend(rng.bytes(body_len.saturating_sub(12)));
    } else {
        d.extend(rng.bytes(body_len));
    }
    d
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer
/// (Linux `/proc/net/snmp`, `Udp: ... RcvbufErrors`).
fn udp_receive_buffer_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// A real PSK client: `DtlsClient` over a UDP socket, CoAP by hand.
struct Legit {
    socket: UdpSocket,
    dtls: DtlsClient,
    server: SocketAddr,
    /// Every datagram it sent and received (handshake flights, records).
    captured: Vec<Vec<u8>>,
    mid: u16,
    token: u32,
}

impl Legit {
    fn new(server: SocketAddr, identity: &str, key: &[u8]) -> Legit {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut dtls = DtlsClient::new(ClientCredentials::Psk {
            identity: identity.as_bytes().to_vec(),
            key: key.to_vec(),
        })
        .unwrap();
        dtls.add_peer(server, "127.0.0.1").unwrap();
        Legit {
            socket,
            dtls,
            server,
            captured: Vec::new(),
            mid: 0x1000,
            token: 0x5000,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn flush(&mut self) {
        while let Some(d) = self.dtls.poll_transmit() {
            self.captured.push(d.bytes.clone());
            let _ = self.socket.send_to(&d.bytes, d.to);
        }
    }

    fn request(&mut self, method: RequestType, path: &[&str], query: &[String]) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        self.mid = self.mid.wrapping_add(1);
        self.token = self.token.wrapping_add(1);
        p.header.message_id = self.mid;
        p.set_token(self.token.to_be_bytes().to_vec());
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p
    }

    /// Sends `req` (CON; resent every second with the same MID) and
    /// returns its response, or what went wrong.
    fn exchange(&mut self, req: &Packet) -> Result<Packet, String> {
        let bytes = req.to_bytes().unwrap();
        let token = req.get_token().to_vec();
        let start = Instant::now();
        let mut next_send = start;
        let mut failures = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let now = Instant::now();
            if now - start > Duration::from_secs(10) {
                return Err(format!(
                    "no answer in 10 s (handshake failures: {failures:?}, established: {})",
                    self.dtls.is_established(self.server)
                ));
            }
            if now >= next_send {
                self.dtls.send(now, self.server, &bytes).unwrap();
                next_send = now + Duration::from_secs(1);
            }
            if self.dtls.poll_timeout().is_some_and(|t| t <= now) {
                self.dtls.handle_timeout(now);
            }
            self.flush();
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                self.captured.push(buf[..n].to_vec());
                self.dtls.handle_datagram(Instant::now(), from, &buf[..n]);
                self.flush();
            }
            while let Some(event) = self.dtls.poll_event() {
                match event {
                    ClientEvent::Data { bytes, .. } => {
                        let Ok(p) = Packet::from_bytes(&bytes) else {
                            continue;
                        };
                        match (p.header.get_type(), p.header.code) {
                            // A request of the server's (a read, an observe): 4.04.
                            (MessageType::Confirmable, MessageClass::Request(_)) => {
                                let mut ack = Packet::new();
                                ack.header.set_type(MessageType::Acknowledgement);
                                ack.header.set_code("4.04");
                                ack.header.message_id = p.header.message_id;
                                ack.set_token(p.get_token().to_vec());
                                let _ = self.dtls.send(
                                    Instant::now(),
                                    self.server,
                                    &ack.to_bytes().unwrap(),
                                );
                            }
                            // An empty ACK: a separate response is to come.
                            (_, MessageClass::Empty)
                                if p.header.message_id == req.header.message_id =>
                            {
                                next_send = start + Duration::from_secs(3600);
                            }
                            (t, MessageClass::Response(_)) if p.get_token() == token => {
                                if t == MessageType::Confirmable {
                                    let mut ack = Packet::new();
                                    ack.header.set_type(MessageType::Acknowledgement);
                                    ack.header.message_id = p.header.message_id;
                                    let _ = self.dtls.send(
                                        Instant::now(),
                                        self.server,
                                        &ack.to_bytes().unwrap(),
                                    );
                                    self.flush();
                                }
                                return Ok(p);
                            }
                            _ => {}
                        }
                    }
                    ClientEvent::Failed { reason, .. } => failures.push(reason),
                    _ => {}
                }
            }
            self.flush();
        }
    }

    /// Registers `ep`; returns the location (`rd/<id>` -> `<id>`).
    fn register(&mut self, ep: &str) -> String {
        let mut req = self.request(
            RequestType::Post,
            &["rd"],
            &[
                format!("ep={ep}"),
                "lt=300".into(),
                "lwm2m=1.1".into(),
                "b=U".into(),
            ],
        );
        req.set_content_format(ContentFormat::ApplicationLinkFormat);
        req.payload = b"</1/0>,</3/0>".to_vec();
        let resp = self.exchange(&req).unwrap();
        assert_eq!(resp.header.get_code(), "2.01", "register {ep}");
        let segments: Vec<String> = resp
            .get_option(CoapOption::LocationPath)
            .map(|l| {
                l.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(segments.len(), 2, "{segments:?}");
        assert_eq!(segments[0], "rd");
        segments[1].clone()
    }

    /// A registration Update (no parameters); returns the response code.
    fn update(&mut self, location: &str) -> String {
        let req = self.request(RequestType::Post, &["rd", location], &[]);
        match self.exchange(&req) {
            Ok(p) => p.header.get_code(),
            Err(e) => e,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_at_the_coaps_port_leaves_sessions_and_registrations_alone() {
    // RUST_LOG=wasmdm_server=debug shows the server's side of a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), |cfg| {
        cfg.coaps_addr = Some("127.0.0.1:0".parse().unwrap());
        cfg.allow_nosec = false;
    })
    .await;
    let api = server.client();
    let coaps = server.bound.coaps.unwrap();
    let seed: u64 = std::env::var("DTLS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_DA7A_F00D_0001);
    blocking(move || {
        for (ep, id) in [
            ("fuzz-legit", "fuzz-legit-id"),
            ("fuzz-late", "fuzz-late-id"),
        ] {
            api.put(
                &format!("/api/security/{ep}"),
                &json!({"mode": "psk", "identity": id, "key": hex::encode([0x42; 16])}),
            )
            .unwrap();
        }
        let mut legit = Legit::new(coaps, "fuzz-legit-id", &[0x42; 16]);
        let location = legit.register("fuzz-legit");
        assert_eq!(legit.update(&location), "2.04");
        // Records of a whole handshake and of the session, both directions.
        let corpus = legit.captured.clone();
        assert!(corpus.len() >= 6, "{} datagrams captured", corpus.len());
        let hellos: Vec<Vec<u8>> = corpus
            .iter()
            .filter(|d| d.len() > 13 && d[0] == 22 && d[13] == 1)
            .cloned()
            .collect();
        assert_eq!(hellos.len(), 2, "ClientHello without and with cookie");

        let junk: Vec<UdpSocket> = (0..JUNK_SOURCES)
            .map(|i| UdpSocket::bind(format!("127.0.0.{}:0", 2 + i)).unwrap())
            .collect();
        let mut rng = Rng(seed);
        let drops_before = udp_receive_buffer_errors();
        let started = Instant::now();
        let mut kinds = [0usize; 5];
        let mut spoofed: Vec<(usize, Vec<u8>)> = Vec::new();
        let check_each = std::env::var_os("DTLS_FUZZ_CHECK_EACH").is_some();
        for n in 0..DATAGRAMS {
            let (kind, datagram) = match rng.below(10) {
                0 | 1 => (0, {
                    let len = rng.below(1400);
                    rng.bytes(len)
                }),
                2 => (1, random_record(&mut rng)),
                3..=5 => {
                    let hello = &hellos[rng.below(2)];
                    (2, mutate(&mut rng, hello, &corpus))
                }
                6..=8 => {
                    let record = &corpus[rng.below(corpus.len())];
                    (3, mutate(&mut rng, record, &corpus))
                }
                _ => (4, corpus[rng.below(corpus.len())].clone()),
            };
            kinds[kind] += 1;
            // One in eight from the real client's own address.
            if rng.below(8) == 0 {
                let _ = legit.socket.send_to(&datagram, coaps);
                spoofed.push((n, datagram));
            } else {
                let _ = junk[rng.below(junk.len())].send_to(&datagram, coaps);
            }
            if (n + 1) % BATCH == 0 || (check_each && spoofed.last().is_some_and(|(i, _)| *i == n))
            {
                // Answered only once the server read everything sent before.
                let code = legit.update(&location);
                assert_eq!(
                    code,
                    "2.04",
                    "after {} junk datagrams (seed {seed:#x}); since the last good \
                     Update, from the client's address:\n{}",
                    n + 1,
                    spoofed
                        .iter()
                        .map(|(i, d)| format!("#{i}: {}", hex::encode(d)))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                spoofed.clear();
            }
        }
        eprintln!(
            "{DATAGRAMS} datagrams (random {}, random records {}, mutated ClientHellos {}, \
             mutated records {}, replays {}) in {:?}, seed {seed:#x}; UDP datagrams the \
             kernel dropped meanwhile (all sockets): {:?}",
            kinds[0],
            kinds[1],
            kinds[2],
            kinds[3],
            kinds[4],
            started.elapsed(),
            udp_receive_buffer_errors()
                .zip(drops_before)
                .map(|(after, before)| after - before)
        );

        // A new client still gets a handshake and a registration.
        let mut late = Legit::new(coaps, "fuzz-late-id", &[0x42; 16]);
        late.register("fuzz-late");
        assert_eq!(legit.update(&location), "2.04");

        let devices = api.get("/api/devices").unwrap();
        let mut eps: Vec<&str> = devices
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["endpoint"].as_str().unwrap())
            .collect();
        eps.sort();
        assert_eq!(eps, ["fuzz-late", "fuzz-legit"], "{devices:#}");
        let d = api.get("/api/devices/fuzz-legit").unwrap();
        assert_eq!(d["online"], true);
        assert_eq!(d["registration"]["location"], location.as_str(), "{d:#}");
        assert_eq!(
            d["registration"]["peer"],
            legit.addr().to_string().as_str(),
            "{d:#}"
        );
    })
    .await;
    server.shutdown().await;
}

/// A plaintext ChangeCipherSpec record at epoch 1 with an unused sequence
/// number: 14 bytes anyone who knows (or spoofs) a peer's address can send.
/// `rtc-dtls` passes CCS records through "decryption" unchecked and moved
/// the association's read epoch to 2 on it, after which every genuine
/// (epoch 1) record was dropped as an old-epoch one.
const SPOOFED_CCS: [u8; 14] = [20, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0x10, 0, 0, 1, 1];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_change_cipher_spec_does_not_end_a_server_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), |cfg| {
        cfg.coaps_addr = Some("127.0.0.1:0".parse().unwrap());
        cfg.allow_nosec = false;
    })
    .await;
    let api = server.client();
    let coaps = server.bound.coaps.unwrap();
    blocking(move || {
        api.put(
            "/api/security/ccs-dev",
            &json!({"mode": "psk", "identity": "ccs-dev-id", "key": hex::encode([0x42; 16])}),
        )
        .unwrap();
        let mut legit = Legit::new(coaps, "ccs-dev-id", &[0x42; 16]);
        let location = legit.register("ccs-dev");
        assert_eq!(legit.update(&location), "2.04");
        // From the device's own address, as an on-path or spoofing sender would.
        legit.socket.send_to(&SPOOFED_CCS, coaps).unwrap();
        assert_eq!(
            legit.update(&location),
            "2.04",
            "one unauthenticated ChangeCipherSpec record ended the session"
        );
    })
    .await;
    server.shutdown().await;
}
