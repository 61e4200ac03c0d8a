//! Apps serving LwM2M objects (issue 14), runtime side: the example
//! `temperature` guest declares IPSO Temperature (3303) through
//! `wasmdm:device/objects`; the runtime checks its grant, carries its values
//! to the subscriber, hands it Writes and Executes, answers for it when it
//! hangs, and withdraws its object when it stops.

mod runtime_support;

use runtime_support::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use wasmdm::runtime::{
    AppFailure, AppObjectEvent, AppPath, AppRequestKind, AppValue, ComponentState, Runtime,
};

fn temperature_pkg(name: &str, grant: &str, config: &str) -> Vec<u8> {
    package(
        name,
        "1.0.0",
        "temperature",
        "wasmdm:device/app",
        &format!("memory = \"16MiB\"\nstop-grace-ms = 1000\n{grant}"),
        &format!("[config]\ninterval-ms = \"50\"\n{config}"),
    )
}

fn at(resource: u16) -> AppPath {
    AppPath {
        object: 3303,
        instance: 0,
        resource,
        resource_instance: None,
    }
}

/// The next event, or a panic after `secs`.
async fn next_event(rx: &mut UnboundedReceiver<AppObjectEvent>, secs: u64) -> AppObjectEvent {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .expect("no app object event in time")
        .expect("event stream closed")
}

/// Follows Changed events into `seen` until `path`'s value satisfies `ok`.
async fn value_until(
    rx: &mut UnboundedReceiver<AppObjectEvent>,
    seen: &mut BTreeMap<AppPath, AppValue>,
    path: AppPath,
    ok: impl Fn(&AppValue) -> bool,
) -> AppValue {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = seen.get(&path).filter(|v| ok(v)) {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no fitting value for {path}: {seen:?}"
        );
        if let AppObjectEvent::Changed { values } = next_event(rx, 20).await {
            seen.extend(values);
        }
    }
}

async fn running_temperature(
    rt: &Runtime,
    name: &str,
    config: &str,
) -> UnboundedReceiver<AppObjectEvent> {
    let mut events = rt.app_object_events();
    deliver_install(rt, "0", &temperature_pkg(name, "objects = [3303]", config))
        .await
        .unwrap();
    rt.activate(name, None).await.unwrap();
    match next_event(&mut events, 20).await {
        AppObjectEvent::Declared {
            package,
            component,
            def,
        } => {
            assert_eq!(
                (package.as_str(), component.as_str()),
                (name, "temperature")
            );
            assert_eq!(def.id, 3303);
            assert_eq!(def.instances, vec![0]);
            let mut ids: Vec<u16> = def.resources.iter().map(|r| r.id).collect();
            ids.sort();
            assert_eq!(ids, [5601, 5602, 5603, 5604, 5605, 5700, 5701, 5750]);
        }
        other => panic!("expected Declared, got {other:?}"),
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_publishes_values_the_host_hands_on() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let mut events = running_temperature(&rt, "temperature", "").await;
    let mut seen = BTreeMap::new();
    let first = value_until(&mut events, &mut seen, at(5700), |_| true).await;
    match first {
        AppValue::Float(t) => assert!((17.0..=25.0).contains(&t), "{t}"),
        ref other => panic!("5700 is {other:?}"),
    }
    assert_eq!(seen.get(&at(5701)), Some(&AppValue::String("Cel".into())));
    assert_eq!(seen.get(&at(5603)), Some(&AppValue::Float(-40.0)));
    // The simulated sensor moves every `interval-ms`.
    value_until(&mut events, &mut seen, at(5700), |v| *v != first).await;
    // A second subscriber (a restarted device driver) gets it all again.
    let mut again = rt.app_object_events();
    assert!(matches!(
        next_event(&mut again, 5).await,
        AppObjectEvent::Declared { .. }
    ));
    match next_event(&mut again, 5).await {
        AppObjectEvent::Changed { values } => {
            assert!(values.iter().any(|(p, _)| *p == at(5700)));
            assert!(values.iter().any(|(p, _)| *p == at(5603)));
        }
        other => panic!("expected the current values, got {other:?}"),
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_execute_reach_the_app_and_its_answer_returns() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let mut events = running_temperature(&rt, "temperature", "").await;
    let deadline = Duration::from_secs(10);
    let r = rt
        .app_request(
            at(5750),
            AppRequestKind::Write(AppValue::String("greenhouse".into())),
            deadline,
        )
        .await;
    assert_eq!(r, Ok(()));
    // What was written is what the server reads next.
    let greenhouse = AppValue::String("greenhouse".into());
    value_until(&mut events, &mut BTreeMap::new(), at(5750), |v| {
        *v == greenhouse
    })
    .await;
    let r = rt
        .app_request(at(5605), AppRequestKind::Execute(String::new()), deadline)
        .await;
    assert_eq!(r, Ok(()));
    wait_until(10, "the app's answers in its log", || {
        let log = log_text(&rt, "temperature", "temperature");
        log.iter()
            .any(|l| l.contains("application type set to \"greenhouse\""))
            && log.iter().any(|l| l.contains("min/max reset to"))
    })
    .await;
    // The host refuses what the declaration forbids; the app never sees it.
    let read_only = rt
        .app_request(
            at(5700),
            AppRequestKind::Write(AppValue::Float(1.0)),
            deadline,
        )
        .await;
    assert_eq!(read_only, Err(AppFailure::NotAllowed));
    let wrong_type = rt
        .app_request(
            at(5750),
            AppRequestKind::Write(AppValue::Integer(3)),
            deadline,
        )
        .await;
    assert_eq!(wrong_type, Err(AppFailure::BadRequest));
    let undeclared = rt
        .app_request(
            AppPath {
                instance: 7,
                ..at(5750)
            },
            AppRequestKind::Write(AppValue::String("x".into())),
            deadline,
        )
        .await;
    assert_eq!(undeclared, Err(AppFailure::BadRequest));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_app_is_answered_for_at_the_deadline_and_stop_withdraws() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let mut events = running_temperature(&rt, "temperature", "hang = \"true\"\n").await;
    // Reads never wait on the app: its values are there.
    let mut seen = BTreeMap::new();
    value_until(&mut events, &mut seen, at(5700), |v| {
        matches!(v, AppValue::Float(_))
    })
    .await;
    let t = Instant::now();
    let r = rt
        .app_request(
            at(5605),
            AppRequestKind::Execute(String::new()),
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(r, Err(AppFailure::Unavailable));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A request waiting when the app stops fails then, not at its deadline.
    let waiting = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = rt
                .app_request(
                    at(5750),
                    AppRequestKind::Write(AppValue::String("x".into())),
                    Duration::from_secs(60),
                )
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    rt.deactivate("temperature", None).await.unwrap();
    let (r, took) = waiting.await.unwrap();
    assert_eq!(r, Err(AppFailure::Unavailable));
    assert!(took < Duration::from_secs(30), "{took:?}");
    loop {
        match next_event(&mut events, 20).await {
            AppObjectEvent::Withdrawn { object } => {
                assert_eq!(object, 3303);
                break;
            }
            AppObjectEvent::Changed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Nobody serves it now.
    let r = rt
        .app_request(
            at(5605),
            AppRequestKind::Execute(String::new()),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(r, Err(AppFailure::Unavailable));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_without_a_grant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let mut events = rt.app_object_events();
    deliver_install(&rt, "0", &temperature_pkg("ungranted", "", ""))
        .await
        .unwrap();
    rt.activate("ungranted", None).await.unwrap();
    wait_state(&rt, "ungranted", "temperature", ComponentState::Failed, 20).await;
    let log = log_text(&rt, "ungranted", "temperature");
    assert!(
        log.iter().any(|l| l
            .contains("declare refused: object 3303 is not in this component's `objects` grant")),
        "{log:?}"
    );
    assert!(events.try_recv().is_err(), "nothing was declared");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_of_core_ids_and_of_ids_another_package_has_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    // A core object: `pack` refuses it (and install, verifying the same
    // manifest rules, would too).
    for grant in ["objects = [3]", "objects = [26500]"] {
        let pkg = tempfile::tempdir().unwrap();
        std::fs::copy(guest("temperature"), pkg.path().join("temperature.wasm")).unwrap();
        std::fs::write(
            pkg.path().join("manifest.toml"),
            format!(
                "manifest-version = 1\n[package]\nname = \"core\"\nversion = \"1.0.0\"\n\
                 [[component]]\nid = \"t\"\nfile = \"temperature.wasm\"\n\
                 world = \"wasmdm:device/app\"\n[component.sandbox]\n{grant}\n"
            ),
        )
        .unwrap();
        let e = wasmdm_package::pack(pkg.path(), &mut Vec::new(), None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sandbox.objects") && e.contains("the device serves itself"),
            "{e}"
        );
    }
    // 3303 is granted to one installed package: another may not have it.
    deliver_install(&rt, "0", &temperature_pkg("first", "objects = [3303]", ""))
        .await
        .unwrap();
    let e = deliver_install(&rt, "1", &temperature_pkg("second", "objects = [3303]", ""))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("object 3303 is already granted to installed package \"first\""),
        "{e}"
    );
    assert_eq!(e.update_result_hint(), 58);
    assert!(rt.status("second").is_err(), "nothing installed");
    // Its own upgrade keeps the grant.
    let upgrade = package(
        "first",
        "1.1.0",
        "temperature",
        "wasmdm:device/app",
        "objects = [3303]",
        "",
    );
    deliver_install(&rt, "1", &upgrade).await.unwrap();
    // Once it is uninstalled, the id is free.
    rt.uninstall("first").await.unwrap();
    deliver_install(&rt, "1", &temperature_pkg("second", "objects = [3303]", ""))
        .await
        .unwrap();
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_asks_for_sends_after_the_values_they_report() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let mut events = running_temperature(&rt, "temperature", "send-interval-ms = \"300\"\n").await;
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let paths = loop {
        assert!(Instant::now() < deadline, "no Send");
        match next_event(&mut events, 20).await {
            AppObjectEvent::Changed { values } => seen.extend(values),
            AppObjectEvent::Send { paths } => break paths,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(paths, [at(5700), at(5601), at(5602)]);
    // The values it reports reached the subscriber before the Send.
    for p in &paths {
        assert!(seen.contains_key(p), "{p} before the Send: {seen:?}");
    }
    rt.shutdown().await;
}

/// What the host refuses through `wasmdm:device/objects`, as the guest sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_refuses_bad_sets_and_declarations_from_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(config(dir.path())).await.unwrap();
    let mut events = running_temperature(&rt, "temperature", "probe = \"true\"\n").await;
    wait_until(20, "the probe's answers", || {
        log_text(&rt, "temperature", "temperature")
            .iter()
            .any(|l| l.starts_with("probe declare core"))
    })
    .await;
    let log = log_text(&rt, "temperature", "temperature");
    let answer = |what: &str| {
        log.iter()
            .find(|l| l.starts_with(&format!("probe {what}: ")))
            .unwrap_or_else(|| panic!("no answer to {what}: {log:?}"))
            .clone()
    };
    for (what, says) in [
        (
            "set wrong type",
            "refused: /3303/0/5700: a String value for a Float resource",
        ),
        (
            "set undeclared",
            "refused: /3303/0/1: resource 1 is not declared",
        ),
        ("set executable", "refused: /3303/0/5605 is not readable"),
        (
            "set too long",
            "refused: /3303/0/5750: 2000 bytes, at most 1024",
        ),
        (
            "declare again",
            "refused: object 3303 is already declared by this app",
        ),
        (
            "declare ungranted",
            "refused: object 3304 is not in this component's `objects` grant [3303]",
        ),
        ("declare core", "refused: object 3 is an OMA core object"),
    ] {
        let a = answer(what);
        assert!(a.contains(says), "{what}: {a}");
    }
    // None of it reached the subscriber: only the good values.
    let mut seen = BTreeMap::new();
    value_until(&mut events, &mut seen, at(5700), |v| {
        matches!(v, AppValue::Float(_))
    })
    .await;
    assert_eq!(
        seen.get(&at(5750)),
        Some(&AppValue::String("simulated".into()))
    );
    assert!(seen.keys().all(|p| p.object == 3303 && p.resource != 1));
    rt.shutdown().await;
}
