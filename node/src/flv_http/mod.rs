//! HTTP-FLV: `GET /{app}/{name}.flv` on `http.listen`, a live stream as one endless FLV file,
//! the way SRS serves it.
//!
//! A viewer is one more player of the stream's replica on the core that took the request
//! (see [`crate::stream`]): it gets the same snapshot (metadata, sequence headers, GOP) and the
//! same live frames as an RTMP player, through the same [`crate::queue::SubscriberQueue`] with
//! the same bounds (`player.queue_max_bytes` skips video until a keyframe,
//! `player.queue_hard_max_bytes` cuts the viewer). Its queue is an FLV queue: each frame goes
//! out as the FLV tag the frame builds once ([`crate::frame::FrameData::flv_parts`]) and every
//! viewer on every core shares, the payload never copied.
//!
//! hyper answers the request (status, `Content-Type: video/x-flv`, CORS, `Transfer-Encoding:
//! chunked`), then gives the socket back once the head is written
//! ([`crate::httpd::upgrade::Upgrades::register_after_head`]), and the viewer is written from
//! then on exactly as an RTMP player is: by [`crate::writer::run_writer`] over its queue, a
//! merge window per `sendmsg`, the queue's slices borrowed, through a transport that frames
//! each write as one HTTP chunk ([`chunked`]: the size line and CRLF as two small extra
//! slices). No task between the queue and the socket, no channel, no copy or clone of a slice.
//! A viewer that stops reading fills its kernel send buffer (`player.socket_send_buffer_bytes`,
//! as for RTMP players), then its queue, and is cut at the hard bound, or when a write makes
//! no progress for `http.request_timeout_secs`.
//!
//! The response ends when the stream does: when the publisher leaves, the viewers' queues
//! finish ([`publisher_left`]), what is queued is written and the body ends with its last
//! chunk (`0\r\n\r\n`), then the connection closes (it is never reused: the head says
//! `Connection: close`). HTTP has no "wait for the publisher" (an RTMP player waits): players
//! reconnect. A client that closes is seen by the read side at once (EOF); nothing sent for
//! `http.idle_timeout_secs` ends the viewer too (`http_idle`).
//!
//! On an edge (a node that pulls), a request for a stream the node does not have yet joins
//! it as a player would, which starts the pull, and waits for the stream's first bytes at
//! most the HLS hold (`http.request_timeout_secs` − 1): then it is answered 200 and
//! streamed, or 404 when no upstream has the stream (or the hold ran out).
//!
//! Play authorization is `[auth]`'s, as for HLS playlists ([`crate::hls::auth`]): the URL's
//! `?token=` is the play token, a callback app asks its callback.
//!
//! What is refused, and why (each logged and counted in `corecast_errors_total`):
//! - an app named like the node's own paths ([`RESERVED_APPS`]): 404, so `/api/x.flv` can
//!   never be mistaken for a stream;
//! - a stream with no publisher on this node now: on an origin a 404 at once (HTTP has no
//!   "wait", where an RTMP player would wait `player.wait_for_publisher_secs`); on an edge
//!   after the pull found nothing;
//! - a play that `[auth]` refuses: 403 (503 when the callback did not answer in time), also
//!   counted in `corecast_auth_refused_total` by reason.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN};
use hyper::{Method, StatusCode, Version};
use tracing::info;

use crate::api::ApiError;
use crate::clients::{ClientHandle, ClientRole};
use crate::core::CoreContext;
use crate::httpd::body::{with_type, Body};
use crate::httpd::upgrade::{Continuation, Upgraded, Upgrades};
use crate::httpd::{self, ready, Params, Reply, Request, Response};
use crate::outbound::Outbound;
use crate::queue::{QueueLimits, SubscriberQueue};
use crate::stream::Player;

pub mod chunked;
#[cfg(test)]
mod pass_tests;
mod viewer;
pub mod ws;

/// App names that would shadow the node's own paths on `http.listen`.
pub const RESERVED_APPS: &[&str] = &[
    "api", "hls", "play", "console", "metrics", "healthz", "readyz",
];

/// Every reason a request is refused for (`corecast_errors_total{kind}`), so each series
/// exists at zero from start-up.
pub const ERROR_KINDS: [&str; 5] = [
    "http_flv_reserved_app",
    "http_flv_bad_name",
    "http_flv_not_found",
    "http_flv_auth",
    "http_flv_ws_handshake",
];

/// The FLV file header (version 1, audio and video present) and the first previous-tag size.
pub const FLV_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0];

/// The transports of viewers that end with their stream's publisher ([`publisher_left`]).
pub const TRANSPORTS: [&str; 2] = ["http_flv", "ws_flv"];

/// Why a request for `app`/`name` is refused, if it is.
pub fn refusal(app: &str, name: &str) -> Option<&'static str> {
    if RESERVED_APPS.contains(&app) {
        Some("http_flv_reserved_app")
    } else if app.is_empty() || name.is_empty() || name.contains('/') || app.contains('/') {
        Some("http_flv_bad_name")
    } else {
        None
    }
}

/// `GET` (and `HEAD`) `/{app}/{name}.flv`.
pub fn play(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let (app, name) = (params.get("app").to_owned(), params.get("name").to_owned());
    let peer = httpd::peer(&request);
    if let Some(reason) = refusal(&app, &name) {
        let error = ApiError::not_found(format!("no stream {app}/{name}"));
        return ready(refuse(ctx, peer, &app, reason, error));
    }
    let handshake = ws::handshake(request.headers());
    if let ws::Handshake::Bad(why) = handshake {
        let error = ApiError::bad_request(format!("bad WebSocket handshake: {why}"));
        return ready(refuse(ctx, peer, &app, "http_flv_ws_handshake", error));
    }
    let head = request.method() == Method::HEAD;
    // hyper answers HTTP/1.0 close-delimited, HTTP/1.1 chunked: the body must match.
    let chunked = request.version() >= Version::HTTP_11;
    let query = request.uri().query().map(str::to_owned);
    let ctx = Rc::clone(ctx);
    Box::pin(async move {
        if let Err(refused) =
            crate::hls::auth::authorize(&ctx, "http-flv", &app, &name, query, peer).await
        {
            let message = format!("play not authorized: {}", refused.reason);
            let error = ApiError::new(refused.status, "forbidden", message);
            return refuse(&ctx, peer, &app, "http_flv_auth", error);
        }
        let key = format!("{app}/{name}");
        if head {
            // The head alone: nobody joins, nothing is pulled.
            return match ctx.shared.directory.publisher(&key) {
                Some(_) => cors(with_type(StatusCode::OK, "video/x-flv", Body::empty())),
                None => not_found(&ctx, peer, &app, &key),
            };
        }
        let transport = match handshake {
            ws::Handshake::Accept(_) => "ws_flv",
            _ => "http_flv",
        };
        let Some(viewer) = find(&ctx, &key, peer, transport).await else {
            return not_found(&ctx, peer, &app, &key);
        };
        match handshake {
            ws::Handshake::Accept(accept) => {
                let Some(response) = ws::switching(&accept) else {
                    let error = ApiError::bad_request("bad Sec-WebSocket-Key");
                    return refuse(&ctx, peer, &app, "http_flv_ws_handshake", error);
                };
                let upgrades = ctx.feature::<Upgrades>();
                // A connection that never gets its 101 drops this, and the viewer with it.
                let next: Continuation =
                    Box::new(move |upgraded| Box::pin(watch_ws(viewer, upgraded)));
                upgrades.register(peer, next);
                response
            }
            _ => {
                let upgrades = ctx.feature::<Upgrades>();
                // A connection whose head is never written drops this, and the viewer with it.
                let next: Continuation =
                    Box::new(move |upgraded| Box::pin(viewer::serve(viewer, upgraded, chunked)));
                upgrades.register_after_head(peer, next);
                // A streamed body (so hyper frames it chunked and says so) that hyper never
                // gets a byte of: the connection is taken over once the head is written.
                let (_, body) = Body::channel(1);
                let response = with_type(StatusCode::OK, "video/x-flv", body);
                cors(httpd::closing(response))
            }
        }
    })
}

/// Logs and counts a refusal for `reason`; the CORS answer of `error`.
fn refuse(
    ctx: &CoreContext,
    peer: SocketAddr,
    app: &str,
    reason: &'static str,
    error: ApiError,
) -> Response {
    info!(core = ctx.id.0, %peer, app, reason, "http-flv refused");
    ctx.metrics.error(reason);
    cors(error.into_response())
}

fn not_found(ctx: &CoreContext, peer: SocketAddr, app: &str, key: &str) -> Response {
    let error = ApiError::not_found(format!("no stream {key}"));
    refuse(ctx, peer, app, "http_flv_not_found", error)
}

/// Joins `key` as a viewer when the stream is here. On a node that pulls (an edge) the
/// viewer joins first, which starts the pull as an RTMP player's play does, and the request
/// waits (at most the HLS hold, [`crate::hls::serve::hold`]) for the stream's first bytes;
/// a pull that finds no upstream with the stream, or the hold running out, is `None` (404).
async fn find(
    ctx: &Rc<CoreContext>,
    key: &str,
    peer: SocketAddr,
    transport: &'static str,
) -> Option<Viewer> {
    let live_here = ctx.shared.directory.publisher(key).is_some();
    if !ctx.config().cluster.pulls() {
        return live_here.then(|| join(ctx, key, peer, transport));
    }
    let viewer = join(ctx, key, peer, transport);
    let hold = crate::hls::serve::hold(ctx);
    let arrived = future::or(first_bytes(&viewer.out.queue), async {
        glommio::timer::sleep(hold).await;
        false
    })
    .await;
    if arrived {
        return Some(viewer);
    }
    viewer.leave("not_found");
    None
}

/// Waits until `queue` holds something to send (true) or is closed (false: the pull found
/// no upstream with the stream and refused its players).
async fn first_bytes(queue: &RefCell<SubscriberQueue>) -> bool {
    std::future::poll_fn(|cx| {
        let mut q = queue.borrow_mut();
        if !q.is_empty() {
            return Poll::Ready(true);
        }
        if q.is_closed() {
            return Poll::Ready(false);
        }
        q.set_writer(cx.waker());
        Poll::Pending
    })
    .await
}

/// Adds `Access-Control-Allow-Origin: *` (browsers' players fetch from other origins).
fn cors(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// A viewer that joined a stream: its queue, its client record, its gauge. Dropping it
/// leaves the stream (as `abandoned` unless [`Viewer::leave`] gave the reason), so a viewer
/// whose WebSocket upgrade never ran is not left behind as a player.
struct Viewer {
    ctx: Rc<CoreContext>,
    key: String,
    peer: SocketAddr,
    id: u64,
    out: Rc<Outbound>,
    client: Rc<ClientHandle>,
    open: prometheus::IntGauge,
    reason: Cell<&'static str>,
}

/// Joins `key` as a viewer over `transport` (`http_flv`, `ws_flv`): a player of the replica
/// on this core with an FLV queue, and a client of the API.
fn join(ctx: &Rc<CoreContext>, key: &str, peer: SocketAddr, transport: &'static str) -> Viewer {
    let player = &ctx.config().player;
    let out = Outbound::new_flv(QueueLimits {
        soft_max_bytes: player.queue_max_bytes,
        hard_max_bytes: player.queue_hard_max_bytes,
    });
    let id = ctx.new_connection_id();
    let open = ctx.metrics.accepted(transport);
    let client = Rc::new(ClientHandle {
        id,
        peer,
        transport: Cell::new(transport),
        since: Instant::now(),
        role: Cell::new(ClientRole::Playing),
        stream: RefCell::new(Some(key.to_owned())),
        bytes_in: Cell::new(0),
        bytes_out: Cell::new(0),
        out: Rc::clone(&out),
        taken_over: Cell::new(false),
        reconnect_app: RefCell::new(None),
    });
    ctx.add_client(Rc::clone(&client));
    info!(conn = id, core = ctx.id.0, %peer, stream = %key, transport, "http-flv play");
    ctx.add_player(
        key,
        Player {
            connection: id,
            out: Rc::clone(&out),
            audio: true,
            video: true,
            paused: false,
        },
    );
    Viewer {
        ctx: Rc::clone(ctx),
        key: key.to_owned(),
        peer,
        id,
        out,
        client,
        open,
        reason: Cell::new("abandoned"),
    }
}

impl Viewer {
    /// Counts `n` bytes sent.
    fn sent(&self, n: usize) {
        let client = &self.client;
        client.bytes_out.set(client.bytes_out.get() + n as u64);
        self.ctx.metrics.sent_bytes.inc_by(n as u64);
    }

    /// Leaves the stream and the client list; logs and counts `reason`.
    fn leave(self, reason: &'static str) {
        self.reason.set(reason);
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let (ctx, key, peer, reason) = (&self.ctx, &self.key, self.peer, self.reason.get());
        ctx.remove_player(key, self.id);
        ctx.remove_client(self.id);
        self.out.queue.borrow_mut().close();
        self.open.dec();
        ctx.metrics.closed(reason);
        info!(conn = self.id, %peer, stream = %key, reason, "http-flv closed");
    }
}

/// The publisher of `key` left: `client`, when it is an HTTP-FLV or WebSocket-FLV viewer of
/// it, ends once what is queued is written (the core calls this for each of its clients).
pub fn publisher_left(client: &ClientHandle, key: &str) {
    if TRANSPORTS.contains(&client.transport.get())
        && client.stream.borrow().as_deref() == Some(key)
    {
        client.out.queue.borrow_mut().finish();
    }
}

/// Makes `queue` wait for the core's flush tick when `merge_window` is set (starting this
/// core's clock if nothing did yet), as the RTMP writer does.
fn start_batching(queue: &RefCell<SubscriberQueue>, merge_window: Duration) {
    let batching = !merge_window.is_zero();
    if batching {
        crate::tick::start(merge_window);
    }
    queue.borrow_mut().set_batching(batching);
}

/// `player.merge_window_ms`: viewers batch their writes as RTMP players do.
fn merge_window(ctx: &CoreContext) -> Duration {
    Duration::from_millis(ctx.config().player.merge_window_ms)
}

/// Serves the viewer's stream over the WebSocket `upgraded` (after the 101) until either end
/// leaves.
async fn watch_ws(viewer: Viewer, upgraded: Upgraded) {
    let http = &viewer.ctx.config().http;
    let timeouts = ws::Timeouts {
        idle: Duration::from_secs(http.idle_timeout_secs),
        stall: Duration::from_secs(http.request_timeout_secs),
    };
    let io = RefCell::new(upgraded.io);
    // The FLV header first, as its own message; the queue (already filling) after it.
    if !ws::send_message(&io, &FLV_HEADER, timeouts.stall).await {
        viewer.leave("write_error");
        return;
    }
    let queue = Rc::clone(&viewer.out.queue);
    start_batching(&queue, merge_window(&viewer.ctx));
    let sent = |n: usize| viewer.sent(n);
    let reason = ws::run(&io, upgraded.read_ahead, &queue, timeouts, &sent).await;
    viewer.leave(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_own_paths_are_not_apps() {
        for app in RESERVED_APPS {
            assert_eq!(refusal(app, "x"), Some("http_flv_reserved_app"));
        }
        assert_eq!(refusal("live", "x"), None);
        assert_eq!(refusal("live", "a/b"), Some("http_flv_bad_name"));
        assert_eq!(refusal("", "x"), Some("http_flv_bad_name"));
        for reason in [refusal("api", "x"), refusal("", "x")]
            .into_iter()
            .flatten()
        {
            assert!(ERROR_KINDS.contains(&reason));
        }
    }

    #[test]
    fn the_header_announces_audio_and_video() {
        assert_eq!(&FLV_HEADER[..3], b"FLV");
        assert_eq!(FLV_HEADER[4], 0x05);
        assert_eq!(
            u32::from_be_bytes([FLV_HEADER[5], FLV_HEADER[6], FLV_HEADER[7], FLV_HEADER[8]]),
            9
        );
    }
}
