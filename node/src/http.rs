//! The HTTP endpoint on every core: `/metrics`, `/healthz`, `/readyz` and the JSON API.
//!
//! HTTP itself (keep-alive, HEAD, limits, deadlines) is [`crate::httpd`]'s; this module is
//! the port's route table. The API reads the stats board (refreshed once a second by each
//! core) and routes kick/stop requests to the owning core's admin queue.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};

use crate::accept::{accept_loop, AcceptSettings, ConnectionKind, Permit};
use crate::core::CoreContext;
use crate::httpd::body::{json, text, with_type};
use crate::httpd::{self, dispatch, not_found, ready, Limits, Params, Port, Reply, Request};
use crate::httpd::{Response, Route, Router};
use crate::shared::{AdminCommand, NodeShared};

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (the API takes no bodies of note).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// HTTP connections one core serves at once; further ones are closed at accept.
const MAX_CONNECTIONS_PER_CORE: usize = 1024;

/// Accepts HTTP connections on this core until the task is dropped.
pub async fn serve(ctx: Rc<CoreContext>, listener: TcpListener) {
    let settings = AcceptSettings {
        kind: ConnectionKind::Http,
        max_per_core: MAX_CONNECTIONS_PER_CORE,
        nodelay: true,
    };
    let serve_ctx = Rc::clone(&ctx);
    accept_loop(ctx, listener, settings, move |stream, peer, permit| {
        serve_connection(Rc::clone(&serve_ctx), stream, peer, permit)
    })
    .await;
}

/// Serves one accepted HTTP connection until it closes; `_permit` counts it until then.
pub async fn serve_connection(
    ctx: Rc<CoreContext>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: Permit,
) {
    let http = &ctx.config.http;
    let port = Port {
        label: "http",
        limits: Limits {
            max_head_bytes: MAX_HEAD_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            request_timeout: Duration::from_secs(http.request_timeout_secs),
        },
        quick_ack: false,
    };
    let routes = Rc::clone(&ctx);
    httpd::serve(&ctx, stream, peer, port, move |request| {
        dispatch(&ROUTER, &routes, request)
    })
    .await;
}

/// The port's routes.
static ROUTER: Router<CoreContext> = Router {
    routes: ROUTES,
    not_found,
};

static ROUTES: &[Route<CoreContext>] = &[
    Route {
        method: Method::GET,
        path: "/metrics",
        handler: metrics,
    },
    Route {
        method: Method::GET,
        path: "/healthz",
        handler: |_, _, _| ready(text(StatusCode::OK, "ok\n")),
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        handler: readyz,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/streams",
        handler: |ctx, _, _| ready(json(&ctx.shared.board.streams())),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/streams/{app}/{name}",
        handler: stream,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/clients",
        handler: |ctx, _, _| ready(json(&ctx.shared.board.clients())),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/clients/{id}/kick",
        handler: kick,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/streams/{app}/{name}/stop",
        handler: stop,
    },
];

fn metrics(ctx: &Rc<CoreContext>, _: Request, _: Params) -> Reply {
    ready(with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        ctx.shared.metrics.render().into_bytes(),
    ))
}

fn readyz(ctx: &Rc<CoreContext>, _: Request, _: Params) -> Reply {
    ready(if ctx.shared.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::OK, "ready\n")
    })
}

fn stream(ctx: &Rc<CoreContext>, _: Request, params: Params) -> Reply {
    let (app, name) = (params.get("app"), params.get("name"));
    let found = ctx
        .shared
        .board
        .streams()
        .into_iter()
        .find(|s| s.app == app && s.name == name);
    ready(match found {
        Some(stream) => json(&stream),
        None => text(StatusCode::NOT_FOUND, "no such stream\n"),
    })
}

fn kick(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let shared = &ctx.shared;
    ready(authorized(shared, &request, || {
        let Ok(id) = params.get("id").parse::<u64>() else {
            return text(StatusCode::BAD_REQUEST, "bad client id\n");
        };
        if !shared.board.clients().iter().any(|c| c.id == id) {
            return text(StatusCode::NOT_FOUND, "no such client\n");
        }
        admin(
            shared,
            NodeShared::core_of_connection(id),
            AdminCommand::Kick(id),
        )
    }))
}

fn stop(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let shared = &ctx.shared;
    ready(authorized(shared, &request, || {
        let key = format!("{}/{}", params.get("app"), params.get("name"));
        match shared.directory.publisher(&key) {
            Some(publisher) => admin(shared, publisher.core.0, AdminCommand::StopStream(key)),
            None => text(StatusCode::NOT_FOUND, "no such stream\n"),
        }
    }))
}

/// Runs `f` if the request carries the API token.
fn authorized(shared: &NodeShared, request: &Request, f: impl FnOnce() -> Response) -> Response {
    let token = &shared.config.http.api_token;
    if token.is_empty() {
        return text(
            StatusCode::FORBIDDEN,
            "the API's write endpoints are disabled (http.api_token)\n",
        );
    }
    match bearer(request) {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => f(),
        _ => text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n"),
    }
}

/// The `Authorization: Bearer` token, if any.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    value.trim().strip_prefix("Bearer ")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn admin(shared: &NodeShared, core: usize, command: AdminCommand) -> Response {
    match shared.admin.get(core).map(|tx| tx.send(command)) {
        Some(Ok(())) => text(StatusCode::ACCEPTED, "accepted\n"),
        _ => text(StatusCode::NOT_FOUND, "no such core\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request {
        let mut builder = hyper::Request::builder().method(Method::POST).uri("/x");
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        builder.body(bytes::Bytes::new()).expect("request")
    }

    #[test]
    fn bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer(&request(Some("Bearer s3cret"))), Some("s3cret"));
        assert_eq!(bearer(&request(Some("Basic abc"))), None);
        assert_eq!(bearer(&request(None)), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
    }
}
