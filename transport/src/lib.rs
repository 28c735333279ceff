//! Corecast's byte pipes over glommio, shared by the node (RTMPS, the pull server and the
//! edge's pull client) and the load generator.
//!
//! The protocol code in `corecast-common` is sans-IO and never touches a socket; this crate
//! is where bytes meet sockets, so that there is one answer to each of "how do we send many
//! buffers at once", "how do we drive rustls over glommio" and "how do tests trust a
//! self-signed certificate":
//! - glommio 0.9's `TcpStream` writes one buffer per call, so vectored writes are a raw
//!   `sendmsg`, done here and nowhere else;
//! - rustls is a sans-IO encrypted pipe; one driver feeds it for both sides, with the
//!   choices that matter for a media server (per-core read scratch, capped send buffer,
//!   records out in one `sendmsg`, alerts sent before a failed connection is dropped).
//!
//! Certificates and configurations are the callers' business (the node loads its
//! certificate and reloads it; the load generator finds the system's CA bundle): this crate
//! only drives the connections they make.
//!
//! # Layout
//! - [`socket`]: every raw socket call (`sendmsg`, `recv`, `shutdown`, `TCP_QUICKACK`), safe
//!   wrappers over `rustix`; the crate's one `unsafe` block borrows glommio's descriptor.
//! - [`poll_write_vectored`]: a vectored write to a glommio stream that waits for
//!   writability only when the socket is full.
//! - [`TlsStream`]: the rustls driver, generic over [`rustls::ServerConnection`] and
//!   [`rustls::ClientConnection`]: handshake with a deadline, reads into a `BytesMut` or a
//!   slice, vectored non-blocking writes, flush, `close_notify`.
//! - [`TlsError`]: why a TLS connection failed, with a static `as_str()` label.
//! - [`AcceptAny`], [`provider`]: the test verifier and the crypto provider (ring).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod socket;
mod tcp;
mod tls;
mod verify;

pub use error::TlsError;
pub use tcp::poll_write_vectored;
pub use tls::{TlsStream, SERVER_SEND_BUFFER_LIMIT};
pub use verify::{provider, AcceptAny};
