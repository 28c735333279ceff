//! The RTMP chunk stream (RTMP spec §5.3): splitting messages into chunks and reassembling
//! them, plus the encode-once framing the fan-out path uses.
//!
//! This module owns the per-direction chunk state: the chunk size, and for every chunk stream
//! id (csid) the previous message header (so fmt 1/2/3 headers can omit fields) and the
//! partially received message. [`ChunkDecoder`] turns inbound bytes into [`RtmpMessage`]s;
//! [`ChunkEncoder`] does the reverse with header compression; [`encode_shared`] produces the
//! uncompressed (type 0 + type 3) wire form of one message as shared [`Bytes`] parts.
//!
//! # Tricky parts
//! - **Basic header** (§5.3.1.1): csid 2..=63 in one byte; 64..=319 as `0` + one byte
//!   (`csid - 64`); 64..=65599 as `1` + a 16-bit `csid - 64` in *little-endian* order (the only
//!   little-endian field besides the message stream id).
//! - **Extended timestamp** (§5.3.1.3): a timestamp field of `0xFFFFFF` means the real value
//!   follows as 4 bytes. The spec leaves type 3 chunks ambiguous; ffmpeg and librtmp (and
//!   so the many encoders built on it) repeat the 4 bytes on every type 3 chunk that follows a
//!   header which used them, so the decoder *always* expects them there and the encoder always writes them. (Some
//!   servers guess whether the bytes are present by comparing them with the expected value;
//!   that guess is ambiguous whenever the payload happens to match, so we do not make it.)
//! - **The timestamp "delta" a type 3 chunk reuses** (§5.3.1.2.4): when a type 3 chunk starts
//!   a *new* message, its timestamp is the previous one plus the last timestamp field seen on
//!   that chunk stream. After a type 0 header that field is the absolute timestamp; ffmpeg
//!   reads it that way (it reuses the last 24-bit field whatever the header type), and so, to
//!   our reading, do nginx-rtmp and SRS, so the decoder does too. librtmp disagrees, so
//!   the encoder never emits a new-message type 3 directly after a type 0 header (it writes a
//!   type 2 instead), which every reader agrees on.
//! - **Wrapping**: timestamps are 32-bit and deltas are added with wrapping arithmetic. The
//!   encoder, like ffmpeg, falls back to a type 0 header whenever a timestamp goes backwards
//!   (including a wrap), because some players mishandle huge deltas.
//! - **Set Chunk Size and Abort** (§5.4.1, §5.4.2) change chunk-layer state, so the decoder
//!   applies them itself before handing them up; the new chunk size applies to every chunk
//!   after the message that carried it, on every chunk stream.
//! - **Hostile peers**: the announced message length is checked against a limit before any
//!   buffer is allocated, and a multi-chunk message's buffer grows with the bytes that actually
//!   arrive (starting at 64 KiB at most) rather than being reserved up front, so a
//!   16 MiB length announced in a 12-byte chunk costs 64 KiB, not 16 MiB. The number of chunk
//!   streams with state is capped too.
//!
//! # Zero copy
//! A message that fits in one chunk is split off the input buffer and frozen, sharing its
//! allocation, unless it is small next to that allocation (under 1/[`SHARE_MIN_FRACTION`]
//! of it): a shared slice keeps the whole read buffer alive, so a 6-byte frame held in a GOP
//! cache would pin a 64 KiB buffer. Small messages are copied out instead, so what a held
//! message pins is at most [`SHARE_MIN_FRACTION`] times its size; normal-size frames keep
//! sharing. The decoder sees only the caller's `BytesMut`, so it estimates the allocation
//! from the addresses it has seen of it ([`BufferSpan`]). A multi-chunk message is reassembled into one buffer that never
//! grows past the message length (allocated whole when the length is at most
//! 64 KiB, grown geometrically as chunks arrive above that) and frozen.
//! [`encode_shared`] slices the message payload instead of copying it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

/// The chunk size both directions start with (§5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;

/// The 24-bit timestamp value that says "the real timestamp follows in 4 bytes" (§5.3.1.3).
const EXTENDED_TIMESTAMP_MARKER: u32 = 0x00FF_FFFF;

/// Largest payload the 24-bit message length field can describe.
const MAX_MESSAGE_LENGTH_FIELD: u32 = 0x00FF_FFFF;

/// Largest value a Set Chunk Size message can carry: its top bit must be zero (§5.4.1).
const MAX_CHUNK_SIZE_FIELD: u32 = 0x7FFF_FFFF;

/// The smallest chunk stream id a basic header can carry (§5.3.1.1): 0 and 1 are escapes.
const MIN_CSID: u32 = 2;

/// At most this many bytes are reserved for a multi-chunk message before its later chunks
/// arrive. Real frames above this size are rare enough that growing for them is cheap, and it
/// stops a peer from making us reserve a 16 MiB buffer per chunk stream with a few bytes.
const PREALLOC_LIMIT: usize = 64 * 1024;

/// A single-chunk message shares the read buffer only when it is at least this fraction of the
/// buffer's allocation; a smaller one is copied out (see the module docs, "Zero copy").
pub const SHARE_MIN_FRACTION: usize = 8;

/// Limits the [`ChunkDecoder`] enforces on what a peer may make it hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkDecoderLimits {
    /// Largest message payload accepted, in bytes; a header announcing more is an error before
    /// anything is allocated. Default 16 MiB (which the 24-bit length field cannot exceed).
    pub max_message_size: u32,
    /// Largest chunk size a peer's Set Chunk Size may select, in bytes; more is an error.
    /// Default 16 MiB.
    pub max_chunk_size: u32,
    /// Most distinct chunk stream ids the decoder keeps state for. Real clients use a handful;
    /// the cap bounds the per-connection state a peer can create. Default 64.
    pub max_chunk_streams: usize,
    /// Most bytes all partially reassembled messages together may hold (their buffers'
    /// capacity, summed over chunk streams). Without it a peer holds `max_chunk_streams`
    /// messages of `max_message_size` open at once by never sending their last chunk.
    /// Default 32 MiB (two messages of the default maximum size).
    pub max_partial_bytes: usize,
}

impl Default for ChunkDecoderLimits {
    fn default() -> Self {
        Self {
            max_message_size: 16 * 1024 * 1024,
            max_chunk_size: 16 * 1024 * 1024,
            max_chunk_streams: 64,
            max_partial_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Why the chunk stream from a peer cannot be decoded. Every variant is fatal for the
/// connection: the decoder's state is unspecified afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The first chunk seen on a chunk stream was not type 0, so there is no previous header
    /// to take the omitted fields from.
    #[error("chunk stream {csid} starts with a fmt {fmt} chunk but has no previous header")]
    NoPreviousHeader {
        /// The chunk stream id.
        csid: u32,
        /// The chunk's header format (1, 2 or 3).
        fmt: u8,
    },
    /// A message header announced a payload longer than
    /// [`ChunkDecoderLimits::max_message_size`].
    #[error("message of {length} bytes on chunk stream {csid} exceeds the {max}-byte limit")]
    MessageTooLarge {
        /// The chunk stream id.
        csid: u32,
        /// The announced payload length.
        length: u32,
        /// The configured limit.
        max: u32,
    },
    /// A Set Chunk Size message carried 0 or a value with the top bit set (§5.4.1).
    #[error("invalid Set Chunk Size value {0:#x}")]
    InvalidChunkSize(u32),
    /// A Set Chunk Size message asked for more than [`ChunkDecoderLimits::max_chunk_size`].
    #[error("Set Chunk Size {size} exceeds the {max}-byte limit")]
    ChunkSizeTooLarge {
        /// The requested chunk size.
        size: u32,
        /// The configured limit.
        max: u32,
    },
    /// The peer used more distinct chunk stream ids than
    /// [`ChunkDecoderLimits::max_chunk_streams`].
    #[error("peer opened more than {max} chunk streams")]
    TooManyChunkStreams {
        /// The configured limit.
        max: usize,
    },
    /// Partially reassembled messages would hold more than
    /// [`ChunkDecoderLimits::max_partial_bytes`] together.
    #[error("partial messages would hold {held} bytes, over the {max}-byte budget")]
    PartialBytesOverBudget {
        /// What the partial messages would hold with this chunk.
        held: usize,
        /// The configured limit.
        max: usize,
    },
    /// A Set Chunk Size or Abort message had fewer than the 4 payload bytes it needs.
    #[error("message type {message_type} needs a 4-byte payload, got {length} bytes")]
    TruncatedControl {
        /// The message type id (1 or 2).
        message_type: u8,
        /// The payload length received.
        length: usize,
    },
}

impl ChunkError {
    /// A short static name for the error, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChunkError::NoPreviousHeader { .. } => "no_previous_header",
            ChunkError::MessageTooLarge { .. } => "message_too_large",
            ChunkError::InvalidChunkSize(_) => "invalid_chunk_size",
            ChunkError::ChunkSizeTooLarge { .. } => "chunk_size_too_large",
            ChunkError::TooManyChunkStreams { .. } => "too_many_chunk_streams",
            ChunkError::PartialBytesOverBudget { .. } => "partial_bytes_over_budget",
            ChunkError::TruncatedControl { .. } => "truncated_control",
        }
    }
}

/// Decoder-side state of one chunk stream.
#[derive(Debug)]
struct InboundStream {
    csid: u32,
    /// Absolute timestamp of the message in progress, or of the last one completed.
    timestamp: u32,
    /// The last timestamp field value read on this stream (fmt 0/1/2, or the extended value of
    /// a new-message fmt 3): what a fmt 3 chunk that starts a new message adds.
    delta: u32,
    /// Payload length from the last header.
    length: u32,
    message_type: MessageType,
    message_stream_id: MessageStreamId,
    /// Whether the last fmt 0/1/2 header used an extended timestamp, which means every fmt 3
    /// chunk on this stream carries the 4 extra bytes too.
    extended: bool,
    /// The message being reassembled; `Some` only between its first and last chunk.
    partial: Option<BytesMut>,
}

/// What one step of the decoder did.
enum Step {
    /// The front of the buffer is not a whole chunk yet.
    NeedMore,
    /// A chunk was consumed without completing a message.
    Consumed,
    /// A chunk was consumed and completed this message.
    Message(RtmpMessage),
}

/// The fields read from a chunk header before it is known whether the whole chunk is present.
struct ChunkHeader {
    fmt: u8,
    csid: u32,
    /// Bytes taken by the basic header, message header and extended timestamp together.
    len: usize,
    /// The timestamp field (or extended timestamp, when present); `None` for fmt 3 without an
    /// extended timestamp.
    timestamp: Option<u32>,
    /// Payload length (fmt 0 and 1 only).
    length: Option<u32>,
    /// Message type (fmt 0 and 1 only).
    message_type: Option<MessageType>,
    /// Message stream id (fmt 0 only).
    message_stream_id: Option<MessageStreamId>,
    /// Whether this header carries (fmt 0/1/2) or inherits (fmt 3) an extended timestamp.
    extended: bool,
}

/// Reassembles [`RtmpMessage`]s from the chunk stream a peer sends (§5.3).
///
/// Feed it the bytes read from the connection (after the handshake) and call
/// [`decode`](Self::decode) until it returns `Ok(None)`; unconsumed bytes stay in the buffer
/// for the next read.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: ChunkDecoderLimits,
    /// The peer's chunk size, changed by the Set Chunk Size messages it sends.
    chunk_size: u32,
    /// Per-csid state. A linear scan is faster than hashing for the handful of ids real
    /// clients use, and the list is capped by `limits.max_chunk_streams`.
    streams: Vec<InboundStream>,
    bytes_received: u64,
    /// The capacity of every `partial` buffer in `streams`, summed: what
    /// `limits.max_partial_bytes` bounds.
    partial_bytes: usize,
    /// The read buffer's allocation as seen so far, to decide whether to share or copy.
    span: BufferSpan,
}

/// The extent of the caller's read buffer allocation, estimated from addresses alone.
///
/// A `BytesMut` tells its position (`as_ptr`) and the room left after it (`capacity`), so the
/// allocation's end is `as_ptr + capacity` and stays put while the same allocation is in use
/// (advancing moves the start, not the end); its start is at most the lowest position seen
/// with that end. A new end means a new allocation. Only addresses are compared: nothing is
/// dereferenced.
#[derive(Debug, Default, Clone, Copy)]
struct BufferSpan {
    start: usize,
    end: usize,
}

impl BufferSpan {
    /// Notes where `buf` is now; returns the allocation's size as far as seen.
    fn observe(&mut self, buf: &BytesMut) -> usize {
        let start = buf.as_ptr() as usize;
        let end = start.saturating_add(buf.capacity());
        if end == self.end {
            self.start = self.start.min(start);
        } else {
            *self = BufferSpan { start, end };
        }
        self.end - self.start
    }
}

/// Takes a whole message's `take` payload bytes off the front of `buf`: shared when it is a
/// fair part of an allocation of `span` bytes, copied when it is small next to it.
fn take_payload(buf: &mut BytesMut, take: usize, span: usize) -> Bytes {
    if take.saturating_mul(SHARE_MIN_FRACTION) < span {
        let payload = Bytes::copy_from_slice(&buf[..take]);
        buf.advance(take);
        payload
    } else {
        buf.split_to(take).freeze()
    }
}

impl ChunkDecoder {
    /// A decoder at the default chunk size (128) with the given limits.
    pub fn new(limits: ChunkDecoderLimits) -> Self {
        Self {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            bytes_received: 0,
            partial_bytes: 0,
            span: BufferSpan::default(),
        }
    }

    /// Replaces the limits, for the chunks decoded from now on: a server starts a connection
    /// with tight limits and relaxes them once it knows what the peer is (a publisher). What
    /// is already held is not re-checked, so tightening only bounds further growth.
    pub fn set_limits(&mut self, limits: ChunkDecoderLimits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> ChunkDecoderLimits {
        self.limits
    }

    /// Bytes the partially reassembled messages hold now (their buffers' capacity).
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes
    }

    /// Checks that partial messages may hold `held` bytes in total.
    fn check_partial_budget(&self, held: usize) -> Result<(), ChunkError> {
        if held > self.limits.max_partial_bytes {
            return Err(ChunkError::PartialBytesOverBudget {
                held,
                max: self.limits.max_partial_bytes,
            });
        }
        Ok(())
    }

    /// The size of the caller's read buffer allocation, as far as the decoder has seen it
    /// (see [`BufferSpan`]): what a connection's read buffer holds, for memory accounting.
    pub fn input_buffer_bytes(&self) -> usize {
        self.span.end - self.span.start
    }

    /// The chunk size the peer currently uses.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Sets the incoming chunk size, as a Set Chunk Size message would (for protocols that
    /// announce it out of band, like the pull protocol's status line).
    pub fn set_chunk_size(&mut self, value: u32) -> Result<(), ChunkError> {
        if value == 0 || value > MAX_CHUNK_SIZE_FIELD {
            return Err(ChunkError::InvalidChunkSize(value));
        }
        if value > self.limits.max_chunk_size {
            return Err(ChunkError::ChunkSizeTooLarge {
                size: value,
                max: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = value;
        Ok(())
    }

    /// Total bytes consumed so far (for Acknowledgement / window accounting). Only bytes that
    /// went through this decoder count: the handshake is not included.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Parses whole chunks from the front of `buf` until one message is complete; consumes a
    /// chunk only when all of it is present; `Ok(None)` = need more input.
    ///
    /// Set Chunk Size (type 1, on any csid) and Abort (type 2) are applied to the decoder's
    /// own state before being returned.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RtmpMessage>, ChunkError> {
        self.span.observe(buf);
        loop {
            match self.step(buf)? {
                Step::NeedMore => return Ok(None),
                Step::Consumed => {}
                Step::Message(msg) => {
                    self.apply_control(&msg)?;
                    return Ok(Some(msg));
                }
            }
        }
    }

    /// Applies the chunk-layer control messages to this decoder.
    fn apply_control(&mut self, msg: &RtmpMessage) -> Result<(), ChunkError> {
        if msg.message_type != MessageType::SET_CHUNK_SIZE && msg.message_type != MessageType::ABORT
        {
            return Ok(());
        }
        let value = msg
            .payload
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(ChunkError::TruncatedControl {
                message_type: msg.message_type.0,
                length: msg.payload.len(),
            })?;
        if msg.message_type == MessageType::SET_CHUNK_SIZE {
            self.set_chunk_size(value)?;
        } else if let Some(stream) = self.streams.iter_mut().find(|s| s.csid == value) {
            // The header state stays: only the partial payload is discarded (§5.4.2).
            if let Some(partial) = stream.partial.take() {
                self.partial_bytes -= partial.capacity();
            }
        }
        Ok(())
    }

    /// Reads the header at the front of `buf` without consuming anything. `Ok(None)` when the
    /// header itself is incomplete.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<ChunkHeader>, ChunkError> {
        let Some((fmt, csid, basic_len)) = parse_basic_header(buf) else {
            return Ok(None);
        };
        let prev = self.streams.iter().find(|s| s.csid == csid);
        let prev_extended = match prev {
            Some(stream) => stream.extended,
            None if fmt != 0 => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
            None => false,
        };
        let mh_len = message_header_len(fmt);
        let Some(mh) = buf.get(basic_len..basic_len + mh_len) else {
            return Ok(None);
        };
        let mut header = ChunkHeader {
            fmt,
            csid,
            len: basic_len + mh_len,
            timestamp: None,
            length: None,
            message_type: None,
            message_stream_id: None,
            extended: prev_extended,
        };
        if let Some(ts) = mh.get(0..3) {
            let field = read_u24(ts);
            header.extended = field == EXTENDED_TIMESTAMP_MARKER;
            header.timestamp = Some(field);
        }
        if let (Some(len), Some(&ty)) = (mh.get(3..6), mh.get(6)) {
            header.length = Some(read_u24(len));
            header.message_type = Some(MessageType(ty));
        }
        if let Some(id) = mh.get(7..11) {
            header.message_stream_id = Some(MessageStreamId(u32::from_le_bytes([
                id[0], id[1], id[2], id[3],
            ])));
        }
        if header.extended {
            let Some(ext) = buf.get(header.len..header.len + 4) else {
                return Ok(None);
            };
            header.timestamp = Some(u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]));
            header.len += 4;
        }
        Ok(Some(header))
    }

    /// Consumes one whole chunk from the front of `buf`, if it is all there.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkError> {
        let Some(header) = self.parse_header(buf)? else {
            return Ok(Step::NeedMore);
        };
        let chunk_size = self.chunk_size as usize;
        let index = self.streams.iter().position(|s| s.csid == header.csid);

        // A fmt 3 chunk continues the message in progress, if there is one.
        if header.fmt == 3 {
            if let Some(stream) = index.and_then(|i| self.streams.get_mut(i)) {
                if let Some(partial) = stream.partial.as_mut() {
                    let remaining = (stream.length as usize).saturating_sub(partial.len());
                    let take = remaining.min(chunk_size);
                    if buf.len() < header.len + take {
                        return Ok(Step::NeedMore);
                    }
                    let old_capacity = partial.capacity();
                    let new_capacity =
                        grown_capacity(partial, partial.len() + take, stream.length as usize);
                    let held = self.partial_bytes - old_capacity + new_capacity;
                    if held > self.limits.max_partial_bytes {
                        return Err(ChunkError::PartialBytesOverBudget {
                            held,
                            max: self.limits.max_partial_bytes,
                        });
                    }
                    buf.advance(header.len);
                    append_growing(partial, &buf[..take], stream.length as usize);
                    buf.advance(take);
                    self.bytes_received += (header.len + take) as u64;
                    if partial.len() < stream.length as usize {
                        self.partial_bytes = self.partial_bytes - old_capacity + partial.capacity();
                        return Ok(Step::Consumed);
                    }
                    self.partial_bytes -= old_capacity;
                    let payload = stream.partial.take().unwrap_or_default().freeze();
                    return Ok(Step::Message(RtmpMessage {
                        chunk_stream_id: ChunkStreamId(stream.csid),
                        timestamp: stream.timestamp,
                        message_type: stream.message_type,
                        message_stream_id: stream.message_stream_id,
                        payload,
                    }));
                }
            }
        }

        // Otherwise the chunk starts a new message: work out its header from the fields present
        // and the previous header on this chunk stream.
        let prev = index.and_then(|i| self.streams.get(i));
        let (timestamp, delta, length, message_type, message_stream_id) = match (header.fmt, prev) {
            (0, _) => {
                let ts = header.timestamp.unwrap_or(0);
                (
                    ts,
                    ts,
                    header.length.unwrap_or(0),
                    header.message_type.unwrap_or(MessageType(0)),
                    header.message_stream_id.unwrap_or_default(),
                )
            }
            (fmt, Some(prev)) => {
                let delta = header.timestamp.unwrap_or(prev.delta);
                let (length, message_type) = if fmt == 1 {
                    (
                        header.length.unwrap_or(prev.length),
                        header.message_type.unwrap_or(prev.message_type),
                    )
                } else {
                    (prev.length, prev.message_type)
                };
                (
                    prev.timestamp.wrapping_add(delta),
                    delta,
                    length,
                    message_type,
                    prev.message_stream_id,
                )
            }
            (fmt, None) => {
                // parse_header already rejects this; kept so no path can panic.
                return Err(ChunkError::NoPreviousHeader {
                    csid: header.csid,
                    fmt,
                });
            }
        };
        if length > self.limits.max_message_size {
            return Err(ChunkError::MessageTooLarge {
                csid: header.csid,
                length,
                max: self.limits.max_message_size,
            });
        }
        if index.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ChunkError::TooManyChunkStreams {
                max: self.limits.max_chunk_streams,
            });
        }
        let length_usize = length as usize;
        let take = length_usize.min(chunk_size);
        // A fmt 0/1/2 header mid-message drops the unfinished message (below): its buffer no
        // longer counts against the budget, the new one's does.
        let dropped = index
            .and_then(|i| self.streams.get(i))
            .and_then(|s| s.partial.as_ref())
            .map_or(0, BytesMut::capacity);
        let reserve = if take == length_usize {
            0
        } else {
            length_usize.min(PREALLOC_LIMIT.max(take))
        };
        self.check_partial_budget(self.partial_bytes - dropped + reserve)?;
        if buf.len() < header.len + take {
            return Ok(Step::NeedMore);
        }

        // The whole chunk is present: commit. A fmt 0/1/2 header in the middle of a message is
        // a peer bug; like ffmpeg we drop the unfinished message and start the new one rather
        // than end the connection.
        buf.advance(header.len);
        self.bytes_received += (header.len + take) as u64;
        let mut state = InboundStream {
            csid: header.csid,
            timestamp,
            delta,
            length,
            message_type,
            message_stream_id,
            extended: header.extended,
            partial: None,
        };
        let step = if take == length_usize {
            let span = self.span.observe(buf);
            Step::Message(RtmpMessage {
                chunk_stream_id: ChunkStreamId(header.csid),
                timestamp,
                message_type,
                message_stream_id,
                payload: take_payload(buf, take, span),
            })
        } else {
            let mut partial = BytesMut::with_capacity(reserve);
            partial.extend_from_slice(&buf[..take]);
            buf.advance(take);
            state.partial = Some(partial);
            Step::Consumed
        };
        self.partial_bytes =
            self.partial_bytes - dropped + state.partial.as_ref().map_or(0, BytesMut::capacity);
        match index.and_then(|i| self.streams.get_mut(i)) {
            Some(slot) => *slot = state,
            None => self.streams.push(state),
        }
        Ok(step)
    }
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::new(ChunkDecoderLimits::default())
    }
}

/// Appends `data` to a message buffer whose final size is `total`, growing it geometrically
/// but never beyond `total`, so the frozen message holds no slack.
fn append_growing(partial: &mut BytesMut, data: &[u8], total: usize) {
    let needed = partial.len() + data.len();
    if needed > partial.capacity() {
        let new_cap = grown_capacity(partial, needed, total);
        // A fresh exact-size buffer: BytesMut::reserve would round up past `total`.
        let mut grown = BytesMut::with_capacity(new_cap);
        grown.extend_from_slice(partial);
        *partial = grown;
    }
    partial.extend_from_slice(data);
}

/// The capacity [`append_growing`] gives `partial` so that it holds `needed` bytes of a
/// message of `total` bytes: unchanged when it fits, else doubled (but never past `total`).
fn grown_capacity(partial: &BytesMut, needed: usize, total: usize) -> usize {
    if needed <= partial.capacity() {
        return partial.capacity();
    }
    total.min(needed.max(partial.capacity().saturating_mul(2)))
}

/// Reads a basic header: `(fmt, csid, length in bytes)`, or `None` if incomplete.
fn parse_basic_header(buf: &[u8]) -> Option<(u8, u32, usize)> {
    let first = *buf.first()?;
    let fmt = first >> 6;
    match first & 0x3F {
        0 => {
            let b1 = *buf.get(1)?;
            Some((fmt, 64 + u32::from(b1), 2))
        }
        1 => {
            let b1 = *buf.get(1)?;
            let b2 = *buf.get(2)?;
            // Little-endian 16-bit value, unlike everything else in the header.
            Some((fmt, 64 + u32::from(b1) + (u32::from(b2) << 8), 3))
        }
        id => Some((fmt, u32::from(id), 1)),
    }
}

fn read_u24(b: &[u8]) -> u32 {
    match b {
        [a, b, c, ..] => u32::from_be_bytes([0, *a, *b, *c]),
        _ => 0,
    }
}

fn message_header_len(fmt: u8) -> usize {
    match fmt {
        0 => 11,
        1 => 7,
        2 => 3,
        _ => 0,
    }
}

/// Length of the basic header that carries `csid`.
fn basic_header_len(csid: u32) -> usize {
    if csid < 64 {
        1
    } else if csid < 320 {
        2
    } else {
        3
    }
}

/// Keeps a caller-supplied csid inside the range a basic header can express. Out-of-range ids
/// are a bug in our own code, never peer input.
fn clamp_csid(csid: ChunkStreamId) -> u32 {
    debug_assert!(
        (MIN_CSID..=ChunkStreamId::MAX).contains(&csid.0),
        "chunk stream id {} out of range",
        csid.0
    );
    csid.0.clamp(MIN_CSID, ChunkStreamId::MAX)
}

fn put_basic_header(out: &mut impl BufMut, fmt: u8, csid: u32) {
    let fmt_bits = fmt << 6;
    if csid < 64 {
        out.put_u8(fmt_bits | csid as u8);
    } else if csid < 320 {
        out.put_u8(fmt_bits);
        out.put_u8((csid - 64) as u8);
    } else {
        out.put_u8(fmt_bits | 1);
        out.put_u16_le((csid - 64) as u16);
    }
}

fn put_u24(out: &mut impl BufMut, value: u32) {
    out.put_slice(&value.to_be_bytes()[1..]);
}

/// Writes a timestamp field: the value itself, or the marker when it needs the extended form.
fn put_timestamp_field(out: &mut impl BufMut, value: u32) {
    put_u24(out, value.min(EXTENDED_TIMESTAMP_MARKER));
}

/// Whether a timestamp field value needs the 4-byte extended form. `0xFFFFFF` itself does,
/// since in the 24-bit field it would read as the marker.
fn needs_extended(value: u32) -> bool {
    value >= EXTENDED_TIMESTAMP_MARKER
}

/// The message length as the 24-bit field, or `None` if it does not fit (a caller bug).
fn message_length(msg: &RtmpMessage) -> Option<u32> {
    let length = u32::try_from(msg.payload.len())
        .ok()
        .filter(|&l| l <= MAX_MESSAGE_LENGTH_FIELD);
    debug_assert!(
        length.is_some(),
        "RTMP payload of {} bytes exceeds the 24-bit length field",
        msg.payload.len()
    );
    length
}

/// Encoder-side state of one chunk stream: the header of the last message sent on it.
#[derive(Debug)]
struct OutboundStream {
    csid: u32,
    timestamp: u32,
    /// The delta the last fmt 1/2/3 header used; `None` after a fmt 0 header, so that a fmt 3
    /// new message never follows a fmt 0 (readers disagree on what it would mean).
    delta: Option<u32>,
    length: u32,
    message_type: MessageType,
    message_stream_id: MessageStreamId,
}

/// Splits [`RtmpMessage`]s into chunks for one connection's outbound direction (§5.3),
/// compressing headers against the previous message on the same chunk stream.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    /// Per-csid header state; our own code picks the csids, so the list stays short.
    streams: Vec<OutboundStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// An encoder at the default chunk size (128).
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
        }
    }

    /// The chunk size messages are currently split at.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Appends the chunked message, compressing headers (fmt 1/2/3) against the previous
    /// message on the same chunk stream id. If `msg` is a Set Chunk Size message, the new size
    /// applies to messages encoded after it.
    ///
    /// The caller must use a chunk stream id in 2..=65599 (others are clamped, and assert in
    /// debug builds) and a payload of at most 0xFFFFFF bytes (a longer one cannot be expressed
    /// in RTMP; it is dropped, and asserts in debug builds).
    pub fn encode(&mut self, msg: &RtmpMessage, out: &mut BytesMut) {
        let Some(length) = message_length(msg) else {
            return;
        };
        let csid = clamp_csid(msg.chunk_stream_id);
        let index = self.streams.iter().position(|s| s.csid == csid);

        // Pick the most compact header every reader agrees on (see the module docs).
        let (fmt, field, delta) = match index.and_then(|i| self.streams.get(i)) {
            Some(prev)
                if prev.message_stream_id == msg.message_stream_id
                    && msg.timestamp >= prev.timestamp =>
            {
                let delta = msg.timestamp - prev.timestamp;
                let fmt = if prev.length != length || prev.message_type != msg.message_type {
                    1
                } else if prev.delta == Some(delta) {
                    3
                } else {
                    2
                };
                (fmt, delta, Some(delta))
            }
            _ => (0, msg.timestamp, None),
        };

        let extended = needs_extended(field);
        let basic_len = basic_header_len(csid);
        let continuation_len = basic_len + if extended { 4 } else { 0 };
        let chunk_size = self.chunk_size as usize;
        let chunks = msg.payload.len().div_ceil(chunk_size).max(1);
        out.reserve(
            continuation_len
                + message_header_len(fmt)
                + msg.payload.len()
                + (chunks - 1) * continuation_len,
        );

        put_basic_header(out, fmt, csid);
        if fmt <= 2 {
            put_timestamp_field(out, field);
        }
        if fmt <= 1 {
            put_u24(out, length);
            out.put_u8(msg.message_type.0);
        }
        if fmt == 0 {
            out.put_u32_le(msg.message_stream_id.0);
        }
        if extended {
            out.put_u32(field);
        }
        for (i, piece) in msg.payload.chunks(chunk_size).enumerate() {
            if i > 0 {
                put_basic_header(out, 3, csid);
                if extended {
                    out.put_u32(field);
                }
            }
            out.put_slice(piece);
        }

        let state = OutboundStream {
            csid,
            timestamp: msg.timestamp,
            delta,
            length,
            message_type: msg.message_type,
            message_stream_id: msg.message_stream_id,
        };
        match index.and_then(|i| self.streams.get_mut(i)) {
            Some(slot) => *slot = state,
            None => self.streams.push(state),
        }

        if msg.message_type == MessageType::SET_CHUNK_SIZE {
            if let Some(b) = msg.payload.get(..4) {
                let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                debug_assert!(
                    (1..=MAX_CHUNK_SIZE_FIELD).contains(&size),
                    "invalid chunk size {size}"
                );
                if (1..=MAX_CHUNK_SIZE_FIELD).contains(&size) {
                    self.chunk_size = size;
                }
            }
        }
    }

    /// Forget the header state of one chunk stream so its next message goes out with fmt 0
    /// (the caller wrote pre-encoded frames on it).
    pub fn reset_stream(&mut self, csid: ChunkStreamId) {
        self.streams.retain(|s| s.csid != csid.0);
    }
}

/// Encode-once framing for fan-out: the full chunked wire form of `msg` with a type-0 first
/// header and type-3 continuation headers, as a list of Bytes: `[header0, payload slice,
/// header3, payload slice, ...]`. Payload parts are `Bytes::slice` of `msg.payload` (no
/// payload copy); the type-3 header (1-3 bytes basic header + 4-byte extended timestamp when
/// used) is one Bytes cloned for every continuation. Appends to `parts`; returns the total
/// byte length.
///
/// Sharing one encoding between many connections is the deliberate exception to "each
/// connection chunks its own messages". It is valid because a type 0 header depends on no
/// previous header, and media goes to every player on the same fixed chunk stream ids and
/// message stream id with one node-wide chunk size. A connection that mixes these parts with
/// its own [`ChunkEncoder`] output on the same csid must call
/// [`ChunkEncoder::reset_stream`] for it, since the encoder's idea of the previous header is
/// then stale.
///
/// A `chunk_size` of 0 is treated as 1. Like [`ChunkEncoder::encode`], an out-of-range csid
/// is clamped and a payload over 0xFFFFFF bytes is dropped (returning 0).
pub fn encode_shared(msg: &RtmpMessage, chunk_size: u32, parts: &mut Vec<Bytes>) -> usize {
    let Some(length) = message_length(msg) else {
        return 0;
    };
    let csid = clamp_csid(msg.chunk_stream_id);
    let chunk_size = chunk_size.max(1) as usize;
    let extended = needs_extended(msg.timestamp);

    let mut header0 = BytesMut::with_capacity(3 + 11 + 4);
    put_basic_header(&mut header0, 0, csid);
    put_timestamp_field(&mut header0, msg.timestamp);
    put_u24(&mut header0, length);
    header0.put_u8(msg.message_type.0);
    header0.put_u32_le(msg.message_stream_id.0);
    if extended {
        header0.put_u32(msg.timestamp);
    }
    let mut total = header0.len();
    parts.push(header0.freeze());

    let payload_len = msg.payload.len();
    let first = payload_len.min(chunk_size);
    if first > 0 {
        parts.push(msg.payload.slice(..first));
        total += first;
    }
    if payload_len > first {
        let mut header3 = BytesMut::with_capacity(3 + 4);
        put_basic_header(&mut header3, 3, csid);
        if extended {
            header3.put_u32(msg.timestamp);
        }
        let header3 = header3.freeze();
        let mut offset = first;
        while offset < payload_len {
            let end = payload_len.min(offset + chunk_size);
            total += header3.len() + (end - offset);
            parts.push(header3.clone());
            parts.push(msg.payload.slice(offset..end));
            offset = end;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message(csid: u32, timestamp: u32, ty: u8, msid: u32, payload: Vec<u8>) -> RtmpMessage {
        RtmpMessage {
            chunk_stream_id: ChunkStreamId(csid),
            timestamp,
            message_type: MessageType(ty),
            message_stream_id: MessageStreamId(msid),
            payload: Bytes::from(payload),
        }
    }

    /// A recognisable payload: `len` bytes counting up from `seed`.
    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    fn set_chunk_size(size: u32) -> RtmpMessage {
        message(2, 0, 1, 0, size.to_be_bytes().to_vec())
    }

    /// Decodes everything in `bytes`, asserting it is all consumed.
    fn decode_all(decoder: &mut ChunkDecoder, bytes: &[u8]) -> Vec<RtmpMessage> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(msg) = decoder.decode(&mut buf).expect("valid chunk stream") {
            out.push(msg);
        }
        assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
        out
    }

    fn decode_err(decoder: &mut ChunkDecoder, bytes: &[u8]) -> ChunkError {
        let mut buf = BytesMut::from(bytes);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("expected an error, decoder wants more input"),
                Err(e) => return e,
            }
        }
    }

    fn encode_all(encoder: &mut ChunkEncoder, msgs: &[RtmpMessage]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for msg in msgs {
            encoder.encode(msg, &mut out);
        }
        out.to_vec()
    }

    fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    // §5.3.2.1 example 1: four 32-byte audio messages on one chunk stream, 20 ms apart:
    // fmt 0, fmt 2 (delta 20), then fmt 3 twice (reusing the delta).
    fn spec_example_1() -> (Vec<u8>, Vec<RtmpMessage>) {
        let p = |s| pattern(s, 32);
        let bytes = concat(&[
            vec![
                0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x20, 0x08, 0x39, 0x30, 0x00, 0x00,
            ],
            p(1),
            vec![0x83, 0x00, 0x00, 0x14],
            p(2),
            vec![0xC3],
            p(3),
            vec![0xC3],
            p(4),
        ]);
        let msgs = vec![
            message(3, 1000, 8, 12345, p(1)),
            message(3, 1020, 8, 12345, p(2)),
            message(3, 1040, 8, 12345, p(3)),
            message(3, 1060, 8, 12345, p(4)),
        ];
        (bytes, msgs)
    }

    // §5.3.2.2 example 2: a 307-byte video message split into 128-byte chunks.
    fn spec_example_2() -> (Vec<u8>, RtmpMessage) {
        let payload = pattern(7, 307);
        let bytes = concat(&[
            vec![
                0x04, 0x00, 0x03, 0xE8, 0x00, 0x01, 0x33, 0x09, 0x3A, 0x30, 0x00, 0x00,
            ],
            payload[..128].to_vec(),
            vec![0xC4],
            payload[128..256].to_vec(),
            vec![0xC4],
            payload[256..].to_vec(),
        ]);
        (bytes, message(4, 1000, 9, 12346, payload))
    }

    #[test]
    fn spec_example_1_decodes_and_encodes() {
        let (bytes, msgs) = spec_example_1();
        let mut decoder = ChunkDecoder::default();
        assert_eq!(decode_all(&mut decoder, &bytes), msgs);
        assert_eq!(decoder.bytes_received(), bytes.len() as u64);
        assert_eq!(encode_all(&mut ChunkEncoder::new(), &msgs), bytes);
    }

    #[test]
    fn spec_example_2_decodes_and_encodes() {
        let (bytes, msg) = spec_example_2();
        assert_eq!(bytes.len(), 12 + 128 + 1 + 128 + 1 + 51);
        let mut decoder = ChunkDecoder::default();
        assert_eq!(decode_all(&mut decoder, &bytes), vec![msg.clone()]);
        assert_eq!(
            encode_all(&mut ChunkEncoder::new(), std::slice::from_ref(&msg)),
            bytes
        );

        let mut parts = Vec::new();
        let total = encode_shared(&msg, 128, &mut parts);
        assert_eq!(total, bytes.len());
        assert_eq!(parts.len(), 6);
        assert_eq!(parts.concat(), bytes);
        // The continuation header is one allocation shared by every continuation, and the
        // payload parts point into the message's own buffer.
        assert_eq!(parts[2].as_ptr(), parts[4].as_ptr());
        assert_eq!(parts[1].as_ptr(), msg.payload.as_ptr());
        assert_eq!(parts[3].as_ptr(), msg.payload[128..].as_ptr());
    }

    #[test]
    fn input_fed_byte_by_byte_is_consumed_a_whole_chunk_at_a_time() {
        let (bytes, msg) = spec_example_2();
        let mut decoder = ChunkDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for (i, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            if let Some(m) = decoder.decode(&mut buf).expect("valid") {
                got.push((i, m));
            }
            // Consumption only ever happens at chunk boundaries.
            assert!(
                [0, 140, 269, 321].contains(&decoder.bytes_received()),
                "consumed {} after byte {i}",
                decoder.bytes_received()
            );
            assert_eq!(buf.len() as u64, (i + 1) as u64 - decoder.bytes_received());
        }
        assert_eq!(got, vec![(bytes.len() - 1, msg)]);
    }

    #[test]
    fn single_chunk_message_shares_the_input_buffer() {
        let (bytes, _) = spec_example_1();
        let mut buf = BytesMut::from(&bytes[..44]);
        let base = buf.as_ptr();
        let msg = ChunkDecoder::default()
            .decode(&mut buf)
            .expect("valid")
            .expect("complete");
        assert_eq!(msg.payload.as_ptr(), base.wrapping_add(12));
    }

    /// A 6-byte video message (one chunk) inside a read buffer of `capacity` bytes, after
    /// `pad` bytes of a message nobody keeps.
    fn small_after_padding(capacity: usize, pad: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(capacity);
        let mut encoder = ChunkEncoder::new();
        if pad > 0 {
            // Chunk size first so the padding is one chunk too.
            encoder.encode(&set_chunk_size(1 << 20), &mut buf);
            encoder.encode(&message(3, 0, 18, 1, vec![0; pad]), &mut buf);
        }
        encoder.encode(&message(6, 40, 9, 1, vec![0x27, 1, 0, 0, 0, 7]), &mut buf);
        buf
    }

    fn decode_last(decoder: &mut ChunkDecoder, buf: &mut BytesMut) -> RtmpMessage {
        let mut last = None;
        while let Some(msg) = decoder.decode(buf).expect("valid") {
            last = Some(msg);
        }
        last.expect("a message")
    }

    fn shares(buf_start: *const u8, capacity: usize, payload: &Bytes) -> bool {
        let at = payload.as_ptr() as usize;
        let start = buf_start as usize;
        at >= start && at < start + capacity
    }

    #[test]
    fn a_small_message_is_copied_out_of_a_large_read_buffer() {
        // Alone in a fresh 64 KiB buffer: copied, so holding it does not pin 64 KiB.
        let mut buf = small_after_padding(64 << 10, 0);
        let base = buf.as_ptr();
        let msg = decode_last(&mut ChunkDecoder::default(), &mut buf);
        assert_eq!(&msg.payload[..], &[0x27, 1, 0, 0, 0, 7]);
        assert!(!shares(base, 64 << 10, &msg.payload));

        // At the end of a buffer that a discarded 60 KiB message filled: still copied, the
        // decoder remembers where the allocation began.
        let mut buf = small_after_padding(64 << 10, 60 << 10);
        let base = buf.as_ptr();
        let msg = decode_last(&mut ChunkDecoder::default(), &mut buf);
        assert_eq!(msg.payload.len(), 6);
        assert!(!shares(base, 64 << 10, &msg.payload));
    }

    #[test]
    fn a_message_of_a_fair_share_of_the_read_buffer_is_shared() {
        let payload = pattern(3, 12 << 10);
        let mut buf = BytesMut::with_capacity(64 << 10);
        let mut encoder = ChunkEncoder::new();
        encoder.encode(&set_chunk_size(1 << 20), &mut buf);
        encoder.encode(&message(6, 40, 9, 1, payload.clone()), &mut buf);
        let base = buf.as_ptr();
        let msg = decode_last(&mut ChunkDecoder::default(), &mut buf);
        assert_eq!(&msg.payload[..], &payload[..]);
        assert!(shares(base, 64 << 10, &msg.payload));
    }

    /// What ffmpeg sends when it starts publishing: Set Chunk Size 4096 on csid 2, then a
    /// 10000-byte keyframe on its video chunk stream, then a smaller frame 33 ms later (fmt 1).
    #[test]
    fn ffmpeg_style_set_chunk_size_then_large_video() {
        let key = pattern(0x10, 10_000);
        let inter = pattern(0x20, 500);
        let bytes = concat(&[
            vec![
                0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x10, 0x00,
            ],
            vec![
                0x06, 0x00, 0x00, 0x00, 0x00, 0x27, 0x10, 0x09, 0x01, 0x00, 0x00, 0x00,
            ],
            key[..4096].to_vec(),
            vec![0xC6],
            key[4096..8192].to_vec(),
            vec![0xC6],
            key[8192..].to_vec(),
            vec![0x46, 0x00, 0x00, 0x21, 0x00, 0x01, 0xF4, 0x09],
            inter.clone(),
        ]);
        let msgs = vec![
            set_chunk_size(4096),
            message(6, 0, 9, 1, key),
            message(6, 33, 9, 1, inter),
        ];
        let mut decoder = ChunkDecoder::default();
        assert_eq!(decode_all(&mut decoder, &bytes), msgs);
        assert_eq!(decoder.chunk_size(), 4096);
        assert_eq!(decoder.bytes_received(), bytes.len() as u64);

        let mut encoder = ChunkEncoder::new();
        assert_eq!(encode_all(&mut encoder, &msgs), bytes);
        assert_eq!(encoder.chunk_size(), 4096);
    }

    #[test]
    fn multi_byte_basic_headers() {
        let cases: [(u32, &[u8], &[u8]); 5] = [
            (63, &[0x3F], &[0xFF]),
            (64, &[0x00, 0x00], &[0xC0, 0x00]),
            (319, &[0x00, 0xFF], &[0xC0, 0xFF]),
            (320, &[0x01, 0x00, 0x01], &[0xC1, 0x00, 0x01]),
            (65599, &[0x01, 0xFF, 0xFF], &[0xC1, 0xFF, 0xFF]),
        ];
        for (csid, fmt0, fmt3) in cases {
            let payload = pattern(csid as u8, 200);
            let bytes = concat(&[
                fmt0.to_vec(),
                vec![
                    0x00, 0x00, 0x05, 0x00, 0x00, 0xC8, 0x08, 0x01, 0x00, 0x00, 0x00,
                ],
                payload[..128].to_vec(),
                fmt3.to_vec(),
                payload[128..].to_vec(),
            ]);
            let msg = message(csid, 5, 8, 1, payload);
            let mut decoder = ChunkDecoder::default();
            assert_eq!(
                decode_all(&mut decoder, &bytes),
                vec![msg.clone()],
                "csid {csid}"
            );
            assert_eq!(
                encode_all(&mut ChunkEncoder::new(), std::slice::from_ref(&msg)),
                bytes
            );
            let mut parts = Vec::new();
            encode_shared(&msg, 128, &mut parts);
            assert_eq!(parts.concat(), bytes, "csid {csid}");
        }
    }

    #[test]
    fn extended_timestamp_on_fmt0_and_its_continuations() {
        let payload = pattern(1, 200);
        let bytes = concat(&[
            vec![
                0x04, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xC8, 0x09, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00,
                0x00, 0x00,
            ],
            payload[..128].to_vec(),
            vec![0xC4, 0x01, 0x00, 0x00, 0x00],
            payload[128..].to_vec(),
        ]);
        let msg = message(4, 0x0100_0000, 9, 1, payload);
        assert_eq!(
            decode_all(&mut ChunkDecoder::default(), &bytes),
            vec![msg.clone()]
        );
        assert_eq!(
            encode_all(&mut ChunkEncoder::new(), std::slice::from_ref(&msg)),
            bytes
        );
        let mut parts = Vec::new();
        encode_shared(&msg, 128, &mut parts);
        assert_eq!(parts.concat(), bytes);
        assert_eq!(&parts[2][..], &[0xC4, 0x01, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn timestamp_0xffffff_itself_uses_the_extended_form() {
        let msg = message(4, 0x00FF_FFFF, 8, 1, vec![0xAA]);
        let bytes = encode_all(&mut ChunkEncoder::new(), std::slice::from_ref(&msg));
        assert_eq!(
            bytes,
            vec![
                0x04, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x08, 0x01, 0x00, 0x00, 0x00, 0x00, 0xFF,
                0xFF, 0xFF, 0xAA
            ]
        );
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), vec![msg]);
    }

    /// A fmt 1 header with an extended delta, then a fmt 3 chunk starting a new message: the
    /// fmt 3 chunk repeats the 4-byte delta and the timestamp advances by it again.
    #[test]
    fn extended_delta_reused_by_fmt3_new_message() {
        let bytes = concat(&[
            vec![
                0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x01, 0x00, 0x00, 0x00, 0xA0, 0xA1,
            ],
            vec![
                0x45, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x08, 0x01, 0x00, 0x00, 0x00, 0xB0,
            ],
            vec![0xC5, 0x01, 0x00, 0x00, 0x00, 0xC0],
        ]);
        let msgs = vec![
            message(5, 0, 8, 1, vec![0xA0, 0xA1]),
            message(5, 0x0100_0000, 8, 1, vec![0xB0]),
            message(5, 0x0200_0000, 8, 1, vec![0xC0]),
        ];
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), msgs);
        assert_eq!(encode_all(&mut ChunkEncoder::new(), &msgs), bytes);
    }

    #[test]
    fn timestamp_delta_wraps() {
        let bytes = [
            0x04, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x08, 0x01, 0x00, 0x00, 0x00, 0xFF, 0xFF,
            0xFF, 0xF0, 0xAA, // fmt 0, extended timestamp 0xFFFFFFF0
            0x84, 0x00, 0x00, 0x20, 0xBB, // fmt 2, delta 0x20: wraps to 0x10
            0xC4, 0xCC, // fmt 3 new message: another 0x20
        ];
        let msgs = vec![
            message(4, 0xFFFF_FFF0, 8, 1, vec![0xAA]),
            message(4, 0x10, 8, 1, vec![0xBB]),
            message(4, 0x30, 8, 1, vec![0xCC]),
        ];
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), msgs);

        // The encoder does not rely on wrapping: a timestamp going "backwards" gets fmt 0.
        let encoded = encode_all(&mut ChunkEncoder::new(), &msgs[..2]);
        assert_eq!(
            &encoded[17..],
            &[0x04, 0x00, 0x00, 0x10, 0x00, 0x00, 0x01, 0x08, 0x01, 0x00, 0x00, 0x00, 0xBB]
        );
        assert_eq!(
            decode_all(&mut ChunkDecoder::default(), &encoded),
            msgs[..2]
        );
    }

    /// After a fmt 0 header, a new-message fmt 3 chunk adds the fmt 0 timestamp field again
    /// (ffmpeg reads it that way); our encoder avoids the ambiguity by
    /// writing fmt 2 there.
    #[test]
    fn fmt3_after_fmt0_reuses_the_fmt0_timestamp_field_as_delta() {
        let bytes = [
            0x04, 0x00, 0x00, 0x64, 0x00, 0x00, 0x01, 0x08, 0x01, 0x00, 0x00, 0x00, 0xAA, 0xC4,
            0xBB,
        ];
        let msgs = vec![
            message(4, 100, 8, 1, vec![0xAA]),
            message(4, 200, 8, 1, vec![0xBB]),
        ];
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), msgs);
        let encoded = encode_all(&mut ChunkEncoder::new(), &msgs);
        assert_eq!(&encoded[13..], &[0x84, 0x00, 0x00, 0x64, 0xBB]);
    }

    #[test]
    fn zero_length_messages() {
        let bytes = [
            0x03, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x00, 0x12, 0x01, 0x00, 0x00, 0x00, 0x83, 0x00,
            0x00, 0x05, 0xC3,
        ];
        let msgs = vec![
            message(3, 10, 0x12, 1, vec![]),
            message(3, 15, 0x12, 1, vec![]),
            message(3, 20, 0x12, 1, vec![]),
        ];
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), msgs);
        assert_eq!(encode_all(&mut ChunkEncoder::new(), &msgs), bytes);
        let mut parts = Vec::new();
        assert_eq!(encode_shared(&msgs[0], 128, &mut parts), 12);
        assert_eq!(parts.len(), 1);
    }

    #[test]
    fn interleaved_chunk_streams() {
        let video = pattern(1, 300);
        let audio = pattern(2, 10);
        let bytes = concat(&[
            vec![
                0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2C, 0x09, 0x01, 0x00, 0x00, 0x00,
            ],
            video[..128].to_vec(),
            vec![
                0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x08, 0x01, 0x00, 0x00, 0x00,
            ],
            audio.clone(),
            vec![0xC4],
            video[128..256].to_vec(),
            vec![0x46, 0x00, 0x00, 0x17, 0x00, 0x00, 0x01, 0x08, 0xEE],
            vec![0xC4],
            video[256..].to_vec(),
        ]);
        let msgs = vec![
            message(6, 0, 8, 1, audio),
            message(6, 23, 8, 1, vec![0xEE]),
            message(4, 0, 9, 1, video),
        ];
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), msgs);
    }

    #[test]
    fn set_chunk_size_applies_to_partial_messages_on_other_streams() {
        let video = pattern(1, 300);
        let bytes = concat(&[
            vec![
                0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2C, 0x09, 0x01, 0x00, 0x00, 0x00,
            ],
            video[..128].to_vec(),
            vec![
                0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0xC8,
            ],
            vec![0xC4],
            video[128..].to_vec(),
        ]);
        let msgs = vec![set_chunk_size(200), message(4, 0, 9, 1, video)];
        let mut decoder = ChunkDecoder::default();
        assert_eq!(decode_all(&mut decoder, &bytes), msgs);
        assert_eq!(decoder.chunk_size(), 200);
    }

    #[test]
    fn abort_discards_the_partial_message() {
        let first = pattern(1, 128);
        let second = pattern(2, 300);
        let bytes = concat(&[
            vec![
                0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2C, 0x09, 0x01, 0x00, 0x00, 0x00,
            ],
            first,
            // Abort for chunk stream 4.
            vec![
                0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x04,
            ],
            // Abort for a chunk stream that never existed is harmless.
            vec![
                0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x09,
            ],
            // fmt 3 now starts a new message with the aborted one's header.
            vec![0xC4],
            second[..128].to_vec(),
            vec![0xC4],
            second[128..256].to_vec(),
            vec![0xC4],
            second[256..].to_vec(),
        ]);
        let msgs = vec![
            message(2, 0, 2, 0, vec![0, 0, 0, 4]),
            message(2, 0, 2, 0, vec![0, 0, 0, 9]),
            message(4, 0, 9, 1, second),
        ];
        assert_eq!(decode_all(&mut ChunkDecoder::default(), &bytes), msgs);
    }

    #[test]
    fn new_header_mid_message_drops_the_unfinished_message() {
        let bytes = concat(&[
            vec![
                0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x2C, 0x09, 0x01, 0x00, 0x00, 0x00,
            ],
            pattern(1, 128),
            vec![0x44, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x02, 0x09, 0xAA, 0xBB],
        ]);
        assert_eq!(
            decode_all(&mut ChunkDecoder::default(), &bytes),
            vec![message(4, 10, 9, 1, vec![0xAA, 0xBB])]
        );
    }

    #[test]
    fn message_too_large_is_rejected_from_the_header_alone() {
        let limits = ChunkDecoderLimits {
            max_message_size: 1000,
            ..ChunkDecoderLimits::default()
        };
        // Length 1001, and no payload bytes at all yet.
        let header = [
            0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0xE9, 0x09, 0x01, 0x00, 0x00, 0x00,
        ];
        let err = decode_err(&mut ChunkDecoder::new(limits), &header);
        assert_eq!(
            err,
            ChunkError::MessageTooLarge {
                csid: 4,
                length: 1001,
                max: 1000
            }
        );
        assert_eq!(err.as_str(), "message_too_large");
        // 1000 is fine.
        let mut ok = header;
        ok[6] = 0xE8;
        let mut buf = BytesMut::from(&ok[..]);
        assert_eq!(ChunkDecoder::new(limits).decode(&mut buf), Ok(None));
        // A fmt 1 header on an existing stream is checked too.
        let mut decoder = ChunkDecoder::new(limits);
        let err = decode_err(
            &mut decoder,
            &[
                0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x09, 0x01, 0x00, 0x00, 0x00, 0xAA, 0x44,
                0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x09,
            ],
        );
        assert!(matches!(
            err,
            ChunkError::MessageTooLarge { length: 65536, .. }
        ));
    }

    #[test]
    fn huge_announced_length_is_not_allocated_up_front() {
        let mut decoder = ChunkDecoder::default();
        let mut bytes = vec![
            0x04, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x09, 0x01, 0x00, 0x00, 0x00,
        ];
        bytes.extend(pattern(0, 128));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let capacity = |d: &ChunkDecoder| {
            d.streams
                .iter()
                .find_map(|s| s.partial.as_ref().map(BytesMut::capacity))
                .expect("partial message")
        };
        assert!(
            capacity(&decoder) <= PREALLOC_LIMIT,
            "{}",
            capacity(&decoder)
        );

        // As real data arrives the buffer grows, at most to twice what was received.
        for _ in 0..1000 {
            buf.extend_from_slice(&[0xC4]);
            buf.extend_from_slice(&pattern(1, 128));
        }
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let received = 128 * 1001;
        assert!(capacity(&decoder) >= received);
        assert!(capacity(&decoder) <= 2 * received, "{}", capacity(&decoder));
    }

    #[test]
    fn chunk_size_errors() {
        let scs = |value: [u8; 4]| {
            let mut v = vec![
                0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00,
            ];
            v.extend_from_slice(&value);
            v
        };
        assert_eq!(
            decode_err(&mut ChunkDecoder::default(), &scs([0x80, 0x00, 0x00, 0x80])),
            ChunkError::InvalidChunkSize(0x8000_0080)
        );
        assert_eq!(
            decode_err(&mut ChunkDecoder::default(), &scs([0, 0, 0, 0])),
            ChunkError::InvalidChunkSize(0)
        );
        let limits = ChunkDecoderLimits {
            max_chunk_size: 65536,
            ..ChunkDecoderLimits::default()
        };
        assert_eq!(
            decode_err(&mut ChunkDecoder::new(limits), &scs([0, 1, 0, 1])),
            ChunkError::ChunkSizeTooLarge {
                size: 65537,
                max: 65536
            }
        );
        let mut decoder = ChunkDecoder::new(limits);
        assert_eq!(
            decode_all(&mut decoder, &scs([0, 1, 0, 0])),
            vec![set_chunk_size(65536)]
        );
        assert_eq!(decoder.chunk_size(), 65536);
        // Truncated Set Chunk Size and Abort payloads.
        assert_eq!(
            decode_err(
                &mut ChunkDecoder::default(),
                &[0x02, 0, 0, 0, 0, 0, 2, 0x01, 0, 0, 0, 0, 0x10, 0x00]
            ),
            ChunkError::TruncatedControl {
                message_type: 1,
                length: 2
            }
        );
        assert_eq!(
            decode_err(
                &mut ChunkDecoder::default(),
                &[0x02, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0]
            ),
            ChunkError::TruncatedControl {
                message_type: 2,
                length: 0
            }
        );
    }

    #[test]
    fn chunk_stream_limit() {
        let limits = ChunkDecoderLimits {
            max_chunk_streams: 2,
            ..ChunkDecoderLimits::default()
        };
        let chunk = |csid: u8| vec![csid, 0, 0, 0, 0, 0, 1, 0x08, 1, 0, 0, 0, 0xAA];
        let mut decoder = ChunkDecoder::new(limits);
        let two = concat(&[chunk(3), chunk(4), chunk(3)]);
        assert_eq!(decode_all(&mut decoder, &two).len(), 3);
        assert_eq!(
            decode_err(&mut decoder, &chunk(5)),
            ChunkError::TooManyChunkStreams { max: 2 }
        );
    }

    #[test]
    fn first_chunk_on_a_stream_must_be_fmt0() {
        for (byte, fmt) in [(0x43u8, 1u8), (0x83, 2), (0xC3, 3)] {
            assert_eq!(
                decode_err(&mut ChunkDecoder::default(), &[byte]),
                ChunkError::NoPreviousHeader { csid: 3, fmt }
            );
        }
        assert_eq!(
            decode_err(&mut ChunkDecoder::default(), &[0xC1, 0x00, 0x01]),
            ChunkError::NoPreviousHeader { csid: 320, fmt: 3 }
        );
    }

    #[test]
    fn encoder_header_compression_and_reset() {
        let mut encoder = ChunkEncoder::new();
        let mut out = BytesMut::new();
        let first_byte = |encoder: &mut ChunkEncoder, out: &mut BytesMut, msg: &RtmpMessage| {
            out.clear();
            encoder.encode(msg, out);
            out[0]
        };
        let m = |ts, ty, msid, len| message(6, ts, ty, msid, pattern(0, len));
        assert_eq!(first_byte(&mut encoder, &mut out, &m(0, 9, 1, 10)), 0x06);
        assert_eq!(first_byte(&mut encoder, &mut out, &m(40, 9, 1, 12)), 0x46);
        assert_eq!(first_byte(&mut encoder, &mut out, &m(80, 9, 1, 12)), 0xC6);
        assert_eq!(first_byte(&mut encoder, &mut out, &m(90, 9, 1, 12)), 0x86);
        assert_eq!(first_byte(&mut encoder, &mut out, &m(90, 8, 1, 12)), 0x46);
        // Another message stream needs fmt 0.
        assert_eq!(first_byte(&mut encoder, &mut out, &m(90, 8, 2, 12)), 0x06);
        encoder.reset_stream(ChunkStreamId(6));
        assert_eq!(first_byte(&mut encoder, &mut out, &m(90, 8, 2, 12)), 0x06);
    }

    #[derive(Debug, Clone)]
    enum Timestamp {
        Absolute(u32),
        Delta(u32),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Message {
            csid_index: usize,
            timestamp: Timestamp,
            message_type: u8,
            message_stream_id: u32,
            len: usize,
            seed: u8,
        },
        SetChunkSize(u32),
    }

    fn arb_chunk_size() -> impl Strategy<Value = u32> {
        prop_oneof![1u32..16, 16u32..1024, 1024u32..70_000]
    }

    fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            any::<u32>().prop_map(Timestamp::Absolute),
            (0x00FF_FFF0u32..0x0100_0010).prop_map(Timestamp::Absolute),
            prop::sample::select(vec![0u32, 20, 33, 0x00FF_FFFF, 0x0100_0000])
                .prop_map(Timestamp::Delta),
            (0u32..100).prop_map(Timestamp::Delta),
        ]
    }

    fn arb_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            prop::sample::select(vec![0usize, 1, 127, 128, 129, 4096]),
            0usize..20_000,
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let message = (
            any::<usize>(),
            arb_timestamp(),
            // Every type but Set Chunk Size and Abort, which change decoder state.
            prop::sample::select(vec![3u8, 4, 5, 6, 8, 9, 0x12, 0x14, 0x16, 0xFF]),
            prop_oneof![Just(0u32), Just(1), any::<u32>()],
            arb_len(),
            any::<u8>(),
        )
            .prop_map(
                |(csid_index, timestamp, message_type, message_stream_id, len, seed)| Op::Message {
                    csid_index,
                    timestamp,
                    message_type,
                    message_stream_id,
                    len,
                    seed,
                },
            );
        prop_oneof![8 => message, 1 => arb_chunk_size().prop_map(Op::SetChunkSize)]
    }

    fn arb_csid() -> impl Strategy<Value = u32> {
        prop_oneof![3u32..10, 10u32..400, 3u32..=65599]
    }

    /// Turns generated ops into messages, tracking timestamps per chunk stream.
    fn build_messages(csids: &[u32], ops: &[Op]) -> Vec<RtmpMessage> {
        let mut last_ts = std::collections::HashMap::new();
        ops.iter()
            .map(|op| match op {
                Op::SetChunkSize(size) => set_chunk_size(*size),
                Op::Message {
                    csid_index,
                    timestamp,
                    message_type,
                    message_stream_id,
                    len,
                    seed,
                } => {
                    let csid = csids[csid_index % csids.len()];
                    let prev: u32 = last_ts.get(&csid).copied().unwrap_or(0);
                    let ts = match timestamp {
                        Timestamp::Absolute(ts) => *ts,
                        Timestamp::Delta(d) => prev.wrapping_add(*d),
                    };
                    last_ts.insert(csid, ts);
                    message(
                        csid,
                        ts,
                        *message_type,
                        *message_stream_id,
                        pattern(*seed, *len),
                    )
                }
            })
            .collect()
    }

    /// Feeds `bytes` to a decoder in pieces of the given sizes (cycled).
    fn decode_in_splits(
        decoder: &mut ChunkDecoder,
        bytes: &[u8],
        splits: &[usize],
    ) -> Vec<RtmpMessage> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut offset = 0;
        for split in splits.iter().cycle() {
            if offset >= bytes.len() {
                break;
            }
            let end = bytes.len().min(offset + split);
            buf.extend_from_slice(&bytes[offset..end]);
            offset = end;
            while let Some(msg) = decoder.decode(&mut buf).expect("valid chunk stream") {
                out.push(msg);
            }
        }
        assert!(buf.is_empty());
        out
    }

    fn arb_splits() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(prop_oneof![1usize..8, 1usize..300, 1usize..20_000], 1..16)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn encoder_decoder_round_trip(
            csids in prop::collection::vec(arb_csid(), 1..6),
            ops in prop::collection::vec(arb_op(), 1..24),
            splits in arb_splits(),
        ) {
            let msgs = build_messages(&csids, &ops);
            let mut encoder = ChunkEncoder::new();
            let bytes = encode_all(&mut encoder, &msgs);
            let mut decoder = ChunkDecoder::default();
            let decoded = decode_in_splits(&mut decoder, &bytes, &splits);
            prop_assert_eq!(decoded, msgs);
            prop_assert_eq!(decoder.chunk_size(), encoder.chunk_size());
            prop_assert_eq!(decoder.bytes_received(), bytes.len() as u64);
        }

        #[test]
        fn encode_shared_matches_a_fresh_encoder_and_decodes(
            csid in 2u32..=65599,
            timestamp in prop_oneof![any::<u32>(), 0x00FF_FFF0u32..0x0100_0010],
            message_type in any::<u8>().prop_filter("not 1/2", |t| *t != 1 && *t != 2),
            message_stream_id in any::<u32>(),
            len in arb_len(),
            chunk_size in arb_chunk_size(),
            splits in arb_splits(),
        ) {
            let msg = message(csid, timestamp, message_type, message_stream_id, pattern(3, len));
            let mut parts = Vec::new();
            let total = encode_shared(&msg, chunk_size, &mut parts);
            let shared = parts.concat();
            prop_assert_eq!(total, shared.len());

            let mut encoder = ChunkEncoder::new();
            let mut prefix = BytesMut::new();
            encoder.encode(&set_chunk_size(chunk_size), &mut prefix);
            let mut own = BytesMut::new();
            encoder.encode(&msg, &mut own);
            prop_assert_eq!(&shared[..], &own[..]);

            let mut stream = prefix.to_vec();
            stream.extend_from_slice(&shared);
            let decoded = decode_in_splits(&mut ChunkDecoder::default(), &stream, &splits);
            prop_assert_eq!(decoded, vec![set_chunk_size(chunk_size), msg]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            splits in arb_splits(),
        ) {
            let limits = ChunkDecoderLimits {
                max_message_size: 4096,
                max_chunk_size: 4096,
                max_chunk_streams: 4,
                max_partial_bytes: 8192,
            };
            feed_until_done(ChunkDecoder::new(limits), &bytes, &splits);
        }

        #[test]
        fn mutated_streams_never_panic(
            csids in prop::collection::vec(arb_csid(), 1..4),
            ops in prop::collection::vec(arb_op(), 1..8),
            mutations in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            splits in arb_splits(),
        ) {
            let mut bytes = encode_all(&mut ChunkEncoder::new(), &build_messages(&csids, &ops));
            if !bytes.is_empty() {
                let len = bytes.len();
                for (at, value) in mutations {
                    bytes[at % len] = value;
                }
            }
            let limits = ChunkDecoderLimits {
                max_message_size: 1 << 20,
                max_chunk_size: 1 << 20,
                max_chunk_streams: 8,
                max_partial_bytes: 1 << 19,
            };
            feed_until_done(ChunkDecoder::new(limits), &bytes, &splits);
        }
    }

    /// Feeds bytes until the decoder errors or everything is fed, checking that it never
    /// consumes more than it was given.
    fn feed_until_done(mut decoder: ChunkDecoder, bytes: &[u8], splits: &[usize]) {
        let mut buf = BytesMut::new();
        let mut offset = 0;
        for split in splits.iter().cycle() {
            if offset >= bytes.len() {
                return;
            }
            let end = bytes.len().min(offset + split);
            buf.extend_from_slice(&bytes[offset..end]);
            offset = end;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            assert_eq!(decoder.bytes_received() + buf.len() as u64, offset as u64);
            assert_partial_bytes_are_true(&decoder);
        }
    }

    /// The decoder's running count is what its partial buffers really hold, within budget.
    fn assert_partial_bytes_are_true(decoder: &ChunkDecoder) {
        let held: usize = decoder
            .streams
            .iter()
            .filter_map(|s| s.partial.as_ref().map(BytesMut::capacity))
            .sum();
        assert_eq!(decoder.partial_bytes(), held);
        assert!(held <= decoder.limits().max_partial_bytes, "{held}");
    }

    /// The first chunk (fmt 0, chunk size 128) of a `length`-byte video message on `csid`.
    fn first_chunk(csid: u8, length: usize) -> Vec<u8> {
        let len = (length as u32).to_be_bytes();
        let mut chunk = vec![csid, 0, 0, 0, len[1], len[2], len[3], 0x09, 1, 0, 0, 0];
        chunk.extend(pattern(csid, length.min(128)));
        chunk
    }

    /// The rest of that message, as fmt 3 chunks.
    fn rest_chunks(csid: u8, length: usize) -> Vec<u8> {
        let rest = pattern(csid, length);
        rest[128.min(length)..]
            .chunks(128)
            .flat_map(|part| std::iter::once(0xC0 | csid).chain(part.iter().copied()))
            .collect()
    }

    #[test]
    fn open_messages_on_many_chunk_streams_hit_the_partial_budget() {
        let limits = ChunkDecoderLimits {
            max_partial_bytes: 3000,
            ..ChunkDecoderLimits::default()
        };
        let mut decoder = ChunkDecoder::new(limits);
        let two = concat(&[first_chunk(3, 1500), first_chunk(4, 1500)]);
        assert!(decode_all(&mut decoder, &two).is_empty());
        assert_eq!(decoder.partial_bytes(), 3000);
        assert_eq!(
            decode_err(&mut decoder, &first_chunk(5, 129)),
            ChunkError::PartialBytesOverBudget {
                held: 3129,
                max: 3000
            }
        );
    }

    #[test]
    fn completed_and_aborted_messages_give_their_budget_back() {
        let limits = ChunkDecoderLimits {
            max_partial_bytes: 2000,
            ..ChunkDecoderLimits::default()
        };
        let mut decoder = ChunkDecoder::new(limits);
        for csid in [3u8, 4, 5] {
            let whole = concat(&[first_chunk(csid, 2000), rest_chunks(csid, 2000)]);
            assert_eq!(decode_all(&mut decoder, &whole).len(), 1);
            assert_eq!(decoder.partial_bytes(), 0);
        }
        assert!(decode_all(&mut decoder, &first_chunk(6, 2000)).is_empty());
        let abort = vec![2, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 6];
        assert_eq!(decode_all(&mut decoder, &abort).len(), 1);
        assert_eq!(decoder.partial_bytes(), 0);
        assert!(decode_all(&mut decoder, &first_chunk(7, 2000)).is_empty());
        // A new header mid-message replaces the unfinished one: no double count.
        assert!(decode_all(&mut decoder, &first_chunk(7, 2000)).is_empty());
        assert_eq!(decoder.partial_bytes(), 2000);
    }

    #[test]
    fn relaxed_limits_apply_to_the_next_chunks() {
        let tight = ChunkDecoderLimits {
            max_message_size: 1000,
            max_partial_bytes: 1000,
            ..ChunkDecoderLimits::default()
        };
        let mut decoder = ChunkDecoder::new(tight);
        assert!(matches!(
            decode_err(&mut ChunkDecoder::new(tight), &first_chunk(3, 5000)),
            ChunkError::MessageTooLarge { .. }
        ));
        decoder.set_limits(ChunkDecoderLimits::default());
        let whole = concat(&[first_chunk(3, 5000), rest_chunks(3, 5000)]);
        assert_eq!(decode_all(&mut decoder, &whole).len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However many messages a peer leaves open, they hold at most the budget, and the
        /// decoder refuses exactly the first chunk that would pass it.
        #[test]
        fn open_messages_never_hold_more_than_the_budget(
            // At most the preallocation: the buffers never grow, so the count is exact.
            lengths in prop::collection::vec(129usize..=PREALLOC_LIMIT, 1..24),
            budget in 0usize..300_000,
            splits in arb_splits(),
        ) {
            let chunks: Vec<Vec<u8>> = lengths
                .iter()
                .enumerate()
                .map(|(i, &len)| first_chunk(3 + i as u8, len))
                .collect();
            let limits = ChunkDecoderLimits { max_partial_bytes: budget, ..ChunkDecoderLimits::default() };
            let mut decoder = ChunkDecoder::new(limits);
            let mut buf = BytesMut::new();
            let mut held = 0;
            for (chunk, &len) in chunks.iter().zip(&lengths) {
                let reserve = len.min(PREALLOC_LIMIT);
                buf.extend_from_slice(chunk);
                let result = decoder.decode(&mut buf);
                if held + reserve > budget {
                    prop_assert_eq!(
                        result,
                        Err(ChunkError::PartialBytesOverBudget { held: held + reserve, max: budget })
                    );
                    break;
                }
                prop_assert_eq!(result, Ok(None));
                held += reserve;
                prop_assert_eq!(decoder.partial_bytes(), held);
            }
            assert_partial_bytes_are_true(&decoder);
            if held < lengths.iter().map(|&l| l.min(PREALLOC_LIMIT)).sum::<usize>() {
                return Ok(()); // refused above: the connection ends there
            }
            // Finishing every message, fed in arbitrary splits, keeps the count true and
            // within budget, and gives it all back.
            let rest: Vec<u8> = lengths
                .iter()
                .enumerate()
                .flat_map(|(i, &len)| rest_chunks(3 + i as u8, len))
                .collect();
            let mut completed = 0;
            for part in rest.chunks(splits[0].max(1)) {
                buf.extend_from_slice(part);
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(_)) => completed += 1,
                        Ok(None) => break,
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                assert_partial_bytes_are_true(&decoder);
            }
            prop_assert_eq!(completed, lengths.len());
            prop_assert_eq!(decoder.partial_bytes(), 0);
        }
    }
}
