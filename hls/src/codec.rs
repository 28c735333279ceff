//! Decoder configurations: what a sequence header says, as an fMP4 sample entry and an RFC 6381
//! codec string.
//!
//! The configuration records arrive in the FLV/RTMP sequence headers in exactly the form ISO/IEC
//! 14496-15 (`avcC`, `hvcC`) and the AV1-ISOBMFF binding (`av1C`) store them, so `mp4-atom`
//! parses and writes them; the picture size comes from the SPS or AV1 sequence header (the
//! `scuffle-*` parsers), because browsers' MSE refuse a visual sample entry of 0×0.
//!
//! # Tricky parts
//! - Codec strings: `avc1.PPCCLL` is the three profile/constraint/level bytes of the `avcC`;
//!   `hvc1` follows ISO/IEC 14496-15 Annex E (compatibility flags bit-reversed, trailing zero
//!   constraint bytes dropped); `av01` follows AV1-ISOBMFF "Codecs Parameter String".
//! - `hvc1` (not `hev1`) is what Safari accepts; it requires the parameter sets in the `hvcC`,
//!   so their arrays are marked complete.
//! - The crop arithmetic is done here with checked operations: the parsers' own `width()`
//!   helpers subtract without checking, and a hostile SPS must not panic the muxer.

use bytes::Bytes;
use mp4_atom::{Atom, Av01, Av1c, Avc1, Avcc, Codec, Decode, Hvc1, Hvcc, Mp4a, Visual};

use crate::MuxError;

/// Timescale of video tracks: the MPEG 90 kHz clock, so millisecond timestamps map exactly.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// AAC frames carry 1024 samples (AAC-LC and HE-AAC's core; 960-sample framing is not used by
/// any RTMP encoder we know of).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// Sampling frequencies by AudioSpecificConfig index (ISO/IEC 14496-3 1.6.3.4).
const AAC_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// A video decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoConfig {
    /// H.264 with its `avcC` record.
    Avc(VideoDims, Avcc),
    /// H.265 with its `hvcC` record.
    Hevc(VideoDims, Hvcc),
    /// AV1 with its `av1C` record.
    Av1(VideoDims, Av1c),
}

/// Picture size in pixels, 0×0 when the parameter set could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoDims {
    /// Width in luma samples after cropping.
    pub width: u16,
    /// Height in luma samples after cropping.
    pub height: u16,
}

impl VideoDims {
    fn from_u64(width: Option<u64>, height: Option<u64>) -> VideoDims {
        let fit = |v: Option<u64>| v.and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
        VideoDims {
            width: fit(width),
            height: fit(height),
        }
    }
}

impl VideoConfig {
    /// Parses an H.264 `AVCDecoderConfigurationRecord`.
    pub fn avc(record: &[u8]) -> Result<VideoConfig, MuxError> {
        let avcc = Avcc::decode_body(&mut &record[..]).map_err(|_| MuxError::BadVideoConfig)?;
        let dims = avcc
            .sequence_parameter_sets
            .first()
            .and_then(|sps| h264_dims(sps))
            .unwrap_or_default();
        Ok(VideoConfig::Avc(dims, avcc))
    }

    /// Parses an H.265 `HEVCDecoderConfigurationRecord`.
    pub fn hevc(record: &[u8]) -> Result<VideoConfig, MuxError> {
        let mut hvcc = Hvcc::decode_body(&mut &record[..]).map_err(|_| MuxError::BadVideoConfig)?;
        // hvc1 means "parameter sets only in the sample entry": say the arrays are complete.
        for array in &mut hvcc.arrays {
            array.completeness = true;
        }
        const SPS_NUT: u8 = 33;
        let dims = hvcc
            .arrays
            .iter()
            .filter(|array| array.nal_unit_type == SPS_NUT)
            .flat_map(|array| array.nalus.first())
            .find_map(|sps| h265_dims(sps))
            .unwrap_or_default();
        Ok(VideoConfig::Hevc(dims, hvcc))
    }

    /// Parses an `AV1CodecConfigurationRecord`.
    pub fn av1(record: &[u8]) -> Result<VideoConfig, MuxError> {
        let av1c = Av1c::decode_body(&mut &record[..]).map_err(|_| MuxError::BadVideoConfig)?;
        let dims = av1_dims(&av1c.config_obus).unwrap_or_default();
        Ok(VideoConfig::Av1(dims, av1c))
    }

    /// The picture size.
    pub fn dims(&self) -> VideoDims {
        match self {
            VideoConfig::Avc(dims, _) | VideoConfig::Hevc(dims, _) | VideoConfig::Av1(dims, _) => {
                *dims
            }
        }
    }

    /// The RFC 6381 codec string for `CODECS=`.
    pub fn codec_string(&self) -> String {
        match self {
            VideoConfig::Avc(_, avcc) => format!(
                "avc1.{:02x}{:02x}{:02x}",
                avcc.avc_profile_indication, avcc.profile_compatibility, avcc.avc_level_indication
            ),
            VideoConfig::Hevc(_, hvcc) => hevc_codec_string(hvcc),
            VideoConfig::Av1(_, av1c) => {
                let depth = match (av1c.high_bitdepth, av1c.twelve_bit) {
                    (false, _) => 8,
                    (true, false) => 10,
                    (true, true) => 12,
                };
                let tier = if av1c.seq_tier_0 { 'H' } else { 'M' };
                format!(
                    "av01.{}.{:02}{tier}.{depth:02}",
                    av1c.seq_profile, av1c.seq_level_idx_0
                )
            }
        }
    }

    /// The `stsd` sample entry.
    pub(crate) fn sample_entry(&self) -> Codec {
        let dims = self.dims();
        let visual = Visual {
            data_reference_index: 1,
            width: dims.width,
            height: dims.height,
            ..Visual::default()
        };
        match self {
            VideoConfig::Avc(_, avcc) => Avc1 {
                visual,
                avcc: avcc.clone(),
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: None,
            }
            .into(),
            VideoConfig::Hevc(_, hvcc) => Hvc1 {
                visual,
                hvcc: hvcc.clone(),
                ..Hvc1::default()
            }
            .into(),
            VideoConfig::Av1(_, av1c) => Av01 {
                visual,
                av1c: av1c.clone(),
                ..Av01::default()
            }
            .into(),
        }
    }
}

/// `hvc1.A.B.TL.CC…` per ISO/IEC 14496-15 Annex E.
fn hevc_codec_string(hvcc: &Hvcc) -> String {
    let space = match hvcc.general_profile_space {
        1 => "A",
        2 => "B",
        3 => "C",
        _ => "",
    };
    let compat = u32::from_be_bytes(hvcc.general_profile_compatibility_flags).reverse_bits();
    let tier = if hvcc.general_tier_flag { 'H' } else { 'L' };
    let mut out = format!(
        "hvc1.{space}{}.{compat:X}.{tier}{}",
        hvcc.general_profile_idc, hvcc.general_level_idc
    );
    let constraints = &hvcc.general_constraint_indicator_flags;
    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    for byte in &constraints[..used] {
        out.push_str(&format!(".{byte:X}"));
    }
    out
}

/// Width and height of an H.264 SPS NAL unit (with its one-byte header).
/// True when the NAL unit's payload (emulation prevention bytes removed) holds a run of 64 or
/// more zero bits: an Exp-Golomb code there has 64 leading zeros, which no valid parameter
/// set has (its values fit 32 bits) and which makes `scuffle-expgolomb` 0.1.5 compute
/// `0 - 1` in a `u64` (a panic with overflow checks on, as in debug builds and the fuzz
/// build; a wrap the SPS parser then refuses without them). Found by the `hls_muxer` fuzz
/// target; checked here so a publisher's bytes can never reach that subtraction.
fn has_overlong_exp_golomb(nal: &[u8]) -> bool {
    const LIMIT: u32 = 64;
    let mut zeros_in_a_row = 0usize;
    let mut run = 0u32;
    for &byte in nal {
        // 00 00 03 is emulation prevention: the 03 is not payload.
        if byte == 3 && zeros_in_a_row >= 2 {
            zeros_in_a_row = 0;
            continue;
        }
        zeros_in_a_row = if byte == 0 { zeros_in_a_row + 1 } else { 0 };
        if byte == 0 {
            run += 8;
        } else {
            run += byte.leading_zeros();
            if run >= LIMIT {
                return true;
            }
            run = byte.trailing_zeros();
        }
        if run >= LIMIT {
            return true;
        }
    }
    false
}

fn h264_dims(sps: &[u8]) -> Option<VideoDims> {
    if has_overlong_exp_golomb(sps) {
        return None;
    }
    let sps = scuffle_h264::Sps::parse_with_emulation_prevention(sps).ok()?;
    let frame_mbs_only = sps.mb_adaptive_frame_field_flag.is_none();
    let width = sps
        .pic_width_in_mbs_minus1
        .checked_add(1)?
        .checked_mul(16)?;
    let rows = sps
        .pic_height_in_map_units_minus1
        .checked_add(1)?
        .checked_mul(16)?;
    let height = if frame_mbs_only {
        rows
    } else {
        rows.checked_mul(2)?
    };
    // 4:2:0 crop units; the only chroma format RTMP encoders send.
    let (width, height) = match &sps.frame_crop_info {
        Some(crop) => (
            width.checked_sub(
                crop.frame_crop_left_offset
                    .checked_add(crop.frame_crop_right_offset)?
                    .checked_mul(2)?,
            )?,
            height.checked_sub(
                crop.frame_crop_top_offset
                    .checked_add(crop.frame_crop_bottom_offset)?
                    .checked_mul(2)?,
            )?,
        ),
        None => (width, height),
    };
    Some(VideoDims::from_u64(Some(width), Some(height)))
}

/// Width and height of an H.265 SPS NAL unit (with its two-byte header).
fn h265_dims(sps: &[u8]) -> Option<VideoDims> {
    if has_overlong_exp_golomb(sps) {
        return None;
    }
    let sps = scuffle_h265::SpsNALUnit::parse(sps).ok()?.rbsp;
    let window = &sps.conformance_window;
    let crop = |a: u64, b: u64, unit: u8| a.checked_add(b)?.checked_mul(u64::from(unit));
    let width = sps.pic_width_in_luma_samples.get().checked_sub(crop(
        window.conf_win_left_offset,
        window.conf_win_right_offset,
        sps.sub_width_c(),
    )?)?;
    let height = sps.pic_height_in_luma_samples.get().checked_sub(crop(
        window.conf_win_top_offset,
        window.conf_win_bottom_offset,
        sps.sub_height_c(),
    )?)?;
    Some(VideoDims::from_u64(Some(width), Some(height)))
}

/// Maximum frame size from the sequence header OBU among an `av1C`'s configOBUs.
fn av1_dims(obus: &[u8]) -> Option<VideoDims> {
    let mut reader = obus;
    let header = scuffle_av1::ObuHeader::parse(&mut reader).ok()?;
    if header.obu_type != scuffle_av1::ObuType::SequenceHeader {
        return None;
    }
    let seq = scuffle_av1::seq::SequenceHeaderObu::parse(header, &mut reader).ok()?;
    Some(VideoDims::from_u64(
        Some(seq.max_frame_width),
        Some(seq.max_frame_height),
    ))
}

/// An AAC decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// The AudioSpecificConfig as received.
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = HE-AAC, 29 = HE-AACv2).
    pub object_type: u8,
    /// Sampling rate in Hz: the track's timescale.
    pub sample_rate: u32,
    /// Channel configuration (1 = mono, 2 = stereo, …).
    pub channels: u8,
}

impl AudioConfig {
    /// Parses an AAC AudioSpecificConfig.
    pub fn aac(asc: Bytes) -> Result<AudioConfig, MuxError> {
        let specific = mp4_atom::esds::DecoderSpecific::decode(&mut &asc[..])
            .map_err(|_| MuxError::BadAudioConfig)?;
        let sample_rate = match specific.freq_index {
            15 => asc
                .get(1..5)
                .map(|b| (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) >> 7) & 0x00FF_FFFF),
            index => AAC_SAMPLE_RATES.get(usize::from(index)).copied(),
        };
        match sample_rate {
            Some(rate) if rate > 0 && specific.profile > 0 => Ok(AudioConfig {
                asc,
                object_type: specific.profile,
                sample_rate: rate,
                channels: specific.chan_conf,
            }),
            _ => Err(MuxError::BadAudioConfig),
        }
    }

    /// The RFC 6381 codec string, `mp4a.40.<object type>`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The `stsd` sample entry.
    pub(crate) fn sample_entry(&self, track_id: u32) -> Codec {
        use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
        let es_desc = EsDescriptor {
            es_id: u16::try_from(track_id).unwrap_or(0),
            depends_on_es_id: None,
            url: None,
            ocr_es_id: None,
            stream_priority: 0,
            dec_config: DecoderConfig {
                // 0x40: MPEG-4 Audio; stream type 5: audio.
                object_type_indication: 0x40,
                stream_type: 5,
                up_stream: 0,
                buffer_size_db: Default::default(),
                max_bitrate: 0,
                avg_bitrate: 0,
                dec_specific: Some(DecoderSpecific {
                    raw: self.asc.to_vec(),
                    ..DecoderSpecific::default()
                }),
            },
            sl_config: SLConfig::default(),
        };
        Mp4a {
            audio: mp4_atom::Audio {
                data_reference_index: 1,
                channel_count: u16::from(self.channels.max(1)),
                sample_size: 16,
                // The 16.16 field cannot hold rates above 65535 Hz; the timescale carries it.
                sample_rate: u16::try_from(self.sample_rate).unwrap_or(0).into(),
            },
            esds: mp4_atom::Esds { es_desc },
            btrt: None,
            taic: None,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's SPS for 320×240 High profile (ffmpeg testsrc2, -s 320x240).
    const AVCC_320X240: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8,
        0x00,
    ];

    #[test]
    fn an_sps_with_a_64_bit_zero_run_is_refused_before_the_exp_golomb_reader() {
        // Seven zero bytes between two bytes ending and starting with zero bits: 2 + 56 + 6.
        assert!(has_overlong_exp_golomb(&[
            0x67, 0x04, 0, 0, 0, 0, 0, 0, 0, 0x02
        ]));
        assert!(!has_overlong_exp_golomb(&[
            0x67, 0x04, 0, 0, 0, 0, 0, 0, 0, 0x80
        ]));
        // Emulation prevention bytes are not payload: the zeros around them join up.
        assert!(has_overlong_exp_golomb(&[
            0x67, 0, 0, 3, 0, 0, 3, 0, 0, 3, 0, 0, 3, 0, 0
        ]));
        assert!(!has_overlong_exp_golomb(&[
            0x67, 0, 0, 3, 1, 0, 3, 0, 0, 3, 0, 0, 3, 0, 0
        ]));
        assert_eq!(
            h264_dims(&[0x67, 0x64, 0, 0x0D, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]),
            None
        );
    }

    #[test]
    fn avc_config_gives_codec_string_and_size() {
        let config = VideoConfig::avc(AVCC_320X240).unwrap();
        assert_eq!(config.codec_string(), "avc1.64000d");
        assert_eq!(
            config.dims(),
            VideoDims {
                width: 320,
                height: 240
            }
        );
    }

    #[test]
    fn hevc_codec_string_follows_annex_e() {
        let mut hvcc = Hvcc::new();
        hvcc.general_profile_idc = 1;
        hvcc.general_profile_compatibility_flags = [0x60, 0, 0, 0];
        hvcc.general_level_idc = 93;
        hvcc.general_constraint_indicator_flags = [0xb0, 0, 0, 0, 0, 0];
        assert_eq!(hevc_codec_string(&hvcc), "hvc1.1.6.L93.B0");
    }

    #[test]
    fn av1_codec_string_names_profile_level_tier_depth() {
        let av1c = Av1c {
            seq_profile: 0,
            seq_level_idx_0: 8,
            ..Av1c::default()
        };
        let config = VideoConfig::Av1(VideoDims::default(), av1c);
        assert_eq!(config.codec_string(), "av01.0.08M.08");
    }

    #[test]
    fn aac_lc_config_is_read() {
        // AAC-LC, 44.1 kHz (index 4), stereo.
        let config = AudioConfig::aac(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!(config.sample_rate, 44_100);
        assert_eq!(config.channels, 2);
        assert_eq!(config.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn garbage_configs_are_refused_not_panicked_on() {
        assert!(VideoConfig::avc(&[0x02, 0x64]).is_err());
        assert!(AudioConfig::aac(Bytes::from_static(&[0x00])).is_err());
        assert!(VideoConfig::av1(&[0x00]).is_err());
    }
}
