//! When a core's periodic chores run (its housekeeping: admin commands, the drain flag, its
//! statistics): one schedule that rides the wake-up the core already has, and arms a timer
//! of its own only when nothing else will wake the core in time.
//!
//! A wake-up of a glommio executor costs the kernel far more than the chores themselves (8–11
//! `io_uring_enter`, a `membarrier`, a timeout armed and cancelled: BENCHMARKS.md "Wave 8"),
//! so [`plan`] (sans-IO) picks, by what the core's clock does, what the next round waits for:
//! - [`Wait::Ticks`]: the clock runs: the first tick at least the period (less half a tick)
//!   on, with no timer (the tick may be up to 4 times slower than the period: then each tick);
//! - [`Wait::Batches`]: the clock is parked but other cores' batches are written here and
//!   move it on (a core with players and no publisher): the first such flush at least the
//!   period on, with a timer at [`Wait::Batches`]'s `latest` for when none comes;
//! - [`Wait::Timer`]: a clock more than 4 times slower than the period: a timer of the period;
//! - [`Wait::Grid`]: connections but nothing moves the clock (no window, or only unwatched
//!   publishers): the node's slow grid (`util::sleep_on_grid`), whose wake-ups the unwatched
//!   publishers' paced reads share;
//! - [`Wait::Idle`]: no connections: once a second, or at once when an admin command comes.

use std::future::Future;
use std::time::Duration;

use crate::tick;

/// How often a core with connections does its chores at least (a longer merge window makes
/// it that window: see [`period`]). Also how often a drain checks for connections left.
pub const PERIOD: Duration = Duration::from_millis(100);
/// How often a core with no connections does (its admin bell wakes it sooner): an idle node
/// costs next to nothing (issue 19).
pub const IDLE_PERIOD: Duration = Duration::from_secs(1);
/// How often each core publishes its statistics.
pub const STATS_PERIOD: Duration = Duration::from_secs(1);

/// How often a core with connections does its chores: every [`PERIOD`], or with a longer
/// merge window every window, so that they ride the core's tick and a core with a live
/// stream wakes for its ticks only (issue 19: the fixed cost of a stream). Never slower
/// than an idle core's, so a drain starts as soon as there.
pub fn period(merge_window_ms: u64) -> Duration {
    Duration::from_millis(merge_window_ms).clamp(PERIOD, IDLE_PERIOD)
}

/// What the core's clock does, as the schedule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The tick's period, once the clock started.
    pub tick: Option<Duration>,
    /// Whether it runs now (started and not parked).
    pub running: bool,
    /// Whether it moved (a tick, or another core's batch written here) since the last round.
    pub moved: bool,
}

/// What the next round of chores waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The core's ticks (no timer of its own).
    Ticks,
    /// Other cores' batches flushed here, or a timer `latest` after the wait began.
    Batches {
        /// The timer for when no batch comes.
        latest: Duration,
    },
    /// A timer of this long.
    Timer(Duration),
    /// The next multiple of this on the node's grid (`util::sleep_on_grid`).
    Grid(Duration),
    /// A timer of this long, or the core's admin bell.
    Idle(Duration),
}

/// The next round's wait for a core whose clock is `clock`, with connections or not, for
/// chores of `period` (see the module docs).
pub fn plan(clock: Clock, has_clients: bool, period: Duration) -> Wait {
    if !has_clients {
        return Wait::Idle(IDLE_PERIOD);
    }
    if !clock.moved {
        return Wait::Grid(crate::session::pace::CHORE_GRID);
    }
    match clock.tick {
        Some(tick) if tick::rides(tick, period) && clock.running => Wait::Ticks,
        Some(tick) if tick::rides(tick, period) => Wait::Batches {
            latest: tick::backstop(tick, period),
        },
        _ => Wait::Timer(period),
    }
}

/// Whether a round `since_stats` after the statistics were last published publishes them
/// (rounds of `period` come about a period apart: the nearest round to a second does).
pub fn stats_due(since_stats: Duration, period: Duration) -> bool {
    since_stats >= STATS_PERIOD.saturating_sub(period / 2)
}

/// A core's chore schedule: where its clock was at the last round.
#[derive(Debug)]
pub struct Schedule {
    last_epoch: u64,
}

impl Schedule {
    /// A schedule starting now. Must run on a glommio executor.
    pub fn new() -> Schedule {
        Schedule {
            last_epoch: tick::epoch(),
        }
    }

    /// Waits until the next round of chores of `period` is due; `bell` resolves when an admin
    /// command is queued for this core (an idle core wakes for it; a busy one sees it at the
    /// round).
    pub async fn sleep(
        &mut self,
        has_clients: bool,
        period: Duration,
        bell: impl Future<Output = ()>,
    ) {
        let epoch = tick::epoch();
        let clock = Clock {
            tick: tick::period(),
            running: tick::running(),
            moved: epoch != self.last_epoch,
        };
        self.last_epoch = epoch;
        match plan(clock, has_clients, period) {
            Wait::Ticks | Wait::Batches { .. } => tick::sleep_aligned(period).await,
            Wait::Timer(wait) => glommio::timer::sleep(wait).await,
            Wait::Grid(grid) => crate::util::sleep_on_grid(grid).await,
            Wait::Idle(wait) => {
                futures_lite::future::or(glommio::timer::sleep(wait), bell).await;
            }
        }
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn clock(tick: Option<u64>, running: bool, moved: bool) -> Clock {
        Clock {
            tick: tick.map(ms),
            running,
            moved,
        }
    }

    #[test]
    fn the_period_rides_a_longer_window_and_stays_within_a_second() {
        assert_eq!(period(0), PERIOD);
        assert_eq!(period(20), PERIOD);
        assert_eq!(period(100), PERIOD);
        assert_eq!(period(333), ms(333));
        assert_eq!(period(5000), IDLE_PERIOD);
    }

    #[test]
    fn an_idle_core_waits_a_second_or_its_bell_whatever_its_clock() {
        for c in [clock(None, false, false), clock(Some(100), true, true)] {
            assert_eq!(plan(c, false, ms(100)), Wait::Idle(IDLE_PERIOD));
        }
    }

    #[test]
    fn a_running_clock_carries_the_chores_with_no_timer() {
        // The publisher's core: at 100 ms and at 333 ms (a tick slower than the 100 ms chore
        // period, but at most 4 times: each tick), and a 333 ms window's own period.
        assert_eq!(
            plan(clock(Some(100), true, true), true, ms(100)),
            Wait::Ticks
        );
        assert_eq!(
            plan(clock(Some(333), true, true), true, ms(100)),
            Wait::Ticks
        );
        assert_eq!(
            plan(clock(Some(333), true, true), true, ms(333)),
            Wait::Ticks
        );
    }

    #[test]
    fn a_parked_clock_fed_by_batches_arms_a_timer_only_past_a_period_and_half_a_tick() {
        // A core with players and no publisher: its clock parks, other cores' batches move it.
        assert_eq!(
            plan(clock(Some(100), false, true), true, ms(100)),
            Wait::Batches { latest: ms(150) }
        );
        assert_eq!(
            plan(clock(Some(333), false, true), true, ms(333)),
            Wait::Batches {
                latest: ms(333) + ms(333) / 2
            }
        );
        // A tick slower than the period: the backstop follows the tick.
        assert_eq!(
            plan(clock(Some(400), false, true), true, ms(100)),
            Wait::Batches { latest: ms(600) }
        );
    }

    #[test]
    fn nothing_moving_the_clock_wakes_on_the_grid_of_the_unwatched_reads() {
        let grid = Wait::Grid(crate::session::pace::CHORE_GRID);
        // No window (no clock), a parked clock no batch moved, a running one that did not
        // tick since the last round (the first round).
        assert_eq!(plan(clock(None, false, false), true, ms(100)), grid);
        assert_eq!(plan(clock(Some(100), false, false), true, ms(100)), grid);
        assert_eq!(plan(clock(Some(100), true, false), true, ms(100)), grid);
    }

    #[test]
    fn a_clock_much_slower_than_the_chores_leaves_them_a_timer() {
        assert_eq!(
            plan(clock(Some(5000), true, true), true, ms(1000)),
            Wait::Timer(ms(1000))
        );
        assert_eq!(
            plan(clock(Some(401), false, true), true, ms(100)),
            Wait::Timer(ms(100))
        );
    }

    #[test]
    fn an_idle_core_s_round_comes_at_its_admin_bell() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let mut schedule = Schedule::new();
                let start = std::time::Instant::now();
                // No connections: the round waits for the idle second or the bell, which
                // rings (an admin command queued) after 10 ms.
                schedule
                    .sleep(false, PERIOD, glommio::timer::sleep(ms(10)))
                    .await;
                let waited = start.elapsed();
                assert!(
                    waited < IDLE_PERIOD / 2,
                    "the bell went unheard: {waited:?}"
                );
            })
            .expect("executor")
            .join()
            .expect("test body");
    }

    #[test]
    fn statistics_go_out_at_the_round_nearest_a_second() {
        assert!(!stats_due(ms(800), ms(100)));
        assert!(stats_due(ms(950), ms(100)));
        // At 333 ms: the third round (999 ms), not the fourth.
        assert!(!stats_due(ms(666), ms(333)));
        assert!(stats_due(ms(999), ms(333)));
        assert!(!stats_due(ms(400), ms(1000)));
        assert!(stats_due(ms(500), ms(1000)));
    }
}
