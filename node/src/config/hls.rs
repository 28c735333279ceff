//! `[hls]`: LL-HLS served on `http.listen` (on by default) and how each stream is cut.
//!
//! The values map onto `corecast_hls::MuxerConfig` (the prefix is drawn per publish), and are
//! checked by the same rules the muxer applies, so `--check` refuses what a muxer would.

use serde::Deserialize;

use super::ConfigError;

/// The longest window (`window_segments` × `segment_target_ms`) `--check` accepts: every
/// stream's window is held in memory (see `crate::hls::memory`), so it is what bounds a
/// stream's HLS memory at its bit rate.
pub const MAX_WINDOW_MS: u64 = 10 * 60 * 1000;

/// `[hls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Serve every live stream as LL-HLS at `/hls/{app}/{name}/index.m3u8`.
    pub enabled: bool,
    /// Part target in milliseconds (`PART-TARGET`), fixed for the life of a stream.
    pub part_target_ms: u32,
    /// Segment target in milliseconds. Segments are cut at keyframes, so a GOP longer than
    /// this makes longer segments (and a larger `EXT-X-TARGETDURATION`).
    pub segment_target_ms: u32,
    /// Finished segments listed in the playlist (two more stay fetchable after they leave).
    pub window_segments: usize,
    /// Keep each finished segment in a sealed memfd and send it with `sendfile` (one
    /// descriptor per segment held; see `crate::httpd::sendfile`).
    pub sendfile: bool,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            enabled: true,
            part_target_ms: corecast_hls::MuxerConfig::DEFAULT_PART_TARGET_MS,
            segment_target_ms: corecast_hls::MuxerConfig::DEFAULT_SEGMENT_TARGET_MS,
            window_segments: corecast_hls::MuxerConfig::DEFAULT_WINDOW_SEGMENTS,
            sendfile: true,
        }
    }
}

impl HlsConfig {
    /// The muxer's configuration for one publish under `prefix`.
    pub fn muxer(&self, prefix: String) -> corecast_hls::MuxerConfig {
        corecast_hls::MuxerConfig {
            part_target_ms: self.part_target_ms,
            segment_target_ms: self.segment_target_ms,
            window_segments: self.window_segments,
            prefix,
        }
    }

    /// Refuses values the muxer would refuse, naming the field, and a window longer than
    /// [`MAX_WINDOW_MS`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Err(error) = self.muxer("check".to_owned()).validate() else {
            let window_ms = self.window_segments as u64 * u64::from(self.segment_target_ms);
            if window_ms > MAX_WINDOW_MS {
                return Err(ConfigError::Invalid {
                    field: "hls.window_segments",
                    reason: format!(
                        "window_segments × segment_target_ms is {} s, over the {} s a window \
                         may hold in memory",
                        window_ms / 1000,
                        MAX_WINDOW_MS / 1000
                    ),
                });
            }
            return Ok(());
        };
        let reason = match error {
            corecast_hls::MuxError::BadConfig(reason) => reason.to_owned(),
            other => other.to_string(),
        };
        let field = ["part_target_ms", "segment_target_ms", "window_segments"]
            .into_iter()
            .find(|f| reason.starts_with(f))
            .map_or("hls", |f| match f {
                "part_target_ms" => "hls.part_target_ms",
                "segment_target_ms" => "hls.segment_target_ms",
                _ => "hls.window_segments",
            });
        Err(ConfigError::Invalid { field, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_out_of_range_values_are_refused() {
        assert!(HlsConfig::default().validate().is_ok());
        let short = HlsConfig {
            part_target_ms: 50,
            ..HlsConfig::default()
        };
        assert!(short.validate().is_err());
        let narrow = HlsConfig {
            window_segments: 1,
            ..HlsConfig::default()
        };
        assert!(narrow.validate().is_err());
        let ten_minutes = HlsConfig {
            window_segments: 300,
            segment_target_ms: 2000,
            ..HlsConfig::default()
        };
        assert!(ten_minutes.validate().is_ok());
        let long = HlsConfig {
            window_segments: 301,
            ..ten_minutes
        };
        let error = long.validate().expect_err("over ten minutes");
        assert!(error.to_string().contains("hls.window_segments"), "{error}");
    }
}
