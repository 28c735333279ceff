//! HTTP/1.1 request framing for RTMPT, sans-IO: bytes in, whole requests out; and the
//! response heads the tunnel writes.
//!
//! Request heads are parsed by `httparse`. A request is *checked* before it is taken: while
//! its head or body is incomplete [`RequestReader::decode`] answers `Ok(None)` and consumes
//! nothing of the body, so the caller reads more and calls again. Requests are taken one at a
//! time from the front of the buffer, which is all HTTP/1.1 pipelining needs: the caller
//! answers them in order.
//!
//! Limits: the head (request line and headers) is at most [`HttpLimits::max_head_bytes`] and
//! [`MAX_HEADERS`] headers (431 past either); a body needs `Content-Length` (411 without it:
//! RTMPT clients always send one, and chunked bodies are not supported) and is at most
//! [`HttpLimits::max_body_bytes`] (413, answered from the head alone, before any body byte is
//! buffered). Any framing error leaves the connection unusable: the caller answers it and
//! closes.

use bytes::{Buf, Bytes, BytesMut};

/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 32;

/// The `Content-Type` of every RTMPT reply.
pub const CONTENT_TYPE: &str = "application/x-fcs";

/// Bounds one request must fit.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Request line plus headers plus the blank line.
    pub max_head_bytes: usize,
    /// Largest `Content-Length` accepted.
    pub max_body_bytes: usize,
}

/// The request methods RTMPT cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `POST`: every RTMPT request.
    Post,
    /// Anything else (answered 405 on tunnel paths).
    Other,
}

/// One whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its method.
    pub method: Method,
    /// The request target as sent (`/send/<id>/<seq>`).
    pub path: String,
    /// Whether the client keeps the connection open after the reply (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The body (`Content-Length` bytes).
    pub body: Bytes,
}

/// Why a request could not be framed. Each maps to a 4xx status; the connection is closed
/// after the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request line or a header is not HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    /// The head did not end within the head limit, or had too many headers.
    #[error("request head over {max} bytes or {MAX_HEADERS} headers")]
    HeadTooLarge {
        /// The head limit.
        max: usize,
    },
    /// `Content-Length` is not a number, or two disagree.
    #[error("bad Content-Length")]
    BadContentLength,
    /// A POST came without `Content-Length` (or with `Transfer-Encoding`).
    #[error("POST without Content-Length")]
    LengthRequired,
    /// The announced body is over the limit.
    #[error("body of {length} bytes over the {max}-byte limit")]
    BodyTooLarge {
        /// The announced length.
        length: u64,
        /// The limit.
        max: usize,
    },
}

impl HttpError {
    /// The status the client is answered with.
    pub fn status(&self) -> Status {
        match self {
            HttpError::Malformed(_) | HttpError::BadContentLength => Status::BadRequest,
            HttpError::HeadTooLarge { .. } => Status::HeadersTooLarge,
            HttpError::LengthRequired => Status::LengthRequired,
            HttpError::BodyTooLarge { .. } => Status::PayloadTooLarge,
        }
    }

    /// A short static label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpError::Malformed(_) => "http_malformed",
            HttpError::HeadTooLarge { .. } => "http_head_too_large",
            HttpError::BadContentLength => "http_bad_content_length",
            HttpError::LengthRequired => "http_length_required",
            HttpError::BodyTooLarge { .. } => "http_body_too_large",
        }
    }
}

/// A parsed head whose body is still arriving.
#[derive(Debug)]
struct PendingHead {
    method: Method,
    path: String,
    keep_alive: bool,
    body_len: usize,
}

/// Takes whole requests off the front of a connection's input buffer.
#[derive(Debug)]
pub struct RequestReader {
    limits: HttpLimits,
    /// The head of the request being read, once parsed (its bytes are consumed).
    pending: Option<PendingHead>,
}

impl RequestReader {
    /// A reader enforcing `limits`.
    pub fn new(limits: HttpLimits) -> RequestReader {
        RequestReader {
            limits,
            pending: None,
        }
    }

    /// The next whole request, `Ok(None)` when more bytes are needed. Consumes exactly the
    /// request's bytes, leaving pipelined ones in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        if self.pending.is_none() {
            match self.parse_head(buf)? {
                Some(head) => self.pending = Some(head),
                None => return Ok(None),
            }
        }
        let Some(head) = self.pending.as_ref() else {
            return Ok(None);
        };
        if buf.len() < head.body_len {
            buf.reserve(head.body_len - buf.len());
            return Ok(None);
        }
        let Some(head) = self.pending.take() else {
            return Ok(None);
        };
        let body = buf.split_to(head.body_len).freeze();
        Ok(Some(Request {
            method: head.method,
            path: head.path,
            keep_alive: head.keep_alive,
            body,
        }))
    }

    fn parse_head(&self, buf: &mut BytesMut) -> Result<Option<PendingHead>, HttpError> {
        let max = self.limits.max_head_bytes;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(buf) {
            Ok(httparse::Status::Complete(n)) if n <= max => n,
            Ok(httparse::Status::Complete(_)) => return Err(HttpError::HeadTooLarge { max }),
            Ok(httparse::Status::Partial) if buf.len() >= max => {
                return Err(HttpError::HeadTooLarge { max })
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge { max }),
            Err(e) => return Err(HttpError::Malformed(e)),
        };
        let method = match request.method {
            Some("POST") => Method::Post,
            _ => Method::Other,
        };
        let path = request.path.unwrap_or("/").to_owned();
        let http11 = request.version == Some(1);
        let mut keep_alive = http11;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(HttpError::BadContentLength)?;
                if content_length.is_some_and(|seen| seen != value) {
                    return Err(HttpError::BadContentLength);
                }
                content_length = Some(value);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if header.name.eq_ignore_ascii_case("connection") {
                let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                for token in value.split(',').map(str::trim) {
                    match token {
                        "close" => keep_alive = false,
                        "keep-alive" => keep_alive = true,
                        _ => {}
                    }
                }
            }
        }
        let body_len = match (method, content_length, chunked) {
            (_, _, true) => return Err(HttpError::LengthRequired),
            (Method::Post, None, false) => return Err(HttpError::LengthRequired),
            (_, None, false) => 0,
            (_, Some(length), false) => {
                if length > self.limits.max_body_bytes as u64 {
                    return Err(HttpError::BodyTooLarge {
                        length,
                        max: self.limits.max_body_bytes,
                    });
                }
                length as usize
            }
        };
        buf.advance(head_len);
        Ok(Some(PendingHead {
            method,
            path,
            keep_alive,
            body_len,
        }))
    }
}

/// The statuses RTMPT answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// 200: an RTMPT reply.
    Ok,
    /// 400: malformed request or sequence number.
    BadRequest,
    /// 404: unknown path or session (including `/fcs/ident2`, as Flash expects).
    NotFound,
    /// 405: not a POST.
    MethodNotAllowed,
    /// 411: a POST without `Content-Length`.
    LengthRequired,
    /// 413: body over `rtmpt.max_body_bytes`.
    PayloadTooLarge,
    /// 431: head over its limit.
    HeadersTooLarge,
    /// 503: tunnel limit reached, or the owning core did not answer.
    ServiceUnavailable,
}

impl Status {
    /// The status line's code and reason.
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::LengthRequired => "411 Length Required",
            Status::PayloadTooLarge => "413 Payload Too Large",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::ServiceUnavailable => "503 Service Unavailable",
        }
    }
}

/// Appends a response head for a body of `content_length` bytes to `out`.
///
/// The exact spelling matters to librtmp, which looks for `HTTP/1.1 200 ` and reads the number
/// 16 bytes after `Content-Length:` (so one space, no other casing).
pub fn write_head(out: &mut Vec<u8>, status: Status, content_length: usize, keep_alive: bool) {
    use std::io::Write;
    let connection = if keep_alive { "Keep-Alive" } else { "close" };
    let _ = write!(
        out,
        "HTTP/1.1 {}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {content_length}\r\n\
         Connection: {connection}\r\nCache-Control: no-cache\r\nServer: corecast\r\n",
        status.line()
    );
    if status == Status::MethodNotAllowed {
        out.extend_from_slice(b"Allow: POST\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> RequestReader {
        RequestReader::new(HttpLimits {
            max_head_bytes: 1024,
            max_body_bytes: 100,
        })
    }

    fn post(path: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-fcs\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn whole_request_with_body() {
        let mut buf = BytesMut::from(&post("/send/ab/1", b"hello")[..]);
        let r = reader().decode(&mut buf).expect("ok").expect("whole");
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, "/send/ab/1");
        assert!(r.keep_alive);
        assert_eq!(&r.body[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_at_a_time_is_incomplete_until_the_last_byte() {
        let wire = post("/send/ab/1", b"0123456789");
        let mut reader = reader();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = reader.decode(&mut buf).expect("ok");
            if i + 1 < wire.len() {
                assert!(got.is_none(), "complete too early at {i}");
            } else {
                assert_eq!(&got.expect("whole").body[..], b"0123456789");
            }
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut wire = post("/idle/ab/1", b"\0");
        wire.extend_from_slice(&post("/send/ab/2", b"xyz"));
        wire.extend_from_slice(b"POST /idle/ab/3 HTTP/1.1\r\nContent-Len");
        let mut buf = BytesMut::from(&wire[..]);
        let mut reader = reader();
        assert_eq!(reader.decode(&mut buf).unwrap().unwrap().path, "/idle/ab/1");
        let second = reader.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (second.path.as_str(), &second.body[..]),
            ("/send/ab/2", &b"xyz"[..])
        );
        assert!(reader.decode(&mut buf).unwrap().is_none());
        assert!(buf.starts_with(b"POST /idle/ab/3"));
    }

    #[test]
    fn connection_close_and_http10() {
        let mut buf = BytesMut::from(
            &b"POST /open/1 HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        );
        assert!(!reader().decode(&mut buf).unwrap().unwrap().keep_alive);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.0\r\n\r\n"[..]);
        let r = reader().decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.method, Method::Other);
        assert!(!r.keep_alive);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"[..]);
        assert!(reader().decode(&mut buf).unwrap().unwrap().keep_alive);
    }

    #[test]
    fn errors_map_to_4xx() {
        let cases: [(&[u8], Status); 6] = [
            (b"\x16\x03\x01garbage\r\n\r\n", Status::BadRequest),
            (b"POST /send/a/1 HTTP/1.1\r\n\r\n", Status::LengthRequired),
            (
                b"POST /send/a/1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Status::LengthRequired,
            ),
            (
                b"POST /send/a/1 HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
                Status::PayloadTooLarge,
            ),
            (
                b"POST /send/a/1 HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"POST /send/a/1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Status::BadRequest,
            ),
        ];
        for (wire, status) in cases {
            let mut buf = BytesMut::from(wire);
            let err = reader().decode(&mut buf).expect_err("must fail");
            assert_eq!(err.status(), status, "{err}");
        }
    }

    #[test]
    fn oversized_head_is_refused_before_it_completes() {
        let mut buf = BytesMut::from(&b"POST /x HTTP/1.1\r\n"[..]);
        buf.extend_from_slice(format!("X-Long: {}\r\n", "a".repeat(2000)).as_bytes());
        let err = reader().decode(&mut buf).expect_err("too big");
        assert_eq!(err.status(), Status::HeadersTooLarge);
        let mut many = String::from("POST /x HTTP/1.1\r\n");
        for i in 0..(MAX_HEADERS + 1) {
            many.push_str(&format!("H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let big = RequestReader::new(HttpLimits {
            max_head_bytes: 64 * 1024,
            max_body_bytes: 100,
        })
        .decode(&mut BytesMut::from(many.as_bytes()))
        .expect_err("too many");
        assert_eq!(big.status(), Status::HeadersTooLarge);
    }

    #[test]
    fn head_is_what_librtmp_parses() {
        let mut out = Vec::new();
        write_head(&mut out, Status::Ok, 17, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        let at = text.find("Content-Length:").unwrap();
        assert_eq!(&text[at + 16..at + 18], "17");
        assert!(text.contains("Content-Type: application/x-fcs\r\n"));
        assert!(text.contains("Connection: Keep-Alive\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        assert!(response.parse(text.as_bytes()).unwrap().is_complete());
        assert_eq!(response.code, Some(200));
    }
}
