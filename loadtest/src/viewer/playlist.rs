//! The parts of an HLS media playlist a viewer needs (RFC 8216bis): segments, LL-HLS parts
//! (`EXT-X-PART`) with their position, the preload hint, the part and segment targets, the
//! init segment (`EXT-X-MAP`) and `EXT-X-ENDLIST`. Sans-IO: text in, a [`MediaPlaylist`]
//! out.
//!
//! Why not a crate: `m3u8-rs` (6.0) attaches tags to the *next* segment URI, so the parts
//! and the preload hint of the segment still being written (the live edge, all that LL-HLS
//! is about) are dropped. Only the tags above are read; everything else is skipped.
//!
//! # Positions
//! A part is named by `(msn, index)`: the media sequence number of its segment (the
//! playlist's `EXT-X-MEDIA-SEQUENCE` plus the segments before it) and its index in that
//! segment. Parts after the last segment URI belong to the segment being written. This is
//! what `_HLS_msn` and `_HLS_part` of a blocking reload name.

/// A part's or segment's place in the stream: `(msn, part index)`; a whole segment uses
/// index [`WHOLE`].
pub type Position = (u64, u64);

/// The part index used for a whole segment (sorts after every part of it).
pub const WHOLE: u64 = u64::MAX;

/// One media resource to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where it sits in the stream.
    pub position: Position,
    /// Its URI as written (relative to the playlist).
    pub uri: String,
    /// Duration, seconds.
    pub duration: f64,
    /// `INDEPENDENT=YES` (parts) — segments are always independent here.
    pub independent: bool,
}

/// What a viewer reads from a media playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `EXT-X-PART-INF:PART-TARGET`, seconds (LL-HLS only).
    pub part_target: Option<f64>,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-MAP`'s URI.
    pub init: Option<String>,
    /// Whole segments, oldest first.
    pub segments: Vec<Entry>,
    /// Parts, oldest first.
    pub parts: Vec<Entry>,
    /// The `EXT-X-PRELOAD-HINT:TYPE=PART` position, if any.
    pub hint: Option<Position>,
    /// `EXT-X-ENDLIST`: the stream ended.
    pub ended: bool,
}

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// It does not start with `#EXTM3U`.
    #[error("not an M3U8 playlist")]
    NotM3u8,
    /// It is not UTF-8.
    #[error("playlist is not UTF-8")]
    NotUtf8,
}

impl MediaPlaylist {
    /// Parses a media playlist; unknown tags are skipped, malformed numbers read as 0.
    pub fn parse(bytes: &[u8]) -> Result<MediaPlaylist, PlaylistError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PlaylistError::NotUtf8)?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("#EXTM3U") {
            return Err(PlaylistError::NotM3u8);
        }
        let mut out = MediaPlaylist::default();
        let mut msn_started = false;
        let mut segment_index = 0u64;
        let mut part_index = 0u64;
        let mut extinf = 0.0;
        for line in lines {
            let msn = out.media_sequence + segment_index;
            if let Some(rest) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                out.target_duration = number(rest);
            } else if let Some(rest) = line.strip_prefix("#EXT-X-PART-INF:") {
                out.part_target = attribute(rest, "PART-TARGET").map(number);
            } else if let Some(rest) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                if !msn_started {
                    out.media_sequence = rest.parse().unwrap_or(0);
                }
            } else if let Some(rest) = line.strip_prefix("#EXT-X-MAP:") {
                out.init = attribute(rest, "URI").map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
                extinf = number(rest.split(',').next().unwrap_or(""));
            } else if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
                msn_started = true;
                if let Some(uri) = attribute(rest, "URI") {
                    out.parts.push(Entry {
                        position: (msn, part_index),
                        uri: uri.to_owned(),
                        duration: attribute(rest, "DURATION").map_or(0.0, number),
                        independent: attribute(rest, "INDEPENDENT") == Some("YES"),
                    });
                }
                part_index += 1;
            } else if let Some(rest) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                if attribute(rest, "TYPE") == Some("PART") {
                    out.hint = Some((msn, part_index));
                }
            } else if line == "#EXT-X-ENDLIST" {
                out.ended = true;
            } else if !line.starts_with('#') {
                msn_started = true;
                out.segments.push(Entry {
                    position: (msn, WHOLE),
                    uri: line.to_owned(),
                    duration: extinf,
                    independent: true,
                });
                segment_index += 1;
                part_index = 0;
                extinf = 0.0;
            }
        }
        Ok(out)
    }

    /// The position right after the newest part listed: the part a blocking reload asks
    /// for (the preload hint when there is one).
    pub fn next_part(&self) -> Option<Position> {
        self.hint
            .or_else(|| self.parts.last().map(|p| (p.position.0, p.position.1 + 1)))
    }
}

/// A decimal number, 0 when it is not one.
fn number(text: &str) -> f64 {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0)
}

/// The value of `name` in an attribute list (`A=1,B="x,y"`), quotes removed.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            let next = quoted[end + 1..].trim_start_matches(',');
            (&quoted[..end], next)
        } else {
            match after.split_once(',') {
                Some((value, next)) => (value, next),
                None => (after, ""),
            }
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
    use proptest::prelude::*;

    use super::*;

    const LL: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-PART-INF:PART-TARGET=0.20000\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.60000\n\
        #EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"abc/init.mp4\"\n\
        #EXTINF:2.00000,\nabc/s7.m4s\n\
        #EXT-X-PART:DURATION=0.20000,URI=\"abc/p8.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.20000,URI=\"abc/p8.1.m4s\"\n\
        #EXTINF:0.40000,\nabc/s8.m4s\n\
        #EXT-X-PART:DURATION=0.20000,URI=\"abc/p9.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"abc/p9.1.m4s\"\n";

    #[test]
    fn low_latency_positions() {
        let p = MediaPlaylist::parse(LL.as_bytes()).unwrap();
        assert_eq!(p.target_duration, 2.0);
        assert_eq!(p.part_target, Some(0.2));
        assert_eq!(p.init.as_deref(), Some("abc/init.mp4"));
        let segments: Vec<_> = p.segments.iter().map(|s| s.position).collect();
        assert_eq!(segments, [(7, WHOLE), (8, WHOLE)]);
        let parts: Vec<_> = p
            .parts
            .iter()
            .map(|s| (s.position, s.independent))
            .collect();
        assert_eq!(parts, [((8, 0), true), ((8, 1), false), ((9, 0), true)]);
        assert_eq!(p.parts[2].uri, "abc/p9.0.m4s");
        assert_eq!(p.hint, Some((9, 1)));
        assert_eq!(p.next_part(), Some((9, 1)));
        assert!(!p.ended);
    }

    #[test]
    fn plain_and_ended() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:3\n\
                    #EXTINF:4.0,\n3.ts\n#EXTINF:3.5,\n4.ts\n#EXT-X-ENDLIST\n";
        let p = MediaPlaylist::parse(text.as_bytes()).unwrap();
        assert_eq!(p.part_target, None);
        assert_eq!(p.segments[1].position, (4, WHOLE));
        assert_eq!(p.segments[1].duration, 3.5);
        assert!(p.ended);
        assert_eq!(p.next_part(), None);
    }

    #[test]
    fn refuses_non_playlists() {
        assert_eq!(MediaPlaylist::parse(b"<html>"), Err(PlaylistError::NotM3u8));
        assert_eq!(
            MediaPlaylist::parse(b"#EXTM3U\n\xff"),
            Err(PlaylistError::NotUtf8)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "#EXTM3U\n(#EXT[-A-Z:=,\".0-9a-z]{0,40}\n|[a-z0-9./]{1,10}\n){0,20}") {
            let _ = MediaPlaylist::parse(text.as_bytes());
        }

        #[test]
        fn attributes_round_trip(a in "[0-9.]{1,6}", b in "[a-z/,.]{0,12}") {
            let list = format!("A={a},B=\"{b}\",C=YES");
            prop_assert_eq!(attribute(&list, "A"), Some(a.as_str()));
            prop_assert_eq!(attribute(&list, "B"), Some(b.as_str()));
            prop_assert_eq!(attribute(&list, "C"), Some("YES"));
        }
    }
}
