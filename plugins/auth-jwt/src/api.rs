//! The accounts API (DESIGN.md, "HTTP API"): register, login, refresh, logout under
//! `/v1/auth/`, JSON in and out, errors as [`ApiError`].
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /v1/auth/register` | `{"username", "password"}` | `201 {"user_id"}` |
//! | `POST /v1/auth/login` | `{"username", "password", "device_id"}` | `200` session |
//! | `POST /v1/auth/refresh` | `{"refresh_token"}` | `200` session; the old token is spent |
//! | `POST /v1/auth/logout` | bearer token | `204`; the device's tokens stop working |
//!
//! A session is `{"access_token", "refresh_token", "expires_in", "client_id"}`.
//!
//! Login answers an unknown user exactly like a wrong password, after the same amount of
//! hashing work (see `passwords.rs`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use seed_chat_core::{AccessTokens, ApiError, Bearer, Identity, StoreError, now_millis};
use seed_proto::topics;

use crate::passwords::Passwords;
use crate::tokens::{IssueError, TokenPair, TokenService};

/// Password length bounds, in characters.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// What the handlers share.
#[derive(Clone)]
pub struct Accounts {
    pub tokens: Arc<TokenService>,
    pub passwords: Passwords,
}

impl FromRef<Accounts> for Arc<dyn AccessTokens> {
    fn from_ref(accounts: &Accounts) -> Arc<dyn AccessTokens> {
        accounts.tokens.clone()
    }
}

/// The `/v1/auth/*` routes.
pub fn router(accounts: Accounts) -> Router {
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .with_state(accounts)
}

/// A JSON body whose every rejection (syntax, missing field, content type) is a 400
/// `invalid_json` in our error shape.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(invalid_json(&rejection)),
        }
    }
}

fn invalid_json(rejection: &JsonRejection) -> ApiError {
    ApiError::bad_request("invalid_json", rejection.body_text())
}

fn internal(what: impl std::fmt::Display) -> ApiError {
    tracing::error!("accounts: {what}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; try again")
}

fn issue_failed(e: IssueError) -> ApiError {
    match e {
        IssueError::Store(e) => e.into(),
        other => internal(other),
    }
}

type Answer<T> = Result<T, ApiError>;

#[derive(Debug, Deserialize)]
struct RegisterRequest {
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct RegisterResponse {
    user_id: String,
}

#[derive(Debug, Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
    device_id: String,
}

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

/// The answer of login and refresh.
#[derive(Debug, Serialize)]
struct Session {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    client_id: String,
}

impl Session {
    fn new(who: &Identity, pair: TokenPair) -> Session {
        Session {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            expires_in: pair.expires_in,
            client_id: topics::client_id(&who.user_id, &who.device_id),
        }
    }
}

async fn register(
    State(accounts): State<Accounts>,
    Body(request): Body<RegisterRequest>,
) -> Answer<(StatusCode, Json<RegisterResponse>)> {
    if !topics::valid_user_id(&request.username) {
        return Err(ApiError::bad_request(
            "invalid_username",
            "a username is 3 to 32 of a-z, 0-9, '_', '.', '-'",
        ));
    }
    if !PASSWORD_CHARS.contains(&request.password.chars().count()) {
        return Err(ApiError::bad_request(
            "invalid_password",
            "a password is 8 to 128 characters long",
        ));
    }
    let hash = accounts.passwords.hash(request.password).await.map_err(internal)?;
    match accounts.tokens.store().create_user(&request.username, &hash).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "user_exists",
                "this username is taken",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user = %request.username, "registered");
    Ok((StatusCode::CREATED, Json(RegisterResponse { user_id: request.username })))
}

async fn login(
    State(accounts): State<Accounts>,
    Body(request): Body<LoginRequest>,
) -> Answer<Json<Session>> {
    if !topics::valid_device_id(&request.device_id) {
        return Err(ApiError::bad_request(
            "invalid_device_id",
            "a device id is 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-'",
        ));
    }
    let store = accounts.tokens.store();
    let user = match topics::valid_user_id(&request.username) {
        true => store.user(&request.username).await?,
        false => None,
    };
    let hash = user.map(|u| u.password_hash);
    if !accounts.passwords.verify(request.password, hash).await.map_err(internal)? {
        tracing::info!(user = %request.username, "login refused: unknown user or wrong password");
        return Err(ApiError::unauthorized("invalid_credentials", "wrong username or password"));
    }
    let who = Identity { user_id: request.username, device_id: request.device_id };
    let pair = accounts.tokens.issue_pair(&who).await.map_err(issue_failed)?;
    tracing::info!(user = %who.user_id, device = %who.device_id, "logged in");
    Ok(Json(Session::new(&who, pair)))
}

async fn refresh(
    State(accounts): State<Accounts>,
    Body(request): Body<RefreshRequest>,
) -> Answer<Json<Session>> {
    let Some(who) = accounts.tokens.redeem_refresh(&request.refresh_token).await? else {
        return Err(ApiError::unauthorized(
            "invalid_refresh_token",
            "the refresh token is unknown, expired or already used",
        ));
    };
    let pair = accounts.tokens.issue_pair(&who).await.map_err(issue_failed)?;
    Ok(Json(Session::new(&who, pair)))
}

async fn logout(State(accounts): State<Accounts>, Bearer(who): Bearer) -> Answer<StatusCode> {
    let store = accounts.tokens.store();
    store.revoke_device(&who.user_id, &who.device_id, now_millis()).await?;
    tracing::info!(user = %who.user_id, device = %who.device_id, "logged out");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
