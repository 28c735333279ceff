//! The stream to play, from an `rtmp://host[:port]/app/name` URL: the server address and the
//! `connect`/`play` arguments. Plain RTMP only; the reader measures the send path, not TLS.

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

/// Why a URL cannot be played.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `rtmp://`.
    #[error("only rtmp:// URLs are supported: {0}")]
    Scheme(String),
    /// No `/app/name` after the host.
    #[error("the URL needs /app/name after the host: {0}")]
    Path(String),
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
        // An IPv6 literal is bracketed, so its own colons are not a port.
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        let authority = if has_port {
            host.to_owned()
        } else {
            format!("{host}:1935")
        };
        Ok(Target {
            app: app.to_owned(),
            stream: stream.to_owned(),
            tc_url: format!("rtmp://{authority}/{app}"),
            authority,
        })
    }

    /// The server's first address.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        self.authority.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no address", self.authority),
            )
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
        assert_eq!(t.resolve().expect("resolve").port(), 1940);
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
}
