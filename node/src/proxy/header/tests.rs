//! The header module's tests: v1 and v2 forms, what is not a header, fragmented input, and
//! property tests (arbitrary bytes never panic; any split of a valid header reads the same).

use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Version};
use proptest::prelude::*;

use super::*;

/// What follows the header in these tests: an RTMP C0 and the start of C1.
const CLIENT_BYTES: &[u8] = &[0x03, 0, 0, 0, 0, 1, 2, 3];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn v2_header(command: Command, source: &str, tlv: Option<&[u8]>) -> Vec<u8> {
    let addresses = (
        addr(source),
        addr(if source.starts_with('[') {
            "[::1]:1935"
        } else {
            "127.0.0.1:1935"
        }),
    );
    let mut builder = Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses);
    if let Some(value) = tlv {
        builder = builder.write_tlv(0x04_u8, value).expect("tlv");
    }
    builder.build().expect("v2 header")
}

fn with_client_bytes(header: &[u8]) -> Vec<u8> {
    [header, CLIENT_BYTES].concat()
}

fn proxied(source: &str, len: usize) -> Parsed {
    Parsed::Complete {
        header: ProxyHeader::Proxied {
            source: addr(source),
        },
        len,
    }
}

#[test]
fn v1_tcp4_and_tcp6_give_the_source_and_stop_at_the_line_end() {
    let line = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 1935\r\n";
    assert_eq!(
        parse(&with_client_bytes(line)),
        proxied("203.0.113.7:51234", line.len())
    );
    let line = b"PROXY TCP6 2001:db8::7 ::1 4000 1935\r\n";
    assert_eq!(
        parse(&with_client_bytes(line)),
        proxied("[2001:db8::7]:4000", line.len())
    );
}

#[test]
fn v1_unknown_is_local() {
    let line = b"PROXY UNKNOWN\r\n";
    assert_eq!(
        parse(&with_client_bytes(line)),
        Parsed::Complete {
            header: ProxyHeader::Local,
            len: line.len()
        }
    );
}

#[test]
fn v2_gives_the_source_and_skips_its_tlvs() {
    let header = v2_header(
        Command::Proxy,
        "198.51.100.9:40000",
        Some(b"vpce-0123456789"),
    );
    assert_eq!(
        parse(&with_client_bytes(&header)),
        proxied("198.51.100.9:40000", header.len())
    );
    let header = v2_header(Command::Proxy, "[2001:db8::9]:40001", None);
    assert_eq!(
        parse(&with_client_bytes(&header)),
        proxied("[2001:db8::9]:40001", header.len())
    );
}

#[test]
fn v2_local_is_a_health_check() {
    let header = v2_header(Command::Local, "127.0.0.1:1", None);
    assert_eq!(
        parse(&header),
        Parsed::Complete {
            header: ProxyHeader::Local,
            len: header.len()
        }
    );
}

#[test]
fn a_v2_length_past_the_bound_is_refused_before_its_bytes_arrive() {
    let mut header = v2_header(Command::Proxy, "127.0.0.1:1", None);
    header[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(parse(&header[..16]), Parsed::Invalid(HeaderError::TooLong));
}

#[test]
fn what_clients_send_first_is_not_a_header() {
    for first in [
        &[0x03, 0, 0][..],
        &[0x16, 0x03, 0x01],
        b"GET / HTTP/1.1\r\n",
        b"POST /open/1 HTTP/1.1\r\n",
        b"PUT",
        b"PATCH",
    ] {
        assert_eq!(sniff(first), Sniff::NotHeader, "{first:?}");
        assert_eq!(parse(first), Parsed::Invalid(HeaderError::Missing));
    }
}

#[test]
fn a_header_s_beginning_is_undecided() {
    for start in [&b""[..], b"P", b"PROX", b"PROXY", b"\r\n\r\n\0"] {
        assert_eq!(sniff(start), Sniff::Undecided, "{start:?}");
        assert_eq!(parse(start), Parsed::Incomplete);
    }
    assert_eq!(sniff(b"PROXY "), Sniff::Header);
    assert_eq!(sniff(V2_SIGNATURE), Sniff::Header);
}

#[test]
fn a_wrong_v1_line_is_malformed() {
    for line in [
        &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
    ] {
        assert_eq!(
            parse(line),
            Parsed::Invalid(HeaderError::Malformed),
            "{line:?}"
        );
    }
    let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    assert_eq!(parse(&endless), Parsed::Invalid(HeaderError::Malformed));
}

/// Feeds `input` to a reader in `chunks` the way the I/O side does (peek everything that has
/// arrived so far, consume what the step says); returns the header and the bytes left on the
/// "socket".
fn read_in_chunks(input: &[u8], chunks: &[usize]) -> (Result<ProxyHeader, HeaderError>, Vec<u8>) {
    let mut reader = HeaderReader::new();
    let mut arrived = 0;
    let mut consumed = 0;
    let mut sizes = chunks.iter().copied().chain(std::iter::repeat(input.len()));
    loop {
        arrived = (arrived + sizes.next().unwrap_or(1).max(1)).min(input.len());
        match reader.offer(&input[consumed..arrived]) {
            Step::Consume(n) => {
                consumed += n;
                if arrived == input.len() {
                    return (Err(HeaderError::Missing), input[consumed..].to_vec());
                }
            }
            Step::Done { consume, header } => {
                consumed += consume;
                return (Ok(header), input[consumed..].to_vec());
            }
            Step::Invalid(e) => return (Err(e), input[consumed..].to_vec()),
        }
    }
}

#[test]
fn a_header_arriving_byte_by_byte_is_read_without_the_client_s_bytes() {
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 1935\r\n".to_vec();
    let v2 = v2_header(Command::Proxy, "198.51.100.9:40000", Some(b"abc"));
    for header in [v1, v2] {
        let input = with_client_bytes(&header);
        let (read, rest) = read_in_chunks(&input, &[1; 200]);
        assert!(matches!(read, Ok(ProxyHeader::Proxied { .. })), "{read:?}");
        assert_eq!(rest, CLIENT_BYTES);
    }
}

#[test]
fn the_reader_refuses_a_header_that_never_ends() {
    let mut reader = HeaderReader::new();
    let mut input = V2_SIGNATURE.to_vec();
    input.extend_from_slice(&[0x21, 0x11]);
    input.extend_from_slice(&(MAX_HEADER_BYTES as u16).to_be_bytes());
    assert_eq!(reader.offer(&input), Step::Invalid(HeaderError::TooLong));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let _ = sniff(&bytes);
        let mut reader = HeaderReader::new();
        let _ = reader.offer(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_signature_never_panic(
        v1 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        chunks in proptest::collection::vec(1usize..40, 0..20),
    ) {
        let prefix: &[u8] = if v1 { V1_PREFIX } else { V2_SIGNATURE };
        let input = [prefix, &tail].concat();
        let (read, rest) = read_in_chunks(&input, &chunks);
        if read.is_ok() {
            prop_assert!(rest.len() < input.len());
        }
    }

    #[test]
    fn any_split_of_a_valid_header_reads_the_same(
        a in any::<[u8; 4]>(),
        port in 1u16..,
        v1 in any::<bool>(),
        tlv in proptest::collection::vec(any::<u8>(), 0..64),
        chunks in proptest::collection::vec(1usize..20, 0..40),
    ) {
        let source = SocketAddr::from((a, port));
        let header = if v1 {
            format!("PROXY TCP4 {} 127.0.0.1 {port} 1935\r\n", source.ip()).into_bytes()
        } else {
            Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (source, addr("127.0.0.1:1935")),
            )
            .write_tlv(0x04_u8, &tlv)
            .and_then(Builder::build)
            .expect("v2 header")
        };
        let (read, rest) = read_in_chunks(&with_client_bytes(&header), &chunks);
        prop_assert_eq!(read, Ok(ProxyHeader::Proxied { source }));
        prop_assert_eq!(rest, CLIENT_BYTES);
    }
}
