//! Enhanced RTMP v2 capability negotiation in `connect` (veovera enhanced-rtmp v2, "Enhancing
//! NetConnection connect Command") and the `NetConnection.Connect.ReconnectRequest` status
//! ("Reconnect Request").
//!
//! A client lists what it supports in `connect`'s command object: `capsEx` (extended
//! capability bits, [`CapsEx`]), `fourCcList` (codecs it can handle) and
//! `videoFourCcInfoMap` / `audioFourCcInfoMap` (per codec, [`FourCcFlags`]; the key `"*"` means
//! every codec). The server answers with its own in `_result`'s properties. A server may ask a
//! client that set [`CapsEx::RECONNECT`] to reconnect, to the same URL or to the `tcUrl` the
//! request carries; Corecast does that when it drains.
//!
//! Everything a client sends here is bounded on the way in ([`MAX_FOURCCS`] codecs per list or
//! map, four-character names or `"*"`): it stays with the session for its life.

use crate::amf0::{Amf0Object, Amf0Value};
use crate::command::{status_info, Command};

/// The most codecs kept from one `fourCcList` or FourCC info map; the rest are ignored.
pub const MAX_FOURCCS: usize = 32;

/// The status code of a reconnect request.
pub const RECONNECT_REQUEST: &str = "NetConnection.Connect.ReconnectRequest";

/// The `capsEx` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapsEx(pub u32);

impl CapsEx {
    /// Understands `NetConnection.Connect.ReconnectRequest`.
    pub const RECONNECT: u32 = 0x01;
    /// Handles multitrack audio and video.
    pub const MULTITRACK: u32 = 0x02;
    /// Parses the ModEx packet type (and skips what it does not know in it).
    pub const MODEX: u32 = 0x04;
    /// Handles the nanosecond timestamp offset carried by ModEx.
    pub const TIMESTAMP_NANO_OFFSET: u32 = 0x08;

    /// Whether every bit of `bits` is set.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

/// The flags of one codec in a FourCC info map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FourCcFlags(pub u32);

impl FourCcFlags {
    /// Can decode the codec (play it).
    pub const CAN_DECODE: u32 = 0x01;
    /// Can encode the codec (publish it).
    pub const CAN_ENCODE: u32 = 0x02;
    /// Can forward the codec without decoding it (a server, a relay).
    pub const CAN_FORWARD: u32 = 0x04;
}

/// What a client said it supports in `connect`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientCaps {
    /// Whether the command object had any Enhanced RTMP property: a legacy client gets a
    /// legacy answer, byte for byte.
    pub enhanced: bool,
    /// `capsEx`, 0 when missing.
    pub caps_ex: CapsEx,
    /// `fourCcList`.
    pub fourcc_list: Vec<String>,
    /// `videoFourCcInfoMap`.
    pub video: Vec<(String, FourCcFlags)>,
    /// `audioFourCcInfoMap`.
    pub audio: Vec<(String, FourCcFlags)>,
}

impl ClientCaps {
    /// Reads the capabilities from `connect`'s command object; anything malformed in them
    /// (a wrong type, a name that is no FourCC, a negative or fractional flag word) is ignored.
    pub fn from_connect_object(object: &Amf0Object) -> ClientCaps {
        let caps_ex = object.get("capsEx");
        let fourcc_list = object.get("fourCcList").map(fourcc_list);
        let video = object.get("videoFourCcInfoMap").map(fourcc_map);
        let audio = object.get("audioFourCcInfoMap").map(fourcc_map);
        ClientCaps {
            enhanced: caps_ex.is_some()
                || fourcc_list.is_some()
                || video.is_some()
                || audio.is_some(),
            caps_ex: CapsEx(caps_ex.and_then(flag_word).unwrap_or(0)),
            fourcc_list: fourcc_list.unwrap_or_default(),
            video: video.unwrap_or_default(),
            audio: audio.unwrap_or_default(),
        }
    }

    /// Whether the client can be asked to reconnect.
    pub fn accepts_reconnect(&self) -> bool {
        self.caps_ex.has(CapsEx::RECONNECT)
    }
}

/// A capability word: a non-negative whole number that fits 32 bits.
fn flag_word(value: &Amf0Value) -> Option<u32> {
    let n = value.as_number()?;
    (n >= 0.0 && n <= f64::from(u32::MAX) && n.fract() == 0.0).then_some(n as u32)
}

/// A FourCC as the specification writes them: four characters, or `"*"` for every codec.
fn is_fourcc(name: &str) -> bool {
    name == "*" || name.chars().count() == 4
}

fn fourcc_list(value: &Amf0Value) -> Vec<String> {
    let items: &[Amf0Value] = match value {
        Amf0Value::StrictArray(items) => items,
        _ => &[],
    };
    items
        .iter()
        .filter_map(Amf0Value::as_str)
        .filter(|name| is_fourcc(name))
        .take(MAX_FOURCCS)
        .map(str::to_owned)
        .collect()
}

fn fourcc_map(value: &Amf0Value) -> Vec<(String, FourCcFlags)> {
    let Some(object) = value.as_object() else {
        return Vec::new();
    };
    object
        .0
        .iter()
        .filter(|(name, _)| is_fourcc(name))
        .filter_map(|(name, flags)| Some((name.clone(), FourCcFlags(flag_word(flags)?))))
        .take(MAX_FOURCCS)
        .collect()
}

/// What the server supports, as it answers an Enhanced RTMP client.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCaps {
    /// Its `capsEx`.
    pub caps_ex: CapsEx,
    /// Its `videoFourCcInfoMap`.
    pub video: Vec<(String, FourCcFlags)>,
    /// Its `audioFourCcInfoMap`.
    pub audio: Vec<(String, FourCcFlags)>,
}

impl ServerCaps {
    /// A relay: it forwards every codec unchanged (`"*"`: can forward) and asks clients to
    /// reconnect when it drains.
    pub fn relay() -> ServerCaps {
        let forward_all = vec![("*".to_owned(), FourCcFlags(FourCcFlags::CAN_FORWARD))];
        ServerCaps {
            caps_ex: CapsEx(CapsEx::RECONNECT),
            video: forward_all.clone(),
            audio: forward_all,
        }
    }

    /// Adds the server's capabilities to `connect`'s `_result` properties, for a client that
    /// sent its own (`client.enhanced`); a legacy client's answer is left as it was.
    pub fn answer(&self, client: &ClientCaps, properties: Amf0Object) -> Amf0Object {
        if !client.enhanced {
            return properties;
        }
        properties
            .with("capsEx", f64::from(self.caps_ex.0))
            .with("videoFourCcInfoMap", info_map(&self.video))
            .with("audioFourCcInfoMap", info_map(&self.audio))
    }
}

fn info_map(entries: &[(String, FourCcFlags)]) -> Amf0Object {
    entries
        .iter()
        .fold(Amf0Object::new(), |map, (name, flags)| {
            map.with(name.clone(), f64::from(flags.0))
        })
}

/// `onStatus` `NetConnection.Connect.ReconnectRequest` on the connection's stream (0): the
/// client reconnects, to `tc_url` when there is one, else to the URL it used.
pub fn reconnect_request(tc_url: Option<&str>, description: &str) -> Command {
    let mut info = status_info("status", RECONNECT_REQUEST, description);
    if let Some(tc_url) = tc_url {
        info.insert("tcUrl", tc_url);
    }
    Command::on_status(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MessageType;
    use proptest::prelude::*;

    fn connect_object(extra: Vec<(&str, Amf0Value)>) -> Amf0Object {
        extra.into_iter().fold(
            Amf0Object::new()
                .with("app", "live")
                .with("tcUrl", "rtmp://127.0.0.1/live"),
            |o, (k, v)| o.with(k, v),
        )
    }

    #[test]
    fn a_legacy_client_has_no_caps_and_gets_the_legacy_answer() {
        let caps = ClientCaps::from_connect_object(&connect_object(vec![]));
        assert!(!caps.enhanced);
        assert!(!caps.accepts_reconnect());
        let properties = Amf0Object::new().with("fmsVer", "FMS/3,5,7,7009");
        assert_eq!(
            ServerCaps::relay().answer(&caps, properties.clone()),
            properties
        );
    }

    #[test]
    fn an_enhanced_client_is_read_and_answered() {
        let object = connect_object(vec![
            (
                "capsEx",
                Amf0Value::Number(f64::from(CapsEx::RECONNECT | CapsEx::MULTITRACK)),
            ),
            (
                "fourCcList",
                Amf0Value::StrictArray(vec!["av01".into(), "hvc1".into(), "toolong".into()]),
            ),
            (
                "videoFourCcInfoMap",
                Amf0Value::Object(Amf0Object::new().with("avc1", 6.0).with("*", 4.0)),
            ),
            (
                "audioFourCcInfoMap",
                Amf0Value::EcmaArray(Amf0Object::new().with("Opus", 1.0).with("mp4a", -1.0)),
            ),
        ]);
        let caps = ClientCaps::from_connect_object(&object);
        assert!(caps.enhanced && caps.accepts_reconnect());
        assert!(caps.caps_ex.has(CapsEx::MULTITRACK) && !caps.caps_ex.has(CapsEx::MODEX));
        assert_eq!(caps.fourcc_list, vec!["av01", "hvc1"]);
        assert_eq!(
            caps.video,
            vec![
                ("avc1".into(), FourCcFlags(6)),
                ("*".into(), FourCcFlags(4))
            ]
        );
        assert_eq!(caps.audio, vec![("Opus".into(), FourCcFlags(1))]);

        let answer = ServerCaps::relay().answer(&caps, Amf0Object::new());
        assert_eq!(answer.get("capsEx"), Some(&Amf0Value::Number(1.0)));
        let video = answer
            .get("videoFourCcInfoMap")
            .and_then(Amf0Value::as_object);
        assert_eq!(
            video.and_then(|m| m.get("*")),
            Some(&Amf0Value::Number(4.0))
        );
    }

    #[test]
    fn caps_ex_alone_marks_a_client_enhanced_and_bad_words_are_ignored() {
        for (value, expected) in [
            (Amf0Value::Number(1.0), Some(1)),
            (Amf0Value::Number(1.5), None),
            (Amf0Value::Number(-1.0), None),
            (Amf0Value::Number(f64::NAN), None),
            (Amf0Value::Number(1e12), None),
            (Amf0Value::String("1".into()), None),
        ] {
            let caps = ClientCaps::from_connect_object(&connect_object(vec![("capsEx", value)]));
            assert!(caps.enhanced, "the property is there, whatever its value");
            assert_eq!(caps.caps_ex.0, expected.unwrap_or(0));
        }
    }

    #[test]
    fn a_reconnect_request_is_an_on_status_on_the_connection() {
        let request = reconnect_request(Some("rtmp://lb.example.com/live"), "draining");
        let decoded =
            Command::decode(MessageType::COMMAND_AMF0, &request.encode()).expect("decodes");
        assert_eq!(decoded.name, "onStatus");
        assert_eq!(decoded.transaction_id, 0.0);
        let info = decoded.arguments[0].as_object().expect("info object");
        assert_eq!(
            info.get("code").and_then(Amf0Value::as_str),
            Some(RECONNECT_REQUEST)
        );
        assert_eq!(
            info.get("level").and_then(Amf0Value::as_str),
            Some("status")
        );
        assert_eq!(
            info.get("tcUrl").and_then(Amf0Value::as_str),
            Some("rtmp://lb.example.com/live")
        );
        let without = reconnect_request(None, "draining");
        let info = without.arguments[0].as_object().expect("info object");
        assert!(
            info.get("tcUrl").is_none(),
            "no tcUrl: reconnect to the same URL"
        );
    }

    fn any_value() -> impl Strategy<Value = Amf0Value> {
        let leaf = prop_oneof![
            any::<f64>().prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            ".{0,6}".prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
        ];
        leaf.prop_recursive(2, 64, 40, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..40).prop_map(Amf0Value::StrictArray),
                prop::collection::vec((".{0,5}", inner), 0..40)
                    .prop_map(|pairs| Amf0Value::Object(Amf0Object(pairs))),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_connect_object_is_read_within_bounds(
            caps in any_value(), list in any_value(), video in any_value(), audio in any_value()
        ) {
            let object = connect_object(vec![
                ("capsEx", caps), ("fourCcList", list),
                ("videoFourCcInfoMap", video), ("audioFourCcInfoMap", audio),
            ]);
            let read = ClientCaps::from_connect_object(&object);
            prop_assert!(read.enhanced);
            prop_assert!(read.fourcc_list.len() <= MAX_FOURCCS);
            prop_assert!(read.video.len() <= MAX_FOURCCS && read.audio.len() <= MAX_FOURCCS);
            for name in read.fourcc_list.iter().chain(read.video.iter().map(|(n, _)| n)) {
                prop_assert!(is_fourcc(name));
            }
        }
    }
}
