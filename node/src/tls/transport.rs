//! The RTMPS pipe: the session's [`Transport`] over the shared TLS driver, server side
//! ([`TlsStream<ServerConnection>`], from `corecast-transport`).
//!
//! The driver does the work and its docs say how: ciphertext read into a per-core scratch
//! buffer, plaintext slices encrypted in place into records that leave in one
//! `sendmsg(MSG_DONTWAIT)`, rustls' send buffer capped at 128 KiB so that a slow player's
//! backlog stays in its `SubscriberQueue` (where the keyframe-skip policy sees it), and
//! `flush` for what rustls accepted but could not send yet, and `try_read_into` for a
//! publisher's paced reads (everything ready, not one chunk per tick). This file only maps
//! the session's calls onto it.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use corecast_transport::TlsStream;
use rustls::ServerConnection;

use crate::transport::{Transport, TRY_READ_MAX};

impl Transport for TlsStream<ServerConnection> {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TlsStream::read_into(self, buf).await
    }

    fn try_read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TlsStream::try_read_into(self, buf, TRY_READ_MAX)
    }

    fn receive_buffer_bytes(&self) -> Option<usize> {
        TlsStream::receive_buffer_size(self).ok()
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        TlsStream::try_write_vectored(self, slices)
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        TlsStream::write_some(self, buf).await
    }

    async fn flush(&self) -> io::Result<()> {
        TlsStream::flush(self).await
    }

    fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        TlsStream::set_send_buffer_size(self, bytes)
    }

    fn shutdown(&self) {
        TlsStream::shutdown(self);
    }

    fn label(&self) -> &'static str {
        "rtmps"
    }
}
