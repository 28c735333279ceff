//! Newtypes shared by every protocol layer and the RTMP message they exchange.
//!
//! An [`RtmpMessage`] is what the chunk layer reassembles and what the session layer acts on:
//! a message type, a timestamp, a message stream id and a payload held as [`Bytes`] so it can
//! be sliced and shared without copying (the fan-out path depends on that).

use bytes::Bytes;

/// A chunk stream id (RTMP spec §5.3.1.1). Valid ids are 2..=65599; 0 and 1 only appear as
/// basic-header escape values and 2 is reserved for protocol control messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkStreamId(pub u32);

impl ChunkStreamId {
    /// Chunk stream used for protocol control and user control messages.
    pub const CONTROL: ChunkStreamId = ChunkStreamId(2);
    /// Chunk stream the node uses for command replies (`_result`, `onStatus`).
    pub const COMMAND: ChunkStreamId = ChunkStreamId(3);
    /// Chunk stream the node uses for data messages (`onMetaData`) it sends to players.
    pub const DATA: ChunkStreamId = ChunkStreamId(5);
    /// Chunk stream the node uses for audio it sends to players.
    pub const AUDIO: ChunkStreamId = ChunkStreamId(6);
    /// Chunk stream the node uses for video it sends to players.
    pub const VIDEO: ChunkStreamId = ChunkStreamId(7);
    /// Largest id a three-byte basic header can carry.
    pub const MAX: u32 = 65599;
}

/// A message stream id (RTMP spec §5.3.1.2.1): 0 for the NetConnection, ≥1 for NetStreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageStreamId(pub u32);

impl MessageStreamId {
    /// The NetConnection's stream (control, connect, createStream).
    pub const CONNECTION: MessageStreamId = MessageStreamId(0);
    /// The only NetStream id the node hands out; media to players always uses it, which is
    /// what lets one encoded frame be valid for every player.
    pub const MEDIA: MessageStreamId = MessageStreamId(1);
}

/// An RTMP message type id (RTMP spec §5.4, §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType(pub u8);

impl MessageType {
    /// Set Chunk Size (protocol control).
    pub const SET_CHUNK_SIZE: MessageType = MessageType(0x01);
    /// Abort Message (protocol control).
    pub const ABORT: MessageType = MessageType(0x02);
    /// Acknowledgement (protocol control).
    pub const ACKNOWLEDGEMENT: MessageType = MessageType(0x03);
    /// User Control Message.
    pub const USER_CONTROL: MessageType = MessageType(0x04);
    /// Window Acknowledgement Size (protocol control).
    pub const WINDOW_ACK_SIZE: MessageType = MessageType(0x05);
    /// Set Peer Bandwidth (protocol control).
    pub const SET_PEER_BANDWIDTH: MessageType = MessageType(0x06);
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: MessageType = MessageType(0x08);
    /// Video data (an FLV video tag body).
    pub const VIDEO: MessageType = MessageType(0x09);
    /// Data message in the AMF3 envelope.
    pub const DATA_AMF3: MessageType = MessageType(0x0F);
    /// Shared object message in AMF3 (ignored by the node).
    pub const SHARED_OBJECT_AMF3: MessageType = MessageType(0x10);
    /// Command message in the AMF3 envelope.
    pub const COMMAND_AMF3: MessageType = MessageType(0x11);
    /// Data message (`@setDataFrame`, `onMetaData`) in AMF0.
    pub const DATA_AMF0: MessageType = MessageType(0x12);
    /// Shared object message in AMF0 (ignored by the node).
    pub const SHARED_OBJECT_AMF0: MessageType = MessageType(0x13);
    /// Command message in AMF0.
    pub const COMMAND_AMF0: MessageType = MessageType(0x14);
    /// Aggregate message (a run of FLV tags).
    pub const AGGREGATE: MessageType = MessageType(0x16);

    /// True for the protocol control types 1–6 that must travel on chunk stream 2 and message
    /// stream 0.
    pub fn is_protocol_control(self) -> bool {
        (0x01..=0x06).contains(&self.0)
    }
}

/// One reassembled RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// The chunk stream it arrived on (or should be sent on).
    pub chunk_stream_id: ChunkStreamId,
    /// Absolute timestamp in milliseconds (deltas already applied; 32-bit wrapping).
    pub timestamp: u32,
    /// What the payload is.
    pub message_type: MessageType,
    /// Which NetStream (or the NetConnection) it belongs to.
    pub message_stream_id: MessageStreamId,
    /// The message body.
    pub payload: Bytes,
}
