use super::*;
use crate::error::ErrorKind;

const D1: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const D2: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn full() -> String {
    format!(
        r#"
manifest-version = 1
[package]
name = "counter"
version = "1.2.0"
description = "Counts"
requires = ["wasmdm:device/app@0.1"]

[config]
greeting = "hello"

[[component]]
id = "counter"
file = "counter.wasm"
sha256 = "{D1}"
world = "wasmdm:device/app"
[component.sandbox]
memory = "32MiB"
env = {{ KEY = "value" }}
args = ["--flag"]
data-dir = false
data-quota = 1048576
readonly = [{{ source = "assets", guest = "/assets" }}]
network = {{ allow = ["127.0.0.1:8080", "10.0.0.0/8:*"] }}
restart = {{ policy = "on-failure", max-retries = 3, backoff-ms = 250 }}
log-cap = "8KiB"
stop-grace-ms = 500

[[component]]
id = "tool"
version = "0.1.0"
file = "bin/tool.wasm"
sha256 = "{D2}"
world = "wasi:cli/command"

[[file]]
path = "assets/index.html"
sha256 = "{D2}"
"#
    )
}

fn minimal() -> String {
    format!(
        r#"manifest-version = 1
[package]
name = "app"
version = "0.1.0"
[[component]]
id = "app"
file = "app.wasm"
sha256 = "{D1}"
world = "wasmdm:device/app"
"#
    )
}

fn err(text: &str) -> PackageError {
    Manifest::from_toml(text).unwrap_err()
}

#[test]
fn full_manifest_resolves_to_typed_values() {
    let m = Manifest::from_toml(&full()).unwrap();
    assert_eq!(m.package.name, "counter");
    assert_eq!(m.package.version, Version::new(1, 2, 0));
    assert_eq!(m.package.description.as_deref(), Some("Counts"));
    assert_eq!(m.config.get("greeting").map(String::as_str), Some("hello"));
    let c = &m.components[0];
    assert_eq!(
        c.version,
        Version::new(1, 2, 0),
        "defaults to package version"
    );
    assert_eq!(c.world, World::App);
    assert_eq!(c.sha256.to_hex(), D1);
    let s = &c.sandbox;
    assert_eq!(s.memory_bytes, 32 << 20);
    assert_eq!(s.env.get("KEY").map(String::as_str), Some("value"));
    assert_eq!(s.args, vec!["--flag".to_string()]);
    assert!(!s.data_dir);
    assert_eq!(s.data_quota_bytes, 1 << 20);
    assert_eq!(
        s.readonly,
        vec![ReadonlyMount {
            source: "assets".into(),
            guest: "/assets".into()
        }]
    );
    assert_eq!(s.network.allow.len(), 2);
    assert!(s.network.allows("10.1.2.3:9".parse().unwrap()));
    assert!(!s.network.allows("192.168.0.1:8080".parse().unwrap()));
    assert_eq!(
        s.restart,
        Restart {
            policy: RestartPolicy::OnFailure,
            max_retries: 3,
            backoff: Duration::from_millis(250)
        }
    );
    assert_eq!(s.log_cap_bytes, 8192);
    assert_eq!(s.stop_grace, Duration::from_millis(500));
    let t = m.component("tool").unwrap();
    assert_eq!(t.version, Version::new(0, 1, 0));
    assert_eq!(t.world, World::Command);
    assert_eq!(m.payload().len(), 3);
}

#[test]
fn defaults_apply_when_sandbox_is_absent() {
    let m = Manifest::from_toml(&minimal()).unwrap();
    let s = &m.components[0].sandbox;
    assert_eq!(s.memory_bytes, 64 << 20);
    assert!(s.data_dir);
    assert_eq!(s.data_quota_bytes, 16 << 20);
    assert!(s.network.is_none());
    assert_eq!(s.restart.policy, RestartPolicy::No);
    assert_eq!(s.log_cap_bytes, 64 << 10);
    assert_eq!(s.stop_grace, Duration::from_secs(2));
    assert!(s.readonly.is_empty() && s.env.is_empty() && s.args.is_empty());
}

#[test]
fn to_toml_round_trips() {
    for text in [full(), minimal()] {
        let m = Manifest::from_toml(&text).unwrap();
        let again = Manifest::from_toml(&m.to_toml()).unwrap();
        assert_eq!(m, again);
        assert_eq!(again.to_toml(), m.to_toml(), "canonical form is stable");
    }
    assert!(
        Manifest::from_toml(&minimal())
            .unwrap()
            .to_toml()
            .contains("memory = \"64MiB\"")
    );
}

#[test]
fn bad_toml_is_unsupported() {
    let e = err("manifest-version = 1\n[package\n");
    assert!(matches!(e, PackageError::ManifestSyntax(_)));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(matches!(
        Manifest::from_bytes(b"\xff\xfe"),
        Err(PackageError::ManifestSyntax(_))
    ));
}

#[test]
fn unknown_keys_are_refused_and_named() {
    let e = err(&minimal().replace("[package]", "gpu = true\n[package]"));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("gpu"), "{e}");
    let e = err(&format!(
        "{}[component.sandbox]\ncpu-shares = 5\n",
        minimal()
    ));
    assert!(e.to_string().contains("cpu-shares"), "{e}");
    let e = err(&format!(
        "{}[component.sandbox]\nrestart = {{ policy = \"no\", jitter = 1 }}\n",
        minimal()
    ));
    assert!(e.to_string().contains("jitter"), "{e}");
}

#[test]
fn manifest_version_other_than_1_is_unsupported() {
    let e = err(&minimal().replace("manifest-version = 1", "manifest-version = 2\nfuture = 1"));
    assert!(
        matches!(e, PackageError::ManifestVersion(ref v) if v == "2"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(matches!(
        err(&minimal().replace("manifest-version = 1", "")),
        PackageError::ManifestVersion(_)
    ));
}

#[test]
fn unknown_world_is_unsupported() {
    let e = err(&minimal().replace("wasmdm:device/app", "wasi:http/proxy"));
    assert!(
        matches!(e, PackageError::UnknownWorld { ref world, .. } if world == "wasi:http/proxy")
    );
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn missing_requirement_names_what_is_missing() {
    let m = Manifest::from_toml(&minimal().replace(
        "version = \"0.1.0\"",
        "version = \"0.1.0\"\nrequires = [\"a\", \"gpu:cuda@1\"]",
    ))
    .unwrap();
    assert!(m.check_requirements(&["a", "gpu:cuda@1"]).is_ok());
    let e = m.check_requirements(&["a"]).unwrap_err();
    assert!(
        matches!(e, PackageError::MissingRequirement(ref v) if v == &["gpu:cuda@1".to_string()])
    );
    assert!(e.to_string().contains("gpu:cuda@1"));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn duplicate_component_ids_are_refused() {
    let twice = format!(
        "{}{}",
        minimal(),
        &minimal()[minimal().find("[[component]]").unwrap()..]
    );
    let e = err(&twice);
    assert!(e.to_string().contains("duplicate component id"), "{e}");
}

#[test]
fn components_may_share_a_file_only_with_the_same_digest() {
    let second = format!(
        "[[component]]\nid = \"b\"\nfile = \"app.wasm\"\nsha256 = \"{D1}\"\nworld = \"wasi:cli/command\"\n"
    );
    assert!(Manifest::from_toml(&format!("{}{second}", minimal())).is_ok());
    let e = err(&format!("{}{}", minimal(), second.replace(D1, D2)));
    assert!(e.to_string().contains("different digest"), "{e}");
}

#[test]
fn bad_sizes_are_refused_with_the_key() {
    let with = |kv: &str| err(&format!("{}[component.sandbox]\n{kv}\n", minimal()));
    let e = with("memory = \"64MB\"");
    assert!(
        e.to_string().contains("component[app].sandbox.memory"),
        "{e}"
    );
    assert!(e.to_string().contains("MB"), "{e}");
    assert!(with("memory = \"5GiB\"").to_string().contains("outside"));
    assert!(with("memory = 0").to_string().contains("sandbox.memory"));
    assert!(with("log-cap = \"lots\"").to_string().contains("log-cap"));
    assert!(
        with("stop-grace-ms = 60001")
            .to_string()
            .contains("stop-grace-ms")
    );
    assert!(
        with("restart = { policy = \"sometimes\" }")
            .to_string()
            .contains("restart.policy")
    );
    assert!(
        with("network = { allow = [\"example.com:80\"] }")
            .to_string()
            .contains("network.allow[0]")
    );
    assert!(
        Manifest::from_toml(&format!(
            "{}[component.sandbox]\nmemory = \"4GiB\"\n",
            minimal()
        ))
        .is_ok()
    );
}

#[test]
fn names_versions_and_digests_are_checked() {
    assert!(
        err(&minimal().replace("name = \"app\"", "name = \"App\""))
            .to_string()
            .contains("package.name")
    );
    assert!(
        err(&minimal().replace("name = \"app\"", "name = \"-app\""))
            .to_string()
            .contains("package.name")
    );
    let long = format!("name = \"{}\"", "a".repeat(65));
    assert!(
        err(&minimal().replace("name = \"app\"", &long))
            .to_string()
            .contains("package.name")
    );
    assert!(
        err(&minimal().replace("id = \"app\"", "id = \"a/b\""))
            .to_string()
            .contains(".id")
    );
    assert!(
        err(&minimal().replace("\"0.1.0\"", "\"1.0\""))
            .to_string()
            .contains("package.version")
    );
    assert!(
        err(&minimal().replace(D1, &D1.to_uppercase()))
            .to_string()
            .contains("sha256")
    );
    let e = err(&minimal().replace(&format!("sha256 = \"{D1}\"\n"), ""));
    assert!(
        e.to_string().contains("component[app].sha256: missing"),
        "{e}"
    );
}

#[test]
fn paths_must_be_relative_normalised_and_unique() {
    for bad in [
        "../app.wasm",
        "/app.wasm",
        "a//b.wasm",
        "a\\\\b.wasm",
        "manifest.toml",
        "manifest.sig",
    ] {
        let e = err(&minimal().replace("\"app.wasm\"", &format!("\"{bad}\"")));
        assert!(e.to_string().contains("component[app].file"), "{bad}: {e}");
    }
    let dup = format!(
        "{}[[file]]\npath = \"a.txt\"\nsha256 = \"{D1}\"\n[[file]]\npath = \"a.txt\"\nsha256 = \"{D1}\"\n",
        minimal()
    );
    assert!(err(&dup).to_string().contains("duplicate file path"));
    let clash = format!(
        "{}[[file]]\npath = \"app.wasm\"\nsha256 = \"{D1}\"\n",
        minimal()
    );
    assert!(err(&clash).to_string().contains("also listed"));
}

#[test]
fn readonly_mounts_are_checked() {
    let with_file = |mount: &str| {
        format!(
            "{}[component.sandbox]\nreadonly = [{mount}]\n[[file]]\npath = \"assets/x\"\nsha256 = \"{D1}\"\n",
            minimal()
        )
    };
    assert!(Manifest::from_toml(&with_file("{ source = \"assets\", guest = \"/www\" }")).is_ok());
    let cases = [
        (
            "{ source = \"other\", guest = \"/www\" }",
            "not a directory",
        ),
        (
            "{ source = \"assets/x\", guest = \"/www\" }",
            "not a directory",
        ),
        ("{ source = \"ass\", guest = \"/www\" }", "not a directory"),
        ("{ source = \"assets\", guest = \"/data\" }", "/data"),
        ("{ source = \"assets\", guest = \"/data/x\" }", "/data"),
        ("{ source = \"assets\", guest = \"www\" }", "absolute"),
        ("{ source = \"assets\", guest = \"/\" }", "'/'"),
        (
            "{ source = \"assets\", guest = \"/a\" }, { source = \"assets\", guest = \"/a\" }",
            "twice",
        ),
        ("{ source = \"../x\", guest = \"/a\" }", ".."),
    ];
    for (mount, why) in cases {
        let e = err(&with_file(mount));
        assert!(e.to_string().contains(why), "{mount}: {e}");
    }
}

#[test]
fn a_package_needs_a_component() {
    let text = "manifest-version = 1\n[package]\nname = \"x\"\nversion = \"1.0.0\"\n";
    assert!(err(text).to_string().contains("at least one"));
}

#[test]
fn network_bind_names_the_local_addresses_and_round_trips() {
    let text = format!(
        "{}[component.sandbox]\nnetwork = {{ allow = [\"10.0.0.0/8:*\"], bind = [\"0.0.0.0:8080\", \"[::1]:5683\"] }}\n",
        minimal()
    );
    let m = Manifest::from_toml(&text).unwrap();
    let n = &m.components[0].sandbox.network;
    assert_eq!(n.bind.len(), 2);
    assert_eq!(n.bind[0].to_string(), "0.0.0.0:8080");
    assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
    // Bind only (a server answering `allow`ed peers) is a grant too.
    let only = format!(
        "{}[component.sandbox]\nnetwork = {{ bind = [\"127.0.0.1:8080\"] }}\n",
        minimal()
    );
    assert!(
        !Manifest::from_toml(&only).unwrap().components[0]
            .sandbox
            .network
            .is_none()
    );
    let bad = format!(
        "{}[component.sandbox]\nnetwork = {{ bind = [\"0.0.0.0\"] }}\n",
        minimal()
    );
    assert!(err(&bad).to_string().contains("network.bind[0]"));
}

#[test]
fn cpu_share_defaults_to_half_a_core_and_is_checked() {
    let with = |kv: &str| format!("{}[component.sandbox]\n{kv}\n", minimal());
    let m = Manifest::from_toml(&minimal()).unwrap();
    assert_eq!(
        m.components[0].sandbox.cpu_percent,
        crate::DEFAULT_CPU_PERCENT
    );
    let m = Manifest::from_toml(&with("cpu = \"100%\"")).unwrap();
    assert_eq!(m.components[0].sandbox.cpu_percent, 100);
    for bad in [
        "cpu = \"0%\"",
        "cpu = \"150%\"",
        "cpu = \"half\"",
        "cpu = \"50\"",
    ] {
        let e = err(&with(bad));
        assert!(e.to_string().contains("sandbox.cpu"), "{bad}: {e}");
    }
}

#[test]
fn object_grants_are_checked() {
    let with = |kv: &str| format!("{}[component.sandbox]\n{kv}\n", minimal());
    assert!(
        Manifest::from_toml(&minimal()).unwrap().components[0]
            .sandbox
            .objects
            .is_empty()
    );
    let m = Manifest::from_toml(&with("objects = [3303, 15, 65534]")).unwrap();
    assert_eq!(m.components[0].sandbox.objects, vec![3303, 15, 65534]);
    // The grant survives the canonical form.
    assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
    for (bad, says) in [
        ("objects = [3]", "object 3 is an OMA core object"),
        ("objects = [0]", "core object"),
        ("objects = [14]", "core object"),
        ("objects = [26500]", "wasmdm Engine object"),
        ("objects = [65535]", "outside the LwM2M object id range"),
        ("objects = [-1]", "outside"),
        ("objects = [3303, 3303]", "object 3303 listed twice"),
        (
            "objects = [3300, 3301, 3302, 3303, 3304, 3305, 3306, 3308, 3310]",
            "at most 8",
        ),
    ] {
        let e = err(&with(bad)).to_string();
        assert!(e.contains("sandbox.objects"), "{bad}: {e}");
        assert!(e.contains(says), "{bad}: {e}");
    }
    // One object, one component.
    let two = format!(
        "{}[component.sandbox]\nobjects = [3303]\n[[component]]\nid = \"b\"\nfile = \"b.wasm\"\n\
         sha256 = \"{D2}\"\nworld = \"wasmdm:device/app\"\n[component.sandbox]\nobjects = [3303]\n",
        minimal()
    );
    let e = err(&two).to_string();
    assert!(
        e.contains("object 3303 is also granted to component \"app\""),
        "{e}"
    );
}
