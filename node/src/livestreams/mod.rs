//! The livestream API (`/api/v1/livestreams`): create, list, get, disable, enable, reset the
//! key, delete; and the OpenAPI document that describes the whole API
//! (`/api/v1/openapi.json`, checked against the route table by a test).
//!
//! The conventions (JSON errors, paging, the bearer token) are [`crate::api`]'s. Every call
//! goes to the registry thread and the handler awaits its answer, so the executor never
//! waits on the database. A stream key is in an answer twice only: at creation and at a
//! reset; it is never stored, logged or shown again. A disable, reset or delete made here
//! ends a live publish on this node at once ([`Registry::check_now`]) and on the node that
//! holds it within `registry.renew_ms` (its renewal sees the change).

pub mod console;
pub mod targets;
pub mod targets_engine;
pub mod targets_url;
pub mod view;

use std::rc::Rc;

use hyper::StatusCode;
use serde::Deserialize;

use crate::api::{self, Access, ApiError, Page};
use crate::core::CoreContext;
use crate::httpd::body::{json, with_type};
use crate::httpd::{Params, Reply, Request, Response};
use crate::registry::db::{Db, DbError};
use crate::registry::model::Livestream;
use crate::registry::{key, now_ms, store, Registry, RegistryError};
use view::View;

/// The OpenAPI 3 document of the node's HTTP API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Longest livestream name.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// `GET /api/v1/openapi.json`: open, like any API's documentation.
pub fn openapi(_: &Rc<CoreContext>, _: Request, _: Params) -> Reply {
    crate::httpd::ready(with_type(StatusCode::OK, "application/json", OPENAPI))
}

/// `GET /console`.
pub fn console_page(ctx: &Rc<CoreContext>, _: Request, _: Params) -> Reply {
    crate::httpd::ready(console::page(&ctx.config()))
}

/// `GET /console/console.js`.
pub fn console_script(ctx: &Rc<CoreContext>, _: Request, _: Params) -> Reply {
    crate::httpd::ready(console::script(&ctx.config()))
}

/// `POST /console/session`.
pub fn console_sign_in(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    let response = console::sign_in(&ctx.config(), &request);
    if response.status() == StatusCode::UNAUTHORIZED {
        tracing::info!(peer = %crate::httpd::peer(&request), "console sign-in refused");
        ctx.metrics.error("api_unauthorized");
    }
    crate::httpd::ready(response)
}

/// `GET /console/session`.
pub fn console_session(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    crate::httpd::ready(console::current(&ctx.config(), &request))
}

/// `POST /api/v1/livestreams`.
pub fn create(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Write)?;
            let body = NewLivestream::parse(request.body())?;
            let (id, stream_key) = (key::new_id(), key::new_key());
            let hash = key::hash(&stream_key);
            let settings = body.settings.unwrap_or_else(|| serde_json::json!({}));
            let created = registry
                .call(move |db, _| store::create(db, &id, &body.name, &hash, &settings, now_ms()))
                .await
                .map_err(unavailable)?;
            Ok(View::new(&ctx.config(), created).with_key(stream_key))
        }
        .await;
        with_status(StatusCode::CREATED, result)
    })
}

/// `GET /api/v1/livestreams`.
pub fn list(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Read)?;
            let page = Page::from_query(request.uri().query())?;
            let (items, total) = registry
                .call(move |db, _| store::list(db, page.limit, page.offset, now_ms()))
                .await
                .map_err(unavailable)?;
            let data: Vec<View> = items
                .into_iter()
                .map(|l| View::new(&ctx.config(), l))
                .collect();
            Ok(serde_json::json!({
                "data": data,
                "page": {"limit": page.limit, "offset": page.offset, "total": total},
            }))
        }
        .await;
        api::reply(result)
    })
}

/// `GET /api/v1/livestreams/{id}`.
pub fn get(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    one(ctx, request, params, Access::Read, None, |db, _, id| {
        store::get(db, id, now_ms())
    })
}

/// `POST /api/v1/livestreams/{id}/disable`: a live publish of it ends.
pub fn disable(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    one(
        ctx,
        request,
        params,
        Access::Write,
        None,
        |db, targets, id| store::set_disabled(db, id, true, now_ms(), targets),
    )
}

/// `POST /api/v1/livestreams/{id}/enable`.
pub fn enable(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    one(
        ctx,
        request,
        params,
        Access::Write,
        None,
        |db, targets, id| store::set_disabled(db, id, false, now_ms(), targets),
    )
}

/// `POST /api/v1/livestreams/{id}/reset-key`: a new key, shown in this answer only; the old
/// one is refused from now on and a live publish that used it ends.
pub fn reset_key(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let stream_key = key::new_key();
    let hash = key::hash(&stream_key);
    one(
        ctx,
        request,
        params,
        Access::Write,
        Some(stream_key),
        move |db, _, id| store::reset_key(db, id, &hash, now_ms()),
    )
}

/// `DELETE /api/v1/livestreams/{id}`: 204; a live publish of it ends.
pub fn delete(ctx: &Rc<CoreContext>, request: Request, params: Params) -> Reply {
    let ctx = Rc::clone(ctx);
    let id = params.get("id").to_owned();
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, Access::Write)?;
            let lookup = id.clone();
            let gone = registry
                .call(move |db, _| store::delete(db, &lookup))
                .await
                .map_err(unavailable)?;
            if !gone {
                return Err(missing(&id));
            }
            registry.check_now();
            Ok(())
        }
        .await;
        match result {
            Ok(()) => with_type(StatusCode::NO_CONTENT, "application/json", Vec::new()),
            Err(e) => e.into_response(),
        }
    })
}

/// A call on one livestream, answered with it (and `stream_key` when given); a write also
/// has this node check its live publishes at once.
fn one<F>(
    ctx: &Rc<CoreContext>,
    request: Request,
    params: Params,
    access: Access,
    stream_key: Option<String>,
    f: F,
) -> Reply
where
    F: FnOnce(&mut dyn Db, &[String], &str) -> Result<Option<Livestream>, DbError> + Send + 'static,
{
    let ctx = Rc::clone(ctx);
    let id = params.get("id").to_owned();
    Box::pin(async move {
        let result = async {
            let registry = allowed(&ctx, &request, access)?;
            let lookup = id.clone();
            let found = registry
                .call(move |db, targets| f(db, targets, &lookup))
                .await
                .map_err(unavailable)?
                .ok_or_else(|| missing(&id))?;
            if access == Access::Write {
                registry.check_now();
            }
            let view = View::new(&ctx.config(), found);
            Ok(match stream_key {
                Some(key) => view.with_key(key),
                None => view,
            })
        }
        .await;
        api::reply(result)
    })
}

/// The body of a create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLivestream {
    name: String,
    settings: Option<serde_json::Value>,
}

impl NewLivestream {
    fn parse(body: &[u8]) -> Result<NewLivestream, ApiError> {
        let parsed: NewLivestream = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
        let chars = parsed.name.trim().chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(ApiError::bad_request(format!(
                "name: must be 1 to {MAX_NAME_CHARS} characters"
            )));
        }
        if parsed.settings.as_ref().is_some_and(|s| !s.is_object()) {
            return Err(ApiError::bad_request("settings: must be a JSON object"));
        }
        Ok(parsed)
    }
}

/// The registry, if `request` may do `access` and there is one.
pub(crate) fn allowed(
    ctx: &CoreContext,
    request: &Request,
    access: Access,
) -> Result<Registry, ApiError> {
    crate::http::checked(ctx, request, access)?;
    ctx.shared.registry.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_off",
            "this node has no livestream registry ([registry] url)",
        )
    })
}

pub(crate) fn unavailable(e: RegistryError) -> ApiError {
    tracing::warn!(error = %e, "livestream API: registry unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("livestream registry: {}", e.as_str()),
    )
}

pub(crate) fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no livestream {id:?}"))
}

pub(crate) fn with_status<T: serde::Serialize>(
    status: StatusCode,
    result: Result<T, ApiError>,
) -> Response {
    match result {
        Ok(value) => {
            let mut response = json(&value);
            *response.status_mut() = status;
            response
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                let ops = ops.as_object().expect("operations");
                ops.keys()
                    .map(|m| (m.to_uppercase(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let served: BTreeSet<(String, String)> = crate::http::ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served, not documented: {undocumented:?}"
        );
        assert!(unserved.is_empty(), "documented, not served: {unserved:?}");
    }

    #[test]
    fn every_reference_in_the_document_resolves() {
        fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn a_create_body_is_checked() {
        assert!(NewLivestream::parse(br#"{"name": "show"}"#).is_ok());
        assert!(NewLivestream::parse(br#"{"name": "show", "settings": {"a": 1}}"#).is_ok());
        for bad in [
            &br#"{"name": "#[..],
            br#"{"nam": "x"}"#,
            br#"{"name": ""}"#,
            br#"{"name": "x", "settings": 3}"#,
            br#"[]"#,
        ] {
            let e = NewLivestream::parse(bad).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(!e.message.is_empty());
        }
    }
}
