//! What the state machines take and give: deliveries, the outcome of an
//! install, the configuration, and the [`Changes`] each transition returns
//! (resources to notify, actions for the driver) or the error it refuses with.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::object::{OpError, SwMgmtAction};

use super::{UpdateResult, UpdateState};

/// How the package of a delivery arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryKind {
    /// Written to Package (2), possibly block-wise.
    Push,
    /// Fetched by the driver from Package URI (3).
    Pull,
}

/// Progress of the delivery under way, kept so a pull can resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub kind: DeliveryKind,
    /// Bytes stored so far.
    pub received: u64,
    /// Total size, when the source said it.
    pub total: Option<u64>,
    /// A push whose last block arrived; more blocks are refused.
    pub complete: bool,
}

/// Uninstall work handed to the driver and not yet reported finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Removal {
    /// Uninstall with no argument or 0: remove the software.
    Remove,
    /// Uninstall(1) "ForUpdate": keep what runs, get ready for its upgrade.
    PrepareForUpdate,
}

/// What the driver reports when an install ends well (§5.1.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// PkgName (0) from the package's manifest.
    pub name: String,
    /// PkgVersion (1) from the package's manifest.
    pub version: String,
    /// The /14 instances created for the package's components (17).
    pub components: Vec<u16>,
    /// Whether the software already runs (an upgrade that kept it running).
    pub active: bool,
}

/// The URI schemes the driver can fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwMgmtConfig {
    /// Most /9 instances the device keeps; Create beyond answers 4.05.
    pub max_instances: usize,
    /// The driver can fetch `coaps://` (it has DTLS credentials for downloads).
    pub coaps: bool,
    /// The driver can fetch `https://`.
    pub https: bool,
    /// Largest package accepted by push; bigger answers 4.13.
    pub max_package_bytes: Option<u64>,
}

impl Default for SwMgmtConfig {
    fn default() -> Self {
        SwMgmtConfig {
            max_instances: 8,
            coaps: false,
            https: false,
            max_package_bytes: None,
        }
    }
}

/// What one transition changed: the resources whose value changed (for
/// Observe), the work the driver must do, and whether the registration must
/// be updated because /14 instances changed and Update Supported Objects is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub resources: BTreeSet<u16>,
    pub actions: Vec<SwMgmtAction>,
    pub registration_update: bool,
    /// Persisted data changed though no readable resource did (credentials).
    pub persist: bool,
}

impl Changes {
    pub(super) fn action(mut self, action: SwMgmtAction) -> Self {
        self.actions.push(action);
        self
    }

    /// Whether the state must reach the disk before the response: anything
    /// but a further piece of a push (a push cannot resume after a restart,
    /// so its progress is not worth a write per block).
    pub fn needs_persist(&self) -> bool {
        self.persist
            || self.registration_update
            || !self.resources.is_empty()
            || self
                .actions
                .iter()
                .any(|a| !matches!(a, SwMgmtAction::StorePushed { .. }))
    }
}

/// An operation refused by the state machine, with what it changed anyway
/// (only an invalid Package URI does: Update Result becomes 56).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub error: OpError,
    pub changes: Changes,
}

impl From<OpError> for Refusal {
    fn from(error: OpError) -> Self {
        Refusal {
            error,
            changes: Changes::default(),
        }
    }
}

/// A driver event that does not fit the instance it names; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwMgmtError {
    /// No /9 instance with this id (deleted while the driver worked).
    #[error("no /9 instance {0}")]
    NoInstance(u16),
    /// The event does not apply in the instance's state (stale or repeated report).
    #[error("{event} does not apply in state {}", state.name())]
    UnexpectedEvent {
        event: &'static str,
        state: UpdateState,
    },
    /// A failure event carried a result code that is not a failure of that kind.
    #[error("result {} ({}) is not a {kind} failure", result.code(), result.name())]
    NotAFailure {
        kind: &'static str,
        result: UpdateResult,
    },
}
