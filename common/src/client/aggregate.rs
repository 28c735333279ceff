//! RTMP aggregate messages (type 22, RTMP spec §7.1.6): several audio, video and data
//! messages in one, as some servers (Wowza, Red5, FMS) send to players.
//!
//! An aggregate's body is a run of sub-messages, each laid out like an FLV tag: an 11-byte
//! header (type, 24-bit payload size, 24-bit timestamp plus an 8-bit extension holding the
//! high bits, 24-bit stream id), the payload, then a 32-bit back pointer: the size of the
//! sub-message before it, header included (`11 + size`).
//!
//! # Tricky parts
//! - **Timestamps are relative to the first sub-message:** a sub-message's time is the
//!   aggregate's plus (its own minus the first one's), 32-bit wrapping (§7.1.6).
//! - **The aggregate's message stream id wins** over the sub-messages' (the spec says the
//!   sub-headers' id is ignored; servers write 0 there).
//! - **Only media and data nest:** a sub-message of any other type (a command, a control
//!   message, another aggregate) is refused, as is a size past the end or a back pointer
//!   that does not match; nothing of a refused aggregate is delivered.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{MessageStreamId, MessageType, RtmpMessage};

/// A sub-message's header: type (1), size (3), timestamp (3 + 1 extension), stream id (3).
pub const SUB_HEADER_LEN: usize = 11;
/// The back pointer after each sub-message.
pub const BACK_POINTER_LEN: usize = 4;

/// Why an aggregate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// Fewer than 11 bytes left for a sub-message header.
    #[error("aggregate: a sub-message header is cut short at offset {0}")]
    ShortHeader(usize),
    /// A sub-message's size runs past the end of the aggregate.
    #[error("aggregate: a sub-message of {size} bytes at offset {offset} runs past the end")]
    ShortPayload {
        /// Where its header starts.
        offset: usize,
        /// The size it claims.
        size: usize,
    },
    /// The back pointer is missing or is not `11 + size`.
    #[error("aggregate: bad back pointer after the sub-message at offset {0}")]
    BackPointer(usize),
    /// A sub-message that is not audio, video or data.
    #[error("aggregate: a sub-message of type {0} (only audio, video and data nest)")]
    SubType(u8),
}

/// Whether `message_type` may be a sub-message.
fn nests(message_type: MessageType) -> bool {
    matches!(
        message_type,
        MessageType::AUDIO | MessageType::VIDEO | MessageType::DATA_AMF0 | MessageType::DATA_AMF3
    )
}

fn u24(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])
}

/// The sub-messages of `aggregate` (a type 22 message), with absolute timestamps, the
/// aggregate's chunk stream and message stream ids, and payloads that share its buffer.
pub fn split(aggregate: &RtmpMessage) -> Result<Vec<RtmpMessage>, AggregateError> {
    let body = &aggregate.payload;
    let mut messages = Vec::new();
    let mut offset = 0;
    let mut first_time = None;
    while offset < body.len() {
        let header = body
            .get(offset..offset + SUB_HEADER_LEN)
            .ok_or(AggregateError::ShortHeader(offset))?;
        let message_type = MessageType(header[0]);
        if !nests(message_type) {
            return Err(AggregateError::SubType(header[0]));
        }
        let size = u24(&header[1..4]) as usize;
        let time = u24(&header[4..7]) | (u32::from(header[7]) << 24);
        let start = offset + SUB_HEADER_LEN;
        let end = start + size;
        let pointer = body
            .get(end..end + BACK_POINTER_LEN)
            .ok_or(AggregateError::ShortPayload { offset, size })?;
        let pointer = u32::from_be_bytes([pointer[0], pointer[1], pointer[2], pointer[3]]);
        if pointer as usize != SUB_HEADER_LEN + size {
            return Err(AggregateError::BackPointer(offset));
        }
        let first = *first_time.get_or_insert(time);
        messages.push(RtmpMessage {
            chunk_stream_id: aggregate.chunk_stream_id,
            timestamp: aggregate.timestamp.wrapping_add(time.wrapping_sub(first)),
            message_type,
            message_stream_id: aggregate.message_stream_id,
            payload: body.slice(start..end),
        });
        offset = end + BACK_POINTER_LEN;
    }
    Ok(messages)
}

/// The body of an aggregate holding `messages` (what a server sends; for tests and test
/// servers): sub-timestamps as given, sub-stream ids 0. `None` if one is not audio, video or
/// data, or larger than 2^24 - 1 bytes.
pub fn encode(messages: &[RtmpMessage]) -> Option<Bytes> {
    let mut out = BytesMut::new();
    for message in messages {
        let size = u32::try_from(message.payload.len())
            .ok()
            .filter(|s| *s < 1 << 24)?;
        if !nests(message.message_type) {
            return None;
        }
        out.put_u8(message.message_type.0);
        out.put_slice(&size.to_be_bytes()[1..]);
        out.put_slice(&message.timestamp.to_be_bytes()[1..]);
        out.put_u8((message.timestamp >> 24) as u8);
        out.put_slice(&[0; 3]);
        out.put_slice(&message.payload);
        out.put_u32(SUB_HEADER_LEN as u32 + size);
    }
    Some(out.freeze())
}

/// An aggregate message of `messages` on `stream` at the first one's time.
pub fn message(messages: &[RtmpMessage], stream: MessageStreamId) -> Option<RtmpMessage> {
    Some(RtmpMessage {
        chunk_stream_id: messages.first()?.chunk_stream_id,
        timestamp: messages.first()?.timestamp,
        message_type: MessageType::AGGREGATE,
        message_stream_id: stream,
        payload: encode(messages)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a failed test.

    use proptest::prelude::*;

    use super::*;
    use crate::types::ChunkStreamId;

    fn sub(message_type: u8, timestamp: u32, payload: Vec<u8>) -> RtmpMessage {
        RtmpMessage {
            chunk_stream_id: ChunkStreamId(4),
            timestamp,
            message_type: MessageType(message_type),
            message_stream_id: MessageStreamId(1),
            payload: payload.into(),
        }
    }

    fn media() -> impl Strategy<Value = RtmpMessage> {
        (
            prop::sample::select(vec![8u8, 9, 15, 18]),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(t, ts, payload)| sub(t, ts, payload))
    }

    #[test]
    fn the_spec_layout_splits_with_times_relative_to_the_first() {
        // Two sub-messages at 1000 and 1040 (the second with an extended-time byte of 0),
        // in an aggregate at 5000 on stream 7.
        let mut body = vec![
            9, 0, 0, 2, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x17, 0x01, 0, 0, 0, 13,
        ];
        body.extend([8, 0, 0, 1, 0, 0x04, 0x10, 0, 0, 0, 0, 0xaf, 0, 0, 0, 12]);
        let aggregate = RtmpMessage {
            chunk_stream_id: ChunkStreamId(6),
            timestamp: 5000,
            message_type: MessageType::AGGREGATE,
            message_stream_id: MessageStreamId(7),
            payload: body.into(),
        };
        let parts = split(&aggregate).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (
                parts[0].message_type,
                parts[0].timestamp,
                &parts[0].payload[..]
            ),
            (MessageType::VIDEO, 5000, &[0x17, 0x01][..])
        );
        assert_eq!(
            (
                parts[1].message_type,
                parts[1].timestamp,
                &parts[1].payload[..]
            ),
            (MessageType::AUDIO, 5040, &[0xaf][..])
        );
        assert!(parts
            .iter()
            .all(|m| m.message_stream_id == MessageStreamId(7)));
    }

    #[test]
    fn malformed_aggregates_are_refused_with_their_fault() {
        let good = encode(&[sub(9, 0, vec![1, 2, 3])]).unwrap().to_vec();
        let agg = |payload: Vec<u8>| RtmpMessage {
            payload: payload.into(),
            ..sub(22, 0, vec![])
        };
        assert_eq!(
            split(&agg(good[..5].to_vec())),
            Err(AggregateError::ShortHeader(0))
        );
        assert_eq!(
            split(&agg(good[..good.len() - 1].to_vec())),
            Err(AggregateError::ShortPayload { offset: 0, size: 3 })
        );
        let mut pointer = good.clone();
        *pointer.last_mut().unwrap() ^= 1;
        assert_eq!(split(&agg(pointer)), Err(AggregateError::BackPointer(0)));
        for kind in [20u8, 4, 22, 1] {
            let mut typed = good.clone();
            typed[0] = kind;
            assert_eq!(split(&agg(typed)), Err(AggregateError::SubType(kind)));
        }
        assert_eq!(split(&agg(Vec::new())), Ok(Vec::new()));
    }

    proptest! {
        #[test]
        fn what_is_encoded_splits_back(
            subs in prop::collection::vec(media(), 1..8),
            at in any::<u32>(),
        ) {
            let mut aggregate = message(&subs, MessageStreamId(3)).unwrap();
            aggregate.timestamp = at;
            let parts = split(&aggregate).unwrap();
            prop_assert_eq!(parts.len(), subs.len());
            for (part, sent) in parts.iter().zip(&subs) {
                prop_assert_eq!(part.message_type, sent.message_type);
                prop_assert_eq!(&part.payload, &sent.payload);
                prop_assert_eq!(part.message_stream_id, MessageStreamId(3));
                let relative = sent.timestamp.wrapping_sub(subs[0].timestamp);
                prop_assert_eq!(part.timestamp, at.wrapping_add(relative));
            }
        }

        #[test]
        fn any_bytes_split_or_are_refused_without_panicking(
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let aggregate = RtmpMessage { payload: body.into(), ..sub(22, 9, vec![]) };
            if let Ok(parts) = split(&aggregate) {
                let total: usize = parts.iter().map(|p| p.payload.len() + 15).sum();
                prop_assert_eq!(total, aggregate.payload.len());
            }
        }

        #[test]
        fn a_cut_aggregate_is_refused(
            subs in prop::collection::vec(media(), 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let body = encode(&subs).unwrap();
            let at = cut.index(body.len());
            let aggregate = RtmpMessage { payload: body.slice(..at), ..sub(22, 0, vec![]) };
            // Cut at a sub-message boundary it is a shorter aggregate; anywhere else, refused.
            let boundaries: Vec<usize> = subs
                .iter()
                .scan(0, |end, s| { *end += s.payload.len() + 15; Some(*end) })
                .collect();
            prop_assert_eq!(
                split(&aggregate).is_ok(),
                at == 0 || boundaries.contains(&at)
            );
        }
    }
}
