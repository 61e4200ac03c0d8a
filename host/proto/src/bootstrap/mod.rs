//! Client-initiated bootstrap (LwM2M 1.1 Core §5.2, §6.1), sans-IO.
//!
//! [`BootstrapClient`] sends the Bootstrap-Request, then serves the
//! bootstrap server's Write, Read, Delete and Discover on a *staged* copy
//! of the accounts ([`Accounts`]) and answers Bootstrap-Finish. Nothing
//! staged reaches the device until Finish passed the consistency check and
//! the driver made the result durable ([`BootstrapEvent::Finished`], then
//! [`BootstrapClient::finish_stored`]): a bootstrap cut off at any point
//! leaves the accounts the device had. Drive it like [`crate::client::Client`]:
//! inputs [`BootstrapClient::handle_datagram`] / [`BootstrapClient::handle_timeout`],
//! then drain [`BootstrapClient::poll_transmit`], [`BootstrapClient::poll_event`],
//! [`BootstrapClient::poll_timeout`].
//!
//! Caps, applied before anything is consumed: one Write body (single
//! datagram or Block1-assembled) at most [`Config::max_body`] bytes,
//! [`Config::max_instances`] instances per object, URIs of 255 bytes and
//! credentials of 8 KiB ([`accounts`]). A session not finished within
//! [`Config::timeout`] of the server's 2.04 is abandoned and retried after
//! a doubling back-off, like a failed or unanswered Bootstrap-Request.

pub mod accounts;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, Packet, RequestType};

use crate::client::registration::backoff;
use crate::coap::block::{self, Block1Limits, Block1Rx, Block1Step, BlockOpt};
use crate::coap::endpoint::{
    Endpoint, EndpointEvent, ExchangeId, InboundRequest, Params, Transmit,
};
use crate::coap::msg::{self, Code};
use crate::model::{ContentFormat, Path};
pub use accounts::{Accounts, BootstrapError, ObjectLinks, UsableAccount};

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Endpoint Client Name (`ep`).
    pub endpoint_name: String,
    /// The bootstrap server: the only peer whose requests are served.
    pub server: SocketAddr,
    /// Sent as `pct` (Core 1.1 §6.1.3: the preferred content format).
    pub preferred_format: Option<ContentFormat>,
    /// How long a session may last after the server's 2.04 before it is abandoned.
    pub timeout: Duration,
    /// First back-off after a failed attempt, doubled per attempt.
    pub retry_base: Duration,
    /// Longest back-off.
    pub retry_cap: Duration,
    /// Wait before the first Bootstrap-Request (/0/x/11 Client Hold Off Time).
    pub hold_off: Duration,
    /// Accept NoSec (mode 3) server accounts at Finish.
    pub allow_nosec: bool,
    /// Largest Write body, bytes.
    pub max_body: u64,
    /// Most instances per object (/0, /1).
    pub max_instances: usize,
    /// Other objects, listed by Discover; those with software in them are
    /// never deleted.
    pub other_objects: Vec<ObjectLinks>,
    /// Seed for MIDs and tokens.
    pub seed: u64,
    /// CoAP transmission parameters.
    pub coap: Params,
}

/// Default [`Config::timeout`]: EXCHANGE_LIFETIME (RFC 7252 §4.8.2),
/// longer than any one exchange of the server may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(247);
/// Default [`Config::max_body`].
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024;
/// Default [`Config::max_instances`].
pub const DEFAULT_MAX_INSTANCES: usize = 8;

impl Config {
    /// Defaults for `endpoint_name` bootstrapping from `server`.
    pub fn new(endpoint_name: impl Into<String>, server: SocketAddr, seed: u64) -> Self {
        Config {
            endpoint_name: endpoint_name.into(),
            server,
            preferred_format: Some(ContentFormat::SenmlJson),
            timeout: DEFAULT_TIMEOUT,
            retry_base: Duration::from_secs(10),
            retry_cap: Duration::from_secs(3600),
            hold_off: Duration::ZERO,
            allow_nosec: false,
            max_body: DEFAULT_MAX_BODY,
            max_instances: DEFAULT_MAX_INSTANCES,
            other_objects: Vec::new(),
            seed,
            coap: Params::default(),
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptFailure {
    /// The server answered the Bootstrap-Request with an error.
    #[error("Bootstrap-Request refused with {0}")]
    Refused(Code),
    /// No answer to the Bootstrap-Request (or RST).
    #[error("no answer to the Bootstrap-Request")]
    NoAnswer,
    /// No Bootstrap-Finish within the timeout.
    #[error("no Bootstrap-Finish within {0:?}")]
    Timeout(Duration),
    /// The transport failed (DTLS handshake), as the driver says.
    #[error("{0}")]
    Transport(String),
    /// The driver could not store the result.
    #[error("cannot store the result: {0}")]
    Store(String),
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum BootstrapEvent {
    /// A Bootstrap-Request went out.
    Requested {
        /// 1 for the first.
        attempt: u32,
    },
    /// The server accepted it (2.04): the session runs.
    Accepted,
    /// A request of the server was answered (for the log: no payloads).
    Answered {
        /// e.g. `0.03`.
        method: String,
        /// e.g. `/0/1`.
        path: String,
        /// e.g. `2.04`.
        code: String,
    },
    /// Bootstrap-Finish found a consistent result. Store `accounts`
    /// durably, then call [`BootstrapClient::finish_stored`]; only then is
    /// the 2.04 sent.
    Finished {
        /// Everything /0 and /1 hold now.
        accounts: Accounts,
        /// The usable server accounts, lowest SSID first.
        usable: Vec<UsableAccount>,
    },
    /// Bootstrap-Finish found it inconsistent: 4.06 with `reason` went back.
    Rejected {
        /// The diagnostic sent.
        reason: String,
    },
    /// The attempt failed; nothing staged is kept. Next try in `retry_in`.
    Failed {
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        reason: AttemptFailure,
        /// Back-off.
        retry_in: Duration,
    },
    /// Finish answered 2.04: the device now uses the new accounts.
    Done,
}

/// Where the bootstrap stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapState {
    /// Not started.
    Idle,
    /// Waiting out the Client Hold Off Time.
    HoldOff {
        /// When the request goes out.
        until: Instant,
    },
    /// Bootstrap-Request sent.
    Requesting {
        /// Its exchange.
        ex: ExchangeId,
        /// Attempt number.
        attempt: u32,
        /// When the session started (the request went out).
        deadline: Instant,
    },
    /// Serving the server's requests until Finish or `deadline`.
    Serving {
        /// Attempt number.
        attempt: u32,
        /// When the attempt is abandoned.
        deadline: Instant,
    },
    /// Finish passed the check; waiting for the driver to store the result.
    Storing {
        /// Attempt number.
        attempt: u32,
    },
    /// Waiting to retry.
    BackOff {
        /// When.
        until: Instant,
        /// The next attempt's number.
        attempt: u32,
    },
    /// Finished (2.04 sent).
    Done,
}

/// One Block1 Write in progress (one at a time: the server sends one request at a time).
#[derive(Debug)]
struct Block1Write {
    path: Vec<String>,
    rx: Option<Block1Rx>,
    body: Vec<u8>,
}

/// The bootstrap engine.
#[derive(Debug)]
pub struct BootstrapClient {
    cfg: Config,
    ep: Endpoint,
    state: BootstrapState,
    /// What the device has (restored after a failed attempt).
    current: Accounts,
    /// What the session has written so far.
    staged: Accounts,
    block1: Option<Block1Write>,
    /// The Finish request, held until the driver stored the result.
    held_finish: Option<InboundRequest>,
    events: VecDeque<BootstrapEvent>,
    foreign_dropped: u64,
}

impl BootstrapClient {
    /// An engine over the device's `current` accounts (its bootstrap account included).
    pub fn new(cfg: Config, current: Accounts) -> Self {
        BootstrapClient {
            ep: Endpoint::new(cfg.coap.clone(), cfg.seed),
            cfg,
            state: BootstrapState::Idle,
            staged: current.clone(),
            current,
            block1: None,
            held_finish: None,
            events: VecDeque::new(),
            foreign_dropped: 0,
        }
    }

    /// Where the bootstrap stands.
    pub fn state(&self) -> &BootstrapState {
        &self.state
    }

    /// What the session has written so far (tests, diagnostics).
    pub fn staged(&self) -> &Accounts {
        &self.staged
    }

    /// The message layer (e.g. to fix the next MID in tests).
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// Requests and pings from anyone but the bootstrap server, dropped.
    pub fn foreign_requests_dropped(&self) -> u64 {
        self.foreign_dropped
    }

    /// Starts: the Bootstrap-Request goes out now, or after the hold-off.
    pub fn start(&mut self, now: Instant) {
        if self.state != BootstrapState::Idle {
            return;
        }
        if self.cfg.hold_off.is_zero() {
            self.send_request(now, 1);
        } else {
            self.state = BootstrapState::HoldOff {
                until: now + self.cfg.hold_off,
            };
        }
    }

    /// Processes one datagram. Only the bootstrap server may operate on
    /// the device (Core 1.1 §5.2.7: the Bootstrap Interface is between the
    /// client and its bootstrap server): requests from anyone else are
    /// dropped unanswered.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if from != self.cfg.server && crate::client::is_request_or_ping(bytes) {
            self.foreign_dropped += 1;
            return;
        }
        self.ep.handle_datagram(now, from, bytes);
        self.pump(now);
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        match self.state {
            BootstrapState::HoldOff { until } if until <= now => self.send_request(now, 1),
            BootstrapState::BackOff { until, attempt } if until <= now => {
                self.send_request(now, attempt)
            }
            BootstrapState::Serving { attempt, deadline }
            | BootstrapState::Requesting {
                attempt, deadline, ..
            } if deadline <= now => {
                self.fail(now, attempt, AttemptFailure::Timeout(self.cfg.timeout));
            }
            _ => {}
        }
        self.pump(now);
    }

    /// The transport failed for this attempt (e.g. the DTLS handshake with
    /// the bootstrap server): abandon it and back off.
    pub fn transport_failed(&mut self, now: Instant, reason: impl Into<String>) {
        let attempt = match self.state {
            BootstrapState::Requesting { attempt, .. }
            | BootstrapState::Serving { attempt, .. } => attempt,
            _ => return,
        };
        self.fail(now, attempt, AttemptFailure::Transport(reason.into()));
    }

    /// The driver stored the [`BootstrapEvent::Finished`] result (`Ok`) or
    /// could not (`Err`: 5.00 goes back and the attempt fails).
    pub fn finish_stored(&mut self, now: Instant, result: Result<(), String>) {
        let BootstrapState::Storing { attempt } = self.state else {
            return;
        };
        let Some(req) = self.held_finish.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.current = self.staged.clone();
                self.respond(now, &req, msg::response_to(&req.packet, Code::CHANGED));
                self.state = BootstrapState::Done;
                self.events.push_back(BootstrapEvent::Done);
            }
            Err(why) => {
                let resp = msg::response_to(&req.packet, Code::INTERNAL_SERVER_ERROR);
                self.respond(now, &req, resp);
                self.fail(now, attempt, AttemptFailure::Store(why));
            }
        }
        self.pump(now);
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ep.poll_transmit()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BootstrapEvent> {
        self.events.pop_front()
    }

    /// When [`BootstrapClient::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match self.state {
            BootstrapState::HoldOff { until } | BootstrapState::BackOff { until, .. } => {
                Some(until)
            }
            BootstrapState::Serving { deadline, .. }
            | BootstrapState::Requesting { deadline, .. } => Some(deadline),
            _ => None,
        };
        [self.ep.poll_timeout(), own].into_iter().flatten().min()
    }

    // ---- internals ----

    /// Bootstrap-Request: CON POST /bs?ep={name}[&pct={format}] (Core 1.1 §6.1.3).
    fn send_request(&mut self, now: Instant, attempt: u32) {
        self.staged = self.current.clone();
        self.block1 = None;
        let ex = self
            .ep
            .send_request(now, self.cfg.server, request_packet(&self.cfg));
        self.state = BootstrapState::Requesting {
            ex,
            attempt,
            deadline: now + self.cfg.timeout,
        };
        self.events.push_back(BootstrapEvent::Requested { attempt });
    }

    fn fail(&mut self, now: Instant, attempt: u32, reason: AttemptFailure) {
        if let BootstrapState::Requesting { ex, .. } = self.state {
            // No more retransmissions of the abandoned request.
            self.ep.cancel(now, ex);
        }
        let retry_in = backoff(self.cfg.retry_base, self.cfg.retry_cap, attempt);
        self.staged = self.current.clone();
        self.block1 = None;
        self.held_finish = None;
        self.state = BootstrapState::BackOff {
            until: now + retry_in,
            attempt: attempt.saturating_add(1),
        };
        self.events.push_back(BootstrapEvent::Failed {
            attempt,
            reason,
            retry_in,
        });
    }

    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                EndpointEvent::Request(req) => self.on_request(now, req),
                EndpointEvent::Response { id, packet } => {
                    self.on_response(now, id, Some(Code::of(&packet)))
                }
                EndpointEvent::Timeout { id } | EndpointEvent::Reset { id } => {
                    self.on_response(now, id, None)
                }
                EndpointEvent::Acked { .. } => {}
            }
        }
    }

    fn on_response(&mut self, now: Instant, id: ExchangeId, code: Option<Code>) {
        let BootstrapState::Requesting { ex, attempt, .. } = self.state else {
            return;
        };
        if ex != id {
            return;
        }
        match code {
            Some(Code::CHANGED) => self.accept(now, attempt),
            Some(c) => self.fail(now, attempt, AttemptFailure::Refused(c)),
            None => self.fail(now, attempt, AttemptFailure::NoAnswer),
        }
    }

    /// The session runs from the server's 2.04 (or its first request,
    /// should that overtake the 2.04) until Finish or the timeout.
    fn accept(&mut self, now: Instant, attempt: u32) {
        self.state = BootstrapState::Serving {
            attempt,
            deadline: now + self.cfg.timeout,
        };
        self.events.push_back(BootstrapEvent::Accepted);
    }

    fn respond(&mut self, now: Instant, req: &InboundRequest, resp: Packet) {
        self.events.push_back(BootstrapEvent::Answered {
            method: Code::of(&req.packet).to_string(),
            path: format!(
                "/{}",
                msg::uri_path(&req.packet).unwrap_or_default().join("/")
            ),
            code: Code::of(&resp).to_string(),
        });
        self.ep.respond(now, req, resp);
    }

    fn on_request(&mut self, now: Instant, req: InboundRequest) {
        let attempt = match self.state {
            BootstrapState::Requesting { ex, attempt, .. } => {
                self.ep.cancel(now, ex);
                self.accept(now, attempt);
                attempt
            }
            BootstrapState::Serving { attempt, .. } => attempt,
            _ => {
                // No session: nothing to operate on.
                let resp = msg::response_to(&req.packet, Code::FORBIDDEN);
                self.respond(now, &req, resp);
                return;
            }
        };
        let resp = match self.operate(now, &req, attempt) {
            Ok(Some(resp)) => resp,
            Ok(None) => return, // held (Finish) or already answered (2.31)
            Err(e) => error_response(&req.packet, &e),
        };
        self.respond(now, &req, resp);
    }

    fn operate(
        &mut self,
        now: Instant,
        req: &InboundRequest,
        attempt: u32,
    ) -> Result<Option<Packet>, BootstrapError> {
        let p = &req.packet;
        let segments = msg::uri_path(p)
            .ok_or_else(|| BootstrapError::BadRequest("Uri-Path is not UTF-8".into()))?;
        // Bootstrap-Finish: POST /bs (Core 1.1 §6.1.7.x).
        if Code::of(p) == Code::POST && segments == ["bs"] {
            return Ok(self.finish(req, attempt));
        }
        let target = match segments.as_slice() {
            [] => None,
            s => Some(Path::from_segments(s).ok_or(BootstrapError::NotFound)?),
        };
        let uint = |o| {
            msg::get_uint(p, o, 2)
                .map(|v| v.map(|v| v as u16))
                .map_err(|_| BootstrapError::BadRequest("bad option".into()))
        };
        match Code::of(p) {
            Code::POST => Err(BootstrapError::MethodNotAllowed),
            Code::PUT => {
                let target = target
                    .filter(|t| t.resource_instance.is_none())
                    .ok_or_else(|| {
                        BootstrapError::BadRequest(
                            "Bootstrap-Write targets an object, instance or resource".into(),
                        )
                    })?;
                accounts::check_writable(target)?;
                let Some(body) = self.write_body(now, req)? else {
                    return Ok(None);
                };
                let node = accounts::decode_write(&body, target, uint(CoapOption::ContentFormat)?)?;
                self.staged.write(target, node, self.cfg.max_instances)?;
                let mut resp = msg::response_to(p, Code::CHANGED);
                if let Ok(Some(b1)) = BlockOpt::read(p, CoapOption::Block1) {
                    b1.write(&mut resp, CoapOption::Block1);
                }
                Ok(Some(resp))
            }
            Code::GET if uint(CoapOption::Accept)? == Some(ContentFormat::LinkFormat.code()) => {
                if target.is_some_and(|t| t.instance.is_some()) {
                    return Err(BootstrapError::BadRequest(
                        "Bootstrap-Discover targets / or an object".into(),
                    ));
                }
                let links = self
                    .staged
                    .discover(target.map(|t| t.object), &self.cfg.other_objects)?;
                let mut resp = msg::response_to(p, Code::CONTENT);
                msg::set_uint(
                    &mut resp,
                    CoapOption::ContentFormat,
                    ContentFormat::LinkFormat.code().into(),
                );
                resp.payload = links.into_bytes();
                Ok(Some(resp))
            }
            Code::GET => {
                let target = target.ok_or(BootstrapError::MethodNotAllowed)?;
                let (body, format) = self.staged.read(target, uint(CoapOption::Accept)?)?;
                let mut resp = msg::response_to(p, Code::CONTENT);
                msg::set_uint(&mut resp, CoapOption::ContentFormat, format.code().into());
                resp.payload = body;
                Ok(Some(resp))
            }
            Code::DELETE => {
                let protected: Vec<u16> = self.cfg.other_objects.iter().map(|o| o.id).collect();
                self.staged.delete(target, &protected)?;
                Ok(Some(msg::response_to(p, Code::DELETED)))
            }
            _ => Err(BootstrapError::MethodNotAllowed),
        }
    }

    /// The Write body: the payload, or a Block1 transfer's assembled body
    /// once complete (`None` while blocks are still coming; 2.31 sent).
    /// Over the cap: 4.13 with Size1 before anything is kept.
    fn write_body(
        &mut self,
        now: Instant,
        req: &InboundRequest,
    ) -> Result<Option<Vec<u8>>, BootstrapError> {
        let p = &req.packet;
        let too_large = BootstrapError::TooLarge {
            limit: self.cfg.max_body,
        };
        let b1 = BlockOpt::read(p, CoapOption::Block1)
            .map_err(|_| BootstrapError::BadRequest("bad Block1 option".into()))?;
        let Some(b1) = b1 else {
            self.block1 = None;
            if p.payload.len() as u64 > self.cfg.max_body {
                return Err(too_large);
            }
            return Ok(Some(p.payload.clone()));
        };
        let size1 = msg::get_uint(p, CoapOption::Size1, 4)
            .map_err(|_| BootstrapError::BadRequest("bad Size1 option".into()))?;
        let path = msg::uri_path(p).unwrap_or_default();
        let mut transfer = match self.block1.take() {
            Some(t) if t.path == path => t,
            _ => Block1Write {
                path,
                rx: None,
                body: Vec::new(),
            },
        };
        let limits = Block1Limits {
            max_szx: block::MAX_SZX,
            max_size: Some(self.cfg.max_body),
        };
        match block::block1_step(&mut transfer.rx, b1, p.payload.len(), size1, limits) {
            Block1Step::Reject { code, size1 } => {
                if code == Code::REQUEST_ENTITY_TOO_LARGE {
                    return Err(BootstrapError::TooLarge {
                        limit: size1.unwrap_or(self.cfg.max_body),
                    });
                }
                if code == Code::REQUEST_ENTITY_INCOMPLETE {
                    // Keep the transfer: the server may resend the expected block.
                    self.block1 = Some(transfer);
                    let resp = msg::response_to(p, code);
                    self.respond(now, req, resp);
                    return Ok(None);
                }
                Err(BootstrapError::BadRequest("bad block".into()))
            }
            Block1Step::Piece {
                offset,
                last,
                reply,
            } => {
                if offset == 0 {
                    transfer.body.clear();
                }
                transfer.body.extend_from_slice(&p.payload);
                if transfer.body.len() as u64 > self.cfg.max_body {
                    return Err(too_large);
                }
                if last {
                    return Ok(Some(transfer.body));
                }
                self.block1 = Some(transfer);
                let mut resp = msg::response_to(p, Code::CONTINUE);
                reply.write(&mut resp, CoapOption::Block1);
                self.respond(now, req, resp);
                Ok(None)
            }
        }
    }

    /// Bootstrap-Finish: consistent -> hold the 2.04 until stored; else
    /// 4.06 with the reason as text/plain, and the session goes on (the
    /// server may correct and finish again).
    fn finish(&mut self, req: &InboundRequest, attempt: u32) -> Option<Packet> {
        match self.staged.check(self.cfg.allow_nosec) {
            Ok(usable) => {
                self.held_finish = Some(req.clone());
                self.state = BootstrapState::Storing { attempt };
                self.events.push_back(BootstrapEvent::Finished {
                    accounts: self.staged.clone(),
                    usable,
                });
                None
            }
            Err(reason) => {
                let mut resp = msg::response_to(&req.packet, Code::NOT_ACCEPTABLE);
                msg::set_uint(
                    &mut resp,
                    CoapOption::ContentFormat,
                    ContentFormat::Text.code().into(),
                );
                resp.payload = reason.clone().into_bytes();
                self.events.push_back(BootstrapEvent::Rejected { reason });
                Some(resp)
            }
        }
    }
}

/// The Bootstrap-Request packet (Core 1.1 §6.1.3).
pub fn request_packet(cfg: &Config) -> Packet {
    let mut p = msg::request(RequestType::Post, &["bs"]);
    let mut query = vec![format!("ep={}", cfg.endpoint_name)];
    if let Some(f) = cfg.preferred_format {
        query.push(format!("pct={}", f.code()));
    }
    msg::add_strings(&mut p, CoapOption::UriQuery, &query);
    p
}

/// An error answer; 4.13 carries Size1, 4.00 and 4.06 a text/plain reason.
fn error_response(request: &Packet, e: &BootstrapError) -> Packet {
    let mut p = msg::response_to(request, e.code());
    match e {
        BootstrapError::TooLarge { limit } => msg::set_uint(&mut p, CoapOption::Size1, *limit),
        BootstrapError::BadRequest(why) | BootstrapError::NotAcceptable(why) => {
            msg::set_uint(
                &mut p,
                CoapOption::ContentFormat,
                ContentFormat::Text.code().into(),
            );
            p.payload = why.clone().into_bytes();
        }
        _ => {}
    }
    p
}
