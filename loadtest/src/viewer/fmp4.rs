//! Just enough fMP4 (ISO/IEC 14496-12) demuxing for an HLS viewer, with `mp4-atom`: which
//! track is video (the init segment's `moov`), and in a part or segment (`moof` + `mdat`)
//! where its first video sample's bytes are, whether it is a sync sample, and how many video
//! samples there are. Sans-IO; nothing here panics on bad input: a fragment that does not
//! parse is "no video found".
//!
//! # Tricky parts
//! - `trun.data_offset` counts from `tfhd.base_data_offset` when set, else from the start of
//!   the `moof` (`default-base-is-moof`, which CMAF requires and the only base a
//!   one-`traf`-per-track fragment can mean otherwise).
//! - A sample's size and flags fall back from the `trun` entry to `tfhd`'s defaults to the
//!   init segment's `trex`; bit 0x00010000 of the flags is `sample_is_non_sync_sample`.

use mp4_atom::{Decode, FourCC, Header, Moof, Moov, Traf};

/// Bit of the sample flags: not a sync sample.
const NON_SYNC: u32 = 0x0001_0000;

/// The video track of an init segment, with its fragment defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTrack {
    /// `tkhd.track_id`.
    pub track_id: u32,
    /// `trex.default_sample_size`.
    pub default_size: u32,
    /// `trex.default_sample_flags`.
    pub default_flags: u32,
}

/// The first video sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstVideo<'a> {
    /// Its bytes (length-prefixed NAL units for H.264/H.265).
    pub data: &'a [u8],
    /// A sync sample (a key frame).
    pub keyframe: bool,
    /// Video samples in the fragment's first `moof`.
    pub samples: u64,
}

/// Top-level boxes of `bytes`: kind, offset of the box and its total size.
fn boxes(bytes: &[u8]) -> impl Iterator<Item = (FourCC, usize, usize)> + '_ {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let mut rest = bytes.get(offset..)?;
        let before = rest.len();
        let header = Header::decode(&mut rest).ok()?;
        let header_len = before - rest.len();
        let total = header_len.checked_add(header.size.unwrap_or(rest.len()))?;
        if total > before || total == 0 {
            return None;
        }
        let found = (header.kind, offset, total);
        offset += total;
        Some(found)
    })
}

/// The video track of an init segment, `None` when it has none or does not parse.
pub fn video_track(init: &[u8]) -> Option<VideoTrack> {
    let (_, offset, total) = boxes(init).find(|(kind, ..)| *kind == FourCC::new(b"moov"))?;
    let moov = Moov::decode(&mut init.get(offset..offset + total)?).ok()?;
    let trak = moov
        .trak
        .iter()
        .find(|t| t.mdia.hdlr.handler == FourCC::new(b"vide"))?;
    let track_id = trak.tkhd.track_id;
    let trex = moov
        .mvex
        .as_ref()
        .and_then(|m| m.trex.iter().find(|t| t.track_id == track_id));
    Some(VideoTrack {
        track_id,
        default_size: trex.map_or(0, |t| t.default_sample_size),
        default_flags: trex.map_or(0, |t| t.default_sample_flags),
    })
}

/// The first video sample of the first `moof` of `fragment` that has one.
pub fn first_video<'a>(fragment: &'a [u8], track: &VideoTrack) -> Option<FirstVideo<'a>> {
    for (kind, offset, total) in boxes(fragment) {
        if kind != FourCC::new(b"moof") {
            continue;
        }
        let Ok(moof) = Moof::decode(&mut fragment.get(offset..offset + total)?) else {
            continue;
        };
        let Some(traf) = moof.traf.iter().find(|t| t.tfhd.track_id == track.track_id) else {
            continue;
        };
        if let Some(found) = sample_of(fragment, offset, traf, track) {
            return Some(found);
        }
    }
    None
}

fn sample_of<'a>(
    fragment: &'a [u8],
    moof_offset: usize,
    traf: &Traf,
    track: &VideoTrack,
) -> Option<FirstVideo<'a>> {
    let trun = traf.trun.first()?;
    let entry = trun.samples.get(0)?;
    let base = match traf.tfhd.base_data_offset {
        Some(base) => usize::try_from(base).ok()?,
        None => moof_offset,
    };
    let start = base.checked_add_signed(trun.data_offset.unwrap_or(0) as isize)?;
    let size = entry
        .size
        .or(traf.tfhd.default_sample_size)
        .unwrap_or(track.default_size) as usize;
    let flags = entry
        .flags
        .or(traf.tfhd.default_sample_flags)
        .unwrap_or(track.default_flags);
    Some(FirstVideo {
        data: fragment.get(start..start.checked_add(size)?)?,
        keyframe: flags & NON_SYNC == 0,
        samples: traf.trun.iter().map(|t| t.samples.len() as u64).sum(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let track = VideoTrack { track_id: 1, default_size: 0, default_flags: 0 };
            let _ = video_track(&bytes);
            let _ = first_video(&bytes, &track);
        }
    }
}
