//! Runtime errors and their LwM2M Update Result hints.

use crate::state::StateError;

/// Everything the runtime facade can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Durable state (disk) failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The package was refused by `wasmdm-package` (integrity, unsupported, too large).
    #[error("package refused: {0}")]
    Package(#[from] wasmdm_package::PackageError),
    /// A component file is not a wasm component (e.g. a core module).
    #[error("component {component}: {reason}")]
    NotAComponent {
        /// Component id.
        component: String,
        /// What it is instead.
        reason: String,
    },
    /// A component is valid wasm but cannot run here: imports not satisfied by its
    /// declared world, no `wasi:cli/run` export, or it does not compile.
    /// An install would replace `installed` with the lower `offered`
    /// version (allowed only with `allow-downgrade`).
    #[error(
        "refusing to downgrade {package} from {installed} to {offered} (allow-downgrade is off)"
    )]
    Downgrade {
        package: String,
        installed: String,
        offered: String,
    },
    #[error("install failed for component {component}: {reason}")]
    InstallFailed {
        /// Component id.
        component: String,
        /// Why.
        reason: String,
    },
    /// wasmtime itself failed (engine setup, internal error).
    #[error("engine: {0}")]
    Engine(String),
    /// A name or slot is not a safe identifier.
    #[error("invalid name {0:?} (expected [a-z0-9][a-z0-9-_.]{{0,63}})")]
    InvalidName(String),
    /// No installed package has this name.
    #[error("no installed package {0:?}")]
    UnknownPackage(String),
    /// The package has no such component.
    #[error("package {package:?} has no component {component:?}")]
    UnknownComponent {
        /// Package name.
        package: String,
        /// Component id.
        component: String,
    },
    /// Install was asked for a slot that holds no verified package.
    #[error("delivery slot {0:?} holds no verified package")]
    NotDelivered(String),
    /// A block was written past the end of the data received so far.
    #[error("delivery write at offset {offset} leaves a gap (have {len} bytes)")]
    DeliveryGap {
        /// Offset requested.
        offset: u64,
        /// Bytes present.
        len: u64,
    },
    /// The delivery exceeds the configured maximum package size.
    #[error("package exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The package is marked broken (its code could not be restored) and cannot run.
    #[error("component {component} of {package} is not runnable: {reason}")]
    NotRunnable {
        /// Package name.
        package: String,
        /// Component id.
        component: String,
        /// Why.
        reason: String,
    },
}

impl RuntimeError {
    /// The Object 9 Update Result (SwMgmt §5.1.2.3, resource 9) this error suggests:
    /// 50 not enough storage, 51 out of memory, 53 integrity failure,
    /// 54 unsupported package type, 57 device-defined error, 58 install failure.
    pub fn update_result_hint(&self) -> i64 {
        use wasmdm_package::ErrorKind;
        match self {
            RuntimeError::State(StateError::Io { source, .. }) if is_no_space(source) => 50,
            RuntimeError::State(_) => 57,
            RuntimeError::Package(e) => match e.kind() {
                ErrorKind::Integrity => 53,
                ErrorKind::Unsupported => 54,
                ErrorKind::TooLarge => 50,
                ErrorKind::Io => 57,
            },
            RuntimeError::TooLarge { .. } => 50,
            RuntimeError::NotAComponent { .. } => 54,
            RuntimeError::InstallFailed { .. } | RuntimeError::NotRunnable { .. } => 58,
            // Distinct from a failed install (58): the package is fine, the
            // device's policy refuses it.
            RuntimeError::Downgrade { .. } => 57,
            RuntimeError::Engine(_)
            | RuntimeError::InvalidName(_)
            | RuntimeError::UnknownPackage(_)
            | RuntimeError::UnknownComponent { .. }
            | RuntimeError::NotDelivered(_)
            | RuntimeError::DeliveryGap { .. } => 57,
        }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
