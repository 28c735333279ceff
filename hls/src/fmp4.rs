//! fMP4/CMAF boxes: the init segment (`ftyp` + `moov`) and one fragment (`moof` + `mdat`).
//!
//! ISO/IEC 14496-12 (ISOBMFF) and ISO/IEC 23000-19 (CMAF), written with `mp4-atom`. The only
//! box written by hand is the `mdat` header (8 bytes): `mp4_atom::Mdat` owns its data as a
//! `Vec`, and the samples are already in `Bytes` we append directly.
//!
//! # Tricky parts
//! - `trun.data_offset` counts from the start of the `moof` (`default-base-is-moof`, which
//!   CMAF requires), so the `moof` is encoded once to learn its size, then again with the
//!   offsets: the size does not depend on their values.
//! - Composition offsets are signed (`trun` version 1), so B-frames need no edit list.
//! - Sample flags: sync samples "depend on no other"; others "depend on others, non-sync";
//!   players seek and switch on these.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{
    Dinf, Dref, Encode, Ftyp, Hdlr, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Smhd, Stbl,
    Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Vmhd,
};

use crate::codec::{AudioConfig, VideoConfig, VIDEO_TIMESCALE};
use crate::MuxError;

/// Track id of the video track (when there is one).
pub const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track (when there is one).
pub const AUDIO_TRACK: u32 = 2;

/// `sample_depends_on = 2` (an I-frame).
const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_depends_on = 1`, `sample_is_non_sync_sample = 1`.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// One sample of a fragment, in its track's timescale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in timescale units.
    pub duration: u32,
    /// PTS − DTS in timescale units.
    pub composition: i32,
    /// A sync sample.
    pub keyframe: bool,
    /// The coded data.
    pub data: Bytes,
}

/// One track's run inside a fragment.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Decode time of the first sample, in timescale units.
    pub base_decode_time: u64,
    /// The samples in decode order.
    pub samples: Vec<Sample>,
}

/// Writes the init segment for the tracks present.
pub fn init_segment(
    video: Option<&VideoConfig>,
    audio: Option<&AudioConfig>,
) -> Result<Bytes, MuxError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let mut trak = Vec::new();
    let mut trex = Vec::new();
    if let Some(video) = video {
        trak.push(video_trak(video));
        trex.push(Trex {
            track_id: VIDEO_TRACK,
            default_sample_description_index: 1,
            ..Trex::default()
        });
    }
    if let Some(audio) = audio {
        trak.push(audio_trak(audio));
        trex.push(Trex {
            track_id: AUDIO_TRACK,
            default_sample_description_index: 1,
            ..Trex::default()
        });
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Mvhd::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Moov::default()
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out).map_err(|_| MuxError::Encode)?;
    moov.encode(&mut out).map_err(|_| MuxError::Encode)?;
    Ok(Bytes::from(out))
}

fn video_trak(video: &VideoConfig) -> Trak {
    let dims = video.dims();
    let minf = Minf {
        vmhd: Some(Vmhd::default()),
        ..empty_minf(video.sample_entry())
    };
    Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: dims.width.into(),
            height: dims.height.into(),
            ..Tkhd::default()
        },
        mdia: mdia(VIDEO_TIMESCALE, b"vide", "Corecast video", minf),
        ..Trak::default()
    }
}

fn audio_trak(audio: &AudioConfig) -> Trak {
    let minf = Minf {
        smhd: Some(Smhd::default()),
        ..empty_minf(audio.sample_entry(AUDIO_TRACK))
    };
    Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK,
            enabled: true,
            in_movie: true,
            alternate_group: 1,
            volume: 1.into(),
            ..Tkhd::default()
        },
        mdia: mdia(audio.sample_rate, b"soun", "Corecast audio", minf),
        ..Trak::default()
    }
}

fn mdia(timescale: u32, handler: &[u8; 4], name: &str, minf: Minf) -> Mdia {
    Mdia {
        mdhd: Mdhd {
            timescale,
            language: "und".into(),
            ..Mdhd::default()
        },
        hdlr: Hdlr {
            handler: handler.into(),
            name: name.to_string(),
        },
        minf,
    }
}

/// A `minf` whose sample table holds only the sample entry: fragments carry the samples.
fn empty_minf(entry: mp4_atom::Codec) -> Minf {
    Minf {
        dinf: Dinf {
            dref: Dref {
                entries: vec![Url::default().into()],
            },
        },
        stbl: Stbl {
            stsd: Stsd {
                codecs: vec![entry],
            },
            stco: Some(Stco::default()),
            ..Stbl::default()
        },
        ..Minf::default()
    }
}

/// Writes one fragment: `moof` (one `traf` per non-empty run) then `mdat`.
pub fn fragment(sequence_number: u32, runs: &[(u32, &Run)]) -> Result<Bytes, MuxError> {
    let runs: Vec<_> = runs
        .iter()
        .filter(|(_, run)| !run.samples.is_empty())
        .collect();
    let data_len: usize = runs
        .iter()
        .flat_map(|(_, run)| &run.samples)
        .map(|s| s.data.len())
        .sum();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: runs.iter().map(|(track, run)| traf(*track, run)).collect(),
    };
    let mut head = Vec::new();
    moof.encode(&mut head).map_err(|_| MuxError::Encode)?;
    // The data of run i starts after the moof, the mdat header and the runs before it.
    let mdat_header_len = 8;
    let mut offset = head.len() + mdat_header_len;
    for traf in &mut moof.traf {
        for trun in &mut traf.trun {
            trun.data_offset = Some(i32::try_from(offset).map_err(|_| MuxError::Encode)?);
            offset += trun_data_len(trun);
        }
    }
    head.clear();
    moof.encode(&mut head).map_err(|_| MuxError::Encode)?;
    let mdat_len = u32::try_from(mdat_header_len + data_len).map_err(|_| MuxError::Encode)?;
    let mut out = BytesMut::with_capacity(head.len() + mdat_header_len + data_len);
    out.put_slice(&head);
    out.put_u32(mdat_len);
    out.put_slice(b"mdat");
    for (_, run) in &runs {
        for sample in &run.samples {
            out.put_slice(&sample.data);
        }
    }
    Ok(out.freeze())
}

fn trun_data_len(trun: &Trun) -> usize {
    trun.samples
        .iter()
        .map(|entry| entry.size.unwrap_or(0) as usize)
        .sum()
}

fn traf(track_id: u32, run: &Run) -> Traf {
    let entries = run
        .samples
        .iter()
        .map(|sample| TrunEntry {
            duration: Some(sample.duration),
            size: Some(u32::try_from(sample.data.len()).unwrap_or(u32::MAX)),
            flags: Some(if sample.keyframe {
                FLAGS_SYNC
            } else {
                FLAGS_NON_SYNC
            }),
            cts: Some(i64::from(sample.composition)),
        })
        .collect();
    Traf {
        tfhd: Tfhd {
            track_id,
            default_base_is_moof: true,
            ..Tfhd::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: run.base_decode_time,
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: TrunSamples::Explicit(entries),
        }],
        ..Traf::default()
    }
}

#[cfg(test)]
mod tests {
    use mp4_atom::{Any, Decode};

    use super::*;

    fn sample(len: usize, keyframe: bool) -> Sample {
        Sample {
            duration: 3000,
            composition: -3000,
            keyframe,
            data: Bytes::from(vec![0xAB; len]),
        }
    }

    #[test]
    fn fragment_offsets_point_at_each_runs_data() {
        let video = Run {
            base_decode_time: 90_000,
            samples: vec![sample(10, true), sample(7, false)],
        };
        let audio = Run {
            base_decode_time: 48_000,
            samples: vec![sample(3, true)],
        };
        let bytes = fragment(7, &[(VIDEO_TRACK, &video), (AUDIO_TRACK, &audio)]).unwrap();
        let mut buf = &bytes[..];
        let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
            panic!("no moof first");
        };
        let moof_len = bytes.len() - buf.len();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let offsets: Vec<_> = moof.traf.iter().map(|t| t.trun[0].data_offset).collect();
        assert_eq!(
            offsets,
            vec![Some(moof_len as i32 + 8), Some(moof_len as i32 + 8 + 17)]
        );
        assert_eq!(&buf[4..8], b"mdat");
        assert_eq!(buf.len(), 8 + 20);
        let first = moof.traf[0].trun[0].samples.get(0).unwrap();
        assert_eq!(first.cts, Some(-3000));
        assert_eq!(
            moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time,
            90_000
        );
    }

    #[test]
    fn empty_runs_get_no_traf() {
        let video = Run::default();
        let audio = Run {
            base_decode_time: 0,
            samples: vec![sample(3, true)],
        };
        let bytes = fragment(1, &[(VIDEO_TRACK, &video), (AUDIO_TRACK, &audio)]).unwrap();
        let Any::Moof(moof) = Any::decode(&mut &bytes[..]).unwrap() else {
            panic!("no moof first");
        };
        assert_eq!(moof.traf.len(), 1);
        assert_eq!(moof.traf[0].tfhd.track_id, AUDIO_TRACK);
    }
}
