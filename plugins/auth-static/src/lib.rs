//! `auth-static`: user name / password authentication against a fixed list in `seed.toml`.
//!
//! ```toml
//! [plugins.auth-static]
//! allow_anonymous = false
//! [[plugins.auth-static.users]]
//! username = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # from `seed hash-password`
//! ```
//!
//! Passwords are stored only as Argon2 PHC strings (the format `argon2`/`password-hash`
//! produce and parse), so `seed.toml` never holds a password and each hash carries its own
//! parameters. Every hash is parsed and checked at build time, so a typo fails the start-up
//! (or the reload) instead of locking a user out later.
//!
//! Verification is deliberately slow (tens of milliseconds and ~19 MiB of memory with the
//! default parameters), so it runs on tokio's blocking pool rather than on a reactor thread,
//! and at most `max_concurrent_verifications` run at once: a flood of CONNECTs waits for a
//! permit (and then meets the hook deadline, which fails closed) instead of exhausting memory.
//! A user name that is not configured is still verified, against a dummy hash made with the
//! same parameters as the first configured user, so response time does not reveal which user
//! names exist.
//!
//! Settings live behind an `RwLock<Arc<_>>`: a call clones the `Arc`, and `reload` swaps a
//! fully validated set in one step, so a bad reload leaves the old users in place.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZero;
use std::sync::{Arc, PoisonError, RwLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHashString, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Semaphore;

use seed_broker::codec::ReasonCode;
use seed_broker::hooks::{
    ClientInfo, Credentials, Decision, Hook, HookSettings, Outcome, Plugin, PluginContext,
    PluginError,
};
use seed_broker::toml;

/// The name this plugin is configured under (`[plugins.auth-static]`).
pub const NAME: &str = "auth-static";

/// The plugin's own settings (`[plugins.auth-static]`, without the common hook settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Whether a client that sends no user name is accepted. Defaults to `false`.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// The known users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// How many password verifications may run at once (each holds a blocking thread and the
    /// hash's memory cost). Defaults to the number of CPUs; must be at least 1.
    #[serde(default)]
    pub max_concurrent_verifications: Option<usize>,
}

/// One `[[plugins.auth-static.users]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The MQTT user name, compared exactly.
    pub username: String,
    /// An Argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), as made by
    /// [`hash_password`].
    pub password_hash: String,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Config {
    /// Parses the plugin's table. Common hook settings (`priority`, `deadline_ms`, ...) are
    /// ignored if present, so both the factory's and a full `[plugins.auth-static]` table work.
    pub fn from_table(table: toml::Table) -> Result<Config, PluginError> {
        let (_, own) = HookSettings::split(table)?;
        own.try_into().map_err(|e| PluginError(format!("{NAME}: {e}")))
    }
}

/// The validated, ready-to-use form of a [`Config`].
struct Settings {
    allow_anonymous: bool,
    users: HashMap<Box<str>, PasswordHashString>,
    /// Verified for unknown user names, so they take as long as known ones.
    dummy: PasswordHashString,
    verifications: Arc<Semaphore>,
}

impl Settings {
    fn new(config: &Config) -> Result<Settings, PluginError> {
        let mut users = HashMap::with_capacity(config.users.len());
        let mut first = None;
        for (index, user) in config.users.iter().enumerate() {
            let name = &user.username;
            let error = |e: String| PluginError(format!("{NAME} users[{index}] (`{name}`): {e}"));
            if name.is_empty() {
                return Err(error("username is empty".to_owned()));
            }
            let (hash, argon2) = parse_hash(&user.password_hash)
                .map_err(|e| error(format!("password_hash: {e}")))?;
            if users.insert(name.as_str().into(), hash).is_some() {
                return Err(error("username is listed twice".to_owned()));
            }
            first.get_or_insert(argon2);
        }
        let dummy = make_dummy(first.unwrap_or_default())?;
        let permits = match config.max_concurrent_verifications {
            Some(0) => {
                return Err(PluginError(format!(
                    "{NAME}: max_concurrent_verifications must be at least 1"
                )));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, NonZero::get),
        };
        let permits = permits.min(Semaphore::MAX_PERMITS);
        Ok(Settings {
            allow_anonymous: config.allow_anonymous,
            users,
            dummy,
            verifications: Arc::new(Semaphore::new(permits)),
        })
    }
}

/// Parses a PHC string and checks it is an Argon2 hash this crate can verify; returns it with
/// a hasher configured like it.
fn parse_hash(phc: &str) -> Result<(PasswordHashString, Argon2<'static>), String> {
    let owned = PasswordHashString::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    let hash = owned.password_hash();
    let algorithm = Algorithm::try_from(hash.algorithm)
        .map_err(|e| format!("not an Argon2 hash (`{}`): {e}", hash.algorithm))?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|e| format!("unsupported version {v}: {e}"))?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash).map_err(|e| format!("bad parameters: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("the salt or the hash is missing".to_owned());
    }
    Ok((owned, Argon2::new(algorithm, version, params)))
}

/// A hash of a random password, made with `argon2`'s algorithm, version and parameters.
fn make_dummy(argon2: Argon2<'_>) -> Result<PasswordHashString, PluginError> {
    let password = SaltString::generate(&mut OsRng);
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_str().as_bytes(), &salt)
        .map(|hash| hash.serialize())
        .map_err(|e| PluginError(format!("{NAME}: cannot make the dummy hash: {e}")))
}

/// Hashes a password for the `password_hash` field: Argon2id with the crate's default
/// parameters (m=19456 KiB, t=2, p=1) and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, PluginError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PluginError(format!("cannot hash the password: {e}")))
}

/// The static authentication plugin; see the crate documentation.
pub struct StaticAuthPlugin {
    settings: RwLock<Arc<Settings>>,
}

impl fmt::Debug for StaticAuthPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.current();
        f.debug_struct("StaticAuthPlugin")
            .field("allow_anonymous", &settings.allow_anonymous)
            .field("users", &settings.users.len())
            .finish()
    }
}

/// Builds the plugin from a parsed configuration, validating every hash.
pub fn build(config: Config) -> Result<StaticAuthPlugin, PluginError> {
    Ok(StaticAuthPlugin { settings: RwLock::new(Arc::new(Settings::new(&config)?)) })
}

/// The [`seed_broker::hooks::PluginFactory`] for `[plugins.auth-static]`.
pub fn factory(
    table: toml::Table,
    _context: &mut PluginContext,
) -> Result<Arc<dyn Plugin>, PluginError> {
    Ok(Arc::new(build(Config::from_table(table)?)?))
}

impl StaticAuthPlugin {
    fn current(&self) -> Arc<Settings> {
        // Nothing panics while the lock is held, but a poisoned lock still holds valid settings.
        self.settings.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn bad_credentials() -> Outcome {
    Outcome::Stop(Decision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD))
}

#[async_trait]
impl Plugin for StaticAuthPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::Authenticate]
    }

    fn reload(&self, config: toml::Table) -> Result<(), PluginError> {
        let settings = Settings::new(&Config::from_table(config)?)?;
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(settings);
        Ok(())
    }

    async fn authenticate(
        &self,
        _client: &ClientInfo,
        credentials: &Credentials<'_>,
    ) -> Result<Outcome, PluginError> {
        let settings = self.current();
        let Some(username) = credentials.username else {
            return Ok(if settings.allow_anonymous {
                Outcome::Continue
            } else {
                Outcome::Stop(Decision::Deny(ReasonCode::NOT_AUTHORIZED))
            });
        };
        // Known or not, a missing password gets the same instant answer: nothing to time.
        let Some(password) = credentials.password else {
            return Ok(bad_credentials());
        };
        // The permit moves into the blocking task, so a verification that outlives this call
        // (its deadline passed) still counts until it really ends.
        let permit = settings
            .verifications
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PluginError(format!("{NAME}: {e}")))?;
        let username: Box<str> = username.into();
        let password = password.to_vec();
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (hash, known) = match settings.users.get(&username) {
                Some(hash) => (hash, true),
                None => (&settings.dummy, false),
            };
            let ok = Argon2::default().verify_password(&password, &hash.password_hash()).is_ok();
            ok && known
        })
        .await
        .map_err(|e| PluginError(format!("{NAME}: verification failed: {e}")))?;
        Ok(if verified { Outcome::Continue } else { bad_credentials() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The factory as the registry calls it, with a fresh context.
    fn factory(table: toml::Table) -> Result<Arc<dyn Plugin>, PluginError> {
        super::factory(table, &mut PluginContext::default())
    }
    use seed_broker::codec::Protocol;

    const BAD: Outcome = Outcome::Stop(Decision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD));
    const NOT_AUTHORIZED: Outcome = Outcome::Stop(Decision::Deny(ReasonCode::NOT_AUTHORIZED));

    /// A cheap hash, so tests do not spend seconds in Argon2.
    fn quick_hash(password: &str) -> String {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(Params::MIN_M_COST, 1, 1, None).unwrap(),
        );
        argon2
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    fn client() -> ClientInfo {
        ClientInfo {
            client_id: "c1".into(),
            username: None,
            protocol: Protocol::V5,
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: "tcp",
        }
    }

    fn config(allow_anonymous: bool, users: &[(&str, &str)]) -> toml::Table {
        let mut text = format!("allow_anonymous = {allow_anonymous}\n");
        for (username, hash) in users {
            text.push_str(&format!(
                "[[users]]\nusername = \"{username}\"\npassword_hash = \"{hash}\"\n"
            ));
        }
        text.parse().unwrap()
    }

    async fn login(plugin: &dyn Plugin, username: Option<&str>, password: Option<&str>) -> Outcome {
        let credentials = Credentials {
            username,
            password: password.map(str::as_bytes),
            authentication_method: None,
        };
        plugin.authenticate(&client(), &credentials).await.unwrap()
    }

    fn alice_and_bob() -> Arc<dyn Plugin> {
        let users = [("alice", quick_hash("wonderland")), ("bob", quick_hash("builder"))];
        let users: Vec<_> = users.iter().map(|(u, h)| (*u, h.as_str())).collect();
        factory(config(false, &users)).unwrap()
    }

    #[tokio::test]
    async fn name_and_hooks() {
        let _: seed_broker::hooks::PluginFactory = super::factory;
        let plugin = alice_and_bob();
        assert_eq!(plugin.name(), "auth-static");
        assert_eq!(plugin.hooks(), &[Hook::Authenticate]);
    }

    #[tokio::test]
    async fn right_and_wrong_passwords() {
        let plugin = alice_and_bob();
        assert_eq!(login(&*plugin, Some("alice"), Some("wonderland")).await, Outcome::Continue);
        assert_eq!(login(&*plugin, Some("bob"), Some("builder")).await, Outcome::Continue);
        assert_eq!(login(&*plugin, Some("alice"), Some("builder")).await, BAD);
        assert_eq!(login(&*plugin, Some("alice"), Some("")).await, BAD);
        assert_eq!(login(&*plugin, Some("alice"), None).await, BAD);
        assert_eq!(login(&*plugin, Some("ALICE"), Some("wonderland")).await, BAD);
    }

    #[tokio::test]
    async fn binary_passwords_are_fine() {
        let plugin = alice_and_bob();
        let credentials = Credentials {
            username: Some("alice"),
            password: Some(&[0xff, 0x00, 0xfe]),
            authentication_method: None,
        };
        assert_eq!(plugin.authenticate(&client(), &credentials).await.unwrap(), BAD);
    }

    #[tokio::test]
    async fn unknown_users() {
        let plugin = alice_and_bob();
        assert_eq!(login(&*plugin, Some("mallory"), Some("wonderland")).await, BAD);
        assert_eq!(login(&*plugin, Some("mallory"), None).await, BAD);
        assert_eq!(login(&*plugin, Some(""), Some("x")).await, BAD);
    }

    #[tokio::test]
    async fn dummy_hash_costs_like_a_real_one() {
        let hash = quick_hash("x");
        let plugin = build(Config::from_table(config(false, &[("a", &hash)])).unwrap()).unwrap();
        let settings = plugin.current();
        let dummy = settings.dummy.password_hash();
        let real = settings.users.get("a").unwrap().password_hash();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.hash.map(|h| h.len()), real.hash.map(|h| h.len()));
    }

    #[tokio::test]
    async fn anonymous() {
        let hash = quick_hash("pw");
        let off = factory(config(false, &[("alice", &hash)])).unwrap();
        assert_eq!(login(&*off, None, None).await, NOT_AUTHORIZED);
        assert_eq!(login(&*off, None, Some("pw")).await, NOT_AUTHORIZED);
        let on = factory(config(true, &[("alice", &hash)])).unwrap();
        assert_eq!(login(&*on, None, None).await, Outcome::Continue);
        // Anonymous access does not weaken named users.
        assert_eq!(login(&*on, Some("alice"), Some("nope")).await, BAD);
        assert_eq!(login(&*on, Some("alice"), Some("pw")).await, Outcome::Continue);
        // Absent means false.
        let default = factory(toml::Table::new()).unwrap();
        assert_eq!(login(&*default, None, None).await, NOT_AUTHORIZED);
    }

    #[tokio::test]
    async fn bad_configs_are_rejected() {
        let good = quick_hash("pw");
        let cases: Vec<(toml::Table, &str)> = vec![
            (config(false, &[("alice", "plaintext")]), "users[0] (`alice`)"),
            (config(false, &[("a", &good), ("b", "$argon2id$v=19$m=19456")]), "users[1]"),
            (
                config(
                    false,
                    &[("alice", "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g")],
                ),
                "Argon2",
            ),
            (config(false, &[("alice", &good.replace("m=8", "m=1"))]), "parameters"),
            (config(false, &[("alice", &good), ("alice", &good)]), "twice"),
            (config(false, &[("", &good)]), "empty"),
            ("allow_anonymous = \"yes\"".parse().unwrap(), "allow_anonymous"),
            ("surprise = true".parse().unwrap(), "surprise"),
            ("max_concurrent_verifications = 0".parse().unwrap(), "at least 1"),
            (
                format!("[[users]]\nusername = \"a\"\npassword = \"{good}\"").parse().unwrap(),
                "password",
            ),
        ];
        for (table, needle) in cases {
            let text = table.to_string();
            let error = factory(table).err().expect(&text);
            assert!(error.0.contains(needle), "{text}: {error}");
        }
    }

    #[tokio::test]
    async fn reload_swaps_users_and_bad_reload_keeps_them() {
        let plugin = factory(config(false, &[("alice", &quick_hash("one"))])).unwrap();
        assert_eq!(login(&*plugin, Some("alice"), Some("one")).await, Outcome::Continue);

        plugin.reload(config(true, &[("bob", &quick_hash("two"))])).unwrap();
        assert_eq!(login(&*plugin, Some("alice"), Some("one")).await, BAD);
        assert_eq!(login(&*plugin, Some("bob"), Some("two")).await, Outcome::Continue);
        assert_eq!(login(&*plugin, None, None).await, Outcome::Continue);

        let error = plugin.reload(config(false, &[("carol", "garbage")])).unwrap_err();
        assert!(error.0.contains("carol"), "{error}");
        assert_eq!(login(&*plugin, Some("bob"), Some("two")).await, Outcome::Continue);
        assert_eq!(login(&*plugin, Some("carol"), Some("garbage")).await, BAD);
        assert_eq!(login(&*plugin, None, None).await, Outcome::Continue);
    }

    #[tokio::test]
    async fn common_settings_are_ignored() {
        let mut table = config(false, &[("alice", &quick_hash("pw"))]);
        table.insert("priority".into(), toml::Value::Integer(5));
        let plugin = factory(table).unwrap();
        assert_eq!(login(&*plugin, Some("alice"), Some("pw")).await, Outcome::Continue);
    }

    #[tokio::test]
    async fn hash_password_round_trips() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert_ne!(hash, hash_password("s3cret").unwrap(), "salts are random");
        let plugin = factory(config(false, &[("alice", &hash)])).unwrap();
        assert_eq!(login(&*plugin, Some("alice"), Some("s3cret")).await, Outcome::Continue);
        assert_eq!(login(&*plugin, Some("alice"), Some("s3cre")).await, BAD);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_logins_share_the_permits() {
        let hash = quick_hash("pw");
        let mut table = config(false, &[("alice", &hash)]);
        table.insert("max_concurrent_verifications".into(), toml::Value::Integer(1));
        let plugin = factory(table).unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let plugin = plugin.clone();
            tasks.push(tokio::spawn(async move {
                let password = if i % 2 == 0 { "pw" } else { "wrong" };
                (i, login(&*plugin, Some("alice"), Some(password)).await)
            }));
        }
        for task in tasks {
            let (i, outcome) = task.await.unwrap();
            assert_eq!(outcome, if i % 2 == 0 { Outcome::Continue } else { BAD });
        }
    }
}
