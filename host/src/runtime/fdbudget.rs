//! The process's file descriptors, shared out between instances before they
//! start, so guests together can never take the descriptors the host needs for
//! its own work (sockets, installs, state files).
//!
//! Each instance's WASI resource table is capped (`max-descriptors` ×
//! [`RESOURCES_PER_DESCRIPTOR`](super::datafs::RESOURCES_PER_DESCRIPTOR)
//! entries, and every host descriptor a guest holds is one entry), and that
//! many descriptors are taken from this budget when it starts and given back
//! when it ends. An instance whose share is not left fails to start, with the
//! numbers. Before, one guest opened ~20,000 files and the device's installs
//! then failed with "Too many open files".
//!
//! The same ledger counts running instances against `max-instances`: the
//! baseline (Winch) and optimised (Cranelift) engines each have a pool of that
//! many slots, so the pools alone would let twice as many run.

use std::sync::{Arc, Mutex};

/// Descriptors kept for the host itself: the LwM2M/DTLS sockets, downloads,
/// installs (a package's files, its compiler's threads), state files, logs.
pub const HOST_RESERVED_DESCRIPTORS: u64 = 512;

/// Descriptors left for guests, taken per instance.
pub type DescriptorBudget = Budget;

/// A number of things (descriptors, instance slots) shared out whole, and
/// given back when the share is dropped.
#[derive(Debug)]
pub struct Budget {
    total: u64,
    free: Mutex<u64>,
    /// What is counted, for the refusal ("file descriptors").
    unit: &'static str,
    /// What an operator can do about a refusal.
    hint: &'static str,
}

/// One instance's share; given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<Budget>,
    n: u64,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut free = self.budget.free.lock().unwrap_or_else(|p| p.into_inner());
        *free = free.saturating_add(self.n).min(self.budget.total);
    }
}

impl Budget {
    /// The budget under this process's descriptor limit, after raising the
    /// soft limit to the hard one (as servers commonly do: the soft default
    /// of 1024 is a compatibility setting for `select`, which wasmdm does not
    /// use), minus [`HOST_RESERVED_DESCRIPTORS`].
    pub fn for_this_process() -> Arc<Budget> {
        let limit = raise_descriptor_limit();
        Self::with_total(limit.saturating_sub(HOST_RESERVED_DESCRIPTORS))
    }

    /// A budget of `total` descriptors.
    pub fn with_total(total: u64) -> Arc<Budget> {
        Arc::new(Budget {
            total,
            free: Mutex::new(total),
            unit: "file descriptors",
            hint: "lower their max-descriptors or raise the process's limit",
        })
    }

    /// `max` instances running at once.
    pub fn instance_slots(max: u32) -> Arc<Budget> {
        let total = u64::from(max.max(1));
        Arc::new(Budget {
            total,
            free: Mutex::new(total),
            unit: "instance slots",
            hint: "stop one or raise the device's max-instances",
        })
    }

    /// Takes `n`, or says how many are left.
    pub fn take(self: &Arc<Self>, n: u64) -> Result<Share, String> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if *free < n {
            return Err(format!(
                "not enough {} left for its share: it needs {n}, {} of the {} kept \
                 for guests are free (the rest are held by running components; {})",
                self.unit, *free, self.total, self.hint
            ));
        }
        *free -= n;
        Ok(Share {
            budget: Arc::clone(self),
            n,
        })
    }

    /// Descriptors free now.
    #[cfg(test)]
    pub fn free(&self) -> u64 {
        *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit; the soft limit after.
fn raise_descriptor_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // RLIM_INFINITY and other huge values: far more than any share needs.
    // (`rlim_t` is 32 bits on some 32-bit ARM targets.)
    #[allow(clippy::unnecessary_cast)]
    let soft = lim.rlim_cur as u64;
    soft.min(1 << 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_taken_whole_and_given_back() {
        let b = DescriptorBudget::with_total(1000);
        let a = b.take(600).unwrap();
        let e = b.take(600).unwrap_err();
        assert!(e.contains("needs 600, 400 of the 1000"), "{e}");
        let c = b.take(400).unwrap();
        assert_eq!(b.free(), 0);
        drop(a);
        assert_eq!(b.free(), 600);
        drop(c);
        assert_eq!(b.free(), 1000);
    }

    #[test]
    fn instance_slots_count_running_instances() {
        let b = Budget::instance_slots(2);
        let (x, _y) = (b.take(1).unwrap(), b.take(1).unwrap());
        let e = b.take(1).unwrap_err();
        assert!(e.contains("not enough instance slots"), "{e}");
        assert!(e.contains("max-instances"), "{e}");
        drop(x);
        assert!(b.take(1).is_ok());
    }

    #[test]
    fn the_process_budget_keeps_the_host_reserve() {
        let b = DescriptorBudget::for_this_process();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max, "soft limit raised");
        #[allow(clippy::unnecessary_cast)]
        let soft = lim.rlim_cur as u64;
        assert!(b.total + HOST_RESERVED_DESCRIPTORS <= soft);
    }
}
