//! The sliding window of finished segments and the segment being built, as shared `Bytes`.
//!
//! A part is one `moof`+`mdat` built once; a segment is the list of its parts (RFC 8216bis
//! 4.4.4.9: a segment is the concatenation of its partial segments), so serving a segment is
//! writing the parts' `Bytes` in order, with no copy. Segments that left the playlist stay
//! [`RETIRED_SEGMENTS`] more segments, for players and CDNs still fetching them.
//!
//! A finished segment can be *relocated* ([`Window::relocate`]): its bytes, already copied
//! by the caller into one contiguous buffer (the node: one memfd per segment, sent with
//! `sendfile`), become the segment's body as one `Bytes`, and its parts become slices of
//! it, so the window holds the media once, not twice.

use std::collections::VecDeque;

use bytes::Bytes;

/// Segments kept after they leave the playlist (RFC 8216bis 6.2.2: a server should keep a
/// removed segment available for a while).
pub const RETIRED_SEGMENTS: usize = 2;

/// One partial segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The `moof`+`mdat`.
    pub bytes: Bytes,
    /// Duration in the timeline's timescale.
    pub duration: u64,
    /// Starts with a sync sample of every track (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// One media segment: its parts, finished or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Decode time where it starts, in the timeline's timescale (segments are contiguous).
    pub start: u64,
    /// The parts, in order.
    pub parts: Vec<Part>,
    /// The parts' bytes as one contiguous buffer, once [`Window::relocate`]d.
    pub whole: Option<Bytes>,
}

impl Segment {
    /// Sum of the parts' durations, in the timeline's timescale.
    pub fn duration(&self) -> u64 {
        self.parts.iter().map(|p| p.duration).sum()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }

    /// True when it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body: the parts' bytes, in order (cheap clones), or the one relocated buffer.
    pub fn body(&self) -> Vec<Bytes> {
        if let Some(whole) = &self.whole {
            return vec![whole.clone()];
        }
        self.parts.iter().map(|p| p.bytes.clone()).collect()
    }
}

/// Finished segments plus the one being built.
#[derive(Debug, Clone)]
pub struct Window {
    /// Finished segments, oldest first: the playlist's and the retired ones.
    finished: VecDeque<Segment>,
    /// The segment being built (its parts so far).
    current: Segment,
    /// How many finished segments the playlist lists.
    listed: usize,
    /// The longest segment finished so far: `EXT-X-TARGETDURATION` must never shrink.
    longest_ever: u64,
    /// Bytes of every part held (finished segments and current), kept as parts come and
    /// segments go so the node can account for it per part without summing.
    held: usize,
}

impl Window {
    /// An empty window listing `listed` segments.
    pub fn new(listed: usize) -> Window {
        Window {
            finished: VecDeque::new(),
            current: Segment {
                msn: 0,
                start: 0,
                parts: Vec::new(),
                whole: None,
            },
            listed,
            longest_ever: 0,
            held: 0,
        }
    }

    /// Adds a part to the current segment; returns its index.
    pub fn push_part(&mut self, part: Part) -> usize {
        self.held += part.bytes.len();
        self.current.parts.push(part);
        self.current.parts.len() - 1
    }

    /// Finishes the current segment (if it has parts) and starts the next one.
    pub fn finish_segment(&mut self) -> Option<u64> {
        if self.current.parts.is_empty() {
            return None;
        }
        let next = Segment {
            msn: self.current.msn + 1,
            start: self.current.start + self.current.duration(),
            parts: Vec::new(),
            whole: None,
        };
        let done = std::mem::replace(&mut self.current, next);
        let msn = done.msn;
        self.longest_ever = self.longest_ever.max(done.duration());
        self.finished.push_back(done);
        while self.finished.len() > self.listed + RETIRED_SEGMENTS {
            if let Some(gone) = self.finished.pop_front() {
                self.held -= gone.len();
            }
        }
        Some(msn)
    }

    /// The finished segments the playlist lists, oldest first.
    pub fn listed(&self) -> impl Iterator<Item = &Segment> {
        let skip = self.finished.len().saturating_sub(self.listed);
        self.finished.iter().skip(skip)
    }

    /// The segment being built.
    pub fn current(&self) -> &Segment {
        &self.current
    }

    /// A finished segment still held (listed or retired).
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.finished.front()?.msn;
        let index = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.finished.get(index)
    }

    /// A part still held, finished segment or current.
    pub fn part(&self, msn: u64, index: usize) -> Option<&Part> {
        if msn == self.current.msn {
            return self.current.parts.get(index);
        }
        self.segment(msn)?.parts.get(index)
    }

    /// Makes `whole` the body of finished segment `msn` and its parts slices of it. `whole`
    /// must hold exactly the segment's bytes, in order (checked by length here; the bytes
    /// are the caller's copy of [`Segment::body`]). False, and nothing changed, when the
    /// segment is gone, already relocated, or the length differs.
    pub fn relocate(&mut self, msn: u64, whole: Bytes) -> bool {
        let Some(first) = self.finished.front().map(|s| s.msn) else {
            return false;
        };
        let Some(index) = msn.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else {
            return false;
        };
        let Some(segment) = self.finished.get_mut(index) else {
            return false;
        };
        if segment.whole.is_some() || segment.len() != whole.len() {
            return false;
        }
        let mut at = 0;
        for part in &mut segment.parts {
            let len = part.bytes.len();
            debug_assert_eq!(part.bytes, whole.slice(at..at + len));
            part.bytes = whole.slice(at..at + len);
            at += len;
        }
        segment.whole = Some(whole);
        true
    }

    /// Bytes of media held: every part of the listed, retired and current segments.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The longest segment finished so far, in timescale units.
    pub fn longest_ever(&self) -> u64 {
        self.longest_ever
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(duration: u64) -> Part {
        Part {
            bytes: Bytes::from_static(b"x"),
            duration,
            independent: true,
        }
    }

    #[test]
    fn a_segment_is_the_sum_of_its_parts_and_old_ones_retire_then_go() {
        let mut window = Window::new(2);
        for msn in 0..6 {
            window.push_part(part(10));
            window.push_part(part(5));
            assert_eq!(window.finish_segment(), Some(msn));
        }
        let listed: Vec<_> = window.listed().map(|s| s.msn).collect();
        assert_eq!(listed, vec![4, 5]);
        assert!(window.segment(2).is_some(), "retired but still served");
        assert!(window.segment(1).is_none(), "gone");
        assert_eq!(window.segment(5).map(Segment::duration), Some(15));
        assert_eq!(window.current().msn, 6);
        assert_eq!(window.current().start, 6 * 15);
        assert!(window.part(6, 0).is_none());
    }

    #[test]
    fn a_relocated_segment_serves_one_buffer_and_its_parts_slice_it() {
        let mut window = Window::new(2);
        for bytes in [&b"abc"[..], b"de"] {
            window.push_part(Part {
                bytes: Bytes::copy_from_slice(bytes),
                duration: 1,
                independent: true,
            });
        }
        assert_eq!(window.finish_segment(), Some(0));
        let held = window.held_bytes();
        assert!(
            !window.relocate(0, Bytes::from_static(b"abcd")),
            "wrong length"
        );
        assert!(
            !window.relocate(1, Bytes::from_static(b"abcde")),
            "not finished"
        );
        let whole = Bytes::from_static(b"abcde");
        assert!(window.relocate(0, whole.clone()));
        assert!(!window.relocate(0, whole.clone()), "only once");
        let segment = window.segment(0).expect("held");
        assert_eq!(segment.body(), vec![whole.clone()]);
        let part = window.part(0, 1).expect("held");
        assert_eq!(part.bytes, Bytes::from_static(b"de"));
        assert_eq!(
            part.bytes.as_ptr(),
            whole[3..].as_ptr(),
            "a slice of the buffer"
        );
        assert_eq!(window.held_bytes(), held, "the same bytes, held once");
    }

    #[test]
    fn an_empty_segment_is_never_finished() {
        let mut window = Window::new(3);
        assert_eq!(window.finish_segment(), None);
        assert_eq!(window.current().msn, 0);
    }

    proptest::proptest! {
        /// Whatever parts come and however segments are cut, the count of held bytes is the
        /// sum of the parts of every segment still held.
        #[test]
        fn held_bytes_are_the_parts_still_held(
            listed in 1usize..5,
            steps in proptest::collection::vec((0usize..3000, proptest::bool::ANY), 0..200),
        ) {
            let mut window = Window::new(listed);
            for (len, cut) in steps {
                window.push_part(Part {
                    bytes: Bytes::from(vec![0u8; len]),
                    duration: 1,
                    independent: true,
                });
                if cut {
                    window.finish_segment();
                }
            }
            let finished: usize = window.finished.iter().map(Segment::len).sum();
            proptest::prop_assert_eq!(window.held_bytes(), finished + window.current().len());
        }
    }
}
