//! The seeds are valid inputs that reach deep into each parser, not just bytes that fail to
//! crash it: a seed that stops at the first check teaches the fuzzer nothing. If a parser
//! change makes one of these fail, regenerate the corpus (`--example gen_corpus`).

use std::fs;
use std::path::Path;

use bytes::BytesMut;
use corecast_common::amf0::{self, Amf0Value};
use corecast_common::chunk::ChunkDecoder;
use corecast_common::command::{Command, DataMessage};
use corecast_common::control::ControlMessage;
use corecast_common::flv::{AudioTagHeader, FlvReader, VideoTagHeader};
use corecast_common::handshake::{HandshakeKind, HandshakeStatus};
use corecast_common::types::MessageType;

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let data = seed(target, &n);
            (n, data)
        })
        .collect()
}

#[test]
fn amf0_seeds_decode() {
    for (name, data) in seeds("amf0_decode") {
        let values = amf0::decode_all(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!values.is_empty(), "{name}");
    }
    let values = amf0::decode_all(&seed("amf0_decode", "amf3_switch")).unwrap();
    assert_eq!(values.len(), 4, "four AMF3 values");
    let object = values[0].as_object().unwrap();
    assert_eq!(object.get("app").and_then(Amf0Value::as_number), Some(5.0));
    assert_eq!(object.get("fpad").and_then(Amf0Value::as_bool), Some(false));
    let inner = object.get("inner").and_then(Amf0Value::as_object).unwrap();
    assert_eq!(inner.get("app").and_then(Amf0Value::as_str), Some("live"));
    assert!(
        matches!(values[1], Amf0Value::EcmaArray(_)),
        "{:?}",
        values[1]
    );
    assert!(matches!(values[2], Amf0Value::Date { .. }));
    assert!(matches!(&values[3], Amf0Value::TypedObject { class_name, .. } if class_name == "Foo"));
}

#[test]
fn command_seeds_decode() {
    for (name, data) in seeds("command_decode") {
        let ok = match name.as_str() {
            "set_data_frame" => DataMessage::decode(MessageType::DATA_AMF0, &data)
                .map(|d| d.player_metadata().is_some())
                .unwrap_or(false),
            "connect_amf3_envelope" | "play_amf3_switch" => {
                Command::decode(MessageType::COMMAND_AMF3, &data).is_ok()
            }
            _ => Command::decode(MessageType::COMMAND_AMF0, &data).is_ok(),
        };
        assert!(ok, "{name} does not decode");
    }
}

#[test]
fn chunk_seeds_decode_completely() {
    let chunk_seeds = [seeds("chunk_decoder"), seeds("chunk_roundtrip")].concat();
    for (name, data) in chunk_seeds {
        let mut decoder = ChunkDecoder::default();
        let mut buf = BytesMut::from(&data[1..]);
        let mut count = 0;
        while let Some(_message) = decoder
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
        {
            count += 1;
        }
        assert!(count > 0, "{name}: no message");
        assert!(buf.is_empty(), "{name}: {} bytes left", buf.len());
    }
}

#[test]
fn handshake_seeds_reach_their_outcome() {
    let run = |name: &str| {
        let data = seed("handshake_server", name);
        let mut handshake = corecast_fuzz::server_handshake();
        let mut buf = BytesMut::from(&data[1..]);
        let status = handshake.handle_input(&mut buf);
        (status, handshake.kind(), handshake.c2_digest_verified())
    };
    assert_eq!(
        run("plain"),
        (Ok(HandshakeStatus::Done), Some(HandshakeKind::Plain), None)
    );
    assert_eq!(
        run("digest"),
        (
            Ok(HandshakeStatus::Done),
            Some(HandshakeKind::Digest),
            Some(true)
        )
    );
    assert_eq!(
        run("digest_c2_echoes_s1"),
        (
            Ok(HandshakeStatus::Done),
            Some(HandshakeKind::Digest),
            Some(false)
        )
    );
    assert!(run("rtmpe").0.is_err());
    assert!(run("http_request").0.is_err());
}

#[test]
fn rtmpe_seeds_reach_their_outcome() {
    let run = |name: &str| {
        let data = seed("handshake_rtmpe", name);
        let mut handshake = corecast_fuzz::rtmpe_server();
        let mut stream = vec![6u8];
        stream.extend_from_slice(&data[2..]);
        if data[1] & 1 == 1 {
            corecast_fuzz::sign_c1(&mut stream[1..1537], data[1] & 2 == 2);
        }
        let mut buf = BytesMut::from(&stream[..]);
        let status = handshake.handle_input(&mut buf);
        (status, handshake.take_rtmpe_cipher().is_some(), buf.len())
    };
    for name in ["scheme0_signed", "scheme1_signed", "target_signs_scheme1"] {
        let trailing = b"encrypted chunks".len();
        assert_eq!(
            run(name),
            (Ok(HandshakeStatus::Done), true, trailing),
            "{name}"
        );
    }
    assert!(run("target_signs_zero_key").0.is_err());
    assert_eq!(run("short_c1").0, Ok(HandshakeStatus::NeedMore));
}

#[test]
fn flv_seeds_read_completely() {
    for (name, data) in seeds("flv_reader") {
        let mut reader = FlvReader::new();
        let mut buf = BytesMut::from(&data[1..]);
        let mut count = 0;
        while let Some(_tag) = reader
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
        {
            count += 1;
        }
        assert!(count > 0, "{name}: no tag");
        assert!(buf.is_empty(), "{name}: {} bytes left", buf.len());
    }
}

#[test]
fn tag_header_seeds_parse() {
    for (name, data) in seeds("flv_tag_headers") {
        let ok = if name.starts_with("aac") || name.starts_with("mp3") || name.contains("audio") {
            AudioTagHeader::parse(&data).is_ok()
        } else {
            VideoTagHeader::parse(&data).is_ok()
        };
        assert!(ok, "{name} does not parse");
    }
}

#[test]
fn control_seeds_decode() {
    for (name, data) in seeds("control_decode") {
        let decoded = ControlMessage::decode(MessageType(data[0]), &data[1..]);
        assert!(matches!(decoded, Ok(Some(_))), "{name}: {decoded:?}");
    }
}

#[test]
fn plane_seeds_are_schedules_that_run_clean() {
    use corecast_common::plane::sim::{decode, Op, Sim};

    for (name, data) in seeds("plane") {
        let (cores, pulls, ops) = decode(&data);
        assert!(cores > 1, "{name}: one core has no races");
        assert!(
            ops.iter().any(|op| matches!(op, Op::Deliver { .. })),
            "{name}: delivers no message"
        );
        if let Err(broken) = Sim::run(cores, pulls, &ops) {
            panic!("{name}: {broken}");
        }
        if let Err(broken) = Sim::run_limited(cores, pulls, &ops) {
            panic!("{name}, with a pull cap and a negative cache: {broken}");
        }
    }
}

#[test]
fn hls_seeds_make_segments() {
    use bytes::Bytes;
    use corecast_fuzz::hls::{decode_hls_records, hls_config};
    use corecast_hls::Muxer;

    for (name, data) in seeds("hls_muxer") {
        // Crash inputs kept so the replay keeps them fixed; they need not make segments.
        if name.starts_with("regression_") {
            continue;
        }
        let (targets, records) = decode_hls_records(&data).expect("a targets byte");
        let mut muxer = Muxer::new(hls_config(targets)).expect("a valid config");
        let (mut video_ts, mut audio_ts) = (0u32, 0u32);
        for record in records {
            let body = Bytes::from(record.body);
            let result = if record.video {
                video_ts = video_ts.wrapping_add_signed(i32::from(record.delta_ms));
                muxer.push_video(video_ts, &body)
            } else {
                audio_ts = audio_ts.wrapping_add_signed(i32::from(record.delta_ms));
                muxer.push_audio(audio_ts, &body)
            };
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        muxer.finish().expect("finish");
        let segments = muxer.window().listed().count();
        assert!(segments >= 2, "{name}: {segments} segments");
    }
    corecast_fuzz::hls_muxer(&seed("hls_muxer", "avc_aac_1s_gops"));
}

#[test]
fn ertmp_seeds_are_enhanced_messages() {
    use corecast_common::ertmp::{parse, Media, Tag};
    let mut count = 0;
    for (name, data) in seeds("ertmp_media") {
        let media = if data[0] & 1 == 1 {
            Media::Video
        } else {
            Media::Audio
        };
        let parsed = parse(media, &data[1..]);
        assert!(
            matches!(parsed, Ok(Tag::Enhanced(_) | Tag::Command { .. })),
            "{name}: {parsed:?}"
        );
        count += 1;
    }
    assert!(count >= 8);
}

#[test]
fn aggregate_seeds_split_into_several_messages() {
    use corecast_common::client::aggregate;
    use corecast_common::types::{ChunkStreamId, MessageStreamId, RtmpMessage};
    for (name, data) in seeds("aggregate_split") {
        let message = RtmpMessage {
            chunk_stream_id: ChunkStreamId::VIDEO,
            timestamp: u32::from_be_bytes(data[..4].try_into().unwrap()),
            message_type: MessageType::AGGREGATE,
            message_stream_id: MessageStreamId(1),
            payload: data[4..].to_vec().into(),
        };
        let parts = aggregate::split(&message).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(parts.len() >= 2, "{name}");
    }
}
