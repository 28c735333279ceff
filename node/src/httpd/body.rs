//! [`Body`]: a response body made of whole byte chunks, and small response builders.
//!
//! Every answer the node gives today is known in full before its head is written, so the body
//! is a list of `Bytes` with an exact length: hyper writes `Content-Length` from it (for HEAD
//! too, without the body) and, with the vectored adapter, sends each chunk as its own slice,
//! never copied into one buffer. A streaming body (HTTP-FLV) would be a second variant here.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::StatusCode;
use serde::Serialize;

use super::Response;

/// A response body of whole chunks.
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    /// Bytes left in `chunks` (the exact size hint hyper takes `Content-Length` from).
    len: u64,
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
        Body { chunks, len }
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
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.len -= chunk.len() as u64;
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
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
            out.push(frame.into_data().expect("data"));
            assert_eq!(
                body.size_hint().exact(),
                Some(5 - out.concat().len() as u64)
            );
        }
        assert_eq!(out, [&b"\x01"[..], &b"rtmp"[..]]);
        assert!(body.is_end_stream());
    }
}
