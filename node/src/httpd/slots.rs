//! What one core's HTTP port shares among its connections: the connections themselves (so
//! that an idle one can make room for a new one at the cap) and the request-body bytes being
//! read right now (bounded in total, so many slow bodies cannot add up).
//!
//! Both are per core and per port (by its label), kept with the core's feature registry: no
//! counter is shared between cores. The connection cap itself is the accept loop's
//! ([`crate::accept`]); this only chooses whom to close when the port is full.
//!
//! *Eviction:* when a new connection takes the port's last slot, the connection that has been
//! idle (kept alive with no request) the longest is closed ([`Deadlines::evict`]), so that
//! idle connections, however many a client opens, never lock out the next request: a health
//! check or a player gets in, and a connection in the middle of a request is never cut for it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Instant;

use super::deadline::Deadlines;

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

/// One port's connections and body bytes on one core.
#[derive(Default)]
pub struct Slots {
    /// Live connections, oldest first (dead ones are dropped as they are met).
    conns: RefCell<VecDeque<Weak<Deadlines>>>,
    /// Request-body bytes held by requests still being read.
    body_bytes: Cell<usize>,
}

impl Slots {
    /// Registers a new connection; if that makes `max` connections, the one idle longest is
    /// evicted, and true is returned.
    pub fn join(&self, conn: &Rc<Deadlines>, max: usize, now: Instant) -> bool {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.strong_count() > 0);
        conns.push_back(Rc::downgrade(conn));
        if conns.len() < max {
            return false;
        }
        conns
            .iter()
            .filter_map(Weak::upgrade)
            .any(|c| !Rc::ptr_eq(&c, conn) && c.evict(now))
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
    use crate::httpd::deadline::Phase;
    use std::time::Duration;

    fn conn(now: Instant) -> Rc<Deadlines> {
        Deadlines::new(Duration::from_secs(30), Duration::from_secs(5), now)
    }

    #[test]
    fn the_last_slot_evicts_the_oldest_idle_connection() {
        let now = Instant::now();
        let slots = Slots::default();
        let (a, b) = (conn(now), conn(now));
        let _busy = a.on_request(now);
        assert!(!slots.join(&a, 3, now));
        assert!(!slots.join(&b, 3, now));
        let c = conn(now);
        assert!(slots.join(&c, 3, now), "the third of three evicts one");
        assert_eq!(a.phase(), Phase::Request, "not the one in a request");
        assert_eq!(b.phase(), Phase::Evicted, "the oldest idle one");
        assert_eq!(c.phase(), Phase::Idle, "never the newcomer");
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
        assert!(!slots.join(&kept, 2, now), "the dropped ones count for nothing");
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
