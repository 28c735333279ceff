//! The wait between a pull's tries: exponential with jitter, sans-IO (the caller gives the
//! random number and sleeps).
//!
//! The base starts at `ingest.retry_min_ms` and doubles after each failed try up to
//! `ingest.retry_max_ms`; each wait is the base times a factor in [0.75, 1.25), so pulls
//! that lost one source together do not retry in lockstep. A try that streamed resets it.

use std::time::Duration;

/// A pull's backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    /// Starting at `min`, growing to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            base: min,
        }
    }

    /// The source streamed: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.base = self.min;
    }

    /// The wait before the next try, `random` in [0, 1) giving the jitter; the base doubles.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let factor = 0.75 + 0.5 * random.clamp(0.0, 1.0);
        let delay = self.base.mul_f64(factor);
        self.base = (self.base * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_wait_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<u64> = (0..8).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn every_wait_stays_within_the_jittered_bounds(
            min in 1u64..5000, extra in 0u64..100_000, randoms in proptest::collection::vec(0.0f64..1.0, 1..40)
        ) {
            let (min, max) = (Duration::from_millis(min), Duration::from_millis(min + extra));
            let mut b = Backoff::new(min, max);
            for r in randoms {
                let d = b.next_delay(r);
                prop_assert!(d >= min.mul_f64(0.75) && d <= max.mul_f64(1.25), "{d:?}");
            }
        }
    }
}
