//! The muxer's output read by real tools: ffmpeg makes FLV (H.264/AAC at two keyframe
//! intervals, and HEVC from libx265 sent as Enhanced RTMP tags), common's FLV reader turns it
//! into the frames a node has, the muxer cuts it, and the files and playlists written to a
//! temp dir are checked with ffprobe (each segment's duration against its `EXTINF`) and
//! `ffmpeg -i index.m3u8 -c copy -f null -` (no timestamp warnings).
// Helpers outside #[test] fns unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../node/tests/support/process.rs"]
#[allow(dead_code)]
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corecast_common::flv::{FlvReader, TAG_TYPE_AUDIO, TAG_TYPE_VIDEO};
use corecast_hls::blocking::{self, Answer};
use corecast_hls::playlist::{self, Flavor};
use corecast_hls::{Muxer, MuxerConfig, Resource};

/// Generous: two CPU cores are shared with other builds.
const TOOL_LIMIT: Duration = Duration::from_secs(120);
const PREFIX: &str = "k3Jx9QvT2mWz";

fn ffmpeg_flv(dir: &Path, name: &str, keyint: u32, seconds: u32) -> PathBuf {
    let out = dir.join(name);
    let output = process::output_with_deadline(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                &seconds.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
            ])
            .args([
                "-g",
                &keyint.to_string(),
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-f",
                "flv",
            ])
            .arg(&out),
        TOOL_LIMIT,
    );
    assert!(
        output.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Feeds every audio/video tag of an FLV file to a fresh muxer, then finishes it.
fn mux_flv(path: &Path, config: MuxerConfig) -> Muxer {
    let mut muxer = Muxer::new(config).unwrap();
    let mut buf = BytesMut::from(&std::fs::read(path).unwrap()[..]);
    let mut reader = FlvReader::new();
    while let Some(tag) = reader.decode(&mut buf).unwrap() {
        let result = match tag.tag_type {
            TAG_TYPE_AUDIO => muxer.push_audio(tag.timestamp, &tag.data),
            TAG_TYPE_VIDEO => muxer.push_video(tag.timestamp, &tag.data),
            _ => Ok(()),
        };
        result.unwrap_or_else(|e| panic!("tag at {} ms refused: {e}", tag.timestamp));
    }
    muxer.finish().unwrap();
    muxer
}

fn body(muxer: &Muxer, resource: Resource) -> Vec<u8> {
    match blocking::resource(muxer, resource) {
        Answer::Ready(parts) => parts.concat(),
        other => panic!("{resource:?} not ready: {other:?}"),
    }
}

/// Writes init, every listed segment and every part named in the playlists, and both
/// playlists; returns the LL playlist's text.
fn write_out(muxer: &Muxer, dir: &Path) -> String {
    let media = dir.join(PREFIX);
    std::fs::create_dir_all(&media).unwrap();
    let ll = playlist::media_playlist(muxer, Flavor::LowLatency).unwrap();
    let plain = playlist::media_playlist(muxer, Flavor::Plain).unwrap();
    for uri in ll.lines().flat_map(uri_of) {
        let name = uri.strip_prefix(&format!("{PREFIX}/")).unwrap();
        let resource = Resource::parse(name).unwrap();
        std::fs::write(media.join(name), body(muxer, resource)).unwrap();
    }
    std::fs::write(dir.join("index.m3u8"), &ll).unwrap();
    std::fs::write(dir.join("plain.m3u8"), &plain).unwrap();
    ll
}

/// The URI a playlist line names: a segment line, or a tag's `URI="…"`.
fn uri_of(line: &str) -> Option<String> {
    if !line.starts_with('#') {
        return Some(line.to_string());
    }
    let start = line.find("URI=\"")? + 5;
    let end = start + line[start..].find('"')?;
    Some(line[start..end].to_string())
}

/// (EXTINF seconds, segment URI) pairs, and the part durations listed before each segment.
fn segments_of(playlist: &str) -> Vec<(f64, String, Vec<f64>)> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut extinf = None;
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            parts.push(rest.split(',').next().unwrap().parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
            extinf = Some(rest.trim_end_matches(',').parse().unwrap());
        } else if !line.starts_with('#') {
            out.push((
                extinf.take().unwrap(),
                line.to_string(),
                std::mem::take(&mut parts),
            ));
        }
    }
    out
}

fn tag_value<'a>(playlist: &'a str, tag: &str) -> &'a str {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("no {tag} in\n{playlist}"))
}

/// How long the video ffprobe reads from init + segment lasts, with ffprobe's stderr: the sum
/// of the packet durations, or (where ffprobe leaves some unset, as it does for AV1) the decode
/// time span plus one mean frame interval.
fn ffprobe_video_seconds(dir: &Path, segment_uri: &str) -> (f64, String) {
    let joined = dir.join("probe.mp4");
    let mut bytes = std::fs::read(dir.join(PREFIX).join("init.mp4")).unwrap();
    bytes.extend(std::fs::read(dir.join(segment_uri)).unwrap());
    std::fs::write(&joined, bytes).unwrap();
    let output = process::output_with_deadline(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["packet=dts_time,duration_time", "-of", "csv=p=0"])
            .arg(&joined),
        TOOL_LIMIT,
    );
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let packets: Vec<(f64, Option<f64>)> = stdout
        .lines()
        .map(|line| {
            let mut fields = line.split(',');
            let dts = fields.next().unwrap().parse().unwrap();
            (dts, fields.next().and_then(|d| d.parse().ok()))
        })
        .collect();
    assert!(packets.len() > 1, "ffprobe read {} packets", packets.len());
    let seconds = match packets.iter().map(|p| p.1).collect::<Option<Vec<f64>>>() {
        Some(durations) => durations.iter().sum(),
        None => {
            let span = packets[packets.len() - 1].0 - packets[0].0;
            span + span / (packets.len() - 1) as f64
        }
    };
    (
        seconds,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `ffmpeg -i <playlist> -c copy -f null -`: its stderr at warning level.
fn ffmpeg_copy(playlist: &Path) -> String {
    let output = process::output_with_deadline(
        Command::new("ffmpeg")
            .args(["-v", "warning", "-nostats", "-i"])
            .arg(playlist)
            .args(["-c", "copy", "-f", "null", "-"]),
        TOOL_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "ffmpeg failed:\n{stderr}");
    stderr
}

fn assert_no_timestamp_warnings(stderr: &str) {
    let lower = stderr.to_lowercase();
    for word in [
        "dts",
        "pts",
        "timestamp",
        "monoton",
        "error",
        "invalid",
        "discontinuity",
    ] {
        assert!(!lower.contains(word), "ffmpeg warned ({word}):\n{stderr}");
    }
}

/// Every segment: ffprobe reads it without error and its video lasts what `EXTINF` says;
/// the parts listed before it sum to the same.
fn check_segments(dir: &Path, ll: &str) -> Vec<f64> {
    let segments = segments_of(ll);
    assert!(!segments.is_empty());
    for (extinf, uri, parts) in &segments {
        let (probed, stderr) = ffprobe_video_seconds(dir, uri);
        assert!(stderr.is_empty(), "ffprobe on {uri}: {stderr}");
        assert!(
            (probed - extinf).abs() < 0.002,
            "{uri}: ffprobe {probed} s, EXTINF {extinf} s"
        );
        if !parts.is_empty() {
            let sum: f64 = parts.iter().sum();
            assert!(
                (sum - extinf).abs() < 0.001,
                "{uri}: parts sum {sum}, EXTINF {extinf}"
            );
        }
    }
    segments.iter().map(|s| s.0).collect()
}

fn config(window: usize) -> MuxerConfig {
    MuxerConfig {
        window_segments: window,
        ..MuxerConfig::with_prefix(PREFIX)
    }
}

#[test]
fn h264_aac_with_2s_gops_makes_2s_segments_that_ffmpeg_reads_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let flv = ffmpeg_flv(dir.path(), "in.flv", 50, 10);
    let muxer = mux_flv(&flv, config(100));
    let ll = write_out(&muxer, dir.path());
    let durations = check_segments(dir.path(), &ll);
    assert_eq!(durations.len(), 5, "{ll}");
    assert!(
        durations.iter().all(|d| (d - 2.0).abs() < 0.05),
        "{durations:?}"
    );
    assert_eq!(tag_value(&ll, "#EXT-X-TARGETDURATION:"), "2");
    assert!(ll.contains("INDEPENDENT=YES"));
    assert!(ll.ends_with("#EXT-X-ENDLIST\n"));
    assert_no_timestamp_warnings(&ffmpeg_copy(&dir.path().join("index.m3u8")));
    assert_no_timestamp_warnings(&ffmpeg_copy(&dir.path().join("plain.m3u8")));
    let variant = playlist::multivariant_playlist(&muxer, "index.m3u8").unwrap();
    assert!(
        variant.contains("CODECS=\"avc1.64000d,mp4a.40.2\""),
        "{variant}"
    );
    assert!(variant.contains("RESOLUTION=320x240"), "{variant}");
}

#[test]
fn ffmpeg_default_keyint_makes_10s_segments_and_a_target_of_10() {
    let dir = tempfile::tempdir().unwrap();
    let flv = ffmpeg_flv(dir.path(), "in.flv", 250, 21);
    let muxer = mux_flv(&flv, config(100));
    let ll = write_out(&muxer, dir.path());
    let durations = check_segments(dir.path(), &ll);
    assert!(
        durations[..2].iter().all(|d| (d - 10.0).abs() < 0.05),
        "{durations:?}"
    );
    assert_eq!(tag_value(&ll, "#EXT-X-TARGETDURATION:"), "10");
    // Parts stay short even though segments are long.
    let part_target: f64 = tag_value(&ll, "#EXT-X-PART-INF:PART-TARGET=")
        .parse()
        .unwrap();
    for (_, _, parts) in segments_of(&ll) {
        assert!(parts.iter().all(|p| *p <= part_target + 1e-6), "{parts:?}");
    }
    assert_no_timestamp_warnings(&ffmpeg_copy(&dir.path().join("index.m3u8")));
}

/// A video encoder ffmpeg has but cannot put in FLV (Debian's ffmpeg 5.1 predates Enhanced
/// RTMP): its fragmented MP4 output is read back with mp4-atom and sent as Enhanced RTMP tags.
struct Encoder {
    fourcc: &'static [u8; 4],
    args: Vec<String>,
}

fn x265(keyint: u32) -> Encoder {
    let params = format!("keyint={keyint}:min-keyint={keyint}:open-gop=0:log-level=error");
    Encoder {
        fourcc: b"hvc1",
        args: [
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            &params,
            "-tag:v",
            "hvc1",
        ]
        .map(String::from)
        .to_vec(),
    }
}

fn svt_av1(keyint: u32) -> Encoder {
    let params = format!("keyint={keyint}");
    Encoder {
        fourcc: b"av01",
        args: [
            "-c:v",
            "libsvtav1",
            "-preset",
            "12",
            "-g",
            &keyint.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-svtav1-params".to_string(), params])
        .collect(),
    }
}

/// The encoder's output as (timestamp, Enhanced RTMP tag body) pairs: sequence start, then
/// `CodedFrames` (with the SI24 composition time only for `hvc1`, as Enhanced RTMP says).
fn enhanced_tags(dir: &Path, encoder: &Encoder, seconds: u32) -> Vec<(u32, Bytes)> {
    use mp4_atom::{Any, Atom, Codec, Decode};
    let mp4 = dir.join("enhanced.mp4");
    let output = process::output_with_deadline(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
            ])
            .args(["-t", &seconds.to_string()])
            .args(&encoder.args)
            .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
            .arg(&mp4),
        TOOL_LIMIT,
    );
    assert!(
        output.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = Bytes::from(std::fs::read(&mp4).unwrap());
    let header = |packet_type: u8, key: bool| {
        let frame_type: u8 = if key { 1 } else { 2 };
        let mut body = vec![0x80 | (frame_type << 4) | packet_type];
        body.extend_from_slice(encoder.fourcc);
        body
    };
    let mut rest = &file[..];
    let mut tags = Vec::new();
    let mut timescale = 0u64;
    while !rest.is_empty() {
        let at = file.len() - rest.len();
        match Any::decode(&mut rest).unwrap() {
            Any::Moov(moov) => {
                let trak = &moov.trak[0];
                timescale = u64::from(trak.mdia.mdhd.timescale);
                let mut body = header(0, true);
                match &trak.mdia.minf.stbl.stsd.codecs[0] {
                    Codec::Hvc1(hvc1) => hvc1.hvcc.encode_body(&mut body).unwrap(),
                    Codec::Av01(av01) => av01.av1c.encode_body(&mut body).unwrap(),
                    other => panic!("unexpected sample entry {other:?}"),
                }
                tags.push((0, Bytes::from(body)));
            }
            Any::Moof(moof) => {
                let traf = &moof.traf[0];
                let mut dts = traf.tfdt.as_ref().unwrap().base_media_decode_time;
                for trun in &traf.trun {
                    let mut offset = at + trun.data_offset.unwrap() as usize;
                    for entry in trun.samples.iter() {
                        let size = entry.size.or(traf.tfhd.default_sample_size).unwrap() as usize;
                        let flags = entry.flags.or(traf.tfhd.default_sample_flags).unwrap_or(0);
                        let ms = |t: u64| t * 1000 / timescale;
                        let mut body = header(1, flags & 0x0001_0000 == 0);
                        if encoder.fourcc == b"hvc1" {
                            let cts = ms(entry.cts.unwrap_or(0).max(0) as u64) as u32;
                            body.extend_from_slice(&cts.to_be_bytes()[1..]);
                        }
                        body.extend_from_slice(&file[offset..offset + size]);
                        tags.push((ms(dts) as u32, Bytes::from(body)));
                        offset += size;
                        let duration = entry.duration.or(traf.tfhd.default_sample_duration);
                        dts += u64::from(duration.unwrap());
                    }
                }
            }
            _ => {}
        }
    }
    tags
}

/// Muxes an encoder's 6 s of 2 s GOPs and checks the output; returns the multivariant
/// playlist.
fn check_enhanced(encoder: Encoder) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut muxer = Muxer::new(config(100)).unwrap();
    for (timestamp, body) in enhanced_tags(dir.path(), &encoder, 6) {
        muxer.push_video(timestamp, &body).unwrap();
    }
    muxer.finish().unwrap();
    let ll = write_out(&muxer, dir.path());
    let durations = check_segments(dir.path(), &ll);
    assert_eq!(durations.len(), 3, "{ll}");
    assert_no_timestamp_warnings(&ffmpeg_copy(&dir.path().join("index.m3u8")));
    let variant = playlist::multivariant_playlist(&muxer, "index.m3u8").unwrap();
    assert!(variant.contains("RESOLUTION=320x240"), "{variant}");
    variant
}

#[test]
fn hevc_from_enhanced_rtmp_tags_is_hvc1_and_reads_cleanly() {
    let variant = check_enhanced(x265(50));
    assert!(variant.contains("CODECS=\"hvc1.1.6.L"), "{variant}");
}

#[test]
fn av1_from_enhanced_rtmp_tags_is_av01_and_reads_cleanly() {
    let variant = check_enhanced(svt_av1(50));
    assert!(variant.contains("CODECS=\"av01.0."), "{variant}");
}
