//! Reconnect delays: exponential backoff with jitter, sans-IO (the caller supplies the
//! randomness and does the sleeping).
//!
//! The base delay starts at `initial` and doubles after every failure up to `max`; the delay
//! used is drawn in `[base/2, base]` ("equal jitter"), so targets that failed together (a
//! platform's outage) do not all come back in the same instant, while the delay still grows.
//! A connection that stayed live for a while resets it.

use std::time::Duration;

/// One target's backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Option<Duration>,
}

impl Backoff {
    /// A backoff from `initial` up to `max` (`max` below `initial` is raised to it).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            base: None,
        }
    }

    /// The delay before the next attempt; `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let base = match self.base {
            None => self.initial,
            Some(base) => base.saturating_mul(2).min(self.max),
        };
        self.base = Some(base);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        base.mul_f64(0.5 + unit / 2.0)
    }

    /// The current base delay (None before the first failure).
    pub fn base(&self) -> Option<Duration> {
        self.base
    }

    /// Back to `initial` (after a connection that worked).
    pub fn reset(&mut self) {
        self.base = None;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Delays stay within `[base/2, base]`, the base doubles until `max`, and never
        /// passes it.
        #[test]
        fn delays_grow_to_the_cap_with_jitter(
            initial in 1u64..5_000,
            factor in 1u64..100,
            draws in proptest::collection::vec(0.0f64..1.0, 1..40),
        ) {
            let (initial, max) = (Duration::from_millis(initial), Duration::from_millis(initial * factor));
            let mut backoff = Backoff::new(initial, max);
            let mut previous_base = Duration::ZERO;
            for unit in draws {
                let delay = backoff.next_delay(unit);
                let base = backoff.base().unwrap_or_default();
                prop_assert!(base <= max);
                prop_assert!(base >= previous_base);
                prop_assert!(base == max || previous_base == Duration::ZERO || base == previous_base * 2);
                prop_assert!(delay <= base && delay >= base / 2);
                previous_base = base;
            }
            backoff.reset();
            prop_assert!(backoff.next_delay(0.99) <= initial);
        }
    }
}
