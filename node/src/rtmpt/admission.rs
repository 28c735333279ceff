//! Who may open a tunnel: per client address, a cap on the tunnels it holds and a token bucket
//! on its `/open` requests. Sans-IO: addresses and instants in, decisions out.
//!
//! An `/open` costs a whole RTMP session, so one client pipelining thousands of them must not
//! fill the core's tunnel cap and lock everyone else out. Each core keeps its own
//! [`Admission`] (no counter is shared between cores), with the node's per-address limits
//! split evenly among the cores ([`AdmissionLimits::per_core`]).
//!
//! An address is the client's IP; IPv6 addresses count by their /64, the block one host
//! usually gets, so a client cannot dodge the limits by walking its own prefix. The address
//! is whatever the connection's serve function received (the PROXY-protocol address where
//! one is trusted).
//!
//! Entries live while the address holds tunnels or its bucket is still refilling; [`prune`]
//! drops the others, so the table is bounded by the addresses seen in the last few seconds.
//!
//! [`prune`]: Admission::prune

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The per-address limits on one core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionLimits {
    /// Tunnels one address holds at most.
    pub max_tunnels: usize,
    /// `/open` tokens one address gains per second.
    pub rate_per_sec: f64,
    /// Tokens one address can hold (opens at once).
    pub burst: f64,
}

impl AdmissionLimits {
    /// The node's limits split evenly among `cores` (at least one tunnel and one open each).
    pub fn per_core(max_tunnels: usize, rate: u32, burst: u32, cores: usize) -> AdmissionLimits {
        let cores = cores.max(1);
        AdmissionLimits {
            max_tunnels: max_tunnels.div_ceil(cores).max(1),
            rate_per_sec: f64::from(rate) / cores as f64,
            burst: (f64::from(burst) / cores as f64).ceil().max(1.0),
        }
    }
}

/// Why an `/open` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address holds its cap of tunnels.
    TunnelLimit,
    /// The address opens faster than its rate.
    OpenRate,
}

impl Refusal {
    /// Every refusal, for metrics that exist at zero from start-up.
    pub const ALL: [Refusal; 2] = [Refusal::TunnelLimit, Refusal::OpenRate];

    /// A static label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TunnelLimit => "address_tunnel_limit",
            Refusal::OpenRate => "address_open_rate",
        }
    }
}

/// A refusal, and whether it is the address's first since it was last admitted (the one worth
/// a log line; the rest are counted only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// First of a run of refusals for this address.
    pub first: bool,
}

/// The key an address counts under: the IP, or an IPv6 address's /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(_) => AddressKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    AddressKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    tunnels: usize,
    tokens: f64,
    refilled: Instant,
    refusing: bool,
}

/// One core's per-address state.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    addresses: HashMap<AddressKey, Entry>,
}

impl Admission {
    /// No address known yet.
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits,
            addresses: HashMap::new(),
        }
    }

    /// An `/open` from `ip` at `now`: admitted (the address now holds one more tunnel, to be
    /// given back with [`Admission::closed`]) or refused.
    pub fn open(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let limits = self.limits;
        let entry = self.addresses.entry(AddressKey::of(ip)).or_insert(Entry {
            tunnels: 0,
            tokens: limits.burst,
            refilled: now,
            refusing: false,
        });
        refill(entry, &limits, now);
        let refusal = if entry.tunnels >= limits.max_tunnels {
            Some(Refusal::TunnelLimit)
        } else if entry.tokens < 1.0 {
            Some(Refusal::OpenRate)
        } else {
            None
        };
        if let Some(reason) = refusal {
            let first = !entry.refusing;
            entry.refusing = true;
            return Err(Refused { reason, first });
        }
        entry.tokens -= 1.0;
        entry.tunnels += 1;
        entry.refusing = false;
        Ok(())
    }

    /// A tunnel that `ip` opened has closed.
    pub fn closed(&mut self, ip: IpAddr) {
        if let Some(entry) = self.addresses.get_mut(&AddressKey::of(ip)) {
            entry.tunnels = entry.tunnels.saturating_sub(1);
        }
    }

    /// Forgets addresses that hold no tunnel and whose bucket is full again at `now`.
    pub fn prune(&mut self, now: Instant) {
        let limits = self.limits;
        self.addresses.retain(|_, entry| {
            refill(entry, &limits, now);
            entry.tunnels > 0 || entry.tokens < limits.burst
        });
    }

    /// Tunnels `ip`'s address holds.
    pub fn tunnels_of(&self, ip: IpAddr) -> usize {
        self.addresses
            .get(&AddressKey::of(ip))
            .map_or(0, |e| e.tunnels)
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// True when no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

fn refill(entry: &mut Entry, limits: &AdmissionLimits, now: Instant) {
    let elapsed = now.saturating_duration_since(entry.refilled);
    entry.tokens = (entry.tokens + elapsed.as_secs_f64() * limits.rate_per_sec).min(limits.burst);
    entry.refilled = now;
}

/// How long after its last `/open` an address with no tunnel is forgotten at most.
pub fn forget_after(limits: &AdmissionLimits) -> Duration {
    Duration::from_secs_f64(limits.burst / limits.rate_per_sec.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: AdmissionLimits = AdmissionLimits {
        max_tunnels: 4,
        rate_per_sec: 2.0,
        burst: 3.0,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_then_the_rate_then_a_refusal_logged_once() {
        let t0 = Instant::now();
        let mut a = Admission::new(LIMITS);
        for _ in 0..3 {
            assert_eq!(a.open(ip(1), t0), Ok(()));
        }
        let refused = a.open(ip(1), t0).expect_err("burst spent");
        assert_eq!((refused.reason, refused.first), (Refusal::OpenRate, true));
        assert!(!a.open(ip(1), t0).expect_err("still").first);
        assert_eq!(a.open(ip(2), t0), Ok(()), "another address is not affected");
        let later = t0 + Duration::from_millis(500);
        assert_eq!(a.open(ip(1), later), Ok(()), "one token back after 0.5 s");
        assert!(a.open(ip(1), later).expect_err("spent again").first);
    }

    #[test]
    fn an_address_holds_at_most_its_tunnels_until_one_closes() {
        let t0 = Instant::now();
        let mut a = Admission::new(LIMITS);
        let mut t = t0;
        for _ in 0..4 {
            t += Duration::from_secs(1);
            assert_eq!(a.open(ip(1), t), Ok(()));
        }
        t += Duration::from_secs(10);
        let refused = a.open(ip(1), t).expect_err("at the cap");
        assert_eq!(refused.reason, Refusal::TunnelLimit);
        a.closed(ip(1));
        assert_eq!(a.open(ip(1), t), Ok(()));
        assert_eq!(a.tunnels_of(ip(1)), 4);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(AddressKey::of(one), AddressKey::of(other));
        assert_ne!(AddressKey::of(one), AddressKey::of(elsewhere));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(AddressKey::of(mapped), AddressKey::of(ip(1)));
    }

    #[test]
    fn idle_addresses_are_forgotten_and_holders_kept() {
        let t0 = Instant::now();
        let mut a = Admission::new(LIMITS);
        a.open(ip(1), t0).expect("open");
        a.open(ip(2), t0).expect("open");
        a.closed(ip(2));
        a.prune(t0 + forget_after(&LIMITS));
        assert_eq!(a.len(), 1);
        assert_eq!(a.tunnels_of(ip(1)), 1);
    }

    #[test]
    fn limits_are_split_among_cores() {
        let l = AdmissionLimits::per_core(32, 2, 10, 4);
        assert_eq!((l.max_tunnels, l.rate_per_sec, l.burst), (8, 0.5, 3.0));
        let l = AdmissionLimits::per_core(1, 1, 1, 16);
        assert_eq!((l.max_tunnels, l.burst), (1, 1.0));
    }

    proptest! {
        /// However the opens and closes of one address fall, it never holds more than its cap
        /// and is never admitted more than the burst plus what the rate refilled.
        #[test]
        fn admissions_stay_within_the_burst_the_rate_and_the_cap(
            steps in proptest::collection::vec((0u64..2000, any::<bool>()), 1..200)
        ) {
            let t0 = Instant::now();
            let mut a = Admission::new(LIMITS);
            let (mut now, mut admitted, mut held) = (t0, 0u64, 0usize);
            for (gap_ms, close) in steps {
                now += Duration::from_millis(gap_ms);
                if close && held > 0 {
                    a.closed(ip(1));
                    held -= 1;
                } else if a.open(ip(1), now).is_ok() {
                    admitted += 1;
                    held += 1;
                }
                prop_assert!(held <= LIMITS.max_tunnels);
                prop_assert_eq!(a.tunnels_of(ip(1)), held);
                let allowed = LIMITS.burst
                    + now.duration_since(t0).as_secs_f64() * LIMITS.rate_per_sec;
                prop_assert!(admitted as f64 <= allowed + 1e-9);
            }
        }
    }
}
