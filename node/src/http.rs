//! The HTTP endpoint on every core: `/metrics`, `/healthz`, `/readyz`, the JSON API and
//! HTTP-FLV ([`crate::flv_http`]), the player page ([`crate::player`]).
//!
//! HTTP itself (keep-alive, HEAD, limits, deadlines) is [`crate::httpd`]'s and the API's
//! conventions (JSON errors, paging, the token) are [`crate::api`]'s; this module is the
//! port's route table and its handlers. The API reads the stats board (refreshed once a
//! second by each core) and routes kick/stop requests to the owning core's admin queue. Every
//! error on this port, an unknown path included, is the API's JSON error (but for the player
//! page's 503 when its scripts are missing: a page, for people).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use std::sync::Arc;

use corecast_transport::TlsStream;
use glommio::net::{TcpListener, TcpStream};
use hyper::{Method, StatusCode};
use rustls::{ServerConfig, ServerConnection};
use tracing::info;

use crate::accept::{accept_loop, AcceptSettings, ConnectionKind, Permit};
use crate::api::{self, Access, ApiError, Page};
use crate::core::CoreContext;
use crate::httpd::body::{json, text, with_type};
use crate::httpd::io::Stream;
use crate::httpd::{self, dispatch, ready, Limits, Params, Port, Reply, Request};
use crate::httpd::{Response, Route, Router};
use crate::livestreams;
use crate::shared::{AdminCommand, NodeShared};
use crate::tls::{CurrentServerConfig, TlsError};

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body accepted (the API takes no bodies of note).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Body bytes the requests being read on one core hold together.
const MAX_BODY_BYTES_PER_CORE: usize = 4 * 1024 * 1024;
/// The most HTTP connections per core that `http.max_connections_per_core = 0` gives.
const AUTO_MAX_CONNECTIONS: usize = 1024;
/// The fewest it gives, however low the open-file limit.
const AUTO_MIN_CONNECTIONS: usize = 8;

/// Accepts HTTP connections on this core until the task is dropped; over TLS with the core's
/// current RTMPS certificate when `tls` is given (`http.tls`).
pub async fn serve(ctx: Rc<CoreContext>, listener: TcpListener, tls: Option<CurrentServerConfig>) {
    let cores = ctx.config().effective_cores();
    let max = connection_cap(
        ctx.config().http.max_connections_per_core,
        cores,
        nofile_limit(),
    );
    let settings = AcceptSettings {
        kind: ConnectionKind::Http,
        max_per_core: max,
        nodelay: true,
    };
    if ctx.id.0 == 0 {
        info!(max_per_core = max, "http connection cap");
    }
    let serve_ctx = Rc::clone(&ctx);
    accept_loop(ctx, listener, settings, move |stream, peer, permit| {
        // The certificate as of the accept: a reload affects new connections only.
        let server = tls.as_ref().map(|current| Arc::clone(&current.borrow()));
        let ctx = Rc::clone(&serve_ctx);
        async move {
            match server {
                None => serve_connection(ctx, stream, peer, permit, max).await,
                Some(server) => {
                    // Boxed: the handshake's state (kilobytes) is not carried for the life
                    // of every connection's task, plain ones included.
                    let handshake = Box::pin(tls_handshake(&ctx, stream, peer, server, "https"));
                    if let Some(stream) = handshake.await {
                        serve_connection(ctx, stream, peer, permit, max).await;
                    }
                }
            }
        }
    })
    .await;
}

/// The TLS handshake of an HTTPS (or RTMPTS: `what`) connection, within
/// `rtmps.handshake_timeout_secs`; None (logged and counted by reason) when it fails.
pub(crate) async fn tls_handshake(
    ctx: &Rc<CoreContext>,
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ServerConfig>,
    what: &'static str,
) -> Option<TlsStream<ServerConnection>> {
    // The same per-address handshake rate as RTMPS: a handshake costs far more than a read.
    let listener = if what == "https" {
        "http"
    } else {
        "rtmpt_http"
    };
    if !crate::accept::admit_tls(ctx, listener, peer) {
        return None;
    }
    let timeout = Duration::from_secs(ctx.config().rtmps.handshake_timeout_secs);
    let error = match TlsStream::server(stream, server) {
        Ok(tls) => match tls.handshake(timeout).await {
            Ok(()) => return Some(tls),
            Err(e @ TlsError::HandshakeTimeout(_)) => e,
            Err(e) => {
                tls.shutdown();
                e
            }
        },
        Err(e) => e,
    };
    if !matches!(error, TlsError::Io(_)) {
        ctx.metrics.error(error.as_str());
    }
    info!(core = ctx.id.0, %peer, reason = error.as_str(), error = %error, transport = what, "tls connection closed");
    None
}

/// The per-core HTTP connection cap: `configured`, or when 0 a quarter of the open-file
/// limit split among `cores` (within [`AUTO_MIN_CONNECTIONS`]..=[`AUTO_MAX_CONNECTIONS`]).
/// The other three quarters stay for what the node is for: publishers, players, pulls, and
/// the accept that refuses one connection too many (it needs a descriptor for a moment).
pub fn connection_cap(configured: usize, cores: usize, nofile: u64) -> usize {
    if configured > 0 {
        return configured;
    }
    let share = nofile / 4 / cores.max(1) as u64;
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(AUTO_MIN_CONNECTIONS, AUTO_MAX_CONNECTIONS)
}

/// The process's soft `RLIMIT_NOFILE` (unlimited reads as `u64::MAX`).
fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Serves one accepted HTTP connection until it closes; `_permit` counts it until then.
pub async fn serve_connection(
    ctx: Rc<CoreContext>,
    stream: impl Into<Stream>,
    peer: SocketAddr,
    _permit: Permit,
    max_connections: usize,
) {
    let http = &ctx.config().http;
    let port = Port {
        label: "http",
        limits: Limits {
            max_head_bytes: MAX_HEAD_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            max_body_bytes_per_core: MAX_BODY_BYTES_PER_CORE,
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            request_timeout: Duration::from_secs(http.request_timeout_secs),
        },
        quick_ack: false,
        title_case_headers: false,
        read_batch: Duration::from_millis(http.read_batch_ms),
        max_connections,
        lane: http
            .fast_lane
            .then_some(crate::hls::lane::answer as httpd::fastlane::LaneFn),
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
    method_not_allowed,
};

/// Every route of the port (the OpenAPI document is checked against this table).
pub(crate) static ROUTES: &[Route<CoreContext>] = &[
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
        handler: streams,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/streams/{app}/{name}",
        handler: stream,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/clients",
        handler: clients,
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
    Route {
        method: Method::POST,
        path: "/api/v1/reload",
        handler: reload,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/restream",
        handler: crate::restream::api::list,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        handler: livestreams::openapi,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/livestreams",
        handler: livestreams::create,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/livestreams",
        handler: livestreams::list,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/livestreams/{id}",
        handler: livestreams::get,
    },
    Route {
        method: Method::DELETE,
        path: "/api/v1/livestreams/{id}",
        handler: livestreams::delete,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/livestreams/{id}/disable",
        handler: livestreams::disable,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/livestreams/{id}/enable",
        handler: livestreams::enable,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/livestreams/{id}/reset-key",
        handler: livestreams::reset_key,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/livestreams/{id}/targets",
        handler: livestreams::targets::add,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/livestreams/{id}/targets",
        handler: livestreams::targets::list,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/livestreams/{id}/targets/{target_id}",
        handler: livestreams::targets::get,
    },
    Route {
        method: Method::PATCH,
        path: "/api/v1/livestreams/{id}/targets/{target_id}",
        handler: livestreams::targets::patch,
    },
    Route {
        method: Method::DELETE,
        path: "/api/v1/livestreams/{id}/targets/{target_id}",
        handler: livestreams::targets::delete,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/pulls",
        handler: crate::pull_in::api::add,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/pulls",
        handler: crate::pull_in::api::list,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/pulls/{id}",
        handler: crate::pull_in::api::get,
    },
    Route {
        method: Method::DELETE,
        path: "/api/v1/pulls/{id}",
        handler: crate::pull_in::api::delete,
    },
    Route {
        method: Method::GET,
        path: "/hls/{app}/{name}/index.m3u8",
        handler: crate::hls::serve::playlist,
    },
    Route {
        method: Method::GET,
        path: "/hls/{app}/{name}/plain.m3u8",
        handler: crate::hls::serve::plain_playlist,
    },
    Route {
        method: Method::GET,
        path: "/hls/{app}/{name}/master.m3u8",
        handler: crate::hls::serve::multivariant,
    },
    Route {
        method: Method::GET,
        path: "/hls/{app}/{name}/{prefix}/{file}",
        handler: crate::hls::serve::resource,
    },
    Route {
        method: Method::GET,
        path: "/console",
        handler: livestreams::console_page,
    },
    Route {
        method: Method::GET,
        path: "/console/console.js",
        handler: livestreams::console_script,
    },
    Route {
        method: Method::POST,
        path: "/console/session",
        handler: livestreams::console_sign_in,
    },
    Route {
        method: Method::GET,
        path: "/console/session",
        handler: livestreams::console_session,
    },
    // Before the page: `/play/assets/...` is never a stream named so.
    Route {
        method: Method::GET,
        path: "/play/assets/{file}",
        handler: crate::player::asset,
    },
    Route {
        method: Method::GET,
        path: "/play/{app}/{name}",
        handler: crate::player::page,
    },
    // Last: any `/{app}/{name}.flv` the routes above do not claim (HTTP-FLV).
    Route {
        method: Method::GET,
        path: "/{app}/{name}.flv",
        handler: crate::flv_http::play,
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
    } else if ctx.shared.pull_in.stored_pending() {
        text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else {
        text(StatusCode::OK, "ready\n")
    })
}

fn streams(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    ready(api::reply(read(ctx, &request).and_then(|()| {
        let page = Page::from_query(request.uri().query())?;
        Ok(page.of(ctx.shared.board.streams()))
    })))
}

fn stream(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let (app, name) = (params.get("app"), params.get("name"));
    ready(api::reply(read(ctx, &request).and_then(|()| {
        ctx.shared
            .board
            .streams()
            .into_iter()
            .find(|s| s.app == app && s.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no stream {app}/{name}")))
    })))
}

fn clients(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    ready(api::reply(read(ctx, &request).and_then(|()| {
        let page = Page::from_query(request.uri().query())?;
        Ok(page.of(ctx.shared.board.clients()))
    })))
}

fn kick(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let shared = &ctx.shared;
    ready(respond(write(ctx, &request).and_then(|()| {
        let given = params.get("id");
        let id = given
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("client id {given:?} is not a number")))?;
        if !shared.board.clients().iter().any(|c| c.id == id) {
            return Err(ApiError::not_found(format!("no client {id}")));
        }
        admin(
            shared,
            NodeShared::core_of_connection(id),
            AdminCommand::Kick(id),
        )
    })))
}

fn stop(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let shared = &ctx.shared;
    ready(respond(write(ctx, &request).and_then(|()| {
        let key = format!("{}/{}", params.get("app"), params.get("name"));
        match shared.directory.publisher(&key) {
            Some(publisher) => admin(shared, publisher.core.0, AdminCommand::StopStream(key)),
            None => Err(ApiError::not_found(format!("no stream {key}"))),
        }
    })))
}

/// Reloads the config, as SIGHUP does, and says what happened: 200 `applied` or `unchanged`,
/// 409 when it changes a setting only a restart can, 400 when it does not load.
fn reload(ctx: &Rc<CoreContext>, request: Request, _params: Params) -> Reply {
    use crate::reload::Outcome;
    ready(api::reply(write(ctx, &request).and_then(|()| {
        let Some(reloader) = ctx.shared.reloader.as_ref() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this node cannot reload its config",
            ));
        };
        // Parsing a config file takes well under a millisecond: done here, on the executor.
        let outcome = reloader.reload(&ctx.shared);
        // This core at once; the others on their next housekeeping tick.
        ctx.set_config(&ctx.shared.config());
        match outcome {
            Outcome::Applied { changed } => Ok(serde_json::json!({
                "status": if changed { "applied" } else { "unchanged" }
            })),
            Outcome::Refused { fields } => Err(ApiError::new(
                StatusCode::CONFLICT,
                "restart_required",
                format!(
                    "these settings change only with a restart: {}; the running config stays",
                    fields.join(", ")
                ),
            )),
            Outcome::Invalid(e) => Err(ApiError::bad_request(format!(
                "the config does not load: {e}; the running config stays"
            ))),
        }
    })))
}

/// Whether `request` may read the API (logged when not).
fn read(ctx: &CoreContext, request: &Request) -> Result<(), ApiError> {
    checked(ctx, request, Access::Read)
}

/// Whether `request` may change something (logged when not).
fn write(ctx: &CoreContext, request: &Request) -> Result<(), ApiError> {
    checked(ctx, request, Access::Write)
}

/// The token check, with a refusal logged; a wrong or missing token is also counted
/// (`corecast_errors_total{kind="api_unauthorized"}`), so guessing shows on a dashboard.
pub(crate) fn checked(
    ctx: &CoreContext,
    request: &Request,
    access: Access,
) -> Result<(), ApiError> {
    // A console session (cookie, and CSRF header for a change) stands in for the token.
    let console = livestreams::console::authorize(&ctx.config(), request, access);
    console
        .unwrap_or_else(|| api::authorize(&ctx.config().http, request, access))
        .inspect_err(|e| {
            let (peer, path) = (httpd::peer(request), request.uri().path());
            info!(core = ctx.id.0, %peer, path, reason = e.code, "api request refused");
            if e.status == StatusCode::UNAUTHORIZED {
                ctx.metrics.error("api_unauthorized");
            }
        })
}

/// A write's answer: 202 once the owning core has the command.
fn respond(result: Result<(), ApiError>) -> Response {
    match result {
        Ok(()) => json_status(StatusCode::ACCEPTED, &serde_json::json!({"accepted": true})),
        Err(e) => e.into_response(),
    }
}

fn json_status(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = json(value);
    *response.status_mut() = status;
    response
}

fn admin(shared: &NodeShared, core: usize, command: AdminCommand) -> Result<(), ApiError> {
    match shared.admin.get(core).map(|tx| tx.send(command)) {
        Some(Ok(())) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("core {core} takes no commands (stopping)"),
        )),
    }
}

/// Any path no route knows: a JSON 404, as everywhere in the API.
fn not_found(_: &Rc<CoreContext>, request: &Request) -> Response {
    ApiError::not_found(format!("no such path: {}", request.uri().path())).into_response()
}

/// A known path asked with a method it does not take (the router adds `Allow`).
fn method_not_allowed(_: &Rc<CoreContext>, request: &Request) -> Response {
    let message = format!(
        "{} does not take {}",
        request.uri().path(),
        request.method()
    );
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_is_a_share_of_the_open_file_limit_unless_configured() {
        assert_eq!(connection_cap(50, 4, 256), 50);
        assert_eq!(connection_cap(0, 1, 512), 128);
        assert_eq!(connection_cap(0, 2, 512), 64);
        assert_eq!(connection_cap(0, 8, 64), AUTO_MIN_CONNECTIONS);
        assert_eq!(connection_cap(0, 2, 1 << 20), AUTO_MAX_CONNECTIONS);
        assert_eq!(connection_cap(0, 2, u64::MAX), AUTO_MAX_CONNECTIONS);
    }
}
