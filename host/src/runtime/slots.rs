//! Delivery slots: streaming a package in, verifying it into staging,
//! discarding it, and the crash cleanup of slots at open.

use super::install::sync_tree;
use super::*;

impl Runtime {
    /// Opens delivery slot `slot` (e.g. the /9 instance id) for streaming writes.
    pub fn delivery(&self, slot: &str) -> Result<Delivery> {
        check_name(slot)?;
        Delivery::open(
            self.inner.dirs.delivery(slot),
            self.inner.config.max_package_bytes,
        )
    }

    /// What a slot holds after a restart: (bytes received, verified package if any).
    pub fn delivery_state(&self, slot: &str) -> Result<(u64, Option<DeliveredInfo>)> {
        check_name(slot)?;
        let dir = self.inner.dirs.delivery(slot);
        if !dir.exists() {
            return Ok((0, None));
        }
        let len = self.delivery(slot)?.len();
        Ok((len, delivery::read_delivered(&dir).map(|r| r.info)))
    }

    /// Unpacks and verifies the slot's package (digests, signature, limits) into its
    /// staging dir and durably marks it delivered. On error the slot's bytes remain
    /// and nothing else changes. (What is durable is the verified package file
    /// and the mark; the staging files are synced by the install that keeps
    /// them, and rebuilt from the package file by the next `open`.)
    pub async fn verify_delivery(&self, slot: &str) -> Result<DeliveredInfo> {
        check_name(slot)?;
        let _ops = self.inner.ops.lock().await;
        let dir = self.inner.dirs.delivery(slot);
        let limits = self.inner.config.package_limits.clone();
        let keys = self.inner.config.trusted_keys.clone();
        blocking(move || verify_slot(&dir, &limits, &keys)).await
    }

    /// Forgets a slot: bytes, staging, verification.
    /// Removes a delivery slot at once, without waiting for other operations:
    /// for a driver that must be sure the slot is empty before the next
    /// delivery into it starts (only ever call it for a slot no install uses).
    pub fn discard_delivery_now(&self, slot: &str) -> Result<()> {
        check_name(slot)?;
        Ok(remove_dir_if_exists(&self.inner.dirs.delivery(slot))?)
    }

    pub async fn discard_delivery(&self, slot: &str) -> Result<()> {
        check_name(slot)?;
        let _ops = self.inner.ops.lock().await;
        let dir = self.inner.dirs.delivery(slot);
        blocking(move || Ok(remove_dir_if_exists(&dir)?)).await
    }
}

/// Unpacks `dir/package.part` into `dir/staging` and writes `delivered.json` last.
pub(super) fn verify_slot(
    dir: &Path,
    limits: &wasmdm_package::Limits,
    keys: &[wasmdm_package::VerifyingKey],
) -> Result<DeliveredInfo> {
    let part = delivery::part_path(dir);
    let staging = delivery::staging_path(dir);
    remove_if_exists(&delivery::delivered_path(dir))?;
    remove_dir_if_exists(&staging)?;
    std::fs::create_dir_all(&staging).map_err(|e| StateError::io("create dir", &staging, e))?;
    let file = std::fs::File::open(&part).map_err(|e| StateError::io("open", &part, e))?;
    let verified =
        // Issue 13: with the precompiled code a server added (precompiled.rs).
        match super::precompiled::unpack_slot(std::io::BufReader::new(file), dir, &staging, limits, keys) {
            Ok(v) => v,
            Err(e) => {
                let _ = remove_dir_if_exists(&staging);
                return Err(e);
            }
        };
    let spec = convert::package_spec(&verified.manifest);
    let names_ok = valid_name(&spec.name) && spec.components.iter().all(|c| valid_name(&c.id));
    if !names_ok {
        let _ = remove_dir_if_exists(&staging);
        return Err(RuntimeError::InvalidName(spec.name));
    }
    let info = DeliveredInfo {
        name: spec.name.clone(),
        version: spec.version.clone(),
        components: spec.components.iter().map(|c| c.id.clone()).collect(),
        signed_by: verified.signed_by.clone(),
    };
    // The staging files are not synced here: `package.part` (synced when its
    // last byte was stored) is the durable copy they come from. Install
    // syncs the files it keeps while it compiles, and `open` rebuilds a
    // delivered slot's staging, which a power cut may have emptied. The
    // delivery's own fsyncs were a third of the time from last byte to
    // "delivered" (~5 ms per MiB).
    let rec = DeliveredRecord {
        info: info.clone(),
        spec,
    };
    let path = delivery::delivered_path(dir);
    atomic_write(&path, &to_json(&path, &rec)?)?;
    Ok(info)
}

/// Crash cleanup of delivery slots: unverified staging dirs and bad slot names
/// go; a delivered slot's staging is rebuilt from its package file, since its
/// files were never synced (`verify_slot`).
pub(super) fn cleanup_deliveries(
    dirs: &DataDir,
    limits: &wasmdm_package::Limits,
    keys: &[wasmdm_package::VerifyingKey],
) -> Result<()> {
    let root = dirs.deliveries();
    let rd = std::fs::read_dir(&root).map_err(|e| StateError::io("read dir", &root, e))?;
    for e in rd {
        let e = e.map_err(|e| StateError::io("read dir", &root, e))?;
        let path = e.path();
        let ok = e.file_name().to_str().is_some_and(valid_name);
        if !ok || !path.is_dir() {
            let _ = remove_dir_if_exists(&path);
            let _ = remove_if_exists(&path);
            continue;
        }
        // A delivered mark without its package file (the durable copy the
        // staging comes from) cannot be installed or rebuilt: not delivered.
        if delivery::read_delivered(&path).is_none() || !delivery::part_path(&path).is_file() {
            remove_if_exists(&delivery::delivered_path(&path))?;
            remove_dir_if_exists(&delivery::staging_path(&path))?;
        } else if let Err(e) = rebuild_staging(&path, limits, keys) {
            // The package file verified once; only a disk fault or a
            // changed trust configuration gets here. The slot stays as it
            // was: install fails if its files are damaged.
            tracing::warn!("cannot rebuild the staging of {}: {e}", path.display());
        }
    }
    Ok(())
}

/// Unpacks a delivered slot's package file again into a new dir, syncs it and
/// puts it in place of the staging dir. The "delivered" mark is never
/// removed meanwhile, so a crash here leaves a slot the next `open` rebuilds.
pub(super) fn rebuild_staging(
    dir: &Path,
    limits: &wasmdm_package::Limits,
    keys: &[wasmdm_package::VerifyingKey],
) -> Result<()> {
    let part = delivery::part_path(dir);
    let staging = delivery::staging_path(dir);
    let fresh = dir.join("staging.rebuild");
    remove_dir_if_exists(&fresh)?;
    std::fs::create_dir_all(&fresh).map_err(|e| StateError::io("create dir", &fresh, e))?;
    let file = std::fs::File::open(&part).map_err(|e| StateError::io("open", &part, e))?;
    let unpacked =
        super::precompiled::unpack_slot(std::io::BufReader::new(file), dir, &fresh, limits, keys);
    if let Err(e) = unpacked {
        let _ = remove_dir_if_exists(&fresh);
        return Err(e);
    }
    sync_tree(&fresh)?;
    remove_dir_if_exists(&staging)?;
    std::fs::rename(&fresh, &staging).map_err(|e| StateError::io("rename", &staging, e))?;
    fsync_dir(dir)?;
    Ok(())
}
