//! Reading package archives, which are hostile input.
//!
//! The reader streams: every limit is checked before or while bytes are decompressed, so a gzip
//! bomb stops at the cap. Only regular files listed in the manifest are written, with
//! `create_new`, below the staging dir; nothing else touches the filesystem, except the
//! precompiled-code entries a server may add (see [`PRECOMPILED_DIR`]), which go to a directory
//! of the caller's choosing or nowhere.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::digest::{Digest, HashingWriter};
use crate::error::{PackageError, Result};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::relpath::{self, MANIFEST_NAME, SIGNATURE_NAME};
use crate::signing::{self, MAX_SIGNATURE_BYTES, SignatureFile, VerifyingKey};

/// Host features accepted by [`Limits::default`]; a real host passes its own list.
/// `wasmdm:device/objects@0.1`: the host serves the LwM2M objects apps declare.
pub const DEFAULT_HOST_FEATURES: &[&str] = &[
    "wasmdm:device/app@0.1",
    "wasmdm:device/objects@0.1",
    "wasi:cli/command@0.2",
];

/// Per-entry allowance for tar headers, GNU long names and PAX records when capping the
/// decompressed stream.
const ENTRY_OVERHEAD: u64 = 4096;

/// Largest GNU long-name / long-link or PAX extended header accepted, bytes.
///
/// The `tar` crate reads such a header's whole data into memory before it hands out the member
/// it describes, so without this cap one header claiming hundreds of MiB (a few hundred KiB
/// once gzipped) costs that much memory whatever the package limits say. A real one holds a
/// path of at most 255 bytes and a few PAX records; 64 KiB leaves ample room. The reader checks
/// the size field of the raw header against this before reading a byte of the data.
pub const MAX_EXTENSION_HEADER_BYTES: u64 = 64 * 1024;

/// Archive directory of the extra entries a server adds to a package for one device engine
/// (issue 13): `precompiled/<component-sha256>.cwasm` (native code), `.sig` (its signature by a
/// native-code key) and `.engine` (the engine hash it was built for). They are outside the
/// signed manifest, carry their own signature, and are checked by the runtime before use; the
/// archive reader only checks their names and sizes. An entry under this directory that is not
/// strictly so named (lowercase hex of a component's digest in the manifest, one of the three
/// suffixes) or is over its cap is skipped with a note in [`Verified::precompiled_notes`]: the
/// package still installs (the device compiles that component itself).
pub const PRECOMPILED_DIR: &str = "precompiled";

/// Largest `.engine` entry, bytes (an engine hash is 16 hex digits).
pub const MAX_PRECOMPILED_ENGINE_BYTES: u64 = 64;

/// Largest `.cwasm` entry, as a multiple of [`Limits::max_file_bytes`]: native code is larger
/// than the `.wasm` it comes from (Cranelift code for the example guests: 1.5-3x).
pub const PRECOMPILED_CODE_FACTOR: u64 = 4;

/// What a package may cost the device, and what the host provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file, bytes.
    pub max_file_bytes: u64,
    /// Largest sum of all entry sizes, bytes.
    pub max_total_bytes: u64,
    /// Most archive entries (directories included).
    pub max_files: usize,
    /// Host features; a manifest `requires` entry not in this list refuses the package.
    pub host_provides: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 << 20,
            max_total_bytes: 256 << 20,
            max_files: 1024,
            host_provides: DEFAULT_HOST_FEATURES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl Limits {
    /// Cap on decompressed bytes fed to the tar parser: payload plus metadata and header
    /// overhead, plus as much again for precompiled-code entries.
    fn stream_cap(&self) -> u64 {
        let entries = (self.max_files as u64).saturating_add(4);
        self.max_total_bytes
            .saturating_add(self.precompiled_total_cap())
            .saturating_add(MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES)
            .saturating_add(entries.saturating_mul(ENTRY_OVERHEAD))
            .saturating_add(64 * 1024)
    }

    /// Largest sum of precompiled-code entries kept: [`Limits::max_total_bytes`].
    pub fn precompiled_total_cap(&self) -> u64 {
        self.max_total_bytes
    }

    /// Largest `.cwasm` entry kept.
    pub fn precompiled_code_cap(&self) -> u64 {
        self.max_file_bytes.saturating_mul(PRECOMPILED_CODE_FACTOR)
    }
}

/// A package that passed every check and whose payload now sits in the staging dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The validated manifest.
    pub manifest: Manifest,
    /// Exact `manifest.toml` bytes (what the signature covers); store these, not a re-rendering.
    pub manifest_bytes: Vec<u8>,
    /// Fingerprint of the trusted key that signed the manifest; `None` when no keys were given.
    pub signed_by: Option<String>,
    /// Sum of entry sizes, manifest and signature included (precompiled-code entries not).
    pub total_bytes: u64,
    /// Precompiled-code entries written to the caller's directory (file names, e.g.
    /// `<sha256>.cwasm`); empty when none was given or the package has none.
    pub precompiled: Vec<String>,
    /// Why precompiled-code entries were skipped (malformed name, over a cap).
    pub precompiled_notes: Vec<String>,
}

/// Why the archive reader failed, so an io error can be blamed on the right party.
#[derive(Default)]
struct StreamFlags {
    /// The caller's reader failed: a local I/O problem.
    source_failed: Cell<bool>,
    /// The decompressed stream reached its cap.
    cap_hit: Cell<bool>,
}

/// Records failures of the caller's reader.
struct SourceReader<R> {
    inner: R,
    flags: Rc<StreamFlags>,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.flags.source_failed.set(true);
            }
        })
    }
}

/// Fails once more than `remaining` decompressed bytes are requested.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
    flags: Rc<StreamFlags>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            self.flags.cap_hit.set(true);
            return Err(io::Error::other("decompressed size cap reached"));
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let slice = buf.get_mut(..want).unwrap_or_default();
        let n = self.inner.read(slice)?;
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

/// A tar parser over gzip or plain input, plus the flags that classify its errors.
struct Stream<'a> {
    archive: tar::Archive<Box<dyn Read + 'a>>,
    flags: Rc<StreamFlags>,
    cap: u64,
    /// Last entry fully read, for error messages.
    last: Option<String>,
    /// Whether any header parsed, to tell "not an archive" from "corrupt archive".
    started: bool,
}

impl<'a> Stream<'a> {
    fn open<R: Read + 'a>(reader: R, limits: &Limits) -> Result<Self> {
        let flags = Rc::new(StreamFlags::default());
        let mut source = SourceReader {
            inner: reader,
            flags: flags.clone(),
        };
        // Sniff the gzip magic (RFC 1952 §2.3.1: ID1 0x1f, ID2 0x8b).
        let mut magic = Vec::with_capacity(2);
        (&mut source)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(|e| PackageError::io("read package", e))?;
        let gzip = magic == [0x1f, 0x8b];
        let joined = io::Cursor::new(magic).chain(source);
        let decoded: Box<dyn Read + 'a> = if gzip {
            Box::new(GzDecoder::new(joined))
        } else {
            Box::new(joined)
        };
        let cap = limits.stream_cap();
        let capped = CappedReader {
            inner: decoded,
            remaining: cap,
            flags: flags.clone(),
        };
        let archive = tar::Archive::new(Box::new(capped) as Box<dyn Read + 'a>);
        Ok(Stream {
            archive,
            flags,
            cap,
            last: None,
            started: false,
        })
    }

    /// Turns an error surfaced by the tar/gzip readers into the right [`PackageError`].
    fn classify(
        flags: &StreamFlags,
        cap: u64,
        started: bool,
        last: &Option<String>,
        e: io::Error,
    ) -> PackageError {
        if flags.source_failed.get() {
            PackageError::io("read package", e)
        } else if flags.cap_hit.get() {
            PackageError::TotalTooLarge { limit: cap }
        } else if !started {
            PackageError::NotAnArchive(e.to_string())
        } else {
            PackageError::Corrupt {
                after: last.clone(),
                reason: e.to_string(),
            }
        }
    }
}

/// One archive member, with the GNU long name or PAX `path` that preceded it applied.
struct Member<'a, R: Read> {
    entry: tar::Entry<'a, R>,
    /// The member's path as tar tools read it (long name, else PAX `path`, else the header's).
    path: Vec<u8>,
}

/// Extension headers read for the member that follows them.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: Option<Vec<u8>>,
}

/// Walks the archive's raw entries and folds GNU long-name / long-link and PAX extended headers
/// into the member after them, as `tar`'s own iterator does, except that each such header's
/// size is checked against [`MAX_EXTENSION_HEADER_BYTES`], and their number against
/// `max_files`, before its data is read. (`tar`'s iterator would buffer the data first.)
struct Members<'a, R: Read> {
    raw: tar::Entries<'a, R>,
    /// Extension headers still allowed in this archive.
    headers_left: usize,
    headers_limit: usize,
}

/// An archive read error (the outer `io::Result`, classified by [`Stream::classify`]) or a
/// verdict on the package (the inner [`Result`]).
type Step<T> = io::Result<Result<T>>;

fn corrupt(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
}

impl<'a, R: Read> Members<'a, R> {
    fn new(archive: &'a mut tar::Archive<R>, limits: &Limits) -> io::Result<Self> {
        Ok(Members {
            raw: archive.entries()?.raw(true),
            headers_left: limits.max_files,
            headers_limit: limits.max_files,
        })
    }

    /// The next member, `None` at the end of the archive.
    fn next_member(&mut self) -> Step<Option<Member<'a, R>>> {
        let mut pending = Pending::default();
        loop {
            let Some(mut entry) = self.raw.next().transpose()? else {
                if pending.long_name.is_some() || pending.long_link || pending.pax.is_some() {
                    return Err(corrupt("extension headers with no member after them"));
                }
                return Ok(Ok(None));
            };
            let header = entry.header();
            let kind = header.entry_type();
            // Like `tar`, only GNU and ustar headers carry extensions; an old-style header with
            // one of these types is an ordinary (and refused) member.
            let recognised = header.as_gnu().is_some() || header.as_ustar().is_some();
            let what = if !recognised {
                None
            } else if kind.is_gnu_longname() {
                Some("GNU long name")
            } else if kind.is_gnu_longlink() {
                Some("GNU long link")
            } else if kind.is_pax_local_extensions() {
                Some("PAX extended header")
            } else {
                None
            };
            let Some(what) = what else {
                return Ok(pending.apply(entry).map(Some));
            };
            if self.headers_left == 0 {
                return Ok(Err(PackageError::TooManyHeaders {
                    limit: self.headers_limit,
                }));
            }
            self.headers_left -= 1;
            // In raw mode this is the header's own size field: nothing has been read yet.
            let size = entry.size();
            if size > MAX_EXTENSION_HEADER_BYTES {
                return Ok(Err(PackageError::HeaderTooLarge {
                    what,
                    size,
                    limit: MAX_EXTENSION_HEADER_BYTES,
                }));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            (&mut entry).take(size).read_to_end(&mut data)?;
            if data.len() as u64 != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{what} truncated"),
                ));
            }
            let slot_taken = if kind.is_gnu_longname() {
                pending.long_name.replace(data).is_some()
            } else if kind.is_gnu_longlink() {
                std::mem::replace(&mut pending.long_link, true)
            } else {
                pending.pax.replace(data).is_some()
            };
            if slot_taken {
                return Err(corrupt(&format!("two {what}s describing the same member")));
            }
        }
    }
}

impl Pending {
    /// Gives `entry` its path the way tar tools read it: a GNU long name (without its trailing
    /// NUL) wins, then a PAX `path` record, then the header. A PAX `size` record must agree with
    /// the header: `tar` frames the member by the header in raw mode, other readers by the
    /// record, and a package that reads differently in different tools is refused.
    fn apply<'a, R: Read>(self, entry: tar::Entry<'a, R>) -> Result<Member<'a, R>> {
        let mut pax_path = None;
        let mut pax_size = None;
        let mut pax_bad = false;
        for record in tar::PaxExtensions::new(self.pax.as_deref().unwrap_or_default()) {
            match record {
                Ok(r) if r.key_bytes() == b"path" => pax_path = Some(r.value_bytes().to_vec()),
                Ok(r) if r.key_bytes() == b"size" => pax_size = Some(r.value_bytes().to_vec()),
                Ok(_) => {}
                Err(_) => pax_bad = true,
            }
        }
        let path = match self.long_name {
            Some(mut name) => {
                if name.last() == Some(&0) {
                    name.pop();
                }
                name
            }
            None => pax_path.unwrap_or_else(|| entry.header().path_bytes().into_owned()),
        };
        let hostile = |reason: &str| PackageError::HostileEntry {
            path: String::from_utf8_lossy(&path).into_owned(),
            reason: reason.to_string(),
        };
        if pax_bad {
            return Err(hostile("malformed PAX extended header"));
        }
        if let Some(text) = pax_size {
            let agrees = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|n| n == entry.size());
            if !agrees {
                return Err(hostile("PAX size record disagrees with the tar header"));
            }
        }
        Ok(Member { entry, path })
    }
}

/// How a tar entry is treated.
enum EntryClass {
    /// A regular file at a checked path.
    File(String),
    /// A directory (or the `./` root): ignored.
    Dir,
}

fn describe(t: EntryType) -> &'static str {
    match t {
        EntryType::Symlink => "symlink",
        EntryType::Link => "hard link",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "fifo",
        EntryType::Continuous => "contiguous file",
        EntryType::GNUSparse => "sparse file",
        EntryType::XGlobalHeader => "pax global header",
        _ => "unsupported entry type",
    }
}

/// Checks a member's type and path. A single leading `./` is tolerated (GNU tar `-C dir .`).
fn classify_entry<R: Read>(member: &Member<'_, R>) -> Result<EntryClass> {
    let raw = &member.path;
    let lossy = String::from_utf8_lossy(raw).into_owned();
    let hostile = |reason: &str| PackageError::HostileEntry {
        path: lossy.clone(),
        reason: reason.to_string(),
    };
    let text = std::str::from_utf8(raw).map_err(|_| hostile("path is not UTF-8"))?;
    let text = text.strip_prefix("./").unwrap_or(text);
    let kind = member.entry.header().entry_type();
    match kind {
        EntryType::Directory => {
            let dir = text.trim_end_matches('/');
            if !(dir.is_empty() || dir == ".") {
                relpath::check_relative(dir).map_err(|e| hostile(&e))?;
            }
            Ok(EntryClass::Dir)
        }
        EntryType::Regular => {
            relpath::check_relative(text).map_err(|e| hostile(&e))?;
            Ok(EntryClass::File(text.to_string()))
        }
        other => Err(hostile(&format!(
            "{} entries are not allowed",
            describe(other)
        ))),
    }
}

/// Reads a small metadata entry fully, refusing more than `max` bytes.
fn read_small<R: Read>(
    entry: &mut R,
    path: &str,
    size: u64,
    max: u64,
) -> io::Result<Result<Vec<u8>>> {
    if size > max {
        return Ok(Err(PackageError::ManifestTooLarge {
            path: path.to_string(),
            limit: max,
        }));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{path} truncated"),
        ));
    }
    Ok(Ok(buf))
}

/// Unpacks a package into `staging_dir` (a fresh, empty directory the caller created),
/// verifying limits, layout, digests and, when `trusted_keys` is non-empty, the signature.
///
/// On error the staging dir may hold partial files: the caller deletes it. Nothing is ever
/// written outside it. Files are written, not fsynced: what to make durable, and when, is the
/// caller's decision (a scratch dir for `inspect` or `run` needs nothing).
pub fn unpack<R: Read>(
    reader: R,
    staging_dir: &Path,
    limits: &Limits,
    trusted_keys: &[VerifyingKey],
) -> Result<Verified> {
    unpack_with_precompiled(reader, staging_dir, None, limits, trusted_keys)
}

/// As [`unpack`], writing well-formed precompiled-code entries (see [`PRECOMPILED_DIR`]) to
/// `precompiled_dir` (a fresh, empty directory the caller created) as `<sha256>.<suffix>`;
/// without one they are skipped unread. The caller verifies them before any use.
pub fn unpack_with_precompiled<R: Read>(
    reader: R,
    staging_dir: &Path,
    precompiled_dir: Option<&Path>,
    limits: &Limits,
    trusted_keys: &[VerifyingKey],
) -> Result<Verified> {
    let mut stream = Stream::open(reader, limits)?;
    let Stream {
        archive,
        flags,
        cap,
        last,
        started,
    } = &mut stream;
    let mut state = UnpackState {
        limits,
        trusted_keys,
        staging_dir,
        precompiled_dir,
        manifest: None,
        seen: BTreeSet::new(),
        signed_by: None,
        total: 0,
        precompiled: Vec::new(),
        precompiled_notes: Vec::new(),
        precompiled_total: 0,
    };
    let mut members = Members::new(archive, limits)
        .map_err(|e| Stream::classify(flags, *cap, *started, last, e))?;
    let mut count = 0usize;
    while let Some(mut member) = members
        .next_member()
        .map_err(|e| Stream::classify(flags, *cap, *started, last, e))??
    {
        *started = true;
        count += 1;
        if count > limits.max_files {
            return Err(PackageError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        let path = match classify_entry(&member)? {
            EntryClass::Dir => continue,
            EntryClass::File(path) => path,
        };
        match state.entry(&path, &mut member.entry) {
            Ok(result) => result?,
            Err(e) => return Err(Stream::classify(flags, *cap, *started, last, e)),
        }
        *last = Some(path);
    }
    state.finish()
}

/// Mutable bookkeeping of [`unpack`].
struct UnpackState<'a> {
    limits: &'a Limits,
    trusted_keys: &'a [VerifyingKey],
    staging_dir: &'a Path,
    precompiled_dir: Option<&'a Path>,
    manifest: Option<(Manifest, Vec<u8>, BTreeMap<String, Digest>)>,
    seen: BTreeSet<String>,
    signed_by: Option<String>,
    total: u64,
    precompiled: Vec<String>,
    precompiled_notes: Vec<String>,
    precompiled_total: u64,
}

impl UnpackState<'_> {
    /// Handles one regular-file entry. The outer `io::Result` is an archive read error (to be
    /// classified by the caller); the inner one is a package verdict.
    fn entry<R: Read>(
        &mut self,
        path: &str,
        entry: &mut tar::Entry<'_, R>,
    ) -> io::Result<Result<()>> {
        if !self.seen.insert(path.to_string()) {
            return Ok(Err(PackageError::DuplicateEntry(path.to_string())));
        }
        let size = entry.size();
        let Some((_, _, expected)) = &self.manifest else {
            if path != MANIFEST_NAME {
                return Ok(Err(PackageError::EntryBeforeManifest(path.to_string())));
            }
            let bytes = match read_small(entry, path, size, MAX_MANIFEST_BYTES)? {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            let parsed = Manifest::from_bytes(&bytes)
                .and_then(|m| m.check_requirements(&self.limits.host_provides).map(|()| m));
            return Ok(parsed.map(|m| {
                self.total += size;
                let payload = m.payload();
                self.manifest = Some((m, bytes, payload));
            }));
        };

        if path == SIGNATURE_NAME {
            let sig = match read_small(entry, path, size, MAX_SIGNATURE_BYTES)? {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            self.total += size;
            if !self.trusted_keys.is_empty() {
                let manifest_bytes = self
                    .manifest
                    .as_ref()
                    .map(|(_, b, _)| b.as_slice())
                    .unwrap_or_default();
                match signing::verify_manifest(&sig, manifest_bytes, self.trusted_keys) {
                    Ok(fp) => self.signed_by = Some(fp),
                    Err(e) => return Ok(Err(e)),
                }
            }
            return Ok(Ok(()));
        }

        // The signature must be checked before any payload byte is written.
        if !self.trusted_keys.is_empty() && self.signed_by.is_none() {
            return Ok(Err(PackageError::Unsigned));
        }
        let Some(want) = expected.get(path).copied() else {
            if let Some(name) = path
                .strip_prefix(PRECOMPILED_DIR)
                .and_then(|p| p.strip_prefix('/'))
            {
                return self.precompiled_entry(path, name, entry);
            }
            return Ok(Err(PackageError::UnlistedEntry(path.to_string())));
        };
        let limit = self.limits.max_file_bytes;
        if size > limit {
            return Ok(Err(PackageError::FileTooLarge {
                path: path.to_string(),
                size,
                limit,
            }));
        }
        if self.total.saturating_add(size) > self.limits.max_total_bytes {
            return Ok(Err(PackageError::TotalTooLarge {
                limit: self.limits.max_total_bytes,
            }));
        }
        let (written, actual) = match write_payload(self.staging_dir, path, entry)? {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        if written != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path} truncated"),
            ));
        }
        if actual != want {
            return Ok(Err(PackageError::DigestMismatch {
                file: path.to_string(),
                expected: want.to_hex(),
                actual: actual.to_hex(),
            }));
        }
        self.total += size;
        Ok(Ok(()))
    }

    /// A `precompiled/...` entry (`name` is what follows the directory): its cap is checked
    /// from the header before a byte is read, and it is written only when strictly named and a
    /// directory was given; anything else is skipped with a note.
    fn precompiled_entry<R: Read>(
        &mut self,
        path: &str,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
    ) -> io::Result<Result<()>> {
        let size = entry.size();
        let components: BTreeSet<String> = self
            .manifest
            .as_ref()
            .map(|(m, _, _)| m.components.iter().map(|c| c.sha256.to_hex()).collect())
            .unwrap_or_default();
        let parsed = name.rsplit_once('.').filter(|(sha, suffix)| {
            components.contains(*sha) && matches!(*suffix, "cwasm" | "sig" | "engine")
        });
        let cap = match parsed {
            None => {
                self.precompiled_notes.push(format!(
                    "{path}: not precompiled/<component sha256>.cwasm|sig|engine of a component \
                     in the manifest"
                ));
                return Ok(Ok(()));
            }
            Some((_, "cwasm")) => self.limits.precompiled_code_cap(),
            Some((_, "sig")) => MAX_SIGNATURE_BYTES,
            Some(_) => MAX_PRECOMPILED_ENGINE_BYTES,
        };
        let total_cap = self.limits.precompiled_total_cap();
        if size > cap || self.precompiled_total.saturating_add(size) > total_cap {
            self.precompiled_notes.push(format!(
                "{path}: {size} bytes is over its cap ({cap} per entry, {total_cap} in all)"
            ));
            return Ok(Ok(()));
        }
        let Some(dir) = self.precompiled_dir else {
            return Ok(Ok(()));
        };
        let (written, _) = match write_payload(dir, name, entry)? {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        if written != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path} truncated"),
            ));
        }
        self.precompiled_total += size;
        self.precompiled.push(name.to_string());
        Ok(Ok(()))
    }

    fn finish(self) -> Result<Verified> {
        let Some((manifest, manifest_bytes, expected)) = self.manifest else {
            return Err(PackageError::NoManifest);
        };
        if !self.trusted_keys.is_empty() && self.signed_by.is_none() {
            return Err(PackageError::Unsigned);
        }
        if let Some(missing) = expected.keys().find(|p| !self.seen.contains(*p)) {
            return Err(PackageError::MissingFile(missing.clone()));
        }
        Ok(Verified {
            manifest,
            manifest_bytes,
            signed_by: self.signed_by,
            total_bytes: self.total,
            precompiled: self.precompiled,
            precompiled_notes: self.precompiled_notes,
        })
    }
}

/// Streams one payload file to `staging/path`, hashing as it goes. Outer error: archive read;
/// inner error: local disk.
fn write_payload<R: Read>(
    staging: &Path,
    path: &str,
    entry: &mut R,
) -> io::Result<Result<(u64, Digest)>> {
    let target = staging.join(path);
    let disk =
        |what: &str, e: io::Error| PackageError::io(format!("{what} {}", target.display()), e);
    if let Some(parent) = target.parent()
        && let Err(e) = fs::create_dir_all(parent)
    {
        return Ok(Err(disk("create directory for", e)));
    }
    let file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
    {
        Ok(f) => f,
        Err(e) => return Ok(Err(disk("create", e))),
    };
    let mut out = HashingWriter::new(io::BufWriter::new(file));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Err(e) = out.write_all(buf.get(..n).unwrap_or_default()) {
            return Ok(Err(disk("write", e)));
        }
    }
    let written = out.written();
    let (buffered, digest) = out.finish();
    if let Err(e) = buffered.into_inner().map_err(|e| e.into_error()) {
        return Ok(Err(disk("write", e)));
    }
    Ok(Ok((written, digest)))
}

// ---------------------------------------------------------------------------------------------
// Inspection without unpacking (`wasmdm inspect`).

/// Signature state of an inspected package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No `manifest.sig`.
    Unsigned,
    /// `manifest.sig` present; `valid` says whether it verifies with the key it names (whether
    /// that key is trusted is the host's decision).
    Signed {
        /// Fingerprint of the named key.
        fingerprint: String,
        /// Signature verifies over the manifest bytes.
        valid: bool,
    },
    /// `manifest.sig` present but unparsable.
    Malformed(String),
}

/// Verdict on one archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryStatus {
    /// Listed and digest matches.
    Ok,
    /// Listed but content differs.
    DigestMismatch {
        /// From the manifest.
        expected: Digest,
        /// Of the content.
        actual: Digest,
    },
    /// Not listed in the manifest.
    Unlisted,
    /// [`unpack`] would refuse it; says why.
    Refused(String),
}

/// One archive entry seen during inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryReport {
    /// Path as in the archive (lossy UTF-8).
    pub path: String,
    /// Size from the header.
    pub size: u64,
    /// Verdict.
    pub status: EntryStatus,
}

/// Result of [`read_manifest`]: the manifest and per-file digest checks, nothing written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The manifest (requirements not checked).
    pub manifest: Manifest,
    /// Exact manifest bytes.
    pub manifest_bytes: Vec<u8>,
    /// Raw `manifest.sig`, for [`signing::verify_manifest`] against the host's trusted keys.
    pub signature_bytes: Option<Vec<u8>>,
    /// Signature state.
    pub signature: SignatureStatus,
    /// Every entry after the manifest, in archive order (directories omitted).
    pub entries: Vec<EntryReport>,
    /// Listed files absent from the archive.
    pub missing: Vec<String>,
    /// Sum of entry sizes.
    pub total_bytes: u64,
}

impl Inspection {
    /// True when every entry is listed and matches, nothing is missing, and any signature is
    /// self-consistent.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.entries.iter().all(|e| e.status == EntryStatus::Ok)
            && !matches!(
                self.signature,
                SignatureStatus::Malformed(_) | SignatureStatus::Signed { valid: false, .. }
            )
    }
}

/// Reads the manifest and checks every file's digest without writing anything. Structural
/// problems (not an archive, no or bad manifest, manifest not first, limits) are errors;
/// per-file problems are reported in [`Inspection::entries`].
pub fn read_manifest<R: Read>(reader: R, limits: &Limits) -> Result<Inspection> {
    let mut stream = Stream::open(reader, limits)?;
    let Stream {
        archive,
        flags,
        cap,
        last,
        started,
    } = &mut stream;
    let mut members = Members::new(archive, limits)
        .map_err(|e| Stream::classify(flags, *cap, *started, last, e))?;
    let mut head: Option<(Manifest, Vec<u8>, BTreeMap<String, Digest>)> = None;
    let mut signature_bytes = None;
    let mut reports = Vec::new();
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let mut count = 0usize;
    while let Some(member) = members
        .next_member()
        .map_err(|e| Stream::classify(flags, *cap, *started, last, e))??
    {
        *started = true;
        count += 1;
        if count > limits.max_files {
            return Err(PackageError::TooManyFiles {
                limit: limits.max_files,
            });
        }
        let class = classify_entry(&member);
        let Member {
            mut entry,
            path: raw_path,
        } = member;
        let size = entry.size();
        total = total.saturating_add(size);
        let Some((_, _, expected)) = &head else {
            match class? {
                EntryClass::Dir => continue,
                EntryClass::File(p) if p == MANIFEST_NAME => {
                    let bytes = read_small(&mut entry, &p, size, MAX_MANIFEST_BYTES)
                        .map_err(|e| Stream::classify(flags, *cap, *started, last, e))??;
                    let m = Manifest::from_bytes(&bytes)?;
                    let payload = m.payload();
                    head = Some((m, bytes, payload));
                    *last = Some(p);
                    continue;
                }
                EntryClass::File(p) => return Err(PackageError::EntryBeforeManifest(p)),
            }
        };
        let path = match class {
            Ok(EntryClass::Dir) => continue,
            Ok(EntryClass::File(p)) => p,
            Err(e) => {
                reports.push(EntryReport {
                    path: String::from_utf8_lossy(&raw_path).into_owned(),
                    size,
                    status: EntryStatus::Refused(e.to_string()),
                });
                continue;
            }
        };
        let status = if !seen.insert(path.clone()) {
            EntryStatus::Refused("duplicate entry".into())
        } else if path == SIGNATURE_NAME {
            let read = read_small(&mut entry, &path, size, MAX_SIGNATURE_BYTES)
                .map_err(|e| Stream::classify(flags, *cap, *started, last, e))?;
            match read {
                Ok(sig) => {
                    signature_bytes = Some(sig);
                    EntryStatus::Ok
                }
                Err(e) => EntryStatus::Refused(e.to_string()),
            }
        } else if let Some(want) = expected.get(&path) {
            if size > limits.max_file_bytes {
                EntryStatus::Refused(format!(
                    "{size} bytes is over the file limit of {}",
                    limits.max_file_bytes
                ))
            } else {
                let mut sink = HashingWriter::new(io::sink());
                io::copy(&mut entry, &mut sink)
                    .map_err(|e| Stream::classify(flags, *cap, *started, last, e))?;
                let (_, actual) = sink.finish();
                if actual == *want {
                    EntryStatus::Ok
                } else {
                    EntryStatus::DigestMismatch {
                        expected: *want,
                        actual,
                    }
                }
            }
        } else {
            EntryStatus::Unlisted
        };
        reports.push(EntryReport {
            path: path.clone(),
            size,
            status,
        });
        *last = Some(path);
    }
    let Some((manifest, manifest_bytes, expected)) = head else {
        return Err(PackageError::NoManifest);
    };
    let signature = match &signature_bytes {
        None => SignatureStatus::Unsigned,
        Some(bytes) => match SignatureFile::parse(bytes) {
            Err(e) => SignatureStatus::Malformed(e.to_string()),
            Ok(sig) => SignatureStatus::Signed {
                fingerprint: signing::fingerprint(&sig.key),
                valid: sig
                    .key
                    .verify_strict(&manifest_bytes, &sig.signature)
                    .is_ok(),
            },
        },
    };
    let missing = expected
        .keys()
        .filter(|p| !seen.contains(*p))
        .cloned()
        .collect();
    Ok(Inspection {
        manifest,
        manifest_bytes,
        signature_bytes,
        signature,
        entries: reports,
        missing,
        total_bytes: total,
    })
}
