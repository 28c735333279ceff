//! Bringing one player to the point where media flows: the server handshake, then the least
//! of `connect`, `createStream` and `play` that a player (the load-test harness, ffmpeg)
//! needs. Blocking, on the connection's own short-lived thread: set-up is not what the floor
//! measures, but it is counted, as a server's is.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkEncoder};
use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, PeerBandwidthLimit, UserControlEvent};
use corecast_common::handshake::{HandshakeStatus, ServerHandshake};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

use crate::stream::OUT_CHUNK_SIZE;

/// Corecast's default `rtmp.window_ack_size_bytes`: players acknowledge as often as they would
/// with Corecast.
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// How long a player may take over each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages from a player before `play` past which it is refused.
const MAX_SETUP_MESSAGES: usize = 64;

/// Runs the set-up on `stream` until the player asked to play; the socket is then ready for
/// media on message stream 1 at [`OUT_CHUNK_SIZE`].
pub fn setup(stream: &mut TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut buf = BytesMut::with_capacity(8192);
    let random: Vec<u8> = (0..1528u32).map(|i| (i * 7 + 13) as u8).collect();
    let mut handshake = ServerHandshake::new(0, &random);
    loop {
        let status = handshake
            .handle_input(&mut buf)
            .map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
        while let Some(out) = handshake.poll_output() {
            stream.write_all(&out)?;
        }
        if status == HandshakeStatus::Done {
            break;
        }
        read_more(stream, &mut buf)?;
    }

    let mut decoder = ChunkDecoder::new(ChunkDecoderLimits::default());
    let mut encoder = ChunkEncoder::new();
    let mut out = BytesMut::new();
    for control in [
        ControlMessage::WindowAckSize(WINDOW_ACK_SIZE),
        ControlMessage::SetPeerBandwidth {
            window: WINDOW_ACK_SIZE,
            limit: PeerBandwidthLimit::Dynamic,
        },
        ControlMessage::SetChunkSize(OUT_CHUNK_SIZE),
    ] {
        encoder.encode(&control.to_message(), &mut out);
    }
    for _ in 0..MAX_SETUP_MESSAGES {
        let message = loop {
            match decoder.decode(&mut buf).context("chunk stream")? {
                Some(m) => break m,
                None => read_more(stream, &mut buf)?,
            }
        };
        match message.message_type {
            MessageType::SET_CHUNK_SIZE => {
                if let Ok(Some(ControlMessage::SetChunkSize(size))) =
                    ControlMessage::decode(message.message_type, &message.payload)
                {
                    decoder.set_chunk_size(size).context("set chunk size")?;
                }
            }
            MessageType::COMMAND_AMF0 | MessageType::COMMAND_AMF3 => {
                let command =
                    Command::decode(message.message_type, &message.payload).context("command")?;
                let playing = reply(&command, &mut encoder, &mut out);
                stream.write_all(&out.split())?;
                if playing {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    bail!("no play after {MAX_SETUP_MESSAGES} messages")
}

/// Encodes the answer to `command` into `out`; true once the player asked to play.
fn reply(command: &Command, encoder: &mut ChunkEncoder, out: &mut BytesMut) -> bool {
    let (stream, answer, playing) = match command.name.as_str() {
        "connect" => {
            let properties = Amf0Object::new()
                .with("fmsVer", "FMS/3,0,1,123")
                .with("capabilities", 31.0);
            let info = status_info("status", "NetConnection.Connect.Success", "Connected.");
            let answer = Command::result(
                command.transaction_id,
                Amf0Value::Object(properties),
                vec![Amf0Value::Object(info)],
            );
            (MessageStreamId::CONNECTION, answer, false)
        }
        "createStream" => {
            let id = Amf0Value::Number(f64::from(MessageStreamId::MEDIA.0));
            let answer = Command::result(command.transaction_id, Amf0Value::Null, vec![id]);
            (MessageStreamId::CONNECTION, answer, false)
        }
        "play" => {
            let begin = UserControlEvent::StreamBegin(MessageStreamId::MEDIA);
            encoder.encode(&ControlMessage::UserControl(begin).to_message(), out);
            let info = status_info("status", "NetStream.Play.Start", "Started playing.");
            (MessageStreamId::MEDIA, Command::on_status(info), true)
        }
        // releaseStream, FCSubscribe, getStreamLength, ...: nothing a player waits for.
        _ => return false,
    };
    let message = RtmpMessage {
        chunk_stream_id: ChunkStreamId::COMMAND,
        timestamp: 0,
        message_type: MessageType::COMMAND_AMF0,
        message_stream_id: stream,
        payload: answer.encode(),
    };
    encoder.encode(&message, out);
    playing
}

/// Reads whatever the player sent next; its end is an error.
fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).context("read")?;
    if n == 0 {
        bail!("the player hung up during set-up");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
