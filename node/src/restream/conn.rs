//! One connection of a push target: TCP (and TLS for `rtmps://`), the RTMP setup through the
//! sans-IO [`ClientSession`], then pushing until the target halts or the connection fails.
//!
//! Every step has a deadline (`restream.connect_timeout_ms` for DNS, TCP, TLS and the setup;
//! `restream.send_timeout_ms` for a write that makes no progress), so a target that never
//! answers, or answers garbage, costs one backoff and nothing else.
//!
//! # Pushing, encode-once
//! Once the server says `NetStream.Publish.Start`, the target joins the stream's replica as a
//! player with its own [`Outbound`] (bounded queue, keyframe skipping) and gets exactly what a
//! player gets: the snapshot, then the shared pre-chunked frames, written by the same
//! vectored writer ([`run_writer`]). That works because we announce the node's out chunk size
//! to the target (`Set Chunk Size` after `connect`), and the frames' headers name message
//! stream 1, which is what servers answer `createStream` with. Our own messages (acknowledge
//! ments, ping responses, `FCUnpublish`) use chunk streams 2, 3 and 8, never the media ones.
//!
//! Metadata goes out as a publisher sends it (`@setDataFrame`, [`super::metadata`]).
//!
//! A server that answers another stream id gets re-headed frames instead ([`rehead`]): the
//! queued bytes are reassembled and chunked again by the session with that id. It costs a
//! copy per target, which is why it is only the fallback.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits};
use corecast_common::client::url::{Scheme, TargetUrl};
use corecast_common::client::{
    ClientError, ClientEvent, ClientSession, ClientSettings, RefusalKind, Role,
};
use corecast_common::types::MessageStreamId;
use corecast_transport::{TlsError, TlsStream};
use futures_lite::future;
use glommio::net::TcpStream;
use rand::RngCore;
use rustls::pki_types::ServerName;

use super::spec::FailReason;
use super::target::Target;
use super::StreamTargets;
use crate::config::RestreamConfig;
use crate::core::CoreContext;
use crate::outbound::Outbound;
use crate::queue::{QueueLimits, SubscriberQueue};
use crate::stream::Player;
use crate::transport::{TcpTransport, Transport};
use crate::util::with_timeout;
use crate::writer::{run_writer, WriterSettings};

/// How often a live target reports its byte and skipped-frame counts.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Why a connection ended badly.
#[derive(Debug)]
pub struct Failure {
    /// The reason label.
    pub reason: FailReason,
    /// For the log line (never the stream key).
    pub detail: String,
}

impl Failure {
    fn new(reason: FailReason, detail: impl Into<String>) -> Failure {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

/// What a client error means for the target.
fn client_failure(error: ClientError) -> Failure {
    let reason = match &error {
        ClientError::Refused(refusal) if refusal.kind == RefusalKind::Auth => FailReason::Auth,
        ClientError::Refused(_) => FailReason::Refused,
        _ => FailReason::Protocol,
    };
    // The Display of a refusal shows the phase and the status code, not the description
    // (which may echo the stream key).
    Failure::new(reason, error.to_string())
}

fn io_failure(error: std::io::Error) -> Failure {
    Failure::new(FailReason::Refused, error.to_string())
}

/// One connection, from DNS to the end of the push. Ok when it ended because the target
/// halted (the stream ended: the server was told, `FCUnpublish` and `deleteStream`).
pub async fn attempt(
    ctx: &Rc<CoreContext>,
    target: &Rc<Target>,
    url: &TargetUrl,
    config: &RestreamConfig,
    stream: &Rc<StreamTargets>,
) -> Result<(), Failure> {
    let limit = config.connect_timeout();
    let halted = async {
        target.halt.wait().await;
        Err(Failure::new(FailReason::Refused, "halted while connecting"))
    };
    let connect = async {
        let addr = with_timeout(limit, resolve(url))
            .await
            .ok_or_else(|| Failure::new(FailReason::Timeout, "DNS lookup timed out"))??;
        match with_timeout(limit, TcpStream::connect(addr)).await {
            None => Err(Failure::new(FailReason::Timeout, "TCP connect timed out")),
            Some(Err(e)) => Err(Failure::new(FailReason::Refused, e.to_string())),
            Some(Ok(tcp)) => Ok(tcp),
        }
    };
    let tcp = future::or(connect, halted).await?;
    let _ = tcp.set_nodelay(true);
    if config.socket_send_buffer_bytes > 0 {
        let _ =
            corecast_transport::socket::set_send_buffer_size(&tcp, config.socket_send_buffer_bytes);
    }
    match url.scheme {
        Scheme::Rtmp => session(ctx, target, url, config, stream, TcpTransport::new(tcp)).await,
        Scheme::Rtmps => {
            let tls = tls(ctx, target, url, tcp, limit).await?;
            session(ctx, target, url, config, stream, tls).await
        }
    }
}

/// The TLS handshake, verifying the server as the URL's host (also the SNI).
async fn tls(
    ctx: &CoreContext,
    target: &Target,
    url: &TargetUrl,
    tcp: TcpStream,
    limit: Duration,
) -> Result<TlsStream<rustls::ClientConnection>, Failure> {
    let config = ctx
        .feature::<super::tls::ClientConfigs>()
        .get(target.spec.ca_file.as_deref())
        .map_err(|e| Failure::new(FailReason::Tls, e))?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| Failure::new(FailReason::Tls, format!("bad server name: {e}")))?;
    let stream = TlsStream::client(tcp, config, name)
        .map_err(|e| Failure::new(FailReason::Tls, e.to_string()))?;
    match stream.handshake(limit).await {
        Ok(()) => Ok(stream),
        Err(TlsError::HandshakeTimeout(_)) => {
            Err(Failure::new(FailReason::Timeout, "TLS handshake timed out"))
        }
        Err(e) => Err(Failure::new(FailReason::Tls, e.to_string())),
    }
}

/// The host's first address; DNS runs off the executor (getaddrinfo blocks).
async fn resolve(url: &TargetUrl) -> Result<SocketAddr, Failure> {
    if let Ok(ip) = url.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, url.port));
    }
    let (host, port) = (url.host.clone(), url.port);
    glommio::executor()
        .spawn_blocking(move || (host.as_str(), port).to_socket_addrs().ok()?.next())
        .await
        .ok_or_else(|| Failure::new(FailReason::Refused, "the host name does not resolve"))
}

/// Writes all of `bytes`.
async fn write_all<T: Transport>(transport: &T, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = transport.write_some(bytes).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    transport.flush().await
}

/// The RTMP setup until `NetStream.Publish.Start`; the stream id the server gave.
async fn setup<T: Transport>(
    transport: &T,
    session: &RefCell<ClientSession>,
    buf: &mut BytesMut,
) -> Result<MessageStreamId, Failure> {
    loop {
        let output = session.borrow_mut().poll_output();
        if let Some(bytes) = output {
            write_all(transport, &bytes).await.map_err(io_failure)?;
        }
        while let Some(event) = session.borrow_mut().poll_event() {
            if let ClientEvent::Live { stream_id } = event {
                return Ok(stream_id);
            }
        }
        let n = transport.read_into(buf).await.map_err(io_failure)?;
        if n == 0 {
            let phase = session.borrow().phase().as_str();
            return Err(Failure::new(
                FailReason::Refused,
                format!("the server closed the connection ({phase})"),
            ));
        }
        session
            .borrow_mut()
            .handle_input(buf)
            .map_err(client_failure)?;
    }
}

async fn session<T: Transport>(
    ctx: &Rc<CoreContext>,
    target: &Rc<Target>,
    url: &TargetUrl,
    config: &RestreamConfig,
    stream: &Rc<StreamTargets>,
    transport: T,
) -> Result<(), Failure> {
    let mut settings = ClientSettings::new(url, Role::Publish);
    settings.chunk_size = ctx.config().rtmp.out_chunk_size_bytes;
    let mut random = [0u8; 64];
    rand::rng().fill_bytes(&mut random);
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u32);
    let session = RefCell::new(ClientSession::new(settings, epoch, &random));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let limit = config.connect_timeout();
    let setup = async { with_timeout(limit, setup(&transport, &session, &mut buf)).await };
    let halted = async {
        target.halt.wait().await;
        None
    };
    let stream_id = match future::or(async { Some(setup.await) }, halted).await {
        None => {
            transport.shutdown();
            return Ok(());
        }
        Some(None) => {
            let phase = session.borrow().phase().as_str();
            return Err(Failure::new(
                FailReason::Timeout,
                format!("no answer within {limit:?} ({phase})"),
            ));
        }
        Some(Some(result)) => result?,
    };
    let live = Live {
        ctx,
        target,
        config,
        transport: &transport,
        session: &session,
    };
    let result = live.push(stream, buf, stream_id).await;
    transport.shutdown();
    result
}

/// Waits until `queue` holds something or is closed.
async fn first_queued(queue: &RefCell<SubscriberQueue>) {
    poll_fn(|cx| {
        let mut q = queue.borrow_mut();
        if q.is_closed() || !q.is_empty() {
            Poll::Ready(())
        } else {
            q.set_writer(cx.waker());
            Poll::Pending
        }
    })
    .await;
}

/// A connection whose setup is done.
struct Live<'a, T> {
    ctx: &'a Rc<CoreContext>,
    target: &'a Rc<Target>,
    config: &'a RestreamConfig,
    transport: &'a T,
    session: &'a RefCell<ClientSession>,
}

impl<T: Transport> Live<'_, T> {
    /// Joins the replica and pushes until the target halts (Ok, after telling the server) or
    /// the connection fails.
    async fn push(
        &self,
        stream: &StreamTargets,
        mut buf: BytesMut,
        stream_id: MessageStreamId,
    ) -> Result<(), Failure> {
        let (ctx, target) = (self.ctx, self.target);
        if target.halt.is_set() || (stream.enhanced.get() && !target.spec.enhanced_codecs) {
            return self.close(None).await;
        }
        let out = self.join(stream_id);
        let rehead = stream_id != MessageStreamId::MEDIA;
        let reported = Cell::new(0);
        let halted = async {
            target.halt.wait().await;
            Ok(())
        };
        let result = future::or(
            future::or(
                self.write(&out, rehead),
                self.read(&out.queue, &mut buf, rehead),
            ),
            future::or(halted, self.report(&out, &reported)),
        )
        .await;
        if let Some(player) = target.player.take() {
            ctx.remove_player(&target.key, player);
        }
        self.count_dropped(&out, &reported);
        match result {
            Ok(()) if rehead => {
                out.queue.borrow_mut().close();
                self.close(None).await
            }
            Ok(()) => self.close(Some(&out)).await,
            Err(failure) => {
                out.queue.borrow_mut().close();
                Err(failure)
            }
        }
    }

    /// Joins the stream's replica as a player with a queue of its own; reports `live`.
    fn join(&self, stream_id: MessageStreamId) -> Rc<Outbound> {
        let (ctx, target) = (self.ctx, self.target);
        let out = Outbound::new(QueueLimits {
            soft_max_bytes: self.config.queue_max_bytes,
            hard_max_bytes: self.config.queue_hard_max_bytes,
        });
        let id = ctx.new_connection_id();
        let player = Player {
            connection: id,
            out: Rc::clone(&out),
            audio: true,
            video: true,
            paused: false,
        };
        ctx.add_player(&target.key, player);
        target.player.set(Some(id));
        target.set_state(ctx, super::TargetState::Live);
        tracing::info!(target = %target.spec.id, url = %target.shown_url(), stream = %target.key, stream_id = stream_id.0, "restream target live");
        out
    }

    /// Writes the queue until the connection fails (the queue closing is a failure too: it
    /// only closes by itself when the target is too slow).
    async fn write(&self, out: &Outbound, rehead: bool) -> Result<(), Failure> {
        let sent = |n: usize| self.target.add_bytes(self.ctx, n);
        if rehead {
            self.rehead(&out.queue, &sent).await?;
        } else {
            // What comes first (the snapshot, or the first frames of a stream that just went
            // live) goes out with its metadata in publisher form; the re-heading writer does
            // that itself.
            first_queued(&out.queue).await;
            let chunk_size = self.ctx.config().rtmp.out_chunk_size_bytes;
            let first =
                super::metadata::take_front_metadata(&mut out.queue.borrow_mut(), chunk_size);
            if let Some(bytes) = first {
                let send_timeout = Duration::from_millis(self.config.send_timeout_ms);
                with_timeout(send_timeout, write_all(self.transport, &bytes))
                    .await
                    .ok_or_else(|| Failure::new(FailReason::Timeout, "write stalled"))?
                    .map_err(io_failure)?;
                sent(bytes.len());
            }
            let settings = WriterSettings {
                merge_window: Duration::from_millis(self.ctx.config().player.merge_window_ms),
                send_timeout: Duration::from_millis(self.config.send_timeout_ms),
            };
            run_writer(self.transport, &out.queue, settings, &sent)
                .await
                .map_err(|e| Failure::new(FailReason::Timeout, e.to_string()))?;
        }
        if out.queue.borrow().overflowed() {
            return Err(Failure::new(
                FailReason::Timeout,
                "the target reads too slowly (queue past restream.queue_hard_max_bytes)",
            ));
        }
        Err(Failure::new(FailReason::Refused, "the queue closed"))
    }

    /// Reports the target's counters once a second; never ends.
    async fn report(&self, out: &Outbound, reported: &Cell<u64>) -> Result<(), Failure> {
        loop {
            glommio::timer::sleep(REPORT_EVERY).await;
            self.count_dropped(out, reported);
            self.target.report(self.ctx);
        }
    }

    /// Counts the frames the queue skipped since the last count.
    fn count_dropped(&self, out: &Outbound, reported: &Cell<u64>) {
        let now = out.queue.borrow().dropped_frames();
        self.target
            .add_dropped(self.ctx, now.saturating_sub(reported.get()));
        reported.set(now);
    }

    /// Reads what the server sends (acknowledgements, pings, errors) for as long as the push
    /// lasts; the session's answers join the queue (or wake the re-heading writer).
    async fn read(
        &self,
        queue: &RefCell<SubscriberQueue>,
        buf: &mut BytesMut,
        rehead: bool,
    ) -> Result<(), Failure> {
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            let n = self.transport.read_into(buf).await.map_err(io_failure)?;
            if n == 0 {
                return Err(Failure::new(
                    FailReason::Refused,
                    "the server closed the connection",
                ));
            }
            let mut session = self.session.borrow_mut();
            session.handle_input(buf).map_err(client_failure)?;
            while session.poll_event().is_some() {}
            if rehead {
                if session.has_output() {
                    queue.borrow_mut().mark_urgent();
                }
            } else if let Some(bytes) = session.poll_output() {
                queue.borrow_mut().push_control(bytes);
            }
        }
    }

    /// The writer for a server whose stream id is not 1: queued frames are reassembled and
    /// chunked again with the server's id, in order with the session's own messages.
    async fn rehead(
        &self,
        queue: &RefCell<SubscriberQueue>,
        sent: &dyn Fn(usize),
    ) -> Result<(), Failure> {
        let chunk_size = self.ctx.config().rtmp.out_chunk_size_bytes;
        let mut decoder = ChunkDecoder::new(ChunkDecoderLimits {
            max_chunk_size: chunk_size,
            ..ChunkDecoderLimits::default()
        });
        decoder
            .set_chunk_size(chunk_size)
            .map_err(|e| Failure::new(FailReason::Protocol, e.to_string()))?;
        let send_timeout = Duration::from_millis(self.config.send_timeout_ms);
        let mut pending = BytesMut::new();
        loop {
            let closed = poll_fn(|cx| {
                let mut q = queue.borrow_mut();
                if q.is_closed() {
                    Poll::Ready(true)
                } else if !q.is_empty() || self.session.borrow().has_output() {
                    Poll::Ready(false)
                } else {
                    q.set_writer(cx.waker());
                    Poll::Pending
                }
            })
            .await;
            if closed {
                return Ok(());
            }
            loop {
                let front = queue.borrow().front_slice();
                let Some(bytes) = front else { break };
                pending.extend_from_slice(&bytes);
                queue.borrow_mut().advance(bytes.len());
            }
            while let Some(message) = decoder
                .decode(&mut pending)
                .map_err(|e| Failure::new(FailReason::Protocol, e.to_string()))?
            {
                let message = super::metadata::publisher_form(&message).unwrap_or(message);
                self.session.borrow_mut().send_media(&message);
            }
            let output = self.session.borrow_mut().poll_output();
            if let Some(bytes) = output {
                with_timeout(send_timeout, write_all(self.transport, &bytes))
                    .await
                    .ok_or_else(|| Failure::new(FailReason::Timeout, "write stalled"))?
                    .map_err(io_failure)?;
                sent(bytes.len());
            }
        }
    }

    /// Ends the push politely: `FCUnpublish` and `deleteStream`, what is queued written first
    /// (within the send timeout).
    async fn close(&self, out: Option<&Rc<Outbound>>) -> Result<(), Failure> {
        let send_timeout = Duration::from_millis(self.config.send_timeout_ms);
        let goodbye = {
            let mut session = self.session.borrow_mut();
            session.close();
            session.poll_output()
        };
        if let Some(out) = out {
            if let Some(bytes) = goodbye {
                out.queue.borrow_mut().push_control(bytes);
            }
            out.queue.borrow_mut().finish();
            let settings = WriterSettings {
                merge_window: Duration::ZERO,
                send_timeout,
            };
            let sent = |n: usize| self.target.add_bytes(self.ctx, n);
            let _ = with_timeout(
                send_timeout,
                run_writer(self.transport, &out.queue, settings, &sent),
            )
            .await;
        } else if let Some(bytes) = goodbye {
            let _ = with_timeout(send_timeout, write_all(self.transport, &bytes)).await;
        }
        Ok(())
    }
}
