//! The PROXY protocol header (v1 text and v2 binary), sans-IO: what a load balancer in front
//! of the node writes before the client's first byte, carrying the client's address.
//!
//! Parsing is the `ppp` crate's; this module adds what a server reading the header off a
//! socket needs around it: which bytes belong to the header (so not one byte of the client's
//! own protocol is consumed), a bound on its size, and a verdict of three kinds: complete,
//! incomplete (offer more), invalid. [`HeaderReader`] drives it over fragmented input: the
//! I/O side peeks, offers what it saw, and reads off exactly the bytes the reader says are
//! header bytes. [`sniff`] tells, for a peer that may not send a header, whether its first
//! bytes are one.
//!
//! v2 TLVs are skipped (their bytes are consumed, their contents ignored). A header without a
//! client address (v2 `LOCAL`, a load balancer's health check; v1 `UNKNOWN`; v2 over an
//! unspecified or Unix family) is [`ProxyHeader::Local`]: the node closes those quietly.

use std::net::{IpAddr, SocketAddr};

use ppp::v1;
use ppp::v2;

/// Longest header accepted. A v1 header is at most 107 bytes; a v2 header's length field
/// allows 64 KiB of TLVs, far more than any load balancer sends (AWS, GCP and HAProxy send a
/// few dozen bytes): beyond this the connection is refused rather than buffered.
pub const MAX_HEADER_BYTES: usize = 4096;

/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection; `source` is the client as the load balancer saw it.
    Proxied {
        /// The client's address and port.
        source: SocketAddr,
    },
    /// No client address: a health check (v2 `LOCAL`) or an address the node cannot use.
    Local,
}

/// Why bytes are not a header the node accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The bytes do not start a PROXY header at all.
    #[error("no PROXY protocol header")]
    Missing,
    /// A header longer than [`MAX_HEADER_BYTES`].
    #[error("PROXY protocol header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    /// A header that starts right and is wrong further on.
    #[error("malformed PROXY protocol header")]
    Malformed,
}

impl HeaderError {
    /// A static name, for the refusal metric's `reason` label and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderError::Missing => "proxy_missing",
            HeaderError::TooLong => "proxy_too_long",
            HeaderError::Malformed => "proxy_malformed",
        }
    }
}

/// The verdict on bytes that should start with a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, the first `len` bytes.
    Complete {
        /// What it says.
        header: ProxyHeader,
        /// Its length in bytes; what follows is the client's.
        len: usize,
    },
    /// A header's beginning: more bytes may complete it.
    Incomplete,
    /// Not a header the node accepts, whatever follows.
    Invalid(HeaderError),
}

/// Parses the header at the start of `input` (v1 or v2).
pub fn parse(input: &[u8]) -> Parsed {
    match sniff(input) {
        Sniff::NotHeader => Parsed::Invalid(HeaderError::Missing),
        Sniff::Undecided => Parsed::Incomplete,
        Sniff::Header if input.starts_with(V2_SIGNATURE) => parse_v2(input),
        Sniff::Header => parse_v1(input),
    }
}

fn parse_v2(input: &[u8]) -> Parsed {
    let Some(fixed) = input.get(..V2_FIXED) else {
        return Parsed::Incomplete;
    };
    let len = V2_FIXED + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_HEADER_BYTES {
        return Parsed::Invalid(HeaderError::TooLong);
    }
    let Some(bytes) = input.get(..len) else {
        return Parsed::Incomplete;
    };
    let Ok(header) = v2::Header::try_from(bytes) else {
        return Parsed::Invalid(HeaderError::Malformed);
    };
    let source = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
    };
    complete(source, header.len())
}

/// The longest v1 header (the spec's bound, which `ppp` enforces too).
const V1_MAX: usize = 107;

fn parse_v1(input: &[u8]) -> Parsed {
    // `ppp` tells a partial line from a wrong one only at some cuts (a line cut after a space
    // reads as an empty, invalid field), so the line goes to it whole: up to its CR LF.
    let Some(cr) = input.iter().take(V1_MAX).position(|&b| b == b'\r') else {
        return if input.len() >= V1_MAX {
            Parsed::Invalid(HeaderError::Malformed)
        } else {
            Parsed::Incomplete
        };
    };
    let Some(line) = input.get(..cr + 2) else {
        return Parsed::Incomplete;
    };
    let Ok(header) = v1::Header::try_from(line) else {
        return Parsed::Invalid(HeaderError::Malformed);
    };
    let source = match header.addresses {
        v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v1::Addresses::Unknown => None,
    };
    complete(source, line.len())
}

fn complete(source: Option<SocketAddr>, len: usize) -> Parsed {
    let header = match source {
        Some(source) => ProxyHeader::Proxied { source },
        None => ProxyHeader::Local,
    };
    Parsed::Complete { header, len }
}

/// Whether bytes start a PROXY header, by their first bytes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// They start with the v1 prefix or the v2 signature.
    Header,
    /// They are a proper beginning of one: more bytes decide.
    Undecided,
    /// They are something else (RTMP's 0x03, TLS's 0x16, an HTTP method).
    NotHeader,
}

/// Tells whether `input` starts a PROXY header (see [`Sniff`]); empty input is undecided.
pub fn sniff(input: &[u8]) -> Sniff {
    for prefix in [V2_SIGNATURE, V1_PREFIX] {
        if input.starts_with(prefix) {
            return Sniff::Header;
        }
    }
    let starts_one = |prefix: &[u8]| prefix.starts_with(input);
    if starts_one(V2_SIGNATURE) || starts_one(V1_PREFIX) {
        Sniff::Undecided
    } else {
        Sniff::NotHeader
    }
}

/// Reads a header off a stream one peek at a time, consuming header bytes only.
///
/// The I/O side loops: peek what has arrived, [`offer`](HeaderReader::offer) it, and read off
/// (consume) the number of bytes the [`Step`] names. Bytes already consumed are kept here, so
/// each offer is only what arrived since.
#[derive(Debug, Default)]
pub struct HeaderReader {
    consumed: Vec<u8>,
}

/// What to do with the bytes just offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// They are all header bytes and the header goes on: consume them, offer what comes next.
    Consume(usize),
    /// The header ends `consume` bytes in: consume exactly those; the rest is the client's.
    Done {
        /// Header bytes left to consume.
        consume: usize,
        /// What the header says.
        header: ProxyHeader,
    },
    /// Not a header the node accepts: close.
    Invalid(HeaderError),
}

impl HeaderReader {
    /// A reader before any byte.
    pub fn new() -> HeaderReader {
        HeaderReader::default()
    }

    /// Offers the bytes that arrived since the last step (a peek: none consumed yet).
    pub fn offer(&mut self, peeked: &[u8]) -> Step {
        let before = self.consumed.len();
        // Never look at (or keep) more than a header can be.
        let peeked = &peeked[..peeked.len().min(MAX_HEADER_BYTES - before)];
        self.consumed.extend_from_slice(peeked);
        match parse(&self.consumed) {
            Parsed::Complete { header, len } => {
                self.consumed.truncate(len);
                Step::Done {
                    consume: len - before,
                    header,
                }
            }
            Parsed::Incomplete if self.consumed.len() >= MAX_HEADER_BYTES => {
                Step::Invalid(HeaderError::TooLong)
            }
            Parsed::Incomplete => Step::Consume(peeked.len()),
            Parsed::Invalid(e) => Step::Invalid(e),
        }
    }
}

#[cfg(test)]
mod tests;
