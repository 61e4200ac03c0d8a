//! Activation, deactivation and shutdown: starting and stopping component
//! supervisors, with the activation set persisted first.

use super::*;

impl Runtime {
    /// Starts supervisors for every active component of `name` not already running.
    pub(super) fn start_active(&self, name: &str) {
        let mut pkgs = self.pkgs();
        let Some(pkg) = pkgs.get_mut(name) else {
            return;
        };
        let ids: Vec<String> = pkg.record.active.iter().cloned().collect();
        for id in ids {
            // A host restart is no operator's decision to try again: the
            // restart budget carries over, and a component whose policy gave
            // up stays Failed until it is activated again.
            if pkg.comps.get(&id).is_some_and(|c| {
                c.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .crash_loop
            }) {
                tracing::warn!(
                    "{name}/{id}: not started: its restart policy gave up before the host \
                     restarted (crash loop); activate it to try again"
                );
                if let Some(c) = pkg.comps.get(&id) {
                    c.status.lock().unwrap_or_else(|p| p.into_inner()).state =
                        ComponentState::Failed;
                }
                continue;
            }
            if let Err(e) = self.start_with(pkg, &id, RestartBudget::CarriedOver) {
                tracing::error!("{name}/{id}: {e}");
            }
        }
    }

    /// Starts `id` with a fresh restart budget (an operator's activation).
    pub(super) fn start_one(&self, pkg: &mut Pkg, id: &str) -> Result<()> {
        self.start_with(pkg, id, RestartBudget::Fresh)
    }

    pub(super) fn start_with(&self, pkg: &mut Pkg, id: &str, budget: RestartBudget) -> Result<()> {
        let name = pkg.record.spec.name.clone();
        let config = Arc::new(pkg.record.spec.config.clone());
        let root = pkg.root.clone();
        let comp = pkg
            .comps
            .get_mut(id)
            .ok_or_else(|| RuntimeError::UnknownComponent {
                package: name.clone(),
                component: id.to_string(),
            })?;
        if comp.sup.as_ref().is_some_and(|s| !s.is_finished()) {
            return Ok(());
        }
        let code = comp
            .code
            .clone()
            .map_err(|reason| RuntimeError::NotRunnable {
                package: name.clone(),
                component: id.to_string(),
                reason,
            })?;
        let slot =
            self.inner
                .instance_slots
                .take(1)
                .map_err(|reason| RuntimeError::NotRunnable {
                    package: name.clone(),
                    component: id.to_string(),
                    reason,
                })?;
        let share = self
            .inner
            .descriptors
            .take(
                u64::from(comp.spec.sandbox.max_descriptors)
                    .saturating_mul(datafs::RESOURCES_PER_DESCRIPTOR as u64),
            )
            .map_err(|reason| RuntimeError::NotRunnable {
                package: name.clone(),
                component: id.to_string(),
                reason,
            })?;
        {
            let mut st = comp.status.lock().unwrap_or_else(|p| p.into_inner());
            st.active = true;
            if budget == RestartBudget::Fresh {
                st.restart_count = 0;
                st.retries = 0;
            }
            st.crash_loop = false;
            // Visible at once: activate() returns with the component Starting.
            st.state = ComponentState::Starting;
        }
        let sb = &comp.spec.sandbox;
        let setup = InstanceSetup {
            argv0: comp.spec.id.clone(),
            sandbox: sb.clone(),
            data_dir: sb
                .data_dir
                .then(|| self.inner.dirs.appdata(&name, &comp.spec.id)),
            package_root: root,
            config,
            log: comp.log.clone(),
            objects: self.inner.app_objects.clone(),
            grant: appobjects::AppGrant {
                package: name.clone(),
                component: comp.spec.id.clone(),
                objects: sb.objects.clone(),
            },
        };
        let exit_file = self.inner.dirs.exit_file(&name, &comp.spec.id);
        comp.sup = Some(Supervisor::start(
            SupervisorArgs {
                package: name,
                setup,
                status: comp.status.clone(),
                events: self.inner.events.clone(),
                exit_file: Some(exit_file),
                keepalive: self.inner.lock.clone(),
                shares: vec![slot, share],
            },
            code,
        ));
        Ok(())
    }

    pub(super) fn resolve_ids(&self, name: &str, component: Option<&str>) -> Result<Vec<String>> {
        let pkgs = self.pkgs();
        let pkg = pkgs
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
        match component {
            None => Ok(pkg.comps.keys().cloned().collect()),
            Some(c) if pkg.comps.contains_key(c) => Ok(vec![c.to_string()]),
            Some(c) => Err(RuntimeError::UnknownComponent {
                package: name.to_string(),
                component: c.to_string(),
            }),
        }
    }

    /// Activates a package (all components) or one component. Idempotent. The
    /// activation is persisted before this returns; the instance then starts
    /// (not in a runtime opened without `autostart`, which runs nothing).
    pub async fn activate(&self, name: &str, component: Option<&str>) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        let ids = self.resolve_ids(name, component)?;
        let record = {
            let mut pkgs = self.pkgs();
            let pkg = pkgs
                .get_mut(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            for id in &ids {
                if let Some(Err(reason)) = pkg.comps.get(id).map(|c| &c.code) {
                    return Err(RuntimeError::NotRunnable {
                        package: name.to_string(),
                        component: id.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            let mut r = pkg.record.clone();
            r.active.extend(ids.iter().cloned());
            r
        };
        // A runtime opened for a one-shot command (`wasmdm activate`) runs
        // nothing: the record says active, and the device host starts it.
        if !self.inner.config.autostart {
            self.write_record_off_thread(&record).await?;
            let mut pkgs = self.pkgs();
            if let Some(pkg) = pkgs.get_mut(name) {
                pkg.record = record;
                for id in &ids {
                    if let Some(c) = pkg.comps.get(id) {
                        c.status.lock().unwrap_or_else(|p| p.into_inner()).active = true;
                    }
                }
            }
            return Ok(());
        }
        // Start first, then make the record durable while the instances come
        // up on other threads: the call returns (and the caller may report
        // "active") only once the record is written. A crash in between
        // leaves the record as it was, which is what was last reported.
        let (result, started, old_record) = {
            let mut pkgs = self.pkgs();
            let pkg = pkgs
                .get_mut(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            let old_record = std::mem::replace(&mut pkg.record, record.clone());
            let mut started = Vec::new();
            let mut result = Ok(());
            for id in &ids {
                let running = pkg
                    .comps
                    .get(id)
                    .and_then(|c| c.sup.as_ref())
                    .is_some_and(|s| !s.is_finished());
                // Already active and started since open, and not failed: a
                // replayed Activate (the device re-issues one after a
                // restart) must not run a command that finished a second
                // time. A failed one (crash loop) is started again.
                let done_here = old_record.active.contains(id)
                    && pkg.comps.get(id).is_some_and(|c| {
                        c.sup.is_some()
                            && c.status
                                .lock()
                                .map(|st| st.state == ComponentState::Exited)
                                .unwrap_or(false)
                    });
                if done_here {
                    continue;
                }
                result = self.start_one(pkg, id);
                if result.is_err() {
                    break;
                }
                if !running {
                    started.push(id.clone());
                }
            }
            (result, started, old_record)
        };
        let written = match result {
            Ok(()) => self.write_record_off_thread(&record).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.undo_activation(name, &started, old_record).await;
            return Err(e);
        }
        Ok(())
    }

    /// Stops what an activation that could not be recorded started, and puts
    /// the in-memory record back.
    pub(super) async fn undo_activation(
        &self,
        name: &str,
        started: &[String],
        old_record: PackageRecord,
    ) {
        let sups = {
            let mut pkgs = self.pkgs();
            let Some(pkg) = pkgs.get_mut(name) else {
                return;
            };
            pkg.record = old_record;
            let mut sups = Vec::new();
            for id in started {
                if let Some(c) = pkg.comps.get_mut(id) {
                    c.status.lock().unwrap_or_else(|p| p.into_inner()).active = false;
                    sups.extend(c.sup.take());
                }
            }
            sups
        };
        for s in sups {
            s.stop().await;
        }
    }

    /// Deactivates a package or one component: persists the change, requests a
    /// stop, and returns only once the instance is gone (after at most the grace
    /// period plus a few epoch ticks).
    pub async fn deactivate(&self, name: &str, component: Option<&str>) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        let ids = self.resolve_ids(name, component)?;
        let record = {
            let pkgs = self.pkgs();
            let pkg = pkgs
                .get(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            let mut r = pkg.record.clone();
            for id in &ids {
                r.active.remove(id);
            }
            r
        };
        self.write_record(&record)?;
        let sups = {
            let mut pkgs = self.pkgs();
            let Some(pkg) = pkgs.get_mut(name) else {
                return Err(RuntimeError::UnknownPackage(name.to_string()));
            };
            pkg.record = record;
            let mut sups = Vec::new();
            for id in &ids {
                if let Some(c) = pkg.comps.get_mut(id) {
                    let mut st = c.status.lock().unwrap_or_else(|p| p.into_inner());
                    st.active = false;
                    drop(st);
                    sups.extend(c.sup.take());
                }
            }
            sups
        };
        for s in sups {
            s.stop().await;
        }
        // Components that had already exited report Inactive once deactivated.
        let pkgs = self.pkgs();
        if let Some(pkg) = pkgs.get(name) {
            for id in &ids {
                if let Some(c) = pkg.comps.get(id) {
                    let mut st = c.status.lock().unwrap_or_else(|p| p.into_inner());
                    if st.state != ComponentState::Inactive {
                        st.state = ComponentState::Inactive;
                        let _ = self.inner.events.send(RuntimeEvent {
                            package: name.to_string(),
                            component: id.clone(),
                            state: ComponentState::Inactive,
                            exit: None,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops every instance without changing the persisted activation (host
    /// shutdown); a later `open` restarts what was active.
    pub async fn shutdown(&self) {
        let _ops = self.inner.ops.lock().await;
        let sups: Vec<Supervisor> = {
            let mut pkgs = self.pkgs();
            pkgs.values_mut()
                .flat_map(|p| p.comps.values_mut())
                .filter_map(|c| c.sup.take())
                .collect()
        };
        for s in sups {
            s.stop().await;
        }
    }
}
