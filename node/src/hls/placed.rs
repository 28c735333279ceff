//! Each stream's parts copied once into memfds ([`crate::httpd::memfd`]), so every viewer's
//! segment or part goes out with `sendfile` rather than a copy into the socket.
//!
//! Parts are placed when first asked for (the owner never pays for parts nobody fetches)
//! and forgotten once the window no longer serves their segment. Small parts (audio-only,
//! under [`MIN_PLACED`]) and parts that could not be placed are sent from the muxer's bytes.
//! Read and written under the muxer's lock (lock order: muxer, then this).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use corecast_hls::Muxer;

use crate::httpd::memfd;

/// Parts smaller than this are copied as before: a `sendfile` call costs more than the copy.
pub const MIN_PLACED: usize = 8 * 1024;

/// Placed parts by (media sequence number, part index).
#[derive(Default)]
pub struct Placed(Mutex<HashMap<(u64, usize), Bytes>>);

impl Placed {
    /// Part `index` of segment `msn`, whose bytes are `part`, from its memfd.
    pub fn get(&self, msn: u64, index: usize, part: Bytes) -> Bytes {
        if part.len() < MIN_PLACED {
            return part;
        }
        let mut placed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = placed.get(&(msn, index)) {
            return bytes.clone();
        }
        match memfd::place(&part) {
            Ok(bytes) => {
                placed.insert((msn, index), bytes.clone());
                bytes
            }
            Err(e) => {
                tracing::debug!(error = %e, "hls part not placed in a memfd");
                part
            }
        }
    }

    /// Forgets parts of segments `muxer` no longer serves.
    pub fn prune(&self, muxer: &Muxer) {
        let window = muxer.window();
        let current = window.current().msn;
        let mut placed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        placed.retain(|&(msn, _), _| msn == current || window.segment(msn).is_some());
    }
}
