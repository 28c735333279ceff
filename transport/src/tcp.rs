//! Writing to a glommio `TcpStream` without glommio's one-buffer limit, and a deadline for
//! any future on the current executor.
//!
//! [`poll_write_vectored`] is what every vectored writer here builds on (the TLS driver's
//! record flush, and any pipe that wants `AsyncWrite::poll_write_vectored` for real): one
//! [`send_vectored`] of all the slices; only when the socket is full does it fall back to
//! glommio's `poll_write` of the first slice, which first tries a plain `send` and otherwise
//! registers the task for writability. glommio does not keep the bytes while it waits, so
//! nothing is in flight between two polls.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{future, AsyncWrite};
use glommio::net::TcpStream;

use crate::socket::send_vectored;

/// Writes as much of `slices` as the socket takes now (one `sendmsg`); when it takes
/// nothing, waits for writability. `Ready(Ok(0))` only when every slice is empty.
pub fn poll_write_vectored(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    slices: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    match send_vectored(stream, slices) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let first = slices.iter().find(|s| !s.is_empty()).map_or(&[][..], |s| s);
            Pin::new(stream).poll_write(cx, first)
        }
        other => Poll::Ready(other),
    }
}

/// Runs `fut` for at most `limit` on the current glommio executor; `None` when the time ran
/// out first (the future is dropped).
pub(crate) async fn with_deadline<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
