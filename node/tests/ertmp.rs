//! Enhanced RTMP v2 media through the node (issue 20): a scripted publisher (raw RTMP from
//! this test) sends multitrack streams built with the project's own encoder
//! (`corecast_common::ertmp::build`): one track, many tracks, many tracks with many codecs (one
//! of them an unknown FourCC), Opus with a MultichannelConfig, video Metadata, ModEx. A
//! player there from the start gets every message byte for byte; a player joining mid-stream
//! gets every track's sequence headers and configuration packets before that track's first
//! frame, a key frame first on every video track, and then the live messages byte for byte.
//! The same holds for a player joining on an edge, through the origin/edge pull (timestamps
//! rebased there, bytes unchanged). Broken multitrack framing closes only the publisher that
//! sent it, counted by reason. HLS is on (the default) in all of these: the muxer sees the
//! multitrack streams too and must not take the node down.
//!
//! No real client takes part: the ffmpeg here (5.1) cannot publish E-RTMP (7.1 can publish
//! some), and no Debian player plays multitrack.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corecast_common::ertmp::build::{ModEx, Packet, TrackPart};
use corecast_common::ertmp::{
    classify, FourCc, Media as ErtmpMedia, MultitrackType, PacketType, Role,
};
use corecast_common::types::MessageType;
use support::client::{closed_within, RtmpClient};
use support::node::Node;

/// Reads wait at most this long for what the publisher sent.
const LIMIT: Duration = Duration::from_secs(10);

/// One audio or video message as sent and as received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    video: bool,
    timestamp: u32,
    body: Vec<u8>,
}

fn media(video: bool) -> ErtmpMedia {
    if video {
        ErtmpMedia::Video
    } else {
        ErtmpMedia::Audio
    }
}

impl Msg {
    fn role_and_tracks(&self) -> (Role, Vec<u8>) {
        let class = classify(media(self.video), &self.body).expect("test media parses");
        (class.role, class.tracks.iter().collect())
    }
}

/// Builds a script's messages; timestamps go up by 20 ms a message.
struct Script {
    messages: Vec<Msg>,
}

impl Script {
    fn new() -> Script {
        Script {
            messages: Vec::new(),
        }
    }

    fn push(&mut self, video: bool, packet: Packet) -> &mut Script {
        let timestamp = 20 * self.messages.len() as u32;
        self.messages.push(Msg {
            video,
            timestamp,
            body: packet.encode(),
        });
        self
    }

    /// A video message of `packet` for `tracks` (each with its FourCC) in `layout`.
    fn video(
        &mut self,
        frame_type: u8,
        packet: PacketType,
        layout: Option<MultitrackType>,
        tracks: &[(u8, FourCc)],
    ) -> &mut Script {
        let n = self.messages.len() as u8;
        let parts = tracks
            .iter()
            .map(|&(id, fourcc)| TrackPart::new(id, fourcc, &[0, 0, 0, n, id, 0x65]))
            .collect();
        self.push(
            true,
            packet_of(ErtmpMedia::Video, frame_type, packet, layout, parts),
        )
    }

    /// An audio message of `packet` for `tracks`.
    fn audio(
        &mut self,
        packet: PacketType,
        layout: Option<MultitrackType>,
        tracks: &[(u8, FourCc)],
    ) -> &mut Script {
        let n = self.messages.len() as u8;
        let parts = tracks
            .iter()
            .map(|&(id, fourcc)| TrackPart::new(id, fourcc, &[n, id, 0xFC]))
            .collect();
        self.push(
            false,
            packet_of(ErtmpMedia::Audio, 0, packet, layout, parts),
        )
    }
}

fn packet_of(
    media: ErtmpMedia,
    frame_type: u8,
    packet: PacketType,
    layout: Option<MultitrackType>,
    tracks: Vec<TrackPart>,
) -> Packet {
    match layout {
        Some(layout) => Packet::multi(media, frame_type, packet, layout, tracks),
        None => Packet::single(
            media,
            frame_type,
            packet,
            tracks.into_iter().next().expect("a track"),
        ),
    }
}

const KEY: u8 = 1;
const INTER: u8 = 2;

/// Reads audio/video messages until `last` arrives (included); panics after [`LIMIT`].
fn read_until(client: &mut RtmpClient, last: &Msg) -> Vec<Msg> {
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let Some(m) = client
            .next_message(Duration::from_millis(200))
            .expect("player connection")
        else {
            continue;
        };
        if m.message_type != MessageType::AUDIO && m.message_type != MessageType::VIDEO {
            continue;
        }
        let msg = Msg {
            video: m.message_type == MessageType::VIDEO,
            timestamp: m.timestamp,
            body: m.payload.to_vec(),
        };
        let done = msg == *last;
        got.push(msg);
        if done {
            return got;
        }
    }
    panic!("never got the last message; got {} messages", got.len());
}

/// createStream and play, then reads until `NetStream.Play.Start`, keeping the media that
/// came before it (the support client's `play` drops it, and a joiner's snapshot may be
/// queued before that status).
fn play_keeping_media(client: &mut RtmpClient, name: &str) -> Vec<Msg> {
    use corecast_common::command::{client as commands, Command};
    use corecast_common::types::MessageStreamId;
    client
        .send_command(MessageStreamId::CONNECTION, &commands::create_stream(10.0))
        .expect("createStream");
    // The node's first createStream answers stream 1, the media stream.
    client
        .send_command(MessageStreamId::MEDIA, &commands::play(11.0, name))
        .expect("play");
    let deadline = Instant::now() + LIMIT;
    let mut media = Vec::new();
    while Instant::now() < deadline {
        let Some(m) = client
            .next_message(Duration::from_millis(200))
            .expect("player connection")
        else {
            continue;
        };
        if m.message_type == MessageType::AUDIO || m.message_type == MessageType::VIDEO {
            media.push(Msg {
                video: m.message_type == MessageType::VIDEO,
                timestamp: m.timestamp,
                body: m.payload.to_vec(),
            });
        } else if m.message_type == MessageType::COMMAND_AMF0 {
            let command = Command::decode(m.message_type, &m.payload).expect("a command");
            if support::client::status_code(&command).as_deref() == Some("NetStream.Play.Start") {
                return media;
            }
        }
    }
    panic!("no NetStream.Play.Start");
}

fn send_all(publisher: &mut RtmpClient, messages: &[Msg]) {
    for m in messages {
        let kind = if m.video {
            MessageType::VIDEO
        } else {
            MessageType::AUDIO
        };
        publisher
            .send_media(kind, m.timestamp, &m.body)
            .expect("publisher sends");
    }
}

/// Publishes `before`, has players join, publishes `after`; checks the early player's copy
/// and the joiners' start (see the module doc). On one core, then on two: there a player on
/// the other core than the publisher's is served from its core's replica, seeded by a
/// snapshot over the mesh once it subscribes, so even the "early" player may start as a
/// joiner and only the joiner properties hold for it.
fn relay_and_join(name: &str, before: &Script, after: &Script) {
    relay_and_join_on(1, 1, name, before, after);
    relay_and_join_on(2, 3, name, before, after);
}

fn relay_and_join_on(cores: usize, joiners: usize, name: &str, before: &Script, after: &Script) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(cores, "", dir.path());
    let mut publisher = RtmpClient::publishing(node.addr, "live", name);
    let mut early = RtmpClient::playing(node.addr, "live", name);

    send_all(&mut publisher, &before.messages);
    let first_part = read_until(&mut early, before.messages.last().expect("messages"));
    let mut joined: Vec<(RtmpClient, Vec<Msg>)> = (0..joiners)
        .map(|_| {
            let mut joiner = RtmpClient::connect(node.addr, "live").expect("joiner connects");
            let early_media = play_keeping_media(&mut joiner, name);
            (joiner, early_media)
        })
        .collect();
    // A joiner's snapshot is queued when its play is handled (or when its core's replica
    // goes live); what it reads is the snapshot, then live messages.
    send_all(&mut publisher, &after.messages);
    let last = after.messages.last().expect("messages");
    let mut everything = first_part;
    everything.extend(read_until(&mut early, last));
    let sent: Vec<Msg> = before
        .messages
        .iter()
        .chain(&after.messages)
        .cloned()
        .collect();
    let what = format!("{name} on {cores} core(s)");
    if cores == 1 {
        assert_eq!(
            everything, sent,
            "{what}: the early player gets every message unchanged"
        );
    } else {
        check_joiner_start(&what, &before.messages, &after.messages, &everything);
    }
    for (joiner, early_media) in &mut joined {
        let mut got = std::mem::take(early_media);
        got.extend(read_until(joiner, last));
        check_joiner_start(&what, &before.messages, &after.messages, &got);
    }
}

/// The joiner's messages: all sent ones, ending with every live message; each track's latest
/// configuration before its first frame; a key frame first on every video track.
fn check_joiner_start(name: &str, before: &[Msg], after: &[Msg], joined: &[Msg]) {
    for m in joined {
        assert!(
            before.contains(m) || after.contains(m),
            "{name}: the joiner got a message nobody sent: {m:?}"
        );
    }
    // The messages sent after the join that the player got: in order and without a gap up to
    // the last (it may have started at a later one, or got the first ones in its GOP, when
    // its core's replica went live after they were sent).
    let brief =
        |ms: &[Msg]| -> Vec<(bool, u32)> { ms.iter().map(|m| (m.video, m.timestamp)).collect() };
    let positions: Vec<usize> = joined
        .iter()
        .filter_map(|m| after.iter().position(|a| a == m))
        .collect();
    let first = positions.first().copied().unwrap_or(after.len());
    assert_eq!(
        positions,
        (first..after.len()).collect::<Vec<_>>(),
        "{name}: live messages follow the snapshot unchanged: got {:?}, sent after the join {:?}",
        brief(joined),
        brief(after)
    );

    // The latest configuration of every (audio/video, track, kind) before the join.
    let mut configs: BTreeMap<(bool, u8, String), &Msg> = BTreeMap::new();
    for m in before {
        let (role, tracks) = m.role_and_tracks();
        match role {
            Role::SequenceHeader | Role::Config(_) => {
                for t in tracks {
                    configs.insert((m.video, t, format!("{role:?}")), m);
                }
            }
            Role::SequenceEnd => {
                configs.retain(|(video, t, _), _| *video != m.video || !tracks_of(m).contains(t))
            }
            _ => {}
        }
    }
    let first_frame = |video: bool, track: u8| {
        joined.iter().position(|m| {
            let (role, tracks) = m.role_and_tracks();
            m.video == video
                && tracks.contains(&track)
                && matches!(role, Role::Keyframe | Role::Other)
        })
    };
    for ((video, track, role), config) in &configs {
        let at = joined.iter().position(|m| m == *config).unwrap_or_else(|| {
            panic!("{name}: {role} of track {track} (video: {video}) not replayed")
        });
        if let Some(frame) = first_frame(*video, *track) {
            // After the track's first frame only when it was sent after it too: the player
            // started before it (its core's snapshot came earlier) and got it live.
            let sent_at = |m: &Msg| before.iter().chain(after).position(|s| s == m);
            assert!(
                at < frame || sent_at(config) > sent_at(&joined[frame]),
                "{name}: {role} of track {track} comes after its first frame"
            );
        }
    }
    let video_tracks: Vec<u8> = configs.keys().filter(|k| k.0).map(|k| k.1).collect();
    for track in video_tracks {
        let first = first_frame(true, track)
            .unwrap_or_else(|| panic!("{name}: no frame of video track {track}"));
        assert_eq!(
            joined[first].role_and_tracks().0,
            Role::Keyframe,
            "{name}: video track {track} starts on a key frame"
        );
    }
}

fn tracks_of(m: &Msg) -> Vec<u8> {
    m.role_and_tracks().1
}

#[test]
fn one_track_multitrack_relays_and_a_joiner_starts_on_its_keyframe() {
    let one = Some(MultitrackType::OneTrack);
    let v = [(0, FourCc::AVC)];
    let a = [(0, FourCc::AAC)];
    let mut before = Script::new();
    before
        .audio(PacketType::SequenceStart, one, &a)
        .video(KEY, PacketType::SequenceStart, one, &v)
        .video(KEY, PacketType::CodedFrames, one, &v)
        .audio(PacketType::CodedFrames, one, &a)
        .video(INTER, PacketType::CodedFrames, one, &v)
        .video(KEY, PacketType::CodedFramesX, one, &v)
        .audio(PacketType::CodedFrames, one, &a)
        .video(INTER, PacketType::CodedFrames, one, &v);
    let mut after = Script::new();
    after.messages = before.messages[4..].to_vec();
    for (i, m) in after.messages.iter_mut().enumerate() {
        m.timestamp = 1000 + 20 * i as u32;
    }
    relay_and_join("one-track", &before, &after);
}

#[test]
fn many_tracks_in_one_message_relay_and_a_joiner_gets_every_track() {
    let many = Some(MultitrackType::ManyTracks);
    let v = [(0, FourCc::HEVC), (1, FourCc::HEVC), (2, FourCc::HEVC)];
    let a = [(0, FourCc::OPUS), (1, FourCc::OPUS)];
    let mut before = Script::new();
    before
        .video(KEY, PacketType::SequenceStart, many, &v)
        .audio(PacketType::SequenceStart, many, &a)
        .video(KEY, PacketType::CodedFrames, many, &v)
        .audio(PacketType::CodedFrames, many, &a)
        .video(INTER, PacketType::CodedFrames, many, &v)
        .video(KEY, PacketType::CodedFrames, many, &v)
        .video(INTER, PacketType::CodedFrames, many, &v);
    let mut after = Script::new();
    after
        .audio(PacketType::CodedFrames, many, &a)
        .video(INTER, PacketType::CodedFrames, many, &v);
    shift(&mut after, 2000);
    relay_and_join("many-tracks", &before, &after);
}

#[test]
fn many_codecs_with_unaligned_keyframes_and_an_unknown_fourcc() {
    let mixed = Some(MultitrackType::ManyTracksManyCodecs);
    let t0 = [(0, FourCc::AVC)];
    let t1 = [(1, FourCc::AV1)];
    // An unknown FourCC passes: a relay does not decode (see corecast_common::ertmp).
    let t2 = [(2, FourCc(*b"vvc1"))];
    let mut before = Script::new();
    before
        .video(
            KEY,
            PacketType::SequenceStart,
            mixed,
            &[(0, FourCc::AVC), (1, FourCc::AV1)],
        )
        .video(KEY, PacketType::SequenceStart, mixed, &t2)
        .audio(
            PacketType::SequenceStart,
            mixed,
            &[(0, FourCc::FLAC), (1, FourCc::AC3)],
        )
        .video(KEY, PacketType::CodedFrames, mixed, &t0)
        .video(KEY, PacketType::CodedFrames, mixed, &t2)
        .video(INTER, PacketType::CodedFrames, mixed, &t0)
        .video(KEY, PacketType::CodedFrames, mixed, &t1)
        .audio(
            PacketType::CodedFrames,
            mixed,
            &[(0, FourCc::FLAC), (1, FourCc::AC3)],
        )
        .video(INTER, PacketType::CodedFrames, mixed, &t1)
        // Track 0's next key frame: tracks 1 and 2 still need their older ones.
        .video(KEY, PacketType::CodedFrames, mixed, &t0)
        .video(INTER, PacketType::CodedFrames, mixed, &t2);
    let mut after = Script::new();
    after
        .video(INTER, PacketType::CodedFrames, mixed, &t0)
        .video(INTER, PacketType::CodedFrames, mixed, &t1);
    shift(&mut after, 3000);
    relay_and_join("many-codecs", &before, &after);
}

#[test]
fn opus_multichannel_config_and_video_metadata_reach_a_joiner() {
    let opus = [(0, FourCc::OPUS)];
    let v = [(0, FourCc::HEVC)];
    let mut before = Script::new();
    before
        .audio(PacketType::SequenceStart, None, &opus)
        .audio(PacketType::MultichannelConfig, None, &opus)
        .video(KEY, PacketType::Metadata, None, &v)
        .video(KEY, PacketType::SequenceStart, None, &v)
        .video(KEY, PacketType::CodedFrames, None, &v)
        .audio(PacketType::CodedFrames, None, &opus)
        // New colour info mid-GOP: it replaces the first for joiners.
        .video(KEY, PacketType::Metadata, None, &v)
        .video(INTER, PacketType::CodedFrames, None, &v);
    let mut after = Script::new();
    after.audio(PacketType::CodedFrames, None, &opus).video(
        INTER,
        PacketType::CodedFrames,
        None,
        &v,
    );
    shift(&mut after, 4000);
    relay_and_join("opus-metadata", &before, &after);
}

#[test]
fn modex_wrapped_messages_relay_unchanged_and_count_as_their_inner_type() {
    let one = Some(MultitrackType::OneTrack);
    let v = [(0, FourCc::VP9)];
    let nano = |p: Packet, ns| p.with_modex(ModEx::nano_offset(ns));
    let mut before = Script::new();
    let seq = |ft, pt| {
        packet_of(
            ErtmpMedia::Video,
            ft,
            pt,
            one,
            vec![TrackPart::new(0, FourCc::VP9, &[1, 2, 3])],
        )
    };
    before
        .push(true, nano(seq(KEY, PacketType::SequenceStart), 1))
        .push(true, nano(seq(KEY, PacketType::CodedFrames), 250_000))
        .push(
            false,
            nano(
                Packet::single(
                    ErtmpMedia::Audio,
                    0,
                    PacketType::SequenceStart,
                    TrackPart::new(0, FourCc::MP3, &[]),
                ),
                999_999,
            ),
        )
        .push(true, nano(seq(INTER, PacketType::CodedFrames), 500_000));
    let mut after = Script::new();
    after
        .video(INTER, PacketType::CodedFrames, one, &v)
        .push(true, nano(seq(INTER, PacketType::CodedFrames), 750_000));
    shift(&mut after, 5000);
    relay_and_join("modex", &before, &after);
}

fn shift(script: &mut Script, by: u32) {
    for m in &mut script.messages {
        m.timestamp += by;
    }
}

#[test]
fn broken_multitrack_or_modex_closes_only_its_publisher_counted_by_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    // A healthy stream with a player, to show it keeps flowing.
    let mut good = RtmpClient::publishing(node.addr, "live", "good");
    let mut player = RtmpClient::playing(node.addr, "live", "good");

    let seq = Packet::single(
        ErtmpMedia::Video,
        KEY,
        PacketType::SequenceStart,
        TrackPart::new(0, FourCc::AVC, &[1, 2]),
    )
    .encode();
    let broken: [(&str, bool, Vec<u8>); 4] = [
        // ManyTracks: track 0 says 9 bytes, 1 follows.
        (
            "media_track_overrun",
            true,
            vec![0x96, 0x11, b'a', b'v', b'c', b'1', 0, 0, 0, 9, 1],
        ),
        // ModEx data of 5 bytes, 2 present.
        ("media_truncated", false, vec![0x97, 0x04, 0, 0]),
        // TimestampOffsetNano with 2 data bytes.
        (
            "media_modex_too_short",
            false,
            vec![0x97, 0x01, 0, 0, 0x01, b'O', b'p', b'u', b's'],
        ),
        // Multitrack type 3 is reserved.
        ("media_bad_multitrack_type", true, vec![0x96, 0x31, b'a']),
    ];
    for (i, (reason, video, body)) in broken.iter().enumerate() {
        let mut bad = RtmpClient::connect(node.addr, "live").expect("publisher connects");
        let name = format!("bad{i}");
        assert_eq!(
            bad.publish(&name).expect("publish"),
            "NetStream.Publish.Start"
        );
        bad.send_media(MessageType::VIDEO, 0, &seq).expect("send");
        let kind = if *video {
            MessageType::VIDEO
        } else {
            MessageType::AUDIO
        };
        bad.send_media(kind, 20, body).expect("send");
        assert!(
            closed_within(&mut bad.stream, LIMIT),
            "{reason}: publisher closed"
        );
        node.expect_close_reasons(&[reason]);
        let counted =
            support::wait_for(LIMIT, || (node.errors_counted(reason) >= 1.0).then_some(()));
        assert!(counted.is_some(), "{reason} counted");

        let frame = Msg {
            video: true,
            timestamp: 100 * (i as u32 + 1),
            body: Packet::single(
                ErtmpMedia::Video,
                KEY,
                PacketType::CodedFrames,
                TrackPart::new(0, FourCc::AVC, &[0, 0, 0, i as u8]),
            )
            .encode(),
        };
        send_all(&mut good, std::slice::from_ref(&frame));
        read_until(&mut player, &frame);
    }
}

/// `messages` with their timestamps zeroed: an edge rebases a pull's timestamps, so through a
/// cluster only the bytes of each message are compared.
fn untimed(messages: &[Msg]) -> Vec<Msg> {
    messages
        .iter()
        .map(|m| Msg {
            timestamp: 0,
            ..m.clone()
        })
        .collect()
}

#[test]
fn an_edge_player_joining_mid_stream_gets_every_track_through_a_pull() {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["origin", "edge"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("node directory");
    }
    let pull = format!("127.0.0.1:{}", support::node::free_port());
    let origin = Node::start(
        2,
        &format!("[cluster]\npull_listen = \"{pull}\"\n"),
        &dir.path().join("origin"),
    );
    let edge = Node::start(
        2,
        &format!(
            "[cluster]\nrole = \"edge\"\nupstreams = [\"{pull}\"]\nretry_max_secs = 1\nconnect_timeout_secs = 1\n"
        ),
        &dir.path().join("edge"),
    );
    let mixed = Some(MultitrackType::ManyTracksManyCodecs);
    let t0 = [(0, FourCc::AVC)];
    let t1 = [(1, FourCc::HEVC)];
    let opus = [(0, FourCc::OPUS)];
    let mut before = Script::new();
    before
        .video(
            KEY,
            PacketType::SequenceStart,
            mixed,
            &[(0, FourCc::AVC), (1, FourCc::HEVC)],
        )
        .audio(PacketType::SequenceStart, None, &opus)
        .audio(PacketType::MultichannelConfig, None, &opus)
        .video(KEY, PacketType::Metadata, mixed, &t1)
        .video(KEY, PacketType::CodedFrames, mixed, &t1)
        .video(KEY, PacketType::CodedFrames, mixed, &t0)
        .audio(PacketType::CodedFrames, None, &opus)
        .video(INTER, PacketType::CodedFrames, mixed, &t1)
        .video(INTER, PacketType::CodedFrames, mixed, &t0);
    let mut after = Script::new();
    after
        .video(INTER, PacketType::CodedFrames, mixed, &t0)
        .audio(PacketType::CodedFrames, None, &opus)
        .video(INTER, PacketType::CodedFrames, mixed, &t1);
    shift(&mut after, 6000);

    let mut publisher = RtmpClient::publishing(origin.addr, "live", "edge");
    let mut local = RtmpClient::playing(origin.addr, "live", "edge");
    send_all(&mut publisher, &before.messages);
    read_until(&mut local, before.messages.last().expect("messages"));

    let mut player = RtmpClient::connect(edge.addr, "live").expect("edge player connects");
    let early_media = play_keeping_media(&mut player, "edge");
    // The edge's pull starts with the origin's snapshot; the publisher goes on once it is in.
    let served = support::wait_for(LIMIT, || {
        let (_, body) = origin.http_request("GET", "/api/v1/clients", None);
        body.contains("\"pull\"").then_some(())
    });
    assert!(served.is_some(), "the edge pulls from the origin");
    send_all(&mut publisher, &after.messages);
    let last = untimed(&after.messages).pop().expect("messages");
    let deadline = Instant::now() + LIMIT;
    let mut got = untimed(&early_media);
    while Instant::now() < deadline && got.last() != Some(&last) {
        if let Some(m) = player
            .next_message(Duration::from_millis(200))
            .expect("edge player")
        {
            if m.message_type == MessageType::AUDIO || m.message_type == MessageType::VIDEO {
                got.push(Msg {
                    video: m.message_type == MessageType::VIDEO,
                    timestamp: 0,
                    body: m.payload.to_vec(),
                });
            }
        }
    }
    assert_eq!(
        got.last(),
        Some(&last),
        "the edge player got the live messages"
    );
    check_joiner_start(
        "edge",
        &untimed(&before.messages),
        &untimed(&after.messages),
        &got,
    );
}
