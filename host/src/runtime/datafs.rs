//! The guest's file system with its limits enforced where they are consumed.
//!
//! wasmtime-wasi's `wasi:filesystem/types` is wrapped, not replaced: every
//! call still goes to its implementation (and its capability checks). The calls
//! that add bytes or entries — write, set-size, writes through a stream, open
//! with create, create-directory, link, symlink — first reserve them from the
//! instance's [`DataQuota`]; a reservation beyond the quota fails with
//! `quota` (EDQUOT) before anything is written. Calls that free space —
//! unlink, remove-directory, truncate, rename over an entry — give back what
//! they freed. Descriptors the guest opens are counted against
//! `max-descriptors` and refused beyond it.
//!
//! Before this, a walk of `/data` once a second stopped the guest after the
//! fact: a fast writer overshot the quota by gigabytes, and a tree deeper than
//! `PATH_MAX` made the walk fail and count as "under quota".
//!
//! Every race between a size read and the write it prices errs on the side of
//! charging too much (the usage is measured exactly again at the next start).

use super::logbuf::{LogBuffer, LogSource};
use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError,
    StreamResult,
};

/// What one entry (file, directory or link) costs besides its bytes: one
/// block, so a guest cannot fill the disk's inodes with empty files.
pub const ENTRY_BYTES: u64 = 4096;

/// Deepest nesting the start-up measurement follows; a deeper tree cannot be
/// measured and its usage counts as unknown (every growth fails).
pub const MAX_MEASURE_DEPTH: usize = 128;

/// WASI resources of every kind (streams, pollables, sockets, descriptors) an
/// instance may hold, per granted descriptor. Past it wasmtime traps the guest.
pub const RESOURCES_PER_DESCRIPTOR: usize = 2;

/// Bytes and entries one instance's `/data` holds, and the most it may.
#[derive(Debug)]
pub struct DataQuota {
    limit: u64,
    used: AtomicU64,
    /// The start-up measurement failed: usage unknown, so nothing may grow.
    unknown: AtomicBool,
}

impl DataQuota {
    /// Measures `dir` (missing = empty). A failed measurement fails closed: the
    /// error is returned next to a quota that refuses every growth.
    pub fn measure(dir: &Path, limit: u64) -> (Arc<DataQuota>, Option<io::Error>) {
        let (used, err) = match measure(dir) {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e)),
        };
        let q = DataQuota {
            limit,
            used: AtomicU64::new(used),
            unknown: AtomicBool::new(err.is_some()),
        };
        (Arc::new(q), err)
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// The quota.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes `bytes` from the quota, or fails without taking anything.
    fn reserve(&self, bytes: u64) -> Result<(), ErrorCode> {
        if bytes == 0 {
            return Ok(());
        }
        if self.unknown.load(Ordering::SeqCst) {
            return Err(ErrorCode::Quota);
        }
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .map(drop)
            .map_err(|_| ErrorCode::Quota)
    }

    /// Gives `bytes` back.
    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

/// Bytes of regular files plus [`ENTRY_BYTES`] per entry under `dir`, walked
/// through directory handles (no path ever grows past one name), symlinks
/// not followed.
pub fn measure(dir: &Path) -> io::Result<u64> {
    let root = match cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    measure_dir(&root, 0)
}

fn measure_dir(dir: &cap_std::fs::Dir, depth: usize) -> io::Result<u64> {
    let mut total = 0u64;
    for entry in dir.entries()? {
        let entry = entry?;
        let ft = entry.file_type()?;
        total = total.saturating_add(ENTRY_BYTES);
        if ft.is_dir() {
            if depth + 1 >= MAX_MEASURE_DEPTH {
                return Err(io::Error::other(format!(
                    "directories nested deeper than {MAX_MEASURE_DEPTH}"
                )));
            }
            let sub = entry.open_dir()?;
            total = total.saturating_add(measure_dir(&sub, depth + 1)?);
        } else if ft.is_file() {
            total = total.saturating_add(entry.metadata()?.len());
        }
    }
    Ok(total)
}

/// The per-instance state the wrapped file system keeps, in the store.
pub struct FsLimits {
    /// `None` without a `/data` grant: nothing can be written anyway.
    quota: Option<Arc<DataQuota>>,
    max_open: u32,
    /// Table indices of the descriptors and listings the guest opened.
    open: HashSet<u32>,
    log: LogBuffer,
    /// One log line per kind of refusal and run, not one per call.
    told_quota: bool,
    told_descriptors: bool,
}

impl FsLimits {
    /// Limits for one run.
    pub fn new(quota: Option<Arc<DataQuota>>, max_open: u32, log: LogBuffer) -> FsLimits {
        FsLimits {
            quota,
            max_open,
            open: HashSet::new(),
            log,
            told_quota: false,
            told_descriptors: false,
        }
    }

    fn reserve(&mut self, bytes: u64) -> FsResult<()> {
        let Some(q) = &self.quota else {
            return Ok(());
        };
        q.reserve(bytes).map_err(|e| {
            if !self.told_quota {
                self.told_quota = true;
                self.log.push(
                    LogSource::Host,
                    &format!(
                        "write refused: /data quota of {} bytes reached ({} used; files, \
                         directories and links count {ENTRY_BYTES} bytes each)",
                        q.limit(),
                        q.used()
                    ),
                );
            }
            FsError::from(e)
        })
    }

    fn release(&self, bytes: u64) {
        if let Some(q) = &self.quota {
            q.release(bytes);
        }
    }

    fn may_open(&mut self) -> FsResult<()> {
        if self.open.len() < self.max_open as usize {
            return Ok(());
        }
        if !self.told_descriptors {
            self.told_descriptors = true;
            self.log.push(
                LogSource::Host,
                &format!(
                    "open refused: {} descriptors open (max-descriptors)",
                    self.max_open
                ),
            );
        }
        // WASI has no EMFILE; this is the closest the guest's libc maps (ENOMEM).
        Err(ErrorCode::InsufficientMemory.into())
    }
}

/// Store data that can lend the wrapped file system its parts.
pub trait DataFsView: Send {
    /// The WASI file-system view and the limits, borrowed together.
    fn data_fs(&mut self) -> DataFs<'_>;
}

/// `wasi:filesystem/types` with limits: wasmtime-wasi's view plus [`FsLimits`].
pub struct DataFs<'a> {
    /// wasmtime-wasi's own implementation.
    pub fs: WasiFilesystemCtxView<'a>,
    /// What this instance may still consume.
    pub limits: &'a mut FsLimits,
}

struct DataFsData;

impl HasData for DataFsData {
    type Data<'a> = DataFs<'a>;
}

/// Replaces `wasi:filesystem/types` in `linker` (after wasmtime-wasi added it)
/// with the limited one.
pub fn add_to_linker<T: DataFsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let r = types::add_to_linker::<T, DataFsData>(linker, T::data_fs);
    linker.allow_shadowing(false);
    r
}

/// The host file behind `fd`, or `None` for a directory.
fn file_of(
    fs: &WasiFilesystemCtxView<'_>,
    fd: &Resource<types::Descriptor>,
) -> FsResult<Option<Arc<std::fs::File>>> {
    match fs.table.get(fd)? {
        Descriptor::File(f) => Ok(Some(f.file.clone())),
        Descriptor::Dir(_) => Ok(None),
    }
}

fn file_len(f: &std::fs::File) -> FsResult<u64> {
    Ok(f.metadata().map_err(ErrorCode::from)?.len())
}

/// What removing an existing entry frees, from its stat (not following links).
fn entry_cost(stat: &types::DescriptorStat) -> u64 {
    let data = match stat.type_ {
        types::DescriptorType::RegularFile => stat.size,
        _ => 0,
    };
    ENTRY_BYTES.saturating_add(data)
}

impl DataFs<'_> {
    /// The entry at `path` under `fd`, if any (links not followed).
    async fn lstat_at(
        &mut self,
        fd: &Resource<types::Descriptor>,
        path: &str,
    ) -> Option<types::DescriptorStat> {
        let fd = Resource::new_borrow(fd.rep());
        self.fs
            .stat_at(fd, types::PathFlags::empty(), path.to_string())
            .await
            .ok()
    }
}

impl types::Host for DataFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        if self.fs.table.get(&err)?.is::<QuotaExceeded>() {
            return Ok(Some(ErrorCode::Quota));
        }
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for DataFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.fs.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync_data(fd).await
    }

    async fn get_flags(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorFlags> {
        self.fs.get_flags(fd).await
    }

    async fn get_type(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::DescriptorType> {
        self.fs.get_type(fd).await
    }

    async fn set_size(
        &mut self,
        fd: Resource<types::Descriptor>,
        size: types::Filesize,
    ) -> FsResult<()> {
        let Some(file) = file_of(&self.fs, &fd)? else {
            return self.fs.set_size(fd, size).await;
        };
        let old = file_len(&file)?;
        let growth = size.saturating_sub(old);
        self.limits.reserve(growth)?;
        let r = self.fs.set_size(fd, size).await;
        match &r {
            Ok(()) => self.limits.release(old.saturating_sub(size)),
            Err(_) => self.limits.release(growth),
        }
        r
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let Some(file) = file_of(&self.fs, &fd)? else {
            return self.fs.write(fd, buf, offset).await;
        };
        let size = file_len(&file)?;
        let end = offset.saturating_add(buf.len() as u64);
        let growth = end.saturating_sub(size);
        self.limits.reserve(growth)?;
        let r = self.fs.write(fd, buf, offset).await;
        let grew = match &r {
            Ok(n) => offset.saturating_add(*n).saturating_sub(size),
            Err(_) => 0,
        };
        self.limits.release(growth.saturating_sub(grew));
        r
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        self.limits.may_open()?;
        let s = self.fs.read_directory(fd).await?;
        self.limits.open.insert(s.rep());
        Ok(s)
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.fs.sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        self.limits.reserve(ENTRY_BYTES)?;
        let r = self.fs.create_directory_at(fd, path).await;
        if r.is_err() {
            self.limits.release(ENTRY_BYTES);
        }
        r
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.fs.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times_at(fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // A hard link is charged like a copy: removing either name gives its
        // size back, so both names must have paid for it.
        let cost = match self.lstat_at(&fd, &old_path).await {
            Some(st) => entry_cost(&st),
            None => ENTRY_BYTES,
        };
        self.limits.reserve(cost)?;
        let r = self
            .fs
            .link_at(fd, old_path_flags, old_path, new_descriptor, new_path)
            .await;
        if r.is_err() {
            self.limits.release(cost);
        }
        r
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        self.limits.may_open()?;
        let creates = oflags.contains(types::OpenFlags::CREATE);
        let truncates = oflags.contains(types::OpenFlags::TRUNCATE);
        let before = if creates || truncates {
            self.lstat_at(&fd, &path).await
        } else {
            None
        };
        let charge = if creates && before.is_none() {
            ENTRY_BYTES
        } else {
            0
        };
        self.limits.reserve(charge)?;
        let r = self.fs.open_at(fd, path_flags, path, oflags, flags).await;
        match &r {
            Ok(new) => {
                self.limits.open.insert(new.rep());
                if truncates
                    && let Some(st) = &before
                    && st.type_ == types::DescriptorType::RegularFile
                {
                    self.limits.release(st.size);
                }
            }
            Err(_) => self.limits.release(charge),
        }
        r
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        self.limits.open.remove(&fd.rep());
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        self.fs.readlink_at(fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.fs.remove_directory_at(fd, path).await;
        if r.is_ok() {
            self.limits.release(ENTRY_BYTES);
        }
        r
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let replaced = self.lstat_at(&new_fd, &new_path).await;
        let r = self.fs.rename_at(fd, old_path, new_fd, new_path).await;
        if r.is_ok()
            && let Some(st) = replaced
        {
            self.limits.release(entry_cost(&st));
        }
        r
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_path: String,
    ) -> FsResult<()> {
        self.limits.reserve(ENTRY_BYTES)?;
        let r = self.fs.symlink_at(fd, old_path, new_path).await;
        if r.is_err() {
            self.limits.release(ENTRY_BYTES);
        }
        r
    }

    async fn unlink_file_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let gone = self.lstat_at(&fd, &path).await;
        let r = self.fs.unlink_file_at(fd, path).await;
        if r.is_ok()
            && let Some(st) = gone
        {
            self.limits.release(entry_cost(&st));
        }
        r
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.fs.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = file_of(&self.fs, &fd)?;
        let s = self.fs.write_via_stream(fd, offset)?;
        self.limit_stream(s, file, Some(offset))
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = file_of(&self.fs, &fd)?;
        let s = self.fs.append_via_stream(fd)?;
        self.limit_stream(s, file, None)
    }

    async fn is_same_object(
        &mut self,
        fd: Resource<types::Descriptor>,
        other: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.fs.is_same_object(fd, other).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash_at(fd, path_flags, path).await
    }
}

impl DataFs<'_> {
    /// Puts a [`QuotaStream`] in front of the stream wasmtime-wasi made.
    fn limit_stream(
        &mut self,
        s: Resource<DynOutputStream>,
        file: Option<Arc<std::fs::File>>,
        offset: Option<u64>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let (Some(quota), Some(file)) = (self.limits.quota.clone(), file) else {
            return Ok(s);
        };
        let inner = self.fs.table.delete(s)?;
        let wrapped: DynOutputStream = Box::new(QuotaStream {
            inner,
            file,
            position: offset,
            quota,
        });
        Ok(self.fs.table.push(wrapped)?)
    }
}

impl HostDirectoryEntryStream for DataFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.fs.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.limits.open.remove(&stream.rep());
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}

/// A stream write refused by the quota; `filesystem-error-code` reports it as
/// `quota` (EDQUOT), as a refused descriptor write is. (wasi-libc, under Rust's
/// `std::fs`, does not ask and reports any failed stream write as EIO; the
/// component log then says why.)
#[derive(Debug, thiserror::Error)]
#[error("/data quota exceeded")]
struct QuotaExceeded;

/// A file's output stream that reserves each write's growth first.
///
/// A write is accepted only after `check_write` said so, which wasmtime-wasi's
/// file stream does only once its previous write finished: the file's size
/// read then is exact for this stream's own writes.
struct QuotaStream {
    inner: DynOutputStream,
    file: Arc<std::fs::File>,
    /// Where the next write lands; `None` appends.
    position: Option<u64>,
    quota: Arc<DataQuota>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let n = bytes.len() as u64;
        let size = self
            .file
            .metadata()
            .map_err(|e| StreamError::LastOperationFailed(e.into()))?
            .len();
        let growth = match self.position {
            Some(p) => p.saturating_add(n).saturating_sub(size),
            None => n,
        };
        self.quota
            .reserve(growth)
            .map_err(|_| StreamError::LastOperationFailed(QuotaExceeded.into()))?;
        match self.inner.write(bytes) {
            Ok(()) => {
                if let Some(p) = &mut self.position {
                    *p = p.saturating_add(n);
                }
                Ok(())
            }
            Err(e) => {
                self.quota.release(growth);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_release_gives_back() {
        let (q, err) = DataQuota::measure(Path::new("/nonexistent/wasmdm"), 10_000);
        assert!(err.is_none());
        assert_eq!(q.used(), 0);
        assert!(q.reserve(6000).is_ok());
        assert_eq!(q.reserve(5000), Err(ErrorCode::Quota));
        assert_eq!(q.used(), 6000, "a refused reservation takes nothing");
        q.release(6000);
        assert!(q.reserve(10_000).is_ok());
        q.release(u64::MAX);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn measure_counts_entries_and_bytes_and_fails_closed_when_too_deep() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 100]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), vec![0u8; 10]).unwrap();
        assert_eq!(measure(dir.path()).unwrap(), 3 * ENTRY_BYTES + 110);

        // Deeper than PATH_MAX allows as one path: walked by handles, and
        // past MAX_MEASURE_DEPTH the usage is unknown, so growth is refused.
        let deep = tempfile::tempdir().unwrap();
        let mut d =
            cap_std::fs::Dir::open_ambient_dir(deep.path(), cap_std::ambient_authority()).unwrap();
        for _ in 0..MAX_MEASURE_DEPTH + 2 {
            let name = "n".repeat(200);
            d.create_dir(&name).unwrap();
            d = d.open_dir(&name).unwrap();
        }
        let (q, err) = DataQuota::measure(deep.path(), u64::MAX);
        assert!(err.is_some());
        assert_eq!(q.reserve(1), Err(ErrorCode::Quota));
        assert!(q.reserve(0).is_ok());
    }
}
