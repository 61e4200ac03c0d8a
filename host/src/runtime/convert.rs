//! From the `wasmdm-package` manifest to the runtime's stored [`PackageSpec`].

use super::spec::{
    ComponentSpec, NetRule, PackageSpec, ReadonlyMount, RestartPolicy, Sandbox, World,
};
use wasmdm_package as m;
use wasmdm_package::PortRange;

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn net_rule(r: &m::NetRule) -> NetRule {
    NetRule {
        addr: r.addr,
        prefix: r.prefix,
        port: match r.port {
            PortRange::Any => None,
            PortRange::Port(p) => Some(p),
        },
    }
}

/// Resolves a validated manifest into what the runtime stores and runs.
pub fn package_spec(man: &m::Manifest) -> PackageSpec {
    PackageSpec {
        name: man.package.name.clone(),
        version: man.package.version.to_string(),
        description: man.package.description.clone(),
        config: man.config.clone(),
        components: man.components.iter().map(component_spec).collect(),
    }
}

fn component_spec(c: &m::Component) -> ComponentSpec {
    let sb = &c.sandbox;
    let restart = match sb.restart.policy {
        m::RestartPolicy::No => RestartPolicy::No,
        m::RestartPolicy::OnFailure => RestartPolicy::OnFailure {
            max_retries: sb.restart.max_retries,
            backoff_ms: millis(sb.restart.backoff),
        },
        m::RestartPolicy::Always => RestartPolicy::Always {
            max_retries: sb.restart.max_retries,
            backoff_ms: millis(sb.restart.backoff),
        },
    };
    ComponentSpec {
        id: c.id.clone(),
        version: c.version.to_string(),
        file: c.file.clone(),
        sha256: c.sha256.to_hex(),
        world: match c.world {
            m::World::App => World::App,
            m::World::Command => World::Command,
        },
        sandbox: Sandbox {
            memory_bytes: sb.memory_bytes,
            env: sb.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            args: sb.args.clone(),
            data_dir: sb.data_dir,
            data_quota: sb.data_quota_bytes,
            readonly: sb
                .readonly
                .iter()
                .map(|r| ReadonlyMount {
                    source: r.source.clone(),
                    guest: r.guest.clone(),
                })
                .collect(),
            network: sb.network.allow.iter().map(net_rule).collect(),
            network_bind: sb.network.bind.iter().map(net_rule).collect(),
            restart,
            log_cap: sb.log_cap_bytes,
            stop_grace_ms: millis(sb.stop_grace),
            cpu_percent: sb.cpu_percent,
            max_descriptors: sb.max_descriptors,
            objects: sb.objects.clone(),
        },
    }
}
