//! The RTMPT port of one core: its accept loop, its routes, and the answers to tunnel
//! requests, which go to the core that owns the tunnel.
//!
//! HTTP (keep-alive, pipelining answered in order, limits, deadlines) is [`crate::httpd`]'s;
//! each read sets `TCP_QUICKACK` again ([`crate::httpd::io::Io::new`] says why).
//!
//! `/open` is served by the core that received it, which then owns the tunnel. Any later
//! request names the tunnel, and the tunnel id names its core: a request for another core's
//! tunnel travels there over the core mesh ([`Forwarded`]) and its reply comes back on a
//! oneshot channel, so the connection that carried it neither knows nor cares where the
//! session runs.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use std::sync::Arc;

use glommio::net::TcpListener;
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Method, StatusCode};
use tracing::{debug, info, warn};

use super::tunnel::{RequestKind, TunnelId, TunnelReply, TunnelRequest, IDLE_HOLD, REORDER_WAIT};
use super::{Forwarded, Tunnels};
use crate::accept::{self, AcceptSettings, ConnectionKind, Permit};
use crate::core::CoreContext;
use crate::httpd::body::with_type;
use crate::httpd::{self, closing, dispatch, peer, ready, Body, Limits, Params, Port, Reply};
use crate::httpd::{Request, Response, Route, Router};
use crate::mesh::CoreMessage;
use crate::tls::CurrentServerConfig;
use crate::util::with_timeout;

/// Longest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a connection waits for the owning core to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Content-Type` of every RTMPT reply.
pub const CONTENT_TYPE: &str = "application/x-fcs";

const _: () =
    assert!(FORWARD_TIMEOUT.as_millis() > REORDER_WAIT.as_millis() + IDLE_HOLD.as_millis());

/// Accepts RTMPT connections on this core until the task is dropped; over TLS (RTMPTS) with
/// the core's current RTMPS certificate when `tls` is given (`rtmpt.tls`).
pub async fn accept_loop(
    ctx: Rc<CoreContext>,
    listener: TcpListener,
    tls: Option<CurrentServerConfig>,
) {
    let settings = AcceptSettings {
        kind: ConnectionKind::RtmptHttp,
        max_per_core: ctx.config().rtmpt.max_connections_per_core,
        nodelay: true,
    };
    let serve_ctx = Rc::clone(&ctx);
    accept::accept_loop(ctx, listener, settings, move |stream, peer, permit| {
        // The certificate as of the accept: a reload affects new connections only.
        let server = tls.as_ref().map(|current| Arc::clone(&current.borrow()));
        let ctx = Rc::clone(&serve_ctx);
        async move {
            match server {
                None => serve_connection(ctx, stream, peer, permit).await,
                Some(server) => {
                    if let Some(stream) =
                        crate::http::tls_handshake(&ctx, stream, peer, server, "rtmpts").await
                    {
                        serve_connection(ctx, stream, peer, permit).await;
                    }
                }
            }
        }
    })
    .await;
}

/// Ends idle tunnels on this core, forever.
pub async fn sweep_loop(ctx: Rc<CoreContext>) {
    let idle = Duration::from_secs(ctx.config().rtmpt.idle_timeout_secs);
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        glommio::timer::sleep(every).await;
        Tunnels::of(&ctx).sweep(idle);
    }
}

/// Serves one accepted RTMPT connection until it closes; `_permit` counts it until then.
pub async fn serve_connection(
    ctx: Rc<CoreContext>,
    stream: impl Into<crate::httpd::io::Stream>,
    peer: SocketAddr,
    _permit: Permit,
) {
    let rtmpt = &ctx.config().rtmpt;
    let idle = Duration::from_secs(rtmpt.idle_timeout_secs);
    let port = Port {
        label: "rtmpt",
        limits: Limits {
            max_head_bytes: MAX_HEAD_BYTES,
            max_body_bytes: rtmpt.max_body_bytes,
            max_body_bytes_per_core: rtmpt.max_body_bytes_per_core,
            idle_timeout: idle,
            // A request's head and body get the idle timeout, as a request that has not
            // started would; its answer may wait for the owning core on top of that.
            request_timeout: idle + FORWARD_TIMEOUT,
        },
        quick_ack: true,
        title_case_headers: true,
        // RTMPT sessions poll with few requests each: glommio's readiness as ever.
        read_batch: Duration::ZERO,
        max_connections: rtmpt.max_connections_per_core,
        lane: None,
    };
    let routes = Rc::clone(&ctx);
    httpd::serve(&ctx, stream, peer, port, move |request| {
        dispatch(&ROUTER, &routes, request)
    })
    .await;
}

/// The tunnel's routes; any other path (Flash asks `/fcs/ident2` first and expects it) gets
/// 404, another method on these paths 405.
static ROUTER: Router<CoreContext> = Router {
    routes: ROUTES,
    not_found: unknown_path,
    method_not_allowed: httpd::method_not_allowed,
};

static ROUTES: &[Route<CoreContext>] = &[
    Route {
        method: Method::POST,
        path: "/open/{version}",
        handler: open,
    },
    Route {
        method: Method::POST,
        path: "/send/{id}/{seq}",
        handler: |ctx, request, params| tunnel(ctx, request, params, RequestKind::Send),
    },
    Route {
        method: Method::POST,
        path: "/idle/{id}/{seq}",
        handler: |ctx, request, params| tunnel(ctx, request, params, RequestKind::Idle),
    },
    Route {
        method: Method::POST,
        path: "/close/{id}/{seq}",
        handler: |ctx, request, params| tunnel(ctx, request, params, RequestKind::Close),
    },
];

fn unknown_path(ctx: &Rc<CoreContext>, request: &Request) -> Response {
    let (peer, path) = (peer(request), request.uri().path());
    debug!(core = ctx.id.0, %peer, path, "rtmpt unknown path");
    fcs(StatusCode::NOT_FOUND, Body::empty())
}

/// An RTMPT reply: `application/x-fcs`, never cached.
fn fcs(status: StatusCode, body: Body) -> Response {
    with_type(status, CONTENT_TYPE, body)
}

/// Every RTMPT client sends `Content-Length` (or, in principle, a chunked body); a POST with
/// neither is not RTMPT: 411, and the connection closes.
fn length_required(ctx: &CoreContext, request: &Request) -> Option<Response> {
    let headers = request.headers();
    if headers.contains_key(CONTENT_LENGTH) || headers.contains_key(TRANSFER_ENCODING) {
        return None;
    }
    let reason = "http_length_required";
    info!(core = ctx.id.0, peer = %peer(request), reason, "rtmpt connection closed");
    ctx.metrics.error(reason);
    Some(closing(fcs(StatusCode::LENGTH_REQUIRED, Body::empty())))
}

fn open(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    if let Some(refusal) = length_required(ctx, &request) {
        return ready(refusal);
    }
    ready(match Tunnels::of(ctx).open(ctx, peer(&request)) {
        Some(id) => fcs(StatusCode::OK, Body::from(format!("{id}\n").into_bytes())),
        None => fcs(StatusCode::SERVICE_UNAVAILABLE, Body::empty()),
    })
}

fn tunnel(ctx: &Rc<CoreContext>, request: Request, params: Params, kind: RequestKind) -> Reply {
    if let Some(refusal) = length_required(ctx, &request) {
        return ready(refusal);
    }
    let ctx = Rc::clone(ctx);
    Box::pin(async move {
        let (status, body) = respond(&ctx, request, params, kind).await;
        fcs(status, body)
    })
}

/// The polling-interval byte that starts a reply, without allocating one per reply.
fn interval_byte(interval: u8) -> Bytes {
    static ALL: [u8; 256] = {
        let mut all = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            all[i] = i as u8;
            i += 1;
        }
        all
    };
    let i = usize::from(interval);
    Bytes::from_static(&ALL[i..=i])
}

/// Answers one tunnel request (for a tunnel of this core or, over the mesh, of another):
/// the status and the body, which starts with the polling-interval byte.
async fn respond(
    ctx: &Rc<CoreContext>,
    request: Request,
    params: Params,
    kind: RequestKind,
) -> (StatusCode, Body) {
    let peer = peer(&request);
    let Ok(seq) = params.get("seq").parse::<u64>() else {
        return (StatusCode::BAD_REQUEST, Body::empty());
    };
    let Some(id) = TunnelId::parse(params.get("id")) else {
        debug!(core = ctx.id.0, %peer, "rtmpt request for a malformed tunnel id");
        return (StatusCode::NOT_FOUND, Body::empty());
    };
    let owner = id.owner();
    let body = request.into_body();
    debug!(
        core = ctx.id.0,
        %peer,
        tunnel = %id,
        owner = owner.0,
        kind = kind.as_str(),
        seq,
        bytes = body.len(),
        "rtmpt request"
    );
    let tunnel_request = TunnelRequest {
        id,
        kind,
        seq,
        body,
    };
    let reply = if owner == ctx.id {
        Tunnels::of(ctx).handle(tunnel_request).await
    } else {
        let (tx, rx) = oneshot::channel();
        let forwarded = Forwarded {
            request: tunnel_request,
            reply: tx,
        };
        if !ctx.send_to_core(owner, CoreMessage::Feature(forwarded.into_call())) {
            return (StatusCode::NOT_FOUND, Body::empty());
        }
        match with_timeout(FORWARD_TIMEOUT, rx).await {
            Some(Ok(reply)) => reply,
            _ => {
                warn!(
                    core = ctx.id.0,
                    owner = owner.0,
                    "rtmpt: the owning core did not answer"
                );
                return (StatusCode::SERVICE_UNAVAILABLE, Body::empty());
            }
        }
    };
    match reply {
        TunnelReply::Reply(reply) => (
            StatusCode::OK,
            Body::from_chunks([interval_byte(reply.interval), reply.data]),
        ),
        TunnelReply::Unknown => (StatusCode::NOT_FOUND, Body::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_byte_is_its_own_value() {
        for i in [0u8, 1, 0x21, 255] {
            assert_eq!(&interval_byte(i)[..], &[i]);
        }
    }
}
