//! The `corecast` command line: config checking and clear errors.

use std::process::Command;

fn corecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corecast"))
}

/// `N` distinct free loopback addresses (held open together while picked, so no two are the
/// same port).
fn free_addrs<const N: usize>() -> [String; N] {
    let held: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("addr").to_string())
}

#[test]
fn check_accepts_the_shipped_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/corecast.toml");
    let out = corecast()
        .args(["--config", config, "--check"])
        .output()
        .expect("run");
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
    let out = corecast()
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("queue_max_byte"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = corecast()
        .args(["--config", "/nonexistent/corecast.toml", "--check"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn port_in_use_fails_start_up() {
    // Without SO_REUSEPORT on this socket, the node cannot share the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let [http] = free_addrs();
    let out = corecast()
        .args(["--rtmp-listen", &addr.to_string(), "--cores", "1"])
        .args(["--http-listen", &http])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn a_second_node_on_a_busy_port_fails_start_up_instead_of_sharing_it() {
    // The first node binds with SO_REUSEPORT, which would let a second one share the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--rtmp-listen",
        &listen,
        "--cores",
        "1",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let mut first = corecast()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the first node");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first node never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = corecast().args(args).output().expect("run the second node");
    let _ = first.kill();
    let _ = first.wait();
    assert!(
        !out.status.success(),
        "the second node started on a busy port"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("rtmp.listen"),
        "{stderr}"
    );
}

#[test]
fn listeners_that_share_a_port_are_refused() {
    let out = corecast()
        .args([
            "--rtmp-listen",
            "127.0.0.1:19443",
            // Not the same address (config validation catches that), but the same port on
            // every address. Nothing is bound: the clash is found before any bind.
            "--http-listen",
            "0.0.0.0:19443",
            "--cores",
            "1",
        ])
        .output()
        .expect("run");
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
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("corecast ready"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("ready line");
    let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(value["fields"]["message"], "corecast ready");
    assert_eq!(value["level"], "INFO");
}
