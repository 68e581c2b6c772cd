//! The HTTP API's error body, `{"error": {"code": "...", "message": "..."}}`, and the bearer
//! token extractor every signed-in call uses.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::{AccessTokens, AuthError, Identity, StoreError};

/// An error answer: an HTTP status and a stable, machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, "conflict", what),
            StoreError::NotFound(what) => ApiError::not_found("not_found", what),
            StoreError::Backend(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; try again",
            ),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Invalid => ApiError::unauthorized("invalid_token", e.to_string()),
            AuthError::Expired => ApiError::unauthorized("token_expired", e.to_string()),
            AuthError::Revoked => ApiError::unauthorized("token_revoked", e.to_string()),
            AuthError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "token verification is unavailable; try again",
            ),
        }
    }
}

/// The signed-in caller of an HTTP call (`Authorization: Bearer <access token>`). Any axum
/// state that can give an `Arc<dyn AccessTokens>` (via `FromRef`) supports it.
#[derive(Debug, Clone)]
pub struct Bearer(pub Identity);

impl<S> FromRequestParts<S> for Bearer
where
    Arc<dyn AccessTokens>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("missing_token", "Authorization: Bearer <token> is required")
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::unauthorized("missing_token", "Authorization: Bearer <token> is required")
        })?;
        let tokens = Arc::<dyn AccessTokens>::from_ref(state);
        Ok(Bearer(tokens.verify(token.trim()).await?))
    }
}
