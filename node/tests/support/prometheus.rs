//! A real Prometheus for tests: started on a loopback port with a scrape config, queried
//! through its HTTP API, killed on drop.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::node::free_port;
use super::process::{connect, kill_and_reap};
use super::wait_for;

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn binary() -> String {
    for candidate in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("prometheus is not installed: make test installs it (apt-get install prometheus)");
}

impl Prometheus {
    /// Starts Prometheus in `dir` with `config` (YAML; `{self}` in it is replaced by the
    /// address Prometheus listens on, so it can scrape itself); waits until it is ready.
    pub fn start(dir: &Path, config: &str) -> Prometheus {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config.replace("{self}", &addr.to_string()))
            .expect("write prometheus config");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", file.display()))
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
            (prometheus.get("/-/ready").map(|(s, _)| s) == Some(200)).then_some(())
        })
        .expect("prometheus ready (a bad config or rule file stops it)");
        prometheus
    }

    /// `GET path`: (status, body), or None when it did not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = connect(self.addr).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let status = raw.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, raw.split_once("\r\n\r\n")?.1.to_owned()))
    }

    /// A successful API answer's `data`, or what went wrong.
    pub fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let (status, body) = self.get(path).ok_or("no answer")?;
        let mut json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(json["data"].take())
    }

    /// Instant query: the result's series (each with `metric` and `value`), or the error.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// The value of an instant-query series.
pub fn value(series: &serde_json::Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
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
