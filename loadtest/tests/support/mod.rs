//! Shared helpers for the integration tests: free ports, the servers under test (Corecast and
//! nginx-rtmp) started on loopback and killed on drop, and running the harness binary.

#![allow(dead_code)] // Each test file uses a different subset.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

#[path = "../../../node/tests/support/process.rs"]
pub mod process;

/// How long one harness run may take (the longest test runs ask for well under a minute).
const LOADTEST_DEADLINE: Duration = Duration::from_secs(180);

/// Held by tests that run a server under load, so they run one at a time: on a 2-core CI
/// machine, servers and harnesses of parallel tests would only measure each other.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next test may still run.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loopback port nobody listens on right now. Taken from the kernel (bind to port 0, then
/// release), never guessed: servers that bind with SO_REUSEPORT (Corecast) would otherwise
/// share a guessed port with another test's server without an error.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on `port`.
fn wait_for_port(port: u16, limit: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    /// Its RTMP port on 127.0.0.1.
    pub port: u16,
    /// Its HTTP port on 127.0.0.1 (Corecast's `http.listen`; 0 for nginx-rtmp).
    pub http_port: u16,
    /// Its log, for failure messages.
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// The process id (for `--server-pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    /// An HTTP viewer URL template on this server's HTTP port: `path` with `{app}` and
    /// `{stream}` (e.g. `/hls/{app}/{stream}/index.m3u8`).
    pub fn viewer_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.child);
    }
}

/// The directory the test binaries and this package's binary were built into.
fn target_profile_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_corecast-loadtest"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// The Corecast binary: `$CORECAST_BIN`, else `corecast` next to this package's binary.
pub fn corecast_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CORECAST_BIN") {
        return PathBuf::from(path);
    }
    let dir = target_profile_dir();
    let path = dir.join("corecast");
    assert!(
        path.exists(),
        "the Corecast binary is not at {}: build it first with `cargo build -p corecast-node{}` \
         (or set CORECAST_BIN)",
        path.display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
    path
}

/// Starts Corecast on a free loopback port with two cores and waits for `corecast ready`.
/// A start that fails (another process took the port in between) is retried on a new port.
pub fn start_corecast() -> Server {
    start_corecast_with(|_| Vec::new())
}

/// [`start_corecast`] with more arguments: `extra` is called for every attempt with the
/// server's own temporary directory (for config and certificate files) and returns the
/// arguments to add, so that ports it picks are picked afresh on a retry.
pub fn start_corecast_with(extra: impl Fn(&Path) -> Vec<String>) -> Server {
    let mut last_log = String::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("temp dir");
        // RTMP and HTTP ports picked while both are held, so they differ; HTTP on loopback.
        let (port, http) = {
            let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            (
                a.local_addr().expect("addr").port(),
                b.local_addr().expect("addr"),
            )
        };
        let log = dir.path().join("corecast.log");
        let child = Command::new(corecast_binary())
            .args([
                "--rtmp-listen",
                &format!("127.0.0.1:{port}"),
                "--http-listen",
                &http.to_string(),
                "--cores",
                "2",
            ])
            .args(extra(dir.path()))
            .env("RUST_LOG", "warn,corecast_node::server=info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("start corecast");
        let mut server = Server {
            child,
            port,
            http_port: http.port(),
            log,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if server.log().contains("corecast ready") {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                last_log = format!("exited with {status}:\n{}", server.log());
                break;
            }
            // Generous: CI is a busy 2-core machine.
            if start.elapsed() > Duration::from_secs(30) {
                panic!("corecast did not become ready in 30 s:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("corecast did not start: {last_log}");
}

/// Where Debian puts nginx and the RTMP module.
const NGINX: &str = "/usr/sbin/nginx";
const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Starts nginx-rtmp on a free loopback port, or returns `None` when nginx or the module is
/// not installed (outside CI; under `CI` it is a failure: CI installs both).
pub fn start_nginx() -> Option<Server> {
    if !(Path::new(NGINX).exists() && Path::new(NGINX_RTMP_MODULE).exists()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have nginx and libnginx-mod-rtmp installed (apt-get install nginx \
             libnginx-mod-rtmp)"
        );
        eprintln!("skipped: {NGINX} or {NGINX_RTMP_MODULE} is not installed");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let prefix = dir.path();
    let log = prefix.join("error.log");
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {NGINX_RTMP_MODULE};\n\
             daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             error_log {log} info;\n\
             pid {pid};\n\
             events {{ worker_connections 1024; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    \
             application live {{ live on; }}\n  }}\n}}\n",
            log = log.display(),
            pid = prefix.join("nginx.pid").display(),
        ),
    )
    .expect("write nginx.conf");
    // nginx writes its temp files under the prefix; it must exist.
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(prefix)
        .stdout(Stdio::null())
        .stderr(File::create(prefix.join("stderr.log")).expect("stderr file"))
        .spawn()
        .expect("start nginx");
    let server = Server {
        child,
        port,
        http_port: 0,
        log,
        _dir: dir,
    };
    assert!(
        wait_for_port(port, Duration::from_secs(15)),
        "nginx did not listen on {port}:\n{}",
        server.log()
    );
    Some(server)
}

/// What every e2e/mixed run with `players` healthy players must show.
pub fn assert_healthy(run: &Run, server: &Server, publishers: f64, players: f64, lite: bool) {
    let r = &run.report;
    let context = || format!("{}\nserver log:\n{}", run.text(), server.log());
    assert!(run.output.status.success(), "{}", context());
    assert_eq!(r["complete"], Value::Bool(true), "{}", context());
    assert_eq!(num(r, &["connections", "failed"]), 0.0, "{}", context());
    assert_eq!(num(r, &["connections", "dropped"]), 0.0, "{}", context());
    assert_eq!(
        num(r, &["connections", "ok"]),
        publishers + players,
        "{}",
        context()
    );
    assert_eq!(num(r, &["players", "connected"]), players, "{}", context());
    assert_eq!(
        num(r, &["players", "with_keyframe"]),
        players,
        "{}",
        context()
    );
    assert_eq!(num(r, &["publishers", "connected"]), publishers);

    // Every player got the stream's bitrate (by timestamps: frames lost would lower it).
    let ratio_min = num(r, &["players", "bitrate_ratio", "min"]);
    let ratio_p50 = num(r, &["players", "bitrate_ratio", "p50"]);
    assert!(
        (0.85..=1.15).contains(&ratio_min) && (0.9..=1.1).contains(&ratio_p50),
        "bitrate ratio min {ratio_min} p50 {ratio_p50}\n{}",
        context()
    );
    let source = num(r, &["players", "source_kbps"]);
    assert!(source > 0.0);
    assert!(num(r, &["players", "throughput_kbps", "p50"]) > 0.3 * source);
    assert!(num(r, &["players", "first_keyframe_ms", "max"]) < 5000.0);
    assert!(num(r, &["players", "connect_ms", "p50"]) > 0.0);
    assert!(num(r, &["throughput", "aggregate_mbps"]) > 0.0);
    assert!(r["timeseries"].as_array().is_some_and(|t| !t.is_empty()));

    if lite {
        assert_eq!(r["players"]["gaps"], Value::Null);
        assert_eq!(r["latency"], Value::Null);
    } else {
        assert_eq!(
            num(r, &["players", "gaps", "total"]),
            0.0,
            "frame gaps\n{}",
            context()
        );
        assert_eq!(num(r, &["players", "gaps", "rewinds"]), 0.0);
        assert!(num(r, &["players", "video_frames"]) > 0.0);
        assert!(num(r, &["latency", "samples"]) > 0.0, "{}", context());
        let max = num(r, &["latency", "max_ms"]);
        assert!(max < 2000.0, "latency max {max} ms\n{}", context());
        assert!(num(r, &["latency", "p50_ms"]) <= num(r, &["latency", "p99_ms"]));
        let buckets = r["latency"]["histogram"].as_array().expect("histogram");
        let total: f64 = buckets.iter().filter_map(|b| b["count"].as_f64()).sum();
        assert_eq!(total, num(r, &["latency", "samples"]));
    }
}

/// The `server` section of a run with `--server-pid`.
pub fn assert_server_measured(run: &Run, server: &Server) {
    let r = &run.report;
    assert_eq!(num(r, &["server", "pid"]), f64::from(server.pid()));
    assert!(num(r, &["server", "cpu_secs"]) >= 0.0);
    assert!(num(r, &["server", "peak_rss_mib"]) > 0.0);
    assert!(num(r, &["server", "cpu_secs_per_gb"]) >= 0.0);
    assert_eq!(r["server"]["alive_at_end"], Value::Bool(true));
}

/// The result of one harness run.
pub struct Run {
    /// Exit status, stdout, stderr.
    pub output: Output,
    /// The `--json` report, parsed (Null when there is none).
    pub report: serde_json::Value,
    /// Wall-clock time the run took.
    pub took: Duration,
}

impl Run {
    /// stdout and stderr, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// Runs `corecast-loadtest ARGS --quiet --json TMP` and parses the report.
pub fn loadtest(args: &[&str]) -> Run {
    loadtest_with_env(args, &[])
}

/// [`loadtest`] with environment variables set for the harness.
pub fn loadtest_with_env(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let start = Instant::now();
    let output = process::output_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_corecast-loadtest"))
            .args(args)
            .envs(env.iter().copied())
            .arg("--quiet")
            .arg("--json")
            .arg(&json),
        LOADTEST_DEADLINE,
    );
    let took = start.elapsed();
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("the JSON report parses"))
        .unwrap_or(serde_json::Value::Null);
    Run {
        output,
        report,
        took,
    }
}

/// `report[path...]` as f64 (panics with the report when absent).
pub fn num(report: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = report;
    for key in path {
        v = &v[*key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {report:#}"))
}
