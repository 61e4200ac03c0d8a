//! A DTLS handshake with the server that fails (Core 1.1 §6.2.1.1): the
//! Register or Update it was to carry fails at once, as a registration
//! failure, instead of after CoAP's retransmissions (~93 s). `drop_to_server`
//! stands for the DTLS layer holding the datagrams of a handshake that
//! never completes.

use super::*;

fn is_register(p: &Packet) -> bool {
    Code::of(p) == Code::POST && msg::uri_path(p).unwrap() == vec!["rd"]
}

/// Each Register whose handshake fails is a failed attempt at once (no
/// code), the next one follows the Communication Retry Timer back-off
/// (5 s here, doubling), the cancelled Register is never retransmitted,
/// and once a handshake succeeds the device registers.
#[test]
fn a_failed_handshake_fails_the_register_at_once_and_backs_off() {
    let mut n = Net::new();
    n.drop_to_server = true;
    n.client.start(n.now);
    n.flush();
    assert_eq!(n.to_server.len(), 1);
    // The server's alert comes back within the first retransmission timeout.
    n.now += Duration::from_millis(300);
    n.client.handshake_failed(n.now);
    assert_eq!(
        n.event(),
        Some(Event::RegistrationFailed {
            attempt: 1,
            code: None,
            retry_in: Duration::from_secs(5),
        })
    );
    assert_eq!(
        n.client.registration(),
        &RegState::BackOff {
            until: n.now + Duration::from_secs(5),
            attempt: 2,
        }
    );
    // No retransmission of the given-up Register: the next deadline is the retry.
    assert!(n.client.poll_transmit().is_none());
    assert_eq!(
        n.client.poll_timeout(),
        Some(n.now + Duration::from_secs(5))
    );
    let failed_at = n.now;
    n.advance_to_next();
    assert_eq!(n.now - failed_at, Duration::from_secs(5));
    n.flush();
    assert_eq!(n.to_server.len(), 2);
    assert!(is_register(&n.to_server[1]));

    // Attempt 2 fails the same way: twice the back-off.
    n.client.handshake_failed(n.now);
    assert_eq!(
        n.event(),
        Some(Event::RegistrationFailed {
            attempt: 2,
            code: None,
            retry_in: Duration::from_secs(10),
        })
    );

    // Attempt 3's handshake completes: registered.
    n.drop_to_server = false;
    let failed_at = n.now;
    n.advance_to_next();
    assert_eq!(n.now - failed_at, Duration::from_secs(10));
    let r = expect_request(n.flush());
    assert!(is_register(&r.packet));
    n.reply(&r, Code::CREATED, |p| {
        msg::add_strings(p, CoapOption::LocationPath, &["rd", "5a3f"])
    });
    assert!(matches!(n.event(), Some(Event::Registered { .. })));

    // With nothing outstanding a failed handshake changes nothing.
    let before = n.client.registration().clone();
    n.client.handshake_failed(n.now);
    assert_eq!(n.client.registration(), &before);
    assert_eq!(n.event(), None);
    assert!(n.client.poll_transmit().is_none());
}

/// An Update whose handshake fails is given up like an unanswered one: a
/// Register follows at once (attempt 1), and its own failed handshake
/// counts as a failed Register.
#[test]
fn a_failed_handshake_fails_the_update_and_registers_again() {
    let mut n = Net::new();
    n.register();
    n.drop_to_server = true;
    n.client.trigger_update(n.now);
    n.flush();
    let sent = n.to_server.len();
    assert!(!is_register(&n.to_server[sent - 1]));
    n.client.handshake_failed(n.now);
    n.flush();
    assert_eq!(n.to_server.len(), sent + 1);
    assert!(is_register(&n.to_server[sent]));
    assert!(matches!(
        n.client.registration(),
        RegState::AwaitRegister { attempt: 1, .. }
    ));
    assert_eq!(n.event(), None);

    n.client.handshake_failed(n.now);
    assert_eq!(
        n.event(),
        Some(Event::RegistrationFailed {
            attempt: 1,
            code: None,
            retry_in: Duration::from_secs(5),
        })
    );
    // Neither the Update nor the Register is retransmitted meanwhile.
    let failed_at = n.now;
    n.advance_to_next();
    assert_eq!(n.now - failed_at, Duration::from_secs(5));
    n.flush();
    assert_eq!(n.to_server.len(), sent + 2);
    assert!(is_register(&n.to_server[sent + 1]));
}
