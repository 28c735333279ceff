//! A push target's URL (`rtmp://HOST[:PORT]/APP/KEY` or `rtmps://…`): checking it, and
//! showing it without its stream key.
//!
//! A platform's URL is its ingest server, an application and the account's stream key
//! (YouTube `rtmps://a.rtmps.youtube.com/live2/KEY`, Twitch `rtmp://INGEST/app/KEY`,
//! Facebook `rtmps://live-api-s.facebook.com:443/rtmp/KEY`). The application is the first
//! path segment; the key is everything after it, query included (some platforms put
//! parameters there). The key is a secret: an answer or a log shows [`redact`]'s form,
//! `SCHEME://HOST[:PORT]/APP/…`, and a refusal's message never quotes the URL.
//! Sans-IO: strings in, a parsed URL or a refusal out.

use url::Url;

/// Longest URL accepted (platform URLs are well under it).
pub const MAX_URL_CHARS: usize = 2048;

/// What a redacted URL shows in place of the stream key.
pub const ELLIPSIS: &str = "…";

/// A checked target URL.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// `true` for `rtmps://` (TLS).
    pub tls: bool,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port: as given, else 1935 (`rtmp`) or 443 (`rtmps`).
    pub port: u16,
    /// The application (the first path segment).
    pub app: String,
    /// The stream key: the rest of the path and the query.
    pub key: String,
}

impl std::fmt::Debug for TargetUrl {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("app", &self.app)
            .field("key", &ELLIPSIS)
            .finish()
    }
}

/// Why a URL was refused (the message never quotes it: it may hold a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Too long.
    #[error("url: longer than {MAX_URL_CHARS} characters")]
    TooLong,
    /// Not a URL at all.
    #[error("url: not a URL (rtmp://HOST[:PORT]/APP/KEY or rtmps://…)")]
    Unparsable,
    /// Another scheme.
    #[error("url: the scheme must be rtmp or rtmps")]
    Scheme,
    /// No host.
    #[error("url: no host")]
    NoHost,
    /// User and password in the URL (RTMP has no such login).
    #[error("url: user or password in a URL is not supported")]
    UserInfo,
    /// A `#fragment`.
    #[error("url: a #fragment is not supported")]
    Fragment,
    /// No application segment.
    #[error("url: no application (rtmp://HOST/APP/KEY)")]
    NoApp,
    /// No stream key after the application.
    #[error("url: no stream key after the application (rtmp://HOST/APP/KEY)")]
    NoKey,
}

/// Checks `text` as a target URL.
pub fn parse(text: &str) -> Result<TargetUrl, UrlError> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::TooLong);
    }
    let url = Url::parse(text.trim()).map_err(|_| UrlError::Unparsable)?;
    let (tls, default_port) = match url.scheme() {
        "rtmp" => (false, 1935),
        "rtmps" => (true, 443),
        _ => return Err(UrlError::Scheme),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(UrlError::NoHost),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    if url.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    let path = url.path().trim_start_matches('/');
    let (app, rest) = path.split_once('/').unwrap_or((path, ""));
    if app.is_empty() {
        return Err(UrlError::NoApp);
    }
    if rest.is_empty() {
        return Err(UrlError::NoKey);
    }
    let key = match url.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    Ok(TargetUrl {
        tls,
        host,
        port: url.port().unwrap_or(default_port),
        app: app.to_owned(),
        key,
    })
}

/// `text` without its stream key: `SCHEME://HOST[:PORT]/APP/…`, or `…` alone when it is no
/// URL this module would accept (what cannot be parsed cannot be shown safely).
pub fn redact(text: &str) -> String {
    let Ok(url) = Url::parse(text.trim()) else {
        return ELLIPSIS.to_owned();
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return ELLIPSIS.to_owned();
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let app = url
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if app.is_empty() {
        return format!("{}://{host}{port}/{ELLIPSIS}", url.scheme());
    }
    format!("{}://{host}{port}/{app}/{ELLIPSIS}", url.scheme())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn platform_urls_parse() {
        let yt = parse("rtmps://a.rtmps.youtube.com/live2/abcd-efgh-ijkl").expect("youtube");
        assert!(yt.tls);
        assert_eq!(
            (yt.host.as_str(), yt.port, yt.app.as_str(), yt.key.as_str()),
            ("a.rtmps.youtube.com", 443, "live2", "abcd-efgh-ijkl")
        );
        let tw = parse("rtmp://fra05.contribute.live-video.net/app/live_1_x").expect("twitch");
        assert_eq!((tw.tls, tw.port, tw.app.as_str()), (false, 1935, "app"));
        let fb = parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-1-0-Ab?s_bl=1&s_sw=0")
            .expect("facebook");
        assert_eq!(fb.key, "FB-1-0-Ab?s_bl=1&s_sw=0");
        let v6 = parse("rtmp://[::1]:1936/live/k").expect("ipv6");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1936));
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (text, want) in [
            ("", UrlError::Unparsable),
            ("youtube.com/live2/k", UrlError::Unparsable),
            ("http://h/app/k", UrlError::Scheme),
            ("srt://h:9000/app/k", UrlError::Scheme),
            ("rtmp:///app/k", UrlError::NoHost),
            ("rtmp://u:p@h/app/k", UrlError::UserInfo),
            ("rtmp://h/app/k#x", UrlError::Fragment),
            ("rtmp://h", UrlError::NoApp),
            ("rtmp://h/", UrlError::NoApp),
            ("rtmp://h/app", UrlError::NoKey),
            ("rtmp://h/app/", UrlError::NoKey),
        ] {
            assert_eq!(parse(text), Err(want), "{text:?}");
        }
        let long = format!("rtmp://h/app/{}", "k".repeat(MAX_URL_CHARS));
        assert_eq!(parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn redaction_keeps_the_server_and_app_only() {
        assert_eq!(
            redact("rtmps://a.rtmps.youtube.com/live2/abcd-efgh"),
            "rtmps://a.rtmps.youtube.com/live2/…"
        );
        assert_eq!(
            redact("rtmps://live-api-s.facebook.com:443/rtmp/FB-1?s=2"),
            "rtmps://live-api-s.facebook.com:443/rtmp/…"
        );
        assert_eq!(redact("not a url secret"), "…");
        assert_eq!(redact("rtmp://h"), "rtmp://h/…");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let url = parse("rtmp://h/app/super-secret").expect("parse");
        assert!(!format!("{url:?}").contains("super-secret"));
    }

    proptest! {
        /// Whatever the key, a parsed URL's redaction holds none of it and parses back to
        /// nothing secret; and parsing never panics on any input.
        #[test]
        fn a_key_never_survives_redaction(key in "[A-Za-z0-9_-]{8,40}(\\?[a-z=&0-9]{1,20})?",
                                          tls in any::<bool>(), port in proptest::option::of(1u16..)) {
            let scheme = if tls { "rtmps" } else { "rtmp" };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("{scheme}://ingest.example.com{port}/app/{key}");
            let parsed = parse(&text).expect("valid");
            prop_assert_eq!(&parsed.key, &key);
            let shown = redact(&text);
            prop_assert!(!shown.contains(&key), "{}", shown);
            prop_assert!(shown.ends_with("/app/…"));
        }

        #[test]
        fn any_text_is_parsed_or_refused(text in ".{0,80}") {
            let _ = parse(&text);
            let _ = redact(&text);
        }
    }
}
