//! Runs the real node binary on a loopback port and watches its log.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::{connect, kill_and_reap, status_with_deadline};
use super::wait_for;

/// A running node; killed on drop.
pub struct Node {
    child: Child,
    /// The RTMP address it listens on (127.0.0.1).
    pub addr: SocketAddr,
    /// The HTTP (metrics, API) address it listens on (127.0.0.1).
    pub http: SocketAddr,
    /// Its config file (a test may rewrite it and ask for a reload).
    pub config_path: std::path::PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

/// A free loopback port (bound once and released; the node binds it with SO_REUSEPORT).
pub fn free_port() -> u16 {
    // The kernel may hand the same port to two bind(0) calls in a row once the first socket is
    // closed; a test that takes two ports (RTMP and HTTP) must not get one port twice, and the
    // node refuses listeners that share a port. So no port is handed out twice per process.
    //
    // Ports come from below the kernel's ephemeral range (`ip_local_port_range`), so that an
    // outgoing connection of another test (a client, ffmpeg) can never take a node's port as
    // its local port while that node is down between a stop and a restart. Each test process
    // starts at its own offset, and a port is taken only when it can be bound now.
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    let start = (std::process::id().wrapping_mul(2_654_435_761) >> 8) % span;
    for step in 0..span {
        let port = low + ((start + step) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// Ports for test nodes: from 10000 up to the start of the ephemeral range (32768 by default).
fn below_ephemeral_range() -> (u16, u16) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (10_000, first_ephemeral.max(20_000))
}

impl Node {
    /// Starts the node with `cores` executors and extra TOML config; waits until ready.
    ///
    /// Its RTMP and HTTP ports come from [`free_port`], which released them; should something
    /// else take one before the node binds it (an outgoing connection's local port, say), the
    /// node refuses to start and is started again on fresh ports.
    pub fn start(cores: usize, extra_config: &str, dir: &Path) -> Node {
        Node::start_wrapped(&[], cores, extra_config, dir)
    }

    /// [`Node::start`], with the node run by `wrapper` (a command and its arguments, to which
    /// the node's command line is appended: `["prlimit", "--nofile=256:256", "--"]`).
    pub fn start_wrapped(wrapper: &[&str], cores: usize, extra_config: &str, dir: &Path) -> Node {
        let mut log = Vec::new();
        for _ in 0..3 {
            match Node::try_start(wrapper, cores, extra_config, dir) {
                Ok(node) => return node,
                Err(lines) => log = lines,
            }
            let port_taken = log.iter().any(|l| {
                l.contains("cannot listen on")
                    && (l.contains("(rtmp.listen)") || l.contains("(http.listen)"))
            });
            if !port_taken {
                break;
            }
        }
        panic!("node did not report ready; its log:\n{}", log.join("\n"));
    }

    /// One start on fresh ports; the node's log when it exits or is not ready within 20 s.
    fn try_start(
        wrapper: &[&str],
        cores: usize,
        extra_config: &str,
        dir: &Path,
    ) -> Result<Node, Vec<String>> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let listen = addr.to_string();
        Node::launch(wrapper, cores, extra_config, dir, &listen, addr, http, &[])
    }

    /// One start on the given RTMP and HTTP addresses; the node's log when it exits or is
    /// not ready within 20 s.
    pub fn try_start_at(
        cores: usize,
        extra_config: &str,
        dir: &Path,
        addr: SocketAddr,
        http: SocketAddr,
    ) -> Result<Node, Vec<String>> {
        Node::try_start_listen(cores, extra_config, dir, &addr.to_string(), addr, http, &[])
    }

    /// One start with `--rtmp-listen rtmp_listen` (any form the node takes, such as `:1935`),
    /// where `addr` is one of the addresses it stands for (the tests' clients connect to it),
    /// and `args` after the others.
    pub fn try_start_listen(
        cores: usize,
        extra_config: &str,
        dir: &Path,
        rtmp_listen: &str,
        addr: SocketAddr,
        http: SocketAddr,
        args: &[&str],
    ) -> Result<Node, Vec<String>> {
        Node::launch(&[], cores, extra_config, dir, rtmp_listen, addr, http, args)
    }

    /// Starts the node through `wrapper` (such as `ip netns exec HOST`, see `support::netns`)
    /// listening on `addr` and `http`, which the wrapper's host owns; panics with its log
    /// when it does not report ready.
    pub fn start_in(
        wrapper: &[&str],
        cores: usize,
        extra_config: &str,
        dir: &Path,
        addr: SocketAddr,
        http: SocketAddr,
    ) -> Node {
        let listen = addr.to_string();
        Node::launch(wrapper, cores, extra_config, dir, &listen, addr, http, &[])
            .unwrap_or_else(|log| panic!("node did not report ready; its log:\n{}", log.join("\n")))
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        wrapper: &[&str],
        cores: usize,
        extra_config: &str,
        dir: &Path,
        rtmp_listen: &str,
        addr: SocketAddr,
        http: SocketAddr,
        args: &[&str],
    ) -> Result<Node, Vec<String>> {
        let port = addr.port();
        let config = dir.join(format!(
            "corecast-{}-{port}-{}.toml",
            addr.ip(),
            std::process::id()
        ));
        std::fs::write(&config, extra_config).expect("write config");
        let binary = env!("CARGO_BIN_EXE_corecast");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("--config")
            .arg(&config)
            .arg("--rtmp-listen")
            .arg(rtmp_listen)
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--cores")
            .arg(cores.to_string())
            .args(args)
            .env("RUST_LOG", "info,corecast_node=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corecast");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CORECAST_TEST_LOG").is_some() {
                    eprintln!("[node {port}] {line}");
                }
                sink.lock().expect("log lock").push(strip_ansi(&line));
            }
        });
        let mut node = Node {
            child,
            addr,
            http,
            config_path: config,
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if node.log().iter().any(|l| l.contains("corecast ready")) {
                return Ok(node);
            }
            if matches!(node.child.try_wait(), Ok(Some(_))) {
                // Its whole log: the reader ends with the process's stderr (bounded, in case
                // something else kept the pipe open).
                wait_for(Duration::from_secs(5), || {
                    reader.is_finished().then_some(())
                });
                return Err(node.log());
            }
            if Instant::now() > deadline {
                return Err(node.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `rtmp://127.0.0.1:PORT/app/name`.
    pub fn url(&self, path: &str) -> String {
        format!("rtmp://{}/{}", self.addr, path)
    }

    /// Waits for a log line matching `pred`; returns it.
    pub fn wait_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        wait_for(limit, || {
            self.lines
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| pred(l))
                .cloned()
        })
    }

    /// Waits until `count` lines match `pred`; returns them.
    pub fn wait_log_count(
        &self,
        limit: Duration,
        count: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Option<Vec<String>> {
        wait_for(limit, || {
            let found: Vec<String> = self
                .lines
                .lock()
                .expect("log lock")
                .iter()
                .filter(|l| pred(l))
                .cloned()
                .collect();
            (found.len() >= count).then_some(found)
        })
    }

    /// Waits for a "connection closed" line with each of `reasons`; panics naming the first
    /// that never shows.
    pub fn expect_close_reasons(&self, reasons: &[&str]) {
        for reason in reasons {
            self.wait_log(Duration::from_secs(5), |l| {
                l.contains(&format!("reason=\"{reason}\""))
                    || l.contains(&format!("reason={reason}"))
            })
            .unwrap_or_else(|| panic!("no close logged with reason {reason}"));
        }
    }

    /// All log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET`/`POST` on the HTTP endpoint; returns (status, body).
    pub fn http_request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = connect(self.http).expect("http connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("http write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("http read");
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `corecast_errors_total{kind}` summed over cores, from a fresh `/metrics`.
    pub fn errors_counted(&self, kind: &str) -> f64 {
        errors_in(&self.metrics(), kind)
    }

    /// The sum of a metric's samples (`name`, or a series with its labels) in a fresh
    /// `/metrics` (see [`metric_in`]).
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_in(&self.metrics(), name)
    }

    /// A fresh `/metrics` page, asserting it is served.
    pub fn metrics(&self) -> String {
        let (status, body) = self.http_request("GET", "/metrics", None);
        assert_eq!(status, 200, "GET /metrics");
        body
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// Sends SIGTERM (starts a drain).
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends `signal` (`-TERM`, `-HUP`) with `kill`.
    fn signal(&self, signal: &str) {
        let status = status_with_deadline(
            Command::new("kill")
                .arg(signal)
                .arg(self.child.id().to_string()),
            Duration::from_secs(10),
        );
        assert!(status.success(), "kill {signal} {} failed", self.child.id());
    }

    /// Sends SIGHUP (a config reload; with RTMPS, a certificate reload too).
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        wait_for(limit, || self.child.try_wait().ok().flatten()).map(|s| s.code().unwrap_or(-1))
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// An origin of `cores` cores with `extra` config, listening for edges' pulls: the node and
/// its pull address.
pub fn pull_origin(cores: usize, extra: &str, dir: &Path) -> (Node, String) {
    let pull = format!("127.0.0.1:{}", free_port());
    let config = format!("[cluster]\npull_listen = \"{pull}\"\n{extra}");
    (Node::start(cores, &config, dir), pull)
}

/// The `[cluster]` and `[http]` sections of an edge that pulls from `pull` and gives up fast
/// (1 s retry cap, connect timeout and negative cache), and holds a viewer's request at most
/// 4 s for a pull.
pub fn fast_edge_config(pull: &str) -> String {
    format!(
        "[cluster]\nrole = \"edge\"\nupstreams = [\"{pull}\"]\nretry_max_secs = 1\n\
         connect_timeout_secs = 1\nnegative_cache_secs = 1\n[http]\nrequest_timeout_secs = 4\n"
    )
}

/// The sum of a metric's samples (one per core, say) in a `/metrics` page: the lines of
/// `name` with any labels, or of the one series `name` spells out with its labels.
pub fn metric_in(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `corecast_errors_total{kind}` summed over cores, in a `/metrics` page.
pub fn errors_in(metrics: &str, kind: &str) -> f64 {
    let label = format!("kind=\"{kind}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("corecast_errors_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// True for the node's log line of `message` (`play`, `publish`) about `stream`.
pub fn is_line(line: &str, message: &str, stream: &str) -> bool {
    line.contains(&format!(": {message} ")) && line.contains(&format!("stream={stream}"))
}

/// The value of `key=` in a tracing text line (`core=1`).
pub fn field(line: &str, key: &str) -> Option<String> {
    let pattern = format!("{key}=");
    line.split_whitespace().find_map(|w| {
        w.strip_prefix(&pattern)
            .map(|v| v.trim_matches('"').to_owned())
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `corecast --config <config> --check` (the config written to a temporary file) within
/// 30 s; returns its exit code and stderr.
pub fn check_config(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("check.toml");
    std::fs::write(&path, config).expect("write the config");
    let out = super::process::output_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_corecast"))
            .arg("--config")
            .arg(&path)
            .arg("--check"),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err)
}

/// Asserts that `corecast --check` refuses `config` (exit 2) with a message containing every
/// one of `needles`.
pub fn check_refuses(config: &str, needles: &[&str]) {
    let (code, err) = check_config(config);
    assert_eq!(code, Some(2), "{config:?} was not refused: {err}");
    for needle in needles {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
}
