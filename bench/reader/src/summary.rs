//! What each player did, and the machine-readable summary of a run: players connected and
//! failed, bytes counted after the first key frame (HLS: from the first segment on), the
//! per-player spread and, for the HTTP modes, requests, segments and tags.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// One player's run. Times are offsets from the start of the run.
#[derive(Debug, Clone, Default)]
pub struct PlayerRecord {
    /// When its TCP connect started.
    pub started: Duration,
    /// When it was playing (`Play.Start` or first media).
    pub playing_at: Option<Duration>,
    /// When its first key frame arrived (HLS: its first segment's head): counting starts
    /// there.
    pub keyframe_at: Option<Duration>,
    /// Bytes counted after the key frame.
    pub bytes: u64,
    /// How long it counted: from the key frame to its end or the run's.
    pub counted_for: Duration,
    /// Why it ended early, if it did.
    pub error: Option<&'static str>,
    /// HTTP requests sent.
    pub requests: u64,
    /// HTTP requests sent up to and including the first segment's (HLS) or the stream's (FLV).
    pub setup_requests: u64,
    /// HLS segments answered 200.
    pub segments: u64,
    /// HLS segments answered 404 (gone from the window).
    pub segments_skipped: u64,
    /// FLV tags walked.
    pub tags: u64,
}

impl PlayerRecord {
    /// A player whose connect started at `started`.
    pub fn started(started: Duration) -> Self {
        PlayerRecord {
            started,
            ..PlayerRecord::default()
        }
    }

    /// A player that failed before it had a socket.
    pub fn failed(label: &'static str, started: Duration) -> Self {
        PlayerRecord {
            error: Some(label),
            ..PlayerRecord::started(started)
        }
    }

    /// Records the bytes counted by `at` (an offset from the start of the run).
    pub fn finish(&mut self, bytes: u64, at: Duration) {
        self.bytes = bytes;
        self.counted_for = self
            .keyframe_at
            .map_or(Duration::ZERO, |k| at.saturating_sub(k));
    }

    /// Failed: ended early, or never saw a key frame.
    pub fn failed_run(&self) -> bool {
        self.error.is_some() || self.keyframe_at.is_none()
    }

    /// Mbit/s over the time it counted.
    fn mbps(&self) -> Option<f64> {
        let secs = self.counted_for.as_secs_f64();
        (self.keyframe_at.is_some() && secs > 0.0).then(|| self.bytes as f64 * 8.0 / secs / 1e6)
    }
}

/// The run's summary, printed as one line of JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Always `"corecast-reader"`, so a script can tell this summary from the harness's.
    pub reader: &'static str,
    /// Players asked for.
    pub players: usize,
    /// Players that got to play.
    pub connected: usize,
    /// Players that saw a video key frame (HLS: got their first segment).
    pub with_keyframe: usize,
    /// Players that ended early or never saw a key frame.
    pub failed: usize,
    /// Failed players by reason.
    pub failures: BTreeMap<&'static str, usize>,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// Bytes counted after the first key frame, all players.
    pub bytes: u64,
    /// `bytes` over `duration_secs`, Mbit/s.
    pub mbps: f64,
    /// Spread over the players that saw a key frame.
    pub per_player: PerPlayer,
    /// Time from the TCP connect to the first key frame, milliseconds.
    pub ttff_ms: Percentiles,
    /// `rtmp`, `hls` or `flv`.
    pub mode: &'static str,
    /// HTTP modes only: requests, segments and tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCounts>,
}

/// What the HTTP players asked for and got, over all players.
#[derive(Debug, Default, Serialize)]
pub struct HttpCounts {
    /// Requests sent, set-up included.
    pub requests: u64,
    /// Requests after the first segment's (HLS) per player per second of counting: how
    /// often a viewer asks while it plays (the harness's `requests_per_viewer_per_sec`).
    pub requests_per_player_per_sec: f64,
    /// HLS segments answered 200.
    pub segments: u64,
    /// HLS segments answered 404.
    pub segments_skipped: u64,
    /// FLV tags walked.
    pub tags: u64,
}

/// Per-player minimum and maximum.
#[derive(Debug, Default, Serialize)]
pub struct PerPlayer {
    /// Fewest bytes counted.
    pub bytes_min: u64,
    /// Most bytes counted.
    pub bytes_max: u64,
    /// Lowest rate over the time the player counted, Mbit/s.
    pub mbps_min: f64,
    /// Highest rate, Mbit/s.
    pub mbps_max: f64,
}

/// Percentiles of a sample (0 when empty).
#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Sums up `records` of `mode` players over a run of `duration`.
    pub fn new(records: &[PlayerRecord], duration: Duration, mode: &'static str) -> Self {
        let mut failures = BTreeMap::new();
        for r in records.iter().filter(|r| r.failed_run()) {
            *failures
                .entry(r.error.unwrap_or("no_keyframe"))
                .or_insert(0) += 1;
        }
        let keyed: Vec<&PlayerRecord> =
            records.iter().filter(|r| r.keyframe_at.is_some()).collect();
        let bytes: u64 = records.iter().map(|r| r.bytes).sum();
        let rates: Vec<f64> = keyed.iter().filter_map(|r| r.mbps()).collect();
        let mut ttff: Vec<f64> = keyed
            .iter()
            .filter_map(|r| r.keyframe_at.map(|k| k.saturating_sub(r.started)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        ttff.sort_by(f64::total_cmp);
        let secs = duration.as_secs_f64();
        Summary {
            reader: "corecast-reader",
            players: records.len(),
            connected: records.iter().filter(|r| r.playing_at.is_some()).count(),
            with_keyframe: keyed.len(),
            failed: records.iter().filter(|r| r.failed_run()).count(),
            failures,
            duration_secs: secs,
            bytes,
            mbps: if secs > 0.0 {
                bytes as f64 * 8.0 / secs / 1e6
            } else {
                0.0
            },
            per_player: PerPlayer {
                bytes_min: keyed.iter().map(|r| r.bytes).min().unwrap_or(0),
                bytes_max: keyed.iter().map(|r| r.bytes).max().unwrap_or(0),
                mbps_min: rates.iter().copied().reduce(f64::min).unwrap_or(0.0),
                mbps_max: rates.iter().copied().reduce(f64::max).unwrap_or(0.0),
            },
            ttff_ms: Percentiles {
                p50: percentile(&ttff, 0.50),
                p99: percentile(&ttff, 0.99),
                max: ttff.last().copied().unwrap_or(0.0),
            },
            mode,
            http: (mode != "rtmp").then(|| HttpCounts::new(records)),
        }
    }
}

impl HttpCounts {
    fn new(records: &[PlayerRecord]) -> Self {
        let keyed = || records.iter().filter(|r| r.keyframe_at.is_some());
        let playing: f64 = keyed().map(|r| r.counted_for.as_secs_f64()).sum();
        let later: u64 = keyed()
            .map(|r| r.requests.saturating_sub(r.setup_requests))
            .sum();
        HttpCounts {
            requests: records.iter().map(|r| r.requests).sum(),
            requests_per_player_per_sec: if playing > 0.0 {
                later as f64 / playing
            } else {
                0.0
            },
            segments: records.iter().map(|r| r.segments).sum(),
            segments_skipped: records.iter().map(|r| r.segments_skipped).sum(),
            tags: records.iter().map(|r| r.tags).sum(),
        }
    }
}

/// The `q` quantile of sorted `values` (nearest rank), 0 when empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn failures_are_counted_by_reason_and_players_without_a_key_frame_fail() {
        let mut good = PlayerRecord::started(secs(0.0));
        good.playing_at = Some(secs(0.01));
        good.keyframe_at = Some(secs(0.02));
        good.finish(1_000_000, secs(8.02));
        let mut waiting = PlayerRecord::started(secs(0.1));
        waiting.playing_at = Some(secs(0.2));
        waiting.finish(0, secs(8.02));
        let refused = PlayerRecord::failed("connection_refused", secs(0.2));
        let s = Summary::new(&[good, waiting, refused], secs(8.0), "rtmp");
        assert_eq!(
            (s.players, s.connected, s.with_keyframe, s.failed),
            (3, 2, 1, 2)
        );
        assert_eq!(s.failures.get("no_keyframe"), Some(&1));
        assert_eq!(s.failures.get("connection_refused"), Some(&1));
        assert_eq!(s.bytes, 1_000_000);
        assert!(
            (s.per_player.mbps_min - 1.0).abs() < 1e-9,
            "{:?}",
            s.per_player
        );
        assert!((s.ttff_ms.p50 - 20.0).abs() < 1e-6);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["per_player"]["bytes_max"], 1_000_000);
        assert!(json.get("http").is_none(), "{json}");
    }

    #[test]
    fn http_players_count_requests_while_playing() {
        let mut viewer = PlayerRecord::started(secs(0.0));
        viewer.keyframe_at = Some(secs(1.0));
        viewer.requests = 12;
        viewer.setup_requests = 2;
        viewer.segments = 5;
        viewer.finish(500, secs(11.0));
        let s = Summary::new(&[viewer], secs(11.0), "hls");
        let http = s.http.expect("http counts");
        assert_eq!((http.requests, http.segments), (12, 5));
        assert!((http.requests_per_player_per_sec - 1.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
