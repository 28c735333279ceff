//! `corecast-loadtest`: the command line. Subcommands build a [`ScenarioFile`] (the same
//! struct a TOML scenario parses into), which is checked, run, and reported.
//!
//! Exit status: 0 the run passed; 1 it could not run; 2 a usage error (bad flag, scenario,
//! threshold, or an output file that cannot be written: all found before anything
//! connects); 3 a partial report (some core did not report in time); 4 more connections
//! failed or were cut than `--allow-failed` allows; 5 a `--fail-on` threshold was crossed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use corecast_loadtest::report::{self, Report};
use corecast_loadtest::runner::{self, NoProgress, Progress, TimePoint};
use corecast_loadtest::scenario::{
    Fraction, HandshakeChoice, Mode, PidList, Scenario, ScenarioFile, SourceSpec,
};
use corecast_loadtest::source::FlvFile;
use corecast_loadtest::viewer::ViewerKind;
use indicatif::{ProgressBar, ProgressStyle};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Drive an RTMP server with publishers and players at scale and report what they saw.
///
/// Every run is bounded by --duration and --max-connections and stops by itself.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N players of a stream that something else publishes.
    Play(PlayArgs),
    /// N publishers from an FLV file (looped, real-time) or the synthetic stream.
    Publish(PublishArgs),
    /// One synthetic publisher and N players; measures latency through the server.
    E2e(E2eArgs),
    /// S streams, each with one publisher and P players.
    Mixed(MixedArgs),
    /// Run a TOML scenario file (same keys as the flags, e.g. `max-connections = 500`).
    Run(RunArgs),
}

/// Flags every mode has.
#[derive(Debug, Args)]
struct CommonArgs {
    /// Seconds to run [default: 30; at most 86400].
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Refuse to open more connections than this [default: 20000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Executors (threads) to spread connections over [default: one per CPU].
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// New connections per second; 0 = all at once [default: 200].
    #[arg(long, value_name = "PER_SEC")]
    ramp: Option<f64>,
    /// Players only count bytes after the first key frame (no gap or latency analysis).
    #[arg(long)]
    lite: bool,
    /// Players advertise Enhanced RTMP reconnect and follow a server's reconnect request
    /// (a draining node) to a new connection without a gap.
    #[arg(long)]
    reconnect: bool,
    /// What the players are: rtmp players, or HTTP viewers of the same stream: hls (LL-HLS,
    /// blocking reloads, every part), hls-plain (plain playlist, every segment) or flv
    /// (HTTP-FLV) [default: rtmp].
    #[arg(long, value_enum)]
    viewer: Option<ViewerKind>,
    /// HTTP viewers' URL; `{host}`, `{app}` and `{stream}` are the RTMP URL's [default:
    /// http://{host}:8081/hls/{app}/{stream}/index.m3u8, .../plain.m3u8,
    /// http://{host}:8081/{app}/{stream}.flv].
    #[arg(long, value_name = "TEMPLATE")]
    viewer_url: Option<String>,
    /// Seconds for the TCP connect, and again for the RTMP setup [default: 10].
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<u64>,
    /// Handshake to offer [default: digest].
    #[arg(long, value_enum)]
    handshake: Option<HandshakeChoice>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    outputs: OutputArgs,
}

/// How an `rtmps://` server's certificate is checked; also accepted by `run`.
#[derive(Debug, Args)]
struct TlsArgs {
    /// rtmps:// only: accept any server certificate (self-signed test certificates).
    #[arg(long)]
    insecure: bool,
    /// rtmps:// only: trust the certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// Where results go; also accepted by `run` to override the file.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the report as a self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Measure the server over the run: CPU seconds, peak RSS, CPU-s per GB. Several
    /// processes are summed: `--server-pid "$(pidof corecast)"`, `1,2`, or the flag repeated.
    #[arg(long, value_name = "PIDS")]
    server_pid: Vec<String>,
    /// Fraction of connections that may fail, never start or be cut before the run fails
    /// (exit 4): `5%` or `0.05` [default: 0].
    #[arg(long, value_name = "FRACTION")]
    allow_failed: Option<String>,
    /// Fail the run (exit 5) when this holds, e.g. `ttff_p99>50ms`, `e2e_p99>1s`,
    /// `failed>1%`, `drops>0`, `cpu_per_gb>2`; may be repeated (see loadtest/README.md).
    #[arg(long, value_name = "THRESHOLD")]
    fail_on: Vec<String>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Check the scenario, print what would run, and exit.
    #[arg(long)]
    check: bool,
}

/// The synthetic stream's shape.
#[derive(Debug, Args)]
struct SyntheticArgs {
    /// Synthetic stream bitrate, video + audio [default: 2500].
    #[arg(long, value_name = "KBPS")]
    bitrate_kbps: Option<u32>,
    /// Audio part of the bitrate; 0 = no audio [default: 128].
    #[arg(long, value_name = "KBPS")]
    audio_kbps: Option<u32>,
    /// Video frames per second [default: 30].
    #[arg(long)]
    fps: Option<u32>,
    /// A key frame every this many frames [default: 2 s worth].
    #[arg(long, value_name = "FRAMES")]
    gop_frames: Option<u32>,
}

#[derive(Debug, Args)]
struct PlayArgs {
    /// rtmp://, rtmps:// or rtmpt:// host[:port]/app/stream
    url: String,
    /// Players [default: 1].
    #[arg(long, short = 'n')]
    players: Option<usize>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// rtmp[s|t]://host[:port]/app/stream (more than one publisher: stream-0, stream-1, ...)
    url: String,
    /// Publishers [default: 1].
    #[arg(long, short = 'n')]
    publishers: Option<usize>,
    /// Publish this FLV file (looped, timestamps continued) instead of the synthetic stream.
    #[arg(long, value_name = "FILE")]
    flv: Option<PathBuf>,
    #[command(flatten)]
    synthetic: SyntheticArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct E2eArgs {
    /// rtmp://, rtmps:// or rtmpt:// host[:port]/app/stream
    url: String,
    /// Players [default: 1].
    #[arg(long, short = 'n')]
    players: Option<usize>,
    #[command(flatten)]
    synthetic: SyntheticArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct MixedArgs {
    /// rtmp[s|t]://host[:port]/app/stream (streams are stream-0, stream-1, ...)
    url: String,
    /// Streams, each with one publisher [default: 1].
    #[arg(long)]
    streams: Option<usize>,
    /// Players per stream [default: 1].
    #[arg(long)]
    players_per_stream: Option<usize>,
    /// Publish this FLV file instead of the synthetic stream.
    #[arg(long, value_name = "FILE")]
    flv: Option<PathBuf>,
    #[command(flatten)]
    synthetic: SyntheticArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The TOML scenario file.
    #[arg(long, value_name = "FILE")]
    scenario: PathBuf,
    /// Override the file's URL.
    #[arg(long)]
    url: Option<String>,
    /// Override the file's duration, seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Override the file's core count.
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    outputs: OutputArgs,
}

/// Applies the common flags; returns `--check`.
fn apply_common(file: &mut ScenarioFile, common: CommonArgs) -> bool {
    file.duration = common.duration;
    file.max_connections = common.max_connections;
    file.cores = common.cores;
    file.ramp = common.ramp;
    file.lite = common.lite.then_some(true);
    file.reconnect = common.reconnect.then_some(true);
    file.viewer = common.viewer;
    file.viewer_url = common.viewer_url;
    file.connect_timeout = common.connect_timeout;
    file.handshake = common.handshake;
    apply_tls(file, common.tls);
    apply_outputs(file, common.outputs)
}

/// Applies the TLS flags over whatever the file said.
fn apply_tls(file: &mut ScenarioFile, tls: TlsArgs) {
    if tls.insecure {
        file.insecure = Some(true);
    }
    if tls.ca_file.is_some() {
        file.ca_file = tls.ca_file;
    }
}

/// Applies output flags over whatever the file said; returns `--check`.
fn apply_outputs(file: &mut ScenarioFile, outputs: OutputArgs) -> bool {
    if outputs.json.is_some() {
        file.json = outputs.json;
    }
    if outputs.html.is_some() {
        file.html = outputs.html;
    }
    if !outputs.server_pid.is_empty() {
        file.server_pid = Some(PidList::Text(outputs.server_pid.join(" ")));
    }
    if let Some(fraction) = outputs.allow_failed {
        file.allow_failed = Some(Fraction::Text(fraction));
    }
    if !outputs.fail_on.is_empty() {
        file.fail_on = Some(outputs.fail_on);
    }
    if outputs.quiet {
        file.quiet = Some(true);
    }
    outputs.check
}

fn apply_synthetic(file: &mut ScenarioFile, s: SyntheticArgs) {
    file.bitrate_kbps = s.bitrate_kbps;
    file.audio_kbps = s.audio_kbps;
    file.fps = s.fps;
    file.gop_frames = s.gop_frames;
}

/// The scenario the command line describes, and whether only to check it.
fn scenario_file(command: Command) -> anyhow::Result<(ScenarioFile, bool)> {
    let mut file = ScenarioFile::default();
    let check = match command {
        Command::Play(a) => {
            file.mode = Some(Mode::Play);
            file.url = Some(a.url);
            file.players = a.players;
            apply_common(&mut file, a.common)
        }
        Command::Publish(a) => {
            file.mode = Some(Mode::Publish);
            file.url = Some(a.url);
            file.publishers = a.publishers;
            file.flv = a.flv;
            apply_synthetic(&mut file, a.synthetic);
            apply_common(&mut file, a.common)
        }
        Command::E2e(a) => {
            file.mode = Some(Mode::E2e);
            file.url = Some(a.url);
            file.players = a.players;
            apply_synthetic(&mut file, a.synthetic);
            apply_common(&mut file, a.common)
        }
        Command::Mixed(a) => {
            file.mode = Some(Mode::Mixed);
            file.url = Some(a.url);
            file.streams = a.streams;
            file.players_per_stream = a.players_per_stream;
            file.flv = a.flv;
            apply_synthetic(&mut file, a.synthetic);
            apply_common(&mut file, a.common)
        }
        Command::Run(a) => {
            file = ScenarioFile::load(&a.scenario)
                .with_context(|| format!("loading {}", a.scenario.display()))?;
            if a.url.is_some() {
                file.url = a.url;
            }
            if a.duration.is_some() {
                file.duration = a.duration;
            }
            if a.cores.is_some() {
                file.cores = a.cores;
            }
            apply_tls(&mut file, a.tls);
            apply_outputs(&mut file, a.outputs)
        }
    };
    Ok((file, check))
}

/// The live progress line.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn tick(&mut self, p: &TimePoint, elapsed: Duration) {
        self.0.set_position(elapsed.as_secs());
        let mut msg = format!(
            "{} playing, {} publishing, {} failed, {:.1} Mbit/s",
            p.players, p.publishers, p.failed, p.mbps
        );
        if let Some(l) = p.latency_p50_ms {
            msg.push_str(&format!(", latency p50 {l:.1} ms"));
        }
        if let Some(c) = p.server_cpu_pct {
            msg.push_str(&format!(", server {c:.0}% cpu"));
        }
        self.0.set_message(msg);
    }
}

/// Raises the open-file limit to what the scenario needs (up to the hard limit).
fn raise_fd_limit(needed: u64) -> anyhow::Result<()> {
    let got = rlimit::increase_nofile_limit(needed)
        .context("raising the open-file limit (RLIMIT_NOFILE)")?;
    if got < needed {
        anyhow::bail!(
            "the scenario needs about {needed} file descriptors but the limit can be raised \
             only to {got} (raise `ulimit -n`)"
        );
    }
    Ok(())
}

/// Checks, before anything runs, that every report file can be written: a run of hours
/// must not end in "No such file or directory".
fn check_outputs(scenario: &Scenario) -> anyhow::Result<()> {
    let files: [(&str, Option<&Path>); 2] = [
        ("JSON", scenario.outputs.json.as_deref()),
        ("HTML", scenario.outputs.html.as_deref()),
    ];
    for (what, path) in files {
        if let Some(path) = path {
            report::check_writable(path)
                .with_context(|| format!("cannot write the {what} report to {}", path.display()))?;
        }
    }
    Ok(())
}

fn execute(scenario: &Scenario) -> anyhow::Result<Report> {
    raise_fd_limit(scenario.connections() as u64 + 64)?;
    let addr = scenario.url.resolve()?;
    let flv = match &scenario.source {
        SourceSpec::Flv { path } if scenario.publish => Some(Arc::new(FlvFile::load(path)?)),
        _ => None,
    };
    let output = if scenario.outputs.quiet {
        runner::run(scenario, addr, flv, &mut NoProgress)?
    } else {
        eprintln!("corecast-loadtest: starting {}", scenario.describe());
        let bar = ProgressBar::new(scenario.duration.as_secs());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let mut progress = Bar(bar);
        let output = runner::run(scenario, addr, flv, &mut progress);
        progress.0.finish_and_clear();
        output?
    };
    let report = Report::new(scenario, &output);
    if let Some(path) = &scenario.outputs.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &scenario.outputs.html {
        std::fs::write(path, report.to_html())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (file, check) = match scenario_file(cli.command) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("corecast-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scenario = match file.resolve(cpus) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corecast-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_outputs(&scenario) {
        eprintln!("corecast-loadtest: {e:#} (checked before the run: nothing ran)");
        return ExitCode::from(2);
    }
    if check {
        println!(
            "corecast-loadtest: scenario OK: {} ({} connections, cap {})",
            scenario.describe(),
            scenario.connections(),
            scenario.max_connections
        );
        let gate = &scenario.gate;
        println!(
            "corecast-loadtest: fails if more than {}% of connections fail or are cut{}",
            gate.allow_failed * 100.0,
            gate.fail_on
                .iter()
                .map(|t| format!(", or if {t}"))
                .collect::<String>()
        );
        return ExitCode::SUCCESS;
    }
    match execute(&scenario) {
        Ok(report) => {
            print!("{}", report.to_table());
            exit_status(&report)
        }
        Err(e) => {
            eprintln!("corecast-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status of a run that produced `report`, with the reasons on stderr.
fn exit_status(report: &Report) -> ExitCode {
    let verdict = &report.verdict;
    if !verdict.connections_ok {
        eprintln!(
            "corecast-loadtest: FAILED: {}",
            verdict.connections_message(report.connections.planned)
        );
    }
    for t in verdict.thresholds.iter().filter(|t| t.crossed) {
        eprintln!("corecast-loadtest: FAILED: threshold {}", t.message);
    }
    if !report.complete {
        eprintln!("corecast-loadtest: some cores did not report in time; partial report");
        ExitCode::from(3)
    } else if !verdict.connections_ok {
        ExitCode::from(4)
    } else if !verdict.passed {
        ExitCode::from(5)
    } else {
        ExitCode::SUCCESS
    }
}
