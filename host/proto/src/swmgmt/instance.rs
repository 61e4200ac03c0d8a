//! One /9 instance: its two state machines (SwMgmt §5.1 Package
//! Installation, §5.2 Software Activation) as data, and the transitions on it.

use serde::{Deserialize, Serialize};

use crate::execargs;
use crate::model::{ResourceValue, Value};
use crate::object::{OpError, SwMgmtAction, objlnk};

use super::*;

/// One /9 instance: a package and its two state machines (SwMgmt §5.1, §5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageInstance {
    pub pkg_name: String,
    pub pkg_version: String,
    pub update_state: UpdateState,
    pub update_result: UpdateResult,
    /// Activation State (12): true only when INSTALLED and ACTIVE (§5.2).
    pub activation: bool,
    pub status_reason: StatusReason,
    pub package_uri: Option<String>,
    /// User Name (14): write-only.
    pub username: Option<String>,
    /// Password (15): write-only, never read back.
    pub password: Option<String>,
    pub update_supported_objects: bool,
    /// Set by Uninstall(1): the next Install upgrades the software in place (§5.1.3.2).
    pub for_update: bool,
    /// Software Component Link (17): ids of /14 instances.
    pub component_links: Vec<u16>,
    pub delivery: Option<Delivery>,
    /// Install was executed and the driver has not reported its end yet.
    pub installing: bool,
    /// Activate/Deactivate was executed and the driver has not reported its end yet.
    pub activation_target: Option<bool>,
    /// Uninstall was executed and the driver has not reported its end yet.
    pub removal: Option<Removal>,
}

impl Default for PackageInstance {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks a Package URI: scheme://authority..., ASCII without spaces, at
/// most 255 bytes (§6 resource 3), and a scheme the driver can fetch.
fn check_uri(uri: &str, config: &SwMgmtConfig) -> Result<(), &'static str> {
    if uri.is_empty() {
        return Err("empty Package URI");
    }
    if uri.len() > MAX_STRING {
        return Err("Package URI longer than 255 bytes");
    }
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Package URI holds spaces, controls or non-ASCII");
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or("Package URI has no scheme://")?;
    // RFC 3986 §3.1: schemes compare case-insensitively.
    let scheme = scheme.to_ascii_lowercase();
    let supported = match scheme.as_str() {
        "coap" | "http" => true,
        "coaps" => config.coaps,
        "https" => config.https,
        _ => false,
    };
    if !supported {
        return Err("unsupported Package URI scheme");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err("Package URI has no host");
    }
    Ok(())
}

impl PackageInstance {
    /// A fresh instance: INITIAL, Update Result 0, DISABLED, Idle (§5.1.2.1).
    pub fn new() -> Self {
        PackageInstance {
            pkg_name: String::new(),
            pkg_version: String::new(),
            update_state: UpdateState::Initial,
            update_result: UpdateResult::Initial,
            activation: false,
            status_reason: StatusReason::Idle,
            package_uri: None,
            username: None,
            password: None,
            update_supported_objects: false,
            for_update: false,
            component_links: Vec::new(),
            delivery: None,
            installing: false,
            activation_target: None,
            removal: None,
        }
    }

    pub(super) fn set_state(&mut self, state: UpdateState, ch: &mut Changes) {
        if self.update_state != state {
            // §5.2: leaving INSTALLED reads DISABLED (the machine is not alive).
            let before = self.reported_activation();
            self.update_state = state;
            ch.resources.insert(res::UPDATE_STATE);
            if self.reported_activation() != before {
                ch.resources.insert(res::ACTIVATION_STATE);
            }
        }
    }

    pub(super) fn set_result(&mut self, result: UpdateResult, ch: &mut Changes) {
        if self.update_result != result {
            self.update_result = result;
            ch.resources.insert(res::UPDATE_RESULT);
        }
    }

    /// Activation State (12) as read and notified: the state the activation
    /// machine is in, which after an accepted Activate/Deactivate is its
    /// target. SwMgmt §5.2: "the transition from the INACTIVE State to the
    /// ACTIVE State occurs when the Activate Executable Resource is
    /// triggered" (and back on Deactivate), and "the Activation State
    /// resource is set accordingly". So a Read right after the 2.04 already
    /// shows it; should the runtime then fail to start (or stop) the
    /// software, [`PackageInstance::activation_finished`] sets it back and
    /// the change is notified. `activation` itself stays what the runtime
    /// last confirmed (what a restart acts on, with `activation_target`).
    pub fn reported_activation(&self) -> bool {
        self.update_state == UpdateState::Installed
            && self.activation_target.unwrap_or(self.activation)
    }

    /// Sets the confirmed state (and clears the target), noting a change of
    /// the reported value for notification.
    pub(super) fn set_activation(&mut self, active: bool, ch: &mut Changes) {
        let before = self.reported_activation();
        self.activation = active;
        self.activation_target = None;
        if self.reported_activation() != before {
            ch.resources.insert(res::ACTIVATION_STATE);
        }
    }

    pub(super) fn set_reason(&mut self, reason: StatusReason, ch: &mut Changes) {
        if self.status_reason != reason {
            self.status_reason = reason;
            ch.resources.insert(res::STATUS_REASON);
        }
    }

    pub(super) fn set_name(&mut self, name: String, version: String, ch: &mut Changes) {
        if self.pkg_name != name {
            self.pkg_name = name;
            ch.resources.insert(res::PKG_NAME);
        }
        if self.pkg_version != version {
            self.pkg_version = version;
            ch.resources.insert(res::PKG_VERSION);
        }
    }

    pub(super) fn set_links(&mut self, links: Vec<u16>, ch: &mut Changes) {
        if self.component_links != links {
            if self.component_links.len() != links.len() {
                ch.resources.insert(res::COMPONENT_TREE_LENGTH);
            }
            self.component_links = links;
            ch.resources.insert(res::COMPONENT_LINK);
            // SwMgmt §6 resource 8: /14 instances changed, so the registered
            // objects changed: update now if asked, else at the next periodic Update.
            ch.registration_update = self.update_supported_objects;
        }
    }

    /// Back to INITIAL after a failed delivery; the partial package is deleted (§5.1.2.2, §5.1.2.3).
    fn fail_delivery(&mut self, result: UpdateResult) -> Changes {
        let mut ch = Changes::default();
        self.set_state(UpdateState::Initial, &mut ch);
        self.set_result(result, &mut ch);
        self.set_reason(StatusReason::DownloadFailed, &mut ch);
        self.delivery = None;
        self.package_uri = None;
        ch.action(SwMgmtAction::CancelDelivery)
    }

    /// Write to Package URI (3): starts a pull (SwMgmt §5.1.1 "PKG/URI Write",
    /// §5.1.2.1). Writable in INITIAL only; an empty, malformed or
    /// unsupported URI answers 4.00 and sets Update Result 56, state unchanged.
    pub fn write_package_uri(
        &mut self,
        uri: &str,
        config: &SwMgmtConfig,
    ) -> Result<Changes, Refusal> {
        if self.update_state != UpdateState::Initial {
            return Err(
                OpError::MethodNotAllowed("Package URI is writable in INITIAL only").into(),
            );
        }
        if let Err(why) = check_uri(uri, config) {
            let mut changes = Changes::default();
            self.set_result(UpdateResult::InvalidUri, &mut changes);
            return Err(Refusal {
                error: OpError::BadRequest(why.to_owned()),
                changes,
            });
        }
        let mut ch = Changes::default();
        self.package_uri = Some(uri.to_owned());
        self.delivery = Some(Delivery {
            kind: DeliveryKind::Pull,
            received: 0,
            total: None,
            complete: false,
        });
        self.set_state(UpdateState::DownloadStarted, &mut ch);
        self.set_result(UpdateResult::Downloading, &mut ch);
        self.set_reason(StatusReason::DownloadProgressing, &mut ch);
        Ok(ch.action(SwMgmtAction::Download {
            uri: uri.to_owned(),
            username: self.username.clone(),
            password: self.password.clone(),
        }))
    }

    /// One piece of a push to Package (2) (SwMgmt §5.1.2.1; RFC 7959 §2.5 for
    /// a restart at offset 0). The first piece moves INITIAL to DOWNLOAD
    /// STARTED; pieces must follow each other; after the last the driver
    /// stores, then reports [`PackageInstance::package_written`].
    pub fn write_package_block(
        &mut self,
        offset: u64,
        bytes: &[u8],
        last: bool,
        config: &SwMgmtConfig,
    ) -> Result<Changes, Refusal> {
        let len = bytes.len() as u64;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| OpError::BadRequest("package offset overflows".into()))?;
        if let Some(limit) = config.max_package_bytes
            && end > limit
        {
            return Err(OpError::TooLarge { limit: Some(limit) }.into());
        }
        let mut ch = Changes::default();
        match (self.update_state, &mut self.delivery) {
            (UpdateState::Initial, _) => {
                if offset != 0 {
                    return Err(
                        OpError::BadRequest("package push must start at offset 0".into()).into(),
                    );
                }
                if last && bytes.is_empty() {
                    // An empty Package is no package: nothing to deliver, nothing changes.
                    return Err(OpError::BadRequest("empty Package".into()).into());
                }
                self.delivery = Some(Delivery {
                    kind: DeliveryKind::Push,
                    received: len,
                    total: None,
                    complete: last,
                });
                self.package_uri = None;
                self.set_state(UpdateState::DownloadStarted, &mut ch);
                self.set_result(UpdateResult::Downloading, &mut ch);
                self.set_reason(StatusReason::DownloadProgressing, &mut ch);
            }
            (UpdateState::DownloadStarted, Some(d))
                if d.kind == DeliveryKind::Push && !d.complete =>
            {
                // Offset 0 restarts the push (RFC 7959 §2.5); otherwise pieces must be contiguous.
                if offset == 0 && last && bytes.is_empty() {
                    return Err(OpError::BadRequest("empty Package".into()).into());
                }
                if offset != 0 && offset != d.received {
                    return Err(OpError::BadRequest(format!(
                        "package block at {offset}, expected {}",
                        d.received
                    ))
                    .into());
                }
                d.received = end;
                d.complete = last;
            }
            _ => {
                return Err(
                    OpError::MethodNotAllowed("Package is writable in INITIAL only").into(),
                );
            }
        }
        Ok(ch.action(SwMgmtAction::StorePushed {
            offset,
            data: bytes.to_vec(),
            last,
        }))
    }

    /// The driver stored more of a pull (no resource changes; kept for resuming).
    pub fn download_progress(
        &mut self,
        received: u64,
        total: Option<u64>,
    ) -> Result<Changes, SwMgmtError> {
        match (self.update_state, &mut self.delivery) {
            (UpdateState::DownloadStarted, Some(d)) => {
                d.received = received;
                if total.is_some() {
                    d.total = total;
                }
                Ok(Changes::default())
            }
            (state, _) => Err(SwMgmtError::UnexpectedEvent {
                event: "download_progress",
                state,
            }),
        }
    }

    /// The delivery failed: "PKG Download Failed" (SwMgmt §5.1.1, §5.1.2.2):
    /// INITIAL, Update Result = the error, the partial package removed.
    pub fn download_failed(&mut self, result: UpdateResult) -> Result<Changes, SwMgmtError> {
        if self.update_state != UpdateState::DownloadStarted {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "download_failed",
                state: self.update_state,
            });
        }
        if !result.is_delivery_failure() {
            return Err(SwMgmtError::NotAFailure {
                kind: "download",
                result,
            });
        }
        Ok(self.fail_delivery(result))
    }

    /// "PKG Written" (SwMgmt §5.1.1, §5.1.2.3): DOWNLOADED, Update Result 0,
    /// and the driver checks integrity next.
    pub fn package_written(&mut self) -> Result<Changes, SwMgmtError> {
        if self.update_state != UpdateState::DownloadStarted {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "package_written",
                state: self.update_state,
            });
        }
        let mut ch = Changes::default();
        self.set_state(UpdateState::Downloaded, &mut ch);
        self.set_result(UpdateResult::Initial, &mut ch);
        self.set_reason(StatusReason::DownloadComplete, &mut ch);
        if let Some(d) = &mut self.delivery {
            d.complete = true;
        }
        Ok(ch.action(SwMgmtAction::VerifyIntegrity))
    }

    /// "PKG Integrity OK / not OK" (SwMgmt §5.1.1, §5.1.2.3). OK: DELIVERED
    /// with Update Result left at 0 (the scenario list: "after verification
    /// S=3 alone"), name and version from the package. Not OK: INITIAL with
    /// the error (53 usually), the package removed.
    pub fn integrity_checked(
        &mut self,
        outcome: Result<(String, String), UpdateResult>,
    ) -> Result<Changes, SwMgmtError> {
        if self.update_state != UpdateState::Downloaded {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "integrity_checked",
                state: self.update_state,
            });
        }
        match outcome {
            Ok((name, version)) => {
                let mut ch = Changes::default();
                self.set_state(UpdateState::Delivered, &mut ch);
                self.set_name(name, version, &mut ch);
                self.delivery = None;
                Ok(ch)
            }
            Err(result) if result.is_delivery_failure() => Ok(self.fail_delivery(result)),
            Err(result) => Err(SwMgmtError::NotAFailure {
                kind: "integrity",
                result,
            }),
        }
    }

    /// Execute Install (4) (SwMgmt §5.1.3.1): only in DELIVERED; elsewhere the
    /// spec says "no effect" and we answer 4.05 like common practice. The
    /// state moves when the driver reports [`PackageInstance::install_finished`].
    pub fn install(&mut self) -> Result<Changes, OpError> {
        if self.update_state != UpdateState::Delivered {
            return Err(OpError::MethodNotAllowed("Install needs DELIVERED"));
        }
        let mut ch = Changes::default();
        if self.installing {
            // Already handed to the driver: a repeated Execute adds nothing.
            return Ok(ch);
        }
        self.installing = true;
        self.set_reason(StatusReason::InstallProgressing, &mut ch);
        Ok(ch.action(SwMgmtAction::Install {
            upgrade: self.for_update,
        }))
    }

    /// The install ended (SwMgmt §5.1.1 "Install execution", §5.1.2.4, §5.2).
    /// Success: INSTALLED, result 2, activation machine born INACTIVE unless the
    /// driver says the software already runs. Status Reason stays 50: Appendix B
    /// has no "installed" value and "an installation has started" stays true.
    /// Failure: stays DELIVERED with the error (57/58), Status Reason 60.
    pub fn install_finished(
        &mut self,
        outcome: Result<Installed, UpdateResult>,
    ) -> Result<Changes, SwMgmtError> {
        if self.update_state != UpdateState::Delivered {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "install_finished",
                state: self.update_state,
            });
        }
        let mut ch = Changes::default();
        match outcome {
            Ok(done) => {
                self.installing = false;
                self.for_update = false;
                self.activation_target = None;
                self.package_uri = None;
                self.set_state(UpdateState::Installed, &mut ch);
                self.set_result(UpdateResult::Installed, &mut ch);
                self.set_activation(done.active, &mut ch);
                self.set_reason(StatusReason::InstallProgressing, &mut ch);
                self.set_name(done.name, done.version, &mut ch);
                self.set_links(done.components, &mut ch);
            }
            Err(result) if result.is_failure() => {
                self.installing = false;
                self.set_result(result, &mut ch);
                self.set_reason(StatusReason::InstallFailedWithData, &mut ch);
            }
            Err(result) => {
                return Err(SwMgmtError::NotAFailure {
                    kind: "install",
                    result,
                });
            }
        }
        Ok(ch)
    }

    /// Execute Uninstall (6) (SwMgmt §5.1.1, §5.1.2.4, §5.1.2.5, §5.1.3.2).
    ///
    /// - INSTALLED, no arg / 0: INITIAL, result 0, DISABLED, the software removed.
    /// - INSTALLED, 1 (ForUpdate): INITIAL, result 0, and the next Install
    ///   upgrades. What runs keeps running until then, but Activation State
    ///   reads 0: §5.2 says it is DISABLED whenever the activation machine is
    ///   not alive (not INSTALLED), and the scenario list expects A=0 notified.
    ///   Name, version and component links stay: the software is still there.
    /// - DELIVERED, no arg / 0: INITIAL, result unchanged, the package deleted.
    /// - DELIVERED, 1: 4.05 (nothing installed to prepare an update of).
    /// - Anywhere else: "no effect" in the spec; 4.05 like common practice.
    pub fn uninstall(&mut self, for_update: bool) -> Result<Changes, OpError> {
        let mut ch = Changes::default();
        match (self.update_state, for_update) {
            (UpdateState::Installed, false) => {
                self.set_state(UpdateState::Initial, &mut ch);
                self.set_result(UpdateResult::Initial, &mut ch);
                self.set_activation(false, &mut ch);
                self.set_reason(StatusReason::Idle, &mut ch);
                self.set_name(String::new(), String::new(), &mut ch);
                self.set_links(Vec::new(), &mut ch);
                self.for_update = false;
                self.activation_target = None;
                self.removal = Some(Removal::Remove);
                Ok(ch.action(SwMgmtAction::Remove))
            }
            (UpdateState::Installed, true) => {
                self.set_state(UpdateState::Initial, &mut ch);
                self.set_result(UpdateResult::Initial, &mut ch);
                self.set_activation(false, &mut ch);
                self.set_reason(StatusReason::Idle, &mut ch);
                self.for_update = true;
                self.activation_target = None;
                self.removal = Some(Removal::PrepareForUpdate);
                Ok(ch.action(SwMgmtAction::PrepareForUpdate))
            }
            (UpdateState::Delivered, false) => {
                if self.installing {
                    return Err(OpError::MethodNotAllowed("installation in progress"));
                }
                // §5.1.1 last row: "Update Result unchanged".
                self.set_state(UpdateState::Initial, &mut ch);
                self.set_reason(StatusReason::Idle, &mut ch);
                if !self.for_update {
                    self.set_name(String::new(), String::new(), &mut ch);
                }
                Ok(ch.action(SwMgmtAction::CancelDelivery))
            }
            (UpdateState::Delivered, true) => {
                Err(OpError::MethodNotAllowed("Uninstall(1) needs INSTALLED"))
            }
            _ => Err(OpError::MethodNotAllowed(
                "Uninstall needs INSTALLED or DELIVERED",
            )),
        }
    }

    /// The driver finished an Uninstall. A failed ForUpdate preparation sets
    /// Update Result 59 (OMA registry 9.xml), a failed removal 57; either only
    /// while the instance is still INITIAL (a newer delivery owns the result).
    pub fn uninstall_finished(&mut self, ok: bool) -> Result<Changes, SwMgmtError> {
        let Some(removal) = self.removal.take() else {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "uninstall_finished",
                state: self.update_state,
            });
        };
        let mut ch = Changes::default();
        if !ok && self.update_state == UpdateState::Initial {
            let result = match removal {
                Removal::PrepareForUpdate => {
                    self.for_update = false;
                    UpdateResult::UninstallForUpdateFailure
                }
                Removal::Remove => UpdateResult::DeviceDefined,
            };
            self.set_result(result, &mut ch);
        }
        Ok(ch)
    }

    /// Execute Activate (10) / Deactivate (11) (SwMgmt §5.2): only while the
    /// activation machine is alive (INSTALLED), else 4.05. Asking for the
    /// state it is in (or already heading to) answers 2.04 and changes nothing.
    pub fn set_active(&mut self, active: bool) -> Result<Changes, OpError> {
        if self.update_state != UpdateState::Installed {
            return Err(OpError::MethodNotAllowed(
                "Activate/Deactivate need INSTALLED",
            ));
        }
        let mut ch = Changes::default();
        if self.reported_activation() == active {
            return Ok(ch);
        }
        // §5.2: the transition happens on the Execute; the resource shows it
        // before the 2.04 goes out (see `reported_activation`).
        self.activation_target = Some(active);
        ch.resources.insert(res::ACTIVATION_STATE);
        Ok(ch.action(if active {
            SwMgmtAction::Activate
        } else {
            SwMgmtAction::Deactivate
        }))
    }

    /// The software this instance kept after Uninstall(1) was upgraded by an
    /// Install in another instance: it is no longer here. One package name
    /// lives in one /9 instance, so this one forgets it (name, version,
    /// component links) and stays INITIAL.
    pub fn released(&mut self) -> Result<Changes, SwMgmtError> {
        if self.update_state != UpdateState::Initial || !self.for_update {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "released",
                state: self.update_state,
            });
        }
        let mut ch = Changes::default();
        self.for_update = false;
        self.set_name(String::new(), String::new(), &mut ch);
        self.set_links(Vec::new(), &mut ch);
        ch.persist = true;
        Ok(ch)
    }

    /// The driver reports whether the package's software now runs (§5.2:
    /// Activation State ENABLED only when ACTIVE).
    pub fn activation_finished(&mut self, active: bool) -> Result<Changes, SwMgmtError> {
        if self.update_state != UpdateState::Installed {
            return Err(SwMgmtError::UnexpectedEvent {
                event: "activation_finished",
                state: self.update_state,
            });
        }
        let mut ch = Changes::default();
        // Notified only if this differs from what the Execute already showed
        // (a failed start or stop, §5.2).
        self.set_activation(active, &mut ch);
        Ok(ch)
    }

    /// Brings a state loaded after a restart back to something the driver can
    /// carry on from, returning the work to re-issue.
    ///
    /// Failure results are not kept across a restart (scenario list:
    /// "after restart S=0, R=0"); a pull resumes, an unfinished push cannot
    /// (the server's block sequence is gone) and ends with 52; a written
    /// package is verified again; an install or uninstall in flight is
    /// re-issued; active software is started again.
    pub fn restored(&mut self) -> Changes {
        let mut ch = Changes::default();
        if self.update_result.is_failure() {
            self.set_result(UpdateResult::Initial, &mut ch);
            let idle = if self.update_state == UpdateState::Delivered {
                StatusReason::DownloadComplete
            } else {
                StatusReason::Idle
            };
            self.set_reason(idle, &mut ch);
        }
        match self.removal {
            Some(Removal::Remove) => ch.actions.push(SwMgmtAction::Remove),
            Some(Removal::PrepareForUpdate) => ch.actions.push(SwMgmtAction::PrepareForUpdate),
            None => {}
        }
        match self.update_state {
            UpdateState::Initial => {}
            UpdateState::DownloadStarted => match &self.delivery {
                Some(d) if d.kind == DeliveryKind::Pull => {
                    if let Some(uri) = &self.package_uri {
                        ch.actions.push(SwMgmtAction::Download {
                            uri: uri.clone(),
                            username: self.username.clone(),
                            password: self.password.clone(),
                        });
                    } else {
                        let failed = self.fail_delivery(UpdateResult::ConnectionLost);
                        merge(&mut ch, failed);
                    }
                }
                _ => {
                    let failed = self.fail_delivery(UpdateResult::ConnectionLost);
                    merge(&mut ch, failed);
                }
            },
            UpdateState::Downloaded => ch.actions.push(SwMgmtAction::VerifyIntegrity),
            UpdateState::Delivered => {
                if self.installing {
                    ch.actions.push(SwMgmtAction::Install {
                        upgrade: self.for_update,
                    });
                }
            }
            UpdateState::Installed => {
                let want = self.activation_target.unwrap_or(self.activation);
                if want {
                    ch.actions.push(SwMgmtAction::Activate);
                } else if self.activation_target.is_some() {
                    ch.actions.push(SwMgmtAction::Deactivate);
                }
            }
        }
        ch
    }

    /// Value of a readable resource; write-only ones (2, 3, 14, 15) answer 4.05.
    pub fn read(&self, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        let single = |v: Value| Ok(Some(ResourceValue::Single(v)));
        match resource {
            res::PKG_NAME => single(Value::String(self.pkg_name.clone())),
            res::PKG_VERSION => single(Value::String(self.pkg_version.clone())),
            res::UPDATE_STATE => single(Value::Integer(self.update_state.code())),
            res::UPDATE_SUPPORTED_OBJECTS => single(Value::Boolean(self.update_supported_objects)),
            res::UPDATE_RESULT => single(Value::Integer(self.update_result.code())),
            res::ACTIVATION_STATE => single(Value::Boolean(self.reported_activation())),
            res::STATUS_REASON => single(Value::String(self.status_reason.code().to_string())),
            res::COMPONENT_LINK => Ok(Some(ResourceValue::Multiple(
                (0u16..)
                    .zip(
                        self.component_links
                            .iter()
                            .map(|id| objlnk(crate::swcomp::OBJECT_ID, *id)),
                    )
                    .collect(),
            ))),
            res::COMPONENT_TREE_LENGTH => single(Value::Integer(self.component_links.len() as i64)),
            res::PACKAGE | res::PACKAGE_URI | res::USER_NAME | res::PASSWORD => {
                Err(OpError::MethodNotAllowed("write-only resource"))
            }
            res::INSTALL | res::UNINSTALL | res::ACTIVATE | res::DEACTIVATE => {
                Err(OpError::MethodNotAllowed("executable resource"))
            }
            _ => Err(OpError::NotFound),
        }
    }

    /// Write of one resource; Package (2) as a whole value goes through
    /// [`PackageInstance::write_package_block`] as a single last piece.
    pub fn write(
        &mut self,
        resource: u16,
        value: ResourceValue,
        config: &SwMgmtConfig,
    ) -> Result<Changes, Refusal> {
        let value = match value {
            ResourceValue::Single(v) => v,
            ResourceValue::Multiple(_) => {
                return match resource {
                    r if RESOURCES.iter().any(|d| d.id == r) => Err(OpError::BadRequest(
                        "single-instance resource given several values".into(),
                    )
                    .into()),
                    _ => Err(OpError::NotFound.into()),
                };
            }
        };
        let short_string = |v: Value| match v {
            Value::String(s) if s.len() <= MAX_STRING => Ok(s),
            Value::String(_) => Err(Refusal::from(OpError::BadRequest(
                "string longer than 255 bytes".into(),
            ))),
            _ => Err(OpError::BadRequest("expected a string".into()).into()),
        };
        match resource {
            res::PACKAGE => match value {
                Value::Opaque(bytes) => self.write_package_block(0, &bytes, true, config),
                _ => Err(OpError::BadRequest("Package is opaque".into()).into()),
            },
            res::PACKAGE_URI => match value {
                // The URI check happens after the state check: 4.05 wins in other states.
                Value::String(uri) => self.write_package_uri(&uri, config),
                _ => Err(OpError::BadRequest("Package URI is a string".into()).into()),
            },
            res::UPDATE_SUPPORTED_OBJECTS => match value {
                Value::Boolean(b) => {
                    let mut ch = Changes::default();
                    if self.update_supported_objects != b {
                        self.update_supported_objects = b;
                        ch.resources.insert(res::UPDATE_SUPPORTED_OBJECTS);
                    }
                    Ok(ch)
                }
                _ => Err(OpError::BadRequest("Update Supported Objects is boolean".into()).into()),
            },
            res::USER_NAME => {
                self.username = Some(short_string(value)?);
                Ok(Changes {
                    persist: true,
                    ..Changes::default()
                })
            }
            res::PASSWORD => {
                self.password = Some(short_string(value)?);
                Ok(Changes {
                    persist: true,
                    ..Changes::default()
                })
            }
            r if RESOURCES.iter().any(|d| d.id == r) => {
                Err(OpError::MethodNotAllowed("resource is not writable").into())
            }
            _ => Err(OpError::NotFound.into()),
        }
    }

    /// Execute of one resource with its raw arguments (Core §6.3.5).
    pub fn execute(&mut self, resource: u16, args: &[u8]) -> Result<Changes, OpError> {
        let args = execargs::parse(args).map_err(|e| OpError::BadRequest(e.to_string()))?;
        match resource {
            res::INSTALL => self.install(),
            res::UNINSTALL => self.uninstall(uninstall_for_update(&args)?),
            res::ACTIVATE => self.set_active(true),
            res::DEACTIVATE => self.set_active(false),
            r if RESOURCES.iter().any(|d| d.id == r) => {
                Err(OpError::MethodNotAllowed("resource is not executable"))
            }
            _ => Err(OpError::NotFound),
        }
    }

    /// What a Delete of this instance leaves the driver to clean up.
    pub(super) fn teardown(&self) -> Vec<SwMgmtAction> {
        match self.update_state {
            UpdateState::DownloadStarted | UpdateState::Downloaded | UpdateState::Delivered => {
                let mut actions = vec![SwMgmtAction::CancelDelivery];
                if self.for_update {
                    actions.push(SwMgmtAction::Remove);
                }
                actions
            }
            UpdateState::Installed => vec![SwMgmtAction::Remove],
            UpdateState::Initial if self.for_update || self.removal == Some(Removal::Remove) => {
                vec![SwMgmtAction::Remove]
            }
            UpdateState::Initial => Vec::new(),
        }
    }
}

pub(super) fn merge(into: &mut Changes, from: Changes) {
    into.resources.extend(from.resources);
    into.actions.extend(from.actions);
    into.registration_update |= from.registration_update;
    into.persist |= from.persist;
}

/// Uninstall's one argument (SwMgmt §6 resource 6): none or 0 removes, 1 is
/// "ForUpdate". Both the bare digit (`1`, as Anjay sends) and a value on
/// argument 0 (`0='1'`) are accepted (field notes); anything else is 4.00.
fn uninstall_for_update(args: &[execargs::ExecArg]) -> Result<bool, OpError> {
    let bad = || OpError::BadRequest("Uninstall takes one argument, 0 or 1".into());
    match args {
        [] => Ok(false),
        [(0, None)] => Ok(false),
        [(1, None)] => Ok(true),
        [(0, Some(v))] if v == "0" => Ok(false),
        [(0, Some(v))] if v == "1" => Ok(true),
        _ => Err(bad()),
    }
}
