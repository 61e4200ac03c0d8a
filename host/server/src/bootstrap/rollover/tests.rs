//! The rollover state machine: what the store accepts in each state, and
//! the promotion rules as the driver applies them to a session's outcome.

use wasmdm_proto::bootstrap::Accounts;
use wasmdm_proto::coap::msg::Code;
use wasmdm_proto::model::{ContentFormat, Path};
use wasmdm_proto::objects::Security;

use super::*;
use crate::bootstrap::config::ServerAccount;
use crate::bootstrap::session::{
    Next, Plan, ResolvedAccount, Session, SessionStatus, bootstrap_account,
};

const OLD_KEY: [u8; 16] = [7; 16];
const BS_URI: &str = "coaps://bs.example:5784";
const DISCOVER: &[u8] = br#"lwm2m="1.1",</0/0>;uri="coaps://bs.example:5784",</1>,</3/0>"#;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.put_bootstrap_endpoints(&[BootstrapEndpoint {
        endpoint: "dev".into(),
        credential: BootstrapCredential::Psk {
            identity: "bs-dev".into(),
            key: OLD_KEY.to_vec(),
        },
        labels: vec![],
        config: None,
        updated_ms: 1,
        pending: None,
    }])
    .unwrap();
    (dir, s)
}

fn started(s: &Store) -> PendingCredential {
    match s.start_bootstrap_rollover("dev", 100).unwrap() {
        RolloverStart::Started(p) => p,
        other => panic!("{other:?}"),
    }
}

/// The endpoint `identity` authenticates as, and with which key.
fn who(s: &Store, identity: &str) -> Option<(String, Vec<u8>)> {
    let e = s.bootstrap_by_identity(identity).unwrap()?;
    let key = e.psk_key(identity)?;
    Some((e.endpoint, key))
}

/// A session of `dev` planned as the driver plans it.
fn session(s: &Store) -> Session {
    let account = s.bootstrap_endpoint("dev").unwrap();
    let plan = Plan {
        delete: vec!["/0".into(), "/1".into()],
        accounts: vec![ResolvedAccount {
            account: ServerAccount {
                uri: "coaps://lwm2m.example:5684".into(),
                ..ServerAccount::default()
            },
            psk: Some(("dev".into(), vec![0x22; 16])),
        }],
        format: ContentFormat::Tlv,
        rollover: to_write(account.as_ref()),
    };
    Session::new("dev", "127.0.0.1:9", "psk", 0, plan)
}

/// Answers the session's requests like a device whose bootstrap account is
/// /0/0 at [`BS_URI`], applying the Writes of /0/0 to `device` with the
/// device's own decoder, until Finish (not answered) or the end.
fn run_to_finish(s: &mut Session, device: &mut Accounts, bootstrap_write: Code) {
    loop {
        match s.poll() {
            Some(Next::Send(req)) if req.path == ["bs"] => return,
            Some(Next::Send(req)) => {
                let code = match (req.method, req.path.as_slice()) {
                    (coap_lite::RequestType::Get, _) => {
                        s.handle_response(Code::CONTENT, DISCOVER);
                        continue;
                    }
                    (coap_lite::RequestType::Delete, _) => Code::DELETED,
                    (coap_lite::RequestType::Put, [o, i]) if o == "0" && i == "0" => {
                        if bootstrap_write.is_success() {
                            let node = wasmdm_proto::bootstrap::accounts::decode_write(
                                &req.payload,
                                Path::instance(0, 0),
                                req.content_format,
                            )
                            .unwrap();
                            device.write(Path::instance(0, 0), node, 8).unwrap();
                        }
                        bootstrap_write
                    }
                    _ => Code::CHANGED,
                };
                s.handle_response(code, b"");
            }
            Some(Next::Store(_)) => s.handle_stored(Ok(())),
            Some(Next::Done) | None => return,
        }
    }
}

fn factory_device() -> Accounts {
    let mut bs = Security::nosec(BS_URI, 0);
    bs.bootstrap = true;
    bs.security_mode = 0;
    bs.public_key_or_identity = b"bs-dev".to_vec();
    bs.secret_key = OLD_KEY.to_vec();
    bs.client_hold_off = 3;
    let mut a = Accounts::default();
    a.security.insert(0, bs);
    a
}

#[test]
fn a_rollover_is_accepted_next_to_the_current_credential_and_kept_once() {
    let (_d, s) = store();
    let p = started(&s);
    assert!(p.identity.starts_with("dev-bs-") && p.identity.len() == 15);
    assert_eq!(p.key.len(), ROLLOVER_KEY_LEN);
    assert_ne!(p.key, OLD_KEY);
    // Both authenticate the endpoint, each with its own key.
    assert_eq!(who(&s, "bs-dev"), Some(("dev".into(), OLD_KEY.to_vec())));
    assert_eq!(who(&s, &p.identity), Some(("dev".into(), p.key.clone())));
    // A second rollover keeps the pending one (the device may hold it).
    assert_eq!(
        s.start_bootstrap_rollover("dev", 200).unwrap(),
        RolloverStart::AlreadyPending(p.clone())
    );
    // Durable: a reopened store has it.
    let e = s.bootstrap_endpoint("dev").unwrap().unwrap();
    assert_eq!(e.pending, Some(p.clone()));
    // The key never shows in Debug.
    assert!(!format!("{e:?}").contains(&hex::encode(&p.key)));
    // Not for unknown or non-PSK accounts.
    assert!(matches!(
        s.start_bootstrap_rollover("nobody", 1),
        Err(RolloverError::Unknown(_))
    ));
    s.put_bootstrap_endpoints(&[BootstrapEndpoint {
        endpoint: "cert".into(),
        credential: BootstrapCredential::X509,
        labels: vec![],
        config: None,
        updated_ms: 1,
        pending: None,
    }])
    .unwrap();
    assert!(matches!(
        s.start_bootstrap_rollover("cert", 1),
        Err(RolloverError::NotPsk(..))
    ));
    // Another endpoint may not take the pending identity.
    let clash = BootstrapEndpoint {
        endpoint: "other".into(),
        credential: BootstrapCredential::Psk {
            identity: p.identity.clone(),
            key: OLD_KEY.to_vec(),
        },
        labels: vec![],
        config: None,
        updated_ms: 1,
        pending: None,
    };
    let (_, e) = s.put_bootstrap_endpoints(&[clash]).unwrap_err();
    assert!(matches!(e, BootstrapConfigError::IdentityInUse { .. }));
    // Removing the account frees both identities.
    assert!(s.remove_bootstrap_endpoint("dev").unwrap());
    assert_eq!(who(&s, "bs-dev"), None);
    assert_eq!(who(&s, &p.identity), None);
}

/// Finish answered 2.04: the device committed the write; the new
/// credential becomes the only one.
#[test]
fn finish_2_04_promotes_and_the_old_identity_is_refused() {
    let (_d, s) = store();
    let p = started(&s);
    let mut device = factory_device();
    let mut sess = session(&s);
    run_to_finish(&mut sess, &mut device, Code::CHANGED);
    let written = sess.rollover_written().map(str::to_string);
    assert_eq!(written.as_deref(), Some(p.identity.as_str()));
    // The write kept the device's URI and hold-off, and is consistent.
    let bs = &device.security[&0];
    assert_eq!(bs.server_uri, BS_URI);
    assert!(bs.bootstrap);
    assert_eq!(bs.security_mode, 0);
    assert_eq!(bs.public_key_or_identity, p.identity.as_bytes());
    assert_eq!(bs.secret_key, p.key);
    assert_eq!(bs.client_hold_off, 3);
    let step = sess
        .record()
        .steps
        .iter()
        .find(|st| st.path == "/0/0")
        .unwrap();
    let detail = step.detail.clone().unwrap();
    assert!(detail.contains(&p.identity) && detail.contains("<generated 32 bytes>"));
    assert!(
        !serde_json::to_string(sess.record())
            .unwrap()
            .contains(&hex::encode(&p.key))
    );

    s.mark_bootstrap_rollover_written("dev", &p.identity, 300)
        .unwrap();
    sess.handle_response(Code::CHANGED, b"");
    assert_eq!(sess.record().status, SessionStatus::Succeeded);
    let id = promote_after(true, sess.rollover_written()).unwrap();
    assert!(s.promote_bootstrap_rollover("dev", id, 400).unwrap());
    assert_eq!(who(&s, "bs-dev"), None, "the old identity is refused");
    assert_eq!(who(&s, &p.identity), Some(("dev".into(), p.key.clone())));
    let e = s.bootstrap_endpoint("dev").unwrap().unwrap();
    assert_eq!(e.pending, None);
    assert_eq!(e.updated_ms, 400);
    // The next session writes no bootstrap account.
    assert_eq!(to_write(Some(&e)), None);
    // A late, repeated promotion changes nothing.
    assert!(!s.promote_bootstrap_rollover("dev", id, 500).unwrap());
}

/// The 2.04 to Finish was lost: the session failed, both stay valid (the
/// device may hold either); the device's next Bootstrap-Request over the
/// new identity proves it has it and promotes it.
#[test]
fn a_lost_finish_answer_keeps_both_until_the_new_identity_is_seen() {
    let (_d, s) = store();
    let p = started(&s);
    let mut device = factory_device();
    let mut sess = session(&s);
    run_to_finish(&mut sess, &mut device, Code::CHANGED);
    s.mark_bootstrap_rollover_written("dev", &p.identity, 300)
        .unwrap();
    sess.handle_no_response();
    assert_eq!(sess.record().status, SessionStatus::Failed);
    let succeeded = sess.record().status == SessionStatus::Succeeded;
    assert_eq!(promote_after(succeeded, sess.rollover_written()), None);
    assert!(who(&s, "bs-dev").is_some() && who(&s, &p.identity).is_some());
    // Written: no longer cancellable (the device may use it).
    assert_eq!(s.cancel_bootstrap_rollover("dev").unwrap(), Err(300));
    // A device still on the old identity bootstraps, and is offered it again.
    let e = s.bootstrap_endpoint("dev").unwrap().unwrap();
    assert!(!proves_pending(&e, b"bs-dev"));
    assert!(to_write(Some(&e)).is_some());
    // The device on the new identity: promotion at admission.
    assert!(proves_pending(&e, p.identity.as_bytes()));
    assert!(
        s.promote_bootstrap_rollover("dev", &p.identity, 600)
            .unwrap()
    );
    assert_eq!(who(&s, "bs-dev"), None);
    assert_eq!(who(&s, &p.identity), Some(("dev".into(), p.key)));
}

/// Cut off before Finish (timeout, a refused server account, a stopped
/// server): nothing changes, the next session writes the same credential.
#[test]
fn a_session_cut_before_finish_keeps_both_and_retries() {
    let (_d, s) = store();
    let p = started(&s);
    let mut device = factory_device();
    let mut sess = session(&s);
    // Up to the bootstrap account's Write, then the session times out.
    loop {
        match sess.poll() {
            Some(Next::Send(req)) if req.path == ["0", "0"] => break,
            Some(Next::Send(req)) if req.method == coap_lite::RequestType::Get => {
                sess.handle_response(Code::CONTENT, DISCOVER)
            }
            Some(Next::Send(_)) => sess.handle_response(Code::CHANGED, b""),
            Some(Next::Store(_)) => sess.handle_stored(Ok(())),
            other => panic!("{other:?}"),
        }
    }
    sess.abort(SessionStatus::TimedOut, "session timeout");
    assert_eq!(sess.rollover_written(), None);
    assert!(who(&s, "bs-dev").is_some() && who(&s, &p.identity).is_some());
    // Not written yet: the operator may still cancel; here the next session
    // tries again with the same credential.
    let again = to_write(s.bootstrap_endpoint("dev").unwrap().as_ref()).unwrap();
    assert_eq!(again.identity, p.identity);
    assert_eq!(again.key, p.key);
    let mut sess = session(&s);
    run_to_finish(&mut sess, &mut device, Code::CHANGED);
    assert_eq!(sess.rollover_written(), Some(p.identity.as_str()));
    // Cancel before any write: the pending identity is gone.
    let (_d2, s2) = store();
    let p2 = started(&s2);
    assert_eq!(s2.cancel_bootstrap_rollover("dev").unwrap(), Ok(true));
    assert_eq!(who(&s2, &p2.identity), None);
    assert!(who(&s2, "bs-dev").is_some());
    assert_eq!(s2.cancel_bootstrap_rollover("dev").unwrap(), Ok(false));
}

/// A device refusing the Write of its bootstrap account still gets its
/// server accounts; the rollover stays pending, noted in the record.
#[test]
fn a_refused_bootstrap_write_leaves_the_rollover_pending() {
    let (_d, s) = store();
    started(&s);
    let mut device = factory_device();
    let mut sess = session(&s);
    run_to_finish(&mut sess, &mut device, Code::BAD_REQUEST);
    assert_eq!(device, factory_device());
    assert_eq!(sess.rollover_written(), None);
    sess.handle_response(Code::CHANGED, b"");
    assert_eq!(sess.record().status, SessionStatus::Succeeded);
    let note = sess.record().rollover.clone().unwrap();
    assert!(note.contains("refused") && note.contains("4.00"), "{note}");
    assert_eq!(promote_after(true, sess.rollover_written()), None);
    assert!(
        s.bootstrap_endpoint("dev")
            .unwrap()
            .unwrap()
            .pending
            .is_some()
    );
}

#[test]
fn the_bootstrap_account_is_found_in_discover() {
    assert_eq!(bootstrap_account(DISCOVER), Some((0, BS_URI.to_string())));
    assert_eq!(
        bootstrap_account(
            br#"lwm2m="1.1",</0/1>;ssid=1;uri="coaps://s:5684",</0/4>;uri="coaps://a,b:1""#
        ),
        Some((4, "coaps://a,b:1".to_string()))
    );
    // None listed, no URI, or two candidates: unknown.
    assert_eq!(bootstrap_account(br#"</0/1>;ssid=1;uri="coaps://s""#), None);
    assert_eq!(bootstrap_account(b"</0/0>"), None);
    assert_eq!(
        bootstrap_account(br#"</0/0>;uri="coaps://a",</0/1>;uri="coaps://b""#),
        None
    );
    assert_eq!(bootstrap_account(b"\xff"), None);
    assert_eq!(new_identity("dev", "0a0b0c0d"), "dev-bs-0a0b0c0d");
    let long = "é".repeat(100);
    let id = new_identity(&long, "0a0b0c0d");
    assert!(id.len() <= 128 && id.ends_with("-bs-0a0b0c0d"), "{id}");
}

/// Without a bootstrap account in Discover (a 1.0 device answering 4.04),
/// nothing is written to /0 for the rollover, and the record says why.
#[test]
fn no_discover_no_bootstrap_write() {
    let (_d, s) = store();
    started(&s);
    let mut sess = session(&s);
    let mut paths = Vec::new();
    loop {
        match sess.poll() {
            Some(Next::Send(req)) => {
                paths.push(req.path.join("/"));
                let code = match req.method {
                    coap_lite::RequestType::Get => Code::NOT_FOUND,
                    _ => Code::CHANGED,
                };
                sess.handle_response(code, b"");
            }
            Some(Next::Store(_)) => sess.handle_stored(Ok(())),
            _ => break,
        }
    }
    assert_eq!(paths, ["0", "1", "0", "0/1", "1/0", "bs"]);
    assert_eq!(sess.record().status, SessionStatus::Succeeded);
    assert!(
        sess.record()
            .rollover
            .clone()
            .unwrap()
            .contains("no bootstrap account")
    );
}
