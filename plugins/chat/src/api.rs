//! The chat's HTTP API: history and blocks (`/v1/chats/...`, `/v1/blocks/...`).
//!
//! Every call is signed in (`Bearer`); errors are the shared `{"error": {"code", "message"}}`
//! body. Message ids are 64-bit and travel as decimal strings, since JavaScript numbers lose
//! precision above 2^53; `sent_at` (unix ms) fits and is read from the id.

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use prost::Message as _;
use seed_chat_core::{AccessTokens, ApiError, Bearer, StoredMessage, dm_chat};
use seed_proto::topics;
use seed_proto::v1;
use serde::{Deserialize, Serialize};

use crate::{Chat, ids};

const DEFAULT_LIMIT: usize = 50;

#[derive(Clone)]
pub(crate) struct ApiState {
    chat: Arc<Chat>,
}

impl FromRef<ApiState> for Arc<dyn AccessTokens> {
    fn from_ref(state: &ApiState) -> Arc<dyn AccessTokens> {
        state.chat.tokens.clone()
    }
}

pub(crate) fn routes(chat: Arc<Chat>) -> Router {
    Router::new()
        .route("/v1/chats/{chat}/messages", get(history))
        .route("/v1/blocks", get(blocked))
        .route("/v1/blocks/{user}", put(block).delete(unblock))
        .with_state(ApiState { chat })
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    before: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HistoryPage {
    messages: Vec<MessageJson>,
    next_before: Option<String>,
}

#[derive(Debug, Serialize)]
struct MessageJson {
    id: String,
    from: String,
    text: String,
    media: Option<MediaJson>,
    reply_to: Option<String>,
    sent_at: u64,
}

#[derive(Debug, Serialize)]
struct MediaJson {
    id: String,
    mime: String,
    size: u64,
    name: String,
}

impl MessageJson {
    fn from_stored(stored: StoredMessage) -> MessageJson {
        // A body that does not decode still shows who sent what when.
        let body = v1::Message::decode(stored.body.as_ref()).unwrap_or_default();
        MessageJson {
            id: stored.id.to_string(),
            from: stored.sender,
            text: body.text,
            media: body.media.map(|m| MediaJson {
                id: m.id,
                mime: m.mime,
                size: m.size,
                name: m.name,
            }),
            reply_to: (body.reply_to != 0).then(|| body.reply_to.to_string()),
            sent_at: ids::sent_at(stored.id),
        }
    }
}

/// `GET /v1/chats/{chat}/messages?before=&limit=`: a page of a direct chat, newest first.
async fn history(
    State(state): State<ApiState>,
    Bearer(me): Bearer,
    Path(peer): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    if !topics::valid_user_id(&peer) {
        return Err(ApiError::bad_request("invalid_chat", "a chat is the other user's id"));
    }
    let max = state.chat.config().history_max_limit;
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT.min(max),
        Some(text) => {
            text.parse::<usize>().ok().filter(|l| (1..=max).contains(l)).ok_or_else(|| {
                ApiError::bad_request("invalid_limit", format!("limit is 1..={max}"))
            })?
        }
    };
    let before = match query.before.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_before", "before is a message id (decimal)")
        })?),
    };
    let stored = state.chat.store.history(&dm_chat(&me.user_id, &peer), before, limit).await?;
    let full = stored.len() >= limit;
    let messages: Vec<MessageJson> = stored.into_iter().map(MessageJson::from_stored).collect();
    let next_before = if full { messages.last().map(|m| m.id.clone()) } else { None };
    Ok(Json(HistoryPage { messages, next_before }))
}

/// `PUT /v1/blocks/{user}`.
async fn block(
    State(state): State<ApiState>,
    Bearer(me): Bearer,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    if user == me.user_id {
        return Err(ApiError::bad_request("invalid_user", "you cannot block yourself"));
    }
    known_user(&state, &user).await?;
    state.chat.store.set_blocked(&me.user_id, &user, true).await?;
    state.chat.directory.set_blocked(&me.user_id, &user, true);
    Ok(StatusCode::NO_CONTENT)
}

/// 404 `user_not_found` unless `user` is a registered user.
async fn known_user(state: &ApiState, user: &str) -> Result<(), ApiError> {
    let chat = &state.chat;
    let exists =
        topics::valid_user_id(user) && chat.directory.user_exists(&*chat.store, user).await?;
    if exists {
        Ok(())
    } else {
        Err(ApiError::not_found("user_not_found", format!("no user {user}")))
    }
}

/// `DELETE /v1/blocks/{user}`: idempotent for a known user.
async fn unblock(
    State(state): State<ApiState>,
    Bearer(me): Bearer,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    known_user(&state, &user).await?;
    state.chat.store.set_blocked(&me.user_id, &user, false).await?;
    state.chat.directory.set_blocked(&me.user_id, &user, false);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct Blocked {
    blocked: Vec<String>,
}

/// `GET /v1/blocks`: everyone I blocked, sorted.
async fn blocked(
    State(state): State<ApiState>,
    Bearer(me): Bearer,
) -> Result<Json<Blocked>, ApiError> {
    Ok(Json(Blocked { blocked: state.chat.store.blocked_by(&me.user_id).await? }))
}
