//! The HTTP endpoint on every core: `/metrics`, `/healthz`, `/readyz` and the JSON API.
//!
//! Requests are framed with `httparse` (head size, header count and body size are bounded);
//! keep-alive is supported. The API reads the stats board (refreshed once a second by each
//! core) and routes kick/stop requests to the owning core's admin queue.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use serde::Serialize;
use tracing::debug;

use crate::accept::{accept_loop, AcceptSettings, ConnectionKind, Permit};
use crate::core::CoreContext;
use crate::shared::{AdminCommand, NodeShared};

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (the API takes no bodies of note).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// HTTP connections one core serves at once; further ones are closed at accept.
const MAX_CONNECTIONS_PER_CORE: usize = 1024;
/// A connection idle this long between requests is closed.
const IDLE: Duration = Duration::from_secs(30);

/// One response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    fn json<T: Serialize>(value: &T) -> Response {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => Response {
                status: 200,
                content_type: "application/json",
                body,
            },
            Err(_) => Response::text(500, "serialization failed\n"),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Accepts HTTP connections on this core until the task is dropped.
pub async fn serve(ctx: Rc<CoreContext>, listener: TcpListener) {
    let settings = AcceptSettings {
        kind: ConnectionKind::Http,
        max_per_core: MAX_CONNECTIONS_PER_CORE,
        nodelay: true,
    };
    let serve_ctx = Rc::clone(&ctx);
    accept_loop(ctx, listener, settings, move |stream, peer, permit| {
        connection(Rc::clone(&serve_ctx), stream, peer, permit)
    })
    .await;
}

/// One HTTP connection; `_permit` counts it until it ends.
async fn connection(
    ctx: Rc<CoreContext>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _permit: Permit,
) {
    let peer = Some(peer);
    let _ = stream.set_read_timeout(Some(IDLE));
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (request, consumed) = match read_request(&mut stream, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                debug!(?peer, status, "bad http request");
                let _ =
                    write_response(&mut stream, &Response::text(status, "bad request\n"), false)
                        .await;
                return;
            }
        };
        buf.drain(..consumed);
        let response = route(&ctx.shared, &request);
        if write_response(&mut stream, &response, request.keep_alive)
            .await
            .is_err()
            || !request.keep_alive
        {
            return;
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// `Authorization: Bearer` token, if any.
    pub bearer: Option<String>,
    /// Whether the connection stays open.
    pub keep_alive: bool,
}

/// Parses one request from the front of `buf`: Ok(Some((request, bytes consumed))),
/// Ok(None) when more input is needed, Err(status) when it is malformed or too big.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(431),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let mut content_length = 0usize;
    let mut bearer = None;
    let mut connection_close = req.version == Some(0);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| 400u16)?.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| 400u16)?;
        } else if h.name.eq_ignore_ascii_case("authorization") {
            bearer = value.strip_prefix("Bearer ").map(str::to_owned);
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_close = value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(400);
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(413);
    }
    if buf.len() < head_len + content_length {
        return Ok(None);
    }
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/").to_owned();
    Ok(Some((
        Request {
            method: req.method.unwrap_or("GET").to_owned(),
            path,
            bearer,
            keep_alive: !connection_close,
        },
        head_len + content_length,
    )))
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(Request, usize)>, u16> {
    loop {
        if !buf.is_empty() {
            if let Some(r) = parse_request(buf)? {
                return Ok(Some(r));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: {}\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&response.body);
    stream.write_all(&out).await
}

/// Answers one request.
pub fn route(shared: &NodeShared, request: &Request) -> Response {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let method = request.method.as_str();
    match (method, segments.as_slice()) {
        ("GET", ["metrics"]) => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: shared.metrics.render().into_bytes(),
        },
        ("GET", ["healthz"]) => Response::text(200, "ok\n"),
        ("GET", ["readyz"]) if shared.is_draining() => Response::text(503, "draining\n"),
        ("GET", ["readyz"]) => Response::text(200, "ready\n"),
        ("GET", ["api", "v1", "streams"]) => Response::json(&shared.board.streams()),
        ("GET", ["api", "v1", "streams", app, name]) => {
            match shared
                .board
                .streams()
                .into_iter()
                .find(|s| s.app == *app && s.name == *name)
            {
                Some(stream) => Response::json(&stream),
                None => Response::text(404, "no such stream\n"),
            }
        }
        ("GET", ["api", "v1", "clients"]) => Response::json(&shared.board.clients()),
        ("POST", ["api", "v1", "clients", id, "kick"]) => authorized(shared, request, || {
            let Ok(id) = id.parse::<u64>() else {
                return Response::text(400, "bad client id\n");
            };
            if !shared.board.clients().iter().any(|c| c.id == id) {
                return Response::text(404, "no such client\n");
            }
            admin(
                shared,
                NodeShared::core_of_connection(id),
                AdminCommand::Kick(id),
            )
        }),
        ("POST", ["api", "v1", "streams", app, name, "stop"]) => {
            authorized(shared, request, || {
                let key = format!("{app}/{name}");
                match shared.directory.publisher(&key) {
                    Some(publisher) => {
                        admin(shared, publisher.core.0, AdminCommand::StopStream(key))
                    }
                    None => Response::text(404, "no such stream\n"),
                }
            })
        }
        (_, ["metrics"] | ["healthz"] | ["readyz"] | ["api", "v1", ..]) => {
            Response::text(405, "method not allowed\n")
        }
        _ => Response::text(404, "not found\n"),
    }
}

fn authorized(shared: &NodeShared, request: &Request, f: impl FnOnce() -> Response) -> Response {
    let token = &shared.config.http.api_token;
    if token.is_empty() {
        return Response::text(
            403,
            "the API's write endpoints are disabled (http.api_token)\n",
        );
    }
    match &request.bearer {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => f(),
        _ => Response::text(401, "missing or wrong bearer token\n"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn admin(shared: &NodeShared, core: usize, command: AdminCommand) -> Response {
    match shared.admin.get(core).map(|tx| tx.send(command)) {
        Some(Ok(())) => Response::text(202, "accepted\n"),
        _ => Response::text(404, "no such core\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_with_keep_alive_and_bearer() {
        let raw = b"POST /api/v1/clients/5/kick?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nContent-Length: 2\r\n\r\nhiGET /";
        let (req, used) = parse_request(raw).expect("valid").expect("complete");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/api/v1/clients/5/kick");
        assert_eq!(req.bearer.as_deref(), Some("s3cret"));
        assert!(req.keep_alive);
        assert_eq!(&raw[used..], b"GET /");
    }

    #[test]
    fn incomplete_and_malformed_and_oversized() {
        assert!(matches!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost"),
            Ok(None)
        ));
        assert_eq!(parse_request(b"\x00\x01 garbage\r\n\r\n").err(), Some(400));
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(parse_request(big.as_bytes()).err(), Some(413));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 1));
        assert_eq!(parse_request(&long).err(), Some(431));
    }

    #[test]
    fn http_1_0_closes() {
        let (req, _) = parse_request(b"GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert!(!req.keep_alive);
    }
}
