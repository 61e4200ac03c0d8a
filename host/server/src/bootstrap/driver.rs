//! The tokio side of the bootstrap server: one task owns its two sockets
//! (plain CoAP and DTLS, through the same [`ServerTransport`] as the LwM2M
//! port), its CoAP message layer and the sessions in progress. Admission
//! ([`super::request`]) and the sequence ([`super::session`]) are sans-IO;
//! this file only moves datagrams, instants and store writes between them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmdm_proto::coap::msg::{self, Code};
use wasmdm_proto::coap::{Endpoint, EndpointEvent, ExchangeId, InboundRequest, Params};

use super::config::{AccountSecurity, BootstrapConfig};
use super::request::{self, BootstrapLimits, RateLimiter, Refused, SessionCount};
use super::rollover;
use super::session::{Next, Plan, ResolvedAccount, Session, SessionRecord, SessionStatus};
use crate::driver::unix_ms;
use crate::store::Store;
use crate::transport::{ServerTransport, Turn, pump};

/// Length of a generated operational PSK (128 bits, as PSK_KEY_LEN's minimum).
pub const GENERATED_PSK_LEN: usize = 16;

/// At most one refusal log line per this period.
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// What the bootstrap driver needs besides its sockets.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// Caps.
    pub limits: BootstrapLimits,
    /// Plain-CoAP bootstrap for endpoints without credentials (lab).
    pub allow_nosec: bool,
    /// URI written for accounts whose configuration names none.
    pub default_server_uri: Option<String>,
    /// CoAP transmission parameters.
    pub params: Params,
}

struct Active {
    session: Session,
    peer: SocketAddr,
    deadline: Instant,
    exchange: Option<ExchangeId>,
}

/// The bootstrap server's state.
pub struct BootstrapDriver {
    transport: ServerTransport,
    endpoint: Endpoint,
    store: Arc<Store>,
    settings: DriverSettings,
    sessions: HashMap<String, Active>,
    exchanges: HashMap<ExchangeId, String>,
    count: SessionCount,
    rate: RateLimiter,
    /// Records to write with this turn's commit.
    records: Vec<SessionRecord>,
    /// Endpoints whose session succeeded this turn: their saved previous
    /// credential is dropped with the same commit.
    succeeded: Vec<String>,
    /// Refusals since the last log line, and when that was.
    refusals: (u64, Option<Instant>),
    /// DTLS associations to close once this turn's datagrams are out: a
    /// session that ended needs its association no more, and a device
    /// coming back from the same address and port must get a new handshake.
    closing: Vec<SocketAddr>,
}

impl Turn for BootstrapDriver {
    fn parts(&mut self) -> (&mut Endpoint, &mut ServerTransport) {
        (&mut self.endpoint, &mut self.transport)
    }

    /// Stores the turn's ended sessions and forgets the previous credentials
    /// of those that succeeded (one transaction).
    fn commit(&mut self) {
        let records = std::mem::take(&mut self.records);
        let succeeded = std::mem::take(&mut self.succeeded);
        if let Err(e) = self.store.end_bootstrap_sessions(
            &records,
            self.settings.limits.kept_sessions,
            &succeeded,
        ) {
            tracing::warn!("store {} bootstrap session record(s): {e}", records.len());
        }
    }

    fn event(&mut self, ev: EndpointEvent) {
        match ev {
            EndpointEvent::Request(req) => self.inbound(req),
            EndpointEvent::Response { id, packet } => {
                if let Some(ep) = self.exchanges.remove(&id)
                    && let Some(a) = self.sessions.get_mut(&ep)
                {
                    a.exchange = None;
                    a.session
                        .handle_response(Code::of(&packet), &packet.payload);
                    self.drive(&ep);
                }
            }
            EndpointEvent::Timeout { id } | EndpointEvent::Reset { id } => {
                if let Some(ep) = self.exchanges.remove(&id)
                    && let Some(a) = self.sessions.get_mut(&ep)
                {
                    a.exchange = None;
                    a.session.handle_no_response();
                    self.drive(&ep);
                }
            }
            EndpointEvent::Acked { .. } => {}
        }
    }

    fn take_closing(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.closing)
    }
}

impl BootstrapDriver {
    /// A driver over `transport`; sessions left running by a previous run are
    /// marked interrupted.
    pub fn new(
        transport: ServerTransport,
        store: Arc<Store>,
        settings: DriverSettings,
        seed: u64,
    ) -> Result<Self, crate::store::StoreError> {
        let stale = store.interrupt_bootstrap_sessions(unix_ms())?;
        let restored = store.restore_all_previous_credentials()?;
        if stale > 0 || restored > 0 {
            tracing::info!(
                "{stale} bootstrap session(s) were cut off by a restart; \
                 {restored} previous credential(s) restored"
            );
        }
        Ok(BootstrapDriver {
            transport,
            endpoint: Endpoint::new(settings.params.clone(), seed),
            store,
            settings,
            sessions: HashMap::new(),
            exchanges: HashMap::new(),
            count: SessionCount::default(),
            rate: RateLimiter::default(),
            records: Vec::new(),
            succeeded: Vec::new(),
            refusals: (0, None),
            closing: Vec::new(),
        })
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let wake = self.transport.next_wake(&self.endpoint);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = self.transport.recv() => match r {
                    Ok(first) => self.transport.inbound_burst(first, &mut self.endpoint),
                    Err(e) => tracing::debug!("bootstrap udp receive: {e}"),
                },
                _ = tokio::time::sleep_until(wake.into()) => self.transport.wake(&mut self.endpoint),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
            pump(&mut self).await;
        }
        // Sessions cut off by the shutdown are recorded as such.
        let active: Vec<String> = self.sessions.keys().cloned().collect();
        for ep in active {
            self.end_session(&ep, SessionStatus::Interrupted, "the server stopped");
        }
        self.commit();
    }

    fn on_tick(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(ep, _)| ep.clone())
            .collect();
        for ep in expired {
            self.end_session(&ep, SessionStatus::TimedOut, "session timeout");
        }
        self.rate.prune(now, &self.settings.limits);
    }

    fn inbound(&mut self, req: InboundRequest) {
        let now = Instant::now();
        match self.admit(&req, now) {
            Ok((ep, security, plan)) => {
                let ok = msg::response_to(&req.packet, Code::CHANGED);
                self.endpoint.respond(now, &req, ok);
                tracing::info!(peer = %req.peer, endpoint = %ep, "bootstrap session started");
                let mut session =
                    Session::new(&ep, &req.peer.to_string(), security, unix_ms(), plan);
                session.set_identity(psk_identity(&self.transport.auth(req.peer)));
                self.records.push(session.record().clone());
                self.sessions.insert(
                    ep.clone(),
                    Active {
                        session,
                        peer: req.peer,
                        deadline: now + self.settings.limits.session_timeout,
                        exchange: None,
                    },
                );
                self.drive(&ep);
            }
            Err(refused) => {
                let resp = msg::response_to(&req.packet, refused.code());
                self.endpoint.respond(now, &req, resp);
                self.log_refusal(now, req.peer, &refused);
            }
        }
    }

    /// Checks a request against the caps, the credentials and the
    /// configuration, in that order of cost; allocates nothing before.
    fn admit(
        &mut self,
        req: &InboundRequest,
        now: Instant,
    ) -> Result<(String, &'static str, Plan), Refused> {
        let parsed = request::parse(&req.packet)?;
        let ep = parsed.endpoint;
        let internal = |e: crate::store::StoreError| Refused::Internal(e.to_string());
        let mut account = self.store.bootstrap_endpoint(&ep).map_err(internal)?;
        let operational = match &account {
            Some(_) => None,
            None => self
                .store
                .security(&ep)
                .map_err(internal)?
                .map(|e| e.credential),
        };
        let auth = self.transport.auth(req.peer);
        let security = request::admit(
            &auth,
            &ep,
            account.as_ref(),
            operational.as_ref(),
            self.settings.allow_nosec,
        )?;
        // A rollover's new identity authenticated this peer: the device
        // holds the new credential, which becomes the current one
        // (rollover.rs), even if the 2.04 to its Finish was lost.
        if let (Some(a), Some(id)) = (&account, psk_identity(&auth))
            && rollover::proves_pending(a, id.as_bytes())
        {
            if self
                .store
                .promote_bootstrap_rollover(&ep, &id, unix_ms())
                .map_err(internal)?
            {
                tracing::info!(
                    endpoint = %ep,
                    identity = %id,
                    "bootstrap rollover done: the device authenticated with the new identity"
                );
            }
            account = self.store.bootstrap_endpoint(&ep).map_err(internal)?;
        }
        let limits = self.settings.limits.clone();
        if !self.rate.allow(&ep, now, &limits) {
            return Err(Refused::RateLimited);
        }
        // A device that starts over replaces its session (Core 1.1 §5.2.7.1:
        // it sends a new Bootstrap-Request after a restart).
        if self.sessions.contains_key(&ep) {
            self.end_session(
                &ep,
                SessionStatus::Interrupted,
                "superseded by a new Bootstrap-Request",
            );
        }
        if !self.count.try_add(req.peer.ip(), &limits) {
            return Err(Refused::Busy);
        }
        let plan = match &account {
            Some(a) => self.store.resolve_bootstrap_config(a).map_err(internal),
            None => self
                .store
                .bootstrap_label(super::config::DEFAULT_LABEL)
                .map_err(internal),
        }
        .map(|c| c.unwrap_or_default())
        .and_then(|c| self.plan(&ep, &c, parsed.format))
        .map(|mut p| {
            p.rollover = rollover::to_write(account.as_ref());
            p
        });
        if plan.is_err() {
            self.count.remove(req.peer.ip());
        }
        Ok((ep, security, plan?))
    }

    /// The configuration made concrete: URIs filled in, PSKs generated.
    fn plan(
        &self,
        endpoint: &str,
        config: &BootstrapConfig,
        format: wasmdm_proto::model::ContentFormat,
    ) -> Result<Plan, Refused> {
        let mut key = [0u8; GENERATED_PSK_LEN];
        let mut generated = false;
        let mut accounts = Vec::new();
        for s in &config.servers {
            let mut account = s.clone();
            if account.uri.is_empty() {
                let uri = match (s.security, &self.settings.default_server_uri) {
                    (AccountSecurity::Psk, Some(u)) => u.clone(),
                    _ => {
                        return Err(Refused::NoConfig(
                            "no server URI configured (--bootstrap-server-uri or a label config)",
                        ));
                    }
                };
                account.uri = uri;
            }
            let psk = match s.security {
                AccountSecurity::Psk => {
                    if !generated {
                        getrandom::fill(&mut key)
                            .map_err(|e| Refused::Internal(format!("no OS randomness: {e}")))?;
                        generated = true;
                    }
                    Some((endpoint.to_string(), key.to_vec()))
                }
                AccountSecurity::NoSec => None,
            };
            accounts.push(ResolvedAccount { account, psk });
        }
        Ok(Plan {
            delete: config.delete.clone(),
            accounts,
            format,
            rollover: None,
        })
    }

    /// Carries out the session's next actions until it waits for the device.
    fn drive(&mut self, ep: &str) {
        loop {
            let Some(a) = self.sessions.get_mut(ep) else {
                return;
            };
            match a.session.poll() {
                Some(Next::Send(req)) => {
                    if req.path == ["bs"]
                        && let Some(identity) = a.session.rollover_written()
                        && let Err(e) =
                            self.store
                                .mark_bootstrap_rollover_written(ep, identity, unix_ms())
                    {
                        // Durable before Finish goes out (from its 2.04 on
                        // the device may hold the new credential, and a
                        // cancel must no longer drop it): else no Finish.
                        tracing::warn!(endpoint = %ep, "bootstrap rollover: {e}");
                        let why = format!("rollover state not stored: {e}");
                        a.session.abort(SessionStatus::Failed, &why);
                        continue;
                    }
                    let id = self
                        .endpoint
                        .send_request(Instant::now(), a.peer, req.to_packet());
                    a.exchange = Some(id);
                    self.exchanges.insert(id, ep.to_string());
                    return;
                }
                Some(Next::Store(entries)) => {
                    if self.succeeded.iter().any(|s| s == ep) {
                        // An earlier session of this endpoint succeeded this
                        // turn: its saved credential must be gone first.
                        self.commit();
                    }
                    let Some(a) = self.sessions.get_mut(ep) else {
                        return;
                    };
                    // Durable before the device hears of it; what it replaces
                    // is kept until the session ends (rollback.rs).
                    let result = entries.iter().try_for_each(|e| {
                        self.store
                            .save_previous_credential(&e.endpoint)
                            .map_err(|e| e.to_string())?;
                        self.store.put_security(e).map_err(|e| e.to_string())
                    });
                    if let Err(e) = &result {
                        tracing::warn!(endpoint = %ep, "bootstrap: operational credential not stored: {e}");
                    }
                    a.session.handle_stored(result);
                }
                Some(Next::Done) | None => {
                    if a.session.is_done() {
                        self.finish(ep);
                    }
                    return;
                }
            }
        }
    }

    fn end_session(&mut self, ep: &str, status: SessionStatus, reason: &str) {
        if let Some(a) = self.sessions.get_mut(ep) {
            a.session.abort(status, reason);
            if let Some(id) = a.exchange.take() {
                self.exchanges.remove(&id);
                self.endpoint.cancel(Instant::now(), id);
            }
            self.finish(ep);
        }
    }

    fn finish(&mut self, ep: &str) {
        let Some(mut a) = self.sessions.remove(ep) else {
            return;
        };
        a.session.set_ended(unix_ms());
        self.count.remove(a.peer.ip());
        self.closing.push(a.peer);
        let r = a.session.record();
        // Finish got its 2.04: the device committed the new bootstrap
        // credential this session wrote (rollover.rs).
        if let Some(id) = rollover::promote_after(
            r.status == SessionStatus::Succeeded,
            a.session.rollover_written(),
        ) {
            match self.store.promote_bootstrap_rollover(ep, id, unix_ms()) {
                Ok(true) => tracing::info!(
                    endpoint = %ep,
                    identity = %id,
                    "bootstrap rollover done: Finish confirmed the new identity"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(endpoint = %ep, "bootstrap rollover: {e}"),
            }
        }
        // The device keeps what it had unless Finish succeeded: so does the server.
        if r.status == SessionStatus::Succeeded {
            self.succeeded.push(ep.to_string());
        } else if let Err(e) = self.store.restore_previous_credential(ep) {
            tracing::warn!(endpoint = %ep, "bootstrap: previous credential: {e}");
        }
        match r.status {
            SessionStatus::Succeeded => {
                tracing::info!(endpoint = %ep, peer = %a.peer, "bootstrap finished")
            }
            _ => tracing::warn!(
                endpoint = %ep,
                peer = %a.peer,
                status = ?r.status,
                error = r.error.as_deref().unwrap_or(""),
                "bootstrap failed"
            ),
        }
        self.records.push(r.clone());
    }

    /// Refusals are logged in aggregate: a flood must not become a log flood.
    fn log_refusal(&mut self, now: Instant, peer: SocketAddr, refused: &Refused) {
        self.refusals.0 += 1;
        if self
            .refusals
            .1
            .is_none_or(|t| now.duration_since(t) >= LOG_PERIOD)
        {
            tracing::warn!(
                %peer,
                refusals = self.refusals.0,
                "Bootstrap-Request refused ({}): {refused}",
                refused.code()
            );
            self.refusals = (0, Some(now));
        }
    }

    /// Sessions in progress (tests, diagnostics).
    pub fn active_sessions(&self) -> usize {
        self.count.total()
    }
}

/// The PSK identity a peer authenticated with, as text.
fn psk_identity(auth: &crate::core::access::PeerAuth) -> Option<String> {
    match auth {
        crate::core::access::PeerAuth::Dtls(wasmdm_proto::dtls::PeerIdentity::Psk(id)) => {
            Some(String::from_utf8_lossy(id).into_owned())
        }
        _ => None,
    }
}
