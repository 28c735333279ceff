//! AMF0 decoding of the messages every publish starts with: ffmpeg's `connect` command and
//! the `@setDataFrame onMetaData` data message it sends before the first frame.
//!
//! Both are built with this crate's encoder from the values ffmpeg sends (the `connect`
//! properties of [`client::connect`], the `onMetaData` fields libavformat's FLV muxer writes
//! for a 720p25 H.264 + AAC stream), so they are byte-for-byte what the node parses.

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use corecast_common::amf0::{self, Amf0Object, Amf0Value};
use corecast_common::command::{client, Command, DataMessage};
use corecast_common::types::MessageType;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// ffmpeg's `connect` as the AMF0 body of a type 20 message.
fn connect_payload() -> Bytes {
    client::connect(1.0, "live", "rtmp://127.0.0.1:1935/live").encode()
}

/// The same `connect` in a type 17 message: the 0x00 format byte, then AMF0.
fn connect_payload_amf3() -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0x00);
    out.extend_from_slice(&connect_payload());
    out.freeze()
}

/// `@setDataFrame, onMetaData, {…}` as ffmpeg's FLV muxer writes it for 720p25 H.264 + AAC.
fn metadata_payload() -> Bytes {
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
    .encode()
}

fn amf0_benches(c: &mut Criterion) {
    let connect = connect_payload();
    let connect_amf3 = connect_payload_amf3();
    let metadata = metadata_payload();

    let mut group = c.benchmark_group("amf0/decode_all");
    group.throughput(Throughput::Bytes(connect.len() as u64));
    group.bench_function("connect", |b| {
        b.iter(|| amf0::decode_all(black_box(&connect)).expect("connect decodes"));
    });
    group.throughput(Throughput::Bytes(metadata.len() as u64));
    group.bench_function("onMetaData", |b| {
        b.iter(|| amf0::decode_all(black_box(&metadata)).expect("metadata decodes"));
    });
    group.finish();

    let mut group = c.benchmark_group("command/decode");
    group.throughput(Throughput::Bytes(connect.len() as u64));
    group.bench_function("connect_amf0", |b| {
        b.iter(|| {
            Command::decode(MessageType::COMMAND_AMF0, black_box(&connect)).expect("decodes")
        });
    });
    group.throughput(Throughput::Bytes(connect_amf3.len() as u64));
    group.bench_function("connect_amf3", |b| {
        b.iter(|| {
            Command::decode(MessageType::COMMAND_AMF3, black_box(&connect_amf3)).expect("decodes")
        });
    });
    group.finish();

    let mut group = c.benchmark_group("data/decode");
    group.throughput(Throughput::Bytes(metadata.len() as u64));
    group.bench_function("onMetaData_player_metadata", |b| {
        // What the node does with a publisher's metadata: parse, then strip @setDataFrame.
        b.iter(|| {
            DataMessage::decode(MessageType::DATA_AMF0, black_box(&metadata))
                .expect("decodes")
                .player_metadata()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: these are regression checks, not publication numbers.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = amf0_benches
}
criterion_main!(benches);
