//! Opening a data directory: restoring installed packages from their records
//! and starting what was active.

use super::*;

impl Runtime {
    pub(super) async fn restore(&self) -> Result<()> {
        let dirs = &self.inner.dirs;
        let root = dirs.packages();
        let entries = std::fs::read_dir(&root).map_err(|e| StateError::io("read dir", &root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StateError::io("read dir", &root, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let record_path = dirs.package_record(&name);
            if !valid_name(&name) || !record_path.exists() {
                // An install that crashed before its record was written.
                tracing::info!("removing incomplete install {}", path.display());
                remove_dir_if_exists(&path)?;
                continue;
            }
            let record: PackageRecord = match std::fs::read(&record_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(r) => r,
                None => {
                    tracing::error!(
                        "unreadable record {}; package skipped",
                        record_path.display()
                    );
                    continue;
                }
            };
            // Generations other than the recorded one are leftovers of an interrupted upgrade.
            for g in std::fs::read_dir(&path).map_err(|e| StateError::io("read dir", &path, e))? {
                let g = g.map_err(|e| StateError::io("read dir", &path, e))?;
                if g.path().is_dir() && g.file_name().to_str() != Some(record.generation.as_str()) {
                    remove_dir_if_exists(&g.path())?;
                }
            }
            let gen_dir = path.join(&record.generation);
            let pkg = self.load_package(record, gen_dir, None).await;
            self.pkgs().insert(name, pkg);
        }
        self.gc_cache();
        tracing::info!(
            "{} packages installed; code-loading = {}: {} components loaded",
            self.pkgs().len(),
            self.inner.config.engine.code_loading,
            self.loaded_components()
        );
        if !self.inner.config.autostart {
            return Ok(());
        }
        let names: Vec<String> = self.pkgs().keys().cloned().collect();
        for name in names {
            if let Some(why) = self.untrusted(&name) {
                tracing::warn!(package = %name, "not started: {why}");
                continue;
            }
            self.start_active(&name);
        }
        Ok(())
    }

    /// Why an installed package may not run under the trust in force now
    /// (signatures required and it was not signed by a trusted key), if so.
    /// Installed packages are re-checked at every start, so a package put in
    /// place with other trust (or none) does not run.
    pub(super) fn untrusted(&self, name: &str) -> Option<String> {
        let trusted = &self.inner.config.trusted_keys;
        if trusted.is_empty() {
            return None;
        }
        let pkgs = self.pkgs();
        let record = &pkgs.get(name)?.record;
        match (record.signer_recorded, record.signed_by.clone()) {
            // Installed before signers were recorded: nothing to check.
            (false, _) => None,
            (true, None) => Some("unsigned, and this device requires trusted signatures".into()),
            (true, Some(fp)) => {
                let known = trusted
                    .iter()
                    .any(|k| wasmdm_package::signing::fingerprint(k) == fp);
                (!known).then(|| format!("signed by {fp}, which this device does not trust"))
            }
        }
    }

    /// Loads every component (`resident`), or makes sure its code is in the
    /// cache (`on-demand`), compiling what is missing; failures are kept per
    /// component.
    pub(super) async fn load_package(
        &self,
        record: PackageRecord,
        root: PathBuf,
        logs: Option<&BTreeMap<String, LogBuffer>>,
    ) -> Pkg {
        let mut comps = BTreeMap::new();
        let compile = &self.inner.compile;
        let cache = self.inner.dirs.cache();
        for spec in &record.spec.components {
            let wasm = root.join(&spec.file);
            let code = match self.inner.config.engine.code_loading {
                CodeLoading::Resident => compile
                    .load(&spec.id, &wasm, &spec.sha256, spec.world, &cache)
                    .await
                    .map(loading::Code::Resident),
                CodeLoading::OnDemand => compile
                    .ensure(&spec.id, &wasm, &spec.sha256, spec.world, &cache)
                    .await
                    .map(|()| {
                        loading::Code::OnDemand(compile.loader(
                            &spec.id,
                            &wasm,
                            &spec.sha256,
                            spec.world,
                            &cache,
                        ))
                    }),
            }
            .map_err(|e| e.to_string());
            comps.insert(spec.id.clone(), self.new_comp(&record, spec, code, logs));
        }
        Pkg {
            record,
            root,
            comps,
        }
    }

    /// What a component keeps of code just loaded (install): all of it
    /// under `resident`, only where it is under `on-demand`.
    pub(super) fn keep_code(
        &self,
        loaded: compile::Loaded,
        spec: &ComponentSpec,
        root: &Path,
    ) -> loading::Code {
        match self.inner.config.engine.code_loading {
            CodeLoading::Resident => loading::Code::Resident(loaded),
            CodeLoading::OnDemand => loading::Code::OnDemand(self.inner.compile.loader(
                &spec.id,
                &root.join(&spec.file),
                &spec.sha256,
                spec.world,
                &self.inner.dirs.cache(),
            )),
        }
    }

    pub(super) fn new_comp(
        &self,
        record: &PackageRecord,
        spec: &ComponentSpec,
        code: std::result::Result<loading::Code, String>,
        logs: Option<&BTreeMap<String, LogBuffer>>,
    ) -> Comp {
        let log = logs
            .and_then(|l| l.get(&spec.id).cloned())
            .unwrap_or_else(|| {
                LogBuffer::new(
                    &format!("{}/{}", record.spec.name, spec.id),
                    spec.sandbox.log_cap,
                    false,
                )
                .with_file(self.inner.dirs.log_file(&record.spec.name, &spec.id))
            });
        let mut status = ComponentStatus {
            id: spec.id.clone(),
            version: spec.version.clone(),
            active: record.active.contains(&spec.id),
            state: ComponentState::Inactive,
            restart_count: 0,
            retries: 0,
            last_exit: code
                .as_ref()
                .err()
                .map(|e| ExitStatus::StartFailed(e.clone())),
            crash_loop: false,
        };
        // How this version last ended, as recorded by whichever process ran it.
        if code.is_ok()
            && let Some(rec) =
                ExitRecord::read(&self.inner.dirs.exit_file(&record.spec.name, &spec.id))
            && rec.version == spec.version
        {
            status.last_exit = rec.last_exit;
            status.crash_loop = rec.crash_loop;
            status.restart_count = rec.restart_count;
            status.retries = rec.retries;
        }
        Comp {
            spec: spec.clone(),
            code,
            status: Arc::new(Mutex::new(status)),
            log,
            sup: None,
        }
    }
}
