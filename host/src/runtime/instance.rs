//! Running one component instance to completion inside its sandbox.

use super::datafs::{DataQuota, FsLimits, RESOURCES_PER_DESCRIPTOR};
use super::engine::EngineShared;
use super::host::{HostState, StopSignal, TotalMemoryLimiter};
use super::logbuf::{LogBuffer, LogSink, LogSource};
use super::spec::{NetRule, Sandbox};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// `run` returned; 0 is success (an `Err` from `run` is 1).
    Exited(i32),
    /// The guest trapped; the message says why.
    Trapped(String),
    /// A memory or table growth beyond the sandbox's memory cap was refused.
    MemoryLimitExceeded {
        /// The cap.
        limit: u64,
    },
    /// `/data` grew beyond the sandbox's quota. No longer produced (writes
    /// beyond the quota now fail in the guest); kept to read older records.
    DiskQuotaExceeded {
        /// The quota.
        quota: u64,
    },
    /// Stopped on request; `forced` if the grace period ran out.
    Stopped {
        /// Interrupted after the grace period rather than returning by itself.
        forced: bool,
    },
    /// Instantiation failed (pool exhausted, sandbox setup failed, ...).
    StartFailed(String),
}

impl ExitStatus {
    /// True for a clean exit (code 0 or a requested stop).
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            ExitStatus::Exited(0) | ExitStatus::Stopped { forced: false }
        )
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited with code {c}"),
            ExitStatus::Trapped(m) => write!(f, "trapped: {m}"),
            ExitStatus::MemoryLimitExceeded { limit } => {
                write!(f, "memory limit exceeded ({limit} bytes)")
            }
            ExitStatus::DiskQuotaExceeded { quota } => {
                write!(f, "disk quota exceeded ({quota} bytes)")
            }
            ExitStatus::Stopped { forced: false } => write!(f, "stopped"),
            ExitStatus::Stopped { forced: true } => {
                write!(f, "stopped (interrupted after grace period)")
            }
            ExitStatus::StartFailed(m) => write!(f, "failed to start: {m}"),
        }
    }
}

/// Everything one instance needs besides the compiled component.
#[derive(Clone)]
pub struct InstanceSetup {
    /// argv\[0\].
    pub argv0: String,
    /// The sandbox grants.
    pub sandbox: Sandbox,
    /// Host dir preopened at `/data`, if granted.
    pub data_dir: Option<PathBuf>,
    /// Package root, base of read-only mounts.
    pub package_root: PathBuf,
    /// Package config values.
    pub config: Arc<BTreeMap<String, String>>,
    /// The component's log.
    pub log: LogBuffer,
    /// The device's app objects (issue 14).
    pub objects: Arc<super::appobjects::AppObjects>,
    /// What this component may serve there.
    pub grant: super::appobjects::AppGrant,
}

fn build_state(
    setup: &InstanceSetup,
    stop: Arc<StopSignal>,
    quota: Option<Arc<DataQuota>>,
) -> Result<HostState, String> {
    let sb = &setup.sandbox;
    let mut b = WasiCtxBuilder::new();
    let mut argv = vec![setup.argv0.clone()];
    argv.extend(sb.args.iter().cloned());
    b.args(&argv);
    b.envs(&sb.env);
    b.stdout(LogSink::new(setup.log.clone(), LogSource::Stdout));
    b.stderr(LogSink::new(setup.log.clone(), LogSource::Stderr));
    if let Some(dir) = &setup.data_dir {
        b.preopened_dir(dir, "/data", FsPerms::ReadWrite)
            .map_err(|e| format!("preopen /data: {e:#}"))?;
    }
    for m in &sb.readonly {
        let host = setup.package_root.join(&m.source);
        b.preopened_dir(&host, &m.guest, FsPerms::ReadOnly)
            .map_err(|e| format!("preopen {}: {e:#}", m.guest))?;
    }
    if !sb.network.is_empty() || !sb.network_bind.is_empty() {
        // Name lookup stays off: the allow list is addresses, not names.
        let peers: Arc<[NetRule]> = sb.network.clone().into();
        let binds: Arc<[NetRule]> = sb.network_bind.clone().into();
        b.allow_tcp(true).allow_udp(true);
        b.socket_addr_check(move |addr, usage| {
            let ok = net_allowed(&peers, &binds, &addr, usage);
            Box::pin(async move { ok })
        });
    }
    let mut table = ResourceTable::new();
    // Every WASI resource (streams, pollables, sockets) is capped too: past
    // this the guest traps instead of growing the host's table and fds.
    table.set_max_capacity((sb.max_descriptors as usize).saturating_mul(RESOURCES_PER_DESCRIPTOR));
    Ok(HostState {
        wasi: b.build(),
        table,
        limiter: TotalMemoryLimiter::new(sb.memory_bytes),
        stop,
        config: setup.config.clone(),
        log: setup.log.clone(),
        fs_limits: FsLimits::new(quota, sb.max_descriptors, setup.log.clone()),
        objects: setup.objects.instance(setup.grant.clone()),
        waited: false,
    })
}

/// Peers (connect, send, receive, accept) must match `peers`; local
/// addresses (bind, listen) must match `binds`. The one exception is the
/// implicit bind before an outbound connect or send, which wasmtime-wasi
/// checks as the wildcard address with port 0 (the OS picks an ephemeral
/// port): allowed when some peer is. Before, any wildcard bind passed, so any
/// grant let a guest take any UDP port (and, with a wide allow list, listen on
/// any TCP port) on every interface.
fn net_allowed(
    peers: &[NetRule],
    binds: &[NetRule],
    addr: &SocketAddr,
    usage: SocketAddrUse,
) -> bool {
    let matches = |rules: &[NetRule]| rules.iter().any(|r| r.matches(addr));
    match usage {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            let ephemeral = addr.ip().is_unspecified() && addr.port() == 0;
            (ephemeral && !peers.is_empty()) || matches(binds)
        }
        SocketAddrUse::TcpListen => matches(binds),
        SocketAddrUse::TcpConnect
        | SocketAddrUse::TcpAccept
        | SocketAddrUse::UdpSend
        | SocketAddrUse::UdpReceive => matches(peers),
    }
}

/// Instantiates and runs `run` to completion. Cancel-safe: dropping the future
/// drops the store, which is how a guest blocked in a host call is removed.
pub async fn run_instance(
    engine: Arc<EngineShared>,
    pre: CommandPre<HostState>,
    setup: InstanceSetup,
    stop: Arc<StopSignal>,
) -> ExitStatus {
    let quota = match &setup.data_dir {
        Some(dir) => match open_data_dir(dir, setup.sandbox.data_quota, &setup.log).await {
            Ok(q) => Some(q),
            Err(e) => return ExitStatus::StartFailed(e),
        },
        None => None,
    };
    let state = match build_state(&setup, stop.clone(), quota) {
        Ok(s) => s,
        Err(e) => return ExitStatus::StartFailed(e),
    };
    let limit = setup.sandbox.memory_bytes;
    let mut store = Store::new(&engine.engine, state);
    store.limiter(|s| &mut s.limiter);
    let stop_cb = stop.clone();
    let pause = cpu_pause(setup.sandbox.cpu_percent);
    let mut last_deadline: Option<std::time::Instant> = None;
    store.epoch_deadline_callback(move |mut cx| {
        if stop_cb.is_forced() {
            return Ok(UpdateDeadline::Interrupt);
        }
        // Two deadlines about a tick apart (plus the pause between them),
        // with no wasmdm wait (`wait-for-stop`, `next-request`) in between:
        // the guest computed through a whole slice. It then sits out
        // `pause`, so it gets at most its share of a core and a spinning
        // guest cannot delay the device's other services. A guest that
        // mostly waits meets a deadline only now and then; one that waits
        // often but briefly (an app answering every millisecond) is not
        // busy either, though it runs in every tick.
        let waited = std::mem::take(&mut cx.data_mut().waited);
        let now = std::time::Instant::now();
        let busy = !waited
            && last_deadline.is_some_and(|t| {
                now.duration_since(t) < crate::runtime::engine::EPOCH_TICK * 3 / 2 + pause
            });
        last_deadline = Some(now);
        if busy && !pause.is_zero() {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(pause)),
            ))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);

    let cmd = match pre.instantiate_async(&mut store).await {
        Ok(c) => c,
        Err(e) => {
            return if store.data().limiter.hit {
                ExitStatus::MemoryLimitExceeded { limit }
            } else {
                ExitStatus::StartFailed(describe_failure(&e))
            };
        }
    };
    let result = cmd.wasi_cli_run().call_run(&mut store).await;
    setup.log.flush();
    match result {
        Ok(Ok(())) => ExitStatus::Exited(0),
        Ok(Err(())) => ExitStatus::Exited(1),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                ExitStatus::Exited(exit.0)
            } else if store.data().limiter.hit {
                ExitStatus::MemoryLimitExceeded { limit }
            } else if stop.is_forced()
                && e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
            {
                ExitStatus::Stopped { forced: true }
            } else {
                ExitStatus::Trapped(describe_failure(&e))
            }
        }
    }
}

/// Creates `/data`'s host directory and measures what it holds against the
/// quota (off the executor: it walks the tree). Usage that cannot be measured
/// fails closed: the guest starts, but nothing it writes may grow `/data`.
async fn open_data_dir(
    dir: &std::path::Path,
    limit: u64,
    log: &LogBuffer,
) -> Result<Arc<DataQuota>, String> {
    let d = dir.to_path_buf();
    let measured = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        Ok::<_, String>(DataQuota::measure(&d, limit))
    })
    .await
    .map_err(|e| format!("measure /data: {e}"))??;
    let (quota, err) = measured;
    if let Some(e) = err {
        log.push(
            LogSource::Host,
            &format!("/data usage cannot be measured ({e}); writes that grow it will fail"),
        );
    } else if quota.used() > limit {
        log.push(
            LogSource::Host,
            &format!(
                "/data holds {} bytes, over its quota of {limit}; writes that grow it will fail",
                quota.used()
            ),
        );
    }
    Ok(quota)
}

/// Longest failure description kept: it goes into the status the LwM2M side
/// reports and into every log line about the exit, and its causes can carry
/// guest-chosen text.
const MAX_FAILURE_TEXT: usize = 512;

/// Why an instance failed, on one escaped line of at most [`MAX_FAILURE_TEXT`]
/// bytes: the trap code's description (`wasm trap: out of bounds memory
/// access`, `... call stack exhausted`, `... interrupt`), then every cause in
/// the error's chain, then the innermost wasm frame. wasmtime wraps each error
/// from guest code in its backtrace, whose own text is only "error while
/// executing at wasm backtrace:" and frame addresses: printed alone (`{e}`),
/// a host call that failed (a bad resource handle, say) said nothing of why.
fn describe_failure(e: &wasmtime::Error) -> String {
    let backtrace = e.downcast_ref::<wasmtime::WasmBacktrace>();
    let backtrace_text = backtrace.map(ToString::to_string);
    let mut parts: Vec<String> = Vec::new();
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        parts.push(trap.to_string());
    }
    for cause in e.chain() {
        let text = cause.to_string();
        let is_backtrace = backtrace_text.as_deref() == Some(text.as_str());
        if !is_backtrace && !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        parts.push("unknown failure".to_string());
    }
    let mut msg = parts.join(": ");
    if let Some(frame) = backtrace.and_then(|b| b.frames().first()) {
        match frame.func_name() {
            Some(name) => msg.push_str(&format!(" (in {name})")),
            None => msg.push_str(&format!(" (in wasm function {})", frame.func_index())),
        }
    }
    let mut msg = wasmdm_package::display::escape(&msg).into_owned();
    if msg.len() > MAX_FAILURE_TEXT {
        let mut end = MAX_FAILURE_TEXT;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push('…');
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_allow_list() {
        let rules = [NetRule {
            addr: "127.0.0.1".parse().unwrap(),
            prefix: 32,
            port: Some(8080),
        }];
        let ok: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let any_8080: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(net_allowed(&rules, &[], &ok, SocketAddrUse::TcpConnect));
        assert!(!net_allowed(&rules, &[], &other, SocketAddrUse::TcpConnect));
        assert!(!net_allowed(&rules, &[], &other, SocketAddrUse::UdpSend));
        // The implicit bind before a connect uses the wildcard address, port 0.
        assert!(net_allowed(&rules, &[], &any, SocketAddrUse::TcpBind));
        assert!(net_allowed(&rules, &[], &any, SocketAddrUse::UdpBind));
        assert!(!net_allowed(&[], &[], &any, SocketAddrUse::UdpBind));
        // Outbound only: no chosen port, no listening.
        assert!(!net_allowed(&rules, &[], &any_8080, SocketAddrUse::UdpBind));
        assert!(!net_allowed(&rules, &[], &any_8080, SocketAddrUse::TcpBind));
        assert!(!net_allowed(&rules, &[], &ok, SocketAddrUse::TcpBind));
        assert!(!net_allowed(&rules, &[], &any, SocketAddrUse::TcpListen));
        assert!(!net_allowed(&[], &[], &ok, SocketAddrUse::TcpConnect));
        // A bind grant names exactly what may be bound and listened on.
        let binds = [NetRule {
            addr: "127.0.0.1".parse().unwrap(),
            prefix: 32,
            port: Some(8080),
        }];
        assert!(net_allowed(&[], &binds, &ok, SocketAddrUse::TcpBind));
        assert!(net_allowed(&[], &binds, &ok, SocketAddrUse::TcpListen));
        assert!(net_allowed(&[], &binds, &ok, SocketAddrUse::UdpBind));
        assert!(!net_allowed(&[], &binds, &any_8080, SocketAddrUse::TcpBind));
        assert!(!net_allowed(&[], &binds, &other, SocketAddrUse::TcpListen));
    }
}

/// How long a guest that computed through a whole epoch slice sits out, so
/// that it uses at most `cpu_percent` of one core: a slice of compute, then
/// `slice × (100 − p) / p` of rest.
fn cpu_pause(cpu_percent: u8) -> std::time::Duration {
    let p = u32::from(cpu_percent.clamp(1, 100));
    crate::runtime::engine::EPOCH_TICK * (100 - p) / p
}

#[cfg(test)]
mod cpu_tests {
    use super::cpu_pause;
    use std::time::Duration;

    #[test]
    fn a_busy_guest_rests_so_it_uses_its_share() {
        assert_eq!(cpu_pause(100), Duration::ZERO);
        assert_eq!(cpu_pause(50), Duration::from_millis(10));
        assert_eq!(cpu_pause(25), Duration::from_millis(30));
        assert_eq!(
            cpu_pause(0),
            cpu_pause(1),
            "clamped, never a division by zero"
        );
    }
}
