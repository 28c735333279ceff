//! A small HTTP service on a loopback port that answers the node's JSON `POST`s (an auth
//! callback): it allows documents whose `name` starts with `ok` (200), refuses the rest (403),
//! and keeps every request it was sent. A silent one accepts connections and never answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the service got.
#[derive(Debug, Clone)]
pub struct Asked {
    /// `POST`, …
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// The running service; it stops accepting after the `limit` it was started with.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
    /// Connections a silent one holds unanswered.
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    /// The `[auth]` section that asks this service at `path` (with its query) within
    /// `timeout_ms`, for app `live` with the given `publish` and `play` modes.
    pub fn auth_config(&self, path: &str, timeout_ms: u64, publish: &str, play: &str) -> String {
        format!(
            "[auth]\ncallback_url = \"http://{}{path}\"\ncallback_timeout_ms = {timeout_ms}\n\
             [[auth.apps]]\nname = \"live\"\npublish = \"{publish}\"\nplay = \"{play}\"\n",
            self.addr
        )
    }

    /// A service that answers (`answer`) or holds every connection unanswered, for `limit`.
    pub fn start(answer: bool, limit: Duration) -> Receiver {
        Receiver::start_after(answer, limit, Duration::ZERO)
    }

    /// As [`Receiver::start`], each answer sent `delay` after its request (a slow service).
    pub fn start_after(answer: bool, limit: Duration, delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let asked = Arc::default();
        let seen = Arc::clone(&asked);
        let held_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&held_count);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            // Held unanswered by the silent service until it stops.
            let mut held = Vec::new();
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) if answer => serve(stream, &seen, delay),
                    Ok((stream, _)) => {
                        held.push(stream);
                        counted.store(held.len(), std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            addr,
            asked,
            held: held_count,
        }
    }

    /// How many connections a silent service holds unanswered (each a node waiting for it).
    pub fn held_connections(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().expect("lock").clone()
    }
}

/// Reads one request (5 s at most), records it, answers by the `name` in its body.
fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Asked>>, delay: Duration) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let asked = loop {
        let n = match stream.read(&mut tmp) {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        buf.extend_from_slice(&tmp[..n]);
        if let Some(asked) = parse(&buf) {
            break asked;
        }
    };
    let allowed = asked.body["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("ok"));
    seen.lock().expect("lock").push(asked);
    std::thread::sleep(delay);
    let status = if allowed { "200 OK" } else { "403 Forbidden" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

/// The request in `buf` once all of it (head and `Content-Length` body) is there.
fn parse(buf: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = request.parse(buf).ok()? else {
        return None;
    };
    let length: usize = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .unwrap_or(0);
    let body = buf.get(head..head + length)?;
    Some(Asked {
        method: request.method.unwrap_or("").to_owned(),
        path: request.path.unwrap_or("").to_owned(),
        body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
    })
}
