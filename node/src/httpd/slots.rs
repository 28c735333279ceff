//! What one core's HTTP port shares among its connections: the connections themselves (so
//! that an idle one can make room for a new one at the cap) and the request-body bytes being
//! read right now (bounded in total, so many slow bodies cannot add up).
//!
//! Both are per core and per port (by its label), kept with the core's feature registry: no
//! counter is shared between cores. The connection cap itself is the accept loop's
//! ([`crate::accept`]); this only chooses whom to close when the port is full.
//!
//! *Eviction:* once a new connection leaves less than an eighth of the port's slots free, the
//! connection that has been idle (connected or kept alive with no request) the longest is
//! closed ([`Deadlines::evict`]), so that idle connections, however many a client opens, never
//! lock out the next request: a health check or a player gets in, and a connection in the
//! middle of a request is never cut for it. The eighth kept free absorbs the moment between an
//! eviction and the evicted task letting go of its slot, during which the accept loop would
//! otherwise refuse.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Instant;

use super::deadline::{Deadlines, Phase};

/// The per-core state of every HTTP port of the core.
#[derive(Default)]
pub struct PortSlots {
    ports: RefCell<Vec<(&'static str, Rc<Slots>)>>,
}

impl PortSlots {
    /// The state of the port named `label`.
    pub fn of(&self, label: &'static str) -> Rc<Slots> {
        let mut ports = self.ports.borrow_mut();
        if let Some((_, slots)) = ports.iter().find(|(l, _)| *l == label) {
            return Rc::clone(slots);
        }
        let slots = Rc::new(Slots::default());
        ports.push((label, Rc::clone(&slots)));
        slots
    }
}

/// The fewest entries the connection list is pruned at (see [`Slots::join`]).
const MIN_PRUNE_AT: usize = 64;

/// One port's connections and body bytes on one core.
#[derive(Default)]
pub struct Slots {
    /// Connections, oldest first; closed ones stay listed until the next prune.
    conns: RefCell<VecDeque<Weak<Deadlines>>>,
    /// The list's length at which closed connections are next dropped from it.
    prune_at: Cell<usize>,
    /// Request-body bytes held by requests still being read.
    body_bytes: Cell<usize>,
}

impl Slots {
    /// Registers a new connection; if that leaves less than an eighth of `max` free, the one
    /// idle longest (other than this one) is evicted, and true is returned.
    ///
    /// Closed connections are dropped from the list when it has doubled since the last prune
    /// (so a join costs O(1) on average, where a scan per join made a ramp of n connections
    /// cost O(n²)), and always before the cap is judged, so that only live ones count.
    pub fn join(&self, conn: &Rc<Deadlines>, max: usize, now: Instant) -> bool {
        let mut conns = self.conns.borrow_mut();
        conns.push_back(Rc::downgrade(conn));
        let near_cap = max - max / 8;
        if conns.len() >= self.prune_at.get().max(MIN_PRUNE_AT) || conns.len() >= near_cap {
            conns.retain(|c| c.strong_count() > 0);
            self.prune_at.set(2 * conns.len());
        }
        if conns.len() < near_cap {
            return false;
        }
        // Idle longest = the earliest idle deadline (each is its idle start + the timeout).
        let victim = conns
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !Rc::ptr_eq(c, conn) && c.phase() == Phase::Idle)
            .min_by_key(|c| c.deadline());
        victim.is_some_and(|c| c.evict(now))
    }

    /// Takes `n` more body bytes if the port's bytes stay within `max`.
    pub fn reserve(self: &Rc<Self>, n: usize, max: usize) -> Option<BodyBytes> {
        let held = self.body_bytes.get();
        if held.saturating_add(n) > max {
            return None;
        }
        self.body_bytes.set(held + n);
        Some(BodyBytes {
            slots: Rc::clone(self),
            n,
        })
    }

    /// Body bytes held now.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes.get()
    }
}

/// Body bytes counted against the port until dropped.
pub struct BodyBytes {
    slots: Rc<Slots>,
    n: usize,
}

impl BodyBytes {
    /// Counts `n` more bytes under this guard if the port stays within `max`.
    pub fn grow(&mut self, n: usize, max: usize) -> bool {
        let held = self.slots.body_bytes.get();
        if held.saturating_add(n) > max {
            return false;
        }
        self.slots.body_bytes.set(held + n);
        self.n += n;
        true
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        let held = self.slots.body_bytes.get();
        self.slots.body_bytes.set(held - self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conn(now: Instant) -> Rc<Deadlines> {
        Deadlines::new(Duration::from_secs(30), Duration::from_secs(5), now)
    }

    #[test]
    fn the_last_slots_evict_the_connection_idle_longest() {
        let t0 = Instant::now();
        let slots = Slots::default();
        let (a, b, c) = (conn(t0), conn(t0), conn(t0));
        let _busy = a.on_request(t0);
        // c was idle since t0; b finished a request later, so has been idle for less long.
        drop(b.on_request(t0));
        assert!(!slots.join(&a, 4, t0));
        assert!(!slots.join(&b, 4, t0));
        assert!(!slots.join(&c, 4, t0));
        let d = conn(t0);
        assert!(slots.join(&d, 4, t0), "the fourth of four evicts one");
        assert_eq!(a.phase(), Phase::Request, "not the one in a request");
        assert_eq!(c.phase(), Phase::Evicted, "the one idle longest");
        assert_eq!(b.phase(), Phase::Idle);
        assert_eq!(d.phase(), Phase::Idle, "never the newcomer");
    }

    #[test]
    fn an_eighth_of_the_slots_is_kept_free() {
        let now = Instant::now();
        let slots = Slots::default();
        let conns: Vec<_> = (0..16).map(|_| conn(now)).collect();
        let evicted: Vec<bool> = conns.iter().map(|c| slots.join(c, 16, now)).collect();
        assert_eq!(
            evicted.iter().position(|e| *e),
            Some(13),
            "from the 14th of 16 on"
        );
    }

    #[test]
    fn closed_connections_leave_their_slot() {
        let now = Instant::now();
        let slots = Slots::default();
        for _ in 0..10 {
            let gone = conn(now);
            assert!(!slots.join(&gone, 2, now));
        }
        let kept = conn(now);
        assert!(
            !slots.join(&kept, 2, now),
            "the dropped ones count for nothing"
        );
    }

    #[test]
    fn the_list_of_a_port_whose_connections_come_and_go_stays_short() {
        let now = Instant::now();
        let slots = Slots::default();
        let kept: Vec<_> = (0..100).map(|_| conn(now)).collect();
        for c in &kept {
            assert!(!slots.join(c, 10_000, now));
        }
        for _ in 0..10_000 {
            let gone = conn(now);
            assert!(!slots.join(&gone, 10_000, now));
        }
        let listed = slots.conns.borrow().len();
        assert!(
            listed <= 2 * 100 + 1,
            "{listed} listed for 100 live connections"
        );
        // Near the cap only the live ones count: 100 live of 120 is not near it.
        assert!(!slots.join(&conn(now), 120, now));
    }

    #[test]
    fn body_bytes_are_bounded_in_total_and_given_back() {
        let slots = Rc::new(Slots::default());
        let mut first = slots.reserve(600, 1000).expect("room");
        assert!(slots.reserve(500, 1000).is_none());
        assert!(first.grow(400, 1000));
        assert!(!first.grow(1, 1000));
        assert_eq!(slots.body_bytes(), 1000);
        drop(first);
        assert_eq!(slots.body_bytes(), 0);
        assert!(slots.reserve(1000, 1000).is_some());
    }
}
