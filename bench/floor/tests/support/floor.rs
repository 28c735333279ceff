//! A `corecast-floor` process on a kernel-assigned loopback port, for the floor's own tests
//! and the benchmark reader's (which includes this file by path, beside node's process.rs).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process;

/// The floor process, killed when dropped.
pub struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.0);
    }
}

/// Starts the floor at `binary` for 30 s on `threads` threads, sending `bitrate_kbps` (64
/// kbit/s of it audio), with `flags`; returns it and the address it says it listens on.
pub fn start(
    binary: &Path,
    threads: u32,
    bitrate_kbps: u32,
    flags: &[&str],
) -> (Floor, SocketAddr) {
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--seconds", "30"])
        .args(["--threads", &threads.to_string()])
        .args([
            "--bitrate-kbps",
            &bitrate_kbps.to_string(),
            "--audio-kbps",
            "64",
        ])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start corecast-floor");
    let stdout = child.stdout.take().expect("floor stdout");
    let floor = Floor(child);
    // Read on a thread, so that a floor that never says where it listens fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the floor's first line within 20 s")
        .expect("read the floor's first line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (floor, addr)
}
