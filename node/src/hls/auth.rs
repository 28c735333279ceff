//! Play authorization (`[auth]`) of HTTP plays: HLS playlist requests and HTTP-FLV /
//! WebSocket-FLV viewers ([`crate::flv_http`]).
//!
//! A playlist request (or an FLV request) is a play: the app's play mode decides it, with the `token=` of the
//! playlist URL's query as an RTMP player's stream-name query (`index.m3u8?token=…`). Media
//! is not checked: its random per-publish prefix, learnt only from an authorized playlist, is
//! the secret, so parts and segments stay cacheable by a CDN. Every playlist request is
//! decided (an LL-HLS player reloads several times a second): `open` and `token` cost no I/O;
//! `callback` asks the callback for each, so prefer tokens for HLS.

use std::net::SocketAddr;

use corecast_common::token::Action;
use hyper::StatusCode;

use crate::auth::{AuthRequest, Reason, Verdict};
use crate::core::CoreContext;

/// Why a playlist request was not authorized: the status to answer and the reason.
pub struct Refused {
    /// 403 when refused, 503 when the verdict did not come in time.
    pub status: StatusCode,
    /// The reason, a metric label.
    pub reason: &'static str,
}

/// Decides a play of `app/name` over `surface` (`hls`, `http-flv`: for the log) from `peer`
/// with this query.
pub async fn authorize(
    ctx: &CoreContext,
    surface: &'static str,
    app: &str,
    name: &str,
    query: Option<String>,
    peer: SocketAddr,
) -> Result<(), Refused> {
    let request = AuthRequest {
        action: Action::Play,
        app: app.to_owned(),
        name: name.to_owned(),
        query,
        tc_url_query: None,
        peer,
        connection: 0,
    };
    let auth = ctx.auth();
    let verdict = match auth.decide_now(&request) {
        Some(verdict) => verdict,
        None => {
            let asked = async { Some(auth.authorize(&request).await) };
            let deadline = auth.deadline();
            let late = async {
                glommio::timer::sleep(deadline).await;
                None
            };
            futures_lite::future::or(asked, late)
                .await
                .unwrap_or_else(|| Verdict::refuse(Reason::Timeout))
        }
    };
    let Verdict::Refuse(refusal) = verdict else {
        return Ok(());
    };
    let reason = refusal.reason.as_str();
    ctx.metrics.auth_refused("play", reason);
    tracing::info!(core = ctx.id.0, %peer, app, surface, reason, "http play not authorized");
    let status = if refusal.reason == Reason::Timeout {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::FORBIDDEN
    };
    Err(Refused { status, reason })
}
