//! A scripted LwM2M bootstrap client for tests and the bootstrap benchmark:
//! sends `POST /bs?ep=NAME` over DTLS (our sans-IO client) or plain CoAP,
//! answers the server's Delete / Discover / Write / Finish as told, and
//! reports what it was sent (the /0 account's URI, PSK identity and key).
//! Independent of the server's session code: it parses requests with
//! coap-lite and TLV with the proto codec's entry splitter.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use wasmdm_proto::codec::tlv;
use wasmdm_proto::dtls::{ClientCredentials, ClientEvent, DtlsClient};

/// How the device behaves.
#[derive(Debug, Clone)]
pub struct Script {
    /// Code answered to Bootstrap-Finish (0x44 = 2.04, 0x86 = 4.06).
    pub finish_code: u8,
    /// Diagnostic payload with a refused Finish.
    pub finish_payload: Vec<u8>,
    /// Answer nothing after the Bootstrap-Request's 2.04: return as soon as
    /// it came (the device is gone; the server's requests go unanswered).
    pub silent: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            finish_code: 0x44,
            finish_payload: Vec::new(),
            silent: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The code the Bootstrap-Request got (`2.04`), if any.
    pub request_code: Option<String>,
    /// Server requests as `METHOD /path` in arrival order (duplicates dropped).
    pub requests: Vec<String>,
    /// /0/x/0 written for a non-bootstrap account.
    pub server_uri: Option<String>,
    /// /0/x/3 and /0/x/5.
    pub psk: Option<(Vec<u8>, Vec<u8>)>,
    /// /0/x/2.
    pub security_mode: Option<u8>,
    /// True once Finish was answered.
    pub finished: bool,
    /// Set when the DTLS handshake failed.
    pub handshake_failed: Option<String>,
}

fn code_text(c: MessageClass) -> String {
    let b = u8::from(c);
    format!("{}.{:02}", b >> 5, b & 0x1F)
}

struct Link {
    socket: UdpSocket,
    server: SocketAddr,
    dtls: Option<DtlsClient>,
}

impl Link {
    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.dtls {
            Some(d) => {
                let _ = d.send(Instant::now(), self.server, bytes);
                self.flush().await;
            }
            None => {
                let _ = self.socket.send_to(bytes, self.server).await;
            }
        }
    }

    async fn flush(&mut self) {
        if let Some(d) = &mut self.dtls {
            while let Some(t) = d.poll_transmit() {
                let _ = self.socket.send_to(&t.bytes, t.to).await;
            }
        }
    }
}

/// Bootstraps as `endpoint` from `server` (DTLS with `psk`, plain without).
pub async fn bootstrap(
    server: SocketAddr,
    psk: Option<(&[u8], &[u8])>,
    endpoint: &str,
    script: &Script,
) -> Outcome {
    let credentials = psk.map(|(identity, key)| ClientCredentials::Psk {
        identity: identity.to_vec(),
        key: key.to_vec(),
    });
    bootstrap_with(server, credentials, endpoint, script).await
}

/// Bootstraps as `endpoint` from `server` (DTLS with `credentials`, the
/// server named `localhost`; plain CoAP without).
pub async fn bootstrap_with(
    server: SocketAddr,
    credentials: Option<ClientCredentials>,
    endpoint: &str,
    script: &Script,
) -> Outcome {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let dtls = credentials.map(|credentials| {
        let mut c = DtlsClient::new(credentials).expect("client credentials");
        c.add_peer(server, "localhost").expect("peer");
        c
    });
    let mut link = Link {
        socket,
        server,
        dtls,
    };
    let mut out = Outcome::default();
    let mut request = Packet::new();
    request.header.set_type(MessageType::Confirmable);
    request.header.code = MessageClass::Request(RequestType::Post);
    request.header.message_id = 0x1234;
    request.set_token(vec![0xB5, 0x01]);
    request.add_option(CoapOption::UriPath, b"bs".to_vec());
    request.add_option(CoapOption::UriQuery, format!("ep={endpoint}").into_bytes());
    let request_bytes = request.to_bytes().expect("encode");
    link.send(&request_bytes).await;
    let start = Instant::now();
    let mut resend = start + Duration::from_secs(2);
    let mut seen_mids = std::collections::HashMap::<u16, Vec<u8>>::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= start + script.timeout || out.finished || out.handshake_failed.is_some() {
            return out;
        }
        if out
            .request_code
            .as_deref()
            .is_some_and(|c| c != "2.04" || script.silent)
        {
            return out;
        }
        let mut wake = (start + script.timeout).min(resend);
        if let Some(t) = link.dtls.as_ref().and_then(|d| d.poll_timeout()) {
            wake = wake.min(t);
        }
        let mut plaintexts = Vec::new();
        tokio::select! {
            r = link.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                match &mut link.dtls {
                    Some(d) => { d.handle_datagram(Instant::now(), from, &buf[..n]); }
                    None => plaintexts.push(buf[..n].to_vec()),
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some(d) = &mut link.dtls { d.handle_timeout(Instant::now()); }
                if Instant::now() >= resend && out.request_code.is_none() {
                    link.send(&request_bytes).await;
                    resend = Instant::now() + Duration::from_secs(2);
                } else if Instant::now() >= resend {
                    resend = Instant::now() + Duration::from_secs(3600);
                }
            }
        }
        if let Some(d) = &mut link.dtls {
            while let Some(ev) = d.poll_event() {
                match ev {
                    ClientEvent::Data { bytes, .. } => plaintexts.push(bytes),
                    ClientEvent::Failed { reason, .. } => out.handshake_failed = Some(reason),
                    _ => {}
                }
            }
        }
        link.flush().await;
        for bytes in plaintexts {
            let Ok(p) = Packet::from_bytes(&bytes) else {
                continue;
            };
            match p.header.code {
                MessageClass::Response(_) if p.get_token() == request.get_token() => {
                    out.request_code
                        .get_or_insert_with(|| code_text(p.header.code));
                }
                MessageClass::Request(method) => {
                    if script.silent {
                        continue;
                    }
                    let mid = p.header.message_id;
                    let reply = match seen_mids.get(&mid) {
                        Some(r) => r.clone(),
                        None => {
                            let r = answer(&p, method, script, &mut out);
                            seen_mids.insert(mid, r.clone());
                            r
                        }
                    };
                    link.send(&reply).await;
                }
                _ => {}
            }
        }
    }
}

/// The piggy-backed answer to one server request; records what it carried.
fn answer(p: &Packet, method: RequestType, script: &Script, out: &mut Outcome) -> Vec<u8> {
    let path: Vec<String> = p
        .get_option(CoapOption::UriPath)
        .map(|v| {
            v.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let method_name = format!("{method:?}").to_uppercase();
    out.requests
        .push(format!("{method_name} /{}", path.join("/")));
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = p.header.message_id;
    r.set_token(p.get_token().to_vec());
    let code = match (method, path.as_slice()) {
        (RequestType::Delete, _) => 0x42,
        (RequestType::Get, [o]) if o == "0" => {
            r.add_option(CoapOption::ContentFormat, vec![40]);
            // The factory bootstrap account is /0/0.
            r.payload = br#"lwm2m="1.1",</0/0>"#.to_vec();
            0x45
        }
        (RequestType::Put, [o, _]) if o == "0" => {
            record_security(&p.payload, out);
            0x44
        }
        (RequestType::Put, _) => 0x44,
        (RequestType::Post, [bs]) if bs == "bs" => {
            out.finished = true;
            r.payload = script.finish_payload.clone();
            script.finish_code
        }
        _ => 0x84,
    };
    r.header.code = MessageClass::from(code);
    r.to_bytes().expect("encode")
}

fn record_security(payload: &[u8], out: &mut Outcome) {
    let Ok(entries) = tlv::parse_entries(payload) else {
        return;
    };
    let mut identity = None;
    let mut key = None;
    for e in entries {
        match e.id {
            0 => out.server_uri = Some(String::from_utf8_lossy(e.value).into_owned()),
            2 => out.security_mode = e.value.first().copied(),
            3 => identity = Some(e.value.to_vec()),
            5 => key = Some(e.value.to_vec()),
            _ => {}
        }
    }
    if let (Some(i), Some(k)) = (identity, key) {
        out.psk = Some((i, k));
    }
}

/// Registers as `endpoint` on the LwM2M server at `server` over DTLS with
/// `psk`; returns the code of the answer (`2.01`).
pub async fn register(server: SocketAddr, psk: (&[u8], &[u8]), endpoint: &str) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let mut dtls = DtlsClient::new(ClientCredentials::Psk {
        identity: psk.0.to_vec(),
        key: psk.1.to_vec(),
    })
    .ok()?;
    dtls.add_peer(server, "localhost").ok()?;
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = 7;
    p.set_token(vec![0x77]);
    p.add_option(CoapOption::UriPath, b"rd".to_vec());
    p.add_option(CoapOption::UriQuery, format!("ep={endpoint}").into_bytes());
    p.add_option(CoapOption::UriQuery, b"lt=60".to_vec());
    p.add_option(CoapOption::UriQuery, b"lwm2m=1.1".to_vec());
    p.add_option(CoapOption::UriQuery, b"b=U".to_vec());
    p.add_option(CoapOption::ContentFormat, vec![40]);
    p.payload = b"</1/0>,</3/0>".to_vec();
    let bytes = p.to_bytes().ok()?;
    let _ = dtls.send(Instant::now(), server, &bytes);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(t) = dtls.poll_transmit() {
            let _ = socket.send_to(&t.bytes, t.to).await;
        }
        while let Some(ev) = dtls.poll_event() {
            match ev {
                ClientEvent::Data { bytes, .. } => {
                    if let Ok(r) = Packet::from_bytes(&bytes)
                        && r.get_token() == [0x77]
                    {
                        return Some(code_text(r.header.code));
                    }
                }
                ClientEvent::Failed { .. } => return None,
                _ => {}
            }
        }
        let wake = dtls.poll_timeout().map_or(deadline, |t| t.min(deadline));
        if Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r { dtls.handle_datagram(Instant::now(), from, &buf[..n]); }
            }
            _ = tokio::time::sleep_until(wake.into()) => dtls.handle_timeout(Instant::now()),
        }
    }
}
