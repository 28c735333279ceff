//! Whether a run passed: the connections that failed or were cut against the allowed
//! fraction (`--allow-failed`), and the thresholds of `--fail-on` (as k6's thresholds do,
//! a CI job fails on them).
//!
//! Owns the threshold language and its evaluation against a [`Report`]; `main` turns the
//! [`Verdict`] into the exit status (4: connections, 5: a threshold).
//!
//! # Threshold language
//! `METRIC OP VALUE[UNIT]`, e.g. `ttff_p99>50ms`, `failed>1%`, `drops>0`, `cpu_per_gb>=2`.
//! The run *fails* when the comparison holds. `OP` is one of `>`, `>=`, `<`, `<=`.
//! - `ttff_{p50,p90,p99,max}`: time to first key frame of players; `e2e_{...}`: end-to-end
//!   latency (players of the synthetic stream, not `--lite`); `connect_{...}`: players' TCP
//!   connect to `connect` answered. Units `ms` (default) or `s`.
//! - `failed`: connections that failed setup or never started; `drops`: connections cut
//!   after setup. A bare number counts connections, `%` is a percentage of those planned.
//! - `cpu`: the server's average CPU use, percent of one core (`%` optional);
//!   `cpu_per_gb`: its CPU seconds per delivered GB (no unit). Both need `--server-pid`.
//!
//! # Tricky parts
//! - A threshold whose metric has no value after the run (no player got a key frame, say)
//!   fails: a gate that cannot be measured must not pass silently. Thresholds that cannot
//!   have a value in a scenario at all are refused before the run ([`Threshold::applies`]).
//! - "Failed" for the exit status counts every planned connection that did not connect and
//!   stay to the end: setup failures, connections never started, and drops.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::report::Report;
use crate::scenario::{Scenario, SourceSpec};
use crate::stats::Summary;

/// Why a threshold does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// No comparison operator.
    #[error("{0:?}: expected METRIC OP VALUE, e.g. ttff_p99>50ms (OP: > >= < <=)")]
    NoOperator(String),
    /// A metric name not in the list.
    #[error(
        "{0:?}: unknown metric (known: ttff_p50 ttff_p90 ttff_p99 ttff_max, e2e_..., \
         connect_..., failed, drops, cpu, cpu_per_gb)"
    )]
    UnknownMetric(String),
    /// The value is not a number >= 0.
    #[error("{0:?}: the value is not a number >= 0")]
    BadValue(String),
    /// A unit the metric does not take.
    #[error("{text:?}: {metric} takes {expected}")]
    BadUnit {
        /// The threshold as written.
        text: String,
        /// The metric.
        metric: String,
        /// The units it takes, in words.
        expected: &'static str,
    },
}

/// Which value of a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    P50,
    P90,
    P99,
    Max,
}

impl Stat {
    fn of(self, s: &Summary) -> f64 {
        match self {
            Stat::P50 => s.p50,
            Stat::P90 => s.p90,
            Stat::P99 => s.p99,
            Stat::Max => s.max,
        }
    }
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Ttff(Stat),
    E2e(Stat),
    Connect(Stat),
    Failed,
    Drops,
    Cpu,
    CpuPerGb,
}

impl Metric {
    fn parse(name: &str) -> Option<Metric> {
        let stat = |s: &str| match s {
            "p50" => Some(Stat::P50),
            "p90" => Some(Stat::P90),
            "p99" => Some(Stat::P99),
            "max" => Some(Stat::Max),
            _ => None,
        };
        Some(match name {
            "failed" => Metric::Failed,
            "drops" => Metric::Drops,
            "cpu" => Metric::Cpu,
            "cpu_per_gb" => Metric::CpuPerGb,
            _ => match name.split_once('_')? {
                ("ttff", s) => Metric::Ttff(stat(s)?),
                ("e2e", s) => Metric::E2e(stat(s)?),
                ("connect", s) => Metric::Connect(stat(s)?),
                _ => return None,
            },
        })
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Lt => value < limit,
            Op::Le => value <= limit,
        }
    }
}

/// The limit, in the metric's unit: ms for times, percent for `cpu` and for `%` counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Limit {
    /// A plain number (ms for times, connections for counts, the value for the rest).
    Plain(f64),
    /// A percentage (of planned connections for counts).
    Percent(f64),
}

/// One `--fail-on` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    limit: Limit,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(text: &str) -> Result<Threshold, ThresholdError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = text
            .find(['<', '>'])
            .ok_or_else(|| ThresholdError::NoOperator(text.clone()))?;
        let (name, rest) = text.split_at(at);
        let (op, value) = match (rest.get(..1), rest.get(1..2)) {
            (Some(">"), Some("=")) => (Op::Ge, &rest[2..]),
            (Some("<"), Some("=")) => (Op::Le, &rest[2..]),
            (Some(">"), _) => (Op::Gt, &rest[1..]),
            _ => (Op::Lt, &rest[1..]),
        };
        let metric =
            Metric::parse(name).ok_or_else(|| ThresholdError::UnknownMetric(text.clone()))?;
        let (number, unit) = split_unit(value);
        let number: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ThresholdError::BadValue(text.clone()))?;
        let bad_unit = |expected| ThresholdError::BadUnit {
            text: text.clone(),
            metric: name.to_owned(),
            expected,
        };
        let limit = match (metric, unit) {
            (Metric::Ttff(_) | Metric::E2e(_) | Metric::Connect(_), "" | "ms") => {
                Limit::Plain(number)
            }
            (Metric::Ttff(_) | Metric::E2e(_) | Metric::Connect(_), "s") => {
                Limit::Plain(number * 1000.0)
            }
            (Metric::Ttff(_) | Metric::E2e(_) | Metric::Connect(_), _) => {
                return Err(bad_unit("a time: ms (the default) or s"))
            }
            (Metric::Failed | Metric::Drops, "") => Limit::Plain(number),
            (Metric::Failed | Metric::Drops, "%") => Limit::Percent(number),
            (Metric::Failed | Metric::Drops, _) => {
                return Err(bad_unit("a count of connections, or a percentage with %"))
            }
            (Metric::Cpu, "" | "%") => Limit::Percent(number),
            (Metric::Cpu, _) => return Err(bad_unit("percent of one core (% optional)")),
            (Metric::CpuPerGb, "") => Limit::Plain(number),
            (Metric::CpuPerGb, _) => return Err(bad_unit("no unit (CPU seconds per GB)")),
        };
        Ok(Threshold {
            text,
            metric,
            op,
            limit,
        })
    }
}

/// Splits `50ms` into `("50", "ms")`.
fn split_unit(value: &str) -> (&str, &str) {
    for unit in ["ms", "s", "%"] {
        if let Some(number) = value.strip_suffix(unit) {
            return (number, unit);
        }
    }
    (value, "")
}

impl Threshold {
    /// Whether the metric can have a value in `scenario`; `Err` says why not.
    pub fn applies(&self, scenario: &Scenario) -> Result<(), String> {
        let no = |why: &str| Err(format!("{self}: {why}"));
        match self.metric {
            Metric::Ttff(_) | Metric::Connect(_) if scenario.players() == 0 => {
                no("the scenario has no players")
            }
            Metric::E2e(_) if scenario.players() == 0 => no("the scenario has no players"),
            // A `play` run measures latency when the stream comes from this harness's
            // synthetic publisher in another process; an FLV file carries no clock.
            Metric::E2e(_)
                if scenario.lite
                    || (scenario.publish
                        && !matches!(scenario.source, SourceSpec::Synthetic { .. })) =>
            {
                no(
                    "latency is measured only from the synthetic stream's clock, by players \
                    without --lite (not with --flv)",
                )
            }
            Metric::Cpu | Metric::CpuPerGb if scenario.outputs.server_pids.is_empty() => {
                no("needs --server-pid")
            }
            _ => Ok(()),
        }
    }

    /// The metric's value in `report`, in the limit's unit.
    fn value(&self, report: &Report) -> Option<f64> {
        let c = &report.connections;
        let count = |n: u64| match self.limit {
            Limit::Percent(_) => Some(n as f64 * 100.0 / c.planned.max(1) as f64),
            Limit::Plain(_) => Some(n as f64),
        };
        match self.metric {
            Metric::Ttff(s) => report.players.first_keyframe_ms.as_ref().map(|m| s.of(m)),
            Metric::Connect(s) => report.players.connect_ms.as_ref().map(|m| s.of(m)),
            Metric::E2e(s) => report.latency.as_ref().map(|l| match s {
                Stat::P50 => l.p50_ms,
                Stat::P90 => l.p90_ms,
                Stat::P99 => l.p99_ms,
                Stat::Max => l.max_ms,
            }),
            Metric::Failed => count(c.failed + c.not_started),
            Metric::Drops => count(c.dropped),
            Metric::Cpu => report.server.as_ref().map(|s| s.cpu_pct),
            Metric::CpuPerGb => report.server.as_ref().and_then(|s| s.cpu_secs_per_gb),
        }
    }

    /// The value with its unit, for messages.
    fn show(&self, value: f64) -> String {
        match (self.metric, self.limit) {
            (Metric::Ttff(_) | Metric::E2e(_) | Metric::Connect(_), _) => format!("{value:.1} ms"),
            (_, Limit::Percent(_)) => format!("{value:.2}%"),
            (Metric::CpuPerGb, _) => format!("{value:.3}"),
            _ => format!("{value}"),
        }
    }

    fn limit(&self) -> f64 {
        match self.limit {
            Limit::Plain(v) | Limit::Percent(v) => v,
        }
    }
}

/// Parses a fraction: `5%` or `0.05`, in 0..=1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => text.parse::<f64>(),
    };
    value
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("{text:?} is not a fraction in 0..=1 or a percentage (5%)"))
}

/// How a run is judged, as the scenario says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Gate {
    /// Fraction of planned connections that may fail or be cut (0 = none).
    pub allow_failed: f64,
    /// Conditions that fail the run.
    pub fail_on: Vec<Threshold>,
}

/// One threshold after the run.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdResult {
    /// The threshold as written.
    pub threshold: String,
    /// The metric's value (in the threshold's unit); `null` when it had none.
    pub value: Option<f64>,
    /// Whether it failed the run.
    pub crossed: bool,
    /// In words.
    pub message: String,
}

/// Whether a run passed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Planned connections that did not connect and stay to the end.
    pub unsuccessful: u64,
    /// How many were allowed (`allow_failed` of the planned, rounded down).
    pub allowed: u64,
    /// False when more than allowed did not connect and stay.
    pub connections_ok: bool,
    /// Every `--fail-on` threshold.
    pub thresholds: Vec<ThresholdResult>,
    /// Connections ok and no threshold crossed.
    pub passed: bool,
}

impl Verdict {
    /// The connections' part in words.
    pub fn connections_message(&self, planned: u64) -> String {
        format!(
            "{} of {planned} connections failed, never started or were cut; {} allowed \
             (--allow-failed)",
            self.unsuccessful, self.allowed
        )
    }
}

/// Judges `report` by `gate`.
pub fn judge(report: &Report, gate: &Gate) -> Verdict {
    let c = &report.connections;
    let stayed = c.ok.saturating_sub(c.dropped);
    let unsuccessful = c.planned.saturating_sub(stayed);
    // A small epsilon: 0.1 of 30 must allow 3, not 2.9999.
    let allowed = (gate.allow_failed * c.planned as f64 + 1e-9).floor() as u64;
    let thresholds: Vec<ThresholdResult> = gate
        .fail_on
        .iter()
        .map(|t| {
            let value = t.value(report);
            let (crossed, message) = match value {
                Some(v) if t.op.holds(v, t.limit()) => {
                    (true, format!("{t} crossed: the value is {}", t.show(v)))
                }
                Some(v) => (false, format!("{t} held: the value is {}", t.show(v))),
                None => (true, format!("{t} could not be measured: no value")),
            };
            ThresholdResult {
                threshold: t.to_string(),
                value,
                crossed,
                message,
            }
        })
        .collect();
    let connections_ok = unsuccessful <= allowed;
    let passed = connections_ok && thresholds.iter().all(|t| !t.crossed);
    Verdict {
        unsuccessful,
        allowed,
        connections_ok,
        thresholds,
        passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Threshold {
        text.parse().unwrap()
    }

    #[test]
    fn thresholds_parse_with_their_units() {
        let a = t("ttff_p99>50ms");
        assert_eq!(
            (a.metric, a.op, a.limit),
            (Metric::Ttff(Stat::P99), Op::Gt, Limit::Plain(50.0))
        );
        assert_eq!(t("e2e_p50 >= 1.5s").limit, Limit::Plain(1500.0));
        assert_eq!(t("e2e_p50 >= 1.5s").op, Op::Ge);
        assert_eq!(t("e2e_max<=200").limit, Limit::Plain(200.0));
        assert_eq!(t("connect_p90<3").op, Op::Lt);
        assert_eq!(t("failed>1%").limit, Limit::Percent(1.0));
        assert_eq!(t("drops>0").limit, Limit::Plain(0.0));
        assert_eq!(t("cpu>150").limit, Limit::Percent(150.0));
        assert_eq!(t("cpu_per_gb>2.5").metric, Metric::CpuPerGb);
        assert_eq!(t(" ttff_p99 > 50ms ").to_string(), "ttff_p99>50ms");
    }

    #[test]
    fn bad_thresholds_say_what_is_wrong() {
        for (text, expected) in [
            ("ttff_p99", "expected METRIC OP VALUE"),
            ("ttff_p98>5", "unknown metric"),
            ("latency>5", "unknown metric"),
            (">5", "unknown metric"),
            ("ttff_p99>fast", "not a number"),
            ("ttff_p99>-5", "not a number"),
            ("ttff_p99>", "not a number"),
            ("ttff_p99>5%", "takes a time"),
            ("failed>5ms", "takes a count"),
            ("cpu>5s", "percent of one core"),
            ("cpu_per_gb>5%", "no unit"),
        ] {
            let err = text.parse::<Threshold>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("5%"), Ok(0.05));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert_eq!(parse_fraction("100%"), Ok(1.0));
        assert!(parse_fraction("101%").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("x").is_err());
    }

    /// A play run of 4 players: two with key frames at 10 and 90 ms, one connected then
    /// dropped, one refused; judged by the scenario keys in `gate`.
    fn judged(gate: &str) -> Verdict {
        use crate::procstat::Usage;
        use crate::runner::RunOutput;
        use crate::scenario::ScenarioFile;
        use crate::stats::{LatencyHistogram, Outcome, PlayerRecord};
        use std::time::Duration;

        let scenario = ScenarioFile::from_toml(&format!(
            "mode = \"play\"\nurl = \"rtmp://h/a/b\"\nplayers = 4\n{gate}"
        ))
        .unwrap()
        .resolve(1)
        .unwrap();
        let player = |keyframe_ms: Option<u64>| {
            let mut p = PlayerRecord::new(0, None);
            p.outcome = Outcome::Connected;
            p.first_keyframe = keyframe_ms.map(Duration::from_millis);
            p
        };
        let mut dropped = player(None);
        dropped.dropped = Some(("closed_by_server", "closed".to_owned()));
        let mut refused = PlayerRecord::new(0, None);
        refused.outcome = Outcome::Failed {
            reason: "tcp_refused",
            message: "refused".to_owned(),
        };
        let out = RunOutput {
            started_unix_ms: 0,
            elapsed: Duration::from_secs(1),
            players: vec![player(Some(10)), player(Some(90)), dropped, refused],
            publishers: Vec::new(),
            latency: LatencyHistogram::default(),
            timeseries: Vec::new(),
            bytes_in: 0,
            media_bytes_in: 0,
            server: None,
            server_error: None,
            own: Usage::default(),
            cores_reported: 1,
            cores: 1,
        };
        Report::new(&scenario, &out).verdict
    }

    #[test]
    fn a_run_is_judged_by_its_connections_and_thresholds() {
        // The refused one and the dropped one did not connect and stay.
        let v = judged("");
        assert_eq!((v.unsuccessful, v.allowed), (2, 0));
        assert!(!v.connections_ok && !v.passed);
        let v = judged("allow-failed = \"25%\"");
        assert_eq!(v.allowed, 1);
        assert!(!v.connections_ok);
        let v = judged("allow-failed = 0.5");
        assert!(v.connections_ok && v.passed, "{v:?}");

        let v = judged(
            "allow-failed = 0.5\nfail-on = [\"ttff_p99>50ms\", \"ttff_p50>50ms\", \
             \"drops>=25%\", \"failed>1\", \"connect_p50>1s\"]",
        );
        let crossed: Vec<bool> = v.thresholds.iter().map(|t| t.crossed).collect();
        // connect_p50: no player has a connect time, so it cannot be measured: it fails.
        assert_eq!(crossed, [true, false, true, false, true], "{v:?}");
        assert_eq!(v.thresholds[0].value, Some(90.0));
        assert_eq!(v.thresholds[2].value, Some(25.0));
        assert_eq!(v.thresholds[3].value, Some(1.0));
        assert_eq!(v.thresholds[4].value, None);
        assert!(v.thresholds[4].message.contains("could not be measured"));
        assert!(v.connections_ok && !v.passed);
    }

    #[test]
    fn comparisons() {
        assert!(Op::Gt.holds(2.0, 1.0) && !Op::Gt.holds(1.0, 1.0));
        assert!(Op::Ge.holds(1.0, 1.0));
        assert!(Op::Lt.holds(0.5, 1.0) && !Op::Lt.holds(1.0, 1.0));
        assert!(Op::Le.holds(1.0, 1.0));
    }
}
