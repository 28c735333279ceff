//! Running a scenario: one glommio executor per core, connections spread over them, a ramp,
//! a hard end, and the main thread collecting progress and results.
//!
//! # Shape
//! Connection *g* (publishers first, then players) runs on core `g % cores` and starts
//! `g / ramp` seconds into the run. A player of a stream this run publishes also waits until
//! that stream's publisher is live (a flag the publisher's core sets), so time to first key
//! frame measures the server rather than the publisher's start-up. Each core runs its
//! connections as local tasks, with `Rc`/`Cell` state only, and every second sends a
//! [`CoreSnapshot`] to the main thread over a std channel; at the end it sends its records.
//!
//! # Ending
//! Every task races the run's deadline: at `duration` players are dropped mid-read, whatever
//! the server does; publishers stop [`PUBLISHER_LINGER`] later so that no player sees its
//! stream end and is counted as dropped. The main thread waits at most [`END_GRACE`] more for
//! the cores' records and then reports whatever it has (the report says so), so a wedged
//! server or kernel cannot keep a run alive.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use glommio::{LocalExecutorBuilder, Placement};

use crate::client::ClientSettings;
use crate::player::{self, PlayerSettings};
use crate::procstat::{Usage, Watcher};
use crate::publisher::{self, PublisherSettings};
use crate::scenario::Scenario;
use crate::source::{FlvFile, FlvSource, MediaSource, SyntheticSource};
use crate::stats::{
    CoreCounters, CoreSnapshot, LatencyHistogram, Outcome, PlayerRecord, PublisherRecord,
};
use crate::transport::tls::{self, TlsConfigError};
use crate::url::Scheme;
use crate::viewer::{self, ViewerKind, ViewerSettings};

/// How long publishers outlive players.
pub const PUBLISHER_LINGER: Duration = Duration::from_millis(500);
/// How long after the end the main thread waits for the cores' records.
pub const END_GRACE: Duration = Duration::from_secs(5);
/// How often cores report and the time series gets a point.
pub const TICK: Duration = Duration::from_secs(1);
/// io_uring memory per executor: sockets do not use registered buffers, so keep it small
/// (it counts against `ulimit -l`).
const IO_MEMORY_BYTES: usize = 256 * 1024;
/// How often a waiting player checks whether its stream is live.
const LIVE_POLL: Duration = Duration::from_millis(20);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// An executor could not be created.
    #[error("starting executor {core}: {message}")]
    Executor {
        /// Which core.
        core: usize,
        /// glommio's error.
        message: String,
    },
    /// The TLS client configuration could not be built (CA file, system roots).
    #[error("rtmps: {0}")]
    Tls(#[from] TlsConfigError),
    /// The HTTP viewers' URL does not resolve.
    #[error("viewer URL: {0}")]
    ViewerUrl(String),
}

/// One point of the time series.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TimePoint {
    /// Seconds since the start.
    pub t: f64,
    /// Players playing.
    pub players: u64,
    /// Publishers live.
    pub publishers: u64,
    /// Setups that had failed so far.
    pub failed: u64,
    /// Aggregate socket bitrate into players over the last interval, Mbit/s.
    pub mbps: f64,
    /// Median latency of the interval, ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the interval, ms.
    pub latency_p99_ms: Option<f64>,
    /// Server CPU use over the interval, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server RSS (all its processes), MiB.
    pub server_rss_mib: Option<f64>,
    /// The harness's own RSS, MiB.
    pub harness_rss_mib: Option<f64>,
}

/// Everything a run produced, for the report.
#[derive(Debug)]
pub struct RunOutput {
    /// Wall-clock start, ms since the UNIX epoch.
    pub started_unix_ms: u64,
    /// From start to the end of the players' run.
    pub elapsed: Duration,
    /// Every player, in no particular order.
    pub players: Vec<PlayerRecord>,
    /// Every publisher, in no particular order.
    pub publishers: Vec<PublisherRecord>,
    /// Every latency sample.
    pub latency: LatencyHistogram,
    /// One point per second.
    pub timeseries: Vec<TimePoint>,
    /// Bytes players read, summed.
    pub bytes_in: u64,
    /// Media payload bytes players received, summed.
    pub media_bytes_in: u64,
    /// The server's processes and their summed usage, with `--server-pid`.
    pub server: Option<(Vec<u32>, Usage)>,
    /// Why the server could not be watched, if it could not.
    pub server_error: Option<String>,
    /// This process's usage.
    pub own: Usage,
    /// Cores that sent their records; fewer than `cores` means the report is partial.
    pub cores_reported: usize,
    /// Executors run.
    pub cores: usize,
}

/// Receives progress while a run goes on.
pub trait Progress {
    /// Called once a second with the newest point and the run's elapsed time.
    fn tick(&mut self, point: &TimePoint, elapsed: Duration);
}

/// A progress sink that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn tick(&mut self, _: &TimePoint, _: Duration) {}
}

/// What a core sends to the main thread.
enum CoreEvent {
    Snapshot(CoreSnapshot),
    Done(CoreResult),
}

/// A core's records.
struct CoreResult {
    players: Vec<PlayerRecord>,
    publishers: Vec<PublisherRecord>,
    latency: LatencyHistogram,
    last: CoreSnapshot,
}

/// One connection to run.
#[derive(Debug, Clone, Copy)]
enum Job {
    Publisher { stream: usize, start: Duration },
    Player { stream: usize, start: Duration },
}

/// State shared by all cores.
struct Shared {
    /// `live[s]`: stream *s*'s publisher is live.
    live: Vec<AtomicBool>,
    /// Whether players must wait for `live`.
    gate_players: bool,
    start: Instant,
    deadline: Instant,
}

/// Read-only context of one core.
struct CoreContext {
    players: Vec<PlayerSettings>,
    /// HTTP viewers per stream; empty when the players are RTMP players.
    viewers: Vec<ViewerSettings>,
    publishers: Vec<PublisherSettings>,
    source: Option<MediaSource>,
    nominal_interval_ms: Option<f64>,
    shared: Arc<Shared>,
    counters: CoreCounters,
}

/// Which jobs core `core` of `cores` runs.
fn jobs_for(scenario: &Scenario, core: usize, cores: usize) -> Vec<Job> {
    let ramp = scenario.ramp_per_sec;
    let start_of = |g: usize| {
        if ramp > 0.0 {
            Duration::from_secs_f64(g as f64 / ramp)
        } else {
            Duration::ZERO
        }
    };
    let publishers = scenario.publishers();
    let mut jobs = Vec::new();
    for g in (core..scenario.connections()).step_by(cores.max(1)) {
        let start = start_of(g);
        if g < publishers {
            jobs.push(Job::Publisher { stream: g, start });
        } else {
            let p = g - publishers;
            jobs.push(Job::Player {
                stream: p / scenario.players_per_stream.max(1),
                start,
            });
        }
    }
    jobs
}

/// Runs `scenario` against `addr` (resolved from its URL) to the end and returns what it
/// measured. `flv` is the loaded file when the scenario publishes one.
pub fn run(
    scenario: &Scenario,
    addr: SocketAddr,
    flv: Option<Arc<FlvFile>>,
    progress: &mut dyn Progress,
) -> Result<RunOutput, RunError> {
    let cores = scenario.cores;
    let client = ClientSettings {
        tcp_timeout: scenario.connect_timeout,
        setup_timeout: scenario.connect_timeout,
        handshake: scenario.handshake_kind(),
        tls: match scenario.url.scheme {
            Scheme::Rtmps => Some(tls::client_config(&scenario.tls)?),
            _ => None,
        },
        reconnect: scenario.reconnect,
    };
    let synthetic = scenario.source.synthetic();
    let source = if !scenario.publish {
        None
    } else if let Some(file) = &flv {
        Some(MediaSource::Flv(FlvSource::new(Arc::clone(file))))
    } else {
        Some(MediaSource::Synthetic(SyntheticSource::new(
            synthetic.unwrap_or_default(),
        )))
    };
    let nominal_interval_ms = if !scenario.publish {
        None
    } else if let Some(file) = &flv {
        Some(file.frame_interval_ms() as f64)
    } else {
        synthetic.map(|s| 1000.0 / f64::from(s.fps.max(1)))
    };
    let streams: Vec<_> = (0..scenario.streams)
        .map(|s| scenario.stream_url(s))
        .collect();
    let viewers = viewer_settings(scenario)?;

    let mut server = None;
    let mut server_error = None;
    if !scenario.outputs.server_pids.is_empty() {
        match Watcher::start(&scenario.outputs.server_pids) {
            Ok(w) => server = Some(w),
            Err(e) => server_error = Some(e.to_string()),
        }
    }
    let mut own = Watcher::start(&[std::process::id()]).ok();

    let start = Instant::now();
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let deadline = start + scenario.duration;
    let shared = Arc::new(Shared {
        live: (0..scenario.streams)
            .map(|_| AtomicBool::new(false))
            .collect(),
        gate_players: scenario.publish,
        start,
        deadline,
    });
    let (tx, rx) = mpsc::channel::<CoreEvent>();
    let mut handles = Vec::with_capacity(cores);
    for core in 0..cores {
        let jobs = jobs_for(scenario, core, cores);
        let players = streams
            .iter()
            .map(|url| PlayerSettings {
                url: url.clone(),
                addr,
                client: client.clone(),
                lite: scenario.lite,
            })
            .collect();
        let publishers = streams
            .iter()
            .map(|url| PublisherSettings {
                url: url.clone(),
                addr,
                client: client.clone(),
            })
            .collect();
        let viewers = viewers.clone();
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        let source = source.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("loadtest-{core}"))
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move {
                let ctx = Rc::new(CoreContext {
                    players,
                    viewers,
                    publishers,
                    source,
                    nominal_interval_ms,
                    shared,
                    counters: CoreCounters::default(),
                });
                run_core(core, ctx, jobs, tx).await;
            })
            .map_err(|e| RunError::Executor {
                core,
                message: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(tx);

    let hard_end = deadline + PUBLISHER_LINGER + END_GRACE;
    let mut latest: Vec<Option<CoreSnapshot>> = vec![None; cores];
    let mut interval = LatencyHistogram::default();
    let mut results = Vec::with_capacity(cores);
    let mut timeseries = Vec::new();
    // Half a tick after the cores' snapshots, so each point sees the newest of every core.
    let mut next_tick = start + TICK + TICK / 2;
    let mut last_tick = (start, 0u64, server.as_ref().and_then(Watcher::last));
    loop {
        let now = Instant::now();
        if now >= hard_end || results.len() == cores {
            break;
        }
        // No more points once the snapshots reach the deadline: then just wait for records.
        let wake = if next_tick - TICK / 2 < deadline {
            next_tick.min(hard_end)
        } else {
            hard_end
        };
        let wait = wake.saturating_duration_since(now);
        match rx.recv_timeout(wait) {
            Ok(CoreEvent::Snapshot(s)) => {
                interval.merge(&s.latency);
                let core = s.core;
                if let Some(slot) = latest.get_mut(core) {
                    *slot = Some(s);
                }
            }
            Ok(CoreEvent::Done(r)) => {
                let core = r.last.core;
                if let Some(slot) = latest.get_mut(core) {
                    *slot = Some(r.last.clone());
                }
                results.push(r);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        // The cores' snapshot this point is built from; the one at the deadline races the
        // players' end and is left out.
        let snapshot_at = next_tick - TICK / 2;
        if now >= next_tick && snapshot_at < deadline {
            next_tick += TICK;
            let server_sample = server.as_mut().and_then(Watcher::sample);
            let own_sample = own.as_mut().and_then(Watcher::sample);
            let totals = sum(&latest);
            let dt = now.duration_since(last_tick.0).as_secs_f64().max(1e-3);
            let point = TimePoint {
                t: snapshot_at.duration_since(start).as_secs_f64(),
                players: totals.players_playing,
                publishers: totals.publishers_live,
                failed: totals.connects_failed,
                mbps: totals.bytes_in.saturating_sub(last_tick.1) as f64 * 8.0 / dt / 1e6,
                latency_p50_ms: interval.quantile_ms(0.5),
                latency_p99_ms: interval.quantile_ms(0.99),
                server_cpu_pct: match (server_sample, last_tick.2) {
                    (Some(s), Some(prev)) => Some((s.cpu_secs - prev.cpu_secs) / dt * 100.0),
                    _ => None,
                },
                server_rss_mib: server_sample.map(|s| s.rss_kib as f64 / 1024.0),
                harness_rss_mib: own_sample.map(|s| s.rss_kib as f64 / 1024.0),
            };
            interval.reset();
            last_tick = (now, totals.bytes_in, server_sample.or(last_tick.2));
            progress.tick(&point, now.duration_since(start));
            timeseries.push(point);
        }
    }
    if let Some(w) = server.as_mut() {
        w.sample();
    }
    if let Some(w) = own.as_mut() {
        w.sample();
    }
    let cores_reported = results.len();
    if cores_reported == cores {
        for handle in handles {
            let _ = handle.join();
        }
    }
    // Otherwise the stuck executors are left behind; the process exits after the report.

    let totals = sum(&latest);
    let mut out = RunOutput {
        started_unix_ms,
        elapsed: Instant::now().min(deadline).duration_since(start),
        players: Vec::new(),
        publishers: Vec::new(),
        latency: LatencyHistogram::default(),
        timeseries,
        bytes_in: totals.bytes_in,
        media_bytes_in: totals.media_bytes_in,
        server: server.as_ref().map(|w| (w.pids(), w.usage())),
        server_error,
        own: own.as_ref().map(Watcher::usage).unwrap_or_default(),
        cores_reported,
        cores,
    };
    for r in results {
        out.players.extend(r.players);
        out.publishers.extend(r.publishers);
        out.latency.merge(&r.latency);
    }
    Ok(out)
}

/// The HTTP viewers of every stream (none for RTMP players), all at the address the first
/// one's host resolves to, resolved once.
fn viewer_settings(scenario: &Scenario) -> Result<Vec<ViewerSettings>, RunError> {
    let mut out = Vec::new();
    let mut addr = None;
    for s in 0..scenario.streams {
        let Some(url) = scenario.viewer_url(s) else {
            return Ok(Vec::new());
        };
        let url = url.map_err(RunError::ViewerUrl)?;
        let addr = match addr {
            Some(addr) => addr,
            None => {
                let resolved = url
                    .socket_addrs(|| Some(80))
                    .map_err(|e| RunError::ViewerUrl(format!("{url}: {e}")))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| RunError::ViewerUrl(format!("{url}: no address")))?;
                *addr.insert(resolved)
            }
        };
        out.push(ViewerSettings {
            kind: scenario.viewer,
            url,
            addr,
            timeout: scenario.connect_timeout,
            lite: scenario.lite,
        });
    }
    Ok(out)
}

/// Sums the newest snapshot of every core.
fn sum(latest: &[Option<CoreSnapshot>]) -> CoreSnapshot {
    let mut total = CoreSnapshot {
        core: 0,
        players_playing: 0,
        publishers_live: 0,
        connects_ok: 0,
        connects_failed: 0,
        drops: 0,
        bytes_in: 0,
        media_bytes_in: 0,
        bytes_out: 0,
        latency: LatencyHistogram::default(),
    };
    for s in latest.iter().flatten() {
        total.players_playing += s.players_playing;
        total.publishers_live += s.publishers_live;
        total.connects_ok += s.connects_ok;
        total.connects_failed += s.connects_failed;
        total.drops += s.drops;
        total.bytes_in += s.bytes_in;
        total.media_bytes_in += s.media_bytes_in;
        total.bytes_out += s.bytes_out;
    }
    total
}

/// Sleeps until `at` (returns at once if it has passed).
async fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        glommio::timer::sleep(at - now).await;
    }
}

/// Runs `fut` until it ends or `at` passes.
async fn until<F: std::future::Future<Output = ()>>(at: Instant, fut: F) {
    future::or(fut, sleep_until(at)).await;
}

/// Result of one job.
enum JobRecord {
    Player(PlayerRecord),
    Publisher(PublisherRecord),
}

async fn run_core(core: usize, ctx: Rc<CoreContext>, jobs: Vec<Job>, tx: mpsc::Sender<CoreEvent>) {
    let shared = Arc::clone(&ctx.shared);
    let end = shared.deadline + PUBLISHER_LINGER;
    let ticker = {
        let ctx = Rc::clone(&ctx);
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let mut next = ctx.shared.start + TICK;
            while next <= end {
                sleep_until(next).await;
                let _ = tx.send(CoreEvent::Snapshot(ctx.counters.snapshot(core)));
                next += TICK;
            }
        })
    };
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let ctx = Rc::clone(&ctx);
            glommio::spawn_local(async move { run_job(&ctx, job).await })
        })
        .collect();
    let mut players = Vec::new();
    let mut publishers = Vec::new();
    for task in tasks {
        match task.await {
            JobRecord::Player(r) => players.push(r),
            JobRecord::Publisher(r) => publishers.push(r),
        }
    }
    // Dropping a glommio task cancels it.
    drop(ticker);
    let last = ctx.counters.snapshot(core);
    let latency = ctx.counters.latency_total.borrow().clone();
    let _ = tx.send(CoreEvent::Done(CoreResult {
        players,
        publishers,
        latency,
        last,
    }));
}

async fn run_job(ctx: &CoreContext, job: Job) -> JobRecord {
    let shared = &ctx.shared;
    match job {
        Job::Publisher { stream, start } => {
            let interval = ctx.nominal_interval_ms.unwrap_or(0.0);
            let record = RefCell::new(PublisherRecord::new(stream, interval));
            let (Some(settings), Some(source), Some(live)) = (
                ctx.publishers.get(stream),
                ctx.source.clone(),
                shared.live.get(stream),
            ) else {
                return JobRecord::Publisher(record.into_inner());
            };
            until(shared.deadline + PUBLISHER_LINGER, async {
                sleep_until(shared.start + start).await;
                publisher::run(
                    settings,
                    source,
                    &ctx.counters,
                    &record,
                    live,
                    shared.deadline,
                )
                .await;
            })
            .await;
            let mut record = record.into_inner();
            if record.live_at.is_some() {
                let end = Instant::now().min(shared.deadline + PUBLISHER_LINGER);
                record.ended_at = Some(record.ended_at.map_or(end, |e| e.min(end)));
            }
            JobRecord::Publisher(record)
        }
        Job::Player { stream, start } => {
            let record = RefCell::new(PlayerRecord::new(stream, ctx.nominal_interval_ms));
            let Some(settings) = ctx.players.get(stream) else {
                return JobRecord::Player(record.into_inner());
            };
            until(shared.deadline, async {
                sleep_until(shared.start + start).await;
                if shared.gate_players {
                    let live = shared.live.get(stream);
                    while !live.is_some_and(|l| l.load(Ordering::Acquire)) {
                        record.borrow_mut().outcome =
                            Outcome::NotStarted("its stream's publisher never went live");
                        glommio::timer::sleep(LIVE_POLL).await;
                    }
                }
                match ctx.viewers.get(stream) {
                    Some(v) if v.kind == ViewerKind::Flv => {
                        viewer::flv::run(v, &ctx.counters, &record).await
                    }
                    Some(v) => viewer::hls::run(v, &ctx.counters, &record).await,
                    None => player::run(settings, &ctx.counters, &record).await,
                }
            })
            .await;
            let mut record = record.into_inner();
            if record.started_at.is_some() {
                let end = Instant::now().min(shared.deadline);
                record.ended_at = Some(record.ended_at.map_or(end, |e| e.min(end)));
                if record.dropped.is_none() {
                    record.close_stall(end);
                }
            }
            JobRecord::Player(record)
        }
    }
}
