//! [`Body`]: a response body, whole or streamed, and small response builders.
//!
//! - *Whole*: a list of `Bytes` with an exact length, known before the head is written:
//!   hyper writes `Content-Length` from it (for HEAD too, without the body) and, with the
//!   vectored adapter, sends each chunk as its own slice, never copied into one buffer.
//! - *Streamed* ([`Body::channel`]): chunks fed by a [`BodySender`] as they are made (HTTP-FLV
//!   later), sent with chunked transfer encoding. The channel holds at most `capacity` chunks
//!   (plus one per sender): a producer whose viewer does not keep up sees
//!   [`BodySender::try_send`] fail (and applies its slow-viewer policy) or waits in
//!   [`BodySender::send`]; nothing piles up unbounded. Each chunk is a [`Batch`] of slices,
//!   written as one chunk of the chunked encoding in one vectored write. The connection's write deadline applies
//!   while the stream runs (see [`super::deadline`]). Dropping the sender ends the body;
//!   a closed connection makes the sender's next send fail.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_lite::StreamExt;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::StatusCode;
use serde::Serialize;

use super::batch::Batch;
use super::Response;

/// A response body: whole chunks, or a stream of them.
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    /// Bytes left in `chunks` (the exact size hint hyper takes `Content-Length` from).
    len: u64,
    /// Where a streamed body's chunks come from (`chunks` is then unused).
    stream: Option<mpsc::Receiver<Batch>>,
}

impl Body {
    /// No body (`Content-Length: 0`).
    pub fn empty() -> Body {
        Body::default()
    }

    /// A body of these chunks, in order; empty chunks are left out.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Body {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        Body {
            chunks,
            len,
            stream: None,
        }
    }

    /// A streamed body of unknown length, and the sender that feeds it; at most `capacity`
    /// chunks wait in between.
    pub fn channel(capacity: usize) -> (BodySender, Body) {
        let (tx, rx) = mpsc::channel(capacity);
        let body = Body {
            stream: Some(rx),
            ..Body::default()
        };
        (BodySender(tx), body)
    }

    /// True for a streamed body.
    pub fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }
}

/// Feeds a streamed [`Body`].
#[derive(Debug, Clone)]
pub struct BodySender(mpsc::Sender<Batch>);

/// Why a chunk was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The channel is full: the viewer is behind.
    #[error("the response body's channel is full")]
    Full,
    /// The response is gone (the connection closed or was cut).
    #[error("the response body is closed")]
    Closed,
}

impl BodySender {
    /// Queues `chunk` now, or says why not.
    pub fn try_send(&mut self, chunk: impl Into<Batch>) -> Result<(), SendError> {
        self.0.try_send(chunk.into()).map_err(|e| {
            if e.is_full() {
                SendError::Full
            } else {
                SendError::Closed
            }
        })
    }

    /// Waits until the channel has room for one more chunk (then, with no other sender
    /// between, [`BodySender::try_send`] takes it).
    pub async fn ready(&mut self) -> Result<(), SendError> {
        std::future::poll_fn(|cx| self.0.poll_ready(cx))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queues `chunk`, waiting for room.
    pub async fn send(&mut self, chunk: impl Into<Batch>) -> Result<(), SendError> {
        std::future::poll_fn(|cx| self.0.poll_ready(cx))
            .await
            .map_err(|_| SendError::Closed)?;
        self.0
            .start_send(chunk.into())
            .map_err(|_| SendError::Closed)
    }

    /// True once the response is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::from_chunks([bytes])
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from(bytes))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Body {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl hyper::body::Body for Body {
    type Data = Batch;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Batch>, Infallible>>> {
        if let Some(stream) = &mut self.stream {
            return stream.poll_next(cx).map(|c| c.map(|c| Ok(Frame::data(c))));
        }
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.len -= chunk.len() as u64;
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(Batch::from(c)))))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() && self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stream.is_some() {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.len)
    }
}

/// A response with `status`, `Content-Type: content_type`, `Cache-Control: no-cache` and
/// `body`.
pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    with_type(status, "text/plain; charset=utf-8", body)
}

/// A 200 JSON response (500 if `value` does not serialize).
pub fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => with_type(StatusCode::OK, "application/json", body),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    #[test]
    fn chunks_come_out_in_order_with_an_exact_length() {
        let mut body = Body::from_chunks([
            Bytes::from_static(b"\x01"),
            Bytes::new(),
            Bytes::from_static(b"rtmp"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(5));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            out.push(frame.into_data().expect("data").collect_bytes());
            assert_eq!(
                body.size_hint().exact(),
                Some(5 - out.concat().len() as u64)
            );
        }
        assert_eq!(out, [&b"\x01"[..], &b"rtmp"[..]]);
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_streamed_body_is_bounded_and_ends_with_its_sender() {
        let (mut tx, mut body) = Body::channel(2);
        assert!(body.is_streaming());
        assert_eq!(body.size_hint().exact(), None, "sent chunked");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        let mut sent = 0;
        while tx.try_send(Bytes::from_static(b"flv")).is_ok() {
            sent += 1;
            assert!(sent < 10, "the channel never filled");
        }
        assert_eq!(tx.try_send(Bytes::new()), Err(SendError::Full));
        for _ in 0..sent {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    assert_eq!(frame.into_data().expect("data").collect_bytes(), b"flv")
                }
                _ => panic!("a queued chunk did not come out"),
            }
        }
        drop(tx);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[test]
    fn a_dropped_body_closes_its_sender() {
        let (mut tx, body) = Body::channel(1);
        drop(body);
        assert!(tx.is_closed());
        assert_eq!(
            tx.try_send(Bytes::from_static(b"x")),
            Err(SendError::Closed)
        );
    }
}
