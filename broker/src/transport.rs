//! A byte pipe to a client, whatever carries it: TCP, TLS over TCP, or WebSocket frames.
//!
//! The connection code reads into and writes from whole buffers, so one small trait covers
//! all three; WebSocket is the only one that needs more than a pass-through (MQTT packets
//! travel in binary frames, which need not line up with packet boundaries).
//!
//! Reading is a poll function rather than an async one: a connection waits for its client
//! far longer than for anything else, and polling the transport directly leaves the waiting
//! task no read future to hold (the waker sits in the socket's registration instead).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub trait Transport: Send + 'static {
    /// Reads what is available into `buf`; `Ok(0)` means the peer closed. Pending means
    /// nothing was read and the task is woken when there may be more.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;

    fn write_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// Closes our side politely (TLS close_notify, WebSocket close frame).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Plain TCP waits for readiness before it takes buffer space, so an idle connection holds
/// no read buffer at all.
impl Transport for TcpStream {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_read_ready(cx))?;
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        // Through `AsyncRead` rather than `try_read_buf`: a read that leaves room unfilled
        // has drained the socket, and `poll_read` then clears its readiness, so the next
        // poll waits for the next data instead of learning it with a read that fails.
        let read = pin!(AsyncReadExt::read_buf(self, buf)).poll(cx);
        if read.is_pending() && buf.is_empty() {
            // Readiness was stale: give the space back before waiting for real.
            *buf = BytesMut::new();
        }
        read
    }

    fn write_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        // The future itself, not an `async fn` around it: it sits in every connection's
        // state, and a wrapper would add its own copy of the arguments.
        AsyncWriteExt::write_all(self, data)
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// Room reserved for one read when the buffer is short of it.
const READ_CHUNK: usize = 16 * 1024;

/// Any other ordered byte stream, such as a rustls `TlsStream`.
pub struct ByteStream<S>(pub S);

impl<S> Transport for ByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        // `read_buf` holds nothing but references and reads nothing while pending, so a
        // fresh one per poll behaves as one kept across polls.
        pin!(self.0.read_buf(buf)).poll(cx)
    }

    async fn write_all<'a>(&'a mut self, data: &'a [u8]) -> io::Result<()> {
        self.0.write_all(data).await
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// MQTT over WebSocket: binary frames in, binary frames out.
pub struct WsTransport<S>(pub WebSocketStream<S>);

impl<S> Transport for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            let read = match ready!(self.0.poll_next_unpin(cx)) {
                None => Ok(0),
                Some(Err(e)) => Err(io::Error::other(e)),
                Some(Ok(WsMessage::Binary(data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    buf.extend_from_slice(&data);
                    Ok(data.len())
                }
                Some(Ok(WsMessage::Close(_))) => Ok(0),
                // tungstenite queues the answer to a ping; this sends it, and a flush that
                // cannot finish now is finished by its next read or write.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
                    let _ = self.0.poll_flush_unpin(cx);
                    continue;
                }
                // [MQTT-6.0.0-1]: MQTT must be carried in binary frames.
                Some(Ok(WsMessage::Text(_))) => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "text frame"))
                }
            };
            return Poll::Ready(read);
        }
    }

    async fn write_all<'a>(&'a mut self, data: &'a [u8]) -> io::Result<()> {
        self.0.send(WsMessage::Binary(Bytes::copy_from_slice(data))).await.map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.0.close(None).await;
    }
}
