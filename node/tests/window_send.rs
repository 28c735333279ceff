//! The tick pass (`player.window_send = "uring"`): at a merge window, players get exactly the
//! bytes the writer path gives them (in order, across cores), a pass that writes everything
//! wakes no writer task, a stalled player still costs only itself, and `--check` refuses the
//! option without a window. The tick pass is the default at a window; `"writer"` opts out.

mod support;

use std::time::Duration;

use support::frames::{
    assert_stalled_player_cut_off_healthy_served, publish_in_lockstep, SMALL_QUEUE_PLAYER,
};
use support::media::{players_recorded_the_source, publish_to_players_on_both_cores, shared_flv};
use support::node::{check_refuses, Node};

fn config(window_ms: u64) -> String {
    format!("[player]\nmerge_window_ms = {window_ms}\nwindow_send = \"uring\"\n")
}

/// ffmpeg publishes; ffmpeg players on both cores get every packet from the first keyframe
/// on, byte for byte, written by the tick pass (its log line proves it ran).
#[test]
fn with_the_tick_pass_ffmpeg_publish_and_play_are_byte_identical_across_cores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(2, &config(100), dir.path());
    let stream = "live/tickpass";
    let url = node.url(stream);

    let players = publish_to_players_on_both_cores(&node, &src, &url, stream, dir.path());
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("tick pass writing players' windows")
    })
    .expect("the tick pass wrote players");
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("io_uring ring ready") || l.contains("io_uring unavailable")
    })
    .expect("the ring was set up (or its absence logged)");
    players_recorded_the_source(&src, players);
}

/// Players that read every frame before the next is published: each frame goes out in its
/// own window, by the tick pass (a send per player), and no writer task is woken by it.
#[test]
fn a_tick_pass_that_writes_everything_wakes_no_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, &config(20), dir.path());
    const FRAMES: u32 = 30;
    let (_publisher, _players) = publish_in_lockstep(&node, "small", 3, FRAMES, 2000);
    // The first frames of a joining player go out by its writer (they skip the window).
    let sends = node.metric_sum("corecast_zero_delay_pass_sends_total");
    assert!(
        sends >= f64::from((FRAMES - 2) * 3),
        "the tick pass sent {sends} times for {FRAMES} frames to 3 players"
    );
    assert_eq!(
        node.metric_sum("corecast_zero_delay_writer_wakes_total"),
        0.0,
        "the tick pass woke a writer though it wrote everything"
    );
}

/// A player that stops reading is cut off as a slow consumer, while a healthy one on the
/// same stream gets every frame in order (the pass leaves a full socket's bytes to the
/// writer, which must not reorder or lose any).
#[test]
fn with_the_tick_pass_a_stalled_player_is_cut_off_and_nobody_else_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{}{SMALL_QUEUE_PLAYER}", config(50));
    let node = Node::start(1, &config, dir.path());
    assert_stalled_player_cut_off_healthy_served(&node);
}

#[test]
fn check_refuses_the_tick_pass_without_a_merge_window() {
    check_refuses(
        "[player]\nmerge_window_ms = 0\nwindow_send = \"uring\"\n",
        &["player.window_send", "merge_window_ms > 0"],
    );
}

/// Unset, `window_send` is the tick pass at a window; `"writer"` opts out: the same players
/// get every frame from their writer tasks, and the pass sends nothing.
#[test]
fn the_tick_pass_is_the_default_at_a_window_and_writer_opts_out() {
    const FRAMES: u32 = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[player]\nmerge_window_ms = 20\n", dir.path());
    let _open = publish_in_lockstep(&node, "default", 2, FRAMES, 2000);
    let sends = node.metric_sum("corecast_zero_delay_pass_sends_total");
    assert!(
        sends >= f64::from((FRAMES - 2) * 2),
        "unset window_send: the tick pass sent {sends} times for {FRAMES} frames to 2 players"
    );
    drop(node);

    let dir = tempfile::tempdir().expect("temp dir");
    let writer = "[player]\nmerge_window_ms = 20\nwindow_send = \"writer\"\n";
    let node = Node::start(1, writer, dir.path());
    let _open = publish_in_lockstep(&node, "writer", 2, FRAMES, 2000);
    assert_eq!(
        node.metric_sum("corecast_zero_delay_pass_sends_total"),
        0.0,
        "window_send = \"writer\": the tick pass sent though the writers write"
    );
}
