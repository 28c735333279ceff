//! The RTMPT listener of one core: accepts HTTP connections, reads their requests in order
//! (keep-alive and pipelining), routes each to the core that owns its tunnel, and writes the
//! replies in request order.
//!
//! `/open` is served by the core that received it, which then owns the tunnel. Any later
//! request names the tunnel, and the tunnel id names its core: a request for another core's
//! tunnel travels there over the core mesh ([`Forwarded`]) and its reply comes back on a
//! oneshot channel, so the connection that carried it neither knows nor cares where the
//! session runs.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use glommio::net::TcpListener;
use tracing::{debug, info, warn};

use super::http::{write_head, HttpLimits, Method, Request, RequestReader, Status};
use super::tunnel::{RequestKind, TunnelId, TunnelReply, TunnelRequest, IDLE_HOLD, REORDER_WAIT};
use super::{Forwarded, Tunnels};
use crate::core::CoreContext;
use crate::mesh::CoreMessage;
use crate::transport::{set_nodelay, TcpTransport, Transport};
use crate::util::with_timeout;

/// Longest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a connection waits for the owning core to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// After an error reply, how long unread input is drained before closing, so the client
/// reads the reply instead of a reset.
const LINGER: Duration = Duration::from_millis(500);

const _: () =
    assert!(FORWARD_TIMEOUT.as_millis() > REORDER_WAIT.as_millis() + IDLE_HOLD.as_millis());

/// Accepts RTMPT connections on this core forever.
pub async fn accept_loop(ctx: Rc<CoreContext>, listener: TcpListener) {
    let max = ctx.config.rtmpt.max_connections_per_core;
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                warn!(core = ctx.id.0, error = %e, "rtmpt accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if !Tunnels::of(&ctx).connection_opened(max) {
            warn!(core = ctx.id.0, %peer, max, "rtmpt connection refused: per-core limit reached");
            continue;
        }
        set_nodelay(&stream);
        let ctx = Rc::clone(&ctx);
        glommio::spawn_local(async move {
            let fd = stream.as_raw_fd();
            serve_connection(&ctx, TcpTransport::new(stream), fd, peer).await;
            Tunnels::of(&ctx).connection_closed();
        })
        .detach();
    }
}

/// Ends idle tunnels on this core, forever.
pub async fn sweep_loop(ctx: Rc<CoreContext>) {
    let idle = Duration::from_secs(ctx.config.rtmpt.idle_timeout_secs);
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        glommio::timer::sleep(every).await;
        Tunnels::of(&ctx).sweep(idle);
    }
}

/// One reply.
struct Response {
    status: Status,
    /// The polling-interval byte (tunnel replies only).
    interval: Option<u8>,
    body: Bytes,
}

impl Response {
    fn status(status: Status) -> Response {
        Response {
            status,
            interval: None,
            body: Bytes::new(),
        }
    }
}

async fn serve_connection(ctx: &Rc<CoreContext>, conn: TcpTransport, fd: RawFd, peer: SocketAddr) {
    let config = &ctx.config;
    let idle = Duration::from_secs(config.rtmpt.idle_timeout_secs);
    let send_timeout = Duration::from_secs(config.player.send_timeout_secs);
    let mut reader = RequestReader::new(HttpLimits {
        max_head_bytes: MAX_HEAD_BYTES,
        max_body_bytes: config.rtmpt.max_body_bytes,
    });
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        // A whole request must arrive within the idle timeout.
        let deadline = Instant::now() + idle;
        let request = loop {
            match reader.decode(&mut buf) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(e) => {
                    info!(core = ctx.id.0, %peer, reason = e.as_str(), error = %e, "rtmpt connection closed");
                    let mut head = Vec::with_capacity(256);
                    write_head(&mut head, e.status(), 0, false);
                    let _ = with_timeout(send_timeout, write_all(&conn, &[&head])).await;
                    linger_close(&conn, fd).await;
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match with_timeout(left, conn.read_into(&mut buf)).await {
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(_)) => quick_ack(fd),
                None => {
                    debug!(core = ctx.id.0, %peer, reason = "http_idle", "rtmpt connection closed");
                    return;
                }
            }
        };
        let keep_alive = request.keep_alive;
        let response = respond(ctx, request, peer).await;
        let mut head = Vec::with_capacity(256);
        let length = response.interval.map_or(0, |_| 1) + response.body.len();
        write_head(&mut head, response.status, length, keep_alive);
        head.extend(response.interval);
        match with_timeout(send_timeout, write_all(&conn, &[&head, &response.body])).await {
            Some(Ok(())) => {}
            _ => return,
        }
        if !keep_alive {
            linger_close(&conn, fd).await;
            return;
        }
    }
}

/// Answers one request (for a tunnel of this core or, over the mesh, of another).
async fn respond(ctx: &Rc<CoreContext>, request: Request, peer: SocketAddr) -> Response {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let kind = match segments.as_slice() {
        ["open", _] => None,
        ["send", _, _] => Some(RequestKind::Send),
        ["idle", _, _] => Some(RequestKind::Idle),
        ["close", _, _] => Some(RequestKind::Close),
        // Flash asks `/fcs/ident2` first and expects 404 before it opens.
        _ => {
            debug!(core = ctx.id.0, %peer, path = %request.path, "rtmpt unknown path");
            return Response::status(Status::NotFound);
        }
    };
    if request.method != Method::Post {
        return Response::status(Status::MethodNotAllowed);
    }
    let Some(kind) = kind else {
        return match Tunnels::of(ctx).open(ctx, peer) {
            Some(id) => Response {
                status: Status::Ok,
                interval: None,
                body: Bytes::from(format!("{id}\n")),
            },
            None => Response::status(Status::ServiceUnavailable),
        };
    };
    let Ok(seq) = segments[2].parse::<u64>() else {
        return Response::status(Status::BadRequest);
    };
    let Some(id) = TunnelId::parse(segments[1]) else {
        debug!(core = ctx.id.0, %peer, "rtmpt request for a malformed tunnel id");
        return Response::status(Status::NotFound);
    };
    let owner = id.owner();
    debug!(
        core = ctx.id.0,
        %peer,
        tunnel = %id,
        owner = owner.0,
        kind = kind.as_str(),
        seq,
        bytes = request.body.len(),
        "rtmpt request"
    );
    let tunnel_request = TunnelRequest {
        id,
        kind,
        seq,
        body: request.body,
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
            return Response::status(Status::NotFound);
        }
        match with_timeout(FORWARD_TIMEOUT, rx).await {
            Some(Ok(reply)) => reply,
            _ => {
                warn!(
                    core = ctx.id.0,
                    owner = owner.0,
                    "rtmpt: the owning core did not answer"
                );
                return Response::status(Status::ServiceUnavailable);
            }
        }
    };
    match reply {
        TunnelReply::Reply(reply) => Response {
            status: Status::Ok,
            interval: Some(reply.interval),
            body: reply.data,
        },
        TunnelReply::Unknown => Response::status(Status::NotFound),
    }
}

/// Asks the kernel to acknowledge the next segments at once. HTTP clients (ffmpeg's among
/// them) write a request's head and body separately without TCP_NODELAY, so the body waits
/// for the head's ACK, which a delayed-ACK receiver holds back ~40 ms: every request would
/// take that long. Linux leaves quick-ACK mode by itself, hence once per read.
fn quick_ack(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: plain setsockopt on a descriptor the connection owns, with a valid int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Writes every byte of `parts`, vectored; waits when the socket is full.
async fn write_all(conn: &TcpTransport, parts: &[&[u8]]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let mut slices = Vec::with_capacity(parts.len());
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
        match conn.try_write_vectored(&slices) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let first: &[u8] = &slices[0];
                let n = conn.write_some(first).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                done += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes our side and reads what the client still sends for a moment, so that unread input
/// does not turn the close into a reset that would destroy the reply.
async fn linger_close(conn: &TcpTransport, fd: RawFd) {
    // SAFETY: plain syscall on the descriptor `conn` owns and keeps open until it is dropped.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
    let deadline = Instant::now() + LINGER;
    let mut sink = BytesMut::with_capacity(64 * 1024);
    loop {
        sink.clear();
        let left = deadline.saturating_duration_since(Instant::now());
        match with_timeout(left, conn.read_into(&mut sink)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
