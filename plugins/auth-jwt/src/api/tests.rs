//! The accounts API end to end through the router (`tower::ServiceExt::oneshot`), over the
//! in-memory store.

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::passwords;
use crate::testing::{MemoryStore, service};
use seed_chat_core::AuthError;

struct Api {
    router: Router,
    tokens: Arc<TokenService>,
    store: Arc<MemoryStore>,
}

fn api() -> Api {
    let (tokens, store) = service();
    let router = router(Accounts { tokens: tokens.clone(), passwords: passwords::cheap() });
    Api { router, tokens, store }
}

impl Api {
    async fn call(&self, path: &str, body: Option<&str>, bearer: Option<&str>) -> (u16, Value) {
        let mut request = Request::builder().method(Method::POST).uri(path);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(HttpBody::from(body.unwrap_or("").to_owned())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(path, Some(&body.to_string()), None).await
    }

    async fn register(&self, username: &str, password: &str) -> (u16, Value) {
        self.post("/v1/auth/register", json!({"username": username, "password": password})).await
    }

    async fn login(&self, username: &str, password: &str, device: &str) -> (u16, Value) {
        let body = json!({"username": username, "password": password, "device_id": device});
        self.post("/v1/auth/login", body).await
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn register() {
    let api = api();
    assert_eq!(api.register("alice", "wonderland").await, (201, json!({"user_id": "alice"})));
    let hash = api.store.password_hash("alice").unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let (status, body) = api.register("alice", "another-one").await;
    assert_eq!((status, code(&body)), (409, "user_exists"));
    assert!(body["error"]["message"].is_string());

    for name in ["al", "Alice", "a/b", "with space", &"a".repeat(33), ""] {
        let (status, body) = api.register(name, "wonderland").await;
        assert_eq!((status, code(&body)), (400, "invalid_username"), "{name}");
    }
    for password in ["short", "1234567", &"p".repeat(129)] {
        let (status, body) = api.register("bob", password).await;
        assert_eq!((status, code(&body)), (400, "invalid_password"), "{password}");
    }
    // Characters, not bytes: 8 two-byte characters pass, 128 of them too.
    assert_eq!(api.register("bob", &"é".repeat(128)).await.0, 201);
}

#[tokio::test]
async fn malformed_requests() {
    let api = api();
    for body in ["{", "[]", "{\"username\": \"alice\"}", "{\"username\": 1, \"password\": 2}"] {
        let (status, answer) = api.call("/v1/auth/register", Some(body), None).await;
        assert_eq!((status, code(&answer)), (400, "invalid_json"), "{body}");
    }
    // No content type.
    let (status, answer) = api.call("/v1/auth/login", None, None).await;
    assert_eq!((status, code(&answer)), (400, "invalid_json"));
}

#[tokio::test]
async fn login() {
    let api = api();
    api.register("alice", "wonderland").await;
    let (status, body) = api.login("alice", "wonderland", "phone-1").await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["access_token", "client_id", "expires_in", "refresh_token"]);
    assert_eq!(body["client_id"], "alice:phone-1");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().unwrap();
    let who = api.tokens.verify(access).await.unwrap();
    assert_eq!((who.user_id.as_str(), who.device_id.as_str()), ("alice", "phone-1"));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.len() == 43));

    for (user, password) in [("alice", "wrong-password"), ("nobody", "wonderland"), ("X", "y")] {
        let (status, body) = api.login(user, password, "phone-1").await;
        assert_eq!((status, code(&body)), (401, "invalid_credentials"), "{user}");
    }
    for device in ["", "a:b", "a/b", &"d".repeat(65)] {
        let (status, body) = api.login("alice", "wonderland", device).await;
        assert_eq!((status, code(&body)), (400, "invalid_device_id"), "{device}");
    }
}

#[tokio::test]
async fn refresh_rotates() {
    let api = api();
    api.register("alice", "wonderland").await;
    let (_, session) = api.login("alice", "wonderland", "phone").await;
    let old = session["refresh_token"].as_str().unwrap();

    let (status, fresh) = api.post("/v1/auth/refresh", json!({"refresh_token": old})).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["client_id"], "alice:phone");
    assert_eq!(fresh["expires_in"], 900);
    assert_ne!(fresh["refresh_token"], session["refresh_token"]);
    assert!(api.tokens.verify(fresh["access_token"].as_str().unwrap()).await.is_ok());

    let (status, body) = api.post("/v1/auth/refresh", json!({"refresh_token": old})).await;
    assert_eq!((status, code(&body)), (401, "invalid_refresh_token"), "spent");
    let (status, body) = api.post("/v1/auth/refresh", json!({"refresh_token": "made-up"})).await;
    assert_eq!((status, code(&body)), (401, "invalid_refresh_token"));
    let newer = fresh["refresh_token"].as_str().unwrap();
    assert_eq!(api.post("/v1/auth/refresh", json!({"refresh_token": newer})).await.0, 200);
}

#[tokio::test]
async fn logout_revokes_the_device() {
    let api = api();
    api.register("alice", "wonderland").await;
    let (_, phone) = api.login("alice", "wonderland", "phone").await;
    let (_, laptop) = api.login("alice", "wonderland", "laptop").await;
    let access = phone["access_token"].as_str().unwrap();

    let (status, body) = api.call("/v1/auth/logout", None, None).await;
    assert_eq!((status, code(&body)), (401, "missing_token"));
    let (status, body) = api.call("/v1/auth/logout", None, Some("junk")).await;
    assert_eq!((status, code(&body)), (401, "invalid_token"));

    assert_eq!(api.call("/v1/auth/logout", None, Some(access)).await, (204, Value::Null));
    assert_eq!(api.tokens.verify(access).await, Err(AuthError::Revoked));
    assert_eq!(api.store.refresh_tokens_of("alice", "phone"), 0);
    let refresh = json!({"refresh_token": phone["refresh_token"]});
    let (status, body) = api.post("/v1/auth/refresh", refresh).await;
    assert_eq!((status, code(&body)), (401, "invalid_refresh_token"));
    let (status, body) = api.call("/v1/auth/logout", None, Some(access)).await;
    assert_eq!((status, code(&body)), (401, "token_revoked"));

    // The other device is untouched, and the phone can sign in again at once.
    assert!(api.tokens.verify(laptop["access_token"].as_str().unwrap()).await.is_ok());
    let (status, again) = api.login("alice", "wonderland", "phone").await;
    assert_eq!(status, 200);
    assert!(api.tokens.verify(again["access_token"].as_str().unwrap()).await.is_ok());
}
