//! The accounts side of the SDK (DESIGN.md, "HTTP API"): register, log a device in to get a
//! [`Session`] (the tokens the MQTT connection presents), refresh, log out, and the calls that
//! are not MQTT: history and blocks.

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::http::{self, BaseUrl};

/// A logged-in device: what [`crate::ChatClient::connect`] needs. Serializable so a command
/// line client can keep it in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub device: String,
    pub access_token: String,
    pub refresh_token: String,
    /// `{user}:{device}`, as the server assigned it.
    pub client_id: String,
    /// Lifetime of the access token in seconds, as given at login.
    pub expires_in: u64,
}

/// One message of a chat's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMessage {
    pub id: u64,
    pub from: String,
    pub text: String,
    /// The media reference as the server rendered it (null when none).
    pub media: Value,
    /// The id of the message this one answers, if any.
    pub reply_to: Option<u64>,
    /// As the server rendered it (a number or a timestamp string).
    pub sent_at: Value,
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub messages: Vec<HistoryMessage>,
    /// Pass as `before` for the next (older) page; None when there is none.
    pub next_before: Option<u64>,
}

/// The HTTP API of one server.
#[derive(Debug, Clone)]
pub struct Account {
    base: BaseUrl,
}

impl Account {
    /// `base_url` like `http://127.0.0.1:8080`.
    pub fn new(base_url: &str) -> Result<Account> {
        Ok(Account { base: BaseUrl::parse(base_url)? })
    }

    /// Creates a user; returns its user id.
    pub async fn register(&self, username: &str, password: &str) -> Result<String> {
        let body = json!({ "username": username, "password": password });
        let answer =
            http::call(&self.base, Method::POST, "/v1/auth/register", None, Some(&body)).await?;
        string(&answer.body, "user_id")
    }

    /// Logs a device in.
    pub async fn login(&self, username: &str, password: &str, device: &str) -> Result<Session> {
        let body = json!({ "username": username, "password": password, "device_id": device });
        let answer =
            http::call(&self.base, Method::POST, "/v1/auth/login", None, Some(&body)).await?;
        session(&answer.body, username, device)
    }

    /// Trades the refresh token for a new pair (the old refresh token is spent).
    pub async fn refresh(&self, session: &Session) -> Result<Session> {
        let body = json!({ "refresh_token": session.refresh_token });
        let answer =
            http::call(&self.base, Method::POST, "/v1/auth/refresh", None, Some(&body)).await?;
        let mut next = session.clone();
        next.access_token = string(&answer.body, "access_token")?;
        next.refresh_token = string(&answer.body, "refresh_token")?;
        if let Some(e) = answer.body.get("expires_in").and_then(Value::as_u64) {
            next.expires_in = e;
        }
        Ok(next)
    }

    /// Revokes this device's tokens.
    pub async fn logout(&self, session: &Session) -> Result<()> {
        let token = Some(session.access_token.as_str());
        http::call(&self.base, Method::POST, "/v1/auth/logout", token, None).await.map(drop)
    }

    /// A page of the direct chat with `peer`, newest first.
    pub async fn history(
        &self,
        session: &Session,
        peer: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<History> {
        let mut path = format!("/v1/chats/{}/messages", path_segment(peer)?);
        let mut sep = '?';
        if let Some(b) = before {
            path.push_str(&format!("{sep}before={b}"));
            sep = '&';
        }
        if let Some(l) = limit {
            path.push_str(&format!("{sep}limit={l}"));
        }
        let token = Some(session.access_token.as_str());
        let answer = http::call(&self.base, Method::GET, &path, token, None).await?;
        let list = answer
            .body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Http("history: no messages array".into()))?;
        let messages = list
            .iter()
            .map(|m| {
                Ok(HistoryMessage {
                    id: number(m.get("id"))
                        .ok_or_else(|| Error::Http(format!("history: bad id in {m}")))?,
                    from: m.get("from").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    text: m.get("text").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    media: m.get("media").cloned().unwrap_or(Value::Null),
                    reply_to: number(m.get("reply_to")).filter(|&r| r != 0),
                    sent_at: m.get("sent_at").cloned().unwrap_or(Value::Null),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(History { messages, next_before: number(answer.body.get("next_before")) })
    }

    /// `session`'s user blocks `user`: their messages are refused from now on.
    pub async fn block(&self, session: &Session, user: &str) -> Result<()> {
        self.blocks(session, Method::PUT, user).await
    }

    pub async fn unblock(&self, session: &Session, user: &str) -> Result<()> {
        self.blocks(session, Method::DELETE, user).await
    }

    async fn blocks(&self, session: &Session, method: Method, user: &str) -> Result<()> {
        let path = format!("/v1/blocks/{}", path_segment(user)?);
        let token = Some(session.access_token.as_str());
        http::call(&self.base, method, &path, token, None).await.map(drop)
    }
}

/// User ids are a URL-safe alphabet; anything else is refused rather than escaped.
fn path_segment(id: &str) -> Result<&str> {
    if seed_proto::topics::valid_user_id(id) {
        Ok(id)
    } else {
        Err(Error::Invalid(format!("not a user id: {id:?}")))
    }
}

fn string(body: &Value, field: &str) -> Result<String> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Http(format!("answer has no {field:?}: {body}")))
}

/// Ids travel as decimal strings (JavaScript loses precision past 2^53); accept numbers too.
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn session(body: &Value, username: &str, device: &str) -> Result<Session> {
    Ok(Session {
        user: username.to_owned(),
        device: device.to_owned(),
        access_token: string(body, "access_token")?,
        refresh_token: string(body, "refresh_token")?,
        client_id: body
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| seed_proto::topics::client_id(username, device)),
        expires_in: body.get("expires_in").and_then(Value::as_u64).unwrap_or(0),
    })
}
