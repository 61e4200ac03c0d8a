//! Campaign engine tests against a simulated /9 device (no sockets).

use std::collections::{BTreeMap, VecDeque};

use super::*;

#[derive(Debug, Clone, Default)]
struct Inst {
    name: String,
    version: String,
    state: i64,
    result: i64,
    active: bool,
}

/// A device holding /9 instances that answers engine actions like a client would.
#[derive(Debug, Default)]
struct FakeDevice {
    inst: BTreeMap<u16, Inst>,
    observed: bool,
    observe_supported: bool,
    corrupt: bool,
    silent: bool,
    /// A pull stays in DOWNLOAD STARTED until the test completes it.
    slow_pull: bool,
    /// After this many requests the device stops answering: the driver
    /// then reports each further request as `DmFailure::NoResponse`.
    answers_left: Option<usize>,
    /// Version the next delivered package carries.
    next_version: String,
    log: Vec<String>,
}

impl FakeDevice {
    fn with_app(version: &str, active: bool) -> Self {
        let mut d = FakeDevice {
            observe_supported: true,
            next_version: "2.0".into(),
            ..Default::default()
        };
        d.inst.insert(
            0,
            Inst {
                name: "app".into(),
                version: version.into(),
                state: 4,
                result: 2,
                active,
            },
        );
        d
    }

    fn values(&self, x: u16) -> Vec<(Path, Value)> {
        let Some(i) = self.inst.get(&x) else {
            return vec![];
        };
        vec![
            (Path::resource(9, x, 0), Value::String(i.name.clone())),
            (Path::resource(9, x, 1), Value::String(i.version.clone())),
            (Path::resource(9, x, 7), Value::Integer(i.state)),
            (Path::resource(9, x, 9), Value::Integer(i.result)),
            (Path::resource(9, x, 12), Value::Boolean(i.active)),
        ]
    }

    /// Answers a request; returns the reply and notification values, if any.
    fn answer(&mut self, req: &Request) -> (Option<DmReply>, Option<Vec<(Path, Value)>>) {
        if self.silent {
            return (None, None);
        }
        let ok = |code: u8| DmReply {
            code,
            ..DmReply::default()
        };
        match req {
            Request::Push { instance, .. } => {
                self.log.push(format!("push {instance}"));
                (Some(ok(0x44)), self.deliver(*instance))
            }
            Request::Dm(op) => {
                let path = dm::parse_path(op.path()).unwrap();
                self.log
                    .push(format!("{:?} {}", std::mem::discriminant(op), path));
                match op {
                    DmOp::Read { .. } => {
                        let values = match path.instance {
                            Some(x) => self.values(x),
                            None => self.inst.keys().flat_map(|x| self.values(*x)).collect(),
                        };
                        (
                            Some(DmReply {
                                code: 0x45,
                                values,
                                ..DmReply::default()
                            }),
                            None,
                        )
                    }
                    DmOp::Create { .. } => {
                        let x = self.inst.keys().max().map(|m| m + 1).unwrap_or(0);
                        self.inst.insert(x, Inst::default());
                        (
                            Some(DmReply {
                                code: 0x41,
                                location: Some(format!("/9/{x}")),
                                ..DmReply::default()
                            }),
                            None,
                        )
                    }
                    DmOp::Write { .. } => {
                        let x = path.instance.unwrap();
                        let Some(i) = self.inst.get_mut(&x) else {
                            return (Some(ok(0x84)), None);
                        };
                        if i.state != 0 {
                            // A delivery starts from INITIAL only (SwMgmt §5.1.2.1).
                            return (Some(ok(0x85)), None);
                        }
                        if self.slow_pull {
                            i.state = 1;
                            i.result = 1;
                            return (Some(ok(0x44)), self.notify(x));
                        }
                        (Some(ok(0x44)), self.deliver(x))
                    }
                    DmOp::Execute { args, .. } => {
                        let x = path.instance.unwrap();
                        let Some(i) = self.inst.get_mut(&x) else {
                            return (Some(ok(0x84)), None);
                        };
                        match path.resource.unwrap() {
                            4 if i.state == 3 => {
                                i.state = 4;
                                i.result = 2;
                                i.version = self.next_version.clone();
                            }
                            // Uninstall: from DELIVERED or INSTALLED only
                            // (SwMgmt §5.1.3.2); a wasmdm device answers 4.05
                            // in INITIAL.
                            6 if i.state == 3 || i.state == 4 => {
                                i.state = 0;
                                i.result = 0;
                                i.active = false;
                                if args.as_deref() != Some("1") {
                                    i.name.clear();
                                }
                            }
                            10 if i.state == 4 => i.active = true,
                            11 if i.state == 4 => i.active = false,
                            _ => return (Some(ok(0x85)), None),
                        }
                        (Some(ok(0x44)), self.notify(x))
                    }
                    _ => (Some(ok(0x80)), None),
                }
            }
        }
    }

    fn deliver(&mut self, x: u16) -> Option<Vec<(Path, Value)>> {
        let corrupt = self.corrupt;
        let i = self.inst.get_mut(&x)?;
        if corrupt {
            i.state = 0;
            i.result = 53;
        } else {
            i.state = 3;
            i.result = 3;
            if i.name.is_empty() {
                i.name = "app".into();
            }
        }
        self.notify(x)
    }

    fn notify(&self, x: u16) -> Option<Vec<(Path, Value)>> {
        (self.observe_supported && self.observed).then(|| self.values(x))
    }
}

/// Runs the engine against fake devices until quiet; returns actions executed.
struct Harness {
    c: Campaign,
    devices: BTreeMap<String, FakeDevice>,
    now: u64,
    queue: VecDeque<Input>,
    max_running: usize,
    /// Most jobs one device event (reply or notification) marked for persistence.
    max_dirty_per_event: usize,
}

impl Harness {
    fn new(spec: CampaignSpec, devices: Vec<(&str, FakeDevice)>) -> Self {
        let eps = devices.iter().map(|(e, _)| e.to_string()).collect();
        Harness {
            c: Campaign::new("c1".into(), Some("g".into()), spec, eps, 0),
            devices: devices
                .into_iter()
                .map(|(e, d)| (e.to_string(), d))
                .collect(),
            now: 0,
            queue: VecDeque::new(),
            max_running: 0,
            max_dirty_per_event: 0,
        }
    }

    fn feed(&mut self, input: Input) {
        self.queue.push_back(input);
        while let Some(input) = self.queue.pop_front() {
            let online: Vec<String> = self.devices.keys().cloned().collect();
            let before = self.c.jobs.clone();
            let device_event = matches!(input, Input::Reply { .. } | Input::Values { .. });
            let actions = self
                .c
                .handle(self.now, input, &|ep: &str| online.iter().any(|o| o == ep));
            // Every changed job is reported for persistence (the driver stores only those).
            let dirty = self.c.take_dirty();
            if device_event {
                self.max_dirty_per_event = self.max_dirty_per_event.max(dirty.len());
            }
            for (i, (old, new)) in before.iter().zip(&self.c.jobs).enumerate() {
                assert!(
                    old == new || dirty.contains(&i),
                    "job {i} changed but is not marked dirty:\n{old:#?}\n{new:#?}"
                );
            }
            let running = self
                .c
                .jobs
                .iter()
                .filter(|j| j.status == JobStatus::Running)
                .count();
            self.max_running = self.max_running.max(running);
            for a in actions {
                match a {
                    Action::Observe { endpoint, .. } => {
                        if let Some(d) = self.devices.get_mut(&endpoint) {
                            d.observed = d.observe_supported;
                        }
                    }
                    Action::Send {
                        endpoint,
                        tag,
                        request,
                    } => {
                        let Some(d) = self.devices.get_mut(&endpoint) else {
                            continue;
                        };
                        if d.answers_left == Some(0) {
                            self.queue.push_back(Input::Reply {
                                endpoint,
                                tag,
                                result: Err(DmFailure::NoResponse),
                            });
                            continue;
                        }
                        if let Some(n) = d.answers_left.as_mut() {
                            *n -= 1;
                        }
                        let (reply, notif) = d.answer(&request);
                        if let Some(r) = reply {
                            self.queue.push_back(Input::Reply {
                                endpoint: endpoint.clone(),
                                tag,
                                result: Ok(r),
                            });
                        }
                        if let Some(values) = notif {
                            self.queue.push_back(Input::Values { endpoint, values });
                        }
                    }
                }
            }
        }
    }

    /// Advances time in steps of `step` ms, ticking, up to `until`.
    fn run_until(&mut self, until: u64, step: u64) {
        while self.now < until && self.c.status == CampaignStatus::Running {
            self.now += step;
            self.feed(Input::Tick);
        }
    }

    fn job(&self, ep: &str) -> &DeviceJob {
        self.c.jobs.iter().find(|j| j.endpoint == ep).unwrap()
    }
}

fn upgrade_spec() -> CampaignSpec {
    CampaignSpec {
        op: OpKind::Upgrade,
        package: "app".into(),
        version: None,
        file: Some("ab".repeat(32)),
        file_capability: Some("cd".repeat(16)),
        timeout_secs: 60,
        delivery: Delivery::Pull,
        protocol: Protocol::Coap,
        base_uri: Some("coap://127.0.0.1:5683".into()),
        quota: None,
        schedule: Schedule::Now,
        activate: false,
        poll_ms: 1_000,
    }
}

#[test]
fn upgrade_runs_the_guide_sequence_and_reactivates() {
    let mut h = Harness::new(
        upgrade_spec(),
        vec![("d1", FakeDevice::with_app("1.0", true))],
    );
    h.feed(Input::Tick);
    assert_eq!(h.c.status, CampaignStatus::Finished, "{:#?}", h.c.jobs);
    let j = h.job("d1");
    assert_eq!(j.status, JobStatus::Done);
    assert_eq!(j.targets[0].old_version.as_deref(), Some("1.0"));
    assert_eq!(j.targets[0].new_version.as_deref(), Some("2.0"));
    assert!(j.targets[0].was_active);
    let d = &h.devices["d1"];
    assert!(d.inst[&0].active, "re-activated");
    assert_eq!(d.inst[&0].state, 4);
    // Read /9, Uninstall(1), Write URI, Install, Activate, final Read.
    let kinds: Vec<String> = d
        .log
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        vec!["/9", "/9/0/6", "/9/0/3", "/9/0/4", "/9/0/10", "/9/0"]
    );
    assert_eq!(
        h.c.summary(),
        Summary {
            done: 1,
            ..Summary::default()
        }
    );
}

#[test]
fn pull_uri_and_push_requests() {
    let mut spec = upgrade_spec();
    let mut c = Campaign::new("c".into(), None, spec.clone(), vec!["d".into()], 0);
    c.jobs[0].targets = vec![InstanceReport {
        instance: 2,
        ..Default::default()
    }];
    c.jobs[0].plan = vec![Step::Deliver];
    c.jobs[0].status = JobStatus::Running;
    c.jobs[0].started_at = Some(0);
    let acts = c.handle(0, Input::Tick, &|_| true);
    let Action::Send {
        request:
            Request::Dm(DmOp::Write {
                path,
                payload,
                format,
                ..
            }),
        ..
    } = &acts[0]
    else {
        panic!("{acts:?}")
    };
    assert_eq!(path, "/9/2/3");
    assert_eq!(*format, 0);
    assert_eq!(
        String::from_utf8_lossy(payload),
        format!(
            "coap://127.0.0.1:5683/fw/{}/{}",
            "ab".repeat(32),
            "cd".repeat(16)
        )
    );
    spec.delivery = Delivery::Push;
    let mut c2 = Campaign { spec, ..c.clone() };
    c2.jobs[0].phase = Phase::Issue;
    let acts = c2.handle(0, Input::Tick, &|_| true);
    assert!(matches!(
        &acts[0],
        Action::Send {
            request: Request::Push { instance: 2, .. },
            ..
        }
    ));
}

#[test]
fn polling_drives_devices_without_observe() {
    let mut dev = FakeDevice::with_app("1.0", false);
    dev.observe_supported = false;
    let mut h = Harness::new(upgrade_spec(), vec![("d1", dev)]);
    h.feed(Input::Tick);
    assert_eq!(h.job("d1").status, JobStatus::Running);
    h.run_until(30_000, 500);
    let j = h.job("d1");
    assert_eq!(j.status, JobStatus::Done, "{j:#?}");
    assert!(
        !h.devices["d1"].inst[&0].active,
        "was not active: not activated"
    );
    assert!(
        h.devices["d1"]
            .log
            .iter()
            .filter(|l| l.ends_with("/9/0"))
            .count()
            >= 3,
        "polled"
    );
}

#[test]
fn integrity_failure_is_reported_with_its_result_name() {
    let mut bad = FakeDevice::with_app("1.0", true);
    bad.corrupt = true;
    let mut h = Harness::new(
        upgrade_spec(),
        vec![("good", FakeDevice::with_app("1.0", true)), ("bad", bad)],
    );
    h.feed(Input::Tick);
    let j = h.job("bad");
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.update_result, Some(53));
    assert_eq!(
        j.update_result_name.as_deref(),
        Some("Package integrity check failure")
    );
    assert_eq!(
        h.c.summary(),
        Summary {
            done: 1,
            failed: 1,
            ..Summary::default()
        }
    );
    assert_eq!(h.c.status, CampaignStatus::Finished);
    // Retry after fixing the device: the instance is still prepared for the
    // update (INITIAL, Uninstall(1) done), so the retry skips the Uninstall
    // the device would refuse with 4.05 and delivers again.
    assert_eq!(h.devices["bad"].inst[&0].state, 0);
    h.devices.get_mut("bad").unwrap().corrupt = false;
    h.devices.get_mut("bad").unwrap().log.clear();
    h.feed(Input::RetryFailed);
    assert_eq!(h.job("bad").status, JobStatus::Done, "{:#?}", h.job("bad"));
    assert_eq!(h.c.summary().done, 2);
    let retried: Vec<&str> = h.devices["bad"]
        .log
        .iter()
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert!(!retried.contains(&"/9/0/6"), "{retried:?}");
    assert_eq!(h.job("bad").targets[0].new_version.as_deref(), Some("2.0"));
}

#[test]
fn silent_device_times_out() {
    let mut dead = FakeDevice::with_app("1.0", true);
    dead.silent = true;
    let mut h = Harness::new(upgrade_spec(), vec![("dead", dead)]);
    h.feed(Input::Tick);
    h.run_until(61_000, 1_000);
    let j = h.job("dead");
    assert_eq!(j.status, JobStatus::TimedOut);
    assert_eq!(h.c.summary().timed_out, 1);
}

#[test]
fn quota_limits_concurrency_and_cancel_stops_the_rest() {
    let mut spec = upgrade_spec();
    spec.quota = Some(2);
    let mut devs = Vec::new();
    for i in 0..5 {
        let mut d = FakeDevice::with_app("1.0", false);
        d.observe_supported = false; // keep them running until polled
        devs.push((["a", "b", "c", "d", "e"][i], d));
    }
    let mut h = Harness::new(spec, devs);
    h.feed(Input::Tick);
    assert_eq!(
        h.c.jobs
            .iter()
            .filter(|j| j.status == JobStatus::Running)
            .count(),
        2
    );
    h.now += 1_000;
    h.feed(Input::Cancel);
    assert_eq!(h.c.status, CampaignStatus::Cancelled);
    assert_eq!(h.c.summary().cancelled, 5);
    // Nothing moves after a cancel.
    h.now += 10_000;
    h.feed(Input::Tick);
    assert_eq!(h.c.summary().cancelled, 5);
    assert!(h.max_running <= 2);
}

#[test]
fn quota_run_completes_all() {
    let mut spec = upgrade_spec();
    spec.quota = Some(3);
    let names: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let devs = names
        .iter()
        .map(|n| (n.as_str(), FakeDevice::with_app("1.0", false)))
        .collect();
    let mut h = Harness::new(spec, devs);
    h.run_until(60_000, 100);
    assert_eq!(h.c.summary().done, 10);
    assert!(h.max_running <= 3, "max {}", h.max_running);
}

/// Scale: one device's reply or notification changes only that device's job
/// (and the one started in its place), so the driver's store work per event
/// does not grow with the campaign (it rewrote the whole campaign before).
#[test]
fn device_events_touch_only_their_job() {
    let mut spec = upgrade_spec();
    spec.quota = Some(20);
    let names: Vec<String> = (0..200).map(|i| format!("d{i:03}")).collect();
    let devs = names
        .iter()
        .map(|n| (n.as_str(), FakeDevice::with_app("1.0", true)))
        .collect();
    let mut h = Harness::new(spec, devs);
    h.run_until(600_000, 100);
    assert_eq!(h.c.summary().done, 200, "{:?}", h.c.summary());
    assert!(h.max_running <= 20, "max {}", h.max_running);
    assert!(
        h.max_dirty_per_event <= 2,
        "an event marked {} jobs",
        h.max_dirty_per_event
    );
    // The header carries no jobs; header + jobs round-trip to the campaign.
    let mut back = h.c.header();
    assert!(back.jobs.is_empty());
    back.jobs = h.c.jobs.clone();
    assert_eq!(back, h.c);
}

#[test]
fn version_filter_and_skip() {
    let mut spec = upgrade_spec();
    spec.version = Some("1.0".into());
    let mut two = FakeDevice::with_app("1.0", false);
    two.inst.insert(
        1,
        Inst {
            name: "app".into(),
            version: "0.9".into(),
            state: 4,
            result: 2,
            active: false,
        },
    );
    let mut h = Harness::new(
        spec,
        vec![("two", two), ("other", FakeDevice::with_app("3.0", false))],
    );
    h.feed(Input::Tick);
    assert_eq!(h.job("two").status, JobStatus::Done);
    assert_eq!(h.job("two").targets.len(), 1);
    assert_eq!(
        h.devices["two"].inst[&1].version, "0.9",
        "other version untouched"
    );
    assert_eq!(h.job("other").status, JobStatus::Skipped);
    // Without a version every instance of the name is upgraded.
    let mut two = FakeDevice::with_app("1.0", false);
    two.inst.insert(
        1,
        Inst {
            name: "app".into(),
            version: "0.9".into(),
            state: 4,
            result: 2,
            active: true,
        },
    );
    let mut h = Harness::new(upgrade_spec(), vec![("two", two)]);
    h.feed(Input::Tick);
    let j = h.job("two");
    assert_eq!((j.status, j.targets.len()), (JobStatus::Done, 2));
    assert_eq!(h.devices["two"].inst[&1].version, "2.0");
    assert!(h.devices["two"].inst[&1].active);
}

#[test]
fn install_creates_an_instance_and_activates() {
    let spec = CampaignSpec {
        op: OpKind::Install,
        activate: true,
        ..upgrade_spec()
    };
    let dev = FakeDevice {
        observe_supported: true,
        next_version: "1.0".into(),
        ..Default::default()
    };
    let mut h = Harness::new(spec, vec![("d", dev)]);
    h.feed(Input::Tick);
    let j = h.job("d");
    assert_eq!(j.status, JobStatus::Done, "{j:#?}");
    assert_eq!(j.targets[0].instance, 0);
    assert_eq!(j.targets[0].new_version.as_deref(), Some("1.0"));
    let i = &h.devices["d"].inst[&0];
    assert_eq!((i.state, i.active), (4, true));
}

#[test]
fn uninstall_activate_deactivate() {
    for (op, check) in [
        (
            OpKind::Deactivate,
            (|i: &Inst| !i.active && i.state == 4) as fn(&Inst) -> bool,
        ),
        (OpKind::Uninstall, |i: &Inst| {
            i.state == 0 && i.name.is_empty()
        }),
    ] {
        let spec = CampaignSpec {
            op,
            file: None,
            ..upgrade_spec()
        };
        let mut h = Harness::new(spec, vec![("d", FakeDevice::with_app("1.0", true))]);
        h.feed(Input::Tick);
        assert_eq!(h.job("d").status, JobStatus::Done, "{op:?}");
        assert!(check(&h.devices["d"].inst[&0]), "{op:?}");
    }
    let spec = CampaignSpec {
        op: OpKind::Activate,
        file: None,
        ..upgrade_spec()
    };
    let mut h = Harness::new(spec, vec![("d", FakeDevice::with_app("1.0", false))]);
    h.feed(Input::Tick);
    assert!(h.devices["d"].inst[&0].active);
}

#[test]
fn device_error_code_fails_the_job() {
    // Activate on a DELIVERED (not installed) instance: the device answers 4.05.
    let spec = CampaignSpec {
        op: OpKind::Activate,
        file: None,
        ..upgrade_spec()
    };
    let mut d = FakeDevice::with_app("1.0", false);
    d.inst.get_mut(&0).unwrap().state = 3;
    let mut h = Harness::new(spec, vec![("d", d)]);
    h.feed(Input::Tick);
    let j = h.job("d");
    assert_eq!(j.status, JobStatus::Failed);
    assert!(
        j.details.as_deref().unwrap().contains("4.05"),
        "{:?}",
        j.details
    );
}

#[test]
fn a_device_that_stops_answering_is_unreachable_not_failed() {
    // It answers the read of /9 and Uninstall, then nothing: the driver's
    // exchange times out. Another device refuses with 4.05: that one failed.
    let mut gone = FakeDevice::with_app("1.0", true);
    gone.answers_left = Some(2);
    let spec = CampaignSpec {
        op: OpKind::Activate,
        file: None,
        ..upgrade_spec()
    };
    let mut refusing = FakeDevice::with_app("1.0", false);
    refusing.inst.get_mut(&0).unwrap().state = 3;
    let mut h = Harness::new(upgrade_spec(), vec![("gone", gone)]);
    h.feed(Input::Tick);
    h.run_until(10_000, 1_000);
    let j = h.job("gone");
    assert_eq!(j.status, JobStatus::TimedOut, "{j:#?}");
    let details = j.details.as_deref().unwrap_or_default();
    assert!(details.starts_with("unreachable: no response"), "{details}");
    assert_eq!(h.c.summary().timed_out, 1);
    assert_eq!(h.c.summary().failed, 0);
    // Retried with the failed ones: back online, it completes.
    if let Some(d) = h.devices.get_mut("gone") {
        d.answers_left = None;
    }
    h.feed(Input::RetryFailed);
    h.run_until(20_000, 1_000);
    assert_eq!(h.job("gone").status, JobStatus::Done);

    let mut h = Harness::new(spec, vec![("refusing", refusing)]);
    h.feed(Input::Tick);
    assert_eq!(h.job("refusing").status, JobStatus::Failed);
}

#[test]
fn unregistered_is_unreachable_and_other_errors_fail() {
    for (err, status, prefix) in [
        (
            DmFailure::NotRegistered("d".into()),
            JobStatus::TimedOut,
            "unreachable: device d is not registered during the read of /9",
        ),
        (
            DmFailure::Other("software file x not found".into()),
            JobStatus::Failed,
            "request failed: software file x not found",
        ),
    ] {
        let mut d = FakeDevice::with_app("1.0", true);
        d.silent = true;
        let mut h = Harness::new(upgrade_spec(), vec![("d", d)]);
        h.feed(Input::Tick);
        let Some(Phase::Reply(tag)) = h.c.jobs.first().map(|j| j.phase) else {
            panic!("the read of /9 is not out: {:#?}", h.c.jobs);
        };
        h.feed(Input::Reply {
            endpoint: "d".into(),
            tag,
            result: Err(err),
        });
        let j = h.job("d");
        assert_eq!(j.status, status);
        assert_eq!(j.details.as_deref(), Some(prefix));
    }
}

#[test]
fn next_registration_schedule_and_offline_devices() {
    let spec = CampaignSpec {
        schedule: Schedule::NextRegistration,
        ..upgrade_spec()
    };
    let mut h = Harness::new(spec, vec![("d", FakeDevice::with_app("1.0", false))]);
    h.feed(Input::Tick);
    assert_eq!(
        h.job("d").status,
        JobStatus::Pending,
        "online but not re-registered yet"
    );
    h.feed(Input::Registered("d".into()));
    assert_eq!(h.job("d").status, JobStatus::Done);

    let spec = CampaignSpec {
        schedule: Schedule::At { unix_ms: 5_000 },
        ..upgrade_spec()
    };
    let mut h = Harness::new(spec, vec![("d", FakeDevice::with_app("1.0", false))]);
    h.feed(Input::Tick);
    assert_eq!(h.job("d").status, JobStatus::Pending);
    h.run_until(5_000, 1_000);
    assert_eq!(h.job("d").status, JobStatus::Done);

    // An offline device waits (its timeout starts only when it starts).
    let mut c = Campaign::new("c".into(), None, upgrade_spec(), vec!["off".into()], 0);
    assert!(c.handle(100_000, Input::Tick, &|_| false).is_empty());
    assert_eq!(c.jobs[0].status, JobStatus::Pending);
}

#[test]
fn restart_mid_campaign_resumes_from_persisted_state() {
    let mut dev = FakeDevice::with_app("1.0", true);
    dev.observe_supported = false;
    let mut h = Harness::new(upgrade_spec(), vec![("d", dev)]);
    h.feed(Input::Tick);
    // Waiting for DELIVERED or INITIAL after the first actions: persist and "restart".
    assert_eq!(h.job("d").status, JobStatus::Running);
    let saved = serde_json::to_string(&h.c).unwrap();
    let mut restored: Campaign = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored, h.c);
    restored.resume();
    h.c = restored;
    h.devices.get_mut("d").unwrap().observe_supported = true;
    h.run_until(30_000, 500);
    let j = h.job("d");
    assert_eq!(j.status, JobStatus::Done, "{j:#?}");
    assert_eq!(j.targets[0].new_version.as_deref(), Some("2.0"));
    assert!(h.devices["d"].inst[&0].active);
    // Each action ran once: no second Uninstall or Install.
    let count = |p: &str| h.devices["d"].log.iter().filter(|l| l.ends_with(p)).count();
    assert_eq!(
        (count("/9/0/6"), count("/9/0/4")),
        (1, 1),
        "{:?}",
        h.devices["d"].log
    );
}

#[test]
fn restart_while_a_device_pulls_waits_for_the_delivery() {
    let mut dev = FakeDevice::with_app("1.0", true);
    dev.slow_pull = true;
    let mut h = Harness::new(upgrade_spec(), vec![("d", dev)]);
    h.feed(Input::Tick);
    let j = h.job("d");
    assert_eq!(j.plan[j.pc], Step::Deliver, "{j:#?}");
    assert_eq!(h.devices["d"].inst[&0].state, 1, "downloading");
    // The server restarts while the device downloads.
    let saved = serde_json::to_string(&h.c).unwrap();
    let mut restored: Campaign = serde_json::from_str(&saved).unwrap();
    restored.resume();
    h.c = restored;
    h.run_until(5_000, 500);
    let j = h.job("d");
    assert_eq!(j.status, JobStatus::Running, "{j:#?}");
    // The download ends: DELIVERED, and the upgrade goes on.
    let d = h.devices.get_mut("d").unwrap();
    d.slow_pull = false;
    if let Some(values) = d.deliver(0) {
        h.feed(Input::Values {
            endpoint: "d".into(),
            values,
        });
    }
    h.run_until(30_000, 500);
    let j = h.job("d");
    assert_eq!(j.status, JobStatus::Done, "{j:#?}");
    assert_eq!(j.targets[0].new_version.as_deref(), Some("2.0"));
    // The Package URI was written once, not again after the restart.
    let log = &h.devices["d"].log;
    assert_eq!(
        log.iter().filter(|l| l.ends_with("/9/0/3")).count(),
        1,
        "{log:?}"
    );
}

#[test]
fn stale_replies_are_ignored() {
    let mut c = Campaign::new("c".into(), None, upgrade_spec(), vec!["d".into()], 0);
    let acts = c.handle(0, Input::Tick, &|_| true);
    let Action::Send { tag, .. } = acts[0].clone() else {
        panic!()
    };
    let before = c.clone();
    let wrong = Input::Reply {
        endpoint: "d".into(),
        tag: tag + 99,
        result: Ok(DmReply::default()),
    };
    assert!(c.handle(0, wrong, &|_| true).is_empty());
    assert_eq!(c, before);
    let unknown = Input::Reply {
        endpoint: "zz".into(),
        tag,
        result: Ok(DmReply::default()),
    };
    c.handle(0, unknown, &|_| true);
    assert_eq!(c, before);
}

#[test]
fn result_names_follow_the_spec() {
    assert_eq!(update_result_name(2), "Software successfully installed");
    assert_eq!(
        update_result_name(59),
        "Uninstallation failure during forUpdate"
    );
    assert_eq!(update_result_name(55), "Undefined");
    assert!(is_failure_result(50) && is_failure_result(59) && !is_failure_result(3));
}

/// Issue 13: while the server compiles for the devices' engines the
/// campaign is preparing: time and registrations start no job, a cancel
/// ends every job without a request to any device.
#[test]
fn a_preparing_campaign_starts_nothing_and_cancels_cleanly() {
    let mut h = Harness::new(
        upgrade_spec(),
        vec![("a", FakeDevice::with_app("1.0", true))],
    );
    h.c.status = CampaignStatus::Preparing;
    h.feed(Input::Tick);
    h.now += 60_000;
    h.feed(Input::Tick);
    assert_eq!(h.c.status, CampaignStatus::Preparing);
    assert_eq!(h.c.jobs[0].status, JobStatus::Pending);
    // Not even the read of /9 was sent.
    assert_eq!(h.c.jobs[0].started_at, None);
    assert_eq!(h.c.jobs[0].phase, Phase::Issue);
    let json = serde_json::to_value(&h.c).unwrap();
    assert_eq!(json["status"], "preparing");
    h.feed(Input::Cancel);
    assert_eq!(h.c.status, CampaignStatus::Cancelled);
    assert_eq!(h.c.summary().cancelled, 1);
    assert_eq!(h.c.jobs[0].started_at, None);
}
