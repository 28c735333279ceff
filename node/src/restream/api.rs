//! `GET /api/v1/restream`: every running push target's status (behind the API token), URLs
//! redacted. A page of the usual shape (`limit`, `offset`).

use std::rc::Rc;

use crate::api::{self, Access, Page};
use crate::core::CoreContext;
use crate::httpd::{ready, Params, Reply, Request};

/// Lists the running targets.
pub fn list(ctx: &Rc<CoreContext>, request: Request, _: Params) -> Reply {
    ready(api::reply(
        crate::http::checked(ctx, &request, Access::Read).and_then(|()| {
            let page = Page::from_query(request.uri().query())?;
            Ok(page.of(ctx.shared.restream.list()))
        }),
    ))
}
