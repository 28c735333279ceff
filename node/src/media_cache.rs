//! `MediaCache`: what a player joining mid-stream needs before live frames, for every track.
//!
//! A stream may carry several audio and video tracks (Enhanced RTMP v2 multitrack). A joiner
//! needs, per track, its last sequence header and its last configuration packets that are not
//! sequence headers (audio MultichannelConfig, video Metadata such as HDR `colorInfo`, video
//! MPEG2TSSequenceStart), then a key frame of each video track and what followed it. The frames'
//! class (`corecast_common::ertmp::Class`) says which tracks a frame concerns and what it is;
//! legacy media is all track 0, so a legacy stream is cached exactly as before multitrack.
//!
//! # Tricky parts
//! - Configuration is keyed by (audio/video, track id, kind of packet): a new sequence start
//!   for a track replaces the old one even when its FourCC changed (a track has one codec at a
//!   time). One multitrack message may configure several tracks; it is held once per track
//!   and replayed once, and everything is replayed in the order it arrived, so a later packet
//!   still overrides an earlier one at the player as it did live.
//! - The GOP starts at the oldest of the video tracks' latest key frames, so that every video
//!   track has a key frame in it even when the tracks' key frames are not aligned (with
//!   aligned key frames this is the last key frame, as for one track). A video frame of a track
//!   whose key frame has not been replayed yet is skipped when the GOP is replayed.
//! - A sequence end forgets its tracks' configuration and their key-frame position; the end
//!   itself goes to the players that are there, not to joiners.
//! - Bounded: the GOP by `max_bytes` (as before), the configuration by
//!   [`MAX_CONFIG_ENTRIES`] keys; a key beyond that is not cached (live players still get it).

use std::collections::{BTreeMap, VecDeque};

use corecast_common::ertmp::{PacketType, Role, TrackSet};

use crate::frame::{LocalFrame, MediaKind};
use crate::stream::GopSettings;

/// Most configuration keys (kind, track, packet kind) cached per stream: 16 tracks of audio
/// and video with a sequence header and a configuration packet each. A publisher inventing
/// more tracks than that cannot make a stream hold unbounded configuration.
pub const MAX_CONFIG_ENTRIES: usize = 64;

/// Which configuration slot of a track a frame fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    SequenceHeader,
    Config(PacketType),
}

/// One cached configuration frame.
struct ConfigEntry {
    kind: MediaKind,
    track: u8,
    slot: Slot,
    frame: LocalFrame,
    /// Arrival order, to replay in.
    seq: u64,
}

/// The per-track configuration and the GOP of one stream.
pub struct MediaCache {
    configs: Vec<ConfigEntry>,
    next_seq: u64,
    gop: VecDeque<LocalFrame>,
    /// Absolute index of `gop[0]` (frames ever pushed before it).
    gop_first: u64,
    gop_bytes: usize,
    /// Per video track: the absolute index of its latest key frame in the GOP.
    last_key: BTreeMap<u8, u64>,
    settings: GopSettings,
}

impl MediaCache {
    /// An empty cache.
    pub fn new(settings: GopSettings) -> MediaCache {
        MediaCache {
            configs: Vec::new(),
            next_seq: 0,
            gop: VecDeque::new(),
            gop_first: 0,
            gop_bytes: 0,
            last_key: BTreeMap::new(),
            settings,
        }
    }

    /// Forgets everything (the publisher left or a new one started).
    pub fn clear(&mut self) {
        self.configs.clear();
        self.clear_gop();
    }

    /// Bytes held in the GOP.
    pub fn gop_bytes(&self) -> usize {
        self.gop_bytes
    }

    /// An audio or video frame from the upstream (data frames are the replica's business).
    pub fn push(&mut self, frame: &LocalFrame) {
        let class = frame.class;
        match class.role {
            Role::SequenceHeader => self.set_config(frame, Slot::SequenceHeader),
            Role::Config(packet) => self.set_config(frame, Slot::Config(packet)),
            Role::SequenceEnd => self.end_tracks(frame.kind, class.tracks),
            Role::Keyframe if frame.kind == MediaKind::Video => self.push_keyframe(frame),
            Role::Keyframe | Role::Other => self.push_gop(frame),
        }
    }

    /// The configuration frames, once each, in arrival order.
    pub fn configs(&self) -> Vec<LocalFrame> {
        let mut entries: Vec<&ConfigEntry> = self.configs.iter().collect();
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        entries.into_iter().map(|e| e.frame.clone()).collect()
    }

    /// The GOP as a joiner gets it: every frame, except video of a track whose key frame has
    /// not come yet.
    pub fn gop_for_joiner(&self) -> impl Iterator<Item = &LocalFrame> {
        let mut started = TrackSet::default();
        self.gop.iter().filter(move |frame| {
            if frame.kind != MediaKind::Video {
                return true;
            }
            if frame.class.role == Role::Keyframe {
                for track in frame.class.tracks.iter() {
                    started.insert(track);
                }
                return true;
            }
            frame.class.tracks.intersects(&started)
        })
    }

    /// Every GOP frame, in order (to seed another core's replica).
    pub fn gop(&self) -> impl Iterator<Item = &LocalFrame> {
        self.gop.iter()
    }

    /// True when the GOP holds nothing.
    pub fn gop_is_empty(&self) -> bool {
        self.gop.is_empty()
    }

    fn set_config(&mut self, frame: &LocalFrame, slot: Slot) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for track in frame.class.tracks.iter() {
            let full = self.configs.len() >= MAX_CONFIG_ENTRIES;
            let existing = self
                .configs
                .iter_mut()
                .find(|e| e.kind == frame.kind && e.track == track && e.slot == slot);
            match existing {
                Some(entry) => {
                    entry.frame = frame.clone();
                    entry.seq = seq;
                }
                None if !full => self.configs.push(ConfigEntry {
                    kind: frame.kind,
                    track,
                    slot,
                    frame: frame.clone(),
                    seq,
                }),
                None => {}
            }
        }
    }

    fn end_tracks(&mut self, kind: MediaKind, tracks: TrackSet) {
        self.configs
            .retain(|e| e.kind != kind || !tracks.contains(e.track));
        if kind == MediaKind::Video {
            for track in tracks.iter() {
                self.last_key.remove(&track);
            }
        }
    }

    fn push_keyframe(&mut self, frame: &LocalFrame) {
        if !self.settings.enabled {
            return;
        }
        let index = self.gop_first + self.gop.len() as u64;
        for track in frame.class.tracks.iter() {
            self.last_key.insert(track, index);
        }
        self.gop_bytes += frame.held_len();
        self.gop.push_back(frame.clone());
        let start = self.last_key.values().copied().min().unwrap_or(index);
        while self.gop_first < start {
            if let Some(old) = self.gop.pop_front() {
                self.gop_bytes -= old.held_len();
            }
            self.gop_first += 1;
        }
        if self.gop.len() > 1 && self.gop_bytes > self.settings.max_bytes {
            // Unaligned tracks made it too long to keep: start again from this key frame.
            self.clear_gop();
            self.push_keyframe(frame);
        }
    }

    fn push_gop(&mut self, frame: &LocalFrame) {
        if !self.settings.enabled || self.gop.is_empty() {
            return;
        }
        let held = frame.held_len();
        if self.gop_bytes + held > self.settings.max_bytes {
            // Too long a GOP to keep: start again at the next key frame.
            self.clear_gop();
            return;
        }
        self.gop_bytes += held;
        self.gop.push_back(frame.clone());
    }

    fn clear_gop(&mut self) {
        self.gop_first += self.gop.len() as u64;
        self.gop.clear();
        self.gop_bytes = 0;
        self.last_key.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use corecast_common::ertmp::build::{Packet, TrackPart};
    use corecast_common::ertmp::{FourCc, Media, MultitrackType};

    use super::*;
    use crate::frame::FrameData;

    const SETTINGS: GopSettings = GopSettings {
        enabled: true,
        max_bytes: 1 << 20,
    };

    fn frame(kind: MediaKind, payload: Vec<u8>) -> LocalFrame {
        LocalFrame::new(Arc::new(FrameData::encode(
            kind,
            0,
            Bytes::from(payload),
            4096,
        )))
    }

    fn video(frame_type: u8, packet: PacketType, tracks: &[u8]) -> LocalFrame {
        let parts = tracks
            .iter()
            .map(|&id| TrackPart::new(id, FourCc::AVC, &[0, 0, 0, id]))
            .collect();
        let layout = MultitrackType::ManyTracks;
        frame(
            MediaKind::Video,
            Packet::multi(Media::Video, frame_type, packet, layout, parts).encode(),
        )
    }

    fn audio(packet: PacketType, track: u8) -> LocalFrame {
        let part = TrackPart::new(track, FourCc::OPUS, &[track]);
        frame(
            MediaKind::Audio,
            Packet::multi(
                Media::Audio,
                0,
                packet,
                MultitrackType::OneTrack,
                vec![part],
            )
            .encode(),
        )
    }

    fn same(a: &[LocalFrame], b: &[&LocalFrame]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| Arc::ptr_eq(&x.shared(), &y.shared()))
    }

    #[test]
    fn a_legacy_stream_keeps_one_header_each_and_the_gop_from_its_last_keyframe() {
        let mut cache = MediaCache::new(SETTINGS);
        let aac = frame(MediaKind::Audio, vec![0xAF, 0x00, 0x12, 0x10]);
        let avc = frame(MediaKind::Video, vec![0x17, 0x00, 0, 0, 0, 1]);
        let key = frame(MediaKind::Video, vec![0x17, 0x01, 0, 0, 0, 9]);
        let inter = frame(MediaKind::Video, vec![0x27, 0x01, 0, 0, 0, 9]);
        let raw = frame(MediaKind::Audio, vec![0xAF, 0x01, 0x21]);
        for f in [&aac, &avc, &key, &inter, &raw, &key, &raw] {
            cache.push(f);
        }
        assert!(same(&cache.configs(), &[&aac, &avc]));
        let gop: Vec<LocalFrame> = cache.gop_for_joiner().cloned().collect();
        assert!(same(&gop, &[&key, &raw]));
    }

    #[test]
    fn every_track_configuration_is_replayed_once_in_arrival_order() {
        let mut cache = MediaCache::new(SETTINGS);
        let both = video(1, PacketType::SequenceStart, &[0, 1]);
        let meta = video(1, PacketType::Metadata, &[0]);
        let opus = audio(PacketType::SequenceStart, 0);
        let channels = audio(PacketType::MultichannelConfig, 0);
        let opus1 = audio(PacketType::SequenceStart, 1);
        for f in [&both, &meta, &opus, &channels, &opus1] {
            cache.push(f);
        }
        assert!(same(
            &cache.configs(),
            &[&both, &meta, &opus, &channels, &opus1]
        ));
        // A new sequence start of track 1 comes after the message that also configured 0.
        let again = video(1, PacketType::SequenceStart, &[1]);
        cache.push(&again);
        assert!(same(
            &cache.configs(),
            &[&both, &meta, &opus, &channels, &opus1, &again]
        ));
        // Once both tracks have newer ones, the old message is gone.
        let zero = video(1, PacketType::SequenceStart, &[0]);
        cache.push(&zero);
        assert!(same(
            &cache.configs(),
            &[&meta, &opus, &channels, &opus1, &again, &zero]
        ));
    }

    #[test]
    fn a_sequence_end_forgets_its_tracks() {
        let mut cache = MediaCache::new(SETTINGS);
        let start = video(1, PacketType::SequenceStart, &[0, 1]);
        let meta = video(1, PacketType::Metadata, &[1]);
        let opus = audio(PacketType::SequenceStart, 1);
        for f in [&start, &meta, &opus] {
            cache.push(f);
        }
        cache.push(&video(1, PacketType::SequenceEnd, &[1]));
        // The two-track message still configures track 0.
        assert!(same(&cache.configs(), &[&start, &opus]));
        cache.push(&audio(PacketType::SequenceEnd, 1));
        cache.push(&video(1, PacketType::SequenceEnd, &[0]));
        assert!(cache.configs().is_empty());
    }

    #[test]
    fn the_gop_holds_a_keyframe_of_every_video_track_even_unaligned() {
        let mut cache = MediaCache::new(SETTINGS);
        let k0 = video(1, PacketType::CodedFrames, &[0]);
        let i0 = video(2, PacketType::CodedFrames, &[0]);
        let k1 = video(1, PacketType::CodedFramesX, &[1]);
        let i1 = video(2, PacketType::CodedFrames, &[1]);
        let sound = audio(PacketType::CodedFrames, 0);
        let k0_again = video(1, PacketType::CodedFrames, &[0]);
        for f in [&k0, &i0, &k1, &i1, &i0, &sound, &k0_again] {
            cache.push(f);
        }
        // Track 1's last key frame is the older one: the GOP starts there.
        let all: Vec<LocalFrame> = cache.gop().cloned().collect();
        assert!(same(&all, &[&k1, &i1, &i0, &sound, &k0_again]));
        // Track 0's inter frame before its key frame is not replayed.
        let joiner: Vec<LocalFrame> = cache.gop_for_joiner().cloned().collect();
        assert!(same(&joiner, &[&k1, &i1, &sound, &k0_again]));
        // Aligned again: a key frame of both tracks starts the GOP anew.
        let both = video(1, PacketType::CodedFrames, &[0, 1]);
        cache.push(&both);
        let all: Vec<LocalFrame> = cache.gop().cloned().collect();
        assert!(same(&all, &[&both]));
    }

    #[test]
    fn configuration_keys_are_bounded() {
        let mut cache = MediaCache::new(SETTINGS);
        for track in 0..=255u8 {
            cache.push(&audio(PacketType::SequenceStart, track));
            cache.push(&audio(PacketType::MultichannelConfig, track));
        }
        assert_eq!(cache.configs.len(), MAX_CONFIG_ENTRIES);
    }

    /// One step of a random stream: (video?, what, tracks bitmask over tracks 0..3).
    fn arb_step() -> impl proptest::strategy::Strategy<Value = (bool, u8, u8)> {
        use proptest::prelude::*;
        (any::<bool>(), 0u8..6, 1u8..8)
    }

    fn step_frame((is_video, what, mask): (bool, u8, u8)) -> LocalFrame {
        let tracks: Vec<u8> = (0..3).filter(|t| mask & (1 << t) != 0).collect();
        if is_video {
            match what {
                0 => video(1, PacketType::SequenceStart, &tracks),
                1 => video(1, PacketType::Metadata, &tracks),
                2 => video(1, PacketType::SequenceEnd, &tracks),
                3 => video(1, PacketType::CodedFrames, &tracks),
                _ => video(2, PacketType::CodedFrames, &tracks),
            }
        } else {
            match what {
                0 => audio(PacketType::SequenceStart, tracks[0]),
                1 => audio(PacketType::MultichannelConfig, tracks[0]),
                2 => audio(PacketType::SequenceEnd, tracks[0]),
                _ => audio(PacketType::CodedFrames, tracks[0]),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn joiners_get_the_latest_configuration_and_a_keyframe_first_on_every_track(
            steps in proptest::collection::vec(arb_step(), 0..60),
            max_kib in 1usize..8,
        ) {
            let settings = GopSettings { enabled: true, max_bytes: max_kib * 1024 };
            let mut cache = MediaCache::new(settings);
            let mut latest: BTreeMap<(bool, u8, String), LocalFrame> = BTreeMap::new();
            for step in steps {
                let frame = step_frame(step);
                cache.push(&frame);
                let video = frame.kind == MediaKind::Video;
                match frame.class.role {
                    Role::SequenceHeader | Role::Config(_) => {
                        for t in frame.class.tracks.iter() {
                            latest.insert((video, t, format!("{:?}", frame.class.role)), frame.clone());
                        }
                    }
                    Role::SequenceEnd => latest.retain(|k, _| {
                        k.0 != video || !frame.class.tracks.contains(k.1)
                    }),
                    _ => {}
                }
            }
            let configs = cache.configs();
            for frame in latest.values() {
                proptest::prop_assert!(
                    configs.iter().any(|c| Arc::ptr_eq(&c.shared(), &frame.shared())),
                    "the latest configuration of every track is replayed"
                );
            }
            let mut started = TrackSet::default();
            for frame in cache.gop_for_joiner() {
                if frame.kind != MediaKind::Video {
                    continue;
                }
                if frame.class.role == Role::Keyframe {
                    for t in frame.class.tracks.iter() {
                        started.insert(t);
                    }
                } else {
                    proptest::prop_assert!(frame.class.tracks.intersects(&started));
                }
            }
            let held: usize = cache.gop().map(|f| f.held_len()).sum();
            proptest::prop_assert_eq!(held, cache.gop_bytes());
            proptest::prop_assert!(cache.gop().count() <= 1 || held <= settings.max_bytes);
            let first = cache.gop().next().map(|f| f.class.role);
            proptest::prop_assert!(matches!(first, None | Some(Role::Keyframe)));
        }
    }

    #[test]
    fn a_gop_over_its_bound_is_dropped_until_the_next_keyframe() {
        let key = video(1, PacketType::CodedFrames, &[0]);
        let inter = video(2, PacketType::CodedFrames, &[0]);
        let mut cache = MediaCache::new(GopSettings {
            enabled: true,
            max_bytes: key.held_len() * 2 + 1,
        });
        for f in [&key, &inter] {
            cache.push(f);
        }
        assert_eq!(cache.gop().count(), 2);
        cache.push(&inter);
        assert!(cache.gop_is_empty());
        assert_eq!(cache.gop_bytes(), 0);
        cache.push(&inter);
        assert!(cache.gop_is_empty());
        cache.push(&key);
        assert_eq!(cache.gop().count(), 1);
        // An unparsable enhanced frame is still a frame (pass-through), never a key frame.
        cache.push(&frame(MediaKind::Video, vec![0x96, 0x31]));
        assert_eq!(cache.gop().count(), 2);
    }
}
