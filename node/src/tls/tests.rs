//! The RTMPS pipe (the shared TLS driver as a session `Transport`) against a real rustls client over loopback: bytes in both directions arrive
//! intact and in order, also when the client stops reading long enough for the socket to fill
//! (the path where rustls holds encrypted records the kernel did not take).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corecast_transport::TlsStream;
use glommio::{LocalExecutorBuilder, Placement};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::server_config;
use crate::queue::{QueueLimits, SubscriberQueue};
use crate::writer::{run_writer, WriterSettings};

/// Client → node bytes.
const UP: usize = 1024 * 1024;
/// Node → client bytes: well past what loopback socket buffers hold.
const DOWN: usize = 24 * 1024 * 1024;

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

struct Pair {
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
}

fn configs(version: &'static rustls::SupportedProtocolVersion) -> Pair {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let der = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let server = server_config(vec![der.clone()], key).expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(der).expect("root");
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    Pair {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// Sends UP pattern bytes, pauses without reading, then reads until the node's close_notify.
fn client(addr: SocketAddr, config: Arc<ClientConfig>) -> Vec<u8> {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").expect("name"))
        .expect("client");
    let mut tls = StreamOwned::new(conn, sock);
    let up: Vec<u8> = (0..UP).map(pattern).collect();
    tls.write_all(&up).expect("write");
    tls.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(400));
    let mut down = Vec::with_capacity(DOWN);
    // Ok(0) only on close_notify: a TCP EOF without it would be an error here.
    tls.read_to_end(&mut down).expect("read until close_notify");
    down
}

#[test]
fn bulk_bytes_cross_the_tls_pipe_intact_both_ways_through_a_stalled_reader() {
    bulk_transfer(&rustls::version::TLS13, "TLSv1_3");
}

#[test]
fn tls12_clients_get_the_same_pipe() {
    bulk_transfer(&rustls::version::TLS12, "TLSv1_2");
}

fn bulk_transfer(version: &'static rustls::SupportedProtocolVersion, expect: &'static str) {
    let pair = configs(version);
    let received = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 * 1024)
        .make()
        .expect("executor")
        .run(async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client_config = Arc::clone(&pair.client);
            let client = std::thread::spawn(move || client(addr, client_config));
            let stream = listener.accept().await.expect("accept");
            let transport = TlsStream::server(stream, Arc::clone(&pair.server)).expect("tls");
            transport
                .handshake(Duration::from_secs(20))
                .await
                .expect("handshake");
            assert!(
                transport.describe().starts_with(expect),
                "{}",
                transport.describe()
            );

            let mut buf = BytesMut::new();
            while buf.len() < UP {
                let n = transport.read_into(&mut buf).await.expect("read");
                assert!(n > 0, "early EOF after {} bytes", buf.len());
            }
            assert_eq!(buf.len(), UP);
            assert!(buf.iter().enumerate().all(|(i, b)| *b == pattern(i)));

            // Odd-sized pieces, as session replies and frame parts are, through the real writer.
            let down: Vec<u8> = (0..DOWN).map(pattern).collect();
            let queue = Rc::new(RefCell::new(SubscriberQueue::new(QueueLimits {
                soft_max_bytes: 2 * DOWN,
                hard_max_bytes: 2 * DOWN,
            })));
            let mut at = 0;
            let mut size = 1;
            while at < DOWN {
                let end = (at + size).min(DOWN);
                queue
                    .borrow_mut()
                    .push_control(Bytes::copy_from_slice(&down[at..end]));
                at = end;
                size = size * 7 % 40_009 + 1;
            }
            queue.borrow_mut().finish();
            let settings = WriterSettings {
                merge_window: Duration::ZERO,
                send_timeout: Duration::from_secs(10),
            };
            run_writer(&transport, &queue, settings, &|_| {})
                .await
                .expect("writer");
            transport.shutdown();
            client.join().expect("client thread")
        });
    assert_eq!(received.len(), DOWN, "bytes lost or added");
    let first_bad = received
        .iter()
        .enumerate()
        .find(|(i, b)| **b != pattern(*i));
    assert_eq!(first_bad, None, "bytes changed or reordered");
}
