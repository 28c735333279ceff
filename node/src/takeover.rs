//! Publisher takeover: when each live publisher last sent anything, node-wide, so that a
//! publish of a name whose publisher has been silent for `rtmp.publisher_takeover_secs` can
//! take the name over (an encoder that reconnects while its old connection hangs half-open).
//!
//! A publisher's session stamps its [`Liveness`] on every read (one relaxed store, no lock);
//! the map itself is locked only on publish, unpublish and a refused claim. Taking over needs
//! "the same credentials": a publish reaches the name only once `[auth]` allowed it
//! (`session::authorize`), so with `open` that is the same `app/name`, with a stream key or a
//! token the same authorization.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One live publisher's last input.
#[derive(Debug)]
pub struct Liveness {
    /// Its connection id.
    pub connection: u64,
    epoch: Instant,
    /// Milliseconds from `epoch` to its last input.
    last_input_ms: AtomicU64,
}

impl Liveness {
    /// Records input now.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_input_ms.store(ms, Ordering::Relaxed);
    }

    /// How long it has sent nothing.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_input_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Every live publisher's [`Liveness`], by stream key.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    publishers: Mutex<HashMap<String, Arc<Liveness>>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            epoch: Instant::now(),
            publishers: Mutex::new(HashMap::new()),
        }
    }
}

impl Activity {
    /// `connection` now publishes `key` (its input counts from now).
    pub fn register(&self, key: &str, connection: u64) -> Arc<Liveness> {
        let liveness = Arc::new(Liveness {
            connection,
            epoch: self.epoch,
            last_input_ms: AtomicU64::new(0),
        });
        liveness.touch();
        self.lock().insert(key.to_owned(), Arc::clone(&liveness));
        liveness
    }

    /// `connection` no longer publishes `key` (a later publisher's entry is kept).
    pub fn unregister(&self, key: &str, connection: u64) {
        let mut publishers = self.lock();
        if publishers
            .get(key)
            .is_some_and(|l| l.connection == connection)
        {
            publishers.remove(key);
        }
    }

    /// The connection publishing `key`, when it has sent nothing for at least `idle`.
    pub fn idle_publisher(&self, key: &str, idle: Duration) -> Option<u64> {
        self.lock()
            .get(key)
            .filter(|l| l.idle() >= idle)
            .map(|l| l.connection)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Liveness>>> {
        // Nothing panics under the lock; a poisoned map is still consistent.
        self.publishers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_publisher_is_not_idle_and_unregister_keeps_a_successor() {
        let activity = Activity::default();
        activity.register("live/a", 1);
        assert_eq!(
            activity.idle_publisher("live/a", Duration::from_secs(1)),
            None
        );
        assert_eq!(activity.idle_publisher("live/a", Duration::ZERO), Some(1));
        activity.register("live/a", 2);
        activity.unregister("live/a", 1);
        assert_eq!(activity.idle_publisher("live/a", Duration::ZERO), Some(2));
        activity.unregister("live/a", 2);
        assert_eq!(activity.idle_publisher("live/a", Duration::ZERO), None);
    }
}
