//! AMF0 values: the data model, a bounded decoder and an encoder (Adobe AMF0 specification,
//! 2007; RTMP spec §7.1.1 uses it for command and data messages).
//!
//! This module owns [`Amf0Value`] / [`Amf0Object`], the [`Amf0Reader`] that decodes a message
//! payload value by value, and [`encode`] / [`encode_all`].
//!
//! # Tricky parts
//! - **Hostile input.** Every length is checked against the bytes actually present before
//!   anything is allocated, nesting is capped by [`Amf0Limits::max_depth`] (the decoder is
//!   recursive, so this also bounds stack use) and the number of values one decode may produce
//!   by [`Amf0Limits::max_values`]. A count field (strict array, AMF3 dense array, sealed
//!   members) larger than the remaining input is reported as truncation at once, because every
//!   value takes at least one byte.
//! - **Invalid UTF-8** in strings and keys is decoded *lossily* (U+FFFD), never rejected: real
//!   encoders have shipped Latin-1 stream names and metadata, and dropping such a client over a
//!   cosmetic string is worse than a replacement character.
//! - **Marker 0x0D** ("unsupported") carries no payload and is decoded as
//!   [`Amf0Value::Undefined`]; MovieClip (0x04) and RecordSet (0x0E) are reserved by the spec
//!   and rejected. The object-end marker (0x09) is only valid right after an empty key inside
//!   an object, ECMA array or typed object.
//! - **ECMA array counts** are written correctly by the encoder but ignored by the decoder,
//!   which reads until the object-end marker: several encoders write 0 there.
//! - **AMF3 switch (0x11).** The next value is AMF3. Each switch starts a fresh AMF3 context
//!   (string and traits reference tables), as the AVM+ serializer does per value. Supported AMF3
//!   types map onto AMF0 ones: integer and double → `Number`, string → `String`, date → `Date`
//!   (timezone 0), array → `StrictArray` (dense only) or `EcmaArray` (associative part, with dense
//!   items keyed `"0"`, `"1"`, …), object → `Object` (anonymous) or `TypedObject`. String and
//!   traits references are resolved; object references (and date/array references, which share
//!   the object table) and externalizable objects are rejected, and so are the AMF3 types XML,
//!   ByteArray, vectors and Dictionary ([`AmfError::UnsupportedAmf3`]). Because a reference
//!   copies an earlier string, a few input bytes can expand into many output bytes; the copies
//!   are charged to [`Amf0Limits::max_amf3_reference_bytes`].
//! - **Encoder limits.** A `String` longer than 65 535 bytes is written as a long string, so it
//!   decodes as [`Amf0Value::LongString`]. Property keys and typed-object class names have only
//!   a 16-bit length; longer ones are cut at the last UTF-8 boundary that fits (we never produce
//!   such keys ourselves, and the alternative is a frame the peer cannot parse).

use bytes::{BufMut, BytesMut};

/// AMF0 type markers (AMF0 spec §2.1).
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIECLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const RECORDSET: u8 = 0x0E;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// AMF3 type markers (AMF3 spec §3.1).
mod amf3_marker {
    pub const UNDEFINED: u8 = 0x00;
    pub const NULL: u8 = 0x01;
    pub const FALSE: u8 = 0x02;
    pub const TRUE: u8 = 0x03;
    pub const INTEGER: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const STRING: u8 = 0x06;
    pub const DATE: u8 = 0x08;
    pub const ARRAY: u8 = 0x09;
    pub const OBJECT: u8 = 0x0A;
}

/// The byte sequence that closes an object, ECMA array or typed object: an empty key followed
/// by the object-end marker.
const OBJECT_END: [u8; 3] = [0x00, 0x00, marker::OBJECT_END];

/// Most items reserved up front for an array whose count the peer wrote. Nested arrays each
/// claiming the whole remaining input would otherwise reserve `depth × input` entries before
/// any item is read; past this, vectors grow as items actually decode.
const PREALLOCATE_MAX: usize = 64;

/// Errors from decoding AMF0 (and embedded AMF3) values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmfError {
    /// The input ended in the middle of a value. Message payloads are always complete, so
    /// this means the peer sent a malformed message.
    #[error("AMF input truncated at byte {offset}")]
    Truncated {
        /// Offset in the input where more bytes were needed.
        offset: usize,
    },
    /// A type marker that neither AMF0 nor this decoder knows (above 0x11).
    #[error("unknown AMF0 type marker {marker:#04x} at byte {offset}")]
    UnknownMarker {
        /// The marker byte.
        marker: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// A marker the spec reserves without defining a payload (MovieClip 0x04, RecordSet 0x0E).
    #[error("unsupported AMF0 type marker {marker:#04x} at byte {offset}")]
    UnsupportedMarker {
        /// The marker byte.
        marker: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// An object-end marker (0x09) where a value was expected: at top level, in a strict
    /// array, or after a non-empty property key.
    #[error("AMF0 object-end marker outside an object at byte {offset}")]
    UnexpectedObjectEnd {
        /// Offset of the marker.
        offset: usize,
    },
    /// Objects and arrays nest deeper than [`Amf0Limits::max_depth`].
    #[error("AMF values nested deeper than {max}")]
    TooDeep {
        /// The limit that was exceeded.
        max: usize,
    },
    /// One decode would produce more than [`Amf0Limits::max_values`] values.
    #[error("more than {max} AMF values in one message")]
    TooManyValues {
        /// The limit that was exceeded.
        max: usize,
    },
    /// An AMF3 type this decoder does not map to AMF0 (XML, ByteArray, vectors, Dictionary)
    /// or does not know at all.
    #[error("unsupported AMF3 type marker {marker:#04x}")]
    UnsupportedAmf3 {
        /// The AMF3 marker byte.
        marker: u8,
    },
    /// An AMF3 encoding feature this decoder does not implement: object, array and date
    /// references (the object reference table) and externalizable objects (whose body only the
    /// sending class knows how to read).
    #[error("unsupported AMF3 encoding: {feature}")]
    UnsupportedAmf3Feature {
        /// What was found.
        feature: &'static str,
    },
    /// An AMF3 string or traits reference to an entry that was never sent.
    #[error("AMF3 {table} reference {index} out of range")]
    BadAmf3Reference {
        /// `"string"` or `"traits"`.
        table: &'static str,
        /// The index that was referenced.
        index: usize,
    },
    /// AMF3 references copied more than [`Amf0Limits::max_amf3_reference_bytes`] bytes.
    #[error("AMF3 references expand to more than {max} bytes")]
    Amf3ReferenceBudget {
        /// The limit that was exceeded.
        max: usize,
    },
}

impl AmfError {
    /// A short static name for the error kind, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            AmfError::Truncated { .. } => "truncated",
            AmfError::UnknownMarker { .. } => "unknown_marker",
            AmfError::UnsupportedMarker { .. } => "unsupported_marker",
            AmfError::UnexpectedObjectEnd { .. } => "unexpected_object_end",
            AmfError::TooDeep { .. } => "too_deep",
            AmfError::TooManyValues { .. } => "too_many_values",
            AmfError::UnsupportedAmf3 { .. } => "unsupported_amf3",
            AmfError::UnsupportedAmf3Feature { .. } => "unsupported_amf3_feature",
            AmfError::BadAmf3Reference { .. } => "bad_amf3_reference",
            AmfError::Amf3ReferenceBudget { .. } => "amf3_reference_budget",
        }
    }
}

/// One AMF0 value.
///
/// Not `#[non_exhaustive]` on purpose: it mirrors the frozen AMF0 type set, and callers match
/// on it exhaustively.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// IEEE 754 double (marker 0x00); also what AMF3 integers and doubles decode to.
    Number(f64),
    /// Marker 0x01.
    Boolean(bool),
    /// UTF-8 string of at most 65 535 bytes on the wire (marker 0x02).
    String(String),
    /// Anonymous object: ordered key/value pairs (marker 0x03).
    Object(Amf0Object),
    /// Marker 0x05.
    Null,
    /// Marker 0x06 (and the "unsupported" marker 0x0D, which has no payload either).
    Undefined,
    /// Index into the AMF0 object reference table (marker 0x07). Kept as the raw index: RTMP
    /// commands never use it, and resolving it would let a peer multiply memory use.
    Reference(u16),
    /// Associative array (marker 0x08); `onMetaData` usually comes as one.
    EcmaArray(Amf0Object),
    /// Dense array (marker 0x0A).
    StrictArray(Vec<Amf0Value>),
    /// Date (marker 0x0B): milliseconds since the Unix epoch, UTC, and a timezone field the
    /// spec says to ignore but which is kept for round trips.
    Date {
        /// Milliseconds since 1970-01-01T00:00:00Z.
        millis: f64,
        /// Reserved timezone offset in minutes; senders should write 0.
        timezone: i16,
    },
    /// String with a 32-bit length (marker 0x0C).
    LongString(String),
    /// XML document text (marker 0x0F).
    XmlDocument(String),
    /// Object with a registered class name (marker 0x10).
    TypedObject {
        /// The class alias.
        class_name: String,
        /// Its properties, in wire order.
        properties: Amf0Object,
    },
}

impl Amf0Value {
    /// The text of a `String` or `LongString`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Number`.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of a `Boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The properties of an `Object`, `EcmaArray` or `TypedObject`: senders pick any of the
    /// three for the same logical object (`onMetaData` comes both ways).
    pub fn as_object(&self) -> Option<&Amf0Object> {
        match self {
            Amf0Value::Object(o) | Amf0Value::EcmaArray(o) => Some(o),
            Amf0Value::TypedObject { properties, .. } => Some(properties),
            _ => None,
        }
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Amf0Value::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Amf0Value::Boolean(b)
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Amf0Value::String(s.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(s: String) -> Self {
        Amf0Value::String(s)
    }
}

impl From<Amf0Object> for Amf0Value {
    fn from(o: Amf0Object) -> Self {
        Amf0Value::Object(o)
    }
}

/// The properties of an AMF0 object or ECMA array, in wire order.
///
/// A `Vec` rather than a map: objects are small, order is kept for faithful round trips, and
/// a decoded object may carry a key twice. Lookups follow ActionScript, where a later
/// assignment wins: [`get`](Self::get) and [`insert`](Self::insert) use the *last* entry with
/// the key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Amf0Object(pub Vec<(String, Amf0Value)>);

impl Amf0Object {
    /// An empty object.
    pub fn new() -> Self {
        Amf0Object(Vec::new())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing an existing entry in place or appending a new one.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Amf0Value>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().rev().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Amf0Value>) -> Self {
        self.insert(key, value);
        self
    }
}

/// Bounds on what one decode may produce, so a hostile peer cannot make us allocate or
/// recurse without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amf0Limits {
    /// Deepest nesting of objects and arrays. Real commands nest 2–3 levels; the decoder
    /// recurses once per level, so this also bounds stack use.
    pub max_depth: usize,
    /// Most values (nested ones included) a single decode may produce.
    pub max_values: usize,
    /// Most bytes that AMF3 string and traits references may copy in one decode. Without it,
    /// a 64 KiB string referenced by thousands of two-byte references expands to gigabytes.
    pub max_amf3_reference_bytes: usize,
}

impl Default for Amf0Limits {
    fn default() -> Self {
        Amf0Limits {
            max_depth: 32,
            max_values: 65_536,
            max_amf3_reference_bytes: 1 << 20,
        }
    }
}

/// Decodes every value in `input` (a whole command or data message body) with the default
/// [`Amf0Limits`].
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    decode_all_with(input, &Amf0Limits::default())
}

/// Decodes every value in `input` with explicit limits.
pub fn decode_all_with(input: &[u8], limits: &Amf0Limits) -> Result<Vec<Amf0Value>, AmfError> {
    let mut reader = Amf0Reader::with_limits(input, limits);
    let mut values = Vec::new();
    while let Some(value) = reader.read_value()? {
        values.push(value);
    }
    Ok(values)
}

/// Reads AMF0 values one at a time from a complete message body.
///
/// The limits apply to everything read through one reader. A value is consumed only when it
/// decoded completely: after an error the reader stays where that value began.
#[derive(Debug, Clone)]
pub struct Amf0Reader<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Amf0Limits,
    /// Values produced so far, nested ones included; checked against `limits.max_values`.
    values: usize,
    /// Bytes copied out of AMF3 reference tables so far.
    reference_bytes: usize,
}

impl<'a> Amf0Reader<'a> {
    /// A reader over `input` with the default limits.
    pub fn new(input: &'a [u8]) -> Self {
        Self::with_limits(input, &Amf0Limits::default())
    }

    /// A reader over `input` with explicit limits.
    pub fn with_limits(input: &'a [u8], limits: &Amf0Limits) -> Self {
        Amf0Reader {
            input,
            pos: 0,
            limits: *limits,
            values: 0,
            reference_bytes: 0,
        }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// The next value, or `None` at the end of the input.
    pub fn read_value(&mut self) -> Result<Option<Amf0Value>, AmfError> {
        if self.is_empty() {
            return Ok(None);
        }
        let start = (self.pos, self.values, self.reference_bytes);
        match self.value(0) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                (self.pos, self.values, self.reference_bytes) = start;
                Err(e)
            }
        }
    }

    // ---- byte-level helpers -------------------------------------------------------------

    fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or(AmfError::Truncated { offset: self.pos })?;
        let bytes = self.input.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AmfError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.array::<1>()?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, AmfError> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Result<i16, AmfError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn utf8(&mut self, len: usize) -> Result<String, AmfError> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn utf8_u16(&mut self) -> Result<String, AmfError> {
        let len = self.u16()?;
        self.utf8(usize::from(len))
    }

    fn utf8_u32(&mut self) -> Result<String, AmfError> {
        let len = self.u32()?;
        self.utf8(len as usize)
    }

    // ---- limits ---------------------------------------------------------------------------

    fn count_values(&mut self, n: usize) -> Result<(), AmfError> {
        let max = self.limits.max_values;
        match self.values.checked_add(n) {
            Some(total) if total <= max => {
                self.values = total;
                Ok(())
            }
            _ => Err(AmfError::TooManyValues { max }),
        }
    }

    /// Checks that entering a container at `depth` stays within the nesting limit.
    fn enter(&self, depth: usize) -> Result<usize, AmfError> {
        if depth >= self.limits.max_depth {
            return Err(AmfError::TooDeep {
                max: self.limits.max_depth,
            });
        }
        Ok(depth + 1)
    }

    /// Rejects a count of items that cannot fit in the remaining input (each item takes at
    /// least `min_item_bytes`), before anything is allocated for them.
    fn check_count(&self, count: usize, min_item_bytes: usize) -> Result<(), AmfError> {
        let remaining = self.input.len().saturating_sub(self.pos);
        if count.saturating_mul(min_item_bytes) > remaining {
            return Err(AmfError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    fn charge_reference(&mut self, bytes: usize) -> Result<(), AmfError> {
        let max = self.limits.max_amf3_reference_bytes;
        match self.reference_bytes.checked_add(bytes) {
            Some(total) if total <= max => {
                self.reference_bytes = total;
                Ok(())
            }
            _ => Err(AmfError::Amf3ReferenceBudget { max }),
        }
    }

    // ---- AMF0 -----------------------------------------------------------------------------

    /// Decodes one AMF0 value whose enclosing containers number `depth`.
    fn value(&mut self, depth: usize) -> Result<Amf0Value, AmfError> {
        self.count_values(1)?;
        let offset = self.pos;
        let value = match self.u8()? {
            marker::NUMBER => Amf0Value::Number(self.f64()?),
            marker::BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            marker::STRING => Amf0Value::String(self.utf8_u16()?),
            marker::OBJECT => Amf0Value::Object(self.properties(self.enter(depth)?)?),
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED | marker::UNSUPPORTED => Amf0Value::Undefined,
            marker::REFERENCE => Amf0Value::Reference(self.u16()?),
            marker::ECMA_ARRAY => {
                // The count is advisory (see the module docs); the end marker is what counts.
                let _count = self.u32()?;
                Amf0Value::EcmaArray(self.properties(self.enter(depth)?)?)
            }
            marker::STRICT_ARRAY => {
                let inner = self.enter(depth)?;
                let count = self.u32()? as usize;
                self.check_count(count, 1)?;
                let mut items = Vec::with_capacity(count.min(PREALLOCATE_MAX));
                for _ in 0..count {
                    items.push(self.value(inner)?);
                }
                Amf0Value::StrictArray(items)
            }
            marker::DATE => Amf0Value::Date {
                millis: self.f64()?,
                timezone: self.i16()?,
            },
            marker::LONG_STRING => Amf0Value::LongString(self.utf8_u32()?),
            marker::XML_DOCUMENT => Amf0Value::XmlDocument(self.utf8_u32()?),
            marker::TYPED_OBJECT => {
                let inner = self.enter(depth)?;
                let class_name = self.utf8_u16()?;
                Amf0Value::TypedObject {
                    class_name,
                    properties: self.properties(inner)?,
                }
            }
            marker::AVMPLUS => {
                // The switch marker wraps one value; it is not a value of its own.
                self.values -= 1;
                let mut context = Amf3Context::default();
                self.amf3_value(&mut context, depth)?
            }
            marker @ (marker::MOVIECLIP | marker::RECORDSET) => {
                return Err(AmfError::UnsupportedMarker { marker, offset })
            }
            marker::OBJECT_END => return Err(AmfError::UnexpectedObjectEnd { offset }),
            marker => return Err(AmfError::UnknownMarker { marker, offset }),
        };
        Ok(value)
    }

    /// Reads `key value` pairs up to and including the empty key + object-end marker.
    /// `depth` is the depth of the property values.
    fn properties(&mut self, depth: usize) -> Result<Amf0Object, AmfError> {
        let mut properties = Vec::new();
        loop {
            let key = self.utf8_u16()?;
            if key.is_empty() && self.peek() == Some(marker::OBJECT_END) {
                self.pos += 1;
                return Ok(Amf0Object(properties));
            }
            let value = self.value(depth)?;
            properties.push((key, value));
        }
    }

    // ---- AMF3 -----------------------------------------------------------------------------

    /// Reads an AMF3 variable-length unsigned 29-bit integer: up to three bytes of 7 bits
    /// with a continuation bit, then a fourth byte of 8 bits.
    fn u29(&mut self) -> Result<u32, AmfError> {
        let mut value: u32 = 0;
        for _ in 0..3 {
            let byte = self.u8()?;
            if byte & 0x80 == 0 {
                return Ok((value << 7) | u32::from(byte));
            }
            value = (value << 7) | u32::from(byte & 0x7F);
        }
        let byte = self.u8()?;
        Ok((value << 8) | u32::from(byte))
    }

    /// Reads an AMF3 `UTF-8-vr`: an inline string (added to the string table unless empty)
    /// or a reference into the table.
    fn amf3_string(&mut self, context: &mut Amf3Context) -> Result<String, AmfError> {
        let header = self.u29()?;
        let index_or_len = (header >> 1) as usize;
        if header & 1 == 0 {
            let s = context
                .strings
                .get(index_or_len)
                .ok_or(AmfError::BadAmf3Reference {
                    table: "string",
                    index: index_or_len,
                })?
                .clone();
            self.charge_reference(s.len())?;
            return Ok(s);
        }
        let s = self.utf8(index_or_len)?;
        if !s.is_empty() {
            context.strings.push(s.clone());
        }
        Ok(s)
    }

    /// Decodes one AMF3 value whose enclosing containers number `depth`.
    fn amf3_value(
        &mut self,
        context: &mut Amf3Context,
        depth: usize,
    ) -> Result<Amf0Value, AmfError> {
        self.count_values(1)?;
        let value = match self.u8()? {
            amf3_marker::UNDEFINED => Amf0Value::Undefined,
            amf3_marker::NULL => Amf0Value::Null,
            amf3_marker::FALSE => Amf0Value::Boolean(false),
            amf3_marker::TRUE => Amf0Value::Boolean(true),
            amf3_marker::INTEGER => {
                let raw = self.u29()?;
                // Sign-extend from 29 bits.
                let signed = ((raw << 3) as i32) >> 3;
                Amf0Value::Number(f64::from(signed))
            }
            amf3_marker::DOUBLE => Amf0Value::Number(self.f64()?),
            amf3_marker::STRING => Amf0Value::String(self.amf3_string(context)?),
            amf3_marker::DATE => {
                if self.u29()? & 1 == 0 {
                    return Err(AmfError::UnsupportedAmf3Feature {
                        feature: "date reference",
                    });
                }
                Amf0Value::Date {
                    millis: self.f64()?,
                    timezone: 0,
                }
            }
            amf3_marker::ARRAY => self.amf3_array(context, self.enter(depth)?)?,
            amf3_marker::OBJECT => self.amf3_object(context, self.enter(depth)?)?,
            marker => return Err(AmfError::UnsupportedAmf3 { marker }),
        };
        Ok(value)
    }

    /// The body of an AMF3 array; `depth` is the depth of its items.
    fn amf3_array(
        &mut self,
        context: &mut Amf3Context,
        depth: usize,
    ) -> Result<Amf0Value, AmfError> {
        let header = self.u29()?;
        if header & 1 == 0 {
            return Err(AmfError::UnsupportedAmf3Feature {
                feature: "array reference",
            });
        }
        let dense_count = (header >> 1) as usize;
        let mut associative = Vec::new();
        loop {
            let key = self.amf3_string(context)?;
            if key.is_empty() {
                break;
            }
            let value = self.amf3_value(context, depth)?;
            associative.push((key, value));
        }
        self.check_count(dense_count, 1)?;
        let mut dense = Vec::with_capacity(dense_count.min(PREALLOCATE_MAX));
        for _ in 0..dense_count {
            dense.push(self.amf3_value(context, depth)?);
        }
        if associative.is_empty() {
            return Ok(Amf0Value::StrictArray(dense));
        }
        associative.extend(
            dense
                .into_iter()
                .enumerate()
                .map(|(i, value)| (i.to_string(), value)),
        );
        Ok(Amf0Value::EcmaArray(Amf0Object(associative)))
    }

    /// The body of an AMF3 object; `depth` is the depth of its members.
    fn amf3_object(
        &mut self,
        context: &mut Amf3Context,
        depth: usize,
    ) -> Result<Amf0Value, AmfError> {
        let header = self.u29()?;
        if header & 0b1 == 0 {
            return Err(AmfError::UnsupportedAmf3Feature {
                feature: "object reference",
            });
        }
        let traits = if header & 0b10 == 0 {
            let index = (header >> 2) as usize;
            let traits = context
                .traits
                .get(index)
                .ok_or(AmfError::BadAmf3Reference {
                    table: "traits",
                    index,
                })?
                .clone();
            let copied =
                traits.class_name.len() + traits.sealed.iter().map(String::len).sum::<usize>();
            self.charge_reference(copied)?;
            traits
        } else {
            if header & 0b100 != 0 {
                return Err(AmfError::UnsupportedAmf3Feature {
                    feature: "externalizable object",
                });
            }
            let dynamic = header & 0b1000 != 0;
            let sealed_count = (header >> 4) as usize;
            let class_name = self.amf3_string(context)?;
            self.check_count(sealed_count, 1)?;
            let mut sealed = Vec::with_capacity(sealed_count.min(PREALLOCATE_MAX));
            for _ in 0..sealed_count {
                sealed.push(self.amf3_string(context)?);
            }
            let traits = Amf3Traits {
                class_name,
                sealed,
                dynamic,
            };
            context.traits.push(traits.clone());
            traits
        };
        let mut properties = Vec::with_capacity(traits.sealed.len());
        for name in traits.sealed {
            let value = self.amf3_value(context, depth)?;
            properties.push((name, value));
        }
        if traits.dynamic {
            loop {
                let key = self.amf3_string(context)?;
                if key.is_empty() {
                    break;
                }
                let value = self.amf3_value(context, depth)?;
                properties.push((key, value));
            }
        }
        let properties = Amf0Object(properties);
        if traits.class_name.is_empty() {
            Ok(Amf0Value::Object(properties))
        } else {
            Ok(Amf0Value::TypedObject {
                class_name: traits.class_name,
                properties,
            })
        }
    }
}

/// Reference tables of one AMF3 value (one 0x11 switch).
#[derive(Debug, Default)]
struct Amf3Context {
    strings: Vec<String>,
    traits: Vec<Amf3Traits>,
}

/// The shape of an AMF3 object class, sent once and then referenced.
#[derive(Debug, Clone)]
struct Amf3Traits {
    class_name: String,
    sealed: Vec<String>,
    dynamic: bool,
}

/// Appends the AMF0 encoding of `value` to `out`.
pub fn encode(value: &Amf0Value, out: &mut BytesMut) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(marker::NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(marker::BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) if s.len() > usize::from(u16::MAX) => {
            out.put_u8(marker::LONG_STRING);
            put_utf8_u32(out, s);
        }
        Amf0Value::String(s) => {
            out.put_u8(marker::STRING);
            put_utf8_u16(out, s);
        }
        Amf0Value::Object(properties) => {
            out.put_u8(marker::OBJECT);
            put_properties(out, properties);
        }
        Amf0Value::Null => out.put_u8(marker::NULL),
        Amf0Value::Undefined => out.put_u8(marker::UNDEFINED),
        Amf0Value::Reference(index) => {
            out.put_u8(marker::REFERENCE);
            out.put_u16(*index);
        }
        Amf0Value::EcmaArray(properties) => {
            out.put_u8(marker::ECMA_ARRAY);
            out.put_u32(u32::try_from(properties.0.len()).unwrap_or(u32::MAX));
            put_properties(out, properties);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(marker::STRICT_ARRAY);
            // More than 2^32 items cannot be framed; write the ones the count can describe.
            let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.put_u32(count);
            for item in items.iter().take(count as usize) {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, timezone } => {
            out.put_u8(marker::DATE);
            out.put_f64(*millis);
            out.put_i16(*timezone);
        }
        Amf0Value::LongString(s) => {
            out.put_u8(marker::LONG_STRING);
            put_utf8_u32(out, s);
        }
        Amf0Value::XmlDocument(s) => {
            out.put_u8(marker::XML_DOCUMENT);
            put_utf8_u32(out, s);
        }
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => {
            out.put_u8(marker::TYPED_OBJECT);
            put_utf8_u16(out, class_name);
            put_properties(out, properties);
        }
    }
}

/// Appends the AMF0 encoding of each value in order.
pub fn encode_all(values: &[Amf0Value], out: &mut BytesMut) {
    for value in values {
        encode(value, out);
    }
}

fn put_properties(out: &mut BytesMut, properties: &Amf0Object) {
    for (key, value) in &properties.0 {
        put_utf8_u16(out, key);
        encode(value, out);
    }
    out.put_slice(&OBJECT_END);
}

/// Writes a 16-bit length and the string, cut at a character boundary if it does not fit.
fn put_utf8_u16(out: &mut BytesMut, s: &str) {
    let bytes = truncate_utf8(s, usize::from(u16::MAX));
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

/// Writes a 32-bit length and the string, cut at a character boundary if it does not fit.
fn put_utf8_u32(out: &mut BytesMut, s: &str) {
    let bytes = truncate_utf8(s, u32::MAX as usize);
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn truncate_utf8(s: &str, max: usize) -> &[u8] {
    if s.len() <= max {
        return s.as_bytes();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.as_bytes().get(..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failed test.
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(value: &Amf0Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(value, &mut out);
        out.to_vec()
    }

    fn decode_one(input: &[u8]) -> Result<Amf0Value, AmfError> {
        let mut values = decode_all(input)?;
        assert_eq!(
            values.len(),
            1,
            "expected exactly one value in {input:02x?}"
        );
        Ok(values.remove(0))
    }

    /// Each AMF0 type, byte for byte as the spec lays it out, both ways.
    #[test]
    fn spec_vectors_round_trip() {
        let cases: Vec<(Vec<u8>, Amf0Value)> = vec![
            (
                vec![0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0],
                Amf0Value::Number(1.0),
            ),
            (
                vec![0x00, 0xC0, 0x9F, 0x40, 0, 0, 0, 0, 0],
                Amf0Value::Number(-2000.0),
            ),
            (vec![0x01, 0x01], Amf0Value::Boolean(true)),
            (vec![0x01, 0x00], Amf0Value::Boolean(false)),
            (
                vec![0x02, 0x00, 0x04, b'l', b'i', b'v', b'e'],
                Amf0Value::String("live".into()),
            ),
            (vec![0x02, 0x00, 0x00], Amf0Value::String(String::new())),
            (
                vec![
                    0x03, 0x00, 0x03, b'a', b'p', b'p', 0x02, 0x00, 0x01, b'x', 0x00, 0x00, 0x09,
                ],
                Amf0Value::Object(Amf0Object::new().with("app", "x")),
            ),
            (vec![0x05], Amf0Value::Null),
            (vec![0x06], Amf0Value::Undefined),
            (vec![0x07, 0x01, 0x02], Amf0Value::Reference(0x0102)),
            (
                vec![
                    0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b'n', 0x01, 0x01, 0x00, 0x00, 0x09,
                ],
                Amf0Value::EcmaArray(Amf0Object::new().with("n", true)),
            ),
            (
                vec![0x0A, 0x00, 0x00, 0x00, 0x02, 0x05, 0x01, 0x00],
                Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Boolean(false)]),
            ),
            (
                vec![0x0B, 0x42, 0x78, 0, 0, 0, 0, 0, 0, 0xFF, 0xC4],
                Amf0Value::Date {
                    millis: 1_649_267_441_664.0,
                    timezone: -60,
                },
            ),
            (
                vec![0x0C, 0x00, 0x00, 0x00, 0x02, b'h', b'i'],
                Amf0Value::LongString("hi".into()),
            ),
            (
                vec![0x0F, 0x00, 0x00, 0x00, 0x04, b'<', b'a', b'/', b'>'],
                Amf0Value::XmlDocument("<a/>".into()),
            ),
            (
                vec![
                    0x10, 0x00, 0x01, b'C', 0x00, 0x01, b'k', 0x05, 0x00, 0x00, 0x09,
                ],
                Amf0Value::TypedObject {
                    class_name: "C".into(),
                    properties: Amf0Object::new().with("k", Amf0Value::Null),
                },
            ),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode_one(&bytes).unwrap(), value, "decoding {bytes:02x?}");
            assert_eq!(encoded(&value), bytes, "encoding {value:?}");
        }
    }

    #[test]
    fn unsupported_marker_0x0d_decodes_as_undefined() {
        assert_eq!(decode_one(&[0x0D]).unwrap(), Amf0Value::Undefined);
    }

    #[test]
    fn reserved_and_unknown_markers_are_errors() {
        assert_eq!(
            decode_all(&[0x05, 0x04]),
            Err(AmfError::UnsupportedMarker {
                marker: 0x04,
                offset: 1
            })
        );
        assert_eq!(
            decode_all(&[0x0E]),
            Err(AmfError::UnsupportedMarker {
                marker: 0x0E,
                offset: 0
            })
        );
        assert_eq!(
            decode_all(&[0x12]),
            Err(AmfError::UnknownMarker {
                marker: 0x12,
                offset: 0
            })
        );
        assert_eq!(
            decode_all(&[0xFF]),
            Err(AmfError::UnknownMarker {
                marker: 0xFF,
                offset: 0
            })
        );
    }

    #[test]
    fn object_end_only_valid_inside_objects() {
        // At top level.
        assert_eq!(
            decode_all(&[0x09]),
            Err(AmfError::UnexpectedObjectEnd { offset: 0 })
        );
        // Inside a strict array.
        assert_eq!(
            decode_all(&[0x0A, 0x00, 0x00, 0x00, 0x01, 0x09]),
            Err(AmfError::UnexpectedObjectEnd { offset: 5 })
        );
        // After a non-empty key.
        assert_eq!(
            decode_all(&[0x03, 0x00, 0x01, b'k', 0x09]),
            Err(AmfError::UnexpectedObjectEnd { offset: 4 })
        );
    }

    #[test]
    fn empty_key_with_a_value_is_a_property() {
        let bytes = [0x03, 0x00, 0x00, 0x05, 0x00, 0x00, 0x09];
        assert_eq!(
            decode_one(&bytes).unwrap(),
            Amf0Value::Object(Amf0Object(vec![(String::new(), Amf0Value::Null)]))
        );
    }

    #[test]
    fn ecma_array_count_is_ignored_on_decode_and_written_on_encode() {
        // ffmpeg's own metadata writer and others have sent a count of 0.
        let bytes = [
            0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x05, 0x00, 0x01, b'b', 0x06, 0x00,
            0x00, 0x09,
        ];
        let value = decode_one(&bytes).unwrap();
        let expected = Amf0Value::EcmaArray(
            Amf0Object::new()
                .with("a", Amf0Value::Null)
                .with("b", Amf0Value::Undefined),
        );
        assert_eq!(value, expected);
        assert_eq!(&encoded(&expected)[1..5], &[0, 0, 0, 2]);
    }

    #[test]
    fn long_strings_switch_marker() {
        let short = "x".repeat(65_535);
        let bytes = encoded(&Amf0Value::String(short.clone()));
        assert_eq!(&bytes[..3], &[0x02, 0xFF, 0xFF]);
        assert_eq!(decode_one(&bytes).unwrap(), Amf0Value::String(short));

        let long = "y".repeat(65_536);
        let bytes = encoded(&Amf0Value::String(long.clone()));
        assert_eq!(&bytes[..5], &[0x0C, 0x00, 0x01, 0x00, 0x00]);
        assert_eq!(bytes.len(), 5 + 65_536);
        assert_eq!(decode_one(&bytes).unwrap(), Amf0Value::LongString(long));
    }

    #[test]
    fn overlong_keys_are_cut_at_a_char_boundary() {
        // 'é' is two bytes, so 65 535 bytes would split the last one.
        let key = "é".repeat(40_000);
        let bytes = encoded(&Amf0Value::Object(Amf0Object::new().with(key, 1.0)));
        assert_eq!(&bytes[1..3], &65_534u16.to_be_bytes());
        let decoded = decode_one(&bytes).unwrap();
        let (k, v) = &decoded.as_object().unwrap().0[0];
        assert_eq!(k.chars().count(), 32_767);
        assert_eq!(v, &Amf0Value::Number(1.0));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let bytes = [0x02, 0x00, 0x03, b'a', 0xFF, b'b'];
        assert_eq!(
            decode_one(&bytes).unwrap(),
            Amf0Value::String("a\u{FFFD}b".into())
        );
    }

    #[test]
    fn truncation_anywhere_is_an_error() {
        let value = Amf0Value::Object(Amf0Object::new().with("s", "text").with("n", 2.5).with(
            "arr",
            Amf0Value::StrictArray(vec![Amf0Value::Date {
                millis: 1.0,
                timezone: 0,
            }]),
        ));
        let bytes = encoded(&value);
        for len in 1..bytes.len() {
            let err = decode_all(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, AmfError::Truncated { .. }),
                "prefix {len}: {err:?}"
            );
        }
        assert_eq!(decode_one(&bytes).unwrap(), value);
    }

    #[test]
    fn huge_counts_fail_fast() {
        // A strict array claiming 4 billion items in 9 bytes.
        assert_eq!(
            decode_all(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x05, 0x05, 0x05, 0x05]),
            Err(AmfError::Truncated { offset: 5 })
        );
        // A long string claiming 4 GiB.
        assert_eq!(
            decode_all(&[0x0C, 0xFF, 0xFF, 0xFF, 0xFF, b'a']),
            Err(AmfError::Truncated { offset: 5 })
        );
    }

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            bytes.extend_from_slice(&[0x0A, 0x00, 0x00, 0x00, 0x01]);
        }
        bytes.push(0x05);
        bytes
    }

    #[test]
    fn depth_limit() {
        assert!(decode_all(&nested_arrays(32)).is_ok());
        assert_eq!(
            decode_all(&nested_arrays(33)),
            Err(AmfError::TooDeep { max: 32 })
        );
        let limits = Amf0Limits {
            max_depth: 1,
            ..Amf0Limits::default()
        };
        assert!(decode_all_with(&[0x03, 0x00, 0x00, 0x09], &limits).is_ok());
        assert_eq!(
            decode_all_with(
                &[0x03, 0x00, 0x01, b'a', 0x03, 0x00, 0x00, 0x09, 0x00, 0x00, 0x09],
                &limits
            ),
            Err(AmfError::TooDeep { max: 1 })
        );
        // Deep input far past the limit is rejected without exhausting the stack.
        assert_eq!(
            decode_all(&nested_arrays(100_000)),
            Err(AmfError::TooDeep { max: 32 })
        );
    }

    #[test]
    fn value_limit_counts_nested_values() {
        let limits = Amf0Limits {
            max_values: 3,
            ..Amf0Limits::default()
        };
        // Array + 2 items = 3 values.
        let ok = [0x0A, 0x00, 0x00, 0x00, 0x02, 0x05, 0x05];
        assert_eq!(decode_all_with(&ok, &limits).unwrap().len(), 1);
        let too_many = [0x0A, 0x00, 0x00, 0x00, 0x02, 0x05, 0x05, 0x06];
        assert_eq!(
            decode_all_with(&too_many, &limits),
            Err(AmfError::TooManyValues { max: 3 })
        );
        // A default-limit decode of 65 537 nulls fails.
        assert_eq!(
            decode_all(&[0x05; 65_537]),
            Err(AmfError::TooManyValues { max: 65_536 })
        );
        assert_eq!(decode_all(&[0x05; 65_536]).unwrap().len(), 65_536);
    }

    #[test]
    fn reader_does_not_consume_a_failed_value() {
        let bytes = [0x05, 0x02, 0x00, 0x05, b'a'];
        let mut reader = Amf0Reader::new(&bytes);
        assert_eq!(reader.read_value(), Ok(Some(Amf0Value::Null)));
        assert_eq!(reader.position(), 1);
        // The string's five bytes would start at offset 4; only one is there.
        assert_eq!(reader.read_value(), Err(AmfError::Truncated { offset: 4 }));
        assert_eq!(reader.position(), 1);
        assert_eq!(reader.remaining(), &bytes[1..]);
        assert!(!reader.is_empty());
    }

    #[test]
    fn object_insert_get_with() {
        let mut o = Amf0Object::new().with("a", 1.0).with("b", "x");
        o.insert("a", 2.0);
        assert_eq!(o.0.len(), 2);
        assert_eq!(o.get("a"), Some(&Amf0Value::Number(2.0)));
        assert_eq!(o.get("b").and_then(Amf0Value::as_str), Some("x"));
        assert_eq!(o.get("c"), None);
        // A decoded duplicate key: the later one wins, as in ActionScript.
        let dup = Amf0Object(vec![
            ("k".into(), Amf0Value::Number(1.0)),
            ("k".into(), Amf0Value::Number(2.0)),
        ]);
        assert_eq!(dup.get("k"), Some(&Amf0Value::Number(2.0)));
    }

    #[test]
    fn accessors() {
        assert_eq!(Amf0Value::LongString("l".into()).as_str(), Some("l"));
        assert_eq!(Amf0Value::Null.as_str(), None);
        assert_eq!(Amf0Value::from(3.0).as_number(), Some(3.0));
        assert_eq!(Amf0Value::from(true).as_bool(), Some(true));
        assert_eq!(Amf0Value::from("s").as_bool(), None);
        let o = Amf0Object::new().with("k", 1.0);
        assert_eq!(Amf0Value::EcmaArray(o.clone()).as_object(), Some(&o));
        assert_eq!(
            Amf0Value::TypedObject {
                class_name: "C".into(),
                properties: o.clone()
            }
            .as_object(),
            Some(&o)
        );
        assert_eq!(Amf0Value::StrictArray(vec![]).as_object(), None);
    }

    // ---- AMF3 -------------------------------------------------------------------------------

    fn amf3(body: &[u8]) -> Result<Amf0Value, AmfError> {
        let mut bytes = vec![0x11];
        bytes.extend_from_slice(body);
        decode_one(&bytes)
    }

    #[test]
    fn amf3_simple_types() {
        assert_eq!(amf3(&[0x00]).unwrap(), Amf0Value::Undefined);
        assert_eq!(amf3(&[0x01]).unwrap(), Amf0Value::Null);
        assert_eq!(amf3(&[0x02]).unwrap(), Amf0Value::Boolean(false));
        assert_eq!(amf3(&[0x03]).unwrap(), Amf0Value::Boolean(true));
        assert_eq!(
            amf3(&[0x05, 0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18]).unwrap(),
            Amf0Value::Number(std::f64::consts::PI)
        );
        assert_eq!(
            amf3(&[0x08, 0x01, 0x42, 0x78, 0, 0, 0, 0, 0, 0]).unwrap(),
            Amf0Value::Date {
                millis: 1_649_267_441_664.0,
                timezone: 0
            }
        );
    }

    #[test]
    fn amf3_integers() {
        let cases: &[(&[u8], f64)] = &[
            (&[0x00], 0.0),
            (&[0x7F], 127.0),
            (&[0x81, 0x00], 128.0),
            (&[0xFF, 0x7F], 16_383.0),
            (&[0x81, 0x80, 0x00], 16_384.0),
            (&[0xFF, 0xFF, 0x7F], 2_097_151.0),
            (&[0x80, 0xC0, 0x80, 0x00], 2_097_152.0),
            (&[0xBF, 0xFF, 0xFF, 0xFF], 268_435_455.0),
            (&[0xFF, 0xFF, 0xFF, 0xFF], -1.0),
            (&[0xC0, 0x80, 0x80, 0x00], -268_435_456.0),
        ];
        for (u29, expected) in cases {
            let mut body = vec![0x04];
            body.extend_from_slice(u29);
            assert_eq!(
                amf3(&body).unwrap(),
                Amf0Value::Number(*expected),
                "{u29:02x?}"
            );
        }
    }

    #[test]
    fn amf3_strings_and_references() {
        // ["abc", "abc" by reference, ""] as a dense array.
        let body = [
            0x09, 0x07, 0x01, 0x06, 0x07, b'a', b'b', b'c', 0x06, 0x00, 0x06, 0x01,
        ];
        assert_eq!(
            amf3(&body).unwrap(),
            Amf0Value::StrictArray(vec!["abc".into(), "abc".into(), "".into()])
        );
        // The empty string is never entered in the table, so reference 1 does not exist.
        let body = [0x09, 0x05, 0x01, 0x06, 0x01, 0x06, 0x02];
        assert_eq!(
            amf3(&body),
            Err(AmfError::BadAmf3Reference {
                table: "string",
                index: 1
            })
        );
    }

    #[test]
    fn amf3_context_is_fresh_for_each_switch() {
        // Second switch references string 0 of the first switch.
        let bytes = [0x11, 0x06, 0x03, b'a', 0x11, 0x06, 0x00];
        assert_eq!(
            decode_all(&bytes),
            Err(AmfError::BadAmf3Reference {
                table: "string",
                index: 0
            })
        );
    }

    #[test]
    fn amf3_arrays() {
        // Associative only → ECMA array.
        let body = [0x09, 0x01, 0x03, b'k', 0x04, 0x05, 0x01];
        assert_eq!(
            amf3(&body).unwrap(),
            Amf0Value::EcmaArray(Amf0Object::new().with("k", 5.0))
        );
        // Mixed → ECMA array with the dense items keyed by index after the named ones.
        let body = [0x09, 0x05, 0x03, b'k', 0x03, 0x01, 0x02, 0x01];
        assert_eq!(
            amf3(&body).unwrap(),
            Amf0Value::EcmaArray(
                Amf0Object::new()
                    .with("k", true)
                    .with("0", false)
                    .with("1", Amf0Value::Null)
            )
        );
        // Empty.
        assert_eq!(
            amf3(&[0x09, 0x01, 0x01]).unwrap(),
            Amf0Value::StrictArray(vec![])
        );
    }

    #[test]
    fn amf3_anonymous_dynamic_object() {
        // {level: "status", code: "NetStream.Play.Start"}; traits 0x0B = inline, dynamic, 0
        // sealed members; class name "" (0x01).
        let mut body = vec![0x0A, 0x0B, 0x01];
        body.extend_from_slice(&[0x0B, b'l', b'e', b'v', b'e', b'l']);
        body.extend_from_slice(&[0x06, 0x0D, b's', b't', b'a', b't', b'u', b's']);
        body.extend_from_slice(&[0x09, b'c', b'o', b'd', b'e']);
        body.extend_from_slice(&[0x06, 0x29]);
        body.extend_from_slice(b"NetStream.Play.Start");
        body.push(0x01);
        assert_eq!(
            amf3(&body).unwrap(),
            Amf0Value::Object(
                Amf0Object::new()
                    .with("level", "status")
                    .with("code", "NetStream.Play.Start")
            )
        );
    }

    #[test]
    fn amf3_typed_objects_with_sealed_members_and_traits_reference() {
        // [P{x: 1, y: 2}, P{x: 3, y: 4}] where the second P reuses traits 0 (header 0x01) and
        // the member names come once. Traits 0x23 = inline, not dynamic, 2 sealed.
        let body = [
            0x09, 0x05, 0x01, // dense array of 2, no associative part
            0x0A, 0x23, 0x03, b'P', 0x03, b'x', 0x03, b'y', 0x04, 0x01, 0x04, 0x02, //
            0x0A, 0x01, 0x04, 0x03, 0x04, 0x04,
        ];
        let p = |x: f64, y: f64| Amf0Value::TypedObject {
            class_name: "P".into(),
            properties: Amf0Object::new().with("x", x).with("y", y),
        };
        assert_eq!(
            amf3(&body).unwrap(),
            Amf0Value::StrictArray(vec![p(1.0, 2.0), p(3.0, 4.0)])
        );
        // A traits reference that was never defined.
        assert_eq!(
            amf3(&[0x0A, 0x05]),
            Err(AmfError::BadAmf3Reference {
                table: "traits",
                index: 1
            })
        );
    }

    #[test]
    fn amf3_unsupported() {
        for marker in [0x07, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12, 0xFF] {
            assert_eq!(
                amf3(&[marker, 0x01]),
                Err(AmfError::UnsupportedAmf3 { marker })
            );
        }
        assert_eq!(
            amf3(&[0x0A, 0x00]),
            Err(AmfError::UnsupportedAmf3Feature {
                feature: "object reference"
            })
        );
        assert_eq!(
            amf3(&[0x09, 0x00]),
            Err(AmfError::UnsupportedAmf3Feature {
                feature: "array reference"
            })
        );
        assert_eq!(
            amf3(&[0x08, 0x00]),
            Err(AmfError::UnsupportedAmf3Feature {
                feature: "date reference"
            })
        );
        assert_eq!(
            amf3(&[0x0A, 0x07, 0x03, b'E']),
            Err(AmfError::UnsupportedAmf3Feature {
                feature: "externalizable object"
            })
        );
    }

    #[test]
    fn amf3_reference_budget() {
        // One 100-byte string, then 100 references to it: 10 000 bytes copied.
        // Dense array of 101: U29A (101 << 1) | 1 = 203 = 0x81 0x4B; no associative part.
        let mut body = vec![0x09, 0x81, 0x4B, 0x01];
        // Inline string of 100 bytes: U29S (100 << 1) | 1 = 201 = 0x81 0x49.
        body.extend_from_slice(&[0x06, 0x81, 0x49]);
        body.extend_from_slice(&[b'z'; 100]);
        for _ in 0..100 {
            body.extend_from_slice(&[0x06, 0x00]);
        }
        let mut bytes = vec![0x11];
        bytes.extend_from_slice(&body);
        assert!(decode_all(&bytes).is_ok());
        let limits = Amf0Limits {
            max_amf3_reference_bytes: 9_999,
            ..Amf0Limits::default()
        };
        assert_eq!(
            decode_all_with(&bytes, &limits),
            Err(AmfError::Amf3ReferenceBudget { max: 9_999 })
        );
    }

    #[test]
    fn amf3_depth_counts_with_amf0() {
        // 31 AMF0 arrays around an AMF3 array holding an AMF3 array: 33 levels.
        let mut bytes = nested_arrays(31);
        bytes.pop();
        bytes.extend_from_slice(&[0x11, 0x09, 0x03, 0x01, 0x09, 0x01, 0x01]);
        assert_eq!(decode_all(&bytes), Err(AmfError::TooDeep { max: 32 }));
    }

    // ---- properties ----------------------------------------------------------------------

    fn arb_string() -> BoxedStrategy<String> {
        proptest::string::string_regex(".{0,12}").unwrap().boxed()
    }

    /// Any AMF0 value but NaN numbers (which break `==`), nested up to four deep; other
    /// modules' property tests use it too.
    pub(crate) fn arb_value() -> impl Strategy<Value = Amf0Value> {
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("NaN != NaN", |n| !n.is_nan())
                .prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            arb_string().prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
            any::<u16>().prop_map(Amf0Value::Reference),
            (any::<i32>(), any::<i16>()).prop_map(|(m, timezone)| Amf0Value::Date {
                millis: f64::from(m),
                timezone
            }),
            arb_string().prop_map(Amf0Value::LongString),
            arb_string().prop_map(Amf0Value::XmlDocument),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let object =
                proptest::collection::vec((arb_string(), inner.clone()), 0..6).prop_map(Amf0Object);
            prop_oneof![
                object.clone().prop_map(Amf0Value::Object),
                object.clone().prop_map(Amf0Value::EcmaArray),
                proptest::collection::vec(inner, 0..6).prop_map(Amf0Value::StrictArray),
                (arb_string(), object).prop_map(|(class_name, properties)| {
                    Amf0Value::TypedObject {
                        class_name,
                        properties,
                    }
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(values in proptest::collection::vec(arb_value(), 0..4)) {
            let mut out = BytesMut::new();
            encode_all(&values, &mut out);
            prop_assert_eq!(decode_all(&out).unwrap(), values);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&bytes);
        }

        #[test]
        fn arbitrary_amf3_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut input = vec![0x11];
            input.extend_from_slice(&bytes);
            let _ = decode_all(&input);
        }

        #[test]
        fn decoded_values_reencode_and_decode_the_same(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            // Whatever decodes (AMF3 included) must survive an AMF0 round trip.
            if let Ok(values) = decode_all(&bytes) {
                if values.iter().all(|v| !contains_nan(v)) {
                    let mut out = BytesMut::new();
                    encode_all(&values, &mut out);
                    prop_assert_eq!(decode_all(&out).unwrap(), values);
                }
            }
        }
    }

    fn contains_nan(value: &Amf0Value) -> bool {
        match value {
            Amf0Value::Number(n) => n.is_nan(),
            Amf0Value::Date { millis, .. } => millis.is_nan(),
            Amf0Value::StrictArray(items) => items.iter().any(contains_nan),
            Amf0Value::Object(o)
            | Amf0Value::EcmaArray(o)
            | Amf0Value::TypedObject { properties: o, .. } => {
                o.0.iter().any(|(_, v)| contains_nan(v))
            }
            _ => false,
        }
    }
}
