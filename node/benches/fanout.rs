//! Encode-once fan-out of one media frame to N local players, without sockets.
//!
//! One iteration is one frame's whole life on a core: [`FrameData::encode`] once, wrap it in
//! a [`LocalFrame`], hand it to every player, then let every player's writer drain its queue
//! with [`SubscriberQueue::gather`] and [`SubscriberQueue::advance`] as
//! `node::writer` does, against a socket that accepts everything (no syscall is made).
//!
//! - `fanout/replica`: through [`StreamReplica::on_frame`], N players each with their own
//!   [`Outbound`] (the node's real path: `Rc<RefCell<SubscriberQueue>>`, per-player filters).
//! - `fanout/queue`: straight into N plain [`SubscriberQueue`]s, to show what the replica
//!   adds on top of the queues.
//!
//! With `FANOUT_FRAMES=N` in the environment it skips criterion and fans N frames out to
//! 1 000 players through the replica: a fixed amount of work whose instruction count
//! (`valgrind --tool=callgrind`) is repeatable on a noisy machine.
//!
//! Throughput is in elements = subscribers, so criterion's `elem/s` inverted is the time per
//! frame per subscriber. The frame is an average 2.5 Mbit/s, 25 fps inter frame (12.5 KB)
//! chunked at the node's default out chunk size (`rtmp.out_chunk_size_bytes`, 60 000), into
//! queues with the default `[player]` bounds.

use std::hint::black_box;
use std::io::IoSlice;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corecast_common::plane::Generation;
use corecast_node::config::{PlayerConfig, RtmpConfig};
use corecast_node::frame::{FrameData, LocalFrame, MediaKind};
use corecast_node::mesh::Snapshot;
use corecast_node::outbound::Outbound;
use corecast_node::queue::{PushOutcome, QueueLimits, SubscriberQueue};
use corecast_node::stream::{GopSettings, Player, StreamReplica, Upstream};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

/// Subscriber counts measured.
const SUBSCRIBERS: [usize; 3] = [100, 1_000, 10_000];
/// Bytes of the video frame fanned out.
const FRAME_BYTES: usize = 12_500;
/// `node::writer`'s per-`sendmsg` limits (private there).
const MAX_SLICES: usize = 512;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The node's default out chunk size.
fn chunk_size() -> u32 {
    RtmpConfig::default().out_chunk_size_bytes
}

/// The node's default player queue bounds.
fn limits() -> QueueLimits {
    let player = PlayerConfig::default();
    QueueLimits {
        soft_max_bytes: player.queue_max_bytes,
        hard_max_bytes: player.queue_hard_max_bytes,
    }
}

/// An FLV video tag body: AVC NALU packet of `len` bytes.
fn video_payload(keyframe: bool, len: usize) -> Bytes {
    let mut payload = vec![0u8; len];
    payload[0] = if keyframe { 0x17 } else { 0x27 };
    payload[1] = 0x01;
    Bytes::from(payload)
}

fn frame(payload: &Bytes, chunk_size: u32) -> LocalFrame {
    LocalFrame::new(Arc::new(FrameData::encode(
        MediaKind::Video,
        0,
        payload.clone(),
        chunk_size,
    )))
}

/// What one writer wake-up does, against a socket that takes everything offered.
fn drain(queue: &mut SubscriberQueue) -> usize {
    let mut written = 0;
    while !queue.is_empty() {
        let n = {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(16);
            queue.gather(&mut slices, MAX_SLICES, MAX_BATCH_BYTES);
            black_box(&slices);
            slices.iter().map(|s| s.len()).sum::<usize>()
        };
        queue.advance(n);
        written += n;
    }
    written
}

/// A live replica with `n` players, each already past its first keyframe.
fn replica(n: usize) -> (StreamReplica, Vec<Rc<Outbound>>) {
    let mut replica = StreamReplica::new(
        "live/bench".to_owned(),
        // No GOP cache: it would only add a Vec push per frame and clear on each keyframe.
        GopSettings {
            enabled: false,
            max_bytes: 0,
        },
    );
    replica.go_live(
        Upstream::Local {
            generation: Generation(1),
        },
        Snapshot {
            metadata: None,
            configs: Vec::new(),
            gop: Vec::new(),
        },
    );
    let outbounds: Vec<Rc<Outbound>> = (0..n).map(|_| Outbound::new(limits())).collect();
    for (connection, out) in outbounds.iter().enumerate() {
        replica.add_player(Player {
            connection: connection as u64,
            out: Rc::clone(out),
            audio: true,
            video: true,
            paused: false,
        });
    }
    // Players join waiting for a keyframe; give them one so inter frames are queued.
    replica.on_frame(frame(&video_payload(true, FRAME_BYTES), chunk_size()));
    for out in &outbounds {
        drain(&mut out.queue.borrow_mut());
    }
    (replica, outbounds)
}

fn bench_replica(c: &mut Criterion) {
    let payload = video_payload(false, FRAME_BYTES);
    let chunk_size = chunk_size();
    let mut group = c.benchmark_group("fanout/replica");
    for n in SUBSCRIBERS {
        let (mut replica, outbounds) = replica(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                replica.on_frame(frame(&payload, chunk_size));
                let mut written = 0;
                for out in &outbounds {
                    written += drain(&mut out.queue.borrow_mut());
                }
                written
            });
        });
        assert_eq!(replica.dropped_frames(), 0, "no player skipped a frame");
    }
    group.finish();
}

fn bench_queue(c: &mut Criterion) {
    let payload = video_payload(false, FRAME_BYTES);
    let chunk_size = chunk_size();
    let mut group = c.benchmark_group("fanout/queue");
    for n in SUBSCRIBERS {
        let mut queues: Vec<SubscriberQueue> =
            (0..n).map(|_| SubscriberQueue::new(limits())).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let frame = frame(&payload, chunk_size);
                for queue in &mut queues {
                    let outcome = queue.push_frame(frame.clone());
                    debug_assert_eq!(outcome, PushOutcome::Queued);
                }
                drop(frame);
                let mut written = 0;
                for queue in &mut queues {
                    written += drain(queue);
                }
                written
            });
        });
    }
    group.finish();
}

/// A fixed amount of work instead of criterion's timed sampling, for instruction counts
/// (`valgrind --tool=callgrind`): `FANOUT_FRAMES=N` fans N frames out to 1 000 players
/// through the replica and exits. Timed runs vary their iteration counts; this does not.
fn fixed_frames(frames: usize) -> usize {
    let payload = video_payload(false, FRAME_BYTES);
    let chunk_size = chunk_size();
    let (mut replica, outbounds) = replica(1_000);
    let mut written = 0;
    for _ in 0..frames {
        replica.on_frame(frame(&payload, chunk_size));
        for out in &outbounds {
            written += drain(&mut out.queue.borrow_mut());
        }
    }
    assert_eq!(replica.dropped_frames(), 0, "no player skipped a frame");
    written
}

criterion_group! {
    name = benches;
    // Short runs: these are regression checks, not publication numbers.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_replica, bench_queue
}
fn main() {
    if let Some(frames) = std::env::var("FANOUT_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        black_box(fixed_frames(frames));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
