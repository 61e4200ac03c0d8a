//! The driver's part in campaigns: feeding a campaign its inputs and
//! carrying out its actions (DM requests, Block1 pushes of a stored file,
//! observations of /9/x/7, 9, 12 and their end), and purging software files
//! whose retention elapsed once no campaign uses them.

use super::*;

impl Driver {
    /// Feeds a campaign, executes its actions and persists it.
    pub(super) fn campaign_input(&mut self, id: &str, input: Input) {
        let Some(c) = self.campaigns.get_mut(id) else {
            return;
        };
        let registry = &self.registry;
        let status = c.status;
        let actions = c.handle(unix_ms(), input, &|ep: &str| registry.get(ep).is_some());
        // Committed with the turn, before its requests go out; only the
        // jobs this input changed.
        let dirty = c.take_dirty();
        if (!dirty.is_empty() || c.status != status)
            && let Err(e) = self.batch.put_campaign(c, Some(&dirty))
        {
            tracing::warn!("store campaign {id}: {e}");
        }
        // A job that ended no longer needs its device's notifications.
        let ended: Vec<(String, Vec<u16>)> = dirty
            .iter()
            .filter_map(|&i| c.jobs.get(i))
            .filter(|j| j.status.is_final())
            .map(|j| {
                let instances = j.targets.iter().map(|t| t.instance).collect();
                (j.endpoint.clone(), instances)
            })
            .collect();
        if c.status != CampaignStatus::Running {
            self.campaigns.remove(id);
        }
        for (endpoint, instances) in ended {
            self.stop_observing(&endpoint, &instances);
        }
        for a in actions {
            match a {
                Action::Observe { endpoint, path } => {
                    if self.observations.find(&endpoint, path).is_none() {
                        let op = DmOp::Observe {
                            path: path.to_string(),
                            accept: None,
                        };
                        self.send_dm(&endpoint, op, Purpose::Observe);
                    }
                }
                Action::Send {
                    endpoint,
                    tag,
                    request,
                } => {
                    let purpose = Purpose::Campaign {
                        id: id.to_string(),
                        endpoint: endpoint.clone(),
                        tag,
                    };
                    match request {
                        Request::Dm(op) => self.send_dm(&endpoint, op, purpose),
                        Request::Push {
                            instance,
                            sha256,
                            precompiled,
                        } => self.send_push(
                            &endpoint,
                            instance,
                            &sha256,
                            precompiled.as_deref(),
                            purpose,
                        ),
                    }
                }
            }
        }
    }

    /// Forgets the campaign observations (/9/x/7, 9, 12) of these instances:
    /// the device's next notification gets a Reset and it drops the
    /// observation (RFC 7641 §3.6), instead of notifying a server that no
    /// longer listens for as long as it stays registered.
    pub(super) fn stop_observing(&mut self, endpoint: &str, instances: &[u16]) {
        for &x in instances {
            for r in CAMPAIGN_OBSERVED {
                if let Some(id) = self.observations.find(endpoint, Path::resource(9, x, r)) {
                    self.observations.remove(id);
                    self.endpoint.cancel(Instant::now(), id);
                }
            }
        }
    }

    /// Starts a Block1 push of a stored file to /9/x/2.
    pub(super) fn send_push(
        &mut self,
        endpoint: &str,
        instance: u16,
        sha: &str,
        precompiled: Option<&str>,
        purpose: Purpose,
    ) {
        let Some(reg) = self.registry.get(endpoint) else {
            self.complete_purpose(purpose, Err(DmFailure::NotRegistered(endpoint.to_string())));
            return;
        };
        let (peer, root) = (reg.peer, reg.objects.root.clone());
        // A variant is shared under its own digest, like a plain file.
        let variant = precompiled.and_then(|e| self.store.variant(sha, e));
        let key = variant
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| sha.to_string());
        let shared = self.files.get(&key).and_then(std::sync::Weak::upgrade);
        if let (Some(engine), None) = (precompiled, &variant) {
            tracing::warn!(
                "precompiled variant of {sha} for {engine} is gone: pushing the plain file"
            );
        }
        let store = &self.store;
        let read = || match &variant {
            Some((path, _)) => std::fs::read(path).map(Some).map_err(|e| e.to_string()),
            None => store.read_blob(sha).map_err(|e| e.to_string()),
        };
        let sha = key.as_str();
        let body = match shared {
            Some(b) => b,
            None => match read() {
                Ok(Some(b)) => {
                    let b = Arc::new(b);
                    self.files.retain(|_, w| w.strong_count() > 0);
                    self.files.insert(sha.to_string(), Arc::downgrade(&b));
                    b
                }
                _ => {
                    self.complete_purpose(
                        purpose,
                        Err(DmFailure::Other(format!("software file {sha} not found"))),
                    );
                    return;
                }
            },
        };
        let path = format!("/9/{instance}/2");
        let op = DmOp::Write {
            path: path.clone(),
            replace: true,
            format: 42,
            payload: Vec::new(),
        };
        let template = match op.to_packet(&root) {
            Ok(p) => p,
            Err(e) => {
                self.complete_purpose(purpose, Err(e.into()));
                return;
            }
        };
        let sender = Block1Sender::new(template, body, DEFAULT_SZX);
        let id = self
            .endpoint
            .send_request(Instant::now(), peer, sender.current());
        let pending = Pending {
            endpoint: endpoint.to_string(),
            path: Path::resource(9, instance, 2),
            default_format: None,
            purpose,
            block1: Some(sender),
            block2: None,
            composite: None,
        };
        self.pending.insert(id, pending);
    }

    /// Drops software files whose retention elapsed, unless a running or
    /// preparing campaign uses them (one the store cannot tell about is
    /// taken as in use).
    pub(super) fn purge_files(&mut self, now: u64) {
        let Ok(files) = self.store.list::<SoftwareFile>(FILES) else {
            return;
        };
        // Read once, at the first expired file; None: the store cannot tell.
        let mut stored_in_use: Option<Option<std::collections::BTreeSet<String>>> = None;
        for f in files {
            let expired = f.retain_until.is_some_and(|t| t <= now);
            if !expired {
                continue;
            }
            let stored =
                stored_in_use.get_or_insert_with(|| crate::files::files_in_use(&self.store).ok());
            let in_use = self
                .campaigns
                .values()
                .any(|c| c.spec.file.as_deref() == Some(f.sha256.as_str()))
                || stored.as_ref().is_none_or(|u| u.contains(&f.sha256));
            if !in_use {
                self.files.remove(&f.sha256);
                let removed = self
                    .store
                    .delete(FILES, &f.sha256)
                    .and_then(|_| self.store.remove_blob(&f.sha256));
                match removed {
                    Ok(()) => tracing::info!("software file {} ({}) expired", f.sha256, f.name),
                    Err(e) => tracing::warn!("purge {}: {e}", f.sha256),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{CampaignSpec, JobStatus};

    /// A driver on a store in `dir`, its socket on a free loopback port.
    async fn test_driver(dir: &std::path::Path) -> (Driver, Arc<Store>) {
        let store = Arc::new(Store::open(dir).unwrap());
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let driver = Driver::new(
            ServerTransport::new(socket, None),
            AccessPolicy { allow_nosec: true },
            RegistryLimits::default(),
            store.clone(),
            Notified::default(),
            Params::default(),
            1,
        )
        .unwrap();
        (driver, store)
    }

    /// Activate package `app`.
    fn activate_spec() -> CampaignSpec {
        serde_json::from_value(serde_json::json!({"op": "activate", "package": "app"})).unwrap()
    }

    /// The API reads a campaign from the store as soon as the driver answers
    /// a cancel or a retry: its new state must be committed by then.
    #[tokio::test]
    async fn cancel_and_retry_are_stored_before_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let (mut driver, store) = test_driver(dir.path()).await;
        let spec = activate_spec();
        let status = |id: &str| store.get_campaign(id).unwrap().unwrap().status;

        // Pending on a device that never registers; cancelled.
        let c = Campaign::new("c1".into(), None, spec.clone(), vec!["ep".into()], 0);
        store.put_campaign(&c, None).unwrap();
        driver.command(Command::StartCampaign(Box::new(c)));
        let (tx, rx) = oneshot::channel();
        driver.command(Command::Cancel("c1".into(), tx));
        assert!(rx.await.unwrap());
        assert_eq!(status("c1"), CampaignStatus::Cancelled);

        // Finished with a failed device; retried.
        let mut c = Campaign::new("c2".into(), None, spec, vec!["ep".into()], 0);
        c.jobs[0].status = JobStatus::Failed;
        c.status = CampaignStatus::Finished;
        store.put_campaign(&c, None).unwrap();
        let (tx, rx) = oneshot::channel();
        driver.command(Command::Retry("c2".into(), tx));
        assert!(rx.await.unwrap());
        assert_eq!(status("c2"), CampaignStatus::Running);
    }

    /// A job that ends drops its observations of /9/x/7, 9 and 12 (the
    /// device's next notification then gets a Reset); other observations of
    /// the device, and those of other devices, stay.
    #[tokio::test]
    async fn an_ended_job_stops_observing_its_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (mut driver, store) = test_driver(dir.path()).await;
        let spec = activate_spec();
        let mut c = Campaign::new("c1".into(), None, spec, vec!["ep".into()], 0);
        c.jobs[0].targets = vec![crate::campaign::InstanceReport {
            instance: 2,
            ..Default::default()
        }];
        store.put_campaign(&c, None).unwrap();
        driver.command(Command::StartCampaign(Box::new(c)));
        let observed = [
            ("ep", Path::resource(9, 2, 7)),
            ("ep", Path::resource(9, 2, 9)),
            ("ep", Path::resource(9, 2, 12)),
            ("ep", Path::resource(3, 0, 9)),
            ("other", Path::resource(9, 2, 7)),
        ];
        for (id, (ep, path)) in (100u64..).zip(observed) {
            driver
                .observations
                .insert(id, ep.into(), path, id.to_be_bytes().to_vec());
        }
        let (tx, rx) = oneshot::channel();
        driver.command(Command::Cancel("c1".into(), tx));
        assert!(rx.await.unwrap());
        let left: Vec<_> = observed
            .iter()
            .filter(|(ep, path)| driver.observations.find(ep, *path).is_some())
            .collect();
        assert_eq!(
            left,
            [
                &("ep", Path::resource(3, 0, 9)),
                &("other", Path::resource(9, 2, 7))
            ]
        );
    }

    /// An engine read for a campaign that prepares is answered even when it
    /// cannot be sent (the device is not registered): the campaign then
    /// gives that device the plain file instead of waiting.
    #[tokio::test]
    async fn an_engine_read_of_an_unknown_device_answers_none() {
        let dir = tempfile::tempdir().unwrap();
        let (mut driver, _store) = test_driver(dir.path()).await;
        let (reply, answer) = oneshot::channel();
        driver.command(Command::ReadEngine {
            endpoint: "nobody".into(),
            reply,
        });
        assert_eq!(answer.await.unwrap(), None);
    }
}
