//! LL-HLS on the node: one `corecast_hls::Muxer` per live stream per node, fed on the core
//! that owns the stream's upstream, read by every core's HTTP handlers.
//!
//! - [`Streams`] (in `NodeShared`) maps `app/name` to the live [`HlsStream`]. The owning core
//!   (a publisher's, or on an edge the one that pulls) starts it when the stream goes live
//!   ([`start`]), feeds it every audio/video frame in `publish_frame` ([`feed`]), and finishes
//!   and unlists it when the stream ends ([`stop`]).
//! - The muxer sits behind a `Mutex` that the owner holds for one push and a reader for one
//!   playlist render or one resource lookup (cloning `Bytes`, never the media): parts and
//!   segments are immutable `Bytes` every core sends as they are. This is the simple form of
//!   the design note in ARCHITECTURE.md (no per-core mirror).
//! - [`notify`]: blocking requests park on a stream's change counter and are woken (from the
//!   owner's thread) when the muxer made something.
//! - [`interest`]: on an edge, HLS viewers count as players, so the stream is pulled.
//! - [`memory`]: each muxer's window in its core's memory budget.
//! - [`auth`]: play authorization of playlist requests.
//! - [`rendered`]: each stream's playlists, rendered once per change.
//! - With `hls.sendfile` (on by default) the owning core copies each finished segment once
//!   into a sealed memfd ([`crate::httpd::sendfile`]) and the window keeps that copy as the
//!   segment's body and its parts' storage (`Muxer::relocate_segment`): the media is held
//!   once, counted in the window's budget as before, and freed when the segment leaves the
//!   window; every plain-HLS segment request is then one `sendfile`. The copy is made
//!   outside the muxer's lock, so readers on other cores never wait for it.
//! - [`serve`]: the routes.
//! - [`lane`]: what the plain-HTTP fast lane answers without hyper ([`crate::httpd::fastlane`]).
//!
//! A fresh random prefix is drawn for every start, so a publisher restart never reuses a name.

pub mod auth;
pub mod interest;
pub mod lane;
pub mod memory;
pub mod notify;
pub mod rendered;
pub mod serve;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use corecast_common::plane::Generation;
use corecast_hls::{Event, Muxer};

use crate::core::CoreContext;
use crate::frame::{FrameData, MediaKind};

/// Random bytes in a prefix (96 bits: 16 URL-safe characters).
const PREFIX_BYTES: usize = 12;

/// One live stream's muxer and what its readers wait on.
pub struct HlsStream {
    /// `app/name`.
    pub key: String,
    /// The publish this muxer belongs to.
    pub generation: Generation,
    /// This publish's path component (also the muxer's), compared without the lock.
    pub prefix: String,
    muxer: Mutex<Muxer>,
    /// Bumped, and its waiters woken, whenever the muxer made something or ended.
    pub changed: notify::Notify,
    /// The playlists as last rendered, read and cleared under the muxer's lock.
    pub rendered: rendered::Rendered,
}

impl HlsStream {
    /// The muxer, locked (a poisoned lock is still usable: the muxer never panics midway).
    pub fn muxer(&self) -> MutexGuard<'_, Muxer> {
        self.muxer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's live HLS streams by `app/name`.
#[derive(Default)]
pub struct Streams {
    map: Mutex<HashMap<String, Arc<HlsStream>>>,
    /// Bumped whenever a stream starts: requests waiting for one (an edge's first HLS
    /// viewer, while the pull connects) look again.
    pub started: notify::Notify,
}

impl Streams {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<HlsStream>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live stream `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<HlsStream>> {
        self.map().get(key).cloned()
    }
}

/// Every reason an HLS muxer is refused or drops a frame that is counted from start-up
/// (`corecast_errors_total{kind}`).
pub const ERROR_KINDS: [&str; 2] = [memory::OVER_BUDGET, NOT_PLACED];

/// The error kind of a finished segment that could not be placed in a memfd (descriptors or
/// memory exhausted): it is served from its parts' heap bytes, copied as without
/// `hls.sendfile`.
pub const NOT_PLACED: &str = "hls_segment_not_placed";

/// A muxer this core feeds and its place in the core's budget.
struct Fed {
    stream: Arc<HlsStream>,
    charge: memory::MuxerCharge,
}

/// The muxers this core feeds, by publish generation. Looked up per published frame
/// ([`feed`]): hashed with aHash, not SipHash (whose hash was 2 % of a publishing core's
/// instructions: BENCHMARKS.md, "pub19"); the keys are the node's own counters, not a peer's.
#[derive(Default)]
struct Owned(std::cell::RefCell<HashMap<Generation, Fed, ahash::RandomState>>);

/// A fresh unguessable path component.
fn new_prefix() -> String {
    let bytes: [u8; PREFIX_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `key` went live from this core (publish `generation`): a new muxer under a new prefix.
pub fn start(ctx: &CoreContext, key: &str, generation: Generation) {
    let config = ctx.config();
    if !config.hls.enabled {
        return;
    }
    let charge = match memory::admit(ctx) {
        Ok(charge) => charge,
        Err(over) => {
            ctx.metrics.error(memory::OVER_BUDGET);
            tracing::warn!(core = ctx.id.0, stream = %key, error = %over, "hls muxer not started");
            return;
        }
    };
    let prefix = new_prefix();
    let muxer = match Muxer::new(config.hls.muxer(prefix.clone())) {
        Ok(muxer) => muxer,
        Err(e) => {
            tracing::warn!(core = ctx.id.0, stream = %key, error = %e, "hls muxer not started");
            return;
        }
    };
    let stream = Arc::new(HlsStream {
        key: key.to_owned(),
        generation,
        prefix,
        muxer: Mutex::new(muxer),
        changed: notify::Notify::default(),
        rendered: rendered::Rendered::default(),
    });
    let old = ctx
        .shared
        .hls
        .map()
        .insert(key.to_owned(), Arc::clone(&stream));
    if let Some(old) = old {
        end(&old);
    }
    ctx.shared.hls.started.bump();
    let owned = ctx.feature::<Owned>();
    let replaced = owned
        .0
        .borrow_mut()
        .insert(generation, Fed { stream, charge });
    if let Some(old) = replaced {
        end(&old.stream);
        old.charge.release(ctx);
    }
}

/// A frame of publish `generation` on its owning core.
pub fn feed(ctx: &CoreContext, generation: Generation, frame: &FrameData) {
    let owned = ctx.feature::<Owned>();
    let owned = owned.0.borrow();
    let Some(Fed { stream, charge }) = owned.get(&generation) else {
        return;
    };
    let mut muxer = stream.muxer();
    let result = match frame.kind {
        MediaKind::Video => muxer.push_video(frame.timestamp, &frame.payload),
        MediaKind::Audio => muxer.push_audio(frame.timestamp, &frame.payload),
        MediaKind::Data => return,
    };
    // Whatever the push changed, the next playlist request renders it.
    stream.rendered.clear();
    if let Err(e) = result {
        count_error(ctx, &stream.key, e);
    }
    let mut made = false;
    let mut finished = None;
    while let Some(event) = muxer.poll_event() {
        match event {
            Event::Init => muxer.set_wall_clock(unix_ms()),
            Event::Segment { msn } => finished = Some(msn),
            _ => {}
        }
        made = true;
    }
    if made {
        charge.set(ctx, memory::held(&muxer));
    }
    let body = finished
        .filter(|_| ctx.config().hls.sendfile)
        .and_then(|msn| Some((msn, muxer.window().segment(msn)?.body())));
    drop(muxer);
    if made {
        stream.changed.bump();
    }
    if let Some((msn, body)) = body {
        place_segment(ctx, stream, msn, &body);
    }
}

/// Whether an HLS request waits for the next part of publish `generation` on this core's
/// muxer (`session::pace` reads the publisher's input at once then).
pub fn viewers_waiting(ctx: &CoreContext, generation: Generation) -> bool {
    let owned = ctx.feature::<Owned>();
    let owned = owned.0.borrow();
    owned
        .get(&generation)
        .is_some_and(|fed| fed.stream.changed.has_waiters())
}

/// Wakes `waker` when an HLS request parks for the next part of publish `generation`
/// (nothing when this core feeds no muxer for it).
pub fn wake_on_viewer(ctx: &CoreContext, generation: Generation, waker: &std::task::Waker) {
    let owned = ctx.feature::<Owned>();
    let owned = owned.0.borrow();
    if let Some(fed) = owned.get(&generation) {
        fed.stream.changed.wake_on_wait(waker);
    }
}

/// Copies finished segment `msn` (its parts' `body`) into a memfd and makes that the
/// segment's storage (see the module header). On failure the segment stays as it was.
fn place_segment(ctx: &CoreContext, stream: &HlsStream, msn: u64, body: &[bytes::Bytes]) {
    match crate::httpd::sendfile::place(body) {
        Ok(whole) => {
            stream.muxer().relocate_segment(msn, whole);
        }
        Err(e) => {
            ctx.metrics.error(NOT_PLACED);
            tracing::warn!(core = ctx.id.0, stream = %stream.key, msn, error = %e,
                "hls segment not placed in a memfd; served by copy");
        }
    }
}

/// Publish `generation` ended on this core: the muxer writes what it holds and is unlisted
/// (its parked requests answer from what it has).
pub fn stop(ctx: &CoreContext, generation: Generation) {
    let owned = ctx.feature::<Owned>();
    let Some(Fed { stream, charge }) = owned.0.borrow_mut().remove(&generation) else {
        return;
    };
    charge.release(ctx);
    let mut map = ctx.shared.hls.map();
    if map
        .get(&stream.key)
        .is_some_and(|s| Arc::ptr_eq(s, &stream))
    {
        map.remove(&stream.key);
    }
    drop(map);
    end(&stream);
}

fn end(stream: &HlsStream) {
    let mut muxer = stream.muxer();
    let _ = muxer.finish();
    stream.rendered.clear();
    drop(muxer);
    stream.changed.bump();
}

fn count_error(ctx: &CoreContext, key: &str, error: corecast_hls::MuxError) {
    // Waiting for the first keyframe is how every stream starts, not an error.
    if error == corecast_hls::MuxError::WaitingForKeyframe {
        return;
    }
    let kind = format!("hls_{}", error.as_str());
    ctx.metrics.error(&kind);
    tracing::debug!(core = ctx.id.0, stream = %key, reason = error.as_str(), "hls dropped a frame");
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
