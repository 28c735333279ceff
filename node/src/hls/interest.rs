//! HLS viewers on an edge: a playlist request for a stream counts as a player of it on the
//! request's core (`CoreContext::add_interest`), so the edge pulls the stream as it does for
//! RTMP players, and lets go [`LINGER`] after this core's last HLS request for it.
//!
//! Each core keeps its own interests (no lock): one per stream name, with the time of the
//! last request, released by a timer task. The names held are capped per core
//! ([`MAX_INTERESTS`]): past it a request for a new name is not pulled for (it gets 404 if the
//! stream is not here), so a flood of made-up names cannot hold unbounded pulls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::CoreContext;

/// How long an interest outlives this core's last HLS request for the stream (players
/// reload the playlist every part, so a gap this long means they left).
pub const LINGER: Duration = Duration::from_secs(30);
/// Stream names one core holds interests in at most.
pub const MAX_INTERESTS: usize = 1000;

/// This core's interests: stream key → last request.
#[derive(Default)]
struct Interests(RefCell<HashMap<String, Instant>>);

/// Notes a playlist request for `key`: on a node that pulls, the first one registers an
/// interest (which may start a pull) and every one keeps it alive.
pub fn touch(ctx: &Rc<CoreContext>, key: &str) {
    if !ctx.config().cluster.pulls() {
        return;
    }
    let interests = ctx.feature::<Interests>();
    let mut map = interests.0.borrow_mut();
    if let Some(last) = map.get_mut(key) {
        *last = Instant::now();
        return;
    }
    if map.len() >= MAX_INTERESTS {
        ctx.metrics.error("hls_interests_full");
        return;
    }
    map.insert(key.to_owned(), Instant::now());
    drop(map);
    ctx.add_interest(key);
    let (ctx, key) = (Rc::clone(ctx), key.to_owned());
    glommio::spawn_local(async move { linger(ctx, key).await }).detach();
}

/// Releases the interest in `key` now (a request that waited the whole hold for the stream):
/// the plane then forgets the failed pull, and the next request asks upstream again.
pub fn release(ctx: &CoreContext, key: &str) {
    let interests = ctx.feature::<Interests>();
    let held = interests.0.borrow_mut().remove(key).is_some();
    if held {
        ctx.remove_interest(key);
    }
}

/// Releases the interest in `key` once no request came for [`LINGER`].
async fn linger(ctx: Rc<CoreContext>, key: String) {
    let interests = ctx.feature::<Interests>();
    loop {
        let last = interests.0.borrow().get(&key).copied();
        let Some(last) = last else {
            return;
        };
        let left = LINGER.saturating_sub(last.elapsed());
        if left.is_zero() {
            interests.0.borrow_mut().remove(&key);
            ctx.remove_interest(&key);
            return;
        }
        glommio::timer::sleep(left).await;
    }
}
