//! Per-address limits on one core, sans-IO: connections open, new connections per second and
//! TLS handshakes per second for each client address, in a table of bounded size.
//!
//! The accept path asks [`AddressTable::admit`] once it knows the client's address (the
//! PROXY header's, when a trusted load balancer sent one) and holds the [`AddressGuard`] for
//! as long as the connection lives; RTMPS asks [`AddressTable::admit_tls`] before each
//! handshake. Time comes in as an argument, so the tests drive it with a fake clock.
//!
//! Each core has its own table (no counter shared between cores: see `[limits]` in the
//! config for what an operator gets). IPv6 clients are keyed by their /64, the block one
//! subscriber gets: keying by address would give an attacker 2^64 keys.
//!
//! # Bounded memory
//! The table holds at most `max_tracked_addresses` entries. An entry with no connection open
//! and full buckets carries no state and is dropped whenever room is needed; past that,
//! entries with no connection open are dropped too (their rate state is forgotten: under a
//! flood from that many addresses the per-address rate is the least of the node's worries,
//! and the per-core connection limit still holds). A new address is refused only while every
//! tracked address holds a connection. Sweeps are O(table) and run at most once per
//! [`SWEEP_EVERY`], so a flood of new addresses costs amortised O(1) per connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// Least time between two sweeps of a full table.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// A token bucket's rate: `per_second` tokens a second, at most `burst` held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Tokens held at most (and at first).
    pub burst: f64,
}

impl Rate {
    /// The rate `per_second`/`burst`, or None when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        (per_second > 0).then(|| Rate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
        })
    }
}

/// A token bucket; starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = self.at.max(now);
    }

    /// Takes one token; false (and nothing taken) when the bucket is empty.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely by `now` (it then carries no state).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(rate, now);
        probe.tokens >= rate.burst
    }
}

/// What the table enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressLimits {
    /// Connections open per address; None: no limit.
    pub max_connections: Option<u32>,
    /// New connections per address.
    pub connect: Option<Rate>,
    /// TLS handshakes per address.
    pub tls: Option<Rate>,
    /// Addresses tracked at most.
    pub max_addresses: usize,
}

impl AddressLimits {
    /// The limits `[limits]` configures.
    pub fn from_config(config: &LimitsConfig) -> AddressLimits {
        AddressLimits {
            max_connections: (config.max_connections_per_address > 0)
                .then_some(config.max_connections_per_address),
            connect: Rate::new(
                config.new_connections_per_second_per_address,
                config.new_connections_burst_per_address,
            ),
            tls: Rate::new(
                config.tls_handshakes_per_second_per_address,
                config.tls_handshakes_burst_per_address,
            ),
            max_addresses: config.max_tracked_addresses.max(1),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The address holds `max_connections_per_address` on this core already.
    #[error("too many connections from this address")]
    Connections,
    /// The address opened connections faster than its rate.
    #[error("new connections from this address too fast")]
    ConnectRate,
    /// The address started TLS handshakes faster than its rate.
    #[error("TLS handshakes from this address too fast")]
    TlsRate,
    /// Every tracked address holds a connection and the table is full.
    #[error("too many client addresses on this core")]
    TableFull,
}

impl Refusal {
    /// Every refusal, for the metric's labels at start-up.
    pub const ALL: [Refusal; 4] = [
        Refusal::Connections,
        Refusal::ConnectRate,
        Refusal::TlsRate,
        Refusal::TableFull,
    ];

    /// The `reason` label of `corecast_connections_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "address_connections",
            Refusal::ConnectRate => "address_rate",
            Refusal::TlsRate => "tls_handshake_rate",
            Refusal::TableFull => "address_table_full",
        }
    }
}

/// The key a client address is counted under: IPv4 (mapped ones too) as is, IPv6 by its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[derive(Debug)]
struct Entry {
    open: u32,
    connect: Option<TokenBucket>,
    tls: Option<TokenBucket>,
}

/// One core's per-address state.
#[derive(Debug)]
pub struct AddressTable {
    limits: AddressLimits,
    entries: HashMap<IpAddr, Entry>,
    last_sweep: Option<Instant>,
}

impl AddressTable {
    /// An empty table enforcing `limits`.
    pub fn new(limits: AddressLimits) -> AddressTable {
        AddressTable {
            limits,
            entries: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Connections `ip`'s key holds open now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.entries.get(&address_key(ip)).map_or(0, |e| e.open)
    }

    /// Counts one more connection from `ip` at `now`, or says why not. Every admit must be
    /// matched by a [`release`](Self::release) (an [`AddressGuard`] does it).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let limits = self.limits;
        let entry = self.entry(address_key(ip), now)?;
        if limits.max_connections.is_some_and(|max| entry.open >= max) {
            return Err(Refusal::Connections);
        }
        if let (Some(rate), Some(bucket)) = (limits.connect, entry.connect.as_mut()) {
            if !bucket.take(rate, now) {
                return Err(Refusal::ConnectRate);
            }
        }
        entry.open += 1;
        Ok(())
    }

    /// Counts one of `ip`'s connections out.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.get_mut(&address_key(ip)) {
            entry.open = entry.open.saturating_sub(1);
        }
    }

    /// Takes a TLS handshake token for `ip` (which holds a connection, so it is tracked).
    pub fn admit_tls(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Some(rate) = self.limits.tls else {
            return Ok(());
        };
        let entry = self.entry(address_key(ip), now)?;
        let taken = entry
            .tls
            .as_mut()
            .is_none_or(|bucket| bucket.take(rate, now));
        if taken {
            Ok(())
        } else {
            Err(Refusal::TlsRate)
        }
    }

    /// `key`'s entry, made (room permitting) when missing.
    fn entry(&mut self, key: IpAddr, now: Instant) -> Result<&mut Entry, Refusal> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.limits.max_addresses {
            self.make_room(now);
            if self.entries.len() >= self.limits.max_addresses {
                return Err(Refusal::TableFull);
            }
        }
        let limits = self.limits;
        Ok(self.entries.entry(key).or_insert_with(|| Entry {
            open: 0,
            connect: limits.connect.map(|rate| TokenBucket::full(rate, now)),
            tls: limits.tls.map(|rate| TokenBucket::full(rate, now)),
        }))
    }

    /// Drops entries that carry no state, then (if that freed less than an eighth of the
    /// table) every entry without an open connection. At most once per [`SWEEP_EVERY`].
    fn make_room(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        let limits = self.limits;
        let idle = |e: &Entry| {
            let full = |bucket: Option<TokenBucket>, rate: Option<Rate>| match (bucket, rate) {
                (Some(b), Some(r)) => b.is_full(r, now),
                _ => true,
            };
            e.open == 0 && full(e.connect, limits.connect) && full(e.tls, limits.tls)
        };
        self.entries.retain(|_, e| !idle(e));
        if self.entries.len() > limits.max_addresses - limits.max_addresses / 8 {
            self.entries.retain(|_, e| e.open > 0);
        }
    }
}

/// A core's table, shared by its accept tasks and the guards they hand out.
pub type SharedTable = Rc<RefCell<AddressTable>>;

/// One admitted connection, counted against its address until dropped.
#[derive(Debug)]
#[must_use = "the connection is counted only while the guard is held"]
pub struct AddressGuard {
    table: SharedTable,
    ip: IpAddr,
}

impl AddressGuard {
    /// Admits a connection from `ip` at `now` into `table`.
    pub fn admit(table: &SharedTable, ip: IpAddr, now: Instant) -> Result<AddressGuard, Refusal> {
        table.borrow_mut().admit(ip, now)?;
        Ok(AddressGuard {
            table: Rc::clone(table),
            ip,
        })
    }
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        self.table.borrow_mut().release(self.ip);
    }
}

/// Rate-limits one kind of log line: the first line of each second is written, with the
/// number left out since the previous one; a flood of refusals writes one line a second.
#[derive(Debug, Default)]
pub struct LogGate {
    window: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    /// Whether to write a line at `now`; Some(lines left out since the last one written).
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.window = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests;
