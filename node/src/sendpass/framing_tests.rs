//! The tick pass's chunk framing, sans-IO: which chunk each send of a batch goes into, the
//! slices of a batch with raw and framed sends mixed, and what a send's result does to its
//! chunk state and to what the queue advances by.

use std::cell::RefCell;
use std::io::IoSlice;
use std::rc::Rc;

use proptest::prelude::*;

use super::{chunks_of, frame_runs, settle, PlayerSend};
use crate::flv_http::chunked::OpenChunk;
use crate::outbound::Outbound;
use crate::queue::QueueLimits;

fn outbound() -> Rc<Outbound> {
    Outbound::new(QueueLimits {
        soft_max_bytes: 1 << 20,
        hard_max_bytes: 2 << 20,
    })
}

fn bytes(slices: &[IoSlice<'_>]) -> Vec<u8> {
    slices.iter().flat_map(|s| s.to_vec()).collect()
}

#[test]
fn a_batch_frames_only_its_framed_sends() {
    let (a, b) = (outbound(), outbound());
    let state = RefCell::new(None);
    let batch: Vec<PlayerSend<'_>> = vec![(&a.queue, 3, None), (&b.queue, 4, Some(&state))];
    let raw = [
        IoSlice::new(b"rtmp"),
        IoSlice::new(b"hello "),
        IoSlice::new(b"world"),
    ];
    let raw_ends = [1, 3];
    let chunks = chunks_of(&batch, &raw, &raw_ends);
    assert_eq!(chunks, vec![None, Some(OpenChunk::new(11))]);
    let mut out = Vec::new();
    let ends = frame_runs(&raw, &raw_ends, &chunks, &mut out);
    assert_eq!(ends, vec![1, 5]);
    assert_eq!(bytes(&out[..1]), b"rtmp");
    assert_eq!(bytes(&out[1..]), b"b\r\nhello world\r\n");
}

#[test]
fn an_open_chunk_is_continued_and_cut_at_its_end() {
    let a = outbound();
    let mut open = OpenChunk::new(8);
    // The size line and three body bytes went out before.
    assert_eq!(open.advance(6), 3);
    let state = RefCell::new(Some(open));
    let batch: Vec<PlayerSend<'_>> = vec![(&a.queue, 3, Some(&state))];
    let raw = [IoSlice::new(b"defgh"), IoSlice::new(b"next")];
    let chunks = chunks_of(&batch, &raw, &[2]);
    assert_eq!(chunks, vec![Some(open)]);
    let mut out = Vec::new();
    frame_runs(&raw, &[2], &chunks, &mut out);
    assert_eq!(
        bytes(&out),
        b"defgh\r\n",
        "the rest of its body, then its end"
    );
    // All of it written: the chunk is closed and 5 body bytes advance the queue.
    let mut results = [7];
    settle(&batch, &chunks, &mut results);
    assert_eq!(results, [5]);
    assert_eq!(*state.borrow(), None);
}

#[test]
fn a_failed_send_leaves_the_chunk_state_as_it_was() {
    let a = outbound();
    let state = RefCell::new(None);
    let batch: Vec<PlayerSend<'_>> = vec![(&a.queue, 3, Some(&state))];
    let chunks = vec![Some(OpenChunk::new(100))];
    let mut results = [-libc::EAGAIN];
    settle(&batch, &chunks, &mut results);
    assert_eq!(results, [-libc::EAGAIN]);
    assert_eq!(*state.borrow(), None, "no chunk was opened on the wire");
}

proptest! {
    /// However much of a framed send the kernel takes, the body bytes reported are the
    /// payload bytes among them, and the chunk left open continues right after them.
    #[test]
    fn a_partial_send_reports_its_body_bytes(len in 1usize..5000, taken in 1usize..6000) {
        let a = outbound();
        let state = RefCell::new(None);
        let batch: Vec<PlayerSend<'_>> = vec![(&a.queue, 3, Some(&state))];
        let payload = vec![7u8; len];
        let raw = [IoSlice::new(&payload)];
        let chunks = chunks_of(&batch, &raw, &[1]);
        let mut out = Vec::new();
        frame_runs(&raw, &[1], &chunks, &mut out);
        let wire: usize = out.iter().map(|s| s.len()).sum();
        let n = taken.min(wire);
        let head = wire - len - 2;
        let mut results = [n as i32];
        settle(&batch, &chunks, &mut results);
        let body = n.saturating_sub(head).min(len);
        prop_assert_eq!(results[0] as usize, body);
        let left = *state.borrow();
        match left {
            None => prop_assert_eq!(n, wire, "closed only once its CRLF is out"),
            Some(open) => prop_assert_eq!(open.body_left(), len - body),
        }
    }
}
