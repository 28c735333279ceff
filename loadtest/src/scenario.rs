//! Scenarios: what to run, from the command line or a TOML file, checked into a bounded
//! [`Scenario`] before anything connects.
//!
//! A [`ScenarioFile`] has exactly the fields of the command line (flag `--max-connections` is
//! key `max-connections`); unknown keys, and keys that do not apply to the chosen mode, are
//! errors rather than silently ignored. The command line builds the same struct, so both
//! paths share one validation ([`ScenarioFile::resolve`]).
//!
//! # Modes
//! - `play`: `players` players of the URL's stream (someone else publishes it).
//! - `publish`: `publishers` publishers; one publisher uses the URL's stream name, more use
//!   `NAME-0`, `NAME-1`, ...
//! - `e2e`: one synthetic publisher of the URL's stream and `players` players of it; latency
//!   is measured through the server from the clock the publisher embeds.
//! - `mixed`: `streams` publishers (`NAME-0`...; just `NAME` when there is one) with
//!   `players-per-stream` players each.
//!
//! # Bounds
//! Every run has a duration (default [`DEFAULT_DURATION_SECS`], at most
//! [`MAX_DURATION_SECS`]) and a connection cap (`max-connections`, default
//! [`DEFAULT_MAX_CONNECTIONS`], at most [`HARD_MAX_CONNECTIONS`]); a scenario that needs more
//! connections than its cap is refused. Connections only go to the URL's host and port,
//! resolved once at start.
//!
//! # Transports
//! The URL's scheme picks it (`rtmp://`, `rtmps://`, `rtmpt://`). `insecure` and `ca-file`
//! say how an `rtmps://` server's certificate is checked; with another scheme they are
//! errors, as is asking for both.
//!
//! # Outputs and verdict
//! `server-pid` is one process or several (`pidof corecast` prints one per running node):
//! a number, a list, or a string of numbers separated by spaces or commas; their use is
//! summed. `allow-failed` and `fail-on` say when a run fails ([`crate::gate`]); a threshold
//! that cannot have a value in the scenario (latency without a synthetic publisher, CPU
//! without a server pid) is refused here, before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use corecast_common::handshake::HandshakeKind;
use serde::{Deserialize, Serialize};

use crate::gate::{parse_fraction, Gate, Threshold};
use crate::source::SyntheticSettings;
use crate::transport::tls::TlsOptions;
use crate::url::{RtmpUrl, Scheme, UrlError};
use crate::viewer::ViewerKind;

/// Duration when none is given.
pub const DEFAULT_DURATION_SECS: u64 = 30;
/// Longest run allowed (one day).
pub const MAX_DURATION_SECS: u64 = 86_400;
/// Connection cap when none is given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Largest connection cap that may be asked for.
pub const HARD_MAX_CONNECTIONS: usize = 100_000;
/// New connections per second when no ramp is given.
pub const DEFAULT_RAMP_PER_SEC: f64 = 200.0;
/// Seconds allowed for TCP connect, and again for the RTMP setup, when none is given.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Most executors.
pub const MAX_CORES: usize = 256;

/// Why a scenario is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The TOML did not parse, or had unknown keys.
    #[error("scenario file: {0}")]
    Toml(#[from] toml::de::Error),
    /// The scenario file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The URL is unusable.
    #[error("url: {0}")]
    Url(#[from] UrlError),
    /// A key that the mode does not use.
    #[error("`{key}` does not apply to mode {mode}")]
    NotForMode {
        /// The key.
        key: &'static str,
        /// The mode.
        mode: &'static str,
    },
    /// A value out of its range.
    #[error("`{key}` {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// More connections than the cap.
    #[error(
        "the scenario needs {needed} connections, more than max-connections = {cap} \
         (raise it, up to {HARD_MAX_CONNECTIONS})"
    )]
    OverCap {
        /// Connections the scenario opens.
        needed: usize,
        /// The cap.
        cap: usize,
    },
}

/// The four kinds of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Players of a stream someone else publishes.
    Play,
    /// Publishers only.
    Publish,
    /// One publisher and its players, with latency.
    E2e,
    /// Several streams, each with a publisher and players.
    Mixed,
}

impl Mode {
    /// The mode as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Play => "play",
            Mode::Publish => "publish",
            Mode::E2e => "e2e",
            Mode::Mixed => "mixed",
        }
    }
}

/// Handshake choice as written in scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeChoice {
    /// The FP9 digest handshake (what Flash Player and ffmpeg send); falls back to plain
    /// against servers that answer plain.
    Digest,
    /// The spec's plain handshake.
    Plain,
}

/// A scenario as written: every key optional except `mode` and `url`; the command line's
/// flags with `-` kept (`max-connections`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScenarioFile {
    /// `play`, `publish`, `e2e` or `mixed`.
    pub mode: Option<Mode>,
    /// `rtmp://`, `rtmps://` or `rtmpt://` `host[:port]/app/stream`.
    pub url: Option<String>,
    /// Players (play, e2e).
    pub players: Option<usize>,
    /// Publishers (publish).
    pub publishers: Option<usize>,
    /// Streams (mixed).
    pub streams: Option<usize>,
    /// Players per stream (mixed).
    pub players_per_stream: Option<usize>,
    /// Publish this FLV file in a loop instead of the synthetic stream (publish, mixed).
    pub flv: Option<PathBuf>,
    /// Synthetic stream: total bitrate, kbit/s (default 2500).
    pub bitrate_kbps: Option<u32>,
    /// Synthetic stream: audio part of the bitrate, kbit/s; 0 = no audio (default 128).
    pub audio_kbps: Option<u32>,
    /// Synthetic stream: frames per second (default 30).
    pub fps: Option<u32>,
    /// Synthetic stream: a key frame every this many frames (default 2 s worth).
    pub gop_frames: Option<u32>,
    /// Seconds to run (default 30, at most 86400).
    pub duration: Option<u64>,
    /// Refuse scenarios that open more connections (default 20000).
    pub max_connections: Option<usize>,
    /// Executors (threads) to run connections on (default: one per CPU).
    pub cores: Option<usize>,
    /// New connections per second; 0 = all at once (default 200).
    pub ramp: Option<f64>,
    /// Players only count bytes once the first key frame is in: no gap or latency analysis.
    pub lite: Option<bool>,
    /// Players advertise Enhanced RTMP reconnect and follow a server's reconnect request to
    /// a new connection (a draining node), without a gap.
    pub reconnect: Option<bool>,
    /// What the players are: `rtmp` (default), `hls`, `hls-plain` or `flv` (HTTP viewers).
    pub viewer: Option<ViewerKind>,
    /// HTTP viewers: the playlist or `.flv` URL, with `{host}`, `{app}` and `{stream}`
    /// replaced by the RTMP URL's (default: Corecast's paths on port 8081).
    pub viewer_url: Option<String>,
    /// Write the report as JSON to this file.
    pub json: Option<PathBuf>,
    /// Write the report as a self-contained HTML page to this file.
    pub html: Option<PathBuf>,
    /// Sample these processes' CPU time and memory over the run (the server under test):
    /// `42`, `[42, 43]` or `"42 43"`.
    pub server_pid: Option<PidList>,
    /// Fraction of planned connections that may fail or be cut before the run fails:
    /// `0.05` or `"5%"` (default 0).
    pub allow_failed: Option<Fraction>,
    /// Thresholds that fail the run, e.g. `["ttff_p99>50ms", "drops>0"]`.
    pub fail_on: Option<Vec<String>>,
    /// No progress line.
    pub quiet: Option<bool>,
    /// Seconds allowed for the TCP connect and again for the RTMP setup (default 10).
    pub connect_timeout: Option<u64>,
    /// `digest` (default) or `plain`.
    pub handshake: Option<HandshakeChoice>,
    /// `rtmps://` only: accept any server certificate (self-signed test certificates).
    pub insecure: Option<bool>,
    /// `rtmps://` only: trust the certificates in this PEM file instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// One process id or several, as a scenario or the command line writes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PidList {
    /// `server-pid = 42`.
    One(u32),
    /// `server-pid = [42, 43]`.
    Many(Vec<u32>),
    /// `server-pid = "42 43"` or `"42,43"` (what `pidof` prints, joined).
    Text(String),
}

impl PidList {
    /// The pids; an empty list or a word that is not a pid is an error.
    pub fn pids(&self) -> Result<Vec<u32>, String> {
        let pids = match self {
            PidList::One(pid) => vec![*pid],
            PidList::Many(pids) => pids.clone(),
            PidList::Text(text) => text
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(|w| {
                    w.parse::<u32>()
                        .map_err(|_| format!("{w:?} is not a process id"))
                })
                .collect::<Result<_, _>>()?,
        };
        if pids.is_empty() {
            return Err(
                "names no process (is the server running? `pidof` printed nothing)".to_owned(),
            );
        }
        if pids.contains(&0) {
            return Err("0 is not a process id".to_owned());
        }
        Ok(pids)
    }
}

/// A fraction as a scenario writes it: `0.05` or `"5%"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Fraction {
    /// `0.05`.
    Number(f64),
    /// `"5%"` or `"0.05"`.
    Text(String),
}

impl Fraction {
    /// The value in 0..=1.
    pub fn value(&self) -> Result<f64, String> {
        match self {
            Fraction::Number(v) => parse_fraction(&v.to_string()),
            Fraction::Text(t) => parse_fraction(t),
        }
    }
}

/// Where media comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceSpec {
    /// Generated, with the embedded clock.
    Synthetic {
        /// Total kbit/s.
        bitrate_kbps: u32,
        /// Audio kbit/s.
        audio_kbps: u32,
        /// Frames per second.
        fps: u32,
        /// Key frame interval in frames.
        gop_frames: u32,
    },
    /// An FLV file, looped.
    Flv {
        /// The file.
        path: PathBuf,
    },
}

impl SourceSpec {
    /// The synthetic settings, if synthetic.
    pub fn synthetic(&self) -> Option<SyntheticSettings> {
        match *self {
            SourceSpec::Synthetic {
                bitrate_kbps,
                audio_kbps,
                fps,
                gop_frames,
            } => Some(SyntheticSettings {
                bitrate_kbps,
                audio_kbps,
                fps,
                gop_frames,
            }),
            SourceSpec::Flv { .. } => None,
        }
    }
}

/// Where the report goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outputs {
    /// JSON report file.
    pub json: Option<PathBuf>,
    /// HTML report file.
    pub html: Option<PathBuf>,
    /// Server processes to watch (summed); empty: none.
    pub server_pids: Vec<u32>,
    /// No progress line.
    pub quiet: bool,
}

/// A checked, bounded scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// The kind of run.
    pub mode: Mode,
    /// The URL as given (its stream name is the base of every stream name).
    #[serde(serialize_with = "serialize_display")]
    pub url: RtmpUrl,
    /// Distinct streams.
    pub streams: usize,
    /// Whether each stream gets a publisher from this harness.
    pub publish: bool,
    /// Players per stream.
    pub players_per_stream: usize,
    /// What publishers send (unused without publishers).
    pub source: SourceSpec,
    /// How long the run lasts.
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,
    /// The connection cap the scenario was checked against.
    pub max_connections: usize,
    /// Executors.
    pub cores: usize,
    /// New connections per second (0 = all at once).
    pub ramp_per_sec: f64,
    /// Lite players.
    pub lite: bool,
    /// Players follow reconnect requests.
    pub reconnect: bool,
    /// What the players are.
    pub viewer: ViewerKind,
    /// HTTP viewers: the URL template (`{host}`, `{app}`, `{stream}`).
    pub viewer_url: Option<String>,
    /// Limit for the TCP connect, and again for the RTMP setup.
    #[serde(serialize_with = "serialize_secs")]
    pub connect_timeout: Duration,
    /// The handshake offered.
    pub handshake: HandshakeChoice,
    /// How `rtmps://` certificates are checked (defaults for other schemes).
    pub tls: TlsOptions,
    /// Report destinations.
    pub outputs: Outputs,
    /// When the run fails.
    pub gate: Gate,
}

fn serialize_display<S: serde::Serializer, T: std::fmt::Display>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn serialize_secs<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(value.as_secs_f64())
}

impl Scenario {
    /// Publishers the run opens.
    pub fn publishers(&self) -> usize {
        if self.publish {
            self.streams
        } else {
            0
        }
    }

    /// Players the run opens.
    pub fn players(&self) -> usize {
        self.streams * self.players_per_stream
    }

    /// Every connection the run opens.
    pub fn connections(&self) -> usize {
        self.publishers() + self.players()
    }

    /// The URL of stream `index`: the URL's own stream when there is one stream, else
    /// `NAME-index`.
    pub fn stream_url(&self, index: usize) -> RtmpUrl {
        if self.streams == 1 {
            self.url.clone()
        } else {
            self.url
                .with_stream(&format!("{}-{index}", self.url.stream_base()))
        }
    }

    /// The HTTP viewers' URL for stream `index`: the template with `{host}`, `{app}` and
    /// `{stream}` filled in; `None` for RTMP players.
    pub fn viewer_url(&self, index: usize) -> Option<Result<url::Url, String>> {
        let template = self.viewer_url.as_ref()?;
        let stream = self.stream_url(index);
        let text = template
            .replace("{host}", &stream.host)
            .replace("{app}", &stream.app)
            .replace("{stream}", &stream.stream);
        Some(match url::Url::parse(&text) {
            Ok(url) if url.scheme() == "http" && url.host_str().is_some() => Ok(url),
            Ok(_) => Err(format!(
                "{text}: only http:// URLs with a host are supported"
            )),
            Err(e) => Err(format!("{text}: {e}")),
        })
    }

    /// The handshake kind for the client.
    pub fn handshake_kind(&self) -> HandshakeKind {
        match self.handshake {
            HandshakeChoice::Digest => HandshakeKind::Digest,
            HandshakeChoice::Plain => HandshakeKind::Plain,
        }
    }

    /// One line saying what will run, for `--check` and the report header.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            SourceSpec::Synthetic {
                bitrate_kbps,
                fps,
                gop_frames,
                ..
            } => {
                format!("synthetic {bitrate_kbps} kbit/s, {fps} fps, key frame every {gop_frames}")
            }
            SourceSpec::Flv { path } => format!("FLV {}", path.display()),
        };
        let what = match self.mode {
            Mode::Play => format!("{} players", self.players()),
            Mode::Publish => format!("{} publishers ({source})", self.publishers()),
            Mode::E2e => format!("1 publisher ({source}) + {} players", self.players()),
            Mode::Mixed => format!(
                "{} streams x (1 publisher + {} players) ({source})",
                self.streams, self.players_per_stream
            ),
        };
        format!(
            "{} {what} against {} for {} s on {} cores, ramp {}/s{}",
            self.mode.as_str(),
            self.url,
            self.duration.as_secs_f64(),
            self.cores,
            self.ramp_per_sec,
            if self.lite { ", lite players" } else { "" }
        ) + &match &self.viewer_url {
            Some(_) => format!(
                ", {} viewers of {}",
                self.viewer.as_str(),
                self.viewer_url(0)
                    .and_then(Result::ok)
                    .map_or_else(String::new, |u| u.to_string())
            ),
            None => String::new(),
        }
    }
}

impl ScenarioFile {
    /// Parses a TOML scenario.
    pub fn from_toml(text: &str) -> Result<ScenarioFile, ScenarioError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads and parses a TOML scenario file.
    pub fn load(path: &std::path::Path) -> Result<ScenarioFile, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks everything and applies the defaults. `cpus` is the default core count.
    pub fn resolve(&self, cpus: usize) -> Result<Scenario, ScenarioError> {
        let mode = self.mode.ok_or(ScenarioError::Invalid {
            key: "mode",
            message: "is required (play, publish, e2e or mixed)".to_owned(),
        })?;
        let url = RtmpUrl::parse(self.url.as_deref().ok_or(ScenarioError::Invalid {
            key: "url",
            message: "is required".to_owned(),
        })?)?;
        let m = mode.as_str();
        let refuse = |key: &'static str, present: bool| {
            if present {
                Err(ScenarioError::NotForMode { key, mode: m })
            } else {
                Ok(())
            }
        };
        let count = |key: &'static str, value: Option<usize>, default: usize| {
            let v = value.unwrap_or(default);
            if v == 0 {
                Err(ScenarioError::Invalid {
                    key,
                    message: "must be at least 1".to_owned(),
                })
            } else {
                Ok(v)
            }
        };
        let synthetic_keys = self.bitrate_kbps.is_some()
            || self.audio_kbps.is_some()
            || self.fps.is_some()
            || self.gop_frames.is_some();
        let (streams, publish, players_per_stream) = match mode {
            Mode::Play => {
                refuse("publishers", self.publishers.is_some())?;
                refuse("streams", self.streams.is_some())?;
                refuse("players-per-stream", self.players_per_stream.is_some())?;
                refuse("flv", self.flv.is_some())?;
                refuse("bitrate-kbps/audio-kbps/fps/gop-frames", synthetic_keys)?;
                (1, false, count("players", self.players, 1)?)
            }
            Mode::Publish => {
                refuse("players", self.players.is_some())?;
                refuse("streams", self.streams.is_some())?;
                refuse("players-per-stream", self.players_per_stream.is_some())?;
                (count("publishers", self.publishers, 1)?, true, 0)
            }
            Mode::E2e => {
                refuse("publishers", self.publishers.is_some())?;
                refuse("streams", self.streams.is_some())?;
                refuse("players-per-stream", self.players_per_stream.is_some())?;
                if self.flv.is_some() {
                    return Err(ScenarioError::Invalid {
                        key: "flv",
                        message: "cannot be used with e2e: latency needs the synthetic \
                                  stream's embedded clock"
                            .to_owned(),
                    });
                }
                (1, true, count("players", self.players, 1)?)
            }
            Mode::Mixed => {
                refuse("players", self.players.is_some())?;
                refuse("publishers", self.publishers.is_some())?;
                (
                    count("streams", self.streams, 1)?,
                    true,
                    count("players-per-stream", self.players_per_stream, 1)?,
                )
            }
        };
        let viewer = self.viewer.unwrap_or_default();
        if viewer != ViewerKind::Rtmp {
            if mode == Mode::Publish {
                return Err(ScenarioError::NotForMode {
                    key: "viewer",
                    mode: m,
                });
            }
            if self.reconnect == Some(true) {
                return Err(invalid("reconnect", "applies to rtmp viewers only"));
            }
        } else if self.viewer_url.is_some() {
            return Err(invalid(
                "viewer-url",
                "applies to hls, hls-plain and flv viewers only",
            ));
        }
        let viewer_url = viewer.default_template().map(|default| {
            self.viewer_url
                .clone()
                .unwrap_or_else(|| default.to_owned())
        });
        let source = match &self.flv {
            Some(path) => {
                refuse("bitrate-kbps/audio-kbps/fps/gop-frames", synthetic_keys)?;
                SourceSpec::Flv { path: path.clone() }
            }
            None => {
                let fps = self.fps.unwrap_or(30);
                if !(1..=240).contains(&fps) {
                    return Err(invalid("fps", "must be in 1..=240"));
                }
                let bitrate_kbps = self.bitrate_kbps.unwrap_or(2500);
                if !(16..=200_000).contains(&bitrate_kbps) {
                    return Err(invalid("bitrate-kbps", "must be in 16..=200000"));
                }
                let audio_kbps = self.audio_kbps.unwrap_or(128.min(bitrate_kbps / 4));
                if audio_kbps >= bitrate_kbps {
                    return Err(invalid("audio-kbps", "must be below bitrate-kbps"));
                }
                let gop_frames = self.gop_frames.unwrap_or(2 * fps);
                if gop_frames == 0 {
                    return Err(invalid("gop-frames", "must be at least 1"));
                }
                SourceSpec::Synthetic {
                    bitrate_kbps,
                    audio_kbps,
                    fps,
                    gop_frames,
                }
            }
        };
        let duration = self.duration.unwrap_or(DEFAULT_DURATION_SECS);
        if !(1..=MAX_DURATION_SECS).contains(&duration) {
            return Err(invalid(
                "duration",
                &format!("must be in 1..={MAX_DURATION_SECS} seconds"),
            ));
        }
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=HARD_MAX_CONNECTIONS).contains(&max_connections) {
            return Err(invalid(
                "max-connections",
                &format!("must be in 1..={HARD_MAX_CONNECTIONS}"),
            ));
        }
        let cores = self.cores.unwrap_or(cpus.max(1));
        if !(1..=MAX_CORES).contains(&cores) {
            return Err(invalid("cores", &format!("must be in 1..={MAX_CORES}")));
        }
        let ramp_per_sec = self.ramp.unwrap_or(DEFAULT_RAMP_PER_SEC);
        if !(ramp_per_sec.is_finite() && ramp_per_sec >= 0.0) {
            return Err(invalid("ramp", "must be a number >= 0 (0 = all at once)"));
        }
        let connect_timeout = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS);
        if !(1..=300).contains(&connect_timeout) {
            return Err(invalid("connect-timeout", "must be in 1..=300 seconds"));
        }
        let tls = TlsOptions {
            insecure: self.insecure.unwrap_or(false),
            ca_file: self.ca_file.clone(),
        };
        if url.scheme != Scheme::Rtmps {
            if self.insecure.is_some() {
                return Err(invalid("insecure", "applies to rtmps:// URLs only"));
            }
            if self.ca_file.is_some() {
                return Err(invalid("ca-file", "applies to rtmps:// URLs only"));
            }
        }
        if tls.insecure && tls.ca_file.is_some() {
            return Err(invalid(
                "insecure",
                "and ca-file contradict each other: insecure accepts any certificate",
            ));
        }
        let server_pids = match &self.server_pid {
            Some(list) => list.pids().map_err(|m| invalid("server-pid", &m))?,
            None => Vec::new(),
        };
        let allow_failed = match &self.allow_failed {
            Some(f) => f.value().map_err(|m| invalid("allow-failed", &m))?,
            None => 0.0,
        };
        let fail_on = self
            .fail_on
            .iter()
            .flatten()
            .map(|t| t.parse::<Threshold>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("fail-on", &e.to_string()))?;
        let scenario = Scenario {
            mode,
            url,
            streams,
            publish,
            players_per_stream,
            source,
            duration: Duration::from_secs(duration),
            max_connections,
            cores,
            ramp_per_sec,
            lite: self.lite.unwrap_or(false),
            reconnect: self.reconnect.unwrap_or(false),
            viewer,
            viewer_url,
            connect_timeout: Duration::from_secs(connect_timeout),
            handshake: self.handshake.unwrap_or(HandshakeChoice::Digest),
            tls,
            outputs: Outputs {
                json: self.json.clone(),
                html: self.html.clone(),
                server_pids,
                quiet: self.quiet.unwrap_or(false),
            },
            gate: Gate {
                allow_failed,
                fail_on,
            },
        };
        if let Some(Err(message)) = scenario.viewer_url(0) {
            return Err(invalid("viewer-url", &message));
        }
        for threshold in &scenario.gate.fail_on {
            threshold
                .applies(&scenario)
                .map_err(|m| invalid("fail-on", &m))?;
        }
        if scenario.connections() > max_connections {
            return Err(ScenarioError::OverCap {
                needed: scenario.connections(),
                cap: max_connections,
            });
        }
        Ok(scenario)
    }
}

fn invalid(key: &'static str, message: &str) -> ScenarioError {
    ScenarioError::Invalid {
        key,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_keys() {
        let resolve = |extra: &str| {
            ScenarioFile::from_toml(&format!(
                "mode = \"e2e\"\nurl = \"rtmp://h:1935/live/b\"\n{extra}"
            ))
            .unwrap()
            .resolve(1)
        };
        let s = resolve("viewer = \"hls\"").unwrap();
        assert_eq!(s.viewer, ViewerKind::Hls);
        let url = s.viewer_url(0).unwrap().unwrap();
        assert_eq!(url.as_str(), "http://h:8081/hls/live/b/index.m3u8");
        let s =
            resolve("viewer = \"flv\"\nviewer-url = \"http://x:9/{app}/{stream}.flv\"").unwrap();
        assert_eq!(
            s.viewer_url(0).unwrap().unwrap().as_str(),
            "http://x:9/live/b.flv"
        );
        assert!(resolve("").unwrap().viewer_url(0).is_none());
        // Wrong combinations and URLs are refused before anything connects.
        assert!(resolve("viewer-url = \"http://x/{stream}\"").is_err());
        assert!(resolve("viewer = \"hls\"\nviewer-url = \"https://x/{stream}\"").is_err());
        assert!(resolve("viewer = \"hls\"\nviewer-url = \"not a url\"").is_err());
        assert!(resolve("viewer = \"hls\"\nreconnect = true").is_err());
        let publish =
            ScenarioFile::from_toml("mode = \"publish\"\nurl = \"rtmp://h/a/b\"\nviewer = \"flv\"")
                .unwrap()
                .resolve(1);
        assert!(publish.is_err());
    }

    #[test]
    fn every_key_parses() {
        let file = ScenarioFile::from_toml(
            r#"
            mode = "mixed"
            url = "rtmp://127.0.0.1:1935/live/x"
            streams = 3
            players-per-stream = 4
            bitrate-kbps = 1000
            audio-kbps = 64
            fps = 25
            gop-frames = 25
            duration = 5
            max-connections = 100
            cores = 2
            ramp = 50.5
            lite = true
            json = "out.json"
            html = "out.html"
            server-pid = 42
            quiet = true
            connect-timeout = 3
            handshake = "plain"
            "#,
        )
        .unwrap();
        let s = file.resolve(8).unwrap();
        assert_eq!(s.mode, Mode::Mixed);
        assert_eq!((s.streams, s.players_per_stream), (3, 4));
        assert_eq!((s.publishers(), s.players(), s.connections()), (3, 12, 15));
        assert_eq!(s.cores, 2);
        assert!(s.lite);
        assert_eq!(s.outputs.server_pids, [42]);
        assert_eq!(s.handshake_kind(), HandshakeKind::Plain);
        assert_eq!(s.stream_url(2).stream, "x-2");
        assert_eq!(s.duration, Duration::from_secs(5));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = ScenarioFile::from_toml("mode = \"play\"\nurl = \"rtmp://h/a/b\"\nplayer = 3")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn keys_of_other_modes_are_refused() {
        let base = |extra: &str, mode: &str| {
            ScenarioFile::from_toml(&format!(
                "mode = \"{mode}\"\nurl = \"rtmp://h/a/b\"\n{extra}"
            ))
            .unwrap()
            .resolve(1)
        };
        assert!(matches!(
            base("streams = 2", "play"),
            Err(ScenarioError::NotForMode { key: "streams", .. })
        ));
        assert!(matches!(
            base("players = 2", "publish"),
            Err(ScenarioError::NotForMode { key: "players", .. })
        ));
        assert!(matches!(
            base("flv = \"x.flv\"", "e2e"),
            Err(ScenarioError::Invalid { key: "flv", .. })
        ));
        assert!(matches!(
            base("fps = 30", "play"),
            Err(ScenarioError::NotForMode { .. })
        ));
        assert!(matches!(
            base("flv = \"x.flv\"\nfps = 30", "publish"),
            Err(ScenarioError::NotForMode { .. })
        ));
    }

    #[test]
    fn bounds_are_enforced() {
        let resolve = |extra: &str| {
            ScenarioFile::from_toml(&format!("mode = \"e2e\"\nurl = \"rtmp://h/a/b\"\n{extra}"))
                .unwrap()
                .resolve(2)
        };
        let s = resolve("").unwrap();
        assert_eq!(s.duration, Duration::from_secs(DEFAULT_DURATION_SECS));
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.cores, 2);
        assert_eq!(s.connections(), 2);
        assert!(matches!(
            resolve("players = 100\nmax-connections = 100"),
            Err(ScenarioError::OverCap {
                needed: 101,
                cap: 100
            })
        ));
        assert!(resolve("duration = 0").is_err());
        assert!(resolve("duration = 100000").is_err());
        assert!(resolve("max-connections = 1000000").is_err());
        assert!(resolve("players = 0").is_err());
        assert!(resolve("ramp = -1.0").is_err());
        assert!(resolve("audio-kbps = 3000").is_err());
    }

    #[test]
    fn tls_keys_belong_to_rtmps() {
        let resolve = |url: &str, extra: &str| {
            ScenarioFile::from_toml(&format!("mode = \"play\"\nurl = \"{url}\"\n{extra}"))
                .unwrap()
                .resolve(1)
        };
        let s = resolve("rtmps://h/a/b", "insecure = true").unwrap();
        assert!(s.tls.insecure);
        assert_eq!(s.url.port, 443);
        let s = resolve("rtmps://h/a/b", "ca-file = \"ca.pem\"").unwrap();
        assert_eq!(
            s.tls.ca_file.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert!(!s.tls.insecure);
        assert_eq!(resolve("rtmpt://h/a/b", "").unwrap().url.port, 80);
        for (url, extra, key) in [
            ("rtmp://h/a/b", "insecure = true", "insecure"),
            ("rtmpt://h/a/b", "ca-file = \"ca.pem\"", "ca-file"),
            (
                "rtmps://h/a/b",
                "insecure = true\nca-file = \"ca.pem\"",
                "insecure",
            ),
        ] {
            match resolve(url, extra) {
                Err(ScenarioError::Invalid { key: k, .. }) => assert_eq!(k, key, "{url} {extra}"),
                other => panic!("{url} {extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn stream_names() {
        let s = ScenarioFile::from_toml(
            "mode = \"publish\"\nurl = \"rtmp://h/live/cam?k=v\"\npublishers = 2",
        )
        .unwrap()
        .resolve(1)
        .unwrap();
        assert_eq!(s.stream_url(0).stream, "cam-0?k=v");
        assert_eq!(s.stream_url(1).stream, "cam-1?k=v");
        let one = ScenarioFile::from_toml("mode = \"mixed\"\nurl = \"rtmp://h/live/cam\"")
            .unwrap()
            .resolve(1)
            .unwrap();
        assert_eq!(one.stream_url(0).stream, "cam");
    }

    #[test]
    fn server_pids_in_every_form() {
        let resolve = |extra: &str| {
            ScenarioFile::from_toml(&format!("mode = \"play\"\nurl = \"rtmp://h/a/b\"\n{extra}"))
                .unwrap()
                .resolve(1)
        };
        let pids = |extra: &str| resolve(extra).unwrap().outputs.server_pids;
        assert_eq!(pids("server-pid = 42"), [42]);
        assert_eq!(pids("server-pid = [42, 43]"), [42, 43]);
        assert_eq!(pids("server-pid = \"42 43\""), [42, 43]);
        assert_eq!(pids("server-pid = \" 42,43 , 44\\n\""), [42, 43, 44]);
        assert_eq!(pids(""), Vec::<u32>::new());
        for bad in [
            "server-pid = \"\"",
            "server-pid = \"42 x\"",
            "server-pid = []",
            "server-pid = 0",
        ] {
            match resolve(bad) {
                Err(ScenarioError::Invalid { key, .. }) => assert_eq!(key, "server-pid", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn gate_keys() {
        let resolve = |mode: &str, extra: &str| {
            ScenarioFile::from_toml(&format!(
                "mode = \"{mode}\"\nurl = \"rtmp://h/a/b\"\n{extra}"
            ))
            .unwrap()
            .resolve(1)
        };
        let s = resolve(
            "e2e",
            "allow-failed = \"5%\"\nfail-on = [\"ttff_p99>50ms\", \"e2e_p99>1s\"]",
        )
        .unwrap();
        assert!((s.gate.allow_failed - 0.05).abs() < 1e-12);
        assert_eq!(s.gate.fail_on.len(), 2);
        assert_eq!(
            resolve("play", "allow-failed = 0.5")
                .unwrap()
                .gate
                .allow_failed,
            0.5
        );
        assert_eq!(resolve("play", "").unwrap().gate, Gate::default());
        for (mode, extra, words) in [
            ("play", "allow-failed = 2", "fraction"),
            ("play", "fail-on = [\"ttff_p99>>5\"]", "not a number"),
            (
                "play",
                "lite = true\nfail-on = [\"e2e_p99>5\"]",
                "latency is measured only",
            ),
            (
                "mixed",
                "flv = \"x.flv\"\nfail-on = [\"e2e_p99>5\"]",
                "not with --flv",
            ),
            ("publish", "fail-on = [\"e2e_p99>5\"]", "no players"),
            ("publish", "fail-on = [\"ttff_p99>5\"]", "no players"),
            (
                "e2e",
                "lite = true\nfail-on = [\"e2e_p99>5\"]",
                "without --lite",
            ),
            ("e2e", "fail-on = [\"cpu_per_gb>5\"]", "needs --server-pid"),
        ] {
            let err = resolve(mode, extra).unwrap_err().to_string();
            assert!(err.contains(words), "{extra}: {err}");
        }
        assert!(resolve(
            "e2e",
            "server-pid = 1\nfail-on = [\"cpu>90%\", \"failed>0\"]"
        )
        .is_ok());
        // A play run sees the clock of this harness's synthetic publisher in another process.
        assert!(resolve("play", "fail-on = [\"e2e_p99>5\"]").is_ok());
    }
}
