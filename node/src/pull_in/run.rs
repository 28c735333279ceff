//! One pull's task: connect to the source (TCP, then TLS for `rtmps://`), play it with the
//! RTMP client session, publish its frames locally; on any failure end the local publish,
//! wait ([`super::backoff`]) and try again, until the pull is removed.
//!
//! Every step has a deadline (`ingest.timeout_secs`): connect, TLS, and the RTMP setup up to
//! `NetStream.Play.Start`; a live source that sends nothing for that long is lost. The stop
//! flag is looked at every [`STOP_CHECK`], while reading and while waiting.
//!
//! A pull that goes live takes a place in the node's stream counts
//! ([`crate::stream_limits`]) like a publish does, the source's address standing for the
//! publisher's; a full node (or source address) is a try that fails with reason
//! `stream_limit`, retried after the backoff like any other.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use corecast_common::client::url::{Scheme, TargetUrl};
use corecast_common::client::{
    ClientError, ClientEvent, ClientSession, ClientSettings, RefusalKind, Role,
};
use corecast_common::command::DataMessage;
use corecast_common::plane::Generation;
use corecast_common::types::{MessageType, RtmpMessage};
use corecast_transport::{TlsError, TlsStream};
use glommio::net::TcpStream;
use rand::RngCore as _;
use tracing::{info, warn};

use super::backoff::Backoff;
use super::{PullSpec, PullState, Reason};
use crate::cluster::tls::Upstream;
use crate::core::{CoreContext, ReplicaRef};
use crate::frame::{FrameData, MediaKind};
use crate::livestreams::targets_url::redact;
use crate::stream::PublisherInfo;
use crate::stream_limits::StreamSlot;
use crate::util::with_timeout;

/// How often a pull looks at its stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(250);

/// How one try ended.
enum Outcome {
    /// The pull was removed.
    Stopped,
    /// The try failed or the source was lost; `streamed` when it had gone live.
    Failed { reason: Reason, streamed: bool },
}

/// Runs `spec` until `stop` is set.
pub async fn run(ctx: Rc<CoreContext>, spec: PullSpec, stop: Arc<AtomicBool>) {
    let ingest = ctx.config().ingest.clone();
    let mut backoff = Backoff::new(
        Duration::from_millis(ingest.retry_min_ms),
        Duration::from_millis(ingest.retry_max_ms),
    );
    let timeout = Duration::from_secs(ingest.timeout_secs);
    let mut reconnects = 0u64;
    loop {
        ctx.shared
            .pull_in
            .set_state(&spec.id, PullState::Connecting, reconnects);
        let (reason, streamed) = match attempt(&ctx, &spec, &stop, timeout).await {
            Outcome::Stopped => break,
            Outcome::Failed { reason, streamed } => (reason, streamed),
        };
        if streamed {
            backoff.reset();
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        warn!(pull = %spec.id, stream = %spec.key(), reason = reason.as_str(),
            retry_in_ms = delay.as_millis() as u64, "pull-in source failed; retrying");
        ctx.metrics.error(&format!("pull_in_{}", reason.as_str()));
        ctx.shared
            .pull_in
            .set_state(&spec.id, PullState::Backoff(reason), reconnects);
        if !wait_unless_stopped(delay, &stop).await {
            break;
        }
        reconnects += 1;
    }
    info!(pull = %spec.id, stream = %spec.key(), "pull-in stopped");
}

fn stopped(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
}

/// Sleeps `delay`; false if the pull was removed meanwhile.
async fn wait_unless_stopped(delay: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if stopped(stop) {
            return false;
        }
        glommio::timer::sleep(STOP_CHECK.min(until.saturating_duration_since(Instant::now())))
            .await;
    }
    !stopped(stop)
}

/// One connection to the source.
async fn attempt(
    ctx: &Rc<CoreContext>,
    spec: &PullSpec,
    stop: &AtomicBool,
    timeout: Duration,
) -> Outcome {
    let failed = |reason| Outcome::Failed {
        reason,
        streamed: false,
    };
    let Ok(url) = TargetUrl::parse(&spec.url) else {
        return failed(Reason::Protocol);
    };
    let (mut conn, address) = match connect(ctx, spec, &url, timeout).await {
        Ok(connected) => connected,
        Err(reason) => return failed(reason),
    };
    let mut random = [0u8; 1536];
    rand::rng().fill_bytes(&mut random);
    let session = ClientSession::new(ClientSettings::new(&url, Role::Play), 0, &random);
    let mut feed = Feed {
        ctx,
        spec,
        session,
        published: None,
        slot: None,
        address,
        source: url.redacted(),
    };
    let outcome = feed.stream(&mut conn, stop, timeout).await;
    feed.session.close();
    if let Some(bye) = feed.session.poll_output() {
        // Best effort: the source may be gone already.
        let _ = with_timeout(Duration::from_millis(200), conn.write_all(&bye)).await;
    }
    feed.unpublish();
    outcome
}

/// TCP (and TLS) to the source, within `timeout` per step; the source's address too.
async fn connect(
    ctx: &CoreContext,
    spec: &PullSpec,
    url: &TargetUrl,
    timeout: Duration,
) -> Result<(Upstream, IpAddr), Reason> {
    let authority = url.authority();
    // getaddrinfo blocks: off the executor.
    let resolved: Option<SocketAddr> = glommio::executor()
        .spawn_blocking(move || authority.to_socket_addrs().ok().and_then(|mut a| a.next()))
        .await;
    let addr = resolved.ok_or(Reason::Refused)?;
    let tcp = match with_timeout(timeout, TcpStream::connect(addr)).await {
        Some(Ok(tcp)) => tcp,
        Some(Err(_)) => return Err(Reason::Refused),
        None => return Err(Reason::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    if url.scheme != Scheme::Rtmps {
        return Ok((Upstream::plain(tcp), addr.ip()));
    }
    // The restream engine's per-core cache: the system's roots are parsed once per core.
    let ca_file = Some(spec.ca_file.as_str()).filter(|f| !f.is_empty());
    let configs = ctx.feature::<crate::restream::tls::ClientConfigs>();
    let config = configs.get(ca_file).map_err(|e| {
        warn!(pull = %spec.id, error = %e, "pull-in TLS setup failed");
        Reason::Tls
    })?;
    let name =
        rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|_| Reason::Tls)?;
    let client = TlsStream::client(tcp, config, name).map_err(|_| Reason::Tls)?;
    match client.handshake(timeout).await {
        Ok(()) => Ok((Upstream::Tls(Box::new(client)), addr.ip())),
        Err(TlsError::HandshakeTimeout(_)) => Err(Reason::Timeout),
        Err(e) => {
            warn!(pull = %spec.id, error = %e, reason = e.as_str(), "pull-in TLS handshake failed");
            Err(Reason::Tls)
        }
    }
}

/// A connection's session and, once the source plays, the local publish it feeds.
struct Feed<'a> {
    ctx: &'a Rc<CoreContext>,
    spec: &'a PullSpec,
    session: ClientSession,
    published: Option<(ReplicaRef, Generation)>,
    /// The publish's place in the node's stream counts, held while it lasts.
    slot: Option<StreamSlot>,
    /// The source's address: it counts against `stream.max_streams_per_address`.
    address: IpAddr,
    /// The source, redacted (the stream's `upstream` in the API).
    source: String,
}

impl Feed<'_> {
    /// Reads, answers and publishes until the source is lost or the pull removed.
    async fn stream(
        &mut self,
        conn: &mut Upstream,
        stop: &AtomicBool,
        timeout: Duration,
    ) -> Outcome {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut heard = Instant::now();
        loop {
            if let Some(out) = self.session.poll_output() {
                if with_timeout(timeout, conn.write_all(&out))
                    .await
                    .is_none_or(|r| r.is_err())
                {
                    return self.failed(Reason::Timeout);
                }
            }
            if stopped(stop) {
                return Outcome::Stopped;
            }
            if heard.elapsed() >= timeout {
                return self.failed(Reason::Timeout);
            }
            match with_timeout(STOP_CHECK, conn.read_into(&mut buf)).await {
                None => continue,
                Some(Ok(0)) | Some(Err(_)) => {
                    let reason = if self.published.is_some() {
                        Reason::Ended
                    } else {
                        Reason::Refused
                    };
                    return self.failed(reason);
                }
                Some(Ok(n)) => {
                    heard = Instant::now();
                    self.ctx.shared.pull_in.add_bytes(&self.spec.id, n as u64);
                }
            }
            if let Err(e) = self.session.handle_input(&mut buf) {
                return self.failed(refusal_reason(&e));
            }
            while let Some(event) = self.session.poll_event() {
                if let Some(reason) = self.on_event(event) {
                    return self.failed(reason);
                }
            }
        }
    }

    fn failed(&self, reason: Reason) -> Outcome {
        Outcome::Failed {
            reason,
            streamed: self.published.is_some(),
        }
    }

    /// Handles one event; a reason when the try must end.
    fn on_event(&mut self, event: ClientEvent) -> Option<Reason> {
        match event {
            ClientEvent::Live { .. } => return self.publish().err(),
            ClientEvent::Media(message) => self.on_media(message),
            ClientEvent::StreamEnded => return Some(Reason::Ended),
            ClientEvent::Connected | ClientEvent::Status { .. } => {}
        }
        None
    }

    /// The source plays: claim `app/name` as a publisher would.
    fn publish(&mut self) -> Result<(), Reason> {
        let info = PublisherInfo {
            connection: 0,
            source: crate::stats::StreamSource::Upstream {
                upstream: self.source.clone(),
            },
            since: Instant::now(),
        };
        let key = self.spec.key();
        let slot = match self.ctx.shared.stream_limits.try_acquire(self.address) {
            Ok(slot) => slot,
            Err(limit) => {
                warn!(pull = %self.spec.id, stream = %key, reason = limit.as_str(), error = %limit, "pull-in not published");
                self.ctx.metrics.error(limit.as_str());
                return Err(Reason::StreamLimit);
            }
        };
        match self.ctx.start_publish(&key, info) {
            Ok(published) => {
                info!(pull = %self.spec.id, stream = %key, source = %redact(&self.spec.url), "pull-in live");
                self.published = Some(published);
                self.slot = Some(slot);
                self.ctx.shared.pull_in.set_state(
                    &self.spec.id,
                    PullState::Live,
                    self.reconnects(),
                );
                Ok(())
            }
            Err(_) => Err(Reason::Taken),
        }
    }

    fn reconnects(&self) -> u64 {
        self.ctx
            .shared
            .pull_in
            .status(&self.spec.id)
            .map_or(0, |s| s.reconnects)
    }

    /// A media message from the source: one frame of the local stream.
    fn on_media(&mut self, message: RtmpMessage) {
        let Some((replica, generation)) = &self.published else {
            return;
        };
        let (kind, payload) = match message.message_type {
            MessageType::AUDIO => (MediaKind::Audio, message.payload),
            MessageType::VIDEO => (MediaKind::Video, message.payload),
            _ => match data_payload(&message) {
                Some(payload) => (MediaKind::Data, payload),
                None => return,
            },
        };
        if payload.is_empty() {
            return;
        }
        let chunk_size = self.ctx.config().rtmp.out_chunk_size_bytes;
        let frame = FrameData::encode(kind, message.timestamp, payload, chunk_size);
        self.ctx.publish_frame(replica, *generation, frame);
    }

    /// Ends the local publish, if any: players wait for the next.
    fn unpublish(&mut self) {
        if let Some((_, generation)) = self.published.take() {
            self.ctx.stop_publish(&self.spec.key(), generation);
        }
        self.slot = None;
    }
}

/// A data message as players get it: `onMetaData` in player form, other data as sent,
/// `@clearDataFrame` and undecodable data dropped.
fn data_payload(message: &RtmpMessage) -> Option<Bytes> {
    let data = DataMessage::decode(message.message_type, &message.payload).ok()?;
    if let Some(metadata) = data.player_metadata() {
        return Some(metadata.encode());
    }
    match data.values.first().and_then(|v| v.as_str()) {
        Some("@clearDataFrame") | None => None,
        Some(_) => Some(data.encode()),
    }
}

/// The reason a session error ends a try with.
fn refusal_reason(error: &ClientError) -> Reason {
    match error {
        ClientError::Refused(refusal) => match refusal.kind {
            RefusalKind::Auth => Reason::Auth,
            RefusalKind::BadName => Reason::NotFound,
            RefusalKind::Other => Reason::Refused,
        },
        _ => Reason::Protocol,
    }
}
