//! Bearer-token verification as a service: `auth-jwt` issues and verifies access tokens, and
//! any plugin with an HTTP API asks it who is calling.

use async_trait::async_trait;

/// A signed-in device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub device_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is malformed or its signature is wrong")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token was revoked")]
    Revoked,
    #[error("token check failed: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait AccessTokens: Send + Sync + 'static {
    /// The device an access token was issued to, if the token is valid, unexpired and not
    /// revoked.
    async fn verify(&self, token: &str) -> Result<Identity, AuthError>;
}
