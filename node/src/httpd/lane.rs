//! The fast lane's decisions, sans-IO: which request heads a port's lane answers itself
//! ([`parse`]), the connection's read buffer ([`LaneBuf`]) and the response head it writes
//! ([`write_head`]). The I/O around them is [`super::fastlane`]'s.
//!
//! The lane exists because a plain HLS request through hyper costs a `HeaderMap` built and
//! dropped for the request and for the response, a boxed future, a body channel and hyper's
//! head encoder: per request several allocations and thousands of instructions, for an answer
//! that is always the same bytes (BENCHMARKS.md, "a fast lane past hyper"). So a request the
//! lane fully understands is answered from here, and anything else goes to hyper with every
//! byte read so far, for the rest of the connection's life.
//!
//! The lane takes only what it cannot get wrong: `GET` or `HEAD`, HTTP/1.1, a path of
//! unreserved characters and `/` (no query, no percent-encoding: those go through the
//! router's decoding), no body (`Content-Length` or `Transfer-Encoding` of any value), no
//! `Expect`, no `Upgrade`, and a `Connection` header, if any, of `keep-alive`. A head
//! `httparse` refuses, or that does not fit the lane's buffer, is hyper's too, so its 400 and
//! 431 answers are hyper's as before.

use bytes::Bytes;

/// The lane's read buffer per connection: a head that does not fit goes to hyper (which
/// takes heads up to the port's limit).
pub const LANE_BUFFER: usize = 4096;

/// Headers a head may have for the lane (more: hyper's).
const MAX_HEADERS: usize = 32;

/// What the lane makes of the bytes it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head<'a> {
    /// A head has begun and may still be one the lane takes: read more.
    Partial,
    /// Not the lane's: hyper gets the connection and every byte read.
    HandOver,
    /// A request the lane may answer: its path, whether it is a `HEAD`, and the length of its
    /// head (the request has no body).
    Get {
        /// The request target (the path: there is no query).
        path: &'a str,
        /// `HEAD`: the answer without its body.
        head_only: bool,
        /// Bytes of the buffer that the head takes.
        len: usize,
    },
}

/// Decides on the head at the start of `buf`; `capacity` is what the buffer can hold (a
/// partial head that fills it is handed over).
pub fn parse(buf: &[u8], capacity: usize) -> Head<'_> {
    if buf.is_empty() {
        return Head::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < capacity => return Head::Partial,
        _ => return Head::HandOver,
    };
    let head_only = match request.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Head::HandOver,
    };
    let path = match request.path {
        Some(path) if request.version == Some(1) && plain_path(path) => path,
        _ => return Head::HandOver,
    };
    if !request.headers.iter().all(lane_header) {
        return Head::HandOver;
    }
    Head::Get {
        path,
        head_only,
        len,
    }
}

/// An origin-form path of unreserved characters (RFC 3986) and `/`: nothing to decode.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
}

/// A header the lane's answer does not depend on, or one that agrees with it.
fn lane_header(header: &httparse::Header<'_>) -> bool {
    let name = header.name;
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    if is("content-length") || is("transfer-encoding") || is("expect") || is("upgrade") {
        return false;
    }
    !is("connection") || header.value.eq_ignore_ascii_case(b"keep-alive")
}

/// One connection's read buffer: bytes read and not yet taken by an answered head.
///
/// Its storage is held only while it has bytes or a read is being tried: a connection between
/// requests (most of a plain HLS viewer's life) holds none. Storage comes from, and goes back
/// to, a small per-core pool of [`LANE_BUFFER`]-sized buffers, so a request costs no
/// allocation and no zeroing, and a thousand idle viewers hold no read buffers at all (nginx
/// frees a keep-alive connection's buffer the same way).
#[derive(Debug)]
pub struct LaneBuf {
    buf: Option<Box<[u8]>>,
    capacity: usize,
    start: usize,
    end: usize,
}

/// Buffers a core's pool keeps for reuse (more are freed): the reads in flight at once on a
/// core are about as many as the requests one wake-up serves.
const POOL_MAX: usize = 64;

thread_local! {
    /// Free [`LANE_BUFFER`]-sized buffers of this core's connections.
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl LaneBuf {
    /// An empty buffer of `capacity` bytes (no storage yet).
    pub fn new(capacity: usize) -> LaneBuf {
        LaneBuf {
            buf: None,
            capacity,
            start: 0,
            end: 0,
        }
    }

    /// What it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether it has storage now.
    #[cfg(test)]
    fn holds_storage(&self) -> bool {
        self.buf.is_some()
    }

    /// The bytes read and not yet taken.
    pub fn pending(&self) -> &[u8] {
        self.buf
            .as_deref()
            .map_or(&[], |b| &b[self.start..self.end])
    }

    /// Where the next read goes (the pending bytes moved to the front first); empty when full.
    pub fn spare(&mut self) -> &mut [u8] {
        let capacity = self.capacity;
        let buf = self.buf.get_or_insert_with(|| take(capacity));
        if self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut buf[self.end..]
    }

    /// `n` bytes were read into [`LaneBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.capacity);
    }

    /// The first `n` pending bytes were answered.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        self.release_if_empty();
    }

    /// Gives the storage back when nothing is pending (a read found nothing, or every byte was
    /// answered): the connection waits for its next request holding none.
    pub fn release_if_empty(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if let Some(buf) = self.buf.take() {
                give(buf);
            }
        }
    }

    /// The pending bytes, for hyper to read first.
    pub fn into_rest(self) -> Bytes {
        Bytes::copy_from_slice(self.pending())
    }
}

impl Drop for LaneBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            give(buf);
        }
    }
}

/// A buffer of `capacity` bytes, from the core's pool when it has one of that size.
fn take(capacity: usize) -> Box<[u8]> {
    let pooled = match capacity {
        LANE_BUFFER => POOL.with_borrow_mut(Vec::pop),
        _ => None,
    };
    pooled.unwrap_or_else(|| vec![0; capacity].into_boxed_slice())
}

/// Keeps `buf` in the core's pool for the next read (or frees it).
fn give(buf: Box<[u8]>) {
    if buf.len() == LANE_BUFFER {
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOL_MAX {
                pool.push(buf);
            }
        });
    }
}

/// What an answer of the lane is: its media type and cache policy (a `200`, with
/// `Access-Control-Allow-Origin: *`, as the HLS routes answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Cache-Control`.
    pub cache: &'static str,
}

/// Writes the head of a `200` answer into `dst` (cleared first): the same bytes hyper writes
/// for the HLS routes' answers (names lowercase, in the routes' order, then `content-length`
/// and `date`, as hyper appends them). `date` is an IMF-fixdate.
pub fn write_head(dst: &mut Vec<u8>, meta: Meta, len: usize, date: &[u8]) {
    dst.clear();
    dst.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: ");
    dst.extend_from_slice(meta.content_type.as_bytes());
    dst.extend_from_slice(b"\r\ncache-control: ");
    dst.extend_from_slice(meta.cache.as_bytes());
    dst.extend_from_slice(b"\r\naccess-control-allow-origin: *\r\ncontent-length: ");
    dst.extend_from_slice(itoa(len, &mut [0; 20]));
    dst.extend_from_slice(b"\r\ndate: ");
    dst.extend_from_slice(date);
    dst.extend_from_slice(b"\r\n\r\n");
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn get(path: &str, head_only: bool, len: usize) -> Head<'_> {
        Head::Get {
            path,
            head_only,
            len,
        }
    }

    #[test]
    fn a_plain_get_or_head_is_the_lanes() {
        let head = b"GET /hls/live/cam/p1/s3.m4s HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            parse(head, LANE_BUFFER),
            get("/hls/live/cam/p1/s3.m4s", false, head.len())
        );
        let head = b"HEAD /a HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\nGET /b";
        assert_eq!(parse(head, LANE_BUFFER), get("/a", true, head.len() - 6));
        assert_eq!(parse(b"GET /a HTTP/1.1\r\nHo", LANE_BUFFER), Head::Partial);
        assert_eq!(parse(b"", LANE_BUFFER), Head::Partial);
    }

    #[test]
    fn anything_else_is_handed_over() {
        for head in [
            &b"POST /a HTTP/1.1\r\n\r\n"[..],
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a?ll=0 HTTP/1.1\r\n\r\n",
            b"GET /a%2Fb HTTP/1.1\r\n\r\n",
            b"GET http://x/a HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /a HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x00\x01garbage\r\n\r\n",
        ] {
            assert_eq!(parse(head, LANE_BUFFER), Head::HandOver, "{head:?}");
        }
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET /a HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(head.as_bytes(), LANE_BUFFER), Head::HandOver);
        // A partial head that fills the buffer is hyper's (its 431 if it goes on).
        assert_eq!(parse(b"GET /aaaa", 9), Head::HandOver);
    }

    #[test]
    fn the_head_is_hypers() {
        let mut dst = Vec::new();
        let meta = Meta {
            content_type: "video/iso.segment",
            cache: "max-age=1",
        };
        write_head(&mut dst, meta, 1234, b"Sun, 06 Dec 2026 00:00:00 GMT");
        assert_eq!(
            String::from_utf8(dst.clone()).expect("text"),
            "HTTP/1.1 200 OK\r\ncontent-type: video/iso.segment\r\ncache-control: max-age=1\r\n\
             access-control-allow-origin: *\r\ncontent-length: 1234\r\n\
             date: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n"
        );
        for n in [0, 9, 10, 99, 100, usize::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn the_buffer_keeps_what_was_not_taken() {
        let mut buf = LaneBuf::new(8);
        buf.spare()[..5].copy_from_slice(b"abcde");
        buf.filled(5);
        buf.consume(2);
        assert_eq!(buf.pending(), b"cde");
        assert_eq!(buf.spare().len(), 5, "moved to the front");
        assert_eq!(buf.pending(), b"cde");
        assert_eq!(&buf.into_rest()[..], b"cde");
    }

    #[test]
    fn the_buffer_holds_storage_only_while_it_has_bytes() {
        let mut buf = LaneBuf::new(LANE_BUFFER);
        assert!(!buf.holds_storage(), "a new connection holds no buffer");
        buf.spare()[..4].copy_from_slice(b"GET ");
        buf.filled(4);
        buf.consume(2);
        assert!(buf.holds_storage(), "bytes still pending");
        buf.release_if_empty();
        assert_eq!(buf.pending(), b"T ", "kept while bytes are pending");
        buf.consume(2);
        assert!(!buf.holds_storage(), "given back once every byte was taken");
        // A read that found nothing gives it back too.
        let _ = buf.spare();
        assert!(buf.holds_storage());
        buf.release_if_empty();
        assert!(!buf.holds_storage());
        assert_eq!(buf.pending(), b"");
        // The storage comes back from the core's pool: the bytes of the last use are not
        // seen as pending.
        assert_eq!(buf.spare().len(), LANE_BUFFER);
        assert_eq!(buf.pending(), b"");
    }

    /// A valid lane request, with some harmless headers.
    fn request() -> impl Strategy<Value = (String, String, bool)> {
        let path = "(/[a-zA-Z0-9._~-]{1,12}){1,5}";
        let headers = prop::collection::vec(("X-[a-z]{1,8}", "[ -~]{0,20}"), 0..5);
        (path, headers, any::<bool>()).prop_map(|(path, headers, head_only)| {
            let method = if head_only { "HEAD" } else { "GET" };
            let mut text = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
            for (name, value) in headers {
                text.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            text.push_str("\r\n");
            (text, path, head_only)
        })
    }

    /// Feeds `chunks` to a lane buffer as reads would, answering what the lane takes; returns
    /// the heads answered and the bytes hyper would get (None: nothing handed over).
    fn run(chunks: &[Vec<u8>], capacity: usize) -> (Vec<(String, bool)>, Option<Vec<u8>>) {
        let mut buf = LaneBuf::new(capacity);
        let mut answered = Vec::new();
        let mut unread: Vec<u8> = chunks.concat();
        loop {
            match parse(buf.pending(), buf.capacity()) {
                Head::Get {
                    path,
                    head_only,
                    len,
                } => {
                    assert!(len > 0 && len <= buf.pending().len());
                    answered.push((path.to_owned(), head_only));
                    buf.consume(len);
                }
                Head::HandOver => {
                    let mut rest = buf.into_rest().to_vec();
                    rest.extend_from_slice(&unread);
                    return (answered, Some(rest));
                }
                Head::Partial if unread.is_empty() => return (answered, None),
                Head::Partial => {
                    let spare = buf.spare();
                    assert!(!spare.is_empty(), "a partial head never fills the buffer");
                    let n = spare.len().min(unread.len()).min(chunks[0].len().max(1));
                    spare[..n].copy_from_slice(&unread[..n]);
                    buf.filled(n);
                    unread.drain(..n);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics_and_every_byte_is_answered_or_handed_over(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..8),
            capacity in 16usize..256,
        ) {
            let all = chunks.concat();
            let (answered, rest) = run(&chunks, capacity);
            for (path, _) in &answered {
                prop_assert!(plain_path(path));
            }
            // Whatever was not answered reaches hyper, in order, every byte.
            if let Some(rest) = rest {
                prop_assert!(all.ends_with(&rest));
            }
        }

        #[test]
        fn pipelined_requests_split_anywhere_are_all_answered(
            requests in prop::collection::vec(request(), 1..6),
            chunk in 1usize..100,
        ) {
            let all: Vec<u8> = requests.iter().flat_map(|(t, ..)| t.bytes()).collect();
            let chunks: Vec<Vec<u8>> = all.chunks(chunk).map(<[u8]>::to_vec).collect();
            let (answered, rest) = run(&chunks, LANE_BUFFER);
            prop_assert_eq!(rest, None);
            let want: Vec<(String, bool)> =
                requests.iter().map(|(_, p, h)| (p.clone(), *h)).collect();
            prop_assert_eq!(answered, want);
        }

        #[test]
        fn a_request_the_lane_refuses_reaches_hyper_whole(
            (first, ..) in request(),
            second in "(POST|PUT) /[a-z]{1,8} HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            chunk in 1usize..50,
        ) {
            let all = [first.as_bytes(), second.as_bytes()].concat();
            let chunks: Vec<Vec<u8>> = all.chunks(chunk).map(<[u8]>::to_vec).collect();
            let (answered, rest) = run(&chunks, LANE_BUFFER);
            prop_assert_eq!(answered.len(), 1);
            prop_assert_eq!(rest, Some(second.into_bytes()));
        }
    }
}
