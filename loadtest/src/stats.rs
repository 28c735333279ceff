//! Measurements: per-connection records, per-core live counters, latency histograms,
//! percentiles, and frame-gap detection.
//!
//! Each core owns its [`CoreCounters`] and the records of its connections (`Cell`s and
//! `RefCell`s: nothing here is shared between threads). Every second a core sends a
//! [`CoreSnapshot`] (cumulative counters plus the latency histogram of that second) to the
//! main thread for the progress line and the time series; at the end it sends its records.
//!
//! # Frame gaps
//! A *gap* is a jump between the timestamps of two consecutive coded video frames a player
//! receives that is larger than [`GAP_FACTOR`] × the nominal frame interval. The nominal
//! interval comes from the source when the harness publishes it, else from `onMetaData`'s
//! `framerate`, else it is learned per player as the median of its first [`LEARN_DELTAS`]
//! positive deltas (deltas seen while learning are checked too once it is known). A timestamp
//! that goes backwards is counted separately as a *rewind*. Sequence headers are not frames
//! and are ignored.
//!
//! # Percentiles
//! Connect times, time to first key frame and per-player bitrates are kept per connection
//! and summarised with the nearest-rank method over the sorted values ([`Summary`]). Latency
//! samples (one per received video frame) are too many for that and go into an
//! HDR histogram (1 µs .. 10 min, 3 significant digits).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// A timestamp jump above this many nominal frame intervals is a gap.
pub const GAP_FACTOR: f64 = 2.5;

/// Deltas a player collects to learn the nominal frame interval when nobody told it.
pub const LEARN_DELTAS: usize = 16;

/// Largest latency recorded exactly, in µs; larger values saturate.
const LATENCY_MAX_US: u64 = 600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .expect("constant histogram bounds are valid"),
        )
    }
}

impl LatencyHistogram {
    /// Records one sample.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in ms; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    /// The largest sample, ms.
    pub fn max_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.max() as f64 / 1000.0)
    }

    /// Samples in `[low_us, high_us)`.
    pub fn count_between_us(&self, low_us: u64, high_us: u64) -> u64 {
        if high_us <= low_us {
            return 0;
        }
        // hdrhistogram's range is inclusive at both ends; make it half-open.
        self.0.count_between(low_us, high_us.saturating_sub(1))
    }

    /// Empties it.
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

/// Count, min, percentiles, mean and max of a set of values (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `values` (NaNs dropped); `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        Some(Summary {
            count: v.len(),
            min: v[0],
            p50: nearest_rank(&v, 0.50),
            p90: nearest_rank(&v, 0.90),
            p99: nearest_rank(&v, 0.99),
            max: v[v.len() - 1],
            mean,
        })
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted, non-empty `sorted`.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

/// Finds timestamp gaps in one player's video (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct GapDetector {
    /// The nominal frame interval, once known.
    nominal_ms: Option<f64>,
    /// Positive deltas seen while the interval is unknown.
    learning: Vec<u32>,
    last: Option<u32>,
    /// Gaps found.
    pub gaps: u32,
    /// Largest gap, ms (0 if none).
    pub max_gap_ms: u32,
    /// Timestamps that went backwards.
    pub rewinds: u32,
}

impl GapDetector {
    /// A detector that knows the nominal frame interval (ms) from the start.
    pub fn with_interval(nominal_ms: Option<f64>) -> Self {
        GapDetector {
            nominal_ms: nominal_ms.filter(|n| *n > 0.0),
            ..Self::default()
        }
    }

    /// The nominal interval in use, if known.
    pub fn nominal_ms(&self) -> Option<f64> {
        self.nominal_ms
    }

    /// Sets the nominal interval unless one is already known (from `onMetaData`).
    pub fn suggest_interval(&mut self, nominal_ms: f64) {
        if self.nominal_ms.is_none() && nominal_ms > 0.0 && nominal_ms.is_finite() {
            self.set_nominal(nominal_ms);
        }
    }

    fn set_nominal(&mut self, nominal_ms: f64) {
        self.nominal_ms = Some(nominal_ms);
        for delta in std::mem::take(&mut self.learning) {
            self.check(delta, nominal_ms);
        }
    }

    fn check(&mut self, delta: u32, nominal_ms: f64) {
        if f64::from(delta) > GAP_FACTOR * nominal_ms {
            self.gaps += 1;
            self.max_gap_ms = self.max_gap_ms.max(delta);
        }
    }

    /// Feeds the timestamp of the next coded video frame.
    pub fn on_frame(&mut self, timestamp: u32) {
        let Some(last) = self.last.replace(timestamp) else {
            return;
        };
        let delta = timestamp.wrapping_sub(last);
        if delta == 0 {
            return;
        }
        if delta > u32::MAX / 2 {
            self.rewinds += 1;
            return;
        }
        match self.nominal_ms {
            Some(nominal) => self.check(delta, nominal),
            None => {
                self.learning.push(delta);
                if self.learning.len() >= LEARN_DELTAS {
                    let mut sorted = self.learning.clone();
                    sorted.sort_unstable();
                    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
                    self.set_nominal(f64::from(median));
                }
            }
        }
    }
}

/// How a connection ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Never attempted: the run ended first, or its stream never went live.
    NotStarted(&'static str),
    /// Setup failed.
    Failed {
        /// Static label.
        reason: &'static str,
        /// The error in words.
        message: String,
    },
    /// Set up and streaming (until the end of the run, or until `dropped`).
    Connected,
}

impl Outcome {
    /// What a connection still in setup when the run ended counts as: a failure, since the
    /// server did not set it up within the run.
    pub fn ended_during_setup() -> Outcome {
        Outcome::Failed {
            reason: "run_ended_during_setup",
            message: "the run ended before the server finished setting up the connection"
                .to_owned(),
        }
    }
}

/// One player's measurements.
#[derive(Debug, Clone)]
pub struct PlayerRecord {
    /// Index of the stream it plays.
    pub stream: usize,
    /// What happened.
    pub outcome: Outcome,
    /// TCP connect start.
    pub started_at: Option<Instant>,
    /// TCP connect + handshake + `connect` answered.
    pub connect_time: Option<Duration>,
    /// From TCP connect start to `Play.Start`.
    pub ready_time: Option<Duration>,
    /// From TCP connect start to the first coded key frame.
    pub first_keyframe: Option<Duration>,
    /// When the first key frame arrived.
    pub first_keyframe_at: Option<Instant>,
    /// When the player stopped (end of run, or dropped).
    pub ended_at: Option<Instant>,
    /// Audio/video/data payload bytes since (and including) the first key frame.
    pub media_bytes: u64,
    /// Timestamp of the first key frame, ms.
    pub first_keyframe_ts: Option<u32>,
    /// Latest audio/video timestamp since the first key frame, ms.
    pub last_media_ts: Option<u32>,
    /// Socket bytes read.
    pub bytes_in: u64,
    /// Coded video frames received (full mode only).
    pub video_frames: u64,
    /// Audio frames received (full mode only).
    pub audio_frames: u64,
    /// Coded key frames received (full mode only; 1 in lite mode once one arrived).
    pub keyframes: u64,
    /// Frame gap detection (full mode only).
    pub gaps: GapDetector,
    /// Latency samples taken.
    pub latency_samples: u64,
    /// Moves to a new connection after a server's reconnect request.
    pub reconnects: u32,
    /// Why the connection ended before the run did, if it did.
    pub dropped: Option<(&'static str, String)>,
    /// HTTP viewers: times new media took longer than `stall_after` to come (see
    /// [`PlayerRecord::on_media_arrival`]); 0 for RTMP players.
    pub stalls: u64,
    /// HTTP viewers: the time spent in those stalls.
    pub stalled: Duration,
    /// HTTP viewers: when media last arrived.
    pub last_media_at: Option<Instant>,
    /// HTTP viewers: how long without new media is a stall; `None`: not tracked.
    pub stall_after: Option<Duration>,
    /// HTTP viewers: requests sent.
    pub requests: u64,
    /// HTTP viewers: requests sent up to the first frame (setup, waiting for the stream).
    pub setup_requests: u64,
}

impl PlayerRecord {
    /// A record for a player of `stream` that has not started.
    pub fn new(stream: usize, nominal_interval_ms: Option<f64>) -> Self {
        PlayerRecord {
            stream,
            outcome: Outcome::NotStarted("run ended before this player's start time"),
            started_at: None,
            connect_time: None,
            ready_time: None,
            first_keyframe: None,
            first_keyframe_at: None,
            ended_at: None,
            media_bytes: 0,
            first_keyframe_ts: None,
            last_media_ts: None,
            bytes_in: 0,
            video_frames: 0,
            audio_frames: 0,
            keyframes: 0,
            gaps: GapDetector::with_interval(nominal_interval_ms),
            latency_samples: 0,
            reconnects: 0,
            dropped: None,
            stalls: 0,
            stalled: Duration::ZERO,
            last_media_at: None,
            stall_after: None,
            requests: 0,
            setup_requests: 0,
        }
    }

    /// An HTTP viewer got new media at `now`: a wait longer than `stall_after` since the
    /// previous media was a stall.
    pub fn on_media_arrival(&mut self, now: Instant) {
        self.close_stall(now);
        self.last_media_at = Some(now);
    }

    /// Counts the wait since the last media as a stall if it is one (at an arrival, and
    /// once when the viewer ends: a stream that never comes back is a stall too).
    pub fn close_stall(&mut self, now: Instant) {
        if let (Some(last), Some(limit)) = (self.last_media_at, self.stall_after) {
            let idle = now.saturating_duration_since(last);
            if idle > limit {
                self.stalls += 1;
                self.stalled += idle;
            }
        }
    }

    /// Notes the timestamp of an audio/video message received after the first key frame.
    pub fn on_media_timestamp(&mut self, timestamp: u32) {
        let ahead = match self.last_media_ts {
            Some(last) => {
                let d = timestamp.wrapping_sub(last);
                d != 0 && d < u32::MAX / 2
            }
            None => true,
        };
        if ahead {
            self.last_media_ts = Some(timestamp);
        }
    }

    /// The bitrate of the stream as this player received it: media bytes from the first key
    /// frame on, over the media time they cover (timestamp span plus one nominal frame
    /// interval), kbit/s. Equal to the source's bitrate unless frames were lost, however
    /// the server paced them (a GOP-cache burst at join does not inflate it). `None` with
    /// less than 0.5 s of media.
    pub fn bitrate_kbps(&self) -> Option<f64> {
        let span = self.last_media_ts?.wrapping_sub(self.first_keyframe_ts?);
        if span >= u32::MAX / 2 {
            return None;
        }
        let ms = f64::from(span) + self.gaps.nominal_ms().unwrap_or(0.0);
        (ms >= 500.0).then(|| self.media_bytes as f64 * 8.0 / ms)
    }

    /// Media bytes from the first key frame to the end over the wall-clock time that took,
    /// kbit/s: throughput, which includes any burst a server sends at join. `None` without a
    /// key frame or with less than 0.5 s of media.
    pub fn throughput_kbps(&self) -> Option<f64> {
        let from = self.first_keyframe_at?;
        let to = self.ended_at?;
        let secs = to.saturating_duration_since(from).as_secs_f64();
        (secs >= 0.5).then(|| self.media_bytes as f64 * 8.0 / secs / 1000.0)
    }
}

/// One publisher's measurements.
#[derive(Debug, Clone)]
pub struct PublisherRecord {
    /// Index of the stream it publishes.
    pub stream: usize,
    /// What happened.
    pub outcome: Outcome,
    /// TCP connect + handshake + `connect` answered.
    pub connect_time: Option<Duration>,
    /// From TCP connect start to `Publish.Start`.
    pub ready_time: Option<Duration>,
    /// When publishing started.
    pub live_at: Option<Instant>,
    /// When it stopped.
    pub ended_at: Option<Instant>,
    /// Frames sent.
    pub frames: u64,
    /// Payload bytes sent.
    pub media_bytes: u64,
    /// Timestamp of the first frame sent, ms.
    pub first_ts: Option<u64>,
    /// Timestamp of the last frame sent, ms.
    pub last_ts: u64,
    /// The source's nominal frame interval, ms.
    pub frame_interval_ms: f64,
    /// Socket bytes written.
    pub bytes_out: u64,
    /// Times an FLV source wrapped around.
    pub loops: u64,
    /// Largest delay of a frame behind its real-time schedule, ms.
    pub max_lag_ms: f64,
    /// Why the connection ended before the run did, if it did.
    pub dropped: Option<(&'static str, String)>,
}

impl PublisherRecord {
    /// A record for a publisher of `stream` that has not started; `frame_interval_ms` is its
    /// source's nominal frame interval.
    pub fn new(stream: usize, frame_interval_ms: f64) -> Self {
        PublisherRecord {
            stream,
            outcome: Outcome::NotStarted("run ended before this publisher's start time"),
            connect_time: None,
            ready_time: None,
            live_at: None,
            ended_at: None,
            frames: 0,
            media_bytes: 0,
            first_ts: None,
            last_ts: 0,
            frame_interval_ms,
            bytes_out: 0,
            loops: 0,
            max_lag_ms: 0.0,
            dropped: None,
        }
    }

    /// The bitrate of what was sent: payload bytes over the media time they cover (timestamp
    /// span plus one frame interval), kbit/s; players' bitrates are measured the same way.
    /// `None` with less than 0.5 s of media.
    pub fn sent_kbps(&self) -> Option<f64> {
        let span = self.last_ts.checked_sub(self.first_ts?)?;
        let ms = span as f64 + self.frame_interval_ms;
        (ms >= 500.0).then(|| self.media_bytes as f64 * 8.0 / ms)
    }
}

/// A core's live counters, updated on the hot path (plain `Cell`s: one thread).
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Players that finished setup and have not stopped.
    pub players_playing: Cell<u64>,
    /// Publishers that are live.
    pub publishers_live: Cell<u64>,
    /// Setups that succeeded.
    pub connects_ok: Cell<u64>,
    /// Setups that failed.
    pub connects_failed: Cell<u64>,
    /// Connections lost after setup, before the end of the run.
    pub drops: Cell<u64>,
    /// Socket bytes read by players.
    pub bytes_in: Cell<u64>,
    /// Media payload bytes received by players.
    pub media_bytes_in: Cell<u64>,
    /// Socket bytes written by publishers.
    pub bytes_out: Cell<u64>,
    /// Latency samples since the last snapshot.
    pub latency_interval: RefCell<LatencyHistogram>,
    /// Every latency sample.
    pub latency_total: RefCell<LatencyHistogram>,
}

impl CoreCounters {
    /// Adds `n` to a counter.
    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get().wrapping_add(n));
    }

    /// Subtracts one, never below zero.
    pub fn dec(cell: &Cell<u64>) {
        cell.set(cell.get().saturating_sub(1));
    }

    /// Records a latency sample.
    pub fn record_latency_us(&self, us: u64) {
        self.latency_interval.borrow_mut().record_us(us);
        self.latency_total.borrow_mut().record_us(us);
    }

    /// The cumulative counters and this interval's latencies (which are reset).
    pub fn snapshot(&self, core: usize) -> CoreSnapshot {
        let latency = {
            let mut interval = self.latency_interval.borrow_mut();
            let copy = interval.clone();
            interval.reset();
            copy
        };
        CoreSnapshot {
            core,
            players_playing: self.players_playing.get(),
            publishers_live: self.publishers_live.get(),
            connects_ok: self.connects_ok.get(),
            connects_failed: self.connects_failed.get(),
            drops: self.drops.get(),
            bytes_in: self.bytes_in.get(),
            media_bytes_in: self.media_bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            latency,
        }
    }
}

/// What a core reports every second.
#[derive(Debug, Clone)]
pub struct CoreSnapshot {
    /// Which core.
    pub core: usize,
    /// See [`CoreCounters`].
    pub players_playing: u64,
    /// See [`CoreCounters`].
    pub publishers_live: u64,
    /// See [`CoreCounters`].
    pub connects_ok: u64,
    /// See [`CoreCounters`].
    pub connects_failed: u64,
    /// See [`CoreCounters`].
    pub drops: u64,
    /// See [`CoreCounters`].
    pub bytes_in: u64,
    /// See [`CoreCounters`].
    pub media_bytes_in: u64,
    /// See [`CoreCounters`].
    pub bytes_out: u64,
    /// Latency samples of the interval.
    pub latency: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of((1..=100).map(f64::from)).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p90, 90.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        assert_eq!(s.mean, 50.5);
        let one = Summary::of([7.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Summary::of([]), None);
        assert_eq!(Summary::of([f64::NAN]), None);
        let s = Summary::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.p50, s.max), (1.0, 2.0, 3.0));
    }

    #[test]
    fn histogram_quantiles_within_precision() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for ms in 1..=1000u64 {
            h.record_us(ms * 1000);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 500.0).abs() < 1.0, "{p50}");
        assert!((p99 - 990.0).abs() < 1.0, "{p99}");
        assert!((h.max_ms().unwrap() - 1000.0).abs() < 1.0);
        assert_eq!(h.count_between_us(0, 100_500), 100);
        let mut other = LatencyHistogram::default();
        other.record_us(5_000_000);
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert!(h.max_ms().unwrap() >= 4990.0);
    }

    #[test]
    fn gaps_with_known_interval() {
        let mut g = GapDetector::with_interval(Some(40.0));
        for ts in [0, 40, 80, 120, 200, 240, 440, 480] {
            g.on_frame(ts);
        }
        // 120 -> 200 is 2x (fine), 240 -> 440 is 5x (a gap).
        assert_eq!(g.gaps, 1);
        assert_eq!(g.max_gap_ms, 200);
        assert_eq!(g.rewinds, 0);
        g.on_frame(100);
        assert_eq!(g.rewinds, 1);
        // Equal timestamps (e.g. a sequence header next to a frame) are not gaps.
        g.on_frame(100);
        assert_eq!(g.gaps, 1);
    }

    #[test]
    fn gaps_with_learned_interval_check_the_learning_window_too() {
        let mut g = GapDetector::with_interval(None);
        let mut ts = 0u32;
        g.on_frame(ts);
        for i in 0..LEARN_DELTAS {
            // 33/34 ms like 30 fps, one 500 ms hole while learning.
            ts += if i == 3 { 500 } else { 33 + (i % 2) as u32 };
            g.on_frame(ts);
        }
        let nominal = g.nominal_ms().unwrap();
        assert!((33.0..=34.0).contains(&nominal), "{nominal}");
        assert_eq!(g.gaps, 1);
        assert_eq!(g.max_gap_ms, 500);
        ts += 100;
        g.on_frame(ts);
        assert_eq!(g.gaps, 2);
        // Metadata arriving late does not override what was learned.
        g.suggest_interval(1000.0);
        assert_eq!(g.nominal_ms(), Some(nominal));
    }

    #[test]
    fn gaps_across_timestamp_wrap() {
        let mut g = GapDetector::with_interval(Some(40.0));
        g.on_frame(u32::MAX - 20);
        g.on_frame(19);
        assert_eq!((g.gaps, g.rewinds), (0, 0));
    }

    #[test]
    fn bitrates_need_a_keyframe_and_time() {
        let mut r = PlayerRecord::new(0, None);
        assert_eq!(r.throughput_kbps(), None);
        assert_eq!(r.bitrate_kbps(), None);
        let t0 = Instant::now();
        r.first_keyframe_at = Some(t0);
        r.ended_at = Some(t0 + Duration::from_secs(2));
        r.media_bytes = 250_000;
        assert_eq!(r.throughput_kbps(), Some(1000.0));
        r.ended_at = Some(t0 + Duration::from_millis(100));
        assert_eq!(r.throughput_kbps(), None);
        // By timestamps: 4 s of media (3960 ms span + one 40 ms frame) in 250 kB.
        r.gaps = GapDetector::with_interval(Some(40.0));
        r.first_keyframe_ts = Some(10_000);
        for ts in [10_000, 12_000, 11_000, 13_960] {
            r.on_media_timestamp(ts);
        }
        assert_eq!(r.last_media_ts, Some(13_960));
        assert_eq!(r.bitrate_kbps(), Some(500.0));
        r.last_media_ts = Some(10_100);
        assert_eq!(r.bitrate_kbps(), None);

        let mut p = PublisherRecord::new(0, 40.0);
        assert_eq!(p.sent_kbps(), None);
        p.first_ts = Some(0);
        p.last_ts = 3960;
        p.media_bytes = 500_000;
        assert_eq!(p.sent_kbps(), Some(1000.0));
    }
}
