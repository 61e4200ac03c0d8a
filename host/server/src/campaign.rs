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

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use wasmdm_proto::model::{Path, Value};

use crate::core::dm::{self, DmFailure, DmOp, DmReply};

mod model;
mod plan;
pub use model::*;
use plan::*;

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
