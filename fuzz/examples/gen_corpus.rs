//! Writes the seed corpus into `fuzz/corpus/<target>/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`
//!
//! The seeds are what real peers send, built with `corecast-common`'s own encoders (an ffmpeg
//! style publish session, the FP9 digest handshake, an FLV file with AVC and AAC), plus a few
//! hand-written byte strings for paths our encoders never take (AMF3 references, a type 3
//! chunk right after a type 0, an Abort in the middle of a message). Output is deterministic;
//! rerun it after changing a seed and commit the result. libFuzzer adds its own finds next to
//! these when run locally; those are not committed.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use corecast_common::amf0::{self, Amf0Object, Amf0Value};
use corecast_common::chunk::ChunkEncoder;
use corecast_common::command::{client, status_info, Command, DataMessage};
use corecast_common::control::{ControlMessage, PeerBandwidthLimit, UserControlEvent};
use corecast_common::flv::{self, FlvTag, TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT, TAG_TYPE_VIDEO};
use corecast_common::handshake::{ClientHandshake, HandshakeKind, RANDOM_LEN};
use corecast_common::plane::sim::{self, Op};
use corecast_common::rtmpe::{DhKeyPair, DH_KEY_LEN};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use corecast_fuzz::hls::{encode_hls_records, HlsRecord};

/// Control bytes for the targets that cut their input into reads (see `Pieces`): low two
/// bits pick the largest read.
const READS_1: u8 = 0x10;
const READS_7: u8 = 0x21;
const READS_64: u8 = 0x32;
const READS_1500: u8 = 0x43;

struct Corpus {
    root: PathBuf,
}

impl Corpus {
    fn write(&self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        fs::write(dir.join(name), data).expect("write seed");
    }

    /// A seed for a target whose first byte says how to cut the rest into reads.
    fn write_stream(&self, target: &str, name: &str, control: u8, stream: &[u8]) {
        let mut data = vec![control];
        data.extend_from_slice(stream);
        self.write(target, name, &data);
    }
}

// ---- payloads -----------------------------------------------------------------------------

fn connect() -> Command {
    client::connect(1.0, "live", "rtmp://127.0.0.1:1935/live")
}

/// The node's `_result` to `connect`.
fn connect_result() -> Command {
    let properties = Amf0Object::new()
        .with("fmsVer", "FMS/3,5,7,7009")
        .with("capabilities", 31.0)
        .with("mode", 1.0);
    let info = status_info(
        "status",
        "NetConnection.Connect.Success",
        "Connection succeeded.",
    )
    .with("objectEncoding", 0.0);
    Command::result(
        1.0,
        Amf0Value::Object(properties),
        vec![Amf0Value::Object(info)],
    )
}

/// `@setDataFrame onMetaData {…}` as ffmpeg sends it for 720p25 H.264 + AAC.
fn set_data_frame() -> DataMessage {
    let metadata = Amf0Object::new()
        .with("duration", 0.0)
        .with("width", 1280.0)
        .with("height", 720.0)
        .with("videodatarate", 2441.40625)
        .with("framerate", 25.0)
        .with("videocodecid", 7.0)
        .with("audiodatarate", 125.0)
        .with("audiosamplerate", 44_100.0)
        .with("audiosamplesize", 16.0)
        .with("stereo", true)
        .with("audiocodecid", 10.0)
        .with("encoder", "Lavf61.7.100")
        .with("filesize", 0.0);
    DataMessage {
        values: vec![
            "@setDataFrame".into(),
            "onMetaData".into(),
            Amf0Value::EcmaArray(metadata),
        ],
    }
}

/// Every AMF0 type the encoder writes, in one body.
fn amf0_all_types() -> Bytes {
    let values = vec![
        Amf0Value::Number(-0.5),
        Amf0Value::Boolean(true),
        Amf0Value::String("stream \u{e9}t\u{e9}".into()),
        Amf0Value::Object(Amf0Object::new().with("a", 1.0).with("", "empty key")),
        Amf0Value::Null,
        Amf0Value::Undefined,
        Amf0Value::Reference(0),
        Amf0Value::EcmaArray(Amf0Object::new().with("0", "x").with("1", "y")),
        Amf0Value::StrictArray(vec![1.0.into(), "two".into(), Amf0Value::Null]),
        Amf0Value::Date {
            millis: 1_700_000_000_000.0,
            timezone: 0,
        },
        Amf0Value::LongString("long".into()),
        Amf0Value::XmlDocument("<a/>".into()),
        Amf0Value::TypedObject {
            class_name: "flex.Foo".into(),
            properties: Amf0Object::new().with("bar", false),
        },
    ];
    let mut out = BytesMut::new();
    amf0::encode_all(&values, &mut out);
    out.freeze()
}

/// Hand-written AMF3 values behind 0x11 switches: an object with sealed and dynamic members,
/// string and traits references, a mixed array, a date, integers and a double.
fn amf3_values() -> Vec<u8> {
    let mut out = Vec::new();
    // An anonymous object: inline traits, dynamic, one sealed member "app".
    out.extend_from_slice(&[0x11, 0x0A, 0x1B, 0x01]); // switch, object, traits, class ""
    out.extend_from_slice(b"\x07app"); // sealed name "app" (string table 0)
    out.extend_from_slice(b"\x06\x09live"); // app = "live" (string table 1)
    out.extend_from_slice(b"\x09fpad\x02"); // fpad = false (string table 2)
    out.extend_from_slice(b"\x00\x04\x05"); // key: string ref 0 ("app"), value integer 5
    out.extend_from_slice(b"\x0Binner\x0A\x01"); // inner = object with traits ref 0
    out.extend_from_slice(b"\x06\x02"); // its sealed "app" = string ref 1 ("live")
    out.extend_from_slice(b"\x01"); // end of inner's dynamic members
    out.extend_from_slice(b"\x01"); // end of outer's dynamic members

    // A mixed array: key "k" = true, then two dense items.
    out.extend_from_slice(&[0x11, 0x09, 0x05]); // switch, array, 2 dense items
    out.extend_from_slice(b"\x03k\x03\x01"); // "k" = true, end of associative part
    out.extend_from_slice(&[0x04, 0xFF, 0xFF, 0xFF, 0xFF]); // integer -1 (29-bit)
    out.push(0x05);
    out.extend_from_slice(&2.5f64.to_be_bytes());

    // A date and a typed object.
    out.extend_from_slice(&[0x11, 0x08, 0x01]);
    out.extend_from_slice(&1_700_000_000_000f64.to_be_bytes());
    out.extend_from_slice(&[0x11, 0x0A, 0x13]); // object, inline traits, 1 sealed, not dynamic
    out.extend_from_slice(b"\x07Foo\x07bar\x06\x07baz"); // class "Foo", sealed "bar" = "baz"
    out
}

fn video_tag(keyframe: bool, packet_type: u8, len: usize) -> Bytes {
    let mut payload = vec![0u8; len.max(5)];
    payload[0] = if keyframe { 0x17 } else { 0x27 };
    payload[1] = packet_type;
    payload[4] = 0x28; // composition time 40 ms
    for (i, byte) in payload.iter_mut().enumerate().skip(5) {
        *byte = (i * 31) as u8;
    }
    Bytes::from(payload)
}

/// An AVCDecoderConfigurationRecord for a 720p High profile stream.
fn avc_sequence_header() -> Bytes {
    let mut payload = vec![0x17, 0x00, 0x00, 0x00, 0x00];
    payload.extend_from_slice(&[
        0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x0B, 0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40,
        0x50, 0x05, 0xBB, 0x01, 0x01, 0x00, 0x05, 0x68, 0xEB, 0xEC, 0xB2, 0x2C,
    ]);
    Bytes::from(payload)
}

/// An AAC-LC 44.1 kHz stereo AudioSpecificConfig.
fn aac_sequence_header() -> Bytes {
    Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10])
}

fn aac_frame(len: usize) -> Bytes {
    let mut payload = vec![0xAF, 0x01];
    payload.extend((0..len).map(|i| (i * 17) as u8));
    Bytes::from(payload)
}

// ---- chunk streams ------------------------------------------------------------------------

fn message(
    csid: u32,
    timestamp: u32,
    message_type: MessageType,
    stream: MessageStreamId,
    payload: Bytes,
) -> RtmpMessage {
    RtmpMessage {
        chunk_stream_id: ChunkStreamId(csid),
        timestamp,
        message_type,
        message_stream_id: stream,
        payload,
    }
}

fn command_message(csid: u32, stream: MessageStreamId, command: &Command) -> RtmpMessage {
    message(csid, 0, MessageType::COMMAND_AMF0, stream, command.encode())
}

fn encode(encoder: &mut ChunkEncoder, messages: &[RtmpMessage]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in messages {
        encoder.encode(m, &mut out);
    }
    out.to_vec()
}

/// What ffmpeg sends after the handshake when publishing: chunk size, connect, the FMLE
/// commands, createStream, publish, metadata, sequence headers and a few frames.
fn publish_session() -> Vec<u8> {
    let media = MessageStreamId::MEDIA;
    let connection = MessageStreamId::CONNECTION;
    let mut messages = vec![
        ControlMessage::SetChunkSize(4096).to_message(),
        command_message(3, connection, &connect()),
        ControlMessage::WindowAckSize(2_500_000).to_message(),
        command_message(3, connection, &client::release_stream(2.0, "cam")),
        command_message(3, connection, &client::fc_publish(3.0, "cam")),
        command_message(3, connection, &client::create_stream(4.0)),
        command_message(8, media, &client::publish(5.0, "cam")),
        message(
            4,
            0,
            MessageType::DATA_AMF0,
            media,
            set_data_frame().encode(),
        ),
        message(6, 0, MessageType::VIDEO, media, avc_sequence_header()),
        message(4, 0, MessageType::AUDIO, media, aac_sequence_header()),
        message(6, 0, MessageType::VIDEO, media, video_tag(true, 1, 5000)),
    ];
    for i in 1..6u32 {
        messages.push(message(
            4,
            i * 23,
            MessageType::AUDIO,
            media,
            aac_frame(200),
        ));
        messages.push(message(
            6,
            i * 40,
            MessageType::VIDEO,
            media,
            video_tag(false, 1, 600 + 50 * i as usize),
        ));
    }
    encode(&mut ChunkEncoder::new(), &messages)
}

/// Default chunk size 128, same-size audio at a steady cadence (fmt 3 new messages) and
/// video of changing sizes (fmt 1) split into many chunks.
fn compressed_128() -> Vec<u8> {
    let media = MessageStreamId::MEDIA;
    let mut messages = Vec::new();
    for i in 0..8u32 {
        messages.push(message(
            4,
            i * 21,
            MessageType::AUDIO,
            media,
            aac_frame(150),
        ));
        messages.push(message(
            6,
            i * 42,
            MessageType::VIDEO,
            media,
            video_tag(i == 0, 1, 200 + 37 * i as usize),
        ));
    }
    encode(&mut ChunkEncoder::new(), &messages)
}

/// Timestamps crossing the 24-bit field (extended timestamps on fmt 0, 1, 2 and on type 3
/// continuations), then going backwards (fmt 0 again).
fn extended_timestamps() -> Vec<u8> {
    let media = MessageStreamId::MEDIA;
    let timestamps = [
        0x00FF_FFF0,
        0x00FF_FFFF,
        0x0100_0010,
        0x0200_0000,
        0x0400_0000,
        0x0600_0000,
        5,
    ];
    let messages: Vec<RtmpMessage> = timestamps
        .iter()
        .map(|&ts| message(6, ts, MessageType::VIDEO, media, video_tag(false, 1, 300)))
        .collect();
    encode(&mut ChunkEncoder::new(), &messages)
}

/// Chunk stream ids that need the 2- and 3-byte basic headers.
fn wide_csids() -> Vec<u8> {
    let media = MessageStreamId::MEDIA;
    let messages: Vec<RtmpMessage> = [63, 64, 319, 320, 65_599]
        .iter()
        .map(|&csid| message(csid, 10, MessageType::AUDIO, media, aac_frame(140)))
        .collect();
    encode(&mut ChunkEncoder::new(), &messages)
}

/// A 300-byte message cut after its first chunk by an Abort, then a whole message on the
/// same chunk stream.
fn abort_mid_message() -> Vec<u8> {
    let media = MessageStreamId::MEDIA;
    let big = message(4, 100, MessageType::VIDEO, media, video_tag(true, 1, 300));
    let mut out = encode(&mut ChunkEncoder::new(), &[big]);
    out.truncate(1 + 11 + 128); // basic header, type 0 header, first chunk
    out.extend(encode(
        &mut ChunkEncoder::new(),
        &[ControlMessage::Abort(ChunkStreamId(4)).to_message()],
    ));
    out.extend(encode(
        &mut ChunkEncoder::new(),
        &[message(4, 140, MessageType::AUDIO, media, aac_frame(20))],
    ));
    out
}

/// A type 3 chunk starting a new message right after a type 0 header (our encoder never
/// writes this; ffmpeg reads it as "add the last timestamp field again").
fn fmt3_after_fmt0() -> Vec<u8> {
    let mut out = vec![0x04]; // fmt 0, csid 4
    out.extend_from_slice(&[0x00, 0x00, 0x64]); // timestamp 100
    out.extend_from_slice(&[0x00, 0x00, 0x04, 0x08]); // length 4, audio
    out.extend_from_slice(&1u32.to_le_bytes()); // message stream 1
    out.extend_from_slice(&[0xAF, 0x01, 0x21, 0x00]);
    out.push(0xC4); // fmt 3, csid 4: a new message
    out.extend_from_slice(&[0xAF, 0x01, 0x21, 0x10]);
    out
}

// ---- handshakes ---------------------------------------------------------------------------

fn random(seed: u8) -> Vec<u8> {
    (0..RANDOM_LEN)
        .map(|i| (i as u8).wrapping_mul(seed) ^ 0x5A)
        .collect()
}

/// An RTMPE C1 (no C0) as rtmpdump lays it out, with the public key of a private key of
/// bytes `key` (0: an all-zero public key, out of range) and a valid digest.
fn rtmpe_c1(scheme0: bool, key: u8) -> Vec<u8> {
    let mut c1: Vec<u8> = (0..1536u32).map(|i| (i * 13 + 5) as u8).collect();
    c1[..8].copy_from_slice(&[0, 0, 0, 0, 128, 0, 7, 2]);
    let public = if key == 0 {
        [0u8; DH_KEY_LEN]
    } else {
        *DhKeyPair::new(&[key; DH_KEY_LEN]).public()
    };
    let pos = corecast_fuzz::dh_pos(&c1, scheme0);
    c1[pos..pos + DH_KEY_LEN].copy_from_slice(&public);
    corecast_fuzz::sign_c1(&mut c1, scheme0);
    c1
}

/// C0+C1 and the C2 a real client answers the server with, plus the first chunk bytes.
fn client_handshake(kind: HandshakeKind, echo_s1_as_c2: bool) -> Vec<u8> {
    let mut client = ClientHandshake::new(kind, 1000, &random(7));
    let c0c1 = client.poll_output().expect("C0+C1 ready");
    // The target's own server, so that the digest C2 checks out against its S1.
    let mut server = corecast_fuzz::server_handshake();
    let mut buf = BytesMut::from(&c0c1[..]);
    server.handle_input(&mut buf).expect("server reads C1");
    let s0s1s2 = server.poll_output().expect("S0+S1+S2 ready");
    let c2 = if echo_s1_as_c2 {
        // What ffmpeg does when publishing: C2 is a plain echo of S1.
        s0s1s2.slice(1..1 + 1536)
    } else {
        let mut buf = BytesMut::from(&s0s1s2[..]);
        client
            .handle_input(&mut buf)
            .expect("client reads S0+S1+S2");
        client.poll_output().expect("C2 ready")
    };
    let mut out = c0c1.to_vec();
    out.extend_from_slice(&c2);
    let mut first_chunks = BytesMut::new();
    ChunkEncoder::new().encode(
        &ControlMessage::SetChunkSize(4096).to_message(),
        &mut first_chunks,
    );
    out.extend_from_slice(&first_chunks);
    out
}

// ---- FLV ----------------------------------------------------------------------------------

fn flv_file(timestamp_base: u32) -> Vec<u8> {
    let mut out = BytesMut::new();
    flv::write_header(&mut out, true, true);
    let metadata = set_data_frame().player_metadata().expect("onMetaData");
    let mut tags = vec![
        FlvTag {
            tag_type: TAG_TYPE_SCRIPT,
            timestamp: 0,
            data: metadata.encode(),
        },
        FlvTag {
            tag_type: TAG_TYPE_VIDEO,
            timestamp: 0,
            data: avc_sequence_header(),
        },
        FlvTag {
            tag_type: TAG_TYPE_AUDIO,
            timestamp: 0,
            data: aac_sequence_header(),
        },
        FlvTag {
            tag_type: TAG_TYPE_VIDEO,
            timestamp: timestamp_base,
            data: video_tag(true, 1, 1200),
        },
    ];
    for i in 1..4u32 {
        tags.push(FlvTag {
            tag_type: TAG_TYPE_AUDIO,
            timestamp: timestamp_base + i * 23,
            data: aac_frame(120),
        });
        tags.push(FlvTag {
            tag_type: TAG_TYPE_VIDEO,
            timestamp: timestamp_base + i * 40,
            data: video_tag(false, 1, 300),
        });
    }
    for tag in &tags {
        flv::write_tag(&mut out, tag);
    }
    out.to_vec()
}

/// A header with DataOffset 13 (four bytes of extension), then one audio tag.
fn flv_long_header() -> Vec<u8> {
    let mut out = b"FLV\x01\x04\x00\x00\x00\x0D\xDE\xAD\xBE\xEF\x00\x00\x00\x00".to_vec();
    let mut tag = BytesMut::new();
    flv::write_tag(
        &mut tag,
        &FlvTag {
            tag_type: TAG_TYPE_AUDIO,
            timestamp: 0,
            data: aac_sequence_header(),
        },
    );
    out.extend_from_slice(&tag);
    out
}

// ---- control messages ---------------------------------------------------------------------

fn control_seeds() -> Vec<(&'static str, ControlMessage)> {
    vec![
        ("set_chunk_size", ControlMessage::SetChunkSize(4096)),
        ("abort", ControlMessage::Abort(ChunkStreamId(4))),
        (
            "acknowledgement",
            ControlMessage::Acknowledgement(2_500_000),
        ),
        ("window_ack_size", ControlMessage::WindowAckSize(2_500_000)),
        (
            "set_peer_bandwidth",
            ControlMessage::SetPeerBandwidth {
                window: 2_500_000,
                limit: PeerBandwidthLimit::Dynamic,
            },
        ),
        (
            "stream_begin",
            ControlMessage::UserControl(UserControlEvent::StreamBegin(MessageStreamId(1))),
        ),
        (
            "set_buffer_length",
            ControlMessage::UserControl(UserControlEvent::SetBufferLength {
                stream: MessageStreamId(1),
                buffer_ms: 3000,
            }),
        ),
        (
            "ping_request",
            ControlMessage::UserControl(UserControlEvent::PingRequest(123_456)),
        ),
        (
            "ping_response",
            ControlMessage::UserControl(UserControlEvent::PingResponse(123_456)),
        ),
        (
            "swf_verify_request",
            ControlMessage::UserControl(UserControlEvent::Unknown {
                event_type: 0x1A,
                data: Bytes::new(),
            }),
        ),
    ]
}

/// Control-plane schedules that reach the races the plane guards against.
fn plane_seeds() -> Vec<(&'static str, usize, bool, Vec<Op>)> {
    let deliver = |from, to| Op::Deliver { from, to };
    let frame = |keyframe| Op::Frame {
        source: 0,
        keyframe,
    };
    vec![
        (
            "remote_player",
            2,
            false,
            vec![
                Op::Publish { core: 0, key: 0 },
                frame(true),
                Op::Join { core: 1, key: 0 },
                deliver(1, 0),
                frame(false),
                deliver(0, 1),
                deliver(0, 1),
            ],
        ),
        (
            "leave_and_rejoin_before_the_answer",
            2,
            false,
            vec![
                Op::Publish { core: 0, key: 0 },
                frame(true),
                Op::Join { core: 1, key: 0 },
                Op::Leave { player: 0 },
                Op::Join { core: 1, key: 0 },
                deliver(1, 0),
                frame(false),
                deliver(1, 0),
                frame(false),
                deliver(1, 0),
                frame(false),
            ],
        ),
        (
            "stale_start_after_republish",
            3,
            false,
            vec![
                Op::Join { core: 1, key: 0 },
                Op::Publish { core: 0, key: 0 },
                Op::Unpublish { publisher: 0 },
                Op::Publish { core: 2, key: 0 },
                deliver(2, 1),
                deliver(0, 1),
                deliver(0, 1),
                frame(true),
                deliver(2, 1),
            ],
        ),
        (
            "edge_pull_pause_resume_stop",
            4,
            true,
            vec![
                Op::Join { core: 0, key: 0 },
                Op::Join { core: 1, key: 0 },
                Op::Join { core: 3, key: 1 },
                deliver(1, 0),
                Op::PullResume { pull: 0 },
                frame(true),
                deliver(0, 1),
                Op::PullPause { pull: 0 },
                Op::PullResume { pull: 0 },
                Op::Leave { player: 0 },
                Op::PullStop { pull: 0 },
                deliver(0, 1),
            ],
        ),
    ]
}

/// Tokens for `token_verify`: valid for its expectation (publish live/cam1 at 1700000000),
/// expired, for another stream, and one with its signature's last character changed.
fn token_seeds() -> Vec<(&'static str, String)> {
    use corecast_common::token::{Action, Claims, Key, KeyState, Keyring};
    let ring = Keyring::new(vec![Key::new(
        "k1",
        corecast_fuzz::TOKEN_SECRET,
        KeyState::Active,
    )])
    .expect("keyring");
    let claims = |stream: &str, expires: u64| Claims {
        key_id: "k1".to_owned(),
        action: Action::Publish,
        app: "live".to_owned(),
        stream: stream.to_owned(),
        not_before: 1_699_999_000,
        expires,
    };
    let sign = |c: &Claims| ring.sign(c).expect("signs");
    let valid = sign(&claims("cam1", 1_700_003_600));
    let mut forged = valid.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    vec![
        ("valid", valid.clone()),
        ("in_query", format!("a=1&token={valid}&b=2")),
        ("expired", sign(&claims("cam1", 1_699_999_500))),
        ("other_stream", sign(&claims("cam2", 1_700_003_600))),
        ("forged", forged),
    ]
}

/// E-RTMP v2 messages from the project's encoder: (name, video?, body).
fn ertmp_seeds() -> Vec<(&'static str, bool, Vec<u8>)> {
    use corecast_common::ertmp::build::{command, ModEx, Packet, TrackPart};
    use corecast_common::ertmp::{FourCc, Media, MultitrackType, PacketType};
    let avc = TrackPart::new(0, FourCc::AVC, &[0, 0, 0, 0, 0, 0, 2, 0x65, 0x88]);
    let hevc = TrackPart::new(1, FourCc::HEVC, &[0, 0, 0, 0, 0, 0, 2, 0x26, 0x01]);
    let opus = TrackPart::new(0, FourCc::OPUS, b"OpusHead\x01\x02");
    let aac = TrackPart::new(1, FourCc::AAC, &[0x12, 0x10]);
    vec![
        (
            "video_one_track",
            true,
            Packet::multi(
                Media::Video,
                1,
                PacketType::CodedFrames,
                MultitrackType::OneTrack,
                vec![avc.clone()],
            )
            .encode(),
        ),
        (
            "video_many_tracks",
            true,
            Packet::multi(
                Media::Video,
                1,
                PacketType::CodedFrames,
                MultitrackType::ManyTracks,
                vec![
                    avc.clone(),
                    TrackPart {
                        id: 1,
                        ..avc.clone()
                    },
                ],
            )
            .encode(),
        ),
        (
            "video_many_codecs_modex",
            true,
            Packet::multi(
                Media::Video,
                1,
                PacketType::SequenceStart,
                MultitrackType::ManyTracksManyCodecs,
                vec![avc.clone(), hevc],
            )
            .with_modex(ModEx::nano_offset(500_000))
            .encode(),
        ),
        (
            "video_metadata",
            true,
            Packet::single(
                Media::Video,
                1,
                PacketType::Metadata,
                TrackPart::new(0, FourCc::AV1, b"\x02\x00\x09colorInfo\x05"),
            )
            .encode(),
        ),
        ("video_command", true, command(0, &[])),
        (
            "audio_multichannel_config",
            false,
            Packet::single(
                Media::Audio,
                0,
                PacketType::MultichannelConfig,
                TrackPart::new(0, FourCc::OPUS, &[1, 6, 0, 0, 0, 0x3F]),
            )
            .encode(),
        ),
        (
            "audio_many_codecs",
            false,
            Packet::multi(
                Media::Audio,
                0,
                PacketType::SequenceStart,
                MultitrackType::ManyTracksManyCodecs,
                vec![opus, aac],
            )
            .encode(),
        ),
        (
            "audio_long_modex",
            false,
            Packet::single(
                Media::Audio,
                0,
                PacketType::CodedFrames,
                TrackPart::new(0, FourCc::FLAC, &[0xFF, 0xF8]),
            )
            .with_modex(ModEx {
                kind: 3,
                data: vec![0xA5; 260],
            })
            .encode(),
        ),
    ]
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let corpus = Corpus { root };

    // aggregate_split: the aggregate's time (4 bytes), then its body
    for (name, time, parts) in aggregate_seeds() {
        let body = corecast_common::client::aggregate::encode(&parts).expect("encodable");
        let mut data = time.to_be_bytes().to_vec();
        data.extend_from_slice(&body);
        corpus.write("aggregate_split", name, &data);
    }

    // ertmp_media
    for (name, video, body) in ertmp_seeds() {
        let mut data = vec![u8::from(video)];
        data.extend_from_slice(&body);
        corpus.write("ertmp_media", name, &data);
    }

    // token_verify
    for (name, token) in token_seeds() {
        corpus.write("token_verify", name, token.as_bytes());
    }

    // amf0_decode
    corpus.write("amf0_decode", "connect", &connect().encode());
    corpus.write("amf0_decode", "connect_result", &connect_result().encode());
    corpus.write("amf0_decode", "set_data_frame", &set_data_frame().encode());
    corpus.write("amf0_decode", "all_types", &amf0_all_types());
    corpus.write("amf0_decode", "amf3_switch", &amf3_values());

    // command_decode
    let mut connect_amf3 = vec![0x00];
    connect_amf3.extend_from_slice(&connect().encode());
    let mut amf3_envelope_switch = vec![0x00];
    amf3_envelope_switch.extend_from_slice(&client::play(2.0, "cam").encode());
    amf3_envelope_switch.extend_from_slice(&amf3_values());
    let on_status = Command::on_status(status_info(
        "status",
        "NetStream.Publish.Start",
        "cam is now published",
    ));
    corpus.write("command_decode", "connect", &connect().encode());
    corpus.write("command_decode", "connect_amf3_envelope", &connect_amf3);
    corpus.write("command_decode", "play_amf3_switch", &amf3_envelope_switch);
    corpus.write(
        "command_decode",
        "create_stream",
        &client::create_stream(4.0).encode(),
    );
    corpus.write(
        "command_decode",
        "publish",
        &client::publish(5.0, "cam").encode(),
    );
    corpus.write(
        "command_decode",
        "delete_stream",
        &client::delete_stream(6.0, MessageStreamId(1)).encode(),
    );
    corpus.write(
        "command_decode",
        "connect_result",
        &connect_result().encode(),
    );
    corpus.write("command_decode", "on_status", &on_status.encode());
    corpus.write(
        "command_decode",
        "set_data_frame",
        &set_data_frame().encode(),
    );

    // chunk_decoder, and chunk_roundtrip with the same layout: one set of seeds for both.
    for target in ["chunk_decoder", "chunk_roundtrip"] {
        corpus.write_stream(target, "publish_session", READS_1500, &publish_session());
        corpus.write_stream(target, "compressed_128", READS_64, &compressed_128());
        corpus.write_stream(
            target,
            "extended_timestamps",
            READS_7,
            &extended_timestamps(),
        );
        corpus.write_stream(target, "wide_csids", READS_64, &wide_csids());
        corpus.write_stream(target, "abort_mid_message", READS_7, &abort_mid_message());
        corpus.write_stream(target, "fmt3_after_fmt0", READS_1, &fmt3_after_fmt0());
    }

    // handshake_server
    corpus.write_stream(
        "handshake_server",
        "plain",
        READS_1500,
        &client_handshake(HandshakeKind::Plain, false),
    );
    corpus.write_stream(
        "handshake_server",
        "digest",
        READS_64,
        &client_handshake(HandshakeKind::Digest, false),
    );
    corpus.write_stream(
        "handshake_server",
        "digest_c2_echoes_s1",
        READS_1500,
        &client_handshake(HandshakeKind::Digest, true),
    );
    corpus.write_stream(
        "handshake_server",
        "rtmpe",
        READS_7,
        b"\x06\x00\x00\x00\x00",
    );
    corpus.write_stream(
        "handshake_server",
        "http_request",
        READS_7,
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    );

    // handshake_rtmpe: mode byte, then C1 (and C2 and the first encrypted bytes).
    for (name, mode, scheme0, key) in [
        ("scheme0_signed", 0u8, true, 7u8),
        ("scheme1_signed", 0, false, 9),
        ("target_signs_scheme1", 1, false, 11),
        ("target_signs_zero_key", 3, true, 0),
    ] {
        let mut data = vec![mode];
        data.extend_from_slice(&rtmpe_c1(scheme0, key));
        data.extend_from_slice(&[0x5A; 1536]);
        data.extend_from_slice(b"encrypted chunks");
        corpus.write_stream("handshake_rtmpe", name, READS_64, &data);
    }
    corpus.write_stream("handshake_rtmpe", "short_c1", READS_7, &[0, 1, 2, 3]);

    // flv_reader
    corpus.write_stream("flv_reader", "avc_aac", READS_1500, &flv_file(40));
    corpus.write_stream(
        "flv_reader",
        "extended_timestamps",
        READS_64,
        &flv_file(0x00FF_FFF0),
    );
    corpus.write_stream("flv_reader", "long_header", READS_7, &flv_long_header());

    // flv_tag_headers
    let mut hevc_enhanced = b"\x91hvc1\x00\x00\x28".to_vec(); // key, CodedFrames, cts 40
    hevc_enhanced.extend_from_slice(&[0x00, 0x00, 0x00, 0x10, 0x26, 0x01]);
    let headers: [(&str, &[u8]); 11] = [
        ("avc_sequence_header", &avc_sequence_header()),
        ("avc_keyframe", &video_tag(true, 1, 16)),
        ("avc_inter", &video_tag(false, 1, 16)),
        ("avc_end_of_sequence", b"\x17\x02\x00\x00\x00"),
        ("hevc_legacy_12", b"\x1C\x01\x00\x00\x28\x00\x00"),
        ("hevc_enhanced_coded_frames", &hevc_enhanced),
        ("av1_enhanced_sequence_start", b"\x90av01\x81\x08\x0C\x00"),
        ("vp6", b"\x24\x00\x00"),
        ("aac_sequence_header", &aac_sequence_header()),
        ("mp3", b"\x2F\xFF\xFB\x90\x00"),
        ("enhanced_audio_sequence_start", b"\x90Opus\x01\x02"),
    ];
    for (name, data) in headers {
        corpus.write("flv_tag_headers", name, data);
    }

    // control_decode
    for (name, control) in control_seeds() {
        let message = control.to_message();
        let mut data = vec![message.message_type.0];
        data.extend_from_slice(&message.payload);
        corpus.write("control_decode", name, &data);
    }
    corpus.write(
        "control_decode",
        "set_buffer_length_padded",
        b"\x04\x00\x03\x00\x00\x00\x01\x00\x00\x0B\xB8\xFF",
    );

    // plane
    for (name, cores, pulls, ops) in plane_seeds() {
        corpus.write("plane", name, &sim::encode(cores, pulls, &ops));
    }

    // hls_muxer
    for (name, targets, records) in hls_seeds() {
        corpus.write("hls_muxer", name, &encode_hls_records(targets, &records));
    }
}

// ---- HLS muxer ----------------------------------------------------------------------------

fn hls_record(video: bool, delta_ms: i16, body: &[u8]) -> HlsRecord {
    HlsRecord {
        video,
        probe: delta_ms % 3 == 0,
        delta_ms,
        body: body.to_vec(),
    }
}

/// `seconds` of 25 fps AVC (a keyframe every `gop` frames) and 44.1 kHz AAC, interleaved as an
/// encoder sends them, after both sequence headers.
fn avc_aac_records(seconds: u32, gop: u32) -> Vec<HlsRecord> {
    let mut records = vec![
        hls_record(true, 0, &avc_sequence_header()),
        hls_record(false, 0, &aac_sequence_header()),
    ];
    let (mut video_ms, mut audio_ms, mut audio_sent) = (0u32, 0.0f64, 0u32);
    for frame in 0..seconds * 25 {
        let ms = frame * 40;
        let tag = video_tag(frame % gop == 0, 1, 24);
        records.push(hls_record(true, (ms - video_ms) as i16, &tag));
        video_ms = ms;
        while audio_ms < f64::from(ms + 40) {
            let at = audio_ms as u32;
            records.push(hls_record(false, (at - audio_sent) as i16, &aac_frame(8)));
            audio_sent = at;
            audio_ms += 1024.0 / 44.1;
        }
    }
    records
}

fn hls_seeds() -> Vec<(&'static str, u8, Vec<HlsRecord>)> {
    let audio_only = std::iter::once(hls_record(false, 0, &aac_sequence_header()))
        .chain((0..200).map(|_| hls_record(false, 23, &aac_frame(6))))
        .collect();
    let mut restarted = avc_aac_records(2, 25);
    restarted.push(hls_record(true, -30_000, &video_tag(true, 1, 24)));
    restarted.extend(avc_aac_records(2, 25).into_iter().skip(2));
    vec![
        // 300 ms parts, 600 ms segments; 1 s GOPs.
        ("avc_aac_1s_gops", 0x0A, avc_aac_records(4, 25)),
        // 200 ms parts, 800 ms segments; one 4 s GOP: segments longer than the target.
        ("avc_aac_long_gop", 0x19, avc_aac_records(8, 100)),
        ("aac_only", 0x02, audio_only),
        // Timestamps jump back 30 s mid-stream.
        ("avc_aac_time_jump", 0x0A, restarted),
        // The same AVC as E-RTMP v2 multitrack (tracks 0 and 1), every other one behind ModEx.
        (
            "avc_multitrack_aac",
            0x0A,
            multitrack(avc_aac_records(2, 25)),
        ),
    ]
}

/// `records` with each legacy AVC tag rewritten as an E-RTMP v2 ManyTracks message carrying
/// it as track 0 and track 1.
fn multitrack(records: Vec<HlsRecord>) -> Vec<HlsRecord> {
    use corecast_common::ertmp::build::{ModEx, Packet, TrackPart};
    use corecast_common::ertmp::{FourCc, Media, MultitrackType, PacketType};
    records
        .into_iter()
        .enumerate()
        .map(|(i, mut record)| {
            if record.video && record.body.len() >= 5 {
                let (packet, body) = match record.body[1] {
                    0 => (PacketType::SequenceStart, record.body[5..].to_vec()),
                    _ => (PacketType::CodedFrames, record.body[2..].to_vec()),
                };
                let tracks = vec![
                    TrackPart::new(0, FourCc::AVC, &body),
                    TrackPart::new(1, FourCc::AVC, &body),
                ];
                let frame_type = record.body[0] >> 4;
                let mut message = Packet::multi(
                    Media::Video,
                    frame_type,
                    packet,
                    MultitrackType::ManyTracks,
                    tracks,
                );
                if i % 2 == 1 {
                    message = message.with_modex(ModEx::nano_offset(i as u32));
                }
                record.body = message.encode();
            }
            record
        })
        .collect()
}

/// Aggregates as servers send them: (name, aggregate time, sub-messages at their own times).
fn aggregate_seeds() -> Vec<(&'static str, u32, Vec<RtmpMessage>)> {
    let sub = |message_type, timestamp, payload: &[u8]| RtmpMessage {
        chunk_stream_id: ChunkStreamId::VIDEO,
        timestamp,
        message_type,
        message_stream_id: MessageStreamId(0),
        payload: Bytes::copy_from_slice(payload),
    };
    vec![
        (
            "video_and_audio",
            1000,
            vec![
                sub(MessageType::VIDEO, 500, &video_tag(true, 1, 16)),
                sub(MessageType::AUDIO, 523, b"\xAF\x01\x21\x10\x04"),
                sub(MessageType::VIDEO, 540, &video_tag(false, 1, 16)),
            ],
        ),
        (
            "extended_times",
            0xFFFF_FF00,
            vec![
                sub(MessageType::VIDEO, 0x00FF_FFF0, &video_tag(true, 1, 8)),
                sub(MessageType::AUDIO, 0x0100_0010, b"\xAF\x01\x00"),
            ],
        ),
        (
            "metadata_first",
            0,
            vec![
                sub(MessageType::DATA_AMF0, 0, b"\x02\x00\x0AonMetaData\x05"),
                sub(MessageType::VIDEO, 0, &avc_sequence_header()),
            ],
        ),
    ]
}
