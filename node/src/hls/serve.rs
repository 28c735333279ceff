//! The HLS routes on `http.listen`: playlists (LL and plain) with blocking reload, and the
//! init segment, segments and parts under the publish's prefix.
//!
//! - `/hls/{app}/{name}/index.m3u8`: the LL-HLS playlist; `?ll=0` (or `plain.m3u8`) the same
//!   without LL tags. `_HLS_msn`/`_HLS_part` park the request until that part exists (at most
//!   the hold below, then 503), 400 when malformed or out of range.
//! - `/hls/{app}/{name}/master.m3u8`: the multivariant playlist naming `index.m3u8`.
//! - `/hls/{app}/{name}/{prefix}/{file}`: `init.mp4`, `s{n}.m4s`, `p{n}.{i}.m4s`; the hinted
//!   part is held until it exists.
//!
//! Playlists are subject to `[auth]`'s play mode (see [`super::auth`]); media is not.
//!
//! On an edge a playlist request counts as a viewer of the stream, so the edge pulls it
//! (see [`super::interest`]) and the request waits for it within the hold.
//!
//! Playlists are `max-age=1`; media is immutable for a year (the prefix changes with every
//! publish, so a name never means two things). Every answer carries
//! `Access-Control-Allow-Origin: *`, errors included, so browsers see them.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corecast_hls::blocking::{self, parse_query, Answer};
use corecast_hls::playlist::{multivariant_playlist, peak_bandwidth};
use corecast_hls::{Flavor, Resource};
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use hyper::StatusCode;

use super::notify::Notify;
use super::{interest, HlsStream};
use crate::core::CoreContext;
use crate::httpd::{ready, Body, Params, Reply, Request, Response};

/// Playlist media type (RFC 8216bis 4).
pub(crate) const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Playlists change with every part.
pub(crate) const PLAYLIST_CACHE: &str = "max-age=1";
/// Media never changes under its name.
pub(crate) const MEDIA_CACHE: &str = "public, max-age=31536000, immutable";

/// `/hls/{app}/{name}/index.m3u8`.
pub fn playlist(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let query = request.uri().query().unwrap_or("");
    let plain = query.split('&').any(|pair| pair == "ll=0");
    serve_playlist(ctx, &request, params, plain)
}

/// `/hls/{app}/{name}/plain.m3u8`: the playlist for players without LL-HLS.
pub fn plain_playlist(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    serve_playlist(ctx, &request, params, true)
}

/// `/hls/{app}/{name}/master.m3u8`: the multivariant playlist naming `index.m3u8` with its
/// codecs, resolution and peak bit rate (held until the init segment and a part exist).
pub fn multivariant(ctx: &Rc<CoreContext>, request: Request, mut params: Params) -> Reply {
    let deadline = Instant::now() + hold(ctx);
    let (ctx, key) = (Rc::clone(ctx), key_of(&params));
    let check = Check::of(&request, &mut params);
    let media_uri = media_uri(request.uri().query());
    Box::pin(async move {
        if let Err(refused) = check.run(&ctx).await {
            return refused;
        }
        let Some(stream) = stream_for(&ctx, &key, deadline).await else {
            return error(StatusCode::NOT_FOUND, "no such stream");
        };
        loop {
            let seen = stream.changed.version();
            let text = {
                let muxer = stream.muxer();
                // Held until a part exists too: before it, BANDWIDTH would be a guess.
                match multivariant_playlist(&muxer, &media_uri) {
                    Some(text) if peak_bandwidth(&muxer) > 0 => Ok(text),
                    _ => Err(muxer.ended()),
                }
            };
            match text {
                Ok(text) => return media(PLAYLIST_TYPE, PLAYLIST_CACHE, vec![Bytes::from(text)]),
                Err(true) => return error(StatusCode::NOT_FOUND, "stream ended"),
                Err(false) => {}
            }
            if !wait(&stream.changed, seen, deadline).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, "not ready in time");
            }
        }
    })
}

fn serve_playlist(
    ctx: &Rc<CoreContext>,
    request: &Request,
    mut params: Params,
    plain: bool,
) -> Reply {
    let query = match parse_query(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(e) => {
            ctx.metrics.error("hls_bad_query");
            return ready(error(StatusCode::BAD_REQUEST, &e.to_string()));
        }
    };
    let flavor = if plain {
        Flavor::Plain
    } else {
        Flavor::LowLatency
    };
    let deadline = Instant::now() + hold(ctx);
    let (ctx, key) = (Rc::clone(ctx), key_of(&params));
    let check = Check::of(request, &mut params);
    Box::pin(async move {
        if let Err(refused) = check.run(&ctx).await {
            return refused;
        }
        let Some(stream) = stream_for(&ctx, &key, deadline).await else {
            return error(StatusCode::NOT_FOUND, "no such stream");
        };
        loop {
            let seen = stream.changed.version();
            let answer = {
                let muxer = stream.muxer();
                let readiness = match flavor {
                    Flavor::Plain => Answer::Ready(()),
                    _ => blocking::playlist_readiness(&muxer, query),
                };
                match readiness {
                    Answer::Ready(()) => match stream.rendered.get(&muxer, flavor) {
                        Some(text) => Answer::Ready(text),
                        None if muxer.ended() => Answer::NotFound,
                        None => Answer::Wait,
                    },
                    Answer::Wait => Answer::Wait,
                    Answer::BadRequest => Answer::BadRequest,
                    Answer::NotFound => Answer::NotFound,
                }
            };
            match answer {
                Answer::Ready(text) => return media(PLAYLIST_TYPE, PLAYLIST_CACHE, vec![text]),
                Answer::BadRequest => {
                    return error(StatusCode::BAD_REQUEST, "beyond the live edge")
                }
                Answer::NotFound => return error(StatusCode::NOT_FOUND, "stream ended"),
                Answer::Wait => {}
            }
            if !wait(&stream.changed, seen, deadline).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, "not ready in time");
            }
        }
    })
}

/// `/hls/{app}/{name}/{prefix}/{file}`.
pub fn resource(ctx: &Rc<CoreContext>, _: Request, params: Params) -> Reply {
    let Some(resource) = Resource::parse(params.get("file")) else {
        return ready(error(StatusCode::NOT_FOUND, "no such resource"));
    };
    let stream = find(ctx, &params).filter(|s| s.prefix == params.get("prefix"));
    let Some(stream) = stream else {
        return ready(error(StatusCode::NOT_FOUND, "no such stream or publish"));
    };
    let content_type = match resource {
        Resource::Init => "video/mp4",
        _ => "video/iso.segment",
    };
    let deadline = Instant::now() + hold(ctx);
    Box::pin(async move {
        loop {
            let seen = stream.changed.version();
            let answer = blocking::resource(&stream.muxer(), resource);
            match answer {
                Answer::Ready(body) => return media(content_type, MEDIA_CACHE, body),
                Answer::BadRequest => return error(StatusCode::BAD_REQUEST, "out of range"),
                Answer::NotFound => return error(StatusCode::NOT_FOUND, "no such resource"),
                Answer::Wait => {}
            }
            if !wait(&stream.changed, seen, deadline).await {
                return error(StatusCode::SERVICE_UNAVAILABLE, "not ready in time");
            }
        }
    })
}

/// The media playlist URI the multivariant playlist names: `index.m3u8`, carrying the
/// request's play token (when it is plain URL-safe text), which the media playlist needs too.
fn media_uri(query: Option<&str>) -> String {
    let token = query
        .and_then(corecast_common::token::from_query)
        .filter(|t| {
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        });
    match token {
        Some(token) => format!("index.m3u8?token={token}"),
        None => "index.m3u8".to_owned(),
    }
}

/// What play authorization needs of a playlist request, taken before the handler's future.
struct Check {
    app: String,
    name: String,
    query: Option<String>,
    peer: std::net::SocketAddr,
}

impl Check {
    /// Takes the app and name out of `params` (the handler needs them no more).
    fn of(request: &Request, params: &mut Params) -> Check {
        Check {
            app: params.take("app"),
            name: params.take("name"),
            query: request.uri().query().map(str::to_owned),
            peer: crate::httpd::peer(request),
        }
    }

    /// `[auth]`'s play verdict: Ok, or the answer to send.
    async fn run(self, ctx: &CoreContext) -> Result<(), Response> {
        super::auth::authorize(ctx, "hls", &self.app, &self.name, self.query, self.peer)
            .await
            .map_err(|refused| {
                let message = format!("play not authorized: {}", refused.reason);
                error(refused.status, &message)
            })
    }
}

/// `app/name`, the key of the stream map (joined without `format!`'s machinery: every
/// request builds one).
fn key_of(params: &Params) -> String {
    [params.get("app"), "/", params.get("name")].concat()
}

fn find(ctx: &CoreContext, params: &Params) -> Option<Arc<HlsStream>> {
    ctx.shared.hls.get(&key_of(params))
}

/// The live stream `key`. On a node that pulls (an edge) the request counts as a viewer
/// ([`interest::touch`]) and waits, within `deadline`, for the pull to bring the stream.
async fn stream_for(ctx: &Rc<CoreContext>, key: &str, deadline: Instant) -> Option<Arc<HlsStream>> {
    interest::touch(ctx, key);
    loop {
        let seen = ctx.shared.hls.started.version();
        if let Some(stream) = ctx.shared.hls.get(key) {
            return Some(stream);
        }
        if !ctx.config().cluster.pulls() {
            return None;
        }
        if !wait(&ctx.shared.hls.started, seen, deadline).await {
            interest::release(ctx, key);
            return None;
        }
    }
}

/// How long a blocking request is held: within the port's request deadline. (An edge's
/// HTTP-FLV request waits as long for its pull.)
pub fn hold(ctx: &CoreContext) -> Duration {
    Duration::from_secs(
        ctx.config()
            .http
            .request_timeout_secs
            .saturating_sub(1)
            .max(1),
    )
}

/// Waits for `notify` to count past `seen`; false at the deadline.
async fn wait(notify: &Notify, seen: u64, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let changed = async {
        notify.changed(seen).await;
        true
    };
    let timeout = async {
        glommio::timer::sleep(left).await;
        false
    };
    futures_lite::future::or(changed, timeout).await
}

fn media(content_type: &'static str, cache: &'static str, chunks: Vec<Bytes>) -> Response {
    let mut response = Response::new(Body::from_chunks(chunks));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut response = Response::new(Body::from(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}
