//! Bounded per-component log: guest stdout/stderr and `wasmdm:device/log` lines in a
//! ring buffer capped in bytes (the manifest's log cap), also mirrored to `tracing`
//! and, on a device, to two rotating files of half the cap each, so `wasmdm logs`
//! can read them from another process and they survive a restart.

use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A partial line longer than this is emitted as a line anyway, so a guest
/// writing without newlines cannot grow host memory.
const MAX_PARTIAL: usize = 4096;

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    cap: usize,
    next_seq: u64,
    partial_out: Vec<u8>,
    partial_err: Vec<u8>,
    echo: bool,
    label: String,
    file: Option<LogFile>,
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
    fn open(path: PathBuf, cap: u64) -> LogFile {
        let written = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut f = LogFile {
            path,
            file: None,
            written,
            half_cap: (cap / 2).max(1024),
        };
        f.reopen();
        f
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
        LogBuffer(Arc::new(Mutex::new(Ring {
            lines: VecDeque::new(),
            bytes: 0,
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            next_seq: 0,
            partial_out: Vec::new(),
            partial_err: Vec::new(),
            echo,
            label: label.to_string(),
            file: None,
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

    /// Appends one complete line.
    pub fn push(&self, source: LogSource, text: &str) {
        self.lock().push(source, text);
    }

    /// Feeds raw stream bytes; complete lines are recorded.
    pub fn write_stream(&self, source: LogSource, bytes: &[u8]) {
        let mut r = self.lock();
        let mut rest = bytes;
        while !rest.is_empty() {
            let partial_len = if source == LogSource::Stderr {
                r.partial_err.len()
            } else {
                r.partial_out.len()
            };
            let room = MAX_PARTIAL.saturating_sub(partial_len).max(1);
            let window = rest.get(..room.min(rest.len())).unwrap_or(rest);
            let nl = window.iter().position(|b| *b == b'\n');
            let (chunk, done, next) = match nl {
                Some(i) => (
                    rest.get(..i).unwrap_or_default(),
                    true,
                    rest.get(i + 1..).unwrap_or_default(),
                ),
                None => (window, false, rest.get(window.len()..).unwrap_or_default()),
            };
            let partial = if source == LogSource::Stderr {
                &mut r.partial_err
            } else {
                &mut r.partial_out
            };
            partial.extend_from_slice(chunk);
            if done || partial.len() >= MAX_PARTIAL {
                let line = String::from_utf8_lossy(partial).into_owned();
                partial.clear();
                r.push(source, line.trim_end_matches('\r'));
            }
            rest = next;
        }
    }

    /// Flushes partial lines (at instance exit).
    pub fn flush(&self) {
        let mut r = self.lock();
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let partial = if source == LogSource::Stderr {
                std::mem::take(&mut r.partial_err)
            } else {
                std::mem::take(&mut r.partial_out)
            };
            if !partial.is_empty() {
                let line = String::from_utf8_lossy(&partial).into_owned();
                r.push(source, &line);
            }
        }
    }

    /// Copy of the retained lines, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }
}

impl Ring {
    fn push(&mut self, source: LogSource, text: &str) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        match source {
            LogSource::Error | LogSource::Stderr => {
                tracing::warn!(component = %self.label, ?source, "{text}")
            }
            _ => tracing::info!(component = %self.label, ?source, "{text}"),
        }
        // A foreground run shows the guest's own output on the matching
        // stream; the host's lines stay in the log (and tracing).
        if self.echo {
            match source {
                LogSource::Host => {}
                LogSource::Stderr => eprintln!("{text}"),
                _ => println!("{text}"),
            }
        }
        if let Some(file) = self.file.as_mut() {
            file.append(&format!("{unix_ms} {source:?} {text}\n"));
        }
        let mut text = text.to_string();
        if text.len() > self.cap {
            let mut end = self.cap;
            while end > 0 && !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        self.bytes += text.len();
        self.lines.push_back(LogLine {
            seq: self.next_seq,
            unix_ms,
            source,
            text,
        });
        self.next_seq += 1;
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len(),
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
        for i in 0..400 {
            b.push(LogSource::Stdout, &format!("line {i}"));
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(
            size(&path) + size(&rotated(&path)) <= 4096,
            "disk use bounded by the cap"
        );
        let lines = read_log_file(&path);
        assert!(
            lines.last().unwrap().ends_with("Stdout line 399"),
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
        let b = LogBuffer::new("t", 10, false);
        b.write_stream(LogSource::Stdout, b"abc\nde");
        b.write_stream(LogSource::Stdout, b"f\n");
        let l = b.lines();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "abc");
        assert_eq!(l[1].text, "def");
        b.push(LogSource::Host, "123456");
        let l = b.lines();
        // 3 + 3 + 6 = 12 > 10: the oldest line goes.
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "def");
        assert_eq!(l[1].seq, 2);
    }

    #[test]
    fn long_partial_lines_are_bounded() {
        let b = LogBuffer::new("t", 1 << 20, false);
        b.write_stream(LogSource::Stdout, &vec![b'x'; MAX_PARTIAL * 2 + 5]);
        assert_eq!(b.lines().len(), 2);
        b.flush();
        assert_eq!(b.lines().len(), 3);
    }
}
