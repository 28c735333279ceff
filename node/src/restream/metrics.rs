//! Restream metrics, labelled by target id only (never by URL: it carries the stream key):
//! `corecast_restream_state{target,state}` (1 for the current state), bytes written, reconnects,
//! frames skipped for slowness, and failures by reason.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::spec::{FailReason, TargetState};

/// The restream metric families, registered once in the node's registry.
pub struct RestreamMetrics {
    state: IntGaugeVec,
    bytes: IntCounterVec,
    reconnects: IntCounterVec,
    dropped: IntCounterVec,
    failures: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    // A second registration (a node embedded twice in one process) keeps the first.
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

impl RestreamMetrics {
    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> RestreamMetrics {
        let state = IntGaugeVec::new(
            Opts::new(
                "corecast_restream_state",
                "1 for each push target's current state (connecting, live, backoff, failed).",
            ),
            &["target", "state"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(state.clone()));
        RestreamMetrics {
            state,
            bytes: counter(
                registry,
                "corecast_restream_bytes_total",
                "Bytes written to each push target.",
                &["target"],
            ),
            reconnects: counter(
                registry,
                "corecast_restream_reconnects_total",
                "Connection attempts to each push target after its first.",
                &["target"],
            ),
            dropped: counter(
                registry,
                "corecast_restream_dropped_frames_total",
                "Frames skipped for each push target because it was slow.",
                &["target"],
            ),
            failures: counter(
                registry,
                "corecast_restream_failures_total",
                "Failed connections of each push target, by reason.",
                &["target", "reason"],
            ),
        }
    }

    /// Sets `target`'s state (its other states to 0).
    pub fn set_state(&self, target: &str, state: TargetState) {
        for label in TargetState::LABELS {
            let value = i64::from(label == state.as_str());
            self.state.with_label_values(&[target, label]).set(value);
        }
    }

    /// A target stopped: all its states at 0.
    pub fn clear_state(&self, target: &str) {
        for label in TargetState::LABELS {
            self.state.with_label_values(&[target, label]).set(0);
        }
    }

    /// Counts bytes written.
    pub fn bytes(&self, target: &str, n: u64) {
        self.bytes.with_label_values(&[target]).inc_by(n);
    }

    /// Counts a reconnect.
    pub fn reconnect(&self, target: &str) {
        self.reconnects.with_label_values(&[target]).inc();
    }

    /// Counts skipped frames.
    pub fn dropped(&self, target: &str, n: u64) {
        self.dropped.with_label_values(&[target]).inc_by(n);
    }

    /// Counts a failure (every reason's series exists once a target ran).
    pub fn failure(&self, target: &str, reason: FailReason) {
        for each in FailReason::ALL {
            let counter = self.failures.with_label_values(&[target, each.as_str()]);
            if each == reason {
                counter.inc();
            }
        }
    }
}
