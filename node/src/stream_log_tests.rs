//! The frame log against today's queues: a replica whose players follow its log sends each
//! player exactly the bytes, in the same order, that a replica pushing every frame into every
//! queue sends, whatever the frames, writes, replies, pauses and slow-consumer turns.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::frame::FrameData;
use crate::mesh::Snapshot;
use crate::outbound::Outbound;
use crate::queue::QueueLimits;

#[derive(Debug, Clone)]
enum Op {
    Frame { video: bool, key: bool, size: usize },
    Write { p: usize, n: usize, slices: usize },
    WriteFront { p: usize, n: usize },
    Reply { p: usize, len: usize },
    Pause { p: usize },
    Resume { p: usize },
    Video { p: usize, on: bool },
    Join,
    Leave { p: usize },
    Offline,
    Live,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0usize..6;
    prop_oneof![
        8 => (any::<bool>(), proptest::bool::weighted(0.25), 1usize..2500)
            .prop_map(|(video, key, size)| Op::Frame { video, key, size }),
        8 => (p.clone(), 1usize..30_000, 1usize..40)
            .prop_map(|(p, n, slices)| Op::Write { p, n, slices }),
        2 => (p.clone(), 1usize..5_000).prop_map(|(p, n)| Op::WriteFront { p, n }),
        1 => (p.clone(), 1usize..300).prop_map(|(p, len)| Op::Reply { p, len }),
        1 => p.clone().prop_map(|p| Op::Pause { p }),
        1 => p.clone().prop_map(|p| Op::Resume { p }),
        1 => (p.clone(), any::<bool>()).prop_map(|(p, on)| Op::Video { p, on }),
        1 => Just(Op::Join),
        1 => p.prop_map(|p| Op::Leave { p }),
        1 => Just(Op::Offline),
        1 => Just(Op::Live),
    ]
}

fn frame(video: bool, key: bool, size: usize, n: u8) -> LocalFrame {
    let mut payload = vec![n; size.max(5)];
    if video {
        payload[0] = if key { 0x17 } else { 0x27 };
        payload[1] = 1;
    } else {
        payload[0] = 0xAF;
        payload[1] = 1;
    }
    let kind = if video {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    LocalFrame::new(Arc::new(FrameData::encode(
        kind,
        u32::from(n),
        Bytes::from(payload),
        4096,
    )))
}

/// One side: a replica and the outbound sides of the players it has had.
struct Side {
    replica: StreamReplica,
    outs: Vec<Rc<Outbound>>,
}

impl Side {
    fn new(use_log: bool) -> Side {
        Side::with_block_bytes(use_log, crate::framelog::ARENA_BLOCK_BYTES)
    }

    /// A side whose log's arena blocks are `block_bytes` long.
    fn with_block_bytes(use_log: bool, block_bytes: usize) -> Side {
        let settings = GopSettings {
            enabled: true,
            max_bytes: 1 << 20,
        };
        let mut replica =
            StreamReplica::new("live/x".into(), settings).with_log_block_bytes(block_bytes);
        if !use_log {
            replica = replica.without_log();
        }
        replica.go_live(live(), empty_snapshot());
        // A GOP to join with: players follow from the start.
        replica.on_frame(frame(true, true, 500, 0));
        let mut side = Side {
            replica,
            outs: Vec::new(),
        };
        for _ in 0..3 {
            side.join();
        }
        side
    }

    fn join(&mut self) {
        let n = self.outs.len();
        // Players differ in their bounds, as a restream target's differ from a player's.
        let limits = if n.is_multiple_of(2) {
            QueueLimits {
                soft_max_bytes: 8_000,
                hard_max_bytes: 30_000,
            }
        } else {
            QueueLimits {
                soft_max_bytes: 3_000,
                hard_max_bytes: 60_000,
            }
        };
        let out = Outbound::new(limits);
        self.outs.push(Rc::clone(&out));
        self.replica.add_player(Player {
            connection: n as u64,
            out,
            audio: true,
            video: true,
            paused: false,
        });
    }

    /// Writes up to `n` bytes of player `p`, gathering at most `slices` slices.
    fn write(&self, p: usize, n: usize, slices: usize) -> Vec<u8> {
        self.write_upto(p, n, slices, usize::MAX)
    }

    /// [`Side::write`], writing no more than `most` of what the gather offered (a write the
    /// kernel cut short).
    fn write_upto(&self, p: usize, n: usize, slices: usize, most: usize) -> Vec<u8> {
        let Some(out) = self.outs.get(p) else {
            return Vec::new();
        };
        let mut q = out.queue.borrow_mut();
        q.set_writer(std::task::Waker::noop());
        let mut iov = Vec::new();
        q.gather(&mut iov, slices, n);
        let mut bytes: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
        drop(iov);
        bytes.truncate(n.min(most));
        q.advance(bytes.len());
        bytes
    }

    /// Writes the same as the model's write of up to `n` bytes in `slices` slices: the log
    /// merges adjacent frames into one slice, so with as many slices it offers at least as
    /// many bytes, and the model's are its first. The model writes first; this side writes
    /// as many bytes (as if the kernel took no more).
    fn write_as(&self, model: &Side, p: usize, n: usize, slices: usize) -> (Vec<u8>, Vec<u8>) {
        let expected = model.write(p, n, slices);
        let offered = self.offered(p, n, slices);
        assert!(
            offered >= expected.len(),
            "the log offered {offered} bytes in {slices} slices, the model {}",
            expected.len()
        );
        (self.write_upto(p, n, slices, expected.len()), expected)
    }

    /// How many bytes a gather of `slices` slices and `n` bytes offers.
    fn offered(&self, p: usize, n: usize, slices: usize) -> usize {
        let Some(out) = self.outs.get(p) else {
            return 0;
        };
        let q = out.queue.borrow();
        let mut iov = Vec::new();
        q.gather(&mut iov, slices, n);
        iov.iter().map(|s| s.len()).sum::<usize>().min(n)
    }

    fn write_front(&self, p: usize, n: usize) -> Vec<u8> {
        let Some(out) = self.outs.get(p) else {
            return Vec::new();
        };
        let mut q = out.queue.borrow_mut();
        let Some(front) = q.front_slice() else {
            return Vec::new();
        };
        let bytes = front[..n.min(front.len())].to_vec();
        q.advance(bytes.len());
        bytes
    }

    fn state(&self) -> Vec<(usize, bool, bool, bool, u64)> {
        self.outs
            .iter()
            .map(|o| {
                let q = o.queue.borrow();
                (
                    q.queued_bytes(),
                    q.is_empty(),
                    q.is_closed(),
                    q.overflowed(),
                    q.dropped_frames(),
                )
            })
            .collect()
    }
}

fn live() -> Upstream {
    Upstream::Local {
        generation: corecast_common::plane::Generation(1),
    }
}

fn empty_snapshot() -> Snapshot {
    Snapshot {
        metadata: None,
        configs: Vec::new(),
        gop: Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn followers_are_sent_what_their_queues_alone_would_be(
        ops in proptest::collection::vec(op(), 1..250),
        // Small arena blocks put block boundaries inside the runs a write gathers, and
        // partial writes across merged slices (a write's `n` cuts anywhere).
        block in prop_oneof![Just(1_000usize), Just(6_000), Just(crate::framelog::ARENA_BLOCK_BYTES)],
    ) {
        let (mut log, mut model) = (Side::with_block_bytes(true, block), Side::new(false));
        let mut n = 0u8;
        for op in ops {
            match op {
                Op::Frame { video, key, size } => {
                    n = n.wrapping_add(1);
                    let f = frame(video, key, size, n);
                    let dropped = log.replica.on_frame(f.clone());
                    prop_assert_eq!(dropped, model.replica.on_frame(f));
                }
                Op::Write { p, n, slices } => {
                    let (a, b) = log.write_as(&model, p, n, slices);
                    prop_assert_eq!(a, b);
                }
                Op::WriteFront { p, n } => {
                    prop_assert_eq!(log.write_front(p, n), model.write_front(p, n));
                }
                Op::Reply { p, len } => {
                    for side in [&log, &model] {
                        if let Some(out) = side.outs.get(p) {
                            out.queue.borrow_mut().push_control(Bytes::from(vec![0xEE; len]));
                        }
                    }
                }
                Op::Pause { p } => {
                    for side in [&mut log, &mut model] {
                        side.replica.with_player(p as u64, |pl| pl.paused = true);
                    }
                }
                Op::Resume { p } => {
                    for side in [&mut log, &mut model] {
                        side.replica.with_player(p as u64, |pl| pl.paused = false);
                        side.replica.resync_player(p as u64);
                    }
                }
                Op::Video { p, on } => {
                    for side in [&mut log, &mut model] {
                        side.replica.with_player(p as u64, |pl| pl.video = on);
                    }
                }
                Op::Join => {
                    log.join();
                    model.join();
                }
                Op::Leave { p } => {
                    prop_assert_eq!(
                        log.replica.remove_player(p as u64),
                        model.replica.remove_player(p as u64)
                    );
                }
                Op::Offline => {
                    log.replica.go_offline();
                    model.replica.go_offline();
                }
                Op::Live => {
                    log.replica.go_live(live(), empty_snapshot());
                    model.replica.go_live(live(), empty_snapshot());
                }
            }
            prop_assert_eq!(log.state(), model.state());
            prop_assert_eq!(log.replica.player_count(), model.replica.player_count());
            if std::env::var_os("LOG_STATS").is_some() {
                eprintln!("followers {}", log.replica.followers.len());
            }
        }
        // Everything left, in order.
        for p in 0..log.outs.len() {
            loop {
                let (a, b) = log.write_as(&model, p, 100_000, 512);
                prop_assert_eq!(&a, &b);
                if a.is_empty() {
                    break;
                }
            }
        }
        prop_assert_eq!(log.state(), model.state());
    }
}

#[test]
fn a_frame_is_appended_once_and_followers_hold_none_of_it() {
    let mut side = Side::new(true);
    let slots = side.outs[0].queue.borrow().held_bytes();
    for n in 0..10 {
        side.replica.on_frame(frame(true, n == 0, 200, n));
    }
    assert_eq!(side.replica.followers.len(), 3);
    assert!(side.replica.players.is_empty());
    for out in &side.outs {
        let q = out.queue.borrow();
        assert!(q.queued_bytes() > 2_000);
        assert_eq!(
            q.held_bytes(),
            slots,
            "the log range is not the player's memory"
        );
    }
    let arena = crate::framelog::ARENA_BLOCK_BYTES;
    assert_eq!(
        side.replica.log_bytes(),
        10 * crate::framelog::NODE_BYTES + arena,
        "the log's nodes and its arena block, counted once for the stream"
    );
    for p in 0..3 {
        side.write(p, usize::MAX, 512);
    }
    assert_eq!(
        side.replica.log_bytes(),
        arena,
        "written frames leave the log; the block being filled stays"
    );
}

#[test]
fn a_follower_in_step_writes_a_window_as_one_slice() {
    let mut side = Side::new(true);
    for p in 0..3 {
        side.write(p, usize::MAX, 512);
    }
    for n in 0..10 {
        side.replica.on_frame(frame(n % 2 == 0, false, 200, n));
    }
    for out in &side.outs {
        let q = out.queue.borrow();
        let mut iov = Vec::new();
        q.gather(&mut iov, 512, usize::MAX);
        assert_eq!(iov.len(), 1, "ten frames of one arena block are one slice");
        assert_eq!(iov[0].len(), q.queued_bytes());
    }
}

#[test]
fn a_slow_follower_leaves_the_log_and_rejoins_once_drained() {
    let mut side = Side::new(true);
    // Player 1 (soft bound 3,000) reads nothing; the others keep up.
    side.replica.on_frame(frame(true, true, 1000, 0));
    for n in 1..8 {
        side.replica.on_frame(frame(true, false, 1000, n));
        side.write(0, usize::MAX, 512);
        side.write(2, usize::MAX, 512);
    }
    assert_eq!(side.replica.followers.len(), 2);
    assert_eq!(side.replica.players[0].connection, 1);
    assert!(side.outs[1].queue.borrow().dropped_frames() > 0);
    side.write(1, usize::MAX, 512);
    // Drained, but it waits for a keyframe: pushed until one comes and it drains again.
    side.replica.on_frame(frame(true, true, 1000, 9));
    side.write(1, usize::MAX, 512);
    side.replica.on_frame(frame(true, false, 1000, 10));
    assert_eq!(side.replica.followers.len(), 3);
}
