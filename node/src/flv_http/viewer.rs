//! An HTTP-FLV viewer once hyper has written its response head: the socket, taken back, is
//! written by the RTMP players' writer ([`run_writer`]) through the chunk framing
//! ([`Chunked`]), in a task of its own as an RTMP player's is, while this task watches the
//! client's side (its close, or an `http.idle_timeout_secs` with nothing sent). At a merge
//! window over plain TCP the core's tick pass writes the viewer's windows instead
//! ([`crate::sendpass::register_framed`], framed with the transport's shared open chunk);
//! the writer then writes only what a full socket left, and the end.
//!
//! How it ends, and the label logged and counted (`corecast_connections_closed_total`):
//! - the queue finished (the publisher left, [`super::publisher_left`]) or was closed: what is
//!   queued is written, then the last chunk: `closed`;
//! - the hard bound closed the queue: `slow_consumer` (no last chunk: the body is cut);
//! - a write made no progress for `http.request_timeout_secs`: `http_write_timeout` (also in
//!   `corecast_errors_total`, as every HTTP write-deadline cut);
//! - the client closed or reset the connection: `peer_closed`; another socket error:
//!   `write_error`; nothing sent for `http.idle_timeout_secs`: `http_idle`.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future;

use super::chunked::Chunked;
use super::{Viewer, FLV_HEADER};
use crate::clients::ClientHandle;
use crate::httpd::io::Stream;
use crate::httpd::upgrade::Upgraded;
use crate::queue::SubscriberQueue;
use crate::transport::{TcpTransport, Transport};
use crate::util::with_timeout;
use crate::writer::{run_writer, WriteError, WriterSettings};

/// Serves `viewer` on the connection `upgraded` (its head written), chunked or not (an
/// HTTP/1.0 request: the body is close-delimited), until the stream or the connection ends.
pub(super) async fn serve(viewer: Viewer, upgraded: Upgraded, chunked: bool) {
    match upgraded.io.into_stream() {
        Stream::Tcp(tcp) => run(viewer, TcpTransport::new(tcp), chunked).await,
        Stream::Tls(tls) => run(viewer, *tls, chunked).await,
    }
}

async fn run<T: Transport + 'static>(viewer: Viewer, socket: T, chunked: bool) {
    let config = viewer.ctx.config();
    let settings = WriterSettings {
        merge_window: super::merge_window(&viewer.ctx),
        send_timeout: Duration::from_secs(config.http.request_timeout_secs),
    };
    let idle = Duration::from_secs(config.http.idle_timeout_secs);
    let transport = Rc::new(Chunked::new(socket, chunked));
    // As an RTMP player's: a viewer's backlog stays in its queue, where the bounds see it.
    let send_buffer = config.player.socket_send_buffer_bytes;
    if send_buffer > 0 {
        let _ = transport.set_send_buffer_size(send_buffer);
    }
    transport.expect_little_input();
    let header = with_timeout(settings.send_timeout, transport.write_chunk(&FLV_HEADER)).await;
    if !matches!(header, Some(Ok(()))) {
        transport.shutdown();
        viewer.leave("write_error");
        return;
    }
    viewer.sent(FLV_HEADER.len());
    let queue = Rc::clone(&viewer.out.queue);
    let sent = counter(&viewer);
    // At a merge window over plain TCP the core's tick writes the viewer as it writes RTMP
    // players, framing each send with the chunk state the writer shares; the writer still
    // handles a full socket, the slow-consumer policy and the end. Dropped before the socket.
    let _pass = crate::sendpass::register_framed(
        &config.player,
        Rc::new(ViewerSocket(Rc::clone(&transport))),
        &viewer.out,
        Rc::new(counter(&viewer)),
        transport.chunk_state(),
    );
    // The writer is a task of its own, as an RTMP player's: waking it for a window must not
    // poll the read side too. Dropping the task cancels it.
    let writer = glommio::spawn_local({
        let transport = Rc::clone(&transport);
        async move {
            let written = run_writer(&*transport, &queue, settings, &sent).await;
            ended(&transport, &queue, written, settings.send_timeout).await
        }
    });
    let reason = future::or(writer, watch_client(&*transport, &viewer.client, idle)).await;
    if reason == "http_write_timeout" {
        // Counted as when hyper's write deadline cut HTTP-FLV viewers (`httpd::conn`).
        viewer.ctx.metrics.error(reason);
    }
    transport.shutdown();
    viewer.leave(reason);
}

/// The viewer's connection, held open for the tick pass ([`crate::sendpass::RawSocket`]):
/// the plain socket under the chunk framing, or -1 (TLS: never registered).
struct ViewerSocket<T>(Rc<Chunked<T>>);

impl<T: Transport> crate::sendpass::RawSocket for ViewerSocket<T> {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.inner_socket_fd().unwrap_or(-1)
    }
}

/// Counts bytes sent to `viewer` (its client record and the node's total), for the writer.
fn counter(viewer: &Viewer) -> impl Fn(usize) + 'static {
    let (client, ctx) = (Rc::clone(&viewer.client), Rc::clone(&viewer.ctx));
    move |n: usize| {
        client.bytes_out.set(client.bytes_out.get() + n as u64);
        ctx.metrics.sent_bytes.inc_by(n as u64);
    }
}

/// Why the writer stopped; a finished queue's body is ended with the last chunk first.
async fn ended<T: Transport>(
    transport: &Chunked<T>,
    queue: &RefCell<SubscriberQueue>,
    written: Result<(), WriteError>,
    limit: Duration,
) -> &'static str {
    match written {
        Ok(()) if queue.borrow().overflowed() => "slow_consumer",
        Ok(()) => match with_timeout(limit, transport.finish()).await {
            Some(Ok(_)) => "closed",
            Some(Err(e)) => io_reason(&e),
            None => "http_write_timeout",
        },
        Err(WriteError::Stalled(_)) => "http_write_timeout",
        Err(WriteError::Io(e)) => io_reason(&e),
    }
}

fn io_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => "peer_closed",
        _ => "write_error",
    }
}

/// Ends when the client closes its side (what it sends meanwhile is read and dropped: a
/// viewer has nothing to say) or when nothing was sent to it for `idle`.
async fn watch_client<T: Transport>(
    transport: &T,
    client: &ClientHandle,
    idle: Duration,
) -> &'static str {
    let closed = async {
        let mut input = BytesMut::new();
        loop {
            match transport.read_into(&mut input).await {
                Ok(0) | Err(_) => return "peer_closed",
                Ok(_) => input.clear(),
            }
        }
    };
    let quiet = async {
        let mut seen = client.bytes_out.get();
        loop {
            glommio::timer::sleep(idle).await;
            let now = client.bytes_out.get();
            if now == seen {
                return "http_idle";
            }
            seen = now;
        }
    };
    future::or(closed, quiet).await
}
