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
    let mut s = connect(addr).expect("http connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("http write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("http read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}
