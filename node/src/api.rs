//! The JSON API's conventions (`/api/v1/...`), apart from its routes (in [`crate::http`]):
//! errors, paged lists and who may call what.
//!
//! - An error is `{"error": {"code": "not_found", "message": "..."}}` with the matching status;
//!   `code` is a fixed word a client can branch on, `message` is for people.
//! - A list is `{"data": [...], "page": {"limit", "offset", "total"}}`, paged by
//!   `?limit=&offset=` (limit 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]); a value that is
//!   not a number in range is a 400, not a silent default, so a client's typo shows.
//! - Writes need `Authorization: Bearer <http.api_token>` and are refused (403) while no token
//!   is set. Reads show client addresses, so they need the token too once one is set, unless
//!   `http.public_reads`. The scheme is matched without regard to case (RFC 9110 §11.1) and the
//!   token compared in constant time, so a wrong guess's timing says nothing about how much of
//!   it was right (only whether its length was).

use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::StatusCode;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::config::HttpConfig;
use crate::httpd::body::{json, with_type};
use crate::httpd::{Request, Response};

/// Most items one page holds.
pub const MAX_LIMIT: usize = 1000;
/// Items a page holds when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// What a 401 asks for (RFC 6750 §3).
const CHALLENGE: &str = "Bearer realm=\"corecast\"";

/// An API error: its status, a fixed `code` and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A fixed word for clients (`not_found`, `bad_request`, `unauthorized`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// An error with this status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON response; a 401 carries the `WWW-Authenticate` challenge.
    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = with_type(self.status, "application/json", bytes);
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static(CHALLENGE);
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The response for `result`: the value as JSON, or the error.
pub fn reply<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => json(&value),
        Err(e) => e.into_response(),
    }
}

/// Which items of a list a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Most items returned.
    pub limit: usize,
    /// Items skipped from the start.
    pub offset: usize,
}

impl Page {
    /// The page a request's query asks for; other parameters are left to their routes.
    pub fn from_query(query: Option<&str>) -> Result<Page, ApiError> {
        let mut page = Page {
            limit: DEFAULT_LIMIT,
            offset: 0,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "limit" => page.limit = number(key, value, 1..=MAX_LIMIT)?,
                "offset" => page.offset = number(key, value, 0..=usize::MAX)?,
                _ => {}
            }
        }
        Ok(page)
    }

    /// One page of `items` in the list envelope, with the total.
    pub fn of<T: Serialize>(self, items: Vec<T>) -> Listed<T> {
        let total = items.len();
        let data = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        Listed {
            data,
            page: PageInfo { page: self, total },
        }
    }
}

/// A paged list, as the API returns it.
#[derive(Debug, Serialize)]
pub struct Listed<T> {
    /// The page's items.
    pub data: Vec<T>,
    /// Which page this is.
    pub page: PageInfo,
}

/// `{"limit", "offset", "total"}`.
#[derive(Debug, Serialize)]
pub struct PageInfo {
    #[serde(flatten)]
    page: Page,
    /// Items in the whole list.
    total: usize,
}

fn number(
    key: &str,
    value: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            let (low, high) = (range.start(), range.end());
            let within = if *high == usize::MAX {
                format!("a whole number from {low}")
            } else {
                format!("a whole number from {low} to {high}")
            };
            ApiError::bad_request(format!("{key}={value:?}: must be {within}"))
        })
}

/// What a route does with the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Shows state (streams, clients and their addresses).
    Read,
    /// Changes it (kick, stop).
    Write,
}

/// Whether `request` may do `access` under `http`'s token settings.
pub fn authorize(http: &HttpConfig, request: &Request, access: Access) -> Result<(), ApiError> {
    let token = http.api_token.as_bytes();
    match access {
        Access::Read if token.is_empty() || http.public_reads => return Ok(()),
        Access::Write if token.is_empty() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the API's write endpoints are disabled (http.api_token is not set)",
            ))
        }
        _ => {}
    }
    match bearer(request) {
        Some(given) if bool::from(given.as_bytes().ct_eq(token)) => Ok(()),
        Some(_) => Err(unauthorized("wrong bearer token")),
        None => Err(unauthorized(
            "this endpoint needs Authorization: Bearer <http.api_token>",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The token of an `Authorization: Bearer <token>` header, the scheme in any case.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    fn request(auth: Option<&str>) -> Request {
        let mut builder = hyper::Request::builder().method(Method::GET).uri("/x");
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        builder.body(bytes::Bytes::new()).expect("request")
    }

    fn http(token: &str, public_reads: bool) -> HttpConfig {
        HttpConfig {
            api_token: token.to_owned(),
            public_reads,
            ..HttpConfig::default()
        }
    }

    fn status(http: &HttpConfig, auth: Option<&str>, access: Access) -> StatusCode {
        match authorize(http, &request(auth), access) {
            Ok(()) => StatusCode::OK,
            Err(e) => e.status,
        }
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer(&request(Some("Bearer s3cret"))), Some("s3cret"));
        assert_eq!(bearer(&request(Some("bearer s3cret"))), Some("s3cret"));
        assert_eq!(bearer(&request(Some("BEARER  s3cret "))), Some("s3cret"));
        assert_eq!(bearer(&request(Some("Basic abc"))), None);
        assert_eq!(bearer(&request(Some("Bearer"))), None);
        assert_eq!(bearer(&request(None)), None);
    }

    #[test]
    fn writes_need_the_token_and_are_off_without_one() {
        let set = http("s3cret", true);
        assert_eq!(
            status(&set, Some("Bearer s3cret"), Access::Write),
            StatusCode::OK
        );
        assert_eq!(
            status(&set, Some("Bearer s3creT"), Access::Write),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&set, Some("Bearer s3cre"), Access::Write),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(&set, None, Access::Write), StatusCode::UNAUTHORIZED);
        let unset = http("", true);
        assert_eq!(
            status(&unset, Some("Bearer "), Access::Write),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn reads_need_the_token_once_one_is_set_unless_public() {
        assert_eq!(status(&http("", false), None, Access::Read), StatusCode::OK);
        let private = http("s3cret", false);
        assert_eq!(
            status(&private, None, Access::Read),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&private, Some("bearer s3cret"), Access::Read),
            StatusCode::OK
        );
        assert_eq!(
            status(&http("s3cret", true), None, Access::Read),
            StatusCode::OK
        );
    }

    #[test]
    fn a_401_carries_the_challenge_and_errors_are_json() {
        let response = unauthorized("no").into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(response.headers()["content-type"], "application/json");
        let response = ApiError::not_found("no such stream").into_response();
        assert!(!response.headers().contains_key(WWW_AUTHENTICATE));
    }

    #[test]
    fn pages_come_from_the_query_and_bad_values_are_refused() {
        let page = |q: &str| Page::from_query(Some(q)).map(|p| (p.limit, p.offset));
        assert_eq!(page(""), Ok((DEFAULT_LIMIT, 0)));
        assert_eq!(Page::from_query(None).map(|p| p.limit), Ok(DEFAULT_LIMIT));
        assert_eq!(page("limit=2&offset=5&other=x"), Ok((2, 5)));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=",
            "offset=x",
            "limit=1.5",
        ] {
            let e = page(bad).expect_err(bad);
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_request"));
        }
    }

    #[test]
    fn a_page_holds_its_slice_and_the_total() {
        let page = Page {
            limit: 2,
            offset: 1,
        };
        let listed = serde_json::to_value(page.of(vec![1, 2, 3, 4])).expect("json");
        assert_eq!(
            listed,
            serde_json::json!({"data": [2, 3], "page": {"limit": 2, "offset": 1, "total": 4}})
        );
        let past = page.of(vec![1]);
        assert!(past.data.is_empty());
    }
}
