//! Account passwords: Argon2id PHC strings, hashed and verified off the reactor.
//!
//! Argon2 is deliberately slow and memory-hungry (~19 MiB with the default parameters), so
//! every hash and check runs on tokio's blocking pool, and at most one per CPU at a time: a
//! flood of logins queues for a permit instead of exhausting memory. An unknown user is
//! checked against a dummy hash made with the same parameters, so the answer's timing does
//! not tell which user names exist.

use std::num::NonZero;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords; see the module documentation.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    dummy: Arc<str>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("params", &self.params).finish_non_exhaustive()
    }
}

impl Passwords {
    /// Argon2id with the `argon2` crate's default parameters.
    pub fn new() -> Result<Passwords, HashError> {
        Passwords::with_params(Params::default())
    }

    /// Argon2id with other parameters (tests use the cheapest).
    pub fn with_params(params: Params) -> Result<Passwords, HashError> {
        let permits = std::thread::available_parallelism().map_or(1, NonZero::get);
        let dummy_password = SaltString::generate(&mut OsRng);
        let dummy = hash_with(&params, dummy_password.as_str())?;
        Ok(Passwords { params, dummy: dummy.into(), permits: Arc::new(Semaphore::new(permits)) })
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.blocking(move || hash_with(&params, &password)).await?
    }

    /// Whether `password` matches `phc`; with `None` (no such user) it checks against the
    /// dummy hash, to take as long, and answers false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let dummy = self.dummy.clone();
        self.blocking(move || {
            let known = phc.is_some();
            let phc = phc.as_deref().unwrap_or(&dummy);
            let matches = match PasswordHash::new(phc) {
                Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
                Err(e) => {
                    tracing::warn!("stored password hash is not a PHC string: {e}");
                    false
                }
            };
            matches && known
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        // The permit moves into the task, so work outliving a dropped request still counts.
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|e| HashError(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| HashError(e.to_string()))
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, HashError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

#[cfg(test)]
pub fn cheap() -> Passwords {
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap();
    Passwords::with_params(params).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_parameters_are_argon2id() {
        let hash = Passwords::new().unwrap().hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let passwords = cheap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(passwords.verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!passwords.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!passwords.verify("anything".into(), None).await.unwrap());
        assert!(!passwords.verify("x".into(), Some("garbage".into())).await.unwrap());
    }
}
