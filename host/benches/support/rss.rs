//! The bench process's resident memory, from /proc/self/status (Linux):
//! the peak and the current figure, and a reset of the peak, so a bench can
//! report the peak of one step. Included by the benches with `#[path]`.
#![allow(dead_code)]

/// (VmHWM, VmRSS) in KiB.
pub fn rss_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmHWM:"), get("VmRSS:"))
}

/// Resets the peak RSS to the current RSS (Linux 4.0+: clear_refs 5).
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
