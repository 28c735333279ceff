//! Serving pulls to other nodes: each accepted pull is a player of the stream whose wire form
//! is the pull protocol (a status line, then the same encode-once chunk stream players get).
//!
//! A node that pulls itself (edge/both) answers 200 even when the stream is not here yet: the
//! pull subscriber is a player like any other, so it triggers this node's own pull and gets
//! the stream when that arrives — tiers compose. An origin answers 404 for streams it does
//! not have, so an edge moves on to the next upstream.
//!
//! With `cluster.pull_tls` the pull port speaks TLS: each accepted connection does a TLS
//! handshake with the core's current `[rtmps]` certificate (reloads included), then the same
//! protocol runs over the TLS pipe RTMPS uses (`corecast_transport::TlsStream`).
//!
//! The pull port has its own per-core connection cap (`cluster.max_pull_connections_per_core`):
//! pulls do not take places of RTMP clients, nor RTMP clients of pulls. The token is compared
//! in constant time (`subtle`, in `auth::Authorizer::allows_pull`), so its bytes cannot be found one at a time from the timing
//! of refusals.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_common::control::ControlMessage;
use corecast_common::pull::{PullError, PullRequest, PullResponse};
use corecast_transport::TlsStream;
use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use rustls::ServerConfig;
use tracing::{debug, info, warn};

use crate::accept::{accept_loop, AcceptSettings, ConnectionKind};
use crate::clients::{ClientHandle, ClientRole};
use crate::core::CoreContext;
use crate::outbound::Outbound;
use crate::queue::QueueLimits;
use crate::stream::Player;
use crate::tls::{CurrentServerConfig, TlsError};
use crate::transport::{TcpTransport, Transport};
use crate::util::{loggable, with_timeout};
use crate::writer::{run_writer, WriteError, WriterSettings};

/// Time a connecting node has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts pull connections on this core until the task is dropped; over TLS with the
/// certificate in `tls` when it is set.
pub async fn serve(ctx: Rc<CoreContext>, listener: TcpListener, tls: Option<CurrentServerConfig>) {
    let settings = AcceptSettings {
        kind: ConnectionKind::Pull,
        max_per_core: ctx.config().cluster.max_pull_connections_per_core,
        nodelay: true,
    };
    let serve_ctx = Rc::clone(&ctx);
    accept_loop(ctx, listener, settings, move |stream, peer, permit| {
        // The certificate as of the accept: a reload affects new connections only.
        let server = tls.as_ref().map(|current| Arc::clone(&current.borrow()));
        let ctx = Rc::clone(&serve_ctx);
        async move {
            match server {
                Some(server) => tls_connection(&ctx, stream, peer, server).await,
                None => connection(&ctx, TcpTransport::new(stream), peer).await,
            }
            drop(permit);
        }
    })
    .await;
}

/// TLS handshake (bounded by `rtmps.handshake_timeout_secs`), then the pull protocol.
async fn tls_connection(
    ctx: &Rc<CoreContext>,
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ServerConfig>,
) {
    let timeout = Duration::from_secs(ctx.config().rtmps.handshake_timeout_secs);
    let error = match TlsStream::server(stream, server) {
        Ok(transport) => match transport.handshake(timeout).await {
            Ok(()) => {
                debug!(%peer, tls = %transport.describe(), "pull tls handshake done");
                connection(ctx, transport, peer).await;
                return;
            }
            Err(e @ TlsError::HandshakeTimeout(_)) => e,
            Err(e) => {
                transport.shutdown();
                e
            }
        },
        Err(e) => e,
    };
    ctx.metrics.closed(error.as_str());
    if !matches!(error, TlsError::Io(_)) {
        ctx.metrics.error(error.as_str());
    }
    warn!(%peer, reason = error.as_str(), error = %error, "pull tls connection closed");
}

async fn read_request<T: Transport>(transport: &T) -> Result<PullRequest, String> {
    let mut buf = BytesMut::new();
    loop {
        match PullRequest::decode(&mut buf) {
            Ok(Some(request)) => return Ok(request),
            Ok(None) => {}
            Err(e @ (PullError::LineTooLong | PullError::Malformed(_) | PullError::Version(_))) => {
                return Err(e.to_string())
            }
            Err(e) => return Err(e.to_string()),
        }
        match transport.read_into(&mut buf).await {
            Ok(0) => return Err("closed before the request".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn connection<T: Transport>(ctx: &Rc<CoreContext>, transport: T, peer: SocketAddr) {
    let chunk_size = ctx.config().rtmp.out_chunk_size_bytes;
    let answer = |status: u16, reason: &str| PullResponse {
        status,
        chunk_size,
        reason: reason.to_owned(),
    };
    let request = match with_timeout(REQUEST_TIMEOUT, read_request(&transport)).await {
        Some(Ok(request)) => request,
        Some(Err(e)) => {
            warn!(%peer, error = %loggable(&e), reason = "pull_protocol_error", "pull refused");
            ctx.metrics.error("pull_protocol_error");
            write_line(&transport, &answer(400, "bad request")).await;
            return;
        }
        None => {
            warn!(%peer, reason = "pull_request_timeout", "pull refused");
            return;
        }
    };
    let cluster = &ctx.config().cluster;
    let live = ctx.shared.directory.publisher(&request.stream).is_some();
    let refusal = if !ctx
        .auth()
        .allows_pull(&cluster.token, &request.token, &request.stream)
    {
        Some((403, "bad token"))
    } else if ctx.shared.is_draining() {
        Some((503, "draining"))
    } else if !live && !cluster.pulls() {
        Some((404, "not here"))
    } else {
        None
    };
    if let Some((status, reason)) = refusal {
        info!(%peer, stream = %loggable(&request.stream), status, reason, "pull refused");
        write_line(&transport, &answer(status, reason)).await;
        return;
    }
    let player = &ctx.config().player;
    let out = Outbound::new(QueueLimits {
        soft_max_bytes: player.queue_max_bytes,
        hard_max_bytes: player.queue_hard_max_bytes,
    });
    out.queue
        .borrow_mut()
        .push_control(answer(200, "OK").encode());
    // The edge decodes at `chunk_size` from the first byte; this makes our own encoder (used
    // for status messages) agree.
    out.send_control(&ControlMessage::SetChunkSize(chunk_size));
    out.flush();
    let id = ctx.new_connection_id();
    let open = ctx.metrics.accepted("pull");
    ctx.metrics.pulls_served.inc();
    let client = Rc::new(ClientHandle {
        id,
        peer,
        transport: std::cell::Cell::new("pull"),
        since: Instant::now(),
        role: Cell::new(ClientRole::Playing),
        stream: RefCell::new(Some(request.stream.clone())),
        bytes_in: Cell::new(0),
        bytes_out: Cell::new(0),
        out: Rc::clone(&out),
        taken_over: Cell::new(false),
        reconnect_app: RefCell::new(None),
    });
    ctx.add_client(Rc::clone(&client));
    info!(conn = id, core = ctx.id.0, %peer, stream = %loggable(&request.stream), "pull served");
    ctx.add_player(
        &request.stream,
        Player {
            connection: id,
            out: Rc::clone(&out),
            audio: true,
            video: true,
            paused: false,
        },
    );
    let settings = WriterSettings {
        merge_window: Duration::from_millis(player.merge_window_ms),
        send_timeout: Duration::from_secs(player.send_timeout_secs),
    };
    let sent = |n: usize| {
        client.bytes_out.set(client.bytes_out.get() + n as u64);
        ctx.metrics.sent_bytes.inc_by(n as u64);
    };
    let queue = Rc::clone(&out.queue);
    let reason = future::or(
        async {
            // The pulling node sends nothing after its request: any read result ends it.
            let mut sink = BytesMut::new();
            loop {
                match transport.read_into(&mut sink).await {
                    Ok(0) | Err(_) => return "peer_closed",
                    Ok(_) => sink.clear(),
                }
            }
        },
        async {
            match run_writer(&transport, &queue, settings, &sent).await {
                Ok(()) if queue.borrow().overflowed() => "slow_consumer",
                Ok(()) => "closed",
                // An edge that reads nothing for the send timeout is a slow consumer too.
                Err(WriteError::Stalled(_)) => "slow_consumer",
                Err(WriteError::Io(_)) => "write_error",
            }
        },
    )
    .await;
    ctx.remove_player(&request.stream, id);
    ctx.remove_client(id);
    queue.borrow_mut().close();
    transport.shutdown();
    open.dec();
    ctx.metrics.closed(reason);
    info!(conn = id, %peer, stream = %loggable(&request.stream), reason, "pull closed");
}

async fn write_line<T: Transport>(transport: &T, response: &PullResponse) {
    let line = response.encode();
    let mut written = 0;
    while written < line.len() {
        match with_timeout(
            Duration::from_secs(2),
            transport.write_some(&line[written..]),
        )
        .await
        {
            Some(Ok(n)) if n > 0 => written += n,
            _ => break,
        }
    }
    let _ = with_timeout(Duration::from_secs(2), transport.flush()).await;
    transport.shutdown();
}
