//! Target URLs of an outbound RTMP client: `rtmp[s]://host[:port]/app[/more]/key[?query]`.
//!
//! Owns the split of a URL into where to connect (scheme, host, port), the application and
//! `tcUrl` for `connect`, and the stream name (a platform's stream key) for `publish`/`play`,
//! and the redacted form that logs and API answers show instead of the key.
//!
//! # Tricky parts
//! - The application is every path segment but the last and the stream name is the last (so
//!   `rtmps://live-api-s.facebook.com:443/rtmp/KEY` connects to app `rtmp`), which is what
//!   ffmpeg does without an `app` option. A query string belongs to the stream name.
//! - The `url` crate checks the authority (host, IPv6 literal, port); the path is taken as
//!   written so a stream name is never percent-encoded (servers compare names byte for byte).
//! - User information (`user@host`) is refused: it would end up in logs, and RTMP logins go
//!   in the stream name's query string anyway.
//! - Only `rtmp://` (1935) and `rtmps://` (443) are accepted: they are what platforms ingest.

use std::fmt;

/// Why a URL cannot be used. The messages quote the redacted URL only, never a stream key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://` prefix.
    #[error("not a URL (expected rtmp[s]://host[:port]/app/key)")]
    NoScheme,
    /// A scheme other than `rtmp` or `rtmps`.
    #[error("unsupported scheme {0:?} (expected rtmp:// or rtmps://)")]
    UnsupportedScheme(String),
    /// The host part is empty or malformed, or carries user information.
    #[error("bad host in {0}")]
    BadHost(String),
    /// The port is not a number in 1..=65535.
    #[error("bad port in {0}")]
    BadPort(String),
    /// The path lacks an application or a stream name.
    #[error("URL needs /app/key after the host: {0}")]
    MissingPath(String),
}

/// `rtmp` or `rtmps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain RTMP over TCP.
    Rtmp,
    /// RTMP over TLS.
    Rtmps,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
        }
    }
}

/// A parsed target URL.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// Which transport.
    pub scheme: Scheme,
    /// Host name or address literal, without brackets (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Application for `connect`.
    pub app: String,
    /// Stream name (usually the platform's stream key), query string included.
    pub stream: String,
}

/// Never prints the stream name: a `{:?}` in a log line must not leak a key.
impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetUrl({})", self.redacted())
    }
}

impl TargetUrl {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<TargetUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NoScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            other => return Err(UrlError::UnsupportedScheme(other.to_owned())),
        };
        let shown = redact(url);
        let parsed = url::Url::parse(url).map_err(|e| match e {
            url::ParseError::InvalidPort => UrlError::BadPort(shown.clone()),
            _ => UrlError::BadHost(shown.clone()),
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlError::BadHost(shown));
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(url::Host::Ipv4(addr)) => addr.to_string(),
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            _ => return Err(UrlError::BadHost(shown)),
        };
        let port = match parsed.port() {
            Some(0) => return Err(UrlError::BadPort(shown)),
            Some(port) => port,
            None => scheme.default_port(),
        };
        let path = rest.find(['/', '?', '#']).map_or("", |at| &rest[at..]);
        let (app, stream) = split_path(path).ok_or(UrlError::MissingPath(shown))?;
        Ok(TargetUrl {
            scheme,
            host,
            port,
            app,
            stream,
        })
    }

    /// `host:port`, an IPv6 literal in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `tcUrl` for `connect`: `scheme://host:port/app`.
    pub fn tc_url(&self) -> String {
        format!(
            "{}://{}/{}",
            self.scheme.as_str(),
            self.authority(),
            self.app
        )
    }

    /// `scheme://host:port/app/…`: the form logs and API answers show.
    pub fn redacted(&self) -> String {
        format!("{}/…", self.tc_url())
    }
}

/// The redacted form of a URL string that may not parse: everything up to the last `/`
/// (the stream key and its query string replaced by `…`). Used for error messages.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // User information (`user:password@`) is a secret too.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let kept = rest.rfind('/').map_or("", |at| &rest[..at]);
    if scheme.is_empty() {
        format!("{kept}/…")
    } else {
        format!("{scheme}://{kept}/…")
    }
}

/// Splits `/app[/more]/stream[?query]`; None when either part is missing.
fn split_path(path: &str) -> Option<(String, String)> {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let path = path.strip_prefix('/')?.trim_end_matches('/');
    let (app, stream) = path.rsplit_once('/')?;
    if app.is_empty() || stream.is_empty() {
        return None;
    }
    let stream = match query {
        Some(query) => format!("{stream}?{query}"),
        None => stream.to_owned(),
    };
    Some((app.to_owned(), stream))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn platform_shapes() {
        let yt = TargetUrl::parse("rtmps://a.rtmps.youtube.com/live2/abcd-efgh").unwrap();
        assert_eq!((yt.scheme, yt.port), (Scheme::Rtmps, 443));
        assert_eq!(
            (yt.app.as_str(), yt.stream.as_str()),
            ("live2", "abcd-efgh")
        );
        assert_eq!(yt.tc_url(), "rtmps://a.rtmps.youtube.com:443/live2");
        let tw = TargetUrl::parse("rtmp://live.twitch.tv/app/live_123_x").unwrap();
        assert_eq!((tw.port, tw.app.as_str()), (1935, "app"));
        let fb = TargetUrl::parse("rtmps://live-api-s.facebook.com:443/rtmp/FB-1?s_x=1").unwrap();
        assert_eq!(
            (fb.app.as_str(), fb.stream.as_str()),
            ("rtmp", "FB-1?s_x=1")
        );
        let v6 = TargetUrl::parse("rtmp://[::1]:1940/a/b/c").unwrap();
        assert_eq!((v6.host.as_str(), v6.app.as_str()), ("::1", "a/b"));
        assert_eq!(v6.authority(), "[::1]:1940");
    }

    #[test]
    fn refusals_never_show_the_key() {
        for (url, why) in [
            ("http://h/app/SECRET", "unsupported scheme"),
            ("rtmp://h:99999/app/SECRET", "bad port"),
            ("rtmp://user:pw@h/app/SECRET", "bad host"),
            ("rtmp://h/SECRET", "needs /app/key"),
            ("nonsense", "not a URL"),
        ] {
            let error = TargetUrl::parse(url).unwrap_err().to_string();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("SECRET"), "{url}: {error}");
            assert!(!error.contains("pw"), "{url}: {error}");
        }
        let url = TargetUrl::parse("rtmp://h/app/SECRET").unwrap();
        assert!(!format!("{url:?}").contains("SECRET"));
        assert_eq!(url.redacted(), "rtmp://h:1935/app/…");
    }
}
