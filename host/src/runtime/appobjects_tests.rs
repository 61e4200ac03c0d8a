use super::*;

fn res(id: u16, value_type: AppValueType, operations: AppOperations) -> AppResourceDef {
    AppResourceDef {
        id,
        value_type,
        operations,
        multiple: false,
        mandatory: false,
    }
}

fn temperature() -> AppObjectDef {
    AppObjectDef {
        id: 3303,
        version: Some("1.1".into()),
        instances: vec![0],
        resources: vec![
            res(5700, AppValueType::Float, AppOperations::Read),
            res(5750, AppValueType::String, AppOperations::ReadWrite),
            res(5605, AppValueType::String, AppOperations::Execute),
            AppResourceDef {
                multiple: true,
                ..res(1, AppValueType::Integer, AppOperations::Read)
            },
        ],
    }
}

fn grant(package: &str, objects: &[u16]) -> AppGrant {
    AppGrant {
        package: package.into(),
        component: "c".into(),
        objects: objects.to_vec(),
    }
}

fn p(resource: u16, ri: Option<u16>) -> AppPath {
    path(3303, 0, resource, ri)
}

#[test]
fn declare_is_checked_against_grant_core_ids_and_other_apps() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303, 3]));
    let e = a
        .declare(AppObjectDef {
            id: 3,
            ..temperature()
        })
        .unwrap_err();
    assert!(e.contains("OMA core object"), "{e}");
    let e = a
        .declare(AppObjectDef {
            id: 3304,
            ..temperature()
        })
        .unwrap_err();
    assert!(e.contains("not in this component's `objects` grant"), "{e}");
    a.declare(temperature()).unwrap();
    assert!(
        a.declare(temperature())
            .unwrap_err()
            .contains("already declared")
    );
    let mut b = reg.instance(grant("b", &[3303]));
    let e = b.declare(temperature()).unwrap_err();
    assert!(e.contains("served by a/c"), "{e}");
    // Once `a` is gone, `b` may serve it.
    drop(a);
    b.declare(temperature()).unwrap();
}

#[test]
fn declarations_over_the_caps_are_refused() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    let many = AppObjectDef {
        instances: (0..17).collect(),
        ..temperature()
    };
    assert!(a.declare(many).unwrap_err().contains("at most 16"));
    let many = AppObjectDef {
        resources: (0..33)
            .map(|i| res(i, AppValueType::Integer, AppOperations::Read))
            .collect(),
        ..temperature()
    };
    assert!(a.declare(many).unwrap_err().contains("at most 32"));
    let dup = AppObjectDef {
        instances: vec![1, 1],
        ..temperature()
    };
    assert!(a.declare(dup).unwrap_err().contains("twice"));
    let bad = AppObjectDef {
        version: Some("one".into()),
        ..temperature()
    };
    assert!(a.declare(bad).unwrap_err().contains("major.minor"));
    assert!(reg.lock().served.is_empty(), "nothing stored");
}

#[test]
fn set_checks_type_path_and_size() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    a.declare(temperature()).unwrap();
    a.set(p(5700, None), AppValue::Float(21.5)).unwrap();
    let e = a.set(p(5700, None), AppValue::Integer(21)).unwrap_err();
    assert!(e.contains("Integer value for a Float"), "{e}");
    assert!(a.set(p(5700, None), AppValue::Float(f64::NAN)).is_err());
    assert!(a.set(p(5605, None), AppValue::String("x".into())).is_err());
    assert!(a.set(p(9, None), AppValue::Float(1.0)).is_err());
    assert!(
        a.set(path(3303, 1, 5700, None), AppValue::Float(1.0))
            .is_err()
    );
    assert!(a.set(p(5700, Some(0)), AppValue::Float(1.0)).is_err());
    assert!(a.set(p(1, None), AppValue::Integer(1)).is_err());
    let big = AppValue::String("x".repeat(MAX_VALUE_BYTES + 1));
    assert!(
        a.set(p(5750, None), big)
            .unwrap_err()
            .contains("at most 1024")
    );
    for ri in 0..MAX_RESOURCE_INSTANCES as u16 {
        a.set(p(1, Some(ri)), AppValue::Integer(ri.into())).unwrap();
    }
    assert!(a.set(p(1, Some(99)), AppValue::Integer(0)).is_err());
    // Another app cannot publish into it.
    let mut b = reg.instance(grant("b", &[3303]));
    assert!(b.set(p(5700, None), AppValue::Float(1.0)).is_err());
}

#[tokio::test]
async fn events_redeclare_then_coalesce_and_withdraw() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    a.declare(temperature()).unwrap();
    a.set(p(5700, None), AppValue::Float(1.0)).unwrap();
    // Subscribing late loses nothing.
    let mut rx = reg.subscribe();
    assert!(
        matches!(rx.recv().await, Some(AppObjectEvent::Declared { ref package, .. }) if package == "a")
    );
    assert_eq!(
        rx.recv().await,
        Some(AppObjectEvent::Changed {
            values: vec![(p(5700, None), AppValue::Float(1.0))]
        })
    );
    // A burst of sets becomes few events, the last carrying the newest value.
    for i in 0..1000 {
        a.set(p(5700, None), AppValue::Float(f64::from(i))).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut last = None;
    let mut events = 0;
    while let Ok(ev) = rx.try_recv() {
        events += 1;
        last = Some(ev);
    }
    assert!(events < 10, "{events} events for one burst");
    assert_eq!(
        last,
        Some(AppObjectEvent::Changed {
            values: vec![(p(5700, None), AppValue::Float(999.0))]
        })
    );
    drop(a);
    assert_eq!(
        rx.recv().await,
        Some(AppObjectEvent::Withdrawn { object: 3303 })
    );
}

#[tokio::test]
async fn requests_reach_the_app_and_its_answer_returns() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    a.declare(temperature()).unwrap();
    let write = {
        let reg = reg.clone();
        tokio::spawn(async move {
            reg.request(
                p(5750, None),
                AppRequestKind::Write(AppValue::String("room".into())),
                Duration::from_secs(5),
            )
            .await
        })
    };
    let req = a.next_request(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        req.kind,
        AppRequestKind::Write(AppValue::String("room".into()))
    );
    a.respond(req.id, Ok(()));
    assert_eq!(write.await.unwrap(), Ok(()));
    // The written value is now what a Read gets.
    assert_eq!(
        reg.lock().served[&3303].values.get(&(0, 5750, None)),
        Some(&AppValue::String("room".into()))
    );
    // Checked by the host before the app sees them.
    let r = reg
        .request(
            p(5700, None),
            AppRequestKind::Write(AppValue::Float(1.0)),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(r, Err(AppFailure::NotAllowed));
    let r = reg
        .request(
            p(5750, None),
            AppRequestKind::Write(AppValue::Integer(1)),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(r, Err(AppFailure::BadRequest));
    let r = reg
        .request(
            p(5700, None),
            AppRequestKind::Execute(String::new()),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(r, Err(AppFailure::NotAllowed));
    let r = reg
        .request(
            path(3304, 0, 1, None),
            AppRequestKind::Execute(String::new()),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(r, Err(AppFailure::Unavailable));
    // An app's refusal reaches the caller.
    let exec = {
        let reg = reg.clone();
        tokio::spawn(async move {
            reg.request(
                p(5605, None),
                AppRequestKind::Execute("x".into()),
                Duration::from_secs(5),
            )
            .await
        })
    };
    let req = a.next_request(Duration::from_secs(5)).await.unwrap();
    a.respond(req.id, Err(AppFailure::BadRequest));
    assert_eq!(exec.await.unwrap(), Err(AppFailure::BadRequest));
}

#[tokio::test]
async fn deadline_cap_and_stop_answer_unavailable() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    a.declare(temperature()).unwrap();
    let exec = || AppRequestKind::Execute(String::new());
    // Nobody takes it: the deadline answers.
    let t = Instant::now();
    let r = reg
        .request(p(5605, None), exec(), Duration::from_millis(100))
        .await;
    assert_eq!(r, Err(AppFailure::Unavailable));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        reg.lock().served[&3303].inbox.lock().waiting.is_empty(),
        "forgotten"
    );
    // Eight wait; the ninth is refused at once.
    let mut waiting = Vec::new();
    for _ in 0..MAX_WAITING_REQUESTS {
        let reg = reg.clone();
        waiting.push(tokio::spawn(async move {
            reg.request(p(5605, None), exec(), Duration::from_secs(30))
                .await
        }));
    }
    while a.inbox.lock().waiting.len() < MAX_WAITING_REQUESTS {
        tokio::task::yield_now().await;
    }
    let t = Instant::now();
    let r = reg
        .request(p(5605, None), exec(), Duration::from_secs(30))
        .await;
    assert_eq!(r, Err(AppFailure::Unavailable));
    assert!(t.elapsed() < Duration::from_secs(10));
    // The app stops: all of them fail at once, and it serves nothing more.
    let mut rx = reg.subscribe();
    let _declared = rx.recv().await;
    drop(a);
    for w in waiting {
        assert_eq!(w.await.unwrap(), Err(AppFailure::Unavailable));
    }
    assert_eq!(
        rx.recv().await,
        Some(AppObjectEvent::Withdrawn { object: 3303 })
    );
    assert!(reg.lock().served.is_empty());
}

#[tokio::test]
async fn send_is_checked_and_rate_limited() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    a.declare(temperature()).unwrap();
    let mut rx = reg.subscribe();
    let _declared = rx.recv().await;
    assert!(a.send(vec![]).is_err());
    assert!(
        a.send(vec![p(5605, None)])
            .unwrap_err()
            .contains("not readable")
    );
    a.set(p(5700, None), AppValue::Float(3.0)).unwrap();
    a.send(vec![p(5700, None)]).unwrap();
    // The value goes before the Send that reports it.
    assert!(matches!(
        rx.recv().await,
        Some(AppObjectEvent::Changed { .. })
    ));
    assert_eq!(
        rx.recv().await,
        Some(AppObjectEvent::Send {
            paths: vec![p(5700, None)]
        })
    );
    assert!(
        a.send(vec![p(5700, None)])
            .unwrap_err()
            .contains("once per second")
    );
}

#[test]
fn grants_conflict_across_installed_packages_only() {
    use crate::runtime::spec::{ComponentSpec, PackageSpec, Sandbox, World};
    let pkg = |name: &str, objects: Vec<u16>| PackageSpec {
        name: name.into(),
        version: "1.0.0".into(),
        description: None,
        config: Default::default(),
        components: vec![ComponentSpec {
            id: "app".into(),
            version: "1.0.0".into(),
            file: "app.wasm".into(),
            sha256: String::new(),
            world: World::App,
            sandbox: Sandbox {
                objects,
                ..Sandbox::default()
            },
        }],
    };
    let installed = [pkg("thermo", vec![3303]), pkg("other", vec![3304])];
    let (comp, why) = grant_conflict(&pkg("new", vec![3303]), installed.iter()).unwrap_err();
    assert_eq!(comp, "app");
    assert!(why.contains("installed package \"thermo\""), "{why}");
    // An upgrade of the package that holds the grant is fine.
    grant_conflict(&pkg("thermo", vec![3303]), installed.iter()).unwrap();
    grant_conflict(&pkg("new", vec![3305]), installed.iter()).unwrap();
}

#[tokio::test]
async fn a_stop_request_fails_waiting_requests_at_once() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    a.declare(temperature()).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    a.watch_stop(rx);
    let waiting = {
        let reg = reg.clone();
        tokio::spawn(async move {
            reg.request(
                p(5605, None),
                AppRequestKind::Execute(String::new()),
                Duration::from_secs(60),
            )
            .await
        })
    };
    while a.inbox.lock().waiting.is_empty() {
        tokio::task::yield_now().await;
    }
    // The app is still there (in its grace period), but asked to stop.
    stop.send_replace(true);
    let r = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    assert_eq!(r.unwrap().unwrap(), Err(AppFailure::Unavailable));
    let r = reg
        .request(
            p(5605, None),
            AppRequestKind::Execute(String::new()),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(r, Err(AppFailure::Unavailable), "nothing more is accepted");
}

#[test]
fn values_of_one_object_are_capped_in_total() {
    let reg = AppObjects::new();
    let mut a = reg.instance(grant("a", &[3303]));
    let def = AppObjectDef {
        id: 3303,
        version: None,
        instances: vec![0],
        resources: vec![AppResourceDef {
            multiple: true,
            ..res(7, AppValueType::Opaque, AppOperations::Read)
        }],
    };
    a.declare(def).unwrap();
    let kib = || AppValue::Opaque(vec![0; MAX_VALUE_BYTES]);
    let fits = MAX_OBJECT_VALUE_BYTES / value_cost(&kib());
    for ri in 0..fits as u16 {
        a.set(p(7, Some(ri)), kib()).unwrap();
    }
    let e = a.set(p(7, Some(fits as u16)), kib()).unwrap_err();
    assert!(e.contains("more than 16384"), "{e}");
    // Replacing a value counts only the difference, and frees what it drops.
    a.set(p(7, Some(0)), kib()).unwrap();
    a.set(p(7, Some(0)), AppValue::Opaque(Vec::new())).unwrap();
    a.set(p(7, Some(fits as u16)), kib()).unwrap();
}
