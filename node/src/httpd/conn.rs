//! [`serve`]: one HTTP/1.1 connection on hyper, with the node's limits and deadlines.
//!
//! The connection's task polls hyper's connection future and, right after it, the
//! [`Watchdog`] (see [`super::deadline`]). hyper runs with `poll_without_shutdown`, so that
//! whatever ends it (the client's or our `Connection: close`, a parse error hyper answered
//! with 400 or 431, a 413) the stream comes back for a lingering close. A deadline cut drops
//! the connection at once instead.
//!
//! Before the handler runs, the request body is read whole, up to
//! [`Limits::max_body_bytes`]: a `Content-Length` over the limit is refused from the head
//! alone, and a body that turns out longer (chunked) is refused as soon as it passes the
//! limit. Nothing is ever reserved from what the client announces: memory follows the bytes
//! that really arrived. The refusal is a 413 with `Connection: close`; hyper then stops
//! reading, and the lingering close lets the client read the 413. The bodies being read on one
//! core's port, and those their handlers still hold, are bounded in total too
//! ([`Limits::max_body_bytes_per_core`]): a request whose
//! bytes would pass it gets 503 and the connection closes, so many slow bodies cannot add up.
//!
//! Each connection joins its port's [`Slots`]; taking the port's last slot closes the
//! connection idle longest ([`super::slots`]).
//!
//! A connection ends its hyper part early when a handler takes it over ([`super::upgrade`]):
//! after a 101, or once the head of a streamed response registered with
//! [`Upgrades::register_after_head`] is on the socket (hyper asked that body for its first
//! bytes and found none, and no write waits for the socket).

use std::cell::Cell;
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::StatusCode;
use tracing::{debug, info};

use super::body::{text, Body};
use super::deadline::{Deadlines, Phase, RequestDone, Watchdog};
use super::fastlane::{self, LaneFn, Outcome};
use super::hub::ReadHub;
use super::io::{Io, Stream};
use super::slots::{BodyBytes, PortSlots, Slots};
use super::upgrade::{Upgraded, Upgrades};
use super::{Reply, Request, Response};
use crate::core::CoreContext;

/// Most bytes hyper buffers from one connection's socket (heads may need more: then the head
/// limit).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Bounds every request of a port must fit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers (431 past it).
    pub max_head_bytes: usize,
    /// Request body (413 past it).
    pub max_body_bytes: usize,
    /// Body bytes all requests being read on one core's port hold together (503 past it).
    pub max_body_bytes_per_core: usize,
    /// A connection with no request for this long is closed (keep-alive).
    pub idle_timeout: Duration,
    /// From a request's first byte, its head and body must arrive and its answer be handed
    /// over within this; the connection is cut otherwise.
    pub request_timeout: Duration,
}

/// How one port serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    /// Names the port in logs (`http`, `rtmpt`).
    pub label: &'static str,
    /// The limits.
    pub limits: Limits,
    /// Set `TCP_QUICKACK` after each read (see [`super::io::Io::new`]).
    pub quick_ack: bool,
    /// Write response header names in title case (`Content-Length`): librtmp (RTMPT) finds
    /// `Content-Length` by looking for `Content-` case-sensitively. Other ports write them as
    /// hyper keeps them (lowercase, as HTTP/2 does; HTTP/1.1 names are case-insensitive),
    /// which spares a per-byte rewrite of every header name of every answer.
    pub title_case_headers: bool,
    /// A busy core's reads that find nothing wait for its read hub's tick of this period
    /// (`http.read_batch_ms`, see [`super::hub`]); zero: always glommio's readiness.
    pub read_batch: Duration,
    /// The accept loop's per-core cap for this port: the connection that fills it evicts the
    /// one idle longest.
    pub max_connections: usize,
    /// Requests a plain connection answers without hyper until the first it does not take
    /// ([`super::fastlane`]); None: hyper from the first byte.
    pub lane: Option<LaneFn>,
}

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The client's address of a request that [`serve`] read (`0.0.0.0:0` on one made otherwise,
/// as in unit tests).
pub fn peer(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<Peer>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0)
}

/// Serves one accepted connection until it closes; `handler` answers each request, in order.
pub async fn serve<H>(
    ctx: &Rc<CoreContext>,
    stream: impl Into<Stream>,
    peer: SocketAddr,
    port: Port,
    handler: H,
) where
    H: Fn(Request) -> Reply + 'static,
{
    let limits = port.limits;
    let now = Instant::now();
    let deadlines = Deadlines::new(limits.idle_timeout, limits.request_timeout, now);
    let slots = ctx.feature::<PortSlots>().of(port.label);
    slots.join(&deadlines, port.max_connections, now);
    let mut io = Io::new(stream, Rc::clone(&deadlines), port.quick_ack);
    if !port.read_batch.is_zero() {
        let hub = ctx.feature::<ReadHub>();
        hub.set_period(port.read_batch);
        io = io.with_hub(&hub);
    }
    if let (Some(lane), true) = (port.lane, io.is_plain()) {
        match fastlane::run(ctx, &mut io, &deadlines, lane).await {
            Outcome::HandOver(read) => io.set_prefix(read),
            Outcome::Closed => return io.linger_close().await,
            Outcome::Broken(error) => {
                // As hyper's I/O errors (`report`): dropped, logged at debug.
                let (core, label, reason) = (ctx.id.0, port.label, "http_io");
                debug!(core, %peer, reason, %error, "{label} connection closed");
                return;
            }
            Outcome::Cut(phase) => {
                report(ctx, peer, port.label, Err(phase));
                return;
            }
        }
    }
    // Boxed: a connection the fast lane keeps (a plain HLS viewer, most of a node's
    // connections) does not carry hyper's connection state in its task.
    Box::pin(on_hyper(ctx, io, deadlines, slots, peer, port, handler)).await;
}

/// The rest of a connection's life on hyper: from its first byte, or from where the fast lane
/// handed it over.
async fn on_hyper<H>(
    ctx: &Rc<CoreContext>,
    io: Io,
    deadlines: Rc<Deadlines>,
    slots: Rc<Slots>,
    peer: SocketAddr,
    port: Port,
    handler: H,
) where
    H: Fn(Request) -> Reply + 'static,
{
    let limits = port.limits;
    let handed_off: Rc<Cell<bool>> = Rc::default();
    let service = Service(Rc::new(Shared {
        handler,
        deadlines: Rc::clone(&deadlines),
        peer,
        port,
        ctx: Rc::clone(ctx),
        slots,
        handed_off: Rc::clone(&handed_off),
    }));
    let mut conn = builder(&limits, port.title_case_headers).serve_connection(io, service);
    let ended = drive(&mut conn, &deadlines, &handed_off).await;
    let upgrades = ctx.feature::<Upgrades>();
    let after_head = upgrades.takes_over_after_head(peer);
    let upgrade = upgrades
        .take(peer)
        .filter(|_| !after_head || handed_off.get());
    if let (Ok(Ok(())), Some(next)) = (&ended, upgrade) {
        // A 101 (or a streamed head) was written: the handler's continuation has the
        // connection now.
        let parts = conn.into_parts();
        // Dropping hyper's side ended the request (idle, for the port's eviction): it is not.
        deadlines.on_taken_over();
        next(Upgraded {
            io: parts.io,
            read_ahead: parts.read_buf,
        })
        .await;
        return;
    }
    if report(ctx, peer, port.label, ended) {
        conn.into_parts().io.linger_close().await;
    }
}

/// Runs hyper's connection until it ends (`Ok`), its deadline passes (`Err`, with the phase
/// it was in) or a response is taken over after its head (`Ok`: `handed_off` is set once
/// hyper asked for the body, and hyper's buffer, the head, is written out once no write
/// waits for the socket).
async fn drive<S, B>(
    conn: &mut http1::Connection<Io, S>,
    deadlines: &Rc<Deadlines>,
    handed_off: &Cell<bool>,
) -> Result<hyper::Result<()>, Phase>
where
    S: hyper::service::HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut watchdog = Watchdog::default();
    poll_fn(|cx| {
        if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
            return Poll::Ready(Ok(result));
        }
        if handed_off.get() && !deadlines.write_blocked() {
            return Poll::Ready(Ok(Ok(())));
        }
        watchdog.poll(cx, deadlines).map(Err)
    })
    .await
}

/// Logs (and counts, when the client was at fault) how a connection ended; true when its
/// last answer should still reach the client, through a lingering close.
fn report(
    ctx: &CoreContext,
    peer: SocketAddr,
    label: &str,
    ended: Result<hyper::Result<()>, Phase>,
) -> bool {
    let core = ctx.id.0;
    let reason = match ended {
        Ok(Ok(())) => return true,
        Ok(Err(e)) if e.is_parse() => {
            // hyper has answered 400 or 431.
            let reason = error_reason(&e);
            info!(core, %peer, reason, error = %e, "{label} connection closed");
            ctx.metrics.error(reason);
            return true;
        }
        Ok(Err(e)) => {
            let reason = error_reason(&e);
            debug!(core, %peer, reason, error = %e, "{label} connection closed");
            return false;
        }
        Err(Phase::Idle) => {
            debug!(core, %peer, reason = Phase::Idle.as_str(), "{label} connection closed");
            return false;
        }
        Err(Phase::Evicted) => {
            // Counted, but not logged above debug: a client opening connections by the
            // thousand would otherwise write a line for each.
            let reason = Phase::Evicted.as_str();
            debug!(core, %peer, reason, "{label} connection closed");
            ctx.metrics.error(reason);
            return false;
        }
        Err(phase) => phase.as_str(),
    };
    info!(core, %peer, reason, "{label} connection closed");
    ctx.metrics.error(reason);
    false
}

/// hyper's HTTP/1 server, configured for the node.
fn builder(limits: &Limits, title_case_headers: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .max_header_size(limits.max_head_bytes)
        // hyper's read buffer grows up to this per connection (400 KiB by default): reads
        // of a body come in pieces of at most this, so many connections hold little.
        .max_buf_size(READ_BUFFER_BYTES.max(limits.max_head_bytes))
        // hyper's own head timeout needs a Send + Sync timer: the watchdog does it instead.
        .header_read_timeout(None)
        // The adapter writes vectored: head and body chunks leave without being copied.
        .writev(true)
        .title_case_headers(title_case_headers);
    builder
}

/// A static label for a connection that hyper ended with an error.
fn error_reason(e: &hyper::Error) -> &'static str {
    if e.is_parse_too_large() {
        "http_head_too_large"
    } else if e.is_parse() {
        "http_malformed"
    } else if e.is_incomplete_message() {
        "http_incomplete"
    } else {
        "http_io"
    }
}

/// What the service of one connection holds.
struct Shared<H> {
    handler: H,
    deadlines: Rc<Deadlines>,
    peer: SocketAddr,
    port: Port,
    ctx: Rc<CoreContext>,
    slots: Rc<Slots>,
    /// Set when a response taken over after its head has its head written (see [`drive`]).
    handed_off: Rc<Cell<bool>>,
}

/// hyper's view of a port's handler: reads the body within the limits, then calls it.
struct Service<H>(Rc<Shared<H>>);

impl<H> hyper::service::Service<hyper::Request<Incoming>> for Service<H>
where
    H: Fn(Request) -> Reply + 'static,
{
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>>>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let done = self.0.deadlines.on_request(Instant::now());
        let shared = Rc::clone(&self.0);
        Box::pin(async move {
            let response = shared.answer(request).await;
            let mut hand_off = None;
            if response.body().is_streaming() {
                shared.deadlines.on_stream(Instant::now());
                let upgrades = shared.ctx.feature::<Upgrades>();
                if upgrades.takes_over_after_head(shared.peer) {
                    hand_off = Some(Rc::clone(&shared.handed_off));
                }
            }
            Ok(response.map(|body| Tracked {
                body,
                _done: done,
                hand_off,
            }))
        })
    }
}

impl<H: Fn(Request) -> Reply> Shared<H> {
    async fn answer(&self, request: hyper::Request<Incoming>) -> Response {
        let (mut parts, body) = request.into_parts();
        let (core, peer, label) = (self.ctx.id.0, self.peer, self.port.label);
        match read_body(body, &self.port.limits, &self.slots).await {
            Ok((body, held)) => {
                parts.extensions.insert(Peer(peer));
                let response = (self.handler)(Request::from_parts(parts, body)).await;
                // The handler has had the body (RTMPT hands it to the tunnel, perhaps after
                // waiting for its turn): only now are its bytes no longer the port's.
                drop(held);
                response
            }
            Err(BodyError::TooLarge) => {
                let reason = "http_body_too_large";
                let max = self.port.limits.max_body_bytes;
                info!(core, %peer, reason, max, "{label} connection closed");
                self.ctx.metrics.error(reason);
                closing(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large\n",
                ))
            }
            Err(BodyError::Budget) => {
                let reason = "http_body_budget";
                let max = self.port.limits.max_body_bytes_per_core;
                info!(core, %peer, reason, max, "{label} connection closed");
                self.ctx.metrics.error(reason);
                closing(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bodies in flight\n",
                ))
            }
            Err(BodyError::Broken(e)) => {
                debug!(core, %peer, error = %e, "{label} request body broken off");
                closing(text(StatusCode::BAD_REQUEST, "incomplete request body\n"))
            }
        }
    }
}

/// `response`, after which the connection closes.
pub fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a body was not read.
#[derive(Debug)]
enum BodyError {
    /// It is (or announced it would be) over the limit.
    TooLarge,
    /// The bodies being read on the core's port would pass their total.
    Budget,
    /// The connection broke off in its middle, or its chunked framing was bad.
    Broken(hyper::Error),
}

/// Reads a whole body within `limits`, its bytes counted in `slots` until the returned guard
/// is dropped (once the handler is done with the body). One chunk (the usual case) is kept as
/// it is; several are joined, once all are in, into one buffer of exactly their size.
async fn read_body(
    mut body: Incoming,
    limits: &Limits,
    slots: &Rc<Slots>,
) -> Result<(Bytes, BodyBytes), BodyError> {
    let (max, budget) = (limits.max_body_bytes, limits.max_body_bytes_per_core);
    if body.size_hint().lower() > max as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut held = slots.reserve(0, budget).ok_or(BodyError::Budget)?;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(BodyError::Broken)?.into_data() else {
            continue; // trailers: nothing here uses them
        };
        total += data.len();
        if total > max {
            return Err(BodyError::TooLarge);
        }
        if !held.grow(data.len(), budget) {
            return Err(BodyError::Budget);
        }
        chunks.push(data);
    }
    if chunks.len() <= 1 {
        return Ok((chunks.pop().unwrap_or_default(), held));
    }
    let mut joined = BytesMut::with_capacity(total);
    for chunk in chunks {
        joined.extend_from_slice(&chunk);
    }
    Ok((joined.freeze(), held))
}

/// A response body that ends its request (for the deadlines) when hyper drops it, which it
/// does once it has taken the last chunk.
pub struct Tracked {
    body: Body,
    _done: RequestDone,
    /// For a response taken over after its head: set (instead of giving hyper any of the
    /// body) when hyper first asks for body bytes, its head written into its buffer.
    hand_off: Option<Rc<Cell<bool>>>,
}

impl hyper::body::Body for Tracked {
    type Data = super::batch::Batch;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        if let Some(handed_off) = &self.hand_off {
            // The connection's task stops driving hyper once the head is out; nothing wakes
            // this poll again.
            handed_off.set(true);
            return Poll::Pending;
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    use glommio::net::TcpListener;

    use super::*;
    use crate::httpd::body::{BodySender, SendError};

    const LIMITS: Limits = Limits {
        max_head_bytes: 8192,
        max_body_bytes: 1024,
        max_body_bytes_per_core: 4096,
        idle_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_millis(500),
    };

    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        f: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 * 1024)
            .spawn(move || async move { f().await })
            .expect("executor")
            .join()
            .expect("test body");
    }

    /// Serves one connection whose every request is answered with a streamed body, fed by
    /// `produce`; returns how the connection ended.
    async fn serve_streaming<P, F>(
        listener: &TcpListener,
        produce: P,
    ) -> Result<hyper::Result<()>, Phase>
    where
        P: Fn(BodySender) -> F + Unpin + 'static,
        F: std::future::Future<Output = ()> + 'static,
    {
        let stream = listener.accept().await.expect("accept");
        let deadlines = Deadlines::new(LIMITS.idle_timeout, LIMITS.request_timeout, Instant::now());
        let io = Io::new(stream, Rc::clone(&deadlines), false);
        let for_service = Rc::clone(&deadlines);
        let service = hyper::service::service_fn(move |_request: hyper::Request<Incoming>| {
            let done = for_service.on_request(Instant::now());
            let (tx, body) = Body::channel(4);
            glommio::spawn_local(produce(tx)).detach();
            for_service.on_stream(Instant::now());
            let response = hyper::Response::new(Tracked {
                body,
                _done: done,
                hand_off: None,
            });
            std::future::ready(Ok::<_, Infallible>(response))
        });
        let mut conn = builder(&LIMITS, true).serve_connection(io, service);
        drive(&mut conn, &deadlines, &Cell::new(false)).await
    }

    #[test]
    fn a_streamed_body_goes_out_chunked_until_its_sender_ends_it() {
        on_executor(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client = std::thread::spawn(move || {
                let mut s = StdStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                s.write_all(b"GET /live.flv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .expect("request");
                let mut raw = Vec::new();
                let mut tmp = [0u8; 4096];
                // Up to the last chunk (the socket's close would need this executor, which
                // the join below blocks).
                while !raw.ends_with(b"0\r\n\r\n") {
                    match s.read(&mut tmp) {
                        Ok(0) => break,
                        Ok(n) => raw.extend_from_slice(&tmp[..n]),
                        Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&raw)),
                    }
                }
                String::from_utf8(raw).expect("text")
            });
            let ended = serve_streaming(&listener, |mut tx| async move {
                for part in ["FLV", "tag1", "tag2"] {
                    tx.send(Bytes::from_static(part.as_bytes()))
                        .await
                        .expect("send");
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
            let response = client.join().expect("client");
            assert!(
                response.contains("Transfer-Encoding: chunked"),
                "{response}"
            );
            assert!(
                response.contains("3\r\nFLV\r\n4\r\ntag1\r\n4\r\ntag2\r\n0\r\n\r\n"),
                "{response}"
            );
        });
    }

    #[test]
    fn a_viewer_that_stops_reading_is_cut_at_the_write_deadline_and_its_producer_told() {
        on_executor(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client = std::thread::spawn(move || {
                let mut s = StdStream::connect(addr).expect("connect");
                s.write_all(b"GET /live.flv HTTP/1.1\r\nHost: t\r\n\r\n")
                    .expect("request");
                // Never reads; holds the socket until the server has cut it.
                std::thread::sleep(Duration::from_secs(3));
            });
            let outcome: Rc<std::cell::Cell<Option<SendError>>> = Rc::default();
            let seen = Rc::clone(&outcome);
            let started = Instant::now();
            let ended = serve_streaming(&listener, move |mut tx| {
                let seen = Rc::clone(&seen);
                async move {
                    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
                    loop {
                        if let Err(e) = tx.send(chunk.clone()).await {
                            seen.set(Some(e));
                            return;
                        }
                    }
                }
            })
            .await;
            let took = started.elapsed();
            assert!(matches!(ended, Err(Phase::Streaming)), "{ended:?}");
            assert!(took < Duration::from_secs(3), "cut after {took:?}");
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                outcome.get(),
                Some(SendError::Closed),
                "the producer was not told"
            );
            client.join().expect("client");
        });
    }
}
