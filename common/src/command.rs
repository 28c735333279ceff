//! Command messages (`connect`, `createStream`, `publish`, `_result`, `onStatus`, …) and data
//! messages (`@setDataFrame`, `onMetaData`): RTMP spec §7.1.1 (message types 20/17 and 18/15)
//! and §7.2 (the NetConnection and NetStream commands).
//!
//! This module owns [`Command`] and [`DataMessage`]: parsing them out of a message payload,
//! encoding them (always AMF0), the reply builders the node needs (`_result`, `_error`,
//! `onStatus` with a [`status_info`] object), and in [`client`] the requests a client sends,
//! for the load tester.
//!
//! # Tricky parts
//! - **AMF3 envelope.** Types 17 and 15 are not AMF3 documents: they are one format byte
//!   (0x00) followed by ordinary AMF0, in which individual values may switch to AMF3 with the
//!   0x11 marker (handled by [`crate::amf0`]). A first byte other than 0x00 is rejected rather
//!   than skipped, so that an AMF0 body sent with the wrong type id is not silently misread.
//! - **Leniency.** The command name must be a string and a transaction id, when present, a
//!   number: anything else is garbage. A missing transaction id reads as 0 and a missing command
//!   object as `null`, because nothing is gained by dropping a client over them.
//! - **Metadata.** A publisher sends `@setDataFrame, onMetaData, {…}`; players must receive
//!   `onMetaData, {…}` ([`DataMessage::player_metadata`]).

use bytes::{Bytes, BytesMut};

use crate::amf0::{self, Amf0Object, Amf0Reader, Amf0Value, AmfError};
use crate::types::MessageType;

/// Errors from parsing command and data messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The AMF body did not decode.
    #[error("bad AMF in message body: {0}")]
    Amf(#[from] AmfError),
    /// The message type is not one this parser handles (20/17 for commands, 18/15 for data).
    #[error("message type {message_type} is not a command or data message")]
    WrongMessageType {
        /// The type id that was passed in.
        message_type: u8,
    },
    /// A type 17/15 message whose first byte is not the 0x00 format byte.
    #[error("AMF3 envelope starts with {format:#04x}, not 0x00")]
    BadAmf3Envelope {
        /// The first byte of the payload.
        format: u8,
    },
    /// A command message with no values at all.
    #[error("command message has no name")]
    MissingName,
    /// The first value of a command message is not a string.
    #[error("command name is {found}, not a string")]
    NameNotString {
        /// The AMF type that was found instead.
        found: &'static str,
    },
    /// The second value of a command message is not a number.
    #[error("transaction id of `{name}` is {found}, not a number")]
    TransactionIdNotNumber {
        /// The command's name.
        name: String,
        /// The AMF type that was found instead.
        found: &'static str,
    },
}

impl CommandError {
    /// A short static name for the error kind, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandError::Amf(e) => e.as_str(),
            CommandError::WrongMessageType { .. } => "wrong_message_type",
            CommandError::BadAmf3Envelope { .. } => "bad_amf3_envelope",
            CommandError::MissingName => "missing_name",
            CommandError::NameNotString { .. } => "name_not_string",
            CommandError::TransactionIdNotNumber { .. } => "transaction_id_not_number",
        }
    }
}

/// A command message: a name, a transaction id that the reply echoes, a command object
/// (`null` for most NetStream commands) and optional arguments (§7.1.1, §7.2).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `connect`, `createStream`, `publish`, `_result`, `onStatus`, …
    pub name: String,
    /// Matches a reply to its request; 0 when no reply is expected.
    pub transaction_id: f64,
    /// The command object: connection properties for `connect`, `null` for most others.
    pub command_object: Amf0Value,
    /// Everything after the command object (stream name, publishing type, info object, …).
    pub arguments: Vec<Amf0Value>,
}

impl Command {
    /// A command from its parts.
    pub fn new(
        name: impl Into<String>,
        transaction_id: f64,
        command_object: Amf0Value,
        arguments: Vec<Amf0Value>,
    ) -> Self {
        Command {
            name: name.into(),
            transaction_id,
            command_object,
            arguments,
        }
    }

    /// Parses a type 20 (AMF0) or type 17 (AMF3 envelope: one leading format byte 0x00 then
    /// AMF0, possibly with 0x11 AMF3 switches) payload.
    pub fn decode(message_type: MessageType, payload: &[u8]) -> Result<Command, CommandError> {
        let body = match message_type {
            MessageType::COMMAND_AMF0 => payload,
            MessageType::COMMAND_AMF3 => strip_amf3_envelope(payload)?,
            other => {
                return Err(CommandError::WrongMessageType {
                    message_type: other.0,
                })
            }
        };
        let mut reader = Amf0Reader::new(body);
        let name = match reader.read_value()? {
            None => return Err(CommandError::MissingName),
            Some(Amf0Value::String(s) | Amf0Value::LongString(s)) => s,
            Some(other) => {
                return Err(CommandError::NameNotString {
                    found: type_name(&other),
                })
            }
        };
        let transaction_id = match reader.read_value()? {
            None => 0.0,
            Some(Amf0Value::Number(n)) => n,
            Some(other) => {
                return Err(CommandError::TransactionIdNotNumber {
                    name,
                    found: type_name(&other),
                })
            }
        };
        let command_object = reader.read_value()?.unwrap_or(Amf0Value::Null);
        let mut arguments = Vec::new();
        while let Some(value) = reader.read_value()? {
            arguments.push(value);
        }
        Ok(Command {
            name,
            transaction_id,
            command_object,
            arguments,
        })
    }

    /// The AMF0 body of a type 20 message. We never send the AMF3 envelope: every client
    /// reads AMF0.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        amf0::encode(&Amf0Value::String(self.name.clone()), &mut out);
        amf0::encode(&Amf0Value::Number(self.transaction_id), &mut out);
        amf0::encode(&self.command_object, &mut out);
        amf0::encode_all(&self.arguments, &mut out);
        out.freeze()
    }

    /// `onStatus` with transaction id 0, null command object and the info object.
    pub fn on_status(info: Amf0Object) -> Command {
        Command::new(
            "onStatus",
            0.0,
            Amf0Value::Null,
            vec![Amf0Value::Object(info)],
        )
    }

    /// A `_result` reply to the request with `transaction_id`.
    pub fn result(
        transaction_id: f64,
        command_object: Amf0Value,
        arguments: Vec<Amf0Value>,
    ) -> Command {
        Command::new("_result", transaction_id, command_object, arguments)
    }

    /// An `_error` reply to the request with `transaction_id`.
    pub fn error(
        transaction_id: f64,
        command_object: Amf0Value,
        arguments: Vec<Amf0Value>,
    ) -> Command {
        Command::new("_error", transaction_id, command_object, arguments)
    }

    /// The first argument as a string (publish/play stream name, releaseStream name, ...).
    pub fn first_string_argument(&self) -> Option<&str> {
        self.arguments.first().and_then(Amf0Value::as_str)
    }
}

/// `{level, code, description}` as players expect in onStatus / _error info objects.
pub fn status_info(level: &str, code: &str, description: &str) -> Amf0Object {
    Amf0Object::new()
        .with("level", level)
        .with("code", code)
        .with("description", description)
}

/// A data message (§7.1.2): a list of AMF values, usually a handler name first
/// (`@setDataFrame`, `onMetaData`, `onTextData`, …).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataMessage {
    /// The values in wire order.
    pub values: Vec<Amf0Value>,
}

impl DataMessage {
    /// Parses a type 18 (AMF0) or type 15 (AMF3 envelope byte then AMF0) payload.
    pub fn decode(message_type: MessageType, payload: &[u8]) -> Result<DataMessage, CommandError> {
        let body = match message_type {
            MessageType::DATA_AMF0 => payload,
            MessageType::DATA_AMF3 => strip_amf3_envelope(payload)?,
            other => {
                return Err(CommandError::WrongMessageType {
                    message_type: other.0,
                })
            }
        };
        Ok(DataMessage {
            values: amf0::decode_all(body)?,
        })
    }

    /// The AMF0 body of a type 18 message.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        amf0::encode_all(&self.values, &mut out);
        out.freeze()
    }

    /// For a publisher's `@setDataFrame, onMetaData, {..}`: the `onMetaData, {..}` that players
    /// must get (the @setDataFrame value stripped); also accepts a bare `onMetaData`. None for
    /// other data messages.
    pub fn player_metadata(&self) -> Option<DataMessage> {
        let values = match self.values.first()?.as_str()? {
            "@setDataFrame" => self.values.get(1..)?,
            _ => &self.values[..],
        };
        if values.first()?.as_str()? != "onMetaData" {
            return None;
        }
        Some(DataMessage {
            values: values.to_vec(),
        })
    }
}

/// The AMF0 body inside a type 17/15 payload. An empty payload stays empty so the caller
/// reports what is missing.
fn strip_amf3_envelope(payload: &[u8]) -> Result<&[u8], CommandError> {
    match payload.split_first() {
        None => Ok(payload),
        Some((0x00, body)) => Ok(body),
        Some((&format, _)) => Err(CommandError::BadAmf3Envelope { format }),
    }
}

/// The AMF type name of a value, for error messages.
pub(crate) fn type_name(value: &Amf0Value) -> &'static str {
    match value {
        Amf0Value::Number(_) => "number",
        Amf0Value::Boolean(_) => "boolean",
        Amf0Value::String(_) => "string",
        Amf0Value::Object(_) => "object",
        Amf0Value::Null => "null",
        Amf0Value::Undefined => "undefined",
        Amf0Value::Reference(_) => "reference",
        Amf0Value::EcmaArray(_) => "ECMA array",
        Amf0Value::StrictArray(_) => "strict array",
        Amf0Value::Date { .. } => "date",
        Amf0Value::LongString(_) => "long string",
        Amf0Value::XmlDocument(_) => "XML document",
        Amf0Value::TypedObject { .. } => "typed object",
    }
}

/// The requests a client sends (§7.2.1, §7.2.2, plus the FMLE/OBS `releaseStream` and
/// `FCPublish` extensions), as the load tester issues them.
///
/// Which message stream each goes on is the caller's business: `connect`, `createStream`,
/// `releaseStream`, `FCPublish` and `deleteStream` on the NetConnection (stream 0),
/// `publish` and `play` on the stream `createStream` returned.
pub mod client {
    use super::Command;
    use crate::amf0::{Amf0Object, Amf0Value};
    use crate::types::MessageStreamId;

    /// The `flashVer` we announce: the `FMLE/` prefix tells servers that look at it that we
    /// are an encoder-style client.
    pub const FLASH_VERSION: &str = "FMLE/3.0 (compatible; corecast)";

    /// `connect` to application `app` at `tc_url` (`rtmp://host[:port]/app`), with the
    /// properties ffmpeg sends, AMF0 object encoding.
    pub fn connect(transaction_id: f64, app: &str, tc_url: &str) -> Command {
        let properties = Amf0Object::new()
            .with("app", app)
            .with("type", "nonprivate")
            .with("flashVer", FLASH_VERSION)
            .with("tcUrl", tc_url)
            .with("fpad", false)
            // Bit flags from the spec's connect table: the values Flash Player and ffmpeg
            // send (all audio codecs, all video codecs, seek support).
            .with("capabilities", 15.0)
            .with("audioCodecs", 4071.0)
            .with("videoCodecs", 252.0)
            .with("videoFunction", 1.0)
            .with("objectEncoding", 0.0);
        Command::new(
            "connect",
            transaction_id,
            Amf0Value::Object(properties),
            Vec::new(),
        )
    }

    /// `createStream`; the `_result` carries the new message stream id.
    pub fn create_stream(transaction_id: f64) -> Command {
        Command::new("createStream", transaction_id, Amf0Value::Null, Vec::new())
    }

    /// `publish` of stream `name` as a live stream.
    pub fn publish(transaction_id: f64, name: &str) -> Command {
        Command::new(
            "publish",
            transaction_id,
            Amf0Value::Null,
            vec![name.into(), "live".into()],
        )
    }

    /// `play` of stream `name`, start -2: the live stream if there is one, else a recording.
    pub fn play(transaction_id: f64, name: &str) -> Command {
        Command::new(
            "play",
            transaction_id,
            Amf0Value::Null,
            vec![name.into(), (-2.0).into()],
        )
    }

    /// `releaseStream`, which FMLE-style encoders send before publishing `name`.
    pub fn release_stream(transaction_id: f64, name: &str) -> Command {
        Command::new(
            "releaseStream",
            transaction_id,
            Amf0Value::Null,
            vec![name.into()],
        )
    }

    /// `FCPublish`, which FMLE-style encoders send before publishing `name`.
    pub fn fc_publish(transaction_id: f64, name: &str) -> Command {
        Command::new(
            "FCPublish",
            transaction_id,
            Amf0Value::Null,
            vec![name.into()],
        )
    }

    /// `FCUnpublish`, which FMLE-style encoders send when they stop publishing `name`.
    pub fn fc_unpublish(transaction_id: f64, name: &str) -> Command {
        Command::new(
            "FCUnpublish",
            transaction_id,
            Amf0Value::Null,
            vec![name.into()],
        )
    }

    /// `deleteStream` of the stream `createStream` returned.
    pub fn delete_stream(transaction_id: f64, stream_id: MessageStreamId) -> Command {
        Command::new(
            "deleteStream",
            transaction_id,
            Amf0Value::Null,
            vec![f64::from(stream_id.0).into()],
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failed test.
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::MessageStreamId;
    use crate::vectors::*;

    fn amf0(name: &str, payload: &[u8]) -> Command {
        let command = Command::decode(MessageType::COMMAND_AMF0, payload).unwrap();
        assert_eq!(command.name, name);
        command
    }

    #[test]
    fn ffmpeg_publisher_connect() {
        let command = amf0("connect", &hex(FFMPEG_PUBLISH_CONNECT));
        assert_eq!(command.transaction_id, 1.0);
        assert!(command.arguments.is_empty());
        let properties = command.command_object.as_object().unwrap();
        let string = |key| properties.get(key).and_then(Amf0Value::as_str);
        assert_eq!(string("app"), Some("live"));
        assert_eq!(string("type"), Some("nonprivate"));
        assert_eq!(
            string("flashVer"),
            Some("FMLE/3.0 (compatible; Lavf59.27.100)")
        );
        assert_eq!(string("tcUrl"), Some("rtmp://127.0.0.1:19350/live"));
        assert_eq!(properties.0.len(), 4);
        // Re-encoding gives back the captured bytes.
        assert_eq!(command.encode().to_vec(), hex(FFMPEG_PUBLISH_CONNECT));
    }

    #[test]
    fn ffmpeg_player_connect() {
        let command = amf0("connect", &hex(FFMPEG_PLAY_CONNECT));
        let properties = command.command_object.as_object().unwrap();
        let number = |key| properties.get(key).and_then(Amf0Value::as_number);
        assert_eq!(
            properties.get("flashVer").and_then(Amf0Value::as_str),
            Some("LNX 9,0,124,2")
        );
        assert_eq!(
            properties.get("fpad").and_then(Amf0Value::as_bool),
            Some(false)
        );
        assert_eq!(number("capabilities"), Some(15.0));
        assert_eq!(number("audioCodecs"), Some(4071.0));
        assert_eq!(number("videoCodecs"), Some(252.0));
        assert_eq!(number("videoFunction"), Some(1.0));
        assert_eq!(command.encode().to_vec(), hex(FFMPEG_PLAY_CONNECT));
    }

    #[test]
    fn ffmpeg_fmle_publish_sequence() {
        let release = amf0(
            "releaseStream",
            &hex("02000d72656c6561736553747265616d0040000000000000000502000673747265616d"),
        );
        assert_eq!(release.transaction_id, 2.0);
        assert_eq!(release.command_object, Amf0Value::Null);
        assert_eq!(release.first_string_argument(), Some("stream"));

        let fc_publish = amf0(
            "FCPublish",
            &hex("02000946435075626c6973680040080000000000000502000673747265616d"),
        );
        assert_eq!(fc_publish.transaction_id, 3.0);
        assert_eq!(fc_publish.first_string_argument(), Some("stream"));

        let create = amf0(
            "createStream",
            &hex("02000c63726561746553747265616d00401000000000000005"),
        );
        assert_eq!(create.transaction_id, 4.0);
        assert!(create.arguments.is_empty());
        assert_eq!(create.first_string_argument(), None);

        let publish = amf0(
            "publish",
            &hex("0200077075626c6973680040140000000000000502000673747265616d0200046c697665"),
        );
        assert_eq!(publish.transaction_id, 5.0);
        assert_eq!(publish.arguments, vec!["stream".into(), "live".into()]);
    }

    #[test]
    fn ffmpeg_and_rtmpdump_play() {
        let play = amf0(
            "play",
            &hex("020004706c61790040100000000000000502000673747265616d00c09f400000000000"),
        );
        assert_eq!(play.transaction_id, 4.0);
        assert_eq!(play.arguments, vec!["stream".into(), (-2000.0).into()]);

        let length = amf0(
            "getStreamLength",
            &hex("02000f67657453747265616d4c656e6774680040080000000000000502000673747265616d"),
        );
        assert_eq!(length.first_string_argument(), Some("stream"));

        let play = amf0("play", &hex(RTMPDUMP_PLAY));
        assert_eq!(play.transaction_id, 3.0);
        assert_eq!(play.arguments, vec!["stream".into(), 0.0.into()]);
    }

    /// A type 17 `play` as an AMF3-encoding client sends it: format byte, AMF0 name,
    /// transaction id and null, then each argument behind a 0x11 switch (the stream name as
    /// an AMF3 string, start -2 as an AMF3 integer, and an anonymous dynamic object).
    #[test]
    fn amf3_envelope_command() {
        let mut payload = vec![0x00];
        payload.extend_from_slice(&[0x02, 0x00, 0x04, b'p', b'l', b'a', b'y']);
        payload.extend_from_slice(&[0x00, 0x40, 0x10, 0, 0, 0, 0, 0, 0]);
        payload.push(0x05);
        payload.extend_from_slice(&[0x11, 0x06, 0x0D, b's', b't', b'r', b'e', b'a', b'm']);
        payload.extend_from_slice(&[0x11, 0x04, 0xFF, 0xFF, 0xFF, 0xFE]);
        payload.extend_from_slice(&[0x11, 0x0A, 0x0B, 0x01, 0x07, b'a', b'b', b'r']);
        payload.extend_from_slice(&[0x03, 0x01]);
        let command = Command::decode(MessageType::COMMAND_AMF3, &payload).unwrap();
        assert_eq!(
            command,
            Command::new(
                "play",
                4.0,
                Amf0Value::Null,
                vec![
                    "stream".into(),
                    (-2.0).into(),
                    Amf0Value::Object(Amf0Object::new().with("abr", true)),
                ],
            )
        );
        // The same body without the envelope byte is not a valid type 17 message…
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF3, &payload[1..]),
            Err(CommandError::BadAmf3Envelope { format: 0x02 })
        );
        // …but is a valid type 20 one.
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF0, &payload[1..]).unwrap(),
            command
        );
    }

    #[test]
    fn on_status_bytes() {
        let command = Command::on_status(status_info("status", "NetStream.Play.Start", "go"));
        let mut expected = hex("0200086f6e5374617475730000000000000000000503");
        expected.extend_from_slice(&hex("00056c6576656c0200067374617475730004636f6465020014"));
        expected.extend_from_slice(b"NetStream.Play.Start");
        expected.extend_from_slice(&hex("000b6465736372697074696f6e020002"));
        expected.extend_from_slice(b"go");
        expected.extend_from_slice(&[0x00, 0x00, 0x09]);
        assert_eq!(command.encode().to_vec(), expected);
    }

    #[test]
    fn replies_and_client_requests_round_trip() {
        let commands = vec![
            Command::result(
                1.0,
                Amf0Value::Object(Amf0Object::new().with("fmsVer", "FMS/3,0,1,123")),
                vec![Amf0Value::Object(status_info(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                ))],
            ),
            Command::error(
                5.0,
                Amf0Value::Null,
                vec![Amf0Value::Object(status_info(
                    "error",
                    "NetStream.Publish.BadName",
                    "taken",
                ))],
            ),
            Command::on_status(status_info("status", "NetStream.Publish.Start", "")),
            client::connect(1.0, "live", "rtmp://example.invalid/live"),
            client::create_stream(2.0),
            client::publish(3.0, "cam"),
            client::play(4.0, "cam"),
            client::release_stream(5.0, "cam"),
            client::fc_publish(6.0, "cam"),
            client::fc_unpublish(7.0, "cam"),
            client::delete_stream(8.0, MessageStreamId(1)),
        ];
        for command in commands {
            let bytes = command.encode();
            assert_eq!(
                Command::decode(MessageType::COMMAND_AMF0, &bytes).unwrap(),
                command
            );
        }
    }

    #[test]
    fn client_requests_carry_what_servers_expect() {
        let connect = client::connect(1.0, "live", "rtmp://h/live");
        let properties = connect.command_object.as_object().unwrap();
        assert_eq!(
            properties.get("flashVer").and_then(Amf0Value::as_str),
            Some("FMLE/3.0 (compatible; corecast)")
        );
        assert_eq!(
            properties
                .get("objectEncoding")
                .and_then(Amf0Value::as_number),
            Some(0.0)
        );
        assert_eq!(
            properties.get("tcUrl").and_then(Amf0Value::as_str),
            Some("rtmp://h/live")
        );
        assert_eq!(
            client::publish(3.0, "cam").arguments,
            vec!["cam".into(), "live".into()]
        );
        assert_eq!(
            client::play(3.0, "cam").arguments,
            vec!["cam".into(), (-2.0).into()]
        );
        assert_eq!(
            client::delete_stream(9.0, MessageStreamId(1)).arguments,
            vec![1.0.into()]
        );
        assert_eq!(client::fc_publish(1.0, "cam").name, "FCPublish");
        assert_eq!(client::release_stream(1.0, "cam").name, "releaseStream");
    }

    #[test]
    fn missing_trailing_parts_are_defaulted() {
        let name_only = [0x02, 0x00, 0x01, b'x'];
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF0, &name_only).unwrap(),
            Command::new("x", 0.0, Amf0Value::Null, vec![])
        );
        let no_object = [0x02, 0x00, 0x01, b'x', 0x00, 0x40, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF0, &no_object).unwrap(),
            Command::new("x", 2.0, Amf0Value::Null, vec![])
        );
    }

    #[test]
    fn truncated_commands_are_errors() {
        let bytes = hex(FFMPEG_PUBLISH_CONNECT);
        // Cuts right after the name (10 bytes) or transaction id (19) leave a valid, shorter
        // command; every other cut lands inside a value.
        for len in 1..bytes.len() {
            let result = Command::decode(MessageType::COMMAND_AMF0, &bytes[..len]);
            if len == 10 || len == 19 {
                assert!(result.is_ok(), "prefix {len}");
            } else {
                assert!(
                    matches!(result, Err(CommandError::Amf(AmfError::Truncated { .. }))),
                    "prefix {len}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_commands_are_errors() {
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF0, &[]),
            Err(CommandError::MissingName)
        );
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF3, &[0x00]),
            Err(CommandError::MissingName)
        );
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF0, &hex("003ff0000000000000")),
            Err(CommandError::NameNotString { found: "number" })
        );
        let err = Command::decode(
            MessageType::COMMAND_AMF0,
            &hex("020007636f6e6e6563740502000161"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            CommandError::TransactionIdNotNumber {
                name: "connect".into(),
                found: "null"
            }
        );
        assert_eq!(err.as_str(), "transaction_id_not_number");
        let err = Command::decode(MessageType::COMMAND_AMF0, &[0x02, 0x00, 0x01, b'x', 0x20])
            .unwrap_err();
        assert_eq!(
            err,
            CommandError::Amf(AmfError::UnknownMarker {
                marker: 0x20,
                offset: 4
            })
        );
        assert_eq!(err.as_str(), "unknown_marker");
        assert_eq!(
            Command::decode(MessageType::DATA_AMF0, &hex(RTMPDUMP_PLAY)),
            Err(CommandError::WrongMessageType { message_type: 18 })
        );
        assert_eq!(
            Command::decode(MessageType::COMMAND_AMF3, &[0x03, 0x05]),
            Err(CommandError::BadAmf3Envelope { format: 0x03 })
        );
    }

    #[test]
    fn ffmpeg_set_data_frame_becomes_on_metadata() {
        let payload = hex(FFMPEG_SET_DATA_FRAME);
        let data = DataMessage::decode(MessageType::DATA_AMF0, &payload).unwrap();
        assert_eq!(data.values.len(), 3);
        assert_eq!(data.values[0].as_str(), Some("@setDataFrame"));
        assert_eq!(data.encode().to_vec(), payload);

        let metadata = data.player_metadata().unwrap();
        assert_eq!(metadata.values.len(), 2);
        assert_eq!(metadata.values[0].as_str(), Some("onMetaData"));
        let Amf0Value::EcmaArray(properties) = &metadata.values[1] else {
            panic!("metadata is not an ECMA array: {:?}", metadata.values[1]);
        };
        let number = |key| properties.get(key).and_then(Amf0Value::as_number);
        assert_eq!(number("duration"), Some(0.0));
        assert_eq!(number("audiodatarate"), Some(67.3828125));
        assert_eq!(number("audiosamplerate"), Some(44_100.0));
        assert_eq!(number("audiosamplesize"), Some(16.0));
        assert_eq!(number("audiocodecid"), Some(10.0));
        assert_eq!(
            properties.get("stereo").and_then(Amf0Value::as_bool),
            Some(false)
        );
        assert_eq!(
            properties.get("encoder").and_then(Amf0Value::as_str),
            Some("Lavf59.27.100")
        );
        // What players get is the publisher's bytes minus the 16-byte "@setDataFrame" string.
        assert_eq!(metadata.encode().to_vec(), payload[16..].to_vec());
        // A bare onMetaData passes through unchanged.
        assert_eq!(metadata.player_metadata(), Some(metadata.clone()));
    }

    #[test]
    fn other_data_messages_are_not_metadata() {
        let cases = [
            vec![],
            vec![Amf0Value::from("onTextData"), Amf0Object::new().into()],
            vec![Amf0Value::from("@setDataFrame"), "onCuePoint".into()],
            vec![Amf0Value::from("@setDataFrame")],
            vec![Amf0Value::Null, "onMetaData".into()],
        ];
        for values in cases {
            assert_eq!(DataMessage { values }.player_metadata(), None);
        }
    }

    #[test]
    fn data_message_types() {
        let mut payload = vec![0x00];
        payload.extend_from_slice(&hex("02000a6f6e4d65746144617461"));
        payload.extend_from_slice(&[0x11, 0x0A, 0x0B, 0x01, 0x03, b'w', 0x04, 0x82, 0x00, 0x01]);
        let data = DataMessage::decode(MessageType::DATA_AMF3, &payload).unwrap();
        assert_eq!(
            data.values,
            vec![
                "onMetaData".into(),
                Amf0Value::Object(Amf0Object::new().with("w", 256.0)),
            ]
        );
        assert_eq!(
            DataMessage::decode(MessageType::DATA_AMF3, &[]).unwrap(),
            DataMessage::default()
        );
        assert_eq!(
            DataMessage::decode(MessageType::COMMAND_AMF0, &[0x05]),
            Err(CommandError::WrongMessageType { message_type: 20 })
        );
        assert_eq!(
            DataMessage::decode(MessageType::DATA_AMF0, &[0x02, 0x00]),
            Err(CommandError::Amf(AmfError::Truncated { offset: 1 }))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            message_type in prop_oneof![Just(15u8), Just(17), Just(18), Just(20), any::<u8>()],
        ) {
            let _ = Command::decode(MessageType(message_type), &bytes);
            let _ = DataMessage::decode(MessageType(message_type), &bytes);
        }

        #[test]
        fn commands_round_trip(
            name in "[a-zA-Z_@]{1,16}",
            transaction_id in 0u32..1_000_000,
            stream in "[a-z0-9/_-]{0,24}",
            with_object in any::<bool>(),
        ) {
            let command_object = if with_object {
                Amf0Value::Object(Amf0Object::new().with("app", stream.as_str()))
            } else {
                Amf0Value::Null
            };
            let command = Command::new(
                name,
                f64::from(transaction_id),
                command_object,
                vec![stream.into()],
            );
            let decoded = Command::decode(MessageType::COMMAND_AMF0, &command.encode());
            prop_assert_eq!(decoded, Ok(command));
        }
    }
}
