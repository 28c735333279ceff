//! The stream to play and how ([`Stream`]), from its URL: `rtmp://host[:port]/app/name` (the
//! server address and the `connect`/`play` arguments), `http://host[:port]/....m3u8` (a plain
//! HLS media playlist) or `http://host[:port]/....flv` (HTTP-FLV). No TLS: the reader measures
//! the send path.

use std::net::{SocketAddr, ToSocketAddrs};

/// What the players ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The application (the URL path's first segment).
    pub app: String,
    /// The stream name (the rest of the path).
    pub stream: String,
    /// `rtmp://host:port/app`, sent in `connect`.
    pub tc_url: String,
    /// `host:port`, to resolve.
    pub authority: String,
}

/// An HTTP stream: where to ask and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port`, to resolve and send as `Host`.
    pub authority: String,
    /// The path (and query) to GET.
    pub path: String,
}

/// A stream and the way the players read it, chosen by the URL's scheme and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    /// RTMP players.
    Rtmp(Target),
    /// Plain HLS viewers of a media playlist (`.m3u8`).
    Hls(HttpTarget),
    /// HTTP-FLV viewers (`.flv`).
    Flv(HttpTarget),
}

/// Why a URL cannot be played.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Neither `rtmp://` nor `http://`.
    #[error("only rtmp:// and http:// URLs are supported: {0}")]
    Scheme(String),
    /// No `/app/name` after the host.
    #[error("the URL needs /app/name after the host: {0}")]
    Path(String),
    /// An HTTP path that is neither a `.m3u8` playlist nor a `.flv` stream.
    #[error("an http:// URL must name a .m3u8 playlist or a .flv stream: {0}")]
    HttpPath(String),
}

impl Stream {
    /// Parses the URL; the mode follows from it.
    pub fn parse(url: &str) -> Result<Stream, UrlError> {
        if url.starts_with("rtmp://") {
            return Target::parse(url).map(Stream::Rtmp);
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(UrlError::Path(url.to_owned()));
        }
        let target = HttpTarget {
            authority: with_port(host, 80),
            path: path.to_owned(),
        };
        let file = path.split(['?', '#']).next().unwrap_or("");
        if file.ends_with(".m3u8") {
            Ok(Stream::Hls(target))
        } else if file.ends_with(".flv") {
            Ok(Stream::Flv(target))
        } else {
            Err(UrlError::HttpPath(url.to_owned()))
        }
    }

    /// `rtmp`, `hls` or `flv`, for the summary.
    pub fn mode(&self) -> &'static str {
        match self {
            Stream::Rtmp(_) => "rtmp",
            Stream::Hls(_) => "hls",
            Stream::Flv(_) => "flv",
        }
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        match self {
            Stream::Rtmp(t) => &t.authority,
            Stream::Hls(t) | Stream::Flv(t) => &t.authority,
        }
    }

    /// The server's first address.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        let authority = self.authority();
        authority.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{authority} has no address"),
            )
        })
    }
}

/// `host` with `default` as its port when it names none.
fn with_port(host: &str, default: u16) -> String {
    // An IPv6 literal is bracketed, so its own colons are not a port.
    let has_port = match host.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host.contains(':'),
    };
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:{default}")
    }
}

impl Target {
    /// Parses `rtmp://host[:port]/app/name` (port 1935 when left out).
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| UrlError::Path(url.to_owned()))?;
        let (app, stream) = path
            .split_once('/')
            .filter(|(app, stream)| !app.is_empty() && !stream.is_empty() && !host.is_empty())
            .ok_or_else(|| UrlError::Path(url.to_owned()))?;
        let authority = with_port(host, 1935);
        Ok(Target {
            app: app.to_owned(),
            stream: stream.to_owned(),
            tc_url: format!("rtmp://{authority}/{app}"),
            authority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_app_and_stream_are_split() {
        let t = Target::parse("rtmp://127.0.0.1:1940/live/bench").expect("parse");
        assert_eq!(t.app, "live");
        assert_eq!(t.stream, "bench");
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:1940/live");
        let stream = Stream::Rtmp(t);
        assert_eq!(stream.resolve().expect("resolve").port(), 1940);
        assert_eq!(stream.mode(), "rtmp");
    }

    #[test]
    fn the_port_defaults_to_1935_and_the_name_keeps_its_slashes() {
        let t = Target::parse("rtmp://localhost/live/a/b").expect("parse");
        assert_eq!(t.authority, "localhost:1935");
        assert_eq!(t.stream, "a/b");
        let v6 = Target::parse("rtmp://[::1]/live/x").expect("parse");
        assert_eq!(v6.authority, "[::1]:1935");
        let v6_port = Target::parse("rtmp://[::1]:99/live/x").expect("parse");
        assert_eq!(v6_port.authority, "[::1]:99");
    }

    #[test]
    fn other_schemes_and_short_paths_are_refused() {
        assert!(matches!(
            Target::parse("rtmps://h/live/x"),
            Err(UrlError::Scheme(_))
        ));
        for bad in [
            "rtmp://h",
            "rtmp://h/live",
            "rtmp://h/live/",
            "rtmp:///live/x",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(UrlError::Path(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn http_urls_choose_hls_or_flv_by_their_path() {
        let hls = Stream::parse("http://127.0.0.1:8080/hls/live/x/plain.m3u8").expect("parse");
        assert_eq!(
            hls,
            Stream::Hls(HttpTarget {
                authority: "127.0.0.1:8080".into(),
                path: "/hls/live/x/plain.m3u8".into()
            })
        );
        let flv = Stream::parse("http://localhost/live/x.flv?token=1").expect("parse");
        assert_eq!(flv.mode(), "flv");
        assert_eq!(flv.authority(), "localhost:80");
        assert!(matches!(
            Stream::parse("http://h/index.html"),
            Err(UrlError::HttpPath(_))
        ));
        assert!(matches!(
            Stream::parse("https://h/a.flv"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            Stream::parse("http:///a.flv"),
            Err(UrlError::Path(_))
        ));
    }
}
