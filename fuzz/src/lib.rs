//! Fuzz target bodies for `corecast-common`'s parsers.
//!
//! Each `pub fn` here is one cargo-fuzz target (`fuzz_targets/<name>.rs` is a one-line
//! wrapper around it), so the same code runs under libFuzzer on nightly and, on stable, in
//! `cargo test` (`tests/replay.rs`), which replays the seed corpus in `corpus/` through every
//! target. A target panics only when it finds a bug: every parser must turn any input into a
//! value or an error, and the properties below must hold.
//!
//! # Input layout
//! - `chunk_decoder`, `handshake_server`, `flv_reader`, `pull_stream`: byte 0 says how to cut
//!   the rest into socket reads ([`Pieces`]); the rest is the byte stream. The first three
//!   decode the stream twice, whole and in pieces, and require the same result: the decoders
//!   consume only whole units and say "need more" otherwise, so where the reads end must not
//!   matter.
//! - `handshake_rtmpe`: byte 0 cuts the reads as above, byte 1 is a mode (sign C1 at which
//!   scheme, see `rtmpe.rs`), the rest follows a C0 of 6 the target adds.
//! - `chunk_roundtrip`: the same layout as `chunk_decoder` (their seeds are the same), but
//!   byte 0 picks the chunk size for `encode_shared` instead; the stream is decoded whole.
//! - `control_decode`: byte 0 is the message type id, the rest the payload.
//! - `amf0_decode`, `command_decode`, `flv_tag_headers`: the whole input is one payload.
//! - `ertmp_media`: byte 0 bit 0 picks video (else audio), the rest is one message body
//!   (see `ertmp.rs`).
//! - `hls_muxer`: a targets byte, then records of one RTMP message body each (see [`hls`]).
//! - `plane`: a schedule of control-plane events on up to four cores
//!   (`corecast_common::plane::sim::decode`: a byte for the cores and pulls, then two bytes
//!   per event).
//!
//! # Round trips
//! Whatever decodes is encoded again and must decode to the same thing. The AMF encoder's
//! documented asymmetries are allowed for: a `String` over 65 535 bytes comes back as a
//! `LongString`, an over-long key or class name is cut, and NaN is not equal to itself, so
//! values with any of these are compared by their re-encoded bytes instead.

mod ertmp;
pub mod hls;

pub use ertmp::ertmp_media;
pub use hls::hls_muxer;

use bytes::BytesMut;
use corecast_common::amf0::{self, Amf0Limits, Amf0Object, Amf0Value};
use corecast_common::chunk::{encode_shared, ChunkDecoder, ChunkDecoderLimits, ChunkEncoder};
use corecast_common::command::{Command, DataMessage};
use corecast_common::control::ControlMessage;
use corecast_common::flv::{
    self, AudioTagHeader, FlvReader, FlvTag, VideoCodec, VideoPacketKind, VideoTagHeader,
};
use corecast_common::handshake::{
    HandshakeKind, HandshakeStatus, ServerHandshake, HANDSHAKE_SIZE, RANDOM_LEN,
};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

mod rtmpe;
pub use rtmpe::{dh_pos, digest_pos, handshake_rtmpe, rtmpe_server, server_dh_private, sign_c1};

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its cargo-fuzz name, which is also its corpus directory.
    pub name: &'static str,
    /// Its body.
    pub run: fn(&[u8]),
}

/// Every target, for the replay test and the `replay` example.
pub const TARGETS: &[Target] = &[
    Target {
        name: "amf0_decode",
        run: amf0_decode,
    },
    Target {
        name: "command_decode",
        run: command_decode,
    },
    Target {
        name: "chunk_decoder",
        run: chunk_decoder,
    },
    Target {
        name: "chunk_roundtrip",
        run: chunk_roundtrip,
    },
    Target {
        name: "handshake_server",
        run: handshake_server,
    },
    Target {
        name: "handshake_rtmpe",
        run: handshake_rtmpe,
    },
    Target {
        name: "flv_reader",
        run: flv_reader,
    },
    Target {
        name: "flv_tag_headers",
        run: flv_tag_headers,
    },
    Target {
        name: "control_decode",
        run: control_decode,
    },
    Target {
        name: "pull_stream",
        run: pull_stream,
    },
    Target {
        name: "plane",
        run: plane,
    },
    Target {
        name: "hls_muxer",
        run: hls_muxer,
    },
    Target {
        name: "token_verify",
        run: token_verify,
    },
    Target {
        name: "ertmp_media",
        run: ertmp_media,
    },
    Target {
        name: "aggregate_split",
        run: aggregate_split,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|t| t.name == name).copied()
}

// ---- input helpers ------------------------------------------------------------------------

/// Cuts a byte stream into the reads a socket might deliver, deterministically from a control
/// byte: its low two bits pick the largest read (1, 7, 64 or 1500 bytes), the rest seed the
/// lengths.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a [u8],
    state: u32,
    max: u32,
}

impl<'a> Pieces<'a> {
    /// The reads of `stream` for control byte `control`.
    pub fn new(control: u8, stream: &'a [u8]) -> Self {
        const MAX_READ: [u32; 4] = [1, 7, 64, 1500];
        Pieces {
            rest: stream,
            // xorshift32 must not start at 0.
            state: 0x9E37_79B9 ^ u32::from(control >> 2),
            max: MAX_READ[usize::from(control & 3)],
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let len = (1 + self.state % self.max) as usize;
        let (piece, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

/// `(control byte, stream)`; an empty input is an empty stream.
fn split_control(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&control, stream)) => (control, stream),
        None => (0, data),
    }
}

// ---- AMF0 ---------------------------------------------------------------------------------

/// Largest string or key the AMF0 encoder writes with a 16-bit length.
const U16_STRING_MAX: usize = u16::MAX as usize;

/// True when `value` survives encode → decode unchanged: no NaN, no `String` that the encoder
/// must write as a long string, no key or class name that it must cut.
pub fn round_trips_exactly(value: &Amf0Value) -> bool {
    fn object(o: &Amf0Object) -> bool {
        o.0.iter()
            .all(|(k, v)| k.len() <= U16_STRING_MAX && round_trips_exactly(v))
    }
    match value {
        Amf0Value::Number(n) => !n.is_nan(),
        Amf0Value::Date { millis, .. } => !millis.is_nan(),
        Amf0Value::String(s) => s.len() <= U16_STRING_MAX,
        Amf0Value::Object(o) | Amf0Value::EcmaArray(o) => object(o),
        Amf0Value::StrictArray(items) => items.iter().all(round_trips_exactly),
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => class_name.len() <= U16_STRING_MAX && object(properties),
        Amf0Value::Boolean(_)
        | Amf0Value::Null
        | Amf0Value::Undefined
        | Amf0Value::Reference(_)
        | Amf0Value::LongString(_)
        | Amf0Value::XmlDocument(_) => true,
    }
}

fn encode_values(values: &[Amf0Value]) -> BytesMut {
    let mut out = BytesMut::new();
    amf0::encode_all(values, &mut out);
    out
}

/// Checks that `values` (just decoded) encode to bytes that decode back to them, and that
/// encoding is stable from then on.
fn check_amf_round_trip(values: &[Amf0Value]) {
    let encoded = encode_values(values);
    let again = amf0::decode_all(&encoded).expect("re-encoded AMF0 must decode");
    if values.iter().all(round_trips_exactly) {
        assert_eq!(again, values, "AMF0 round trip changed the values");
    }
    assert_eq!(
        encode_values(&again),
        encoded,
        "AMF0 encoding is not stable"
    );
}

/// `amf0::decode_all`, with tight limits as well; what decodes must round-trip.
pub fn amf0_decode(data: &[u8]) {
    // Tight limits exercise every limit check; they must fail cleanly, never panic.
    let tight = Amf0Limits {
        max_depth: 4,
        max_values: 64,
        max_amf3_reference_bytes: 256,
    };
    let _ = amf0::decode_all_with(data, &tight);

    if let Ok(values) = amf0::decode_all(data) {
        check_amf_round_trip(&values);
    }
}

// ---- commands and data messages -----------------------------------------------------------

fn commands_equal(a: &Command, b: &Command) -> bool {
    // Debug output compares NaN transaction ids as equal, which `==` does not.
    format!("{a:?}") == format!("{b:?}")
}

/// `Command::decode` (types 20 and 17), the typed `Request` a server makes of a command, and
/// `DataMessage::decode` (types 18 and 15).
pub fn command_decode(data: &[u8]) {
    use corecast_common::request::{ClientCommand, Request};

    let amf0 = Command::decode(MessageType::COMMAND_AMF0, data);
    let amf3 = Command::decode(MessageType::COMMAND_AMF3, data);

    // Typing is a step after decoding, never a second decoder.
    let typed = Request::decode(MessageType::COMMAND_AMF0, data);
    assert_eq!(
        format!("{typed:?}"),
        format!("{:?}", amf0.clone().map(Request::from)),
        "Request::decode must be Command::decode then Request::from"
    );

    // Type 17 is a 0x00 format byte in front of a type 20 body.
    if let Some((&0x00, body)) = data.split_first() {
        let plain = Command::decode(MessageType::COMMAND_AMF0, body);
        assert_eq!(
            format!("{amf3:?}"),
            format!("{plain:?}"),
            "type 17 must read as 0x00 + type 20"
        );
    }

    for command in [amf0, amf3].into_iter().flatten() {
        let encoded = command.encode();
        let again = Command::decode(MessageType::COMMAND_AMF0, &encoded)
            .expect("an encoded command must decode");
        let exact = round_trips_exactly(&Amf0Value::String(command.name.clone()))
            && round_trips_exactly(&command.command_object)
            && command.arguments.iter().all(round_trips_exactly);
        if exact {
            assert!(
                commands_equal(&again, &command),
                "command round trip: {command:?} became {again:?}"
            );
        }
        let _ = command.first_string_argument();

        // Typing never fails, keeps the name and transaction id, and depends on the command
        // alone: what round-trips exactly types the same way again.
        let request = Request::from(command.clone());
        assert_eq!(
            request.command.name(),
            command.name,
            "typing changed the name"
        );
        assert_eq!(
            request.transaction_id.to_bits(),
            command.transaction_id.to_bits(),
            "typing changed the transaction id"
        );
        if exact {
            let again = format!("{:?}", Request::from(again));
            assert_eq!(again, format!("{request:?}"), "typing after a round trip");
        }
        let stream_name = match &request.command {
            ClientCommand::Publish { stream_name, .. } => Some(stream_name),
            ClientCommand::Play(play) => Some(&play.stream_name),
            _ => None,
        };
        if let Some(Ok(name)) = stream_name {
            let name = name.as_str();
            assert!(
                !name.is_empty() && !name.contains('?'),
                "stream name {name:?} is empty or keeps its query"
            );
            assert!(
                !name.starts_with('/') && !name.ends_with('/'),
                "stream name {name:?} keeps its slashes"
            );
        }
    }

    for message_type in [MessageType::DATA_AMF0, MessageType::DATA_AMF3] {
        let Ok(data_message) = DataMessage::decode(message_type, data) else {
            continue;
        };
        check_amf_round_trip(&data_message.values);
        if let Some(metadata) = data_message.player_metadata() {
            assert_eq!(
                metadata.values.first().and_then(Amf0Value::as_str),
                Some("onMetaData"),
                "player metadata must start with onMetaData"
            );
        }
    }
}

// ---- chunk stream -------------------------------------------------------------------------

/// Small limits, so the fuzzer reaches them with small inputs.
const CHUNK_LIMITS: ChunkDecoderLimits = ChunkDecoderLimits {
    max_message_size: 16 * 1024,
    max_chunk_size: 4096,
    max_chunk_streams: 8,
    // Less than the streams' messages could hold together, so the budget is reachable too.
    max_partial_bytes: 24 * 1024,
};

/// What the chunk targets' read buffer starts with: more than libFuzzer's inputs usually are.
const CHUNK_BUF_CAPACITY: usize = 16 * 1024;

/// What decoding a chunk stream produced.
#[derive(Debug)]
struct ChunkRun {
    messages: Vec<RtmpMessage>,
    error: Option<String>,
    /// Bytes taken off the input. After an error, a run fed in pieces holds fewer unread
    /// bytes than a whole one, so this, not what is left, is what the runs must agree on.
    consumed: usize,
    /// Bytes fed but not consumed.
    leftover: usize,
    bytes_received: u64,
    chunk_size: u32,
}

impl ChunkRun {
    /// The run without what depends on how much was fed before it stopped.
    fn outcome(&self) -> (&[RtmpMessage], &Option<String>, usize, u64, u32) {
        (
            &self.messages,
            &self.error,
            self.consumed,
            self.bytes_received,
            self.chunk_size,
        )
    }
}

/// Decodes the reads in order until the stream ends or fails.
fn decode_chunks<'a>(reads: impl Iterator<Item = &'a [u8]>) -> ChunkRun {
    decode_chunks_at(corecast_common::chunk::DEFAULT_CHUNK_SIZE, reads)
}

/// [`decode_chunks`] with the peer's chunk size set to `chunk_size` beforehand, as for a
/// stream whose chunk size was announced earlier.
fn decode_chunks_at<'a>(chunk_size: u32, reads: impl Iterator<Item = &'a [u8]>) -> ChunkRun {
    let mut decoder = ChunkDecoder::new(CHUNK_LIMITS);
    decoder
        .set_chunk_size(chunk_size)
        .expect("the targets' chunk sizes are within the limits");
    // Room for a whole stream up front, so that reads rarely move what is left: only a
    // longer one (the re-encoded stream, say) grows the buffer.
    let mut buf = BytesMut::with_capacity(CHUNK_BUF_CAPACITY);
    let mut fed = 0usize;
    let mut messages = Vec::new();
    let mut error = None;
    'reads: for read in reads {
        buf.extend_from_slice(read);
        fed += read.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => {
                    assert!(
                        message.payload.len() <= CHUNK_LIMITS.max_message_size as usize,
                        "message over the size limit"
                    );
                    messages.push(message);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break 'reads;
                }
            }
            assert_eq!(
                decoder.bytes_received(),
                (fed - buf.len()) as u64,
                "bytes_received must count exactly the bytes consumed"
            );
        }
        assert_eq!(decoder.bytes_received(), (fed - buf.len()) as u64);
        assert!(
            decoder.partial_bytes() <= CHUNK_LIMITS.max_partial_bytes,
            "partial messages over their budget"
        );
    }
    ChunkRun {
        messages,
        error,
        consumed: fed - buf.len(),
        leftover: buf.len(),
        bytes_received: decoder.bytes_received(),
        chunk_size: decoder.chunk_size(),
    }
}

/// `ChunkDecoder` on arbitrary bytes in arbitrary reads, with small limits: the result must
/// not depend on the reads, and `bytes_received` must count the bytes consumed. Only decoding:
/// the re-encoding checks are `chunk_roundtrip`'s, so that this target stays fast.
pub fn chunk_decoder(data: &[u8]) {
    let (control, stream) = split_control(data);
    let whole = decode_chunks(std::iter::once(stream));
    let pieces = decode_chunks(Pieces::new(control, stream));
    assert_eq!(
        whole.outcome(),
        pieces.outcome(),
        "chunk decoding depends on how reads are cut"
    );
}

/// Chunk sizes `chunk_roundtrip` frames `encode_shared` output at, picked by the control
/// byte's low two bits: the default, the smallest, an odd one, and one that a message still
/// spans within the target's input length limit.
const SHARED_CHUNK_SIZES: [u32; 4] = [128, 1, 61, 1000];

/// The chunk stream `chunk_decoder` decodes (same input layout), decoded whole; every
/// decoded message must survive `ChunkEncoder` (with header compression) and `encode_shared`
/// (at a chunk size the control byte picks) back through a fresh decoder.
pub fn chunk_roundtrip(data: &[u8]) {
    let (control, stream) = split_control(data);
    let whole = decode_chunks(std::iter::once(stream));

    // Re-encode with header compression: the same messages must come back, with no error.
    // Reads cannot matter here (chunk_decoder checks that), so the stream is read whole.
    let mut encoder = ChunkEncoder::new();
    let mut wire = BytesMut::new();
    for message in &whole.messages {
        encoder.encode(message, &mut wire);
    }
    let again = decode_chunks(std::iter::once(&wire[..]));
    assert_eq!(again.error, None, "re-encoded chunk stream must decode");
    assert_eq!(
        again.messages, whole.messages,
        "chunk round trip changed messages"
    );
    assert_eq!(again.leftover, 0);
    assert_eq!(again.chunk_size, encoder.chunk_size());

    // Encode-once framing of each message, read by a fresh decoder at the same chunk size.
    let chunk_size = SHARED_CHUNK_SIZES[usize::from(control & 3)];
    for message in &whole.messages {
        let mut parts = Vec::new();
        let len = encode_shared(message, chunk_size, &mut parts);
        let mut wire = Vec::with_capacity(len);
        for part in &parts {
            wire.extend_from_slice(part);
        }
        assert_eq!(len, wire.len(), "encode_shared length");
        let run = decode_chunks_at(chunk_size, std::iter::once(&wire[..]));
        assert_eq!(run.error, None, "encode_shared output must decode");
        assert_eq!(
            run.messages,
            std::slice::from_ref(message),
            "encode_shared round trip"
        );
        assert_eq!(run.leftover, 0);
    }
}

// ---- handshake ----------------------------------------------------------------------------

/// What a server handshake did with a byte stream.
#[derive(Debug, PartialEq)]
struct HandshakeRun {
    status: Result<HandshakeStatus, String>,
    output: Vec<u8>,
    /// Bytes taken off the input (see `ChunkRun::consumed`).
    consumed: usize,
    kind: Option<HandshakeKind>,
    c2_digest_verified: Option<bool>,
}

/// The S1 time field of the target's server.
pub const SERVER_EPOCH: u32 = 0x0102_0304;

/// The target's server's "random" bytes: fixed, so that runs answer alike and so that a seed
/// can carry a C2 whose digest-mode signature checks out against this server's S1.
pub fn server_random() -> Vec<u8> {
    (0..RANDOM_LEN).map(|i| (i * 7 + 3) as u8).collect()
}

/// A server handshake as the `handshake_server` target builds it.
pub fn server_handshake() -> ServerHandshake {
    ServerHandshake::new(SERVER_EPOCH, &server_random())
}

fn run_server_handshake<'a>(reads: impl Iterator<Item = &'a [u8]>) -> HandshakeRun {
    let mut handshake = server_handshake();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut output = Vec::new();
    let mut status = Ok(HandshakeStatus::NeedMore);
    for read in reads {
        buf.extend_from_slice(read);
        fed += read.len();
        status = handshake
            .handle_input(&mut buf)
            .map_err(|e| format!("{e:?}"));
        while let Some(bytes) = handshake.poll_output() {
            output.extend_from_slice(&bytes);
        }
        if status != Ok(HandshakeStatus::NeedMore) {
            break;
        }
    }
    HandshakeRun {
        status,
        output,
        consumed: fed - buf.len(),
        kind: handshake.kind(),
        c2_digest_verified: handshake.c2_digest_verified(),
    }
}

/// `ServerHandshake` on arbitrary client bytes in arbitrary reads.
pub fn handshake_server(data: &[u8]) {
    let (control, stream) = split_control(data);
    let whole = run_server_handshake(std::iter::once(stream));
    let pieces = run_server_handshake(Pieces::new(control, stream));
    assert_eq!(whole, pieces, "handshake depends on how reads are cut");

    let c0c1_len = 1 + HANDSHAKE_SIZE;
    if let Some(kind) = whole.kind {
        // C1 was read: S0+S1+S2 went out in one buffer.
        assert_eq!(whole.output.len(), 1 + 2 * HANDSHAKE_SIZE, "S0+S1+S2 size");
        assert_eq!(whole.output.first(), Some(&3), "S0 is version 3");
        if kind == HandshakeKind::Plain {
            assert_eq!(
                whole.output.get(c0c1_len..),
                stream.get(1..c0c1_len),
                "plain S2 echoes C1"
            );
        }
    } else {
        assert!(whole.output.is_empty(), "no output before C1");
    }
    if whole.status == Ok(HandshakeStatus::Done) {
        assert_eq!(
            whole.consumed,
            c0c1_len + HANDSHAKE_SIZE,
            "bytes after C2 stay for the chunk decoder"
        );
        assert_eq!(
            whole.c2_digest_verified.is_some(),
            whole.kind == Some(HandshakeKind::Digest)
        );
    }
}

// ---- FLV ----------------------------------------------------------------------------------

/// Small tag limit, so the fuzzer reaches it.
const FLV_MAX_TAG_BYTES: usize = 64 * 1024;

#[derive(Debug, PartialEq)]
struct FlvRun {
    header: Option<(bool, bool)>,
    tags: Vec<FlvTag>,
    error: Option<String>,
    /// Bytes taken off the input (see `ChunkRun::consumed`).
    consumed: usize,
}

fn read_flv<'a>(reads: impl Iterator<Item = &'a [u8]>) -> FlvRun {
    let mut reader = FlvReader::with_max_tag_data_bytes(FLV_MAX_TAG_BYTES);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut tags = Vec::new();
    let mut error = None;
    'reads: for read in reads {
        buf.extend_from_slice(read);
        fed += read.len();
        loop {
            match reader.decode(&mut buf) {
                Ok(Some(tag)) => {
                    assert!(reader.header().is_some(), "a tag before the file header");
                    assert!(tag.data.len() <= FLV_MAX_TAG_BYTES, "tag over the limit");
                    assert!(tag.tag_type < 0x20, "tag type keeps the reserved bits");
                    tags.push(tag);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break 'reads;
                }
            }
        }
    }
    FlvRun {
        header: reader.header().map(|h| (h.has_audio, h.has_video)),
        tags,
        error,
        consumed: fed - buf.len(),
    }
}

/// `FlvReader` on an arbitrary file in arbitrary reads; what it reads must be written back
/// and read again unchanged.
pub fn flv_reader(data: &[u8]) {
    let (control, stream) = split_control(data);
    let whole = read_flv(std::iter::once(stream));
    let pieces = read_flv(Pieces::new(control, stream));
    assert_eq!(whole, pieces, "FLV reading depends on how reads are cut");

    if let Some((has_audio, has_video)) = whole.header {
        let mut file = BytesMut::new();
        flv::write_header(&mut file, has_audio, has_video);
        for tag in &whole.tags {
            flv::write_tag(&mut file, tag);
        }
        let again = read_flv(std::iter::once(&file[..]));
        assert_eq!(again.error, None, "a written FLV file must read");
        assert_eq!(again.header, whole.header);
        assert_eq!(again.tags, whole.tags, "FLV round trip changed tags");
        assert_eq!(again.consumed, file.len());
    }

    for tag in &whole.tags {
        flv_tag_headers(&tag.data);
    }
}

/// `VideoTagHeader::parse` and `AudioTagHeader::parse` on one tag body.
pub fn flv_tag_headers(data: &[u8]) {
    if let Ok(video) = VideoTagHeader::parse(data) {
        let first = data.first().copied().unwrap_or_default();
        assert_eq!(video.enhanced, first & 0x80 != 0, "enhanced bit");
        assert!(
            !(video.is_keyframe() && video.is_sequence_header()),
            "a keyframe is not a sequence header"
        );
        assert!(
            (-(1 << 23)..(1 << 23)).contains(&video.composition_time),
            "composition time is 24-bit"
        );
        if !video.enhanced && !matches!(video.codec, VideoCodec::Avc | VideoCodec::Hevc) {
            assert_eq!(video.packet, VideoPacketKind::CodedFrames);
            assert_eq!(video.composition_time, 0);
        }
    }
    if let Ok(audio) = AudioTagHeader::parse(data) {
        let first = data.first().copied().unwrap_or_default();
        assert_eq!(audio.sound_format, first >> 4, "sound format");
        if audio.is_sequence_header {
            assert!(
                matches!(audio.sound_format, 9 | 10),
                "only AAC/enhanced have one"
            );
        }
    }
}

// ---- control messages ---------------------------------------------------------------------

/// `ControlMessage::decode`: byte 0 is the message type, the rest the payload. What decodes
/// must encode to a message that decodes to the same thing.
pub fn control_decode(data: &[u8]) {
    let (type_id, payload) = split_control(data);
    let message_type = MessageType(type_id);
    let Ok(decoded) = ControlMessage::decode(message_type, payload) else {
        return;
    };
    let Some(control) = decoded else {
        assert!(
            !(1..=6).contains(&type_id),
            "control type {type_id} decoded as not a control message"
        );
        return;
    };
    assert_eq!(control.message_type(), message_type);
    let message = control.to_message();
    assert_eq!(message.message_type, message_type);
    assert_eq!(message.chunk_stream_id, ChunkStreamId::CONTROL);
    assert_eq!(message.message_stream_id, MessageStreamId::CONNECTION);
    let again = ControlMessage::decode(message.message_type, &message.payload)
        .expect("an encoded control message must decode");
    assert_eq!(again, Some(control), "control round trip");
}

// ---- pull protocol ------------------------------------------------------------------------

/// The pull protocol, both directions: the input (cut into reads by its first byte) is parsed
/// as a request line by a server and as a status line plus chunk stream by an edge. Neither
/// may panic; a request that parses must survive an encode/decode round trip.
pub fn pull_stream(data: &[u8]) {
    use bytes::BytesMut;
    use corecast_common::chunk::ChunkDecoderLimits;
    use corecast_common::pull::{PullClient, PullRequest};

    let (control, stream) = split_control(data);
    let mut server_buf = BytesMut::new();
    let mut client_buf = BytesMut::new();
    let mut client = PullClient::new(ChunkDecoderLimits {
        max_message_size: 1 << 20,
        max_chunk_size: 1 << 20,
        max_chunk_streams: 16,
        max_partial_bytes: 4 << 20,
    });
    let mut server_done = false;
    let mut client_done = false;
    for piece in Pieces::new(control, stream) {
        if !server_done {
            server_buf.extend_from_slice(piece);
            match PullRequest::decode(&mut server_buf) {
                Ok(Some(request)) => {
                    let mut again = BytesMut::from(&request.encode()[..]);
                    assert_eq!(
                        PullRequest::decode(&mut again).expect("re-encoded request parses"),
                        Some(request),
                        "pull request round trip"
                    );
                    server_done = true;
                }
                Ok(None) => {}
                Err(_) => server_done = true,
            }
        }
        if !client_done {
            client_buf.extend_from_slice(piece);
            loop {
                match client.poll_event(&mut client_buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        client_done = true;
                        break;
                    }
                }
            }
        }
    }
}

// ---- control plane ------------------------------------------------------------------------

/// The per-core control plane: a random schedule of publishes, unpublishes, frames, players
/// joining and leaving, message deliveries between cores and pull progress, run on several
/// planes sharing one directory (`corecast_common::plane::sim`). Panics on the first broken
/// invariant: two upstreams for one stream, a player's frame twice, a second snapshot or a
/// gap, a core with players left unfed once everything is delivered, or anything left behind
/// once every player, publisher and pull is gone.
pub fn plane(data: &[u8]) {
    use corecast_common::plane::sim::{decode, Sim};

    let (cores, pulls, ops) = decode(data);
    if let Err(broken) = Sim::run(cores, pulls, &ops) {
        panic!("{broken} ({cores} cores, pulls {pulls}): {ops:?}");
    }
    // The same schedule on an edge capped at one pull, with a negative cache.
    if let Err(broken) = Sim::run_limited(cores, pulls, &ops) {
        panic!("{broken} ({cores} cores, pulls {pulls}, limited): {ops:?}");
    }
}

/// The key the `token_verify` target (and its seeds) sign with.
pub const TOKEN_SECRET: [u8; 32] = [7; 32];

/// Signed tokens: the input, as text, is checked by `Keyring::verify` against a keyring with
/// an active and a retired key, and searched by `token::from_query`. Neither may panic, and
/// a token that verifies is exactly what the keyring signs for its claims (one spelling per
/// token: nothing about it can be changed and still verify).
pub fn token_verify(data: &[u8]) {
    use corecast_common::token::{self, Action, Expected, Key, KeyState, Keyring};

    let ring = Keyring::new(vec![
        Key::new("k1", TOKEN_SECRET, KeyState::Active),
        Key::new("k0", Vec::new(), KeyState::Retired),
    ])
    .expect("a valid keyring");
    let text = String::from_utf8_lossy(data);
    let expected = Expected {
        action: Action::Publish,
        app: "live",
        stream: "cam1",
        now: 1_700_000_000,
        skew_secs: 30,
    };
    if let Ok(claims) = ring.verify(&text, &expected) {
        assert_eq!(
            ring.sign(&claims).as_deref(),
            Some(&*text),
            "token spelling"
        );
    }
    if let Some(found) = token::from_query(&text) {
        assert!(text.contains(found));
    }
}

/// `client::aggregate::split` on an arbitrary aggregate body (the first four bytes are the
/// aggregate's timestamp): what splits must encode back to the same body and split again to
/// the same messages, each at the aggregate's time plus its offset from the first.
pub fn aggregate_split(data: &[u8]) {
    use corecast_common::client::aggregate;

    let (time, body) = match data.split_first_chunk::<4>() {
        Some((time, body)) => (u32::from_be_bytes(*time), body),
        None => (0, data),
    };
    let message = RtmpMessage {
        chunk_stream_id: ChunkStreamId::VIDEO,
        timestamp: time,
        message_type: MessageType::AGGREGATE,
        message_stream_id: MessageStreamId(1),
        payload: bytes::Bytes::copy_from_slice(body),
    };
    let Ok(parts) = aggregate::split(&message) else {
        return;
    };
    let total: usize = parts
        .iter()
        .map(|p| p.payload.len() + aggregate::SUB_HEADER_LEN + aggregate::BACK_POINTER_LEN)
        .sum();
    assert_eq!(
        total,
        body.len(),
        "a split aggregate accounts for every byte"
    );
    // Back to sub-message times (relative to the first, which encodes as 0) and split again.
    let relative: Vec<RtmpMessage> = parts
        .iter()
        .map(|p| RtmpMessage {
            timestamp: p.timestamp.wrapping_sub(time),
            ..p.clone()
        })
        .collect();
    let Some(mut again) = aggregate::message(&relative, MessageStreamId(1)) else {
        assert!(parts.is_empty(), "split parts must encode");
        return;
    };
    again.timestamp = time;
    let reparsed = aggregate::split(&again).expect("an encoded aggregate must split");
    assert_eq!(reparsed, parts, "aggregate round trip");
}
