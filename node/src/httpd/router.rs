//! A port's routes: a static table of (method, path pattern, handler), matched in order, and
//! what answers a path none of them knows.
//!
//! A pattern is a path whose `{name}` segments match any one non-empty segment, which the
//! handler reads from its [`Params`]; `{name}.flv` matches a segment ending in `.flv` and
//! gives `name` what comes before it (never empty). Leading and trailing slashes do not matter. `HEAD` is
//! served by the `GET` route (hyper sends the `Content-Length` without the body). A path that
//! a route knows under other methods gets the port's `method_not_allowed` (405) with `Allow`
//! added; any other path goes to the port's `not_found` (a 404). Both are the port's so that
//! each answers in its own format (the API in JSON).
//!
//! A `{name}` segment is percent-decoded once, here, so a value holding a `/` (a stream named
//! `a/b`) is reachable as `a%2Fb`; a segment that does not decode to UTF-8 matches nothing.

use std::rc::Rc;

use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, StatusCode};
use percent_encoding::percent_decode_str;

use super::body::text;
use super::{Reply, Request, Response};

/// One route; `C` is what the port's handlers share (the core's context).
pub struct Route<C: 'static> {
    /// The method it answers (`GET` routes answer `HEAD` too).
    pub method: Method,
    /// The path pattern, e.g. `/api/v1/streams/{app}/{name}`.
    pub path: &'static str,
    /// The handler.
    pub handler: fn(&Rc<C>, Request, Params) -> Reply,
}

/// A port's routes.
pub struct Router<C: 'static> {
    /// Tried in order.
    pub routes: &'static [Route<C>],
    /// Answers a path no route knows.
    pub not_found: fn(&Rc<C>, &Request) -> Response,
    /// Answers a known path asked with another method (405); the router adds `Allow`.
    pub method_not_allowed: fn(&Rc<C>, &Request) -> Response,
}

/// A plain 404.
pub fn not_found<C>(_: &Rc<C>, _: &Request) -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// A plain 405.
pub fn method_not_allowed<C>(_: &Rc<C>, _: &Request) -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}

/// The segments a pattern's `{name}`s matched.
#[derive(Debug, Default)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The segment `{name}` matched; empty if the pattern has no such name.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Takes the segment `{name}` matched out (empty if there is none, or it was taken).
    pub fn take(&mut self, name: &str) -> String {
        self.0
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_default()
    }
}

/// A reply that is ready now.
pub fn ready(response: Response) -> Reply {
    Box::pin(std::future::ready(response))
}

/// Answers `request` with the first route that matches its method and path.
///
/// The path is cut into its segments once; each route is first compared without allocating
/// (segment count, literals, suffixes: most routes fail on their first segment), and only the
/// route that matches has its `{name}`s percent-decoded.
pub fn dispatch<C>(router: &'static Router<C>, ctx: &Rc<C>, request: Request) -> Reply {
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let got = PathSegments::of(request.uri().path());
    let mut allowed: Vec<&str> = Vec::new();
    for route in router.routes {
        let Some(params) = got.as_ref().and_then(|got| matches(route.path, got.get())) else {
            continue;
        };
        if route.method == method {
            return (route.handler)(ctx, request, params);
        }
        allowed.push(route.method.as_str());
        if route.method == Method::GET {
            allowed.push("HEAD");
        }
    }
    if allowed.is_empty() {
        return ready((router.not_found)(ctx, &request));
    }
    let mut response = (router.method_not_allowed)(ctx, &request);
    if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(ALLOW, allow);
    }
    ready(response)
}

/// Most segments a path can have and still match a route (no pattern comes near it).
const MAX_SEGMENTS: usize = 16;

/// A request path cut at its `/`s, leading and trailing ones dropped, without allocating.
struct PathSegments<'a> {
    segments: [&'a str; MAX_SEGMENTS],
    len: usize,
}

impl<'a> PathSegments<'a> {
    /// `None` when the path has more segments than any route could match.
    fn of(path: &'a str) -> Option<PathSegments<'a>> {
        let mut segments = [""; MAX_SEGMENTS];
        let mut len = 0;
        for segment in split(path) {
            *segments.get_mut(len)? = segment;
            len += 1;
        }
        Some(PathSegments { segments, len })
    }

    fn get(&self) -> &[&'a str] {
        &self.segments[..self.len]
    }
}

/// `path`'s segments: split at `/` (byte-wise: a `/` is never part of a longer character),
/// leading and trailing `/`s dropped first, as `path.trim_matches('/').split('/')` would, but
/// lazily: a route that fails on its first segment never reads the rest of its pattern.
fn split(path: &str) -> impl Iterator<Item = &str> {
    let start = path.bytes().position(|b| b != b'/').unwrap_or(path.len());
    let mut rest = Some(&path[start..]);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.bytes().position(|b| b == b'/') {
            Some(i) => {
                let after = &s[i + 1..];
                // Only `/`s left: they were trailing.
                rest = Some(after).filter(|a| a.bytes().any(|b| b != b'/'));
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// The params if the path cut into `got` matches `pattern`.
fn matches(pattern: &'static str, got: &[&str]) -> Option<Params> {
    if !may_fit(pattern, got) || !fits(pattern, got) {
        return None;
    }
    let mut params = Params::default();
    for (w, g) in split(pattern).zip(got) {
        if let Some((name, suffix)) = param(w) {
            let stem = &g[..g.len() - suffix.len()];
            let value = percent_decode_str(stem).decode_utf8().ok()?;
            params.0.push((name, value.into_owned()));
        }
    }
    Some(params)
}

/// False when `pattern` starts with a literal segment other than `got`'s first: a few byte
/// compares that turn most routes away (the API's, for an HLS request) before any walk.
fn may_fit(pattern: &'static str, got: &[&str]) -> bool {
    let (Some(b'/'), Some(first)) = (pattern.as_bytes().first(), got.first()) else {
        return true; // not the usual shape: leave it to the walk
    };
    let rest = &pattern.as_bytes()[1..];
    match rest.strip_prefix(first.as_bytes()) {
        _ if matches!(rest.first(), Some(b'{' | b'/')) => true,
        Some(after) => matches!(after.first(), None | Some(b'/')),
        None => false,
    }
}

/// Whether `got` has `pattern`'s shape: as many segments, its literals, a non-empty stem
/// before each `{name}`'s suffix. Allocates nothing.
fn fits(pattern: &'static str, got: &[&str]) -> bool {
    let mut got = got.iter();
    for w in split(pattern) {
        let Some(g) = got.next() else {
            return false;
        };
        let fits = match param(w) {
            Some((_, suffix)) => g.len() > suffix.len() && g.ends_with(suffix),
            None => w == *g,
        };
        if !fits {
            return false;
        }
    }
    got.next().is_none()
}

/// A pattern segment's `{name}` and the literal suffix after it, if it is a param.
fn param(w: &'static str) -> Option<(&'static str, &'static str)> {
    let w = w.strip_prefix('{')?;
    let close = w.bytes().position(|b| b == b'}')?;
    Some((&w[..close], &w[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    fn answer(tag: &'static str) -> Reply {
        ready(text(StatusCode::OK, tag))
    }

    static ROUTER: Router<()> = Router {
        routes: ROUTES,
        not_found,
        method_not_allowed,
    };

    static ROUTES: &[Route<()>] = &[
        Route {
            method: Method::GET,
            path: "/healthz",
            handler: |_, _, _| answer("health"),
        },
        Route {
            method: Method::GET,
            path: "/api/v1/streams/{app}/{name}",
            handler: |_, _, p| {
                assert_eq!((p.get("app"), p.get("name")), ("live", "demo"));
                answer("stream")
            },
        },
        Route {
            method: Method::POST,
            path: "/api/v1/streams/{app}/{name}/stop",
            handler: |_, _, _| answer("stop"),
        },
    ];

    fn run(method: Method, path: &str) -> Response {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(bytes::Bytes::new())
            .expect("request");
        futures_lite::future::block_on(dispatch(&ROUTER, &Rc::new(()), request))
    }

    /// The params if `path` matches `pattern`.
    fn matches(pattern: &'static str, path: &str) -> Option<Params> {
        super::matches(pattern, PathSegments::of(path)?.get())
    }

    fn length(response: &Response) -> u64 {
        response.body().size_hint().exact().expect("exact")
    }

    #[test]
    fn routes_match_by_method_and_pattern() {
        assert_eq!(length(&run(Method::GET, "/healthz")), 6);
        assert_eq!(length(&run(Method::GET, "/healthz/")), 6);
        assert_eq!(length(&run(Method::GET, "/api/v1/streams/live/demo")), 6);
        assert_eq!(
            length(&run(Method::POST, "/api/v1/streams/live/demo/stop")),
            4
        );
    }

    #[test]
    fn params_are_percent_decoded_once() {
        let params = matches("/s/{app}/{name}", "/s/live/a%2Fb%25252F").expect("matches");
        assert_eq!(
            (params.get("app"), params.get("name")),
            ("live", "a/b%252F")
        );
        let params = matches("/s/{name}", "/s/caf%C3%A9%20x").expect("matches");
        assert_eq!(params.get("name"), "café x");
        assert!(matches("/s/{name}", "/s/%FF").is_none(), "not UTF-8");
    }

    #[test]
    fn a_param_may_have_a_literal_suffix() {
        let params = matches("/{app}/{name}.flv", "/live/a%2Eb.flv").expect("matches");
        assert_eq!((params.get("app"), params.get("name")), ("live", "a.b"));
        assert!(
            matches("/{app}/{name}.flv", "/live/.flv").is_none(),
            "empty"
        );
        assert!(matches("/{app}/{name}.flv", "/live/x.flv2").is_none());
        assert!(matches("/{app}/{name}.flv", "/live/x").is_none());
    }

    #[test]
    fn head_is_served_by_get() {
        let response = run(Method::HEAD, "/healthz");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(length(&response), 6);
    }

    #[test]
    fn unknown_paths_get_404_and_known_paths_405_with_allow() {
        assert_eq!(run(Method::GET, "/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            run(Method::GET, "/api/v1/streams/live").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            run(Method::GET, "/api/v1/streams/live//").status(),
            StatusCode::NOT_FOUND
        );
        let refused = run(Method::DELETE, "/healthz");
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[ALLOW], "GET, HEAD");
        let refused = run(Method::GET, "/api/v1/streams/live/demo/stop");
        assert_eq!(refused.headers()[ALLOW], "POST");
    }

    #[test]
    fn a_path_with_more_segments_than_any_route_is_not_found() {
        let long = "/x".repeat(MAX_SEGMENTS + 1);
        assert_eq!(run(Method::GET, &long).status(), StatusCode::NOT_FOUND);
        assert!(matches("/{a}", "/x").is_some());
    }

    /// What the router matched before paths were cut once per request: the reference.
    fn reference(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
        let mut want = pattern.trim_matches('/').split('/');
        let mut got = path.trim_matches('/').split('/');
        let mut params = Vec::new();
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some(params),
                (Some(w), Some(g)) => match w.strip_prefix('{').and_then(|w| w.split_once('}')) {
                    Some((name, suffix)) => {
                        let stem = g.strip_suffix(suffix).filter(|s| !s.is_empty())?;
                        let value = percent_decode_str(stem).decode_utf8().ok()?;
                        params.push((name, value.into_owned()));
                    }
                    None if w == g => {}
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    const PATTERNS: [&str; 8] = [
        "//healthz/",
        "hls/{name}",
        "/hls/{app}/{name}/index.m3u8",
        "/hls/{app}/{name}/{prefix}/{file}",
        "/{app}/{name}.flv",
        "/healthz",
        "/api/v1/streams/{app}/{name}/stop",
        "/",
    ];

    proptest::proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "", "/", "//", "hls", "live", "a%2Fb", "%FF", "index.m3u8", "x.flv",
                    ".flv", "api", "v1", "streams", "stop", "healthz", "caf\u{e9}",
                ]),
                0..10,
            ),
            slashes in proptest::collection::vec(proptest::bool::ANY, 10),
        ) {
            let mut path = String::new();
            for (part, slash) in parts.iter().zip(&slashes) {
                if *slash {
                    path.push('/');
                }
                path.push_str(part);
            }
            for pattern in PATTERNS {
                let ours = matches(pattern, &path).map(|p| p.0);
                proptest::prop_assert_eq!(ours, reference(pattern, &path), "{} {}", pattern, path);
            }
        }
    }
}
