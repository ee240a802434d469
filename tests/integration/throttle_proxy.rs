//! Failed sign-ins per client address: the address comes from `X-Forwarded-For` only when the
//! request arrives from a proxy named in `--trusted-proxies`.

use crate::harness::*;

/// The per-address allowance of `src/throttle.rs`.
const ADDRESS_FREE_FAILURES: usize = 20;

fn failed_login(lg: &Labgate, login: &str, forwarded_for: &str) -> u16 {
    let body = form_encode(&[("login", login), ("password", "wrong-password-123")]);
    lg.client()
        .request(
            "POST",
            "/api/authentication/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Forwarded-For", forwarded_for),
            ],
            body.as_bytes(),
        )
        .status
}

/// Fails once for each of many different logins, all from one claimed address.
fn flood(lg: &Labgate, forwarded_for: &str) {
    for i in 0..ADDRESS_FREE_FAILURES {
        let status = failed_login(lg, &format!("nobody{i}"), forwarded_for);
        assert_eq!(status, 401, "attempt {i}");
    }
}

#[test]
fn a_client_address_behind_a_trusted_proxy_is_locked_after_repeated_failures() {
    let lg = Launch::new()
        .arg("--trusted-proxies")
        .arg("127.0.0.1")
        .start();
    flood(&lg, "198.51.100.7, 203.0.113.5");
    // A login never tried before, from the same client: refused for the address.
    assert_eq!(failed_login(&lg, "fresh-login", "203.0.113.5"), 429);
    // Another client behind the same proxy is not affected.
    assert_eq!(failed_login(&lg, "fresh-login", "203.0.113.6"), 401);
}

#[test]
fn forwarded_for_is_ignored_without_a_trusted_proxy() {
    let lg = Labgate::start();
    flood(&lg, "203.0.113.5");
    // Without --trusted-proxies the header is not believed: no address lock.
    assert_eq!(failed_login(&lg, "fresh-login", "203.0.113.5"), 401);
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let lg = Launch::new()
        .arg("--trusted-proxies")
        .arg("10.9.8.7")
        .start();
    flood(&lg, "203.0.113.5");
    assert_eq!(failed_login(&lg, "fresh-login", "203.0.113.5"), 401);
}

#[test]
fn a_lock_caused_from_one_address_does_not_stop_the_person_from_another() {
    let lg = Launch::new()
        .arg("--trusted-proxies")
        .arg("127.0.0.1")
        .start();
    for i in 0..5 {
        assert_eq!(
            failed_login(&lg, "admin", "203.0.113.5"),
            401,
            "attempt {i}"
        );
    }
    assert_eq!(failed_login(&lg, "admin", "203.0.113.5"), 429);
    // The admin, from their own address, still signs in.
    let body = form_encode(&[("login", "admin"), ("password", ADMIN_PASSWORD)]);
    let r = lg.client().request(
        "POST",
        "/api/authentication/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Forwarded-For", "198.51.100.7"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.describe());
}
