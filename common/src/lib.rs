//! Corecast's sans-IO RTMP protocol core.
//!
//! Everything in this crate is a pure state machine: bytes (and, where a protocol needs it,
//! the current time or random bytes) go in, parsed events and bytes to send come out. Nothing
//! here touches a socket, an executor or the system clock, so every parser can be unit tested
//! with spec vectors, property tested and fuzzed.
//!
//! # Layout
//! - [`types`]: the newtypes and the [`types::RtmpMessage`] every layer passes around.
//! - [`amf0`]: AMF0 values (and the AMF3 envelope some clients wrap commands in).
//! - [`handshake`]: the C0/C1/C2 ⇄ S0/S1/S2 exchange, plain and digest (FP9), both sides.
//! - [`rtmpe`]: RTMPE (C0 6): the Diffie-Hellman exchange inside the digest handshake and the
//!   RC4 keystreams it yields.
//! - [`chunk`]: the chunk stream decoder and encoder, including encode-once media framing.
//! - [`client`]: the client side of a session (publish and play roles) and target URLs.
//! - [`control`]: protocol control messages (types 1–6) and user control events.
//! - [`command`]: NetConnection/NetStream command messages (types 20/17) and data messages.
//! - [`request`]: the commands a client sends a server, parsed once into typed requests.
//! - [`flv`]: FLV tag headers, codec/keyframe/sequence-header detection, FLV file framing.
//! - [`ertmp`]: Enhanced RTMP v2 audio/video headers: multitrack, ModEx, FourCCs, and the
//!   class (sequence header, config packet, keyframe, end) a relay caches by.
//! - [`plane`]: the per-core control plane (publish, play, pulls, core messages) and its
//!   in-memory multi-core harness.
//! - [`pull`]: the origin/edge pull protocol (request and status lines, event stream, HRW).
//! - [`token`]: signed tokens (publish, play, pull) and the keyring that mints and checks them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod amf0;
pub mod caps;
pub mod chunk;
pub mod client;
pub mod command;
pub mod control;
pub mod ertmp;
pub mod flv;
pub mod handshake;
pub mod plane;
pub mod pull;
pub mod request;
pub mod rtmpe;
pub mod token;
pub mod types;
#[cfg(test)]
mod vectors;
