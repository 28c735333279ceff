//! Protocol control messages (types 1, 2, 3, 5, 6; RTMP spec §5.4) and user control events
//! (type 4; §6.2, §7.1.7): decoding their payloads and building them as [`RtmpMessage`]s.
//!
//! The chunk layer already applies Set Chunk Size and Abort to its own decoder state (see
//! [`crate::chunk`]); this module is what the session layer uses to read every control message
//! and to build the ones it sends (window size, peer bandwidth, Stream Begin, ping replies).
//!
//! # Tricky parts
//! - All fields are big-endian and fixed-size. A payload shorter than its fields is an error;
//!   trailing bytes after the known fields are ignored, since they carry no meaning and
//!   rejecting them would only end connections with clients that pad.
//! - Set Chunk Size's top bit must be zero and the size at least 1 (§5.4.1).
//! - User control event types beyond the spec's seven (SWF verification 0x1A/0x1B, the
//!   buffer empty/ready events some servers send) are kept as [`UserControlEvent::Unknown`]
//!   with their raw data rather than rejected: unknown events are harmless to ignore.
//! - Event type 5 is unassigned in the spec and decodes as `Unknown` too.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

/// How the peer should apply a Set Peer Bandwidth window (§5.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerBandwidthLimit {
    /// 0: limit output bandwidth to the window.
    Hard,
    /// 1: limit to the window or the limit already in effect, whichever is smaller.
    Soft,
    /// 2: treat as Hard if the previous limit was Hard, otherwise ignore.
    Dynamic,
}

impl PeerBandwidthLimit {
    fn to_u8(self) -> u8 {
        match self {
            PeerBandwidthLimit::Hard => 0,
            PeerBandwidthLimit::Soft => 1,
            PeerBandwidthLimit::Dynamic => 2,
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(PeerBandwidthLimit::Hard),
            1 => Some(PeerBandwidthLimit::Soft),
            2 => Some(PeerBandwidthLimit::Dynamic),
            _ => None,
        }
    }
}

/// A protocol control message (types 1, 2, 3, 5, 6) or user control message (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Type 1: the sender's new maximum chunk size (1..=0x7FFFFFFF).
    SetChunkSize(u32),
    /// Type 2: discard the partially received message on this chunk stream.
    Abort(ChunkStreamId),
    /// Type 3: the sequence number (bytes received so far, wrapping at 2^32).
    Acknowledgement(u32),
    /// Type 5: how many bytes the sender may receive before it must send an Acknowledgement.
    WindowAckSize(u32),
    /// Type 6: limit the receiver's output bandwidth.
    SetPeerBandwidth {
        /// Window size in bytes.
        window: u32,
        /// How to apply it.
        limit: PeerBandwidthLimit,
    },
    /// Type 4: a user control event.
    UserControl(UserControlEvent),
}

/// A user control event (§7.1.7): a 16-bit event type followed by event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserControlEvent {
    /// 0: the stream became functional (the server sends it before media or commands on it).
    StreamBegin(MessageStreamId),
    /// 1: playback of the stream is over.
    StreamEof(MessageStreamId),
    /// 2: no more data on the stream for now.
    StreamDry(MessageStreamId),
    /// 3: the client's buffer length for a stream, sent before the server starts processing it.
    SetBufferLength {
        /// The stream the buffer is for.
        stream: MessageStreamId,
        /// Buffer length in milliseconds.
        buffer_ms: u32,
    },
    /// 4: the stream is a recorded (not live) stream.
    StreamIsRecorded(MessageStreamId),
    /// 6: the server checks the client is reachable; the value is a local timestamp to echo.
    PingRequest(u32),
    /// 7: the reply to a PingRequest, echoing its timestamp.
    PingResponse(u32),
    /// Any other event type, kept raw.
    Unknown {
        /// The 16-bit event type.
        event_type: u16,
        /// The event data after the type.
        data: Bytes,
    },
}

/// Why a control message payload cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The payload is shorter than the message's fixed fields.
    #[error("message type {message_type}: payload of {actual} bytes, {needed} needed")]
    Truncated {
        /// The message type id (1–6).
        message_type: u8,
        /// Bytes the fields need.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// A Set Chunk Size value of 0 or with the top bit set.
    #[error("invalid Set Chunk Size value {0:#x}")]
    InvalidChunkSize(u32),
    /// A Set Peer Bandwidth limit type other than 0, 1 or 2.
    #[error("unknown Set Peer Bandwidth limit type {0}")]
    UnknownBandwidthLimit(u8),
}

impl ControlError {
    /// A short static name for the error, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ControlError::Truncated { .. } => "truncated",
            ControlError::InvalidChunkSize(_) => "invalid_chunk_size",
            ControlError::UnknownBandwidthLimit(_) => "unknown_bandwidth_limit",
        }
    }
}

/// User control event type ids (§7.1.7).
mod event {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const STREAM_DRY: u16 = 2;
    pub const SET_BUFFER_LENGTH: u16 = 3;
    pub const STREAM_IS_RECORDED: u16 = 4;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

/// Reads the big-endian u32 at `offset`, or reports how many bytes the message needed.
fn be_u32(
    payload: &[u8],
    offset: usize,
    message_type: MessageType,
    needed: usize,
) -> Result<u32, ControlError> {
    payload
        .get(offset..offset + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or(ControlError::Truncated {
            message_type: message_type.0,
            needed,
            actual: payload.len(),
        })
}

impl ControlMessage {
    /// None for message types that are not control types (anything but 1–6).
    pub fn decode(
        message_type: MessageType,
        payload: &[u8],
    ) -> Result<Option<ControlMessage>, ControlError> {
        let message = match message_type {
            MessageType::SET_CHUNK_SIZE => {
                let size = be_u32(payload, 0, message_type, 4)?;
                if size == 0 || size & 0x8000_0000 != 0 {
                    return Err(ControlError::InvalidChunkSize(size));
                }
                ControlMessage::SetChunkSize(size)
            }
            MessageType::ABORT => {
                ControlMessage::Abort(ChunkStreamId(be_u32(payload, 0, message_type, 4)?))
            }
            MessageType::ACKNOWLEDGEMENT => {
                ControlMessage::Acknowledgement(be_u32(payload, 0, message_type, 4)?)
            }
            MessageType::WINDOW_ACK_SIZE => {
                ControlMessage::WindowAckSize(be_u32(payload, 0, message_type, 4)?)
            }
            MessageType::SET_PEER_BANDWIDTH => {
                let window = be_u32(payload, 0, message_type, 5)?;
                let raw = *payload.get(4).ok_or(ControlError::Truncated {
                    message_type: message_type.0,
                    needed: 5,
                    actual: payload.len(),
                })?;
                let limit = PeerBandwidthLimit::from_u8(raw)
                    .ok_or(ControlError::UnknownBandwidthLimit(raw))?;
                ControlMessage::SetPeerBandwidth { window, limit }
            }
            MessageType::USER_CONTROL => ControlMessage::UserControl(decode_user_control(payload)?),
            _ => return Ok(None),
        };
        Ok(Some(message))
    }

    /// The message type id this control message travels as.
    pub fn message_type(&self) -> MessageType {
        match self {
            ControlMessage::SetChunkSize(_) => MessageType::SET_CHUNK_SIZE,
            ControlMessage::Abort(_) => MessageType::ABORT,
            ControlMessage::Acknowledgement(_) => MessageType::ACKNOWLEDGEMENT,
            ControlMessage::WindowAckSize(_) => MessageType::WINDOW_ACK_SIZE,
            ControlMessage::SetPeerBandwidth { .. } => MessageType::SET_PEER_BANDWIDTH,
            ControlMessage::UserControl(_) => MessageType::USER_CONTROL,
        }
    }

    /// As an RtmpMessage on chunk stream 2, message stream 0, timestamp 0.
    pub fn to_message(&self) -> RtmpMessage {
        let mut payload = BytesMut::with_capacity(10);
        match self {
            ControlMessage::SetChunkSize(value)
            | ControlMessage::Acknowledgement(value)
            | ControlMessage::WindowAckSize(value) => payload.put_u32(*value),
            ControlMessage::Abort(csid) => payload.put_u32(csid.0),
            ControlMessage::SetPeerBandwidth { window, limit } => {
                payload.put_u32(*window);
                payload.put_u8(limit.to_u8());
            }
            ControlMessage::UserControl(event) => encode_user_control(event, &mut payload),
        }
        RtmpMessage {
            chunk_stream_id: ChunkStreamId::CONTROL,
            timestamp: 0,
            message_type: self.message_type(),
            message_stream_id: MessageStreamId::CONNECTION,
            payload: payload.freeze(),
        }
    }
}

fn decode_user_control(payload: &[u8]) -> Result<UserControlEvent, ControlError> {
    let message_type = MessageType::USER_CONTROL;
    let event_type = payload
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(ControlError::Truncated {
            message_type: message_type.0,
            needed: 2,
            actual: payload.len(),
        })?;
    // Every known event's first field is a u32 right after the event type.
    let first = || be_u32(payload, 2, message_type, 6);
    let event = match event_type {
        event::STREAM_BEGIN => UserControlEvent::StreamBegin(MessageStreamId(first()?)),
        event::STREAM_EOF => UserControlEvent::StreamEof(MessageStreamId(first()?)),
        event::STREAM_DRY => UserControlEvent::StreamDry(MessageStreamId(first()?)),
        event::SET_BUFFER_LENGTH => UserControlEvent::SetBufferLength {
            stream: MessageStreamId(be_u32(payload, 2, message_type, 10)?),
            buffer_ms: be_u32(payload, 6, message_type, 10)?,
        },
        event::STREAM_IS_RECORDED => UserControlEvent::StreamIsRecorded(MessageStreamId(first()?)),
        event::PING_REQUEST => UserControlEvent::PingRequest(first()?),
        event::PING_RESPONSE => UserControlEvent::PingResponse(first()?),
        other => UserControlEvent::Unknown {
            event_type: other,
            data: Bytes::copy_from_slice(payload.get(2..).unwrap_or_default()),
        },
    };
    Ok(event)
}

fn encode_user_control(event: &UserControlEvent, out: &mut BytesMut) {
    let (event_type, value) = match event {
        UserControlEvent::StreamBegin(id) => (event::STREAM_BEGIN, id.0),
        UserControlEvent::StreamEof(id) => (event::STREAM_EOF, id.0),
        UserControlEvent::StreamDry(id) => (event::STREAM_DRY, id.0),
        UserControlEvent::StreamIsRecorded(id) => (event::STREAM_IS_RECORDED, id.0),
        UserControlEvent::PingRequest(ts) => (event::PING_REQUEST, *ts),
        UserControlEvent::PingResponse(ts) => (event::PING_RESPONSE, *ts),
        UserControlEvent::SetBufferLength { stream, buffer_ms } => {
            out.put_u16(event::SET_BUFFER_LENGTH);
            out.put_u32(stream.0);
            out.put_u32(*buffer_ms);
            return;
        }
        UserControlEvent::Unknown { event_type, data } => {
            out.put_u16(*event_type);
            out.put_slice(data);
            return;
        }
    };
    out.put_u16(event_type);
    out.put_u32(value);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(message_type: u8, payload: &[u8]) -> Result<Option<ControlMessage>, ControlError> {
        ControlMessage::decode(MessageType(message_type), payload)
    }

    /// Decodes the vector, and checks that encoding the result gives the vector back.
    fn check_vector(message_type: u8, payload: &[u8], expected: ControlMessage) {
        assert_eq!(decode(message_type, payload), Ok(Some(expected.clone())));
        let msg = expected.to_message();
        assert_eq!(msg.message_type, MessageType(message_type));
        assert_eq!(msg.chunk_stream_id, ChunkStreamId(2));
        assert_eq!(msg.message_stream_id, MessageStreamId(0));
        assert_eq!(msg.timestamp, 0);
        assert_eq!(&msg.payload[..], payload);
    }

    #[test]
    fn protocol_control_vectors() {
        check_vector(
            1,
            &[0x00, 0x00, 0x10, 0x00],
            ControlMessage::SetChunkSize(4096),
        );
        check_vector(
            1,
            &[0x7F, 0xFF, 0xFF, 0xFF],
            ControlMessage::SetChunkSize(0x7FFF_FFFF),
        );
        check_vector(
            2,
            &[0x00, 0x00, 0x00, 0x04],
            ControlMessage::Abort(ChunkStreamId(4)),
        );
        check_vector(
            3,
            &[0x12, 0x34, 0x56, 0x78],
            ControlMessage::Acknowledgement(0x1234_5678),
        );
        check_vector(
            5,
            &[0x00, 0x26, 0x25, 0xA0],
            ControlMessage::WindowAckSize(2_500_000),
        );
        check_vector(
            6,
            &[0x00, 0x26, 0x25, 0xA0, 0x00],
            ControlMessage::SetPeerBandwidth {
                window: 2_500_000,
                limit: PeerBandwidthLimit::Hard,
            },
        );
        check_vector(
            6,
            &[0x00, 0x26, 0x25, 0xA0, 0x01],
            ControlMessage::SetPeerBandwidth {
                window: 2_500_000,
                limit: PeerBandwidthLimit::Soft,
            },
        );
        check_vector(
            6,
            &[0x00, 0x26, 0x25, 0xA0, 0x02],
            ControlMessage::SetPeerBandwidth {
                window: 2_500_000,
                limit: PeerBandwidthLimit::Dynamic,
            },
        );
    }

    #[test]
    fn user_control_vectors() {
        use UserControlEvent as E;
        let uc = ControlMessage::UserControl;
        check_vector(
            4,
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x01],
            uc(E::StreamBegin(MessageStreamId(1))),
        );
        check_vector(
            4,
            &[0x00, 0x01, 0x00, 0x00, 0x00, 0x01],
            uc(E::StreamEof(MessageStreamId(1))),
        );
        check_vector(
            4,
            &[0x00, 0x02, 0x00, 0x00, 0x00, 0x02],
            uc(E::StreamDry(MessageStreamId(2))),
        );
        check_vector(
            4,
            &[0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x0B, 0xB8],
            uc(E::SetBufferLength {
                stream: MessageStreamId(1),
                buffer_ms: 3000,
            }),
        );
        check_vector(
            4,
            &[0x00, 0x04, 0x00, 0x00, 0x00, 0x01],
            uc(E::StreamIsRecorded(MessageStreamId(1))),
        );
        check_vector(
            4,
            &[0x00, 0x06, 0xDE, 0xAD, 0xBE, 0xEF],
            uc(E::PingRequest(0xDEAD_BEEF)),
        );
        check_vector(
            4,
            &[0x00, 0x07, 0xDE, 0xAD, 0xBE, 0xEF],
            uc(E::PingResponse(0xDEAD_BEEF)),
        );
        // SWF verification request (0x1A) has no data; a buffer-empty event (0x1F) has a
        // stream id. Both are kept raw.
        check_vector(
            4,
            &[0x00, 0x1A],
            uc(E::Unknown {
                event_type: 0x1A,
                data: Bytes::new(),
            }),
        );
        check_vector(
            4,
            &[0x00, 0x1F, 0x00, 0x00, 0x00, 0x01],
            uc(E::Unknown {
                event_type: 0x1F,
                data: Bytes::from_static(&[0, 0, 0, 1]),
            }),
        );
        // Type 5 is unassigned.
        check_vector(
            4,
            &[0x00, 0x05],
            uc(E::Unknown {
                event_type: 5,
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn non_control_types_are_none() {
        for ty in [0u8, 7, 8, 9, 0x0F, 0x11, 0x12, 0x14, 0x16, 0xFF] {
            assert_eq!(decode(ty, &[0, 0, 0, 1]), Ok(None), "type {ty}");
        }
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        assert_eq!(
            decode(5, &[0, 0, 0x10, 0, 0xAA]),
            Ok(Some(ControlMessage::WindowAckSize(4096)))
        );
        assert_eq!(
            decode(4, &[0, 7, 0, 0, 0, 9, 0xAA, 0xBB]),
            Ok(Some(ControlMessage::UserControl(
                UserControlEvent::PingResponse(9)
            )))
        );
    }

    #[test]
    fn truncated_payloads() {
        for ty in [1u8, 2, 3, 5] {
            for len in 0..4 {
                assert_eq!(
                    decode(ty, &[0x00, 0x00, 0x10, 0x00][..len]),
                    Err(ControlError::Truncated {
                        message_type: ty,
                        needed: 4,
                        actual: len,
                    })
                );
            }
        }
        assert_eq!(
            decode(6, &[0, 0, 0, 1]),
            Err(ControlError::Truncated {
                message_type: 6,
                needed: 5,
                actual: 4
            })
        );
        assert_eq!(
            decode(4, &[0]),
            Err(ControlError::Truncated {
                message_type: 4,
                needed: 2,
                actual: 1
            })
        );
        assert_eq!(
            decode(4, &[0, 0, 0, 0, 1]),
            Err(ControlError::Truncated {
                message_type: 4,
                needed: 6,
                actual: 5
            })
        );
        assert_eq!(
            decode(4, &[0, 3, 0, 0, 0, 1, 0, 0, 0x0B]),
            Err(ControlError::Truncated {
                message_type: 4,
                needed: 10,
                actual: 9
            })
        );
    }

    #[test]
    fn malformed_values() {
        assert_eq!(
            decode(1, &[0x80, 0x00, 0x10, 0x00]),
            Err(ControlError::InvalidChunkSize(0x8000_1000))
        );
        assert_eq!(
            decode(1, &[0, 0, 0, 0]),
            Err(ControlError::InvalidChunkSize(0))
        );
        assert_eq!(
            decode(6, &[0, 0, 0x10, 0, 3]),
            Err(ControlError::UnknownBandwidthLimit(3))
        );
        assert_eq!(
            ControlError::UnknownBandwidthLimit(3).as_str(),
            "unknown_bandwidth_limit"
        );
    }

    fn arb_event() -> impl Strategy<Value = UserControlEvent> {
        let id = any::<u32>().prop_map(MessageStreamId);
        prop_oneof![
            id.clone().prop_map(UserControlEvent::StreamBegin),
            id.clone().prop_map(UserControlEvent::StreamEof),
            id.clone().prop_map(UserControlEvent::StreamDry),
            (id.clone(), any::<u32>()).prop_map(|(stream, buffer_ms)| {
                UserControlEvent::SetBufferLength { stream, buffer_ms }
            }),
            id.prop_map(UserControlEvent::StreamIsRecorded),
            any::<u32>().prop_map(UserControlEvent::PingRequest),
            any::<u32>().prop_map(UserControlEvent::PingResponse),
            (
                any::<u16>().prop_filter("known", |t| *t == 5 || *t > 7),
                proptest::collection::vec(any::<u8>(), 0..16)
            )
                .prop_map(|(event_type, data)| UserControlEvent::Unknown {
                    event_type,
                    data: Bytes::from(data),
                }),
        ]
    }

    fn arb_control() -> impl Strategy<Value = ControlMessage> {
        prop_oneof![
            (1u32..=0x7FFF_FFFF).prop_map(ControlMessage::SetChunkSize),
            any::<u32>().prop_map(|c| ControlMessage::Abort(ChunkStreamId(c))),
            any::<u32>().prop_map(ControlMessage::Acknowledgement),
            any::<u32>().prop_map(ControlMessage::WindowAckSize),
            (any::<u32>(), 0u8..3).prop_map(|(window, l)| ControlMessage::SetPeerBandwidth {
                window,
                limit: PeerBandwidthLimit::from_u8(l).unwrap_or(PeerBandwidthLimit::Hard),
            }),
            arb_event().prop_map(ControlMessage::UserControl),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(message in arb_control()) {
            let msg = message.to_message();
            prop_assert_eq!(
                ControlMessage::decode(msg.message_type, &msg.payload),
                Ok(Some(message))
            );
        }

        #[test]
        fn arbitrary_bytes_never_panic(ty in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = ControlMessage::decode(MessageType(ty), &payload);
        }
    }
}
