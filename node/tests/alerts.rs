//! The shipped Prometheus alert rules (`grafana/alerts/`): `promtool check rules` accepts them,
//! their unit tests pass under `promtool test rules`, and every alert has a unit test.
//! (node/tests/dashboards.rs loads them into a Prometheus scraping a real node.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::process::output_with_deadline;

fn promtool() -> PathBuf {
    for candidate in ["/usr/bin/promtool", "/usr/local/bin/promtool"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("promtool is not installed: make test installs it (apt-get install prometheus)");
}

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/alerts")
}

/// Runs promtool with `args` in the alerts folder; its stdout and stderr, after asserting
/// that it succeeded.
fn promtool_ok(args: &[&str]) -> String {
    let out = output_with_deadline(
        Command::new(promtool())
            .args(args)
            .current_dir(alerts_dir()),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The values of `key: VALUE` lines (YAML, one per line) in `file`.
fn values_of(file: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(alerts_dir().join(file)).expect("read rules");
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
        .collect()
}

#[test]
fn promtool_accepts_the_rules() {
    let out = promtool_ok(&["check", "rules", "corecast.rules.yml"]);
    let alerts = values_of("corecast.rules.yml", "alert").len();
    assert!(alerts >= 6, "only {alerts} alerts");
    assert!(
        out.contains(&format!("SUCCESS: {alerts} rules found")),
        "{out}"
    );
}

#[test]
fn the_rules_unit_tests_pass_under_promtool() {
    let out = promtool_ok(&["test", "rules", "corecast.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_unit_test() {
    let alerts = values_of("corecast.rules.yml", "alert");
    let tested = values_of("corecast.rules.test.yml", "alertname");
    let untested: Vec<&String> = alerts.iter().filter(|a| !tested.contains(a)).collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test: {untested:?}"
    );
    for must in [
        "CorecastNodeDown",
        "CorecastDrainStuck",
        "CorecastSlowConsumerDisconnects",
        "CorecastPullFailures",
        "CorecastCertificateExpiresSoon",
    ] {
        assert!(alerts.iter().any(|a| a == must), "no alert {must}");
    }
}

#[test]
fn the_example_prometheus_config_loads_the_rules() {
    let out = output_with_deadline(
        Command::new(promtool())
            .args(["check", "config", "prometheus.yml"])
            .current_dir(alerts_dir().join("..")),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 rule files found"), "{text}");
}
