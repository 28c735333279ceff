//! The HTTP layer shared by every HTTP port (hyper over glommio), tried on the API port with
//! raw bytes: keep-alive, HEAD, pipelining, the body limit's 413 and the deadlines.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::client::closed_within;
use support::node::Node;

/// Over the API's 64 KiB body limit.
const OVER_LIMIT: usize = 64 * 1024 + 1;

/// One response: status, lower-cased headers, body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length")
    }
}

/// A raw client connection that reads responses one at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one response; the body is skipped for a HEAD (its length is announced only).
    fn response(&mut self, head_only: bool) -> io::Result<Response> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            let status = parsed
                .parse(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let httparse::Status::Complete(head_len) = status {
                let mut response = Response {
                    status: parsed.code.unwrap_or(0),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value).into_owned();
                            (h.name.to_ascii_lowercase(), value)
                        })
                        .collect(),
                    body: Vec::new(),
                };
                let length = if head_only {
                    0
                } else {
                    response.content_length()
                };
                if self.buf.len() >= head_len + length {
                    response.body = self.buf[head_len..head_len + length].to_vec();
                    self.buf.drain(..head_len + length);
                    return Ok(response);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut tmp = [0u8; 16 * 1024];
            match self.stream.read(&mut tmp)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

#[test]
fn keep_alive_head_and_pipelining_share_one_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    let mut conn = Conn::connect(node.http);

    // Two requests, one after the other, on one connection.
    for _ in 0..2 {
        conn.send(&get("/healthz"));
        let r = conn.response(false).expect("healthz");
        assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
        assert_eq!(r.header("connection"), None, "HTTP/1.1 stays open");
    }

    // HEAD: the GET's length, no body. The next response on the connection starts right
    // after the HEAD's head, which proves no body bytes followed it.
    conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = conn.response(true).expect("HEAD /healthz");
    assert_eq!((head.status, head.content_length()), (200, 3));
    conn.send(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = conn.response(true).expect("HEAD /metrics");
    assert_eq!(head.status, 200);
    assert!(head.content_length() > 1000, "the metrics page's length");
    assert!(head
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    conn.send(&get("/readyz"));
    let r = conn.response(false).expect("after the HEADs");
    assert_eq!((r.status, &r.body[..]), (200, &b"ready\n"[..]));

    // Pipelined: three requests in one write, answered in order.
    let mut pipelined = get("/healthz");
    pipelined.extend_from_slice(&get("/nope"));
    pipelined.extend_from_slice(&get("/readyz"));
    conn.send(&pipelined);
    let answers: Vec<(u16, Vec<u8>)> = (0..3)
        .map(|_| conn.response(false).expect("pipelined"))
        .map(|r| (r.status, r.body))
        .collect();
    assert_eq!(answers[0], (200, b"ok\n".to_vec()));
    assert_eq!(answers[1].0, 404);
    assert_eq!(answers[2], (200, b"ready\n".to_vec()));

    // A method the path does not take: 405 naming what it takes.
    conn.send(b"DELETE /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = conn.response(false).expect("405");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
}

#[test]
fn a_body_over_the_limit_gets_413_before_the_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[http]\napi_token = \"s3cret\"\n", dir.path());

    // Announced over the limit: refused from the head; the body the client goes on sending
    // does not turn the close into a reset that would lose the 413.
    let mut conn = Conn::connect(node.http);
    conn.send(
        b"POST /api/v1/clients/1/kick HTTP/1.1\r\nHost: t\r\n\
          Authorization: Bearer s3cret\r\nContent-Length: 10000000\r\n\r\n",
    );
    let _ = conn.stream.write_all(&vec![b'x'; 256 * 1024]);
    let r = conn.response(false).expect("413 delivered");
    assert_eq!((r.status, r.header("connection")), (413, Some("close")));
    assert!(closed_within(&mut conn.stream, Duration::from_secs(5)));

    // Chunked, with no length announced: refused once the bytes pass the limit.
    let mut conn = Conn::connect(node.http);
    let mut request = b"POST /api/v1/clients/1/kick HTTP/1.1\r\nHost: t\r\n\
        Authorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..(OVER_LIMIT / 4096 + 1) {
        request.extend_from_slice(b"1000\r\n");
        request.extend_from_slice(&[b'y'; 4096]);
        request.extend_from_slice(b"\r\n");
    }
    let _ = conn.stream.write_all(&request);
    let r = conn.response(false).expect("413 delivered");
    assert_eq!(r.status, 413);
    assert!(closed_within(&mut conn.stream, Duration::from_secs(5)));

    // A body within the limit is read and the request answered as usual.
    let mut conn = Conn::connect(node.http);
    conn.send(
        b"POST /api/v1/clients/999999/kick HTTP/1.1\r\nHost: t\r\n\
          Authorization: Bearer s3cret\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(conn.response(false).expect("answered").status, 404);
    node.expect_close_reasons(&["http_body_too_large"]);
}

#[test]
fn a_slow_request_head_is_cut_at_its_deadline_and_an_idle_connection_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[http]\nrequest_timeout_secs = 1\nidle_timeout_secs = 2\n";
    let node = Node::start(1, config, dir.path());

    // A head trickled one byte at a time keeps no connection past its deadline, however
    // steadily it trickles.
    let mut conn = Conn::connect(node.http);
    let started = Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    for byte in head {
        if conn.stream.write_all(&[*byte]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let mut tmp = [0u8; 64];
        conn.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        match conn.stream.read(&mut tmp) {
            Ok(0) => {
                cut = Some(started.elapsed());
                break;
            }
            Ok(_) => panic!("a head that never completed was answered"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                cut = Some(started.elapsed());
                break;
            }
        }
    }
    let cut = cut.expect("the slow head was never cut");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(4),
        "cut after {cut:?}, the deadline is 1 s"
    );
    node.expect_close_reasons(&["http_head_timeout"]);

    // A kept-alive connection that sends nothing more is closed after the idle timeout,
    // not at the request deadline.
    let mut conn = Conn::connect(node.http);
    conn.send(&get("/healthz"));
    assert_eq!(conn.response(false).expect("healthz").status, 200);
    let idle_since = Instant::now();
    assert!(closed_within(&mut conn.stream, Duration::from_secs(6)));
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(1800),
        "closed after {idle:?} idle, the idle timeout is 2 s"
    );
}

/// `curl` with every wait bounded; (exit success, stdout, stderr).
fn curl(args: &[&str]) -> (bool, String, String) {
    let output = support::process::output_with_deadline(
        std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(args),
        Duration::from_secs(20),
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn https_on_the_http_port_with_the_rtmps_certificate() {
    use support::tls::{rtmps_section, CertFiles, TestCa};
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("corecast test CA");
    let ca_file = ca.write_to(&dir.path().join("ca.pem"));
    let files = CertFiles::in_dir(dir.path());
    files.install(&ca.issue(&["127.0.0.1", "localhost"]));
    let (rtmps, _) = rtmps_section(&files, "");
    let node = Node::start(1, &format!("{rtmps}\n[http]\ntls = true\n"), dir.path());
    let ca_file = ca_file.to_str().expect("path");

    // Two requests on one kept-alive connection, the certificate verified against the CA.
    let url = format!("https://127.0.0.1:{}/healthz", node.http.port());
    let (ok, body, err) = curl(&["--cacert", ca_file, &url, &url]);
    assert!(ok, "curl over https failed: {err}");
    assert_eq!(body, "ok\nok\n");
    let metrics = format!("https://127.0.0.1:{}/metrics", node.http.port());
    let (ok, body, err) = curl(&["--cacert", ca_file, &metrics]);
    assert!(ok && body.contains("corecast_connections_open"), "{err}");

    // A body over the limit gets its 413 over TLS too, while curl is still sending.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 4 << 20]).expect("write body");
    let kick = format!(
        "https://127.0.0.1:{}/api/v1/clients/1/kick",
        node.http.port()
    );
    let data = format!("@{}", big.display());
    let (_, code, err) = curl(&[
        "--cacert",
        ca_file,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &data,
        &kick,
    ]);
    assert_eq!(code, "413", "{err}");

    // Without the CA the certificate is refused by the client; plain HTTP gets no answer,
    // and the node says why it closed.
    let (ok, _, _) = curl(&[&url]);
    assert!(!ok, "an unverified certificate was accepted");
    let plain = format!("http://127.0.0.1:{}/healthz", node.http.port());
    let (ok, body, _) = curl(&[&plain]);
    assert!(
        !ok && !body.contains("ok"),
        "plain HTTP was answered on the HTTPS port"
    );
    assert!(
        node.wait_log(Duration::from_secs(5), |l| l
            .contains("tls connection closed")
            && l.contains("transport=\"https\""))
            .is_some(),
        "no log line for the failed handshake"
    );
}

/// Keep-alive connections that each send a request every `gap`, for `for_` (answers checked).
fn steady_requests(addr: SocketAddr, connections: usize, gap: Duration, for_: Duration) {
    std::thread::scope(|s| {
        for _ in 0..connections {
            s.spawn(move || {
                let mut conn = Conn::connect(addr);
                let end = Instant::now() + for_;
                while Instant::now() < end {
                    conn.send(&get("/healthz"));
                    let r = conn.response(false).expect("healthz under load");
                    assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
                    std::thread::sleep(gap);
                }
            });
        }
    });
}

#[test]
fn a_busy_core_reads_its_keep_alive_connections_on_one_tick_and_an_idle_one_does_not_tick() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[http]\nread_batch_ms = 10\n", dir.path());
    let ticks = "corecast_http_read_batch_ticks_total";
    let woken = "corecast_http_read_batch_wakeups_total";
    assert_eq!(node.metric_sum(ticks), 0.0, "an idle node ticks");

    // 16 connections, one request each per ~20 ms: ~800 requests a second, well over the
    // busy threshold (200) even on a loaded machine.
    steady_requests(
        node.http,
        16,
        Duration::from_millis(20),
        Duration::from_secs(4),
    );
    assert!(node.metric_sum(woken) > 0.0, "no read was woken by the hub");
    assert!(node.metric_sum(ticks) > 0.0, "the hub never ticked");

    // Quiet again: the tick stops once no read waits in the hub, and after two quiet seconds
    // (the rate is counted over whole seconds) the core is no longer busy.
    std::thread::sleep(Duration::from_millis(2500));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = node.metric_sum(ticks);
        std::thread::sleep(Duration::from_millis(500));
        if node.metric_sum(ticks) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hub still ticks on an idle core"
        );
    }
    // New connections are served through glommio's readiness (the hub wakes no one).
    let woke = node.metric_sum(woken);
    let mut conn = Conn::connect(node.http);
    conn.send(&get("/healthz"));
    assert_eq!(conn.response(false).expect("healthz").status, 200);
    steady_requests(
        node.http,
        2,
        Duration::from_millis(50),
        Duration::from_millis(300),
    );
    assert_eq!(
        node.metric_sum(woken),
        woke,
        "a quiet core's reads went through the hub"
    );
}

/// A busy core accepts new connections on its read hub's tick; a burst of them (several
/// behind one edge) is served in full, each answered.
#[test]
fn a_busy_core_accepts_a_burst_of_new_connections_on_its_tick_and_serves_them_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[http]\nread_batch_ms = 10\n", dir.path());
    let accepts = "corecast_http_read_batch_accepts_total";
    assert_eq!(
        node.metric_sum(accepts),
        0.0,
        "an idle node accepted on a tick"
    );
    let addr = node.http;
    std::thread::scope(|s| {
        // ~800 requests a second for 8 s: busy from the second second on, and still busy
        // for longer than the burst's read timeout (a connection left in the listener's
        // queue would be accepted only once the core is quiet again).
        s.spawn(move || {
            steady_requests(addr, 16, Duration::from_millis(20), Duration::from_secs(8))
        });
        std::thread::sleep(Duration::from_millis(2500));
        let mut burst: Vec<Conn> = (0..40).map(|_| Conn::connect(addr)).collect();
        for conn in &mut burst {
            // A connection left in the listener's queue fails here instead of hanging.
            let timeout = Some(Duration::from_secs(3));
            conn.stream.set_read_timeout(timeout).expect("read timeout");
            conn.send(&get("/healthz"));
        }
        for (i, conn) in burst.iter_mut().enumerate() {
            let r = conn.response(false).expect("a burst connection answered");
            assert_eq!(r.status, 200, "connection {i} of the burst");
        }
    });
    assert!(
        node.metric_sum(accepts) >= 1.0,
        "no connection was accepted on the busy core's tick"
    );
}

/// `http.fast_lane = false` leaves every request to hyper (the lane never runs, so it hands
/// nothing over); by default a request the lane does not take (`/metrics`) is handed over.
#[test]
fn the_fast_lane_can_be_turned_off() {
    let lane = "corecast_http_lane_handovers_total";
    let dir = tempfile::tempdir().expect("temp dir");
    let off = Node::start(1, "[http]\nfast_lane = false\n", dir.path());
    let _ = off.metrics();
    assert_eq!(off.metric_sum(lane), 0.0, "the lane ran while off");
    let dir = tempfile::tempdir().expect("temp dir");
    let on = Node::start(1, "", dir.path());
    let _ = on.metrics();
    assert!(on.metric_sum(lane) >= 1.0, "the lane handed nothing over");
}
