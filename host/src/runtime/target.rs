//! Which code the runtime makes on this machine (issue 15).
//!
//! Cranelift (and Winch) emit native code for x86_64, aarch64, riscv64 and
//! s390x. Cranelift has no 32-bit ARM backend, so on armv7 (32-bit Raspberry
//! Pi OS, most armv7 boards) components are compiled by Cranelift to Pulley
//! bytecode and run by wasmtime's Pulley interpreter. The sandbox is the
//! same either way: epoch interruption is compiled into the code, the memory
//! cap is the store's limiter, and Pulley checks every memory access
//! explicitly instead of relying on guard pages.
//!
//! `WASMDM_CODE_TARGET=pulley` in the environment forces Pulley on a host
//! that has a native compiler too: the one code path of armv7, reachable by
//! native tests (`host/tests/runtime_pulley.rs`) and comparable with
//! Cranelift on the same machine (`scripts/bench-arm.sh`). `native` or unset
//! means the build's own target. Read once per process.

use super::compile::Tier;
use std::sync::{Once, OnceLock};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The environment variable that chooses the code target (`pulley` or
/// `native`); see the module docs.
pub const CODE_TARGET_ENV: &str = "WASMDM_CODE_TARGET";

/// What the engine compiles to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeTarget {
    /// Native code for this CPU.
    Native,
    /// Pulley bytecode, run by wasmtime's interpreter.
    Pulley,
}

impl CodeTarget {
    /// What this process's engines compile to: [`CodeTarget::build_default`],
    /// or Pulley when `WASMDM_CODE_TARGET=pulley` (read on the first call; an
    /// unknown value is logged and ignored). Engine info and `wasmdm inspect`
    /// report this, so what a device says matches the code it accepts.
    pub fn host() -> CodeTarget {
        static CHOSEN: OnceLock<CodeTarget> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let value = std::env::var(CODE_TARGET_ENV).unwrap_or_default();
            CodeTarget::from_setting(&value).unwrap_or_else(|| {
                tracing::warn!(
                    "{CODE_TARGET_ENV}={value:?} is neither `pulley` nor `native`: ignored"
                );
                CodeTarget::build_default()
            })
        })
    }

    /// The target a `WASMDM_CODE_TARGET` value asks for: `pulley`, or
    /// `native`/empty for the build's own (which is Pulley where there is no
    /// native compiler), case-insensitive; `None` for anything else.
    pub fn from_setting(value: &str) -> Option<CodeTarget> {
        match value.trim().to_ascii_lowercase().as_str() {
            "pulley" => Some(CodeTarget::Pulley),
            "" | "native" => Some(CodeTarget::build_default()),
            _ => None,
        }
    }

    /// This build's target: Pulley where wasmtime has no native compiler.
    /// (wasmtime's build script enables its `pulley` feature on exactly those
    /// architectures; the workspace enables it everywhere, so Pulley can also
    /// be forced where this says Native.)
    pub const fn build_default() -> CodeTarget {
        if cfg!(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "s390x"
        )) {
            CodeTarget::Native
        } else {
            CodeTarget::Pulley
        }
    }

    /// The wasmtime target to set on the engine; `None` = the host's own.
    pub fn triple(self) -> Option<&'static str> {
        match self {
            CodeTarget::Native => None,
            CodeTarget::Pulley if cfg!(target_pointer_width = "64") => Some("pulley64"),
            CodeTarget::Pulley => Some("pulley32"),
        }
    }

    /// One line for logs and `wasmdm inspect`: the code target and why.
    pub fn describe(self) -> String {
        match self.triple() {
            None => format!(
                "native {} code (Cranelift; Winch where it has a backend)",
                std::env::consts::ARCH
            ),
            Some(t) if CodeTarget::build_default() == CodeTarget::Native => {
                format!("{t}: wasmtime's Pulley interpreter (forced by {CODE_TARGET_ENV}=pulley)")
            }
            Some(t) => format!(
                "{t}: wasmtime's Pulley interpreter (Cranelift has no {} backend)",
                std::env::consts::ARCH
            ),
        }
    }
}

/// Sets the code target on an engine config built for `tier`. Called from
/// `engine::code_config`, so it enters the compatibility hash like every
/// other code setting.
///
/// On a Pulley host only Cranelift can make code: a Winch (baseline) engine
/// is left to fail at `Engine::new`, and `Compilers::new` then installs with
/// Cranelift alone (no background optimisation: there is nothing better to
/// swap in).
pub(super) fn apply(config: &mut Config, tier: Tier) {
    let target = CodeTarget::host();
    static LOGGED: Once = Once::new();
    // Said once per process; at info where it is news (an interpreter).
    LOGGED.call_once(|| match target {
        CodeTarget::Native => tracing::debug!("code target: {}", target.describe()),
        CodeTarget::Pulley => tracing::info!("code target: {}", target.describe()),
    });
    let Some(triple) = target.triple() else {
        return;
    };
    if let Err(e) = config.target(triple) {
        // Only an unknown triple fails here, which `triple` never returns.
        tracing::error!("cannot select the {triple} target: {e:#}");
    }
    if tier == Tier::Baseline {
        tracing::debug!("Winch makes native code only: no baseline engine on {triple}");
    }
    if cfg!(target_pointer_width = "32") {
        // 3 GiB of address space: reserve what a memory uses and let it move
        // when it grows, instead of a reservation of its whole cap.
        config
            .memory_reservation(0)
            .memory_guard_size(0)
            .memory_reservation_for_growth(1 << 20);
    }
}

/// The instance allocator. 64-bit hosts use the pool (slots reserved up
/// front, fast instantiation, `max-instances` enforced by the pool). A 32-bit
/// process cannot reserve address space for the pool's slots (100 slots of
/// two 256 MiB memories would be 50 GiB), so there instances are allocated on
/// demand; the per-instance memory cap is the store's limiter either way.
pub(super) fn allocation_strategy(pool: PoolingAllocationConfig) -> InstanceAllocationStrategy {
    if cfg!(target_pointer_width = "64") {
        InstanceAllocationStrategy::Pooling(pool)
    } else {
        InstanceAllocationStrategy::OnDemand
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_on_cranelift_hosts_pulley_elsewhere() {
        let t = CodeTarget::build_default();
        if cfg!(target_arch = "arm") {
            assert_eq!(t, CodeTarget::Pulley);
            assert_eq!(t.triple(), Some("pulley32"));
            assert!(t.describe().starts_with("pulley32"), "{}", t.describe());
        } else if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(t, CodeTarget::Native);
            assert_eq!(t.triple(), None);
            assert!(t.describe().contains(std::env::consts::ARCH));
        }
    }

    #[test]
    fn the_setting_forces_pulley_or_keeps_the_build_default() {
        assert_eq!(CodeTarget::from_setting("pulley"), Some(CodeTarget::Pulley));
        assert_eq!(
            CodeTarget::from_setting(" pulley\n"),
            Some(CodeTarget::Pulley)
        );
        let own = Some(CodeTarget::build_default());
        assert_eq!(CodeTarget::from_setting(""), own);
        assert_eq!(CodeTarget::from_setting("native"), own);
        assert_eq!(CodeTarget::from_setting("cranelift"), None);
        assert_eq!(CodeTarget::from_setting("Pulley"), Some(CodeTarget::Pulley));
        let forced = CodeTarget::Pulley.describe();
        if CodeTarget::build_default() == CodeTarget::Native {
            assert!(forced.contains(CODE_TARGET_ENV), "{forced}");
            assert_eq!(CodeTarget::Pulley.triple(), Some("pulley64"));
        }
    }

    /// The runtime engine builds on this host and runs code: on armv7 that
    /// is the Pulley engine, with epoch interruption on.
    #[test]
    fn the_optimised_engine_builds_here() {
        let cfg = super::super::engine::EngineConfig {
            max_instances: 2,
            ..Default::default()
        };
        let engine = super::super::engine::EngineShared::with_tier(&cfg, Tier::Optimised)
            .expect("optimised engine");
        // The empty module, binary (no `wat` feature here).
        let code = engine.engine.precompile_module(b"\0asm\x01\0\0\0");
        assert!(code.is_ok(), "{:?}", code.err());
        if CodeTarget::host() == CodeTarget::Pulley {
            assert!(
                super::super::engine::EngineShared::with_tier(&cfg, Tier::Baseline).is_err(),
                "a Winch engine on a Pulley host"
            );
        }
    }
}
