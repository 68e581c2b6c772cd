//! A small HTTP/1.1 client for the accounts API: one connection per call (hyper's `conn`
//! client on a tokio socket), JSON in and out, `http://` URLs only. Calls are rare (login,
//! refresh, history), so a pool would add weight without speed.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// How long one exchange (connect, request, whole answer) may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// An `http://host:port[/prefix]` base URL, split once.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    authority: String,
    prefix: String,
}

impl BaseUrl {
    pub(crate) fn parse(url: &str) -> Result<BaseUrl> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| Error::Invalid(format!("only http:// URLs are supported: {url}")))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(Error::Invalid(format!("no host in {url}")));
        }
        Ok(BaseUrl { authority: authority.to_owned(), prefix: prefix.to_owned() })
    }
}

/// A successful answer's JSON body (`Value::Null` when empty).
pub(crate) struct Answer {
    pub body: Value,
}

/// Sends one request and reads the whole answer; error statuses become [`Error::Api`].
pub(crate) async fn call(
    base: &BaseUrl,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer> {
    tokio::time::timeout(TIMEOUT, exchange(base, method, path, token, body))
        .await
        .map_err(|_| Error::Timeout(format!("HTTP {path}")))?
}

async fn exchange(
    base: &BaseUrl,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer> {
    let stream = TcpStream::connect(&base.authority)
        .await
        .map_err(|e| Error::Http(format!("connecting to {}: {e}", base.authority)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Http(format!("handshake: {e}")))?;
    let driver = tokio::spawn(conn);

    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", base.prefix))
        .header(HOST, &base.authority);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(v) => {
            request = request.header(CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v).map_err(|e| Error::Http(e.to_string()))?)
        }
        None => Bytes::new(),
    };
    let request =
        request.body(Full::new(payload)).map_err(|e| Error::Invalid(format!("request: {e}")))?;
    let response =
        sender.send_request(request).await.map_err(|e| Error::Http(format!("request: {e}")))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::Http(format!("reading body: {e}")))?
        .to_bytes();
    driver.abort();

    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status >= 400 {
        let error = body.get("error");
        let field = |name: &str| {
            error.and_then(|e| e.get(name)).and_then(Value::as_str).unwrap_or_default().to_owned()
        };
        return Err(Error::Api { status, code: field("code"), message: field("message") });
    }
    Ok(Answer { body })
}
