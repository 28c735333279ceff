//! The commands a client sends a server, parsed once into a typed [`Request`]: RTMP spec
//! §7.2.1 (NetConnection: `connect`, `createStream`, `deleteStream`) and §7.2.2 (NetStream:
//! `play`, `publish`, `pause`, `receiveAudio`, `receiveVideo`, `closeStream`), plus the FMS
//! conventions every encoder and player relies on (`releaseStream`, `FCPublish`,
//! `FCUnpublish`, `FCSubscribe`, `getStreamLength`, `_checkbw`).
//!
//! This module owns the step from a generic [`Command`] (a name and AMF values) to a
//! [`ClientCommand`] whose variant holds exactly the arguments its handler needs, and
//! [`StreamName`], the one argument whose shape decides the reply.
//!
//! # Tricky parts
//! - **A command never fails to parse.** Once the envelope has decoded ([`Command::decode`]),
//!   the name alone picks the variant, so a `publish` with a bad argument is still a
//!   `publish`: its field holds an [`ArgumentError`] and the handler chooses the refusal (a
//!   `NetStream.Publish.BadName` status to the client, not a dropped connection). Names we do
//!   not know become [`ClientCommand::Other`]; the [`Request`]'s transaction id stays with
//!   every command so that such a call can still be answered with `_error`.
//! - **Leniency is per argument and documented on each field.** Flags and numbers that real
//!   clients leave out, or send as another type, read as their spec default (`receiveAudio`
//!   with no flag is `true`, `play`'s start is -2): nothing is gained by refusing a client
//!   over them. Only arguments that change the reply (stream names) carry an error.
//! - **Query strings.** Encoders put tokens after a `?` on the app and on the stream name
//!   (`live?token=…`, `cam?key=…`). They are not part of the name: [`StreamName`] splits
//!   them off (and keeps them), [`ConnectRequest::app`] drops them. The `FC*` commands keep
//!   their argument as sent, because it is only echoed back to the same client.

use crate::amf0::Amf0Value;
use crate::caps::ClientCaps;
use crate::command::{type_name, Command, CommandError};
use crate::types::MessageType;

/// Why an argument of a command cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// The command has no such argument.
    #[error("missing {argument}")]
    Missing {
        /// Which argument (`"stream name"`, …).
        argument: &'static str,
    },
    /// The argument is not a string.
    #[error("{argument} is {found}, not a string")]
    NotString {
        /// Which argument.
        argument: &'static str,
        /// The AMF type that was found instead.
        found: &'static str,
    },
    /// A stream name with nothing left once its query string and slashes are gone.
    #[error("stream name is empty")]
    EmptyStreamName,
    /// A stream name longer than [`StreamName::MAX_LEN`].
    #[error("stream name is {len} bytes, over the {max}-byte limit")]
    StreamNameTooLong {
        /// Its length in bytes, without query string and slashes.
        len: usize,
        /// [`StreamName::MAX_LEN`].
        max: usize,
    },
    /// A publishing type other than `live`, `record` and `append`.
    #[error("unknown publishing type {0:?}")]
    UnknownPublishType(String),
    /// A string field longer than its limit (`connect`'s `app`, `tcUrl`, `flashVer`; a
    /// stream name's query string). Every such field ends up in maps, logs or the API.
    #[error("{argument} is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// Which field.
        argument: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name (`connect`'s `app`, a stream name or its query string) holding a control or
    /// otherwise unprintable character: names are logged, listed by the API and used in
    /// URLs, where a newline forges a log line and a bidi override disguises a name.
    #[error("{argument} contains a control or unprintable character")]
    Unprintable {
        /// Which field.
        argument: &'static str,
    },
}

impl ArgumentError {
    /// A short static name for the error kind, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ArgumentError::Missing { .. } => "missing_argument",
            ArgumentError::NotString { .. } => "argument_not_string",
            ArgumentError::EmptyStreamName => "empty_stream_name",
            ArgumentError::StreamNameTooLong { .. } => "stream_name_too_long",
            ArgumentError::UnknownPublishType(_) => "unknown_publish_type",
            ArgumentError::TooLong { .. } => "argument_too_long",
            ArgumentError::Unprintable { .. } => "unprintable_name",
        }
    }
}

/// A stream name as `publish` and `play` carry it, without its query string and without
/// leading or trailing slashes: never empty, at most [`StreamName::MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamName {
    /// The name proper: what the stream is known by.
    name: String,
    /// What followed the first `?` (tokens, keys), kept for whoever wants to check it.
    query: Option<String>,
}

impl StreamName {
    /// The longest name accepted, in bytes: names are map keys, logged and sent in the API,
    /// so a client does not get to make them arbitrarily large.
    pub const MAX_LEN: usize = 256;

    /// The longest query string accepted, in bytes (tokens fit with room to spare).
    pub const MAX_QUERY_LEN: usize = 1024;

    /// Splits `raw` at its first `?` and trims slashes from the name part.
    pub fn parse(raw: &str) -> Result<StreamName, ArgumentError> {
        check_printable("stream name", raw)?;
        let (name, query) = match raw.split_once('?') {
            Some((name, query)) => (name, Some(query)),
            None => (raw, None),
        };
        let name = name.trim_matches('/');
        if name.is_empty() {
            return Err(ArgumentError::EmptyStreamName);
        }
        if name.len() > Self::MAX_LEN {
            return Err(ArgumentError::StreamNameTooLong {
                len: name.len(),
                max: Self::MAX_LEN,
            });
        }
        check_len(
            "stream name query",
            query.unwrap_or(""),
            Self::MAX_QUERY_LEN,
        )?;
        Ok(StreamName {
            name: name.to_owned(),
            query: query.map(str::to_owned),
        })
    }

    /// The name without query string and slashes.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// What followed the first `?`, if there was one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
}

/// `publish`'s second argument (§7.2.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishType {
    /// Live data, not recorded; also what an absent argument means.
    Live,
    /// Recorded to a new file.
    Record,
    /// Appended to an existing recording.
    Append,
}

/// Refuses `value` when it is longer than `max` bytes.
fn check_len(argument: &'static str, value: &str, max: usize) -> Result<(), ArgumentError> {
    if value.len() > max {
        return Err(ArgumentError::TooLong {
            argument,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Refuses `value` when it holds a character that does not print as itself: C0/C1 controls
/// (newline, escape, DEL, ...), the line and paragraph separators, and the invisible format
/// characters that reorder or hide text (bidi embeddings, overrides and isolates, zero-width
/// characters, the BOM). Everything else, non-ASCII letters included, is a fine name.
fn check_printable(argument: &'static str, value: &str) -> Result<(), ArgumentError> {
    if value.chars().any(is_unprintable) {
        return Err(ArgumentError::Unprintable { argument });
    }
    Ok(())
}

/// See [`check_printable`].
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `connect`'s command object (§7.2.1.1), as much of it as a server uses.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectRequest {
    /// The application: the `app` property without its query string and surrounding
    /// slashes. Empty when it is missing or not a string, which the server refuses.
    pub app: String,
    /// The `tcUrl` property (`rtmp://host[:port]/app`), when it is a string.
    pub tc_url: Option<String>,
    /// The `flashVer` property (`FMLE/3.0 (…)`, `LNX 9,0,124,2`), when it is a string.
    pub flash_ver: Option<String>,
    /// The `objectEncoding` property (0 for AMF0, 3 for AMF3), 0 when missing or not a
    /// number. Kept as sent because the `_result` echoes it.
    pub object_encoding: f64,
    /// Its Enhanced RTMP capabilities (`capsEx`, the FourCC list and maps).
    pub caps: ClientCaps,
}

impl ConnectRequest {
    /// The longest `app` accepted, in bytes (without its query string).
    pub const MAX_APP_LEN: usize = 256;
    /// The longest `tcUrl` accepted, in bytes.
    pub const MAX_TC_URL_LEN: usize = 1024;
    /// The longest `flashVer` accepted, in bytes.
    pub const MAX_FLASH_VER_LEN: usize = 256;

    /// Checks the string fields against their limits: a server refuses a `connect` that
    /// fails, since these strings are kept for the connection's life, logged and listed.
    pub fn check(&self) -> Result<(), ArgumentError> {
        check_len("app", &self.app, Self::MAX_APP_LEN)?;
        check_printable("app", &self.app)?;
        let tc_url = self.tc_url.as_deref().unwrap_or("");
        check_len("tcUrl", tc_url, Self::MAX_TC_URL_LEN)?;
        let flash_ver = self.flash_ver.as_deref().unwrap_or("");
        check_len("flashVer", flash_ver, Self::MAX_FLASH_VER_LEN)
    }
}

/// `play`'s arguments (§7.2.2.1).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlayRequest {
    /// The stream to play.
    pub stream_name: Result<StreamName, ArgumentError>,
    /// Where to start, in milliseconds: -2 (live, else recorded; also the default), -1 (live
    /// only), or a position in a recording. Any non-number reads as -2.
    pub start: f64,
    /// How long to play, in milliseconds; -1 (the default, also for a non-number) plays to
    /// the end.
    pub duration: f64,
    /// Whether to flush a previous playlist (and send `NetStream.Play.Reset`); true unless
    /// the client sends `false`.
    pub reset: bool,
}

/// A client's command message, typed.
///
/// Variants that the client expects an answer to (`_result` or `_error`) get it under the
/// [`Request`]'s transaction id; NetStream commands are answered with `onStatus` on their
/// message stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientCommand {
    /// `connect`: attach the connection to an application.
    Connect(ConnectRequest),
    /// `createStream`: allocate a message stream; the `_result` carries its id.
    CreateStream,
    /// `releaseStream` (FMS): an encoder asking that a name be freed before it publishes it.
    ReleaseStream,
    /// `FCPublish` (FMS): announced by encoders before `publish`, answered `onFCPublish`.
    FcPublish {
        /// The first argument as sent (query string included), "" when absent or not a
        /// string: it is only echoed back in the `onFCPublish` description.
        stream_name: String,
    },
    /// `FCUnpublish` (FMS): sent by encoders when they stop, answered `onFCUnpublish`.
    FcUnpublish {
        /// As for [`ClientCommand::FcPublish`].
        stream_name: String,
    },
    /// `FCSubscribe` (FMS/CDN players): announced before `play`, answered `onFCSubscribe`.
    FcSubscribe {
        /// As for [`ClientCommand::FcPublish`].
        stream_name: String,
    },
    /// `publish`: start publishing a stream on the command's message stream.
    Publish {
        /// The stream to publish. Flash's `publish(false)` (stop) arrives here as
        /// [`ArgumentError::NotString`].
        stream_name: Result<StreamName, ArgumentError>,
        /// `live`, `record` or `append`; absent means [`PublishType::Live`].
        publish_type: Result<PublishType, ArgumentError>,
    },
    /// `play`: start playing a stream on the command's message stream.
    Play(PlayRequest),
    /// `deleteStream`: the message stream is done (its id argument is not needed: the
    /// stream is the one the connection publishes or plays).
    DeleteStream,
    /// `closeStream`: as `deleteStream`, for the stream the command arrives on.
    CloseStream,
    /// `receiveAudio`: whether the player wants audio.
    ReceiveAudio {
        /// The flag; true unless the client sends `false`.
        enabled: bool,
    },
    /// `receiveVideo`: whether the player wants video.
    ReceiveVideo {
        /// The flag; true unless the client sends `false`.
        enabled: bool,
    },
    /// `pause`: pause or resume playback.
    Pause {
        /// True to pause (also when absent or not a boolean), false to resume.
        pausing: bool,
    },
    /// `pauseRaw`: Flash's variant of `pause`, with the same arguments.
    PauseRaw {
        /// As for [`ClientCommand::Pause`].
        pausing: bool,
    },
    /// `getStreamLength`: players ask it before `play`; a live stream's length is 0.
    GetStreamLength,
    /// `_checkbw`: a bandwidth check request, answered with an empty `_result`.
    CheckBandwidth,
    /// Commands that need neither an answer nor an action: the client's own `_result` and
    /// `_error` replies, `onBWDone`, `ping`.
    Ignored {
        /// The command's name.
        name: String,
    },
    /// Any other command (`play2`, `seek`, `call`-style RPCs, …).
    Other {
        /// The command's name.
        name: String,
    },
}

impl ClientCommand {
    /// The command's name on the wire.
    pub fn name(&self) -> &str {
        match self {
            ClientCommand::Connect(_) => "connect",
            ClientCommand::CreateStream => "createStream",
            ClientCommand::ReleaseStream => "releaseStream",
            ClientCommand::FcPublish { .. } => "FCPublish",
            ClientCommand::FcUnpublish { .. } => "FCUnpublish",
            ClientCommand::FcSubscribe { .. } => "FCSubscribe",
            ClientCommand::Publish { .. } => "publish",
            ClientCommand::Play(_) => "play",
            ClientCommand::DeleteStream => "deleteStream",
            ClientCommand::CloseStream => "closeStream",
            ClientCommand::ReceiveAudio { .. } => "receiveAudio",
            ClientCommand::ReceiveVideo { .. } => "receiveVideo",
            ClientCommand::Pause { .. } => "pause",
            ClientCommand::PauseRaw { .. } => "pauseRaw",
            ClientCommand::GetStreamLength => "getStreamLength",
            ClientCommand::CheckBandwidth => "_checkbw",
            ClientCommand::Ignored { name } | ClientCommand::Other { name } => name,
        }
    }
}

/// A client's command with its transaction id: what a server dispatches on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// The id a `_result` or `_error` answer echoes; 0 when the client expects none.
    pub transaction_id: f64,
    /// The command and its arguments.
    pub command: ClientCommand,
}

impl Request {
    /// Decodes a type 20 or 17 payload ([`Command::decode`]) and types it.
    pub fn decode(message_type: MessageType, payload: &[u8]) -> Result<Request, CommandError> {
        Command::decode(message_type, payload).map(Request::from)
    }
}

impl From<Command> for Request {
    fn from(command: Command) -> Request {
        let Command {
            name,
            transaction_id,
            command_object,
            arguments,
        } = command;
        let args = Arguments(&arguments);
        let command = match name.as_str() {
            "connect" => ClientCommand::Connect(connect_request(&command_object)),
            "createStream" => ClientCommand::CreateStream,
            "releaseStream" => ClientCommand::ReleaseStream,
            "FCPublish" => ClientCommand::FcPublish {
                stream_name: args.echo(0),
            },
            "FCUnpublish" => ClientCommand::FcUnpublish {
                stream_name: args.echo(0),
            },
            "FCSubscribe" => ClientCommand::FcSubscribe {
                stream_name: args.echo(0),
            },
            "publish" => ClientCommand::Publish {
                stream_name: args.stream_name(0),
                publish_type: args.publish_type(1),
            },
            "play" => ClientCommand::Play(PlayRequest {
                stream_name: args.stream_name(0),
                start: args.number(1).unwrap_or(-2.0),
                duration: args.number(2).unwrap_or(-1.0),
                reset: args.flag(3),
            }),
            "deleteStream" => ClientCommand::DeleteStream,
            "closeStream" => ClientCommand::CloseStream,
            "receiveAudio" => ClientCommand::ReceiveAudio {
                enabled: args.flag(0),
            },
            "receiveVideo" => ClientCommand::ReceiveVideo {
                enabled: args.flag(0),
            },
            "pause" => ClientCommand::Pause {
                pausing: args.flag(0),
            },
            "pauseRaw" => ClientCommand::PauseRaw {
                pausing: args.flag(0),
            },
            "getStreamLength" => ClientCommand::GetStreamLength,
            "_checkbw" => ClientCommand::CheckBandwidth,
            "_result" | "_error" | "onBWDone" | "ping" => ClientCommand::Ignored { name },
            _ => ClientCommand::Other { name },
        };
        Request {
            transaction_id,
            command,
        }
    }
}

/// The properties of `connect`'s command object that a server uses.
fn connect_request(command_object: &Amf0Value) -> ConnectRequest {
    let object = command_object.as_object();
    let string = |key| object.and_then(|o| o.get(key)).and_then(Amf0Value::as_str);
    let app = string("app").unwrap_or("");
    let app = app.split('?').next().unwrap_or("").trim_matches('/');
    ConnectRequest {
        app: app.to_owned(),
        tc_url: string("tcUrl").map(str::to_owned),
        flash_ver: string("flashVer").map(str::to_owned),
        object_encoding: object
            .and_then(|o| o.get("objectEncoding"))
            .and_then(Amf0Value::as_number)
            .unwrap_or(0.0),
        caps: object
            .map(ClientCaps::from_connect_object)
            .unwrap_or_default(),
    }
}

/// A command's arguments (the values after the command object), read by position.
struct Arguments<'a>(&'a [Amf0Value]);

impl Arguments<'_> {
    fn string(&self, index: usize, argument: &'static str) -> Result<&str, ArgumentError> {
        let value = self
            .0
            .get(index)
            .ok_or(ArgumentError::Missing { argument })?;
        value.as_str().ok_or(ArgumentError::NotString {
            argument,
            found: type_name(value),
        })
    }

    fn stream_name(&self, index: usize) -> Result<StreamName, ArgumentError> {
        StreamName::parse(self.string(index, "stream name")?)
    }

    fn publish_type(&self, index: usize) -> Result<PublishType, ArgumentError> {
        match self.string(index, "publishing type") {
            Err(ArgumentError::Missing { .. }) => Ok(PublishType::Live),
            Err(e) => Err(e),
            Ok("live") => Ok(PublishType::Live),
            Ok("record") => Ok(PublishType::Record),
            Ok("append") => Ok(PublishType::Append),
            Ok(other) => Err(ArgumentError::UnknownPublishType(other.to_owned())),
        }
    }

    /// A string argument for echoing back: "" when absent or not a string.
    fn echo(&self, index: usize) -> String {
        self.0
            .get(index)
            .and_then(Amf0Value::as_str)
            .unwrap_or("")
            .to_owned()
    }

    fn number(&self, index: usize) -> Option<f64> {
        self.0.get(index).and_then(Amf0Value::as_number)
    }

    /// A boolean argument whose absence (or any other type) means true.
    fn flag(&self, index: usize) -> bool {
        self.0
            .get(index)
            .and_then(Amf0Value::as_bool)
            .unwrap_or(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failed test.
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::amf0::tests::arb_value;
    use crate::amf0::Amf0Object;
    use crate::vectors::*;

    /// A captured type 20 payload, typed.
    fn captured(payload: &str) -> Request {
        Request::decode(MessageType::COMMAND_AMF0, &hex(payload)).unwrap()
    }

    fn typed(name: &str, arguments: Vec<Amf0Value>) -> ClientCommand {
        Request::from(Command::new(name, 9.0, Amf0Value::Null, arguments)).command
    }

    fn request(transaction_id: f64, command: ClientCommand) -> Request {
        Request {
            transaction_id,
            command,
        }
    }

    fn name(name: &str, query: Option<&str>) -> Result<StreamName, ArgumentError> {
        Ok(StreamName {
            name: name.to_owned(),
            query: query.map(str::to_owned),
        })
    }

    fn connect(app: &str, tc_url: &str, flash_ver: &str) -> ClientCommand {
        ClientCommand::Connect(ConnectRequest {
            app: app.to_owned(),
            tc_url: Some(tc_url.to_owned()),
            flash_ver: Some(flash_ver.to_owned()),
            object_encoding: 0.0,
            caps: ClientCaps::default(),
        })
    }

    #[test]
    fn connect_string_fields_are_bounded() {
        let connect = |app: &str, tc_url: &str, flash_ver: &str| {
            let object = Amf0Object::new()
                .with("app", app)
                .with("tcUrl", tc_url)
                .with("flashVer", flash_ver);
            let command = Command::new("connect", 1.0, Amf0Value::Object(object), vec![]);
            let ClientCommand::Connect(request) = Request::from(command).command else {
                panic!("not a connect");
            };
            request.check()
        };
        let at = |n: usize| "a".repeat(n);
        assert_eq!(connect(&at(256), &at(1024), &at(256)), Ok(()));
        // The app's query string is dropped before the check.
        assert_eq!(connect(&format!("live?{}", at(2000)), "", ""), Ok(()));
        let too_long = |argument, len, max| Err(ArgumentError::TooLong { argument, len, max });
        assert_eq!(connect(&at(257), "", ""), too_long("app", 257, 256));
        assert_eq!(
            connect("live", &at(1025), ""),
            too_long("tcUrl", 1025, 1024)
        );
        assert_eq!(
            connect("live", "", &at(257)),
            too_long("flashVer", 257, 256)
        );
        assert_eq!(
            StreamName::parse(&format!("cam?{}", at(1025))),
            Err(ArgumentError::TooLong {
                argument: "stream name query",
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn real_clients_connect() {
        assert_eq!(
            captured(FFMPEG_PUBLISH_CONNECT),
            request(
                1.0,
                connect(
                    "live",
                    "rtmp://127.0.0.1:19350/live",
                    "FMLE/3.0 (compatible; Lavf59.27.100)"
                )
            )
        );
        assert_eq!(
            captured(FFMPEG_PLAY_CONNECT).command,
            connect("live", "rtmp://127.0.0.1:19351/live", "LNX 9,0,124,2")
        );
        assert_eq!(
            captured(RTMPDUMP_PLAY_WITH_DURATION[0]).command,
            connect("live", "rtmp://127.0.0.1:19463/live", "LNX 10,0,32,18")
        );
    }

    #[test]
    fn ffmpeg_publish_sequence_keeps_the_query_off_the_name() {
        let typed: Vec<Request> = FFMPEG_PUBLISH_WITH_QUERY.map(captured).into();
        let echoed = || "cam?key=abc".to_owned();
        let expected = [
            request(2.0, ClientCommand::ReleaseStream),
            request(
                3.0,
                ClientCommand::FcPublish {
                    stream_name: echoed(),
                },
            ),
            request(4.0, ClientCommand::CreateStream),
            request(
                5.0,
                ClientCommand::Publish {
                    stream_name: name("cam", Some("key=abc")),
                    publish_type: Ok(PublishType::Live),
                },
            ),
            request(
                6.0,
                ClientCommand::FcUnpublish {
                    stream_name: echoed(),
                },
            ),
            request(7.0, ClientCommand::DeleteStream),
        ];
        assert_eq!(typed, expected);
    }

    #[test]
    fn real_clients_play() {
        let play = |start, duration| {
            ClientCommand::Play(PlayRequest {
                stream_name: name("cam", None),
                start,
                duration,
                reset: true,
            })
        };
        let ffmpeg: Vec<Request> = FFMPEG_PLAY.map(captured).into();
        assert_eq!(
            ffmpeg,
            [
                request(2.0, ClientCommand::CreateStream),
                request(3.0, ClientCommand::GetStreamLength),
                request(4.0, play(-2000.0, -1.0)),
            ]
        );
        let rtmpdump: Vec<Request> = RTMPDUMP_PLAY_WITH_DURATION[1..]
            .iter()
            .map(|p| captured(p))
            .collect();
        assert_eq!(
            rtmpdump,
            [
                request(2.0, ClientCommand::CreateStream),
                request(3.0, play(0.0, 1000.0)),
                request(4.0, ClientCommand::DeleteStream),
            ]
        );
        let ClientCommand::Play(plain) = captured(RTMPDUMP_PLAY).command else {
            panic!("rtmpdump's play is not a play");
        };
        assert_eq!(
            (plain.stream_name, plain.start, plain.duration),
            (name("stream", None), 0.0, -1.0)
        );
    }

    /// The same `play` in a type 17 message, arguments behind AMF3 switches (the stream name
    /// an AMF3 string, start -2 an AMF3 integer), as an AMF3-encoding Flash client sends it.
    #[test]
    fn amf3_envelope_play() {
        let mut payload = vec![0x00];
        payload.extend_from_slice(&[0x02, 0x00, 0x04, b'p', b'l', b'a', b'y']);
        payload.extend_from_slice(&[0x00, 0x40, 0x10, 0, 0, 0, 0, 0, 0, 0x05]);
        payload.extend_from_slice(&[0x11, 0x06, 0x0D, b's', b't', b'r', b'e', b'a', b'm']);
        payload.extend_from_slice(&[0x11, 0x04, 0xFF, 0xFF, 0xFF, 0xFE]);
        let typed = Request::decode(MessageType::COMMAND_AMF3, &payload).unwrap();
        let expected = PlayRequest {
            stream_name: name("stream", None),
            start: -2.0,
            duration: -1.0,
            reset: true,
        };
        assert_eq!(typed, request(4.0, ClientCommand::Play(expected)));
        assert_eq!(
            Request::decode(MessageType::COMMAND_AMF3, &payload[1..]),
            Err(CommandError::BadAmf3Envelope { format: 0x02 })
        );
    }

    /// Commands no captured client sent, written as the spec (§7.2.2) and librtmp lay them
    /// out: a flag first, then (for pause) the position in milliseconds.
    #[test]
    fn player_controls() {
        let yes = Amf0Value::Boolean(true);
        let no = Amf0Value::Boolean(false);
        let cases = [
            (
                typed("receiveAudio", vec![no.clone()]),
                ClientCommand::ReceiveAudio { enabled: false },
            ),
            (
                typed("receiveAudio", vec![]),
                ClientCommand::ReceiveAudio { enabled: true },
            ),
            (
                typed("receiveVideo", vec![no.clone()]),
                ClientCommand::ReceiveVideo { enabled: false },
            ),
            (
                typed("receiveVideo", vec!["x".into()]),
                ClientCommand::ReceiveVideo { enabled: true },
            ),
            (
                typed("pause", vec![yes, 1234.0.into()]),
                ClientCommand::Pause { pausing: true },
            ),
            (
                typed("pause", vec![no.clone(), 1234.0.into()]),
                ClientCommand::Pause { pausing: false },
            ),
            (
                typed("pauseRaw", vec![no]),
                ClientCommand::PauseRaw { pausing: false },
            ),
            (typed("closeStream", vec![]), ClientCommand::CloseStream),
            (typed("_checkbw", vec![]), ClientCommand::CheckBandwidth),
        ];
        for (got, expected) in cases {
            assert_eq!(got, expected);
        }
        let reset = |value: Amf0Value| {
            let arguments = vec!["cam".into(), (-2.0).into(), (-1.0).into(), value];
            let ClientCommand::Play(play) = typed("play", arguments) else {
                panic!("play is not a play");
            };
            play.reset
        };
        assert!(!reset(Amf0Value::Boolean(false)));
        assert!(reset(Amf0Value::Null));
    }

    #[test]
    fn fc_commands_echo_their_argument_as_sent() {
        assert_eq!(
            typed("FCSubscribe", vec!["/cam/?t=1".into()]),
            ClientCommand::FcSubscribe {
                stream_name: "/cam/?t=1".into()
            }
        );
        assert_eq!(
            typed("FCPublish", vec![Amf0Value::Null]),
            ClientCommand::FcPublish {
                stream_name: String::new()
            }
        );
        assert_eq!(
            typed("FCUnpublish", vec![]),
            ClientCommand::FcUnpublish {
                stream_name: String::new()
            }
        );
    }

    #[test]
    fn replies_are_ignored_and_unknown_names_kept() {
        for name in ["_result", "_error", "onBWDone", "ping"] {
            assert_eq!(
                typed(name, vec![]),
                ClientCommand::Ignored { name: name.into() }
            );
        }
        for name in ["play2", "seek", "Connect", "myRpc", ""] {
            let typed = Request::from(Command::new(name, 7.0, Amf0Value::Null, vec![]));
            assert_eq!(
                typed,
                request(7.0, ClientCommand::Other { name: name.into() })
            );
            assert_eq!(typed.command.name(), name);
        }
    }

    #[test]
    fn bad_stream_names() {
        let publish = |arguments| match typed("publish", arguments) {
            ClientCommand::Publish { stream_name, .. } => stream_name,
            other => panic!("publish became {other:?}"),
        };
        let missing = ArgumentError::Missing {
            argument: "stream name",
        };
        assert_eq!(publish(vec![]), Err(missing.clone()));
        assert_eq!(missing.to_string(), "missing stream name");
        // Flash's NetStream.publish(false) means "stop"; it has no name to publish.
        let not_string = ArgumentError::NotString {
            argument: "stream name",
            found: "boolean",
        };
        assert_eq!(publish(vec![false.into()]), Err(not_string.clone()));
        assert_eq!(
            not_string.to_string(),
            "stream name is boolean, not a string"
        );
        assert_eq!(not_string.as_str(), "argument_not_string");
        for empty in ["", "/", "//", "?key=abc", "/?key=abc"] {
            assert_eq!(
                publish(vec![empty.into()]),
                Err(ArgumentError::EmptyStreamName),
                "{empty:?}"
            );
        }
        let long = "a".repeat(StreamName::MAX_LEN + 1);
        let too_long = ArgumentError::StreamNameTooLong { len: 257, max: 256 };
        assert_eq!(publish(vec![long.as_str().into()]), Err(too_long.clone()));
        assert_eq!(too_long.as_str(), "stream_name_too_long");
        // The limit counts the name only: slashes and the query string are not part of it.
        let longest = format!("/{}/?{long}", &long[1..]);
        assert_eq!(
            publish(vec![longest.as_str().into()]),
            name(&long[1..], Some(&long))
        );
        let ClientCommand::Play(play) = typed("play", vec![Amf0Value::Null, "x".into()]) else {
            panic!("play is not a play");
        };
        assert_eq!(
            play.stream_name,
            Err(ArgumentError::NotString {
                argument: "stream name",
                found: "null"
            })
        );
        assert_eq!(play.start, -2.0);
    }

    #[test]
    fn stream_names_lose_slashes_and_keep_queries() {
        let parsed = StreamName::parse("/live/cam/?key=a?b").unwrap();
        assert_eq!(parsed.as_str(), "live/cam");
        assert_eq!(parsed.query(), Some("key=a?b"));
        let plain = StreamName::parse("cam").unwrap();
        assert_eq!((plain.as_str(), plain.query()), ("cam", None));
        assert_eq!(StreamName::parse("cam?").unwrap().query(), Some(""));
    }

    #[test]
    fn publish_types() {
        let publish_type = |arguments| match typed("publish", arguments) {
            ClientCommand::Publish { publish_type, .. } => publish_type,
            other => panic!("publish became {other:?}"),
        };
        let with = |value: Amf0Value| publish_type(vec!["cam".into(), value]);
        assert_eq!(publish_type(vec!["cam".into()]), Ok(PublishType::Live));
        assert_eq!(with("live".into()), Ok(PublishType::Live));
        assert_eq!(with("record".into()), Ok(PublishType::Record));
        assert_eq!(with("append".into()), Ok(PublishType::Append));
        let unknown = with("LIVE".into()).unwrap_err();
        assert_eq!(unknown, ArgumentError::UnknownPublishType("LIVE".into()));
        assert_eq!(unknown.to_string(), "unknown publishing type \"LIVE\"");
        assert_eq!(
            with(1.0.into()),
            Err(ArgumentError::NotString {
                argument: "publishing type",
                found: "number"
            })
        );
    }

    #[test]
    fn connect_object_leniency() {
        let connect = |object: Amf0Value| {
            let ClientCommand::Connect(request) =
                Request::from(Command::new("connect", 1.0, object, vec![])).command
            else {
                panic!("connect is not a connect");
            };
            request
        };
        let empty = ConnectRequest {
            app: String::new(),
            tc_url: None,
            flash_ver: None,
            object_encoding: 0.0,
            caps: ClientCaps::default(),
        };
        assert_eq!(connect(Amf0Value::Null), empty);
        assert_eq!(connect(Amf0Object::new().with("app", 5.0).into()), empty);
        let with_query = Amf0Object::new()
            .with("app", "/live/?token=x")
            .with("objectEncoding", 3.0)
            .with("tcUrl", 1.0);
        let request = connect(Amf0Value::EcmaArray(with_query));
        assert_eq!(
            (request.app.as_str(), request.object_encoding),
            ("live", 3.0)
        );
        assert_eq!(request.tc_url, None);
    }

    /// Names the parser knows, so that arbitrary arguments reach every variant's reader.
    const NAMES: [&str; 21] = [
        "connect",
        "createStream",
        "releaseStream",
        "FCPublish",
        "FCUnpublish",
        "FCSubscribe",
        "publish",
        "play",
        "deleteStream",
        "closeStream",
        "receiveAudio",
        "receiveVideo",
        "pause",
        "pauseRaw",
        "getStreamLength",
        "_checkbw",
        "_result",
        "onBWDone",
        "play2",
        "seek",
        "x",
    ];

    fn arb_argument() -> impl Strategy<Value = Amf0Value> {
        prop_oneof![
            arb_value(),
            "[a-z/?=]{0,12}".prop_map(Amf0Value::String),
            any::<f64>().prop_map(Amf0Value::Number),
        ]
    }

    #[test]
    fn control_and_invisible_characters_are_refused_in_names() {
        for bad in [
            "cam\nINFO forged",
            "a\rb",
            "\u{1b}[31mred",
            "x\u{7f}",
            "rtl\u{202e}gpj",
            "zero\u{200b}width",
            "\u{feff}bom",
            "q?t=\u{0}",
        ] {
            assert_eq!(
                StreamName::parse(bad),
                Err(ArgumentError::Unprintable {
                    argument: "stream name"
                }),
                "{bad:?}"
            );
        }
        for good in [
            "cam",
            "a/b",
            "caméra",
            "名前",
            "with space",
            "x?token=a%20b",
        ] {
            assert!(StreamName::parse(good).is_ok(), "{good:?}");
        }
        let mut connect = ConnectRequest {
            app: "live\n".into(),
            tc_url: None,
            flash_ver: None,
            object_encoding: 0.0,
            caps: ClientCaps::default(),
        };
        assert_eq!(
            connect.check(),
            Err(ArgumentError::Unprintable { argument: "app" })
        );
        assert_eq!(
            connect.check().map_err(|e| e.as_str()),
            Err("unprintable_name")
        );
        connect.app = "live".into();
        assert_eq!(connect.check(), Ok(()));
    }

    proptest! {
        #[test]
        fn typing_never_panics_and_keeps_name_and_id(
            name in prop_oneof![proptest::sample::select(&NAMES[..]).prop_map(String::from), ".{0,12}"],
            transaction_id in any::<f64>(),
            command_object in arb_argument(),
            arguments in proptest::collection::vec(arb_argument(), 0..6),
        ) {
            let command = Command::new(name.clone(), transaction_id, command_object, arguments);
            let request = Request::from(command);
            prop_assert_eq!(request.command.name(), name.as_str());
            prop_assert_eq!(request.transaction_id.to_bits(), transaction_id.to_bits());
            let stream_name = match &request.command {
                ClientCommand::Publish { stream_name, .. } => Some(stream_name),
                ClientCommand::Play(play) => Some(&play.stream_name),
                _ => None,
            };
            if let Some(Ok(stream_name)) = stream_name {
                let name = stream_name.as_str();
                prop_assert!(!name.is_empty() && name.len() <= StreamName::MAX_LEN);
                prop_assert!(!name.contains('?') && !name.starts_with('/') && !name.ends_with('/'));
                prop_assert!(!name.chars().any(is_unprintable));
            }
        }

        #[test]
        fn a_name_is_accepted_only_when_every_character_prints(raw in "\\PC{0,8}[\\x00-\\x1f\\x7f\\u{85}\\u{2028}\\u{202e}\\u{200b}\\u{feff}]?\\PC{0,8}") {
            let printable = !raw.chars().any(is_unprintable);
            match StreamName::parse(&raw) {
                Err(ArgumentError::Unprintable { .. }) => prop_assert!(!printable),
                Ok(name) => {
                    prop_assert!(printable);
                    prop_assert!(!name.as_str().chars().any(is_unprintable));
                }
                Err(_) => {}
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            message_type in prop_oneof![Just(17u8), Just(20), any::<u8>()],
        ) {
            let _ = Request::decode(MessageType(message_type), &bytes);
        }
    }
}
