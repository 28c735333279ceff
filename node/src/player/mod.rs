//! The player page on `http.listen`: `GET /play/{app}/{name}` plays the live stream in a
//! browser, with hls.js in low-latency mode on the stream's LL-HLS playlist
//! (`/hls/{app}/{name}/index.m3u8`, the page's `?token=` passed on) or, with `?via=flv` or
//! its button, with mpegts.js on WebSocket-FLV (`ws(s)://host/{app}/{name}.flv`).
//!
//! The page is static: its script reads the app, the name and the token from its own URL,
//! so nothing from the request is ever written into the HTML. Its scripts are served under
//! `/play/assets/` ([`assets`]): the players' minified files as npm installed them, and the
//! page's own script and style. The page's `Content-Security-Policy` lets it run only those
//! (no inline script or style), fetch and open WebSockets to this origin only, and play
//! `blob:` media (Media Source Extensions); `Referrer-Policy: no-referrer` keeps a token in
//! the page's URL from leaking to other sites.
//!
//! What is refused, and why (each logged and counted in `corecast_errors_total`):
//! - an app named like the node's own paths ([`crate::flv_http::RESERVED_APPS`]): 404;
//! - an app or name no stream can have (a `/`, a control character, longer than
//!   [`MAX_NAME_BYTES`]): 400;
//! - the page while the players' files are missing: 503, a page naming `npm ci --prefix player`.
//!
//! A stream that is not live yet is no refusal: the page waits for it, showing so.

pub mod assets;

use std::rc::Rc;

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;
use tracing::info;

use crate::api::ApiError;
use crate::core::CoreContext;
use crate::httpd::body::with_type;
use crate::httpd::{self, ready, Params, Reply, Request, Response};

/// Every reason a request is refused for (`corecast_errors_total{kind}`), so each series
/// exists at zero from start-up.
pub const ERROR_KINDS: [&str; 3] = [
    "player_reserved_app",
    "player_bad_name",
    "player_assets_missing",
];

/// The longest app or stream name the page takes.
pub const MAX_NAME_BYTES: usize = 255;

/// The page's policy: its own scripts and style only; fetches and WebSockets to this origin;
/// media from `blob:` (MSE) and workers from `blob:` (hls.js makes its worker so).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Scripts and style for a year when asked by their current `?v=` (the name changes with
/// the content).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const PAGE: &str = include_str!("page.html");

/// Why the page for `app`/`name` is refused, if it is.
pub fn refusal(app: &str, name: &str) -> Option<&'static str> {
    let bad = |s: &str| {
        s.is_empty()
            || s.len() > MAX_NAME_BYTES
            || s.contains('/')
            || s.chars().any(char::is_control)
    };
    if crate::flv_http::RESERVED_APPS.contains(&app) {
        Some("player_reserved_app")
    } else if bad(app) || bad(name) {
        Some("player_bad_name")
    } else {
        None
    }
}

/// `GET /play/{app}/{name}`.
pub fn page(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let config = &ctx.config().player_page;
    if !config.enabled {
        return ready(off());
    }
    let (app, name) = (params.get("app"), params.get("name"));
    let peer = httpd::peer(&request);
    let refuse = |reason: &'static str, error: ApiError| {
        info!(core = ctx.id.0, %peer, app, reason, "player page refused");
        ctx.metrics.error(reason);
        ready(error.into_response())
    };
    match refusal(app, name) {
        Some(reason @ "player_reserved_app") => {
            return refuse(
                reason,
                ApiError::not_found(format!("no stream {app}/{name}")),
            )
        }
        Some(reason) => {
            let error = ApiError::bad_request(format!("{app:?}/{name:?} is not a stream name"));
            return refuse(reason, error);
        }
        None => {}
    }
    let assets = assets::current(config);
    if let Err(why) = &assets.files {
        info!(core = ctx.id.0, %peer, reason = "player_assets_missing", "player page refused: {why}");
        ctx.metrics.error("player_assets_missing");
        return ready(secured(with_type(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            missing_page(why),
        )));
    }
    let html = PAGE
        .replace("{{style}}", &assets.url("player.css"))
        .replace("{{hls}}", &assets.url("hls.min.js"))
        .replace("{{mpegts}}", &assets.url("mpegts.js"))
        .replace("{{script}}", &assets.url("player.js"));
    ready(secured(with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        html.into_bytes(),
    )))
}

/// `GET /play/assets/{file}`: a script or the style.
pub fn asset(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let config = &ctx.config().player_page;
    if !config.enabled {
        return ready(off());
    }
    let file = params.get("file");
    let assets = assets::current(config);
    let found = match assets.get(file) {
        Ok(Some(asset)) => asset,
        Ok(None) => {
            return ready(ApiError::not_found(format!("no asset {file}")).into_response());
        }
        Err(why) => {
            ctx.metrics.error("player_assets_missing");
            let error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why);
            return ready(error.into_response());
        }
    };
    let current = query_value(request.uri().query(), "v") == Some(found.tag.as_str());
    let mut response = with_type(StatusCode::OK, found.content_type, found.body);
    let headers = response.headers_mut();
    if current {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    ready(response)
}

/// The value of `key` in a query string, as sent.
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Adds the page's security headers.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// The page said instead when the players' files are missing.
fn missing_page(why: &str) -> Vec<u8> {
    let escaped = why
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Player unavailable</title></head><body>\n<h1>The player is not installed</h1>\n\
         <p>{escaped}</p>\n<p>Run <code>{}</code> in the Corecast repository (or \
         <code>make run</code>, which does), then reload this page.</p>\n</body></html>\n",
        assets::INSTALL
    )
    .into_bytes()
}

fn off() -> Response {
    ApiError::not_found("the player page is off ([player_page] enabled = true turns it on)")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_own_paths_and_impossible_names_are_refused() {
        for app in crate::flv_http::RESERVED_APPS {
            assert_eq!(refusal(app, "x"), Some("player_reserved_app"));
        }
        assert_eq!(refusal("live", "x"), None);
        assert_eq!(refusal("live", "a b.ü"), None);
        assert_eq!(refusal("live", "a/b"), Some("player_bad_name"));
        assert_eq!(refusal("live", "a\nb"), Some("player_bad_name"));
        assert_eq!(refusal("", "x"), Some("player_bad_name"));
        assert_eq!(refusal("live", &"n".repeat(256)), Some("player_bad_name"));
        for reason in [refusal("api", "x"), refusal("", "x")]
            .into_iter()
            .flatten()
        {
            assert!(ERROR_KINDS.contains(&reason));
        }
    }

    #[test]
    fn the_version_is_read_from_the_query() {
        assert_eq!(query_value(Some("v=abc"), "v"), Some("abc"));
        assert_eq!(query_value(Some("x=1&v=abc"), "v"), Some("abc"));
        assert_eq!(query_value(Some("vv=1"), "v"), None);
        assert_eq!(query_value(None, "v"), None);
    }

    #[test]
    fn the_missing_page_escapes_what_it_quotes() {
        let page = String::from_utf8(missing_page("<dir>")).expect("utf-8");
        assert!(page.contains("&lt;dir&gt;"));
        assert!(page.contains(assets::INSTALL));
    }

    #[test]
    fn the_page_names_every_asset_it_needs() {
        for slot in ["{{style}}", "{{hls}}", "{{mpegts}}", "{{script}}"] {
            assert!(PAGE.contains(slot), "{slot}");
        }
        assert!(!PAGE.contains("<script>"), "no inline script under the CSP");
        assert!(!PAGE.contains("style="), "no inline style under the CSP");
    }
}
