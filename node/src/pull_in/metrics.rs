//! Pull-in metrics, labelled by pull id only (never by URL: it may carry a key):
//! `corecast_pull_in_state{pull,state}` (1 for the current state), bytes read from the
//! source, reconnects, and failed tries by reason.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{PullState, Reason};

/// Every state label (metrics exist at zero).
const STATES: [&str; 3] = ["connecting", "live", "backoff"];

/// The pull-in metric families, registered once in the node's registry.
pub struct PullMetrics {
    state: IntGaugeVec,
    bytes: IntCounterVec,
    reconnects: IntCounterVec,
    failures: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    // A second registration (a node embedded twice in one process) keeps the first.
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

impl PullMetrics {
    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> PullMetrics {
        let state = IntGaugeVec::new(
            Opts::new(
                "corecast_pull_in_state",
                "1 for each pull-in's current state (connecting, live, backoff).",
            ),
            &["pull", "state"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(state.clone()));
        PullMetrics {
            state,
            bytes: counter(
                registry,
                "corecast_pull_in_bytes_total",
                "Bytes read from each pull-in's source.",
                &["pull"],
            ),
            reconnects: counter(
                registry,
                "corecast_pull_in_reconnects_total",
                "Connection tries of each pull-in after its first.",
                &["pull"],
            ),
            failures: counter(
                registry,
                "corecast_pull_in_failures_total",
                "Failed or lost tries of each pull-in, by reason.",
                &["pull", "reason"],
            ),
        }
    }

    /// Sets `pull`'s state (its other states to 0); a backoff counts its failure.
    pub fn set_state(&self, pull: &str, state: PullState) {
        for label in STATES {
            let value = i64::from(label == state.as_str());
            self.state.with_label_values(&[pull, label]).set(value);
        }
        if let PullState::Backoff(reason) = state {
            self.failures
                .with_label_values(&[pull, reason.as_str()])
                .inc();
        }
    }

    /// A new pull: its series exist at zero.
    pub fn added(&self, pull: &str) {
        self.bytes.with_label_values(&[pull]);
        self.reconnects.with_label_values(&[pull]);
        for reason in Reason::ALL {
            self.failures.with_label_values(&[pull, reason.as_str()]);
        }
    }

    /// A pull removed: its states at 0.
    pub fn removed(&self, pull: &str) {
        for label in STATES {
            self.state.with_label_values(&[pull, label]).set(0);
        }
    }

    /// Bytes read.
    pub fn bytes(&self, pull: &str, n: u64) {
        self.bytes.with_label_values(&[pull]).inc_by(n);
    }

    /// One more try.
    pub fn reconnect(&self, pull: &str) {
        self.reconnects.with_label_values(&[pull]).inc();
    }
}
