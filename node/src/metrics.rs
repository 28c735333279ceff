//! Prometheus metrics: every name the node exports is defined here (the Grafana dashboards
//! are tested against these), and each core gets its own labelled children.
//!
//! Hot-path cost: a core increments children created for its own `core` label only, so the
//! atomics it touches are never written by another core (no contended cache line). Per-player
//! work is counted per write or per connection, never per frame per player.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    PullingGauge, Registry,
};

use crate::process_metrics::ProcessCollector;

/// Metric names (also used by the dashboard tests).
pub mod names {
    /// Times the cores' flush ticks woke (flat while no core has a live stream).
    pub const TICK_WAKEUPS: &str = "corecast_tick_wakeups_total";
    /// Ticks of the cores' HTTP read hubs (`http.read_batch_ms`).
    pub const HTTP_READ_BATCH_TICKS: &str = "corecast_http_read_batch_ticks_total";
    /// HTTP reads a read hub's tick woke for input.
    pub const HTTP_READ_BATCH_WAKEUPS: &str = "corecast_http_read_batch_wakeups_total";
    /// HTTP segment writes a read hub's tick woke for room.
    pub const HTTP_READ_BATCH_WRITE_WAKEUPS: &str = "corecast_http_read_batch_write_wakeups_total";
    /// HTTP connections accepted on a busy core's read hub tick.
    pub const HTTP_READ_BATCH_ACCEPTS: &str = "corecast_http_read_batch_accepts_total";
    /// HTTP requests the plain-HTTP fast lane answered without hyper (plain HLS).
    pub const HTTP_LANE_REQUESTS: &str = "corecast_http_lane_requests_total";
    /// Plain-HTTP connections the fast lane handed to hyper (a request it does not take).
    pub const HTTP_LANE_HANDOVERS: &str = "corecast_http_lane_handovers_total";
    /// Sends the zero-delay send pass made, one per player per pass.
    pub const ZERO_DELAY_PASS_SENDS: &str = "corecast_zero_delay_pass_sends_total";
    /// Player writers the zero-delay send pass woke for bytes it left queued.
    pub const ZERO_DELAY_WRITER_WAKES: &str = "corecast_zero_delay_writer_wakes_total";
    /// Connections accepted, by transport.
    pub const CONNECTIONS_ACCEPTED: &str = "corecast_connections_accepted_total";
    /// Connections open now, by transport.
    pub const CONNECTIONS_OPEN: &str = "corecast_connections_open";
    /// Connections closed, by reason.
    pub const CONNECTIONS_CLOSED: &str = "corecast_connections_closed_total";
    /// Connections refused at accept, by listener and reason (`connection_limit`, `draining`,
    /// the per-address limits' and the PROXY protocol's reasons, `memory_budget`).
    pub const CONNECTIONS_REFUSED: &str = "corecast_connections_refused_total";
    /// Handshake and protocol errors, by kind.
    pub const ERRORS: &str = "corecast_errors_total";
    /// Streams published on this core now.
    pub const STREAMS: &str = "corecast_streams";
    /// Players on this core now.
    pub const PLAYERS: &str = "corecast_players";
    /// Bytes read from peers.
    pub const RECEIVED_BYTES: &str = "corecast_received_bytes_total";
    /// Bytes written to peers.
    pub const SENT_BYTES: &str = "corecast_sent_bytes_total";
    /// RTMP messages received.
    pub const MESSAGES_RECEIVED: &str = "corecast_messages_received_total";
    /// Media frames published (encoded once each).
    pub const FRAMES_PUBLISHED: &str = "corecast_frames_published_total";
    /// Frames dropped, by reason (`slow_player`, `core_link`).
    pub const FRAMES_DROPPED: &str = "corecast_frames_dropped_total";
    /// Players disconnected as slow consumers.
    pub const SLOW_CONSUMER_DISCONNECTS: &str = "corecast_slow_consumer_disconnects_total";
    /// Bytes held in GOP caches on this core.
    pub const GOP_CACHE_BYTES: &str = "corecast_gop_cache_bytes";
    /// This core's share of the node's memory budget (`node.memory_budget_bytes`).
    pub const MEMORY_BUDGET_BYTES: &str = "corecast_memory_budget_bytes";
    /// What this core's connections hold, as counted against its memory budget.
    pub const MEMORY_ACCOUNTED_BYTES: &str = "corecast_memory_accounted_bytes";
    /// Frames crossing cores, by direction (`sent`, `received`).
    pub const CROSS_CORE_FRAMES: &str = "corecast_cross_core_frames_total";
    /// Upstream (pull) connections open on this core.
    pub const UPSTREAM_CONNECTIONS: &str = "corecast_upstream_connections";
    /// Pulls that got a stream from an upstream.
    pub const PULLS_STARTED: &str = "corecast_pulls_started_total";
    /// Pull attempts that failed, by reason.
    pub const PULLS_FAILED: &str = "corecast_pulls_failed_total";
    /// Times a pulled stream moved to another upstream.
    pub const FAILOVERS: &str = "corecast_upstream_failovers_total";
    /// Bytes received from upstreams.
    pub const UPSTREAM_BYTES: &str = "corecast_upstream_received_bytes_total";
    /// Seconds from starting a pull to its first media frame.
    pub const EDGE_FIRST_FRAME: &str = "corecast_edge_first_frame_seconds";
    /// Pull connections served to other nodes.
    pub const PULLS_SERVED: &str = "corecast_pulls_served_total";
    /// Clients asked to reconnect elsewhere when the node drains (Enhanced RTMP).
    pub const RECONNECT_REQUESTS: &str = "corecast_reconnect_requests_total";
    /// Publishes and plays refused by authorization, by action and reason.
    pub const AUTH_REFUSALS: &str = "corecast_auth_refusals_total";
    /// Publishes and plays allowed by authorization, by action and mode.
    pub const AUTH_ALLOWED: &str = "corecast_auth_allowed_total";
    /// Always 1; the labels say which build runs (`version`, `commit`).
    pub const BUILD_INFO: &str = "corecast_build_info";
    /// 1 while the node drains (after SIGTERM/SIGINT; `/readyz` answers 503), else 0.
    pub const DRAINING: &str = "corecast_draining";
    /// When the RTMPS certificate a core serves expires (its leaf's notAfter), Unix seconds.
    /// Only with `[rtmps]` on.
    pub const TLS_CERTIFICATE_EXPIRY: &str = "corecast_tls_certificate_expiry_timestamp_seconds";
    /// Live publishes the registry ended (disabled, key reset, deleted), by reason.
    pub const LIVESTREAM_STOPS: &str = "corecast_livestream_stops_total";
    /// Webhook delivery tries, by result (`delivered`, `failed`, `given_up`).
    pub const WEBHOOK_DELIVERIES: &str = "corecast_webhook_deliveries_total";

    /// User plus system CPU time, seconds (fractional; see `process_metrics`).
    pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
    /// Resident memory, bytes.
    pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    /// Virtual memory, bytes.
    pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
    /// OS threads.
    pub const PROCESS_THREADS: &str = "process_threads";
    /// Open file descriptors.
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    /// The open-files soft limit.
    pub const PROCESS_MAX_FDS: &str = "process_max_fds";
    /// Process start, Unix seconds.
    pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
}

/// The version and commit this binary was built from (`corecast_build_info`). The commit is
/// what `git rev-parse --short HEAD` said at build time (see `build.rs`), or `unknown`.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`BUILD_VERSION`].
pub const BUILD_COMMIT: &str = env!("CORECAST_COMMIT");

/// Error kinds (`corecast_errors_total{kind}`): the session close reasons that are errors.
pub const KNOWN_ERROR_KINDS: [&str; 10] = [
    "tls_error",
    "tls_aborted",
    "tls_handshake_timeout",
    "handshake_error",
    "handshake_timeout",
    "chunk_error",
    "control_error",
    "command_error",
    "protocol_error",
    // A command's string field over its limit (refused, the connection stays or is closed).
    "argument_too_long",
];

/// `corecast_errors_total{kind}` values of the limits on names, streams and pulls: an
/// unprintable app or stream name, a publish past `stream.max_streams_per_node` or
/// `stream.max_streams_per_address`, a play refused because the edge runs
/// `cluster.max_concurrent_pulls` already or because no upstream had the name moments ago.
pub const LIMIT_ERROR_KINDS: [&str; 5] = [
    "unprintable_name",
    "streams_per_node",
    "streams_per_address",
    "pulls_capped",
    "pull_not_found_cached",
];

/// The node's registry and metric families.
#[derive(Clone)]
pub struct NodeMetrics {
    /// What `/metrics` exposes.
    pub registry: Registry,
    accepted: IntCounterVec,
    open: IntGaugeVec,
    closed: IntCounterVec,
    refused: IntCounterVec,
    errors: IntCounterVec,
    streams: IntGaugeVec,
    players: IntGaugeVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    messages: IntCounterVec,
    frames: IntCounterVec,
    dropped: IntCounterVec,
    slow: IntCounterVec,
    gop: IntGaugeVec,
    cross: IntCounterVec,
    upstreams: IntGaugeVec,
    pulls_started: IntCounterVec,
    pulls_failed: IntCounterVec,
    failovers: IntCounterVec,
    upstream_bytes: IntCounterVec,
    edge_first_frame: HistogramVec,
    pulls_served: IntCounterVec,
    reconnect_requests: IntCounterVec,
    auth_refusals: IntCounterVec,
    auth_allowed: IntCounterVec,
    tls_expiry: IntGaugeVec,
    memory_budget: IntGaugeVec,
    memory_accounted: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl NodeMetrics {
    /// Registers every family (and the process collector).
    pub fn new() -> Arc<NodeMetrics> {
        use names::*;
        let registry = Registry::new();
        registry
            .register(Box::new(ProcessCollector::new()))
            .expect("process metrics registered once");
        registry
            .register(Box::new(crate::tick::wakeups_counter()))
            .expect("tick wake-ups registered once");
        for c in crate::httpd::fastlane::counters() {
            registry
                .register(Box::new(c))
                .expect("fast lane counters registered once");
        }
        for c in crate::httpd::hub::counters() {
            registry
                .register(Box::new(c))
                .expect("read hub counters registered once");
        }
        for c in crate::sendpass::counters() {
            registry
                .register(Box::new(c))
                .expect("zero-delay pass counters registered once");
        }
        let r = &registry;
        gauge(
            r,
            BUILD_INFO,
            "Always 1: which version and commit this node runs.",
            &["version", "commit"],
        )
        .with_label_values(&[BUILD_VERSION, BUILD_COMMIT])
        .set(1);
        Arc::new(NodeMetrics {
            accepted: counter(
                r,
                CONNECTIONS_ACCEPTED,
                "Connections accepted.",
                &["core", "transport"],
            ),
            open: gauge(
                r,
                CONNECTIONS_OPEN,
                "Connections open.",
                &["core", "transport"],
            ),
            closed: counter(
                r,
                CONNECTIONS_CLOSED,
                "Connections closed, by reason.",
                &["core", "reason"],
            ),
            refused: counter(
                r,
                CONNECTIONS_REFUSED,
                "Connections refused at accept, by listener and reason.",
                &["core", "listener", "reason"],
            ),
            errors: counter(
                r,
                ERRORS,
                "Handshake and protocol errors, by kind.",
                &["core", "kind"],
            ),
            streams: gauge(r, STREAMS, "Streams published on this core.", &["core"]),
            players: gauge(r, PLAYERS, "Players on this core.", &["core"]),
            received: counter(r, RECEIVED_BYTES, "Bytes read from peers.", &["core"]),
            sent: counter(r, SENT_BYTES, "Bytes written to peers.", &["core"]),
            messages: counter(r, MESSAGES_RECEIVED, "RTMP messages received.", &["core"]),
            frames: counter(
                r,
                FRAMES_PUBLISHED,
                "Media frames published (encoded once each).",
                &["core"],
            ),
            dropped: counter(
                r,
                FRAMES_DROPPED,
                "Frames dropped, by reason.",
                &["core", "reason"],
            ),
            slow: counter(
                r,
                SLOW_CONSUMER_DISCONNECTS,
                "Players disconnected as slow consumers.",
                &["core"],
            ),
            gop: gauge(
                r,
                GOP_CACHE_BYTES,
                "Bytes held in GOP caches (and the frame logs' nodes, 56 bytes a frame).",
                &["core"],
            ),
            cross: counter(
                r,
                CROSS_CORE_FRAMES,
                "Frames crossing cores, by direction.",
                &["core", "direction"],
            ),
            upstreams: gauge(
                r,
                UPSTREAM_CONNECTIONS,
                "Upstream (pull) connections open.",
                &["core"],
            ),
            pulls_started: counter(
                r,
                PULLS_STARTED,
                "Pulls that got a stream from an upstream.",
                &["core"],
            ),
            pulls_failed: counter(
                r,
                PULLS_FAILED,
                "Pull attempts that failed, by reason.",
                &["core", "reason"],
            ),
            failovers: counter(
                r,
                FAILOVERS,
                "Times a pulled stream moved to another upstream.",
                &["core"],
            ),
            upstream_bytes: counter(
                r,
                UPSTREAM_BYTES,
                "Bytes received from upstreams.",
                &["core"],
            ),
            edge_first_frame: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        EDGE_FIRST_FRAME,
                        "Seconds from starting a pull to its first media frame.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                    &["core"],
                )
                .expect("valid metric definition");
                r.register(Box::new(h.clone()))
                    .expect("metric registered once");
                h
            },
            reconnect_requests: counter(
                r,
                RECONNECT_REQUESTS,
                "Clients sent NetConnection.Connect.ReconnectRequest as the node drained.",
                &["core"],
            ),
            pulls_served: counter(
                r,
                PULLS_SERVED,
                "Pull connections served to other nodes.",
                &["core"],
            ),
            auth_refusals: counter(
                r,
                AUTH_REFUSALS,
                "Publishes and plays refused by authorization, by action and reason.",
                &["core", "action", "reason"],
            ),
            auth_allowed: counter(
                r,
                AUTH_ALLOWED,
                "Publishes and plays allowed by authorization, by action and mode.",
                &["core", "action", "mode"],
            ),
            tls_expiry: gauge(
                r,
                TLS_CERTIFICATE_EXPIRY,
                "When the RTMPS certificate served expires (leaf notAfter), Unix seconds.",
                &["core"],
            ),
            memory_budget: gauge(
                r,
                MEMORY_BUDGET_BYTES,
                "This core's share of the node's memory budget, in bytes.",
                &["core"],
            ),
            memory_accounted: gauge(
                r,
                MEMORY_ACCOUNTED_BYTES,
                "Bytes this core's connections hold, as counted against its memory budget.",
                &["core"],
            ),
            registry,
        })
    }

    /// Exports `corecast_draining`: 1 once `draining` is set (read at each scrape).
    pub fn watch_drain(&self, draining: Arc<AtomicBool>) {
        let gauge = PullingGauge::new(
            names::DRAINING,
            "1 while the node drains (readiness false), else 0.",
            Box::new(move || f64::from(u8::from(draining.load(Ordering::Relaxed)))),
        )
        .expect("valid metric definition");
        self.registry
            .register(Box::new(gauge))
            .expect("metric registered once");
    }

    /// Core `core` serves a certificate that expires at `not_after` (Unix seconds).
    pub fn certificate_expiry(&self, core: usize, not_after: i64) {
        self.tls_expiry
            .with_label_values(&[&core.to_string()])
            .set(not_after);
    }

    /// The children one core uses. Label values known in advance are created at zero, so
    /// dashboards and alerts see a series before the first event.
    pub fn for_core(&self, core: usize) -> CoreMetrics {
        let c = core.to_string();
        let c = c.as_str();
        for kind in KNOWN_ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
            self.closed.with_label_values(&[c, kind]);
        }
        for kind in LIMIT_ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
        }
        for reason in [
            "peer_closed",
            "closed",
            "slow_consumer",
            "write_error",
            "idle_timeout",
            "taken_over",
            "publisher_wait_timeout",
            "auth_refused",
        ] {
            self.closed.with_label_values(&[c, reason]);
        }
        for kind in crate::accept::ConnectionKind::ALL {
            self.refused
                .with_label_values(&[c, kind.as_str(), "connection_limit"]);
            self.refused
                .with_label_values(&[c, kind.as_str(), "memory_budget"]);
            for refusal in crate::limits::Refusal::ALL {
                if refusal != crate::limits::Refusal::TlsRate || kind.as_str() == "rtmps" {
                    self.refused
                        .with_label_values(&[c, kind.as_str(), refusal.as_str()]);
                }
            }
        }
        for kind in crate::httpd::ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
        }
        for kind in crate::flv_http::ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
        }
        for kind in crate::hls::ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
        }
        for kind in crate::player::ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
        }
        for kind in crate::session::MEDIA_ERROR_KINDS {
            self.errors.with_label_values(&[c, kind]);
            self.closed.with_label_values(&[c, kind]);
        }
        for refusal in crate::rtmpt::admission::Refusal::ALL {
            let tunnel = crate::accept::ConnectionKind::RtmptTunnel.as_str();
            self.refused
                .with_label_values(&[c, tunnel, refusal.as_str()]);
        }
        for reason in ["connect", "tls", "not_here", "refused", "lost"] {
            self.pulls_failed.with_label_values(&[c, reason]);
        }
        for transport in ["rtmp", "rtmps", "rtmpt", "pull"] {
            self.accepted.with_label_values(&[c, transport]);
            self.open.with_label_values(&[c, transport]);
        }
        for action in ["publish", "play"] {
            for reason in crate::auth::Reason::ALL {
                self.auth_refusals
                    .with_label_values(&[c, action, reason.as_str()]);
            }
        }
        CoreMetrics {
            core: c.to_owned(),
            families: self.clone(),
            streams: self.streams.with_label_values(&[c]),
            players: self.players.with_label_values(&[c]),
            received_bytes: self.received.with_label_values(&[c]),
            sent_bytes: self.sent.with_label_values(&[c]),
            messages: self.messages.with_label_values(&[c]),
            frames_published: self.frames.with_label_values(&[c]),
            dropped_slow_player: self.dropped.with_label_values(&[c, "slow_player"]),
            dropped_core_link: self.dropped.with_label_values(&[c, "core_link"]),
            slow_consumer_disconnects: self.slow.with_label_values(&[c]),
            gop_cache_bytes: self.gop.with_label_values(&[c]),
            cross_core_sent: self.cross.with_label_values(&[c, "sent"]),
            cross_core_received: self.cross.with_label_values(&[c, "received"]),
            upstream_connections: self.upstreams.with_label_values(&[c]),
            pulls_started: self.pulls_started.with_label_values(&[c]),
            failovers: self.failovers.with_label_values(&[c]),
            upstream_bytes: self.upstream_bytes.with_label_values(&[c]),
            edge_first_frame: self.edge_first_frame.with_label_values(&[c]),
            pulls_served: self.pulls_served.with_label_values(&[c]),
            reconnect_requests: self.reconnect_requests.with_label_values(&[c]),
            memory_budget_bytes: self.memory_budget.with_label_values(&[c]),
            memory_accounted_bytes: self.memory_accounted.with_label_values(&[c]),
        }
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One core's metric children (cheap clones of `Arc`s inside).
pub struct CoreMetrics {
    core: String,
    families: NodeMetrics,
    /// Streams published here.
    pub streams: IntGauge,
    /// Players here.
    pub players: IntGauge,
    /// Bytes read.
    pub received_bytes: IntCounter,
    /// Bytes written.
    pub sent_bytes: IntCounter,
    /// RTMP messages received.
    pub messages: IntCounter,
    /// Frames published.
    pub frames_published: IntCounter,
    /// Frames skipped for slow players.
    pub dropped_slow_player: IntCounter,
    /// Frames dropped on a lagging core link.
    pub dropped_core_link: IntCounter,
    /// Slow-consumer disconnects.
    pub slow_consumer_disconnects: IntCounter,
    /// GOP cache bytes (set once a second).
    pub gop_cache_bytes: IntGauge,
    /// Frames sent to other cores.
    pub cross_core_sent: IntCounter,
    /// Frames received from other cores.
    pub cross_core_received: IntCounter,
    /// Upstream connections open.
    pub upstream_connections: IntGauge,
    /// Pulls that got a stream.
    pub pulls_started: IntCounter,
    /// Failovers to another upstream.
    pub failovers: IntCounter,
    /// Bytes from upstreams.
    pub upstream_bytes: IntCounter,
    /// Pull start to first media frame.
    pub edge_first_frame: Histogram,
    /// Pull connections served.
    pub pulls_served: IntCounter,
    /// `corecast_reconnect_requests_total`.
    pub reconnect_requests: IntCounter,
    /// This core's memory budget.
    pub memory_budget_bytes: IntGauge,
    /// What this core's connections hold against it.
    pub memory_accounted_bytes: IntGauge,
}

impl CoreMetrics {
    /// A connection was accepted on `transport`; returns the open-connections gauge to
    /// decrement when it closes.
    pub fn accepted(&self, transport: &str) -> IntGauge {
        self.families
            .accepted
            .with_label_values(&[&self.core, transport])
            .inc();
        let open = self
            .families
            .open
            .with_label_values(&[&self.core, transport]);
        open.inc();
        open
    }

    /// A connection closed for `reason` (a static label).
    pub fn closed(&self, reason: &str) {
        self.families
            .closed
            .with_label_values(&[&self.core, reason])
            .inc();
    }

    /// A connection to `listener` was refused for `reason` (static labels).
    pub fn refused(&self, listener: &str, reason: &str) {
        self.families
            .refused
            .with_label_values(&[&self.core, listener, reason])
            .inc();
    }

    /// A pull attempt failed for `reason` (`connect`, `not_here`, `refused`, `protocol`, `lost`).
    pub fn pull_failed(&self, reason: &str) {
        self.families
            .pulls_failed
            .with_label_values(&[&self.core, reason])
            .inc();
    }

    /// A handshake or protocol error of `kind`.
    pub fn error(&self, kind: &str) {
        self.families
            .errors
            .with_label_values(&[&self.core, kind])
            .inc();
    }

    /// A publish or play (`action`) refused by authorization for `reason` (static labels).
    pub fn auth_refused(&self, action: &str, reason: &str) {
        self.families
            .auth_refusals
            .with_label_values(&[&self.core, action, reason])
            .inc();
    }

    /// A publish or play (`action`) allowed by authorization `mode` (static labels).
    pub fn auth_allowed(&self, action: &str, mode: &str) {
        self.families
            .auth_allowed
            .with_label_values(&[&self.core, action, mode])
            .inc();
    }
}
