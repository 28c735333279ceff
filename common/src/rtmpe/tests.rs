//! RTMPE tests: vectors computed with Python (`hmac`, `pow`, a textbook RC4) rather than this
//! crate, a client side written from the layout description to run the handshake against the
//! server state machine, and property tests on arbitrary C1 bytes.

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;

use super::*;
use crate::handshake::{HandshakeStatus, ServerHandshake, RANDOM_LEN};

const FP_TEXT: &[u8] = b"Genuine Adobe Flash Player 001";
const FMS_TEXT: &[u8] = b"Genuine Adobe Flash Media Server 001";
/// The 32 bytes that follow the text in both long keys.
const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hmac(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for d in data {
        mac.update(d);
    }
    mac.finalize().into_bytes().to_vec()
}

fn long_key(text: &[u8]) -> Vec<u8> {
    [text, &KEY_TAIL[..]].concat()
}

fn sum4(packet: &[u8], at: usize) -> usize {
    packet[at..at + 4].iter().map(|&b| b as usize).sum()
}

/// Digest position: "scheme 0" has its offset bytes at 772, "scheme 1" at 8.
fn ref_digest_pos(packet: &[u8], scheme0: bool) -> usize {
    if scheme0 {
        sum4(packet, 772) % 728 + 776
    } else {
        sum4(packet, 8) % 728 + 12
    }
}

/// DH key position paired with the digest scheme.
fn ref_dh_pos(packet: &[u8], scheme0: bool) -> usize {
    if scheme0 {
        sum4(packet, 768) % 632 + 8
    } else {
        sum4(packet, 1532) % 632 + 772
    }
}

fn ref_digest(packet: &[u8], pos: usize, key: &[u8]) -> Vec<u8> {
    hmac(key, &[&packet[..pos], &packet[pos + 32..]])
}

/// `priv(tag, k)` of the Python script: byte i = i*31 + tag, last two bytes = k.
fn private_key(tag: u8, k: u16) -> Vec<u8> {
    let mut key: Vec<u8> = (0..128u32)
        .map(|i| (i * 31 + u32::from(tag)) as u8)
        .collect();
    key[126..].copy_from_slice(&k.to_be_bytes());
    key
}

/// A client written from the layout description, as rtmpdump would act.
struct TestClient {
    dh: DhKeyPair,
    c1: Vec<u8>,
    scheme0: bool,
}

impl TestClient {
    /// A C1 with version 128.0.7.2, body byte i = `fill(i)`, the public key and the digest.
    fn new(private: &[u8], scheme0: bool, fill: impl Fn(usize) -> u8) -> TestClient {
        let dh = DhKeyPair::new(private);
        let mut c1: Vec<u8> = (0..HANDSHAKE_SIZE).map(fill).collect();
        c1[..8].copy_from_slice(&[0, 0, 0, 0, 128, 0, 7, 2]);
        let dh_pos = ref_dh_pos(&c1, scheme0);
        c1[dh_pos..dh_pos + 128].copy_from_slice(dh.public());
        let pos = ref_digest_pos(&c1, scheme0);
        let digest = ref_digest(&c1, pos, FP_TEXT);
        c1[pos..pos + 32].copy_from_slice(&digest);
        TestClient { dh, c1, scheme0 }
    }

    fn c0c1(&self) -> Vec<u8> {
        [&[6u8][..], &self.c1].concat()
    }

    /// Checks S0+S1+S2 and returns the client's keystreams and a signed C2.
    fn finish(&self, answer: &[u8]) -> (RtmpeCipher, Vec<u8>) {
        assert_eq!(answer.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(answer[0], 6);
        let (s1, s2) = answer[1..].split_at(HANDSHAKE_SIZE);
        assert_ne!(
            &s1[4..8],
            &[0, 0, 0, 0],
            "RTMPE needs a non-zero S1 version"
        );
        let s1_pos = ref_digest_pos(s1, self.scheme0);
        let s1_digest = &s1[s1_pos..s1_pos + 32];
        assert_eq!(ref_digest(s1, s1_pos, FMS_TEXT), s1_digest);
        let c1_pos = ref_digest_pos(&self.c1, self.scheme0);
        let s2_key = hmac(&long_key(FMS_TEXT), &[&self.c1[c1_pos..c1_pos + 32]]);
        assert_eq!(hmac(&s2_key, &[&s2[..1504]]), &s2[1504..]);

        let key_pos = ref_dh_pos(s1, self.scheme0);
        let server_key = &s1[key_pos..key_pos + 128];
        let secret = self.dh.shared_secret(server_key).unwrap();
        let cipher = RtmpeCipher::new(&secret, self.dh.public(), server_key);
        let mut c2 = vec![0x5A; 1504];
        let c2_key = hmac(&long_key(FP_TEXT), &[s1_digest]);
        let signature = hmac(&c2_key, &[&c2]);
        c2.extend_from_slice(&signature);
        (cipher, c2)
    }
}

fn server_random() -> Vec<u8> {
    (0..RANDOM_LEN).map(|i| (i * 7 + 1) as u8).collect()
}

/// Runs `client` against a server with DH private key `server_private`; returns the server
/// handshake (Done), its answer, the client's cipher and what was left after C2.
fn run(
    client: &TestClient,
    server_private: &[u8],
    trailing: &[u8],
) -> (ServerHandshake, Vec<u8>, RtmpeCipher, BytesMut) {
    let mut server = ServerHandshake::new(9, &server_random()).with_rtmpe(server_private);
    let mut buf = BytesMut::from(&client.c0c1()[..]);
    assert_eq!(server.handle_input(&mut buf), Ok(HandshakeStatus::NeedMore));
    assert!(buf.is_empty());
    assert!(server.is_rtmpe());
    let answer = server.poll_output().unwrap().to_vec();
    let (cipher, c2) = client.finish(&answer);
    buf.extend_from_slice(&c2);
    buf.extend_from_slice(trailing);
    assert!(server.take_rtmpe_cipher().is_none(), "not before Done");
    assert_eq!(server.handle_input(&mut buf), Ok(HandshakeStatus::Done));
    assert_eq!(server.c2_digest_verified(), Some(true));
    (server, answer, cipher, buf)
}

#[test]
fn group_is_rfc2409_group_2_and_2_generates_the_prime_order_subgroup() {
    let p = prime();
    assert_eq!(p.bits(), 1024);
    let one = BigUint::from(1u8);
    let two = BigUint::from(2u8);
    assert_eq!(two.modpow(&(p - &one), p), one);
    assert_eq!(two.modpow(&((p - &one) >> 1), p), one);
}

#[test]
fn python_vector_with_leading_zero_public_key_and_secret() {
    let fill = |i: usize| (i as u8).wrapping_mul(13).wrapping_add(5);
    let client = TestClient::new(&private_key(7, 643), true, fill);
    let yc = hex(
        "00b7b5d546442ac61002cf6dc6d8ed369be9b737ff7ce4cb5a47302633b9d111200b18484b82528e4667\
         6c80049ab7e7ea0715ab91b9980a41832a5a7a1430f22cbbe8b58113126742bef184b3a5df33865722af\
         9d4a48793a5f2a95351c13b6b9044f302fa4f73e242da19c686ee85370b139a98e297e67cc62e2f45637\
         9f67",
    );
    assert_eq!(
        client.dh.public().to_vec(),
        yc,
        "fixed width keeps the leading zero"
    );
    assert_eq!(ref_dh_pos(&client.c1, true), 106);
    assert_eq!(ref_digest_pos(&client.c1, true), 1082);
    assert_eq!(
        client.c1[1082..1114].to_vec(),
        hex("189a2dab16b6794cb99faf621810c0f3c8e62d4ead404540f5a711a294496cf0")
    );

    let server_private = private_key(11, 46);
    let (mut server, answer, _, rest) = run(&client, &server_private, b"");
    assert!(rest.is_empty());
    let s1 = &answer[1..1 + HANDSHAKE_SIZE];
    let pos = ref_dh_pos(s1, true);
    let ys = hex(
        "5e8ee7c9e3db91742d5b89ba91857c590a41e9435f7a11a5b15677e3b8bb164a6064b91fecc19fb7b0fb\
         30096b758465c5ac25c9e55ef8f641f1236b699de046cd8c53baae6354a52a43a872600463b19cf2ba27\
         fd1f21a26a5e514492b2769d21e084a5c930a7c9972cf72789678a226c909ee622047e1d0318d6706fbe\
         470f",
    );
    assert_eq!(s1[pos..pos + 128].to_vec(), ys);
    // The secret (from Python) starts with a zero byte too: a short encoding would change
    // the HMAC key and so both keystreams below.
    let secret = DhKeyPair::new(&server_private).shared_secret(&yc).unwrap();
    assert_eq!(secret[0], 0);
    assert_eq!(
        secret.to_vec(),
        hex(
            "00ddab2ca073710a62df2f2a3e1ae49f95f919ed11ff148f9bf3b10df441699ee84e928cc8a04e4cd2\
             07ec19612ded4677901db35e4ed5264b9188cfcdcfac7b0f2e267e276464c635c7ce97af285ef548fa\
             694f0176b13712e08d9e02d1a64f20e6ac0cdb46b272a3abd7349b524023c27be9d95b48f1e7c4f5e2\
             d2f7c298cd"
        )
    );

    let mut cipher = server.take_rtmpe_cipher().unwrap();
    assert!(server.take_rtmpe_cipher().is_none(), "handed out once");
    // Keystreams after the 1536 skipped bytes, as RC4 over zeros.
    let mut out = [0u8; 16];
    cipher.encrypt(&mut out);
    assert_eq!(out.to_vec(), hex("f6234bd9775e264f99881a95204b1912"));
    let mut inbound = [0u8; 16];
    cipher.decrypt(&mut inbound);
    assert_eq!(inbound.to_vec(), hex("072848c6a2ee4e3d1f8489817ab4dd4f"));
}

#[test]
fn both_schemes_agree_on_keys_and_leave_trailing_bytes() {
    for scheme0 in [true, false] {
        for seed in 0..3u8 {
            let client = TestClient::new(&[seed.wrapping_add(40); 128], scheme0, |i| {
                (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)
            });
            let mut client_cipher_for_trailing = {
                let mut server = ServerHandshake::new(0, &server_random()).with_rtmpe(&[3; 128]);
                let mut buf = BytesMut::from(&client.c0c1()[..]);
                server.handle_input(&mut buf).unwrap();
                client.finish(&server.poll_output().unwrap()).0
            };
            // The client's first chunk bytes arrive encrypted in the read that holds C2.
            let mut first = b"connect please".to_vec();
            client_cipher_for_trailing.encrypt(&mut first);
            let (mut server, _, mut client_cipher, mut rest) = run(&client, &[3; 128], &first);
            let mut server_cipher = server.take_rtmpe_cipher().unwrap();
            assert_eq!(rest.len(), first.len());
            server_cipher.decrypt(&mut rest);
            assert_eq!(
                &rest[..],
                b"connect please",
                "scheme0 {scheme0} seed {seed}"
            );
            // Later traffic, both ways, in pieces of different sizes.
            client_cipher.encrypt(&mut [0u8; 14]);
            for size in [1usize, 100, 4096] {
                let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
                let mut wire = plain.clone();
                server_cipher.encrypt(&mut wire);
                assert_ne!(wire, plain);
                client_cipher.decrypt(&mut wire);
                assert_eq!(wire, plain);
                let mut wire = plain.clone();
                client_cipher.encrypt(&mut wire);
                server_cipher.decrypt(&mut wire);
                assert_eq!(wire, plain);
            }
        }
    }
}

#[test]
fn rtmpe_is_refused_unless_enabled_and_8_and_9_always() {
    let client = TestClient::new(&[9; 128], true, |i| i as u8);
    let mut server = ServerHandshake::new(0, &server_random());
    let mut buf = BytesMut::from(&client.c0c1()[..]);
    assert_eq!(
        server.handle_input(&mut buf),
        Err(HandshakeError::RtmpeUnsupported(6))
    );
    for version in [8u8, 9] {
        let mut server = ServerHandshake::new(0, &server_random()).with_rtmpe(&[1; 128]);
        let mut buf = BytesMut::from(&[version][..]);
        assert_eq!(
            server.handle_input(&mut buf),
            Err(HandshakeError::RtmpeUnsupported(version))
        );
    }
}

/// Feeds C0 6 + `c1` to an RTMPE server; the result and whether `buf` was left alone.
fn feed_c1(c1: &[u8]) -> (Result<HandshakeStatus, HandshakeError>, bool) {
    let mut server = ServerHandshake::new(0, &server_random()).with_rtmpe(&[5; 128]);
    let input = [&[6u8][..], c1].concat();
    let mut buf = BytesMut::from(&input[..]);
    let result = server.handle_input(&mut buf);
    (result, buf[..] == input[..])
}

#[test]
fn c1_without_digest_or_with_a_degenerate_key_is_refused_without_consuming() {
    let garbage: Vec<u8> = (0..HANDSHAKE_SIZE).map(|i| (i * 3) as u8).collect();
    assert_eq!(
        feed_c1(&garbage),
        (Err(HandshakeError::BadRtmpeC1("no valid digest")), true)
    );
    let p_minus_1 = fixed_width(&(prime() - BigUint::from(1u8)));
    let p = fixed_width(prime());
    for bad in [[0u8; 128], fixed_width(&BigUint::from(1u8)), p_minus_1, p] {
        for scheme0 in [true, false] {
            let mut client = TestClient::new(&[9; 128], scheme0, |i| i as u8);
            let pos = ref_dh_pos(&client.c1, scheme0);
            client.c1[pos..pos + 128].copy_from_slice(&bad);
            let digest_pos = ref_digest_pos(&client.c1, scheme0);
            let digest = ref_digest(&client.c1, digest_pos, FP_TEXT);
            client.c1[digest_pos..digest_pos + 32].copy_from_slice(&digest);
            assert_eq!(
                feed_c1(&client.c1),
                (
                    Err(HandshakeError::BadRtmpeC1("DH public key out of range")),
                    true
                )
            );
        }
    }
    assert_eq!(
        HandshakeError::BadRtmpeC1("x").as_str(),
        "bad_rtmpe_c1",
        "a metric label of its own"
    );
}

#[test]
fn a_zero_private_key_still_gives_a_usable_public_key() {
    let pair = DhKeyPair::new(&[]);
    assert_eq!(pair.public()[127], 4, "exponent 2: public key 4");
    assert!(format!("{pair:?}").starts_with("DhKeyPair"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_c1_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..2 * HANDSHAKE_SIZE),
        key in proptest::collection::vec(any::<u8>(), 0..130),
    ) {
        let mut server = ServerHandshake::new(0, &server_random()).with_rtmpe(&key);
        let mut buf = BytesMut::from(&[&[6u8][..], &body].concat()[..]);
        let before = buf.len();
        match server.handle_input(&mut buf) {
            Ok(HandshakeStatus::NeedMore) if before > HANDSHAKE_SIZE => {
                prop_assert_eq!(before - buf.len(), 1 + HANDSHAKE_SIZE);
                prop_assert!(server.is_rtmpe());
            }
            Ok(HandshakeStatus::NeedMore) => prop_assert_eq!(buf.len(), before),
            Ok(HandshakeStatus::Done) => prop_assert!(false, "done without a C1 answered"),
            Err(_) => prop_assert_eq!(buf.len(), before),
        }
    }

    /// A C1 with a valid digest and an arbitrary key: accepted exactly when the key is in
    /// range, never a panic.
    #[test]
    fn arbitrary_key_behind_a_valid_digest(
        key in proptest::collection::vec(any::<u8>(), 128),
        scheme0 in any::<bool>(),
    ) {
        let mut client = TestClient::new(&[9; 128], scheme0, |i| (i * 5) as u8);
        let pos = ref_dh_pos(&client.c1, scheme0);
        client.c1[pos..pos + 128].copy_from_slice(&key);
        let digest_pos = ref_digest_pos(&client.c1, scheme0);
        let digest = ref_digest(&client.c1, digest_pos, FP_TEXT);
        client.c1[digest_pos..digest_pos + 32].copy_from_slice(&digest);
        let y = BigUint::from_bytes_be(&key);
        let in_range = y > BigUint::from(1u8) && y < prime() - BigUint::from(1u8);
        let (result, untouched) = feed_c1(&client.c1);
        prop_assert_eq!(result.is_ok(), in_range);
        prop_assert_eq!(untouched, !in_range);
    }
}
