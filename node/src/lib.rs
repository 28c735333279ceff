//! Corecast node: a glommio executor per core around `corecast-common`'s state machines.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`server`]: executors, listeners, the core mesh.
//! - [`ports`]: owning the listen addresses: the start-up check and the listeners' sockets.
//! - [`accept`]: the one accept path and the connection permit every listener uses.
//! - [`proxy`]: PROXY protocol headers from a load balancer (the client's address);
//!   [`limits`]: per-address limits (connections, new connections and TLS handshakes a second).
//! - [`budget`]: the per-core memory budget: what connections hold, and refusing new ones past it.
//! - [`core`]: one core's state: the shell that feeds events to its control plane
//!   (`corecast_common::plane`) and carries out the plane's effects (links, replicas, pulls).
//! - [`mesh`]: core-to-core messages and their ordered, non-blocking links.
//! - [`stream`]: a stream replica: upstream, caches, local players; [`media_cache`]: its
//!   per-track sequence headers, configuration packets and GOP (E-RTMP v2 multitrack).
//! - [`frame`]: encode-once media frames; [`media`]: what `onMetaData` says (codec names).
//! - [`queue`], [`outbound`], [`writer`]: a connection's send queue and its vectored writer.
//! - [`tick`]: the core's flush tick that paces batched writes.
//! - [`session`]: one RTMP connection (handshake, chunks, command handlers).
//! - [`transport`]: the byte pipes sessions run over.
//! - [`tls`]: RTMPS: rustls over the TCP pipe, per-core listeners, certificate reload.
//! - [`httpd`]: HTTP/1.1 on hyper for every HTTP port (limits, deadlines, routes).
//! - [`http`], [`api`], [`metrics`], [`stats`], [`clients`]: `/metrics`, health, the JSON API
//!   (routes; errors, paging and the token) and what they report; [`process_metrics`]: the `process_*` series (CPU, memory, fds).
//! - [`cluster`]: origin/edge pulls (client and server).
//! - [`shared`]: the little state all cores share (never per frame).
//! - [`rtmpt`]: RTMP tunnelled over HTTP (a tunnel is one more byte pipe).
//! - [`registry`]: the livestream registry (SQLite or PostgreSQL) on its own thread: stream
//!   keys, live sessions' leases, the webhook outbox; [`livestreams`]: its JSON API.
//! - [`auth`]: who may publish and play (open, stream keys, signed tokens, callback).
//! - [`restream`]: pushing live streams to RTMP/RTMPS targets (YouTube, Twitch, …).
//! - [`pull_in`]: streams taken from external RTMP/RTMPS sources and published locally.
//! - [`log_limit`]: log lines limited per kind (callsite), with a count of those dropped.

pub mod accept;
pub mod api;
pub mod auth;
pub mod budget;
pub mod chores;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod core;
pub mod flv_http;
pub mod frame;
pub mod framelog;
pub mod hls;
pub mod http;
pub mod httpd;
pub mod limits;
pub mod livestreams;
pub mod log_limit;
pub mod media;
pub mod media_cache;
pub mod mesh;
pub mod metrics;
pub mod outbound;
pub mod player;
pub mod ports;
pub mod process_metrics;
pub mod proxy;
pub mod pull_in;
pub mod queue;
pub mod registry;
pub mod reload;
pub mod restream;
pub mod rtmpe;
pub mod rtmpt;
pub mod sendpass;
pub mod server;
pub mod session;
pub mod shared;
pub mod stats;
pub mod stream;
pub mod stream_limits;
pub mod takeover;
pub mod tick;
pub mod tls;
pub mod transport;
pub mod util;
pub mod writer;
