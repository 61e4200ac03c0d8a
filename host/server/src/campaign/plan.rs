//! How a job's plan is made and followed: the instances a campaign works
//! on, the steps per instance, what a notification or read tells a job, and
//! how a job ends. Split from `campaign.rs`; behaviour unchanged.

use wasmdm_proto::model::{Path, Value};

use super::*;

/// What a step does, for a job's details ("unreachable: ... during Install").
pub(super) fn step_name(step: &Step) -> String {
    match step {
        Step::Inspect => "the read of /9".into(),
        Step::Create => "Create of a /9 instance".into(),
        Step::Execute { res, .. } => match res {
            4 => "Install".into(),
            6 => "Uninstall".into(),
            10 => "Activate".into(),
            11 => "Deactivate".into(),
            r => format!("Execute of /9/x/{r}"),
        },
        Step::Deliver => "delivery".into(),
        Step::Finish => "the final read".into(),
    }
}

/// Finalises a job.
pub(super) fn finish(j: &mut DeviceJob, now_ms: u64, status: JobStatus, details: Option<String>) {
    j.status = status;
    j.finished_at = Some(now_ms);
    if details.is_some() {
        j.details = details;
    }
}

/// Records /9 values in the job's cache.
pub(super) fn absorb(j: &mut DeviceJob, values: &[(Path, Value)], now_ms: u64) {
    for (p, v) in values {
        let (Some(x), Some(r)) = (p.instance, p.resource) else {
            continue;
        };
        if p.object != 9 {
            continue;
        }
        let current = Some(x) == j.current_instance();
        let s = j.instances.entry(x).or_default();
        match r {
            0 => s.name = dm::as_string(v),
            1 => s.version = dm::as_string(v),
            7 => s.update_state = dm::as_int(v),
            9 => s.update_result = dm::as_int(v),
            12 => s.active = dm::as_bool(v),
            _ => continue,
        }
        let (st, res) = (s.update_state, s.update_result);
        j.last_activity = now_ms;
        if current {
            j.update_state = st.or(j.update_state);
            if let Some(r) = res {
                j.update_result = Some(r);
                j.update_result_name = Some(update_result_name(r).to_string());
            }
        }
    }
}

/// Picks target instances after Inspect; the bool asks for a Create.
pub(super) fn plan_targets(spec: &CampaignSpec, j: &DeviceJob) -> (Vec<InstanceReport>, bool) {
    let matches = |s: &InstanceState| {
        s.name.as_deref() == Some(spec.package.as_str())
            && spec
                .version
                .as_ref()
                .is_none_or(|v| s.version.as_ref() == Some(v))
    };
    let report = |(x, s): (&u16, &InstanceState)| InstanceReport {
        instance: *x,
        old_version: s.version.clone(),
        new_version: None,
        was_active: s.active == Some(true),
    };
    match spec.op {
        OpKind::Install => {
            // A free instance: INITIAL with no package name.
            let free = j.instances.iter().find(|(_, s)| {
                s.update_state.unwrap_or(0) == state::INITIAL
                    && s.name.as_deref().unwrap_or("").is_empty()
            });
            match free {
                Some(f) => (vec![report(f)], false),
                None => (Vec::new(), true),
            }
        }
        _ => (
            j.instances
                .iter()
                .filter(|(_, s)| matches(s))
                .map(report)
                .collect(),
            false,
        ),
    }
}

/// The steps for one target.
pub(super) fn plan_for(spec: &CampaignSpec, create: bool) -> Vec<Step> {
    let exec = |res: u16, args: Option<&str>, wait: Wait| Step::Execute {
        res,
        args: args.map(String::from),
        wait,
    };
    let mut plan = Vec::new();
    match spec.op {
        OpKind::Install => {
            if create {
                plan.push(Step::Create);
            }
            plan.push(Step::Deliver);
            plan.push(exec(4, None, Wait::State(state::INSTALLED)));
            if spec.activate {
                plan.push(exec(10, None, Wait::Active(true)));
            }
        }
        OpKind::Upgrade => {
            // SwMgmt §5.1.3.2: Uninstall with argument 1 prepares for the update.
            plan.push(exec(6, Some("1"), Wait::State(state::INITIAL)));
            plan.push(Step::Deliver);
            plan.push(exec(4, None, Wait::State(state::INSTALLED)));
            // Re-activation is decided per target at run time (see `was_active`).
            plan.push(exec(10, None, Wait::Active(true)));
        }
        OpKind::Uninstall => plan.push(exec(6, None, Wait::State(state::INITIAL))),
        OpKind::Activate => plan.push(exec(10, None, Wait::Active(true))),
        OpKind::Deactivate => plan.push(exec(11, None, Wait::Active(false))),
    }
    plan.push(Step::Finish);
    plan
}

/// Starts observations of /9/x/7, /9/x/9, /9/x/12 and drops the re-activate
/// step of an upgrade when the target was not active.
pub(super) fn observe_target(j: &mut DeviceJob, out: &mut Vec<Action>) {
    let Some(t) = j.targets.get(j.target).cloned() else {
        return;
    };
    let upgrade_reactivate = |s: &Step| {
        matches!(
            s,
            Step::Execute {
                res: 10,
                wait: Wait::Active(true),
                ..
            }
        )
    };
    let is_upgrade = j.plan.iter().any(|s| {
        matches!(
            s,
            Step::Execute {
                res: 6,
                args: Some(_),
                ..
            }
        )
    });
    if is_upgrade && !t.was_active {
        j.plan.retain(|s| !upgrade_reactivate(s));
    }
    // Already prepared for the update (INITIAL with the package's name: an
    // earlier attempt ran Uninstall(1), then its delivery failed, e.g. with
    // 53): Uninstall is not allowed in INITIAL (SwMgmt §5.1.3.2), so a retry
    // goes straight to the delivery.
    let prepared =
        j.instances.get(&t.instance).and_then(|s| s.update_state) == Some(state::INITIAL);
    if is_upgrade && prepared {
        j.plan.retain(|s| {
            !matches!(
                s,
                Step::Execute {
                    res: 6,
                    args: Some(_),
                    ..
                }
            )
        });
    }
    for r in CAMPAIGN_OBSERVED {
        out.push(Action::Observe {
            endpoint: j.endpoint.clone(),
            path: Path::resource(9, t.instance, r),
        });
    }
}
