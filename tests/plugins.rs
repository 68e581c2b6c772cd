//! The `auth-static` and `acl` plugins in the real `seed` binary, configured from a file:
//! argon2 passwords made by `seed hash-password` (right, wrong, anonymous refused; 3.1.1 return
//! codes and 5.0 reason codes), per-user topic rules with `%u` (allowed and refused
//! subscriptions, undelivered forbidden publishes), and a SIGHUP reload that changes the rules
//! for new subscriptions.

mod common;

use std::sync::OnceLock;

use common::{Seed, raw, unique};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ALICE_PW: &str = "wonder land";
const BOB_PW: &str = "b0b's-pass";

/// Hashing is slow on purpose: do it once per test binary.
fn hashes() -> &'static (String, String) {
    static H: OnceLock<(String, String)> = OnceLock::new();
    H.get_or_init(|| (common::hash_password(ALICE_PW), common::hash_password(BOB_PW)))
}

fn config(acl_topic: &str) -> String {
    let (alice, bob) = hashes();
    format!(
        r#"
[plugins.auth-static]
allow_anonymous = false
[[plugins.auth-static.users]]
username = "alice"
password_hash = "{alice}"
[[plugins.auth-static.users]]
username = "bob"
password_hash = "{bob}"

[plugins.acl]
default = "deny"
[[plugins.acl.rules]]
permission = "allow"
action = "all"
topic = "{acl_topic}"
"#
    )
}

async fn login(seed: &Seed, version: u8, user: Option<&str>, pw: Option<&str>) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(seed.mqtt).await.unwrap();
    let (_, code) = raw::handshake(&mut s, version, &unique("auth"), user, pw).await;
    (s, code)
}

#[tokio::test]
async fn hash_password_prints_an_argon2_phc_string() {
    let (alice, bob) = hashes();
    assert!(alice.starts_with("$argon2id$"), "{alice}");
    assert_ne!(alice, bob);
}

#[tokio::test]
async fn static_passwords() {
    let seed = Seed::broker_with_config(|_| config("devices/%u/#"));
    for version in [raw::V311, raw::V5] {
        let (_s, code) = login(&seed, version, Some("alice"), Some(ALICE_PW)).await;
        assert_eq!(code, 0, "v{version}: right password refused");
        let (_s, code) = login(&seed, version, Some("bob"), Some(BOB_PW)).await;
        assert_eq!(code, 0, "v{version}: bob refused");

        let bad = if version == raw::V5 { 0x86 } else { 4 };
        let (_s, code) = login(&seed, version, Some("alice"), Some(BOB_PW)).await;
        assert_eq!(code, bad, "v{version}: wrong password");
        let (_s, code) = login(&seed, version, Some("mallory"), Some(ALICE_PW)).await;
        assert_eq!(code, bad, "v{version}: unknown user");

        // Anonymous: "bad user name or password" or "not authorized" are both refusals.
        let refused: &[u8] = if version == raw::V5 { &[0x86, 0x87] } else { &[4, 5] };
        let (_s, code) = login(&seed, version, None, None).await;
        assert!(refused.contains(&code), "v{version}: anonymous got {code:#x}");
    }
}

#[tokio::test]
async fn acl_per_user_topics() {
    let seed = Seed::broker_with_config(|_| config("devices/%u/#"));
    for version in [raw::V311, raw::V5] {
        let refused = if version == raw::V5 { 0x87 } else { 0x80 };
        let (mut alice, code) = login(&seed, version, Some("alice"), Some(ALICE_PW)).await;
        assert_eq!(code, 0);
        assert_eq!(raw::subscribe_code(&mut alice, version, 1, "devices/alice/#", 1).await, 1);
        let code = raw::subscribe_code(&mut alice, version, 2, "devices/bob/#", 1).await;
        assert_eq!(code, refused, "v{version}: devices/bob/# for alice");
        let code = raw::subscribe_code(&mut alice, version, 3, "#", 1).await;
        assert_eq!(code, refused, "v{version}: # for alice");
        let code = raw::subscribe_code(&mut alice, version, 4, "devices/+/temp", 1).await;
        assert_eq!(code, refused, "v{version}: devices/+/temp for alice");

        // Alice's own topic round-trips.
        alice.write_all(&raw::publish(version, "devices/alice/t", 1, 10, b"mine")).await.unwrap();
        let mut got_own = false;
        while !got_own {
            let (first, body) = raw::expect_packet(&mut alice).await;
            if first & 0xf0 == 0x30 {
                let (topic, pkid, payload) = raw::parse_publish(version, first, &body);
                assert_eq!((topic.as_str(), &payload[..]), ("devices/alice/t", &b"mine"[..]));
                if first & 0x06 != 0 {
                    alice.write_all(&raw::puback(pkid)).await.unwrap();
                }
                got_own = true;
            }
        }

        // Bob listens on his topics; alice publishing there is not delivered.
        let (mut bob, code) = login(&seed, version, Some("bob"), Some(BOB_PW)).await;
        assert_eq!(code, 0);
        assert_eq!(raw::subscribe_code(&mut bob, version, 1, "devices/bob/#", 1).await, 1);
        alice.write_all(&raw::publish(version, "devices/bob/x", 1, 11, b"intruder")).await.unwrap();
        if version == raw::V5 {
            // 5.0 can say no: PUBACK 0x87, and the connection stays up.
            let (first, body) = raw::expect_packet(&mut alice).await;
            assert_eq!(first, 0x40, "expected PUBACK for a refused publish");
            assert_eq!(u16::from_be_bytes([body[0], body[1]]), 11);
            assert_eq!(body.get(2).copied(), Some(0x87), "PUBACK reason for a refused publish");
        }
        // Bob's own marker proves his subscription works; the forbidden message must not
        // come before it (nor, below, shortly after it).
        bob.write_all(&raw::publish(version, "devices/bob/marker", 0, 0, b"m")).await.unwrap();
        loop {
            let (first, body) = raw::expect_packet(&mut bob).await;
            if first & 0xf0 == 0x30 {
                let (topic, pkid, _) = raw::parse_publish(version, first, &body);
                assert_ne!(topic, "devices/bob/x", "v{version}: forbidden publish delivered");
                if first & 0x06 != 0 {
                    bob.write_all(&raw::puback(pkid)).await.unwrap();
                }
                if topic == "devices/bob/marker" {
                    break;
                }
            }
        }
        // Give a late forbidden copy a moment to show up.
        let late = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            loop {
                match raw::read_packet(&mut bob).await {
                    Ok(Some((first, body))) if first & 0xf0 == 0x30 => {
                        return raw::parse_publish(version, first, &body).0;
                    }
                    Ok(Some(_)) => {}
                    _ => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        assert!(late.is_err(), "v{version}: forbidden publish delivered late: {late:?}");
    }
}

#[tokio::test]
async fn sighup_reloads_acl_rules() {
    let seed = Seed::broker_with_config(|_| config("devices/%u/#"));
    let (mut alice, code) = login(&seed, raw::V5, Some("alice"), Some(ALICE_PW)).await;
    assert_eq!(code, 0);
    assert_eq!(raw::subscribe_code(&mut alice, raw::V5, 1, "rooms/alice/#", 1).await, 0x87);
    assert_eq!(raw::subscribe_code(&mut alice, raw::V5, 2, "devices/alice/#", 1).await, 1);

    std::fs::write(seed.config_path(), config("rooms/%u/#")).unwrap();
    seed.signal("HUP");
    seed.wait_log("reloaded");

    assert_eq!(
        raw::subscribe_code(&mut alice, raw::V5, 3, "rooms/alice/#", 1).await,
        1,
        "new rule not applied after SIGHUP"
    );
    assert_eq!(
        raw::subscribe_code(&mut alice, raw::V5, 4, "devices/alice/other", 1).await,
        0x87,
        "old rule still applied after SIGHUP"
    );
    // A new connection sees the new rules too, and the server did not restart.
    let (mut again, code) = login(&seed, raw::V311, Some("alice"), Some(ALICE_PW)).await;
    assert_eq!(code, 0);
    assert_eq!(raw::subscribe_code(&mut again, raw::V311, 1, "rooms/alice/x", 0).await, 0);
    assert_eq!(raw::subscribe_code(&mut again, raw::V311, 2, "devices/alice/x", 0).await, 0x80);

    // A broken file is rejected and the running rules stay.
    std::fs::write(seed.config_path(), "[plugins.acl\nbroken").unwrap();
    seed.signal("HUP");
    seed.wait_log("configuration rejected");
    assert_eq!(raw::subscribe_code(&mut again, raw::V311, 3, "rooms/alice/y", 0).await, 0);
}
