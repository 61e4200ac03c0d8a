//! Rendering untrusted text (names, descriptions, paths from a package; guest output; server
//! replies) for a terminal or a log.
//!
//! Printed raw, such text can drive the terminal: `ESC ] 0 ; … BEL` sets the window title,
//! `ESC [ 2 J` clears the screen, `\r` and newlines overwrite or fake lines (a forged verdict),
//! C1 codes (U+0080–U+009F) are escape sequences on some terminals, and bidi overrides reorder
//! what is shown. Every such character is shown as an escape instead: `\x1b` for C0 and DEL,
//! `\u{9b}` for the others. Everything else, including other non-ASCII text, is kept.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

/// True for the characters [`escape`] rewrites: C0 controls, DEL, C1 controls, the bidi
/// embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), and the Unicode line and
/// paragraph separators (U+2028, U+2029), which some terminals and viewers break lines at.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{2028}' | '\u{2029}')
}

/// `text` with every [`is_unsafe`] character, newlines and tabs included, written as an escape:
/// for one-line fields such as a package name, a path or a description.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_except(text, &[])
}

/// Like [`escape`] but keeps `\n` and `\t`: for multi-line text whose line structure matters,
/// such as an error report. Carriage returns and escape sequences are still escaped.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_except(text, &['\n', '\t'])
}

fn escape_except<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    let bad = |c: char| is_unsafe(c) && !keep.contains(&c);
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !bad(c) {
            out.push(c);
        } else if c.is_ascii() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

/// JSON text (as `serde_json` writes it) with DEL, C1 and bidi characters also written as
/// `\uXXXX` escapes. `serde_json` escapes only C0, so those would reach the terminal raw; they
/// can only occur inside JSON strings, where the escape means the same character.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    // serde_json escapes C0 controls inside strings already, so a newline,
    // tab or CR here is whitespace between tokens (pretty printing): kept.
    let unsafe_in_json = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\t' | '\r');
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer that passes text on line by line through [`escape_lines`], for output produced by
/// code that prints untrusted text itself (e.g. `wasmdm ctl`'s replies). A line is written when
/// its `\n` arrives; the rest on [`flush`](io::Write::flush) or drop. Invalid UTF-8 is replaced.
pub struct LineEscaper<W: io::Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: io::Write> LineEscaper<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        LineEscaper {
            inner,
            line: Vec::new(),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        let text = String::from_utf8_lossy(&self.line);
        self.inner.write_all(escape_lines(&text).as_bytes())?;
        self.line.clear();
        Ok(())
    }
}

impl<W: io::Write> io::Write for LineEscaper<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(chunk);
            if chunk.last() == Some(&b'\n') {
                self.emit()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.emit()?;
        }
        self.inner.flush()
    }
}

impl<W: io::Write> Drop for LineEscaper<W> {
    fn drop(&mut self) {
        let _ = io::Write::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HOSTILE: &str =
        "ok\x1b]0;pwned\x07\x1b[2J\rverdict can run\nline\t\u{9b}31m\u{202e}txt.exe\u{2069}\x7f";

    fn raw_controls(s: &str) -> Vec<char> {
        s.chars().filter(|c| is_unsafe(*c)).collect()
    }

    #[test]
    fn escape_leaves_no_control_and_keeps_text() {
        let out = escape(HOSTILE);
        assert!(raw_controls(&out).is_empty(), "{out:?}");
        assert_eq!(
            out,
            "ok\\x1b]0;pwned\\x07\\x1b[2J\\x0dverdict can run\\x0aline\\x09\\u{9b}31m\\u{202e}txt.exe\\u{2069}\\x7f"
        );
        assert!(matches!(escape("plain – naïve 名前"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_lines_keeps_newlines_and_tabs_only() {
        let out = escape_lines(HOSTILE);
        assert_eq!(raw_controls(&out), ['\n', '\t']);
        assert!(out.contains("\\x0dverdict"));
    }

    #[test]
    fn escaped_json_is_still_the_same_json() {
        let value = serde_json_like(HOSTILE);
        let out = escape_json(&value);
        assert!(raw_controls(&out).is_empty(), "{out:?}");
        assert!(out.contains("\\u009b") && out.contains("\\u202e") && out.contains("\\u007f"));
    }

    /// What serde_json makes of a string: C0 escaped, the rest raw (not a dependency here).
    fn serde_json_like(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            if c < ' ' {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn line_escaper_escapes_each_line_across_split_writes() {
        let mut out = Vec::new();
        {
            let mut w = LineEscaper::new(&mut out);
            let bytes = HOSTILE.as_bytes();
            // Split inside the two-byte C1 character too.
            let split = HOSTILE.find('\u{9b}').unwrap() + 1;
            w.write_all(&bytes[..split]).unwrap();
            w.write_all(&bytes[split..]).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, escape_lines(HOSTILE));
    }

    #[test]
    fn pretty_json_stays_json() {
        // As serde_json's pretty printer lays it out: a raw ESC can only be
        // one that reached it unescaped (U+001B is escaped by serde_json
        // itself; C1 and bidi characters are not).
        let pretty = "[\n  {\n    \"name\": \"a\u{9b}\u{202e}\"\n  }\n]";
        assert_eq!(
            escape_json(pretty),
            "[\n  {\n    \"name\": \"a\\u009b\\u202e\"\n  }\n]"
        );
    }
}
