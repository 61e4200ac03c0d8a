//! Byte sizes as written in manifests: an integer number of bytes or a string like `"64MiB"`.

use serde::{Deserialize, Serialize};

/// A size as it appears in TOML, before resolution to bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    /// Plain integer: bytes.
    Bytes(u64),
    /// Number with an optional binary unit (`B`, `KiB`, `MiB`, `GiB`).
    Text(String),
}

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Parses `"64MiB"`, `"64 MiB"`, `"1024"` or `"10B"` into bytes; decimal units (MB) are refused
/// on purpose because they are ambiguous.
pub(crate) fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size (use e.g. \"64MiB\" or an integer of bytes)"
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: number too large"))?;
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| format!("{text:?}: unknown unit {unit:?} (use B, KiB, MiB or GiB)"))?
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?}: size overflows"))
}

/// Renders bytes in the largest unit that represents them exactly, so `to_toml` stays readable.
pub(crate) fn render_size(bytes: u64) -> RawSize {
    for (name, mult) in UNITS {
        if mult > 1 && bytes >= mult && bytes.is_multiple_of(mult) {
            return RawSize::Text(format!("{}{name}", bytes / mult));
        }
    }
    RawSize::Bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> RawSize {
        RawSize::Text(s.to_string())
    }

    #[test]
    fn parses_units_and_integers() {
        assert_eq!(parse_size(&text("64MiB")), Ok(64 << 20));
        assert_eq!(parse_size(&text("64 MiB")), Ok(64 << 20));
        assert_eq!(parse_size(&text("4GiB")), Ok(4 << 30));
        assert_eq!(parse_size(&text("3KiB")), Ok(3072));
        assert_eq!(parse_size(&text("10B")), Ok(10));
        assert_eq!(parse_size(&text("1024")), Ok(1024));
        assert_eq!(parse_size(&RawSize::Bytes(77)), Ok(77));
    }

    #[test]
    fn refuses_bad_units_and_overflow() {
        assert!(
            parse_size(&text("64MB"))
                .unwrap_err()
                .contains("unknown unit \"MB\"")
        );
        assert!(parse_size(&text("MiB")).is_err());
        assert!(parse_size(&text("-1MiB")).is_err());
        assert!(parse_size(&text("1.5MiB")).is_err());
        assert!(parse_size(&text("99999999999999999999GiB")).is_err());
        assert!(parse_size(&text("18446744073709551615GiB")).is_err());
    }

    #[test]
    fn renders_exact_units() {
        assert_eq!(render_size(64 << 20), text("64MiB"));
        assert_eq!(render_size(3072), text("3KiB"));
        assert_eq!(render_size(1536), RawSize::Bytes(1536));
        assert_eq!(render_size(0), RawSize::Bytes(0));
        assert_eq!(render_size(4 << 30), text("4GiB"));
    }
}
