//! RTMP URLs: `scheme://host[:port]/app[/more/app]/stream[?query]`.
//!
//! Owns the split of a URL into the three things an RTMP client needs: where to connect
//! (host and port), the application for `connect` (with the `tcUrl` that names it), and the
//! stream name for `play`/`publish`.
//!
//! # Tricky parts
//! - The application is every path segment but the last, the stream the last (so
//!   `rtmp://h/live/inst/cam` connects to app `live/inst` and plays `cam`), which is what
//!   ffmpeg does when the URL has more than two segments and no `app` option.
//! - A query string belongs to the stream name (servers read auth tokens there); it is kept.
//! - IPv6 literals come in brackets (`rtmp://[::1]:1935/live/x`).
//! - The `url` crate parses and checks the scheme's authority (host, IPv6 literal, port);
//!   the path is split from the URL as written, so stream names are not percent-encoded.
//!   User information (`user@host`) is refused: RTMP logins go in the query string.
//! - The scheme picks the transport and the default port: `rtmp://` 1935, `rtmps://` (TLS)
//!   443, `rtmpt://` (HTTP tunnel) 80. The `tcUrl` keeps the scheme the URL was given with.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://` prefix.
    #[error("not a URL (expected rtmp://host[:port]/app/stream): {0:?}")]
    NoScheme(String),
    /// A scheme that is not an RTMP one at all.
    #[error("unknown scheme {0:?} (expected rtmp://, rtmps:// or rtmpt://)")]
    UnknownScheme(String),
    /// The host part is empty or malformed.
    #[error("bad host in {0:?}")]
    BadHost(String),
    /// The port is not a number in 1..=65535.
    #[error("bad port in {0:?}")]
    BadPort(String),
    /// The path lacks an application or a stream name.
    #[error("URL needs /app/stream after the host: {0:?}")]
    MissingPath(String),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host as written.
        host: String,
        /// The resolver's message.
        reason: String,
    },
}

/// An RTMP URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// Plain RTMP over TCP.
    Rtmp,
    /// RTMP over TLS (rustls).
    Rtmps,
    /// RTMP tunnelled through HTTP/1.1 requests.
    Rtmpt,
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
            Scheme::Rtmpt => "rtmpt",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
            Scheme::Rtmpt => 80,
        }
    }
}

/// A parsed RTMP URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// Which transport.
    pub scheme: Scheme,
    /// Host name or address literal, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Application for `connect`.
    pub app: String,
    /// Stream name for `play`/`publish`, query string included.
    pub stream: String,
}

impl RtmpUrl {
    /// Parses `url` (`rtmp://`, `rtmps://` or `rtmpt://`).
    pub fn parse(url: &str) -> Result<RtmpUrl, UrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::NoScheme(url.to_owned()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            "rtmpt" => Scheme::Rtmpt,
            _ => return Err(UrlError::UnknownScheme(scheme.to_owned())),
        };
        let parsed = url::Url::parse(url).map_err(|e| match e {
            url::ParseError::InvalidPort => UrlError::BadPort(url.to_owned()),
            _ => UrlError::BadHost(url.to_owned()),
        })?;
        // RTMP has no user information in URLs: `user@` is a mistake, not a login.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlError::BadHost(url.to_owned()));
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(url::Host::Ipv4(addr)) => addr.to_string(),
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            _ => return Err(UrlError::BadHost(url.to_owned())),
        };
        let port = match parsed.port() {
            Some(0) => return Err(UrlError::BadPort(url.to_owned())),
            Some(port) => port,
            None => scheme.default_port(),
        };
        let (app, stream) = split_path(raw_path(rest), url)?;
        Ok(RtmpUrl {
            scheme,
            host,
            port,
            app,
            stream,
        })
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

    /// `host:port`, an IPv6 literal in brackets (also the HTTP `Host` header of RTMPT).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same URL with another stream name (the query string, if any, is kept).
    pub fn with_stream(&self, name: &str) -> RtmpUrl {
        let stream = match self.stream.split_once('?') {
            Some((_, query)) => format!("{name}?{query}"),
            None => name.to_owned(),
        };
        RtmpUrl {
            stream,
            ..self.clone()
        }
    }

    /// The stream name without its query string.
    pub fn stream_base(&self) -> &str {
        self.stream.split('?').next().unwrap_or(&self.stream)
    }

    /// Resolves the host once, at start: every connection of a run goes to this address.
    pub fn resolve(&self) -> Result<SocketAddr, UrlError> {
        let fail = |reason: String| UrlError::Resolve {
            host: self.host.clone(),
            reason,
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".to_owned()))
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tc_url(), self.stream)
    }
}

/// What follows the authority, as written: the `url` crate would percent-encode a stream
/// name (`my cam` as `my%20cam`), and servers compare names byte for byte. The authority
/// ends where the crate ends it for these schemes: at the first `/`, `?` or `#`.
fn raw_path(after_scheme: &str) -> &str {
    after_scheme
        .find(['/', '?', '#'])
        .map_or("", |at| &after_scheme[at..])
}

/// Splits `/app[/more]/stream[?query]` into the application and the stream name (with its
/// query string).
fn split_path(path: &str, url: &str) -> Result<(String, String), UrlError> {
    let missing = || UrlError::MissingPath(url.to_owned());
    if !path.starts_with('/') {
        return Err(missing());
    }
    // The query string belongs to the stream name; split the path before it.
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let path = path.trim_matches('/');
    let (app, stream) = path.rsplit_once('/').ok_or_else(missing)?;
    if app.is_empty() || stream.is_empty() {
        return Err(missing());
    }
    let stream = match query {
        Some(query) => format!("{stream}?{query}"),
        None => stream.to_owned(),
    };
    Ok((app.to_owned(), stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_app_and_stream() {
        let url = RtmpUrl::parse("rtmp://127.0.0.1:1936/live/loadtest").unwrap();
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 1936);
        assert_eq!(url.app, "live");
        assert_eq!(url.stream, "loadtest");
        assert_eq!(url.tc_url(), "rtmp://127.0.0.1:1936/live");
        assert_eq!(url.to_string(), "rtmp://127.0.0.1:1936/live/loadtest");
    }

    #[test]
    fn defaults_port_and_keeps_nested_app_and_query() {
        let url = RtmpUrl::parse("rtmp://example.invalid/live/inst/cam?token=1").unwrap();
        assert_eq!(url.port, 1935);
        assert_eq!(url.app, "live/inst");
        assert_eq!(url.stream, "cam?token=1");
        assert_eq!(url.stream_base(), "cam");
        assert_eq!(url.with_stream("cam-3").stream, "cam-3?token=1");
    }

    #[test]
    fn ipv6_literal() {
        let url = RtmpUrl::parse("rtmp://[::1]:2000/app/s").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.port, 2000);
        assert_eq!(url.tc_url(), "rtmp://[::1]:2000/app");
    }

    #[test]
    fn tls_and_tunnel_schemes_with_their_default_ports() {
        let url = RtmpUrl::parse("rtmps://live.example.com/app/key?t=1").unwrap();
        assert_eq!(url.scheme, Scheme::Rtmps);
        assert_eq!((url.host.as_str(), url.port), ("live.example.com", 443));
        assert_eq!(url.tc_url(), "rtmps://live.example.com:443/app");
        assert_eq!(url.stream, "key?t=1");
        let url = RtmpUrl::parse("RTMPS://127.0.0.1:8443/live/s").unwrap();
        assert_eq!((url.scheme, url.port), (Scheme::Rtmps, 8443));

        let url = RtmpUrl::parse("rtmpt://[::1]/live/inst/cam").unwrap();
        assert_eq!(url.scheme, Scheme::Rtmpt);
        assert_eq!(url.port, 80);
        assert_eq!(url.authority(), "[::1]:80");
        assert_eq!(url.app, "live/inst");
        assert_eq!(url.tc_url(), "rtmpt://[::1]:80/live/inst");
        let url = RtmpUrl::parse("rtmpt://127.0.0.1:8080/live/s").unwrap();
        assert_eq!(url.authority(), "127.0.0.1:8080");
        assert_eq!(url.to_string(), "rtmpt://127.0.0.1:8080/live/s");
        assert!(RtmpUrl::parse("rtmpt://h/live").is_err());
        assert!(RtmpUrl::parse("rtmps://h:0/a/b").is_err());
    }

    #[test]
    fn refuses_other_schemes_clearly() {
        let err = RtmpUrl::parse("http://h/live/s").unwrap_err();
        assert!(matches!(err, UrlError::UnknownScheme(_)));
        assert!(err.to_string().contains("rtmps://"), "{err}");
        assert!(matches!(
            RtmpUrl::parse("rtmpe://h/live/s"),
            Err(UrlError::UnknownScheme(_))
        ));
        assert!(matches!(
            RtmpUrl::parse("h/live/s"),
            Err(UrlError::NoScheme(_))
        ));
    }

    #[test]
    fn stream_names_stay_as_written() {
        let url = RtmpUrl::parse("rtmp://h/live/my cam?k=a b").unwrap();
        assert_eq!(url.stream, "my cam?k=a b");
        let url = RtmpUrl::parse("rtmp://h/live/100%25#x").unwrap();
        assert_eq!(url.stream, "100%25#x");
        let url = RtmpUrl::parse("rtmp://[0:0::1]/live/s").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.authority(), "[::1]:1935");
        let url = RtmpUrl::parse("rtmp://Host.Example/live/s").unwrap();
        assert_eq!(url.host, "Host.Example");
    }

    #[test]
    fn refuses_incomplete_urls() {
        for url in [
            "rtmp://h/live",
            "rtmp://h/",
            "rtmp://h",
            "rtmp://:1935/a/b",
            "rtmp://h:0/a/b",
            "rtmp://h:x/a/b",
            "rtmp://[::1/a/b",
            "rtmp://h:65536/a/b",
            "rtmp://user@h/a/b",
            "rtmp://u:p@h/a/b",
            "rtmp://h?x/a/b",
            "rtmp://h#x/a/b",
            "rtmp://h x/a/b",
        ] {
            assert!(RtmpUrl::parse(url).is_err(), "{url}");
        }
    }
}
