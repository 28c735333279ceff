//! `corecast-reader`: plain epoll players for the benchmarks, a second kind of reader next to
//! the load-test harness's io_uring-polled players. The URL chooses the mode ([`url`]):
//!
//! - `rtmp://host:port/app/name`: RTMP players that count the bytes each receives after its
//!   first video key frame ([`session`], [`reactor`]);
//! - `http://host:port/....m3u8`: plain HLS viewers, each on one keep-alive connection,
//!   following the media playlist from its newest segment ([`hls`], [`playlist`],
//!   [`http_reactor`]) and counting the response bodies from the first segment on;
//! - `http://host:port/....flv`: HTTP-FLV viewers that walk the FLV tags ([`flv`]) and count
//!   the bytes after the first video key frame.
//!
//! Each mode runs on a few threads that each run an epoll loop over their share of the players.
//! Counting is all it does with the media, so a byte costs it one `read` call's share and
//! little more: what it measures is how the server pays for sending to a reader that waits in
//! `epoll_wait` rather than in io_uring.
//!
//! At the end it prints one line of JSON ([`summary`]) on stdout and exits non-zero when any
//! player failed (did not play, ended early or saw no key frame). The run is bounded by
//! `--duration-secs`, each player's set-up by `--setup-timeout-secs`.

mod flv;
mod hls;
mod http;
mod http_reactor;
mod playlist;
mod reactor;
mod session;
mod summary;
mod url;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::http_reactor::HttpPlayers;
use crate::reactor::ThreadPlan;
use crate::summary::{PlayerRecord, Summary};
use crate::url::Stream;

/// Most players one run may open.
const MAX_PLAYERS: usize = 20_000;

/// Longest run, seconds.
const MAX_SECONDS: u64 = 3600;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    about = "Plain epoll RTMP, plain HLS or HTTP-FLV players: count the bytes each gets once playing"
)]
struct Cli {
    /// The stream: rtmp://host[:port]/app/name, http://host[:port]/path.m3u8 (plain HLS) or
    /// http://host[:port]/path.flv (HTTP-FLV).
    url: String,
    /// Players to connect (at most 20000).
    #[arg(short = 'n', long, default_value_t = 1)]
    players: usize,
    /// Seconds the run lasts from the first connect (at most 3600).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Players connected per second.
    #[arg(long, default_value_t = 500)]
    ramp: u32,
    /// Reader threads, each with its own epoll loop [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds from a player's TCP connect until it must have its first key frame (HLS: its
    /// first segment).
    #[arg(long, default_value_t = 10)]
    setup_timeout_secs: u64,
    /// Size of each thread's read buffer, KiB: one read takes up to this much.
    #[arg(long, default_value_t = 256)]
    read_kib: usize,
    /// Also write the summary to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        (1..=MAX_PLAYERS).contains(&cli.players),
        "--players must be in 1..={MAX_PLAYERS}"
    );
    anyhow::ensure!(
        (1..=MAX_SECONDS).contains(&cli.duration_secs),
        "--duration-secs must be in 1..={MAX_SECONDS}"
    );
    anyhow::ensure!(cli.ramp > 0, "--ramp must be at least 1");
    anyhow::ensure!(
        (4..=16 * 1024).contains(&cli.read_kib),
        "--read-kib must be in 4..=16384"
    );
    let stream = Stream::parse(&cli.url)?;
    let addr = stream
        .resolve()
        .with_context(|| format!("resolve {}", stream.authority()))?;
    raise_fd_limit(cli.players as u64 + 64)?;
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64)
        .min(cli.players);

    let start = Instant::now();
    let end = start + Duration::from_secs(cli.duration_secs);
    let plan = |t: usize| ThreadPlan {
        addr,
        target: Arc::new(()),
        players: (t..cli.players).step_by(threads).collect(),
        ramp_per_sec: cli.ramp,
        start,
        end,
        setup_timeout: Duration::from_secs(cli.setup_timeout_secs),
        read_bytes: cli.read_kib * 1024,
    };
    let mode = stream.mode();
    let handles: Vec<_> = match stream {
        Stream::Rtmp(target) => {
            let target = Arc::new(target);
            (0..threads)
                .map(|t| {
                    let plan = plan(t).with(Arc::clone(&target));
                    std::thread::spawn(move || reactor::run(&plan))
                })
                .collect()
        }
        Stream::Hls(target) | Stream::Flv(target) => {
            let target = Arc::new(HttpPlayers {
                target,
                hls: mode == "hls",
            });
            (0..threads)
                .map(|t| {
                    let plan = plan(t).with(Arc::clone(&target));
                    std::thread::spawn(move || http_reactor::run(&plan))
                })
                .collect()
        }
    };
    let mut records: Vec<PlayerRecord> = Vec::with_capacity(cli.players);
    for handle in handles {
        let thread = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
        records.extend(thread.context("reader thread")?);
    }
    let summary = Summary::new(&records, start.elapsed(), mode);
    let line = serde_json::to_string(&summary)?;
    println!("{line}");
    std::io::stdout().flush()?;
    if let Some(path) = &cli.json {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!(
        "corecast-reader: {}/{} players saw a key frame, {} failed {:?}; {:.1} MB in {:.1} s ({:.1} Mbit/s)",
        summary.with_keyframe,
        summary.players,
        summary.failed,
        summary.failures,
        summary.bytes as f64 / 1e6,
        summary.duration_secs,
        summary.mbps
    );
    if summary.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Raises the open-file limit to `needed` (up to the hard limit).
fn raise_fd_limit(needed: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the local struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= needed {
            return Ok(());
        }
        limit.rlim_cur = limit.rlim_max.min(needed.max(limit.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    anyhow::ensure!(
        limit.rlim_cur >= needed,
        "{needed} file descriptors needed but the hard limit is {} (raise `ulimit -n`)",
        limit.rlim_cur
    );
    Ok(())
}
