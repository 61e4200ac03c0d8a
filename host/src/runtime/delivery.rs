//! Package deliveries: streamed to disk block by block, resumable after a restart,
//! then verified (unpacked into staging) before install.
//!
//! Slot layout: `package.part` (the bytes), `progress.json` (bytes known durable
//! and an opaque resume tag such as a URI + ETag), `staging/` (unpacked files),
//! `delivered.json` (written last: the slot holds a verified package).

use super::error::RuntimeError;
use super::spec::PackageSpec;
use crate::state::{StateError, atomic_write};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Durable progress of a delivery.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// Bytes fsynced to package.part.
    synced_len: u64,
    /// Caller-defined resume information (e.g. package URI and ETag).
    resume_tag: Option<String>,
}

/// What a verified delivery holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredInfo {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// Component ids.
    pub components: Vec<String>,
    /// Key fingerprint (hex) that signed the manifest, if any.
    pub signed_by: Option<String>,
}

/// Record of a verified slot (`delivered.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveredRecord {
    pub info: DeliveredInfo,
    pub spec: PackageSpec,
}

/// Sync to disk after this many unsynced bytes, so a crash loses little.
const SYNC_EVERY: u64 = 256 << 10;
/// ... but not more often than this: what a crash loses is the time to fetch
/// the unsynced bytes again, and on a fast link each checkpoint's fsyncs
/// (the part file, then progress.json: file, rename, directory) held up the
/// transfer itself (a 10 MiB CoAP pull on loopback took 40 of them, ~0.1 s).
/// On a slow link [`SYNC_EVERY`] takes longer than this and decides alone.
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Bytes a buffered delivery gathers before writing them.
const BUFFER: usize = 64 << 10;

/// The thread that syncs a delivery's checkpoints, one at a time, while the
/// caller keeps receiving. Started at the first checkpoint and kept for the
/// next ones: a thread per checkpoint cost the caller ~0.3 ms each time.
#[derive(Debug)]
struct Syncer {
    jobs: Option<mpsc::Sender<Progress>>,
    done: mpsc::Receiver<Result<Progress, RuntimeError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    /// A syncer for `file` (a handle of the slot's `package.part`) in `dir`.
    fn start(file: File, dir: PathBuf) -> std::io::Result<Syncer> {
        let (jobs, job_rx) = mpsc::channel::<Progress>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wasmdm-delivery-sync".into())
            .spawn(move || {
                for progress in job_rx {
                    let result = file
                        .sync_data()
                        .map_err(|e| StateError::io("fsync", part_path(&dir), e).into())
                        .and_then(|()| write_progress(&dir, &progress))
                        .map(|()| progress);
                    if done_tx.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Syncer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the job channel ends the thread; joining it means no
        // checkpoint writes progress.json after the delivery is gone.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An open delivery slot (not Clone: one writer at a time).
#[derive(Debug)]
pub struct Delivery {
    dir: PathBuf,
    file: File,
    len: u64,
    progress: Progress,
    max_bytes: u64,
    /// Where the file cursor is, when known: a block that continues the last
    /// one is written without a seek (one syscall per block).
    cursor: Option<u64>,
    /// Sync every [`SYNC_EVERY`] bytes (off for deliveries that cannot resume).
    checkpoints: bool,
    /// When the last checkpoint started, and the least time to the next one
    /// ([`SYNC_INTERVAL`]).
    last_checkpoint: Option<std::time::Instant>,
    sync_interval: std::time::Duration,
    /// Gather blocks and write [`BUFFER`] bytes at a time (see [`Delivery::set_buffered`]).
    buffered: bool,
    /// Bytes received but not yet written, for the file from `buffer_at` on.
    buffer: Vec<u8>,
    buffer_at: u64,
    /// Syncs checkpoints off the caller's thread (see [`Syncer`]).
    syncer: Option<Syncer>,
    /// A checkpoint was handed to the syncer and its outcome not yet taken.
    pending: bool,
}

pub(crate) fn part_path(dir: &Path) -> PathBuf {
    dir.join("package.part")
}
pub(crate) fn staging_path(dir: &Path) -> PathBuf {
    dir.join("staging")
}
pub(crate) fn delivered_path(dir: &Path) -> PathBuf {
    dir.join("delivered.json")
}
fn progress_path(dir: &Path) -> PathBuf {
    dir.join("progress.json")
}

impl Delivery {
    /// Opens (creating if needed) the slot at `dir`. After a restart `len()` is the
    /// durable length: bytes past the last sync are discarded.
    pub(crate) fn open(dir: PathBuf, max_bytes: u64) -> Result<Delivery, RuntimeError> {
        std::fs::create_dir_all(&dir).map_err(|e| StateError::io("create dir", &dir, e))?;
        let part = part_path(&dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| StateError::io("open", &part, e))?;
        let progress: Progress = std::fs::read(progress_path(&dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let on_disk = file
            .metadata()
            .map_err(|e| StateError::io("stat", &part, e))?
            .len();
        let len = progress.synced_len.min(on_disk);
        if on_disk != len {
            file.set_len(len)
                .map_err(|e| StateError::io("truncate", &part, e))?;
        }
        Ok(Delivery {
            dir,
            file,
            len,
            progress,
            max_bytes,
            cursor: None,
            checkpoints: true,
            last_checkpoint: None,
            sync_interval: SYNC_INTERVAL,
            buffered: false,
            buffer: Vec::new(),
            buffer_at: 0,
            syncer: None,
            pending: false,
        })
    }

    /// Whether blocks may be gathered in memory and written [`BUFFER`] bytes
    /// at a time (off by default). For a pull, whose bytes count only once
    /// synced (a reopen keeps the synced length): it saves a write per block.
    /// A push stays unbuffered: each block is in the file before its answer.
    pub fn set_buffered(&mut self, on: bool) {
        self.buffered = on;
    }

    /// Whether to sync every 256 KiB (at most every [`SYNC_INTERVAL`]) so that
    /// a restart resumes near where it stopped (on by default). A delivery that cannot resume after a restart
    /// (a Block1 push: the server's block sequence is gone) turns it off and
    /// becomes durable at its final [`Delivery::sync`] only.
    pub fn set_checkpoints(&mut self, on: bool) {
        self.checkpoints = on;
    }

    /// Bytes received so far (the offset to resume from).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The resume tag stored with the last [`Delivery::sync`] or checkpoint,
    /// or set for the next one with [`Delivery::set_resume_tag`].
    pub fn resume_tag(&self) -> Option<&str> {
        self.progress.resume_tag.as_deref()
    }

    /// Sets the resume tag the next checkpoint records with the synced
    /// length, without a sync of its own: bytes count only once a checkpoint
    /// synced them, and that checkpoint makes the tag durable with them.
    pub fn set_resume_tag(&mut self, tag: Option<&str>) {
        self.progress.resume_tag = tag.map(str::to_string);
    }

    /// Writes a block at `offset` (plain blocking file I/O, meant for CoAP/HTTP
    /// sized blocks). Offset 0 starts a new delivery (truncates and
    /// forgets any earlier verification); a block past the end is a gap error; a
    /// repeated block overwrites in place.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.collect(false)?;
        if offset > self.len {
            return Err(RuntimeError::DeliveryGap {
                offset,
                len: self.len,
            });
        }
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.max_bytes {
            return Err(RuntimeError::TooLarge {
                limit: self.max_bytes,
            });
        }
        if offset == 0 {
            self.reset()?;
        }
        if self.buffered {
            let buffer_end = self.buffer_at + self.buffer.len() as u64;
            if !self.buffer.is_empty() && offset != buffer_end {
                self.flush()?;
            }
            if self.buffer.is_empty() {
                self.buffer_at = offset;
            }
            self.buffer.extend_from_slice(bytes);
            if self.buffer.len() >= BUFFER {
                self.flush()?;
            }
        } else {
            self.write_file(offset, bytes)?;
        }
        self.len = self.len.max(end);
        if self.checkpoints
            && !self.pending
            && self.len.saturating_sub(self.progress.synced_len) >= SYNC_EVERY
            && self
                .last_checkpoint
                .is_none_or(|at| at.elapsed() >= self.sync_interval)
        {
            self.last_checkpoint = Some(std::time::Instant::now());
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Makes everything written so far durable and records `resume_tag`.
    pub fn sync(&mut self, resume_tag: Option<&str>) -> Result<(), RuntimeError> {
        self.collect(true)?;
        self.flush()?;
        let part = part_path(&self.dir);
        self.file
            .sync_data()
            .map_err(|e| StateError::io("fsync", &part, e))?;
        let progress = Progress {
            synced_len: self.len,
            resume_tag: resume_tag.map(str::to_string),
        };
        write_progress(&self.dir, &progress)?;
        self.progress = progress;
        Ok(())
    }

    fn write_file(&mut self, offset: u64, bytes: &[u8]) -> Result<(), RuntimeError> {
        let part = part_path(&self.dir);
        if self.cursor.take() != Some(offset) {
            self.file
                .seek(SeekFrom::Start(offset))
                .map_err(|e| StateError::io("seek", &part, e))?;
        }
        self.file
            .write_all(bytes)
            .map_err(|e| StateError::io("write", &part, e))?;
        self.cursor = Some(offset.saturating_add(bytes.len() as u64));
        Ok(())
    }

    /// Writes the gathered bytes.
    fn flush(&mut self) -> Result<(), RuntimeError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.write_file(self.buffer_at, &buffer);
        self.buffer = buffer;
        self.buffer.clear();
        result
    }

    /// Starts syncing what is written so far on the syncer thread (the
    /// caller keeps receiving meanwhile); the next writes pick up its outcome.
    fn checkpoint(&mut self) -> Result<(), RuntimeError> {
        self.flush()?;
        let progress = Progress {
            synced_len: self.len,
            resume_tag: self.progress.resume_tag.clone(),
        };
        if self.syncer.is_none() {
            let part = part_path(&self.dir);
            let file = self
                .file
                .try_clone()
                .map_err(|e| StateError::io("dup", &part, e))?;
            // No thread to spare: checkpoints run on the caller's thread.
            self.syncer = Syncer::start(file, self.dir.clone()).ok();
        }
        let Some(jobs) = self.syncer.as_ref().and_then(|s| s.jobs.as_ref()) else {
            let tag = progress.resume_tag;
            return self.sync(tag.as_deref());
        };
        if jobs.send(progress.clone()).is_err() {
            // The thread is gone: sync here instead.
            self.syncer = None;
            return self.sync(progress.resume_tag.as_deref());
        }
        self.pending = true;
        Ok(())
    }

    /// Takes the outcome of the checkpoint in flight once it is done (or
    /// waits for it): its synced length, or its error.
    fn collect(&mut self, wait: bool) -> Result<(), RuntimeError> {
        if !self.pending {
            return Ok(());
        }
        let Some(syncer) = &self.syncer else {
            self.pending = false;
            return Ok(());
        };
        let outcome = if wait {
            syncer.done.recv().ok()
        } else {
            match syncer.done.try_recv() {
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                other => other.ok(),
            }
        };
        self.pending = false;
        let progress = outcome
            .ok_or_else(|| RuntimeError::Engine("delivery sync thread stopped".into()))??;
        if progress.synced_len >= self.progress.synced_len {
            // The tag may have been set after the checkpoint started.
            let tag = self.progress.resume_tag.take();
            self.progress = progress;
            if self.progress.resume_tag.is_none() {
                self.progress.resume_tag = tag;
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), RuntimeError> {
        // A checkpoint of the old bytes must not land after the truncation.
        let _ = self.collect(true);
        self.buffer.clear();
        let part = part_path(&self.dir);
        remove_if_exists(&delivered_path(&self.dir))?;
        remove_dir_if_exists(&staging_path(&self.dir))?;
        // Precompiled code of an earlier delivery into this slot (issue 13).
        remove_dir_if_exists(&self.dir.join("precompiled"))?;
        self.file
            .set_len(0)
            .map_err(|e| StateError::io("truncate", &part, e))?;
        self.cursor = None;
        self.len = 0;
        self.progress.synced_len = 0;
        Ok(())
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // The slot may be discarded or reused right after: no checkpoint of
        // this delivery may write its progress.json later.
        let _ = self.collect(true);
    }
}

fn write_progress(dir: &Path, progress: &Progress) -> Result<(), RuntimeError> {
    let path = progress_path(dir);
    let bytes = serde_json::to_vec(progress).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    atomic_write(&path, &bytes)?;
    Ok(())
}

pub(crate) fn remove_if_exists(p: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::io("remove", p, e)),
        _ => Ok(()),
    }
}

pub(crate) fn remove_dir_if_exists(p: &Path) -> Result<(), StateError> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::io("remove", p, e)),
        _ => Ok(()),
    }
}

pub(crate) fn read_delivered(dir: &Path) -> Option<DeliveredRecord> {
    std::fs::read(delivered_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_from_synced_length_only() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let mut d = Delivery::open(slot.clone(), 1 << 20).unwrap();
        d.write_at(0, b"hello ").unwrap();
        d.sync(Some("coap://x etag=1")).unwrap();
        d.write_at(6, b"world").unwrap(); // not synced
        assert_eq!(d.len(), 11);
        drop(d);
        let d = Delivery::open(slot.clone(), 1 << 20).unwrap();
        assert_eq!(d.len(), 6);
        assert_eq!(d.resume_tag(), Some("coap://x etag=1"));
        assert_eq!(std::fs::read(part_path(&slot)).unwrap(), b"hello ");
    }

    #[test]
    fn gaps_and_limits_are_refused_and_offset_zero_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Delivery::open(dir.path().join("s"), 10).unwrap();
        d.write_at(0, b"abc").unwrap();
        assert!(matches!(
            d.write_at(5, b"x"),
            Err(RuntimeError::DeliveryGap { offset: 5, len: 3 })
        ));
        assert!(matches!(
            d.write_at(3, &[0; 8]),
            Err(RuntimeError::TooLarge { limit: 10 })
        ));
        d.write_at(3, b"def").unwrap();
        d.write_at(0, b"Z").unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn blocks_land_at_their_offsets_with_and_without_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let mut d = Delivery::open(slot.clone(), 1 << 20).unwrap();
        d.write_at(0, b"aaaa").unwrap();
        d.write_at(4, b"bbbb").unwrap();
        d.write_at(2, b"CC").unwrap(); // a repeated block, then continuing
        d.write_at(8, b"dd").unwrap();
        d.write_at(0, b"xy").unwrap(); // restart
        d.write_at(2, b"z").unwrap();
        d.sync(None).unwrap();
        assert_eq!(std::fs::read(part_path(&slot)).unwrap(), b"xyz");
    }

    #[test]
    fn without_checkpoints_only_the_final_sync_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let mut d = Delivery::open(slot.clone(), 4 * SYNC_EVERY).unwrap();
        d.set_checkpoints(false);
        let block = vec![7u8; 1024];
        let blocks = 2 * SYNC_EVERY / 1024;
        for i in 0..blocks {
            d.write_at(i * 1024, &block).unwrap();
        }
        assert_eq!(d.progress.synced_len, 0, "no intermediate sync");
        d.sync(None).unwrap();
        drop(d);
        let d = Delivery::open(slot.clone(), 4 * SYNC_EVERY).unwrap();
        assert_eq!(d.len(), 2 * SYNC_EVERY);
        // With checkpoints (the default) a pull is synced as it goes.
        let slot2 = dir.path().join("t");
        let mut d = Delivery::open(slot2, 4 * SYNC_EVERY).unwrap();
        for i in 0..blocks {
            d.write_at(i * 1024, &block).unwrap();
        }
        d.collect(true).unwrap();
        assert!(d.progress.synced_len >= SYNC_EVERY, "synced as it goes");
    }

    #[test]
    fn buffered_blocks_count_once_synced_and_checkpoints_run_behind() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let limit = 8 * SYNC_EVERY;
        let mut d = Delivery::open(slot.clone(), limit).unwrap();
        d.set_buffered(true);
        d.write_at(0, b"").unwrap();
        d.sync(Some("etag")).unwrap();
        let body: Vec<u8> = (0..3 * SYNC_EVERY + 700).map(|i| (i % 251) as u8).collect();
        for (i, chunk) in body.chunks(1024).enumerate() {
            d.write_at(i as u64 * 1024, chunk).unwrap();
            if i == 5 {
                // A repeated block (a retransmission) overwrites in place.
                d.write_at(4 * 1024, &body[4 * 1024..5 * 1024]).unwrap();
            }
        }
        assert_eq!(d.len(), body.len() as u64);
        // Dropped without a final sync: a reopen keeps what a checkpoint
        // synced (with its resume tag), never more than was written.
        drop(d);
        let mut d = Delivery::open(slot.clone(), limit).unwrap();
        assert!(d.len() >= SYNC_EVERY, "{}", d.len());
        assert!(d.len() <= body.len() as u64);
        assert_eq!(d.resume_tag(), Some("etag"));
        let kept = usize::try_from(d.len()).unwrap();
        assert_eq!(std::fs::read(part_path(&slot)).unwrap(), &body[..kept]);
        // Resumed and finished: the file is the body.
        d.set_buffered(true);
        for (i, chunk) in body[kept..].chunks(1000).enumerate() {
            d.write_at((kept + i * 1000) as u64, chunk).unwrap();
        }
        d.sync(None).unwrap();
        drop(d);
        assert_eq!(std::fs::read(part_path(&slot)).unwrap(), body);
        let d = Delivery::open(slot, limit).unwrap();
        assert_eq!(d.len(), body.len() as u64);
    }

    #[test]
    fn a_tag_set_without_a_sync_becomes_durable_with_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let limit = 8 * SYNC_EVERY;
        let block = vec![5u8; 1024];
        let mut d = Delivery::open(slot.clone(), limit).unwrap();
        d.set_buffered(true);
        d.write_at(0, &block).unwrap();
        d.set_resume_tag(Some("etag"));
        assert_eq!(d.resume_tag(), Some("etag"));
        drop(d);
        // Nothing synced yet: neither bytes nor tag survive.
        let mut d = Delivery::open(slot.clone(), limit).unwrap();
        assert_eq!((d.len(), d.resume_tag()), (0, None));
        d.set_buffered(true);
        d.sync_interval = std::time::Duration::ZERO;
        d.write_at(0, &block).unwrap();
        d.set_resume_tag(Some("etag"));
        // Three checkpoints' worth, all through the one syncer thread.
        let blocks = 3 * SYNC_EVERY / 1024 + 10;
        for i in 1..blocks {
            d.write_at(i * 1024, &block).unwrap();
            if i % 64 == 0 {
                // Let checkpoints finish so that the later ones run too.
                d.collect(true).unwrap();
            }
        }
        d.collect(true).unwrap();
        assert!(
            d.progress.synced_len >= 3 * SYNC_EVERY,
            "{}",
            d.progress.synced_len
        );
        assert_eq!(d.resume_tag(), Some("etag"));
        drop(d);
        let d = Delivery::open(slot, limit).unwrap();
        assert!(d.len() >= 3 * SYNC_EVERY);
        assert_eq!(d.resume_tag(), Some("etag"));
    }

    #[test]
    fn checkpoints_wait_for_the_interval_after_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let limit = 8 * SYNC_EVERY;
        let block = vec![3u8; 1024];
        let mut d = Delivery::open(slot.clone(), limit).unwrap();
        d.set_buffered(true);
        d.sync_interval = std::time::Duration::from_secs(3600);
        for i in 0..3 * SYNC_EVERY / 1024 {
            d.write_at(i * 1024, &block).unwrap();
        }
        d.collect(true).unwrap();
        // The first checkpoint at 256 KiB, no second one within the interval.
        assert_eq!(d.progress.synced_len, SYNC_EVERY);
        d.sync_interval = std::time::Duration::ZERO;
        d.write_at(3 * SYNC_EVERY, &block).unwrap();
        d.collect(true).unwrap();
        assert_eq!(d.progress.synced_len, 3 * SYNC_EVERY + 1024);
    }

    #[test]
    fn a_restart_at_offset_zero_drops_gathered_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("s");
        let mut d = Delivery::open(slot.clone(), 1 << 20).unwrap();
        d.set_buffered(true);
        d.write_at(0, b"old old").unwrap();
        d.write_at(0, b"new").unwrap();
        d.write_at(3, b"!").unwrap();
        d.sync(None).unwrap();
        assert_eq!(std::fs::read(part_path(&slot)).unwrap(), b"new!");
    }
}
