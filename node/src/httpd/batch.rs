//! [`Batch`]: one body frame made of many shared `Bytes` slices (a streamed body's unit).
//!
//! hyper writes each body frame as one buffer of its write queue, and with the vectored
//! adapter ([`super::io`]) gives the kernel every slice of it ([`Buf::chunks_vectored`]) in
//! one `sendmsg`: the chunked-encoding size line and trailer around the frame are two more
//! slices. An HTTP-FLV viewer hands over a whole merge window of FLV tag parts as one batch,
//! so it costs one write per window, as an RTMP player does, and no tag byte is copied.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Slices written in order, as one body frame.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Never an empty slice: `chunk()` must be non-empty while bytes remain.
    slices: VecDeque<Bytes>,
    remaining: usize,
}

impl Batch {
    /// An empty batch with room for `slices` slices.
    pub fn with_capacity(slices: usize) -> Batch {
        Batch {
            slices: VecDeque::with_capacity(slices),
            remaining: 0,
        }
    }

    /// Appends `bytes` (an empty slice is left out).
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.slices.push_back(bytes);
        }
    }

    /// How many slices it holds.
    pub fn slices(&self) -> usize {
        self.slices.len()
    }
}

impl From<Bytes> for Batch {
    fn from(bytes: Bytes) -> Batch {
        let mut batch = Batch::with_capacity(1);
        batch.push(bytes);
        batch
    }
}

impl Buf for Batch {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.slices.front().map_or(&[], |b| b)
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a batch");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.slices.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.slices.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, slice) in dst.iter_mut().zip(&self.slices) {
            *slot = IoSlice::new(slice);
            n += 1;
        }
        n
    }
}

impl Batch {
    /// All its bytes in one buffer (a copy).
    pub fn collect_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.remaining);
        for slice in &self.slices {
            out.extend_from_slice(slice);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_advances_walk_the_slices_bytes_in_order(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..8),
            steps in proptest::collection::vec(0usize..30, 0..10),
        ) {
            let mut batch = Batch::default();
            for part in &parts {
                batch.push(Bytes::from(part.clone()));
            }
            let mut expected: Vec<u8> = parts.concat();
            prop_assert_eq!(batch.collect_bytes(), expected.clone());
            for step in steps {
                let step = step.min(batch.remaining());
                let mut iov = [IoSlice::new(&[]); 16];
                let n = batch.chunks_vectored(&mut iov);
                let gathered: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
                prop_assert_eq!(&gathered, &expected);
                prop_assert!(batch.remaining() == 0 || !batch.chunk().is_empty());
                if step % 2 == 0 {
                    batch.advance(step);
                } else {
                    prop_assert_eq!(&batch.copy_to_bytes(step)[..], &expected[..step]);
                }
                expected.drain(..step);
                prop_assert_eq!(batch.remaining(), expected.len());
            }
        }
    }
}
