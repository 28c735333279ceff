//! MPEG-TS segments (what nginx-rtmp's HLS writes), read with the `mpeg2ts` crate: the first
//! video PES packet's payload (H.264 Annex B) and the synthetic clock in it. Sans-IO; a
//! segment that does not parse has no clock.

use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
use mpeg2ts::ts::TsPacketReader;

use crate::source::find_clock;

/// Whether `bytes` look like MPEG-TS (the sync byte every 188-byte packet starts with).
pub fn is_ts(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x47) && bytes.get(188).is_none_or(|&b| b == 0x47)
}

/// The send time stamped in the first video frame of a segment, if there is one.
pub fn first_video_clock(segment: &[u8]) -> Option<u64> {
    let mut reader = PesPacketReader::new(TsPacketReader::new(segment));
    // Bounded by the segment: every read consumes packets, the end is `Ok(None)`.
    while let Ok(Some(pes)) = reader.read_pes_packet() {
        if pes.header.stream_id.is_video() {
            return find_clock(&pes.data);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = first_video_clock(&bytes);
            let mut ts = bytes.clone();
            if let Some(b) = ts.first_mut() { *b = 0x47; }
            let _ = first_video_clock(&ts);
        }
    }
}
