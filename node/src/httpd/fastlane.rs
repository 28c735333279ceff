//! The fast lane of a plain-HTTP connection: requests the port's lane function answers (plain
//! HLS: segments, parts, the init segment, the plain playlist) are answered here, without
//! hyper; the first request it does not take hands the connection, with every byte read so
//! far, to hyper for the rest of its life ([`super::io::Io::set_prefix`]). What it takes is
//! [`super::lane`]'s decision (sans-IO).
//!
//! Everything around a request is the connection's as under hyper: reads go through the same
//! adapter (the core's read hub on a busy core, the deadlines told of a request's first
//! byte), the answer is written with the same vectored write (a segment in a memfd with
//! `sendfile`), the same [`Watchdog`] is polled beside it, and the phases move as hyper's
//! service moves them (a parsed head starts [`Phase::Request`]; once the answer is handed to
//! the socket the connection is idle, writing it out under `idle_timeout`). Per request: no
//! allocation (the read buffer comes from the core's pool and goes back to it once the
//! request is answered, so a connection between requests holds none; the head is written into
//! a buffer the connection keeps; the body is the object's shared `Bytes`), no `HeaderMap`, no
//! boxed future. hyper's part of the connection is boxed ([`super::conn`]), so a connection
//! the lane keeps carries none of hyper's state.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::Poll;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::IntCounter;

use super::deadline::{Deadlines, Phase, Watchdog};
use super::io::Io;
use super::lane::{parse, write_head, Head, LaneBuf, Meta, LANE_BUFFER};
use crate::core::CoreContext;

/// A port's lane: the answer to a `GET` of `path` (its body's chunks pushed onto the given
/// list, which is empty), or None to leave the request (and the connection) to hyper.
pub type LaneFn = fn(&Rc<CoreContext>, &str, &mut Vec<Bytes>) -> Option<Meta>;

/// Requests the lanes answered (`corecast_http_lane_requests_total`).
static REQUESTS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::HTTP_LANE_REQUESTS,
        "HTTP requests the plain-HTTP fast lane answered without hyper (plain HLS).",
    )
    .expect("valid metric definition")
});

/// Connections the lanes handed to hyper (`corecast_http_lane_handovers_total`).
static HANDOVERS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::HTTP_LANE_HANDOVERS,
        "Plain-HTTP connections the fast lane handed to hyper at a request it does not take.",
    )
    .expect("valid metric definition")
});

/// The process-wide counters, to register with a node's metrics.
pub fn counters() -> [IntCounter; 2] {
    [REQUESTS.clone(), HANDOVERS.clone()]
}

/// Slices per write (the head and up to this many less one of the body's chunks).
const MAX_SLICES: usize = 32;

/// How the lane left a connection.
pub enum Outcome {
    /// The client closed between requests: the lingering close, as after hyper.
    Closed,
    /// A request the lane does not take: hyper reads these bytes first.
    HandOver(Bytes),
    /// The socket failed (a reset): dropped, as hyper's I/O errors are.
    Broken(io::Error),
    /// Its deadline passed in this phase.
    Cut(Phase),
}

/// Runs the lane on `io` until it hands over or the connection ends.
pub async fn run(
    ctx: &Rc<CoreContext>,
    io: &mut Io,
    deadlines: &Rc<Deadlines>,
    lane: LaneFn,
) -> Outcome {
    let mut serving = pin!(serve(ctx, io, deadlines, lane));
    let mut watchdog = Watchdog::default();
    poll_fn(|cx| {
        if let Poll::Ready(outcome) = serving.as_mut().poll(cx) {
            if let Outcome::HandOver(_) = outcome {
                HANDOVERS.inc();
            }
            return Poll::Ready(outcome);
        }
        watchdog.poll(cx, deadlines).map(Outcome::Cut)
    })
    .await
}

/// What [`run`] drives: read, decide, answer, until a request is not the lane's.
async fn serve(
    ctx: &Rc<CoreContext>,
    io: &mut Io,
    deadlines: &Rc<Deadlines>,
    lane: LaneFn,
) -> Outcome {
    let mut buf = LaneBuf::new(LANE_BUFFER);
    let mut head = Vec::with_capacity(256);
    let mut body: Vec<Bytes> = Vec::new();
    loop {
        match parse(buf.pending(), buf.capacity()) {
            Head::Get {
                path,
                head_only,
                len,
            } => {
                let Some(meta) = lane(ctx, path, &mut body) else {
                    return Outcome::HandOver(buf.into_rest());
                };
                buf.consume(len);
                REQUESTS.inc();
                // As hyper's service: a request from its parsed head until its answer is handed
                // over; then idle while it is written out.
                drop(deadlines.on_request(Instant::now()));
                let size = body.iter().map(Bytes::len).sum();
                DATE.with_borrow_mut(|date| write_head(&mut head, meta, size, date.now()));
                if head_only {
                    body.clear();
                }
                let written = write_all(io, &head, &body).await;
                body.clear();
                if let Err(e) = written {
                    return Outcome::Broken(e);
                }
            }
            Head::Partial => {
                let read = poll_fn(|cx| {
                    let polled = io.poll_read_into(cx, buf.spare());
                    if polled.is_pending() {
                        // Between requests a connection waits holding no read buffer.
                        buf.release_if_empty();
                    }
                    polled
                })
                .await;
                match read {
                    Ok(0) if buf.pending().is_empty() => return Outcome::Closed,
                    // Cut off in a head: hyper says how (as it would have).
                    Ok(0) => return Outcome::HandOver(buf.into_rest()),
                    Ok(n) => buf.filled(n),
                    Err(e) => return Outcome::Broken(e),
                }
            }
            Head::HandOver => return Outcome::HandOver(buf.into_rest()),
        }
    }
}

/// Writes `head` then `body` whole, vectored (a memfd body with `sendfile`).
async fn write_all(io: &mut Io, head: &[u8], body: &[Bytes]) -> io::Result<()> {
    let total = head.len() + body.iter().map(Bytes::len).sum::<usize>();
    let mut done = 0;
    while done < total {
        let n = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            let mut skip = done;
            for chunk in std::iter::once(head).chain(body.iter().map(|b| &b[..])) {
                if skip >= chunk.len() {
                    skip -= chunk.len();
                    continue;
                }
                slices[count] = IoSlice::new(&chunk[skip..]);
                skip = 0;
                count += 1;
                if count == MAX_SLICES {
                    break;
                }
            }
            hyper::rt::Write::poll_write_vectored(Pin::new(&mut *io), cx, &slices[..count])
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

thread_local! {
    /// The `date` value of this second, rendered once a second per core.
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: u64::MAX, text: [0; 29] }) };
}

/// An IMF-fixdate (`Sun, 06 Dec 2026 00:00:00 GMT`) kept for the second it names.
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == self.text.len() {
                self.text.copy_from_slice(text.as_bytes());
                self.second = second;
            }
        }
        &self.text
    }
}
