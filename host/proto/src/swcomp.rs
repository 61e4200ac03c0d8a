//! LwM2M Software Component, Object 14 (SwMgmt §5.3, §6.1).
//!
//! One instance per component of an installed package; the owning /9
//! instance links to it through /9/x/17. The driver adds components when a
//! package installs ([`SoftwareComponents::add`]) and passes their ids to
//! `SoftwareManagement::install_finished`; after any /9 change it calls
//! [`SoftwareComponents::sync_owners`], which drops components no package
//! links any more and records whether each owner is INSTALLED (Activate and
//! Deactivate need that, §6.1 resources 3 and 4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DataType, Path, ResourceValue, Value};
use crate::object::{ComponentAction, Effect, Object, OpError, Operations, ResourceDef};
use crate::objects::def;
use crate::swmgmt::{SoftwareManagement, UpdateState};

/// The object id of Software Component.
pub const OBJECT_ID: u16 = 14;

/// Resource ids of Object 14 (SwMgmt §6.1.1).
pub mod res {
    pub const IDENTITY: u16 = 0;
    pub const PACK: u16 = 1;
    pub const VERSION: u16 = 2;
    pub const ACTIVATE: u16 = 3;
    pub const DEACTIVATE: u16 = 4;
    pub const ACTIVATION_STATE: u16 = 5;
}

static RESOURCES: [ResourceDef; 6] = [
    def(
        res::IDENTITY,
        "Component Identity",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::PACK,
        "Component Pack",
        Operations::Read,
        false,
        false,
        DataType::Opaque,
    ),
    def(
        res::VERSION,
        "Component Version",
        Operations::Read,
        false,
        false,
        DataType::String,
    ),
    def(
        res::ACTIVATE,
        "Activate",
        Operations::Execute,
        false,
        false,
        DataType::None,
    ),
    def(
        res::DEACTIVATE,
        "Deactivate",
        Operations::Execute,
        false,
        false,
        DataType::None,
    ),
    def(
        res::ACTIVATION_STATE,
        "Activation State",
        Operations::Read,
        false,
        false,
        DataType::Boolean,
    ),
];

/// One /14 instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// The /9 instance whose package brought this component.
    pub owner: u16,
    /// Component Identity (0): the component's name in the package.
    pub identity: String,
    /// Component Version (2).
    pub version: String,
    /// Component Pack (1): the component's bytes. §6.1.1 says the component
    /// "is stored in this resource"; a wasm component is large, so the driver
    /// fills this only if it wants it readable. `None` -> the resource is
    /// absent. Not persisted: the runtime's store holds the bytes.
    #[serde(skip)]
    pub pack: Option<Vec<u8>>,
    /// Activation State (5): the component runs, as the runtime last confirmed.
    pub active: bool,
    /// Activate/Deactivate handed to the driver and not yet reported.
    pub activation_target: Option<bool>,
    /// The owner is INSTALLED (kept in step by [`SoftwareComponents::sync_owners`]).
    pub owner_installed: bool,
}

impl Component {
    /// Activation State (5) as read and notified: after an accepted
    /// Activate/Deactivate, its target, so a Read right after the 2.04 sees
    /// it (as /9's Activation State, SwMgmt §5.2: the state "is set
    /// accordingly" when the Execute is triggered, and §6.1.1's resource 5
    /// follows Activate/Deactivate the same way); set back and notified if
    /// the runtime then fails.
    pub fn reported_activation(&self) -> bool {
        self.activation_target.unwrap_or(self.active)
    }
}

/// Object 14 with all its instances; serialisable for persistence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoftwareComponents {
    instances: BTreeMap<u16, Component>,
    #[serde(skip)]
    changed: Vec<Path>,
}

/// Why a component could not be added or updated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwCompError {
    /// Every instance id is taken.
    #[error("no free /14 instance id")]
    Full,
    /// No /14 instance with this id.
    #[error("no /14 instance {0}")]
    NoInstance(u16),
}

impl SoftwareComponents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a component of package `owner` (not yet INSTALLED: the driver calls
    /// this before reporting the install finished). Returns its /14 id.
    pub fn add(
        &mut self,
        owner: u16,
        identity: String,
        version: String,
        active: bool,
    ) -> Result<u16, SwCompError> {
        let id = (0..u16::MAX)
            .find(|id| !self.instances.contains_key(id))
            .ok_or(SwCompError::Full)?;
        self.instances.insert(
            id,
            Component {
                owner,
                identity,
                version,
                pack: None,
                active,
                activation_target: None,
                owner_installed: false,
            },
        );
        Ok(id)
    }

    /// One component, for the driver and for tests.
    pub fn component(&self, id: u16) -> Option<&Component> {
        self.instances.get(&id)
    }

    /// Makes Component Pack (1) readable with these bytes (or absent with `None`).
    pub fn set_pack(&mut self, id: u16, pack: Option<Vec<u8>>) -> Result<(), SwCompError> {
        let c = self
            .instances
            .get_mut(&id)
            .ok_or(SwCompError::NoInstance(id))?;
        c.pack = pack;
        self.changed.push(Path::resource(OBJECT_ID, id, res::PACK));
        Ok(())
    }

    /// The driver reports whether a component runs now; returns whether
    /// Activation State (5) as read changed (it already showed the target
    /// since the Execute; it changes back only if the runtime failed).
    pub fn activation_finished(&mut self, id: u16, active: bool) -> Result<bool, SwCompError> {
        let c = self
            .instances
            .get_mut(&id)
            .ok_or(SwCompError::NoInstance(id))?;
        let shown = c.reported_activation();
        c.activation_target = None;
        c.active = active;
        if shown == active {
            return Ok(false);
        }
        self.changed
            .push(Path::resource(OBJECT_ID, id, res::ACTIVATION_STATE));
        Ok(true)
    }

    /// Brings the components in line with /9: a component no package links
    /// any more is removed (uninstall, upgrade, Delete of its /9 instance);
    /// `owner_installed` follows its owner's Update State; a component whose
    /// package is no longer INSTALLED reads DISABLED (§6.1.1 resource 5: "not
    /// alive"). Returns the removed ids.
    pub fn sync_owners(&mut self, packages: &SoftwareManagement) -> Vec<u16> {
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        self.instances.retain(|id, c| {
            let owner = packages
                .instance(c.owner)
                .filter(|p| p.component_links.contains(id));
            match owner {
                None => {
                    removed.push(*id);
                    false
                }
                Some(p) => {
                    c.owner_installed = p.update_state == UpdateState::Installed;
                    if !c.owner_installed && c.reported_activation() {
                        c.active = false;
                        c.activation_target = None;
                        changed.push(Path::resource(OBJECT_ID, *id, res::ACTIVATION_STATE));
                    }
                    true
                }
            }
        });
        self.changed
            .retain(|p| p.instance.is_none_or(|i| !removed.contains(&i)));
        self.changed.extend(changed);
        removed
    }

    /// Paths whose value changed since the last call (Observe notifications).
    pub fn take_changed(&mut self) -> Vec<Path> {
        std::mem::take(&mut self.changed)
    }
}

impl Object for SoftwareComponents {
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
        let c = self.instances.get(&instance).ok_or(OpError::NotFound)?;
        let single = |v: Value| Ok(Some(ResourceValue::Single(v)));
        match resource {
            res::IDENTITY => single(Value::String(c.identity.clone())),
            res::PACK => Ok(c
                .pack
                .as_ref()
                .map(|p| ResourceValue::Single(Value::Opaque(p.clone())))),
            res::VERSION => single(Value::String(c.version.clone())),
            res::ACTIVATION_STATE => single(Value::Boolean(c.reported_activation())),
            res::ACTIVATE | res::DEACTIVATE => {
                Err(OpError::MethodNotAllowed("executable resource"))
            }
            _ => Err(OpError::NotFound),
        }
    }

    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        _value: ResourceValue,
        _replace: bool,
    ) -> Result<Vec<Effect>, OpError> {
        self.instances.get(&instance).ok_or(OpError::NotFound)?;
        if RESOURCES.iter().any(|d| d.id == resource) {
            Err(OpError::MethodNotAllowed(
                "Object 14 resources are not writable",
            ))
        } else {
            Err(OpError::NotFound)
        }
    }

    /// Activate (3) / Deactivate (4): only while the owning package is
    /// INSTALLED (§6.1.1), else 4.05; the state it is already in answers 2.04
    /// with no change (as /9 Activate twice).
    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError> {
        crate::execargs::parse(args).map_err(|e| OpError::BadRequest(e.to_string()))?;
        let c = self.instances.get_mut(&instance).ok_or(OpError::NotFound)?;
        let active = match resource {
            res::ACTIVATE => true,
            res::DEACTIVATE => false,
            r if RESOURCES.iter().any(|d| d.id == r) => {
                return Err(OpError::MethodNotAllowed("resource is not executable"));
            }
            _ => return Err(OpError::NotFound),
        };
        if !c.owner_installed {
            return Err(OpError::MethodNotAllowed(
                "the component's package is not INSTALLED",
            ));
        }
        if c.reported_activation() == active {
            return Ok(Vec::new());
        }
        c.activation_target = Some(active);
        self.changed
            .push(Path::resource(OBJECT_ID, instance, res::ACTIVATION_STATE));
        let action = if active {
            ComponentAction::Activate
        } else {
            ComponentAction::Deactivate
        };
        Ok(vec![
            Effect::Persist,
            Effect::Component { instance, action },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swmgmt::{Installed, SwMgmtConfig};

    /// A /9 instance 0 taken to INSTALLED with two components.
    fn installed() -> (SoftwareManagement, SoftwareComponents, Vec<u16>) {
        let mut sm = SoftwareManagement::new(SwMgmtConfig::default());
        let mut sc = SoftwareComponents::new();
        sm.create(Some(0), vec![]).unwrap();
        sm.write(
            0,
            3,
            ResourceValue::Single(Value::String("coap://h/p".into())),
            true,
        )
        .unwrap();
        sm.package_written(0).unwrap();
        sm.integrity_checked(0, Ok(("app".into(), "1.0".into())))
            .unwrap();
        sm.execute(0, 4, b"").unwrap();
        let a = sc.add(0, "web".into(), "1.0".into(), false).unwrap();
        let b = sc.add(0, "worker".into(), "1.1".into(), false).unwrap();
        // Before the install is reported the components are not activatable.
        assert_eq!(
            sc.execute(a, res::ACTIVATE, b""),
            Err(OpError::MethodNotAllowed(
                "the component's package is not INSTALLED"
            ))
        );
        sm.install_finished(
            0,
            Ok(Installed {
                name: "app".into(),
                version: "1.0".into(),
                components: vec![a, b],
                active: false,
            }),
        )
        .unwrap();
        assert!(sc.sync_owners(&sm).is_empty());
        (sm, sc, vec![a, b])
    }

    #[test]
    fn reads_and_links() {
        let (sm, sc, ids) = installed();
        assert_eq!(sc.instances(), ids);
        assert_eq!(
            sc.read(ids[1], res::IDENTITY).unwrap(),
            Some(ResourceValue::Single(Value::String("worker".into())))
        );
        assert_eq!(
            sc.read(ids[1], res::VERSION).unwrap(),
            Some(ResourceValue::Single(Value::String("1.1".into())))
        );
        assert_eq!(
            sc.read(ids[1], res::ACTIVATION_STATE).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(false)))
        );
        // Pack absent until the driver fills it.
        assert_eq!(sc.read(ids[0], res::PACK).unwrap(), None);
        assert_eq!(sc.read(9, res::IDENTITY), Err(OpError::NotFound));
        assert_eq!(sc.read(ids[0], 9), Err(OpError::NotFound));
        // /9/0/17 links both, /9/0/18 counts them.
        assert_eq!(
            sm.read(0, 17).unwrap(),
            Some(ResourceValue::Multiple(vec![
                (0, crate::object::objlnk(14, ids[0])),
                (1, crate::object::objlnk(14, ids[1]))
            ]))
        );
        assert_eq!(
            sm.read(0, 18).unwrap(),
            Some(ResourceValue::Single(Value::Integer(2)))
        );
    }

    #[test]
    fn pack_is_readable_once_filled() {
        let (_, mut sc, ids) = installed();
        sc.set_pack(ids[0], Some(vec![0, 97, 115, 109])).unwrap();
        assert_eq!(
            sc.read(ids[0], res::PACK).unwrap(),
            Some(ResourceValue::Single(Value::Opaque(vec![0, 97, 115, 109])))
        );
        assert_eq!(sc.set_pack(77, None), Err(SwCompError::NoInstance(77)));
    }

    #[test]
    fn activate_deactivate_need_installed_owner() {
        let (mut sm, mut sc, ids) = installed();
        let a = ids[0];
        assert_eq!(
            sc.execute(a, res::ACTIVATE, b"").unwrap(),
            vec![
                Effect::Persist,
                Effect::Component {
                    instance: a,
                    action: ComponentAction::Activate
                }
            ]
        );
        // Visible (and notified) as soon as the Execute is accepted, before
        // the runtime reports: a Read right after the 2.04 sees it.
        assert_eq!(
            sc.read(a, res::ACTIVATION_STATE).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(true)))
        );
        assert_eq!(
            sc.take_changed(),
            vec![Path::resource(14, a, res::ACTIVATION_STATE)]
        );
        // Repeated while pending: nothing more.
        assert_eq!(sc.execute(a, res::ACTIVATE, b"").unwrap(), vec![]);
        // Confirmed: no second notification.
        assert!(!sc.activation_finished(a, true).unwrap());
        assert_eq!(sc.take_changed(), vec![]);
        assert_eq!(sc.execute(a, res::ACTIVATE, b"").unwrap(), vec![]);
        assert_eq!(
            sc.execute(a, res::DEACTIVATE, b"").unwrap(),
            vec![
                Effect::Persist,
                Effect::Component {
                    instance: a,
                    action: ComponentAction::Deactivate
                }
            ]
        );
        assert!(!sc.activation_finished(a, false).unwrap());
        sc.take_changed();
        // A failed activation: read true after the Execute, then back to
        // false with a notification.
        sc.execute(a, res::ACTIVATE, b"").unwrap();
        assert_eq!(
            sc.read(a, res::ACTIVATION_STATE).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(true)))
        );
        sc.take_changed();
        assert!(sc.activation_finished(a, false).unwrap());
        assert_eq!(
            sc.read(a, res::ACTIVATION_STATE).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(false)))
        );
        assert_eq!(
            sc.take_changed(),
            vec![Path::resource(14, a, res::ACTIVATION_STATE)]
        );
        assert!(sc.activation_finished(a, true).unwrap());
        // Bad args, read-only resource, unknown resource.
        assert!(matches!(
            sc.execute(a, res::ACTIVATE, b"x"),
            Err(OpError::BadRequest(_))
        ));
        assert!(matches!(
            sc.execute(a, res::IDENTITY, b""),
            Err(OpError::MethodNotAllowed(_))
        ));
        assert_eq!(sc.execute(a, 42, b""), Err(OpError::NotFound));
        assert!(matches!(
            sc.write(
                a,
                res::IDENTITY,
                ResourceValue::Single(Value::String("x".into())),
                true
            ),
            Err(OpError::MethodNotAllowed(_))
        ));

        // Uninstall(1) keeps the components linked but not INSTALLED: 4.05, DISABLED.
        sm.execute(0, 6, b"1").unwrap();
        assert!(sc.sync_owners(&sm).is_empty());
        sc.take_changed();
        assert_eq!(
            sc.read(a, res::ACTIVATION_STATE).unwrap(),
            Some(ResourceValue::Single(Value::Boolean(false)))
        );
        assert!(matches!(
            sc.execute(ids[1], res::ACTIVATE, b""),
            Err(OpError::MethodNotAllowed(_))
        ));
    }

    #[test]
    fn uninstall_and_delete_remove_components() {
        let (mut sm, mut sc, ids) = installed();
        sm.execute(0, 6, b"").unwrap();
        assert_eq!(sc.sync_owners(&sm), ids);
        assert!(sc.instances().is_empty());

        let (mut sm, mut sc, ids) = installed();
        sm.delete(0).unwrap();
        assert_eq!(sc.sync_owners(&sm), ids);
    }

    #[test]
    fn serde_round_trip_keeps_components_but_not_pack() {
        let (_, mut sc, ids) = installed();
        sc.set_pack(ids[0], Some(vec![1, 2])).unwrap();
        let json = serde_json::to_string(&sc).unwrap();
        let back: SoftwareComponents = serde_json::from_str(&json).unwrap();
        assert_eq!(back.instances(), ids);
        let c = back.component(ids[0]).unwrap();
        assert_eq!(
            (c.identity.as_str(), c.pack.as_ref(), c.owner_installed),
            ("web", None, true)
        );
    }
}
