//! The parts of a plain HLS media playlist (RFC 8216bis §4.4) a viewer needs, sans-IO: text
//! in, a [`Playlist`] out: the target duration, the media sequence number of each segment, its
//! URI and duration, the init segment (`EXT-X-MAP`) and `EXT-X-ENDLIST`. LL-HLS tags (parts,
//! hints) are skipped: the reader plays whole segments, as plain players do.

/// One segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// Its URI as written (relative to the playlist).
    pub uri: String,
    /// `EXTINF` duration, seconds.
    pub duration: f64,
}

/// What a viewer reads from a media playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Playlist {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `EXT-X-MAP`'s URI (fMP4 segments; MPEG-TS has none).
    pub init: Option<String>,
    /// Segments, oldest first.
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST`: the stream ended.
    pub ended: bool,
}

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// It is not UTF-8 or does not start with `#EXTM3U`.
    #[error("not an M3U8 playlist")]
    NotM3u8,
    /// A multivariant playlist (`EXT-X-STREAM-INF`): the reader needs a media playlist.
    #[error("a multivariant playlist, not a media playlist")]
    Multivariant,
}

impl Playlist {
    /// Parses a media playlist; unknown tags are skipped, malformed numbers read as 0.
    pub fn parse(bytes: &[u8]) -> Result<Playlist, PlaylistError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PlaylistError::NotM3u8)?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("#EXTM3U") {
            return Err(PlaylistError::NotM3u8);
        }
        let mut out = Playlist::default();
        let mut msn = 0u64;
        let mut extinf = 0.0;
        for line in lines {
            if let Some(rest) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                out.target_duration = number(rest);
            } else if let Some(rest) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                // Only before the first segment does it number them (§4.4.3.2).
                if out.segments.is_empty() {
                    msn = rest.trim().parse().unwrap_or(0);
                }
            } else if let Some(rest) = line.strip_prefix("#EXT-X-MAP:") {
                out.init = attribute(rest, "URI").map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
                extinf = number(rest.split(',').next().unwrap_or(""));
            } else if line.starts_with("#EXT-X-STREAM-INF") {
                return Err(PlaylistError::Multivariant);
            } else if line == "#EXT-X-ENDLIST" {
                out.ended = true;
            } else if !line.starts_with('#') {
                out.segments.push(Segment {
                    msn,
                    uri: line.to_owned(),
                    duration: extinf,
                });
                msn = msn.saturating_add(1);
                extinf = 0.0;
            }
        }
        Ok(out)
    }
}

/// A non-negative decimal number, 0 when it is not one.
fn number(text: &str) -> f64 {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0)
}

/// The value of `name` in an attribute list (`A=1,URI="x,y"`), quotes removed.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corecast_plain_playlists_are_read() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-MEDIA-SEQUENCE:41\n#EXT-X-MAP:URI=\"init-3.mp4\",BYTERANGE=\"1,0\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\n#EXTINF:2.000,\nseg-41.m4s\n\
            #EXT-X-PART:DURATION=0.2,URI=\"p.m4s\"\n#EXTINF:1.5,\nseg-42.m4s\n";
        let p = Playlist::parse(text.as_bytes()).expect("parse");
        assert_eq!(p.target_duration, 2.0);
        assert_eq!(p.init.as_deref(), Some("init-3.mp4"));
        assert_eq!(
            p.segments,
            vec![
                Segment {
                    msn: 41,
                    uri: "seg-41.m4s".into(),
                    duration: 2.0
                },
                Segment {
                    msn: 42,
                    uri: "seg-42.m4s".into(),
                    duration: 1.5
                },
            ]
        );
        assert!(!p.ended);
    }

    #[test]
    fn nginx_rtmp_playlists_have_no_init_and_may_end() {
        let text = "#EXTM3U\r\n#EXT-X-VERSION:3\r\n#EXT-X-MEDIA-SEQUENCE:7\r\n\
            #EXT-X-TARGETDURATION:3\r\n#EXTINF:2.002,\r\nbench-7.ts\r\n#EXT-X-ENDLIST\r\n";
        let p = Playlist::parse(text.as_bytes()).expect("parse");
        assert_eq!(p.init, None);
        assert_eq!(p.segments[0].msn, 7);
        assert_eq!(p.segments[0].uri, "bench-7.ts");
        assert!(p.ended);
    }

    #[test]
    fn other_documents_are_refused() {
        assert_eq!(Playlist::parse(b"<html>"), Err(PlaylistError::NotM3u8));
        assert_eq!(Playlist::parse(&[0xff, 0xfe]), Err(PlaylistError::NotM3u8));
        assert_eq!(
            Playlist::parse(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n"),
            Err(PlaylistError::Multivariant)
        );
        let junk = Playlist::parse(b"#EXTM3U\n#EXTINF:x,\n#EXT-X-MAP:URI=\"a\n").expect("lenient");
        assert!(junk.segments.is_empty() && junk.init.is_none());
    }
}
