//! Every query in the Grafana dashboards is evaluated by a real Prometheus scraping a real
//! node that carries live traffic; a query that errors or returns no series fails the test.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::client::RtmpClient;
use support::media::{make_flv, publish, wait_exit};
use support::node::{free_port, Node};
use support::wait_for;

struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        support::process::kill_and_reap(&mut self.child);
    }
}

fn prometheus_binary() -> String {
    for candidate in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("prometheus is not installed: make test installs it (apt-get install prometheus)");
}

fn start_prometheus(dir: &Path, target: SocketAddr) -> Prometheus {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: corecast\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus config");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let prometheus = Prometheus { child, addr };
    wait_for(Duration::from_secs(30), || {
        (get(addr, "/-/ready").map(|(s, _)| s) == Some(200)).then_some(())
    })
    .expect("prometheus ready");
    prometheus
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = support::process::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw.split_once("\r\n\r\n")?.1.to_owned()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Instant query; Ok(number of series) or Err(what went wrong).
fn query(prometheus: SocketAddr, expr: &str) -> Result<usize, String> {
    let (status, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encode(expr)),
    )
    .ok_or("no answer")?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if status != 200 || json["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Grafana's variables and functions in PromQL terms.
fn to_promql(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "30s")
        .replace("$instance", ".*")
        .replace("$job", ".*");
    // label_values(METRIC, LABEL) is a Grafana function: ask for the label's values instead.
    if let Some(inner) = expr
        .strip_prefix("label_values(")
        .and_then(|e| e.strip_suffix(')'))
    {
        if let Some((metric, label)) = inner.rsplit_once(',') {
            return format!("count by ({}) ({})", label.trim(), metric.trim());
        }
    }
    expr
}

fn dashboard_queries(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read dashboard");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in json["templating"]["list"].as_array().expect("templating") {
        queries.push(
            variable["query"]["query"]
                .as_str()
                .expect("query")
                .to_owned(),
        );
    }
    queries
}

#[test]
fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    let prometheus = start_prometheus(dir.path(), node.http);

    // Live traffic: a publisher, a player on the node, and one bad connection.
    let media = make_flv(dir.path(), "src.flv", 20);
    let mut player = RtmpClient::connect(node.addr, "live").expect("connect");
    player.play("dash").expect("play");
    let mut publisher = publish(&media, &node.url("live/dash"));
    let mut garbage = support::process::connect(node.addr).expect("connect");
    garbage.write_all(b"not rtmp at all").expect("write");

    // Wait until rates have samples to work with (players and bytes are flowing).
    wait_for(Duration::from_secs(60), || {
        let _ = player.next_message(Duration::from_millis(100));
        let n = query(
            prometheus.addr,
            "count_over_time(corecast_sent_bytes_total[30s])",
        )
        .ok()?;
        let playing = query(prometheus.addr, "sum(corecast_players) > 0").ok()?;
        let enough = query(
            prometheus.addr,
            "min(count_over_time(corecast_sent_bytes_total[30s])) >= 4",
        )
        .ok()?;
        (n > 0 && playing > 0 && enough > 0).then_some(())
    })
    .expect("prometheus scraped the node with traffic");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/dashboards");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&root).expect("dashboards dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        for expr in dashboard_queries(&path) {
            let promql = to_promql(&expr);
            match query(prometheus.addr, &promql) {
                Ok(0) => failures.push(format!("{}: no series: {expr}", path.display())),
                Ok(_) => {}
                Err(e) => failures.push(format!("{}: {e}: {expr}", path.display())),
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} queries found");
    assert!(
        failures.is_empty(),
        "dashboard queries failed:\n{}",
        failures.join("\n")
    );
    let _ = publisher.kill();
    let _ = wait_exit(&mut publisher, Duration::from_secs(5));
}
