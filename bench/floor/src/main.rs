//! `corecast-floor`: the least CPU an RTMP server could spend delivering a live stream to the
//! same players.
//!
//! It serves the load-test harness's synthetic stream, prepared once in its final chunked
//! form ([`stream`]), to every player that connects and asks to play ([`setup`]). Writer
//! threads, one per core, write each player the slices that fell due with one `sendmsg` per
//! merge window ([`feed`]). There is no publisher to read, no reactor and no per-player task:
//! what remains is the kernel's share of delivery, which every server pays.
//!
//! With `--zero-delay` the writers are [`pass`]'s instead: the ways of writing every frame
//! at once that issue 19 tried against this floor (io_uring batches, audio and video coalesced;
//! BENCHMARKS.md, "Zero delay: what was tried").
//!
//! Because it speaks enough RTMP for players, the same harness drives Corecast, nginx-rtmp
//! and the floor (`make bench-compare`), so the players, their sockets and the way they wait
//! are identical and the CPU per delivered GB of each is comparable. Its lifetime is bounded
//! (`--seconds`); it binds loopback by default.

mod cursor;
mod feed;
mod pass;
mod setup;
mod stream;
mod uring;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use corecast_loadtest::source::SyntheticSettings;

use crate::feed::{run_writer, WriterTotals};
use crate::stream::PreparedStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most seconds one floor may run (the prepared stream is held in memory).
const MAX_SECONDS: u64 = 900;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    about = "Serve a prepared RTMP stream to players with the least CPU; the efficiency floor"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1936")]
    listen: SocketAddr,
    /// Seconds to run, then exit (at most 900).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Merge window in milliseconds (0 = write each frame as it falls due).
    #[arg(long, default_value_t = 100)]
    merge_window_ms: u64,
    /// Writer threads [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Stream bitrate, video + audio, kbit/s (as the harness's `--bitrate-kbps`).
    #[arg(long, default_value_t = 2500)]
    bitrate_kbps: u32,
    /// Audio part of the bitrate, kbit/s (as the harness's `--audio-kbps`).
    #[arg(long, default_value_t = 128)]
    audio_kbps: u32,
    /// Video frames per second (as the harness's `--fps`).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// A key frame every this many video frames [default: 2 × fps].
    #[arg(long)]
    gop_frames: Option<u32>,
    /// Print the totals at exit as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Zero delay through the pass writers (`pass`): the variants below; without it (and
    /// with neither), today's writer.
    #[arg(long)]
    zero_delay: bool,
    /// With `--zero-delay`, or with a merge window: how each pass hands its sends to the kernel
    /// (`uring` at a window: one submission per window for all the thread's players).
    #[arg(long, value_enum, default_value = "sendmsg")]
    send: pass::Send,
    /// With `--zero-delay`: wake only for video frames; the audio due since rides along.
    #[arg(long)]
    coalesce_av: bool,
    /// With `--coalesce-av`: audio waits at most this long for video, ms (the node's
    /// `player.zero_delay_coalesce_ms`; unset: until the next video frame).
    #[arg(long)]
    coalesce_ms: Option<u64>,
    /// With `--coalesce-ms`: audio waits only for a video frame due within it (less 2 ms),
    /// as the node's `player.zero_delay_coalesce_due_ms`.
    #[arg(long)]
    coalesce_due: bool,
    /// With a merge window and `--send uring`: a joining player gets its header and the key
    /// frame's group at once, as the node's players do, not at the next window (time to
    /// first frame comparable with the node's).
    #[arg(long)]
    join_at_once: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        (1..=MAX_SECONDS).contains(&cli.seconds),
        "--seconds must be in 1..={MAX_SECONDS}"
    );
    anyhow::ensure!((1..=240).contains(&cli.fps), "--fps must be in 1..=240");
    anyhow::ensure!(
        cli.audio_kbps < cli.bitrate_kbps,
        "--audio-kbps must be below --bitrate-kbps"
    );
    anyhow::ensure!(
        cli.zero_delay || !cli.coalesce_av,
        "--coalesce-av goes with --zero-delay"
    );
    anyhow::ensure!(
        cli.zero_delay || cli.send == pass::Send::Sendmsg || cli.merge_window_ms > 0,
        "--send uring goes with --zero-delay or a merge window"
    );
    anyhow::ensure!(
        !cli.join_at_once
            || (!cli.zero_delay && cli.send == pass::Send::Uring && cli.merge_window_ms > 0),
        "--join-at-once goes with a merge window and --send uring"
    );
    anyhow::ensure!(
        cli.coalesce_ms.is_none() || cli.coalesce_av,
        "--coalesce-ms goes with --coalesce-av"
    );
    anyhow::ensure!(
        !cli.coalesce_due || cli.coalesce_ms.is_some(),
        "--coalesce-due goes with --coalesce-ms"
    );
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256);
    let settings = SyntheticSettings {
        bitrate_kbps: cli.bitrate_kbps,
        audio_kbps: cli.audio_kbps,
        fps: cli.fps,
        gop_frames: cli.gop_frames.unwrap_or(2 * cli.fps).max(1),
    };

    // The stream starts a moment from now, once prepared; its clock stamps say when each
    // frame is due, so the harness's latency is measured from there.
    let epoch = SystemTime::now() + Duration::from_secs(1);
    let epoch_us = epoch.duration_since(UNIX_EPOCH)?.as_micros() as u64;
    let prepared = Arc::new(PreparedStream::new(settings, cli.seconds, epoch_us));
    std::thread::sleep(epoch.duration_since(SystemTime::now()).unwrap_or_default());
    let start = Instant::now();
    let lifetime = Duration::from_secs(cli.seconds);

    let listener = TcpListener::bind(cli.listen).with_context(|| format!("bind {}", cli.listen))?;
    println!("corecast-floor: listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;

    let window = Duration::from_millis(cli.merge_window_ms);
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        let prepared = Arc::clone(&prepared);
        // The pass writers: zero delay, or a window whose sends go through io_uring.
        let windowed_uring = !cli.zero_delay && cli.send == pass::Send::Uring;
        let options = (cli.zero_delay || windowed_uring).then_some(pass::PassOptions {
            send: cli.send,
            coalesce_av: cli.coalesce_av,
            coalesce_ms: cli.coalesce_ms,
            coalesce_due: cli.coalesce_due,
            window: if cli.zero_delay {
                Duration::ZERO
            } else {
                window
            },
            join_at_once: cli.join_at_once,
        });
        writers.push(std::thread::spawn(move || match options {
            Some(options) => pass::run_pass(&prepared, &rx, start, lifetime, options),
            None => Ok(run_writer(&prepared, &rx, start, window, lifetime)),
        }));
    }
    let next_writer = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut socket) = conn else {
                continue;
            };
            let senders = senders.clone();
            let next_writer = Arc::clone(&next_writer);
            std::thread::spawn(move || match setup::setup(&mut socket) {
                Ok(()) => {
                    let i = next_writer.fetch_add(1, Ordering::Relaxed) % senders.len();
                    let _ = senders[i].send(socket);
                }
                Err(e) => eprintln!("corecast-floor: player refused: {e:#}"),
            });
        }
    });

    let mut totals = WriterTotals::default();
    for writer in writers {
        let t = writer
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))?
            .context("a zero-delay writer")?;
        totals.bytes += t.bytes;
        totals.cpu_seconds += t.cpu_seconds;
        totals.players += t.players;
    }
    let gb = totals.bytes as f64 / 1e9;
    let per_gb = if gb > 0.0 {
        totals.cpu_seconds / gb
    } else {
        0.0
    };
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "players": totals.players,
                "seconds": cli.seconds,
                "merge_window_ms": cli.merge_window_ms,
                "zero_delay": cli.zero_delay,
                "send": format!("{:?}", cli.send).to_lowercase(),
                "coalesce_av": cli.coalesce_av,
                "coalesce_ms": cli.coalesce_ms,
                "coalesce_due": cli.coalesce_due,
                "bytes_written": totals.bytes,
                "writer_cpu_seconds": totals.cpu_seconds,
                "writer_cpu_seconds_per_gb": per_gb,
            })
        );
    }
    eprintln!(
        "corecast-floor: {} players, {:.3} GB written, writer CPU {:.2} s ({per_gb:.3} CPU-s/GB)",
        totals.players, gb, totals.cpu_seconds
    );
    Ok(())
}
