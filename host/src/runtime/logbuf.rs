//! Bounded per-component log: guest stdout/stderr and `wasmdm:device/log` lines in a
//! ring buffer capped in bytes (the manifest's log cap), also mirrored to `tracing`
//! and, on a device, to two rotating files of half the cap each, so `wasmdm logs`
//! can read them from another process and they survive a restart.
//!
//! Guest text is hostile: every line is cut to [`MAX_LINE_BYTES`] before it is
//! kept or escaped (the rest of a longer line is discarded as it arrives, never
//! buffered), control characters and newlines are escaped
//! ([`wasmdm_package::display::escape`]) so a guest cannot forge a line of the
//! device's log or drive a terminal, and two token buckets per component bound
//! the volume: one for the component log (ring and files), one for the host's
//! own log (`tracing`). What a bucket refuses is counted and reported as one
//! "dropped N bytes / M lines" line once output is admitted again, and at exit.

use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogSource {
    /// Guest stdout.
    Stdout,
    /// Guest stderr.
    Stderr,
    /// `wasmdm:device/log` at trace level.
    Trace,
    /// ... debug level.
    Debug,
    /// ... info level.
    Info,
    /// ... warn level.
    Warn,
    /// ... error level.
    Error,
    /// The runtime itself (start, exit, restart).
    Host,
}

/// One line of a component's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Monotonic sequence number per component (gaps = lines dropped by the cap).
    pub seq: u64,
    /// Wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Origin.
    pub source: LogSource,
    /// The text, without the newline.
    pub text: String,
}

/// Longest line kept, in bytes after escaping (also at most a quarter of the
/// log cap, so a line always fits a rotated file). The rest of a longer line
/// is discarded as it arrives and the line ends in "… [N bytes cut]".
pub const MAX_LINE_BYTES: usize = 4096;

/// What one line costs beyond its text, in the ring's byte count and in the
/// rate limits: an empty line is not free (its `LogLine` alone is ~80 bytes of
/// host memory, and a host log line carries a timestamp and fields).
pub const LINE_OVERHEAD_BYTES: usize = 64;

/// Host log (`tracing`) budget per component: a burst of this many bytes ...
pub const HOST_LOG_BURST_BYTES: u64 = 16 << 10;
/// ... refilled at this rate. Beyond it guest lines are dropped from the host
/// log (they may still be in the component log) and summarised.
pub const HOST_LOG_BYTES_PER_SEC: u64 = 1 << 10;

/// Component log (ring and files) budget: a burst of the log cap (at least
/// this) ...
pub const COMPONENT_LOG_MIN_BURST_BYTES: u64 = 16 << 10;
/// ... refilled at this rate; bounds the flash writes of a chatty guest.
pub const COMPONENT_LOG_BYTES_PER_SEC: u64 = 4 << 10;

/// A token bucket: admits `cost` bytes while it holds that many tokens.
#[derive(Debug)]
struct Bucket {
    tokens: u64,
    burst: u64,
    per_sec: u64,
    last: Instant,
}

impl Bucket {
    fn new(burst: u64, per_sec: u64) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            per_sec,
            last: Instant::now(),
        }
    }

    fn admit(&mut self, now: Instant, cost: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let refill = elapsed.as_millis().saturating_mul(u128::from(self.per_sec)) / 1000;
        if refill > 0 {
            let refill = u64::try_from(refill).unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(refill).min(self.burst);
            self.last = now;
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// Output a bucket refused since the last summary.
#[derive(Debug, Default)]
struct Dropped {
    bytes: u64,
    lines: u64,
}

impl Dropped {
    fn add(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.lines = self.lines.saturating_add(1);
    }

    /// The summary line, once, if anything was dropped.
    fn take_summary(&mut self, what: &str) -> Option<String> {
        let d = std::mem::take(self);
        (d.lines > 0).then(|| {
            format!(
                "dropped {} bytes / {} lines of output ({what} rate limit)",
                d.bytes, d.lines
            )
        })
    }
}

/// The unfinished line of one stream: at most the line limit is kept.
#[derive(Debug, Default)]
struct Partial {
    buf: Vec<u8>,
    /// Bytes of this line discarded beyond the limit.
    cut: u64,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    cap: usize,
    /// Longest line kept (see [`MAX_LINE_BYTES`]).
    max_line: usize,
    next_seq: u64,
    partial_out: Partial,
    partial_err: Partial,
    echo: bool,
    label: String,
    file: Option<LogFile>,
    host_budget: Bucket,
    host_dropped: Dropped,
    comp_budget: Bucket,
    comp_dropped: Dropped,
}

/// `<name>.log` plus the previous `<name>.log.1`; each at most half the cap.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    half_cap: u64,
}

impl LogFile {
    /// The file is opened at the first line, not here: an installed
    /// component that never logs holds no descriptor (issue 15: one per
    /// installed component was 1000 descriptors for 1000 packages).
    fn open(path: PathBuf, cap: u64) -> LogFile {
        let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        LogFile {
            path,
            file: None,
            written,
            half_cap: (cap / 2).max(1024),
        }
    }

    fn reopen(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
    }

    /// Best effort: a full disk must not stop the app, so errors drop the line.
    fn append(&mut self, line: &str) {
        if self.written + line.len() as u64 > self.half_cap {
            let _ = std::fs::rename(&self.path, rotated(&self.path));
            self.written = 0;
            self.reopen();
        }
        if self.file.is_none() {
            self.reopen();
        }
        if let Some(f) = self.file.as_mut()
            && f.write_all(line.as_bytes()).is_ok()
        {
            self.written += line.len() as u64;
        }
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Reads a component's log files (older file first) as written by a device,
/// without opening the runtime: `wasmdm logs` works while a device runs.
pub fn read_log_file(path: &Path) -> Vec<String> {
    [rotated(path), path.to_path_buf()]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flat_map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Shared handle to one component's log (cheap clone).
#[derive(Debug, Clone)]
pub struct LogBuffer(Arc<Mutex<Ring>>);

impl LogBuffer {
    /// A log keeping at most `cap` bytes of text; `echo` also prints lines to the
    /// host's stdout (for `wasmdm run`).
    pub fn new(label: &str, cap: u64, echo: bool) -> LogBuffer {
        let cap_usize = usize::try_from(cap).unwrap_or(usize::MAX);
        LogBuffer(Arc::new(Mutex::new(Ring {
            lines: VecDeque::new(),
            bytes: 0,
            cap: cap_usize,
            max_line: (cap_usize / 4).clamp(16, MAX_LINE_BYTES),
            next_seq: 0,
            partial_out: Partial::default(),
            partial_err: Partial::default(),
            echo,
            label: label.to_string(),
            file: None,
            host_budget: Bucket::new(HOST_LOG_BURST_BYTES, HOST_LOG_BYTES_PER_SEC),
            host_dropped: Dropped::default(),
            comp_budget: Bucket::new(
                cap.max(COMPONENT_LOG_MIN_BURST_BYTES),
                COMPONENT_LOG_BYTES_PER_SEC,
            ),
            comp_dropped: Dropped::default(),
        })))
    }

    /// Also appends every line to `path` (rotated at half the cap).
    pub fn with_file(self, path: PathBuf) -> LogBuffer {
        {
            let mut ring = self.lock();
            let cap = u64::try_from(ring.cap).unwrap_or(u64::MAX);
            ring.file = Some(LogFile::open(path, cap));
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A poisoned log is still a log: keep going with its data.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one complete line (cut, escaped and rate-limited).
    pub fn push(&self, source: LogSource, text: &str) {
        self.lock().push(source, text.as_bytes(), 0);
    }

    /// Feeds raw stream bytes; complete lines are recorded. Only the first
    /// `max_line` bytes of a line are buffered; the rest is counted and dropped.
    pub fn write_stream(&self, source: LogSource, bytes: &[u8]) {
        let mut r = self.lock();
        let max_line = r.max_line;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, done, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (
                    rest.get(..i).unwrap_or_default(),
                    true,
                    rest.get(i + 1..).unwrap_or_default(),
                ),
                None => (rest, false, &[][..]),
            };
            let partial = r.partial(source);
            let room = max_line.saturating_sub(partial.buf.len());
            let keep = chunk.get(..room.min(chunk.len())).unwrap_or_default();
            partial.buf.extend_from_slice(keep);
            partial.cut = partial
                .cut
                .saturating_add((chunk.len() - keep.len()) as u64);
            if done {
                let Partial { mut buf, cut } = std::mem::take(partial);
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                r.push(source, &buf, cut);
            }
            rest = next;
        }
    }

    /// Flushes partial lines and reports what the rate limits dropped (at
    /// instance exit).
    pub fn flush(&self) {
        let mut r = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let Partial { buf, cut } = std::mem::take(r.partial(source));
            if !buf.is_empty() || cut > 0 {
                r.push(source, &buf, cut);
            }
        }
        r.summarise();
    }

    /// Copy of the retained lines, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }
}

impl Ring {
    fn partial(&mut self, source: LogSource) -> &mut Partial {
        if source == LogSource::Stderr {
            &mut self.partial_err
        } else {
            &mut self.partial_out
        }
    }

    /// The line as it is kept and shown: at most `max_line` bytes of the raw
    /// text are looked at, decoded lossily, escaped, cut again to `max_line`
    /// (escapes lengthen it), and marked with how much was cut.
    fn clean(&self, raw: &[u8], cut: u64) -> String {
        let head = raw.get(..self.max_line.min(raw.len())).unwrap_or(raw);
        let mut cut = cut.saturating_add((raw.len() - head.len()) as u64);
        let decoded = String::from_utf8_lossy(head);
        let mut text = wasmdm_package::display::escape(&decoded).into_owned();
        if text.len() > self.max_line {
            let mut end = self.max_line;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            cut = cut.saturating_add((text.len() - end) as u64);
            text.truncate(end);
        }
        if cut > 0 {
            text.push_str(&format!(" … [{cut} bytes cut]"));
        }
        text
    }

    /// Records one line: the host's own lines always; guest lines when the
    /// bucket of each destination admits them, else counted for the summary.
    fn push(&mut self, source: LogSource, raw: &[u8], cut: u64) {
        let now = Instant::now();
        let text = self.clean(raw, cut);
        let raw_len = (raw.len() as u64).saturating_add(cut);
        let cost = (text.len() + LINE_OVERHEAD_BYTES) as u64;
        let guest = source != LogSource::Host;
        if !guest || self.host_budget.admit(now, cost) {
            if let Some(summary) = self.host_dropped.take_summary("host log") {
                tracing::warn!(component = %self.label, "{summary}");
            }
            match source {
                LogSource::Error | LogSource::Stderr => {
                    tracing::warn!(component = %self.label, ?source, "{text}")
                }
                _ => tracing::info!(component = %self.label, ?source, "{text}"),
            }
        } else {
            self.host_dropped.add(raw_len);
        }
        // A foreground run shows the guest's own output on the matching
        // stream (escaped and cut like the log, but not rate-limited: it is
        // the developer's terminal, not the device's storage); the host's
        // lines stay in the log (and tracing).
        if self.echo {
            match source {
                LogSource::Host => {}
                LogSource::Stderr => eprintln!("{text}"),
                _ => println!("{text}"),
            }
        }
        if !guest || self.comp_budget.admit(now, cost) {
            if let Some(summary) = self.comp_dropped.take_summary("component log") {
                self.record(LogSource::Host, summary);
            }
            self.record(source, text);
        } else {
            self.comp_dropped.add(raw_len);
        }
    }

    /// Writes the pending "dropped" summaries now, whatever the budgets say.
    fn summarise(&mut self) {
        if let Some(summary) = self.host_dropped.take_summary("host log") {
            tracing::warn!(component = %self.label, "{summary}");
        }
        if let Some(summary) = self.comp_dropped.take_summary("component log") {
            self.record(LogSource::Host, summary);
        }
    }

    /// Appends an already clean line to the file and the ring.
    fn record(&mut self, source: LogSource, text: String) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        if let Some(file) = self.file.as_mut() {
            file.append(&format!("{unix_ms} {source:?} {text}\n"));
        }
        self.bytes += text.len() + LINE_OVERHEAD_BYTES;
        self.lines.push_back(LogLine {
            seq: self.next_seq,
            unix_ms,
            source,
            text,
        });
        self.next_seq += 1;
        // The newest line stays even when it alone exceeds a tiny cap.
        while self.bytes > self.cap && self.lines.len() > 1 {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len() + LINE_OVERHEAD_BYTES,
                None => break,
            }
        }
    }
}

/// A WASI stdout/stderr that writes into a [`LogBuffer`].
#[derive(Debug, Clone)]
pub struct LogSink {
    buf: LogBuffer,
    source: LogSource,
}

impl LogSink {
    /// A sink for `source` (Stdout or Stderr).
    pub fn new(buf: LogBuffer, source: LogSource) -> LogSink {
        LogSink { buf, source }
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.buf.write_stream(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_log_rotates_within_the_cap_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let b = LogBuffer::new("t", 4096, false).with_file(path.clone());
        // 200 lines: several rotations, within the component log's burst.
        for i in 0..200 {
            b.push(LogSource::Stdout, &format!("line {i}"));
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(
            size(&path) + size(&rotated(&path)) <= 4096,
            "disk use bounded by the cap"
        );
        let lines = read_log_file(&path);
        assert!(
            lines.last().unwrap().ends_with("Stdout line 199"),
            "{:?}",
            lines.last()
        );
        let first: usize = lines[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(first > 0, "old lines rotated away");
        // A reopened log (host restart) keeps appending after what is there.
        drop(b);
        let b = LogBuffer::new("t", 4096, false).with_file(path.clone());
        b.push(LogSource::Host, "after restart");
        assert!(
            read_log_file(&path)
                .last()
                .unwrap()
                .ends_with("Host after restart")
        );
    }

    #[test]
    fn splits_lines_and_caps_bytes() {
        // Room for two 3-byte lines and their overhead, not three.
        let b = LogBuffer::new("t", 2 * LINE_OVERHEAD_BYTES as u64 + 10, false);
        b.write_stream(LogSource::Stdout, b"abc\nde");
        b.write_stream(LogSource::Stdout, b"f\n");
        let l = b.lines();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "abc");
        assert_eq!(l[1].text, "def");
        b.push(LogSource::Host, "123456");
        let l = b.lines();
        // 3 + 3 + 6 bytes (+ overhead) > the cap: the oldest line goes.
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "def");
        assert_eq!(l[1].seq, 2);
    }

    #[test]
    fn long_lines_are_cut_as_they_arrive() {
        let b = LogBuffer::new("t", 1 << 20, false);
        b.write_stream(LogSource::Stdout, &vec![b'x'; MAX_LINE_BYTES * 2 + 5]);
        b.write_stream(LogSource::Stdout, &vec![b'x'; MAX_LINE_BYTES]);
        assert!(b.lines().is_empty());
        assert!(
            b.lock().partial_out.buf.len() <= MAX_LINE_BYTES,
            "only the head is buffered"
        );
        b.flush();
        let l = b.lines();
        assert_eq!(l.len(), 1);
        let cut = MAX_LINE_BYTES * 2 + 5;
        assert_eq!(
            l[0].text,
            format!("{} … [{cut} bytes cut]", "x".repeat(MAX_LINE_BYTES))
        );
        // One `log` call: the same cut.
        b.push(LogSource::Info, &"z".repeat(8 << 20));
        let last = b.lines().pop().unwrap();
        assert!(last.text.len() < MAX_LINE_BYTES + 64, "{}", last.text.len());
    }

    #[test]
    fn newlines_and_controls_are_escaped() {
        let b = LogBuffer::new("t", 1 << 20, false);
        b.push(LogSource::Warn, "a\nFAKE host line\x1b[2J");
        b.write_stream(LogSource::Stdout, b"b\rc\x07\r\n");
        let l = b.lines();
        assert_eq!(l[0].text, "a\\x0aFAKE host line\\x1b[2J");
        assert_eq!(l[1].text, "b\\x0dc\\x07");
    }

    #[test]
    fn bucket_admits_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(100, 10);
        bucket.last = t0;
        assert!(bucket.admit(t0, 60));
        assert!(!bucket.admit(t0, 60));
        assert!(bucket.admit(t0 + std::time::Duration::from_secs(2), 60));
        // Refill never exceeds the burst.
        assert!(bucket.admit(t0 + std::time::Duration::from_secs(1000), 100));
        assert!(!bucket.admit(t0 + std::time::Duration::from_secs(1000), 1));
    }

    #[test]
    fn a_flood_is_cut_off_and_summarised() {
        // Empty lines are not free: 100,000 of them do not fit a 64 KiB log.
        let empty = LogBuffer::new("t", 64 << 10, false);
        for _ in 0..100_000 {
            empty.write_stream(LogSource::Stdout, b"\n");
        }
        empty.flush();
        let l = empty.lines();
        assert!(l.len() <= (64 << 10) / LINE_OVERHEAD_BYTES, "{}", l.len());
        let summary = &l.last().unwrap().text;
        assert!(
            summary.starts_with("dropped ") && summary.contains(" lines of output"),
            "{summary}"
        );
    }
}
