//! The RTMPE pipe over an in-memory pipe that takes a limited number of bytes per write.

use std::cell::RefCell;
use std::collections::VecDeque;

use futures_lite::future::block_on;

use super::*;

/// Reads hand out `input`; writes take at most `room` bytes until the test makes more.
#[derive(Default)]
struct Fake {
    input: RefCell<VecDeque<Vec<u8>>>,
    written: RefCell<Vec<u8>>,
    room: Cell<usize>,
}

impl Transport for Fake {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let next = self.input.borrow_mut().pop_front().unwrap_or_default();
        buf.extend_from_slice(&next);
        Ok(next.len())
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for slice in slices {
            let take = slice.len().min(self.room.get());
            if take == 0 {
                break;
            }
            self.written.borrow_mut().extend_from_slice(&slice[..take]);
            self.room.set(self.room.get() - take);
            n += take;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        // The "socket" drains when waited on.
        self.room.set(self.room.get().max(7));
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    fn shutdown(&self) {}
}

/// A server cipher and the client's matching one.
fn ciphers() -> (RtmpeCipher, RtmpeCipher) {
    let secret = [0x42; 128];
    let (server, client) = ([1u8; 128], [2u8; 128]);
    (
        RtmpeCipher::new(&secret, &server, &client),
        RtmpeCipher::new(&secret, &client, &server),
    )
}

#[test]
fn passes_through_until_started_then_encrypts_all_but_the_handshake() {
    let pipe = RtmpeTransport::new(Fake::default());
    assert!(pipe.rtmpe_capable());
    pipe.inner.room.set(4);
    // The writer got 4 of the 10 handshake bytes out before the handshake finished.
    let handshake: Vec<u8> = (0..10).collect();
    assert_eq!(
        pipe.try_write_vectored(&[IoSlice::new(&handshake)])
            .unwrap(),
        4
    );

    let (server, mut client) = ciphers();
    let mut sent = b"first chunk".to_vec();
    client.encrypt(&mut sent);
    let mut pending = BytesMut::from(&sent[..]);
    pipe.start_rtmpe(server, 10, &mut pending);
    assert_eq!(&pending[..], b"first chunk");

    // The rest of the handshake and a reply, in one vectored write through a small socket.
    let reply = b"_result for connect".to_vec();
    pipe.inner.room.set(5);
    let slices = [IoSlice::new(&handshake[4..]), IoSlice::new(&reply)];
    assert_eq!(pipe.try_write_vectored(&slices).unwrap(), 6 + reply.len());
    assert_eq!(block_on(pipe.flush()).map(|_| ()).ok(), Some(()));
    let written = pipe.inner.written.borrow().clone();
    assert_eq!(
        &written[..10],
        &handshake[..],
        "the handshake stays in the clear"
    );
    let mut wire = written[10..].to_vec();
    assert_ne!(wire, reply);
    client.decrypt(&mut wire);
    assert_eq!(wire, reply);

    // Reads after the start are decrypted, in order.
    for text in [&b"play"[..], &b"more bytes"[..]] {
        let mut bytes = text.to_vec();
        client.encrypt(&mut bytes);
        pipe.inner.input.borrow_mut().push_back(bytes);
        let mut buf = BytesMut::from(&b"x"[..]);
        assert_eq!(block_on(pipe.read_into(&mut buf)).unwrap(), text.len());
        assert_eq!(&buf[1..], text);
    }
}

#[test]
fn staging_is_bounded_and_write_some_waits_for_the_socket() {
    let pipe = RtmpeTransport::new(Fake::default());
    let (server, mut client) = ciphers();
    pipe.start_rtmpe(server, 0, &mut BytesMut::new());
    let big: Vec<u8> = (0..MAX_STAGED + 1000).map(|i| (i % 251) as u8).collect();
    // A full socket: the pipe takes at most MAX_STAGED, then refuses until it drains.
    assert_eq!(
        pipe.try_write_vectored(&[IoSlice::new(&big)]).unwrap(),
        MAX_STAGED
    );
    let again = pipe.try_write_vectored(&[IoSlice::new(&big[MAX_STAGED..])]);
    assert_eq!(again.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    pipe.inner.room.set(usize::MAX);
    let n = block_on(pipe.write_some(&big[MAX_STAGED..])).unwrap();
    assert_eq!(n, 1000);
    block_on(pipe.flush()).unwrap();
    let mut wire = pipe.inner.written.borrow().clone();
    client.decrypt(&mut wire);
    assert_eq!(wire, big);
}
