//! The console page (`/console`, with `[livestreams] console = true`): sign in with the API
//! token, list livestreams with their status, create one, copy its ingest URL and the key
//! shown at creation.
//!
//! Signing in (`POST /console/session` with the token) sets a session cookie, `HttpOnly`
//! (the page's script cannot read it) and `SameSite=Strict` (no other site's page sends
//! it). The page then calls the livestream API itself, authorized by the cookie instead of
//! the bearer token. Every change also needs the `X-CSRF-Token` header: a value derived from
//! the session that the sign-in answer gives the page, which another origin cannot read.
//!
//! Sessions are stateless: `v1.<expiry>.<nonce>.<HMAC>` under a key made at start, so any
//! core (and no other process) can check one, and a restart signs everyone out. A session
//! lasts [`SESSION_SECS`].

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper::header::{HeaderValue, AUTHORIZATION, COOKIE, SET_COOKIE};
use hyper::StatusCode;
use rand::RngCore as _;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::api::{Access, ApiError};
use crate::config::Config;
use crate::httpd::body::{json, with_type};
use crate::httpd::{Request, Response};

/// The cookie's name.
pub const COOKIE_NAME: &str = "corecast_console";
/// The header a change must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_SECS: u64 = 12 * 3600;

const PAGE: &str = include_str!("console.html");
const SCRIPT: &str = include_str!("console.js");

/// The key sessions are signed with: random, made once per process.
fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    })
}

fn mac(text: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new session valid until `expiry` (Unix seconds).
fn new_session(expiry: u64) -> String {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let body = format!("v1.{expiry}.{}", URL_SAFE_NO_PAD.encode(nonce));
    let sig = mac(&body);
    format!("{body}.{sig}")
}

/// Whether `session` is one this process signed and it has not expired at `now`.
fn valid(session: &str, now: u64) -> bool {
    let Some((body, sig)) = session.rsplit_once('.') else {
        return false;
    };
    let expiry = body
        .strip_prefix("v1.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(expiry, _)| expiry.parse::<u64>().ok());
    let signed = bool::from(mac(body).as_bytes().ct_eq(sig.as_bytes()));
    signed && expiry.is_some_and(|e| now < e)
}

/// The CSRF token of `session`.
fn csrf(session: &str) -> String {
    mac(&format!("csrf.{session}"))
}

/// The session cookie of `request`, if it sent one.
fn session_of(request: &Request) -> Option<&str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

fn unix_now() -> u64 {
    crate::auth::unix_now()
}

/// The console's say on an API request: `None` when it carries a bearer token or no console
/// cookie (the token decides), else whether its session (and, for a change, its CSRF token) holds.
pub fn authorize(
    config: &Config,
    request: &Request,
    access: Access,
) -> Option<Result<(), ApiError>> {
    // A bearer token, when sent, decides; so does the absence of a console.
    if !config.livestreams.console || request.headers().contains_key(AUTHORIZATION) {
        return None;
    }
    let session = session_of(request)?;
    if !valid(session, unix_now()) {
        return Some(Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "console session expired or unknown: sign in again",
        )));
    }
    if access == Access::Read {
        return Some(Ok(()));
    }
    let given = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = csrf(session);
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Some(Ok(()))
    } else {
        Some(Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a change from the console needs its X-CSRF-Token header",
        )))
    }
}

/// `GET /console`.
pub fn page(config: &Config) -> Response {
    if !config.livestreams.console {
        return off();
    }
    let mut response = with_type(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /console/console.js`.
pub fn script(config: &Config) -> Response {
    if !config.livestreams.console {
        return off();
    }
    with_type(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
}

/// `POST /console/session` `{"token": "..."}`: signs in.
pub fn sign_in(config: &Config, request: &Request) -> Response {
    #[derive(Deserialize)]
    struct SignIn {
        token: String,
    }
    if !config.livestreams.console {
        return off();
    }
    let token = config.http.api_token.as_bytes();
    if token.is_empty() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the console needs http.api_token to be set",
        )
        .into_response();
    }
    let given = match serde_json::from_slice::<SignIn>(request.body()) {
        Ok(s) => s.token,
        Err(e) => return ApiError::bad_request(format!("request body: {e}")).into_response(),
    };
    if !bool::from(given.as_bytes().ct_eq(token)) {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong API token")
            .into_response();
    }
    let session = new_session(unix_now() + SESSION_SECS);
    let mut response = json(&serde_json::json!({ "csrf": csrf(&session) }));
    let cookie = format!(
        "{COOKIE_NAME}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}"
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// `GET /console/session`: the CSRF token of a live session (a reloaded page), or 401.
pub fn current(config: &Config, request: &Request) -> Response {
    if !config.livestreams.console {
        return off();
    }
    match session_of(request).filter(|s| valid(s, unix_now())) {
        Some(session) => json(&serde_json::json!({ "csrf": csrf(session) })),
        None => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in").into_response()
        }
    }
}

fn off() -> Response {
    ApiError::not_found("the console is off ([livestreams] console = true turns it on)")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_as_signed() {
        let session = new_session(1000);
        assert!(valid(&session, 999));
        assert!(!valid(&session, 1000));
        let forged = session.replacen("v1.1000.", "v1.9999.", 1);
        assert!(!valid(&forged, 999));
        assert!(!valid("v1.1000.x.00", 1));
        assert!(!valid("", 1));
        assert_ne!(csrf(&session), csrf(&new_session(1000)));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let request = hyper::Request::builder()
            .header(COOKIE, "a=b; corecast_console=v1.5.n.s; c=d")
            .body(bytes::Bytes::new())
            .expect("request");
        assert_eq!(session_of(&request), Some("v1.5.n.s"));
    }
}
