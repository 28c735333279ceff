//! The reader against real servers on loopback: every player of the floor and of a Corecast
//! node (fed by the harness's synthetic publisher) sees a key frame and counts bytes, over RTMP,
//! plain HLS and HTTP-FLV, and every plain HLS viewer of nginx-rtmp's MPEG-TS HLS does too; a closed port, a server that is not RTMP or HTTP, or an HTTP error
//! makes it exit non-zero at once. Every process has a deadline and is killed when its test
//! ends.
//!
//! The floor, Corecast and the harness are other packages' binaries: they are taken from the
//! same target directory (`make test` builds every binary first), or from `CORECAST_FLOOR_BIN`,
//! `CORECAST_BIN` and `CORECAST_LOADTEST_BIN`.

#[path = "../../floor/tests/support/floor.rs"]
mod floor;
#[path = "../../../node/tests/support/process.rs"]
#[allow(dead_code)] // This test uses a few of the helpers.
mod process;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use process::Reaped;

/// Another package's binary from this target directory, or from `env`.
fn binary(name: &str, env: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_BIN_EXE_corecast-reader")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p {package}` (or set {env})",
        path.display()
    );
    path
}

/// Runs the reader to its end, at most `limit`; returns its exit status and summary.
fn read(url: &str, args: &[&str], limit: Duration) -> (ExitStatus, Value, Duration) {
    let started = Instant::now();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_corecast-reader"))
            .arg(url)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start corecast-reader"),
    );
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "corecast-reader ran past {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.0.stdout.take() {
        stdout.read_to_string(&mut out).expect("read stdout");
    }
    let summary = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (status, summary, started.elapsed())
}

/// Starts the floor (one thread, 1000 kbit/s) on a kernel-assigned loopback port.
fn start_floor() -> (floor::Floor, SocketAddr) {
    let binary = binary("corecast-floor", "CORECAST_FLOOR_BIN", "corecast-floor");
    floor::start(&binary, 1, 1000, &[])
}

/// Asserts that all `players` saw a key frame and counted at least `min_bytes` each.
fn assert_all_counted(summary: &Value, players: u64, min_bytes: u64) {
    assert_eq!(summary["players"], players, "{summary}");
    assert_eq!(summary["connected"], players, "{summary}");
    assert_eq!(summary["with_keyframe"], players, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let least = summary["per_player"]["bytes_min"].as_u64().unwrap_or(0);
    assert!(
        least >= min_bytes,
        "a player counted only {least} bytes: {summary}"
    );
    assert!(
        summary["bytes"].as_u64().unwrap_or(0) >= players * least,
        "{summary}"
    );
}

#[test]
fn every_player_of_the_floor_sees_a_key_frame_and_counts_bytes() {
    let (_floor, addr) = start_floor();
    let url = format!("rtmp://{addr}/live/floor");
    let (status, summary, _) = read(
        &url,
        &["-n", "20", "--duration-secs", "4", "--threads", "2"],
        Duration::from_secs(30),
    );
    // 1064 kbit/s is about 133 KB a second; every player counts over most of 4 s.
    assert_all_counted(&summary, 20, 200_000);
    let mbps = summary["per_player"]["mbps_min"].as_f64().unwrap_or(0.0);
    assert!(
        mbps > 0.8,
        "the slowest player got {mbps} Mbit/s: {summary}"
    );
    assert!(status.success(), "{status}: {summary}");
}

/// Starts a debug Corecast node on free loopback ports; waits for it to be ready. Returns it
/// with its RTMP port and HTTP address.
fn start_corecast(dir: &std::path::Path) -> (Reaped, u16, SocketAddr) {
    let binary = binary("corecast", "CORECAST_BIN", "corecast-node");
    for _ in 0..3 {
        let (port, http) = {
            let a = TcpListener::bind("127.0.0.1:0").expect("bind");
            let b = TcpListener::bind("127.0.0.1:0").expect("bind");
            (
                a.local_addr().expect("addr").port(),
                b.local_addr().expect("addr"),
            )
        };
        let log = dir.join(format!("corecast-{port}.log"));
        let mut node = Reaped(
            Command::new(&binary)
                .args(["--rtmp-listen", &format!("127.0.0.1:{port}")])
                .args(["--http-listen", &http.to_string(), "--cores", "2"])
                .env("RUST_LOG", "warn,corecast_node::server=info")
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("log file"))
                .spawn()
                .expect("start corecast"),
        );
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("corecast ready") {
                return (node, port, http);
            }
            if node.0.try_wait().expect("wait").is_some() {
                break; // lost its port to a race: try new ones
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "corecast not ready in 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("corecast did not start in three tries");
}

/// The harness publishing a 1000 kbit/s stream (a key frame a second) to `url` for 30 s.
fn publish(url: &str) -> Reaped {
    let harness = binary(
        "corecast-loadtest",
        "CORECAST_LOADTEST_BIN",
        "corecast-loadtest",
    );
    Reaped(
        Command::new(harness)
            .args(["publish", url, "--duration", "30", "--quiet"])
            .args([
                "--bitrate-kbps",
                "1000",
                "--audio-kbps",
                "64",
                "--gop-frames",
                "30",
                "--cores",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the publisher"),
    )
}

#[test]
fn every_player_of_a_corecast_node_sees_a_key_frame_and_counts_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, port, _) = start_corecast(dir.path());
    let url = format!("rtmp://127.0.0.1:{port}/live/reader");
    let _publisher = publish(&url);
    // Players that arrive before the publisher wait for it; the GOP cache then gives each a
    // key frame at once.
    let (status, summary, _) = read(
        &url,
        &["-n", "10", "--duration-secs", "6", "--threads", "2"],
        Duration::from_secs(40),
    );
    assert_all_counted(&summary, 10, 100_000);
    assert_eq!(summary["mode"], "rtmp", "{summary}");
    assert!(status.success(), "{status}: {summary}");
}

#[test]
fn every_plain_hls_viewer_of_a_corecast_node_gets_segments_and_counts_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, port, http) = start_corecast(dir.path());
    let _publisher = publish(&format!("rtmp://127.0.0.1:{port}/live/reader"));
    // The playlist appears after the first key frame: the viewers retry its 404 meanwhile.
    let (status, summary, _) = read(
        &format!("http://{http}/hls/live/reader/plain.m3u8"),
        &["-n", "6", "--duration-secs", "8", "--threads", "2"],
        Duration::from_secs(40),
    );
    // One-second segments of about 133 KB: every viewer gets a few within 8 s.
    assert_all_counted(&summary, 6, 100_000);
    assert_eq!(summary["mode"], "hls", "{summary}");
    let segments = summary["http"]["segments"].as_u64().unwrap_or(0);
    assert!(segments >= 6 * 2, "{segments} segments: {summary}");
    let requests = summary["http"]["requests"].as_u64().unwrap_or(0);
    assert!(requests > segments, "playlists and segments: {summary}");
    assert!(status.success(), "{status}: {summary}");
}

#[test]
fn every_http_flv_viewer_of_a_corecast_node_sees_a_key_frame_and_counts_tags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, port, http) = start_corecast(dir.path());
    let _publisher = publish(&format!("rtmp://127.0.0.1:{port}/live/reader"));
    // Wait for the stream to exist: a viewer of a stream not yet published gets a 404.
    let started = Instant::now();
    loop {
        let probe = std::net::TcpStream::connect(http).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"GET /live/reader.flv HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut head = [0u8; 12];
            c.read_exact(&mut head)?;
            Ok(head)
        });
        if probe.is_ok_and(|head| head.ends_with(b"200")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no FLV stream in 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, summary, _) = read(
        &format!("http://{http}/live/reader.flv"),
        &["-n", "6", "--duration-secs", "5", "--threads", "2"],
        Duration::from_secs(40),
    );
    assert_all_counted(&summary, 6, 100_000);
    assert_eq!(summary["mode"], "flv", "{summary}");
    let tags = summary["http"]["tags"].as_u64().unwrap_or(0);
    // 30 video and about 43 audio tags a second, per viewer.
    assert!(tags >= 6 * 100, "{tags} tags: {summary}");
    assert!(status.success(), "{status}: {summary}");
}

/// Serves every connection `answer`, then holds it open, for as long as the test runs.
fn serve(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new(); // kept open: the reader must hang up by itself
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(answer);
            held.push(conn);
        }
    });
    addr
}

#[test]
fn http_errors_and_bad_bodies_fail_every_viewer_quickly() {
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            "x.flv",
            "http_status",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>",
            "x.flv",
            "flv_bad_header",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>",
            "x.m3u8",
            "hls_bad_playlist",
        ),
        (b"\x03RTMP and not HTTP\r\n\r\n", "x.m3u8", "http_bad_head"),
    ];
    for (answer, path, label) in cases {
        let addr = serve(answer);
        let (status, summary, took) = read(
            &format!("http://{addr}/live/{path}"),
            &["-n", "3", "--duration-secs", "60"],
            Duration::from_secs(20),
        );
        assert!(!status.success(), "{summary}");
        assert_eq!(summary["failures"][label], 3, "{label}: {summary}");
        assert!(took < Duration::from_secs(10), "took {took:?} to give up");
    }
}

#[test]
fn a_playlist_that_never_appears_times_out_within_the_set_up_limit() {
    let addr = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let (status, summary, took) = read(
        &format!("http://{addr}/hls/live/x/plain.m3u8"),
        &[
            "-n",
            "2",
            "--duration-secs",
            "60",
            "--setup-timeout-secs",
            "1",
        ],
        Duration::from_secs(20),
    );
    // The server answers the first 404 and then holds the connection: no second answer.
    assert!(!status.success(), "{summary}");
    assert_eq!(summary["failures"]["timeout_playlist"], 2, "{summary}");
    assert!(took < Duration::from_secs(10), "took {took:?} to give up");
}

#[test]
fn a_closed_port_fails_every_player_at_once_and_exits_non_zero() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (status, summary, took) = read(
        &format!("rtmp://127.0.0.1:{port}/live/none"),
        &["-n", "5", "--duration-secs", "60"],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "{summary}");
    assert_eq!(summary["failed"], 5, "{summary}");
    assert_eq!(summary["failures"]["connection_refused"], 5, "{summary}");
    assert!(took < Duration::from_secs(10), "took {took:?} to give up");
}

#[test]
fn a_server_that_is_not_rtmp_fails_every_player_quickly() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Answers every connection with bytes that are no RTMP version, for as long as the test.
    std::thread::spawn(move || {
        let mut held = Vec::new(); // kept open: the reader must hang up by itself
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(&[0x42; 3073]);
            held.push(conn);
        }
    });
    let (status, summary, took) = read(
        &format!("rtmp://{addr}/live/x"),
        &["-n", "3", "--duration-secs", "60"],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "{summary}");
    assert_eq!(summary["failures"]["handshake_error"], 3, "{summary}");
    assert!(took < Duration::from_secs(10), "took {took:?} to give up");
}

#[test]
fn a_server_that_never_answers_times_out_within_the_set_up_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (status, summary, took) = read(
        &format!("rtmp://{addr}/live/x"),
        &[
            "-n",
            "2",
            "--duration-secs",
            "60",
            "--setup-timeout-secs",
            "1",
        ],
        Duration::from_secs(20),
    );
    drop(listener);
    assert!(!status.success(), "{summary}");
    assert_eq!(summary["failures"]["timeout_handshake"], 2, "{summary}");
    assert!(took < Duration::from_secs(10), "took {took:?} to give up");
}

/// Where Debian puts nginx and the RTMP module.
const NGINX: &str = "/usr/sbin/nginx";
const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// nginx-rtmp with HLS (1 s MPEG-TS fragments, served by nginx's HTTP) on free loopback ports:
/// returns it with its RTMP port and HTTP address, or `None` when nginx or the module is not
/// installed (outside CI; under `CI` that is a failure, as in loadtest/tests/support).
fn start_nginx_hls(dir: &std::path::Path) -> Option<(Reaped, u16, SocketAddr)> {
    let installed = [NGINX, NGINX_RTMP_MODULE]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have nginx and libnginx-mod-rtmp installed"
        );
        eprintln!("skipped: {NGINX} or {NGINX_RTMP_MODULE} is not installed");
        return None;
    }
    let (rtmp, http) = {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind");
        (
            a.local_addr().expect("addr").port(),
            b.local_addr().expect("addr"),
        )
    };
    std::fs::create_dir_all(dir.join("hls")).expect("hls dir");
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "load_module {NGINX_RTMP_MODULE};\ndaemon off;\nmaster_process off;\n\
             error_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{rtmp}; application live {{ live on; hls on; \
             hls_path {d}/hls; hls_fragment 1s; hls_playlist_length 4s; }} }} }}\n\
             http {{ access_log off; types {{ application/vnd.apple.mpegurl m3u8; \
             video/mp2t ts; }} server {{ listen {http}; location /hls/ {{ root {d}; }} }} }}\n"
        ),
    )
    .expect("write nginx.conf");
    let nginx = Reaped(
        Command::new(NGINX)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("stderr.log")).expect("stderr file"))
            .spawn()
            .expect("start nginx"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", rtmp)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "nginx did not listen on {rtmp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((nginx, rtmp, http))
}

#[test]
fn every_plain_hls_viewer_of_nginx_rtmp_gets_ts_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some((_nginx, rtmp, http)) = start_nginx_hls(dir.path()) else {
        return;
    };
    let _publisher = publish(&format!("rtmp://127.0.0.1:{rtmp}/live/reader"));
    // nginx-rtmp writes the playlist after its first fragment: the viewers retry its 404.
    let (status, summary, _) = read(
        &format!("http://{http}/hls/reader.m3u8"),
        &["-n", "4", "--duration-secs", "8", "--threads", "2"],
        Duration::from_secs(40),
    );
    assert_all_counted(&summary, 4, 100_000);
    let segments = summary["http"]["segments"].as_u64().unwrap_or(0);
    assert!(segments >= 4 * 2, "{segments} segments: {summary}");
    assert!(status.success(), "{status}: {summary}");
}
