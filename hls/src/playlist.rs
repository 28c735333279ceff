//! Playlists: the LL-HLS media playlist, the same without low-latency tags, and the
//! multivariant playlist (RFC 8216bis sections 4.4.3, 4.4.4.9, 4.4.5.2, 4.4.6).
//!
//! # Tricky parts
//! - `EXT-X-TARGETDURATION` must cover every segment, and segments are whole GOPs: it is the
//!   ceiling of the longest segment this stream has made (never less than the configured
//!   target), so it only grows, once, when the first long GOP ends. With ffmpeg's default
//!   keyframe interval (250 frames, 10 s at 25 fps) it says 10.
//! - Parts are listed only for the segments within three target durations of the live edge
//!   (4.4.4.9 says older ones SHOULD go); the segments themselves stay.
//! - `PART-HOLD-BACK` is three part targets (at least two are required, three recommended).

use std::fmt::Write as _;

use crate::muxer::Muxer;
use crate::names::Resource;
use crate::window::Segment;

/// Which media playlist to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// With `EXT-X-PART-INF`, `EXT-X-SERVER-CONTROL`, `EXT-X-PART` and `EXT-X-PRELOAD-HINT`.
    LowLatency,
    /// Segments only, for players without LL-HLS.
    Plain,
}

/// Seconds with five decimals, as the playlist writes durations.
fn seconds(ticks: u64, timescale: u32) -> String {
    format!("{:.5}", ticks as f64 / f64::from(timescale.max(1)))
}

/// `EXT-X-TARGETDURATION`: whole seconds covering every segment made so far.
pub fn target_duration(muxer: &Muxer) -> u64 {
    let timescale = u64::from(muxer.timescale().max(1));
    let window = muxer.window();
    let longest = window.longest_ever().max(window.current().duration());
    let configured = u64::from(muxer.config().segment_target_ms).div_ceil(1000);
    longest.div_ceil(timescale).max(configured).max(1)
}

/// The media playlist, `None` before the init segment exists.
pub fn media_playlist(muxer: &Muxer, flavor: Flavor) -> Option<String> {
    muxer.init()?;
    let low_latency = flavor == Flavor::LowLatency;
    let timescale = muxer.timescale();
    let window = muxer.window();
    let prefix = &muxer.config().prefix;
    let target = target_duration(muxer);
    let part_target_ms = muxer.config().part_target_ms;
    let first_msn = window
        .listed()
        .next()
        .map_or(window.current().msn, |s| s.msn);
    let mut out = String::new();
    out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    if low_latency {
        let part_target = f64::from(part_target_ms) / 1000.0;
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.5}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.5}",
            3.0 * part_target
        );
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{prefix}/{}\"", Resource::Init.name());
    let with_parts = if low_latency {
        segments_with_parts(muxer, target)
    } else {
        u64::MAX
    };
    let first_start = window
        .listed()
        .next()
        .map_or(window.current().start, |s| s.start);
    if let Some(zero) = muxer.wall_clock() {
        let ms = first_start * 1000 / u64::from(timescale.max(1));
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(zero + ms));
    }
    for segment in window.listed() {
        if segment.msn >= with_parts {
            write_parts(&mut out, prefix, segment, timescale);
        }
        let _ = writeln!(out, "#EXTINF:{},", seconds(segment.duration(), timescale));
        let _ = writeln!(
            out,
            "{prefix}/{}",
            Resource::Segment { msn: segment.msn }.name()
        );
    }
    if muxer.ended() {
        out.push_str("#EXT-X-ENDLIST\n");
    } else if low_latency {
        let current = window.current();
        write_parts(&mut out, prefix, current, timescale);
        let hint = Resource::Part {
            msn: current.msn,
            index: current.parts.len(),
        };
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}/{}\"",
            hint.name()
        );
    }
    Some(out)
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` for Unix milliseconds (proleptic Gregorian, UTC).
fn iso8601(unix_ms: u64) -> String {
    let (days, ms_of_day) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// The first msn whose parts are listed: those ending within three target durations of the
/// live edge.
fn segments_with_parts(muxer: &Muxer, target_secs: u64) -> u64 {
    let window = muxer.window();
    let budget = 3 * target_secs * u64::from(muxer.timescale());
    let mut covered = window.current().duration();
    let mut first = window.current().msn;
    let listed: Vec<&Segment> = window.listed().collect();
    for segment in listed.iter().rev() {
        if covered >= budget {
            break;
        }
        covered += segment.duration();
        first = segment.msn;
    }
    first
}

fn write_parts(out: &mut String, prefix: &str, segment: &Segment, timescale: u32) {
    for (index, part) in segment.parts.iter().enumerate() {
        let name = Resource::Part {
            msn: segment.msn,
            index,
        }
        .name();
        let independent = if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={},URI=\"{prefix}/{name}\"{independent}",
            seconds(part.duration, timescale)
        );
    }
}

/// Peak bit rate of the listed segments (or of the parts so far), bits per second.
pub fn peak_bandwidth(muxer: &Muxer) -> u64 {
    let timescale = u64::from(muxer.timescale());
    let rate = |segment: &Segment| {
        let duration = segment.duration();
        (segment.len() as u64 * 8 * timescale)
            .checked_div(duration)
            .unwrap_or(0)
    };
    let window = muxer.window();
    window
        .listed()
        .map(rate)
        .max()
        .unwrap_or_else(|| rate(window.current()))
}

/// The multivariant playlist naming one variant at `media_uri`, `None` before the init
/// segment exists (the codecs are not known yet).
pub fn multivariant_playlist(muxer: &Muxer, media_uri: &str) -> Option<String> {
    muxer.init()?;
    let mut codecs = Vec::new();
    let mut resolution = String::new();
    if let Some(video) = muxer.video_config() {
        codecs.push(video.codec_string());
        let dims = video.dims();
        if dims.width > 0 && dims.height > 0 {
            resolution = format!(",RESOLUTION={}x{}", dims.width, dims.height);
        }
    }
    if let Some(audio) = muxer.audio_config() {
        codecs.push(audio.codec_string());
    }
    let bandwidth = peak_bandwidth(muxer).max(1);
    Some(format!(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"{resolution}\n{media_uri}\n",
        codecs.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_796_463_208_123), "2026-12-05T09:33:28.123Z");
        assert_eq!(iso8601(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
