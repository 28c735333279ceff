//! Streams per node and per client address (`stream.max_streams_per_node`,
//! `stream.max_streams_per_address`): how many publishes may be live at once.
//!
//! A publish takes a [`StreamSlot`] before it claims its name and holds it for as long as it
//! publishes; dropping the slot (however the session ends) gives the place back. The counts
//! are node-wide behind one mutex, touched only on the control path (a publish starting or
//! ending, never per frame), like the directory. The address is the one the session has (the
//! PROXY protocol's where one is trusted); an IPv4-mapped IPv6 address counts as its IPv4
//! address, so one client is not two.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamLimit {
    /// The node publishes `stream.max_streams_per_node` streams already.
    #[error("this node publishes its maximum of {0} streams")]
    Node(usize),
    /// The address publishes `stream.max_streams_per_address` streams already.
    #[error("this address publishes its maximum of {0} streams")]
    Address(usize),
}

impl StreamLimit {
    /// A static name, usable as a metric label (`corecast_errors_total{kind}`).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamLimit::Node(_) => "streams_per_node",
            StreamLimit::Address(_) => "streams_per_address",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only addresses with at least one live publish have an entry.
    per_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Inner {
    max_per_node: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

/// The node's live publishes, counted; shared by every core.
#[derive(Debug, Clone)]
pub struct StreamLimits(Arc<Inner>);

impl StreamLimits {
    /// Limits of at most `max_per_node` publishes, `max_per_address` from one address.
    pub fn new(max_per_node: usize, max_per_address: usize) -> StreamLimits {
        StreamLimits(Arc::new(Inner {
            max_per_node,
            max_per_address,
            counts: Mutex::default(),
        }))
    }

    /// A place for one more publish from `addr`, or the limit that refuses it.
    pub fn try_acquire(&self, addr: IpAddr) -> Result<StreamSlot, StreamLimit> {
        let addr = addr.to_canonical();
        let mut counts = self.lock();
        if counts.total >= self.0.max_per_node {
            return Err(StreamLimit::Node(self.0.max_per_node));
        }
        let of_address = counts.per_address.entry(addr).or_default();
        if *of_address >= self.0.max_per_address {
            return Err(StreamLimit::Address(self.0.max_per_address));
        }
        *of_address += 1;
        counts.total += 1;
        Ok(StreamSlot {
            limits: self.clone(),
            addr,
        })
    }

    /// Live publishes on the node.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Addresses with a live publish (each has an entry only while it publishes).
    pub fn addresses(&self) -> usize {
        self.lock().per_address.len()
    }

    fn release(&self, addr: IpAddr) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&addr);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Every update is a few integer writes: a poisoned lock is still consistent.
        self.0.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One live publish's place in the counts, given back when dropped.
#[derive(Debug)]
#[must_use = "the publish is counted only while the slot is held"]
pub struct StreamSlot {
    limits: StreamLimits,
    addr: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.limits.release(self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_gets_its_share_and_a_freed_slot_makes_room() {
        let limits = StreamLimits::new(10, 2);
        let a = limits.try_acquire(ip(1)).expect("first");
        let _b = limits.try_acquire(ip(1)).expect("second");
        assert_eq!(
            limits.try_acquire(ip(1)).err(),
            Some(StreamLimit::Address(2))
        );
        let _other = limits
            .try_acquire(ip(2))
            .expect("another address has its own share");
        drop(a);
        assert!(limits.try_acquire(ip(1)).is_ok());
    }

    #[test]
    fn the_node_limit_holds_across_addresses() {
        let limits = StreamLimits::new(2, 2);
        let _a = limits.try_acquire(ip(1)).expect("a");
        let _b = limits.try_acquire(ip(2)).expect("b");
        assert_eq!(limits.try_acquire(ip(3)).err(), Some(StreamLimit::Node(2)));
    }

    #[test]
    fn a_mapped_ipv6_address_is_its_ipv4_address() {
        let limits = StreamLimits::new(10, 1);
        let _v4 = limits.try_acquire(ip(1)).expect("v4");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            limits.try_acquire(mapped).err(),
            Some(StreamLimit::Address(1))
        );
    }

    proptest! {
        /// Whatever the order of publishes and ends, the counts stay within the limits, match
        /// the slots held, and nothing is left once every slot is dropped.
        #[test]
        fn counts_follow_the_slots(ops in proptest::collection::vec((any::<bool>(), 0u8..4), 0..64)) {
            let limits = StreamLimits::new(5, 2);
            let mut held: Vec<StreamSlot> = Vec::new();
            for (acquire, who) in ops {
                if acquire {
                    if let Ok(slot) = limits.try_acquire(ip(who)) {
                        held.push(slot);
                    }
                } else if !held.is_empty() {
                    drop(held.remove(who as usize % held.len()));
                }
                prop_assert_eq!(limits.total(), held.len());
                prop_assert!(held.len() <= 5);
                for who in 0..4 {
                    prop_assert!(held.iter().filter(|s| s.addr == ip(who)).count() <= 2);
                }
            }
            held.clear();
            prop_assert_eq!(limits.total(), 0);
            prop_assert_eq!(limits.addresses(), 0);
        }
    }
}
