//! Regression test for hardening item 15: a small package whose GNU long-name or PAX header
//! claims hundreds of MiB must be refused from the header's size field, before the data is read,
//! with bounded memory. Before the cap, `tar` buffered the header's data whole: a 522 KB package
//! cost ~340 MB in `inspect`, `install` and the device's verification.
//!
//! Its own test binary, because it counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};
use wasmdm_package::{Digest, ErrorKind, Limits, MAX_EXTENSION_HEADER_BYTES, PackageError};

/// The system allocator, keeping the live byte count and its high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What the hostile header claims: as in the report, far over the 256 MiB package total.
const CLAIMED: u64 = 300 << 20;

const APP: &[u8] = b"\0asm";

/// A valid manifest listing `app.wasm`, so that only the extension header is wrong.
fn manifest() -> String {
    format!(
        r#"manifest-version = 1
[package]
name = "demo"
version = "1.0.0"
[[component]]
id = "app"
file = "app.wasm"
sha256 = "{}"
world = "wasmdm:device/app"
"#,
        Digest::of(APP)
    )
}

fn header(name: &str, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h
}

/// The hostile package as a stream: manifest, then an extension header of `kind` claiming
/// [`CLAIMED`] bytes with all of them present (zeros), then a file; produced lazily so the test
/// itself holds none of it.
fn hostile_tar(kind: EntryType) -> impl Read {
    let manifest = manifest();
    let mut head = Vec::new();
    head.extend_from_slice(
        header("manifest.toml", EntryType::Regular, manifest.len() as u64).as_bytes(),
    );
    head.extend_from_slice(manifest.as_bytes());
    head.resize(head.len().next_multiple_of(512), 0);
    head.extend_from_slice(header("././@LongLink", kind, CLAIMED).as_bytes());
    let mut tail = header("app.wasm", EntryType::Regular, APP.len() as u64)
        .as_bytes()
        .to_vec();
    tail.extend_from_slice(APP);
    tail.resize(512 * 2 + 1024, 0);
    io::Cursor::new(head)
        .chain(io::repeat(0).take(CLAIMED))
        .chain(io::Cursor::new(tail))
}

/// Counts the bytes the package reader consumed.
struct Consumed<R> {
    inner: R,
    bytes: &'static AtomicU64,
}

impl<R: Read> Read for Consumed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

static CONSUMED: AtomicU64 = AtomicU64::new(0);

/// Runs `read` over `input` and returns its error, the peak extra memory and the bytes consumed.
fn measure(
    input: impl Read,
    read: impl FnOnce(Consumed<Box<dyn Read + '_>>) -> Result<(), PackageError>,
) -> (PackageError, usize, u64, Duration) {
    CONSUMED.store(0, Ordering::SeqCst);
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let start = Instant::now();
    let result = read(Consumed {
        inner: Box::new(input),
        bytes: &CONSUMED,
    });
    let elapsed = start.elapsed();
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    let e = result.expect_err("hostile package accepted");
    (e, peak, CONSUMED.load(Ordering::SeqCst), elapsed)
}

fn gzip(mut input: impl Read) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    io::copy(&mut input, &mut gz).unwrap();
    gz.finish().unwrap()
}

/// One test: allocations are counted process-wide, so nothing may run beside it.
#[test]
fn oversized_extension_headers_are_refused_unread_with_bounded_memory() {
    let limits = Limits::default();
    let staging = tempfile::tempdir().unwrap();
    // The compressed package of the report: a few hundred KB on the wire.
    let gz = gzip(hostile_tar(EntryType::GNULongName));
    assert!(gz.len() < 600 << 10, "package is {} bytes", gz.len());

    let mut cases: Vec<(&str, Box<dyn Read>)> = Vec::new();
    cases.push(("gzip long name", Box::new(io::Cursor::new(gz))));
    for kind in [
        EntryType::GNULongName,
        EntryType::GNULongLink,
        EntryType::XHeader,
    ] {
        cases.push(("plain tar", Box::new(hostile_tar(kind))));
    }
    for (what, input) in cases {
        let (e, peak, consumed, elapsed) = measure(input, |r| {
            wasmdm_package::unpack(r, staging.path(), &limits, &[]).map(|_| ())
        });
        check(what, "unpack", &e, peak, consumed, elapsed);
    }
    for kind in [EntryType::GNULongName, EntryType::XHeader] {
        let (e, peak, consumed, elapsed) = measure(hostile_tar(kind), |r| {
            wasmdm_package::read_manifest(r, &limits).map(|_| ())
        });
        check("plain tar", "read_manifest", &e, peak, consumed, elapsed);
    }
}

fn check(what: &str, call: &str, e: &PackageError, peak: usize, consumed: u64, took: Duration) {
    println!("{what} / {call}: {e}; peak {peak} B, consumed {consumed} B, {took:?}");
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{what} / {call}: {e}");
    assert!(
        matches!(e, PackageError::HeaderTooLarge { size: CLAIMED, limit, .. }
            if *limit == MAX_EXTENSION_HEADER_BYTES),
        "{what} / {call}: {e:?}"
    );
    // Refused from the header: at most the reader's buffers beyond it were pulled in, and the
    // memory is the decoder's and the parser's state, not the claimed data.
    assert!(
        consumed < 256 << 10,
        "{what} / {call}: consumed {consumed} bytes"
    );
    assert!(peak < 1 << 20, "{what} / {call}: peak {peak} bytes");
    assert!(
        took < Duration::from_secs(5),
        "{what} / {call}: took {took:?}"
    );
}
