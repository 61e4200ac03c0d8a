//! The values of Update State, Update Result and Status Reason, with
//! their names from the spec (SwMgmt §6 resources 7, 9, 16).

use serde::{Deserialize, Serialize};

/// Update State, /9/x/7 (SwMgmt §5.1.2, §6 resource 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateState {
    /// 0: no package in the device (§5.1.2.1).
    Initial,
    /// 1: a push or pull is under way (§5.1.2.2).
    DownloadStarted,
    /// 2: the package is fully written, integrity not yet checked (§5.1.2.3).
    Downloaded,
    /// 3: the package is verified and ready to install (§5.1.2.4).
    Delivered,
    /// 4: the software is installed; the activation machine is alive (§5.1.2.5).
    Installed,
}

impl UpdateState {
    /// The resource value.
    pub const fn code(self) -> i64 {
        match self {
            UpdateState::Initial => 0,
            UpdateState::DownloadStarted => 1,
            UpdateState::Downloaded => 2,
            UpdateState::Delivered => 3,
            UpdateState::Installed => 4,
        }
    }

    /// The spec's name, for logs and reports.
    pub const fn name(self) -> &'static str {
        match self {
            UpdateState::Initial => "INITIAL",
            UpdateState::DownloadStarted => "DOWNLOAD STARTED",
            UpdateState::Downloaded => "DOWNLOADED",
            UpdateState::Delivered => "DELIVERED",
            UpdateState::Installed => "INSTALLED",
        }
    }
}

/// Update Result, /9/x/9 (SwMgmt §6 resource 9; 59 from the OMA registry's
/// 9.xml V1_0_3, see field notes; 55 is undefined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateResult {
    /// 0: initial value.
    Initial,
    /// 1: downloading.
    Downloading,
    /// 2: software successfully installed.
    Installed,
    /// 3: successfully downloaded and package integrity verified.
    DownloadedVerified,
    /// 50: not enough storage for the new software package.
    NotEnoughStorage,
    /// 51: out of memory during the downloading process.
    OutOfMemory,
    /// 52: connection lost during the downloading process.
    ConnectionLost,
    /// 53: package integrity check failure.
    IntegrityFailure,
    /// 54: unsupported package type.
    UnsupportedPackageType,
    /// 56: invalid URI.
    InvalidUri,
    /// 57: device defined update error.
    DeviceDefined,
    /// 58: software installation failure.
    InstallFailure,
    /// 59: uninstallation failure during forUpdate (arg=1).
    UninstallForUpdateFailure,
}

impl UpdateResult {
    /// The resource value.
    pub const fn code(self) -> i64 {
        match self {
            UpdateResult::Initial => 0,
            UpdateResult::Downloading => 1,
            UpdateResult::Installed => 2,
            UpdateResult::DownloadedVerified => 3,
            UpdateResult::NotEnoughStorage => 50,
            UpdateResult::OutOfMemory => 51,
            UpdateResult::ConnectionLost => 52,
            UpdateResult::IntegrityFailure => 53,
            UpdateResult::UnsupportedPackageType => 54,
            UpdateResult::InvalidUri => 56,
            UpdateResult::DeviceDefined => 57,
            UpdateResult::InstallFailure => 58,
            UpdateResult::UninstallForUpdateFailure => 59,
        }
    }

    /// The value for a resource code, if it is one the spec defines.
    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => UpdateResult::Initial,
            1 => UpdateResult::Downloading,
            2 => UpdateResult::Installed,
            3 => UpdateResult::DownloadedVerified,
            50 => UpdateResult::NotEnoughStorage,
            51 => UpdateResult::OutOfMemory,
            52 => UpdateResult::ConnectionLost,
            53 => UpdateResult::IntegrityFailure,
            54 => UpdateResult::UnsupportedPackageType,
            56 => UpdateResult::InvalidUri,
            57 => UpdateResult::DeviceDefined,
            58 => UpdateResult::InstallFailure,
            59 => UpdateResult::UninstallForUpdateFailure,
            _ => return None,
        })
    }

    /// The spec's wording, for reports.
    pub const fn name(self) -> &'static str {
        match self {
            UpdateResult::Initial => "Initial value",
            UpdateResult::Downloading => "Downloading",
            UpdateResult::Installed => "Software successfully installed",
            UpdateResult::DownloadedVerified => {
                "Successfully Downloaded and package integrity verified"
            }
            UpdateResult::NotEnoughStorage => "Not enough storage for the new software package",
            UpdateResult::OutOfMemory => "Out of memory during downloading process",
            UpdateResult::ConnectionLost => "Connection lost during downloading process",
            UpdateResult::IntegrityFailure => "Package integrity check failure",
            UpdateResult::UnsupportedPackageType => "Unsupported package type",
            UpdateResult::InvalidUri => "Invalid URI",
            UpdateResult::DeviceDefined => "Device defined update error",
            UpdateResult::InstallFailure => "Software installation failure",
            UpdateResult::UninstallForUpdateFailure => "Uninstallation failure during forUpdate",
        }
    }

    /// Codes 50 and up report a failure.
    pub const fn is_failure(self) -> bool {
        self.code() >= 50
    }

    /// Failures a delivery (pull, push or integrity check) can end with (§5.1.2.2, §5.1.2.3).
    pub const fn is_delivery_failure(self) -> bool {
        matches!(
            self,
            UpdateResult::NotEnoughStorage
                | UpdateResult::OutOfMemory
                | UpdateResult::ConnectionLost
                | UpdateResult::IntegrityFailure
                | UpdateResult::UnsupportedPackageType
                | UpdateResult::InvalidUri
                | UpdateResult::DeviceDefined
        )
    }
}

/// Status Reason, /9/x/16 (SwMgmt Appendix B). The resource is a String; we
/// report the Appendix B value in decimal ("10", "30", ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusReason {
    /// 10: no data, a download is about to start.
    Idle,
    /// 20: download failed and no data was kept.
    DownloadFailed,
    /// 30: a download started; 0 or more bytes received.
    DownloadProgressing,
    /// 40: the download completed; the data is here.
    DownloadComplete,
    /// 50: an installation has started.
    InstallProgressing,
    /// 60: the install failed; the package is still in the device.
    InstallFailedWithData,
    /// 70: the install failed and the package was deleted.
    InstallFailedWithoutData,
}

impl StatusReason {
    /// The Appendix B value.
    pub const fn code(self) -> u8 {
        match self {
            StatusReason::Idle => 10,
            StatusReason::DownloadFailed => 20,
            StatusReason::DownloadProgressing => 30,
            StatusReason::DownloadComplete => 40,
            StatusReason::InstallProgressing => 50,
            StatusReason::InstallFailedWithData => 60,
            StatusReason::InstallFailedWithoutData => 70,
        }
    }

    /// The Appendix B state name.
    pub const fn name(self) -> &'static str {
        match self {
            StatusReason::Idle => "Idle/Start",
            StatusReason::DownloadFailed => "Download failed",
            StatusReason::DownloadProgressing => "Download Progressing",
            StatusReason::DownloadComplete => "Download Complete",
            StatusReason::InstallProgressing => "Install Progressing",
            StatusReason::InstallFailedWithData => "Install Failed with data",
            StatusReason::InstallFailedWithoutData => "Install Failed without data",
        }
    }
}
