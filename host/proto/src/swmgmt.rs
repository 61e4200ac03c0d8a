//! LwM2M Software Management, Object 9 (OMA-TS-LWM2M_SwMgmt-V1_0 §5, §6).
//!
//! One [`PackageInstance`] per /9 instance holds the Package Installation
//! state machine (§5.1) and the Software Activation state machine (§5.2) as
//! plain data. Its methods are the transitions: each checks the state, changes
//! the data, and returns a [`Changes`] (resource ids to notify observers of,
//! driver actions to run). Nothing here does I/O: a download, a
//! verification, an install are [`SwMgmtAction`]s, and the driver reports
//! their outcome back through the event methods of [`SoftwareManagement`]
//! (`download_progress`, `package_written`, `integrity_checked`, ...).
//!
//! Where the spec says an operation in the wrong state "has no effect", we
//! answer 4.05 Method Not Allowed and change nothing: that is what servers
//! observe from the reference client (field notes, "Common practice").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Path, ResourceValue};
use crate::object::{Effect, Object, OpError, ResourceDef};

mod changes;
mod instance;
mod resources;
mod values;

pub use changes::*;
pub use instance::*;
use resources::{MAX_STRING, RESOURCES};
pub use values::*;

/// The object id of Software Management.
pub const OBJECT_ID: u16 = 9;

/// Resource ids of Object 9 (SwMgmt §6, "Resource definitions").
pub mod res {
    pub const PKG_NAME: u16 = 0;
    pub const PKG_VERSION: u16 = 1;
    pub const PACKAGE: u16 = 2;
    pub const PACKAGE_URI: u16 = 3;
    pub const INSTALL: u16 = 4;
    pub const UNINSTALL: u16 = 6;
    pub const UPDATE_STATE: u16 = 7;
    pub const UPDATE_SUPPORTED_OBJECTS: u16 = 8;
    pub const UPDATE_RESULT: u16 = 9;
    pub const ACTIVATE: u16 = 10;
    pub const DEACTIVATE: u16 = 11;
    pub const ACTIVATION_STATE: u16 = 12;
    pub const USER_NAME: u16 = 14;
    pub const PASSWORD: u16 = 15;
    pub const STATUS_REASON: u16 = 16;
    pub const COMPONENT_LINK: u16 = 17;
    pub const COMPONENT_TREE_LENGTH: u16 = 18;
}

/// Object 9 with all its instances; serialisable for persistence (the
/// configuration and the pending notifications are not part of the state).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoftwareManagement {
    instances: BTreeMap<u16, PackageInstance>,
    #[serde(skip)]
    config: SwMgmtConfig,
    /// Resources changed since the engine last asked, for Observe.
    #[serde(skip)]
    changed: Vec<Path>,
}

/// The result of a driver event: resources to notify and effects to carry out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub changed: Vec<Path>,
    /// In order: `Persist` first (state on disk before anything else), then the work.
    pub effects: Vec<Effect>,
}

impl SoftwareManagement {
    /// An object with no instances.
    pub fn new(config: SwMgmtConfig) -> Self {
        SoftwareManagement {
            instances: BTreeMap::new(),
            config,
            changed: Vec::new(),
        }
    }

    /// Loads persisted state (from [`SoftwareManagement::to_json`]) and brings
    /// each instance back to a state the driver can carry on from
    /// ([`PackageInstance::restored`]); returns the effects to re-issue.
    pub fn from_json(
        json: &str,
        config: SwMgmtConfig,
    ) -> Result<(Self, Vec<Effect>), serde_json::Error> {
        let mut sm: SoftwareManagement = serde_json::from_str(json)?;
        sm.config = config;
        let mut effects = Vec::new();
        let ids: Vec<u16> = sm.instances.keys().copied().collect();
        for iid in ids {
            if let Some(inst) = sm.instances.get_mut(&iid) {
                let ch = inst.restored();
                let (_, mut fx) = sm.report(iid, ch);
                effects.append(&mut fx);
            }
        }
        sm.changed.clear();
        Ok((sm, effects))
    }

    /// The persisted form.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn config(&self) -> &SwMgmtConfig {
        &self.config
    }

    /// Takes over software installed outside LwM2M (the `wasmdm install`
    /// command) as a new instance in INSTALLED (§5.1.2.5), so the server sees
    /// everything the device runs. `None` when every instance is taken.
    pub fn adopt(&mut self, done: Installed) -> Option<u16> {
        if self.instances.len() >= self.config.max_instances {
            return None;
        }
        let iid = (0..u16::MAX).find(|id| !self.instances.contains_key(id))?;
        let mut inst = PackageInstance::new();
        let mut ch = Changes::default();
        inst.set_state(UpdateState::Installed, &mut ch);
        inst.set_result(UpdateResult::Installed, &mut ch);
        inst.set_activation(done.active, &mut ch);
        inst.set_reason(StatusReason::InstallProgressing, &mut ch);
        inst.set_name(done.name, done.version, &mut ch);
        inst.set_links(done.components, &mut ch);
        self.instances.insert(iid, inst);
        Some(iid)
    }

    /// Sets the Software Component Links (17) of an adopted instance.
    pub fn set_component_links(&mut self, iid: u16, links: Vec<u16>) {
        if let Some(inst) = self.instances.get_mut(&iid) {
            let mut ch = Changes::default();
            inst.set_links(links, &mut ch);
        }
    }

    /// One instance, for the driver and for tests.
    pub fn instance(&self, iid: u16) -> Option<&PackageInstance> {
        self.instances.get(&iid)
    }

    /// Paths whose value changed since the last call (Observe notifications).
    pub fn take_changed(&mut self) -> Vec<Path> {
        std::mem::take(&mut self.changed)
    }

    /// Turns a transition's changes into paths and effects; also queues the paths.
    fn report(&mut self, iid: u16, ch: Changes) -> (Vec<Path>, Vec<Effect>) {
        let paths: Vec<Path> = ch
            .resources
            .iter()
            .map(|r| Path::resource(OBJECT_ID, iid, *r))
            .collect();
        self.changed.extend(paths.iter().copied());
        let mut effects = Vec::new();
        if ch.needs_persist() {
            effects.push(Effect::Persist);
        }
        effects.extend(ch.actions.into_iter().map(|action| Effect::SwMgmt {
            instance: iid,
            action,
        }));
        if ch.registration_update {
            effects.push(Effect::RegistrationUpdate);
        }
        (paths, effects)
    }

    fn event(
        &mut self,
        iid: u16,
        f: impl FnOnce(&mut PackageInstance) -> Result<Changes, SwMgmtError>,
    ) -> Result<Report, SwMgmtError> {
        let inst = self
            .instances
            .get_mut(&iid)
            .ok_or(SwMgmtError::NoInstance(iid))?;
        let ch = f(inst)?;
        let (changed, effects) = self.report(iid, ch);
        Ok(Report { changed, effects })
    }

    fn op(
        &mut self,
        iid: u16,
        f: impl FnOnce(&mut PackageInstance, &SwMgmtConfig) -> Result<Changes, Refusal>,
    ) -> Result<Vec<Effect>, OpError> {
        let config = self.config;
        let inst = self.instances.get_mut(&iid).ok_or(OpError::NotFound)?;
        match f(inst, &config) {
            Ok(ch) => Ok(self.report(iid, ch).1),
            Err(Refusal { error, changes }) => {
                self.report(iid, changes);
                Err(error)
            }
        }
    }

    /// See [`PackageInstance::download_progress`].
    pub fn download_progress(
        &mut self,
        iid: u16,
        received: u64,
        total: Option<u64>,
    ) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.download_progress(received, total))
    }

    /// See [`PackageInstance::download_failed`].
    pub fn download_failed(
        &mut self,
        iid: u16,
        result: UpdateResult,
    ) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.download_failed(result))
    }

    /// See [`PackageInstance::package_written`].
    pub fn package_written(&mut self, iid: u16) -> Result<Report, SwMgmtError> {
        self.event(iid, PackageInstance::package_written)
    }

    /// See [`PackageInstance::integrity_checked`]; `Ok((name, version))`.
    pub fn integrity_checked(
        &mut self,
        iid: u16,
        outcome: Result<(String, String), UpdateResult>,
    ) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.integrity_checked(outcome))
    }

    /// See [`PackageInstance::install_finished`].
    pub fn install_finished(
        &mut self,
        iid: u16,
        outcome: Result<Installed, UpdateResult>,
    ) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.install_finished(outcome))
    }

    /// See [`PackageInstance::activation_finished`].
    pub fn activation_finished(&mut self, iid: u16, active: bool) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.activation_finished(active))
    }

    /// See [`PackageInstance::uninstall_finished`].
    pub fn uninstall_finished(&mut self, iid: u16, ok: bool) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.uninstall_finished(ok))
    }

    /// See [`PackageInstance::released`].
    pub fn released(&mut self, iid: u16) -> Result<Report, SwMgmtError> {
        self.event(iid, |p| p.released())
    }
}

impl Object for SoftwareManagement {
    /// Exact: the writes run on a copy (LwM2M 1.1 Core §6.3.9 all-or-nothing).
    fn check_writes(&self, writes: &[crate::object::PlannedWrite]) -> Result<(), OpError> {
        crate::object::dry_run(self, writes)
    }
    fn id(&self) -> u16 {
        OBJECT_ID
    }

    fn take_changed(&mut self) -> Vec<Path> {
        std::mem::take(&mut self.changed)
    }

    fn resources(&self) -> &[ResourceDef] {
        &RESOURCES
    }

    fn instances(&self) -> Vec<u16> {
        self.instances.keys().copied().collect()
    }

    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError> {
        self.instances
            .get(&instance)
            .ok_or(OpError::NotFound)?
            .read(resource)
    }

    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        self.op(instance, |p, cfg| p.write(resource, value, cfg))
    }

    fn write_block(
        &mut self,
        instance: u16,
        resource: u16,
        offset: u64,
        bytes: &[u8],
        last: bool,
    ) -> Result<Vec<Effect>, OpError> {
        if resource != res::PACKAGE {
            return Err(OpError::MethodNotAllowed(
                "block-wise write is for Package only",
            ));
        }
        self.op(instance, |p, cfg| {
            p.write_package_block(offset, bytes, last, cfg)
        })
    }

    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        self.op(instance, |p, _| {
            p.execute(resource, args).map_err(Refusal::from)
        })
    }

    /// Create makes an empty INITIAL instance (SwMgmt §5.1.2.1), then applies
    /// the given values as writes; if one fails the instance is not kept.
    fn create(
        &mut self,
        instance: Option<u16>,
        values: Vec<(u16, ResourceValue)>,
    ) -> Result<(u16, Vec<Effect>), OpError> {
        if self.instances.len() >= self.config.max_instances {
            return Err(OpError::MethodNotAllowed(
                "no free Software Management instance",
            ));
        }
        let iid = match instance {
            Some(u16::MAX) => {
                return Err(OpError::BadRequest("instance id 65535 is reserved".into()));
            }
            Some(id) if self.instances.contains_key(&id) => {
                return Err(OpError::BadRequest(format!("instance /9/{id} exists")));
            }
            Some(id) => id,
            None => (0..u16::MAX)
                .find(|id| !self.instances.contains_key(id))
                .ok_or(OpError::MethodNotAllowed("no free instance id"))?,
        };
        let mut inst = PackageInstance::new();
        let mut changes = Changes::default();
        for (resource, value) in values {
            let ch = inst
                .write(resource, value, &self.config)
                .map_err(|r| r.error)?;
            merge(&mut changes, ch);
        }
        self.instances.insert(iid, inst);
        changes.resources.clear(); // a new instance has no observers yet
        let (_, mut effects) = self.report(iid, changes);
        if !effects.contains(&Effect::Persist) {
            effects.insert(0, Effect::Persist);
        }
        Ok((iid, effects))
    }

    /// Delete drops the instance and asks the driver to clean up what it held.
    fn delete(&mut self, instance: u16) -> Result<Vec<Effect>, OpError> {
        let inst = self.instances.remove(&instance).ok_or(OpError::NotFound)?;
        self.changed.retain(|p| p.instance != Some(instance));
        let mut effects = vec![Effect::Persist];
        effects.extend(
            inst.teardown()
                .into_iter()
                .map(|action| Effect::SwMgmt { instance, action }),
        );
        if inst.update_supported_objects && !inst.component_links.is_empty() {
            effects.push(Effect::RegistrationUpdate);
        }
        Ok(effects)
    }
}

#[cfg(test)]
mod tests;
