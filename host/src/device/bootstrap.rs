//! Client-initiated bootstrap on the device (LwM2M 1.1 Core §5.2, §6.1):
//! which account the device registers with, when it bootstraps, and the
//! tokio loop that drives [`BootstrapClient`] over the device's socket.
//!
//! Accounts, in order of precedence:
//! 1. the accounts a bootstrap provisioned, in `<data-dir>/bootstrap/accounts.json`
//!    (mode 0600 in a 0700 directory: it holds keys), when one of them is usable;
//! 2. the factory server account (`server` and its keys in device.toml);
//! 3. none: the device bootstraps first, from the factory bootstrap account
//!    (`bootstrap-server` and its keys), retrying with back-off until it succeeds.
//!
//! A bootstrap writes into a staged copy held by the engine; the file is
//! replaced atomically only when Bootstrap-Finish passed its check, before
//! the 2.04 goes out. Cut off earlier (kill -9, lost datagrams, wrong key,
//! timeout), the previous file, and so the previous working account, stays.
//! /9 and /14 (installed software) are never touched.
//!
//! Bootstrap again (Core 1.1 §E.2):
//! - when the server executes /1/x/9 Bootstrap-Request Trigger;
//! - when Register has failed `Communication Retry Count × Communication
//!   Sequence Retry Count` times in a row (/1/x/17 × /1/x/20, default 5 × 1;
//!   the attempts are `Communication Retry Timer` /1/x/18, default 60 s,
//!   doubling) and /1/x/16 Bootstrap on Registration Failure is true (the
//!   default). That re-bootstrap is one attempt: if it fails the device
//!   goes back to its previous account and counts again.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use wasmdm_proto::bootstrap::{
    Accounts, BootstrapClient, BootstrapEvent, Config as BootstrapConfig, ObjectLinks,
    UsableAccount,
};
use wasmdm_proto::dtls::ClientCredentials;
use wasmdm_proto::objects::{Security, Server};

use super::config::{DeviceConfig, host_of, uri_authority};
use super::security::{self, Account};
use super::transport::Transport;
use super::{DeviceError, Driver, resolve, transient};

/// The account the device registers with.
#[derive(Debug)]
pub(crate) struct Active {
    pub security: Security,
    pub server: Server,
    /// `host:port` of the server.
    pub authority: String,
    pub credentials: Option<ClientCredentials>,
}

impl Active {
    fn from_usable(u: UsableAccount) -> Active {
        Active {
            security: u.security,
            server: u.server,
            authority: u.authority,
            credentials: u.credentials,
        }
    }

    /// The server's address (DNS looked up now).
    async fn resolve(&self) -> Result<SocketAddr, DeviceError> {
        resolve(&self.authority).await
    }
}

/// The provisioned accounts on disk.
pub(crate) struct AccountStore {
    dir: PathBuf,
    file: PathBuf,
}

/// The file's form of a /0 instance: key material as hex.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecurity {
    instance: u16,
    uri: String,
    bootstrap: bool,
    mode: i64,
    ssid: u16,
    identity: String,
    server_key: String,
    secret: String,
    #[serde(default)]
    hold_off: u64,
    #[serde(default)]
    account_timeout: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccounts {
    version: u32,
    security: Vec<StoredSecurity>,
    servers: Vec<Server>,
}

impl AccountStore {
    pub(crate) fn new(data_dir: &Path) -> AccountStore {
        let dir = data_dir.join("bootstrap");
        AccountStore {
            file: dir.join("accounts.json"),
            dir,
        }
    }

    /// The stored accounts; `None` when there are none or the file is
    /// unusable (then the factory configuration applies, with a warning).
    pub(crate) fn load(&self) -> Option<Accounts> {
        let bytes = match std::fs::read(&self.file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(file = %self.file.display(), "cannot read the provisioned accounts: {e}");
                return None;
            }
        };
        let parsed = serde_json::from_slice::<StoredAccounts>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(from_stored);
        match parsed {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(file = %self.file.display(), "ignoring unusable provisioned accounts: {e}");
                None
            }
        }
    }

    /// Replaces the file atomically (temp, fsync, rename, fsync dir), 0600.
    pub(crate) fn save(&self, accounts: &Accounts) -> Result<(), String> {
        create_private_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let bytes = serde_json::to_vec_pretty(&to_stored(accounts)).map_err(|e| e.to_string())?;
        crate::state::atomic_write_private(&self.file, &bytes).map_err(|e| e.to_string())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn to_stored(a: &Accounts) -> StoredAccounts {
    StoredAccounts {
        version: 1,
        security: a
            .security
            .iter()
            .map(|(i, s)| StoredSecurity {
                instance: *i,
                uri: s.server_uri.clone(),
                bootstrap: s.bootstrap,
                mode: s.security_mode,
                ssid: s.short_server_id,
                identity: hex::encode(&s.public_key_or_identity),
                server_key: hex::encode(&s.server_public_key),
                secret: hex::encode(&s.secret_key),
                hold_off: s.client_hold_off,
                account_timeout: s.account_timeout,
            })
            .collect(),
        servers: a.servers.values().cloned().collect(),
    }
}

fn from_stored(s: StoredAccounts) -> Result<Accounts, String> {
    if s.version != 1 {
        return Err(format!("unknown version {}", s.version));
    }
    let mut a = Accounts::default();
    for r in s.security {
        let bytes = |h: &str| hex::decode(h).map_err(|_| "bad hex".to_string());
        let mut sec = Security::nosec(r.uri, r.ssid);
        sec.bootstrap = r.bootstrap;
        sec.security_mode = r.mode;
        sec.public_key_or_identity = bytes(&r.identity)?;
        sec.server_public_key = bytes(&r.server_key)?;
        sec.secret_key = bytes(&r.secret)?;
        sec.client_hold_off = r.hold_off;
        sec.account_timeout = r.account_timeout;
        a.security.insert(r.instance, sec);
    }
    for srv in s.servers {
        a.servers.insert(srv.instance, srv);
    }
    Ok(a)
}

/// Why the device bootstraps now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Trigger,
    RegistrationFailed,
}

/// Accounts and bootstrap policy of one device run.
pub(crate) struct Provisioning {
    factory_bootstrap: Option<Account>,
    factory_server: Option<Account>,
    stored: Option<Accounts>,
    pub(crate) store: AccountStore,
    allow_nosec: bool,
    timeout: Duration,
    retry: Duration,
    lifetime: u32,
    endpoint: String,
    /// Register failures since the last registration or bootstrap.
    failed_registers: u32,
    /// /1/x/16 and the failure count of the active account.
    bootstrap_on_failure: bool,
    attempts_until_failure: u32,
    due: Option<Reason>,
}

impl Provisioning {
    /// Reads the factory accounts (credential files, once) and the stored ones.
    pub(crate) fn load(config: &DeviceConfig) -> Result<Provisioning, DeviceError> {
        let factory_bootstrap = security::bootstrap_account(config)?;
        let factory_server = match config.server_uri() {
            Some(_) => Some(security::account(config, 1)?),
            None => None,
        };
        let store = AccountStore::new(&config.data_dir);
        let stored = store.load();
        Ok(Provisioning {
            factory_bootstrap,
            factory_server,
            stored,
            store,
            allow_nosec: config.bootstrap_allow_nosec,
            timeout: Duration::from_secs(config.bootstrap_timeout.max(1)),
            retry: Duration::from_secs(config.bootstrap_retry.max(1)),
            lifetime: config.lifetime,
            endpoint: config.endpoint.clone(),
            failed_registers: 0,
            bootstrap_on_failure: false,
            attempts_until_failure: u32::MAX,
            due: None,
        })
    }

    /// The account to register with now, if there is a usable one.
    pub(crate) fn active(&mut self, config: &DeviceConfig) -> Result<Option<Active>, DeviceError> {
        if let Some(stored) = &self.stored {
            match stored.check(self.allow_nosec) {
                Ok(mut usable) if !usable.is_empty() => {
                    let active = Active::from_usable(usable.swap_remove(0));
                    self.follow(&active);
                    return Ok(Some(active));
                }
                Ok(_) => {}
                Err(why) => warn!(
                    "the provisioned accounts are not usable ({why}); using the factory configuration"
                ),
            }
        }
        let Some(account) = &self.factory_server else {
            return Ok(None);
        };
        let active = Active {
            security: account.security.clone(),
            server: Server::new(1, u64::from(self.lifetime)),
            authority: config.server_addr()?,
            credentials: account.credentials.clone(),
        };
        self.follow(&active);
        Ok(Some(active))
    }

    /// Takes the retry policy of the account the device now uses.
    fn follow(&mut self, active: &Active) {
        let policy = active.server.retry_policy();
        self.bootstrap_on_failure = active.server.bootstrap_on_failure;
        self.attempts_until_failure = policy.attempts_until_failure();
        self.failed_registers = 0;
    }

    /// The bootstrap account: the stored one (a bootstrap server may
    /// rotate it), else the factory one.
    fn bootstrap_security(&self) -> Option<Security> {
        self.stored
            .as_ref()
            .and_then(|a| a.security.values().find(|s| s.bootstrap).cloned())
            .or_else(|| self.factory_bootstrap.as_ref().map(|a| a.security.clone()))
    }

    /// What /0 and /1 hold now, as the bootstrap server will see them.
    fn current(&self) -> Accounts {
        if let Some(stored) = &self.stored {
            let mut a = stored.clone();
            if !a.security.values().any(|s| s.bootstrap)
                && let Some(bs) = &self.factory_bootstrap
            {
                let free = (0..=u16::MAX)
                    .find(|i| !a.security.contains_key(i))
                    .unwrap_or(0);
                a.security.insert(free, bs.security.clone());
            }
            return a;
        }
        let mut a = Accounts::default();
        if let Some(bs) = &self.factory_bootstrap {
            a.security.insert(0, bs.security.clone());
        }
        if let Some(srv) = &self.factory_server {
            a.security.insert(1, srv.security.clone());
            a.servers
                .insert(0, Server::new(1, u64::from(self.lifetime)));
        }
        a
    }

    /// The bootstrap engine, aimed at the bootstrap server.
    async fn engine(
        &self,
        others: Vec<ObjectLinks>,
    ) -> Result<
        Option<(
            BootstrapClient,
            SocketAddr,
            String,
            Option<ClientCredentials>,
        )>,
        DeviceError,
    > {
        let Some(bs) = self.bootstrap_security() else {
            return Ok(None);
        };
        // The factory account's own credentials where it is the one in use:
        // /0/x/4 holds one certificate, taken as pinned, which would lose
        // the `bootstrap-server-ca` trust (a CA, possibly several).
        let factory = self
            .factory_bootstrap
            .as_ref()
            .filter(|f| f.security == bs)
            .map(|f| f.credentials.clone());
        let creds = match factory {
            Some(c) => c,
            None => match wasmdm_proto::bootstrap::accounts::credentials(&bs, self.allow_nosec) {
                Ok(c) => c,
                Err(why) => {
                    warn!("the bootstrap account is not usable: {why}");
                    return Ok(None);
                }
            },
        };
        let authority = uri_authority(&bs.server_uri)?;
        let addr = resolve(&authority).await?;
        let mut cfg = BootstrapConfig::new(self.endpoint.clone(), addr, super::seed());
        cfg.timeout = self.timeout;
        cfg.retry_base = self.retry;
        cfg.allow_nosec = self.allow_nosec;
        cfg.hold_off = Duration::from_secs(bs.client_hold_off);
        cfg.other_objects = others;
        let host = host_of(&authority).to_string();
        Ok(Some((
            BootstrapClient::new(cfg, self.current()),
            addr,
            host,
            creds,
        )))
    }

    /// A Register attempt failed; bootstrap is due when the retry policy
    /// is used up and /1/x/16 allows it.
    pub(crate) fn register_failed(&mut self) {
        self.failed_registers = self.failed_registers.saturating_add(1);
        if self.bootstrap_on_failure
            && self.failed_registers >= self.attempts_until_failure
            && self.bootstrap_security().is_some()
        {
            self.due = Some(Reason::RegistrationFailed);
        }
    }

    /// Registered: the failure count starts over.
    pub(crate) fn registered(&mut self) {
        self.failed_registers = 0;
    }

    /// /1/x/9 Bootstrap-Request Trigger.
    pub(crate) fn trigger(&mut self) {
        if self.bootstrap_security().is_some() {
            self.due = Some(Reason::Trigger);
        } else {
            warn!("Bootstrap-Request Trigger executed, but the device has no bootstrap account");
        }
    }

    /// True when a bootstrap should start now.
    pub(crate) fn due(&self) -> bool {
        self.due.is_some()
    }

    /// Describes the accounts for the start-up log line (no secrets).
    pub(crate) fn describe(&self, active: Option<&Active>) -> String {
        match active {
            Some(a) => a.security.server_uri.clone(),
            None => format!(
                "none yet: bootstrapping from {}",
                self.bootstrap_security()
                    .map(|s| s.server_uri)
                    .unwrap_or_else(|| "nowhere".into())
            ),
        }
    }
}

/// How a bootstrap session ended.
enum SessionEnd {
    Provisioned(Vec<UsableAccount>),
    GaveUp,
    Stopped,
}

/// Runs the bootstrap engine over `transport` until Finish succeeded, or
/// (with `once`) the first attempt failed, or `stop` completed.
async fn session<F: Future<Output = ()>>(
    transport: &mut Transport,
    engine: &mut BootstrapClient,
    provisioning: &mut Provisioning,
    mut stop: Pin<&mut F>,
    once: bool,
) -> Result<SessionEnd, DeviceError> {
    let mut buf = vec![0u8; 4096];
    engine.start(Instant::now());
    let mut provisioned: Option<Vec<UsableAccount>> = None;
    loop {
        loop {
            transport.flush(Instant::now(), engine).await;
            let mut handled = false;
            while let Some(event) = engine.poll_event() {
                handled = true;
                match event {
                    BootstrapEvent::Requested { attempt } => {
                        info!(attempt, "bootstrap: Bootstrap-Request sent")
                    }
                    BootstrapEvent::Accepted => info!("bootstrap: the bootstrap server accepted"),
                    BootstrapEvent::Answered { method, path, code } => {
                        info!(op = super::operation_name(&method), %path, %code, "bootstrap")
                    }
                    BootstrapEvent::Finished { accounts, usable } => {
                        let servers: Vec<String> = usable
                            .iter()
                            .map(|u| {
                                format!(
                                    "{} (ssid {})",
                                    u.security.server_uri, u.security.short_server_id
                                )
                            })
                            .collect();
                        info!(servers = %servers.join(", "), "bootstrap: Bootstrap-Finish is consistent; storing the accounts");
                        let result = provisioning.store.save(&accounts);
                        if let Err(e) = &result {
                            warn!("bootstrap: cannot store the accounts: {e}");
                        } else {
                            provisioning.stored = Some(accounts);
                            provisioned = Some(usable);
                        }
                        engine.finish_stored(Instant::now(), result);
                    }
                    BootstrapEvent::Rejected { reason } => {
                        warn!(%reason, "bootstrap: Bootstrap-Finish refused (4.06)")
                    }
                    BootstrapEvent::Failed {
                        attempt,
                        reason,
                        retry_in,
                    } => {
                        warn!(attempt, retry_in = ?retry_in, "bootstrap failed: {reason}");
                        if once {
                            transport.flush(Instant::now(), engine).await;
                            return Ok(SessionEnd::GaveUp);
                        }
                    }
                    BootstrapEvent::Done => info!("bootstrap finished"),
                }
            }
            if !handled {
                break;
            }
        }
        if let Some(usable) = provisioned.take() {
            return Ok(SessionEnd::Provisioned(usable));
        }
        let deadline = [engine.poll_timeout(), transport.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            received = transport.socket.recv_from(&mut buf) => {
                if let Some((n, from)) = transient(received)? {
                    let bytes = buf.get(..n).unwrap_or_default();
                    transport.inbound(Instant::now(), from, bytes, engine);
                }
            }
            () = super::sleep_until(deadline) => {
                let now = Instant::now();
                engine.handle_timeout(now);
                transport.handle_timeout(now, engine);
            }
            () = &mut stop => return Ok(SessionEnd::Stopped),
        }
    }
}

/// Opens the transport to the account the device registers with,
/// bootstrapping first when it has none. `None`: stopped meanwhile.
pub(crate) async fn connect<F: Future<Output = ()>>(
    socket: super::socket::DeviceSocket,
    config: &DeviceConfig,
    provisioning: &mut Provisioning,
    stop: Pin<&mut F>,
) -> Result<Option<(Transport, Active, SocketAddr)>, DeviceError> {
    if let Some(active) = provisioning.active(config)? {
        let addr = active.resolve().await?;
        let transport = Transport::new(
            socket,
            addr,
            host_of(&active.authority),
            active.credentials.clone(),
        )?;
        return Ok(Some((transport, active, addr)));
    }
    let others = discoverable(Vec::new(), Vec::new());
    let Some((mut engine, addr, host, creds)) = provisioning.engine(others).await? else {
        return Err(DeviceError::NoAccount);
    };
    info!(server = %addr, "no usable server account: bootstrapping");
    let mut transport = Transport::new(socket, addr, &host, creds)?;
    match session(&mut transport, &mut engine, provisioning, stop, false).await? {
        SessionEnd::Provisioned(mut usable) if !usable.is_empty() => {
            let active = Active::from_usable(usable.swap_remove(0));
            provisioning.follow(&active);
            let addr = active.resolve().await?;
            let bootstrap =
                transport.retarget(addr, host_of(&active.authority), active.credentials.clone())?;
            transport.close(Instant::now(), bootstrap).await;
            Ok(Some((transport, active, addr)))
        }
        _ => Ok(None),
    }
}

impl Driver {
    /// /1/x/9 executed: bootstrap after the answer went out.
    pub(super) fn bootstrap_requested(&mut self) {
        self.provisioning.trigger();
    }

    /// Bootstraps again (trigger, or registration failure) and moves to
    /// the provisioned account; one attempt, after which a failure leaves
    /// the current account in place. `false`: stopped meanwhile.
    pub(super) async fn rebootstrap<F: Future<Output = ()>>(
        &mut self,
        stop: Pin<&mut F>,
    ) -> Result<bool, DeviceError> {
        let reason = self.provisioning.due.take();
        self.provisioning.failed_registers = 0;
        let Some((mut engine, addr, host, creds)) =
            self.provisioning.engine(self.object_links()).await?
        else {
            return Ok(true);
        };
        info!(server = %addr, reason = ?reason, "bootstrapping");
        let previous = self.transport.retarget(addr, &host, creds)?;
        let end = session(
            &mut self.transport,
            &mut engine,
            &mut self.provisioning,
            stop,
            true,
        )
        .await?;
        let usable = match end {
            SessionEnd::Provisioned(u) => u,
            SessionEnd::GaveUp => {
                info!("bootstrap: keeping the previous server account");
                let bootstrap = self.transport.restore(previous);
                self.transport.close(Instant::now(), bootstrap).await;
                return Ok(true);
            }
            SessionEnd::Stopped => {
                self.transport.restore(previous);
                return Ok(false);
            }
        };
        let Some(active) = usable.into_iter().next().map(Active::from_usable) else {
            self.transport.restore(previous);
            return Ok(true);
        };
        self.provisioning.follow(&active);
        let server = active.resolve().await?;
        let bootstrap = self.transport.retarget(
            server,
            host_of(&active.authority),
            active.credentials.clone(),
        )?;
        // Both old associations end: the bootstrap server's, and the old
        // server's (which may be the new server too: it must accept a new
        // handshake from this address, with the new credentials).
        self.transport.close(Instant::now(), bootstrap).await;
        self.transport.close(Instant::now(), previous).await;
        let retry_base = Duration::from_secs(active.server.retry_policy().retry_timer.max(1));
        let now = Instant::now();
        // The provisioned /1 is the new base: what the previous server wrote
        // is forgotten (server_settings.rs).
        self.server = super::shared::Shared::new(active.server.clone());
        self.server_base = active.server;
        self.client.retarget(
            now,
            server,
            Box::new(active.security),
            Box::new(self.server.clone()),
            retry_base,
        );
        info!(%server, "registering with the provisioned server");
        self.client.start(now);
        Ok(true)
    }

    /// The objects besides /0 and /1, for Bootstrap-Discover.
    fn object_links(&self) -> Vec<ObjectLinks> {
        use wasmdm_proto::object::Object;
        discoverable(
            self.swmgmt.lock().instances(),
            self.swcomp.lock().instances(),
        )
    }
}

/// /3, /9 and /14 with their instances and the wasmdm Engine object
/// (/26500): the objects the device registers with besides /0 and /1, so a
/// bootstrap server's Discover sees what it will manage.
fn discoverable(packages: Vec<u16>, components: Vec<u16>) -> Vec<ObjectLinks> {
    let links = |id: u16, instances: Vec<u16>| ObjectLinks {
        id,
        version: None,
        instances,
    };
    vec![
        links(3, vec![0]),
        links(9, packages),
        links(14, components),
        links(wasmdm_proto::objects::engine::OBJECT_ID, vec![0]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        let mut bs = Security::nosec("coaps://bs.example:5784", 0);
        bs.bootstrap = true;
        bs.security_mode = 0;
        bs.public_key_or_identity = b"bs-id".to_vec();
        bs.secret_key = b"bootstrap-key-16".to_vec();
        let mut srv = Security::nosec("coaps://lwm2m.example:5684", 101);
        srv.security_mode = 0;
        srv.public_key_or_identity = b"dev".to_vec();
        srv.secret_key = b"server-key-0016!".to_vec();
        srv.client_hold_off = 3;
        let mut a = Accounts::default();
        a.security.insert(0, bs);
        a.security.insert(4, srv);
        let mut s = Server::new(101, 120);
        s.instance = 2;
        s.retry_count = Some(2);
        a.servers.insert(2, s);
        a
    }

    fn provisioning(dir: &Path, stored: Option<Accounts>) -> Provisioning {
        let config = DeviceConfig {
            server: "coaps://127.0.0.1:5684".into(),
            psk_identity: Some("dev".into()),
            psk_key: Some(crate::device::config::Secret::new(
                "00112233445566778899aabbccddeeff",
            )),
            bootstrap_server: Some("coaps://127.0.0.1:5784".into()),
            bootstrap_psk_identity: Some("bs".into()),
            bootstrap_psk_key: Some(crate::device::config::Secret::new("0011223344556677")),
            data_dir: dir.to_path_buf(),
            ..DeviceConfig::default()
        };
        if let Some(a) = stored {
            AccountStore::new(dir).save(&a).unwrap();
        }
        let mut p = Provisioning::load(&config).unwrap();
        assert!(p.active(&config).unwrap().is_some());
        p
    }

    #[test]
    fn registration_failures_lead_to_bootstrap_per_the_server_object() {
        let dir = tempfile::tempdir().unwrap();
        // Factory server account: defaults 5 x 1 attempts, /1/x/16 true.
        let mut p = provisioning(dir.path(), None);
        for _ in 0..4 {
            p.register_failed();
        }
        assert!(!p.due());
        p.registered();
        for _ in 0..4 {
            p.register_failed();
        }
        assert!(!p.due(), "a registration in between starts the count over");
        p.register_failed();
        assert!(p.due());
        assert_eq!(p.due, Some(Reason::RegistrationFailed));

        // Provisioned: /1/x/17 = 2 (sequence retry count 1) -> after 2.
        let dir = tempfile::tempdir().unwrap();
        let mut p = provisioning(dir.path(), Some(accounts()));
        p.register_failed();
        assert!(!p.due());
        p.register_failed();
        assert!(p.due());

        // /1/x/16 false: never.
        let dir = tempfile::tempdir().unwrap();
        let mut a = accounts();
        a.servers.get_mut(&2).unwrap().bootstrap_on_failure = false;
        let mut p = provisioning(dir.path(), Some(a));
        for _ in 0..10 {
            p.register_failed();
        }
        assert!(!p.due());
        // The trigger (/1/x/9) still works.
        p.trigger();
        assert_eq!(p.due, Some(Reason::Trigger));
    }

    #[test]
    fn the_current_accounts_show_the_factory_ones_until_provisioned() {
        let dir = tempfile::tempdir().unwrap();
        let p = provisioning(dir.path(), None);
        let a = p.current();
        assert!(a.security[&0].bootstrap);
        assert_eq!(a.security[&1].server_uri, "coaps://127.0.0.1:5684");
        assert_eq!(a.servers[&0].short_server_id, 1);
        // Provisioned accounts replace them, their bootstrap account (a
        // rotated one) included.
        let dir = tempfile::tempdir().unwrap();
        let p = provisioning(dir.path(), Some(accounts()));
        assert_eq!(p.current(), accounts());
        assert_eq!(
            p.bootstrap_security().unwrap().secret_key,
            b"bootstrap-key-16"
        );
    }

    #[test]
    fn a_factory_bootstrap_account_is_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let base = DeviceConfig {
            bootstrap_server: Some("coap://127.0.0.1:5783".into()),
            data_dir: dir.path().to_path_buf(),
            ..DeviceConfig::default()
        };
        // Plain CoAP carries the keys in clear: only when allowed.
        let e = Provisioning::load(&base).err().unwrap();
        assert!(e.to_string().contains("bootstrap-allow-nosec"), "{e}");
        let allowed = DeviceConfig {
            bootstrap_allow_nosec: true,
            ..base.clone()
        };
        let mut p = Provisioning::load(&allowed).unwrap();
        assert!(p.active(&allowed).unwrap().is_none(), "bootstraps first");
        // PSK without a key names the bootstrap keys.
        let psk = DeviceConfig {
            bootstrap_server: Some("coaps://127.0.0.1:5784".into()),
            bootstrap_psk_identity: Some("bs".into()),
            ..base
        };
        let e = Provisioning::load(&psk).err().unwrap();
        assert!(
            e.to_string()
                .contains("bootstrap-psk-key or bootstrap-psk-key-file"),
            "{e}"
        );
    }

    #[test]
    fn the_store_round_trips_privately_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::new(dir.path());
        assert!(store.load().is_none());
        store.save(&accounts()).unwrap();
        assert_eq!(store.load().unwrap(), accounts());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&store.file), 0o600);
            assert_eq!(mode(&store.dir), 0o700);
        }
        // No temp file left, nothing else in the directory.
        assert_eq!(std::fs::read_dir(&store.dir).unwrap().count(), 1);
        // A damaged file is ignored (the factory configuration applies).
        std::fs::write(&store.file, b"{\"version\":1,\"security\":[{").unwrap();
        assert!(store.load().is_none());
    }
}
