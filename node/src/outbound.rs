//! `Outbound`: one connection's way out — its own chunk encoder for session messages, and the
//! [`SubscriberQueue`] shared with the stream replica that feeds it media.
//!
//! Session messages (command replies, status, control) are encoded with the connection's own
//! [`ChunkEncoder`] into a pending buffer and queued as one item on [`Outbound::flush`], so a
//! burst of replies (connect's four messages) leaves in one write. Media frames are queued
//! pre-encoded on chunk streams this encoder never uses, so the two never disturb each
//! other's header compression.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use corecast_common::chunk::ChunkEncoder;
use corecast_common::command::Command;
use corecast_common::control::ControlMessage;
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

use crate::queue::{QueueLimits, SubscriberQueue};

/// One connection's outbound side.
pub struct Outbound {
    /// Shared with the connection's writer and with the stream replica (as a player).
    pub queue: Rc<RefCell<SubscriberQueue>>,
    /// Set while the zero-delay send pass may write this connection's socket
    /// ([`crate::sendpass`]).
    pub pass: Rc<RefCell<Option<crate::sendpass::PassTarget>>>,
    encoder: RefCell<ChunkEncoder>,
    pending: RefCell<BytesMut>,
}

impl Outbound {
    /// A fresh outbound side.
    pub fn new(limits: QueueLimits) -> Rc<Outbound> {
        Rc::new(Outbound {
            queue: Rc::new(RefCell::new(SubscriberQueue::new(limits))),
            pass: Rc::default(),
            encoder: RefCell::new(ChunkEncoder::new()),
            pending: RefCell::new(BytesMut::new()),
        })
    }

    /// The outbound side of an HTTP-FLV viewer: frames leave as FLV tags, session messages
    /// are dropped (see [`SubscriberQueue::new_flv`]).
    pub fn new_flv(limits: QueueLimits) -> Rc<Outbound> {
        Rc::new(Outbound {
            queue: Rc::new(RefCell::new(SubscriberQueue::new_flv(limits))),
            pass: Rc::default(),
            encoder: RefCell::new(ChunkEncoder::new()),
            pending: RefCell::new(BytesMut::new()),
        })
    }

    /// Encodes a message into the pending buffer.
    pub fn send(&self, message: &RtmpMessage) {
        self.encoder
            .borrow_mut()
            .encode(message, &mut self.pending.borrow_mut());
    }

    /// Encodes a protocol control or user control message.
    pub fn send_control(&self, control: &ControlMessage) {
        self.send(&control.to_message());
    }

    /// Encodes a command on the command chunk stream of `stream`.
    pub fn send_command(&self, stream: MessageStreamId, command: &Command) {
        self.send(&RtmpMessage {
            chunk_stream_id: ChunkStreamId::COMMAND,
            timestamp: 0,
            message_type: MessageType::COMMAND_AMF0,
            message_stream_id: stream,
            payload: command.encode(),
        });
    }

    /// Queues everything encoded since the last flush as one item.
    pub fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            // A copy at its own size: a split would share, and pin, the encoder's whole buffer.
            let bytes = bytes::Bytes::copy_from_slice(&pending);
            // Given back rather than cleared: replies are rare after `play`, and every
            // player keeping its `connect` burst's buffer adds up (issue 19).
            *pending = BytesMut::new();
            self.queue.borrow_mut().push_control(bytes);
        }
    }

    /// The out chunk size this connection's encoder uses.
    pub fn chunk_size(&self) -> u32 {
        self.encoder.borrow().chunk_size()
    }
}
