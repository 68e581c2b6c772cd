//! The plugin as the broker sees it: factory, CONNECT authentication, topic authorization,
//! reload.

use super::*;
use crate::testing::{MemoryStore, service};
use seed_broker::codec::{Protocol, QoS};
use seed_chat_core::{Identity, now_millis};

fn plugin() -> (JwtAuthPlugin, Arc<MemoryStore>, tempfile::TempDir) {
    let store = Arc::new(MemoryStore::default());
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_table(toml::Table::new()).unwrap();
    let plugin = build(config, store.clone(), dir.path(), passwords::cheap()).unwrap();
    (plugin, store, dir)
}

fn client(client_id: &str, username: Option<&str>) -> ClientInfo {
    ClientInfo {
        client_id: client_id.into(),
        username: username.map(Into::into),
        protocol: Protocol::V5,
        peer: "127.0.0.1:1".parse().unwrap(),
        listener: "tcp",
    }
}

fn token(plugin: &JwtAuthPlugin, user: &str, device: &str) -> String {
    let who = Identity { user_id: user.into(), device_id: device.into() };
    plugin.tokens.access_token_at(&who, now_millis()).unwrap()
}

async fn connect(
    plugin: &JwtAuthPlugin,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Outcome {
    let credentials = Credentials {
        username,
        password: password.map(str::as_bytes),
        authentication_method: None,
    };
    plugin.authenticate(&client(client_id, None), &credentials).await.unwrap()
}

#[tokio::test]
async fn factory_needs_a_store_and_provides_access_tokens() {
    let _: seed_broker::hooks::PluginFactory = factory;
    let dir = tempfile::tempdir().unwrap();
    let mut context = PluginContext::new(dir.path().to_owned());
    let error = factory(toml::Table::new(), &mut context).err().unwrap();
    assert!(error.0.contains("a chat store"), "{error}");

    let store: Arc<dyn ChatStore> = Arc::new(MemoryStore::default());
    context.provide(store);
    let plugin = factory(toml::Table::new(), &mut context).unwrap();
    assert_eq!(plugin.name(), "auth-jwt");
    assert_eq!(plugin.hooks(), &[Hook::Authenticate, Hook::Authorize]);
    assert!(plugin.routes().is_some());
    assert!(context.get::<Arc<dyn AccessTokens>>().is_some());
    assert!(dir.path().join(secret::FILE).exists());
}

#[tokio::test]
async fn tokens_survive_a_restart_with_the_kept_key() {
    let store = Arc::new(MemoryStore::default());
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::from_table(toml::Table::new()).unwrap();
    let first = build(config(), store.clone(), dir.path(), passwords::cheap()).unwrap();
    let token = token(&first, "alice", "phone");
    let second = build(config(), store, dir.path(), passwords::cheap()).unwrap();
    assert!(second.tokens.verify(&token).await.is_ok());
}

#[tokio::test]
async fn configured_secret_is_used_and_no_file_is_made() {
    let store = Arc::new(MemoryStore::default());
    let dir = tempfile::tempdir().unwrap();
    let table: toml::Table =
        "secret = \"KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=\"\nissuer = \"me\""
            .parse()
            .unwrap();
    let plugin =
        build(Config::from_table(table).unwrap(), store, dir.path(), passwords::cheap()).unwrap();
    assert!(!dir.path().join(secret::FILE).exists());
    // [42; 32] is the test double's secret too.
    let (other, _) = service();
    let token = token(&plugin, "alice", "phone");
    assert_eq!(other.decode(&token), Err(AuthError::Invalid), "issuer differs");
    assert_eq!(plugin.tokens.decode(&token).unwrap().iss, "me");
}

#[tokio::test]
async fn bad_configs_are_rejected() {
    for (text, needle) in [
        ("surprise = 1", "surprise"),
        ("access_ttl_secs = 0", "access_ttl_secs"),
        ("refresh_ttl_days = 0", "refresh_ttl_days"),
        ("issuer = \"\"", "issuer"),
        ("access_ttl_secs = \"900\"", "access_ttl_secs"),
    ] {
        let error = Config::from_table(text.parse().unwrap()).unwrap_err();
        assert!(error.0.contains(needle), "{text}: {error}");
    }
    let table: toml::Table = "secret = \"c2hvcnQ=\"".parse().unwrap();
    let store = Arc::new(MemoryStore::default());
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_table(table).unwrap();
    let error = build(config, store, dir.path(), passwords::cheap()).err().unwrap();
    assert!(error.0.contains("at least 32"), "{error}");
    // Common hook settings are not the plugin's concern.
    assert!(Config::from_table("priority = 5".parse().unwrap()).is_ok());
}

#[tokio::test]
async fn reload_changes_lifetimes() {
    let (plugin, _, _dir) = plugin();
    plugin.reload("access_ttl_secs = 60\nrefresh_ttl_days = 2".parse().unwrap()).unwrap();
    let want = Lifetimes { access_ttl_secs: 60, refresh_ttl_days: 2 };
    assert_eq!(plugin.tokens.lifetimes(), want);
    assert!(plugin.reload("access_ttl_secs = 0".parse().unwrap()).is_err());
    assert_eq!(plugin.tokens.lifetimes(), want, "a bad reload keeps the old settings");
}

#[tokio::test]
async fn connect_with_a_valid_token() {
    let (plugin, _, _dir) = plugin();
    let token = token(&plugin, "alice", "phone");
    let outcome = connect(&plugin, "alice:phone", Some("alice"), Some(&token)).await;
    assert_eq!(outcome, Outcome::Continue);
}

#[tokio::test]
async fn connect_refusals() {
    let (plugin, store, _dir) = plugin();
    let token = token(&plugin, "alice", "phone");
    let t = Some(token.as_str());
    let cases = [
        ("alice", Some("alice"), t, "client id without device"),
        ("phone", Some("alice"), t, "client id without user"),
        ("alice:phone:x", Some("alice"), t, "extra part"),
        ("bob:phone", Some("bob"), t, "token of another user"),
        ("alice:laptop", Some("alice"), t, "token of another device"),
        ("alice:phone", Some("bob"), t, "user name is not the client id's user"),
        ("alice:phone", None, t, "no user name"),
        ("alice:phone", Some("alice"), None, "no password"),
        ("alice:phone", Some("alice"), Some(""), "empty password"),
        ("alice:phone", Some("alice"), Some("not-a-jwt"), "malformed"),
    ];
    for (client_id, username, password, why) in cases {
        assert_eq!(connect(&plugin, client_id, username, password).await, NOT_AUTHORIZED, "{why}");
    }

    // Forged: signed with another key.
    let store_dyn: Arc<dyn ChatStore> = store.clone();
    let other = TokenService::new(&[1u8; 32], "seed", testing::LIFETIMES, store_dyn);
    let who = Identity { user_id: "alice".into(), device_id: "phone".into() };
    let forged = other.access_token_at(&who, now_millis()).unwrap();
    assert_eq!(connect(&plugin, "alice:phone", Some("alice"), Some(&forged)).await, NOT_AUTHORIZED);

    // Expired.
    let old = plugin.tokens.access_token_at(&who, now_millis() - 3_600_000).unwrap();
    assert_eq!(connect(&plugin, "alice:phone", Some("alice"), Some(&old)).await, NOT_AUTHORIZED);

    // Binary password.
    let credentials = Credentials {
        username: Some("alice"),
        password: Some(&[0xff, 0xfe]),
        authentication_method: None,
    };
    let outcome = plugin.authenticate(&client("alice:phone", None), &credentials).await.unwrap();
    assert_eq!(outcome, NOT_AUTHORIZED);

    // Revoked (logout).
    store.revoke_device("alice", "phone", now_millis()).await.unwrap();
    assert_eq!(connect(&plugin, "alice:phone", Some("alice"), t).await, NOT_AUTHORIZED);
}

#[test]
fn not_authorized_is_0x87_and_5_on_311() {
    assert_eq!(ReasonCode::NOT_AUTHORIZED.0, 0x87);
    assert_eq!(ReasonCode::NOT_AUTHORIZED.v3_connack_code(), 5);
}

async fn allowed(plugin: &JwtAuthPlugin, username: Option<&str>, action: Action<'_>) -> bool {
    let client = client("alice:phone", username);
    match plugin.authorize(&client, &action).await.unwrap() {
        Outcome::Continue => true,
        outcome => {
            assert_eq!(outcome, NOT_AUTHORIZED);
            false
        }
    }
}

#[tokio::test]
async fn authorize_follows_the_protocol_table() {
    let (plugin, _, _dir) = plugin();
    let me = Some("alice");
    let sub = |filter| Action::Subscribe { filter, qos: QoS::AtLeastOnce };
    let publish = |topic| Action::Publish { topic, qos: QoS::AtLeastOnce, retain: false };

    assert!(allowed(&plugin, me, sub("inbox/alice")).await);
    for filter in ["#", "+/x", "inbox/+", "inbox/#", "inbox/bob", "presence/x", "sync/alice"] {
        assert!(!allowed(&plugin, me, sub(filter)).await, "subscribe {filter}");
    }

    for topic in ["dm/bob", "dm/bob/text", "g/team", "g/team/text", "sync/alice"] {
        assert!(allowed(&plugin, me, publish(topic)).await, "publish {topic}");
    }
    for topic in ["inbox/bob", "inbox/alice", "presence/alice", "sync/bob", "dm/#", "dm/+", "x/y"] {
        assert!(!allowed(&plugin, me, publish(topic)).await, "publish {topic}");
    }

    let will = Action::Will { topic: "dm/bob", qos: QoS::AtLeastOnce, retain: false };
    assert!(!allowed(&plugin, me, will).await);

    // Without a user name (or with one that is not a user id) nothing is allowed.
    assert!(!allowed(&plugin, None, sub("inbox/alice")).await);
    assert!(!allowed(&plugin, Some("Alice"), publish("dm/bob")).await);
}
