//! RTMPE, the "encrypted" RTMP handshake (C0 `0x06`): Diffie-Hellman 1024 and RC4, server side.
//!
//! Owns what RTMPE adds to the digest (FP9) handshake of [`crate::handshake`]: the DH key
//! exchange carried inside C1/S1, the RC4 keys derived from it, and [`RtmpeCipher`], the pair
//! of keystreams the caller runs every byte after the handshake through. The state machine
//! itself stays in [`crate::handshake::ServerHandshake`], which calls [`answer_c1`] for C0 6.
//!
//! RTMPE is obfuscation, not security: the DH exchange is unauthenticated (anyone in the middle
//! can run it with both sides) and RC4 is broken. It exists for old players; RTMPS is the
//! secure choice. It is off by default in the node (`rtmp.rtmpe`).
//!
//! # Layout (as librtmp/rtmpdump and Flash Media Server use it)
//! C1 is a digest-handshake C1 (version field non-zero, HMAC-SHA256 digest keyed with the
//! 30-byte Flash Player text at one of the two digest schemes) that also carries the client's
//! 128-byte DH public key. Where the key sits is paired with the digest scheme, so that the
//! two never overlap:
//! - digest scheme 1 (offset bytes 8..12, digest in 12..771): key at
//!   772 + (sum of bytes 1532..1536) % 632, that is inside 772..1531;
//! - digest scheme 0 (offset bytes 772..776, digest in 776..1535): key at
//!   8 + (sum of bytes 768..772) % 632, that is inside 8..767 (what rtmpdump sends).
//!
//! The server answers S0 = 6 and an S1 laid out the same way at the client's scheme, with its
//! own public key and a digest keyed with the 36-byte Media Server text; S2 is the digest
//! handshake's signed S2. C2 and S2 travel in the clear.
//!
//! # Keys
//! Group: the 1024-bit MODP group of RFC 2409 (Oakley group 2), generator 2. Public keys and
//! the shared secret are written as fixed-width 128-byte big-endian numbers, with leading zero
//! bytes kept (about one key in 256 has one; a short encoding would shift the HMAC input). The
//! RC4 key for the bytes one side sends is the first 16 bytes of
//! HMAC-SHA256(shared secret, the *receiver's* public key). Both keystreams are then advanced
//! past 1536 bytes before the first byte after the handshake is encrypted, as librtmp does.
//!
//! # Not here
//! C0 `0x08` (S2's signature key additionally XTEA-scrambled) and `0x09` (Blowfish) are refused
//! as [`HandshakeError::RtmpeUnsupported`]: no encoder or player in use sends them (Debian's
//! rtmpdump sends only 6), and there is no independent client to check them against.

use std::sync::OnceLock;

use bytes::{BufMut, BytesMut};
use num_bigint::BigUint;
use rc4::consts::U16;
use rc4::{KeyInit, Rc4, StreamCipher};

use crate::handshake::{
    find_digest, hello_packet, hmac_sha256, imprint_digest, signed_reply, DigestScheme,
    HandshakeError, DIGEST_LEN, FMS_KEY_TEXT_LEN, FP_KEY_TEXT_LEN, GENUINE_FMS_KEY, GENUINE_FP_KEY,
    HANDSHAKE_SIZE, SERVER_VERSION,
};

/// The C0/S0 version byte of RTMPE with DH and RC4.
pub const RTMPE_VERSION: u8 = 6;

/// Length of a DH public key, private key and shared secret in the 1024-bit group.
pub const DH_KEY_LEN: usize = 128;

/// Bytes of each keystream discarded before the first encrypted byte.
const KEYSTREAM_SKIP: usize = HANDSHAKE_SIZE;

/// Length of an RC4 key derived from the shared secret.
const RC4_KEY_LEN: usize = 16;

/// The 1024-bit MODP prime of RFC 2409 §6.2 (Oakley group 2), in hex.
const MODP_1024_HEX: &str = "\
    FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22\
    514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6\
    F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381\
    FFFFFFFFFFFFFFFF";

/// The group's prime, parsed once.
fn prime() -> &'static BigUint {
    static PRIME: OnceLock<BigUint> = OnceLock::new();
    PRIME.get_or_init(|| {
        BigUint::parse_bytes(MODP_1024_HEX.as_bytes(), 16).unwrap_or_else(|| BigUint::from(23u8))
    })
}

/// `n` as a fixed-width 128-byte big-endian number (leading zero bytes kept). `n` is below the
/// 1024-bit prime, so it always fits.
fn fixed_width(n: &BigUint) -> [u8; DH_KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; DH_KEY_LEN];
    let skip = DH_KEY_LEN.saturating_sub(bytes.len());
    for (dst, src) in out[skip..].iter_mut().zip(&bytes) {
        *dst = *src;
    }
    out
}

/// One side's Diffie-Hellman key pair in the 1024-bit group.
pub struct DhKeyPair {
    private: BigUint,
    public: [u8; DH_KEY_LEN],
}

impl std::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("DhKeyPair").finish_non_exhaustive()
    }
}

impl DhKeyPair {
    /// A key pair whose private exponent is `private` (big-endian, from the caller's RNG;
    /// [`DH_KEY_LEN`] bytes is right). An exponent below 2 (all zeros) is replaced by 2, so a
    /// caller bug cannot make the public key 1.
    pub fn new(private: &[u8]) -> DhKeyPair {
        let mut x = BigUint::from_bytes_be(private);
        if x < BigUint::from(2u8) {
            x = BigUint::from(2u8);
        }
        let public = fixed_width(&BigUint::from(2u8).modpow(&x, prime()));
        DhKeyPair { private: x, public }
    }

    /// The public key, fixed-width.
    pub fn public(&self) -> &[u8; DH_KEY_LEN] {
        &self.public
    }

    /// The shared secret with the peer's public key `peer` (fixed-width, big-endian). A key
    /// outside 2..p-2 (0, 1 and p-1 force a known secret; larger ones are not group elements)
    /// is refused.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<[u8; DH_KEY_LEN], HandshakeError> {
        let p = prime();
        let y = BigUint::from_bytes_be(peer);
        let one = BigUint::from(1u8);
        if y <= one || y >= p - &one {
            return Err(HandshakeError::BadRtmpeC1("DH public key out of range"));
        }
        Ok(fixed_width(&y.modpow(&self.private, p)))
    }
}

/// The byte range of the DH public key in a C1/S1 whose digest uses `scheme`.
///
/// Always in bounds: the largest start is 772 + 631 = 1403, and 1403 + 128 = 1531.
pub(crate) fn dh_key_range(
    packet: &[u8; HANDSHAKE_SIZE],
    scheme: DigestScheme,
) -> std::ops::Range<usize> {
    let (offset_bytes, base) = match scheme {
        DigestScheme::Scheme0 => (768..772, 8),
        DigestScheme::Scheme1 => (1532..1536, 772),
    };
    let sum: usize = packet
        .get(offset_bytes)
        .unwrap_or(&[])
        .iter()
        .map(|&b| usize::from(b))
        .sum();
    let start = base + sum % 632;
    start..start + DH_KEY_LEN
}

/// The two RC4 keystreams of an RTMPE connection, from one side's point of view: `decrypt`
/// for every byte received after the handshake, `encrypt` for every byte sent.
pub struct RtmpeCipher {
    decrypt: Rc4<U16>,
    encrypt: Rc4<U16>,
}

impl std::fmt::Debug for RtmpeCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpeCipher").finish_non_exhaustive()
    }
}

impl RtmpeCipher {
    /// The keystreams of the side whose public key is `own`, talking to `peer`, both already
    /// advanced past the 1536 bytes librtmp discards.
    pub fn new(secret: &[u8; DH_KEY_LEN], own: &[u8], peer: &[u8]) -> RtmpeCipher {
        let mut cipher = RtmpeCipher {
            decrypt: rc4_for(secret, own),
            encrypt: rc4_for(secret, peer),
        };
        let mut skip = [0u8; KEYSTREAM_SKIP];
        cipher.decrypt.apply_keystream(&mut skip);
        cipher.encrypt.apply_keystream(&mut skip);
        cipher
    }

    /// Decrypts bytes received from the peer, in place, in the order they arrived.
    pub fn decrypt(&mut self, data: &mut [u8]) {
        self.decrypt.apply_keystream(data);
    }

    /// Encrypts bytes for the peer, in place, in the order they will be sent.
    pub fn encrypt(&mut self, data: &mut [u8]) {
        self.encrypt.apply_keystream(data);
    }
}

/// RC4 keyed with the first 16 bytes of HMAC-SHA256(`secret`, `receiver_public`).
fn rc4_for(secret: &[u8; DH_KEY_LEN], receiver_public: &[u8]) -> Rc4<U16> {
    let digest = hmac_sha256(secret, &[receiver_public]);
    let mut key = [0u8; RC4_KEY_LEN];
    key.copy_from_slice(&digest[..RC4_KEY_LEN]);
    Rc4::new(&key.into())
}

/// What the server sends for an RTMPE C1, and what it keeps.
#[derive(Debug)]
pub(crate) struct RtmpeAnswer {
    /// S0+S1+S2.
    pub output: BytesMut,
    /// S1's digest, which keys the check of C2's signature.
    pub s1_digest: [u8; DIGEST_LEN],
    /// The connection's keystreams (server side).
    pub cipher: RtmpeCipher,
}

/// Answers an RTMPE C1: finds the client's digest and DH key, computes the shared secret with
/// the server key `dh`, and builds S0+S1+S2 with `epoch` and the random bytes given.
pub(crate) fn answer_c1(
    c1: &[u8; HANDSHAKE_SIZE],
    dh: &DhKeyPair,
    epoch: u32,
    s1_random: &[u8],
    s2_random: &[u8],
) -> Result<RtmpeAnswer, HandshakeError> {
    let (scheme, c1_digest) = find_digest(c1, &GENUINE_FP_KEY[..FP_KEY_TEXT_LEN])
        .ok_or(HandshakeError::BadRtmpeC1("no valid digest"))?;
    let client_key = c1
        .get(dh_key_range(c1, scheme))
        .ok_or(HandshakeError::BadRtmpeC1("DH key out of bounds"))?;
    let secret = dh.shared_secret(client_key)?;
    let cipher = RtmpeCipher::new(&secret, dh.public(), client_key);

    let mut s1 = hello_packet(epoch, SERVER_VERSION, s1_random);
    let key_range = dh_key_range(&s1, scheme);
    if let Some(slot) = s1.get_mut(key_range) {
        slot.copy_from_slice(dh.public());
    }
    let s1_digest = imprint_digest(&mut s1, scheme, &GENUINE_FMS_KEY[..FMS_KEY_TEXT_LEN]);
    let s2 = signed_reply(s2_random, &GENUINE_FMS_KEY, &c1_digest);

    let mut output = BytesMut::with_capacity(1 + 2 * HANDSHAKE_SIZE);
    output.put_u8(RTMPE_VERSION);
    output.put_slice(&s1[..]);
    output.put_slice(&s2[..]);
    Ok(RtmpeAnswer {
        output,
        s1_digest,
        cipher,
    })
}

#[cfg(test)]
mod tests;
