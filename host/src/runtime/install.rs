//! Install, upgrade and uninstall: a new generation dir, every component
//! compiled and checked before the package record switches.

use super::*;

impl Runtime {
    /// Installs the verified package in `slot`: copies it to a new generation dir,
    /// precompiles and world-checks every component, then switches the package
    /// record. An existing package of the same name keeps running until the new one
    /// is ready; its active components then restart on the new version, app data
    /// kept. On failure the delivery and any old package are untouched. On success
    /// the delivery slot is removed.
    pub async fn install(&self, slot: &str) -> Result<InstalledInfo> {
        check_name(slot)?;
        let _ops = self.inner.ops.lock().await;
        let _installing = self.inner.compile.install_started();
        let slot_dir = self.inner.dirs.delivery(slot);
        let DeliveredRecord { spec, info } = delivery::read_delivered(&slot_dir)
            .ok_or_else(|| RuntimeError::NotDelivered(slot.to_string()))?;
        check_name(&spec.name)?;
        let max_mem = self.inner.config.engine.max_memory_per_instance;
        for c in &spec.components {
            check_name(&c.id)?;
            // The pool cannot give more than its slot size, whatever the limiter allows.
            if c.sandbox.memory_bytes > max_mem {
                return Err(RuntimeError::InstallFailed {
                    component: c.id.clone(),
                    reason: format!(
                        "asks for {} bytes of memory; this device allows at most {max_mem} per instance",
                        c.sandbox.memory_bytes
                    ),
                });
            }
        }
        let name = spec.name.clone();
        // Issue 14: one object id, one installed package.
        appobjects::grant_conflict(&spec, self.pkgs().values().map(|p| &p.record.spec))
            .map_err(|(component, reason)| RuntimeError::InstallFailed { component, reason })?;
        if !self.inner.config.allow_downgrade {
            let installed = self
                .pkgs()
                .get(&name)
                .map(|p| p.record.spec.version.clone());
            if let Some(installed) = installed
                && is_downgrade(&installed, &spec.version)
            {
                return Err(RuntimeError::Downgrade {
                    package: name,
                    installed,
                    offered: spec.version.clone(),
                });
            }
        }
        let pkg_dir = self.inner.dirs.package(&name);
        let generation = format!(
            "g{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let gen_dir = pkg_dir.join(&generation);
        let staging = delivery::staging_path(&slot_dir);
        {
            let gen_dir = gen_dir.clone();
            blocking(move || link_tree(&staging, &gen_dir)).await?;
        }
        // The files become durable while the components compile (fsync waits
        // on the disk, compiling on the CPU); the record waits for both. The
        // generation dir's entry is made durable by the record write (same
        // dir); a new package's own dir entry needs `packages/` synced.
        let synced = {
            let gen_dir = gen_dir.clone();
            let packages = self.inner.dirs.packages();
            blocking(move || {
                sync_tree(&gen_dir)?;
                Ok(fsync_dir(&packages)?)
            })
        };
        let synced = tokio::spawn(synced);
        // (`blocking` hands the closure to a blocking thread when first
        // polled: the spawn starts it now, not when awaited.)
        let (old_active, old_version, old_logs) = {
            let pkgs = self.pkgs();
            match pkgs.get(&name) {
                Some(p) => (
                    Some(p.record.active.clone()),
                    Some(p.record.spec.version.clone()),
                    p.comps
                        .iter()
                        .map(|(k, c)| (k.clone(), c.log.clone()))
                        .collect(),
                ),
                None => (None, None, BTreeMap::new()),
            }
        };
        let ids: BTreeSet<String> = spec.components.iter().map(|c| c.id.clone()).collect();
        let record = PackageRecord {
            active: old_active
                .unwrap_or_default()
                .intersection(&ids)
                .cloned()
                .collect(),
            spec,
            generation,
            for_update: false,
            signed_by: info.signed_by.clone(),
            signer_recorded: true,
        };
        // Compile and check everything before touching the old package.
        let mut pres = BTreeMap::new();
        let mut failed = None;
        for c in &record.spec.components {
            self.adopt_precompiled(&slot_dir, &c.id, &c.sha256);
            let loaded = self
                .inner
                .compile
                .load(
                    &c.id,
                    &gen_dir.join(&c.file),
                    &c.sha256,
                    c.world,
                    &self.inner.dirs.cache(),
                )
                .await;
            match loaded {
                Ok(pre) => {
                    pres.insert(c.id.clone(), pre);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let synced = synced
            .await
            .map_err(|e| RuntimeError::Engine(format!("sync task: {e}")))
            .and_then(|r| r);
        if let Some(e) = failed.or(synced.err()) {
            let _ = remove_dir_if_exists(&gen_dir);
            if old_version.is_none() {
                let _ = remove_dir_if_exists(&pkg_dir);
            }
            self.gc_cache();
            return Err(e);
        }
        let comps = record
            .spec
            .components
            .iter()
            .filter_map(|s| {
                let code = self.keep_code(pres.remove(&s.id)?, s, &gen_dir);
                Some((
                    s.id.clone(),
                    self.new_comp(&record, s, Ok(code), Some(&old_logs)),
                ))
            })
            .collect();
        let new_pkg = Pkg {
            record: record.clone(),
            root: gen_dir.clone(),
            comps,
        };
        // Stop the old version, switch the record (the commit point), start the new.
        let old_sups = self.take_supervisors(&name, None);
        for s in old_sups {
            s.stop().await;
        }
        self.write_record(&record)?;
        let old_root = {
            let mut pkgs = self.pkgs();
            let old = pkgs.insert(name.clone(), new_pkg);
            old.map(|o| o.root)
        };
        self.start_active(&name);
        if let Some(old_root) = old_root.filter(|r| *r != gen_dir) {
            let _ = remove_dir_if_exists(&old_root);
        }
        self.gc_cache();
        // The "delivered" mark first: a crash in the middle of removing the
        // slot must not leave it marked with half its files gone.
        let _ = remove_if_exists(&delivery::delivered_path(&slot_dir));
        let _ = remove_dir_if_exists(&slot_dir);
        let _ = fsync_dir(&self.inner.dirs.deliveries());
        Ok(InstalledInfo {
            name,
            version: record.spec.version.clone(),
            components: record
                .spec
                .components
                .iter()
                .map(|c| (c.id.clone(), c.version.clone()))
                .collect(),
            upgraded_from: old_version,
            active: record.active.iter().cloned().collect(),
        })
    }

    /// Takes the supervisors of `name` (all components, or one) out of the table.
    pub(super) fn take_supervisors(&self, name: &str, component: Option<&str>) -> Vec<Supervisor> {
        let mut pkgs = self.pkgs();
        let Some(pkg) = pkgs.get_mut(name) else {
            return Vec::new();
        };
        pkg.comps
            .iter_mut()
            .filter(|(id, _)| component.is_none_or(|c| c == id.as_str()))
            .filter_map(|(_, c)| c.sup.take())
            .collect()
    }

    /// Stops and removes a package: code, record, and its app data (keeps nothing).
    pub async fn uninstall(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let _ops = self.inner.ops.lock().await;
        if !self.pkgs().contains_key(name) {
            return Err(RuntimeError::UnknownPackage(name.to_string()));
        }
        for s in self.take_supervisors(name, None) {
            s.stop().await;
        }
        let record = self.inner.dirs.package_record(name);
        remove_if_exists(&record)?;
        fsync_dir(&self.inner.dirs.package(name))?;
        self.pkgs().remove(name);
        remove_dir_if_exists(&self.inner.dirs.package(name))?;
        remove_dir_if_exists(&self.inner.dirs.appdata_root().join(name))?;
        remove_dir_if_exists(&self.inner.dirs.logs_root().join(name))?;
        self.gc_cache();
        Ok(())
    }

    /// Uninstall(1) "for update" (SwMgmt §5.2.2.1): keep the package and let what
    /// runs keep running; mark it so the next install of the same name upgrades it.
    pub async fn prepare_update(&self, name: &str) -> Result<()> {
        let _ops = self.inner.ops.lock().await;
        let record = {
            let mut pkgs = self.pkgs();
            let pkg = pkgs
                .get_mut(name)
                .ok_or_else(|| RuntimeError::UnknownPackage(name.to_string()))?;
            pkg.record.for_update = true;
            pkg.record.clone()
        };
        self.write_record(&record)
    }
}

/// Puts the delivered files into a package's generation dir as hard links:
/// the staging files are never written again, so install does not copy the
/// package data and the disk holds it once. Where the file system cannot link
/// (another device, no hard links) the file is copied. Staging has no
/// symlinks. Nothing is synced here: see [`sync_tree`] in `install`.
pub(super) fn link_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| StateError::io("create dir", to, e))?;
    let rd = std::fs::read_dir(from).map_err(|e| StateError::io("read dir", from, e))?;
    for e in rd {
        let e = e.map_err(|e| StateError::io("read dir", from, e))?;
        let ft = e
            .file_type()
            .map_err(|err| StateError::io("stat", e.path(), err))?;
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            link_tree(&e.path(), &dst)?;
        } else if ft.is_file() && std::fs::hard_link(e.path(), &dst).is_err() {
            std::fs::copy(e.path(), &dst).map_err(|err| StateError::io("copy", &dst, err))?;
        }
    }
    Ok(())
}

/// fsyncs every file and directory under `dir`.
pub(super) fn sync_tree(dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| StateError::io("read dir", dir, e))?;
    for e in rd {
        let e = e.map_err(|e| StateError::io("read dir", dir, e))?;
        let p = e.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|err| StateError::io("fsync", &p, err))?;
        }
    }
    fsync_dir(dir)?;
    Ok(())
}

/// Whether installing `offered` over `installed` goes back in version
/// (semver order). A version that does not parse cannot be ordered, so it
/// counts as a downgrade unless equal (fail closed).
pub(super) fn is_downgrade(installed: &str, offered: &str) -> bool {
    match (
        semver::Version::parse(installed),
        semver::Version::parse(offered),
    ) {
        (Ok(old), Ok(new)) => new < old,
        _ => installed != offered,
    }
}
