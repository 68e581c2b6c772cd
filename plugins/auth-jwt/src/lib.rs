//! `auth-jwt`: accounts, access tokens and the chat ACL — who a device is, and what it may
//! do on MQTT.
//!
//! ```toml
//! [plugins.auth-jwt]
//! # secret = "<base64, at least 32 bytes>"  # else made once in {data_dir}/jwt-secret
//! access_ttl_secs = 900                      # reloadable
//! refresh_ttl_days = 30                      # reloadable
//! issuer = "seed"
//! ```
//!
//! * `api.rs` serves `/v1/auth/{register,login,refresh,logout}` over the chat store.
//! * `tokens.rs` issues and verifies tokens; the verifier is provided to the plugins built
//!   after this one as an `Arc<dyn AccessTokens>`, so every HTTP API checks bearers the same
//!   way.
//! * On CONNECT ([`Plugin::authenticate`]) the user name must be the user id, the password an
//!   access token for it, and the client id `{user}:{device}` naming the token's device.
//!   Every refusal is the same "not authorized" (5.0: 0x87, 3.1.1: 5), with the precise
//!   reason in the log only. Since the user name is then the token's subject, later hooks
//!   (the chat plugin) take `client.username` as the sender.
//! * On SUBSCRIBE and PUBLISH ([`Plugin::authorize`]) `acl.rs` applies the protocol's table.
//!
//! Needs a chat store (`Arc<dyn ChatStore>`) from a plugin built before it (`store-sqlite`).

mod acl;
mod api;
mod passwords;
mod secret;
mod tokens;

#[cfg(test)]
mod testing;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use seed_broker::codec::ReasonCode;
use seed_broker::hooks::{
    Action, ClientInfo, Credentials, Decision, Hook, HookSettings, Outcome, Plugin, PluginContext,
    PluginError,
};
use seed_broker::toml;
use seed_chat_core::{AccessTokens, AuthError, ChatStore};
use seed_proto::topics;

pub use acl::Refusal;
pub use passwords::Passwords;
pub use tokens::{Claims, Lifetimes, TokenPair, TokenService};

/// The name this plugin is configured under (`[plugins.auth-jwt]`).
pub const NAME: &str = "auth-jwt";

/// The plugin's own settings (`[plugins.auth-jwt]`, without the common hook settings).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HS256 key, base64, at least 32 bytes. When absent, a key is generated once and
    /// kept in `{data_dir}/jwt-secret`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Lifetime of an access token, in seconds (default 900).
    #[serde(default = "default_access_ttl")]
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token, in days (default 30).
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl_days: u64,
    /// The `iss` claim issued and required (default "seed").
    #[serde(default = "default_issuer")]
    pub issuer: String,
}

fn default_access_ttl() -> u64 {
    900
}

fn default_refresh_ttl() -> u64 {
    30
}

fn default_issuer() -> String {
    "seed".to_owned()
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("access_ttl_secs", &self.access_ttl_secs)
            .field("refresh_ttl_days", &self.refresh_ttl_days)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Config {
    /// Parses and checks the plugin's table; common hook settings are ignored if present.
    pub fn from_table(table: toml::Table) -> Result<Config, PluginError> {
        let (_, own) = HookSettings::split(table)?;
        let config: Config = own.try_into().map_err(|e| PluginError(format!("{NAME}: {e}")))?;
        config.lifetimes()?;
        if config.issuer.is_empty() {
            return Err(PluginError(format!("{NAME}: issuer is empty")));
        }
        Ok(config)
    }

    fn lifetimes(&self) -> Result<Lifetimes, PluginError> {
        if !(1..=7 * 86_400).contains(&self.access_ttl_secs) {
            return Err(PluginError(format!(
                "{NAME}: access_ttl_secs must be from 1 to 604800 (a week)"
            )));
        }
        if !(1..=3650).contains(&self.refresh_ttl_days) {
            return Err(PluginError(format!("{NAME}: refresh_ttl_days must be from 1 to 3650")));
        }
        Ok(Lifetimes {
            access_ttl_secs: self.access_ttl_secs,
            refresh_ttl_days: self.refresh_ttl_days,
        })
    }

    /// The signing key: configured, or kept in `data_dir`.
    fn key(&self, data_dir: &Path) -> Result<Vec<u8>, PluginError> {
        match &self.secret {
            Some(text) => secret::decode(text),
            None => secret::load_or_create(data_dir),
        }
    }
}

/// The plugin; see the crate documentation.
pub struct JwtAuthPlugin {
    tokens: Arc<TokenService>,
    passwords: Passwords,
    /// What was started with, to tell apart settings a reload cannot change.
    started: Config,
}

impl fmt::Debug for JwtAuthPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthPlugin").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

/// Builds the plugin over a store; `data_dir` keeps a generated key.
pub fn build(
    config: Config,
    store: Arc<dyn ChatStore>,
    data_dir: &Path,
    passwords: Passwords,
) -> Result<JwtAuthPlugin, PluginError> {
    let key = config.key(data_dir)?;
    let tokens = TokenService::new(&key, &config.issuer, config.lifetimes()?, store);
    Ok(JwtAuthPlugin { tokens: Arc::new(tokens), passwords, started: config })
}

/// The [`seed_broker::hooks::PluginFactory`] for `[plugins.auth-jwt]`: needs a chat store,
/// provides an `Arc<dyn AccessTokens>`.
pub fn factory(
    table: toml::Table,
    context: &mut PluginContext,
) -> Result<Arc<dyn Plugin>, PluginError> {
    let config = Config::from_table(table)?;
    let store = context.require::<Arc<dyn ChatStore>>("a chat store")?;
    let passwords = Passwords::new().map_err(|e| PluginError(format!("{NAME}: {e}")))?;
    let plugin = build(config, store, &context.data_dir, passwords)?;
    context.provide::<Arc<dyn AccessTokens>>(plugin.tokens.clone());
    Ok(Arc::new(plugin))
}

impl JwtAuthPlugin {
    pub fn tokens(&self) -> &Arc<TokenService> {
        &self.tokens
    }

    /// The `/v1/auth/*` routes.
    pub fn router(&self) -> axum::Router {
        api::router(api::Accounts {
            tokens: self.tokens.clone(),
            passwords: self.passwords.clone(),
        })
    }

    /// Why a CONNECT is refused, if it is; `Err` only when the store cannot answer.
    async fn check_connect(
        &self,
        client: &ClientInfo,
        credentials: &Credentials<'_>,
    ) -> Result<Result<(), &'static str>, PluginError> {
        let Some(username) = credentials.username else {
            return Ok(Err("no user name"));
        };
        let Some(password) = credentials.password else {
            return Ok(Err("no password (access token)"));
        };
        let Some((user, device)) = topics::parse_client_id(&client.client_id) else {
            return Ok(Err("client id is not {user}:{device}"));
        };
        if username != user {
            return Ok(Err("user name is not the client id's user"));
        }
        let Ok(token) = std::str::from_utf8(password) else {
            return Ok(Err("password is not UTF-8"));
        };
        let who = match self.tokens.verify(token).await {
            Ok(who) => who,
            Err(AuthError::Invalid) => return Ok(Err("access token is malformed or forged")),
            Err(AuthError::Expired) => return Ok(Err("access token has expired")),
            Err(AuthError::Revoked) => return Ok(Err("access token was revoked")),
            Err(AuthError::Unavailable(e)) => {
                return Err(PluginError(format!("{NAME}: cannot check revocation: {e}")));
            }
        };
        if who.user_id != user {
            return Ok(Err("access token is another user's"));
        }
        if who.device_id != device {
            return Ok(Err("access token is another device's"));
        }
        Ok(Ok(()))
    }
}

const NOT_AUTHORIZED: Outcome = Outcome::Stop(Decision::Deny(ReasonCode::NOT_AUTHORIZED));

#[async_trait]
impl Plugin for JwtAuthPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::Authenticate, Hook::Authorize]
    }

    /// Lifetimes apply to tokens issued from then on; the key and issuer need a restart.
    fn reload(&self, config: toml::Table) -> Result<(), PluginError> {
        let config = Config::from_table(config)?;
        if config.secret != self.started.secret || config.issuer != self.started.issuer {
            tracing::warn!("{NAME}: secret and issuer changes take effect on restart");
        }
        self.tokens.set_lifetimes(config.lifetimes()?);
        Ok(())
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(self.router())
    }

    async fn authenticate(
        &self,
        client: &ClientInfo,
        credentials: &Credentials<'_>,
    ) -> Result<Outcome, PluginError> {
        match self.check_connect(client, credentials).await? {
            Ok(()) => Ok(Outcome::Continue),
            Err(reason) => {
                tracing::info!(
                    client_id = %client.client_id,
                    user = credentials.username.unwrap_or(""),
                    peer = %client.peer,
                    "connect refused: {reason}"
                );
                Ok(NOT_AUTHORIZED)
            }
        }
    }

    async fn authorize(
        &self,
        client: &ClientInfo,
        action: &Action<'_>,
    ) -> Result<Outcome, PluginError> {
        // Fails closed: only a client signed in as a user has rights here.
        let Some(me) = client.username.as_deref().filter(|u| topics::valid_user_id(u)) else {
            let client_id = &*client.client_id;
            tracing::info!(client_id, ?action, "refused: not signed in as a user");
            return Ok(NOT_AUTHORIZED);
        };
        match acl::check(me, action) {
            Ok(()) => Ok(Outcome::Continue),
            Err(refusal) => {
                let client_id = &*client.client_id;
                tracing::info!(client_id, user = me, ?action, ?refusal, "refused");
                Ok(NOT_AUTHORIZED)
            }
        }
    }
}

#[cfg(test)]
mod tests;
