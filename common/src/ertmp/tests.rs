//! Vectors for the E-RTMP v2 parser, the encoder and the classifier.
//!
//! The spec (enhanced-rtmp-v2.md, v2-2025-01-21-b2) shows no hex dumps of v2 messages: it
//! gives the bitstream as pseudocode and the enumerations (packet types, AvMultitrackType,
//! `makeFourCc("…")` values). The hand-assembled vectors below spell those out byte by byte,
//! with the field each byte is, so they are independent of [`super::build`]: each is parsed,
//! and the encoder must produce exactly the same bytes.

use proptest::prelude::*;

use super::build::{command, ModEx, Packet, TrackPart};
use super::*;

fn enhanced(media: Media, payload: &[u8]) -> ExTag {
    match parse(media, payload).unwrap() {
        Tag::Enhanced(tag) => tag,
        other => panic!("not enhanced: {other:?}"),
    }
}

fn bodies<'a>(payload: &'a [u8], tag: &ExTag) -> Vec<(u8, FourCc, &'a [u8])> {
    tag.tracks
        .iter()
        .map(|t| (t.id, t.fourcc, &payload[t.body.clone()]))
        .collect()
}

#[test]
fn the_spec_fourccs_are_their_ascii_bytes() {
    // makeFourCc("…") of the AudioFourCc and VideoFourCc enums.
    let spec: [(FourCc, [u8; 4]); 11] = [
        (FourCc::AC3, [0x61, 0x63, 0x2D, 0x33]),
        (FourCc::EAC3, [0x65, 0x63, 0x2D, 0x33]),
        (FourCc::OPUS, [0x4F, 0x70, 0x75, 0x73]),
        (FourCc::MP3, [0x2E, 0x6D, 0x70, 0x33]),
        (FourCc::FLAC, [0x66, 0x4C, 0x61, 0x43]),
        (FourCc::AAC, [0x6D, 0x70, 0x34, 0x61]),
        (FourCc::VP8, [0x76, 0x70, 0x30, 0x38]),
        (FourCc::VP9, [0x76, 0x70, 0x30, 0x39]),
        (FourCc::AV1, [0x61, 0x76, 0x30, 0x31]),
        (FourCc::AVC, [0x61, 0x76, 0x63, 0x31]),
        (FourCc::HEVC, [0x68, 0x76, 0x63, 0x31]),
    ];
    for (ours, bytes) in spec {
        assert_eq!(ours.0, bytes);
    }
    assert!(FourCc::OPUS.is_known(Media::Audio));
    assert!(!FourCc::OPUS.is_known(Media::Video));
    assert!(FourCc::VP8.is_known(Media::Video));
    assert!(!FourCc(*b"vvc1").is_known(Media::Video));
}

#[test]
fn opus_sequence_start_and_multichannel_config() {
    // soundFormat 9 (ExHeader) | AudioPacketType 0 (SequenceStart), "Opus", then an RFC 7845
    // ID header ("OpusHead", version 1, 2 channels).
    let start = [
        0x90, b'O', b'p', b'u', b's', b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 0x01, 0x02,
    ];
    let tag = enhanced(Media::Audio, &start);
    assert_eq!(tag.packet_type, PacketType::SequenceStart);
    assert_eq!(bodies(&start, &tag), [(0, FourCc::OPUS, &start[5..])]);
    // AudioPacketType 4 (MultichannelConfig), "Opus", channelOrder 1 (Native),
    // channelCount 6, audioChannelFlags UI32 0x0000003F (FL FR FC LFE1 BL BR: 5.1).
    let config = [
        0x94, b'O', b'p', b'u', b's', 0x01, 0x06, 0x00, 0x00, 0x00, 0x3F,
    ];
    let tag = enhanced(Media::Audio, &config);
    assert_eq!(tag.packet_type, PacketType::MultichannelConfig);
    assert_eq!(
        classify(Media::Audio, &config).unwrap().role,
        Role::Config(PacketType::MultichannelConfig)
    );
    let built = Packet::single(
        Media::Audio,
        0,
        PacketType::MultichannelConfig,
        TrackPart::new(0, FourCc::OPUS, &config[5..]),
    );
    assert_eq!(built.encode(), config);
}

#[test]
fn video_metadata_and_sequence_end() {
    // isExVideoHeader 1, frameType 1 (ignored for Metadata), VideoPacketType 4, "hvc1", then
    // AMF0 string "colorInfo" (0x02, UI16 length 9) and the start of an object (0x03).
    let meta = [
        0x94, b'h', b'v', b'c', b'1', 0x02, 0x00, 0x09, b'c', b'o', b'l', b'o', b'r', b'I', b'n',
        b'f', b'o', 0x03,
    ];
    let tag = enhanced(Media::Video, &meta);
    assert_eq!(tag.packet_type, PacketType::Metadata);
    assert_eq!(
        classify(Media::Video, &meta).unwrap().role,
        Role::Config(PacketType::Metadata)
    );
    // Metadata with frame type 5 is still Metadata (the frame type is ignored), not a command.
    let mut as_command = meta;
    as_command[0] = 0xD4;
    assert_eq!(
        enhanced(Media::Video, &as_command).packet_type,
        PacketType::Metadata
    );
    // SequenceEnd: 0x92 "av01", no body.
    let end = [0x92, b'a', b'v', b'0', b'1'];
    assert_eq!(
        classify(Media::Video, &end).unwrap().role,
        Role::SequenceEnd
    );
}

#[test]
fn one_track_multitrack_video() {
    // frameType 1 | VideoPacketType 6 (Multitrack); AvMultitrackType 0 (OneTrack) |
    // VideoPacketType 3 (CodedFramesX); "avc1"; trackId 2; then NALUs to the end (no size).
    let msg = [
        0x96, 0x03, b'a', b'v', b'c', b'1', 0x02, 0x00, 0x00, 0x00, 0x02, 0x65, 0x88,
    ];
    let tag = enhanced(Media::Video, &msg);
    assert_eq!(tag.multitrack, Some(MultitrackType::OneTrack));
    assert_eq!(tag.packet_type, PacketType::CodedFramesX);
    assert_eq!(tag.frame_type, FRAME_TYPE_KEY);
    assert_eq!(bodies(&msg, &tag), [(2, FourCc::AVC, &msg[7..])]);
    let class = classify(Media::Video, &msg).unwrap();
    assert_eq!(class.role, Role::Keyframe);
    assert_eq!(class.tracks, TrackSet::only(2));
    let built = Packet::multi(
        Media::Video,
        1,
        PacketType::CodedFramesX,
        MultitrackType::OneTrack,
        vec![TrackPart::new(2, FourCc::AVC, &msg[7..])],
    );
    assert_eq!(built.encode(), msg);
}

#[test]
fn many_tracks_video_sequence_start() {
    // 0x96: key | Multitrack; 0x10: ManyTracks | SequenceStart; "hvc1";
    // track 0, UI24 size 3, 3 bytes; track 1, UI24 size 2, 2 bytes.
    let msg = [
        0x96, 0x10, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x00, 0x03, 0x01, 0x01, 0x60, 0x01, 0x00,
        0x00, 0x02, 0x01, 0x22,
    ];
    let tag = enhanced(Media::Video, &msg);
    assert_eq!(
        bodies(&msg, &tag),
        [
            (0, FourCc::HEVC, &[0x01, 0x01, 0x60][..]),
            (1, FourCc::HEVC, &[0x01, 0x22][..])
        ]
    );
    let class = classify(Media::Video, &msg).unwrap();
    assert_eq!(class.role, Role::SequenceHeader);
    assert_eq!(class.tracks.iter().collect::<Vec<_>>(), [0, 1]);
    let built = Packet::multi(
        Media::Video,
        1,
        PacketType::SequenceStart,
        MultitrackType::ManyTracks,
        vec![
            TrackPart::new(0, FourCc::HEVC, &[0x01, 0x01, 0x60]),
            TrackPart::new(1, FourCc::HEVC, &[0x01, 0x22]),
        ],
    );
    assert_eq!(built.encode(), msg);
}

#[test]
fn many_tracks_many_codecs_audio() {
    // 0x95: ExHeader | Multitrack; 0x21: ManyTracksManyCodecs | CodedFrames;
    // "Opus" track 0 size 2; "mp4a" track 1 size 1.
    let msg = [
        0x95, 0x21, b'O', b'p', b'u', b's', 0x00, 0x00, 0x00, 0x02, 0xFC, 0xFF, b'm', b'p', b'4',
        b'a', 0x01, 0x00, 0x00, 0x01, 0x21,
    ];
    let tag = enhanced(Media::Audio, &msg);
    assert_eq!(tag.multitrack, Some(MultitrackType::ManyTracksManyCodecs));
    assert_eq!(
        bodies(&msg, &tag),
        [
            (0, FourCc::OPUS, &[0xFC, 0xFF][..]),
            (1, FourCc::AAC, &[0x21][..])
        ]
    );
    assert_eq!(classify(Media::Audio, &msg).unwrap().role, Role::Other);
}

#[test]
fn modex_timestamp_offset_is_unwrapped() {
    // 0x97: key | ModEx; size UI8 2 (+1 = 3 bytes); UI24 250000 ns = 0x03D090;
    // 0x01: ModEx type 0 (TimestampOffsetNano) | VideoPacketType 1; "av01"; OBUs.
    let msg = [
        0x97, 0x02, 0x03, 0xD0, 0x90, 0x01, b'a', b'v', b'0', b'1', 0x12, 0x00,
    ];
    let tag = enhanced(Media::Video, &msg);
    assert_eq!(tag.nano_offset, Some(250_000));
    assert_eq!(tag.packet_type, PacketType::CodedFrames);
    assert_eq!(classify(Media::Video, &msg).unwrap().role, Role::Keyframe);
    let built = Packet::single(
        Media::Video,
        1,
        PacketType::CodedFrames,
        TrackPart::new(0, FourCc::AV1, &[0x12, 0x00]),
    )
    .with_modex(ModEx::nano_offset(250_000));
    assert_eq!(built.encode(), msg);

    // ModEx in front of Multitrack, audio: 0x97 ModEx; 3 bytes; 0x05 = type 0 | Multitrack;
    // 0x00 = OneTrack | SequenceStart; "fLaC"; track 1; body.
    let audio = [
        0x97, 0x02, 0x00, 0x00, 0x01, 0x05, 0x00, b'f', b'L', b'a', b'C', 0x01, 0xAA,
    ];
    let tag = enhanced(Media::Audio, &audio);
    assert_eq!(tag.nano_offset, Some(1));
    assert_eq!(tag.multitrack, Some(MultitrackType::OneTrack));
    assert_eq!(bodies(&audio, &tag), [(1, FourCc::FLAC, &[0xAA][..])]);
}

#[test]
fn modex_sizes_switch_to_sixteen_bits_at_256() {
    // A 300-byte ModEx of an unknown type (5): UI8 255 then UI16 299.
    let packet = Packet::single(
        Media::Audio,
        0,
        PacketType::CodedFrames,
        TrackPart::new(0, FourCc::AC3, &[0x0B, 0x77]),
    )
    .with_modex(ModEx {
        kind: 5,
        data: vec![0xEE; 300],
    })
    .with_modex(ModEx::nano_offset(7));
    let bytes = packet.encode();
    assert_eq!(&bytes[..4], &[0x97, 0xFF, 0x01, 0x2B]);
    let tag = enhanced(Media::Audio, &bytes);
    assert_eq!(tag.nano_offset, Some(7));
    assert_eq!(bodies(&bytes, &tag), [(0, FourCc::AC3, &[0x0B, 0x77][..])]);
}

#[test]
fn command_frames_have_no_fourcc() {
    // 0xD1: isExVideoHeader, frameType 5 (Command), packet type 1; UI8 command 0 (StartSeek).
    assert_eq!(
        parse(Media::Video, &[0xD1, 0x00]),
        Ok(Tag::Command {
            command: 0,
            nano_offset: None
        })
    );
    assert_eq!(command(1, &[]), [0xD1, 0x01]);
    assert_eq!(
        parse(Media::Video, &command(1, &[ModEx::nano_offset(9)])),
        Ok(Tag::Command {
            command: 1,
            nano_offset: Some(9)
        })
    );
    assert_eq!(classify(Media::Video, &[0xD1, 0x00]), Ok(Class::OTHER));
}

#[test]
fn legacy_tags_are_left_to_flv() {
    assert_eq!(parse(Media::Video, &[0x17, 0x00, 0, 0, 0]), Ok(Tag::Legacy));
    assert_eq!(
        parse(Media::Audio, &[0xAF, 0x00, 0x12, 0x10]),
        Ok(Tag::Legacy)
    );
    assert_eq!(parse(Media::Audio, &[]), Ok(Tag::Legacy));
    let seq = classify(Media::Audio, &[0xAF, 0x00, 0x12, 0x10]).unwrap();
    assert_eq!(seq.role, Role::SequenceHeader);
    assert_eq!(seq.tracks, TrackSet::only(0));
    assert_eq!(
        classify(Media::Video, &[0x17, 0x01, 0, 0, 0]).unwrap().role,
        Role::Keyframe
    );
    assert_eq!(
        classify(Media::Video, &[0x17, 0x02, 0, 0, 0]).unwrap().role,
        Role::SequenceEnd
    );
    // A legacy tag the node cannot read is passed on, as before.
    assert_eq!(classify(Media::Video, &[0x17]), Ok(Class::OTHER));
    // v1 enhanced (no multitrack) is track 0.
    let v1 = classify(Media::Video, &[0x90, b'h', b'v', b'c', b'1', 1]).unwrap();
    assert_eq!(v1.role, Role::SequenceHeader);
    assert_eq!(v1.tracks, TrackSet::only(0));
    assert_eq!(
        classify(Media::Video, &[0x95, b'a', b'v', b'0', b'1', 0x80])
            .unwrap()
            .role,
        Role::Config(PacketType::Mpeg2TsSequenceStart)
    );
    // An unknown FourCC passes: a relay does not decode.
    assert_eq!(
        classify(Media::Video, &[0x91, b'v', b'v', b'c', b'1'])
            .unwrap()
            .role,
        Role::Keyframe
    );
}

#[test]
fn malformed_headers_are_typed_errors() {
    use ErtmpError::*;
    let cases: &[(Media, &[u8], ErtmpError)] = &[
        (
            Media::Video,
            &[0x90, b'h', b'v'],
            Truncated {
                what: "FourCC",
                needed: 5,
                available: 3,
            },
        ),
        (
            Media::Video,
            &[0x98, b'h', b'v', b'c', b'1'],
            BadPacketType {
                media: Media::Video,
                value: 8,
            },
        ),
        (
            Media::Audio,
            &[0x93, b'O', b'p', b'u', b's'],
            BadPacketType {
                media: Media::Audio,
                value: 3,
            },
        ),
        (
            Media::Audio,
            &[0x96, b'O', b'p', b'u', b's'],
            BadPacketType {
                media: Media::Audio,
                value: 6,
            },
        ),
        // Multitrack inside Multitrack.
        (
            Media::Video,
            &[0x96, 0x16, b'h', b'v', b'c', b'1'],
            BadPacketType {
                media: Media::Video,
                value: 6,
            },
        ),
        // ModEx as a track's packet type.
        (
            Media::Audio,
            &[0x95, 0x07, b'O', b'p', b'u', b's', 0],
            BadPacketType {
                media: Media::Audio,
                value: 7,
            },
        ),
        (Media::Video, &[0x96, 0x31, b'h'], BadMultitrackType(3)),
        (
            Media::Video,
            &[
                0x96, 0x11, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x00, 0x09, 0x01,
            ],
            TrackOverrun {
                track: 0,
                size: 9,
                available: 1,
            },
        ),
        (
            Media::Video,
            &[0x96, 0x11, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x00],
            Truncated {
                what: "track size",
                needed: 10,
                available: 9,
            },
        ),
        // ModEx data size 5 with 2 bytes left.
        (
            Media::Video,
            &[0x97, 0x04, 0x00, 0x00],
            Truncated {
                what: "ModEx data",
                needed: 7,
                available: 4,
            },
        ),
        // TimestampOffsetNano with 2 data bytes.
        (
            Media::Audio,
            &[0x97, 0x01, 0x00, 0x00, 0x01, b'O', b'p', b'u', b's'],
            ModExTooShort(2),
        ),
        (
            Media::Video,
            &[0xD1],
            Truncated {
                what: "video command",
                needed: 2,
                available: 1,
            },
        ),
    ];
    for (media, bytes, error) in cases {
        assert_eq!(parse(*media, bytes).as_ref(), Err(error), "{bytes:02x?}");
        assert_eq!(classify(*media, bytes).err().as_ref(), Some(error));
        assert!(!error.as_str().is_empty());
    }
}

#[test]
fn track_sets_hold_every_id() {
    let mut set = TrackSet::default();
    assert!(set.is_empty());
    for id in [0u8, 63, 64, 200, 255] {
        set.insert(id);
    }
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 200, 255]);
    set.remove(64);
    assert!(!set.contains(64));
    assert!(set.intersects(&TrackSet::only(255)));
    assert!(!set.intersects(&TrackSet::only(1)));
}

fn arb_fourcc() -> impl Strategy<Value = FourCc> {
    prop_oneof![
        Just(FourCc::AVC),
        Just(FourCc::HEVC),
        Just(FourCc::OPUS),
        any::<[u8; 4]>().prop_map(FourCc),
    ]
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let media = prop_oneof![Just(Media::Audio), Just(Media::Video)];
    let layout = prop_oneof![
        Just(None),
        Just(Some(MultitrackType::OneTrack)),
        Just(Some(MultitrackType::ManyTracks)),
        Just(Some(MultitrackType::ManyTracksManyCodecs)),
    ];
    let tracks = proptest::collection::vec(
        (
            any::<u8>(),
            arb_fourcc(),
            proptest::collection::vec(any::<u8>(), 0..40),
        ),
        1..5,
    );
    let modex = proptest::collection::vec(
        prop_oneof![
            (0u32..1_000_000).prop_map(ModEx::nano_offset),
            (1u8..15, proptest::collection::vec(any::<u8>(), 1..300))
                .prop_map(|(kind, data)| ModEx { kind, data }),
        ],
        0..3,
    );
    (media, 0u8..5, 0usize..7, layout, tracks, modex).prop_map(
        |(media, frame_type, packet_index, layout, tracks, modex)| {
            let packet_type = match media {
                Media::Audio => [
                    PacketType::SequenceStart,
                    PacketType::CodedFrames,
                    PacketType::SequenceEnd,
                    PacketType::MultichannelConfig,
                ][packet_index % 4],
                Media::Video => [
                    PacketType::SequenceStart,
                    PacketType::CodedFrames,
                    PacketType::SequenceEnd,
                    PacketType::CodedFramesX,
                    PacketType::Metadata,
                    PacketType::Mpeg2TsSequenceStart,
                    PacketType::CodedFrames,
                ][packet_index],
            };
            let mut tracks: Vec<TrackPart> = tracks
                .into_iter()
                .map(|(id, fourcc, body)| TrackPart { id, fourcc, body })
                .collect();
            if matches!(layout, None | Some(MultitrackType::OneTrack)) {
                tracks.truncate(1);
            }
            if layout == Some(MultitrackType::ManyTracks) {
                let fourcc = tracks[0].fourcc;
                tracks.iter_mut().for_each(|t| t.fourcc = fourcc);
            }
            if layout.is_none() {
                tracks[0].id = 0;
            }
            Packet {
                media,
                frame_type,
                packet_type,
                modex,
                layout,
                tracks,
            }
        },
    )
}

proptest! {
    #[test]
    fn encode_then_parse_round_trips(packet in arb_packet()) {
        let bytes = packet.encode();
        let tag = enhanced(packet.media, &bytes);
        prop_assert_eq!(tag.packet_type, packet.packet_type);
        prop_assert_eq!(tag.multitrack, packet.layout);
        let nano = packet.modex.iter().rev().find(|m| m.kind == 0).map(|m| {
            u32::from_be_bytes([0, m.data[0], m.data[1], m.data[2]])
        });
        prop_assert_eq!(tag.nano_offset, nano);
        let expected: Vec<(u8, FourCc, &[u8])> =
            packet.tracks.iter().map(|t| (t.id, t.fourcc, &t.body[..])).collect();
        prop_assert_eq!(bodies(&bytes, &tag), expected);
        prop_assert!(classify(packet.media, &bytes).is_ok());
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        for media in [Media::Audio, Media::Video] {
            if let Ok(Tag::Enhanced(tag)) = parse(media, &data) {
                prop_assert!(!tag.tracks.is_empty());
                for track in &tag.tracks {
                    prop_assert!(track.body.start <= track.body.end);
                    prop_assert!(track.body.end <= data.len());
                }
            }
            let _ = classify(media, &data);
        }
    }

    #[test]
    fn a_truncated_multitrack_message_is_an_error_never_a_panic(
        packet in arb_packet(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = packet.encode();
        let cut = cut.index(bytes.len());
        let _ = parse(packet.media, &bytes[..cut]);
    }
}
