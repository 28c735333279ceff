//! The muxer: FLV tag bodies in, an init segment, parts and segments out.
//!
//! Call [`Muxer::push_video`] and [`Muxer::push_audio`] with each message body and its RTMP
//! timestamp in the order they arrive, then drain [`Muxer::poll_event`]; [`Muxer::finish`]
//! when the publisher leaves. Nothing here reads a clock or a socket.
//!
//! # Cutting
//! One track drives the timeline: video when the stream has a video sequence header before its
//! first frame, else audio. A part is closed when the next sample would push it past the part
//! target (so parts stay at or under `PART-TARGET`), a segment when a sync sample arrives and
//! the next sample would push the segment past the segment target. Video segments are therefore
//! whole GOPs: a GOP longer than the segment target makes a longer segment, and the playlist's
//! `EXT-X-TARGETDURATION` grows to match. Audio is attached to the part covering its time.
//!
//! # Tricky parts
//! - A video sample's duration is only known when the next one arrives, so one sample is held
//!   back; a part ends at the decode time of the sample that follows it.
//! - RTMP timestamps are 32-bit milliseconds that wrap and may step back; each track unwraps
//!   its own, and decode times never go backwards: a small step back becomes a zero duration,
//!   one of over a second (an encoder that restarted its clock) is read as one frame.
//! - Audio decode times count 1024-sample frames at the sampling rate, resynchronised to the
//!   RTMP clock only across a gap, so the audio track has no rounding jitter.
//! - A publisher whose video never advances or never cuts must not grow memory: parts are
//!   closed after [`MAX_PART_SAMPLES`] samples and audio waiting for video is capped.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::codec::{AudioConfig, VideoConfig, AAC_FRAME_SAMPLES, VIDEO_TIMESCALE};
use crate::fmp4::{self, Run, Sample, AUDIO_TRACK, VIDEO_TRACK};
use crate::input::{self, Input, VideoSample};
use crate::window::{Part, Window};
use crate::{MuxError, MuxerConfig};

/// Samples of one track in one part beyond which the part is closed regardless of time.
pub const MAX_PART_SAMPLES: usize = 512;
/// A segment that grows past this many bytes without a keyframe to cut at is ended anyway,
/// so a stream with one endless GOP holds at most the window's segments of this size, not
/// the whole stream (the next segment then starts without a keyframe: such a stream is not
/// playable from there anyway).
pub const MAX_SEGMENT_BYTES: usize = 16 * 1024 * 1024;
/// Audio frames waiting for the video timeline beyond which the oldest are dropped.
const MAX_WAITING_AUDIO: usize = 1024;
/// An audio timestamp this far (ms) from the running frame count is a gap, not jitter.
const AUDIO_RESYNC_MS: i64 = 200;
/// A timestamp further back than this (ms) is a restarted encoder clock, not reordering.
const MAX_STEP_BACK_MS: i64 = 1000;

/// What the muxer made; drain with [`Muxer::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The init segment exists (once per muxer).
    Init,
    /// A part of segment `msn` exists: wake parked playlist and part requests.
    Part {
        /// Its segment's media sequence number.
        msn: u64,
        /// Its index within the segment.
        index: usize,
    },
    /// Segment `msn` is complete.
    Segment {
        /// Its media sequence number.
        msn: u64,
    },
}

/// Which track drives the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Video,
    Audio,
}

/// One track's RTMP clock, unwrapped to a signed millisecond count.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    last: Option<u32>,
    ms: i64,
}

impl Clock {
    /// The unwrapped time of `ts`. A step back of more than [`MAX_STEP_BACK_MS`] is an encoder
    /// that restarted its clock: it is read as a step of `nominal_ms` instead, so the timeline
    /// goes on rather than stalling until the new clock catches up with the old one.
    fn advance(&mut self, ts: u32, nominal_ms: i64) -> i64 {
        if let Some(last) = self.last {
            // Wrapping difference read as signed: a wrap moves forward, a step back is small.
            let step = i64::from(ts.wrapping_sub(last) as i32);
            self.ms += if step < -MAX_STEP_BACK_MS {
                nominal_ms
            } else {
                step
            };
        } else {
            self.ms = i64::from(ts);
        }
        self.last = Some(ts);
        self.ms
    }
}

/// State from the first sync sample on.
#[derive(Debug)]
struct Timeline {
    driver: Driver,
    /// Driver timescale (90 kHz, or the audio sampling rate).
    timescale: u32,
    /// RTMP milliseconds of timeline zero.
    origin_ms: i64,
    /// Decode time where the current part and segment start, driver units.
    part_start: u64,
    segment_start: u64,
    /// Video samples of the current part, and the one whose duration is still unknown.
    video: Run,
    pending: Option<(u64, VideoSample)>,
    /// Last decode time and duration of video, 90 kHz.
    last_video_dts: u64,
    last_video_duration: u64,
    /// Audio frames not yet in a part: (decode time in audio units, data).
    audio: VecDeque<(u64, Bytes)>,
    next_audio_dts: Option<u64>,
    /// `mfhd` sequence number of the next fragment.
    fragment_seq: u32,
}

/// The muxer of one stream. See the module docs for the call order.
#[derive(Debug)]
pub struct Muxer {
    config: MuxerConfig,
    video_config: Option<VideoConfig>,
    audio_config: Option<AudioConfig>,
    video_clock: Clock,
    audio_clock: Clock,
    init: Option<Bytes>,
    timeline: Option<Timeline>,
    window: Window,
    events: VecDeque<Event>,
    ended: bool,
    /// Unix milliseconds of timeline zero, for `EXT-X-PROGRAM-DATE-TIME`.
    wall_clock_ms: Option<u64>,
}

impl Muxer {
    /// A muxer for one publish. `config.prefix` must be fresh and unguessable.
    pub fn new(config: MuxerConfig) -> Result<Muxer, MuxError> {
        config.validate()?;
        Ok(Muxer {
            window: Window::new(config.window_segments),
            config,
            video_config: None,
            audio_config: None,
            video_clock: Clock::default(),
            audio_clock: Clock::default(),
            init: None,
            timeline: None,
            events: VecDeque::new(),
            ended: false,
            wall_clock_ms: None,
        })
    }

    /// The next thing made, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles a video message body. An error drops this message only; the caller counts it.
    pub fn push_video(&mut self, timestamp: u32, body: &Bytes) -> Result<(), MuxError> {
        if self.ended {
            return Err(MuxError::Ended);
        }
        let sample = match input::video(body)? {
            Input::VideoConfig(config) => return self.set_video_config(config),
            Input::Video(sample) => sample,
            _ => return Ok(()),
        };
        let nominal_ms = self.timeline.as_ref().map_or(0, |t| {
            i64::try_from(t.last_video_duration / u64::from(VIDEO_TIMESCALE / 1000)).unwrap_or(0)
        });
        let ms = self.video_clock.advance(timestamp, nominal_ms);
        if self.timeline.is_none() {
            self.start(Driver::Video, ms, &sample)?;
        }
        let Some(timeline) = self.timeline.as_mut() else {
            return Ok(());
        };
        if timeline.driver != Driver::Video {
            return Err(MuxError::NoVideoTrack);
        }
        let dts =
            ms_to_ticks(ms - timeline.origin_ms, VIDEO_TIMESCALE).max(timeline.last_video_dts);
        let keyframe = sample.keyframe;
        if let Some((prev_dts, prev)) = timeline.pending.take() {
            let duration = dts - prev_dts;
            timeline.last_video_duration = duration;
            timeline.video.samples.push(video_sample(prev, duration));
            let part_len = dts - timeline.part_start + duration;
            let segment_len = dts - timeline.segment_start + duration;
            let targets = self.config.targets_in(VIDEO_TIMESCALE);
            let oversized = self.window.current().len() > MAX_SEGMENT_BYTES;
            if (keyframe && segment_len > targets.segment) || oversized {
                self.close_part(dts, true)?;
            } else if part_len > targets.part || timeline.video.samples.len() >= MAX_PART_SAMPLES {
                self.close_part(dts, false)?;
            }
        }
        let Some(timeline) = self.timeline.as_mut() else {
            return Ok(());
        };
        if timeline.video.samples.is_empty() {
            timeline.video.base_decode_time = dts;
        }
        timeline.last_video_dts = dts;
        timeline.pending = Some((dts, sample));
        Ok(())
    }

    /// Handles an audio message body. An error drops this message only; the caller counts it.
    pub fn push_audio(&mut self, timestamp: u32, body: &Bytes) -> Result<(), MuxError> {
        if self.ended {
            return Err(MuxError::Ended);
        }
        let data = match input::audio(body)? {
            Input::AudioConfig(config) => return self.set_audio_config(config),
            Input::Audio(data) => data,
            _ => return Ok(()),
        };
        let Some(rate) = self.audio_config.as_ref().map(|c| c.sample_rate) else {
            return Err(MuxError::NoAudioConfig);
        };
        let frame_ms = i64::from(AAC_FRAME_SAMPLES) * 1000 / i64::from(rate.max(1));
        let ms = self.audio_clock.advance(timestamp, frame_ms);
        if self.timeline.is_none() && self.video_config.is_none() {
            let sync = VideoSample {
                keyframe: true,
                composition_ms: 0,
                data: Bytes::new(),
            };
            self.start(Driver::Audio, ms, &sync)?;
        }
        let Some(timeline) = self.timeline.as_mut() else {
            return Ok(()); // waiting for the first video keyframe
        };
        let Some(dts) = audio_dts(timeline, ms, rate) else {
            return Ok(()); // before timeline zero
        };
        timeline.next_audio_dts = Some(dts + u64::from(AAC_FRAME_SAMPLES));
        if timeline.driver == Driver::Audio {
            self.cut_on_audio(dts, rate)?;
        }
        let Some(timeline) = self.timeline.as_mut() else {
            return Ok(());
        };
        if timeline.audio.len() >= MAX_WAITING_AUDIO {
            timeline.audio.pop_front();
            timeline.audio.push_back((dts, data));
            return Err(MuxError::AudioOverflow);
        }
        timeline.audio.push_back((dts, data));
        Ok(())
    }

    /// Ends the stream: the held sample and the open part and segment are written, and the
    /// playlist gets `EXT-X-ENDLIST`.
    pub fn finish(&mut self) -> Result<(), MuxError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let Some(timeline) = self.timeline.as_mut() else {
            return Ok(());
        };
        let end = match timeline.driver {
            Driver::Video => match timeline.pending.take() {
                Some((dts, prev)) => {
                    // Its duration is unknown: assume the one before it.
                    let duration = timeline.last_video_duration.max(1);
                    timeline.video.samples.push(video_sample(prev, duration));
                    dts + duration
                }
                None => timeline.part_start,
            },
            Driver::Audio => timeline
                .audio
                .back()
                .map_or(timeline.part_start, |(dts, _)| {
                    dts + u64::from(AAC_FRAME_SAMPLES)
                }),
        };
        self.close_part(end, true)
    }

    fn set_video_config(&mut self, config: VideoConfig) -> Result<(), MuxError> {
        if self.init.is_some() {
            // Tracks cannot change inside one init segment; a new codec needs a new publish.
            let same = self.video_config.as_ref() == Some(&config);
            return if same {
                Ok(())
            } else {
                Err(MuxError::ConfigChanged)
            };
        }
        self.video_config = Some(config);
        Ok(())
    }

    fn set_audio_config(&mut self, config: AudioConfig) -> Result<(), MuxError> {
        if self.init.is_some() {
            let same = self.audio_config.as_ref() == Some(&config);
            return if same {
                Ok(())
            } else {
                Err(MuxError::ConfigChanged)
            };
        }
        self.audio_config = Some(config);
        Ok(())
    }

    /// Starts the timeline on a sync sample and writes the init segment.
    fn start(&mut self, driver: Driver, ms: i64, sample: &VideoSample) -> Result<(), MuxError> {
        let timescale = match driver {
            Driver::Video if self.video_config.is_none() => return Err(MuxError::NoVideoConfig),
            Driver::Video if !sample.keyframe => return Err(MuxError::WaitingForKeyframe),
            Driver::Video => VIDEO_TIMESCALE,
            Driver::Audio => self.audio_config.as_ref().map_or(0, |c| c.sample_rate),
        };
        let video = match driver {
            Driver::Video => self.video_config.as_ref(),
            Driver::Audio => None,
        };
        self.init = Some(fmp4::init_segment(video, self.audio_config.as_ref())?);
        self.events.push_back(Event::Init);
        self.timeline = Some(Timeline {
            driver,
            timescale,
            origin_ms: ms,
            part_start: 0,
            segment_start: 0,
            video: Run::default(),
            pending: None,
            last_video_dts: 0,
            last_video_duration: 0,
            audio: VecDeque::new(),
            next_audio_dts: None,
            fragment_seq: 1,
        });
        Ok(())
    }

    fn cut_on_audio(&mut self, dts: u64, rate: u32) -> Result<(), MuxError> {
        let Some(timeline) = self.timeline.as_ref() else {
            return Ok(());
        };
        let frame = u64::from(AAC_FRAME_SAMPLES);
        let targets = self.config.targets_in(rate);
        let part_len = dts.saturating_sub(timeline.part_start) + frame;
        let segment_len = dts.saturating_sub(timeline.segment_start) + frame;
        let waiting = timeline.audio.len();
        if waiting == 0 {
            return Ok(());
        }
        if segment_len > targets.segment {
            self.close_part(dts, true)
        } else if part_len > targets.part || waiting >= MAX_PART_SAMPLES {
            self.close_part(dts, false)
        } else {
            Ok(())
        }
    }

    /// Closes the current part at decode time `end` (driver units), and the segment with it.
    fn close_part(&mut self, end: u64, end_segment: bool) -> Result<(), MuxError> {
        let audio_rate = self.audio_config.as_ref().map_or(1, |c| c.sample_rate);
        let Some(timeline) = self.timeline.as_mut() else {
            return Ok(());
        };
        let video = std::mem::take(&mut timeline.video);
        let audio = take_audio_before(timeline, end, audio_rate);
        let independent = match timeline.driver {
            Driver::Video => video.samples.first().is_some_and(|s| s.keyframe),
            Driver::Audio => true,
        };
        let duration = end.saturating_sub(timeline.part_start);
        if !video.samples.is_empty() || !audio.samples.is_empty() {
            let seq = timeline.fragment_seq;
            timeline.fragment_seq = seq.wrapping_add(1);
            let bytes = fmp4::fragment(seq, &[(VIDEO_TRACK, &video), (AUDIO_TRACK, &audio)])?;
            timeline.part_start = end;
            let index = self.window.push_part(Part {
                bytes,
                duration,
                independent,
            });
            let msn = self.window.current().msn;
            self.events.push_back(Event::Part { msn, index });
        }
        if end_segment {
            if let Some(timeline) = self.timeline.as_mut() {
                timeline.segment_start = end;
            }
            if let Some(msn) = self.window.finish_segment() {
                self.events.push_back(Event::Segment { msn });
            }
        }
        Ok(())
    }

    /// The init segment, once the first sync sample arrived.
    pub fn init(&self) -> Option<&Bytes> {
        self.init.as_ref()
    }

    /// The segments and parts.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Makes `whole`, a copy of finished segment `msn`'s bytes, its body and its parts'
    /// storage (see [`Window::relocate`]).
    pub fn relocate_segment(&mut self, msn: u64, whole: Bytes) -> bool {
        self.window.relocate(msn, whole)
    }

    /// The configuration.
    pub fn config(&self) -> &MuxerConfig {
        &self.config
    }

    /// The timeline's timescale (durations in the window are in its units); 0 before the
    /// first sync sample.
    pub fn timescale(&self) -> u32 {
        self.timeline.as_ref().map_or(0, |t| t.timescale)
    }

    /// Anchors the timeline to the wall clock: `unix_ms` is when timeline zero (the sync sample
    /// that produced [`Event::Init`]) arrived. Call it when that event is polled; the playlists
    /// then carry `EXT-X-PROGRAM-DATE-TIME`, which players use to measure latency.
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.wall_clock_ms = Some(unix_ms);
    }

    /// Unix milliseconds of timeline zero, if anchored.
    pub fn wall_clock(&self) -> Option<u64> {
        self.wall_clock_ms
    }

    /// True once [`finish`](Self::finish) ran.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The video configuration, if the stream has video.
    pub fn video_config(&self) -> Option<&VideoConfig> {
        match self.timeline.as_ref().map(|t| t.driver) {
            Some(Driver::Audio) => None,
            _ => self.video_config.as_ref(),
        }
    }

    /// The audio configuration, if the stream has audio.
    pub fn audio_config(&self) -> Option<&AudioConfig> {
        self.audio_config.as_ref()
    }
}

/// Part and segment targets in one timescale.
struct Targets {
    part: u64,
    segment: u64,
}

impl MuxerConfig {
    fn targets_in(&self, timescale: u32) -> Targets {
        let ticks = |ms: u32| u64::from(ms) * u64::from(timescale) / 1000;
        Targets {
            part: ticks(self.part_target_ms),
            segment: ticks(self.segment_target_ms),
        }
    }
}

fn ms_to_ticks(ms: i64, timescale: u32) -> u64 {
    u64::try_from(ms).unwrap_or(0) * u64::from(timescale) / 1000
}

fn video_sample(sample: VideoSample, duration: u64) -> Sample {
    Sample {
        duration: u32::try_from(duration).unwrap_or(u32::MAX),
        composition: sample.composition_ms.saturating_mul(90),
        keyframe: sample.keyframe,
        data: sample.data,
    }
}

/// The decode time of an audio frame at RTMP time `ms`, or `None` before timeline zero.
fn audio_dts(timeline: &Timeline, ms: i64, rate: u32) -> Option<u64> {
    let since = ms - timeline.origin_ms;
    if since < 0 {
        return None;
    }
    let from_clock = ms_to_ticks(since, rate);
    Some(match timeline.next_audio_dts {
        Some(next) => {
            let drift_ms = (from_clock as i64 - next as i64) * 1000 / i64::from(rate.max(1));
            if drift_ms.abs() > AUDIO_RESYNC_MS && from_clock > next {
                from_clock
            } else {
                next
            }
        }
        None => from_clock,
    })
}

/// Audio frames that start before `end` (driver units), as one run.
fn take_audio_before(timeline: &mut Timeline, end: u64, audio_rate: u32) -> Run {
    let mut run = Run::default();
    while let Some((dts, _)) = timeline.audio.front() {
        let in_driver = match timeline.driver {
            Driver::Video => dts * u64::from(VIDEO_TIMESCALE) / u64::from(audio_rate.max(1)),
            Driver::Audio => *dts,
        };
        if in_driver >= end {
            break;
        }
        let Some((dts, data)) = timeline.audio.pop_front() else {
            break;
        };
        if run.samples.is_empty() {
            run.base_decode_time = dts;
        }
        run.samples.push(Sample {
            duration: AAC_FRAME_SAMPLES,
            composition: 0,
            keyframe: true,
            data,
        });
    }
    run
}
