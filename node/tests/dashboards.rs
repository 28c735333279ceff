//! The Grafana dashboards and the Prometheus alert rules against a real Prometheus scraping a
//! real node that carries live traffic (RTMP and RTMPS on):
//! - every dashboard query, with the dashboards' variables filled in as Grafana fills them
//!   with "All" selected, returns series; a query that errors or returns none fails;
//! - "Nodes up" counts Corecast's job only, though Prometheus also scrapes another job;
//! - the alert rules load and evaluate without error, and none is pending for a healthy node;
//! - every metric the dashboards and the rules name is one the node exports.
//!
//! And without Prometheus: no panel, query or variable names a datasource uid; all use the
//! `datasource` variable, which an import fills from `__inputs`.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::client::RtmpClient;
use support::media::{make_flv, publish, wait_exit};
use support::node::Node;
use support::prometheus::{value, Prometheus};
use support::tls::{rtmps_section, self_signed, CertFiles};
use support::wait_for;

/// What `$__rate_interval` stands for (Grafana: four scrape intervals at least).
const RATE_INTERVAL: &str = "30s";
/// The datasource every panel, query and query variable must name.
const DATASOURCE_UID: &str = "${datasource}";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Every dashboard: (file, its JSON).
fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo_path("grafana/dashboards")).expect("dashboards dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text).expect("dashboard is JSON");
            found.push((path, json));
        }
    }
    assert!(found.len() >= 2, "dashboards missing");
    found
}

fn panels(dashboard: &Value) -> &Vec<Value> {
    dashboard["panels"].as_array().expect("panels")
}

fn variables(dashboard: &Value) -> &Vec<Value> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
}

// ---- Datasources ----

/// Every `datasource` value and every `uid` key in `json` that is not the datasource
/// variable (the dashboard's own top-level `uid` aside), with where it is.
fn hard_coded_datasources(json: &Value, at: &str, found: &mut Vec<String>) {
    match json {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{at}.{key}");
                if key == "datasource" {
                    let ok = child["uid"] == DATASOURCE_UID && child["type"] == "prometheus";
                    if !ok {
                        found.push(format!("{here} = {child}"));
                    }
                } else if key == "uid" && at != "$" {
                    found.push(format!("{here} = {child}"));
                } else {
                    hard_coded_datasources(child, &here, found);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                hard_coded_datasources(child, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn no_panel_names_a_datasource_uid_every_one_uses_the_datasource_variable() {
    for (path, dashboard) in dashboards() {
        let file = path.display();
        let mut found = Vec::new();
        hard_coded_datasources(&dashboard, "$", &mut found);
        assert!(
            found.is_empty(),
            "{file}: datasources not via the variable:\n{found:#?}"
        );
        for panel in panels(&dashboard) {
            let title = &panel["title"];
            assert_eq!(
                panel["datasource"]["uid"], DATASOURCE_UID,
                "{file}: {title}"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], DATASOURCE_UID,
                    "{file}: {title}"
                );
            }
        }
        let vars = variables(&dashboard);
        for var in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(var["datasource"]["uid"], DATASOURCE_UID, "{file}: {var}");
        }
        // The variable: any Prometheus datasource, preset from the import's input.
        let datasource = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(datasource["type"], "datasource", "{file}");
        assert_eq!(datasource["query"], "prometheus", "{file}");
        assert_eq!(datasource["current"]["value"], "${DS_PROMETHEUS}", "{file}");
        let inputs = dashboard["__inputs"].as_array().expect("__inputs");
        assert!(
            inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
                && i["type"] == "datasource"
                && i["pluginId"] == "prometheus"),
            "{file}: no DS_PROMETHEUS input: {inputs:?}"
        );
    }
}

// ---- Variables, as Grafana fills them ----

/// Grafana's Prometheus regex escaping of one value of a multi-value variable.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\^$*+?.()|{}[]'".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// The dashboard's variables with "All" selected: (name, value), in order.
#[derive(Default)]
struct Filled(Vec<(String, String)>);

impl Filled {
    fn expand(&self, expr: &str) -> String {
        let mut out = expr.replace("$__rate_interval", RATE_INTERVAL);
        for (name, value) in &self.0 {
            out = out
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        out
    }
}

/// `label_values(SELECTOR, LABEL)`: Grafana's function, asked of Prometheus as a query.
fn label_values(prometheus: &Prometheus, expr: &str) -> Result<Vec<String>, String> {
    let inner = expr
        .strip_prefix("label_values(")
        .and_then(|e| e.strip_suffix(')'))
        .ok_or_else(|| format!("not label_values(…): {expr}"))?;
    let (selector, label) = inner.rsplit_once(',').ok_or("label_values without label")?;
    let label = label.trim();
    let series = prometheus.query(&format!("count by ({label}) ({})", selector.trim()))?;
    let values: BTreeSet<String> = series
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
        .collect();
    Ok(values.into_iter().collect())
}

/// Fills the query variables in order (a later one may use an earlier one); a variable
/// with no values is a failure.
fn fill(prometheus: &Prometheus, dashboard: &Value, failures: &mut Vec<String>) -> Filled {
    let mut filled = Filled::default();
    for var in variables(dashboard).iter().filter(|v| v["type"] == "query") {
        let name = var["name"].as_str().expect("variable name");
        let query = filled.expand(var["query"]["query"].as_str().expect("variable query"));
        let values = match label_values(prometheus, &query) {
            Ok(values) if !values.is_empty() => values,
            Ok(_) => {
                failures.push(format!("variable {name}: no values: {query}"));
                Vec::new()
            }
            Err(e) => {
                failures.push(format!("variable {name}: {e}: {query}"));
                Vec::new()
            }
        };
        let all = match var["allValue"].as_str() {
            Some(all) => all.to_owned(),
            None => {
                let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
                format!("({})", escaped.join("|"))
            }
        };
        filled.0.push((name.to_owned(), all));
    }
    filled
}

// ---- Metric names ----

/// The metric names in a PromQL expression (or a rules file) that the node would export:
/// `corecast_*` and `process_*`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("corecast_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The names a scrape of the node shows (a histogram's `_bucket`, `_sum`, `_count` too).
fn exported_names(node: &Node) -> BTreeSet<String> {
    let (status, body) = node.http_request("GET", "/metrics", None);
    assert_eq!(status, 200, "/metrics: {body}");
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let Some((name, kind)) = rest.split_once(' ') else {
            continue;
        };
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

// ---- The live test ----

fn start_node(dir: &Path) -> Node {
    let files = CertFiles::in_dir(dir);
    files.install(&self_signed("localhost"));
    let (rtmps, _) = rtmps_section(&files, "");
    Node::start(2, &rtmps, dir)
}

fn prometheus_config(node: &Node) -> String {
    let rules = repo_path("grafana/alerts/corecast.rules.yml");
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - '{}'\n\
         scrape_configs:\n  - job_name: corecast\n    static_configs:\n      - targets: ['{}']\n\
         \x20 - job_name: prometheus\n    static_configs:\n      - targets: ['{{self}}']\n",
        rules.display(),
        node.http
    )
}

/// Waits until every rule was evaluated; the rules with an error or never evaluated.
fn rule_problems(prometheus: &Prometheus) -> (usize, Vec<String>) {
    let mut last = (0, vec!["no answer from /api/v1/rules".to_owned()]);
    wait_for(Duration::from_secs(30), || {
        let data = prometheus.api("/api/v1/rules").ok()?;
        let rules: Vec<&Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let problems: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        last = (rules.len(), problems);
        (!rules.is_empty() && last.1.is_empty()).then_some(())
    });
    last
}

#[test]
fn every_dashboard_query_returns_series_and_every_rule_evaluates_against_a_real_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start_node(dir.path());
    let prometheus = Prometheus::start(dir.path(), &prometheus_config(&node));

    // Live traffic: a publisher, a player on the node, and one bad connection.
    let media = make_flv(dir.path(), "src.flv", 20);
    let mut player = RtmpClient::connect(node.addr, "live").expect("connect");
    player.play("dash").expect("play");
    let mut publisher = publish(&media, &node.url("live/dash"));
    let mut garbage = support::process::connect(node.addr).expect("connect");
    garbage.write_all(b"not rtmp at all").expect("write");

    // Wait until rates have samples to work with (players and bytes are flowing) and both
    // jobs were scraped.
    let count = |expr: &str| prometheus.query(expr).map(|r| r.len()).unwrap_or(0);
    wait_for(Duration::from_secs(60), || {
        let _ = player.next_message(Duration::from_millis(100));
        let ready = count("sum(corecast_players) > 0") > 0
            && count("min(count_over_time(corecast_sent_bytes_total[30s])) >= 4") > 0
            && count("up == 1") == 2;
        ready.then_some(())
    })
    .expect("prometheus scraped the node with traffic, and itself");

    let mut checked = 0;
    let mut failures = Vec::new();
    let mut named = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let file = path.display().to_string();
        let mut problems = Vec::new();
        let filled = fill(&prometheus, &dashboard, &mut problems);
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                named.extend(metric_names(expr));
                let promql = filled.expand(expr);
                match prometheus.query(&promql) {
                    Ok(series) if series.is_empty() => {
                        problems.push(format!("no series: {promql}"));
                    }
                    Ok(series) if panel["title"] == "Nodes up" => {
                        // One Corecast node, though `up` has a series for each job.
                        let up: Vec<Option<f64>> = series.iter().map(value).collect();
                        if up != [Some(1.0)] {
                            problems.push(format!("Nodes up = {up:?}, not [1]: {promql}"));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!("{e}: {promql}")),
                }
                checked += 1;
            }
        }
        failures.extend(problems.into_iter().map(|p| format!("{file}: {p}")));
    }
    assert!(checked >= 20, "only {checked} queries found");
    assert!(
        failures.is_empty(),
        "dashboard queries failed:\n{}",
        failures.join("\n")
    );

    let (rules, problems) = rule_problems(&prometheus);
    assert!(rules >= 6, "only {rules} rules loaded");
    assert!(problems.is_empty(), "rules with problems:\n{problems:#?}");
    let alerts = prometheus.api("/api/v1/alerts").expect("alerts");
    assert_eq!(alerts["alerts"], serde_json::json!([]), "a healthy node");

    let rules_text = std::fs::read_to_string(repo_path("grafana/alerts/corecast.rules.yml"))
        .expect("read rules");
    for line in rules_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        named.extend(metric_names(line));
    }
    let exported = exported_names(&node);
    let unknown: Vec<&String> = named.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboards or rules name metrics the node does not export: {unknown:?}"
    );
    assert!(named.len() >= 15, "only {} metric names found", named.len());
    let _ = publisher.kill();
    let _ = wait_exit(&mut publisher, Duration::from_secs(5));
}
