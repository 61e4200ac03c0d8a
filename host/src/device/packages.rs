//! What the device does for Software Management (/9) and Software
//! Component (/14) operations: deliveries (push, CoAP and HTTP pulls),
//! verification, install, activation, and the slow work they report back
//! ([`Work`]). The object state machines decide; this carries out.

use super::*;

impl Driver {
    pub(super) fn swmgmt_action(
        &mut self,
        now: Instant,
        iid: u16,
        action: SwMgmtAction,
    ) -> Result<(), DeviceError> {
        if matches!(action, SwMgmtAction::StorePushed { .. }) {
            debug!(instance = iid, action = ?ActionName(&action), "software management");
        } else {
            info!(instance = iid, action = ?ActionName(&action), "software management");
        }
        let runtime = self.runtime.clone();
        let tx = self.work_tx.clone();
        let slot = slot(iid);
        match action {
            SwMgmtAction::StorePushed { offset, data, last } => {
                let stored = self.open_delivery(iid).and_then(|delivery| {
                    // A push cannot resume after a restart: no syncs before the last block.
                    delivery.set_checkpoints(false);
                    delivery.write_at(offset, &data)?;
                    if last {
                        delivery.sync(None)?;
                    }
                    Ok(())
                });
                if let Err(e) = stored {
                    return self.delivery_failed(now, iid, e);
                }
                if last {
                    self.open_deliveries.remove(&iid);
                    let report = self.swmgmt.lock().package_written(iid);
                    self.apply(now, report)?;
                }
            }
            SwMgmtAction::Download {
                uri,
                username,
                password,
            } => {
                if let Err(e) = self.start_download(now, iid, uri, username, password) {
                    return self.delivery_failed(now, iid, e);
                }
            }
            SwMgmtAction::CancelDelivery => {
                self.open_deliveries.remove(&iid);
                if let Some(flag) = self.http_cancel.remove(&iid) {
                    flag.store(true, Ordering::Relaxed);
                }
                let ids: Vec<_> = self
                    .coap_downloads
                    .iter()
                    .filter(|(_, i)| **i == iid)
                    .map(|(d, _)| *d)
                    .collect();
                for id in ids {
                    self.coap_downloads.remove(&id);
                    self.client.cancel_download(now, id);
                }
                self.discard_delivery(iid);
            }
            SwMgmtAction::VerifyIntegrity => {
                self.tasks.spawn(async move {
                    let result = runtime
                        .verify_delivery(&slot)
                        .await
                        .map(|info| (info.name, info.version))
                        .map_err(|e| {
                            // The reason may quote the package (a TOML error shows the
                            // line): one escaped line, so it cannot forge log lines.
                            let reason = e.to_string();
                            warn!(instance = iid, "package refused: {}", escape(&reason));
                            update_result(&e)
                        });
                    let _ = tx.send(Work::Verified { iid, result });
                });
            }
            SwMgmtAction::Install { .. } => {
                let expected = self
                    .swmgmt
                    .lock()
                    .instance(iid)
                    .map(|p| (p.pkg_name.clone(), p.pkg_version.clone()));
                if let Some(holder) = expected
                    .as_ref()
                    .and_then(|(name, _)| self.held_elsewhere(iid, name))
                {
                    warn!(
                        instance = iid,
                        package = %expected.as_ref().map(|e| escape(&e.0)).unwrap_or_default(),
                        "refused: the package is installed in /9/{holder}; uninstall it there first, \
                         or Uninstall(1) it there to upgrade it"
                    );
                    let _ = tx.send(Work::Installed {
                        iid,
                        result: Err(UpdateResult::InstallFailure),
                    });
                    return Ok(());
                }
                self.tasks.spawn(async move {
                    let result = match runtime.install(&slot).await {
                        // A restart between the runtime's commit (which consumes
                        // the delivery) and our INSTALLED record re-issues the
                        // Install: the package is there, so it succeeded.
                        Err(RuntimeError::NotDelivered(_))
                            if let Some(info) = already_installed(&runtime, expected.as_ref()) =>
                        {
                            Ok(info)
                        }
                        other => other.map_err(|e| {
                            let reason = e.to_string();
                            warn!(instance = iid, "install failed: {}", escape(&reason));
                            update_result(&e)
                        }),
                    };
                    // A successful install consumed the delivery slot.
                    let _ = tx.send(Work::Installed { iid, result });
                });
            }
            SwMgmtAction::Remove | SwMgmtAction::PrepareForUpdate => {
                let for_update = matches!(action, SwMgmtAction::PrepareForUpdate);
                self.open_deliveries.remove(&iid);
                self.discard_delivery(iid);
                let name = if for_update {
                    self.bindings.get(&iid).cloned()
                } else {
                    self.bindings.remove(&iid)
                };
                if !for_update {
                    self.persist()?;
                }
                self.tasks.spawn(async move {
                    let ok = match name {
                        Some(name) if for_update => runtime.prepare_update(&name).await.is_ok(),
                        Some(name) => runtime.uninstall(&name).await.is_ok(),
                        None => true,
                    };
                    let _ = tx.send(Work::Uninstalled { iid, ok });
                });
            }
            SwMgmtAction::Activate | SwMgmtAction::Deactivate => {
                let activate = matches!(action, SwMgmtAction::Activate);
                let Some(name) = self.bindings.get(&iid).cloned() else {
                    return Ok(());
                };
                self.tasks.spawn(async move {
                    let result = if activate {
                        runtime.activate(&name, None).await
                    } else {
                        runtime.deactivate(&name, None).await
                    };
                    let active = match result {
                        Ok(()) => activate,
                        Err(e) => {
                            warn!(package = %name, "activation change failed: {e}");
                            !activate
                        }
                    };
                    let _ = tx.send(Work::Activated { iid, active });
                });
            }
        }
        Ok(())
    }

    pub(super) fn component_action(&mut self, id: u16, action: ComponentAction) {
        let Some((owner, identity)) = self
            .swcomp
            .lock()
            .component(id)
            .map(|c| (c.owner, c.identity.clone()))
        else {
            return;
        };
        let Some(name) = self.bindings.get(&owner).cloned() else {
            return;
        };
        let runtime = self.runtime.clone();
        let tx = self.work_tx.clone();
        let activate = matches!(action, ComponentAction::Activate);
        self.tasks.spawn(async move {
            let result = if activate {
                runtime.activate(&name, Some(&identity)).await
            } else {
                runtime.deactivate(&name, Some(&identity)).await
            };
            let active = if result.is_ok() { activate } else { !activate };
            let _ = tx.send(Work::ComponentActivated { id, active });
        });
    }

    pub(super) fn start_download(
        &mut self,
        now: Instant,
        iid: u16,
        uri: String,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<(), DeviceError> {
        let delivery = self.runtime.delivery(&slot(iid))?;
        let coap = match uri.split_once("://") {
            Some(("coap", rest)) => Some((rest, 5683, false)),
            Some(("coaps", rest)) => Some((rest, 5684, true)),
            _ => None,
        };
        if let Some((rest, default_port, secure)) = coap {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let authority = if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:{default_port}")
            };
            let Some(peer) = std::net::ToSocketAddrs::to_socket_addrs(&authority)
                .ok()
                .and_then(|mut a| a.next())
            else {
                let report = self
                    .swmgmt
                    .lock()
                    .download_failed(iid, UpdateResult::InvalidUri);
                return self.apply(now, report);
            };
            // A coaps:// file server is pulled from with the server
            // account's credentials (the server itself: the same session).
            if secure {
                let host = config::host_of(&authority);
                if let Err(e) = self.transport.add_dtls_peer(peer, host) {
                    warn!(instance = iid, "cannot pull over coaps: {e}");
                    let report = self
                        .swmgmt
                        .lock()
                        .download_failed(iid, UpdateResult::ConnectionLost);
                    return self.apply(now, report);
                }
            }
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let segments = path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let query = query
                .split('&')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            // Resume at the first block not yet stored (1024-byte blocks),
            // only with the server's ETag stored with those bytes: without
            // one nothing ties them to what it sends now (RFC 7959 §2.4),
            // so the pull starts over instead of splicing.
            let etag = delivery.resume_tag().and_then(|t| hex::decode(t).ok());
            let start_block = match etag {
                Some(_) => u32::try_from(delivery.len() / 1024).unwrap_or(0),
                None => 0,
            };
            let id = self
                .client
                .start_download(now, peer, segments, query, start_block, etag);
            self.coap_downloads.insert(id, iid);
            self.coap_download_peers.insert(id, peer);
            return Ok(());
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.http_cancel.insert(iid, cancel.clone());
        let tx = self.work_tx.clone();
        let max_bytes = self.config.max_package_bytes;
        let trust = self.http_trust.clone();
        self.tasks.spawn_blocking(move || {
            let mut delivery = delivery;
            let resume = download::ResumePoint {
                offset: delivery.len(),
                etag: delivery.resume_tag().map(str::to_owned),
            };
            info!(instance = iid, offset = resume.offset, "pulling over HTTP");
            let mut sink = DeliverySink(&mut delivery);
            let mut started_tag: Option<String> = None;
            let credentials = username.as_deref().zip(password.as_deref());
            let options = download::HttpOptions {
                max_bytes,
                trust,
                ..Default::default()
            };
            let result = download::http_download(
                &uri,
                credentials,
                &resume,
                &options,
                &cancel,
                &mut sink,
                download::Observer {
                    on_start: &mut |start| started_tag = start.etag.clone(),
                    on_progress: &mut |_| {},
                },
            );
            let result = result.and_then(|total| {
                delivery
                    .sync(started_tag.as_deref())
                    .map(|()| total)
                    .map_err(|e| download::DownloadError::Storage(e.to_string()))
            });
            let _ = tx.send(Work::HttpDone { iid, result });
        });
        Ok(())
    }

    /// SwMgmt §5.1.2.2: after a download error "the faulty package is
    /// removed". (Only a restart resumes a partial download: the state is
    /// still DOWNLOAD STARTED then.)
    pub(super) fn discard_delivery(&self, iid: u16) {
        // Synchronous: the next delivery into this instance may start with
        // the very next request and must find the slot empty.
        if let Err(e) = self.runtime.discard_delivery_now(&slot(iid)) {
            warn!(instance = iid, "cannot remove the package data: {e}");
        }
    }

    /// Another /9 instance that holds package `name`, unless it was prepared
    /// with Uninstall(1) (then an Install here is its upgrade). One package
    /// name lives in one /9 instance: a second copy would be the same
    /// software in the runtime, which uninstalling either would remove from
    /// under the other.
    pub(super) fn held_elsewhere(&self, iid: u16, name: &str) -> Option<u16> {
        let sm = self.swmgmt.lock();
        self.bindings
            .iter()
            .filter(|(j, n)| **j != iid && n.as_str() == name)
            .map(|(j, _)| *j)
            .find(|j| !sm.instance(*j).is_some_and(|p| p.for_update))
    }

    /// The package could not be stored (disk full, unwritable data dir):
    /// back to INITIAL with Update Result 50 (SwMgmt §5.1.2.3: "Not enough
    /// storage"), persisted, instead of staying in DOWNLOAD STARTED where
    /// every new Package URI would get 4.05. The request that caused it is
    /// answered with the error.
    pub(super) fn delivery_failed(
        &mut self,
        now: Instant,
        iid: u16,
        e: DeviceError,
    ) -> Result<(), DeviceError> {
        warn!(instance = iid, "cannot store the package: {e}");
        self.fail_delivery(now, iid, UpdateResult::NotEnoughStorage)?;
        Err(e)
    }

    /// A delivery into `iid` failed: its bytes go (SwMgmt §5.1.2.2: "the
    /// faulty package is removed") and /9 returns to INITIAL with `result`.
    pub(super) fn fail_delivery(
        &mut self,
        now: Instant,
        iid: u16,
        result: UpdateResult,
    ) -> Result<(), DeviceError> {
        self.open_deliveries.remove(&iid);
        self.discard_delivery(iid);
        let report = self.swmgmt.lock().download_failed(iid, result);
        self.apply(now, report)
    }

    /// The delivery of `iid`, opened once and kept for the following blocks.
    pub(super) fn open_delivery(
        &mut self,
        iid: u16,
    ) -> Result<&mut crate::runtime::Delivery, DeviceError> {
        Ok(match self.open_deliveries.entry(iid) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(self.runtime.delivery(&slot(iid))?)
            }
        })
    }

    pub(super) fn on_coap_data(
        &mut self,
        now: Instant,
        id: DownloadId,
        offset: u64,
        bytes: &[u8],
        more: bool,
        etag: Option<&[u8]>,
    ) -> Result<(), DeviceError> {
        let Some(&iid) = self.coap_downloads.get(&id) else {
            return Ok(());
        };
        let delivery = self.open_delivery(iid)?;
        // Pulled bytes count once a checkpoint synced them: no write per block.
        delivery.set_buffered(true);
        if let Err(e) = delivery.write_at(offset, bytes) {
            warn!(instance = iid, "cannot store downloaded data: {e}");
            self.coap_downloads.remove(&id);
            self.client.cancel_download(now, id);
            return self.fail_delivery(now, iid, update_result(&e));
        }
        // The server's ETag becomes durable with the bytes, at the first
        // checkpoint (no sync of its own: a blocking fsync here held up the
        // next block by milliseconds): a resume after a restart checks the
        // server's answers against it and a changed package fails instead
        // of being spliced onto the old bytes. (A stored tag that differs
        // from the server's, or that the server no longer sends, fails the
        // resume in the engine, and without one the pull starts at block 0:
        // only a missing one needs setting.)
        if let (true, Some(tag)) = (more, etag)
            && let Some(delivery) = self.open_deliveries.get_mut(&iid)
            && delivery.resume_tag().is_none()
        {
            delivery.set_resume_tag(Some(&hex::encode(tag)));
        }
        if !more {
            self.coap_downloads.remove(&id);
            if let Some(mut delivery) = self.open_deliveries.remove(&iid) {
                delivery.sync(None)?;
            }
            let report = self.swmgmt.lock().package_written(iid);
            self.apply(now, report)?;
        }
        Ok(())
    }

    pub(super) fn on_work(&mut self, now: Instant, work: Work) -> Result<(), DeviceError> {
        let report = match work {
            Work::HttpDone { iid, result } => {
                self.http_cancel.remove(&iid);
                match result {
                    Ok(total) => {
                        info!(instance = iid, bytes = total, "download complete");
                        self.swmgmt.lock().package_written(iid)
                    }
                    Err(download::DownloadError::Cancelled) => return Ok(()),
                    Err(e) => {
                        warn!(instance = iid, "download failed: {e}");
                        self.discard_delivery(iid);
                        let code = match e {
                            download::DownloadError::InvalidUri(_) => UpdateResult::InvalidUri,
                            download::DownloadError::Storage(_) => UpdateResult::NotEnoughStorage,
                            _ => UpdateResult::ConnectionLost,
                        };
                        self.swmgmt.lock().download_failed(iid, code)
                    }
                }
            }
            Work::Verified { iid, result } => self.swmgmt.lock().integrity_checked(iid, result),
            Work::Installed { iid, result } => match result {
                Ok(info) => {
                    info!(instance = iid, package = %info.name, version = %info.version, "installed");
                    // An upgrade of software another instance kept after
                    // Uninstall(1): it lives here now, not there.
                    let moved: Vec<u16> = self
                        .bindings
                        .iter()
                        .filter(|(j, n)| **j != iid && **n == info.name)
                        .map(|(j, _)| *j)
                        .collect();
                    for j in moved {
                        self.bindings.remove(&j);
                        let report = self.swmgmt.lock().released(j);
                        self.apply(now, report)?;
                        info!(
                            instance = j,
                            moved_to = iid,
                            "package moved to another instance by its upgrade"
                        );
                    }
                    self.bindings.insert(iid, info.name.clone());
                    // The package's components become /14 instances linked from /9/x/17.
                    let mut ids = Vec::new();
                    {
                        let mut sc = self.swcomp.lock();
                        for (component, version) in &info.components {
                            let active = info.active.contains(component);
                            match sc.add(iid, component.clone(), version.clone(), active) {
                                Ok(id) => ids.push(id),
                                Err(e) => warn!("cannot add /14 instance: {e}"),
                            }
                        }
                    }
                    let installed = Installed {
                        name: info.name,
                        version: info.version,
                        components: ids,
                        active: !info.active.is_empty(),
                    };
                    self.swmgmt.lock().install_finished(iid, Ok(installed))
                }
                Err(code) => self.swmgmt.lock().install_finished(iid, Err(code)),
            },
            Work::Uninstalled { iid, ok } => self.swmgmt.lock().uninstall_finished(iid, ok),
            Work::Activated { iid, active } => self.swmgmt.lock().activation_finished(iid, active),
            Work::ComponentActivated { id, active } => {
                let _ = self.swcomp.lock().activation_finished(id, active);
                self.persist()?;
                let changed = self.swcomp.lock().take_changed();
                self.client.resources_changed(now, &changed);
                return Ok(());
            }
        };
        self.apply(now, report)
    }
}

/// The installed package matching the name and version a /9 instance
/// delivered, described as the install that produced it.
pub(super) fn already_installed(
    runtime: &Runtime,
    expected: Option<&(String, String)>,
) -> Option<crate::runtime::InstalledInfo> {
    let (name, version) = expected?;
    let status = runtime
        .status(name)
        .ok()
        .filter(|s| s.version == *version)?;
    Some(crate::runtime::InstalledInfo {
        name: status.name,
        version: status.version,
        components: status
            .components
            .iter()
            .map(|c| (c.id.clone(), c.version.clone()))
            .collect(),
        upgraded_from: None,
        active: status
            .components
            .iter()
            .filter(|c| c.active)
            .map(|c| c.id.clone())
            .collect(),
    })
}

/// Packages installed outside LwM2M (`wasmdm install` on the data
/// directory) get a /9 instance in INSTALLED and /14 instances for their
/// components. Returns whether anything was adopted.
pub(super) fn adopt_unmanaged(
    runtime: &Runtime,
    swmgmt: &mut SoftwareManagement,
    swcomp: &mut SoftwareComponents,
    bindings: &mut BTreeMap<u16, String>,
) -> bool {
    let mut adopted = false;
    for package in runtime.list() {
        if bindings.values().any(|name| *name == package.name) {
            continue;
        }
        // A /9 instance that delivered this package and was killed between
        // the runtime's install commit and its own INSTALLED record: its
        // re-issued Install binds it there (one name, one instance).
        let delivered_here = swmgmt.instances().into_iter().any(|i| {
            swmgmt.instance(i).is_some_and(|p| {
                p.pkg_name == package.name
                    && p.update_state == wasmdm_proto::swmgmt::UpdateState::Delivered
            })
        });
        if delivered_here {
            continue;
        }
        let active = package.components.iter().any(|c| c.active);
        let Some(iid) = swmgmt.adopt(Installed {
            name: package.name.clone(),
            version: package.version.clone(),
            components: Vec::new(),
            active,
        }) else {
            warn!(package = %package.name, "no free /9 instance to report this package in");
            continue;
        };
        let ids: Vec<u16> = package
            .components
            .iter()
            .filter_map(|c| {
                swcomp
                    .add(iid, c.id.clone(), c.version.clone(), c.active)
                    .ok()
            })
            .collect();
        swmgmt.set_component_links(iid, ids);
        swcomp.sync_owners(swmgmt);
        info!(instance = iid, package = %package.name, "reporting a package installed outside LwM2M");
        bindings.insert(iid, package.name);
        adopted = true;
    }
    adopted
}

/// The Update Result a runtime error reports (SwMgmt §6 resource 9); the one
/// place where runtime errors become LwM2M result codes.
pub(super) fn update_result(e: &RuntimeError) -> UpdateResult {
    UpdateResult::from_code(e.update_result_hint()).unwrap_or(UpdateResult::DeviceDefined)
}

pub(super) struct DeliverySink<'a>(&'a mut crate::runtime::Delivery);

impl download::PackageSink for DeliverySink<'_> {
    fn begin(&mut self, start: &download::ResumePoint) -> std::io::Result<()> {
        if start.offset == 0 {
            // A fresh (or changed) entity: drop what was stored.
            self.0.write_at(0, &[]).map_err(std::io::Error::other)?;
        }
        // The tag is durable before the first byte, so a kill at any point
        // resumes with Range + If-Range instead of starting over.
        self.0
            .sync(start.etag.as_deref())
            .map_err(std::io::Error::other)
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.0
            .write_at(offset, bytes)
            .map_err(std::io::Error::other)
    }
}

pub(super) struct ActionName<'a>(&'a SwMgmtAction);

impl std::fmt::Debug for ActionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log pushed bytes or credentials.
        match self.0 {
            SwMgmtAction::StorePushed { offset, data, last } => {
                write!(
                    f,
                    "StorePushed {{ offset: {offset}, len: {}, last: {last} }}",
                    data.len()
                )
            }
            SwMgmtAction::Download { uri, .. } => {
                write!(f, "Download {{ uri: {:?} }}", download::for_log(uri))
            }
            other => write!(f, "{other:?}"),
        }
    }
}
