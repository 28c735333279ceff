//! The RTMP client against a scripted in-process server built from corecast-common's server
//! side: it must answer pings, acknowledge once past the window the server set, and report
//! refusals with the server's status code.

// Test helpers unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use corecast_common::amf0::Amf0Value;
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkEncoder};
use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, UserControlEvent};
use corecast_common::handshake::{HandshakeStatus, ServerHandshake};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use corecast_loadtest::client::{self, with_timeout, ClientSettings, Role};
use corecast_loadtest::url::RtmpUrl;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::LocalExecutorBuilder;

/// What the scripted server does after `play`.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Start playing, send a ping and enough video to pass a 1000-byte window, then record
    /// what the client sends.
    PingAndWindow,
    /// Refuse the play.
    NotFound,
}

/// The server side of one connection: messages in, messages out.
struct ServerConn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
}

impl ServerConn {
    async fn accept(listener: &TcpListener) -> ServerConn {
        let mut stream = listener.accept().await.unwrap();
        let mut hs = ServerHandshake::new(0, &[7; 3072]);
        let mut buf = BytesMut::new();
        loop {
            let status = hs.handle_input(&mut buf).unwrap();
            while let Some(out) = hs.poll_output() {
                stream.write_all(&out).await.unwrap();
            }
            if status == HandshakeStatus::Done {
                break;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        }
        ServerConn {
            stream,
            buf,
            decoder: ChunkDecoder::new(ChunkDecoderLimits::default()),
            encoder: ChunkEncoder::new(),
        }
    }

    async fn recv(&mut self) -> Option<RtmpMessage> {
        loop {
            if let Some(msg) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn recv_command(&mut self) -> Command {
        loop {
            let msg = self.recv().await.expect("client closed");
            if msg.message_type == MessageType::COMMAND_AMF0 {
                return Command::decode(msg.message_type, &msg.payload).unwrap();
            }
        }
    }

    async fn send(&mut self, msgs: &[RtmpMessage]) {
        let mut out = BytesMut::new();
        for msg in msgs {
            self.encoder.encode(msg, &mut out);
        }
        self.stream.write_all(&out).await.unwrap();
    }
}

fn command(stream: MessageStreamId, c: &Command) -> RtmpMessage {
    RtmpMessage {
        chunk_stream_id: ChunkStreamId::COMMAND,
        timestamp: 0,
        message_type: MessageType::COMMAND_AMF0,
        message_stream_id: stream,
        payload: c.encode(),
    }
}

/// Serves one scripted connection; returns the control messages the client sent after play.
async fn serve(listener: TcpListener, script: Script) -> Vec<ControlMessage> {
    let mut conn = ServerConn::accept(&listener).await;
    let connect = conn.recv_command().await;
    assert_eq!(connect.name, "connect");
    conn.send(&[
        ControlMessage::WindowAckSize(1000).to_message(),
        command(
            MessageStreamId::CONNECTION,
            &Command::result(
                connect.transaction_id,
                Amf0Value::Null,
                vec![Amf0Value::Object(status_info(
                    "status",
                    "NetConnection.Connect.Success",
                    "ok",
                ))],
            ),
        ),
    ])
    .await;
    let create = conn.recv_command().await;
    assert_eq!(create.name, "createStream");
    conn.send(&[command(
        MessageStreamId::CONNECTION,
        &Command::result(create.transaction_id, Amf0Value::Null, vec![1.0.into()]),
    )])
    .await;
    let play = conn.recv_command().await;
    assert_eq!(play.name, "play");
    assert_eq!(play.first_string_argument(), Some("cam"));
    let stream = MessageStreamId(1);
    if script == Script::NotFound {
        conn.send(&[command(
            stream,
            &Command::on_status(status_info(
                "error",
                "NetStream.Play.StreamNotFound",
                "no such stream",
            )),
        )])
        .await;
        // Wait for the client to hang up.
        while conn.recv().await.is_some() {}
        return Vec::new();
    }
    conn.send(&[
        command(
            stream,
            &Command::on_status(status_info("status", "NetStream.Play.Start", "playing")),
        ),
        ControlMessage::UserControl(UserControlEvent::PingRequest(1234)).to_message(),
    ])
    .await;
    // 4 video messages of 600 bytes: past the 1000-byte window twice.
    for i in 0..4u32 {
        let mut payload = vec![0x27, 1, 0, 0, 0];
        payload.resize(600, 0xAB);
        conn.send(&[RtmpMessage {
            chunk_stream_id: ChunkStreamId::VIDEO,
            timestamp: i * 40,
            message_type: MessageType::VIDEO,
            message_stream_id: stream,
            payload: Bytes::from(payload),
        }])
        .await;
    }
    let mut controls = Vec::new();
    let got_all = |c: &[ControlMessage]| {
        c.iter()
            .any(|m| *m == ControlMessage::UserControl(UserControlEvent::PingResponse(1234)))
            && c.iter()
                .filter(|m| matches!(m, ControlMessage::Acknowledgement(_)))
                .count()
                >= 2
    };
    while !got_all(&controls) {
        let Some(msg) = conn.recv().await else { break };
        if let Some(control) = ControlMessage::decode(msg.message_type, &msg.payload).unwrap() {
            controls.push(control);
        }
    }
    controls
}

/// Runs the scripted server and the client's `play` on one executor.
fn run(script: Script) -> (Result<(), String>, Vec<ControlMessage>) {
    LocalExecutorBuilder::default()
        .io_memory(256 * 1024)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let server = glommio::spawn_local(serve(listener, script));
            let url =
                RtmpUrl::parse(&format!("rtmp://127.0.0.1:{}/live/cam", addr.port())).unwrap();
            let settings = ClientSettings {
                setup_timeout: Duration::from_secs(5),
                ..ClientSettings::default()
            };
            let result = match client::setup(&url, addr, Role::Play, &settings).await {
                Ok(session) => {
                    // Keep reading (that is when pings and acknowledgements are handled)
                    // until the server has what it waits for.
                    let reading = glommio::spawn_local(async move {
                        let client::Session {
                            conn, mut inbound, ..
                        } = session;
                        while inbound.recv(&conn).await.is_ok() {}
                    });
                    let controls = with_timeout(Duration::from_secs(5), server).await;
                    drop(reading);
                    return (Ok(()), controls.expect("server finished"));
                }
                Err(e) => Err(format!("{} {e}", e.as_str())),
            };
            let controls = with_timeout(Duration::from_secs(5), server)
                .await
                .expect("server finished");
            (result, controls)
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn answers_pings_and_acknowledges_past_the_window() {
    let (result, controls) = run(Script::PingAndWindow);
    assert_eq!(result, Ok(()));
    assert!(
        controls.contains(&ControlMessage::UserControl(
            UserControlEvent::PingResponse(1234)
        )),
        "{controls:?}"
    );
    let acks: Vec<u32> = controls
        .iter()
        .filter_map(|c| match c {
            ControlMessage::Acknowledgement(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert!(acks.len() >= 2, "{controls:?}");
    assert!(
        acks[0] >= 1000 && acks.windows(2).all(|w| w[1] > w[0]),
        "{acks:?}"
    );
}

#[test]
fn a_refused_play_carries_the_status_code() {
    let (result, _) = run(Script::NotFound);
    let error = result.unwrap_err();
    assert!(error.starts_with("rejected_play"), "{error}");
    assert!(error.contains("NetStream.Play.StreamNotFound"), "{error}");
}
