//! The zero-delay send pass (`player.zero_delay_send`) and audio coalescing
//! (`player.zero_delay_coalesce_ms`): with them on, players get exactly the bytes they get
//! without them (in order, across cores), a stalled player still costs only itself, a pass
//! that wrote everything wakes no writer task, and `--check` refuses the options where a
//! merge window batches already.

mod support;

use std::time::Duration;

use support::frames::{
    assert_stalled_player_cut_off_healthy_served, publish_in_lockstep, SMALL_QUEUE_PLAYER,
};
use support::media::{players_recorded_the_source, publish_to_players_on_both_cores, shared_flv};
use support::node::{check_refuses, Node};

fn config(mode: &str, coalesce_ms: u64) -> String {
    format!(
        "[player]\nmerge_window_ms = 0\nzero_delay_send = \"{mode}\"\n\
         zero_delay_coalesce_ms = {coalesce_ms}\n"
    )
}

/// ffmpeg publishes; ffmpeg players on both cores must get every packet from the first
/// keyframe on, byte for byte, written by the pass (its log line proves it ran), with audio
/// held for the next video frame where `coalesce_ms` is set.
fn publish_and_play_byte_identical(mode: &str, coalesce_ms: u64) {
    let stream = format!("live/zd{mode}{coalesce_ms}");
    publish_and_play_byte_identical_with(
        mode,
        &config(mode, coalesce_ms),
        &stream,
        coalesce_ms > 0,
    );
}

/// The same with `config`, playing `stream`; `holds`: audio is held for video at some point.
fn publish_and_play_byte_identical_with(mode: &str, config: &str, stream: &str, holds: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(2, config, dir.path());
    let url = node.url(stream);

    let players = publish_to_players_on_both_cores(&node, &src, &url, stream, dir.path());
    if mode != "writer" {
        node.wait_log(Duration::from_secs(5), |l| {
            l.contains("zero-delay send pass writing players")
        })
        .expect("the pass wrote players");
    }
    if holds {
        node.wait_log(Duration::from_secs(5), |l| {
            l.contains("zero-delay coalescing holds audio")
        })
        .expect("audio was held for video");
    }
    if mode == "uring" {
        node.wait_log(Duration::from_secs(5), |l| {
            l.contains("io_uring ring ready") || l.contains("io_uring unavailable")
        })
        .expect("the ring was set up (or its absence logged)");
    }

    players_recorded_the_source(&src, players);
}

#[test]
fn with_the_uring_pass_ffmpeg_publish_and_play_are_byte_identical_across_cores() {
    publish_and_play_byte_identical("uring", 0);
}

#[test]
fn with_the_sendmsg_pass_ffmpeg_publish_and_play_are_byte_identical_across_cores() {
    publish_and_play_byte_identical("pass", 0);
}

#[test]
fn with_audio_coalesced_and_the_uring_pass_ffmpeg_play_is_byte_identical_across_cores() {
    publish_and_play_byte_identical("uring", 40);
}

#[test]
fn with_audio_coalesced_and_the_writer_ffmpeg_play_is_byte_identical_across_cores() {
    publish_and_play_byte_identical("writer", 40);
}

/// `zero_delay_coalesce_due_ms`: audio waits only for a video frame due within the bound (by
/// the stream's timestamps); players still get every byte, in order, on both cores.
#[test]
fn with_audio_held_only_for_video_due_soon_ffmpeg_play_is_byte_identical_across_cores() {
    let config = "[player]\nmerge_window_ms = 0\nzero_delay_coalesce_due_ms = 20\n";
    publish_and_play_byte_identical_with("uring", config, "live/zddue20", true);
}

/// With the pass: a player that stops reading is cut off as a slow consumer, while a
/// healthy one on the same stream gets every frame in order (the pass leaves a full socket's
/// bytes to the writer, which must not reorder or lose any).
fn a_stalled_player_is_cut_off_and_nobody_else_waits(mode: &str, coalesce_ms: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{}{SMALL_QUEUE_PLAYER}", config(mode, coalesce_ms));
    let node = Node::start(1, &config, dir.path());
    assert_stalled_player_cut_off_healthy_served(&node);
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("zero-delay send pass writing players")
    })
    .expect("the pass wrote players");
}

#[test]
fn with_the_uring_pass_a_stalled_player_is_cut_off_and_nobody_else_waits() {
    a_stalled_player_is_cut_off_and_nobody_else_waits("uring", 0);
}

#[test]
fn with_the_sendmsg_pass_a_stalled_player_is_cut_off_and_nobody_else_waits() {
    a_stalled_player_is_cut_off_and_nobody_else_waits("pass", 0);
}

#[test]
fn with_audio_coalesced_a_stalled_player_is_cut_off_and_nobody_else_waits() {
    a_stalled_player_is_cut_off_and_nobody_else_waits("uring", 40);
}

/// A pass that writes a frame to every player wakes none of their writer tasks: with small
/// frames and players that read, the pass sends every frame and hands no writer a wake.
fn a_pass_that_writes_everything_wakes_no_writer(config: &str) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, config, dir.path());
    const FRAMES: u32 = 50;
    let (_publisher, _players) = publish_in_lockstep(&node, "small", 3, FRAMES, 2000);
    let sends = node.metric_sum("corecast_zero_delay_pass_sends_total");
    assert!(
        sends >= f64::from(FRAMES * 3 - 3),
        "the pass sent {sends} times for {FRAMES} frames to 3 players"
    );
    assert_eq!(
        node.metric_sum("corecast_zero_delay_writer_wakes_total"),
        0.0,
        "the pass woke a writer though it wrote everything"
    );
    node
}

#[test]
fn a_uring_pass_that_writes_everything_wakes_no_writer() {
    a_pass_that_writes_everything_wakes_no_writer(&config("uring", 0));
}

#[test]
fn a_sendmsg_pass_that_writes_everything_wakes_no_writer() {
    a_pass_that_writes_everything_wakes_no_writer(&config("pass", 0));
}

/// Unset, `zero_delay_send` is the uring pass at zero delay (and nothing at all with a
/// window: the default config passes `--check`, which the shipped-config test covers).
#[test]
fn at_zero_delay_the_uring_pass_is_the_default() {
    let node = a_pass_that_writes_everything_wakes_no_writer("[player]\nmerge_window_ms = 0\n");
    let line = node
        .wait_log(Duration::from_secs(5), |l| {
            l.contains("zero-delay send pass writing players")
        })
        .expect("the pass wrote players");
    assert!(line.contains("uring") && line.contains("true"), "{line}");
}

#[test]
fn check_refuses_the_pass_with_a_merge_window() {
    check_refuses(
        "[player]\nmerge_window_ms = 50\nzero_delay_send = \"uring\"\n",
        &["player.zero_delay_send", "merge_window_ms = 0"],
    );
}

#[test]
fn check_refuses_coalescing_with_a_merge_window_or_too_long() {
    check_refuses(
        "[player]\nmerge_window_ms = 50\nzero_delay_coalesce_ms = 40\n",
        &["player.zero_delay_coalesce_ms", "merge_window_ms = 0"],
    );
    check_refuses(
        "[player]\nmerge_window_ms = 0\nzero_delay_coalesce_ms = 500\n",
        &["player.zero_delay_coalesce_ms", "at most 100"],
    );
    check_refuses(
        "[player]\nmerge_window_ms = 50\nzero_delay_coalesce_due_ms = 10\n",
        &["player.zero_delay_coalesce_due_ms", "merge_window_ms = 0"],
    );
    check_refuses(
        "[player]\nmerge_window_ms = 0\nzero_delay_coalesce_due_ms = 101\n",
        &["player.zero_delay_coalesce_due_ms", "at most 100"],
    );
    check_refuses(
        "[player]\nmerge_window_ms = 0\nzero_delay_uring_batch_sends = 0\n",
        &["player.zero_delay_uring_batch_sends", "between 1 and 256"],
    );
}
