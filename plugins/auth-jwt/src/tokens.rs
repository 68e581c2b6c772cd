//! Access and refresh tokens: issuing a pair for a device, verifying access tokens (the
//! [`AccessTokens`] service other plugins use), and redeeming refresh tokens.
//!
//! An access token is a JWT signed with HS256 (`jsonwebtoken`): `sub` (user), `dev`
//! (device), `iss`, `iat` and `exp` in seconds, and `iat_ms`. Verification needs no store
//! lookup except one: logout records when a device was revoked, and a token issued at or
//! before that millisecond is refused. Seconds would be too coarse for that (a token issued
//! in the same second as a logout, just after it, would die with the old ones), hence
//! `iat_ms`; and a pair issued in the very millisecond of a logout is stamped one past it.
//!
//! A refresh token is 32 random bytes in base64url, held by the client; the store keeps only
//! its SHA-256, so a leaked database gives nobody a session. Each is used once: redeeming
//! takes it out of the store (rotation).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use seed_chat_core::{
    AccessTokens, AuthError, ChatStore, Identity, RefreshToken, StoreError, now_millis,
};
use seed_proto::topics;

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Longer tokens are refused before any parsing: ours are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 4096;

const MS_PER_DAY: u64 = 86_400_000;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The device id.
    pub dev: String,
    pub iss: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix ms: what revocation compares against.
    pub iat_ms: u64,
}

/// Token lifetimes (reloadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_ttl_secs: u64,
    pub refresh_ttl_days: u64,
}

/// A freshly issued pair, as login and refresh answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign the token: {0}")]
    Sign(String),
    #[error("no randomness for the refresh token: {0}")]
    Random(String),
}

/// Issues and verifies tokens; see the module documentation.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    access_ttl_secs: AtomicU64,
    refresh_ttl_days: AtomicU64,
    store: Arc<dyn ChatStore>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .field("lifetimes", &self.lifetimes())
            .finish_non_exhaustive()
    }
}

impl TokenService {
    pub fn new(
        secret: &[u8],
        issuer: &str,
        lifetimes: Lifetimes,
        store: Arc<dyn ChatStore>,
    ) -> TokenService {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        TokenService {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            access_ttl_secs: AtomicU64::new(lifetimes.access_ttl_secs),
            refresh_ttl_days: AtomicU64::new(lifetimes.refresh_ttl_days),
            store,
        }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            access_ttl_secs: self.access_ttl_secs.load(Relaxed),
            refresh_ttl_days: self.refresh_ttl_days.load(Relaxed),
        }
    }

    /// New lifetimes, for tokens issued from now on.
    pub fn set_lifetimes(&self, lifetimes: Lifetimes) {
        self.access_ttl_secs.store(lifetimes.access_ttl_secs, Relaxed);
        self.refresh_ttl_days.store(lifetimes.refresh_ttl_days, Relaxed);
    }

    pub fn store(&self) -> &Arc<dyn ChatStore> {
        &self.store
    }

    /// An access token for `who`, issued at `iat_ms` (Unix ms).
    pub fn access_token_at(&self, who: &Identity, iat_ms: u64) -> Result<String, IssueError> {
        let iat = iat_ms / 1000;
        let claims = Claims {
            sub: who.user_id.clone(),
            dev: who.device_id.clone(),
            iss: self.issuer.clone(),
            iat,
            exp: iat.saturating_add(self.access_ttl_secs.load(Relaxed)),
            iat_ms,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| IssueError::Sign(e.to_string()))
    }

    /// A new access and refresh token for a device (login and refresh).
    pub async fn issue_pair(&self, who: &Identity) -> Result<TokenPair, IssueError> {
        let now = now_millis();
        // A pair issued in the millisecond of a logout must outlive it.
        let revoked = self.store.device_revoked_at(&who.user_id, &who.device_id).await?;
        let iat_ms = revoked.map_or(now, |at| now.max(at.saturating_add(1)));
        let access_token = self.access_token_at(who, iat_ms)?;

        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| IssueError::Random(e.to_string()))?;
        let refresh_token = URL_SAFE_NO_PAD.encode(raw);
        let days = self.refresh_ttl_days.load(Relaxed);
        self.store
            .put_refresh_token(RefreshToken {
                token_hash: refresh_hash(&refresh_token),
                user_id: who.user_id.clone(),
                device_id: who.device_id.clone(),
                expires_at: now.saturating_add(days.saturating_mul(MS_PER_DAY)),
            })
            .await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.access_ttl_secs.load(Relaxed),
        })
    }

    /// Consumes a refresh token: the device it was issued to, if it was known and unexpired.
    pub async fn redeem_refresh(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let Some(stored) = self.store.take_refresh_token(&refresh_hash(token)).await? else {
            return Ok(None);
        };
        if stored.expires_at <= now_millis() {
            return Ok(None);
        }
        Ok(Some(Identity { user_id: stored.user_id, device_id: stored.device_id }))
    }

    /// Checks signature, issuer and expiry; the claims if they hold.
    pub fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let claims = data.claims;
        if !topics::valid_user_id(&claims.sub) || !topics::valid_device_id(&claims.dev) {
            return Err(AuthError::Invalid);
        }
        Ok(claims)
    }
}

/// What the store keeps of a refresh token.
pub fn refresh_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[async_trait]
impl AccessTokens for TokenService {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = self.decode(token)?;
        let revoked = self
            .store
            .device_revoked_at(&claims.sub, &claims.dev)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if revoked.is_some_and(|at| claims.iat_ms <= at) {
            return Err(AuthError::Revoked);
        }
        Ok(Identity { user_id: claims.sub, device_id: claims.dev })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryStore, service};

    fn alice() -> Identity {
        Identity { user_id: "alice".into(), device_id: "phone".into() }
    }

    #[tokio::test]
    async fn issue_and_verify() {
        let (tokens, _) = service();
        let pair = tokens.issue_pair(&alice()).await.unwrap();
        assert_eq!(pair.expires_in, 900);
        assert_eq!(tokens.verify(&pair.access_token).await, Ok(alice()));
        let claims = tokens.decode(&pair.access_token).unwrap();
        assert_eq!(claims.iss, "seed");
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.iat, claims.iat_ms / 1000);
        assert_eq!(URL_SAFE_NO_PAD.decode(&pair.refresh_token).unwrap().len(), 32);
    }

    #[tokio::test]
    async fn forged_and_foreign_tokens_are_invalid() {
        let (tokens, store) = service();
        let token = tokens.access_token_at(&alice(), now_millis()).unwrap();
        // Another secret.
        let other = TokenService::new(&[9u8; 32], "seed", crate::testing::LIFETIMES, store.clone());
        assert_eq!(other.verify(&token).await, Err(AuthError::Invalid));
        // Same secret, another issuer.
        let stranger =
            TokenService::new(crate::testing::SECRET, "other", crate::testing::LIFETIMES, store);
        let foreign = stranger.access_token_at(&alice(), now_millis()).unwrap();
        assert_eq!(tokens.verify(&foreign).await, Err(AuthError::Invalid));
        // A changed payload under the old signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = "mallory".into();
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(tokens.verify(&parts.join(".")).await, Err(AuthError::Invalid));
        // alg=none.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(tokens.verify(&none).await, Err(AuthError::Invalid));
        for junk in ["", "x", "a.b.c", &"a".repeat(5000)] {
            assert_eq!(tokens.verify(junk).await, Err(AuthError::Invalid), "{junk}");
        }
    }

    #[tokio::test]
    async fn expired_tokens() {
        let (tokens, _) = service();
        let long_ago = now_millis() - 901_000 - LEEWAY_SECS * 1000 - 1000;
        let token = tokens.access_token_at(&alice(), long_ago).unwrap();
        assert_eq!(tokens.verify(&token).await, Err(AuthError::Expired));
        // Within the lifetime: fine.
        let token = tokens.access_token_at(&alice(), now_millis() - 800_000).unwrap();
        assert_eq!(tokens.verify(&token).await, Ok(alice()));
    }

    #[tokio::test]
    async fn revocation_is_per_device_and_to_the_millisecond() {
        let (tokens, store) = service();
        let at = now_millis();
        let before = tokens.access_token_at(&alice(), at - 1).unwrap();
        let same = tokens.access_token_at(&alice(), at).unwrap();
        let after = tokens.access_token_at(&alice(), at + 1).unwrap();
        let laptop = Identity { user_id: "alice".into(), device_id: "laptop".into() };
        let other_device = tokens.access_token_at(&laptop, at - 1).unwrap();
        store.revoke_device("alice", "phone", at).await.unwrap();
        assert_eq!(tokens.verify(&before).await, Err(AuthError::Revoked));
        assert_eq!(tokens.verify(&same).await, Err(AuthError::Revoked));
        assert_eq!(tokens.verify(&after).await, Ok(alice()));
        assert_eq!(tokens.verify(&other_device).await, Ok(laptop));
    }

    #[tokio::test]
    async fn a_pair_issued_in_the_logout_millisecond_survives_it() {
        let (tokens, store) = service();
        // A logout stamped in the future stands for "the same millisecond, or later".
        let at = now_millis() + 50;
        store.revoke_device("alice", "phone", at).await.unwrap();
        let pair = tokens.issue_pair(&alice()).await.unwrap();
        assert_eq!(tokens.decode(&pair.access_token).unwrap().iat_ms, at + 1);
        assert_eq!(tokens.verify(&pair.access_token).await, Ok(alice()));
    }

    #[tokio::test]
    async fn refresh_tokens_are_used_once_and_stored_hashed() {
        let (tokens, store) = service();
        let pair = tokens.issue_pair(&alice()).await.unwrap();
        assert!(store.has_refresh_hash(&refresh_hash(&pair.refresh_token)));
        assert_eq!(tokens.redeem_refresh(&pair.refresh_token).await, Ok(Some(alice())));
        assert_eq!(tokens.redeem_refresh(&pair.refresh_token).await, Ok(None));
        assert_eq!(tokens.redeem_refresh("").await, Ok(None));
    }

    #[tokio::test]
    async fn expired_refresh_tokens_are_refused() {
        let store = Arc::new(MemoryStore::default());
        store
            .put_refresh_token(RefreshToken {
                token_hash: refresh_hash("old"),
                user_id: "alice".into(),
                device_id: "phone".into(),
                expires_at: now_millis() - 1,
            })
            .await
            .unwrap();
        let tokens =
            TokenService::new(crate::testing::SECRET, "seed", crate::testing::LIFETIMES, store);
        assert_eq!(tokens.redeem_refresh("old").await, Ok(None));
    }

    #[tokio::test]
    async fn lifetimes_apply_to_new_tokens() {
        let (tokens, _) = service();
        tokens.set_lifetimes(Lifetimes { access_ttl_secs: 60, refresh_ttl_days: 1 });
        let pair = tokens.issue_pair(&alice()).await.unwrap();
        assert_eq!(pair.expires_in, 60);
        let claims = tokens.decode(&pair.access_token).unwrap();
        assert_eq!(claims.exp - claims.iat, 60);
    }
}
