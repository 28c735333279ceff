use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

use proptest::prelude::*;

use super::*;

/// A waker that counts its wakes.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let c = Arc::new(Counting::default());
    (Arc::clone(&c), Waker::from(c))
}

/// `rate` requests per second, evenly spaced, for `secs` seconds from `start`.
fn feed(a: &mut Activity, start: Instant, rate: u32, secs: u32) -> Instant {
    let step = Duration::from_secs(1) / rate.max(1);
    let mut now = start;
    for _ in 0..rate * secs {
        a.on_request(now);
        now += step;
    }
    now
}

#[test]
fn a_steady_rate_over_the_threshold_makes_the_core_busy_and_silence_ends_it() {
    let mut a = Activity::default();
    let t0 = Instant::now();
    let now = feed(&mut a, t0, BUSY_AT + 50, 3);
    assert!(a.busy());
    // Between the two thresholds it stays busy (hysteresis).
    let now = feed(&mut a, now, (BUSY_AT + IDLE_BELOW) / 2, 3);
    assert!(a.busy());
    // No requests: the tick's roll ends it.
    assert_eq!(a.roll(now + Duration::from_millis(2500)), Some(false));
    assert!(!a.busy());
}

#[test]
fn a_new_connection_is_batched_only_after_its_first_requests() {
    for requests in 0..WARM_UP_REQUESTS {
        assert!(!batched(true, requests));
    }
    assert!(batched(true, WARM_UP_REQUESTS));
    assert!(!batched(false, WARM_UP_REQUESTS + 10));
}

#[test]
fn a_rate_under_the_threshold_never_makes_the_core_busy() {
    let mut a = Activity::default();
    // (Evenly spaced requests can put one more than the rate in a window.)
    feed(&mut a, Instant::now(), BUSY_AT - 2, 5);
    assert!(!a.busy());
}

#[test]
fn an_edge_while_nobody_waits_is_kept_for_the_next_wait() {
    let mut w = Waiters::default();
    let Join::Add(token) = w.join(7) else {
        panic!("first join adds")
    };
    assert_eq!(w.join(7), Join::Known);
    assert!(w.on_event(token, true, false)[0].is_none());
    let (count, waker) = counting();
    assert_eq!(w.wait(7, &waker), Wait::Retry);
    assert_eq!(w.wait(7, &waker), Wait::Parked);
    assert_eq!(w.parked(), 1);
    w.on_event(token, true, false)[0]
        .take()
        .expect("the waiter")
        .wake();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(w.parked(), 0);
}

#[test]
fn after_a_short_read_the_next_waits_for_an_edge_without_reading() {
    let mut w = Waiters::default();
    // Not in the set yet: always read.
    w.after_read(4, true);
    assert!(w.must_read(4));
    let Join::Add(token) = w.join(4) else {
        panic!("first join adds")
    };
    w.before_read(4);
    w.after_read(4, true);
    assert!(!w.must_read(4), "drained, no edge since");
    let (_, waker) = counting();
    assert_eq!(w.wait(4, &waker), Wait::Parked);
    assert!(w.on_event(token, true, false)[0].is_some());
    assert!(w.must_read(4), "an edge came");
    w.before_read(4);
    w.after_read(4, false);
    assert!(w.must_read(4), "a full read may have left bytes");
    // Leaving busy mode forgets it.
    w.after_read(4, true);
    w.take_all();
    assert!(w.must_read(4));
}

#[test]
fn a_read_answers_a_kept_edge() {
    let mut w = Waiters::default();
    let Join::Add(token) = w.join(3) else {
        panic!("first join adds")
    };
    assert!(w.on_event(token, true, false)[0].is_none());
    w.before_read(3);
    let (_, waker) = counting();
    assert_eq!(w.wait(3, &waker), Wait::Parked);
}

#[test]
fn a_stale_token_wakes_nobody() {
    let mut w = Waiters::default();
    let Join::Add(old) = w.join(5) else {
        panic!("first join adds")
    };
    assert!(w.leave(5));
    let Join::Add(new) = w.join(5) else {
        panic!("a new connection on the descriptor joins again")
    };
    assert_ne!(old, new);
    let (_, waker) = counting();
    assert_eq!(w.wait(5, &waker), Wait::Parked);
    assert!(w.on_event(old, true, true)[0].is_none());
    assert!(w.on_event(new, true, false)[0].is_some());
}

#[derive(Debug, Clone)]
enum Op {
    Join(u32),
    BeforeRead(u32),
    AfterRead(u32, bool),
    Wait(u32),
    WaitWritable(u32),
    /// An event for the descriptor's current token (or a stale one when `stale`), with input
    /// and with room.
    Event(u32, bool, bool, bool),
    Leave(u32),
    TakeAll,
}

fn op() -> impl Strategy<Value = Op> {
    let fd = 0u32..6;
    prop_oneof![
        fd.clone().prop_map(Op::Join),
        fd.clone().prop_map(Op::BeforeRead),
        (fd.clone(), any::<bool>()).prop_map(|(f, s)| Op::AfterRead(f, s)),
        fd.clone().prop_map(Op::Wait),
        fd.clone().prop_map(Op::WaitWritable),
        (fd.clone(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(f, s, r, w)| Op::Event(f, s, r, w)),
        fd.prop_map(Op::Leave),
        Just(Op::TakeAll),
    ]
}

proptest! {
    /// Against a model: the parked count is the wakers held; an event for the current token
    /// wakes the task that waits, and is kept until the next read (a wait before it retries:
    /// never lost); a read is skipped only after a short one with no edge since; a stale
    /// token does nothing; every parked task is woken at most once.
    #[test]
    fn waiters_follow_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let mut w = Waiters::default();
        // Per fd: current token (if joined), stale tokens, ready flag, parked waker's counter.
        let mut tokens: [Option<u64>; 6] = [None; 6];
        let mut stale: [Vec<u64>; 6] = Default::default();
        let mut ready = [false; 6];
        let mut drained = [false; 6];
        let mut parked: [Option<Arc<Counting>>; 6] = Default::default();
        let mut writers: [Option<Arc<Counting>>; 6] = Default::default();
        let mut woken_expected = 0usize;
        let mut all: Vec<Arc<Counting>> = Vec::new();
        for op in ops {
            match op {
                Op::Join(fd) => {
                    let i = fd as usize;
                    match (w.join(fd), tokens[i]) {
                        (Join::Known, Some(_)) => {}
                        (Join::Add(t), None) => {
                            prop_assert!(stale[i].iter().all(|s| *s != t));
                            tokens[i] = Some(t);
                            ready[i] = false;
                            drained[i] = false;
                        }
                        (got, had) => prop_assert!(false, "join {got:?} with {had:?}"),
                    }
                }
                Op::BeforeRead(fd) => {
                    w.before_read(fd);
                    ready[fd as usize] = false;
                }
                Op::AfterRead(fd, short) => {
                    w.after_read(fd, short);
                    if tokens[fd as usize].is_some() {
                        drained[fd as usize] = short;
                    }
                }
                Op::Wait(fd) => {
                    let i = fd as usize;
                    if tokens[i].is_none() {
                        continue; // the driver always joins first
                    }
                    let (c, waker) = counting();
                    let got = w.wait(fd, &waker);
                    if std::mem::take(&mut ready[i]) {
                        prop_assert_eq!(got, Wait::Retry);
                    } else {
                        prop_assert_eq!(got, Wait::Parked);
                        // A replaced waker is not woken (the task polled again with its new one).
                        parked[i] = Some(Arc::clone(&c));
                        all.push(c);
                    }
                }
                Op::WaitWritable(fd) => {
                    let i = fd as usize;
                    if tokens[i].is_none() {
                        continue; // the driver always joins first
                    }
                    let (c, waker) = counting();
                    w.wait_writable(fd, &waker);
                    writers[i] = Some(Arc::clone(&c));
                    all.push(c);
                }
                Op::Event(fd, use_stale, readable, writable) => {
                    let i = fd as usize;
                    let token = if use_stale { stale[i].last().copied() } else { tokens[i] };
                    let Some(token) = token else { continue };
                    let [read, write] = w.on_event(token, readable, writable);
                    if use_stale {
                        prop_assert!(read.is_none() && write.is_none());
                        continue;
                    }
                    ready[i] |= readable;
                    for (got, slot, wanted) in
                        [(read, &mut parked[i], readable), (write, &mut writers[i], writable)]
                    {
                        // A waiter of a kind the event did not carry keeps waiting.
                        let had = if wanted { slot.take() } else { None };
                        match (got, had) {
                            (Some(waker), Some(c)) => {
                                waker.wake();
                                woken_expected += 1;
                                prop_assert_eq!(c.0.load(Ordering::SeqCst), 1);
                            }
                            (None, None) => {}
                            (got, had) => prop_assert!(
                                false,
                                "woke {:?}, expected {}", got.is_some(), had.is_some()
                            ),
                        }
                    }
                }
                Op::Leave(fd) => {
                    let i = fd as usize;
                    prop_assert_eq!(w.leave(fd), tokens[i].is_some());
                    if let Some(t) = tokens[i].take() {
                        stale[i].push(t);
                    }
                    parked[i] = None;
                    writers[i] = None;
                    ready[i] = false;
                    drained[i] = false;
                }
                Op::TakeAll => {
                    let wakers = w.take_all();
                    let expected = parked.iter_mut().filter_map(Option::take).count()
                        + writers.iter_mut().filter_map(Option::take).count();
                    drained = [false; 6];
                    prop_assert_eq!(wakers.len(), expected);
                    for waker in wakers {
                        waker.wake();
                        woken_expected += 1;
                    }
                }
            }
            let model_parked = parked.iter().chain(&writers).filter(|p| p.is_some()).count();
            prop_assert_eq!(w.parked(), model_parked);
            // A read may be skipped only when it cannot find anything: in the set, drained by
            // the last read, and no edge since (edge-triggering reports any later input).
            for fd in 0..6u32 {
                let i = fd as usize;
                let skip = tokens[i].is_some() && drained[i] && !ready[i];
                prop_assert_eq!(w.must_read(fd), !skip);
            }
        }
        let woken: usize = all.iter().map(|c| c.0.load(Ordering::SeqCst)).sum();
        prop_assert_eq!(woken, woken_expected);
        prop_assert!(all.iter().all(|c| c.0.load(Ordering::SeqCst) <= 1));
    }

    /// A rate at or over `BUSY_AT` for two whole seconds makes the core busy; one under
    /// `IDLE_BELOW` (less one) for two whole seconds makes it not busy, whatever came before.
    #[test]
    fn activity_follows_the_rate(rates in proptest::collection::vec(1u32..400, 1..6)) {
        let mut a = Activity::default();
        let mut now = Instant::now();
        for rate in rates {
            now = feed(&mut a, now, rate, 2);
            a.roll(now);
            if rate >= BUSY_AT {
                prop_assert!(a.busy(), "rate {rate}");
            } else if rate + 1 < IDLE_BELOW {
                // (Evenly spaced requests can put one more than the rate in a window.)
                prop_assert!(!a.busy(), "rate {rate}");
            }
        }
    }
}

/// The HTTP listener's batched accept (`hub::Member::poll_accept`): one edge can stand for a
/// burst of connections, so after an accept that got one the next call tries again; after one
/// that found none the task waits for an edge without trying, and the edge wakes it.
#[test]
fn a_listener_accepts_a_burst_behind_one_edge_then_waits_for_the_next() {
    let mut w = Waiters::default();
    let listener = 9;
    let Join::Add(token) = w.join(listener) else {
        panic!("a new socket is added");
    };
    // EAGAIN on the first try: drained, so the next call parks without trying.
    w.before_read(listener);
    w.after_read(listener, true);
    assert!(!w.must_read(listener));
    let (woken, waker) = counting();
    assert_eq!(w.wait(listener, &waker), Wait::Parked);
    // Three connections arrive: one edge.
    let [read, _] = w.on_event(token, true, false);
    read.expect("the accept loop is woken").wake();
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    // Each accept that got a connection leaves the next call trying again.
    for _ in 0..3 {
        assert!(w.must_read(listener), "a queued connection is left behind");
        w.before_read(listener);
        w.after_read(listener, false);
    }
    // The fourth try finds none: wait for the next edge.
    assert!(w.must_read(listener));
    w.before_read(listener);
    w.after_read(listener, true);
    assert!(!w.must_read(listener));
    assert_eq!(w.wait(listener, &waker), Wait::Parked);
    assert_eq!(w.parked(), 1);
}
