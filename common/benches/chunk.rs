//! Chunk codec throughput on a realistic publish stream.
//!
//! The stream is four seconds of a ~2.5 Mbit/s live encode: 25 fps H.264 video (a 60 KB
//! keyframe every two seconds, inter frames of 5–18 KB) interleaved in timestamp order with
//! AAC-LC audio at 44.1 kHz (~43 messages per second of ~200 B). Message sizes come from a
//! fixed-seed generator, so every run measures the same bytes.
//!
//! Three paths, each at chunk size 4096 (what ffmpeg/OBS and the node use) and 128 (the
//! default, which some encoders never change):
//! - `decode`: [`ChunkDecoder`] fed in 64 KiB reads, as the session's read loop does;
//! - `encode`: [`ChunkEncoder::encode`] with header compression, as a per-connection path;
//! - `encode_shared`: the encode-once framing the fan-out path uses.
//!
//! Throughput counts media payload bytes (not wire bytes), so the three paths compare directly.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corecast_common::chunk::{encode_shared, ChunkDecoder, ChunkEncoder};
use corecast_common::control::ControlMessage;
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Seconds of stream in one benchmark iteration.
const STREAM_SECS: u32 = 4;
/// Bytes the session asks for per socket read (`node::transport::READ_CHUNK`).
const READ_BYTES: usize = 64 * 1024;
/// The chunk sizes measured.
const CHUNK_SIZES: [u32; 2] = [4096, 128];

/// A tiny xorshift generator: deterministic message sizes without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

fn media(csid: ChunkStreamId, ty: MessageType, timestamp: u32, payload: Vec<u8>) -> RtmpMessage {
    RtmpMessage {
        chunk_stream_id: csid,
        timestamp,
        message_type: ty,
        message_stream_id: MessageStreamId::MEDIA,
        payload: Bytes::from(payload),
    }
}

/// An FLV video tag body: AVC NALU packet, then filler.
fn video_payload(rng: &mut XorShift, keyframe: bool, len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; len];
    payload[0] = if keyframe { 0x17 } else { 0x27 };
    payload[1] = 0x01; // AVC NALU
    for byte in &mut payload[5..] {
        *byte = rng.next() as u8;
    }
    payload
}

/// An FLV audio tag body: AAC raw frame, then filler.
fn audio_payload(rng: &mut XorShift, len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; len];
    payload[0] = 0xAF; // AAC, 44 kHz, 16-bit, stereo
    payload[1] = 0x01; // AAC raw
    for byte in &mut payload[2..] {
        *byte = rng.next() as u8;
    }
    payload
}

/// The media messages of [`STREAM_SECS`] seconds, in timestamp order.
fn stream() -> Vec<RtmpMessage> {
    let mut rng = XorShift(0x5EED_C0DE_CAFE_F00D);
    let mut messages = Vec::new();
    let end_ms = STREAM_SECS * 1000;
    let mut video_frame = 0u32;
    let mut audio_frame = 0u32;
    loop {
        let video_ts = video_frame * 40;
        // 1024 samples per AAC frame at 44.1 kHz.
        let audio_ts = audio_frame * 1024 * 1000 / 44_100;
        if video_ts >= end_ms && audio_ts >= end_ms {
            break;
        }
        if video_ts <= audio_ts {
            let keyframe = video_frame.is_multiple_of(50);
            let len = if keyframe {
                rng.range(55_000, 60_000)
            } else {
                rng.range(5_000, 18_000)
            };
            let payload = video_payload(&mut rng, keyframe, len);
            messages.push(media(
                ChunkStreamId::VIDEO,
                MessageType::VIDEO,
                video_ts,
                payload,
            ));
            video_frame += 1;
        } else {
            let len = rng.range(180, 240);
            let payload = audio_payload(&mut rng, len);
            messages.push(media(
                ChunkStreamId::AUDIO,
                MessageType::AUDIO,
                audio_ts,
                payload,
            ));
            audio_frame += 1;
        }
    }
    messages
}

fn payload_bytes(messages: &[RtmpMessage]) -> u64 {
    messages.iter().map(|m| m.payload.len() as u64).sum()
}

/// Encodes `messages` as a publisher would send them at `chunk_size`: a Set Chunk Size first
/// (unless it is the default), then every message with header compression.
fn encode_all(messages: &[RtmpMessage], chunk_size: u32, out: &mut BytesMut) {
    let mut encoder = ChunkEncoder::new();
    if chunk_size != encoder.chunk_size() {
        encoder.encode(&ControlMessage::SetChunkSize(chunk_size).to_message(), out);
    }
    for message in messages {
        encoder.encode(message, out);
    }
}

fn bench_decode(c: &mut Criterion, messages: &[RtmpMessage]) {
    let mut group = c.benchmark_group("chunk/decode");
    group.throughput(Throughput::Bytes(payload_bytes(messages)));
    for chunk_size in CHUNK_SIZES {
        let mut wire = BytesMut::new();
        encode_all(messages, chunk_size, &mut wire);
        let wire = wire.freeze();

        // Check once that the wire form decodes back to the stream.
        let mut decoder = ChunkDecoder::default();
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoded = 0;
        while let Some(message) = decoder.decode(&mut buf).expect("bench stream decodes") {
            if message.message_type != MessageType::SET_CHUNK_SIZE {
                decoded += 1;
            }
        }
        assert_eq!(decoded, messages.len(), "every message decodes");

        group.bench_function(BenchmarkId::from_parameter(chunk_size), |b| {
            b.iter(|| {
                let mut decoder = ChunkDecoder::default();
                let mut buf = BytesMut::with_capacity(READ_BYTES);
                for read in wire.chunks(READ_BYTES) {
                    buf.extend_from_slice(read);
                    while let Some(message) = decoder.decode(&mut buf).expect("bench stream") {
                        black_box(message);
                    }
                }
                decoder.bytes_received()
            });
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion, messages: &[RtmpMessage]) {
    let mut group = c.benchmark_group("chunk/encode");
    group.throughput(Throughput::Bytes(payload_bytes(messages)));
    for chunk_size in CHUNK_SIZES {
        let mut out = BytesMut::new();
        group.bench_function(BenchmarkId::from_parameter(chunk_size), |b| {
            b.iter(|| {
                // Keeps the capacity: a connection reuses its output buffer too.
                out.clear();
                encode_all(messages, chunk_size, &mut out);
                out.len()
            });
        });
    }
    group.finish();
}

fn bench_encode_shared(c: &mut Criterion, messages: &[RtmpMessage]) {
    let mut group = c.benchmark_group("chunk/encode_shared");
    group.throughput(Throughput::Bytes(payload_bytes(messages)));
    for chunk_size in CHUNK_SIZES {
        group.bench_function(BenchmarkId::from_parameter(chunk_size), |b| {
            b.iter(|| {
                let mut total = 0;
                for message in messages {
                    // A fresh parts list per message, as each frame owns its own.
                    let mut parts = Vec::with_capacity(2);
                    total += encode_shared(message, chunk_size, &mut parts);
                    black_box(parts);
                }
                total
            });
        });
    }
    group.finish();
}

fn chunk_benches(c: &mut Criterion) {
    let messages = stream();
    bench_decode(c, &messages);
    bench_encode(c, &messages);
    bench_encode_shared(c, &messages);
}

criterion_group! {
    name = benches;
    // Short runs: these are regression checks, not publication numbers.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = chunk_benches
}
criterion_main!(benches);
