//! The FLV walker: tags and key frames are found, the bytes after the first key frame are
//! counted exactly however the body is split, and bad bodies are refused.

use proptest::prelude::*;

use super::{FlvError, FlvWalker};

/// One tag with its previous-tag size.
fn tag(kind: u8, data: &[u8]) -> Vec<u8> {
    let size = data.len() as u32;
    let mut out = vec![kind];
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&[0; 7]); // timestamp, extension, stream id
    out.extend_from_slice(data);
    out.extend_from_slice(&(size + 11).to_be_bytes());
    out
}

/// A body: header, script data, audio, an inter frame, a key frame, then more tags. Returns
/// it with the count the walker must give (the bytes behind the key frame's data).
fn body() -> (Vec<u8>, u64) {
    let mut out = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
    out.extend(tag(18, b"\x02\x00\x0aonMetaData"));
    out.extend(tag(8, &[0xaf, 0x01, 1, 2, 3]));
    out.extend(tag(9, &[0x27, 1, 0, 0, 0, 9, 9]));
    out.extend(tag(9, &[0x17, 1, 0, 0, 0, 5, 5, 5]));
    let keyframe_data_end = out.len() - 4;
    out.extend(tag(8, &[0xaf, 0x01, 4]));
    out.extend(tag(9, &[0x27, 1, 0, 0, 0]));
    out.extend(tag(9, &[0x17, 1, 0, 0, 0, 7]));
    let counted = (out.len() - keyframe_data_end) as u64;
    (out, counted)
}

#[test]
fn tags_key_frames_and_the_bytes_after_the_first_are_counted() {
    let (bytes, counted) = body();
    let mut walker = FlvWalker::default();
    walker.feed(&bytes).expect("walk");
    assert_eq!((walker.tags, walker.keyframes), (7, 2));
    assert!(walker.keyed());
    assert_eq!(walker.counted, counted);
}

#[test]
fn no_key_frame_counts_nothing_and_bad_bodies_fail() {
    let (bytes, _) = body();
    let mut walker = FlvWalker::default();
    walker.feed(&bytes[..60]).expect("walk");
    assert!(!walker.keyed());
    assert_eq!(walker.counted, 0);
    assert_eq!(FlvWalker::default().feed(b"<html>"), Err(FlvError::Header));
    let mut bad = bytes[..13].to_vec();
    bad.extend(tag(7, b"x"));
    assert_eq!(FlvWalker::default().feed(&bad), Err(FlvError::Tag(7)));
}

proptest! {
    /// Split anywhere, the body walks to the same counts.
    #[test]
    fn a_split_anywhere_counts_the_same(cuts in proptest::collection::vec(0usize..200, 0..30)) {
        let (bytes, counted) = body();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % bytes.len()).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut walker = FlvWalker::default();
        for w in cuts.windows(2) {
            walker.feed(&bytes[w[0]..w[1]]).expect("walk");
        }
        prop_assert_eq!((walker.tags, walker.keyframes, walker.counted), (7, 2, counted));
    }

    /// Any bytes after a header walk or fail, never panic.
    #[test]
    fn arbitrary_tags_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut with_header = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = FlvWalker::default().feed(&with_header);
    }
}
