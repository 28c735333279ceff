//! Node configuration: the TOML file, its defaults and its validation.
//!
//! Every field is documented here and in `config/corecast.toml` (which a test checks parses to
//! exactly these defaults). Unknown fields are rejected so a typo fails at start, naming the
//! field, the line and why, instead of silently running with a default. Values that have a
//! form of their own (listen addresses, the log filter) are checked as they are read, so
//! their errors carry the line too.

mod auth;
mod edge;
mod env;
mod hls;
mod ingest;
mod limits;
mod listen;
mod player_page;
mod proxy;
mod registry;
mod reload;
mod restream;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

pub use auth::{
    AppAuth, AuthConfig, AuthMode, Direction, KeyConfig, KeyStateConfig, OnError, Secret,
};
pub use hls::HlsConfig;
pub use ingest::{check_pull, IngestConfig, PullConfig};
pub use limits::LimitsConfig;
pub use listen::{Listen, ListenError, OptionalListen};
pub use player_page::PlayerPageConfig;
pub use proxy::{ProxyListener, ProxyProtocolConfig, TrustedNet};
pub use registry::{LivestreamsConfig, RegistryConfig, RegistryTarget, WebhooksConfig};
pub use restream::{RestreamConfig, TargetRule};

/// The smallest `node.memory_budget_bytes` accepted: less would refuse ordinary use.
pub const MIN_MEMORY_BUDGET_BYTES: usize = 16 << 20;

/// Everything the node reads from its config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Executors and memory.
    pub node: NodeConfig,
    /// The RTMP listener and per-connection protocol limits.
    pub rtmp: RtmpConfig,
    /// The RTMPS (RTMP over TLS) listener and its certificate.
    pub rtmps: RtmpsConfig,
    /// Per-stream behaviour (GOP cache).
    pub stream: StreamConfig,
    /// How players are fed: batching and slow-consumer policy.
    pub player: PlayerConfig,
    /// The HTTP endpoint: metrics, health, JSON API.
    pub http: HttpConfig,
    /// Origin/edge clustering.
    pub cluster: ClusterConfig,
    /// RTMPT: RTMP tunnelled over HTTP.
    pub rtmpt: RtmptConfig,
    /// Logging.
    pub log: LogConfig,
    /// The livestream registry's database.
    pub registry: RegistryConfig,
    /// The livestream API's app and public URLs.
    pub livestreams: LivestreamsConfig,
    /// Livestream status webhooks.
    pub webhooks: WebhooksConfig,
    /// Streams pulled in from external RTMP/RTMPS sources.
    pub ingest: IngestConfig,
    /// PROXY protocol headers from load balancers.
    pub proxy_protocol: ProxyProtocolConfig,
    /// What one client address may cost a core.
    pub limits: LimitsConfig,
    /// Who may publish and play, per application; the token keyring.
    pub auth: AuthConfig,
    /// LL-HLS on `http.listen`.
    pub hls: HlsConfig,
    /// `[player_page]`: the browser player page.
    pub player_page: PlayerPageConfig,
    /// Push targets (`[[restream.targets]]`).
    pub restream: RestreamConfig,
}

/// `[node]`: executors and memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Executors (one per core) to run; 0 means one per available CPU.
    pub cores: usize,
    /// Pin executor N to CPU N (only when `cores` ≤ the CPUs available).
    pub pin_cores: bool,
    /// io_uring registered memory per executor. Corecast's sockets do not use registered
    /// buffers, so this stays small; it must fit the memlock limit (`ulimit -l`).
    pub io_memory_bytes: usize,
    /// Entries of each executor's io_uring rings (glommio's default is 128). The kernel sizes
    /// the table it searches on every cancel by this (8 buckets at 128, 256 from 4096): every
    /// idle keep-alive connection holds a poll in it, so with thousands of HTTP viewers a
    /// small ring makes each cancel walk long chains (`io_poll_find`).
    pub io_ring_depth: usize,
    /// Capacity of each core-to-core channel, in messages.
    pub core_channel_capacity: usize,
    /// On SIGTERM/SIGINT: stop accepting, report not ready, and wait this long for
    /// connections to finish before exiting (a second signal exits at once).
    pub shutdown_grace_secs: u64,
    /// Where a draining node sends the clients that accept a reconnect request (Enhanced
    /// RTMP `capsEx` reconnect): a base URL such as `rtmp://lb.example.com` (usually the load
    /// balancer), to which the client's app is appended. Empty: the request carries no
    /// `tcUrl`, and the client reconnects to the URL it used.
    pub reconnect_url: String,
    /// What the node's connections may hold in memory, divided evenly among the cores; a core
    /// whose connections hold its share refuses new ones (see `budget`). Default 1 GiB,
    /// sane for a machine with 2 GiB of RAM.
    pub memory_budget_bytes: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            cores: 0,
            pin_cores: true,
            io_memory_bytes: 256 * 1024,
            io_ring_depth: 4096,
            core_channel_capacity: 1024,
            shutdown_grace_secs: 10,
            reconnect_url: String::new(),
            memory_budget_bytes: 1 << 30,
        }
    }
}

/// `[rtmp]`: the listener and per-connection limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address(es) every core binds (SO_REUSEPORT) for plain RTMP; see [`Listen`] for the
    /// forms (`:1935` = every IPv4 and IPv6 address).
    pub listen: Listen,
    /// Connections one core accepts at most; further ones are closed at once.
    pub max_connections_per_core: usize,
    /// Chunk size the node sends with (node-wide: every player gets the same, which is what
    /// lets one encoded frame serve them all).
    pub out_chunk_size_bytes: u32,
    /// Largest Set Chunk Size a peer may announce.
    pub max_incoming_chunk_size_bytes: u32,
    /// Largest message a publisher may send (a keyframe of a high-bitrate 4K stream fits).
    pub max_message_size_bytes: u32,
    /// Most bytes a publisher's partially received messages may hold together (summed over
    /// its chunk streams): bounds a peer that opens many large messages and never ends them.
    pub max_partial_message_bytes: usize,
    /// Largest message a connection may send before it publishes (`connect`, `play`, every
    /// command): players and the handshake-to-publish phase never need big messages.
    pub pre_publish_max_message_size_bytes: u32,
    /// As `max_partial_message_bytes`, before the connection publishes.
    pub pre_publish_max_partial_message_bytes: usize,
    /// A deadline, not a per-read timeout: a connection that has not finished the handshake
    /// and a `connect` this long after it was accepted (after the TLS handshake, for RTMPS)
    /// is closed, however it trickles bytes.
    pub handshake_timeout_secs: u64,
    /// A publisher (or a not-yet-playing client) that sends nothing for this long is closed.
    pub idle_timeout_secs: u64,
    /// Window Acknowledgement Size announced to peers.
    pub window_ack_size_bytes: u32,
    /// A publish of a live name takes it over when its publisher has sent nothing for this
    /// long (a reconnecting encoder whose old connection hangs half-open): the old publisher
    /// is closed (`taken_over`), players stay and resume at the new publisher's first key
    /// frame. Only a publish `[auth]` allowed gets that far (with `open`, the same `app/name` is
    /// the only credential). 0 = off.
    pub publisher_takeover_secs: u64,
    /// Applications accepted in `connect`; empty accepts any.
    pub apps: Vec<String>,
    /// Accept RTMPE (C0 6: Diffie-Hellman and RC4, what rtmpdump's `rtmpe://` sends) on the
    /// plain RTMP listener and inside RTMPT tunnels (`rtmpte://`). Off by default: it is obfuscation, not security (RTMPS is), and
    /// every byte to an RTMPE player is copied and encrypted for that player alone.
    pub rtmpe: bool,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: Listen::one(SocketAddr::from(([0, 0, 0, 0], 1935))),
            max_connections_per_core: 10_000,
            out_chunk_size_bytes: 60_000,
            max_incoming_chunk_size_bytes: 16 * 1024 * 1024,
            max_message_size_bytes: 8 * 1024 * 1024,
            max_partial_message_bytes: 16 * 1024 * 1024,
            pre_publish_max_message_size_bytes: 64 * 1024,
            pre_publish_max_partial_message_bytes: 128 * 1024,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 60,
            window_ack_size_bytes: 2_500_000,
            publisher_takeover_secs: 5,
            apps: Vec::new(),
            rtmpe: false,
        }
    }
}

/// `[rtmps]`: RTMP over TLS. The same sessions as `[rtmp]` (and its limits), behind rustls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpsConfig {
    /// Serve RTMPS. Off by default: it needs a certificate.
    pub enabled: bool,
    /// Address(es) every core binds (SO_REUSEPORT) for RTMPS.
    pub listen: Listen,
    /// PEM file with the certificate chain, leaf first (Let's Encrypt: `fullchain.pem`).
    pub cert_chain_path: PathBuf,
    /// PEM file with the private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`privkey.pem`).
    pub private_key_path: PathBuf,
    /// A connection that has not finished the TLS handshake by then is closed. The RTMP
    /// handshake that follows has its own `rtmp.handshake_timeout_secs`.
    pub handshake_timeout_secs: u64,
    /// Seconds between checks of the two files' modification times; a change reloads the
    /// certificate for new connections. 0 = reload only on SIGHUP (which always works).
    pub reload_check_secs: u64,
}

impl Default for RtmpsConfig {
    fn default() -> Self {
        RtmpsConfig {
            enabled: false,
            listen: Listen::one(SocketAddr::from(([0, 0, 0, 0], 443))),
            cert_chain_path: PathBuf::new(),
            private_key_path: PathBuf::new(),
            handshake_timeout_secs: 10,
            reload_check_secs: 10,
        }
    }
}

/// `[stream]`: per-stream behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Keep the frames since the last keyframe so joining players start at once.
    pub gop_cache: bool,
    /// Bytes one stream replica keeps in its GOP cache at most; past it the cache is emptied
    /// until the next keyframe.
    pub gop_cache_max_bytes: usize,
    /// Streams published on this node at most (publishes, not pulls); a publish past it is
    /// refused with `NetStream.Publish.Denied`.
    pub max_streams_per_node: usize,
    /// Streams one client address publishes at most (the address the session has: the
    /// PROXY protocol's where one is trusted); a publish past it is refused.
    pub max_streams_per_address: usize,
    /// How often, in milliseconds, the publisher of a stream nobody watches (no player, no
    /// other core or edge replicating it, no LL-HLS request waiting for its next part) is read
    /// at most, whatever the merge window: a few wake-ups a second instead of one per frame
    /// (`session::pace`); a plain-HLS playlist nobody waits on may be that late. 0 reads such
    /// a publisher as a watched one; at most [`MAX_UNWATCHED_READ_MS`]. Its multiples of 250 share the wake-ups of a
    /// core's other slow chores.
    pub unwatched_read_ms: u64,
}

/// The longest `stream.unwatched_read_ms`: the kernel holds the publisher's input meanwhile.
pub const MAX_UNWATCHED_READ_MS: u64 = 10_000;

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            gop_cache: true,
            gop_cache_max_bytes: 16 * 1024 * 1024,
            max_streams_per_node: 1000,
            max_streams_per_address: 100,
            unwatched_read_ms: 250,
        }
    }
}

/// `[player]`: feeding players.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlayerConfig {
    /// The period of each core's flush tick (0 = no tick: read, fan out and write per frame).
    /// Once per tick a core reads its live publishers, writes its players and batches to its
    /// other cores. Larger windows cost latency and save CPU per byte; replies and join
    /// snapshots never wait.
    pub merge_window_ms: u64,
    /// Queued bytes past which a player drops video until the next keyframe (audio is kept).
    pub queue_max_bytes: usize,
    /// Queued bytes past which a player is disconnected as a slow consumer.
    pub queue_hard_max_bytes: usize,
    /// A player whose socket accepts nothing for this long is disconnected as a slow consumer.
    pub send_timeout_secs: u64,
    /// `SO_SNDBUF` of a player's socket, set when it starts playing (publishers keep the
    /// kernel's). Without it Linux autotunes a stalled player's buffer to megabytes, tens of
    /// seconds of a stream that the send timeout only starts counting after. 0 = the kernel's.
    pub socket_send_buffer_bytes: usize,
    /// A player of a stream that is not live (never started, or its publisher left) is
    /// closed with `NetStream.Play.StreamNotFound` after waiting this long; 0 = wait forever.
    pub wait_for_publisher_secs: u64,
    /// How a core writes its players at `merge_window_ms = 0`: `"writer"` (each player's
    /// task), `"pass"` (one pass as frames arrive, a `sendmsg` per player) or `"uring"` (the
    /// same pass, one io_uring submission for all players). Plain RTMP players only. Unset,
    /// it is `"uring"` (measured in BENCHMARKS.md, "zdwake"); set, it needs
    /// `merge_window_ms = 0`.
    pub zero_delay_send: Option<crate::sendpass::ZeroDelaySend>,
    /// At `merge_window_ms = 0`, how long a plain RTMP player's audio may wait for the next
    /// video frame to go out in the same send (0 = never held). Fewer sends, later audio.
    pub zero_delay_coalesce_ms: u64,
    /// At `merge_window_ms = 0`, a plain RTMP player's audio waits for the stream's next
    /// video frame only when that frame is due (by the stream's timestamps) within this many
    /// ms, and never longer: fewer sends, audio later by at most this (0 = never held).
    /// Unset, `sendpass::DEFAULT_COALESCE_DUE_MS` for the pass (none for `"writer"`).
    pub zero_delay_coalesce_due_ms: Option<u64>,
    /// With `zero_delay_send = "uring"`, the most sends submitted in one `io_uring_enter`
    /// (a pass over more players is cut into batches of this many).
    pub zero_delay_uring_batch_sends: usize,
    /// Who writes a plain RTMP player's window at `merge_window_ms` > 0: `"writer"` (its
    /// task, woken at the tick) or `"uring"` (the core's tick itself, one io_uring submission
    /// for all its players; see BENCHMARKS.md "Wave 5" and "Wave 6"). Unset, `"uring"` where
    /// `merge_window_ms` > 0; set to `"uring"`, it needs `merge_window_ms` > 0.
    pub window_send: Option<crate::sendpass::window::WindowSend>,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        PlayerConfig {
            merge_window_ms: 100,
            queue_max_bytes: 4 * 1024 * 1024,
            queue_hard_max_bytes: 16 * 1024 * 1024,
            send_timeout_secs: 15,
            socket_send_buffer_bytes: 256 * 1024,
            wait_for_publisher_secs: 30,
            zero_delay_send: None,
            zero_delay_coalesce_ms: 0,
            zero_delay_coalesce_due_ms: None,
            zero_delay_uring_batch_sends: crate::sendpass::ENTRIES as usize,
            window_send: None,
        }
    }
}

/// `[http]`: metrics, health checks and the JSON API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP at all.
    pub enabled: bool,
    /// Address(es) every core binds (SO_REUSEPORT) for `/metrics`, `/healthz`, `/readyz`,
    /// `/api/v1`.
    pub listen: Listen,
    /// Bearer token required by the API's write endpoints (kick, stop), and by its read
    /// endpoints unless `public_reads`; empty disables the writes and leaves reads open.
    pub api_token: String,
    /// Serve the API's read endpoints without the token even when one is set. They show
    /// client addresses, so this is off by default. `/metrics`, `/healthz` and `/readyz` are
    /// always open.
    pub public_reads: bool,
    /// A connection that sends no request for this long is closed (keep-alive).
    pub idle_timeout_secs: u64,
    /// A request's head and body must arrive, and its answer be handed over, within this many
    /// seconds of its first byte; the connection is cut otherwise (slow clients hold nothing).
    pub request_timeout_secs: u64,
    /// HTTP connections one core holds at most; the one that fills the last slot closes the
    /// connection idle longest, and past it new ones are closed at accept. 0 (the default)
    /// derives it from the open-file limit: a quarter of `RLIMIT_NOFILE` split among the
    /// cores, at most 1024 (see `http::connection_cap`), so idle HTTP connections never take
    /// the descriptors publishers and players need.
    pub max_connections_per_core: usize,
    /// Serve `http.listen` over TLS (HTTPS) with the `[rtmps]` certificate and key (and their
    /// reloads); needs `rtmps.enabled = true`.
    pub tls: bool,
    /// On a busy core (≥ 200 plain-HTTP requests a second), keep-alive reads that find nothing
    /// wait for one tick of this many milliseconds that serves them all, instead of each
    /// waking the core (see `httpd::hub`); a request then waits at most this much more.
    /// 0 turns it off; at most `MAX_READ_BATCH_MS`.
    pub read_batch_ms: u64,
    /// Answer plain HLS requests on plain `http.listen` connections without hyper (see
    /// `httpd::fastlane`); off: hyper serves every request, as before session 8.
    pub fast_lane: bool,
}

/// The longest `http.read_batch_ms` accepted.
pub const MAX_READ_BATCH_MS: u64 = 100;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: Listen::one(SocketAddr::from(([0, 0, 0, 0], 8081))),
            api_token: String::new(),
            public_reads: false,
            idle_timeout_secs: 30,
            request_timeout_secs: 10,
            max_connections_per_core: 0,
            tls: false,
            read_batch_ms: 10,
            fast_lane: true,
        }
    }
}

/// `[rtmpt]`: RTMP tunnelled over HTTP, for clients behind firewalls that pass only HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmptConfig {
    /// Start the HTTP listener. Off by default: a node exposes only RTMP unless asked
    /// (`--rtmpt-listen` turns it on too).
    pub enabled: bool,
    /// Address(es) every core binds (SO_REUSEPORT) for RTMPT. Port 80 is what
    /// `rtmpt://HOST/...` means without a port; binding it needs root or CAP_NET_BIND_SERVICE.
    pub listen: Listen,
    /// A tunnel that receives no request for this long is closed and its session ended; an
    /// HTTP connection that sends no request for this long is closed too.
    pub idle_timeout_secs: u64,
    /// Largest request body (one `/send` of RTMP bytes); larger requests get 413.
    pub max_body_bytes: usize,
    /// Tunnels (RTMP sessions) one core holds at most; `/open` past it gets 503.
    pub max_tunnels_per_core: usize,
    /// HTTP connections one core accepts at most; further ones are closed at once.
    pub max_connections_per_core: usize,
    /// Request-body bytes all requests being read on one core hold together; a request whose
    /// body would pass it gets 503 (bodies are never reserved from `Content-Length`).
    pub max_body_bytes_per_core: usize,
    /// Tunnels one client address holds at most (an IPv6 address counts by its /64), split
    /// evenly among the cores; `/open` past it gets 503.
    pub max_tunnels_per_address: usize,
    /// `/open` requests one client address may make per second (a token bucket, split
    /// evenly among the cores); faster ones get 503.
    pub open_rate_per_address: u32,
    /// How many `/open` requests one address may make at once before the rate applies.
    pub open_burst_per_address: u32,
    /// RTMPTS: serve `rtmpt.listen` over TLS with the `[rtmps]` certificate and key (and their
    /// reloads); needs `rtmps.enabled = true`. Clients use `rtmpts://HOST[:PORT]/...` (443 by
    /// default).
    pub tls: bool,
}

impl Default for RtmptConfig {
    fn default() -> Self {
        RtmptConfig {
            enabled: false,
            listen: Listen::one(SocketAddr::from(([0, 0, 0, 0], 80))),
            idle_timeout_secs: 30,
            max_body_bytes: 8 * 1024 * 1024,
            max_tunnels_per_core: 10_000,
            max_connections_per_core: 10_000,
            max_body_bytes_per_core: 16 * 1024 * 1024,
            max_tunnels_per_address: 64,
            open_rate_per_address: 8,
            open_burst_per_address: 32,
            tls: false,
        }
    }
}

/// `[cluster]`: origin/edge roles and the pull protocol.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `origin` (accepts publishers), `edge` (pulls streams on demand, refuses publishers) or
    /// `both` (accepts publishers and pulls streams that are not published here).
    pub role: ClusterRole,
    /// Address(es) every core binds for the pull protocol (other nodes pull from here); empty
    /// (the default) = do not serve pulls.
    pub pull_listen: OptionalListen,
    /// Upstream nodes (`host:port` of their `pull_listen`) an edge pulls from.
    pub upstreams: Vec<String>,
    /// A DNS name (`name:port`) whose addresses are upstreams too, re-resolved every
    /// `dns_refresh_secs` (e.g. a Kubernetes headless service); empty = none.
    pub upstream_dns: String,
    /// How often `upstream_dns` is resolved again.
    pub dns_refresh_secs: u64,
    /// Shared secret between nodes: sent by edges, required by servers when non-empty.
    pub token: String,
    /// An edge keeps an upstream connection this long after its last player left.
    pub linger_secs: u64,
    /// Give up connecting to one upstream after this long and try the next.
    pub connect_timeout_secs: u64,
    /// Longest wait between rounds of tries when no upstream has the stream.
    pub retry_max_secs: u64,
    /// Serve pulls over TLS with the `[rtmps]` certificate (and its reloads); needs
    /// `rtmps.enabled = true` and `pull_listen`.
    pub pull_tls: bool,
    /// Connect to upstreams over TLS (their `pull_tls` must be on).
    pub upstream_tls: bool,
    /// PEM bundle of the CAs that upstream certificates must chain to; empty = the system
    /// trust store (`rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR`, else the platform's).
    /// The name checked is the upstream's host
    /// (an IP address is checked as an IP address).
    pub upstream_tls_ca_file: String,
    /// Accept any upstream certificate without verifying it: for tests and self-signed
    /// setups only (the link is encrypted but not authenticated).
    pub upstream_tls_insecure: bool,
    /// Pulls one core serves at most (connections on `pull_listen`); further ones are closed
    /// at once. Counted apart from `rtmp.max_connections_per_core`.
    pub max_pull_connections_per_core: usize,
    /// Upstream pulls this edge runs at once, node-wide; a player whose stream would need one
    /// more gets `NetStream.Play.StreamNotFound`.
    pub max_concurrent_pulls: usize,
    /// Seconds an edge remembers that no upstream has a stream (every upstream answered "not
    /// here" and nobody waited for it): plays of that name meanwhile are refused without
    /// asking the upstreams again. 0 = do not remember.
    pub negative_cache_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            role: ClusterRole::Origin,
            pull_listen: OptionalListen::default(),
            upstreams: Vec::new(),
            upstream_dns: String::new(),
            dns_refresh_secs: 30,
            token: String::new(),
            linger_secs: 10,
            connect_timeout_secs: 3,
            retry_max_secs: 5,
            pull_tls: false,
            upstream_tls: false,
            upstream_tls_ca_file: String::new(),
            upstream_tls_insecure: false,
            max_pull_connections_per_core: 1000,
            max_concurrent_pulls: 1000,
            negative_cache_secs: 5,
        }
    }
}

impl ClusterConfig {
    /// True when this node pulls streams it does not have.
    pub fn pulls(&self) -> bool {
        matches!(self.role, ClusterRole::Edge | ClusterRole::Both)
    }

    /// True when this node accepts publishers.
    pub fn accepts_publishers(&self) -> bool {
        matches!(self.role, ClusterRole::Origin | ClusterRole::Both)
    }
}

/// A node's role in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// Accepts publishers; serves pulls when `pull_listen` is set.
    Origin,
    /// Pulls streams from upstreams on demand; refuses publishers.
    Edge,
    /// Both.
    Both,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (readable) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,corecast=debug`; `RUST_LOG` overrides it,
    /// and `--log-level` overrides both.
    pub level: LogFilter,
    /// Most `info`/`warn`/`error` lines one kind of log line (one place in the code) writes
    /// per second; the rest are counted and reported as "suppressed K similar lines". 0 = no
    /// limit. `debug` and `trace` lines are not limited.
    pub max_lines_per_second: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: LogFilter::default(),
            max_lines_per_second: 50,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A checked `tracing` filter: comma-separated directives, each a level (`off`, `error`,
/// `warn`, `info`, `debug`, `trace`) or `TARGET=LEVEL`.
///
/// `tracing_subscriber` reads a bare word as a target with every level, so `verbose` would be
/// a valid filter that prints nothing of the node's; a directive without `=` must therefore be
/// a level here. Invalid filters are refused rather than ignored: an ignored filter turns
/// logging off without a word.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LogFilter(String);

impl LogFilter {
    /// The filter for the subscriber.
    pub fn to_env_filter(&self) -> EnvFilter {
        // Checked in `from_str`, so the parse cannot fail; fall back to the default anyway.
        EnvFilter::builder()
            .parse(&self.0)
            .unwrap_or_else(|_| EnvFilter::new("info"))
    }

    fn check_directive(directive: &str) -> Result<(), String> {
        let level = match directive.rsplit_once('=') {
            // `target[span{field=value}]` has no level of its own: every level.
            Some((_, level)) if level.contains([']', '}']) => return Ok(()),
            Some((_, level)) => level,
            None if directive.contains('[') => return Ok(()),
            None => directive,
        };
        level
            .trim()
            .parse::<LevelFilter>()
            .map(drop)
            .map_err(|_| format!("{level:?} is not a level"))
    }
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter("info".to_owned())
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LogFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFilter, String> {
        let explain = |why: String| {
            format!(
                "{text:?} is not a log filter ({why}): write a level (off, error, warn, info, \
                 debug, trace) or TARGET=LEVEL, comma-separated, e.g. \"info,corecast_node=debug\""
            )
        };
        let directives: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        if directives.is_empty() {
            return Err(explain("it is empty".into()));
        }
        for directive in directives {
            Self::check_directive(directive).map_err(explain)?;
        }
        EnvFilter::builder()
            .parse(text)
            .map_err(|e| explain(e.to_string()))?;
        Ok(LogFilter(text.to_owned()))
    }
}

impl TryFrom<String> for LogFilter {
    type Error = String;

    fn try_from(text: String) -> Result<LogFilter, String> {
        text.parse()
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema; the message names line and field.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path given.
        path: String,
        /// toml's message, which carries the line, the column and the field.
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("config: `{field}` {reason}")]
    Invalid {
        /// Dotted field name, e.g. `rtmp.out_chunk_size_bytes`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml shows the line; the table it is in may be screens above.
            let table = e.span().and_then(|span| table_at(text, span.start));
            ConfigError::Parse {
                path: origin.to_owned(),
                message: match table {
                    Some(table) => format!("in {table}: {e}"),
                    None => e.to_string(),
                },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The `tcUrl` a draining node's reconnect request carries for a client of `app`: the
    /// configured base with the app appended, or None to reconnect to the same URL.
    pub fn reconnect_tc_url(&self, app: &str) -> Option<String> {
        let base = self.node.reconnect_url.trim_end_matches('/');
        (!base.is_empty()).then(|| format!("{base}/{app}"))
    }

    /// Checks the values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                field,
                reason: reason.into(),
            }
        }
        if let Err(reason) = check_reconnect_url(&self.node.reconnect_url) {
            return Err(invalid("node.reconnect_url", reason));
        }
        if self.node.memory_budget_bytes < MIN_MEMORY_BUDGET_BYTES {
            return Err(invalid(
                "node.memory_budget_bytes",
                format!("must be at least {MIN_MEMORY_BUDGET_BYTES} (16 MiB)"),
            ));
        }
        if self.stream.unwatched_read_ms > MAX_UNWATCHED_READ_MS {
            return Err(invalid(
                "stream.unwatched_read_ms",
                format!("must be at most {MAX_UNWATCHED_READ_MS} (0 = read as watched)"),
            ));
        }
        let r = &self.rtmp;
        if !(128..=0x7FFF_FFFF).contains(&r.out_chunk_size_bytes) {
            return Err(invalid(
                "rtmp.out_chunk_size_bytes",
                "must be between 128 and 2147483647",
            ));
        }
        if r.max_incoming_chunk_size_bytes < 128 {
            return Err(invalid(
                "rtmp.max_incoming_chunk_size_bytes",
                "must be at least 128 (the RTMP default chunk size)",
            ));
        }
        if r.max_message_size_bytes < 64 * 1024 {
            return Err(invalid(
                "rtmp.max_message_size_bytes",
                "must be at least 65536",
            ));
        }
        if r.max_partial_message_bytes < r.max_message_size_bytes as usize {
            return Err(invalid(
                "rtmp.max_partial_message_bytes",
                "must be at least rtmp.max_message_size_bytes",
            ));
        }
        if !(4096..=r.max_message_size_bytes).contains(&r.pre_publish_max_message_size_bytes) {
            return Err(invalid(
                "rtmp.pre_publish_max_message_size_bytes",
                "must be between 4096 and rtmp.max_message_size_bytes",
            ));
        }
        if r.pre_publish_max_partial_message_bytes < r.pre_publish_max_message_size_bytes as usize {
            return Err(invalid(
                "rtmp.pre_publish_max_partial_message_bytes",
                "must be at least rtmp.pre_publish_max_message_size_bytes",
            ));
        }
        if r.max_connections_per_core == 0 {
            return Err(invalid(
                "rtmp.max_connections_per_core",
                "must be at least 1",
            ));
        }
        if r.handshake_timeout_secs == 0 || r.idle_timeout_secs == 0 {
            return Err(invalid(
                "rtmp.handshake_timeout_secs / rtmp.idle_timeout_secs",
                "must be at least 1 second",
            ));
        }
        let t = &self.rtmps;
        if t.enabled {
            if t.cert_chain_path.as_os_str().is_empty() {
                return Err(invalid(
                    "rtmps.cert_chain_path",
                    "must name a PEM file when rtmps.enabled = true",
                ));
            }
            if t.private_key_path.as_os_str().is_empty() {
                return Err(invalid(
                    "rtmps.private_key_path",
                    "must name a PEM file when rtmps.enabled = true",
                ));
            }
        }
        if t.handshake_timeout_secs == 0 {
            return Err(invalid(
                "rtmps.handshake_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if self.node.cores > 64 {
            return Err(invalid("node.cores", "at most 64 cores are supported"));
        }
        if self.http.read_batch_ms > MAX_READ_BATCH_MS {
            return Err(invalid(
                "http.read_batch_ms",
                "must be at most 100 (milliseconds a request may wait on a busy core)",
            ));
        }
        if self.http.idle_timeout_secs == 0 || self.http.request_timeout_secs == 0 {
            return Err(invalid(
                "http.idle_timeout_secs / http.request_timeout_secs",
                "must be at least 1 second",
            ));
        }
        let c = &self.cluster;
        if c.pulls() && c.upstreams.is_empty() && c.upstream_dns.is_empty() {
            return Err(invalid(
                "cluster.upstreams",
                "an edge needs upstreams or upstream_dns",
            ));
        }
        if c.connect_timeout_secs == 0 || c.retry_max_secs == 0 || c.dns_refresh_secs == 0 {
            return Err(invalid(
                "cluster.connect_timeout_secs / retry_max_secs / dns_refresh_secs",
                "must be at least 1 second",
            ));
        }
        if c.pull_tls && !self.rtmps.enabled {
            return Err(invalid(
                "cluster.pull_tls",
                "needs rtmps.enabled = true (pulls are served with the [rtmps] certificate)",
            ));
        }
        if c.pull_tls && c.pull_listen.0.is_none() {
            return Err(invalid(
                "cluster.pull_tls",
                "needs cluster.pull_listen (there are no pulls to serve)",
            ));
        }
        if c.upstream_tls_insecure && !c.upstream_tls_ca_file.is_empty() {
            return Err(invalid(
                "cluster.upstream_tls_ca_file",
                "cannot be combined with upstream_tls_insecure = true",
            ));
        }
        for u in &c.upstreams {
            if !u.contains(':') {
                return Err(invalid(
                    "cluster.upstreams",
                    format!("{u:?} is not host:port"),
                ));
            }
        }
        if !(1..=32768).contains(&self.node.io_ring_depth) {
            return Err(invalid("node.io_ring_depth", "must be 1..=32768"));
        }
        if self.node.core_channel_capacity < 16 {
            return Err(invalid("node.core_channel_capacity", "must be at least 16"));
        }
        let p = &self.player;
        if p.queue_hard_max_bytes < p.queue_max_bytes {
            return Err(invalid(
                "player.queue_hard_max_bytes",
                "must be at least player.queue_max_bytes",
            ));
        }
        if p.send_timeout_secs == 0 {
            return Err(invalid(
                "player.send_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if p.merge_window_ms > 1000 {
            return Err(invalid("player.merge_window_ms", "must be at most 1000"));
        }
        if p.zero_delay_send
            .is_some_and(|m| m != crate::sendpass::ZeroDelaySend::Writer)
            && p.merge_window_ms != 0
        {
            return Err(invalid(
                "player.zero_delay_send",
                "needs player.merge_window_ms = 0 (a window batches writes already)",
            ));
        }
        if p.window_send == Some(crate::sendpass::window::WindowSend::Uring)
            && p.merge_window_ms == 0
        {
            return Err(invalid(
                "player.window_send",
                "needs player.merge_window_ms > 0 (at 0, player.zero_delay_send picks the pass)",
            ));
        }
        if p.zero_delay_coalesce_ms != 0 && p.merge_window_ms != 0 {
            return Err(invalid(
                "player.zero_delay_coalesce_ms",
                "needs player.merge_window_ms = 0 (a window batches audio and video already)",
            ));
        }
        if p.zero_delay_coalesce_ms > 100 {
            return Err(invalid(
                "player.zero_delay_coalesce_ms",
                "must be at most 100 (audio held longer is a merge window)",
            ));
        }
        if p.zero_delay_coalesce_due_ms.is_some_and(|ms| ms != 0) && p.merge_window_ms != 0 {
            return Err(invalid(
                "player.zero_delay_coalesce_due_ms",
                "needs player.merge_window_ms = 0 (a window batches audio and video already)",
            ));
        }
        if p.zero_delay_coalesce_due_ms.is_some_and(|ms| ms > 100) {
            return Err(invalid(
                "player.zero_delay_coalesce_due_ms",
                "must be at most 100 (audio held longer is a merge window)",
            ));
        }
        if !(1..=crate::sendpass::ENTRIES as usize).contains(&p.zero_delay_uring_batch_sends) {
            return Err(invalid(
                "player.zero_delay_uring_batch_sends",
                "must be between 1 and 256",
            ));
        }
        let t = &self.rtmpt;
        if t.idle_timeout_secs == 0 {
            return Err(invalid(
                "rtmpt.idle_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if t.max_body_bytes < 4096 {
            return Err(invalid("rtmpt.max_body_bytes", "must be at least 4096"));
        }
        if t.max_tunnels_per_core == 0 || t.max_connections_per_core == 0 {
            return Err(invalid(
                "rtmpt.max_tunnels_per_core / rtmpt.max_connections_per_core",
                "must be at least 1",
            ));
        }
        self.check_livestreams()?;
        if t.max_body_bytes_per_core < t.max_body_bytes {
            return Err(invalid(
                "rtmpt.max_body_bytes_per_core",
                "must be at least rtmpt.max_body_bytes",
            ));
        }
        if t.max_tunnels_per_address == 0
            || t.open_rate_per_address == 0
            || t.open_burst_per_address == 0
        {
            return Err(invalid(
                "rtmpt.max_tunnels_per_address / open_rate_per_address / open_burst_per_address",
                "must be at least 1",
            ));
        }
        if self.rtmpt.enabled && self.rtmpt.tls && !self.rtmps.enabled {
            return Err(invalid(
                "rtmpt.tls",
                "needs the [rtmps] certificate: set rtmps.enabled = true",
            ));
        }
        if self.http.enabled && self.http.tls && !self.rtmps.enabled {
            return Err(invalid(
                "http.tls",
                "needs the [rtmps] certificate: set rtmps.enabled = true",
            ));
        }
        self.proxy_protocol.validate()?;
        self.limits.validate()?;
        self.ingest.validate(self.cluster.accepts_publishers())?;
        self.hls.validate()?;
        self.restream.validate()?;
        edge::validate(self)?;
        self.auth.validate()?;
        self.check_keys_have_a_registry()?;
        self.check_shared_ports()
    }

    /// Publishing in `keys` mode needs the livestream registry.
    fn check_keys_have_a_registry(&self) -> Result<(), ConfigError> {
        // Without a registry every `keys` publisher would be refused at run time, which
        // looks like an outage; say so at start instead.
        let keys_publish = self.auth.modes().iter().any(|(_, direction, mode)| {
            *direction == Direction::Publish && *mode == AuthMode::Keys
        });
        if keys_publish && self.registry.target() == Ok(registry::RegistryTarget::Off) {
            return Err(ConfigError::Invalid {
                field: "auth.publish",
                reason: "mode \"keys\" needs a livestream registry (set registry.url)".into(),
            });
        }
        Ok(())
    }

    /// The registry's, the livestream API's and the webhooks' sections.
    fn check_livestreams(&self) -> Result<(), ConfigError> {
        self.registry
            .check()
            .and_then(|()| self.livestreams.check())
            .and_then(|()| self.webhooks.check(&self.registry))
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })
    }

    /// Every enabled listener, named as in the config, `rtmp.listen` first.
    pub fn listeners(&self) -> Vec<(&'static str, &Listen)> {
        let mut listeners = vec![("rtmp.listen", &self.rtmp.listen)];
        if self.http.enabled {
            listeners.push(("http.listen", &self.http.listen));
        }
        if self.rtmps.enabled {
            listeners.push(("rtmps.listen", &self.rtmps.listen));
        }
        if self.rtmpt.enabled {
            listeners.push(("rtmpt.listen", &self.rtmpt.listen));
        }
        if let Some(pull) = &self.cluster.pull_listen.0 {
            listeners.push(("cluster.pull_listen", pull));
        }
        listeners
    }

    /// Refuses two listeners on one port: every core binds with SO_REUSEPORT, so they would
    /// silently share it and split its connections. Addresses of one family overlap when
    /// they are equal or one is the wildcard; IPv4 and IPv6 never do (IPv6 listeners are
    /// bound `IPV6_V6ONLY`). Port 0 (any free port) never clashes.
    fn check_shared_ports(&self) -> Result<(), ConfigError> {
        let addrs: Vec<(&'static str, SocketAddr)> = self
            .listeners()
            .into_iter()
            .flat_map(|(name, listen)| listen.addrs().iter().map(move |&addr| (name, addr)))
            .filter(|(_, addr)| addr.port() != 0)
            .collect();
        for (i, &(name, addr)) in addrs.iter().enumerate() {
            for &(other, other_addr) in &addrs[i + 1..] {
                let overlap = addr.is_ipv4() == other_addr.is_ipv4()
                    && (addr.ip() == other_addr.ip()
                        || addr.ip().is_unspecified()
                        || other_addr.ip().is_unspecified());
                if name != other && addr.port() == other_addr.port() && overlap {
                    return Err(ConfigError::Invalid {
                        field: other,
                        reason: format!(
                            "({other_addr}) and `{name}` ({addr}) share a port: give each its own"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The number of executors to start: `node.cores`, or one per available CPU.
    pub fn effective_cores(&self) -> usize {
        if self.node.cores > 0 {
            self.node.cores
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(64)
        }
    }
}

/// The `[table]` header that `offset` of `text` falls under, if any.
fn table_at(text: &str, offset: usize) -> Option<&str> {
    text.get(..offset)?
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .rfind(|line| line.starts_with('[') && line.ends_with(']'))
}

/// `node.reconnect_url`: empty, or `rtmp://`, `rtmps://` or `rtmpt://` with a host and no
/// path (the client's app is appended to it).
fn check_reconnect_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    let rest = ["rtmp://", "rtmps://", "rtmpt://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or("must start with rtmp://, rtmps:// or rtmpt://")?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
        return Err("must be a scheme and a host[:port] only (the app is appended)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_matches_defaults() {
        let text = include_str!("../../config/corecast.toml");
        let parsed = Config::parse(text, "corecast.toml").expect("shipped config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn shipped_cluster_configs_are_valid() {
        let origin = Config::parse(include_str!("../../config/origin.toml"), "origin.toml")
            .expect("origin.toml parses");
        assert_eq!(origin.cluster.role, ClusterRole::Origin);
        assert!(!origin.cluster.pull_listen.is_empty());
        let edge = Config::parse(include_str!("../../config/edge.toml"), "edge.toml")
            .expect("edge.toml parses");
        assert!(edge.cluster.pulls());
        assert!(!edge.cluster.accepts_publishers());
    }

    #[test]
    fn the_livestreams_example_is_valid() {
        let text = include_str!("../../config/livestreams.toml");
        let config = Config::parse(text, "livestreams.toml").expect("valid");
        assert!(matches!(
            config.registry.target(),
            Ok(RegistryTarget::Sqlite(_))
        ));
        assert_eq!(config.livestreams.app, "live");
        assert!(config.livestreams.console);
    }

    #[test]
    fn keys_mode_without_a_registry_is_refused() {
        let text = "[auth]\npublish = \"keys\"\n";
        let err = Config::parse(text, "t.toml").expect_err("no registry");
        assert!(err.to_string().contains("registry.url"), "{err}");
        let with = format!("{text}[registry]\nurl = \"sqlite:///tmp/r.db\"\n");
        Config::parse(&with, "t.toml").expect("a registry is named");
    }

    #[test]
    fn https_without_the_rtmps_certificate_and_bad_rtmpt_limits_are_refused() {
        let err = Config::parse("[http]\ntls = true\n", "t").expect_err("must fail");
        assert!(err.to_string().contains("http.tls"), "{err}");
        let text = "[rtmpt]\nmax_body_bytes = 65536\nmax_body_bytes_per_core = 4096\n";
        let err = Config::parse(text, "t").expect_err("must fail");
        assert!(err.to_string().contains("max_body_bytes_per_core"), "{err}");
        let err =
            Config::parse("[rtmpt]\nopen_rate_per_address = 0\n", "t").expect_err("must fail");
        assert!(err.to_string().contains("open_rate_per_address"), "{err}");
    }

    #[test]
    fn a_read_batch_over_100_ms_is_refused_and_0_turns_it_off() {
        let err = Config::parse("[http]\nread_batch_ms = 101\n", "t").expect_err("must fail");
        assert!(err.to_string().contains("http.read_batch_ms"), "{err}");
        let off = Config::parse("[http]\nread_batch_ms = 0\n", "t").expect("0 is off");
        assert_eq!(off.http.read_batch_ms, 0);
        assert!(off.http.fast_lane, "the fast lane is on by default");
        let off = Config::parse("[http]\nfast_lane = false\n", "t").expect("a bool");
        assert!(!off.http.fast_lane);
    }

    #[test]
    fn an_unwatched_read_pace_over_10_s_is_refused_and_0_reads_as_watched() {
        let err = Config::parse("[stream]\nunwatched_read_ms = 10001\n", "t").expect_err("fail");
        assert!(
            err.to_string().contains("stream.unwatched_read_ms"),
            "{err}"
        );
        let off = Config::parse("[stream]\nunwatched_read_ms = 0\n", "t").expect("0 is off");
        assert_eq!(off.stream.unwatched_read_ms, 0);
    }

    #[test]
    fn an_edge_without_upstreams_is_refused() {
        let err = Config::parse("[cluster]\nrole = \"edge\"\n", "t").expect_err("must fail");
        assert!(err.to_string().contains("cluster.upstreams"), "{err}");
    }

    #[test]
    fn unknown_field_is_refused_with_line_and_name() {
        let err = Config::parse("[rtmp]\nlisten = \"127.0.0.1:1935\"\nchunk_sise = 4\n", "t")
            .expect_err("typo must fail");
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("chunk_sise"), "{msg}");
    }

    #[test]
    fn a_parse_error_names_its_table() {
        let text = "[rtmp]  # the listener\nlisten = \":1935\"\n\n[player]\nqueue_max_byte = 5\n";
        let err = Config::parse(text, "t")
            .expect_err("typo must fail")
            .to_string();
        assert!(err.contains("in [player]: "), "{err}");
        assert_eq!(table_at(text, 10), Some("[rtmp]"));
        assert_eq!(table_at("x = 1\n", 3), None);
    }

    #[test]
    fn wrong_type_is_refused() {
        let err = Config::parse("[node]\ncores = \"two\"\n", "t").expect_err("must fail");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn a_memory_budget_under_16_mib_is_refused() {
        let err =
            Config::parse("[node]\nmemory_budget_bytes = 1048576\n", "t").expect_err("must fail");
        assert!(
            err.to_string().contains("node.memory_budget_bytes"),
            "{err}"
        );
        Config::parse("[node]\nmemory_budget_bytes = 16777216\n", "t").expect("16 MiB is fine");
    }

    #[test]
    fn nonsense_value_is_refused() {
        let err = Config::parse("[rtmp]\nout_chunk_size_bytes = 1\n", "t").expect_err("must fail");
        assert!(
            err.to_string().contains("rtmp.out_chunk_size_bytes"),
            "{err}"
        );
    }

    #[test]
    fn rtmpt_on_the_rtmp_port_is_refused() {
        let err = Config::parse(
            "[rtmp]\nlisten = \"127.0.0.1:1935\"\n[rtmpt]\nenabled = true\nlisten = \"127.0.0.1:1935\"\n",
            "t",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("rtmpt.listen"), "{err}");
    }

    #[test]
    fn pull_tls_without_rtmps_is_refused() {
        let err = Config::parse(
            "[cluster]\npull_listen = \"127.0.0.1:1940\"\npull_tls = true\n",
            "t",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("cluster.pull_tls"), "{err}");
        assert!(err.to_string().contains("rtmps.enabled"), "{err}");
    }

    #[test]
    fn rtmps_enabled_without_files_is_refused() {
        let err = Config::parse("[rtmps]\nenabled = true\n", "t").expect_err("must fail");
        assert!(err.to_string().contains("rtmps.cert_chain_path"), "{err}");
        let err = Config::parse(
            "[rtmps]\nenabled = true\ncert_chain_path = \"c.pem\"\n",
            "t",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("rtmps.private_key_path"), "{err}");
    }

    #[test]
    fn rtmps_on_the_rtmp_port_is_refused() {
        let text = "[rtmp]\nlisten = \"0.0.0.0:1935\"\n[rtmps]\nenabled = true\n\
                    listen = \"0.0.0.0:1935\"\ncert_chain_path = \"c\"\nprivate_key_path = \"k\"\n";
        let err = Config::parse(text, "t").expect_err("must fail");
        assert!(err.to_string().contains("rtmps.listen"), "{err}");
    }

    #[test]
    fn listen_fields_take_the_forms_users_type() {
        let every = Listen::every(1935);
        for text in ["\":1935\"", "\"1935\"", "1935", "\"*:1935\""] {
            let config = Config::parse(&format!("[rtmp]\nlisten = {text}\n"), "t")
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(config.rtmp.listen, every, "{text}");
        }
        let config = Config::parse("[http]\nlisten = \"localhost:8081\"\n", "t").expect("parses");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8081, [::1]:8081");
        let config = Config::parse("[rtmp]\nlisten = \"[::]:1935\"\n", "t").expect("parses");
        assert_eq!(config.rtmp.listen.to_string(), "[::]:1935");
        let config = Config::parse("[cluster]\npull_listen = \":1940\"\n", "t").expect("parses");
        assert_eq!(config.cluster.pull_listen.0, Some(Listen::every(1940)));
    }

    #[test]
    fn a_bad_listen_address_names_the_field_and_the_line() {
        for (text, says) in [
            ("\"example.com:1935\"", "is not a listen address"),
            ("\":70000\"", "not a number from 0 to 65535"),
            ("70000", "not a number from 0 to 65535"),
            ("\"\"", "empty listen address"),
        ] {
            let err = Config::parse(
                &format!("[node]\ncores = 1\n[http]\nlisten = {text}\n"),
                "t",
            )
            .expect_err(text)
            .to_string();
            assert!(err.contains("in [http]: "), "{text}: {err}");
            assert!(err.contains("line 4"), "{text}: {err}");
            assert!(err.contains("listen = "), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = Config::parse("[cluster]\npull_listen = \"nowhere\"\n", "t").expect_err("bad");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("pull_listen"), "{err}");
    }

    #[test]
    fn listeners_sharing_a_port_are_refused_across_forms() {
        // `:1935` covers 127.0.0.1:1935 and [::1]:1935.
        let err = Config::parse(
            "[rtmp]\nlisten = \":1935\"\n[http]\nlisten = \"localhost:1935\"\n",
            "t",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("share a port"), "{err}");
        assert!(err.to_string().contains("http.listen"), "{err}");
        // IPv4 and IPv6 listeners on one port do not overlap (IPv6 is bound V6ONLY).
        Config::parse(
            "[rtmp]\nlisten = \"0.0.0.0:1935\"\n[http]\nlisten = \"[::]:1935\"\n",
            "t",
        )
        .expect("different families");
    }

    #[test]
    fn a_bad_log_level_is_refused_with_its_line() {
        for level in ["verbose!!", "verbose", "", "corecast=loud", "info,chatty"] {
            let err = Config::parse(&format!("[log]\nlevel = {level:?}\n"), "t")
                .expect_err(level)
                .to_string();
            assert!(err.contains("line 2"), "{level}: {err}");
            assert!(err.contains("is not a log filter"), "{level}: {err}");
        }
        for level in [
            "info",
            "WARN",
            "off",
            "info,corecast_node=debug",
            "corecast[publish]",
        ] {
            Config::parse(&format!("[log]\nlevel = {level:?}\n"), "t")
                .unwrap_or_else(|e| panic!("{level}: {e}"));
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(
            Config::parse("", "t").expect("empty parses"),
            Config::default()
        );
    }
}
