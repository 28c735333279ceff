//! One plain HTTP/1.1 exchange with a node, for tests that check status, headers and body
//! byte for byte: the request goes out with `Connection: close` and the answer is read to
//! the close, so it suits answers with a `Content-Length` body (playlists, pages, scripts),
//! not live streams. Connect, reads and writes have the deadlines of [`super::process`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;

use super::process::connect;

/// What a GET answered.
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased; a repeated header keeps its last value.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (lossy: a test only compares it or shows it).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, or "" when it was not sent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// `GET path` on `addr` (a node's `http` address), read to the close.
pub fn get(addr: SocketAddr, path: &str) -> Answer {
    let raw = send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (status, head, body) = split(&raw);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_vec(),
    }
}

/// `method path` on `addr` with `headers` (each line ending in CRLF) and `body` (its
/// `Content-Length` added), read to the close: (status, head as sent, body as text).
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = send(addr, request.as_bytes());
    let (status, head, body) = split(&raw);
    (status, head, String::from_utf8_lossy(body).into_owned())
}

/// Sends `request` on a fresh connection and reads the answer to the close.
fn send(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr).expect("http connect");
    s.write_all(request).expect("http write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("http read");
    raw
}

/// An answer's status, head (status line included) and body.
fn split(raw: &[u8]) -> (u16, String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head, &raw[end + 4..])
}
