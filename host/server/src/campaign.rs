//! Software operations on devices and groups (install, uninstall, activate,
//! deactivate, upgrade) as a sans-IO engine: feed it [`Input`]s, execute the
//! [`Action`]s it returns. A campaign is plain data (serde) so the driver can
//! persist it after every step and resume it after a restart.
//!
//! Per device an upgrade is, for each installed instance of the package:
//! Uninstall with argument 1 (SwMgmt §5.1.3.2 "ForUpdate"), deliver (push =
//! Write /9/x/2, pull = Write /9/x/3), wait DELIVERED, Install, wait
//! INSTALLED, re-Activate if it was active. Waits are driven by values of
//! /9/x/7, /9/x/9 and /9/x/12 from notifications, with polling as fallback.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wasmdm_proto::model::{Path, Value};

use crate::core::dm::{self, DmFailure, DmOp, DmReply};

mod plan;
use plan::*;

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
    fn wait(&self) -> Wait {
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
    fn new(endpoint: String) -> Self {
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

    fn current_instance(&self) -> Option<u16> {
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

/// A request the driver must send to a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// A DM operation.
    Dm(DmOp),
    /// Block1 Write of the software file to /9/x/2 (CF 42).
    Push {
        /// /9 instance.
        instance: u16,
        /// File digest.
        sha256: String,
        /// Engine hash of the variant to push instead ([`DeviceJob::precompiled`]).
        precompiled: Option<String>,
    },
}

/// The /9 resources a job observes on its target instance: Update State,
/// Update Result, Activation State.
pub const CAMPAIGN_OBSERVED: [u16; 3] = [7, 9, 12];

/// What the engine asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send `request` to `endpoint`; answer with [`Input::Reply`] carrying `tag`.
    Send {
        /// Device.
        endpoint: String,
        /// Correlates the reply.
        tag: u64,
        /// What to send.
        request: Request,
    },
    /// Observe this path (best effort; notifications come back as [`Input::Values`]).
    Observe {
        /// Device.
        endpoint: String,
        /// Path.
        path: Path,
    },
}

/// Events fed to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed (timeouts, polls, schedule).
    Tick,
    /// The device registered or updated its registration.
    Registered(String),
    /// The reply to a [`Action::Send`]; `Err` for timeouts and transport errors.
    Reply {
        /// Device.
        endpoint: String,
        /// The action's tag.
        tag: u64,
        /// Reply or error text.
        result: Result<DmReply, DmFailure>,
    },
    /// Values observed (notification) from a device.
    Values {
        /// Device.
        endpoint: String,
        /// Values.
        values: Vec<(Path, Value)>,
    },
    /// Operator cancel.
    Cancel,
    /// Operator retry of failed and timed-out devices.
    RetryFailed,
}

/// A software operation on a set of devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// Identifier.
    pub id: String,
    /// Group it was started on, if any.
    pub group: Option<String>,
    /// Parameters.
    pub spec: CampaignSpec,
    /// Status.
    pub status: CampaignStatus,
    /// Unix ms of creation.
    pub created_at: u64,
    /// Devices.
    pub jobs: Vec<DeviceJob>,
    /// What the server noted while preparing it (e.g. why a group of
    /// devices gets no precompiled code).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    next_tag: u64,
    /// Indices of jobs changed since the last [`Campaign::take_dirty`].
    #[serde(skip)]
    dirty: Dirty,
}

/// Jobs changed by [`Campaign::handle`], so the driver persists only those
/// (a campaign of n devices then costs O(1) store work per event, not O(n)).
/// Bookkeeping, not state: it never makes two campaigns unequal.
#[derive(Debug, Clone, Default)]
struct Dirty(BTreeSet<usize>);

impl PartialEq for Dirty {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Campaign {
    /// A campaign on `endpoints` created at `now_ms`.
    pub fn new(
        id: String,
        group: Option<String>,
        spec: CampaignSpec,
        endpoints: Vec<String>,
        now_ms: u64,
    ) -> Self {
        let jobs = endpoints.into_iter().map(DeviceJob::new).collect();
        Campaign {
            id,
            group,
            spec,
            status: CampaignStatus::Running,
            created_at: now_ms,
            jobs,
            notes: Vec::new(),
            next_tag: 1,
            dirty: Dirty::default(),
        }
    }

    /// Indices of the jobs changed since the last call, in order; the driver
    /// persists exactly these (plus the campaign's own fields).
    pub fn take_dirty(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.dirty.0).into_iter().collect()
    }

    /// The campaign without its jobs: what is stored apart from them.
    pub fn header(&self) -> Campaign {
        Campaign {
            id: self.id.clone(),
            group: self.group.clone(),
            spec: self.spec.clone(),
            status: self.status,
            created_at: self.created_at,
            jobs: Vec::new(),
            notes: self.notes.clone(),
            next_tag: self.next_tag,
            dirty: Dirty::default(),
        }
    }

    fn touch(&mut self, i: usize) {
        self.dirty.0.insert(i);
    }

    /// Summary counts.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for j in &self.jobs {
            match j.status {
                JobStatus::Done => s.done += 1,
                JobStatus::Failed => s.failed += 1,
                JobStatus::TimedOut => s.timed_out += 1,
                JobStatus::Pending | JobStatus::Running => s.pending += 1,
                JobStatus::Cancelled => s.cancelled += 1,
                JobStatus::Skipped => s.skipped += 1,
            }
        }
        s
    }

    /// After a server restart: running jobs re-check their step (requests
    /// in flight were lost) and observations are re-established.
    pub fn resume(&mut self) {
        for (i, j) in self.jobs.iter_mut().enumerate() {
            if j.status == JobStatus::Running {
                self.dirty.0.insert(i);
                j.phase = match j.plan.get(j.pc) {
                    Some(Step::Inspect | Step::Create | Step::Finish) | None => Phase::Issue,
                    Some(_) => Phase::Verify,
                };
                j.last_activity = 0;
            }
        }
    }

    /// Processes one input at `now_ms`; `online` tells whether a device is registered.
    pub fn handle(
        &mut self,
        now_ms: u64,
        input: Input,
        online: &dyn Fn(&str) -> bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Cancel => {
                if matches!(
                    self.status,
                    CampaignStatus::Running | CampaignStatus::Preparing
                ) {
                    for (i, j) in self.jobs.iter_mut().enumerate() {
                        if j.status.is_final() {
                            continue;
                        }
                        self.dirty.0.insert(i);
                        j.status = JobStatus::Cancelled;
                        j.finished_at = Some(now_ms);
                        j.phase = Phase::Issue;
                    }
                    self.status = CampaignStatus::Cancelled;
                }
                return out;
            }
            Input::RetryFailed => {
                let mut any = false;
                for (i, j) in self.jobs.iter_mut().enumerate() {
                    if !matches!(j.status, JobStatus::Failed | JobStatus::TimedOut) {
                        continue;
                    }
                    self.dirty.0.insert(i);
                    let armed = j.armed;
                    *j = DeviceJob::new(j.endpoint.clone());
                    j.armed = armed || self.spec.schedule == Schedule::NextRegistration;
                    any = true;
                }
                if any {
                    self.status = CampaignStatus::Running;
                }
            }
            Input::Registered(ep) => {
                if let Some(i) = self.jobs.iter().position(|j| j.endpoint == ep)
                    && !self.jobs[i].armed
                {
                    self.jobs[i].armed = true;
                    self.touch(i);
                }
            }
            Input::Reply {
                endpoint,
                tag,
                result,
            } => {
                if let Some(i) = self.jobs.iter().position(|j| j.endpoint == endpoint) {
                    self.on_reply(i, now_ms, tag, result, &mut out);
                }
            }
            Input::Values { endpoint, values } => {
                if let Some(i) = self.jobs.iter().position(|j| j.endpoint == endpoint)
                    && self.jobs[i].status == JobStatus::Running
                {
                    self.touch(i);
                    absorb(&mut self.jobs[i], &values, now_ms);
                    self.advance(i, now_ms, &mut out);
                }
            }
            Input::Tick => {}
        }
        if self.status != CampaignStatus::Running {
            return out;
        }
        self.tick(now_ms, online, &mut out);
        if self.jobs.iter().all(|j| j.status.is_final()) {
            self.status = CampaignStatus::Finished;
        }
        out
    }

    fn tick(&mut self, now_ms: u64, online: &dyn Fn(&str) -> bool, out: &mut Vec<Action>) {
        // Timeouts and polls of running jobs.
        for i in 0..self.jobs.len() {
            let j = &mut self.jobs[i];
            if j.status != JobStatus::Running {
                continue;
            }
            let deadline = j
                .started_at
                .unwrap_or(now_ms)
                .saturating_add(self.spec.timeout_secs.saturating_mul(1000));
            if now_ms >= deadline {
                self.dirty.0.insert(i);
                j.status = JobStatus::TimedOut;
                j.finished_at = Some(now_ms);
                j.details = Some(format!("no completion within {} s", self.spec.timeout_secs));
                continue;
            }
            if j.phase == Phase::Wait && now_ms.saturating_sub(j.last_activity) >= self.spec.poll_ms
            {
                // Poll fallback for devices without (working) Observe.
                if let Some(x) = j.current_instance() {
                    self.dirty.0.insert(i);
                    j.last_activity = now_ms;
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    j.phase = Phase::Poll(tag);
                    let request = Request::Dm(DmOp::Read {
                        path: format!("/9/{x}"),
                        accept: None,
                    });
                    out.push(Action::Send {
                        endpoint: j.endpoint.clone(),
                        tag,
                        request,
                    });
                }
            }
            self.advance(i, now_ms, out);
        }
        // Start pending jobs within quota and schedule.
        let running = self
            .jobs
            .iter()
            .filter(|j| j.status == JobStatus::Running)
            .count();
        let mut free = self
            .spec
            .quota
            .map(|q| q.saturating_sub(running))
            .unwrap_or(usize::MAX);
        let due = match self.spec.schedule {
            Schedule::Now | Schedule::NextRegistration => true,
            Schedule::At { unix_ms } => now_ms >= unix_ms,
        };
        if !due {
            return;
        }
        for i in 0..self.jobs.len() {
            if free == 0 {
                break;
            }
            let j = &self.jobs[i];
            let eligible = j.status == JobStatus::Pending
                && online(&j.endpoint)
                && (self.spec.schedule != Schedule::NextRegistration || j.armed);
            if eligible {
                free -= 1;
                self.dirty.0.insert(i);
                let j = &mut self.jobs[i];
                j.status = JobStatus::Running;
                j.started_at = Some(now_ms);
                j.last_activity = now_ms;
                self.advance(i, now_ms, out);
            }
        }
    }

    /// Moves job `i` forward as far as it can without an answer.
    fn advance(&mut self, i: usize, now_ms: u64, out: &mut Vec<Action>) {
        for _ in 0..16 {
            let Some(j) = self.jobs.get_mut(i) else {
                return;
            };
            if j.status != JobStatus::Running {
                return;
            }
            let Some(step) = j.plan.get(j.pc).cloned() else {
                finish(j, now_ms, JobStatus::Done, None);
                self.dirty.0.insert(i);
                return;
            };
            match j.phase {
                Phase::Reply(_) | Phase::Poll(_) | Phase::VerifyReply(_) => return,
                Phase::Wait => {
                    let x = j.current_instance();
                    let st = x
                        .and_then(|x| j.instances.get(&x))
                        .cloned()
                        .unwrap_or_default();
                    if let Some(r) = st.update_result.filter(|r| is_failure_result(*r)) {
                        let detail = format!(
                            "device reported Update Result {r} ({})",
                            update_result_name(r)
                        );
                        finish(j, now_ms, JobStatus::Failed, Some(detail));
                        self.dirty.0.insert(i);
                        return;
                    }
                    let met = match step.wait() {
                        Wait::Nothing => true,
                        Wait::State(s) => st.update_state == Some(s),
                        Wait::Active(a) => st.active == Some(a),
                    };
                    if !met {
                        return;
                    }
                    j.pc += 1;
                    j.phase = Phase::Issue;
                    self.dirty.0.insert(i);
                }
                Phase::Issue | Phase::Verify => {
                    let verify = j.phase == Phase::Verify;
                    self.dirty.0.insert(i);
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    let Some(request) = self.request_for(i, &step, verify) else {
                        return;
                    };
                    let j = &mut self.jobs[i];
                    if matches!(step, Step::Execute { .. } | Step::Deliver) && !verify {
                        // Values seen before the action say nothing about its outcome.
                        if let Some(x) = j.current_instance() {
                            let s = j.instances.entry(x).or_default();
                            s.update_state = None;
                            s.update_result = None;
                            s.active = None;
                        }
                    }
                    j.phase = if verify {
                        Phase::VerifyReply(tag)
                    } else {
                        Phase::Reply(tag)
                    };
                    j.last_activity = now_ms;
                    out.push(Action::Send {
                        endpoint: j.endpoint.clone(),
                        tag,
                        request,
                    });
                    return;
                }
            }
        }
    }

    fn request_for(&mut self, i: usize, step: &Step, verify: bool) -> Option<Request> {
        let spec = &self.spec;
        let j = self.jobs.get_mut(i)?;
        let x = j.current_instance();
        if verify {
            return Some(Request::Dm(DmOp::Read {
                path: format!("/9/{}", x?),
                accept: None,
            }));
        }
        Some(match step {
            Step::Inspect => Request::Dm(DmOp::Read {
                path: "/9".into(),
                accept: None,
            }),
            // Empty TLV: the client assigns the instance id (Core 1.1 §6.3.6).
            Step::Create => Request::Dm(DmOp::Create {
                path: "/9".into(),
                format: 11542,
                payload: Vec::new(),
            }),
            Step::Execute { res, args, .. } => Request::Dm(DmOp::Execute {
                path: format!("/9/{}/{res}", x?),
                args: args.clone(),
            }),
            Step::Deliver => match (spec.delivery, &spec.file) {
                (Delivery::Push, Some(sha)) => Request::Push {
                    instance: x?,
                    sha256: sha.clone(),
                    precompiled: j.precompiled.clone(),
                },
                (Delivery::Pull, Some(sha)) => {
                    let Some(cap) = &spec.file_capability else {
                        finish(
                            j,
                            0,
                            JobStatus::Failed,
                            Some("the software file has no download capability".into()),
                        );
                        return None;
                    };
                    let base = spec.base_uri.clone().unwrap_or_default();
                    let mut uri = format!("{}/fw/{sha}/{cap}", base.trim_end_matches('/'));
                    // The variant with code precompiled for this device's engine.
                    if let Some(engine) = &j.precompiled {
                        uri = format!("{uri}/{engine}");
                    }
                    Request::Dm(DmOp::Write {
                        path: format!("/9/{}/3", x?),
                        replace: true,
                        format: 0,
                        payload: uri.into_bytes(),
                    })
                }
                (_, None) => {
                    finish(
                        j,
                        0,
                        JobStatus::Failed,
                        Some("no software file given".into()),
                    );
                    return None;
                }
            },
            Step::Finish => Request::Dm(DmOp::Read {
                path: format!("/9/{}", x?),
                accept: None,
            }),
        })
    }

    fn on_reply(
        &mut self,
        i: usize,
        now_ms: u64,
        tag: u64,
        result: Result<DmReply, DmFailure>,
        out: &mut Vec<Action>,
    ) {
        let Some(j) = self.jobs.get_mut(i) else {
            return;
        };
        let phase = j.phase;
        let current =
            matches!(phase, Phase::Reply(t) | Phase::Poll(t) | Phase::VerifyReply(t) if t == tag);
        if j.status != JobStatus::Running || !current {
            return; // stale (cancelled, restarted or superseded)
        }
        let Some(step) = j.plan.get(j.pc).cloned() else {
            return;
        };
        self.dirty.0.insert(i);
        let pull = self.spec.delivery == Delivery::Pull;
        let j = &mut self.jobs[i];
        let reply = match result {
            Ok(r) => r,
            Err(e) if matches!(phase, Phase::Poll(_)) => {
                // A lost poll is retried at the next poll period.
                j.details = Some(format!("poll failed: {e}"));
                j.phase = Phase::Wait;
                return;
            }
            // A device that stopped answering (or went away) did not refuse
            // anything: it is reported as unreachable, with the status of a
            // device that did not finish in time, and retried with those.
            Err(e) if e.is_unreachable() => {
                finish(
                    j,
                    now_ms,
                    JobStatus::TimedOut,
                    Some(format!("unreachable: {e} during {}", step_name(&step))),
                );
                return;
            }
            Err(e) => {
                finish(
                    j,
                    now_ms,
                    JobStatus::Failed,
                    Some(format!("request failed: {e}")),
                );
                return;
            }
        };
        absorb(j, &reply.values, now_ms);
        match phase {
            Phase::Poll(_) => {
                j.phase = Phase::Wait;
                self.advance(i, now_ms, out);
                return;
            }
            Phase::VerifyReply(_) => {
                // After a restart: skip the step if its outcome is already there, else redo it.
                let st = j
                    .current_instance()
                    .and_then(|x| j.instances.get(&x))
                    .cloned()
                    .unwrap_or_default();
                let met = match step.wait() {
                    Wait::State(s) => st.update_state == Some(s),
                    Wait::Active(a) => st.active == Some(a),
                    Wait::Nothing => false,
                };
                // A delivery under way goes on without the server: a pull the
                // device downloads itself, a package being verified. Writing
                // it again would be refused (a delivery starts from INITIAL
                // only, SwMgmt §5.1.2.1). A push cut short cannot go on (its
                // block sequence is gone): it starts over.
                let under_way = step == Step::Deliver
                    && match st.update_state {
                        Some(state::DOWNLOADED) => true,
                        Some(state::DOWNLOAD_STARTED) => pull,
                        _ => false,
                    };
                j.phase = if met || under_way {
                    Phase::Wait
                } else {
                    Phase::Issue
                };
                if let Some(t) = j.targets.get(j.target) {
                    for r in CAMPAIGN_OBSERVED {
                        out.push(Action::Observe {
                            endpoint: j.endpoint.clone(),
                            path: Path::resource(9, t.instance, r),
                        });
                    }
                }
                self.advance(i, now_ms, out);
                return;
            }
            _ => {}
        }
        let j = &mut self.jobs[i];
        if !reply.is_success() {
            let detail = format!(
                "{} on {:?} answered {}",
                j.endpoint,
                step,
                reply.code_text()
            );
            finish(j, now_ms, JobStatus::Failed, Some(detail));
            return;
        }
        match step {
            Step::Inspect => {
                let (targets, create) = plan_targets(&self.spec, j);
                if targets.is_empty() && !create {
                    finish(
                        j,
                        now_ms,
                        JobStatus::Skipped,
                        Some(format!("no instance of package {:?}", self.spec.package)),
                    );
                    return;
                }
                j.targets = targets;
                j.target = 0;
                j.plan = plan_for(&self.spec, create);
                j.pc = 0;
                j.phase = Phase::Issue;
                if !create {
                    observe_target(j, out);
                }
            }
            Step::Create => {
                let inst = reply
                    .location
                    .as_deref()
                    .and_then(|l| dm::parse_path(l).ok())
                    .and_then(|p| p.instance);
                let Some(x) = inst else {
                    finish(
                        j,
                        now_ms,
                        JobStatus::Failed,
                        Some("Create answered without Location-Path".into()),
                    );
                    return;
                };
                j.targets = vec![InstanceReport {
                    instance: x,
                    ..InstanceReport::default()
                }];
                j.pc += 1;
                j.phase = Phase::Issue;
                observe_target(j, out);
            }
            Step::Execute { .. } | Step::Deliver => {
                j.phase = Phase::Wait;
            }
            Step::Finish => {
                let x = j.current_instance();
                let version = x
                    .and_then(|x| j.instances.get(&x))
                    .and_then(|s| s.version.clone());
                if let Some(t) = j.targets.get_mut(j.target) {
                    t.new_version = version;
                }
                if j.target + 1 < j.targets.len() {
                    j.target += 1;
                    j.plan = plan_for(&self.spec, false);
                    j.pc = 0;
                    j.phase = Phase::Issue;
                    observe_target(j, out);
                } else {
                    finish(j, now_ms, JobStatus::Done, None);
                    return;
                }
            }
        }
        self.advance(i, now_ms, out);
    }
}

#[cfg(test)]
mod tests;
