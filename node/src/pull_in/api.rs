//! `/api/v1/pulls`: list, add, get and remove pull-ins at run time (behind the API token);
//! sources shown redacted. A pull added here runs on the core that took the call until it
//! is removed; with a `[registry]` it is also stored there ([`crate::registry::pulls`]) and
//! resumed when the node starts again ([`super::resume_stored`]), until a `DELETE` removes
//! it; without one it lasts until the node stops. `[[ingest.pull]]` ones are listed too
//! (`origin` `config`) and may be removed (until the next start).

use std::rc::Rc;

use hyper::StatusCode;
use serde::Deserialize;

use super::{AddError, PullSpec};
use crate::api::{self, Access, ApiError};
use crate::core::CoreContext;
use crate::http::checked;
use crate::httpd::body::{json, with_type};
use crate::httpd::{ready, Params, Reply, Request};
use crate::registry::pulls::{self, StoredPull};
use crate::registry::{key, now_ms};

/// The body of an add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPull {
    app: String,
    name: String,
    url: String,
    id: Option<String>,
    ca_file: Option<String>,
}

impl NewPull {
    fn parse(bytes: &[u8]) -> Result<PullSpec, ApiError> {
        // serde's message may quote the input (a URL with its key): only its position is kept.
        let new: NewPull = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "request body: not a pull object (line {}, column {}): app, name and url are needed",
                e.line(),
                e.column()
            ))
        })?;
        let ca_file = new.ca_file.unwrap_or_default();
        crate::config::check_pull(&new.app, &new.name, &new.url, &ca_file)
            .map_err(ApiError::bad_request)?;
        let id = match new.id {
            Some(id) if id.is_empty() || id.len() > 100 || id.contains(['/', '?', '#', '%']) => {
                return Err(ApiError::bad_request(
                    "id: 1 to 100 characters, without '/', '?', '#' or '%'",
                ))
            }
            Some(id) => id,
            None => format!("pl_{}", &key::new_id()[key::ID_PREFIX.len()..]),
        };
        Ok(PullSpec {
            id,
            app: new.app,
            name: new.name,
            url: new.url.trim().to_owned(),
            ca_file,
            origin: "api",
        })
    }
}

/// `POST /api/v1/pulls`: 201 with the pull's status (stored in the registry first when there
/// is one: a pull the node could not store is not started, and the answer is 503).
pub fn add(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    Box::pin(async move {
        let result = match added(&ctx, &request) {
            Ok(spec) => persist_and_start(&ctx, spec).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(status) => {
                let mut response = json(&status);
                *response.status_mut() = StatusCode::CREATED;
                response
            }
            Err(e) => e.into_response(),
        }
    })
}

/// 503 while the node is starting and some core has not read its stored pulls: a list would
/// lack them, a get would say 404 for a pull about to resume, and an add or a delete could
/// race its resumption.
fn settled(ctx: &Rc<CoreContext>) -> Result<(), ApiError> {
    if ctx.shared.pull_in.stored_pending() {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the node is reading its stored pulls: try again in a moment",
        ))
    } else {
        Ok(())
    }
}

/// The checked request: the pull to add.
fn added(ctx: &Rc<CoreContext>, request: &Request) -> Result<PullSpec, ApiError> {
    checked(ctx, request, Access::Write)
        .and_then(|()| settled(ctx))
        .and_then(|()| {
            if ctx.config().cluster.accepts_publishers() {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_an_origin",
                    "an edge takes no publishes, so it pulls nothing in",
                ))
            }
        })
        .and_then(|()| NewPull::parse(request.body()))
}

/// Registers `spec` (so a second add of its id or stream is a conflict at once), stores it
/// (with a registry), starts it; a pull that could not be stored is unregistered.
async fn persist_and_start(
    ctx: &Rc<CoreContext>,
    spec: PullSpec,
) -> Result<super::PullStatus, ApiError> {
    let id = spec.id.clone();
    let stop = super::register(ctx, &spec).map_err(conflict)?;
    if let Some(registry) = &ctx.shared.registry {
        let stored = StoredPull {
            id: spec.id.clone(),
            app: spec.app.clone(),
            name: spec.name.clone(),
            url: spec.url.clone(),
            ca_file: spec.ca_file.clone(),
            created_at: now_ms(),
        };
        let node = registry.node_id.clone();
        let put = registry
            .call(move |db, _| pulls::put(db, &node, &stored))
            .await;
        if let Err(e) = put {
            ctx.shared.pull_in.remove(&id);
            return Err(crate::livestreams::unavailable(e));
        }
    }
    // A DELETE while the row was written set the stop flag: the task ends at once.
    let status = ctx.shared.pull_in.status(&id);
    super::spawn(ctx, spec, stop);
    status.ok_or_else(|| ApiError::not_found(format!("no pull {id:?}")))
}

fn conflict(e: AddError) -> ApiError {
    match e {
        AddError::Full => ApiError::new(StatusCode::CONFLICT, "too_many", e.to_string()),
        _ => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
    }
}

/// `GET /api/v1/pulls`: `{"data": [...]}` by id.
pub fn list(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    let result = checked(ctx, &request, Access::Read)
        .and_then(|()| settled(ctx))
        .map(|()| serde_json::json!({ "data": ctx.shared.pull_in.list() }));
    ready(api::reply(result))
}

/// `GET /api/v1/pulls/{id}`.
pub fn get(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let id = params.get("id");
    let result = checked(ctx, &request, Access::Read)
        .and_then(|()| settled(ctx))
        .and_then(|()| {
            ctx.shared
                .pull_in
                .status(id)
                .ok_or_else(|| ApiError::not_found(format!("no pull {id:?}")))
        });
    ready(api::reply(result))
}

/// `DELETE /api/v1/pulls/{id}`: 204; the local stream ends within a moment, and the
/// registry forgets the pull (a stored pull that did not start is removed too).
pub fn delete(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let id = params.get("id").to_owned();
    Box::pin(async move {
        let result = match checked(&ctx, &request, Access::Write).and_then(|()| settled(&ctx)) {
            Ok(()) => removed(&ctx, &id).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => with_type(StatusCode::NO_CONTENT, "application/json", Vec::new()),
            Err(e) => e.into_response(),
        }
    })
}

async fn removed(ctx: &Rc<CoreContext>, id: &str) -> Result<(), ApiError> {
    let running = ctx.shared.pull_in.remove(id);
    let stored = match &ctx.shared.registry {
        Some(registry) => {
            let (node, id) = (registry.node_id.clone(), id.to_owned());
            registry
                .call(move |db, _| pulls::delete(db, &node, &id))
                .await
                .map_err(crate::livestreams::unavailable)?
        }
        None => false,
    };
    if running || stored {
        tracing::info!(core = ctx.id.0, pull = %id, "pull-in removed");
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no pull {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_body_is_checked_without_echoing_the_url() {
        let spec = NewPull::parse(br#"{"app": "live", "name": "cam", "url": "rtmp://h/a/SECRET"}"#)
            .expect("ok");
        assert!(spec.id.starts_with("pl_"));
        assert_eq!((spec.key(), spec.origin), ("live/cam".to_owned(), "api"));
        for bad in [
            &br#"{"app": "live", "name": "cam", "url": "http://h/a/SECRET"}"#[..],
            br#"{"app": "live", "name": "c/d", "url": "rtmp://h/a/SECRET"}"#,
            br#"{"app": "live", "name": "cam", "url": "rtmp://h/a/SECRET", "id": "a/b"}"#,
            br#"{"app": "live", "name": "cam", "url": "rtmp://h/a/SECRET", "x": 1}"#,
            br#"{"app": "live", "name": "cam", "url": 7}"#,
        ] {
            let e = NewPull::parse(bad).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(!e.message.contains("SECRET"), "{}", e.message);
        }
    }
}
