//! The plane's tests: scenarios that name a race, then random schedules on up to four cores.

use proptest::prelude::*;

use super::sim::{decode, encode, Op, Sim, MAX_CORES};

fn deliver(from: u8, to: u8) -> Op {
    Op::Deliver { from, to }
}

fn assert_runs(cores: usize, pulls: bool, ops: &[Op]) {
    if let Err(e) = Sim::run(cores, pulls, ops) {
        panic!("{e}\nschedule ({cores} cores, pulls {pulls}): {ops:?}");
    }
}

#[test]
fn a_player_on_another_core_gets_the_snapshot_then_the_frames() {
    assert_runs(
        2,
        false,
        &[
            Op::Publish { core: 0, key: 0 },
            Op::Frame {
                source: 0,
                keyframe: true,
            },
            Op::Frame {
                source: 0,
                keyframe: false,
            },
            Op::Join { core: 1, key: 0 },
            deliver(1, 0),
            Op::Frame {
                source: 0,
                keyframe: false,
            },
            deliver(0, 1),
            deliver(0, 1),
        ],
    );
}

#[test]
fn a_player_that_leaves_and_comes_back_before_the_answer_gets_one_snapshot() {
    // Subscribe, Unsubscribe, Subscribe reach the publisher in order; the first answer
    // arrives when the second registration is current and must be refused.
    assert_runs(
        2,
        false,
        &[
            Op::Publish { core: 0, key: 0 },
            Op::Frame {
                source: 0,
                keyframe: true,
            },
            Op::Join { core: 1, key: 0 },
            Op::Leave { player: 0 },
            Op::Join { core: 1, key: 0 },
            deliver(1, 0),
            Op::Frame {
                source: 0,
                keyframe: false,
            },
            deliver(1, 0),
            Op::Frame {
                source: 0,
                keyframe: false,
            },
            deliver(1, 0),
            Op::Frame {
                source: 0,
                keyframe: false,
            },
        ],
    );
}

#[test]
fn a_start_from_a_publisher_that_left_does_not_displace_the_new_one() {
    // Core 1 waits; core 0 publishes and leaves, core 2 publishes; core 2's start arrives
    // first, then core 0's stale start and its unpublish.
    assert_runs(
        3,
        false,
        &[
            Op::Join { core: 1, key: 0 },
            Op::Publish { core: 0, key: 0 },
            Op::Unpublish { publisher: 0 },
            Op::Publish { core: 2, key: 0 },
            deliver(2, 1),
            deliver(0, 1),
            deliver(0, 1),
            Op::Frame {
                source: 0,
                keyframe: true,
            },
            deliver(2, 1),
        ],
    );
}

#[test]
fn an_edge_pulls_once_for_players_on_every_core_and_stops_when_they_leave() {
    assert_runs(
        3,
        true,
        &[
            Op::Join { core: 0, key: 0 },
            Op::Join { core: 1, key: 0 },
            Op::Join { core: 2, key: 0 },
            deliver(1, 0),
            Op::PullResume { pull: 0 },
            Op::Frame {
                source: 0,
                keyframe: true,
            },
            deliver(0, 1),
            deliver(0, 2),
            Op::PullPause { pull: 0 },
            Op::PullResume { pull: 0 },
            Op::Frame {
                source: 0,
                keyframe: true,
            },
        ],
    );
}

#[test]
fn a_pull_that_ends_while_a_player_arrives_is_started_again() {
    // The player's core saw the old claim and asked it; the pull ends without answering.
    assert_runs(
        2,
        true,
        &[
            Op::Join { core: 0, key: 0 },
            Op::PullResume { pull: 0 },
            Op::Leave { player: 0 },
            Op::Join { core: 1, key: 0 },
            Op::PullStop { pull: 0 },
            deliver(1, 0),
            Op::PullResume { pull: 0 },
            deliver(0, 1),
        ],
    );
}

#[test]
fn a_late_subscribe_from_an_ended_registration_does_not_displace_the_current_one() {
    // Found by the plane fuzz target: core 3 subscribes, leaves, subscribes again; the pull
    // goes live and starts core 3's current registration from the directory, then the first
    // subscribe and its unsubscribe arrive. They must not end the feed of the current one,
    // or core 3 keeps a stream that nobody will end.
    assert_runs(
        4,
        true,
        &[
            Op::Join { core: 0, key: 0 },
            Op::Join { core: 3, key: 0 },
            Op::Join { core: 3, key: 1 },
            Op::Leave { player: 1 },
            Op::Join { core: 3, key: 0 },
            Op::PullResume { pull: 0 },
            deliver(3, 0),
            deliver(3, 0),
            Op::PullPause { pull: 0 },
        ],
    );
}

fn op() -> impl Strategy<Value = Op> {
    let core = 0..MAX_CORES as u8;
    prop_oneof![
        1 => (core.clone(), 0..2u8).prop_map(|(core, key)| Op::Publish { core, key }),
        1 => any::<u8>().prop_map(|publisher| Op::Unpublish { publisher }),
        3 => (0..128u8, any::<bool>()).prop_map(|(source, keyframe)| Op::Frame { source, keyframe }),
        2 => (core.clone(), 0..2u8).prop_map(|(core, key)| Op::Join { core, key }),
        1 => any::<u8>().prop_map(|player| Op::Leave { player }),
        6 => (core.clone(), core).prop_map(|(from, to)| Op::Deliver { from, to }),
        1 => any::<u8>().prop_map(|pull| Op::PullResume { pull }),
        1 => any::<u8>().prop_map(|pull| Op::PullPause { pull }),
        1 => any::<u8>().prop_map(|pull| Op::PullStop { pull }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_schedule_written_as_bytes_reads_back_the_same(
        cores in 1..=MAX_CORES,
        pulls in any::<bool>(),
        ops in prop::collection::vec(op(), 0..50),
    ) {
        // The generator's core and key indices fit a nibble, so the encoding is exact.
        prop_assert_eq!(decode(&encode(cores, pulls, &ops)), (cores, pulls, ops));
    }

    #[test]
    fn every_interleaving_keeps_one_upstream_one_snapshot_no_duplicate_and_leaves_nothing(
        cores in 1..=MAX_CORES,
        pulls in any::<bool>(),
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let result = Sim::run(cores, pulls, &ops);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
