//! The `handshake_rtmpe` target: `ServerHandshake` with RTMPE on, fed C0 6 and arbitrary
//! client bytes in arbitrary reads.
//!
//! Input: byte 0 cuts the stream into reads ([`crate::Pieces`]); byte 1 is a mode: bit 0 asks
//! the target to sign C1 itself (a valid digest at the scheme bit 1 picks), so that mutations
//! of the rest of C1, the DH key among it, reach the Diffie-Hellman code instead of stopping
//! at the digest check; the rest is C1, C2 and whatever follows. C0 (6) is prepended.

use bytes::BytesMut;
use corecast_common::handshake::{HandshakeStatus, ServerHandshake, HANDSHAKE_SIZE};
use corecast_common::rtmpe::{DH_KEY_LEN, RTMPE_VERSION};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{server_random, split_control, Pieces, SERVER_EPOCH};

/// The server's DH private key: fixed, so that runs answer alike.
pub fn server_dh_private() -> Vec<u8> {
    (0..DH_KEY_LEN).map(|i| (i * 11 + 5) as u8).collect()
}

/// A server handshake as the `handshake_rtmpe` target builds it.
pub fn rtmpe_server() -> ServerHandshake {
    ServerHandshake::new(SERVER_EPOCH, &server_random()).with_rtmpe(&server_dh_private())
}

/// Position of a C1's digest (scheme 0: offset bytes at 772; scheme 1: at 8).
pub fn digest_pos(c1: &[u8], scheme0: bool) -> usize {
    let base = if scheme0 { 772 } else { 8 };
    let sum: usize = c1[base..base + 4].iter().map(|&b| usize::from(b)).sum();
    base + 4 + sum % 728
}

/// Position of a C1's DH key, paired with the digest scheme.
pub fn dh_pos(c1: &[u8], scheme0: bool) -> usize {
    let (at, base) = if scheme0 { (768, 8) } else { (1532, 772) };
    let sum: usize = c1[at..at + 4].iter().map(|&b| usize::from(b)).sum();
    base + sum % 632
}

/// Writes the Flash Player digest into a 1536-byte `c1` at the scheme.
pub fn sign_c1(c1: &mut [u8], scheme0: bool) {
    let pos = digest_pos(c1, scheme0);
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(b"Genuine Adobe Flash Player 001")
    else {
        return;
    };
    mac.update(&c1[..pos]);
    mac.update(&c1[pos + 32..]);
    c1[pos..pos + 32].copy_from_slice(&mac.finalize().into_bytes());
}

#[derive(Debug, PartialEq)]
struct RtmpeRun {
    status: Result<HandshakeStatus, String>,
    output: Vec<u8>,
    consumed: usize,
    rtmpe: bool,
    /// The first 16 bytes of each keystream, when the handshake finished.
    keystreams: Option<([u8; 16], [u8; 16])>,
}

fn run<'a>(reads: impl Iterator<Item = &'a [u8]>) -> RtmpeRun {
    let mut handshake = rtmpe_server();
    let mut buf = BytesMut::new();
    let (mut fed, mut output) = (0, Vec::new());
    let mut status = Ok(HandshakeStatus::NeedMore);
    for read in reads {
        buf.extend_from_slice(read);
        fed += read.len();
        status = handshake
            .handle_input(&mut buf)
            .map_err(|e| format!("{e:?}"));
        while let Some(bytes) = handshake.poll_output() {
            output.extend_from_slice(&bytes);
        }
        if status != Ok(HandshakeStatus::NeedMore) {
            break;
        }
    }
    let keystreams = handshake.take_rtmpe_cipher().map(|mut cipher| {
        let (mut enc, mut dec) = ([0u8; 16], [0u8; 16]);
        cipher.encrypt(&mut enc);
        cipher.decrypt(&mut dec);
        (enc, dec)
    });
    RtmpeRun {
        status,
        output,
        consumed: fed - buf.len(),
        rtmpe: handshake.is_rtmpe(),
        keystreams,
    }
}

/// `ServerHandshake` with RTMPE on, on C0 6 and arbitrary bytes (see the module docs).
pub fn handshake_rtmpe(data: &[u8]) {
    let (control, rest) = split_control(data);
    let (mode, body) = split_control(rest);
    let mut stream = vec![RTMPE_VERSION];
    stream.extend_from_slice(body);
    if mode & 1 == 1 {
        if let Some(c1) = stream.get_mut(1..1 + HANDSHAKE_SIZE) {
            sign_c1(c1, mode & 2 == 2);
        }
    }
    let whole = run(std::iter::once(&stream[..]));
    let pieces = run(Pieces::new(control, &stream));
    assert_eq!(
        whole, pieces,
        "RTMPE handshake depends on how reads are cut"
    );

    let c0c1 = 1 + HANDSHAKE_SIZE;
    match &whole.status {
        Err(_) => {
            assert_eq!(whole.consumed, 0, "a refused C1 is not consumed");
            assert!(whole.output.is_empty() && !whole.rtmpe);
        }
        Ok(status) => {
            if whole.output.is_empty() {
                assert!(stream.len() < c0c1, "C1 complete but unanswered");
            } else {
                assert_eq!(whole.output.len(), 1 + 2 * HANDSHAKE_SIZE, "S0+S1+S2 size");
                assert_eq!(whole.output.first(), Some(&RTMPE_VERSION), "S0 is 6");
                assert!(whole.rtmpe);
            }
            let done = *status == HandshakeStatus::Done;
            assert_eq!(
                done,
                whole.keystreams.is_some(),
                "keystreams exactly after Done"
            );
            if done {
                assert_eq!(whole.consumed, c0c1 + HANDSHAKE_SIZE, "bytes after C2 stay");
            }
        }
    }
}
