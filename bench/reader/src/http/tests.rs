//! The response decoder: framings, keep-alive sequences, bad input, and the property that a
//! byte stream split anywhere decodes to the same responses.

use proptest::prelude::*;

use super::{Framing, HttpError, Part, ResponseDecoder};

/// A decoded response: status and body.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Feeds `pieces` one after the other; returns the complete responses.
fn decode(pieces: &[&[u8]]) -> Result<Vec<Response>, HttpError> {
    let mut decoder = ResponseDecoder::default();
    let mut out = Vec::new();
    let mut current: Option<Response> = None;
    for piece in pieces {
        let mut input: &[u8] = piece;
        while let Some(part) = decoder.next(&mut input)? {
            match part {
                Part::Head(head) => {
                    current = Some(Response {
                        status: head.status,
                        body: Vec::new(),
                    })
                }
                Part::Body(bytes) => current
                    .as_mut()
                    .expect("body after a head")
                    .body
                    .extend_from_slice(bytes),
                Part::End => out.push(current.take().expect("end after a head")),
            }
        }
        assert!(input.is_empty(), "the decoder left input unused");
    }
    Ok(out)
}

fn ok(body: &[u8]) -> Response {
    Response {
        status: 200,
        body: body.to_vec(),
    }
}

const KEEPALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

fn keepalive_responses() -> Vec<Response> {
    vec![
        ok(b"hello"),
        Response {
            status: 404,
            body: Vec::new(),
        },
        ok(b"abc0123456789abcdef"),
        Response {
            status: 304,
            body: Vec::new(),
        },
        ok(b"hi"),
    ]
}

#[test]
fn length_chunked_and_bodiless_responses_follow_each_other() {
    assert_eq!(decode(&[KEEPALIVE]).expect("decode"), keepalive_responses());
}

#[test]
fn a_body_without_length_runs_until_the_connection_ends() {
    let mut decoder = ResponseDecoder::default();
    let mut input: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nFLV";
    let Some(Part::Head(head)) = decoder.next(&mut input).expect("head") else {
        panic!("no head");
    };
    assert_eq!(head.framing, Framing::UntilClose);
    assert!(head.close, "HTTP/1.0 closes");
    assert_eq!(decoder.next(&mut input), Ok(Some(Part::Body(b"FLV"))));
    assert_eq!(decoder.next(&mut input), Ok(None));
}

#[test]
fn bad_input_is_an_error() {
    let cases: [&[u8]; 6] = [
        b"RTMP garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
    ];
    for case in cases {
        assert!(
            decode(&[case]).is_err(),
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
    let long = vec![b'a'; super::MAX_HEAD + 10];
    assert_eq!(
        decode(&[b"HTTP/1.1 200 OK\r\nX: ", &long]).map(|_| ()),
        Err(HttpError::HeadTooLong)
    );
    let long_line = vec![b'1'; super::MAX_LINE + 10];
    assert!(decode(&[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &long_line
    ])
    .is_err());
}

#[test]
fn requests_are_keep_alive_gets() {
    let request = super::get("127.0.0.1:80", "/hls/live/x/plain.m3u8");
    let text = String::from_utf8(request).expect("utf-8");
    assert!(text.starts_with("GET /hls/live/x/plain.m3u8 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
}

proptest! {
    /// Responses split at any byte boundaries decode the same as in one piece.
    #[test]
    fn a_split_anywhere_decodes_the_same(cuts in proptest::collection::vec(0..KEEPALIVE.len(), 0..40)) {
        let mut cuts = cuts;
        cuts.push(0);
        cuts.push(KEEPALIVE.len());
        cuts.sort_unstable();
        let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &KEEPALIVE[w[0]..w[1]]).collect();
        prop_assert_eq!(decode(&pieces).expect("decode"), keepalive_responses());
    }

    /// Any bytes at all are decoded or refused, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        with_head.extend_from_slice(&bytes);
        let _ = decode(&[&bytes]);
        let _ = decode(&[&with_head]);
    }
}
