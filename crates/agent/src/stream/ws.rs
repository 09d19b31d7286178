//! WebSocket pieces of Kubernetes' streaming: the server handshake on an HTTP/1.1 upgrade,
//! the `channel.k8s.io` framing (each message starts with its channel number; the base64
//! variants send text messages whose first character is the channel digit), and a byte
//! stream over binary messages (the `SPDY/3.1+portforward.k8s.io` tunnel).

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use bytes::Bytes;
use futures::{Sink, Stream};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest WebSocket message accepted from a client.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A server-side WebSocket on an upgraded connection.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Channel numbers of remote command streams.
pub mod channel {
    /// Client → process.
    pub const STDIN: u8 = 0;
    /// Process → client.
    pub const STDOUT: u8 = 1;
    /// Process → client.
    pub const STDERR: u8 = 2;
    /// The final status (v4+: a `metav1.Status`).
    pub const ERROR: u8 = 3;
    /// Terminal size, JSON `{"Width":…,"Height":…}`.
    pub const RESIZE: u8 = 4;
    /// v5: "no more data on channel N", the channel in the next byte.
    pub const CLOSE: u8 = 255;
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let conn = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && conn
}

/// The subprotocols the client offers, in its order of preference.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first offered protocol this server supports; `Some("")` when the client offered none
/// and `""` is supported.
pub fn choose(offered: &[String], supported: &[&str]) -> Option<String> {
    if offered.is_empty() {
        return supported.contains(&"").then(String::new);
    }
    offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
}

/// The `101 Switching Protocols` answer for a WebSocket request, or `None` when the request
/// lacks a usable key or version.
pub fn accept_response<B: Default>(headers: &HeaderMap, protocol: &str) -> Option<Response<B>> {
    let key = headers.get(http::header::SEC_WEBSOCKET_KEY)?;
    if headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() != b"13")
    {
        return None;
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(B::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).ok()?,
    );
    if !protocol.is_empty() {
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).ok()?,
        );
    }
    Some(r)
}

/// Wraps an upgraded connection as a server WebSocket with bounded messages.
pub async fn server(upgraded: Upgraded) -> Ws {
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(4 * MAX_MESSAGE);
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg)).await
}

/// How channel messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages: channel byte, then the bytes.
    Binary,
    /// Text messages: channel digit, then base64.
    Base64,
}

impl Codec {
    /// The codec of a negotiated subprotocol.
    pub fn of(protocol: &str) -> Codec {
        if protocol.contains("base64.") {
            Codec::Base64
        } else {
            Codec::Binary
        }
    }

    /// One message on `channel`.
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Codec::Binary => {
                let mut v = Vec::with_capacity(data.len() + 1);
                v.push(channel);
                v.extend_from_slice(data);
                Message::Binary(Bytes::from(v))
            }
            Codec::Base64 => {
                let mut s = String::with_capacity(data.len() * 4 / 3 + 4);
                s.push(char::from(b'0'.wrapping_add(channel)));
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
                Message::text(s)
            }
        }
    }

    /// The channel and bytes of a data message; `None` for empty, control or undecodable
    /// messages (ignored, as Kubernetes does).
    pub fn decode(self, m: &Message) -> Option<(u8, Vec<u8>)> {
        let raw: &[u8] = match m {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        match self {
            Codec::Binary => Some((first, rest.to_vec())),
            Codec::Base64 => {
                let ch = first.wrapping_sub(b'0');
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                Some((ch, data))
            }
        }
    }
}

/// A byte stream carried in binary WebSocket messages (one message per write), as
/// client-go's tunnelling connection does for SPDY.
pub struct WsIo {
    ws: Ws,
    pending: Bytes,
    closed: bool,
}

impl WsIo {
    /// Wraps a WebSocket.
    pub fn new(ws: Ws) -> WsIo {
        WsIo {
            ws,
            pending: Bytes::new(),
            closed: false,
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    self.closed = true;
                }
                Poll::Ready(Some(Ok(Message::Binary(b)))) => self.pending = b,
                Poll::Ready(Some(Ok(Message::Close(_)))) => self.closed = true,
                // Text, ping and pong carry no tunnel bytes (pings are answered inside).
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        match ws.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.len().min(MAX_MESSAGE / 2);
        let msg = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        match Pin::new(&mut self.ws).start_send(msg) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_framing() {
        let m = Codec::Binary.encode(channel::STDOUT, b"hi");
        assert_eq!(m, Message::Binary(Bytes::from_static(&[1, b'h', b'i'])));
        assert_eq!(Codec::Binary.decode(&m), Some((1, b"hi".to_vec())));
        // v5's close signal for stdin.
        let close = Message::Binary(Bytes::from_static(&[255, 0]));
        assert_eq!(Codec::Binary.decode(&close), Some((255, vec![0])));
        // Kubernetes' own example: "foo\n" on stdin in base64.channel.k8s.io.
        let b = Message::text("0Zm9vCg==");
        assert_eq!(Codec::Base64.decode(&b), Some((0, b"foo\n".to_vec())));
        assert_eq!(
            Codec::Base64.encode(1, b"\n"),
            Message::text("1Cg==".to_string())
        );
        assert_eq!(Codec::Binary.decode(&Message::Binary(Bytes::new())), None);
        assert_eq!(Codec::Base64.decode(&Message::text("0!!")), None);
        assert_eq!(Codec::of("v4.base64.channel.k8s.io"), Codec::Base64);
        assert_eq!(Codec::of("v5.channel.k8s.io"), Codec::Binary);
    }

    #[test]
    fn negotiation_and_handshake() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        // RFC 6455's example key.
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        assert!(is_websocket(&h));
        let offered = offered_protocols(&h);
        assert_eq!(
            choose(&offered, &["v4.channel.k8s.io", "v5.channel.k8s.io"]).as_deref(),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(choose(&offered, &["channel.k8s.io"]), None);
        assert_eq!(choose(&[], &["", "x"]).as_deref(), Some(""));
        let r: Response<()> = accept_response(&h, "v5.channel.k8s.io").unwrap();
        assert_eq!(r.status(), 101);
        assert_eq!(
            r.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
    }
}
