//! The one TLS driver on both ends of a loopback connection: a client `TlsStream` against a
//! server `TlsStream`, on one glommio executor.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_transport::socket::AsSocket;
use corecast_transport::{provider, AcceptAny, TlsError, TlsStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// Every wait in these tests ends within this.
const LIMIT: Duration = Duration::from_secs(20);

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

/// Runs `test` on a fresh executor; fails it if it takes longer than [`LIMIT`].
fn run<T: 'static>(test: impl std::future::Future<Output = T> + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 * 1024)
        .make()
        .expect("executor")
        .run(futures_lite::future::or(test, async {
            glommio::timer::sleep(LIMIT).await;
            panic!("the test did not finish within {LIMIT:?}")
        }))
}

struct Certs {
    der: CertificateDer<'static>,
    server: Arc<ServerConfig>,
}

fn certs() -> Certs {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let der = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .expect("server config");
    Certs {
        der,
        server: Arc::new(server),
    }
}

/// A client trusting `root` only, speaking `version` only.
fn client_config(
    root: CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root).expect("root");
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Client → server bytes.
const UP: usize = 1024 * 1024;
/// Server → client bytes: well past what loopback socket buffers hold.
const DOWN: usize = 16 * 1024 * 1024;

#[test]
fn bytes_cross_both_ways_intact_over_tls13() {
    round_trip(&rustls::version::TLS13, "TLSv1_3");
}

#[test]
fn bytes_cross_both_ways_intact_over_tls12() {
    round_trip(&rustls::version::TLS12, "TLSv1_2");
}

/// The client writes UP bytes with `write_all`; the server reads them with `read_into`,
/// then sends DOWN bytes in odd-sized vectored pieces while the client is not reading yet
/// (so the socket fills and rustls holds records), and the client reads them with slice
/// reads until the server's close_notify.
fn round_trip(version: &'static rustls::SupportedProtocolVersion, expect: &'static str) {
    let certs = certs();
    let client_config = client_config(certs.der.clone(), version);
    let received = run(async move {
        let (listener, addr) = listen().await;
        let client = glommio::spawn_local(async move {
            let tls =
                TlsStream::client(connect(addr).await, client_config, localhost()).expect("client");
            tls.handshake(LIMIT).await.expect("client handshake");
            let up: Vec<u8> = (0..UP).map(pattern).collect();
            tls.write_all(&up).await.expect("write_all");
            glommio::timer::sleep(Duration::from_millis(300)).await;
            let mut down = Vec::with_capacity(DOWN);
            let mut buf = vec![0u8; 10_007];
            loop {
                match tls.read(&mut buf).await.expect("read") {
                    0 => break,
                    n => down.extend_from_slice(&buf[..n]),
                }
            }
            down
        });
        let stream = listener.accept().await.expect("accept");
        let tls = TlsStream::server(stream, Arc::clone(&certs.server)).expect("server");
        tls.handshake(LIMIT).await.expect("server handshake");
        assert!(tls.describe().starts_with(expect), "{}", tls.describe());

        let mut up = BytesMut::new();
        while up.len() < UP {
            let n = tls.read_into(&mut up).await.expect("read_into");
            assert!(n > 0, "early EOF after {} bytes", up.len());
        }
        assert!(up.iter().enumerate().all(|(i, b)| *b == pattern(i)));

        let down: Vec<u8> = (0..DOWN).map(pattern).collect();
        write_in_pieces(&tls, &down).await;
        tls.flush().await.expect("flush");
        tls.shutdown();
        client.await
    });
    assert_eq!(received.len(), DOWN, "bytes lost or added");
    let first_bad = received
        .iter()
        .enumerate()
        .find(|(i, b)| **b != pattern(*i));
    assert_eq!(first_bad, None, "bytes changed or reordered");
}

/// Writes `data` as a node's writer does: up to 64 odd-sized slices per non-blocking call,
/// waiting with `write_some` when nothing was taken.
async fn write_in_pieces(tls: &TlsStream<ServerConnection>, data: &[u8]) {
    let mut at = 0;
    let mut size = 1;
    while at < data.len() {
        let mut slices = Vec::new();
        let mut end = at;
        while slices.len() < 64 && end < data.len() {
            let next = (end + size).min(data.len());
            slices.push(IoSlice::new(&data[end..next]));
            end = next;
            size = size * 7 % 40_009 + 1;
        }
        match tls.try_write_vectored(&slices) {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                at += tls.write_some(&slices[0]).await.expect("write_some");
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[test]
fn one_vectored_write_takes_many_slices_and_they_arrive_in_order() {
    let certs = certs();
    let client_config = client_config(certs.der.clone(), &rustls::version::TLS13);
    run(async move {
        let (listener, addr) = listen().await;
        let client = glommio::spawn_local(async move {
            let tls =
                TlsStream::client(connect(addr).await, client_config, localhost()).expect("client");
            tls.handshake(LIMIT).await.expect("client handshake");
            let mut got = BytesMut::new();
            while tls.read_into(&mut got).await.expect("read") > 0 {}
            got
        });
        let tls = TlsStream::server(listener.accept().await.expect("accept"), certs.server)
            .expect("server");
        tls.handshake(LIMIT).await.expect("server handshake");
        let parts: Vec<Vec<u8>> = (0..300usize).map(|i| vec![i as u8; i % 97 + 1]).collect();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(Vec::len).sum();
        // An empty socket and rustls' 128 KiB send buffer: all of it in one call.
        assert_eq!(tls.try_write_vectored(&slices).expect("write"), total);
        tls.flush().await.expect("flush");
        tls.shutdown();
        assert_eq!(client.await, parts.concat());
    });
}

/// A reader at a pace of its own (a node reads a publisher once per tick) takes everything
/// that is ready in one `try_read_into`, not one 64 KiB chunk; nothing ready is WouldBlock,
/// and the peer's close is Ok(0).
#[test]
fn a_paced_read_takes_all_that_is_ready_without_waiting() {
    // Well over one 64 KiB chunk, well under the receive buffer set below.
    const SENT: usize = 160 * 1024;
    let certs = certs();
    let client_config = client_config(certs.der.clone(), &rustls::version::TLS13);
    run(async move {
        let (listener, addr) = listen().await;
        let (sent_tx, sent_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
        let (close_tx, close_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
        let client = glommio::spawn_local(async move {
            let tls =
                TlsStream::client(connect(addr).await, client_config, localhost()).expect("client");
            tls.handshake(LIMIT).await.expect("client handshake");
            let up: Vec<u8> = (0..SENT).map(pattern).collect();
            tls.write_all(&up).await.expect("write_all");
            sent_tx.send(()).await.expect("signal the server");
            close_rx.recv().await;
            tls.shutdown();
        });
        let stream = listener.accept().await.expect("accept");
        // So that all of it fits in the socket whatever the host's defaults (the kernel caps
        // it at `rmem_max`, 208 KiB by default, and doubles it).
        rustix::net::sockopt::set_socket_recv_buffer_size(stream.as_socket(), 512 * 1024)
            .expect("SO_RCVBUF");
        let tls = TlsStream::server(stream, certs.server).expect("server");
        tls.handshake(LIMIT).await.expect("server handshake");
        sent_rx.recv().await.expect("the client wrote");
        let mut got = BytesMut::new();
        let mut largest = 0;
        let deadline = Instant::now() + LIMIT;
        while got.len() < SENT {
            assert!(
                Instant::now() < deadline,
                "only {} bytes arrived",
                got.len()
            );
            match tls.try_read_into(&mut got, 1024 * 1024) {
                Ok(n) => {
                    assert!(n > 0, "early EOF");
                    largest = largest.max(n);
                }
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}"),
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(largest > 64 * 1024, "the largest read took {largest} bytes");
        assert_eq!(got.len(), SENT);
        assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
        let nothing = tls.try_read_into(&mut got, 1024 * 1024);
        assert_eq!(
            nothing.map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        close_tx.send(()).await.expect("signal the client");
        client.await;
        loop {
            match tls.try_read_into(&mut got, 1024 * 1024) {
                Ok(0) => break,
                Ok(n) => panic!("{n} bytes after the end"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}"),
            }
            assert!(Instant::now() < deadline, "the close never came");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    });
}

#[test]
fn a_silent_peer_times_the_handshake_out() {
    let certs = certs();
    run(async move {
        let (listener, addr) = listen().await;
        let silent = connect(addr).await;
        let tls = TlsStream::server(listener.accept().await.expect("accept"), certs.server)
            .expect("server");
        let started = Instant::now();
        let err = tls
            .handshake(Duration::from_millis(200))
            .await
            .expect_err("nobody spoke");
        assert!(matches!(err, TlsError::HandshakeTimeout(_)), "{err}");
        assert_eq!(err.as_str(), "tls_handshake_timeout");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < LIMIT);
        drop(silent);
    });
}

#[test]
fn plaintext_on_a_tls_port_is_refused_with_an_alert() {
    let certs = certs();
    run(async move {
        let (listener, addr) = listen().await;
        let client = glommio::spawn_local(async move {
            let mut rtmp = connect(addr).await;
            // An RTMP C0 and the start of C1.
            rtmp.write_all(&[3; 1537]).await.expect("write");
            let mut reply = Vec::new();
            let _ = rtmp.read_to_end(&mut reply).await;
            reply
        });
        let tls = TlsStream::server(listener.accept().await.expect("accept"), certs.server)
            .expect("server");
        let err = tls.handshake(LIMIT).await.expect_err("not TLS");
        assert!(matches!(err, TlsError::Protocol(_)), "{err}");
        assert_eq!(err.as_str(), "tls_error");
        tls.shutdown();
        let reply = client.await;
        assert_eq!(reply.first(), Some(&0x15), "no alert record: {reply:?}");
    });
}

#[test]
fn a_client_that_refuses_the_certificate_tells_the_server_why() {
    let certs = certs();
    // The client trusts some other certificate only.
    let other = certs_der_other();
    let client_config = client_config(other, &rustls::version::TLS13);
    run(async move {
        let (listener, addr) = listen().await;
        let client = glommio::spawn_local(async move {
            let tls =
                TlsStream::client(connect(addr).await, client_config, localhost()).expect("client");
            let err = tls.handshake(LIMIT).await.expect_err("unknown issuer");
            // Dropped right away, as the edge drops a refused upstream.
            err
        });
        let tls = TlsStream::server(listener.accept().await.expect("accept"), certs.server)
            .expect("server");
        let server_err = tls.handshake(LIMIT).await.expect_err("client refused us");
        let client_err = client.await;
        assert!(
            matches!(
                client_err,
                TlsError::Protocol(rustls::Error::InvalidCertificate(_))
            ),
            "{client_err}"
        );
        assert!(
            matches!(
                server_err,
                TlsError::Protocol(rustls::Error::AlertReceived(_))
            ),
            "the alert did not reach the server: {server_err}"
        );
    });
}

fn certs_der_other() -> CertificateDer<'static> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    CertificateDer::from(generated.cert.der().to_vec())
}

#[test]
fn a_peer_that_hangs_up_mid_handshake_is_an_abort() {
    let certs = certs();
    run(async move {
        let (listener, addr) = listen().await;
        let client = glommio::spawn_local(async move {
            let mut sock = connect(addr).await;
            let mut hello = Vec::new();
            let mut conn = ClientConnection::new(
                insecure_config(),
                ServerName::try_from("localhost").expect("name"),
            )
            .expect("client");
            conn.write_tls(&mut hello).expect("client hello");
            sock.write_all(&hello).await.expect("write");
            sock.close().await.expect("close");
        });
        let tls = TlsStream::server(listener.accept().await.expect("accept"), certs.server)
            .expect("server");
        client.await;
        let err = tls.handshake(LIMIT).await.expect_err("client left");
        assert!(matches!(err, TlsError::Aborted), "{err}");
        assert_eq!(err.as_str(), "tls_aborted");
    });
}

/// The test verifier: any certificate, real signatures.
fn insecure_config() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny::new(provider())))
        .with_no_client_auth();
    Arc::new(config)
}

#[test]
fn accept_any_accepts_a_certificate_nobody_signed() {
    let certs = certs();
    run(async move {
        let (listener, addr) = listen().await;
        let client = glommio::spawn_local(async move {
            let tls = TlsStream::client(connect(addr).await, insecure_config(), localhost())
                .expect("client");
            tls.handshake(LIMIT).await.expect("client handshake");
            tls.write_all(b"hello").await.expect("write");
            tls.shutdown();
        });
        let tls = TlsStream::server(listener.accept().await.expect("accept"), certs.server)
            .expect("server");
        tls.handshake(LIMIT).await.expect("server handshake");
        let mut got = BytesMut::new();
        while tls.read_into(&mut got).await.expect("read") > 0 {}
        assert_eq!(&got[..], b"hello");
        client.await;
    });
}
