//! The `corecast` command line: config checking and clear errors.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use support::client::RtmpClient;
use support::node::{free_port, Node};
use support::process::output_with_deadline;
use support::wait_for;

fn corecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corecast"))
}

/// Runs `command` to its end, bounded: a node that should have refused to start but serves
/// instead fails the test rather than hanging it.
fn run(command: &mut Command) -> Output {
    output_with_deadline(command, Duration::from_secs(30))
}

/// `N` distinct free loopback addresses, from [`free_port`]: never handed out twice in this
/// process, so no other test's node (or fresh address) gets one of them while this one runs.
fn free_addrs<const N: usize>() -> [String; N] {
    std::array::from_fn(|_| fresh_addr().to_string())
}

#[test]
fn check_accepts_the_shipped_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/corecast.toml");
    let out = run(corecast().args(["--config", config, "--check"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_names_the_bad_field_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[player]\nqueue_max_byte = 5\n",
    )
    .expect("write");
    let out = run(corecast().arg("--config").arg(&path).arg("--check"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("queue_max_byte"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = run(corecast().args(["--config", "/nonexistent/corecast.toml", "--check"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn port_in_use_fails_start_up() {
    // Without SO_REUSEPORT on this socket, the node cannot share the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let [http] = free_addrs();
    let out = run(corecast()
        .args(["--rtmp-listen", &addr.to_string(), "--cores", "1"])
        .args(["--http-listen", &http]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

/// How many times the port-ownership tests repeat what they check: a race that loses one
/// time in twenty shows here.
const ROUNDS: usize = 20;

/// A fresh loopback address (never handed out twice in this process).
fn fresh_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[test]
fn a_second_node_on_a_busy_port_fails_start_up_instead_of_sharing_it() {
    // The first node binds with SO_REUSEPORT, which would let a second one share the port.
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Node::start(1, "", dir.path());
    for round in 0..ROUNDS {
        // Alternately its RTMP and its HTTP address.
        let (rtmp, http, name) = if round % 2 == 0 {
            (first.addr, fresh_addr(), "rtmp.listen")
        } else {
            (fresh_addr(), first.http, "http.listen")
        };
        let out = run(corecast().args(["--rtmp-listen", &rtmp.to_string()]).args([
            "--http-listen",
            &http.to_string(),
            "--cores",
            "1",
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "round {round}: the second node started on a busy address: {stderr}"
        );
        assert!(
            stderr.contains("cannot listen on")
                && stderr.contains(name)
                && stderr.contains("another corecast node serves it"),
            "round {round}: {stderr}"
        );
    }
    assert!(
        support::process::connect(first.addr).is_ok(),
        "the first node still serves"
    );
}

#[test]
fn two_nodes_started_together_on_one_address_never_share_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..ROUNDS {
        let rtmp = fresh_addr();
        let start = || Node::try_start_at(1, "", dir.path(), rtmp, fresh_addr());
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(start);
            let b = s.spawn(start);
            (a.join().expect("start a"), b.join().expect("start b"))
        });
        match (a, b) {
            (Ok(_), Err(log)) | (Err(log), Ok(_)) => {
                let log = log.join("\n");
                assert!(
                    log.contains("cannot listen on") && log.contains("rtmp.listen"),
                    "round {round}: the loser's log:\n{log}"
                );
            }
            (Ok(_), Ok(_)) => panic!("round {round}: two nodes serve {rtmp}"),
            (Err(a), Err(b)) => panic!(
                "round {round}: neither node started:\n{}\n---\n{}",
                a.join("\n"),
                b.join("\n")
            ),
        }
    }
}

/// Sockets in TIME_WAIT whose local port is `port` (from /proc/net/tcp).
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local_port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local_port) && fields[3] == "06"
        })
        .count()
}

#[test]
fn a_node_restarted_right_after_sigterm_starts_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (rtmp, http) = (fresh_addr(), fresh_addr());
    let config = "[node]\nshutdown_grace_secs = 0\n";
    // Rounds whose stop left TIME_WAIT on the node's port, so that the next start had to bind
    // over it. A round can end in resets instead (a socket closed with unread input resets,
    // which leaves no TIME_WAIT); such a round still restarts, it just proves less.
    let mut over_time_wait = 0;
    for round in 0..ROUNDS {
        let mut node = Node::try_start_at(1, config, dir.path(), rtmp, http)
            .unwrap_or_else(|log| panic!("round {round}: no start:\n{}", log.join("\n")));
        let players: Vec<RtmpClient> = (0..3)
            .map(|_| RtmpClient::connect(rtmp, "live").expect("connect"))
            .collect();
        node.terminate();
        assert_eq!(
            node.wait_exit(Duration::from_secs(20)),
            Some(0),
            "round {round}: the node did not stop"
        );
        // The node closed first, so its side of each connection waits in TIME_WAIT once the
        // players close theirs.
        drop(players);
        let waiting = wait_for(Duration::from_secs(5), || {
            (time_wait_on(rtmp.port()) > 0).then_some(())
        });
        over_time_wait += usize::from(waiting.is_some());
    }
    // Most rounds must have restarted over TIME_WAIT, or the test proved nothing.
    assert!(
        over_time_wait >= ROUNDS / 2,
        "only {over_time_wait} of {ROUNDS} stops left TIME_WAIT to restart over"
    );
    // And the last stop's TIME_WAIT does not block one more start either.
    let node = Node::try_start_at(1, config, dir.path(), rtmp, http)
        .unwrap_or_else(|log| panic!("final start: no start:\n{}", log.join("\n")));
    drop(node);
}

#[test]
fn listeners_that_share_a_port_are_refused() {
    let out = run(corecast().args([
        "--rtmp-listen",
        "127.0.0.1:19443",
        // Not the same address (config validation catches that), but the same port on
        // every address. Nothing is bound: the clash is found before any bind.
        "--http-listen",
        "0.0.0.0:19443",
        "--cores",
        "1",
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("share a port"), "{stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("json.toml");
    let [port, http] = free_addrs();
    std::fs::write(&config, "[log]\nformat = \"json\"\n").expect("write");
    let mut child = corecast()
        .arg("--config")
        .arg(&config)
        .args(["--rtmp-listen", &port, "--http-listen", &http])
        .args(["--cores", "1"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    // Read on a thread so that a node that never says "ready" fails the test after a while.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("corecast ready"));
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    support::process::kill_and_reap(&mut child);
    let line = line.ok().flatten().expect("ready line within 20 s");
    let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(value["fields"]["message"], "corecast ready");
    assert_eq!(value["level"], "INFO");
}

/// True when this host can listen on IPv6 loopback.
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Starts a node with `--rtmp-listen FORM` (FORM made from a fresh port), publishes to each
/// of `reachable` (the addresses FORM must cover, on that port) and checks that nothing
/// answers on `unreachable`.
fn publish_through_listen_form(
    form: impl Fn(u16) -> String,
    reachable: &[&str],
    unreachable: &[&str],
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let node = Node::try_start_listen(1, "", dir.path(), &form(port), v4, fresh_addr(), &[])
        .unwrap_or_else(|log| panic!("{}: no start:\n{}", form(port), log.join("\n")));
    for (i, ip) in reachable.iter().enumerate() {
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
        let mut publisher = RtmpClient::connect(addr, "live")
            .unwrap_or_else(|e| panic!("{}: connect to {addr}: {e}", form(port)));
        assert_eq!(
            publisher
                .publish(&format!("form{i}"))
                .expect("publish answer"),
            "NetStream.Publish.Start",
            "{}: publish through {addr}",
            form(port)
        );
    }
    for ip in unreachable {
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
        assert!(
            support::process::connect(addr).is_err(),
            "{}: {addr} answers",
            form(port)
        );
    }
    drop(node);
}

#[test]
fn a_bare_port_listens_on_every_ipv4_and_ipv6_address() {
    let mut reachable = vec!["127.0.0.1"];
    if ipv6_loopback() {
        reachable.push("[::1]");
    }
    publish_through_listen_form(|port| port.to_string(), &reachable, &[]);
    publish_through_listen_form(|port| format!(":{port}"), &reachable, &[]);
}

#[test]
fn localhost_listens_on_both_loopback_addresses() {
    let mut reachable = vec!["127.0.0.1"];
    if ipv6_loopback() {
        reachable.push("[::1]");
    }
    publish_through_listen_form(|port| format!("localhost:{port}"), &reachable, &[]);
}

#[test]
fn an_ipv6_address_listens_on_ipv6_only() {
    if !ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    // `[::]` is IPv6 only (IPV6_V6ONLY): `:PORT` is the form for both families.
    publish_through_listen_form(|port| format!("[::]:{port}"), &["[::1]"], &["127.0.0.1"]);
    publish_through_listen_form(|port| format!("[::1]:{port}"), &["[::1]"], &["127.0.0.1"]);
    publish_through_listen_form(
        |port| format!("127.0.0.1:{port}"),
        &["127.0.0.1"],
        &["[::1]"],
    );
}

#[test]
fn listen_forms_that_name_nothing_are_refused_naming_the_flag() {
    for form in ["example.com:1935", ":99999", "127.0.0.1"] {
        let out = run(corecast().args(["--check", "--rtmp-listen", form]));
        assert_eq!(out.status.code(), Some(2), "{form}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--rtmp-listen"), "{form}: {err}");
    }
}

#[test]
fn check_refuses_a_bad_log_level_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("level.toml");
    std::fs::write(&path, "[log]\nlevel = \"verbose!!\"\n").expect("write");
    let out = run(corecast().arg("--config").arg(&path).arg("--check"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("not a log filter"),
        "{err}"
    );
    // The same from the command line and from RUST_LOG.
    let out = run(corecast().args(["--check", "--log-level", "verbose!!"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
    let out = run(corecast().arg("--check").env("RUST_LOG", "verbose!!"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUST_LOG"));
}

/// Starts `command` (a node) with stderr piped, waits (bounded) for a line containing `until`,
/// then kills it; everything it wrote to stderr by then.
fn stderr_until(command: &mut Command, until: &str) -> String {
    use std::io::Read;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start corecast");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(seen) => text = seen,
            Err(_) => break,
        }
        if text.contains(until) {
            break;
        }
    }
    support::process::kill_and_reap(&mut child);
    text
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let [port, http] = free_addrs();
    let text = stderr_until(
        corecast()
            .args([
                "--rtmp-listen",
                &port,
                "--http-listen",
                &http,
                "--cores",
                "1",
            ])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG"),
        "corecast ready",
    );
    assert!(text.contains("corecast ready"), "no ready line: {text}");
    assert!(!text.contains("\x1b["), "colour codes in a pipe: {text:?}");
}

#[test]
fn a_start_up_error_is_printed_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let [http] = free_addrs();
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("log.toml");
        std::fs::write(&config, format!("[log]\nformat = \"{format}\"\n")).expect("write");
        let out = run(corecast()
            .arg("--config")
            .arg(&config)
            .args([
                "--rtmp-listen",
                &addr,
                "--http-listen",
                &http,
                "--cores",
                "1",
            ])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG"));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches("cannot listen on").count(),
            1,
            "{format}: {err}"
        );
        assert!(
            !err.contains("\x1b["),
            "{format}: colour codes in a pipe: {err:?}"
        );
    }
    // Before logging is up (a bad config) and with errors filtered out, plainly, once.
    let out = run(corecast()
        .args([
            "--rtmp-listen",
            &addr,
            "--http-listen",
            &http,
            "--cores",
            "1",
        ])
        .args(["--log-level", "off"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot listen on").count(), 1, "{err}");
}

#[test]
fn log_level_flag_overrides_the_file_and_rust_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("quiet.toml");
    std::fs::write(&config, "[log]\nlevel = \"error\"\n").expect("write");
    let [port, http] = free_addrs();
    let node = || {
        let mut command = corecast();
        command
            .arg("--config")
            .arg(&config)
            .args([
                "--rtmp-listen",
                &port,
                "--http-listen",
                &http,
                "--cores",
                "1",
            ])
            .env("RUST_LOG", "error");
        command
    };
    let text = stderr_until(node().args(["--log-level", "info"]), "corecast ready");
    assert!(text.contains("corecast ready"), "--log-level info: {text}");
    // Without the flag the file and RUST_LOG say `error`: start-up says nothing. The node
    // is ready once its port answers.
    let mut quiet = node()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let addr: SocketAddr = port.parse().expect("addr");
    let up = wait_for(Duration::from_secs(20), || {
        support::process::connect(addr).ok()
    });
    support::process::kill_and_reap(&mut quiet);
    assert!(up.is_some(), "the quiet node never listened");
    let out = quiet.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("corecast ready"), "{err}");
}
