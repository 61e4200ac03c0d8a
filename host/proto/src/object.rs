//! The object model the client engine dispatches LwM2M operations to.
//!
//! Each LwM2M object (/0, /1, /3, /9, /14) implements [`Object`]. An
//! operation returns data, never performs I/O: work that needs the outside
//! world (download a package, run the runtime's install) is returned as
//! [`Effect`]s for the driver to carry out, which later feeds the outcome
//! back in as an event on the object itself.

use crate::model::{DataType, ObjLink, Path, ResourceValue, Value};

/// What an operation on a resource is allowed to do (the "Operations" column
/// of an object definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operations {
    None,
    Read,
    Write,
    ReadWrite,
    Execute,
}

impl Operations {
    pub fn readable(self) -> bool {
        matches!(self, Operations::Read | Operations::ReadWrite)
    }
    pub fn writable(self) -> bool {
        matches!(self, Operations::Write | Operations::ReadWrite)
    }
    pub fn executable(self) -> bool {
        matches!(self, Operations::Execute)
    }
}

/// Static description of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    pub id: u16,
    pub name: &'static str,
    pub operations: Operations,
    pub multiple: bool,
    pub mandatory: bool,
    pub data_type: DataType,
}

/// Why an operation was refused; the engine maps each to one CoAP response
/// code (Core 1.1 §6, reference §2 "Failure codes").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// 4.04: the instance or resource does not exist.
    #[error("not found")]
    NotFound,
    /// 4.05: the operation is not allowed on this target or in this state.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// 4.00: the payload or the arguments are malformed or out of range.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 4.01: access denied (any DM operation on /0).
    #[error("unauthorized")]
    Unauthorized,
    /// 4.13: the value does not fit (Size1 carries the limit, if known).
    #[error("request entity too large")]
    TooLarge { limit: Option<u64> },
    /// 5.00: the device failed to carry out a valid request.
    #[error("internal error: {0}")]
    Internal(String),
    /// 5.03: the value or the party that serves it is not available now
    /// (an app resource with no value published yet, an app that did not
    /// answer in time or stopped).
    #[error("service unavailable: {0}")]
    ServiceUnavailable(String),
}

/// A request from an object to its driver, carried out outside the sans-IO core.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Persist the object state before the response is sent (durability rule).
    Persist,
    /// Send a Registration Update, e.g. after instances changed (/9/x/8).
    RegistrationUpdate,
    /// Reboot the device (/3/0/4).
    Reboot,
    /// Deregister and stay away for `timeout_s` seconds (/1/x/4 Disable, Core 1.1 §E.2).
    Disable { timeout_s: u64 },
    /// Start a client-initiated bootstrap (/1/x/9 Bootstrap-Request Trigger, Core 1.1 §E.2).
    BootstrapRequest,
    /// Software Management work for package instance `instance`.
    SwMgmt { instance: u16, action: SwMgmtAction },
    /// Software Component work for component instance `instance` of Object 14.
    Component {
        instance: u16,
        action: ComponentAction,
    },
    /// A Write or Execute for the app serving `path.object` (an
    /// [`crate::objects::app::AppObject`]): the response waits until the
    /// driver has the app's answer ([`crate::client::Client::complete`] or
    /// [`crate::client::Client::fail`]). `path` is a resource or resource
    /// instance path; a Write of several values is several effects.
    App { path: Path, request: AppRequest },
}

/// What an app is asked to do with one of its resources (already checked
/// against the declared definition).
#[derive(Debug, Clone, PartialEq)]
pub enum AppRequest {
    /// Store this value (a single value: a multiple resource's instances
    /// come one effect each, with the resource instance in the path).
    Write(Value),
    /// Run the resource with these Execute arguments (Core 1.1 §5.4.5; valid UTF-8).
    Execute(String),
}

/// Work the Software Management object asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum SwMgmtAction {
    /// Start (or resume) a pull from the Package URI (SwMgmt §5.1.2.2).
    Download {
        uri: String,
        username: Option<String>,
        password: Option<String>,
    },
    /// Store one piece of a pushed package at `offset` (offset 0 truncates);
    /// after the `last` piece the driver verifies integrity.
    StorePushed {
        offset: u64,
        data: Vec<u8>,
        last: bool,
    },
    /// Abandon a delivery in progress and delete its partial data.
    CancelDelivery,
    /// Verify the fully written package (DOWNLOADED -> DELIVERED or INITIAL, §5.1.2.3).
    VerifyIntegrity,
    /// Install the delivered package (§5.1.3.1); `upgrade` is set after Uninstall(1).
    Install { upgrade: bool },
    /// Remove the package (Uninstall, no argument or 0).
    Remove,
    /// Keep what runs, get ready for the next package (Uninstall(1), §5.1.3.2).
    PrepareForUpdate,
    /// Start the package's components (§5.2).
    Activate,
    /// Stop the package's components (§5.2).
    Deactivate,
}

/// Work the Software Component object asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ComponentAction {
    Activate,
    Deactivate,
}

/// One LwM2M object with its instances.
pub trait Object {
    /// The object id (e.g. 9).
    fn id(&self) -> u16;
    /// The object version announced at registration when not the default.
    fn version(&self) -> Option<&str> {
        None
    }
    /// Resource definitions, ascending by id (borrowed: an app's object
    /// declares its own at run time).
    fn resources(&self) -> &[ResourceDef];
    /// Existing instance ids, ascending.
    fn instances(&self) -> Vec<u16>;
    /// Reads one resource of one instance. Only called for readable resources
    /// of existing instances; `Ok(None)` means an optional resource is absent.
    fn read(&self, instance: u16, resource: u16) -> Result<Option<ResourceValue>, OpError>;
    /// Writes one resource; `replace` distinguishes PUT from POST on
    /// multi-instance resources.
    fn write(
        &mut self,
        instance: u16,
        resource: u16,
        value: ResourceValue,
        replace: bool,
    ) -> Result<Vec<Effect>, OpError>;
    /// Receives one piece of a streamed opaque write (Block1, RFC 7959 §2.5):
    /// the package push of /9/x/2 is never held whole in memory. `offset` 0
    /// starts (or restarts) the transfer; `last` ends it. A plain Write of an
    /// opaque value arrives as one piece with offset 0 and `last` set.
    fn write_block(
        &mut self,
        _instance: u16,
        _resource: u16,
        _offset: u64,
        _bytes: &[u8],
        _last: bool,
    ) -> Result<Vec<Effect>, OpError> {
        Err(OpError::MethodNotAllowed("block-wise write"))
    }
    /// Executes one resource with the raw argument payload (Core 1.1 §6.3.5).
    fn execute(
        &mut self,
        instance: u16,
        resource: u16,
        args: &[u8],
    ) -> Result<Vec<Effect>, OpError>;
    /// Creates an instance (`None`: the object picks the id). Returns the id.
    fn create(
        &mut self,
        _instance: Option<u16>,
        _values: Vec<(u16, ResourceValue)>,
    ) -> Result<(u16, Vec<Effect>), OpError> {
        Err(OpError::MethodNotAllowed("create"))
    }
    /// Deletes an instance.
    fn delete(&mut self, _instance: u16) -> Result<Vec<Effect>, OpError> {
        Err(OpError::MethodNotAllowed("delete"))
    }
    /// Resources whose value changed since the last call, by an operation or
    /// a driver event (for Observe notifications). Objects whose values only
    /// change by Write need not implement it: the engine knows those.
    fn take_changed(&mut self) -> Vec<crate::model::Path> {
        Vec::new()
    }
    /// A number that changes whenever anything [`Object::read`] or
    /// [`Object::instances`] returns may have changed, for objects that can
    /// tell (their state only changes through `&mut` access they count).
    /// `None`, the default, means "cannot tell": every Read reads afresh. The
    /// engine serves a repeated Read of an object reporting the same number
    /// from the body it encoded before.
    fn generation(&self) -> Option<u64> {
        None
    }
    /// Checks, changing nothing, that every one of `writes` would be
    /// accepted when applied in this order with [`apply_write`]: a
    /// Write-Composite (LwM2M 1.1 Core §6.3.9) is all-or-nothing, so each
    /// object it touches is asked before the first value is written. The
    /// engine has already checked that each path is defined and writable and
    /// that each value has the resource's type; the default `Ok` is exact for
    /// objects that refuse nothing beyond that. Objects with their own rules
    /// (ranges, formats, states) override it, e.g. with [`dry_run`]; a
    /// wrapper that delegates `write` to another object must forward it.
    fn check_writes(&self, _writes: &[PlannedWrite]) -> Result<(), OpError> {
        Ok(())
    }
    /// True when this object's writes are answered later by a party that
    /// may still refuse them ([`Effect::App`]): such a write cannot be taken
    /// back, so it cannot share an all-or-nothing Write-Composite with
    /// another value.
    fn writes_answered_later(&self) -> bool {
        false
    }
}

/// One value of a Write-Composite as it will be applied: a single resource
/// is replaced (`Single`, `replace`); a resource instance is a partial
/// update of its multiple resource (`Multiple` with one item, not `replace`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    pub instance: u16,
    pub resource: u16,
    pub value: ResourceValue,
    pub replace: bool,
}

/// Applies one write the way every DM Write does: a single opaque value
/// goes through [`Object::write_block`] as one piece (the object's
/// streaming path), everything else through [`Object::write`].
pub fn apply_write(obj: &mut dyn Object, w: PlannedWrite) -> Result<Vec<Effect>, OpError> {
    let opaque = obj
        .resources()
        .iter()
        .any(|d| d.id == w.resource && d.data_type == DataType::Opaque && !d.multiple);
    match w.value {
        ResourceValue::Single(Value::Opaque(bytes)) if opaque => {
            obj.write_block(w.instance, w.resource, 0, &bytes, true)
        }
        v => obj.write(w.instance, w.resource, v, w.replace),
    }
}

/// An exact [`Object::check_writes`] for objects that are cheap to copy:
/// the writes run, in order, on a copy that is then dropped, so the answer
/// is the one the real writes would get (a later value that depends on an
/// earlier one, e.g. a state the first moves, included). Only for objects
/// whose clone owns its state (not a handle to shared state).
pub fn dry_run<O: Object + Clone>(obj: &O, writes: &[PlannedWrite]) -> Result<(), OpError> {
    let mut copy = obj.clone();
    for w in writes {
        apply_write(&mut copy, w.clone())?;
    }
    Ok(())
}

/// Convenience for objects building object-link values.
pub fn objlnk(object: u16, instance: u16) -> Value {
    Value::ObjLink(ObjLink { object, instance })
}
