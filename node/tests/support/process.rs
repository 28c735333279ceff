//! Deadlines for everything a test waits on outside itself: spawned processes and sockets.
//! A test that waits without one turns a failure into a hang that only CI's time limit ends;
//! with these it fails fast and says what it waited for.
//!
//! One file for every crate's tests: `loadtest/`, `bench/floor/` and `fuzz/` include it with
//! `#[path = ".../node/tests/support/process.rs"]`.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a socket read or write in a test may block.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connect to a loopback listener may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `command` to the end (stdin closed, output captured) within `limit`; kills it and
/// panics, naming the command and showing its stderr so far, when it runs longer.
pub fn output_with_deadline(command: &mut Command, limit: Duration) -> Output {
    let what = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    wait_with_output_deadline(child, limit, &what)
}

/// Waits for `child` to exit within `limit` and collects what it wrote to the pipes it was
/// given (none for an inherited or null stream); kills it and panics naming `what`, with its
/// stderr so far, when it runs longer.
pub fn wait_with_output_deadline(mut child: Child, limit: Duration, what: &str) -> Output {
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = match wait_until(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&received(&stderr)).into_owned();
            panic!("{what} still ran after {limit:?}; killed. Its stderr:\n{err}");
        }
    };
    Output {
        status,
        stdout: received(&stdout),
        stderr: received(&stderr),
    }
}

/// [`output_with_deadline`] for a command whose output the test does not read.
pub fn status_with_deadline(command: &mut Command, limit: Duration) -> ExitStatus {
    output_with_deadline(command, limit).status
}

/// Waits for `child` to exit within `limit`; kills it and panics naming `what` otherwise.
pub fn wait_with_deadline(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    match wait_until(child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {limit:?}; killed");
        }
    }
}

/// Kills `child` (if it still runs) and reaps it, bounded: for `Drop` impls and clean-up.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    // SIGKILL cannot be ignored: the wait ends as soon as the kernel has torn it down.
    let _ = wait_until(child, Duration::from_secs(10));
}

/// A child killed and reaped (bounded) when dropped, so a test that fails an assertion
/// leaves nothing running behind it.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// Connects to `addr` within [`CONNECT_TIMEOUT`]; reads and writes on the stream time out
/// after [`SOCKET_TIMEOUT`].
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    Ok(stream)
}

fn wait_until(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the channel.
fn collect(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
    }
    rx
}

/// What a [`collect`] thread read, waiting briefly: a grandchild that kept the pipe open
/// must not turn into a hang here.
fn received(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
}
