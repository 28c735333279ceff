//! HTTP/1.1 serving for every HTTP port of the node (the API, metrics and health on
//! `http.listen`, RTMPT on `rtmpt.listen`, and whatever comes next: HLS, HTTP-FLV, WebSocket),
//! on hyper 1.x driven by the core's glommio executor.
//!
//! hyper needs no tokio runtime: its HTTP/1 server connection is a future that polls its own
//! service, so it runs inside the connection's glommio task; it only needs hyper's `rt::Read`
//! and `rt::Write` over the socket ([`io::Io`]). What hyper does here: framing (keep-alive,
//! pipelining answered in order, chunked and `Content-Length` bodies), HEAD (the body is not
//! sent, its `Content-Length` is), the automatic 400/431 answers to malformed or oversized
//! heads. What it cannot do here, and this module does instead:
//! - *deadlines*: hyper's timer must be `Send + Sync`, which glommio's timers are not, so its
//!   header read timeout is off. [`deadline`] races the connection future against a glommio
//!   timer that follows the connection's phase: idle between requests, a deadline on a whole
//!   request from its first byte;
//! - *body limits*: a request body is read up to [`Limits::max_body_bytes`] and no further
//!   (never reserved from `Content-Length`); past it the answer is 413 with `Connection: close`,
//!   and the close lingers so the client reads the 413 instead of a reset; the bodies being
//!   read on one core's port are bounded in total ([`Limits::max_body_bytes_per_core`], 503);
//! - *connection slots*: at the port's per-core connection cap, the connection idle longest
//!   makes room for the new one ([`slots`]);
//! - *vectored writes*: without them hyper flattens (copies) every body into one buffer;
//!   [`io::Io`] writes head and body slices in one `sendmsg`.
//!
//! Upgrades (`with_upgrades`) need `Send` I/O, which glommio's stream is not. A handler that
//! answers 101 (WebSocket-FLV) registers a continuation ([`upgrade`]); the connection's task
//! takes the stream back from hyper (`poll_without_shutdown`, `into_parts`) and runs it. A
//! handler can also take a streamed response over once hyper has written its head (HTTP-FLV:
//! the body is then written by the RTMP players' writer, see [`upgrade`]).
//!
//! # Layout
//! - [`io`]: the hyper I/O adapter over glommio's `TcpStream`.
//! - [`deadline`]: the connection's phase and the watchdog that cuts it; [`sweep`]: the
//!   core's one timer behind every watchdog.
//! - [`hub`], [`readiness`]: a busy core's keep-alive reads batched on one tick
//!   (`http.read_batch_ms`), and the decisions behind it (sans-IO).
//! - [`lane`], [`fastlane`]: plain HLS requests answered without hyper, sans-IO decisions
//!   and the connection's loop; the first request the lane does not take goes to hyper.
//! - [`conn`]: [`serve`]: one connection, with limits, deadlines and the lingering close.
//! - [`body`]: [`Body`], the response body (whole byte chunks, length known).
//! - [`router`]: a static table of routes that a port's handlers plug into.
//! - [`sendfile`]: large immutable bodies in sealed memfds, sent with `sendfile`.
//! - [`slots`]: a port's per-core connections (idle eviction) and body bytes in flight.
//! - [`upgrade`]: connections taken over after a 101 or a streamed head.

pub mod batch;
pub mod body;
pub mod conn;
pub mod deadline;
pub mod fastlane;
pub mod hub;
pub mod io;
pub mod lane;
pub mod readiness;
pub mod router;
pub mod sendfile;
pub mod slots;
pub mod sweep;
pub mod upgrade;

pub use body::Body;

/// Every reason an HTTP connection is closed or refused for (`corecast_errors_total{kind}`),
/// so each series exists at zero from start-up.
pub const ERROR_KINDS: [&str; 9] = [
    "http_head_timeout",
    "http_request_timeout",
    "http_write_timeout",
    "http_idle_evicted",
    "http_body_too_large",
    "http_body_budget",
    "http_head_too_large",
    "http_malformed",
    "http_length_required",
];
pub use conn::{closing, peer, serve, Limits, Peer, Port};
pub use router::{dispatch, method_not_allowed, not_found, ready, Params, Route, Router};

/// A request as handlers see it: the head and the whole body, read within the limits.
pub type Request = hyper::Request<bytes::Bytes>;
/// A response.
pub type Response = hyper::Response<Body>;
/// What a handler returns: a response, perhaps later (RTMPT waits for the session).
pub type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = Response>>>;
