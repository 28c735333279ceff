//! HTTP/1.1 responses on a keep-alive connection, sans-IO: bytes read go in, the parts of each
//! response come out ([`Part`]: its head, slices of its body, its end), one response after the
//! other. Heads are parsed with `httparse`; bodies are framed by `Content-Length`, chunked
//! transfer coding (RFC 9112 §7.1) or, with neither, the end of the connection.
//!
//! Body slices borrow the input, so a player that only counts copies nothing. The request side
//! is one line of text ([`get`]): the players send one GET at a time and wait for its answer.
//!
//! # Tricky parts
//! - **A head can arrive in pieces.** Its bytes are kept until `httparse` has a whole head;
//!   what follows it in the same read is body, given back without copying.
//! - **Chunk framing can split anywhere,** even inside the CRLF after a chunk's data or inside
//!   a size line: each is its own state, so one byte at a time decodes the same as all at once.
//! - **Bad input is an error, never a panic:** heads over [`MAX_HEAD`], size lines over
//!   [`MAX_LINE`], sizes that are not hex or overflow, a missing CRLF.

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Longest chunk-size or trailer line accepted.
pub const MAX_LINE: usize = 1024;

/// Most header fields in one head.
const MAX_HEADERS: usize = 64;

/// A response head: what the players need from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body is framed.
    pub framing: Framing,
    /// `Connection: close`: the server ends the connection after this response.
    pub close: bool,
}

/// How a body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 for statuses without a body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// One piece of a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Part<'a> {
    /// The head (always first).
    Head(Head),
    /// Body bytes, in order.
    Body(&'a [u8]),
    /// The response is complete; the next bytes are the next response's.
    End,
}

/// Why a response could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The head is not HTTP/1.x or is malformed.
    #[error("malformed response head: {0}")]
    Head(&'static str),
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLong,
    /// A chunk-size line is malformed or too long, or a chunk lacks its CRLF.
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
}

impl HttpError {
    /// A short label failures are counted under.
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpError::Head(_) | HttpError::HeadTooLong => "http_bad_head",
            HttpError::Chunk(_) => "http_bad_chunk",
        }
    }
}

/// Where the decoder is in the current response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the head.
    Head,
    /// `n` body bytes left.
    Length(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// `n` bytes of chunk data left.
    ChunkData(u64),
    /// The CRLF after chunk data; `n` of its bytes seen.
    ChunkEnd(u8),
    /// Collecting trailer lines, until an empty one.
    Trailer,
    /// Body bytes until the connection ends.
    UntilClose,
    /// The body is over: [`Part::End`] is due.
    Done,
}

/// Decodes responses, one after the other, from the bytes of one connection.
#[derive(Debug)]
pub struct ResponseDecoder {
    state: State,
    /// A partial head or line.
    pending: Vec<u8>,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        ResponseDecoder {
            state: State::Head,
            pending: Vec::new(),
        }
    }
}

impl ResponseDecoder {
    /// The next part from `input`, advancing it past what was used; `Ok(None)` when `input`
    /// is used up and more is needed.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Part<'a>>, HttpError> {
        loop {
            match self.state {
                State::Done => {
                    self.state = State::Head;
                    return Ok(Some(Part::End));
                }
                State::Head => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    return self.head(input);
                }
                State::Length(0) => self.state = State::Done,
                State::Length(left) => {
                    let Some(body) = take(input, left) else {
                        return Ok(None);
                    };
                    self.state = State::Length(left - body.len() as u64);
                    return Ok(Some(Part::Body(body)));
                }
                State::UntilClose => {
                    let Some(body) = take(input, u64::MAX) else {
                        return Ok(None);
                    };
                    return Ok(Some(Part::Body(body)));
                }
                State::ChunkData(left) => {
                    let Some(body) = take(input, left) else {
                        return Ok(None);
                    };
                    let left = left - body.len() as u64;
                    if left == 0 {
                        self.state = State::ChunkEnd(0);
                    } else {
                        self.state = State::ChunkData(left);
                    }
                    return Ok(Some(Part::Body(body)));
                }
                State::ChunkEnd(seen) => {
                    let Some((&byte, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if byte != want {
                        return Err(HttpError::Chunk("no CRLF after chunk data"));
                    }
                    self.state = if seen == 0 {
                        State::ChunkEnd(1)
                    } else {
                        State::ChunkSize
                    };
                }
                State::ChunkSize => {
                    let Some(line) = self.line(input)? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::Trailer => {
                    let Some(line) = self.line(input)? else {
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// Adds `input` to the pending head and parses it.
    fn head<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Part<'a>>, HttpError> {
        let before = self.pending.len();
        let room = MAX_HEAD + 1 - before;
        let added = input.len().min(room);
        self.pending.extend_from_slice(&input[..added]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = match response.parse(&self.pending) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.pending.len() > MAX_HEAD => {
                return Err(HttpError::HeadTooLong)
            }
            Ok(httparse::Status::Partial) => {
                *input = &input[added..];
                return Ok(None);
            }
            Err(e) => return Err(HttpError::Head(head_error(e))),
        };
        let head = read_head(&response)?;
        // Only the head's own bytes are used; the rest of `input` is body or a later response.
        *input = &input[parsed - before..];
        self.pending.clear();
        self.state = match head.framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Ok(Some(Part::Head(head)))
    }

    /// One CRLF-terminated line (without its CRLF), collected across calls.
    fn line(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
        let end = input.iter().position(|&b| b == b'\n');
        let used = end.map_or(input.len(), |i| i + 1);
        if self.pending.len() + used > MAX_LINE {
            return Err(HttpError::Chunk("line too long"));
        }
        self.pending.extend_from_slice(&input[..used]);
        *input = &input[used..];
        if end.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.pending);
        line.pop(); // the LF
        if line.pop() != Some(b'\r') {
            return Err(HttpError::Chunk("line without CRLF"));
        }
        Ok(Some(line))
    }
}

/// Up to `max` bytes from the front of `input`; `None` when it is empty.
fn take<'a>(input: &mut &'a [u8], max: u64) -> Option<&'a [u8]> {
    if input.is_empty() {
        return None;
    }
    let n = usize::try_from(max).unwrap_or(usize::MAX).min(input.len());
    let (body, rest) = input.split_at(n);
    *input = rest;
    Some(body)
}

/// The size in a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let digits = std::str::from_utf8(digits)
        .map_err(|_| HttpError::Chunk("size is not hex"))?
        .trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 15 {
        return Err(HttpError::Chunk("size is not hex"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| HttpError::Chunk("size is not hex"))
}

/// The head's status and framing (RFC 9112 §6.3).
fn read_head(response: &httparse::Response<'_, '_>) -> Result<Head, HttpError> {
    let status = response.code.ok_or(HttpError::Head("no status"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| HttpError::Head("bad Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(HttpError::Head("conflicting Content-Length"));
            }
            length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(HttpError::Head("unsupported Transfer-Encoding"));
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    Ok(Head {
        status,
        framing,
        close,
    })
}

fn head_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version => "not HTTP/1.x",
        httparse::Error::Status => "bad status",
        httparse::Error::TooManyHeaders => "too many header fields",
        _ => "bad header",
    }
}

/// A keep-alive GET of `path` from `authority`.
pub fn get(authority: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: corecast-reader\r\n\r\n")
        .into_bytes()
}

#[cfg(test)]
mod tests;
