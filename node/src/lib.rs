//! Corecast node: a glommio executor per core around `corecast-common`'s state machines.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation.
//! - [`server`]: executors, listeners, the core mesh.
//! - [`core`]: one core's state: the shell that feeds events to its control plane
//!   (`corecast_common::plane`) and carries out the plane's effects (links, replicas, pulls).
//! - [`mesh`]: core-to-core messages and their ordered, non-blocking links.
//! - [`stream`]: a stream replica: upstream, caches, local players.
//! - [`frame`]: encode-once media frames.
//! - [`queue`], [`outbound`], [`writer`]: a connection's send queue and its vectored writer.
//! - [`tick`]: the core's flush tick that paces batched writes.
//! - [`session`]: one RTMP connection (handshake, chunks, command handlers).
//! - [`transport`]: the byte pipes sessions run over.
//! - [`tls`]: RTMPS: rustls over the TCP pipe, per-core listeners, certificate reload.
//! - [`http`], [`metrics`], [`stats`], [`clients`]: `/metrics`, health, the JSON API and
//!   what they report.
//! - [`cluster`]: origin/edge pulls (client and server).
//! - [`shared`]: the little state all cores share (never per frame).
//! - [`rtmpt`]: RTMP tunnelled over HTTP (a tunnel is one more byte pipe).

pub mod clients;
pub mod cluster;
pub mod config;
pub mod core;
pub mod frame;
pub mod http;
pub mod mesh;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod rtmpt;
pub mod server;
pub mod session;
pub mod shared;
pub mod stats;
pub mod stream;
pub mod tick;
pub mod tls;
pub mod transport;
pub mod util;
pub mod writer;
