//! Origin/edge clustering: pulling streams from upstream nodes (this module) and serving
//! pulls to other nodes ([`serve`]).
//!
//! An edge pulls a stream the first time one of its players asks for it. The pulling core
//! claims the stream in the node's directory exactly as a local publisher would, so every
//! other core replicates from it over the core mesh: **one upstream connection per stream per
//! node**, however many cores and players want it. Upstreams are tried in rendezvous (HRW)
//! order of the stream name; "not here" or a failure moves to the next; a round with no
//! success backs off. Players stay connected through a failover: the next upstream's
//! snapshot starts at a keyframe, with timestamps rebased to continue where the last
//! upstream stopped. The pull ends `linger_secs` after the last player on the node left;
//! a pull that never found its stream ends as soon as nobody waits for it (there is nothing
//! to keep warm), and if its last round found no upstream with the stream it says so
//! ([`PullEnd::NotFound`]): the node then refuses that name for `negative_cache_secs`
//! without asking again. How many pulls run at once is capped node-wide
//! (`max_concurrent_pulls`, counted in the directory by the control plane).

pub mod serve;
pub mod tls;

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use corecast_common::chunk::ChunkDecoderLimits;
use corecast_common::ertmp::Role;
use corecast_common::pull::{rendezvous_order, PullClient, PullEvent, PullMediaKind, PullRequest};
use corecast_transport::{TlsError, TlsStream};
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::core::CoreContext;
use crate::frame::{FrameData, MediaKind};
use crate::util::{loggable, with_timeout};
use corecast_common::plane::{Generation, PullEnd};
use tls::Upstream;

/// How often a streaming pull checks whether anyone still wants it.
const LINGER_CHECK: Duration = Duration::from_secs(1);
/// First pause after a round in which no upstream had the stream.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Keeps a pulled stream's timestamps continuous across upstream changes.
#[derive(Debug, Default)]
struct Rebase {
    offset: u32,
    last_out: Option<u32>,
    /// False until the first media frame of the current upstream fixed the offset.
    anchored: bool,
}

impl Rebase {
    /// A new upstream connection starts; the first one passes timestamps through as they are.
    fn new_upstream(&mut self) {
        self.anchored = self.last_out.is_none();
        if self.anchored {
            self.offset = 0;
        }
    }

    /// The output timestamp of a frame. Configuration (metadata, sequence headers) before
    /// the anchor keeps the last output time; the first media frame anchors the offset.
    fn map(&mut self, timestamp: u32, is_config: bool) -> u32 {
        if !self.anchored {
            let last = self.last_out.unwrap_or(0);
            if is_config {
                return last;
            }
            self.offset = last.wrapping_add(1).wrapping_sub(timestamp);
            self.anchored = true;
        }
        let out = timestamp.wrapping_add(self.offset);
        self.last_out = Some(out);
        out
    }
}

/// How one attempt against one upstream ended.
enum Attempt {
    /// Could not connect or the connection broke before a status line.
    ConnectFailed,
    /// The upstream's TLS handshake failed (an untrusted or misnamed certificate, a
    /// plaintext upstream) or timed out.
    TlsFailed,
    /// 404/503: try the next upstream.
    NotHere,
    /// 400/403 or a malformed answer.
    Refused,
    /// Streamed, then the connection ended.
    Lost,
    /// Nobody wants the stream any more (linger elapsed).
    Unwanted,
}

/// What a pull remembers across attempts.
struct PullState {
    key: String,
    generation: Generation,
    started: Instant,
    first_frame_seen: bool,
    served_by: Option<String>,
    rebase: Rebase,
    idle_since: Option<Instant>,
    dns: Vec<String>,
    dns_resolved_at: Option<Instant>,
}

/// Pulls `key` until nobody on this node plays it for `linger_secs`.
pub async fn run_pull(ctx: Rc<CoreContext>, key: String, generation: Generation) {
    let cfg = ctx.config().cluster.clone();
    let mut state = PullState {
        key,
        generation,
        started: Instant::now(),
        first_frame_seen: false,
        served_by: None,
        rebase: Rebase::default(),
        idle_since: None,
        dns: Vec::new(),
        dns_resolved_at: None,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut end = PullEnd::Done;
    'rounds: loop {
        let upstreams = upstream_list(&ctx, &mut state).await;
        let order: Vec<String> = rendezvous_order(&state.key, &upstreams)
            .into_iter()
            .cloned()
            .collect();
        let mut streamed = false;
        let mut not_here = false;
        for upstream in order {
            if unwanted(&ctx, &mut state) {
                break 'rounds;
            }
            match attempt(&ctx, &mut state, &upstream).await {
                Attempt::ConnectFailed => ctx.metrics.pull_failed("connect"),
                Attempt::TlsFailed => ctx.metrics.pull_failed("tls"),
                Attempt::NotHere => {
                    ctx.metrics.pull_failed("not_here");
                    not_here = true;
                }
                Attempt::Refused => ctx.metrics.pull_failed("refused"),
                Attempt::Lost => {
                    ctx.metrics.pull_failed("lost");
                    streamed = true;
                }
                Attempt::Unwanted => break 'rounds,
            }
        }
        // What the last whole round says about the name: an upstream said it has no such
        // stream, and none streamed it.
        end = if not_here && !streamed {
            PullEnd::NotFound
        } else {
            PullEnd::Done
        };
        if unwanted(&ctx, &mut state) {
            break;
        }
        if streamed {
            backoff = FIRST_BACKOFF;
        } else {
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(cfg.retry_max_secs));
        }
    }
    ctx.stop_pull(&state.key, state.generation, end);
}

/// True once nobody on the node has played the stream for `linger_secs`, or at once when
/// nobody plays a stream that was never found (a client zapping through names it made up
/// must not keep a pull running for each).
fn unwanted(ctx: &CoreContext, state: &mut PullState) -> bool {
    if !ctx.nobody_plays(&state.key) {
        state.idle_since = None;
        return false;
    }
    if state.served_by.is_none() {
        return true;
    }
    let since = *state.idle_since.get_or_insert_with(Instant::now);
    since.elapsed() >= Duration::from_secs(ctx.config().cluster.linger_secs)
}

/// Static upstreams plus the addresses `upstream_dns` resolves to (cached).
async fn upstream_list(ctx: &CoreContext, state: &mut PullState) -> Vec<String> {
    let cfg = &ctx.config().cluster;
    let mut list = cfg.upstreams.clone();
    if !cfg.upstream_dns.is_empty() {
        let stale = state
            .dns_resolved_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(cfg.dns_refresh_secs));
        if stale {
            let name = cfg.upstream_dns.clone();
            // getaddrinfo blocks: run it off the executor.
            let resolved = glommio::executor()
                .spawn_blocking(move || {
                    name.to_socket_addrs()
                        .map(|a| a.map(|a| a.to_string()).collect::<Vec<_>>())
                })
                .await;
            match resolved {
                Ok(addrs) => {
                    state.dns = addrs;
                    state.dns_resolved_at = Some(Instant::now());
                }
                Err(e) => warn!(name = %cfg.upstream_dns, error = %e, "upstream DNS lookup failed"),
            }
        }
        list.extend(state.dns.iter().cloned());
    }
    list.sort();
    list.dedup();
    list
}

async fn resolve(upstream: &str) -> Option<SocketAddr> {
    if let Ok(addr) = upstream.parse() {
        return Some(addr);
    }
    let name = upstream.to_owned();
    glommio::executor()
        .spawn_blocking(move || name.to_socket_addrs().ok().and_then(|mut a| a.next()))
        .await
}

/// One connection to one upstream, streaming for as long as it lasts.
async fn attempt(ctx: &CoreContext, state: &mut PullState, upstream: &str) -> Attempt {
    let cfg = &ctx.config().cluster;
    let Some(addr) = resolve(upstream).await else {
        return Attempt::ConnectFailed;
    };
    let connect_timeout = Duration::from_secs(cfg.connect_timeout_secs);
    let tcp = match with_timeout(connect_timeout, TcpStream::connect(addr)).await {
        Some(Ok(s)) => s,
        _ => return Attempt::ConnectFailed,
    };
    let _ = tcp.set_nodelay(true);
    let mut stream = match &ctx.shared.upstream_tls {
        None => Upstream::plain(tcp),
        Some(config) => {
            let Some(name) = tls::server_name(upstream) else {
                warn!(%upstream, "upstream host is not a valid TLS server name");
                return Attempt::ConnectFailed;
            };
            let handshake = match TlsStream::client(tcp, Arc::clone(config), name) {
                Ok(client) => client.handshake(connect_timeout).await.map(|()| client),
                Err(e) => Err(e),
            };
            match handshake {
                Ok(client) => Upstream::Tls(Box::new(client)),
                Err(TlsError::HandshakeTimeout(_)) => {
                    warn!(%upstream, reason = "tls_handshake_timeout", "upstream TLS handshake timed out");
                    return Attempt::TlsFailed;
                }
                Err(e) => {
                    warn!(%upstream, error = %e, reason = e.as_str(), "upstream TLS handshake failed");
                    return Attempt::TlsFailed;
                }
            }
        }
    };
    let request = PullRequest {
        stream: state.key.clone(),
        token: ctx.auth().pull_token(&cfg.token, &state.key),
    };
    if stream.write_all(&request.encode()).await.is_err() {
        return Attempt::ConnectFailed;
    }
    ctx.metrics.upstream_connections.inc();
    let outcome = stream_from(ctx, state, upstream, &mut stream).await;
    ctx.metrics.upstream_connections.dec();
    outcome
}

async fn stream_from(
    ctx: &CoreContext,
    state: &mut PullState,
    upstream: &str,
    stream: &mut Upstream,
) -> Attempt {
    let rtmp = &ctx.config().rtmp;
    let mut client = PullClient::new(ChunkDecoderLimits {
        max_message_size: rtmp.max_message_size_bytes,
        max_chunk_size: rtmp
            .max_incoming_chunk_size_bytes
            .max(rtmp.out_chunk_size_bytes),
        ..ChunkDecoderLimits::default()
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut streaming = false;
    let mut last_check = Instant::now();
    let answer_deadline =
        Instant::now() + Duration::from_secs(ctx.config().cluster.connect_timeout_secs);
    loop {
        loop {
            let event = match client.poll_event(&mut buf) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    warn!(%upstream, stream = %state.key, error = %e, "bad pull stream");
                    return if streaming {
                        Attempt::Lost
                    } else {
                        Attempt::Refused
                    };
                }
            };
            match event {
                PullEvent::Response(r) if r.status == 200 => {
                    streaming = true;
                    on_streaming(ctx, state, upstream);
                }
                PullEvent::Response(r) if matches!(r.status, 404 | 503) => {
                    debug!(%upstream, stream = %state.key, status = r.status, "upstream: not here");
                    return Attempt::NotHere;
                }
                PullEvent::Response(r) => {
                    warn!(%upstream, stream = %state.key, status = r.status, reason = %loggable(&r.reason), "upstream refused the pull");
                    return Attempt::Refused;
                }
                PullEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => on_media(ctx, state, kind, timestamp, payload),
                PullEvent::Unpublished => {
                    info!(stream = %state.key, %upstream, "upstream publisher left");
                    ctx.pause_pull(&state.key, state.generation);
                }
                PullEvent::Published => {
                    info!(stream = %state.key, %upstream, "upstream publisher back");
                    ctx.resume_pull(&state.key, state.generation, upstream);
                }
            }
        }
        if last_check.elapsed() >= LINGER_CHECK {
            last_check = Instant::now();
            if unwanted(ctx, state) {
                return Attempt::Unwanted;
            }
        }
        if !streaming && Instant::now() >= answer_deadline {
            return Attempt::ConnectFailed;
        }
        match with_timeout(LINGER_CHECK, stream.read_into(&mut buf)).await {
            None => {}
            Some(Ok(0)) | Some(Err(_)) => {
                return if streaming {
                    warn!(%upstream, stream = %state.key, "upstream connection lost");
                    Attempt::Lost
                } else {
                    Attempt::ConnectFailed
                };
            }
            Some(Ok(n)) => {
                ctx.metrics.upstream_bytes.inc_by(n as u64);
            }
        }
    }
}

fn on_streaming(ctx: &CoreContext, state: &mut PullState, upstream: &str) {
    ctx.metrics.pulls_started.inc();
    if let Some(previous) = &state.served_by {
        if previous != upstream {
            ctx.metrics.failovers.inc();
            info!(stream = %state.key, from = %previous, to = %upstream, "upstream failover");
        }
    } else {
        info!(stream = %state.key, %upstream, "pulling");
    }
    state.served_by = Some(upstream.to_owned());
    state.rebase.new_upstream();
    ctx.resume_pull(&state.key, state.generation, upstream);
}

fn on_media(
    ctx: &CoreContext,
    state: &mut PullState,
    kind: PullMediaKind,
    timestamp: u32,
    payload: Bytes,
) {
    let kind = match kind {
        PullMediaKind::Audio => MediaKind::Audio,
        PullMediaKind::Video => MediaKind::Video,
        PullMediaKind::Data => MediaKind::Data,
    };
    // Configuration of any track (sequence headers and E-RTMP v2 configuration packets).
    let is_config = kind == MediaKind::Data
        || matches!(
            crate::frame::classify(kind, &payload).role,
            Role::SequenceHeader | Role::Config(_)
        );
    if payload.is_empty() {
        return;
    }
    if !state.first_frame_seen && kind != MediaKind::Data {
        state.first_frame_seen = true;
        ctx.metrics
            .edge_first_frame
            .observe(state.started.elapsed().as_secs_f64());
    }
    let timestamp = state.rebase.map(timestamp, is_config);
    let frame = FrameData::encode(
        kind,
        timestamp,
        payload,
        ctx.config().rtmp.out_chunk_size_bytes,
    );
    ctx.publish_pulled_frame(&state.key, state.generation, frame);
}

#[cfg(test)]
mod tests {
    use super::Rebase;

    #[test]
    fn first_upstream_passes_timestamps_through() {
        let mut r = Rebase::default();
        r.new_upstream();
        assert_eq!(r.map(0, true), 0);
        assert_eq!(r.map(1000, false), 1000);
        assert_eq!(r.map(1040, false), 1040);
    }

    #[test]
    fn a_new_upstream_continues_after_the_last_timestamp() {
        let mut r = Rebase::default();
        r.new_upstream();
        r.map(5000, false);
        r.new_upstream();
        // The new origin's snapshot: headers at 0, then its GOP from a keyframe at 200.
        assert_eq!(r.map(0, true), 5000);
        assert_eq!(r.map(200, false), 5001);
        assert_eq!(r.map(240, false), 5041);
    }
}
