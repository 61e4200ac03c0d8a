//! Object 9 tests: every transition of SwMgmt §5.1.1 and §5.2, every
//! operation in every state, the notification sets of the scenario list,
//! persistence.

use super::*;
use crate::model::{DataType, Value};
use crate::object::Object;
use crate::object::SwMgmtAction;

const I: u16 = 0;

fn cfg() -> SwMgmtConfig {
    SwMgmtConfig {
        max_instances: 3,
        coaps: true,
        https: true,
        max_package_bytes: Some(1 << 20),
    }
}

fn new_sm() -> SoftwareManagement {
    let mut sm = SoftwareManagement::new(cfg());
    sm.create(Some(I), vec![]).unwrap();
    sm.take_changed();
    sm
}

fn s(v: &str) -> ResourceValue {
    ResourceValue::Single(Value::String(v.into()))
}

fn opaque(v: &[u8]) -> ResourceValue {
    ResourceValue::Single(Value::Opaque(v.to_vec()))
}

/// (S, R, A) as the server reads them.
fn sra(sm: &SoftwareManagement) -> (i64, i64, bool) {
    let p = sm.instance(I).unwrap();
    (
        p.update_state.code(),
        p.update_result.code(),
        p.reported_activation(),
    )
}

/// Resource ids notified since the last call.
fn changed(sm: &mut SoftwareManagement) -> Vec<u16> {
    let mut ids: Vec<u16> = sm
        .take_changed()
        .into_iter()
        .filter_map(|p| p.resource)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn act(action: SwMgmtAction) -> Effect {
    Effect::SwMgmt {
        instance: I,
        action,
    }
}

/// The states an instance can be driven to, including the two delivery kinds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    Initial,
    Pulling,
    Pushing,
    Downloaded,
    Delivered,
    Installed,
    Active,
}

const ALL: [At; 7] = [
    At::Initial,
    At::Pulling,
    At::Pushing,
    At::Downloaded,
    At::Delivered,
    At::Installed,
    At::Active,
];

fn at(target: At) -> SoftwareManagement {
    let mut sm = new_sm();
    if target == At::Initial {
        return sm;
    }
    if target == At::Pushing {
        sm.write_block(I, res::PACKAGE, 0, b"abc", false).unwrap();
        sm.take_changed();
        return sm;
    }
    sm.write(I, res::PACKAGE_URI, s("http://files.example/app.wdm"), true)
        .unwrap();
    if target == At::Pulling {
        sm.take_changed();
        return sm;
    }
    sm.package_written(I).unwrap();
    if target == At::Downloaded {
        sm.take_changed();
        return sm;
    }
    sm.integrity_checked(I, Ok(("app".into(), "1.0".into())))
        .unwrap();
    if target == At::Delivered {
        sm.take_changed();
        return sm;
    }
    sm.execute(I, res::INSTALL, b"").unwrap();
    sm.install_finished(
        I,
        Ok(Installed {
            name: "app".into(),
            version: "1.0".into(),
            components: vec![],
            active: false,
        }),
    )
    .unwrap();
    if target == At::Active {
        sm.execute(I, res::ACTIVATE, b"").unwrap();
        sm.activation_finished(I, true).unwrap();
    }
    sm.take_changed();
    sm
}

#[test]
fn codes_and_names() {
    let all = [0, 1, 2, 3, 50, 51, 52, 53, 54, 56, 57, 58, 59];
    for code in all {
        let r = UpdateResult::from_code(code).unwrap();
        assert_eq!(r.code(), code);
        assert!(!r.name().is_empty());
        assert_eq!(r.is_failure(), code >= 50);
    }
    assert_eq!(UpdateResult::from_code(55), None);
    assert_eq!(UpdateResult::from_code(60), None);
    assert_eq!(
        UpdateResult::UninstallForUpdateFailure.name(),
        "Uninstallation failure during forUpdate"
    );
    assert_eq!(
        UpdateResult::InstallFailure.name(),
        "Software installation failure"
    );
    let states = [
        UpdateState::Initial,
        UpdateState::DownloadStarted,
        UpdateState::Downloaded,
        UpdateState::Delivered,
        UpdateState::Installed,
    ];
    for (i, st) in states.iter().enumerate() {
        assert_eq!(st.code(), i as i64);
    }
    assert_eq!(UpdateState::DownloadStarted.name(), "DOWNLOAD STARTED");
    let reasons = [
        (StatusReason::Idle, 10),
        (StatusReason::DownloadFailed, 20),
        (StatusReason::DownloadProgressing, 30),
        (StatusReason::DownloadComplete, 40),
        (StatusReason::InstallProgressing, 50),
        (StatusReason::InstallFailedWithData, 60),
        (StatusReason::InstallFailedWithoutData, 70),
    ];
    for (r, code) in reasons {
        assert_eq!(r.code(), code);
    }
}

/// Scenario "Full cycle": 0/0/0; URI write S=1 & R=1; download S=2 & R=0;
/// verification S=3 alone; Install -> S=4 & R=2; Uninstall -> S=0 & R=0; A never.
#[test]
fn full_pull_cycle_transitions_and_notifications() {
    let mut sm = new_sm();
    assert_eq!(sra(&sm), (0, 0, false));
    let fx = sm
        .write(I, res::PACKAGE_URI, s("http://files.example/app.wdm"), true)
        .unwrap();
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            act(SwMgmtAction::Download {
                uri: "http://files.example/app.wdm".into(),
                username: None,
                password: None
            })
        ]
    );
    assert_eq!(sra(&sm), (1, 1, false));
    assert_eq!(changed(&mut sm), vec![7, 9, 16]);

    let r = sm.download_progress(I, 4096, Some(8192)).unwrap();
    assert!(r.changed.is_empty() && r.effects.is_empty());
    assert_eq!(
        sm.instance(I).unwrap().delivery.as_ref().unwrap().received,
        4096
    );

    let r = sm.package_written(I).unwrap();
    assert_eq!(
        r.effects,
        vec![Effect::Persist, act(SwMgmtAction::VerifyIntegrity)]
    );
    assert_eq!(sra(&sm), (2, 0, false));
    assert_eq!(changed(&mut sm), vec![7, 9, 16]);

    let r = sm
        .integrity_checked(I, Ok(("app".into(), "1.0".into())))
        .unwrap();
    assert_eq!(r.effects, vec![Effect::Persist]);
    assert_eq!(sra(&sm), (3, 0, false));
    // S alone among S/R/A (name and version are now known too).
    assert_eq!(changed(&mut sm), vec![0, 1, 7]);

    let fx = sm.execute(I, res::INSTALL, b"").unwrap();
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            act(SwMgmtAction::Install { upgrade: false })
        ]
    );
    assert_eq!(sra(&sm), (3, 0, false));
    assert_eq!(changed(&mut sm), vec![16]);

    let r = sm
        .install_finished(
            I,
            Ok(Installed {
                name: "app".into(),
                version: "1.0".into(),
                components: vec![],
                active: false,
            }),
        )
        .unwrap();
    assert_eq!(r.effects, vec![Effect::Persist]);
    assert_eq!(sra(&sm), (4, 2, false));
    assert_eq!(changed(&mut sm), vec![7, 9]);

    let fx = sm.execute(I, res::UNINSTALL, b"").unwrap();
    assert_eq!(fx, vec![Effect::Persist, act(SwMgmtAction::Remove)]);
    assert_eq!(sra(&sm), (0, 0, false));
    assert_eq!(changed(&mut sm), vec![0, 1, 7, 9, 16]);
    assert_eq!(sm.uninstall_finished(I, true).unwrap().changed, vec![]);
}

#[test]
fn status_reason_follows_appendix_b() {
    let reason = |sm: &SoftwareManagement| sm.read(I, res::STATUS_REASON).unwrap();
    let code = |c: &str| Some(s(c));
    let mut sm = new_sm();
    assert_eq!(reason(&sm), code("10"));
    sm.write(I, res::PACKAGE_URI, s("coap://h/p"), true)
        .unwrap();
    assert_eq!(reason(&sm), code("30"));
    sm.download_failed(I, UpdateResult::ConnectionLost).unwrap();
    assert_eq!(reason(&sm), code("20"));
    sm.write(I, res::PACKAGE_URI, s("coap://h/p"), true)
        .unwrap();
    sm.package_written(I).unwrap();
    assert_eq!(reason(&sm), code("40"));
    sm.integrity_checked(I, Ok(("a".into(), "1".into())))
        .unwrap();
    assert_eq!(reason(&sm), code("40"));
    sm.execute(I, res::INSTALL, b"").unwrap();
    assert_eq!(reason(&sm), code("50"));
    sm.install_finished(I, Err(UpdateResult::InstallFailure))
        .unwrap();
    assert_eq!(reason(&sm), code("60"));
    sm.execute(I, res::INSTALL, b"").unwrap();
    sm.install_finished(
        I,
        Ok(Installed {
            name: "a".into(),
            version: "1".into(),
            components: vec![],
            active: false,
        }),
    )
    .unwrap();
    assert_eq!(reason(&sm), code("50"));
    sm.execute(I, res::UNINSTALL, b"").unwrap();
    assert_eq!(reason(&sm), code("10"));
}

/// Scenario "Push delivery": whole package as one opaque write, then block-wise.
#[test]
fn push_whole_and_blockwise() {
    let mut sm = new_sm();
    let fx = sm.write(I, res::PACKAGE, opaque(b"PKG"), true).unwrap();
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            act(SwMgmtAction::StorePushed {
                offset: 0,
                data: b"PKG".to_vec(),
                last: true
            })
        ]
    );
    assert_eq!(sra(&sm), (1, 1, false));
    assert_eq!(changed(&mut sm), vec![7, 9, 16]);
    // After the last piece, more pieces are refused until the driver reports.
    assert!(matches!(
        sm.write_block(I, res::PACKAGE, 0, b"x", true),
        Err(OpError::MethodNotAllowed(_))
    ));
    sm.package_written(I).unwrap();
    sm.integrity_checked(I, Ok(("p".into(), "1".into())))
        .unwrap();
    assert_eq!(sra(&sm), (3, 0, false));

    // Block-wise: 1 KiB pieces, a restart at offset 0 (RFC 7959 §2.5), a gap.
    let mut sm = new_sm();
    let block = [7u8; 1024];
    let fx = sm.write_block(I, res::PACKAGE, 0, &block, false).unwrap();
    assert_eq!(fx.len(), 2);
    assert_eq!(changed(&mut sm), vec![7, 9, 16]);
    let fx = sm
        .write_block(I, res::PACKAGE, 1024, &block, false)
        .unwrap();
    assert_eq!(
        fx,
        vec![act(SwMgmtAction::StorePushed {
            offset: 1024,
            data: block.to_vec(),
            last: false
        })]
    );
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    assert!(matches!(
        sm.write_block(I, res::PACKAGE, 4096, &block, false),
        Err(OpError::BadRequest(_))
    ));
    sm.write_block(I, res::PACKAGE, 0, &block, false).unwrap();
    assert_eq!(
        sm.instance(I).unwrap().delivery.as_ref().unwrap().received,
        1024
    );
    let fx = sm.write_block(I, res::PACKAGE, 1024, b"end", true).unwrap();
    assert_eq!(
        fx,
        vec![act(SwMgmtAction::StorePushed {
            offset: 1024,
            data: b"end".to_vec(),
            last: true
        })]
    );
    assert_eq!(sra(&sm), (1, 1, false));
    // Only Package takes block-wise writes.
    assert!(matches!(
        sm.write_block(I, res::PACKAGE_URI, 0, b"x", true),
        Err(OpError::MethodNotAllowed(_))
    ));
}

#[test]
fn push_limits() {
    let mut sm = new_sm();
    // A push must start at 0; an empty Package is no package.
    assert!(matches!(
        sm.write_block(I, res::PACKAGE, 5, b"x", false),
        Err(OpError::BadRequest(_))
    ));
    assert!(matches!(
        sm.write(I, res::PACKAGE, opaque(b""), true),
        Err(OpError::BadRequest(_))
    ));
    // Over the configured size: 4.13 with the limit.
    let big = vec![0u8; 16];
    assert_eq!(
        sm.write_block(I, res::PACKAGE, (1 << 20) - 8, &big, false),
        Err(OpError::TooLarge {
            limit: Some(1 << 20)
        })
    );
    assert!(matches!(
        sm.write_block(I, res::PACKAGE, u64::MAX, &big, false),
        Err(OpError::BadRequest(_))
    ));
    assert_eq!(sra(&sm), (0, 0, false));
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    // Wrong value types.
    assert!(matches!(
        sm.write(I, res::PACKAGE, s("x"), true),
        Err(OpError::BadRequest(_))
    ));
    assert!(matches!(
        sm.write(I, res::PACKAGE_URI, opaque(b"x"), true),
        Err(OpError::BadRequest(_))
    ));
    assert!(matches!(
        sm.write(I, res::PACKAGE_URI, ResourceValue::Multiple(vec![]), true),
        Err(OpError::BadRequest(_))
    ));
    assert_eq!(sra(&sm), (0, 0, false));
}

/// Scenario "Bad input": S=0 empty or unsupported URI -> 4.00, S=0, R=56.
#[test]
fn invalid_uris_set_56_and_stay_initial() {
    let strict = SwMgmtConfig {
        coaps: false,
        https: false,
        ..cfg()
    };
    let bad: &[(&str, SwMgmtConfig)] = &[
        ("", cfg()),
        ("ftp://h/p", cfg()),
        ("coaps+tcp://h/p", cfg()),
        ("https://h/p", strict),
        ("coaps://h/p", strict),
        ("http://h/a b", cfg()),
        ("http:///p", cfg()),
        ("http://:80/p", cfg()),
        ("h/p", cfg()),
        ("http://h/\u{e9}", cfg()),
    ];
    let long = format!("http://h/{}", "a".repeat(250));
    for (uri, config) in bad
        .iter()
        .map(|(u, c)| (u.to_string(), *c))
        .chain([(long, cfg())])
    {
        let mut sm = SoftwareManagement::new(config);
        sm.create(Some(I), vec![]).unwrap();
        sm.take_changed();
        let err = sm.write(I, res::PACKAGE_URI, s(&uri), true).unwrap_err();
        assert!(matches!(err, OpError::BadRequest(_)), "{uri}");
        assert_eq!(sra(&sm), (0, 56, false), "{uri}");
        assert_eq!(changed(&mut sm), vec![9], "{uri}");
        assert_eq!(sm.instance(I).unwrap().package_uri, None);
    }
    let good = [
        "coap://h/p",
        "HTTP://h:8080/p?x=1",
        "http://user@h/p",
        "https://h/p",
        "coaps://[::1]:5684/p",
    ];
    for uri in good {
        let mut sm = new_sm();
        sm.write(I, res::PACKAGE_URI, s(uri), true).unwrap();
        assert_eq!(sra(&sm), (1, 1, false), "{uri}");
    }
    // After a 56, a good URI starts a download (R 56 -> 1).
    let mut sm = new_sm();
    sm.write(I, res::PACKAGE_URI, s(""), true).unwrap_err();
    sm.write(I, res::PACKAGE_URI, s("coap://h/p"), true)
        .unwrap();
    assert_eq!(sra(&sm), (1, 1, false));
}

#[test]
fn credentials_travel_with_the_download_and_never_read_back() {
    let mut sm = new_sm();
    sm.write(I, res::USER_NAME, s("bob"), true).unwrap();
    sm.write(I, res::PASSWORD, s("s3cret"), true).unwrap();
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    for r in [
        res::USER_NAME,
        res::PASSWORD,
        res::PACKAGE,
        res::PACKAGE_URI,
    ] {
        assert!(
            matches!(sm.read(I, r), Err(OpError::MethodNotAllowed(_))),
            "read {r}"
        );
    }
    let fx = sm
        .write(I, res::PACKAGE_URI, s("https://h/p"), true)
        .unwrap();
    assert_eq!(
        fx[1],
        act(SwMgmtAction::Download {
            uri: "https://h/p".into(),
            username: Some("bob".into()),
            password: Some("s3cret".into())
        })
    );
    assert!(matches!(
        sm.write(I, res::PASSWORD, s(&"x".repeat(256)), true),
        Err(OpError::BadRequest(_))
    ));
    assert!(matches!(
        sm.write(
            I,
            res::USER_NAME,
            ResourceValue::Single(Value::Integer(1)),
            true
        ),
        Err(OpError::BadRequest(_))
    ));
}

#[test]
fn download_failures_return_to_initial() {
    for result in [50, 51, 52, 53, 54, 56, 57].map(|c| UpdateResult::from_code(c).unwrap()) {
        let mut sm = at(At::Pulling);
        let r = sm.download_failed(I, result).unwrap();
        assert_eq!(
            r.effects,
            vec![Effect::Persist, act(SwMgmtAction::CancelDelivery)]
        );
        assert_eq!(sra(&sm), (0, result.code(), false));
        assert_eq!(
            r.changed
                .iter()
                .filter_map(|p| p.resource)
                .collect::<Vec<_>>(),
            vec![7, 9, 16]
        );
        // A new delivery may start right away.
        sm.write(I, res::PACKAGE_URI, s("coap://h/p"), true)
            .unwrap();
        assert_eq!(sra(&sm), (1, 1, false));
    }
    // Push failures too.
    let mut sm = at(At::Pushing);
    sm.download_failed(I, UpdateResult::NotEnoughStorage)
        .unwrap();
    assert_eq!(sra(&sm), (0, 50, false));
    // Not a delivery failure: refused, nothing changes.
    for result in [
        UpdateResult::Initial,
        UpdateResult::Downloading,
        UpdateResult::Installed,
        UpdateResult::InstallFailure,
        UpdateResult::UninstallForUpdateFailure,
    ] {
        let mut sm = at(At::Pulling);
        assert_eq!(
            sm.download_failed(I, result),
            Err(SwMgmtError::NotAFailure {
                kind: "download",
                result
            })
        );
        assert_eq!(sra(&sm), (1, 1, false));
    }
}

/// §5.1.1 "PKG Integrity not OK" and scenario "wrong checksum -> R=53, S=0".
#[test]
fn integrity_failure() {
    let mut sm = at(At::Downloaded);
    let r = sm
        .integrity_checked(I, Err(UpdateResult::IntegrityFailure))
        .unwrap();
    assert_eq!(
        r.effects,
        vec![Effect::Persist, act(SwMgmtAction::CancelDelivery)]
    );
    assert_eq!(sra(&sm), (0, 53, false));
    let mut sm = at(At::Downloaded);
    sm.integrity_checked(I, Err(UpdateResult::UnsupportedPackageType))
        .unwrap();
    assert_eq!(sra(&sm), (0, 54, false));
    let mut sm = at(At::Downloaded);
    assert!(
        sm.integrity_checked(I, Err(UpdateResult::Installed))
            .is_err()
    );
    assert_eq!(sra(&sm), (2, 0, false));
}

/// Scenario: install fails -> Install still 2.04; only R notified (58); S stays 3.
#[test]
fn install_failure_only_changes_result() {
    for result in [UpdateResult::InstallFailure, UpdateResult::DeviceDefined] {
        let mut sm = at(At::Delivered);
        sm.execute(I, res::INSTALL, b"").unwrap();
        let mut notified = changed(&mut sm);
        let r = sm.install_finished(I, Err(result)).unwrap();
        assert_eq!(r.effects, vec![Effect::Persist]);
        notified.extend(changed(&mut sm));
        assert_eq!(sra(&sm), (3, result.code(), false));
        assert!(
            !notified.contains(&res::UPDATE_STATE) && !notified.contains(&res::ACTIVATION_STATE)
        );
        assert!(notified.contains(&res::UPDATE_RESULT));
        // Install can be tried again from DELIVERED.
        assert_eq!(
            sm.execute(I, res::INSTALL, b"").unwrap(),
            vec![
                Effect::Persist,
                act(SwMgmtAction::Install { upgrade: false })
            ]
        );
        sm.install_finished(
            I,
            Ok(Installed {
                name: "a".into(),
                version: "2".into(),
                components: vec![],
                active: false,
            }),
        )
        .unwrap();
        assert_eq!(sra(&sm), (4, 2, false));
    }
    let mut sm = at(At::Delivered);
    sm.execute(I, res::INSTALL, b"").unwrap();
    assert_eq!(
        sm.install_finished(I, Err(UpdateResult::Downloading)),
        Err(SwMgmtError::NotAFailure {
            kind: "install",
            result: UpdateResult::Downloading
        })
    );
    // A repeated Install while the driver works adds nothing.
    assert_eq!(sm.execute(I, res::INSTALL, b"").unwrap(), vec![]);
    // Uninstall while installing: 4.05.
    assert!(matches!(
        sm.execute(I, res::UNINSTALL, b""),
        Err(OpError::MethodNotAllowed(_))
    ));
}

/// Scenario: install reports "success and already active" -> S=4, R=2, A=1.
#[test]
fn install_already_active_and_component_links() {
    let mut sm = at(At::Delivered);
    sm.write(
        I,
        res::UPDATE_SUPPORTED_OBJECTS,
        ResourceValue::Single(Value::Boolean(true)),
        true,
    )
    .unwrap();
    assert_eq!(changed(&mut sm), vec![8]);
    sm.execute(I, res::INSTALL, b"").unwrap();
    let r = sm
        .install_finished(
            I,
            Ok(Installed {
                name: "app".into(),
                version: "1.0".into(),
                components: vec![4, 5],
                active: true,
            }),
        )
        .unwrap();
    // /14 instances changed and Update Supported Objects is set: update the registration now.
    assert_eq!(r.effects, vec![Effect::Persist, Effect::RegistrationUpdate]);
    assert_eq!(sra(&sm), (4, 2, true));
    assert_eq!(changed(&mut sm), vec![7, 9, 12, 16, 17, 18]);
    assert_eq!(
        sm.read(I, 18).unwrap(),
        Some(ResourceValue::Single(Value::Integer(2)))
    );
    // Uninstall drops the links and, again, asks for an Update.
    let fx = sm.execute(I, res::UNINSTALL, b"0").unwrap();
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            act(SwMgmtAction::Remove),
            Effect::RegistrationUpdate
        ]
    );
    assert_eq!(sra(&sm), (0, 0, false));
    assert_eq!(changed(&mut sm), vec![0, 1, 7, 9, 12, 16, 17, 18]);
}

/// The Uninstall table: §5.1.1, §5.1.3.2 and the scenario list "Uninstall argument".
#[test]
fn uninstall_in_every_state_with_every_argument() {
    use SwMgmtAction::*;
    type Row = (
        At,
        &'static [u8],
        Option<((i64, i64, bool), &'static [u16], SwMgmtAction)>,
    );
    let rows: &[Row] = &[
        (
            At::Installed,
            b"",
            Some(((0, 0, false), &[0, 1, 7, 9, 16], Remove)),
        ),
        (
            At::Installed,
            b"0",
            Some(((0, 0, false), &[0, 1, 7, 9, 16], Remove)),
        ),
        (
            At::Installed,
            b"0='0'",
            Some(((0, 0, false), &[0, 1, 7, 9, 16], Remove)),
        ),
        (
            At::Installed,
            b"1",
            Some(((0, 0, false), &[7, 9, 16], PrepareForUpdate)),
        ),
        (
            At::Installed,
            b"0='1'",
            Some(((0, 0, false), &[7, 9, 16], PrepareForUpdate)),
        ),
        (
            At::Active,
            b"",
            Some(((0, 0, false), &[0, 1, 7, 9, 12, 16], Remove)),
        ),
        (
            At::Active,
            b"1",
            Some(((0, 0, false), &[7, 9, 12, 16], PrepareForUpdate)),
        ),
        // From DELIVERED: only S notified, R unchanged.
        (
            At::Delivered,
            b"",
            Some(((0, 0, false), &[0, 1, 7, 16], CancelDelivery)),
        ),
        (
            At::Delivered,
            b"0",
            Some(((0, 0, false), &[0, 1, 7, 16], CancelDelivery)),
        ),
        (At::Delivered, b"1", None),
        (At::Initial, b"", None),
        (At::Initial, b"1", None),
        (At::Pulling, b"", None),
        (At::Pushing, b"0", None),
        (At::Downloaded, b"", None),
    ];
    for (state, args, want) in rows {
        let mut sm = at(*state);
        let before = sra(&sm);
        let got = sm.execute(I, res::UNINSTALL, args);
        let label = format!("{state:?} {:?}", String::from_utf8_lossy(args));
        match want {
            Some((after, notified, action)) => {
                assert_eq!(
                    got.unwrap(),
                    vec![Effect::Persist, act(action.clone())],
                    "{label}"
                );
                assert_eq!(sra(&sm), *after, "{label}");
                assert_eq!(changed(&mut sm), notified.to_vec(), "{label}");
            }
            None => {
                assert!(
                    matches!(got, Err(OpError::MethodNotAllowed(_))),
                    "{label}: {got:?}"
                );
                assert_eq!(sra(&sm), before, "{label}");
                assert_eq!(changed(&mut sm), Vec::<u16>::new(), "{label}");
            }
        }
    }
    // Arguments other than 0/1 (or malformed) are 4.00 in any state.
    for args in [&b"2"[..], b"0,1", b"0='2'", b"1='1'", b"x", b" 1", b"0='1"] {
        for state in [At::Installed, At::Delivered, At::Initial] {
            let mut sm = at(state);
            let before = sra(&sm);
            assert!(
                matches!(
                    sm.execute(I, res::UNINSTALL, args),
                    Err(OpError::BadRequest(_))
                ),
                "{args:?}"
            );
            assert_eq!(sra(&sm), before);
        }
    }
    // Delivered with a failed install result: R is kept (§5.1.1 "Update Result unchanged").
    let mut sm = at(At::Delivered);
    sm.execute(I, res::INSTALL, b"").unwrap();
    sm.install_finished(I, Err(UpdateResult::InstallFailure))
        .unwrap();
    sm.execute(I, res::UNINSTALL, b"").unwrap();
    assert_eq!(sra(&sm), (0, 58, false));
}

/// Uninstall(1) then a new package: the Install upgrades; what ran stays
/// linked (and running) until the upgrade's install replaces it.
#[test]
fn for_update_cycle() {
    let mut sm = at(At::Delivered);
    sm.execute(I, res::INSTALL, b"").unwrap();
    sm.install_finished(
        I,
        Ok(Installed {
            name: "app".into(),
            version: "1.0".into(),
            components: vec![1],
            active: true,
        }),
    )
    .unwrap();
    sm.execute(I, res::UNINSTALL, b"1").unwrap();
    let p = sm.instance(I).unwrap();
    assert!(p.for_update);
    assert_eq!(
        (p.pkg_name.as_str(), p.component_links.as_slice()),
        ("app", &[1u16][..])
    );
    assert_eq!(sra(&sm), (0, 0, false));
    sm.uninstall_finished(I, true).unwrap();
    sm.write(I, res::PACKAGE_URI, s("coap://h/v2"), true)
        .unwrap();
    sm.package_written(I).unwrap();
    sm.integrity_checked(I, Ok(("app".into(), "2.0".into())))
        .unwrap();
    assert_eq!(
        sm.execute(I, res::INSTALL, b"").unwrap(),
        vec![
            Effect::Persist,
            act(SwMgmtAction::Install { upgrade: true })
        ]
    );
    sm.install_finished(
        I,
        Ok(Installed {
            name: "app".into(),
            version: "2.0".into(),
            components: vec![2],
            active: true,
        }),
    )
    .unwrap();
    assert_eq!(sra(&sm), (4, 2, true));
    let p = sm.instance(I).unwrap();
    assert!(!p.for_update);
    assert_eq!(p.component_links, vec![2]);
}

#[test]
fn uninstall_failures_reported_by_the_driver() {
    let mut sm = at(At::Installed);
    sm.execute(I, res::UNINSTALL, b"1").unwrap();
    sm.take_changed();
    let r = sm.uninstall_finished(I, false).unwrap();
    assert_eq!(sra(&sm), (0, 59, false));
    assert_eq!(r.changed, vec![Path::resource(9, I, 9)]);
    assert!(!sm.instance(I).unwrap().for_update);
    let mut sm = at(At::Installed);
    sm.execute(I, res::UNINSTALL, b"").unwrap();
    sm.uninstall_finished(I, false).unwrap();
    assert_eq!(sra(&sm), (0, 57, false));
    // A late failure does not overwrite the result of a newer delivery.
    let mut sm = at(At::Installed);
    sm.execute(I, res::UNINSTALL, b"").unwrap();
    sm.write(I, res::PACKAGE_URI, s("coap://h/p"), true)
        .unwrap();
    sm.uninstall_finished(I, false).unwrap();
    assert_eq!(sra(&sm), (1, 1, false));
    // No uninstall pending: unexpected.
    assert!(matches!(
        sm.uninstall_finished(I, true),
        Err(SwMgmtError::UnexpectedEvent { .. })
    ));
}

/// §5.2 and the scenario list "Activation".
#[test]
fn activation_machine() {
    for state in [
        At::Initial,
        At::Pulling,
        At::Pushing,
        At::Downloaded,
        At::Delivered,
    ] {
        let mut sm = at(state);
        for r in [res::ACTIVATE, res::DEACTIVATE] {
            assert!(
                matches!(sm.execute(I, r, b""), Err(OpError::MethodNotAllowed(_))),
                "{state:?} {r}"
            );
        }
        assert!(matches!(
            sm.activation_finished(I, true),
            Err(SwMgmtError::UnexpectedEvent { .. })
        ));
        assert!(!sm.instance(I).unwrap().activation);
    }
    let mut sm = at(At::Installed);
    let a = |sm: &SoftwareManagement| sm.read(I, res::ACTIVATION_STATE).unwrap();
    let enabled = Some(ResourceValue::Single(Value::Boolean(true)));
    let disabled = Some(ResourceValue::Single(Value::Boolean(false)));
    assert_eq!(
        sm.execute(I, res::ACTIVATE, b"").unwrap(),
        vec![Effect::Persist, act(SwMgmtAction::Activate)]
    );
    // §5.2: ACTIVE on the Execute: read and notified before the 2.04.
    assert_eq!(a(&sm), enabled);
    assert_eq!(changed(&mut sm), vec![12]);
    // Already heading there: 2.04, nothing more.
    assert_eq!(sm.execute(I, res::ACTIVATE, b"").unwrap(), vec![]);
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    // The runtime confirms: nothing new to notify.
    let r = sm.activation_finished(I, true).unwrap();
    assert_eq!(r.changed, vec![]);
    assert_eq!(sra(&sm), (4, 2, true));
    assert!(sm.instance(I).unwrap().activation);
    sm.take_changed();
    // Activate a second time: 2.04, no notification.
    assert_eq!(sm.execute(I, res::ACTIVATE, b"").unwrap(), vec![]);
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    assert_eq!(
        sm.execute(I, res::DEACTIVATE, b"").unwrap(),
        vec![Effect::Persist, act(SwMgmtAction::Deactivate)]
    );
    assert_eq!(a(&sm), disabled);
    assert_eq!(changed(&mut sm), vec![12]);
    sm.activation_finished(I, false).unwrap();
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    assert_eq!(sm.execute(I, res::DEACTIVATE, b"").unwrap(), vec![]);
    assert_eq!(changed(&mut sm), Vec::<u16>::new());
    // A failed start reported as "not active": A showed 1 from the Execute,
    // goes back to 0, and both changes are notified.
    sm.execute(I, res::ACTIVATE, b"").unwrap();
    assert_eq!(changed(&mut sm), vec![12]);
    sm.activation_finished(I, false).unwrap();
    assert_eq!(sra(&sm), (4, 2, false));
    assert_eq!(changed(&mut sm), vec![12]);
    // Uninstall while heading to ACTIVE: the machine is not alive, A reads 0.
    sm.execute(I, res::ACTIVATE, b"").unwrap();
    sm.take_changed();
    sm.execute(I, res::UNINSTALL, b"").unwrap();
    assert_eq!(a(&sm), disabled);
    assert!(changed(&mut sm).contains(&12));
    // Malformed arguments: 4.00.
    assert!(matches!(
        sm.execute(I, res::ACTIVATE, b"x"),
        Err(OpError::BadRequest(_))
    ));
}

/// Every state-changing operation in every state: allowed or 4.05 (or 4.00
/// for bad input in INITIAL); a refusal changes nothing (the scenario list
/// "writes in the wrong state").
#[test]
fn every_operation_in_every_state() {
    #[derive(Debug, Clone, Copy)]
    enum Op {
        WritePkgEmpty,
        WritePkg,
        WriteUriEmpty,
        WriteUri,
        Install,
        Uninstall,
        UninstallForUpdate,
        Activate,
        Deactivate,
    }
    use Op::*;
    #[derive(Debug, PartialEq)]
    enum Want {
        Ok,
        NotAllowed,
        Bad,
    }
    use Want::{Bad, NotAllowed as Na, Ok as Y};
    let ops = [
        WritePkgEmpty,
        WritePkg,
        WriteUriEmpty,
        WriteUri,
        Install,
        Uninstall,
        UninstallForUpdate,
        Activate,
        Deactivate,
    ];
    // Rows follow ALL: Initial, Pulling, Pushing, Downloaded, Delivered, Installed, Active.
    let table: [[Want; 9]; 7] = [
        [Bad, Y, Bad, Y, Na, Na, Na, Na, Na],
        [Na, Na, Na, Na, Na, Na, Na, Na, Na],
        // Pushing: an offset-0 piece restarts the push (RFC 7959 §2.5); an empty package is still 4.00.
        [Bad, Y, Na, Na, Na, Na, Na, Na, Na],
        [Na, Na, Na, Na, Na, Na, Na, Na, Na],
        [Na, Na, Na, Na, Y, Y, Na, Na, Na],
        [Na, Na, Na, Na, Na, Y, Y, Y, Y],
        [Na, Na, Na, Na, Na, Y, Y, Y, Y],
    ];
    for (state, row) in ALL.iter().zip(table.iter()) {
        for (op, want) in ops.iter().zip(row.iter()) {
            let mut sm = at(*state);
            let before = sm.instance(I).unwrap().clone();
            let got = match op {
                WritePkgEmpty => sm.write(I, res::PACKAGE, opaque(b""), true),
                WritePkg => sm.write(I, res::PACKAGE, opaque(b"pkg"), true),
                WriteUriEmpty => sm.write(I, res::PACKAGE_URI, s(""), true),
                WriteUri => sm.write(I, res::PACKAGE_URI, s("coap://h/other"), true),
                Install => sm.execute(I, res::INSTALL, b""),
                Uninstall => sm.execute(I, res::UNINSTALL, b""),
                UninstallForUpdate => sm.execute(I, res::UNINSTALL, b"1"),
                Activate => sm.execute(I, res::ACTIVATE, b""),
                Deactivate => sm.execute(I, res::DEACTIVATE, b""),
            };
            let kind = match &got {
                Ok(_) => Y,
                Err(OpError::MethodNotAllowed(_)) => Na,
                Err(OpError::BadRequest(_)) => Bad,
                Err(e) => panic!("{state:?} {op:?}: {e:?}"),
            };
            assert_eq!(&kind, want, "{state:?} {op:?}: {got:?}");
            if kind == Na {
                assert_eq!(
                    sm.instance(I).unwrap(),
                    &before,
                    "{state:?} {op:?} changed state"
                );
                assert_eq!(
                    changed(&mut sm),
                    Vec::<u16>::new(),
                    "{state:?} {op:?} notified"
                );
            }
        }
    }
}

/// Driver events that do not fit the state are refused and change nothing.
#[test]
fn events_in_the_wrong_state() {
    for state in ALL {
        let mut sm = at(state);
        let before = sm.instance(I).unwrap().clone();
        let downloading = matches!(state, At::Pulling | At::Pushing);
        assert_eq!(sm.package_written(I).is_ok(), downloading, "{state:?}");
        let mut sm = at(state);
        assert_eq!(
            sm.download_failed(I, UpdateResult::ConnectionLost).is_ok(),
            downloading,
            "{state:?}"
        );
        let mut sm = at(state);
        assert_eq!(
            sm.download_progress(I, 1, None).is_ok(),
            downloading,
            "{state:?}"
        );
        let mut sm = at(state);
        assert_eq!(
            sm.integrity_checked(I, Ok(("a".into(), "1".into())))
                .is_ok(),
            state == At::Downloaded,
            "{state:?}"
        );
        let mut sm = at(state);
        let ok = Installed {
            name: "a".into(),
            version: "1".into(),
            components: vec![],
            active: false,
        };
        assert_eq!(
            sm.install_finished(I, Ok(ok)).is_ok(),
            state == At::Delivered,
            "{state:?}"
        );
        let mut sm = at(state);
        if !matches!(state, At::Installed | At::Active) {
            assert!(matches!(
                sm.activation_finished(I, true),
                Err(SwMgmtError::UnexpectedEvent { .. })
            ));
            assert_eq!(sm.instance(I).unwrap(), &before);
        }
    }
    let mut sm = new_sm();
    assert_eq!(sm.package_written(9), Err(SwMgmtError::NoInstance(9)));
}

#[test]
fn reads_have_the_declared_types() {
    let mut sm = at(At::Delivered);
    sm.execute(I, res::INSTALL, b"").unwrap();
    sm.install_finished(
        I,
        Ok(Installed {
            name: "app".into(),
            version: "1.0".into(),
            components: vec![3, 8],
            active: false,
        }),
    )
    .unwrap();
    let one = |v: Value| Some(ResourceValue::Single(v));
    assert_eq!(sm.read(I, 0).unwrap(), one(Value::String("app".into())));
    assert_eq!(sm.read(I, 1).unwrap(), one(Value::String("1.0".into())));
    assert_eq!(sm.read(I, 7).unwrap(), one(Value::Integer(4)));
    assert_eq!(sm.read(I, 8).unwrap(), one(Value::Boolean(false)));
    assert_eq!(sm.read(I, 9).unwrap(), one(Value::Integer(2)));
    assert_eq!(sm.read(I, 12).unwrap(), one(Value::Boolean(false)));
    assert_eq!(sm.read(I, 16).unwrap(), one(Value::String("50".into())));
    assert_eq!(
        sm.read(I, 17).unwrap(),
        Some(ResourceValue::Multiple(vec![
            (0, crate::object::objlnk(14, 3)),
            (1, crate::object::objlnk(14, 8))
        ]))
    );
    assert_eq!(sm.read(I, 18).unwrap(), one(Value::Integer(2)));
    for r in [4, 6, 10, 11] {
        assert!(matches!(sm.read(I, r), Err(OpError::MethodNotAllowed(_))));
    }
    for r in [5, 13, 19] {
        assert_eq!(sm.read(I, r), Err(OpError::NotFound));
    }
    assert_eq!(sm.read(7, 0), Err(OpError::NotFound));
    // Every readable resource in the table reads; the table's types match the values.
    for d in sm.resources() {
        if d.operations.readable() {
            let v = sm.read(I, d.id).unwrap().unwrap();
            let first = match v {
                ResourceValue::Single(v) => v,
                ResourceValue::Multiple(mut vs) => vs.remove(0).1,
            };
            let ty = match first {
                Value::String(_) => DataType::String,
                Value::Integer(_) => DataType::Integer,
                Value::Boolean(_) => DataType::Boolean,
                Value::ObjLink(_) => DataType::ObjLink,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(ty, d.data_type, "resource {}", d.id);
        }
    }
    // Read-only and executable resources refuse writes; unknown ones are 4.04.
    assert!(matches!(
        sm.write(I, 7, ResourceValue::Single(Value::Integer(0)), true),
        Err(OpError::MethodNotAllowed(_))
    ));
    assert!(matches!(
        sm.write(I, 4, ResourceValue::Single(Value::Integer(0)), true),
        Err(OpError::MethodNotAllowed(_))
    ));
    assert_eq!(
        sm.write(I, 99, ResourceValue::Single(Value::Integer(0)), true),
        Err(OpError::NotFound)
    );
    assert!(matches!(
        sm.execute(I, 7, b""),
        Err(OpError::MethodNotAllowed(_))
    ));
    assert_eq!(sm.execute(I, 99, b""), Err(OpError::NotFound));
    assert_eq!(sm.execute(5, 4, b""), Err(OpError::NotFound));
}

/// Scenario "Instance create / delete".
#[test]
fn create_and_delete() {
    let mut sm = SoftwareManagement::new(cfg());
    assert_eq!(sm.create(None, vec![]).unwrap(), (0, vec![Effect::Persist]));
    assert_eq!(sm.create(Some(2), vec![]).unwrap().0, 2);
    assert!(matches!(
        sm.create(Some(2), vec![]),
        Err(OpError::BadRequest(_))
    ));
    assert_eq!(sm.create(None, vec![]).unwrap().0, 1);
    // Capacity 3: the fourth is 4.05.
    assert!(matches!(
        sm.create(Some(3), vec![]),
        Err(OpError::MethodNotAllowed(_))
    ));
    assert_eq!(sm.instances(), vec![0, 1, 2]);
    assert_eq!(sm.delete(0).unwrap(), vec![Effect::Persist]);
    assert_eq!(sm.delete(0), Err(OpError::NotFound));
    assert_eq!(sm.instances(), vec![1, 2]);
    // Create with a Package URI starts the pull at once.
    let (id, fx) = sm
        .create(None, vec![(res::PACKAGE_URI, s("coap://h/p"))])
        .unwrap();
    assert_eq!(id, 0);
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            Effect::SwMgmt {
                instance: 0,
                action: SwMgmtAction::Download {
                    uri: "coap://h/p".into(),
                    username: None,
                    password: None
                }
            }
        ]
    );
    // A bad value: nothing created.
    sm.delete(0).unwrap();
    assert!(matches!(
        sm.create(None, vec![(res::PACKAGE_URI, s("ftp://x/y"))]),
        Err(OpError::BadRequest(_))
    ));
    assert_eq!(sm.instances(), vec![1, 2]);
    assert!(sm.take_changed().iter().all(|p| p.instance != Some(0)));
}

#[test]
fn delete_cleans_up_per_state() {
    use SwMgmtAction::*;
    let rows: [(At, Vec<SwMgmtAction>); 7] = [
        (At::Initial, vec![]),
        (At::Pulling, vec![CancelDelivery]),
        (At::Pushing, vec![CancelDelivery]),
        (At::Downloaded, vec![CancelDelivery]),
        (At::Delivered, vec![CancelDelivery]),
        (At::Installed, vec![Remove]),
        (At::Active, vec![Remove]),
    ];
    for (state, actions) in rows {
        let mut sm = at(state);
        let mut want = vec![Effect::Persist];
        want.extend(actions.into_iter().map(act));
        assert_eq!(sm.delete(I).unwrap(), want, "{state:?}");
        assert!(sm.instances().is_empty());
    }
    // ForUpdate prepared: the old software is still there and goes too.
    let mut sm = at(At::Installed);
    sm.execute(I, res::UNINSTALL, b"1").unwrap();
    assert_eq!(sm.delete(I).unwrap(), vec![Effect::Persist, act(Remove)]);
}

#[test]
fn serde_round_trip() {
    let mut sm = at(At::Delivered);
    sm.write(I, res::USER_NAME, s("u"), true).unwrap();
    sm.write(I, res::PASSWORD, s("p"), true).unwrap();
    sm.write(
        I,
        res::UPDATE_SUPPORTED_OBJECTS,
        ResourceValue::Single(Value::Boolean(true)),
        true,
    )
    .unwrap();
    sm.execute(I, res::INSTALL, b"").unwrap();
    sm.install_finished(
        I,
        Ok(Installed {
            name: "app".into(),
            version: "1.0".into(),
            components: vec![1, 2],
            active: true,
        }),
    )
    .unwrap();
    sm.execute(I, res::DEACTIVATE, b"").unwrap();
    sm.create(Some(5), vec![(res::PACKAGE_URI, s("https://h/p"))])
        .unwrap();
    sm.download_progress(5, 100, Some(1000)).unwrap();
    let json = sm.to_json().unwrap();
    let back: SoftwareManagement = serde_json::from_str(&json).unwrap();
    assert_eq!(back.instances(), vec![0, 5]);
    assert_eq!(back.instance(0), sm.instance(0));
    assert_eq!(back.instance(5), sm.instance(5));
    // The password is persisted (the driver needs it to resume) but never readable.
    assert!(matches!(
        back.read(0, res::PASSWORD),
        Err(OpError::MethodNotAllowed(_))
    ));
}

/// Scenario list "Persistence across client restarts".
#[test]
fn restore_after_restart() {
    let restart = |sm: &SoftwareManagement| {
        SoftwareManagement::from_json(&sm.to_json().unwrap(), cfg()).unwrap()
    };
    // Each step survives: fresh 0/0/0; Delivered 3/0/0; Installed 4/2/0; Activated 4/2/1.
    for (state, want, effects) in [
        (At::Initial, (0, 0, false), vec![]),
        (At::Delivered, (3, 0, false), vec![]),
        (At::Installed, (4, 2, false), vec![]),
        (At::Active, (4, 2, true), vec![act(SwMgmtAction::Activate)]),
    ] {
        let (back, fx) = restart(&at(state));
        assert_eq!(sra(&back), want, "{state:?}");
        let mut want_fx = if effects.is_empty() {
            vec![]
        } else {
            vec![Effect::Persist]
        };
        want_fx.extend(effects);
        assert_eq!(fx, want_fx, "{state:?}");
    }
    // Died after the last byte, before the integrity check: verify again -> S=3 later.
    let (mut back, fx) = restart(&at(At::Downloaded));
    assert_eq!(
        fx,
        vec![Effect::Persist, act(SwMgmtAction::VerifyIntegrity)]
    );
    back.integrity_checked(I, Ok(("a".into(), "1".into())))
        .unwrap();
    assert_eq!(sra(&back), (3, 0, false));
    // A pull resumes.
    let mut pulling = at(At::Pulling);
    pulling.download_progress(I, 4000, Some(8000)).unwrap();
    let (back, fx) = restart(&pulling);
    assert_eq!(sra(&back), (1, 1, false));
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            act(SwMgmtAction::Download {
                uri: "http://files.example/app.wdm".into(),
                username: None,
                password: None
            })
        ]
    );
    assert_eq!(
        back.instance(I)
            .unwrap()
            .delivery
            .as_ref()
            .unwrap()
            .received,
        4000
    );
    // A push cannot: INITIAL with 52, partial data dropped.
    let (back, fx) = restart(&at(At::Pushing));
    assert_eq!(sra(&back), (0, 52, false));
    assert_eq!(fx, vec![Effect::Persist, act(SwMgmtAction::CancelDelivery)]);
    // Wrong checksum -> R=53, S=0; after restart S=0, R=0 (failure not kept).
    let mut failed = at(At::Downloaded);
    failed
        .integrity_checked(I, Err(UpdateResult::IntegrityFailure))
        .unwrap();
    let (back, _) = restart(&failed);
    assert_eq!(sra(&back), (0, 0, false));
    assert_eq!(back.read(I, res::STATUS_REASON).unwrap(), Some(s("10")));
    // An install in flight is re-issued (restart-based installs report after reboot).
    let mut installing = at(At::Delivered);
    installing.execute(I, res::INSTALL, b"").unwrap();
    let (mut back, fx) = restart(&installing);
    assert_eq!(sra(&back), (3, 0, false));
    assert_eq!(
        fx,
        vec![
            Effect::Persist,
            act(SwMgmtAction::Install { upgrade: false })
        ]
    );
    back.install_finished(I, Err(UpdateResult::InstallFailure))
        .unwrap();
    assert_eq!(sra(&back), (3, 58, false));
    // An uninstall in flight is re-issued.
    let mut removing = at(At::Installed);
    removing.execute(I, res::UNINSTALL, b"").unwrap();
    let (_, fx) = restart(&removing);
    assert_eq!(fx, vec![Effect::Persist, act(SwMgmtAction::Remove)]);
    // Garbage is an error, not a panic.
    assert!(SoftwareManagement::from_json("{\"instances\":7}", cfg()).is_err());
}

/// The engine sees changes through the trait object, not only the inherent method.
#[test]
fn changes_reach_the_engine_through_the_object_trait() {
    let mut sm = new_sm();
    sm.package_written(I).unwrap_err();
    sm.write(I, res::PACKAGE_URI, s("coap://h/p"), true)
        .unwrap();
    sm.download_failed(I, UpdateResult::ConnectionLost).unwrap();
    let obj: &mut dyn Object = &mut sm;
    let paths = obj.take_changed();
    assert_eq!(paths.first(), Some(&Path::resource(9, I, 7)));
    assert!(paths.contains(&Path::resource(9, I, 9)));
    assert!(obj.take_changed().is_empty());
}
