//! What a core's HLS muxers hold, in that core's memory budget ([`crate::budget`]).
//!
//! A muxer holds its window: the init segment and every part of the listed, retired and
//! current segments (`corecast_hls::Window::held_bytes`), per stream, until the stream ends.
//! That is media the node keeps on purpose, so it counts against the core's budget like a
//! connection's buffers: the owning core charges each muxer's window, updated whenever the
//! muxer made a part, and `corecast_memory_accounted_bytes` shows it. A muxer is admitted
//! like a connection: on a core at or over its budget no muxer starts (the stream still
//! flows over RTMP and HTTP-FLV; its HLS answers 404), logged and counted as
//! `corecast_errors_total{kind="hls_over_budget"}`.
//!
//! What bounds a window: `hls.window_segments` + 2 retired + the current segment, each cut
//! at a keyframe or at `corecast_hls::muxer::MAX_SEGMENT_BYTES` (16 MiB) when keyframes are
//! rarer than that, so a stream with long GOPs holds at most its bit rate times the window's
//! duration, and never more than that many 16 MiB segments.

use corecast_hls::Muxer;

use crate::budget::{self, Charge, OverBudget};
use crate::core::CoreContext;

/// The error kind of a muxer refused for the core's budget.
pub const OVER_BUDGET: &str = "hls_over_budget";

/// What one muxer holds before any media: its state and its playlist renders.
pub const MUXER_BASE_BYTES: usize = 16 * 1024;

/// A muxer's place in its core's budget, released when dropped.
#[derive(Debug)]
pub struct MuxerCharge(Charge);

/// Admits a new muxer on this core, or refuses it when the core is at or over its budget.
pub fn admit(ctx: &CoreContext) -> Result<MuxerCharge, OverBudget> {
    let charge = budget::of_core(ctx).admit()?;
    charge.set(MUXER_BASE_BYTES);
    ctx.metrics
        .memory_accounted_bytes
        .set(charge.core_total() as i64);
    Ok(MuxerCharge(charge))
}

/// What `muxer` holds: its fixed cost, its init segment and its window's parts.
pub fn held(muxer: &Muxer) -> usize {
    MUXER_BASE_BYTES + muxer.init().map_or(0, |b| b.len()) + muxer.window().held_bytes()
}

impl MuxerCharge {
    /// The muxer holds `bytes` now; the core's gauge follows.
    pub fn set(&self, ctx: &CoreContext, bytes: usize) {
        if bytes != self.0.held() {
            self.0.set(bytes);
            ctx.metrics
                .memory_accounted_bytes
                .set(self.0.core_total() as i64);
        }
    }

    /// Releases the muxer's place; the core's gauge follows.
    pub fn release(self, ctx: &CoreContext) {
        let left = self.0.core_total() - self.0.held();
        drop(self);
        ctx.metrics.memory_accounted_bytes.set(left as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use crate::budget::CoreBudget;

    #[test]
    fn a_window_counts_what_its_parts_hold() {
        // The window's count itself is property-tested in corecast-hls; here: an empty muxer
        // costs its base only.
        let muxer =
            corecast_hls::Muxer::new(corecast_hls::MuxerConfig::with_prefix("p")).expect("a muxer");
        assert_eq!(super::held(&muxer), super::MUXER_BASE_BYTES);
        let budget = Rc::new(CoreBudget::new(super::MUXER_BASE_BYTES));
        let first = budget.admit().expect("room");
        // As `admit` does: a muxer holds its base from the start.
        first.set(super::MUXER_BASE_BYTES);
        assert!(budget.admit().is_err(), "a full core admits no muxer");
        drop(first);
    }
}
