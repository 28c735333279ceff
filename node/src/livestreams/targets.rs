//! A livestream's push targets through the API (`/api/v1/livestreams/{id}/targets`): add,
//! list, get, change (enable/disable), delete; each shown with its URL redacted and its live
//! push state joined in from the restream engine.
//!
//! The URL is checked on the way in ([`super::targets_url`]); an answer and a log show it as
//! `SCHEME://HOST:PORT/APP/…`, never the key. Calls go to the registry thread like the
//! livestream calls ([`super`]); the token rules are the API's.

use std::rc::Rc;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::targets_url::{self, redact};
use super::{allowed, missing, unavailable, with_status, MAX_NAME_CHARS};
use crate::api::{self, Access, ApiError};
use crate::core::CoreContext;
use crate::httpd::body::with_type;
use crate::httpd::{Params, Reply, Request};
use crate::registry::targets::{self, AddRefusal, Change, Target};
use crate::registry::{key, now_ms, Registry};

/// A target as the API answers it.
#[derive(Debug, Serialize)]
pub struct TargetView {
    /// `tg_...`.
    pub id: String,
    /// Its livestream.
    pub livestream_id: String,
    /// Its name.
    pub name: String,
    /// The URL, redacted: `SCHEME://HOST:PORT/APP/…`.
    pub url: String,
    /// Pushed to while the livestream is live.
    pub enabled: bool,
    /// Accepts HEVC/AV1.
    pub enhanced_codecs: bool,
    /// When it was added (Unix seconds).
    pub created_at: i64,
    /// The push as the engine sees it now.
    #[serde(flatten)]
    pub live: LiveState,
}

/// A target's push state on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveState {
    /// `idle` (not pushing here), `connecting`, `live`, `backoff` or `failed`.
    pub state: String,
    /// Why `failed` or `backoff` (`refused`, `auth`, `tls`, `timeout`, ...).
    pub reason: Option<String>,
    /// Bytes sent to it.
    pub bytes: u64,
    /// Reconnects so far.
    pub reconnects: u64,
}

impl LiveState {
    /// Not pushing on this node.
    pub fn idle() -> LiveState {
        LiveState {
            state: "idle".to_owned(),
            reason: None,
            bytes: 0,
            reconnects: 0,
        }
    }
}

/// The engine's state of `target_id`, or idle when this node does not push it.
fn live_state(ctx: &CoreContext, target_id: &str) -> LiveState {
    super::targets_engine::target_state(&ctx.shared, target_id).unwrap_or_else(LiveState::idle)
}

fn view(ctx: &CoreContext, target: Target) -> TargetView {
    TargetView {
        live: live_state(ctx, &target.id),
        url: redact(&target.url),
        id: target.id,
        livestream_id: target.livestream_id,
        name: target.name,
        enabled: target.enabled,
        enhanced_codecs: target.enhanced_codecs,
        created_at: target.created_at / 1000,
    }
}

/// The body of an add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTarget {
    url: String,
    name: Option<String>,
    enabled: Option<bool>,
    enhanced_codecs: Option<bool>,
}

/// The body of a change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    url: Option<String>,
    name: Option<String>,
    enabled: Option<bool>,
    enhanced_codecs: Option<bool>,
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's message may quote the input (a URL with its key): only its position is kept.
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field is unknown, missing or of the wrong type",
            _ => "not a JSON object",
        };
        ApiError::bad_request(format!(
            "request body: {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let chars = name.trim().chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name: must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.trim().to_owned())
}

fn checked_url(url: &str) -> Result<(String, String), ApiError> {
    let parsed = targets_url::parse(url).map_err(ApiError::bad_request)?;
    Ok((url.trim().to_owned(), parsed.host))
}

impl NewTarget {
    fn parse(bytes: &[u8], livestream_id: &str) -> Result<Target, ApiError> {
        let new: NewTarget = body(bytes)?;
        let (url, host) = checked_url(&new.url)?;
        let name = match new.name {
            Some(name) => checked_name(&name)?,
            None => host,
        };
        Ok(Target {
            id: format!(
                "{}{}",
                targets::ID_PREFIX,
                &key::new_id()[key::ID_PREFIX.len()..]
            ),
            livestream_id: livestream_id.to_owned(),
            name,
            url,
            enabled: new.enabled.unwrap_or(true),
            enhanced_codecs: new.enhanced_codecs.unwrap_or(false),
            created_at: now_ms(),
        })
    }
}

impl Patch {
    fn parse(bytes: &[u8]) -> Result<Change, ApiError> {
        let patch: Patch = body(bytes)?;
        Ok(Change {
            name: patch.name.as_deref().map(checked_name).transpose()?,
            url: match patch.url {
                Some(url) => Some(checked_url(&url)?.0),
                None => None,
            },
            enabled: patch.enabled,
            enhanced_codecs: patch.enhanced_codecs,
        })
    }
}

/// `POST /api/v1/livestreams/{id}/targets`: 201 with the target.
pub fn add(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let id = params.get("id").to_owned();
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Write)?;
            let new = NewTarget::parse(request.body(), &id)?;
            let added = registry
                .call(move |db, _| targets::add(db, &new))
                .await
                .map_err(unavailable)?
                .map_err(|refusal| match refusal {
                    AddRefusal::NoLivestream => missing(&id),
                    AddRefusal::TooMany => {
                        ApiError::new(StatusCode::CONFLICT, "too_many", refusal.to_string())
                    }
                })?;
            tracing::info!(livestream = %id, target = %added.id, url = %redact(&added.url),
                enabled = added.enabled, "push target added");
            changed(&ctx, &registry, &id).await;
            Ok(view(&ctx, added))
        }
        .await;
        with_status(StatusCode::CREATED, result)
    })
}

/// `GET /api/v1/livestreams/{id}/targets`: `{"data": [...]}`, oldest first.
pub fn list(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let id = params.get("id").to_owned();
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Read)?;
            let lookup = id.clone();
            let all = registry
                .call(move |db, _| targets::list(db, &lookup))
                .await
                .map_err(unavailable)?
                .ok_or_else(|| missing(&id))?;
            let data: Vec<TargetView> = all.into_iter().map(|t| view(&ctx, t)).collect();
            Ok(serde_json::json!({ "data": data }))
        }
        .await;
        api::reply(result)
    })
}

/// `GET /api/v1/livestreams/{id}/targets/{target_id}`.
pub fn get(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let (id, target_id) = ids(&params);
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Read)?;
            let (l, t) = (id.clone(), target_id.clone());
            let found = registry
                .call(move |db, _| targets::get(db, &l, &t))
                .await
                .map_err(unavailable)?
                .ok_or_else(|| missing_target(&id, &target_id))?;
            Ok(view(&ctx, found))
        }
        .await;
        api::reply(result)
    })
}

/// `PATCH /api/v1/livestreams/{id}/targets/{target_id}`: name, url, enabled,
/// enhanced_codecs; the target as it is now.
pub fn patch(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let (id, target_id) = ids(&params);
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Write)?;
            let change = Patch::parse(request.body())?;
            let (l, t) = (id.clone(), target_id.clone());
            let found = registry
                .call(move |db, _| targets::update(db, &l, &t, &change))
                .await
                .map_err(unavailable)?
                .ok_or_else(|| missing_target(&id, &target_id))?;
            tracing::info!(livestream = %id, target = %found.id, url = %redact(&found.url),
                enabled = found.enabled, "push target changed");
            changed(&ctx, &registry, &id).await;
            Ok(view(&ctx, found))
        }
        .await;
        api::reply(result)
    })
}

/// `DELETE /api/v1/livestreams/{id}/targets/{target_id}`: 204.
pub fn delete(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let (id, target_id) = ids(&params);
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Write)?;
            let (l, t) = (id.clone(), target_id.clone());
            let gone = registry
                .call(move |db, _| targets::delete(db, &l, &t))
                .await
                .map_err(unavailable)?;
            if !gone {
                return Err(missing_target(&id, &target_id));
            }
            tracing::info!(livestream = %id, target = %target_id, "push target deleted");
            changed(&ctx, &registry, &id).await;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => with_type(StatusCode::NO_CONTENT, "application/json", Vec::new()),
            Err(e) => e.into_response(),
        }
    })
}

/// After a change to a livestream's targets: the restream engine, if it pushes the
/// livestream on this node, picks up the new set now (added targets start, removed or
/// disabled ones end; the others keep pushing).
async fn changed(ctx: &CoreContext, registry: &Registry, livestream_id: &str) {
    super::targets_engine::targets_changed(&ctx.shared, registry, livestream_id).await;
}

fn ids(params: &Params) -> (String, String) {
    (
        params.get("id").to_owned(),
        params.get("target_id").to_owned(),
    )
}

fn missing_target(id: &str, target_id: &str) -> ApiError {
    ApiError::not_found(format!("no target {target_id:?} of livestream {id:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_body_is_checked_and_never_echoes_the_key() {
        let t = NewTarget::parse(br#"{"url": "rtmp://h/app/k1"}"#, "ls_a").expect("ok");
        assert_eq!(
            (t.name.as_str(), t.enabled, t.enhanced_codecs),
            ("h", true, false)
        );
        assert!(t.id.starts_with("tg_"));
        for bad in [
            &br#"{"url": "http://h/app/secret-key"}"#[..],
            br#"{"url": "rtmp://h/app"}"#,
            br#"{"url": "rtmp://h/app/secret-key", "name": ""}"#,
            br#"{"url": "rtmp://h/app/secret-key", "extra": 1}"#,
            br#"{"url": "rtmp://h/app/secret-key", "enabled": "secret-key"}"#,
            br#"{"name": "x"}"#,
            br#"["rtmp://h/app/secret-key"]"#,
        ] {
            let e = NewTarget::parse(bad, "ls_a").expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(!e.message.contains("secret-key"), "{}", e.message);
        }
    }

    #[test]
    fn a_patch_body_is_checked() {
        let c = Patch::parse(br#"{"enabled": false}"#).expect("ok");
        assert_eq!((c.enabled, c.url.is_none()), (Some(false), true));
        assert!(Patch::parse(br#"{"url": "rtmps://h:443/a/k"}"#).is_ok());
        assert!(Patch::parse(br#"{"url": "rtmps://h:443/a"}"#).is_err());
        assert!(Patch::parse(br#"{"enabled": 1}"#).is_err());
    }
}
