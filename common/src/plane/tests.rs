//! The plane's tests: scenarios that name a race, then random schedules on up to four cores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::sim::{decode, encode, Op, Sim, MAX_CORES};
use super::{
    ControlPlane, CoreId, Directory, Effect, Generation, PlaneConfig, PullEnd, PullRefusal,
};

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

/// One edge core's plane with `max_pulls` and a 5 s negative cache.
fn edge(max_pulls: usize) -> ControlPlane<()> {
    let config = PlaneConfig {
        pulls: true,
        max_pulls,
        negative_ttl: Duration::from_secs(5),
    };
    ControlPlane::new(CoreId(0), config, Arc::new(Directory::default()))
}

/// The pulls started and refused among the plane's effects.
fn pull_effects(plane: &mut ControlPlane<()>) -> (Vec<(String, Generation)>, Vec<PullRefusal>) {
    let (mut started, mut refused) = (Vec::new(), Vec::new());
    while let Some(effect) = plane.poll_effect() {
        match effect {
            Effect::StartPull { key, generation } => started.push((key, generation)),
            Effect::PullRefused { reason, .. } => refused.push(reason),
            _ => {}
        }
    }
    (started, refused)
}

#[test]
fn a_pull_past_the_cap_is_refused_and_a_finished_one_makes_room() {
    let now = Instant::now();
    let mut plane = edge(1);
    plane.handle_player_joined("live/a", now);
    let (started, _) = pull_effects(&mut plane);
    assert_eq!(started.len(), 1);
    plane.handle_player_joined("live/b", now);
    assert_eq!(
        pull_effects(&mut plane),
        (vec![], vec![PullRefusal::Capped])
    );
    plane.handle_player_left("live/b");
    plane.handle_player_left("live/a");
    plane.handle_pull_stopped("live/a", started[0].1, PullEnd::Done, now);
    plane.handle_player_joined("live/b", now);
    assert_eq!(pull_effects(&mut plane).0.len(), 1);
}

#[test]
fn a_viewer_refused_at_the_cap_gets_the_next_free_pull() {
    let now = Instant::now();
    let mut plane = edge(1);
    plane.handle_player_joined("churn/1", now);
    let (started, _) = pull_effects(&mut plane);
    plane.handle_player_joined("live/viewer", now);
    assert_eq!(
        pull_effects(&mut plane),
        (vec![], vec![PullRefusal::Capped])
    );
    // The churning pull ends (its player left): the viewer's name gets the place.
    plane.handle_player_left("churn/1");
    plane.handle_pull_stopped("churn/1", started[0].1, PullEnd::NotFound, now);
    let (next, _) = pull_effects(&mut plane);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, "live/viewer");
    // A new churn is refused at the cap meanwhile.
    plane.handle_player_joined("churn/2", now);
    assert_eq!(
        pull_effects(&mut plane),
        (vec![], vec![PullRefusal::Capped])
    );
}

#[test]
fn a_name_no_upstream_had_is_refused_for_the_ttl_then_pulled_again() {
    let now = Instant::now();
    let mut plane = edge(10);
    plane.handle_player_joined("live/x", now);
    let (started, _) = pull_effects(&mut plane);
    plane.handle_player_left("live/x");
    plane.handle_pull_stopped("live/x", started[0].1, PullEnd::NotFound, now);
    pull_effects(&mut plane);
    plane.handle_player_joined("live/x", now + Duration::from_secs(4));
    assert_eq!(
        pull_effects(&mut plane),
        (vec![], vec![PullRefusal::Missing])
    );
    plane.handle_player_left("live/x");
    plane.handle_player_joined("live/x", now + Duration::from_secs(5));
    assert_eq!(pull_effects(&mut plane).0.len(), 1);
}

#[test]
fn players_waiting_when_a_pull_finds_nothing_get_a_new_pull_not_a_refusal() {
    let now = Instant::now();
    let mut plane = edge(10);
    plane.handle_player_joined("live/x", now);
    let (started, _) = pull_effects(&mut plane);
    plane.handle_pull_stopped("live/x", started[0].1, PullEnd::NotFound, now);
    let (again, refused) = pull_effects(&mut plane);
    assert_eq!((again.len(), refused), (1, vec![]));
}

#[test]
fn one_connection_looping_play_and_delete_over_500_names_starts_each_pull_once_per_ttl() {
    // Issue 13 row 9, in memory: every play's pull ends (nobody waits, no upstream has the
    // name) before the next play; ten seconds of the loop at one play per millisecond.
    let start = Instant::now();
    let mut plane = edge(8);
    let names: Vec<String> = (0..500).map(|i| format!("live/random{i}")).collect();
    let mut pulled: HashMap<String, Vec<Instant>> = HashMap::new();
    for step in 0..10_000u64 {
        let now = start + Duration::from_millis(step);
        let name = &names[step as usize % names.len()];
        plane.handle_player_joined(name, now);
        let (started, _) = pull_effects(&mut plane);
        plane.handle_player_left(name);
        for (key, generation) in started {
            pulled.entry(key.clone()).or_default().push(now);
            plane.handle_pull_stopped(&key, generation, PullEnd::NotFound, now);
            pull_effects(&mut plane);
        }
    }
    let total: usize = pulled.values().map(Vec::len).sum();
    // Each name at most once per 5 s: twice in 10 s, 1,000 pulls at most (not 3,000).
    assert!(total <= 2 * names.len(), "{total} pulls");
    for times in pulled.values() {
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_secs(5));
        }
    }
    assert_eq!(plane.directory().pulls(), 0);
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

    #[test]
    fn with_a_pull_cap_and_a_negative_cache_the_invariants_still_hold(
        cores in 1..=MAX_CORES,
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let result = Sim::run_limited(cores, true, &ops);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
