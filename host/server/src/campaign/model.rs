//! What a campaign is made of, as plain serde data: the operator's spec,
//! the per-device jobs with their steps and states, the campaign status
//! and its summary, and the names of SwMgmt's Update State and Update
//! Result values. The engine that moves them is in `campaign.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Update State values (SwMgmt §6 resource 7).
pub mod state {
    /// INITIAL.
    pub const INITIAL: i64 = 0;
    /// DOWNLOAD STARTED.
    pub const DOWNLOAD_STARTED: i64 = 1;
    /// DOWNLOADED (integrity being verified).
    pub const DOWNLOADED: i64 = 2;
    /// DELIVERED.
    pub const DELIVERED: i64 = 3;
    /// INSTALLED.
    pub const INSTALLED: i64 = 4;
}

/// Name of an Update Result value (SwMgmt §6 resource 9; 59 from the OMA registry 9.xml).
pub fn update_result_name(code: i64) -> &'static str {
    match code {
        0 => "Initial",
        1 => "Downloading",
        2 => "Software successfully installed",
        3 => "Successfully Downloaded and package integrity verified",
        50 => "Not enough storage",
        51 => "Out of memory",
        52 => "Connection lost",
        53 => "Package integrity check failure",
        54 => "Unsupported package type",
        56 => "Invalid URI",
        57 => "Device defined update error",
        58 => "Software installation failure",
        59 => "Uninstallation failure during forUpdate",
        4..=49 => "Reserved for expansion",
        60..=200 => "Reserved for expansion",
        _ => "Undefined",
    }
}

/// True for Update Result values that report a failure (SwMgmt §6: 50-59).
pub fn is_failure_result(code: i64) -> bool {
    (50..=59).contains(&code)
}

/// Which operation a campaign performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Install a package into a free or newly created /9 instance.
    Install,
    /// Upgrade installed instances of a package.
    Upgrade,
    /// Uninstall (argument 0) matching instances.
    Uninstall,
    /// Activate matching instances.
    Activate,
    /// Deactivate matching instances.
    Deactivate,
}

/// Push = Block1 Write of /9/x/2; pull = Write of the Package URI /9/x/3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Server writes the package.
    Push,
    /// Device downloads from a URI.
    #[default]
    Pull,
}

/// Protocol of the pull URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `coap://.../fw/<sha256>/<capability>` (Block2).
    #[default]
    Coap,
    /// `http://.../fw/<sha256>/<capability>` (ETag, Range).
    Http,
}

/// When devices start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Start online devices now; offline ones when they register.
    #[default]
    Now,
    /// Start at a Unix time (ms).
    At {
        /// Unix ms.
        unix_ms: u64,
    },
    /// Each device starts at its next Register or Update.
    NextRegistration,
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// The operation.
    pub op: OpKind,
    /// Package name (/9/x/0) to match or to install.
    pub package: String,
    /// Version (/9/x/1) to match; without it every instance of the name matches.
    #[serde(default)]
    pub version: Option<String>,
    /// sha256 of the software file (install, upgrade).
    #[serde(default)]
    pub file: Option<String>,
    /// Download capability of `file`, the last segment of pull URIs
    /// (`<base>/fw/<sha256>/<capability>`); set by the server from the file's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_capability: Option<String>,
    /// Per-device timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Delivery method.
    #[serde(default)]
    pub delivery: Delivery,
    /// Pull protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Base URI devices pull from (`coap://host:port`), filled by the server if absent.
    #[serde(default)]
    pub base_uri: Option<String>,
    /// Devices worked on at once; `None` = unlimited.
    #[serde(default)]
    pub quota: Option<usize>,
    /// Schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Install: activate after installing.
    #[serde(default)]
    pub activate: bool,
    /// Poll period while waiting without notifications (ms).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
}

fn default_timeout() -> u64 {
    300
}
fn default_poll() -> u64 {
    2_000
}

/// Status of one device in a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Not started.
    Pending,
    /// In progress.
    Running,
    /// Finished successfully.
    Done,
    /// Failed (see the result and details).
    Failed,
    /// Exceeded the timeout, or the device stopped answering (unreachable:
    /// `details` starts with "unreachable:"); kept as one status so reports
    /// and filters (`?status=timed_out`) stay as they were.
    TimedOut,
    /// Cancelled by the operator.
    Cancelled,
    /// Nothing to do (no matching package).
    Skipped,
}

impl JobStatus {
    /// True once the job will not change without a retry.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }
}

/// Condition a step waits for after its action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// Nothing to wait for.
    Nothing,
    /// Update State equals this.
    State(i64),
    /// Activation State equals this.
    Active(bool),
}

/// One step of a device's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Read /9 and build the plan.
    Inspect,
    /// Create a /9 instance (install with no free instance).
    Create,
    /// Execute /9/x/res with optional arguments.
    Execute {
        /// Resource id.
        res: u16,
        /// Arguments.
        args: Option<String>,
        /// What to wait for.
        wait: Wait,
    },
    /// Deliver the package, wait DELIVERED.
    Deliver,
    /// Read /9/x to record the final version; next target or done.
    Finish,
}

impl Step {
    pub(super) fn wait(&self) -> Wait {
        match self {
            Step::Execute { wait, .. } => *wait,
            Step::Deliver => Wait::State(state::DELIVERED),
            _ => Wait::Nothing,
        }
    }
}

/// Where a job is within its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The step's request must be sent.
    Issue,
    /// Waiting for the reply to request `tag`.
    Reply(u64),
    /// Waiting for the step's condition.
    Wait,
    /// Waiting for the reply to poll `tag` (a Read of /9/x while waiting).
    Poll(u64),
    /// After a restart: read the instance first, then skip or redo the step.
    Verify,
    /// Waiting for the reply to the verify Read `tag`.
    VerifyReply(u64),
}

/// Known values of one /9 instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// /9/x/0.
    pub name: Option<String>,
    /// /9/x/1.
    pub version: Option<String>,
    /// /9/x/7.
    pub update_state: Option<i64>,
    /// /9/x/9.
    pub update_result: Option<i64>,
    /// /9/x/12.
    pub active: Option<bool>,
}

/// Per-instance report line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// /9 instance id.
    pub instance: u16,
    /// Version before the operation.
    pub old_version: Option<String>,
    /// Version after it.
    pub new_version: Option<String>,
    /// Whether it was active before (re-activated after an upgrade).
    pub was_active: bool,
}

/// One device's part of a campaign, with its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceJob {
    /// Endpoint name.
    pub endpoint: String,
    /// Status.
    pub status: JobStatus,
    /// Instances to work on, in order, with their report lines.
    pub targets: Vec<InstanceReport>,
    /// Index into `targets`.
    pub target: usize,
    /// Steps for the current target.
    pub plan: Vec<Step>,
    /// Index into `plan`.
    pub pc: usize,
    /// Phase of the current step.
    pub phase: Phase,
    /// Last known values per instance.
    pub instances: BTreeMap<u16, InstanceState>,
    /// Last Update State seen for the current target.
    pub update_state: Option<i64>,
    /// Last Update Result seen for the current target.
    pub update_result: Option<i64>,
    /// Name of `update_result`.
    pub update_result_name: Option<String>,
    /// Human-readable details (errors).
    pub details: Option<String>,
    /// Unix ms when the device started.
    pub started_at: Option<u64>,
    /// Unix ms when it finished.
    pub finished_at: Option<u64>,
    /// Unix ms of the last poll or fresh value.
    pub last_activity: u64,
    /// Eligible under `Schedule::NextRegistration` (registered since creation).
    pub armed: bool,
    /// Engine hash of the package variant with code the server precompiled
    /// for this device (issue 13), delivered instead of the plain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precompiled: Option<String>,
}

impl DeviceJob {
    pub(super) fn new(endpoint: String) -> Self {
        DeviceJob {
            endpoint,
            status: JobStatus::Pending,
            targets: Vec::new(),
            target: 0,
            plan: vec![Step::Inspect],
            pc: 0,
            phase: Phase::Issue,
            instances: BTreeMap::new(),
            update_state: None,
            update_result: None,
            update_result_name: None,
            details: None,
            started_at: None,
            finished_at: None,
            last_activity: 0,
            armed: false,
            precompiled: None,
        }
    }

    pub(super) fn current_instance(&self) -> Option<u16> {
        self.targets.get(self.target).map(|t| t.instance)
    }
}

/// Overall campaign status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    /// The server compiles the package for the devices' engines (issue 13)
    /// before any job starts ([`crate::precompile::preparing`]); the driver
    /// does not run it yet, a cancel ends it.
    Preparing,
    /// Devices still pending or running.
    Running,
    /// Every device reached a final status.
    Finished,
    /// Cancelled by the operator.
    Cancelled,
}

/// Summary counts for a group report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Done.
    pub done: usize,
    /// Failed.
    pub failed: usize,
    /// Timed out.
    pub timed_out: usize,
    /// Pending or running.
    pub pending: usize,
    /// Cancelled.
    pub cancelled: usize,
    /// Skipped (nothing matched).
    pub skipped: usize,
}
