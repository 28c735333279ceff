//! corecast-loadtest: publishers and players at scale against any RTMP server, and a report
//! of what broadcasters and SREs care about — did everyone connect, how fast did video start,
//! did every player get the whole bitrate without holes, how late was it, and what did it
//! cost the server.
//!
//! The harness is built like the node: one glommio executor per core, each running
//! thousands of connections as local tasks with no shared state on the hot path, and the
//! protocol itself done by corecast-common's sans-IO state machines. A player costs a socket,
//! a 16 KiB read buffer and a chunk decoder; in `--lite` mode it does no per-frame analysis.
//!
//! Everything is bounded: a run has a duration and a connection cap, every setup step has a
//! timeout, the run ends at its deadline whatever the server does, and connections go only to
//! the one address the URL resolved to.
//!
//! # Layout
//! - [`url`]: `rtmp[s|t]://host:port/app/stream` (parsed by the `url` crate); other schemes
//!   are refused clearly.
//! - [`transport`]: the byte pipe under the client: TCP, TLS (`corecast-transport`'s rustls
//!   driver over the glommio stream) or the RTMPT HTTP tunnel, chosen by the URL's scheme.
//! - [`client`]: the async RTMP client: handshake, commands, pings, acknowledgements.
//! - [`source`]: the looped FLV file and the synthetic stream with its embedded clock.
//! - [`player`], [`publisher`]: one connection of each kind and what it measures.
//! - [`viewer`]: HTTP viewers (LL-HLS, plain HLS, HTTP-FLV) over [`http`], hyper's client
//!   on the glommio stream.
//! - [`stats`]: records, live counters, histograms, percentiles, frame-gap detection.
//! - [`scenario`]: the CLI/TOML scenario and its bounds.
//! - [`runner`]: executors, ramp, deadline, progress and collection.
//! - [`procstat`]: CPU and memory of the server's processes (and of the harness) from
//!   `/proc`, read with `procfs`.
//! - [`report`]: table, JSON and HTML; [`chart`]: its SVG charts.
//! - [`gate`]: whether a run passed: allowed failures and `--fail-on` thresholds.

pub mod chart;
pub mod client;
pub mod gate;
pub mod http;
pub mod player;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod source;
pub mod stats;
pub mod transport;
pub mod url;
pub mod viewer;
