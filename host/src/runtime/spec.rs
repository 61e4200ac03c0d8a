//! The runtime's own, resolved view of a package: what it needs to run components.
//!
//! Converted once from the `wasmdm-package` manifest at verification time and stored
//! in our records, so restoring after a reboot never re-parses manifest strings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Which world a component was declared against; decides the linker it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum World {
    /// `wasi:cli/command`: WASI 0.2 only.
    Command,
    /// `wasmdm:device/app`: WASI 0.2 plus the wasmdm interfaces.
    App,
}

impl World {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Command => "wasi:cli/command",
            World::App => "wasmdm:device/app",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<wasmdm_package::World> for World {
    fn from(w: wasmdm_package::World) -> World {
        match w {
            wasmdm_package::World::App => World::App,
            wasmdm_package::World::Command => World::Command,
        }
    }
}

/// One network allow rule: an address or CIDR block and a port (None = any port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRule {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits (32/128 for a single host).
    pub prefix: u8,
    /// Port, or any.
    pub port: Option<u16>,
}

impl NetRule {
    /// True if `sa` falls inside this rule.
    pub fn matches(&self, sa: &SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != sa.port()) {
            return false;
        }
        match (self.addr, sa.ip()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What to do when a component's `run` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart after a failure (non-zero exit, trap, memory limit), at most `max_retries` times.
    OnFailure {
        /// Restarts allowed before the component is marked failed.
        max_retries: u32,
        /// Delay before each restart.
        backoff_ms: u64,
    },
    /// Restart after every exit until deactivated, at most `max_retries`
    /// times in a row without a healthy run (see the supervisor).
    Always {
        /// Restarts allowed before the component is marked failed. Records
        /// written before this field existed get the manifest's default.
        #[serde(default = "default_max_retries")]
        max_retries: u32,
        /// Delay before each restart.
        backoff_ms: u64,
    },
}

/// The manifest's default `max-retries`, for `Always` records stored before
/// `max-retries` applied to it (then it restarted without limit).
fn default_max_retries() -> u32 {
    wasmdm_package::Restart::default().max_retries
}

/// A read-only directory shipped in the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadonlyMount {
    /// Directory inside the package, relative.
    pub source: String,
    /// Absolute guest path.
    pub guest: String,
}

/// The sandbox granted to a component. Anything not listed here is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Cap on all linear memories + tables of the instance together.
    pub memory_bytes: u64,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Arguments after argv\[0\] (the component id).
    pub args: Vec<String>,
    /// Whether a private `/data` is preopened.
    pub data_dir: bool,
    /// Bytes allowed in `/data`.
    pub data_quota: u64,
    /// Read-only package directories.
    pub readonly: Vec<ReadonlyMount>,
    /// Network allow list (peers); empty with `network_bind` empty = no network at all.
    pub network: Vec<NetRule>,
    /// Local addresses the guest may bind and listen on; empty = outbound
    /// only. Absent from records written before binds were confined.
    #[serde(default)]
    pub network_bind: Vec<NetRule>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Bytes of log kept in memory.
    pub log_cap: u64,
    /// Time between a stop request and forced interruption.
    pub stop_grace_ms: u64,
    /// Share of one core while computing without pause (percent); absent
    /// from records written before shares existed.
    #[serde(default = "default_cpu_percent")]
    pub cpu_percent: u8,
    /// Descriptors the guest may hold open at once; absent from records
    /// written before descriptors were capped.
    #[serde(default = "default_max_descriptors")]
    pub max_descriptors: u32,
    /// LwM2M object ids the component may serve (`wasmdm:device/objects`);
    /// absent from records written before apps served objects.
    #[serde(default)]
    pub objects: Vec<u16>,
}

fn default_cpu_percent() -> u8 {
    wasmdm_package::DEFAULT_CPU_PERCENT
}

fn default_max_descriptors() -> u32 {
    wasmdm_package::DEFAULT_MAX_DESCRIPTORS
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            memory_bytes: 64 << 20,
            env: Vec::new(),
            args: Vec::new(),
            data_dir: true,
            data_quota: 16 << 20,
            readonly: Vec::new(),
            network: Vec::new(),
            network_bind: Vec::new(),
            restart: RestartPolicy::No,
            log_cap: 64 << 10,
            stop_grace_ms: 2000,
            cpu_percent: default_cpu_percent(),
            max_descriptors: default_max_descriptors(),
            objects: Vec::new(),
        }
    }
}

/// One component of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// Unique id within the package.
    pub id: String,
    /// Component version.
    pub version: String,
    /// File relative to the package root.
    pub file: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// Declared world.
    pub world: World,
    /// Granted sandbox.
    pub sandbox: Sandbox,
}

/// A package as the runtime stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSpec {
    /// Package name (a safe path segment).
    pub name: String,
    /// Package version.
    pub version: String,
    /// Free text.
    pub description: Option<String>,
    /// Values served by `wasmdm:device/config`.
    pub config: BTreeMap<String, String>,
    /// Components, in manifest order.
    pub components: Vec<ComponentSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_rules_match_cidr_and_port() {
        let r = NetRule {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
            port: None,
        };
        assert!(r.matches(&"10.1.2.3:80".parse().unwrap()));
        assert!(!r.matches(&"11.1.2.3:80".parse().unwrap()));
        assert!(!r.matches(&"[::1]:80".parse().unwrap()));
        let h = NetRule {
            addr: "127.0.0.1".parse().unwrap(),
            prefix: 32,
            port: Some(8080),
        };
        assert!(h.matches(&"127.0.0.1:8080".parse().unwrap()));
        assert!(!h.matches(&"127.0.0.1:80".parse().unwrap()));
    }
}
