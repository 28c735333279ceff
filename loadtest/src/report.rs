//! The report: what a run measured, summarised for people ([`Report::to_table`]), for
//! programs ([`Report::to_json`]) and as a self-contained page with charts
//! ([`Report::to_html`]: inline SVG, no script, nothing fetched from the network).
//!
//! Every field is described in `loadtest/README.md`; the JSON keys are the struct fields
//! below. Units are in the names (`_ms`, `_kbps`, `_mbps`, `_mib`, `_secs`); "GB" is 10⁹
//! bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::chart::{bar_chart, escape, line_chart, Series};
use crate::gate::{self, Verdict};
use crate::runner::{RunOutput, TimePoint};
use crate::scenario::Scenario;
use crate::stats::{Outcome, Summary, GAP_FACTOR};
use crate::viewer::ViewerKind;

/// Edges of the latency histogram buckets, ms (the last bucket is open-ended).
const LATENCY_EDGES_MS: [f64; 15] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    60000.0,
];

/// Failures (or drops) with one reason.
#[derive(Debug, Clone, Serialize)]
pub struct ReasonCount {
    /// Static label (`tcp_refused`, `rejected_play`, ...).
    pub reason: String,
    /// How many connections.
    pub count: u64,
    /// One of the error messages, in words.
    pub example: String,
}

/// Connection outcomes, players and publishers together.
#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    /// Connections the scenario asked for.
    pub planned: u64,
    /// Connections that started (TCP connect attempted).
    pub attempted: u64,
    /// Setups that reached `Play.Start`/`Publish.Start`.
    pub ok: u64,
    /// Setups that failed.
    pub failed: u64,
    /// Connections never attempted (run ended first, or the stream never went live).
    pub not_started: u64,
    /// Connections lost after setup, before the end of the run.
    pub dropped: u64,
    /// Players that moved to a new connection on a server's reconnect request (`reconnect`
    /// scenarios), and how many moves they made in all.
    pub reconnected_players: u64,
    /// Moves in all.
    pub reconnects: u64,
    /// Failures by reason.
    pub failures: Vec<ReasonCount>,
    /// Drops by reason.
    pub drops: Vec<ReasonCount>,
    /// Why connections were not started.
    pub not_started_reasons: Vec<ReasonCount>,
}

/// Frame gap results.
#[derive(Debug, Clone, Serialize)]
pub struct Gaps {
    /// The rule in words.
    pub rule: String,
    /// Players with at least one gap.
    pub players_with_gaps: u64,
    /// Gaps over all players.
    pub total: u64,
    /// Gaps per player (players that got a key frame).
    pub per_player: Option<Summary>,
    /// Largest gap seen, ms.
    pub max_gap_ms: u64,
    /// Timestamps that went backwards, over all players.
    pub rewinds: u64,
}

/// Player results.
#[derive(Debug, Clone, Serialize)]
pub struct Players {
    /// Players in the scenario.
    pub total: u64,
    /// Players that reached `Play.Start`.
    pub connected: u64,
    /// Players that received a coded key frame.
    pub with_keyframe: u64,
    /// TCP connect to `connect` answered, ms.
    pub connect_ms: Option<Summary>,
    /// TCP connect to `Play.Start`, ms.
    pub ready_ms: Option<Summary>,
    /// TCP connect to first coded key frame, ms.
    pub first_keyframe_ms: Option<Summary>,
    /// Per player: media bytes from the first key frame on over the media time they cover
    /// (timestamps), kbit/s. Equals the source bitrate unless frames were lost.
    pub bitrate_kbps: Option<Summary>,
    /// Per player: the same bytes over the wall-clock time since the first key frame, kbit/s
    /// (includes the burst a GOP cache sends at join).
    pub throughput_kbps: Option<Summary>,
    /// The source bitrate players are compared with (what this run's publishers sent, by
    /// timestamps, mean over streams), kbit/s; `null` when the run does not publish.
    pub source_kbps: Option<f64>,
    /// Per-player delivered bitrate ÷ its stream's source bitrate.
    pub bitrate_ratio: Option<Summary>,
    /// Frame gaps; `null` in lite mode.
    pub gaps: Option<Gaps>,
    /// Coded video frames received, all players.
    pub video_frames: u64,
    /// Audio frames received, all players.
    pub audio_frames: u64,
    /// What the players were: `rtmp`, `hls`, `hls-plain` or `flv`.
    pub viewer: &'static str,
    /// HTTP viewers only: stalls and requests; `null` for RTMP players.
    pub http: Option<HttpViewers>,
}

/// What only HTTP viewers have.
#[derive(Debug, Clone, Serialize)]
pub struct HttpViewers {
    /// The stall rule in words.
    pub stall_rule: String,
    /// Viewers with at least one stall.
    pub viewers_with_stalls: u64,
    /// Stalls over all viewers.
    pub stalls: u64,
    /// Longest time one viewer spent stalled, ms.
    pub max_stalled_ms: f64,
    /// Requests over all viewers.
    pub requests: u64,
    /// Requests per second per viewer while playing (from its first frame on: playlists,
    /// parts, segments; setup and waiting for the stream left out).
    pub requests_per_viewer_per_sec: Option<f64>,
}

/// Publisher results.
#[derive(Debug, Clone, Serialize)]
pub struct Publishers {
    /// Publishers in the scenario.
    pub total: u64,
    /// Publishers that reached `Publish.Start`.
    pub connected: u64,
    /// TCP connect to `connect` answered, ms.
    pub connect_ms: Option<Summary>,
    /// Bitrate sent (payload bytes over the media time they cover), kbit/s.
    pub sent_kbps: Option<Summary>,
    /// Frames sent, all publishers.
    pub frames: u64,
    /// FLV loops completed, all publishers.
    pub loops: u64,
    /// Largest delay of a frame behind its schedule, ms.
    pub max_lag_ms: f64,
}

/// One latency histogram bucket.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Lower edge, ms (inclusive).
    pub from_ms: f64,
    /// Upper edge, ms (exclusive); `null` for the last bucket.
    pub to_ms: Option<f64>,
    /// Samples.
    pub count: u64,
}

/// End-to-end latency.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples (one per stamped video frame per player).
    pub samples: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Distribution.
    pub histogram: Vec<Bucket>,
}

/// Aggregate throughput into players.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// RTMP bytes read by all players (over TLS or RTMPT: plaintext / tunnel payload).
    pub bytes_in: u64,
    /// Media payload bytes received by all players.
    pub media_bytes_in: u64,
    /// `bytes_in` over the run's duration, Mbit/s.
    pub aggregate_mbps: f64,
    /// `media_bytes_in` over the run's duration, Mbit/s.
    pub media_mbps: f64,
}

/// The server's resource use (`--server-pid`), summed over its processes.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// The (first) process watched.
    pub pid: u32,
    /// Every process watched.
    pub pids: Vec<u32>,
    /// CPU seconds (user + system) spent during the run.
    pub cpu_secs: f64,
    /// Average CPU use, percent of one core.
    pub cpu_pct: f64,
    /// Largest RSS sampled during the run (summed over the processes), MiB.
    pub peak_rss_mib: f64,
    /// The processes' lifetime peak RSS (VmHWM, summed), MiB.
    pub vm_hwm_mib: f64,
    /// Bytes delivered to players (socket bytes), GB (10⁹).
    pub delivered_gb: f64,
    /// `cpu_secs / delivered_gb`; `null` when nothing was delivered.
    pub cpu_secs_per_gb: Option<f64>,
    /// Whether every process still existed at the end.
    pub alive_at_end: bool,
}

/// The harness's own resource use.
#[derive(Debug, Clone, Serialize)]
pub struct Harness {
    /// Executors run.
    pub cores: usize,
    /// Executors that reported back; fewer means a partial report.
    pub cores_reported: usize,
    /// CPU seconds the harness spent.
    pub cpu_secs: f64,
    /// Largest RSS sampled, MiB.
    pub peak_rss_mib: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `corecast-loadtest`.
    pub tool: &'static str,
    /// The harness's version.
    pub version: &'static str,
    /// The host the harness ran on.
    pub host: String,
    /// The start, RFC 3339 in UTC.
    pub started_at: String,
    /// What ran, in words.
    pub description: String,
    /// What ran.
    pub scenario: Scenario,
    /// Wall-clock start, ms since the UNIX epoch.
    pub started_unix_ms: u64,
    /// How long the run lasted, seconds.
    pub duration_secs: f64,
    /// False when some executor did not report back in time.
    pub complete: bool,
    /// Connection outcomes.
    pub connections: Connections,
    /// Player results.
    pub players: Players,
    /// Publisher results.
    pub publishers: Publishers,
    /// End-to-end latency; `null` without samples (no synthetic publisher, or lite mode).
    pub latency: Option<Latency>,
    /// Aggregate throughput.
    pub throughput: Throughput,
    /// The server's use, with `--server-pid`.
    pub server: Option<Server>,
    /// Why the server could not be watched.
    pub server_error: Option<String>,
    /// The harness's own use.
    pub harness: Harness,
    /// One point per second.
    pub timeseries: Vec<TimePoint>,
    /// Whether the run passed: failed connections against `--allow-failed`, and every
    /// `--fail-on` threshold.
    pub verdict: Verdict,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Counts `(reason, message)` pairs by reason, keeping the first message as the example.
fn by_reason<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<ReasonCount> {
    let mut map: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for (reason, message) in items {
        map.entry(reason).or_insert((0, message)).0 += 1;
    }
    let mut out: Vec<ReasonCount> = map
        .into_iter()
        .map(|(reason, (count, example))| ReasonCount {
            reason: reason.to_owned(),
            count,
            example: example.to_owned(),
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    out
}

impl Report {
    /// Builds the report of `out`, a run of `scenario`.
    pub fn new(scenario: &Scenario, out: &RunOutput) -> Report {
        let secs = out.elapsed.as_secs_f64().max(1e-3);
        let outcomes = out
            .players
            .iter()
            .map(|p| (&p.outcome, &p.dropped))
            .chain(out.publishers.iter().map(|p| (&p.outcome, &p.dropped)));
        let mut failures = Vec::new();
        let mut not_started = Vec::new();
        let mut drops = Vec::new();
        let mut ok = 0;
        for (outcome, dropped) in outcomes {
            match outcome {
                Outcome::NotStarted(why) => not_started.push((*why, *why)),
                Outcome::Failed { reason, message } => failures.push((*reason, message.as_str())),
                Outcome::Connected => ok += 1,
            }
            if let Some((reason, message)) = dropped {
                drops.push((*reason, message.as_str()));
            }
        }
        let planned = scenario.connections() as u64;
        let connections = Connections {
            planned,
            attempted: ok + failures.len() as u64,
            ok,
            failed: failures.len() as u64,
            not_started: not_started.len() as u64
                + planned.saturating_sub((out.players.len() + out.publishers.len()) as u64),
            dropped: drops.len() as u64,
            reconnected_players: out.players.iter().filter(|p| p.reconnects > 0).count() as u64,
            reconnects: out.players.iter().map(|p| u64::from(p.reconnects)).sum(),
            failures: by_reason(failures.into_iter()),
            drops: by_reason(drops.into_iter()),
            not_started_reasons: by_reason(not_started.into_iter()),
        };

        // Source bitrate per stream: what its publisher sent.
        let mut source_by_stream: BTreeMap<usize, f64> = BTreeMap::new();
        for p in &out.publishers {
            if let Some(kbps) = p.sent_kbps() {
                source_by_stream.insert(p.stream, kbps);
            }
        }
        let source_kbps = (!source_by_stream.is_empty())
            .then(|| source_by_stream.values().sum::<f64>() / source_by_stream.len() as f64);

        let players = &out.players;
        let connected: Vec<_> = players
            .iter()
            .filter(|p| p.outcome == Outcome::Connected)
            .collect();
        let with_keyframe: Vec<_> = connected
            .iter()
            .filter(|p| p.first_keyframe.is_some())
            .collect();
        let viewer = scenario.viewer;
        // HLS viewers see parts, not frames with timestamps: no frame gaps (stalls instead).
        let frame_gaps = !scenario.lite && matches!(viewer, ViewerKind::Rtmp | ViewerKind::Flv);
        let http = (viewer != ViewerKind::Rtmp).then(|| {
            // While playing: from each viewer's first frame to its end.
            let playing_secs: f64 = connected
                .iter()
                .filter_map(|p| {
                    Some(
                        p.ended_at?
                            .duration_since(p.first_keyframe_at?)
                            .as_secs_f64(),
                    )
                })
                .sum();
            let requests = players.iter().map(|p| p.requests).sum::<u64>();
            let playing_requests = connected
                .iter()
                .filter(|p| p.first_keyframe_at.is_some())
                .map(|p| p.requests.saturating_sub(p.setup_requests))
                .sum::<u64>();
            HttpViewers {
                stall_rule: match viewer {
                    ViewerKind::Flv => "no audio or video tag for more than 1 s".to_owned(),
                    ViewerKind::Hls => "no new part for more than 2 x the part target".to_owned(),
                    _ => "no new segment for more than 2 x the target duration".to_owned(),
                },
                viewers_with_stalls: connected.iter().filter(|p| p.stalls > 0).count() as u64,
                stalls: connected.iter().map(|p| p.stalls).sum(),
                max_stalled_ms: connected.iter().map(|p| ms(p.stalled)).fold(0.0, f64::max),
                requests,
                requests_per_viewer_per_sec: (playing_secs > 0.0)
                    .then(|| playing_requests as f64 / playing_secs),
            }
        });
        let gaps = frame_gaps.then(|| Gaps {
            rule: format!(
                "a jump between consecutive video timestamps of one player larger than \
                 {GAP_FACTOR} x the nominal frame interval"
            ),
            players_with_gaps: with_keyframe.iter().filter(|p| p.gaps.gaps > 0).count() as u64,
            total: with_keyframe.iter().map(|p| u64::from(p.gaps.gaps)).sum(),
            per_player: Summary::of(with_keyframe.iter().map(|p| f64::from(p.gaps.gaps))),
            max_gap_ms: with_keyframe
                .iter()
                .map(|p| u64::from(p.gaps.max_gap_ms))
                .max()
                .unwrap_or(0),
            rewinds: with_keyframe
                .iter()
                .map(|p| u64::from(p.gaps.rewinds))
                .sum(),
        });
        let players_report = Players {
            total: (scenario.players()) as u64,
            connected: connected.len() as u64,
            with_keyframe: with_keyframe.len() as u64,
            connect_ms: Summary::of(connected.iter().filter_map(|p| p.connect_time.map(ms))),
            ready_ms: Summary::of(connected.iter().filter_map(|p| p.ready_time.map(ms))),
            first_keyframe_ms: Summary::of(
                with_keyframe
                    .iter()
                    .filter_map(|p| p.first_keyframe.map(ms)),
            ),
            bitrate_kbps: Summary::of(with_keyframe.iter().filter_map(|p| p.bitrate_kbps())),
            throughput_kbps: Summary::of(with_keyframe.iter().filter_map(|p| p.throughput_kbps())),
            source_kbps,
            bitrate_ratio: Summary::of(with_keyframe.iter().filter_map(|p| {
                let source = source_by_stream.get(&p.stream)?;
                Some(p.bitrate_kbps()? / source)
            })),
            gaps,
            video_frames: players.iter().map(|p| p.video_frames).sum(),
            audio_frames: players.iter().map(|p| p.audio_frames).sum(),
            viewer: viewer.as_str(),
            http,
        };

        let pubs = &out.publishers;
        let publishers = Publishers {
            total: scenario.publishers() as u64,
            connected: pubs
                .iter()
                .filter(|p| p.outcome == Outcome::Connected)
                .count() as u64,
            connect_ms: Summary::of(pubs.iter().filter_map(|p| p.connect_time.map(ms))),
            sent_kbps: Summary::of(pubs.iter().filter_map(|p| p.sent_kbps())),
            frames: pubs.iter().map(|p| p.frames).sum(),
            loops: pubs.iter().map(|p| p.loops).sum(),
            max_lag_ms: pubs.iter().map(|p| p.max_lag_ms).fold(0.0, f64::max),
        };

        let h = &out.latency;
        let latency = (h.count() > 0).then(|| Latency {
            samples: h.count(),
            p50_ms: h.quantile_ms(0.5).unwrap_or(0.0),
            p90_ms: h.quantile_ms(0.9).unwrap_or(0.0),
            p99_ms: h.quantile_ms(0.99).unwrap_or(0.0),
            max_ms: h.max_ms().unwrap_or(0.0),
            histogram: LATENCY_EDGES_MS
                .iter()
                .enumerate()
                .map(|(i, &from)| {
                    let to = LATENCY_EDGES_MS.get(i + 1).copied();
                    let high = to.map_or(u64::MAX, |t| (t * 1000.0) as u64);
                    // Differences of cumulative counts: HDR buckets straddling an edge would
                    // otherwise be counted on both sides, and the buckets must sum to samples.
                    let below = |us: u64| h.count_between_us(0, us);
                    Bucket {
                        from_ms: from,
                        to_ms: to,
                        count: below(high).saturating_sub(below((from * 1000.0) as u64)),
                    }
                })
                .collect(),
        });

        let delivered_gb = out.bytes_in as f64 / 1e9;
        let server = out.server.as_ref().map(|(pids, u)| Server {
            pid: pids.first().copied().unwrap_or(0),
            pids: pids.clone(),
            cpu_secs: u.cpu_secs,
            cpu_pct: u.cpu_secs / secs * 100.0,
            peak_rss_mib: u.peak_rss_kib as f64 / 1024.0,
            vm_hwm_mib: u.hwm_kib as f64 / 1024.0,
            delivered_gb,
            cpu_secs_per_gb: (out.bytes_in > 0).then(|| u.cpu_secs / delivered_gb),
            alive_at_end: u.alive_at_end,
        });

        let mut report = Report {
            tool: "corecast-loadtest",
            version: env!("CARGO_PKG_VERSION"),
            host: host_name(),
            started_at: rfc3339(out.started_unix_ms),
            description: scenario.describe(),
            scenario: scenario.clone(),
            started_unix_ms: out.started_unix_ms,
            duration_secs: secs,
            complete: out.cores_reported == out.cores,
            connections,
            players: players_report,
            publishers,
            latency,
            throughput: Throughput {
                bytes_in: out.bytes_in,
                media_bytes_in: out.media_bytes_in,
                aggregate_mbps: out.bytes_in as f64 * 8.0 / secs / 1e6,
                media_mbps: out.media_bytes_in as f64 * 8.0 / secs / 1e6,
            },
            server,
            server_error: out.server_error.clone(),
            harness: Harness {
                cores: out.cores,
                cores_reported: out.cores_reported,
                cpu_secs: out.own.cpu_secs,
                peak_rss_mib: out.own.peak_rss_kib as f64 / 1024.0,
            },
            timeseries: out.timeseries.clone(),
            verdict: Verdict::default(),
        };
        report.verdict = gate::judge(&report, &scenario.gate);
        report
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The rows of the summary table: `(metric, value)`.
    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        let c = &self.connections;
        rows.push((
            "connections".to_owned(),
            format!(
                "{} planned, {} attempted, {} ok, {} failed, {} not started, {} dropped{}",
                c.planned,
                c.attempted,
                c.ok,
                c.failed,
                c.not_started,
                c.dropped,
                if c.reconnects > 0 {
                    format!(", {} moved on a reconnect request", c.reconnected_players)
                } else {
                    String::new()
                }
            ),
        ));
        for (label, list) in [
            ("  failed", &c.failures),
            ("  dropped", &c.drops),
            ("  not started", &c.not_started_reasons),
        ] {
            for r in list {
                rows.push((
                    label.to_owned(),
                    format!("{} x {} ({})", r.count, r.reason, r.example),
                ));
            }
        }
        for hint in self.hints() {
            rows.push(("  hint".to_owned(), hint));
        }
        let p = &self.players;
        if p.total > 0 {
            rows.push((
                "players".to_owned(),
                format!(
                    "{} total, {} connected, {} got a key frame",
                    p.total, p.connected, p.with_keyframe
                ),
            ));
            rows.push(("connect time".to_owned(), summary_ms(p.connect_ms.as_ref())));
            rows.push(("play start".to_owned(), summary_ms(p.ready_ms.as_ref())));
            rows.push((
                "first key frame".to_owned(),
                summary_ms(p.first_keyframe_ms.as_ref()),
            ));
            rows.push((
                "delivered bitrate".to_owned(),
                match &p.bitrate_kbps {
                    Some(s) => format!(
                        "min {:.0}  p50 {:.0}  max {:.0} kbit/s per player (by timestamps)",
                        s.min, s.p50, s.max
                    ),
                    None => "-".to_owned(),
                },
            ));
            rows.push((
                "  throughput".to_owned(),
                match &p.throughput_kbps {
                    Some(s) => format!(
                        "min {:.0}  p50 {:.0}  max {:.0} kbit/s per player (by wall clock)",
                        s.min, s.p50, s.max
                    ),
                    None => "-".to_owned(),
                },
            ));
            if let (Some(source), Some(ratio)) = (p.source_kbps, &p.bitrate_ratio) {
                rows.push((
                    "  vs source".to_owned(),
                    format!(
                        "source {source:.0} kbit/s; ratio min {:.3}  p50 {:.3}",
                        ratio.min, ratio.p50
                    ),
                ));
            }
            match &p.gaps {
                Some(g) => rows.push((
                    "frame gaps".to_owned(),
                    format!(
                        "{} gaps in {} players, largest {} ms, {} rewinds",
                        g.total, g.players_with_gaps, g.max_gap_ms, g.rewinds
                    ),
                )),
                None if self.scenario.lite => {
                    rows.push(("frame gaps".to_owned(), "- (lite mode)".to_owned()))
                }
                None => {}
            }
            if let Some(h) = &p.http {
                rows.push((
                    format!("{} stalls", p.viewer),
                    format!(
                        "{} stalls in {} viewers, longest stalled {:.0} ms ({})",
                        h.stalls, h.viewers_with_stalls, h.max_stalled_ms, h.stall_rule
                    ),
                ));
                rows.push((
                    "  requests".to_owned(),
                    format!(
                        "{} requests, {} per viewer per second",
                        h.requests,
                        h.requests_per_viewer_per_sec
                            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
                    ),
                ));
            }
        }
        let pb = &self.publishers;
        if pb.total > 0 {
            rows.push((
                "publishers".to_owned(),
                format!(
                    "{} total, {} connected, {} frames, {} loops, max lag {:.1} ms",
                    pb.total, pb.connected, pb.frames, pb.loops, pb.max_lag_ms
                ),
            ));
            rows.push((
                "  sent bitrate".to_owned(),
                match &pb.sent_kbps {
                    Some(s) => format!(
                        "min {:.0}  p50 {:.0}  max {:.0} kbit/s",
                        s.min, s.p50, s.max
                    ),
                    None => "-".to_owned(),
                },
            ));
        }
        rows.push((
            "e2e latency".to_owned(),
            match &self.latency {
                Some(l) => format!(
                    "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} ms  ({} samples)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
                ),
                None => "- (no samples)".to_owned(),
            },
        ));
        let t = &self.throughput;
        rows.push((
            "aggregate".to_owned(),
            format!(
                "{:.1} Mbit/s into players ({:.1} Mbit/s media), {:.3} GB",
                t.aggregate_mbps,
                t.media_mbps,
                t.bytes_in as f64 / 1e9
            ),
        ));
        if let Some(s) = &self.server {
            rows.push((
                "server".to_owned(),
                format!(
                    "pid {}: {:.2} CPU-s ({:.0}% of a core), peak RSS {:.1} MiB (VmHWM {:.1}), \
                     {} CPU-s per delivered GB{}",
                    s.pid,
                    s.cpu_secs,
                    s.cpu_pct,
                    s.peak_rss_mib,
                    s.vm_hwm_mib,
                    s.cpu_secs_per_gb
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")),
                    if s.alive_at_end {
                        ""
                    } else {
                        " (gone at the end)"
                    }
                ),
            ));
        }
        if let Some(e) = &self.server_error {
            rows.push(("server".to_owned(), format!("not watched: {e}")));
        }
        if self.server.as_ref().is_some_and(|s| s.pids.len() > 1) {
            if let Some(s) = &self.server {
                let pids: Vec<String> = s.pids.iter().map(u32::to_string).collect();
                rows.push((
                    "  processes".to_owned(),
                    format!("summed: {}", pids.join(" ")),
                ));
            }
        }
        rows.push((
            "harness".to_owned(),
            format!(
                "{} cores, {:.2} CPU-s, peak RSS {:.1} MiB{}",
                self.harness.cores,
                self.harness.cpu_secs,
                self.harness.peak_rss_mib,
                if self.complete {
                    String::new()
                } else {
                    format!(
                        "; PARTIAL: {} of {} cores reported",
                        self.harness.cores_reported, self.harness.cores
                    )
                }
            ),
        ));
        let v = &self.verdict;
        rows.push((
            "verdict".to_owned(),
            if v.passed {
                "passed".to_owned()
            } else {
                "FAILED".to_owned()
            },
        ));
        rows.push((
            "  connections".to_owned(),
            format!(
                "{}{}",
                if v.connections_ok { "ok: " } else { "FAILED: " },
                v.connections_message(self.connections.planned)
            ),
        ));
        for t in &v.thresholds {
            rows.push(("  threshold".to_owned(), t.message.clone()));
        }
        rows
    }

    /// What to do about the failures that have a usual cause (certificate set-ups, mostly).
    pub fn hints(&self) -> Vec<String> {
        let seen = |what: &str| {
            self.connections
                .failures
                .iter()
                .any(|f| f.example.contains(what))
        };
        let mut hints = Vec::new();
        if seen("CaUsedAsEndEntity") {
            hints.push(
                "the server presents a CA certificate (basicConstraints CA:TRUE) as its own, \
                 which TLS refuses: give the server a leaf certificate signed by a test CA and \
                 pass the CA with --ca-file (loadtest/README.md, \"A test CA for RTMPS\"), or \
                 skip verification with --insecure"
                    .to_owned(),
            );
        }
        if seen("UnknownIssuer") {
            hints.push(match &self.scenario.tls.ca_file {
                Some(path) => format!(
                    "no certificate in --ca-file {} signed the server's certificate: pass the \
                     CA that signed it (a leaf certificate in that file trusts nothing but \
                     itself)",
                    path.display()
                ),
                None => "the system's CA certificates do not know the server's issuer: \
                         pass the test CA with --ca-file, or skip verification with --insecure"
                    .to_owned(),
            });
        }
        if seen("NotValidForName") {
            hints.push(
                "the server's certificate does not name the URL's host: connect by a name or \
                 address the certificate carries (its subjectAltName)"
                    .to_owned(),
            );
        }
        hints
    }

    /// `corecast-loadtest 0.1.0 on HOST, started 2026-12-05T07:00:00Z`.
    fn provenance(&self) -> String {
        format!(
            "{} {} on {}, started {}",
            self.tool, self.version, self.host, self.started_at
        )
    }

    /// The summary table as text.
    pub fn to_table(&self) -> String {
        let rows = self.rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!(
            "corecast-loadtest: {}\n{}, ran {:.1} s\n",
            self.description,
            self.provenance(),
            self.duration_secs
        );
        for (k, v) in rows {
            let _ = writeln!(out, "{k:width$}  {v}");
        }
        out
    }

    /// A self-contained HTML page: the summary table and SVG charts.
    pub fn to_html(&self) -> String {
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>corecast-loadtest</h1><p>{}<br>{}<br>ran {:.1} s</p><table>",
            escape(&self.description),
            escape(&self.provenance()),
            self.duration_secs
        );
        for (k, v) in self.rows() {
            let _ = write!(
                body,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k.trim()),
                escape(&v)
            );
        }
        body.push_str("</table>");
        if let Some(l) = &self.latency {
            // Bars up to the last non-empty bucket, labelled by their upper edge.
            let last = l.histogram.iter().rposition(|b| b.count > 0).unwrap_or(0);
            let bars: Vec<(String, u64)> = l
                .histogram
                .iter()
                .take(last + 1)
                .map(|b| (bucket_label(b), b.count))
                .collect();
            body.push_str(&bar_chart("End-to-end latency", &bars));
        }
        let series = |f: &dyn Fn(&TimePoint) -> Option<f64>| -> Vec<(f64, f64)> {
            self.timeseries
                .iter()
                .filter_map(|p| f(p).map(|v| (p.t, v)))
                .collect()
        };
        let line = |name, color, f: &dyn Fn(&TimePoint) -> Option<f64>| Series {
            name,
            color,
            points: series(f),
        };
        body.push_str(&line_chart(
            "Aggregate bitrate into players (Mbit/s)",
            &[line("Mbit/s", "#1f77b4", &|p| Some(p.mbps))],
        ));
        body.push_str(&line_chart(
            "Connections over time",
            &[
                line("players", "#2ca02c", &|p| Some(p.players as f64)),
                line("publishers", "#9467bd", &|p| Some(p.publishers as f64)),
                line("failed", "#d62728", &|p| Some(p.failed as f64)),
            ],
        ));
        if self.latency.is_some() {
            body.push_str(&line_chart(
                "Latency over time (ms)",
                &[
                    line("p50", "#1f77b4", &|p| p.latency_p50_ms),
                    line("p99", "#ff7f0e", &|p| p.latency_p99_ms),
                ],
            ));
        }
        if self.server.is_some() {
            body.push_str(&line_chart(
                "Server CPU (% of one core)",
                &[line("cpu %", "#8c564b", &|p| p.server_cpu_pct)],
            ));
        }
        let mut rss = Vec::new();
        if self.server.is_some() {
            rss.push(line("server", "#8c564b", &|p| p.server_rss_mib));
        }
        rss.push(line("harness", "#7f7f7f", &|p| p.harness_rss_mib));
        body.push_str(&line_chart("Resident memory (MiB)", &rss));
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
             <meta name=\"generator\" content=\"corecast-loadtest {}\">\
             <title>corecast-loadtest report, {}</title><style>\
             body{{font-family:sans-serif;margin:2em;max-width:1000px}}\
             table{{border-collapse:collapse}}th,td{{text-align:left;padding:2px 12px 2px 0;\
             vertical-align:top}}th{{white-space:nowrap}}h2{{font-size:1.1em;margin-top:2em}}\
             svg text{{font-size:11px;font-family:sans-serif}}</style></head><body>{body}\
             </body></html>\n",
            self.version,
            escape(&self.started_at)
        )
    }
}

/// The host's name (uname's node name).
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// `ms` since the UNIX epoch as RFC 3339 in UTC, to the second.
fn rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether a report can be written to `path`, found before the run: the directory must
/// exist and be writable, and `path` must not be a directory. An existing file is opened
/// without truncating (its contents stay until the report replaces them); a new one is
/// created and removed again.
pub fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    use std::fs::OpenOptions;
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        ));
    }
    match OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            OpenOptions::new().write(true).create_new(true).open(path)?;
            // The probe leaves nothing behind; a failure to remove it is harmless.
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `≤5 ms`, `≤2 s`, `>60 s`: a bucket by its upper edge.
fn bucket_label(b: &Bucket) -> String {
    let time = |ms: f64| {
        if ms >= 1000.0 {
            format!("{} s", ms / 1000.0)
        } else {
            format!("{ms} ms")
        }
    };
    match b.to_ms {
        Some(to) => format!("≤{}", time(to)),
        None => format!(">{}", time(b.from_ms)),
    }
}

fn summary_ms(s: Option<&Summary>) -> String {
    match s {
        Some(s) => format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} ms  (n={})",
            s.p50, s.p90, s.p99, s.max, s.count
        ),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::short_number;

    #[test]
    fn labels() {
        let b = |from_ms, to_ms| Bucket {
            from_ms,
            to_ms,
            count: 0,
        };
        assert_eq!(bucket_label(&b(2.0, Some(5.0))), "≤5 ms");
        assert_eq!(bucket_label(&b(1000.0, Some(2000.0))), "≤2 s");
        assert_eq!(bucket_label(&b(60000.0, None)), ">60 s");
        assert_eq!(short_number(5.0), "5");
        assert_eq!(short_number(2.5), "2.50");
        assert_eq!(short_number(25_000.0), "25k");
    }

    #[test]
    fn reasons_are_counted_and_sorted() {
        let r = by_reason(
            [
                ("tcp_refused", "a"),
                ("timeout_play", "b"),
                ("tcp_refused", "c"),
            ]
            .into_iter(),
        );
        assert_eq!(r[0].reason, "tcp_refused");
        assert_eq!(r[0].count, 2);
        assert_eq!(r[0].example, "a");
        assert_eq!(r[1].count, 1);
    }
}
