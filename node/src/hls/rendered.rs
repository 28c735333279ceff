//! Rendered media playlists, kept until the muxer next changes: every viewer of a stream
//! asks for the same text between two parts, so it is rendered once and shared as `Bytes`.
//!
//! The cache is read and cleared only while the muxer's lock is held (lock order: muxer,
//! then this), so a cached text is always the text of the muxer state the reader sees —
//! a blocking reload that found its part ready never gets an older playlist. The owner
//! clears it under the same lock after every push and at the end (see `super::feed`).

use std::sync::Mutex;

use bytes::Bytes;
use corecast_hls::playlist::media_playlist;
use corecast_hls::{Flavor, Muxer};

/// The last rendered text of each flavor, `None` until asked for or after a change.
#[derive(Default)]
pub struct Rendered(Mutex<[Option<Bytes>; 2]>);

impl Rendered {
    /// The media playlist of `muxer` (whose lock the caller holds), rendered at most once
    /// per change; `None` before the init segment exists.
    pub fn get(&self, muxer: &Muxer, flavor: Flavor) -> Option<Bytes> {
        let slot = match flavor {
            Flavor::Plain => 0,
            Flavor::LowLatency => 1,
        };
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(text) = &cache[slot] {
            return Some(text.clone());
        }
        let text = Bytes::from(media_playlist(muxer, flavor)?);
        cache[slot] = Some(text.clone());
        Some(text)
    }

    /// The muxer changed (the caller holds its lock): render again next time.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = [None, None];
    }
}
