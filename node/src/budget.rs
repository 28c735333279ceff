//! The per-core memory budget: what this core's connections hold, and whether a new one may
//! start.
//!
//! The node's budget (`node.memory_budget_bytes`) is divided evenly among its cores, and each
//! core counts only its own connections in plain `Cell`s: no counter is shared between cores,
//! so accounting never touches a contended cache line. A connection reports what it holds
//! where bytes from the peer are accepted (its read buffer, chunk messages half received,
//! replies queued for it but not yet written, plus a fixed cost per connection); media frames
//! are shared between players and counted once, in the GOP cache metric, not here. The one
//! copy a core makes per stream, its frame log's arena (`crate::framelog`), is counted here
//! as well as in that metric, refreshed with the core's stats snapshot each second.
//!
//! Past the budget, new connections on the core are refused (logged and counted by the
//! session); connections already open keep their own per-connection limits.
//!
//! [`CoreBudget`] and [`Charge`] are plain state, tested without I/O.

use std::cell::Cell;
use std::rc::Rc;

use crate::core::CoreContext;

/// What one connection costs before it holds any buffer: its session, queue and task state,
/// and the allocator's share. Measured by `scripts/measure-connection-base.py` (release node
/// on one core, mimalloc): the node's RSS growth per connection minus the buffers it accounts,
/// for 1,000 and 2,000 connections stuck after the handshake (9.2 KiB of RSS each, 2.6 KiB of
/// it read buffer: 6.6 KiB beyond) and for 1,000 `--lite` players of a 1 Mbit/s stream (6.9
/// KiB each, 0.9 KiB of buffers: 6.0 KiB beyond). The larger, rounded up to 8 KiB. It was
/// 32 KiB before the task, queue and read buffer shrank (BENCHMARKS.md, "Memory per connected
/// player").
pub const CONNECTION_BASE_BYTES: usize = 8 * 1024;

/// This core's budget, its share set from the config on first use (and its gauge with it).
pub fn of_core(ctx: &CoreContext) -> Rc<CoreBudget> {
    let budget = ctx.feature::<CoreBudget>();
    if budget.limit() == 0 {
        let share = ctx.config().node.memory_budget_bytes / ctx.config().effective_cores().max(1);
        budget.set_limit(share.max(1));
        ctx.metrics.memory_budget_bytes.set(share as i64);
    }
    budget
}

/// One core's share of the node's memory budget and what its connections hold now.
#[derive(Debug, Default)]
pub struct CoreBudget {
    limit: Cell<usize>,
    accounted: Cell<usize>,
    refused: Cell<u64>,
    /// What the core's streams hold per stream, not per connection (their frame logs'
    /// arenas), as last set: part of `accounted`.
    stream_bytes: Cell<usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the core's connections hold {accounted} bytes, at or over its {limit}-byte memory budget")]
pub struct OverBudget {
    /// Bytes accounted on the core.
    pub accounted: usize,
    /// The core's share of the budget.
    pub limit: usize,
}

impl CoreBudget {
    /// A core's budget of `limit` bytes.
    pub fn new(limit: usize) -> CoreBudget {
        let budget = CoreBudget::default();
        budget.set_limit(limit);
        budget
    }

    /// Sets the core's share (once, when the core starts).
    pub fn set_limit(&self, limit: usize) {
        self.limit.set(limit);
    }

    /// The core's share of the node's budget.
    pub fn limit(&self) -> usize {
        self.limit.get()
    }

    /// What the core's connections hold now, as they reported it.
    pub fn accounted(&self) -> usize {
        self.accounted.get()
    }

    /// The core's streams hold `bytes` now, besides their connections (the frame logs'
    /// arenas, issue 19 item 2): counted in the budget, replacing what was set before.
    pub fn set_stream_bytes(&self, bytes: usize) {
        let accounted = self.accounted.get() - self.stream_bytes.get() + bytes;
        self.accounted.set(accounted);
        self.stream_bytes.set(bytes);
    }

    /// Connections refused so far for being over budget.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Admits a new connection, charged [`CONNECTION_BASE_BYTES`] until it reports more, or
    /// refuses it (and counts the refusal) when the core is at or over its budget.
    pub fn admit(self: &Rc<Self>) -> Result<Charge, OverBudget> {
        let accounted = self.accounted.get();
        if accounted >= self.limit.get() {
            self.refused.set(self.refused.get() + 1);
            return Err(OverBudget {
                accounted,
                limit: self.limit.get(),
            });
        }
        let charge = Charge {
            budget: Rc::clone(self),
            held: Cell::new(0),
        };
        charge.set(CONNECTION_BASE_BYTES);
        Ok(charge)
    }
}

/// What one connection holds, counted in its core's budget until dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Rc<CoreBudget>,
    held: Cell<usize>,
}

impl Charge {
    /// The connection holds `bytes` now (replacing what it reported before).
    pub fn set(&self, bytes: usize) {
        let accounted = self.budget.accounted.get() - self.held.get() + bytes;
        self.budget.accounted.set(accounted);
        self.held.set(bytes);
    }

    /// What this connection reported last.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// What all the core's connections hold now.
    pub fn core_total(&self) -> usize {
        self.budget.accounted()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn connections_are_admitted_until_the_core_is_over_its_share() {
        let budget = Rc::new(CoreBudget::new(3 * CONNECTION_BASE_BYTES));
        let a = budget.admit().expect("first");
        let b = budget.admit().expect("second");
        assert_eq!(budget.accounted(), 2 * CONNECTION_BASE_BYTES);
        b.set(CONNECTION_BASE_BYTES + 10);
        let c = budget.admit().expect("third: 2 bases + 10 < 3 bases");
        let refused = budget.admit().expect_err("over budget");
        assert_eq!(refused.limit, 3 * CONNECTION_BASE_BYTES);
        assert_eq!(budget.refused(), 1);
        drop(c);
        b.set(CONNECTION_BASE_BYTES);
        let _d = budget.admit().expect("room again");
        drop(a);
        drop(b);
        assert_eq!(budget.accounted(), CONNECTION_BASE_BYTES);
    }

    #[test]
    fn stream_bytes_count_in_the_budget_once_whatever_is_set_last() {
        let budget = Rc::new(CoreBudget::new(3 * CONNECTION_BASE_BYTES));
        let a = budget.admit().expect("first");
        budget.set_stream_bytes(CONNECTION_BASE_BYTES);
        budget.set_stream_bytes(2 * CONNECTION_BASE_BYTES);
        assert_eq!(budget.accounted(), 3 * CONNECTION_BASE_BYTES);
        assert!(budget.admit().is_err(), "the streams' arenas take the room");
        budget.set_stream_bytes(0);
        drop(a);
        assert_eq!(budget.accounted(), 0);
    }

    #[test]
    fn a_zero_budget_refuses_everything() {
        let budget = Rc::new(CoreBudget::new(0));
        assert!(budget.admit().is_err());
        assert_eq!(budget.accounted(), 0);
    }

    proptest! {
        /// Whatever connections report and in whatever order they close, the core's total is
        /// the sum of what the open ones reported last, and zero once all are gone.
        #[test]
        fn the_total_is_the_sum_of_the_last_reports(
            reports in proptest::collection::vec((0usize..8, 0usize..1_000_000), 0..200),
            closes in proptest::collection::vec(0usize..8, 0..8),
        ) {
            let budget = Rc::new(CoreBudget::new(usize::MAX));
            let mut open: Vec<Option<Charge>> =
                (0..8).map(|_| budget.admit().ok()).collect();
            for (who, bytes) in reports {
                if let Some(charge) = &open[who] {
                    charge.set(bytes);
                }
            }
            for who in closes {
                open[who] = None;
            }
            let expected: usize = open.iter().flatten().map(Charge::held).sum();
            prop_assert_eq!(budget.accounted(), expected);
            drop(open);
            prop_assert_eq!(budget.accounted(), 0);
        }
    }
}
