//! The core's flush tick: one clock per core (executor thread) that paces batched work.
//!
//! With a merge window, every player writer on a core waits for the same tick, so the core
//! wakes once per window for all its players instead of once per player and frame. Tasks
//! hand their wakers to the tick ([`wake_at_next`]) rather than arming their own timers: a
//! thousand timers a second would each cost the reactor a submission.
//!
//! The clock parks when a tick finds nobody waiting for the next one (no writer with queued
//! media, no publisher to read: a core with no live stream) and restarts when someone waits
//! again, so an idle core is not woken once per window. Chores that ride the tick
//! ([`sleep_aligned`], as `chores` plans it) do not keep it running: when it parks they ride
//! other cores' batches, or fall back to timers.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::LazyLock;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// This core's clock.
struct TickState {
    /// The period, once a ticking task runs on this executor.
    period: Cell<Option<Duration>>,
    /// Ticks so far.
    epoch: Cell<u64>,
    /// Wakers to wake at the next tick.
    waiters: RefCell<Vec<Waker>>,
    /// The previous tick's emptied list, kept for its room: a tick wakes every writer of the
    /// core, and a list rebuilt from nothing would regrow each time.
    spare: RefCell<Vec<Waker>>,
    /// Readers to wake at the next tick before the writers (publishers' ingest).
    readers: RefCell<Vec<Waker>>,
    /// Chores to wake at the next tick, or when the clock parks (they do not keep it running).
    chores: RefCell<Vec<Waker>>,
    /// The clock's task while it is parked (nobody waited for a tick); None while it runs.
    parked: RefCell<Option<Waker>>,
    /// Players the tick writes itself have bytes queued (`player.window_send = "uring"`).
    pass_wanted: Cell<bool>,
}

thread_local! {
    static TICK: TickState = const {
        TickState {
            period: Cell::new(None),
            epoch: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            readers: RefCell::new(Vec::new()),
            chores: RefCell::new(Vec::new()),
            parked: RefCell::new(None),
            pass_wanted: Cell::new(false),
        }
    };
}

/// Times any core's clock woke from its period's sleep, since the process started
/// (`corecast_tick_wakeups_total`): flat on a node with no live stream.
static WAKEUPS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::TICK_WAKEUPS,
        "Times the cores' flush ticks woke; flat while no core has a live stream.",
    )
    .expect("valid metric definition")
});

/// The process-wide count of tick wake-ups, to register with a node's metrics.
pub fn wakeups_counter() -> IntCounter {
    WAKEUPS.clone()
}

/// Changes the period of this core's clock, if it runs (a reloaded `player.merge_window_ms`);
/// a zero period is ignored: writers that batch keep a clock.
pub fn change_period(period: Duration) {
    TICK.with(|t| {
        if t.period.get().is_some() && !period.is_zero() {
            t.period.set(Some(period));
        }
    });
}

/// Starts this core's clock with `period`, once; later calls do nothing. Must run on a
/// glommio executor.
pub fn start(period: Duration) {
    if TICK.with(|t| t.period.get().is_some()) {
        return;
    }
    TICK.with(|t| t.period.set(Some(period)));
    // The node-wide grid every core's clock ticks on: multiples of the period since one
    // process-wide instant (`util::GRID_ORIGIN`, shared with the slow chores' grid). Cores that
    // each kept the phase of their own start (or drifted by their timers' lateness) would send
    // their players' windows at different instants, and a reader holding players of several
    // cores would wake once per core per window instead of once (issue 19 item 2,
    // BENCHMARKS.md "Wave 7"); the floor's writers share one start too.
    let grid = *crate::util::GRID_ORIGIN;
    glommio::spawn_local(async move {
        let mut last: Option<(Duration, u128)> = None;
        loop {
            park_while_unwanted().await;
            // Read each time: a reload may change the period (see `change_period`).
            let period = TICK.with(|t| t.period.get()).unwrap_or(period);
            let (slot, wait) = next_tick(grid.elapsed(), period, last);
            glommio::timer::sleep(wait).await;
            last = Some((period, slot));
            WAKEUPS.inc();
            // Readers first, so what they read goes out in this tick's writes: they run
            // before this task resumes (it yields to the back of the run queue). Then once
            // more, so the mesh pumps the readers woke hand this tick's frames to the other
            // cores before this core's own pass: those cores then write their players while
            // this one writes its own, as the floor's writer threads do, rather than after it
            // (BENCHMARKS.md "Wave 7").
            let readers = TICK.with(|t| t.readers.take());
            if !readers.is_empty() {
                for waker in readers {
                    waker.wake();
                }
                futures_lite::future::yield_now().await;
                futures_lite::future::yield_now().await;
            }
            advance();
        }
    })
    .detach();
}

/// The next tick `elapsed` after the node's grid started, and how long to sleep for it: the
/// next multiple of `period`, so every core ticks at the same instants, and a clock that
/// parked wakes on the cadence it would have kept (a frame waits at most a window, half a
/// window on average). `last` (the period and slot of this clock's previous tick) skips a
/// slot already ticked, should a timer fire a little early.
fn next_tick(
    elapsed: Duration,
    period: Duration,
    last: Option<(Duration, u128)>,
) -> (u128, Duration) {
    let period_ns = period.as_nanos().max(1);
    let mut slot = elapsed.as_nanos() / period_ns + 1;
    if let Some((last_period, last_slot)) = last {
        if last_period == period && slot <= last_slot {
            slot = last_slot + 1;
        }
    }
    let wait = (slot * period_ns).saturating_sub(elapsed.as_nanos());
    (
        slot,
        Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX)),
    )
}

/// Resolves at once while a writer or reader waits for the next tick; otherwise parks the
/// clock (waking the chores, which then use timers of their own) until one does.
async fn park_while_unwanted() {
    poll_fn(|cx| {
        TICK.with(|t| {
            if !t.waiters.borrow().is_empty()
                || !t.readers.borrow().is_empty()
                || t.pass_wanted.get()
            {
                return Poll::Ready(());
            }
            *t.parked.borrow_mut() = Some(cx.waker().clone());
            for chore in t.chores.take() {
                chore.wake();
            }
            Poll::Pending
        })
    })
    .await;
}

/// Restarts a parked clock: something waits for the next tick.
fn unpark(t: &TickState) {
    if let Some(clock) = t.parked.take() {
        clock.wake();
    }
}

/// This core's tick period, once its clock started.
pub fn period() -> Option<Duration> {
    TICK.with(|t| t.period.get())
}

/// Whether this core's clock runs now (started and not parked).
pub fn running() -> bool {
    TICK.with(|t| t.period.get().is_some() && t.parked.borrow().is_none())
}

/// Moves to the next epoch, writes the players the tick writes itself, and wakes what waited.
fn advance() {
    let (mut waiters, chores, pass) = TICK.with(|t| {
        t.epoch.set(t.epoch.get() + 1);
        let spare = t.spare.take();
        (
            t.waiters.replace(spare),
            t.chores.take(),
            t.pass_wanted.replace(false),
        )
    });
    if pass {
        crate::sendpass::window::pass();
    }
    for waker in waiters.drain(..).chain(chores) {
        waker.wake();
    }
    TICK.with(|t| *t.spare.borrow_mut() = waiters);
}

/// Runs the next tick's writes now, without waiting for the clock: for input that already
/// waited a tick elsewhere (another core's batch). Does nothing when no clock runs here.
pub fn flush_now() {
    if TICK.with(|t| t.period.get().is_some()) {
        advance();
    }
}

/// Has the next tick run the tick pass ([`crate::sendpass::window`]); nothing when no clock
/// runs here.
pub fn want_pass() {
    TICK.with(|t| {
        if t.period.get().is_some() && !t.pass_wanted.replace(true) {
            unpark(t);
        }
    });
}

/// Ticks so far on this core (0 before the clock starts).
pub fn epoch() -> u64 {
    TICK.with(|t| t.epoch.get())
}

/// Wakes `waker` at this core's next tick (at once when no clock runs here).
pub fn wake_at_next(waker: Waker) {
    let waker = TICK.with(|t| {
        if t.period.get().is_some() {
            t.waiters.borrow_mut().push(waker);
            unpark(t);
            None
        } else {
            Some(waker)
        }
    });
    if let Some(w) = waker {
        w.wake();
    }
}

/// Resolves at this core's next tick, before that tick's writers run (at once when no clock
/// runs here). For readers whose input should go out in the same tick. An early wake-up
/// resolves it early, which only costs the caller a read that finds little.
pub async fn before_next() {
    let mut registered = false;
    poll_fn(|cx| {
        if registered || !TICK.with(|t| t.period.get().is_some()) {
            return Poll::Ready(());
        }
        registered = true;
        TICK.with(|t| {
            t.readers.borrow_mut().push(cx.waker().clone());
            unpark(t);
        });
        Poll::Pending
    })
    .await;
}

/// How much slower than a chore's period a tick may be for the chore to ride it anyway: at a
/// 333 ms window the 100 ms housekeeping runs at each tick, not on a timer of its own (three
/// wake-ups a second per core instead of ten more; BENCHMARKS.md "Wave 7").
const RIDE_SLOWER_TICK: u32 = 4;

/// Whether a chore of `period` rides a `tick` (see [`RIDE_SLOWER_TICK`]).
pub fn rides(tick: Duration, period: Duration) -> bool {
    tick <= period * RIDE_SLOWER_TICK
}

/// How long after it began a chore of `period` riding a parked clock waits for another core's
/// batch before its own timer fires: the period (or the tick, if slower) and half a tick. A
/// core fed by another's batches gets one each tick, and the chore goes with it rather than
/// with a timer of its own just before it.
pub fn backstop(tick: Duration, period: Duration) -> Duration {
    period.max(tick) + tick / 2
}

/// Sleeps about `period` (at least `period` less half a tick, and at least one tick), waking
/// with this core's ticks while its clock runs, so periodic chores (housekeeping) cost the core
/// no wake-ups of their own; a tick slower than `period` (up to [`RIDE_SLOWER_TICK`] times)
/// stretches the sleep to one tick. A parked clock still moves on when another core's batch
/// is written here ([`flush_now`]), and chores ride those too, with a timer for when none
/// comes: at the latest `period` (or the tick, if slower) and half a tick. With no clock or a
/// slower one, an ordinary timer.
pub async fn sleep_aligned(period: Duration) {
    let tick = TICK.with(|t| t.period.get());
    let Some(tick) = tick.filter(|tick| rides(*tick, period)) else {
        glommio::timer::sleep(period).await;
        return;
    };
    let start = Instant::now();
    let deadline = start + period.saturating_sub(tick / 2);
    let latest = start + backstop(tick, period);
    loop {
        let target = epoch() + 1;
        if running() {
            // The next tick, or the clock parking (then the loop goes on as parked).
            poll_fn(|cx| {
                if epoch() >= target || !running() {
                    Poll::Ready(())
                } else {
                    TICK.with(|t| t.chores.borrow_mut().push(cx.waker().clone()));
                    Poll::Pending
                }
            })
            .await;
        } else {
            let flushed = poll_fn(|cx| {
                if epoch() >= target || running() {
                    Poll::Ready(true)
                } else {
                    TICK.with(|t| t.chores.borrow_mut().push(cx.waker().clone()));
                    Poll::Pending
                }
            });
            let timer = async {
                glommio::timer::sleep(latest.saturating_duration_since(Instant::now())).await;
                false
            };
            if !futures_lite::future::or(flushed, timer).await {
                return;
            }
        }
        if Instant::now() >= deadline {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_restarted_clock_keeps_its_cadence() {
        let ms = Duration::from_millis;
        assert_eq!(next_tick(ms(0), ms(100), None), (1, ms(100)));
        assert_eq!(next_tick(ms(3), ms(100), None), (1, ms(97)));
        // Parked for 2.45 windows: the next tick is where the third would have been.
        assert_eq!(next_tick(ms(245), ms(100), None), (3, ms(55)));
        assert_eq!(next_tick(ms(300), ms(100), None), (4, ms(100)));
    }

    #[test]
    fn clocks_started_apart_tick_together() {
        let ms = Duration::from_millis;
        // One core starts its clock 1.234 s after the grid, another 7 ms after: both next
        // tick on a multiple of the period since the grid, not of their own start.
        let (a, wait_a) = next_tick(ms(1234), ms(333), None);
        let (b, wait_b) = next_tick(ms(7), ms(333), None);
        assert_eq!(ms(1234) + wait_a, ms(333) * u32::try_from(a).unwrap());
        assert_eq!(ms(7) + wait_b, ms(333) * u32::try_from(b).unwrap());
        // A timer that wakes late does not shift the cadence: the next tick stays on the grid.
        assert_eq!(
            next_tick(ms(1338), ms(333), Some((ms(333), 4))),
            (5, ms(327))
        );
    }

    #[test]
    fn an_early_timer_does_not_tick_twice() {
        let ms = Duration::from_millis;
        // Tick 4 (at 1332 ms) woke 1 ms early: the next is tick 5, a full window on.
        assert_eq!(
            next_tick(ms(1331), ms(333), Some((ms(333), 4))),
            (5, ms(334))
        );
        // A reloaded period starts on its own grid, from the same instant.
        assert_eq!(
            next_tick(ms(1331), ms(100), Some((ms(333), 4))),
            (14, ms(69))
        );
    }

    #[test]
    fn chores_ride_ticks_up_to_four_times_slower() {
        let ms = Duration::from_millis;
        assert!(rides(ms(100), ms(100)));
        assert!(rides(ms(333), ms(100)));
        assert!(rides(ms(400), ms(100)));
        assert!(!rides(ms(401), ms(100)));
        assert!(!rides(ms(1000), ms(100)));
    }

    /// Keeps this core's clock running: a task that always waits for the next tick.
    fn keep_ticking() {
        glommio::spawn_local(async {
            loop {
                let mut waited = false;
                poll_fn(|cx| {
                    if waited {
                        return Poll::Ready(());
                    }
                    waited = true;
                    wake_at_next(cx.waker().clone());
                    Poll::Pending
                })
                .await;
            }
        })
        .detach();
    }

    #[test]
    fn a_chore_sleeps_one_tick_when_the_tick_is_slower() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                start(Duration::from_millis(40));
                keep_ticking();
                // Let the clock and the waiter run once: the waiter's first wait unparks it.
                futures_lite::future::yield_now().await;
                for _ in 0..3 {
                    let before = epoch();
                    // A 20 ms chore on a 40 ms tick: it wakes with the next tick, not on a
                    // timer of its own between two ticks.
                    sleep_aligned(Duration::from_millis(20)).await;
                    assert_eq!(epoch(), before + 1);
                }
                // A chore slower than the tick still waits about its period (less half a
                // tick): 200 ms on a 40 ms tick is at least 4 ticks.
                let before = epoch();
                sleep_aligned(Duration::from_millis(200)).await;
                assert!(
                    epoch() >= before + 4,
                    "woke after {} ticks",
                    epoch() - before
                );
            })
            .expect("executor")
            .join()
            .expect("test body");
    }

    #[test]
    fn a_parked_clock_s_chores_ride_another_core_s_batches() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                start(Duration::from_millis(100));
                // Nobody waits for a tick: the clock parks once it has run.
                futures_lite::future::yield_now().await;
                assert!(!running());
                // A 100 ms chore: due after 50 ms (its period less half a tick), it waits for
                // the next batch from another core rather than a timer of its own (which
                // would fire at 50 ms; its latest is 200 ms).
                let woke_at = Rc::new(Cell::new(None));
                let chore = Rc::clone(&woke_at);
                glommio::spawn_local(async move {
                    sleep_aligned(Duration::from_millis(100)).await;
                    chore.set(Some(epoch()));
                })
                .detach();
                glommio::timer::sleep(Duration::from_millis(80)).await;
                assert_eq!(woke_at.get(), None, "the chore woke on a timer of its own");
                // Another core's batch, written here.
                flush_now();
                let flushed = epoch();
                for _ in 0..3 {
                    futures_lite::future::yield_now().await;
                }
                assert_eq!(woke_at.get(), Some(flushed));
                assert!(!running(), "the batch restarted the clock");
            })
            .expect("executor")
            .join()
            .expect("test body");
    }
}
