//! What a publisher's `onMetaData` says about its media, as the API shows it: codec names
//! (`h264`, `aac`, `hevc`, …) instead of FLV numbers, width and height as integers.
//!
//! `videocodecid` and `audiocodecid` come in three forms: a legacy FLV codec id (FLV spec
//! v10.1 E.4.2.1 SoundFormat, E.4.3.1 CodecID: `7` is H.264, `10` AAC); an Enhanced RTMP
//! FourCC as the number its four bytes make big-endian (ffmpeg writes HEVC as `1752589105`,
//! `hvc1`); or the FourCC as a string. The two numeric forms cannot collide: a legacy id is
//! below 16, a FourCC of printable characters is above 2^24. A codec this module does not know
//! keeps a recognisable form: its FourCC (`vvc1`) or `flv_<id>`.
//!
//! Metadata is the publisher's word and nothing checks it; a value that is not a sensible
//! number is left out rather than shown wrong.

use corecast_common::amf0::Amf0Value;
use corecast_common::command::DataMessage;
use corecast_common::types::MessageType;

/// Largest width or height believed (16K is 15360).
const MAX_DIMENSION: f64 = 65_535.0;

/// What the publisher's `onMetaData` says about the media.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaSummary {
    /// Video codec name, e.g. `h264`.
    pub video_codec: Option<String>,
    /// Audio codec name, e.g. `aac`.
    pub audio_codec: Option<String>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

impl MediaSummary {
    /// The summary of an `onMetaData` data message payload; empty for anything else.
    pub fn from_metadata(payload: &[u8]) -> MediaSummary {
        let Ok(data) = DataMessage::decode(MessageType::DATA_AMF0, payload) else {
            return MediaSummary::default();
        };
        let Some(object) = data.values.get(1).and_then(Amf0Value::as_object) else {
            return MediaSummary::default();
        };
        let number = |key: &str| object.get(key).and_then(Amf0Value::as_number);
        let dimension = |key: &str| {
            number(key)
                .filter(|n| n.is_finite() && (1.0..=MAX_DIMENSION).contains(n))
                .map(|n| n.round() as u32)
        };
        MediaSummary {
            video_codec: object
                .get("videocodecid")
                .and_then(|v| codec(v, video_name)),
            audio_codec: object
                .get("audiocodecid")
                .and_then(|v| codec(v, audio_name)),
            width: dimension("width"),
            height: dimension("height"),
            frame_rate: number("framerate").filter(|n| n.is_finite() && *n > 0.0),
        }
    }
}

/// A codec id as a name; `known` names legacy ids and FourCCs.
fn codec(value: &Amf0Value, known: fn(CodecId) -> Option<&'static str>) -> Option<String> {
    let id = CodecId::from_value(value)?;
    Some(match known(id) {
        Some(name) => name.to_owned(),
        None => id.fallback_name(),
    })
}

/// A codec as metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodecId {
    /// A legacy FLV codec id or SoundFormat.
    Legacy(u8),
    /// An Enhanced RTMP FourCC.
    FourCc([u8; 4]),
}

impl CodecId {
    fn from_value(value: &Amf0Value) -> Option<CodecId> {
        match value {
            Amf0Value::Number(n) => CodecId::from_number(*n),
            other => {
                let text = other.as_str()?.trim();
                match text.parse::<f64>() {
                    Ok(n) => CodecId::from_number(n),
                    Err(_) => <[u8; 4]>::try_from(text.as_bytes())
                        .ok()
                        .map(CodecId::FourCc),
                }
            }
        }
    }

    fn from_number(n: f64) -> Option<CodecId> {
        if !n.is_finite() || n < 0.0 || n.fract() != 0.0 || n > f64::from(u32::MAX) {
            return None;
        }
        let n = n as u32;
        Some(match u8::try_from(n) {
            Ok(id) => CodecId::Legacy(id),
            Err(_) => CodecId::FourCc(n.to_be_bytes()),
        })
    }

    /// The name of a codec no table knows.
    fn fallback_name(self) -> String {
        match self {
            CodecId::Legacy(id) => format!("flv_{id}"),
            CodecId::FourCc(fourcc) if fourcc.iter().all(u8::is_ascii_graphic) => {
                String::from_utf8_lossy(&fourcc).into_owned()
            }
            CodecId::FourCc(fourcc) => format!("0x{}", hex(&fourcc)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Video codec names: FLV CodecID (E.4.3.1; 12 is HEVC as some forks send it) and the
/// Enhanced RTMP video FourCCs.
fn video_name(id: CodecId) -> Option<&'static str> {
    Some(match id {
        CodecId::Legacy(id) => match id {
            2 => "h263",
            3 => "screen",
            4 => "vp6",
            5 => "vp6a",
            6 => "screen2",
            7 => "h264",
            12 => "hevc",
            _ => return None,
        },
        CodecId::FourCc(fourcc) => match &fourcc {
            b"avc1" => "h264",
            b"hvc1" => "hevc",
            b"av01" => "av1",
            b"vp08" => "vp8",
            b"vp09" => "vp9",
            _ => return None,
        },
    })
}

/// Audio codec names: FLV SoundFormat (E.4.2.1) and the Enhanced RTMP audio FourCCs.
fn audio_name(id: CodecId) -> Option<&'static str> {
    Some(match id {
        CodecId::Legacy(id) => match id {
            0 => "pcm",
            1 => "adpcm",
            2 | 14 => "mp3",
            3 => "pcm_le",
            4..=6 => "nellymoser",
            7 => "g711a",
            8 => "g711u",
            10 => "aac",
            11 => "speex",
            _ => return None,
        },
        CodecId::FourCc(fourcc) => match &fourcc {
            b".mp3" => "mp3",
            b"mp4a" => "aac",
            b"Opus" => "opus",
            b"fLaC" => "flac",
            b"ac-3" => "ac3",
            b"ec-3" => "eac3",
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(value: Amf0Value) -> Option<String> {
        codec(&value, video_name)
    }

    fn audio(value: Amf0Value) -> Option<String> {
        codec(&value, audio_name)
    }

    fn fourcc_number(fourcc: &[u8; 4]) -> Amf0Value {
        Amf0Value::Number(f64::from(u32::from_be_bytes(*fourcc)))
    }

    #[test]
    fn legacy_ids_are_named() {
        assert_eq!(video(Amf0Value::Number(7.0)).as_deref(), Some("h264"));
        assert_eq!(video(Amf0Value::Number(12.0)).as_deref(), Some("hevc"));
        assert_eq!(audio(Amf0Value::Number(10.0)).as_deref(), Some("aac"));
        assert_eq!(audio(Amf0Value::Number(2.0)).as_deref(), Some("mp3"));
    }

    #[test]
    fn fourccs_are_named_as_numbers_or_strings() {
        assert_eq!(video(fourcc_number(b"hvc1")).as_deref(), Some("hevc"));
        assert_eq!(video(fourcc_number(b"av01")).as_deref(), Some("av1"));
        assert_eq!(video(fourcc_number(b"vp09")).as_deref(), Some("vp9"));
        assert_eq!(video(Amf0Value::from("avc1")).as_deref(), Some("h264"));
        assert_eq!(video(Amf0Value::from("vp08")).as_deref(), Some("vp8"));
        assert_eq!(audio(fourcc_number(b"Opus")).as_deref(), Some("opus"));
        assert_eq!(audio(Amf0Value::from("fLaC")).as_deref(), Some("flac"));
    }

    #[test]
    fn unknown_codecs_keep_a_recognisable_name_and_nonsense_is_left_out() {
        assert_eq!(video(fourcc_number(b"vvc1")).as_deref(), Some("vvc1"));
        assert_eq!(video(Amf0Value::Number(9.0)).as_deref(), Some("flv_9"));
        assert_eq!(
            video(Amf0Value::Number(300.0)).as_deref(),
            Some("0x0000012c")
        );
        assert_eq!(video(Amf0Value::Number(7.5)), None);
        assert_eq!(video(Amf0Value::Number(-1.0)), None);
        assert_eq!(video(Amf0Value::Number(f64::NAN)), None);
        assert_eq!(video(Amf0Value::Null), None);
        assert_eq!(video(Amf0Value::from("x")), None);
    }
}
