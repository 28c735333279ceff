//! `callback` mode: asks the operator's HTTP service whether a publish or play may go ahead.
//!
//! One `POST` of a small JSON document (`action`, `app`, `name`, `query`, `tc_url_query`,
//! `client`, `connection`) to the app's `callback_url`: a 2xx answer allows, any other status
//! refuses (`callback_refused`). A service that cannot be asked in `callback_timeout_ms`
//! (no DNS answer, connection refused, no response, a broken one) is `callback_unavailable`,
//! which refuses unless `callback_on_error = "allow"`. The session asks once per action and
//! keeps an allow for its life (see `session::authorize`).
//!
//! The client is hyper's HTTP/1.1 client over a glommio `TcpStream` on the session's own core:
//! no tokio runtime, no thread per request. Its connection future is polled together with the
//! request, so dropping the request (the timeout) drops the connection too. Name lookups
//! block, so they run on glommio's blocking pool.
//!
//! The query strings go to the operator's service (it is the authority that reads them), but
//! never into a log line.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, StatusCode, Uri};
use tracing::warn;

use super::{AuthRequest, Grant, Reason, Verdict, VerdictFuture};
use crate::config::{AuthConfig, AuthMode, OnError};
use crate::util::with_timeout;

/// Why a callback could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The URL is not `http://host[:port]/path`.
    #[error("bad callback URL")]
    BadUrl,
    /// The host name did not resolve.
    #[error("callback host did not resolve")]
    Resolve,
    /// Connecting or writing failed.
    #[error("callback connection: {0}")]
    Io(#[from] io::Error),
    /// hyper refused the exchange (a broken response, a closed connection).
    #[error("callback exchange: {0}")]
    Http(#[from] hyper::Error),
    /// No response within the timeout.
    #[error("callback did not answer in time")]
    Timeout,
}

/// The verdict of the callback for `request`.
pub fn ask(config: &AuthConfig, request: &AuthRequest) -> VerdictFuture {
    let url = config.callback_url(&request.app).to_owned();
    let limit = Duration::from_millis(config.callback_timeout_ms);
    let on_error = config.callback_on_error;
    let body = payload(request);
    let (connection, action) = (request.connection, request.action.as_str());
    Box::pin(async move {
        let answer = with_timeout(limit, post(&url, body))
            .await
            .unwrap_or(Err(CallbackError::Timeout));
        match answer {
            Ok(status) if status.is_success() => allow(),
            Ok(status) => {
                warn!(
                    conn = connection,
                    action,
                    status = status.as_u16(),
                    "callback refused"
                );
                Verdict::refuse(Reason::CallbackRefused)
            }
            Err(e) => {
                warn!(conn = connection, action, error = %e, "callback unavailable");
                unavailable(on_error)
            }
        }
    })
}

fn allow() -> Verdict {
    Verdict::Allow {
        grant: Grant {
            mode: AuthMode::Callback,
            key_id: None,
            name: None,
        },
    }
}

/// What an unanswered callback means.
fn unavailable(on_error: OnError) -> Verdict {
    match on_error {
        OnError::Refuse => Verdict::refuse(Reason::CallbackUnavailable),
        OnError::Allow => allow(),
    }
}

/// The JSON document the service gets.
fn payload(request: &AuthRequest) -> Bytes {
    let doc = serde_json::json!({
        "action": request.action.as_str(),
        "app": request.app,
        "name": request.name,
        "query": request.query,
        "tc_url_query": request.tc_url_query,
        "client": request.peer.to_string(),
        "connection": request.connection,
    });
    Bytes::from(doc.to_string())
}

/// POSTs `body` to `url`; the response's status.
async fn post(url: &str, body: Bytes) -> Result<StatusCode, CallbackError> {
    let uri: Uri = url.parse().map_err(|_| CallbackError::BadUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(CallbackError::BadUrl);
    }
    let host = uri.host().ok_or(CallbackError::BadUrl)?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let addr = resolve(&host, port).await?;
    let stream = TcpStream::connect(addr).await.map_err(io::Error::from)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(Io(stream)).await?;
    let authority = uri.authority().map_or(host, |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|_| CallbackError::BadUrl)?;
    let exchange = async move { Ok(sender.send_request(request).await?.status()) };
    // A connection that ends cleanly has handed its response over (or failed the request,
    // which `exchange` reports): only its errors decide.
    let driver = async move {
        connection.await?;
        std::future::pending().await
    };
    futures_lite::future::or(exchange, driver).await
}

/// The address of `host`: an IP literal as is, a name through the blocking pool.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, CallbackError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = host.to_owned();
    glommio::executor()
        .spawn_blocking(move || (name.as_str(), port).to_socket_addrs().ok()?.next())
        .await
        .ok_or(CallbackError::Resolve)
}

/// hyper's I/O traits over a glommio `TcpStream`. Callback answers are small, so reads go
/// through a stack buffer (no uninitialised memory to reason about).
struct Io(TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut tmp = [0u8; 4096];
        let want = buf.remaining().min(tmp.len());
        match Pin::new(&mut self.0).poll_read(cx, &mut tmp[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&tmp[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
