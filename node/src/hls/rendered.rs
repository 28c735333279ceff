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

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_hls::MuxerConfig;

    /// A real x264 `avcC` (320×240 High), as the hls crate's tests use.
    const AVCC: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8,
        0x00,
    ];

    fn push_frame(muxer: &mut Muxer, n: u32) {
        let first = if n.is_multiple_of(25) { 0x17 } else { 0x27 };
        let frame = [first, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        muxer
            .push_video(n * 40, &Bytes::copy_from_slice(&frame))
            .expect("frame");
    }

    #[test]
    fn a_playlist_is_rendered_once_per_change_and_fresh_after_clear() {
        let mut muxer = Muxer::new(MuxerConfig::with_prefix("pfx")).expect("muxer");
        let rendered = Rendered::default();
        assert_eq!(
            rendered.get(&muxer, Flavor::Plain),
            None,
            "no init segment yet"
        );
        let mut config = vec![0x17, 0x00, 0, 0, 0];
        config.extend_from_slice(AVCC);
        muxer.push_video(0, &Bytes::from(config)).expect("config");
        let mut n = 0;
        while muxer.window().listed().next().is_none() {
            push_frame(&mut muxer, n);
            n += 1;
            assert!(n < 1000, "no segment was finished");
        }
        let plain = rendered.get(&muxer, Flavor::Plain).expect("plain");
        let ll = rendered.get(&muxer, Flavor::LowLatency).expect("ll");
        assert_eq!(
            Some(&plain[..]),
            media_playlist(&muxer, Flavor::Plain)
                .as_deref()
                .map(str::as_bytes)
        );
        assert_eq!(
            Some(&ll[..]),
            media_playlist(&muxer, Flavor::LowLatency)
                .as_deref()
                .map(str::as_bytes)
        );
        let again = rendered.get(&muxer, Flavor::Plain).expect("plain");
        assert_eq!(again.as_ptr(), plain.as_ptr(), "shared, not rendered again");
        // Another segment: until cleared the old text stays; after, the new one is rendered.
        let before = muxer.window().current().msn;
        while muxer.window().current().msn == before {
            push_frame(&mut muxer, n);
            n += 1;
        }
        assert_eq!(rendered.get(&muxer, Flavor::Plain).expect("plain"), plain);
        rendered.clear();
        let fresh = rendered.get(&muxer, Flavor::Plain).expect("plain");
        assert_ne!(fresh, plain);
        assert_eq!(
            Some(&fresh[..]),
            media_playlist(&muxer, Flavor::Plain)
                .as_deref()
                .map(str::as_bytes)
        );
    }
}
